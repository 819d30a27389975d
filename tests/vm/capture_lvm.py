"""Captures the LVM report output that Cairn parses, from real LVM in the
test VM (Debian's kernel under qemu, the image of tests/vm), into
crates/cairn-storage/testdata/lvm/. Run by hand, as root, from the
repository (not part of the test run; about a minute):

    .venv/bin/python tests/vm/capture_lvm.py [OUT_DIR]    # the venv of scripts/test.sh

It builds the VM image like the VM tests do (target/vm, CAIRN_BIN or
target/debug/cairn), boots one VM with two 2 GiB disks and makes there what
a satellite makes: volume group vg0 on /dev/vda with thick volumes, volume
group vgt on /dev/vdb with thin pool `thin`, thin volumes, Cairn's snapshots
and a rollback copy (two tags), one inactive volume of each kind. Then it
runs the report commands with exactly the argv of crates/cairn-storage/src/
lvm.rs (keep the two in step) and writes their stdout; a command's stderr
and exit code go beside it only where they say something (missing VG).
Prints the kernel and LVM versions for testdata/lvm/README.md."""

import os
import shlex
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import conftest  # noqa: E402

OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(conftest.ROOT, "crates", "cairn-storage", "testdata", "lvm"))

# As lvm.rs builds them.
DRBD_FILTER = 'devices { filter=["r|^/dev/drbd.*|"] }'
LVS_FIELDS = "lv_name,lv_path,lv_size,vg_name,pool_lv,data_percent,lv_attr,metadata_percent,chunk_size,stripes,lv_tags"
VGS_THICK = "vg_name,vg_extent_size,vg_size,vg_free"
VGS_THIN = "vg_name,vg_extent_size,vg_size,vg_free,lv_name,lv_size,data_percent"


def device_filter(pvs):
    return "devices { filter=[" + "".join(f"'a|{p}|'," for p in pvs) + "'r|.*|'] }"


def pvs(vg):
    # Not `pvdisplay --columns` (LINSTOR's): it ignores --reportformat.
    return ["pvs", "--config", DRBD_FILTER, "-o", "pv_name", "-S", f"vg_name={vg}", "--reportformat", "json"]


def lvs(f, vg):
    return ["lvs", "--config", f, "-o", LVS_FIELDS, "--units", "k", "--nosuffix", "--reportformat", "json", vg]


def vgs(f, fields, vg):
    return ["vgs", "--config", f, "-o", fields, "--units", "k", "--nosuffix", "--reportformat", "json", vg]


def boot(ip, **vm_args):
    """Builds the image and boots a VM `capture` on loopback address `ip`."""
    conftest._run("building the VM image", ["bash", os.path.join(HERE, "build-image.sh"), conftest.BUILD, conftest.BIN])
    work = tempfile.mkdtemp(prefix="cairn-capture-")
    secret = os.path.join(work, "secret")
    with open(secret, "w") as s:
        s.write("capture-only\n")
    return conftest.Vm("capture", ip, secret, **vm_args).start()


def in_vm(vm):
    """A function running a command in the VM; its output, or an error."""
    def sh(cmd):
        rc, out = vm.sh("export LVM_SUPPRESS_FD_WARNINGS=1; " + cmd)
        if rc != 0:
            raise RuntimeError(f"in the VM: {cmd}\nexit {rc}: {out}")
        return out
    return sh


