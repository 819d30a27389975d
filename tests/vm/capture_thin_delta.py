"""Captures what Cairn's LVM_THIN backups parse, from real LVM and
thin-provisioning-tools in the test VM, into
crates/cairn-storage/testdata/lvm/: the thin ids of two snapshots
(`lvs -o lv_name,thin_id`, JSON) and `thin_delta -m` between them. Run by
hand, as root, from the repository (about a minute):

    .venv/bin/python tests/vm/capture_thin_delta.py [OUT_DIR]

A volume `db_00000` of 64 MiB in thin pool vgt/thin gets 8 MiB of random
data, snapshot s1 (as Cairn takes it), then writes that make every kind of
difference thin_delta reports: 1 MiB overwritten at 2 MiB (different),
1 MiB at 20 MiB and 64 KiB at 40 MiB written where nothing was (right
only), 1 MiB at 6 MiB discarded (left only); snapshot s2. The commands
are those of crates/cairn-storage/src/lvm.rs (keep the two in step)."""

import os
import shlex
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import conftest  # noqa: E402
from capture_lvm import boot, in_vm  # noqa: E402

OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(conftest.ROOT, "crates", "cairn-storage", "testdata", "lvm"))


def main():
    vm = boot("127.0.10.58", disks=("1G",))
    try:
        sh = in_vm(vm)

        def capture(name, cmd):
            out = sh(f"{cmd} 2>/tmp/err")
            with open(os.path.join(OUT, name), "w") as f:
                f.write(out)
            print(f"{name}: {cmd}")

        os.makedirs(OUT, exist_ok=True)
        sh("pvcreate /dev/vda && vgcreate vgt /dev/vda && lvcreate -l 100%FREE -T -n vgt/thin")
        sh("lvcreate --virtualsize 65536k vgt --thinpool thin --name db_00000 --addtag cairn_vid_c3")
        sh("dd if=/dev/urandom of=/dev/vgt/db_00000 bs=1M count=8 oflag=direct status=none && sync")

        def snap(name):
            sh(shlex.join(["lvcreate", "--snapshot", "--setactivationskip", "y", "--ignoreactivationskip", "--activate", "y",
                           "--addtag", "cairn_snap", "--name", f"db_00000_{name}", "vgt/db_00000", "-pr"]))

        snap("s1")
        sh("dd if=/dev/urandom of=/dev/vgt/db_00000 bs=1M count=1 seek=2 oflag=direct status=none")
        sh("dd if=/dev/urandom of=/dev/vgt/db_00000 bs=1M count=1 seek=20 oflag=direct status=none")
        sh("dd if=/dev/urandom of=/dev/vgt/db_00000 bs=64K count=1 seek=640 oflag=direct status=none")
        sh("blkdiscard -o 6291456 -l 1048576 /dev/vgt/db_00000 && sync")
        snap("s2")
        capture("lvs-thin-id.json", "lvs -o lv_name,thin_id --reportformat json vgt/db_00000_s1 vgt/db_00000_s2")
        ids = sh("lvs --noheadings -o thin_id vgt/db_00000_s1 vgt/db_00000_s2").split()
        sh("dmsetup message vgt-thin-tpool 0 reserve_metadata_snap")
        try:
            capture("thin-delta.xml", f"thin_delta -m --snap1 {ids[0]} --snap2 {ids[1]} /dev/mapper/vgt-thin_tmeta")
            capture("thin-delta-same.xml", f"thin_delta -m --snap1 {ids[1]} --snap2 {ids[1]} /dev/mapper/vgt-thin_tmeta")
        finally:
            sh("dmsetup message vgt-thin-tpool 0 release_metadata_snap")
        rc, out = vm.sh(f"thin_delta -m --snap1 {ids[0]} --snap2 {ids[1]} /dev/mapper/vgt-thin_tmeta")
        print(f"without a reserved metadata snapshot: exit {rc}: {out}")
        print(sh("uname -r; lvm version; thin_delta -V; dmsetup ls; dmsetup table"))
    finally:
        vm.stop()


if __name__ == "__main__":
    main()
