"""Captures the ZFS output Cairn parses, from real OpenZFS in the ZFS test
VM (Debian's zfs-dkms built for the VM's kernel by tests/vm/build-zfs.sh,
Debian's zfsutils-linux), into crates/cairn-storage/testdata/zfs/. Run by
hand, as root, from the repository (not part of the test run; about two
minutes once the modules are cached):

    .venv/bin/python tests/vm/capture_zfs.py [OUT_DIR]    # the venv of scripts/test.sh

It boots one VM, makes a zpool `tank` with dataset tank/linstor and there
what a satellite makes (a thick and a sparse zvol with Cairn's identity, a
snapshot, a clone of it, a rollback mark, a volume renamed aside with its
snapshot), then runs the commands with exactly the argv of
crates/cairn-storage/src/zfs.rs (keep the two in step) and the failures a
provider meets (exists, too big, busy, missing). Each command gives
NAME.cmd, NAME.out, NAME.err and NAME.rc; an incremental `zfs send`
stream is kept as is (NAME.zstream, with `zstream dump -v` of it as
NAME.dump) for crates/cairn-storage/src/zfs_send.rs."""

import base64
import os
import shlex
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import conftest  # noqa: E402

OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(conftest.ROOT, "crates", "cairn-storage", "testdata", "zfs"))

# As zfs.rs builds them.
LIST_COLUMNS = "name,refer,volsize,type,volblocksize,origin,clones,cairn:vid,cairn:rb"


def zfs_list(ds):
    return ["zfs", "list", "-r", "-H", "-p", "-o", LIST_COLUMNS, "-t", "volume,snapshot", ds]


SETUP = [
    "zpool create -o ashift=12 -O mountpoint=none -O compression=off tank /dev/vda",
    "zfs create tank/linstor",
    "zfs create -V 65536KB -o cairn:vid=0a1b2c3d4e5f tank/linstor/web_00000",
    "zfs create -s -V 1048576KB -o cairn:vid=ffeeddccbbaa tank/linstor/db_00000",
    "udevadm settle -t 20",
    "dd if=/dev/urandom of=/dev/zvol/tank/linstor/db_00000 bs=1M count=4 oflag=direct status=none",
    "zfs snapshot tank/linstor/db_00000@snap1",
    "zfs clone -o cairn:vid=c0ffee000001 tank/linstor/db_00000@snap1 tank/linstor/copy_00000",
    "zfs rollback tank/linstor/db_00000@snap1",
    "zfs set cairn:rb=rb-7 tank/linstor/db_00000",
    "zfs create -s -V 4096KB -o cairn:vid=abcdef012345 tank/linstor/old_00000",
    "zfs snapshot tank/linstor/old_00000@keep",
    "zfs rename tank/linstor/old_00000 tank/linstor/_deleted_old_00000_abcdef01",
    # An incremental send stream (another dataset, so the lists above stay
    # as they are): 512 KiB written, snapshot `base`; then 16 KiB at
    # 128 KiB and 8 KiB at 3 MiB (a hole before) written, 64 KiB at
    # 256 KiB discarded, snapshot `next`.
    "zfs create tank/send",
    "zfs create -s -V 4096KB -o volblocksize=8K tank/send/inc_00000",
    "udevadm settle -t 20",
    "dd if=/dev/urandom of=/dev/zvol/tank/send/inc_00000 bs=64K count=8 oflag=direct status=none",
    "zfs snapshot tank/send/inc_00000@base",
    "dd if=/dev/urandom of=/dev/zvol/tank/send/inc_00000 bs=8K count=2 seek=16 oflag=direct status=none",
    "dd if=/dev/urandom of=/dev/zvol/tank/send/inc_00000 bs=8K count=1 seek=384 oflag=direct status=none",
    "blkdiscard -o 262144 -l 65536 /dev/zvol/tank/send/inc_00000 && sync",
    "zfs snapshot tank/send/inc_00000@next",
]