def main():
    vm = boot("127.0.10.59")
    try:
        sh = in_vm(vm)

        def capture(name, argv, expect_rc=0):
            """Runs argv in the VM; its stdout goes to OUT/name, stderr to
            OUT/<name without .json>.stderr when the exit code is not 0."""
            cmd = shlex.join(argv)
            rc, out = vm.sh(f"export LVM_SUPPRESS_FD_WARNINGS=1; {cmd} >/tmp/out 2>/tmp/err; echo RC=$? >/tmp/rc; cat /tmp/rc")
            got = int(out.strip().rpartition("RC=")[2])
            stdout = sh("cat /tmp/out")
            stderr = sh("cat /tmp/err")
            if got != expect_rc:
                raise RuntimeError(f"{cmd}: exit {got}, expected {expect_rc}\n{stdout}{stderr}")
            with open(os.path.join(OUT, name), "w") as f:
                f.write(stdout)
            if got != 0:
                with open(os.path.join(OUT, name.removesuffix(".json") + ".stderr"), "w") as f:
                    f.write(stderr)
            print(f"{name} (exit {got}): {cmd}")

        versions = sh("uname -r; lvm version")
        os.makedirs(OUT, exist_ok=True)
        sh("pvcreate /dev/vda /dev/vdb && vgcreate vg0 /dev/vda && vgcreate vgt /dev/vdb")
        f0, ft = device_filter(["/dev/vda"]), device_filter(["/dev/vdb"])
        # A volume group without any logical volume yet.
        capture("vgs-thin-no-lvs.json", vgs(ft, VGS_THIN, "vgt"))

        # Thick volumes as the LVM provider makes them; odd_00000 rounds
        # 10000k up to 3 extents and is deactivated.
        for name, size, vid in (("web_00000", "65536k", "a1"), ("odd_00000", "10000k", "b2")):
            sh(shlex.join(["lvcreate", "--config", f0, "--size", size, "vg0", "-n", name, "-y", "--addtag", f"cairn_vid_{vid}"]))
        sh("lvchange -an vg0/odd_00000")

        # The thin pool as physical storage makes it, thin volumes as the
        # LVM_THIN provider makes them; 20 MiB written into db_00000.
        sh("lvcreate -l 100%FREE -T -n vgt/thin")
        for name, size, vid in (("db_00000", "102400k", "c3"), ("web_00001", "4096k", "d4")):
            sh(shlex.join(["lvcreate", "--config", ft, "--virtualsize", size, "vgt", "--thinpool", "thin", "--name", name,
                           "--addtag", f"cairn_vid_{vid}"]))
        sh("dd if=/dev/urandom of=/dev/vgt/db_00000 bs=1M count=20 oflag=direct status=none && sync")
        # Snapshots as Cairn takes them; s2 then inactive (as after a reboot).
        for snap in ("s1", "s2"):
            sh(shlex.join(["lvcreate", "--config", ft, "--snapshot", "--setactivationskip", "y", "--ignoreactivationskip",
                           "--activate", "y", "--addtag", "cairn_snap", "--name", f"db_00000_{snap}", "vgt/db_00000", "-pr"]))
        sh("lvchange -an vgt/db_00000_s2")
        # Rollback of db_00000 to s1: renamed aside, a copy with two tags.
        sh(shlex.join(["lvrename", "--config", ft, "vgt", "db_00000", "db_00000-rollback-r1"]))
        sh(shlex.join(["lvcreate", "--config", ft, "--snapshot", "--setactivationskip", "n", "--permission", "rw", "--name",
                       "db_00000", "--addtag", "cairn_vid_c3", "--addtag", "cairn_rb_r1", "vgt/db_00000_s1"]))
        sh(shlex.join(["lvchange", "--config", ft, "-ay", "-K", "vgt/db_00000"]))
        sh(shlex.join(["lvremove", "--config", ft, "-f", "vgt/db_00000-rollback-r1"]))

        capture("pvs.json", pvs("vg0"))
        capture("pvs-missing-vg.json", pvs("nope"))
        capture("lvs-thick.json", lvs(f0, "vg0"))
        capture("lvs-thin.json", lvs(ft, "vgt"))
        capture("vgs-thick.json", vgs(f0, VGS_THICK, "vg0"))
        capture("vgs-thin.json", vgs(ft, VGS_THIN, "vgt"))
        # What a pool whose PVs are gone sees: pvs finds none, the
        # filter then rejects every device.
        capture("lvs-missing-vg.json", lvs(device_filter([]), "nope"), expect_rc=5)
        capture("vgs-missing-vg.json", vgs(device_filter([]), VGS_THICK, "nope"), expect_rc=5)
        print(versions)
        print(sh("lvs -a -o lv_name,vg_name,lv_attr,lv_size,data_percent,lv_tags --units k"))
    finally:
        vm.stop()


if __name__ == "__main__":
    main()