CAPTURES = [
    ("list", zfs_list("tank/linstor")),
    ("list_missing", zfs_list("tank/nonexist")),
    ("zpool_get_size", ["zpool", "get", "size", "-Hp", "tank"]),
    ("zfs_get_available", ["zfs", "get", "available", "-o", "value", "-Hp", "tank/linstor"]),
    ("create_exists", ["zfs", "create", "-V", "65536KB", "-o", "cairn:vid=0a1b2c3d4e5f", "tank/linstor/web_00000"]),
    ("create_too_big", ["zfs", "create", "-V", "104857600KB", "-o", "cairn:vid=0123", "tank/linstor/huge_00000"]),
    ("grow_too_big", ["zfs", "set", "volsize=104857600KB", "tank/linstor/web_00000"]),
    ("destroy_with_snapshots", ["zfs", "destroy", "tank/linstor/db_00000"]),
    ("destroy_snapshot_with_clone", ["zfs", "destroy", "tank/linstor/db_00000@snap1"]),
    ("rollback_not_latest", ["sh", "-c", "zfs snapshot tank/linstor/db_00000@snap2 && zfs rollback tank/linstor/db_00000@snap1; "
                             "rc=$?; zfs destroy tank/linstor/db_00000@snap2; exit $rc"]),
    ("version", ["zfs", "version"]),
]

# Binary captures: NAME.cmd, NAME.zstream (stdout, as is), NAME.rc, and
# `zstream dump -v` of it as NAME.dump (for people; the unit tests of
# src/zfs_send.rs parse NAME.zstream).
STREAMS = [
    # As Zfs::send_stream builds it for an incremental.
    ("send_incremental", ["zfs", "send", "-i", "tank/send/inc_00000@base", "tank/send/inc_00000@next"]),
]


def main():
    img, why = conftest._zfs_image(None)
    if img is None:
        sys.exit(why)
    work = tempfile.mkdtemp(prefix="cairn-capture-")
    secret = os.path.join(work, "secret")
    with open(secret, "w") as s:
        s.write("capture-only\n")
    vm = conftest.Vm("capture", "127.0.10.59", secret, disks=("1G",), image=img, zfs=True).start()
    try:
        for cmd in SETUP:
            rc, out = vm.sh(cmd)
            if rc != 0:
                sys.exit(f"{cmd}: {out}")
        os.makedirs(OUT, exist_ok=True)
        for name, argv in CAPTURES:
            line = shlex.join(argv)
            rc, _ = vm.sh(f"{line} >/tmp/o 2>/tmp/e; echo $? >/tmp/rc")
            files = {}
            for ext, f in (("out", "/tmp/o"), ("err", "/tmp/e"), ("rc", "/tmp/rc")):
                rc, text = vm.sh(f"cat {f}")
                files[ext] = text
            files["cmd"] = line + "\n"
            for ext, text in files.items():
                with open(os.path.join(OUT, f"{name}.{ext}"), "w") as f:
                    f.write(text)
            print(f"{name}: rc {files['rc'].strip()}")
        for name, argv in STREAMS:
            line = shlex.join(argv)
            vm.sh(f"{line} >/tmp/b 2>/tmp/e; echo $? >/tmp/rc")
            rc, b64 = vm.sh("base64 /tmp/b")
            if rc != 0:
                sys.exit(f"base64: {b64}")
            with open(os.path.join(OUT, f"{name}.zstream"), "wb") as f:
                f.write(base64.b64decode(b64))
            for ext, cmd in (("rc", "cat /tmp/rc"), ("dump", "zstream dump -v </tmp/b")):
                with open(os.path.join(OUT, f"{name}.{ext}"), "w") as f:
                    f.write(vm.sh(cmd)[1])
            with open(os.path.join(OUT, f"{name}.cmd"), "w") as f:
                f.write(line + "\n")
            print(f"{name}: {os.path.getsize(os.path.join(OUT, name + '.zstream'))} bytes")
        print(vm.sh("uname -r; zfs version")[1])
    finally:
        vm.stop()


if __name__ == "__main__":
    main()
