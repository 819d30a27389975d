"""Throwaway VMs booting Debian's kernel (device-mapper, LVM, LUKS) with the
`cairn satellite` inside, driven by a `cairn controller` on the host.

qemu's user network forwards the satellite's port (3366 in the VM) and a
command channel (2222 in the VM) to free ports on a loopback address of the
host (127.0.10.5x, never the addresses `cairn up` uses); the VM reaches
nothing else (restrict=on). Disks are sparse files, /dev/vda, /dev/vdb, ..."""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# The host-side helpers of the main suite, loaded under their own name.
_spec = importlib.util.spec_from_file_location("cairn_e2e", os.path.join(ROOT, "tests", "python", "conftest.py"))
e2e = importlib.util.module_from_spec(_spec)
sys.modules["cairn_e2e"] = e2e
_spec.loader.exec_module(e2e)
BIN, Controller, ok, err, wait_for = e2e.BIN, e2e.Controller, e2e.ok, e2e.err, e2e.wait_for

BUILD = os.environ.get("CAIRN_VM_BUILD", os.path.join(ROOT, "target", "vm"))


def _die_with_parent():
    # PR_SET_PDEATHSIG: a killed test run takes its VMs with it.
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _accel():
    # KVM only with real hardware virtualisation (a PVM host's /dev/kvm
    # cannot run Debian's kernel); TCG otherwise.
    flags = open("/proc/cpuinfo").read()
    if os.access("/dev/kvm", os.W_OK) and (" vmx" in flags or " svm" in flags) and not os.path.isdir("/sys/module/kvm_pvm"):
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,tb-size=256", "-cpu", "max"]


@pytest.fixture(scope="session")
def vm_image():
    if shutil.which("qemu-system-x86_64") is None:
        raise RuntimeError("qemu-system-x86_64 not found: install qemu-system-x86 (scripts/test.sh does)")
    out = subprocess.run(["bash", os.path.join(HERE, "build-image.sh"), BUILD, BIN], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("building the VM image failed:\n" + out.stdout + out.stderr)
    return BUILD


class Vm:
    """One VM; `sh` runs a command in it and returns (rc, output)."""

    def __init__(self, name, ip, secret_path, disks=("2G", "2G"), mem=768):
        self.name, self.ip = name, ip
        self.work = tempfile.mkdtemp(prefix=f"cairn-vm-{name}-")
        self.console = os.path.join(self.work, "console.log")
        self.secret_path, self.disks, self.mem = secret_path, disks, mem
        self.port, self.sh_port = e2e.free_port(ip), e2e.free_port(ip)
        self.proc = None

    def start(self):
        payload = os.path.join(self.work, "payload")
        os.makedirs(os.path.join(payload, "cairn"))
        shutil.copy(self.secret_path, os.path.join(payload, "cairn", "secret"))
        cpio = subprocess.run("find . -print0 | cpio --null -o -H newc --quiet", shell=True, cwd=payload,
                              capture_output=True, check=True).stdout
        initrd = os.path.join(self.work, "initrd")
        with open(initrd, "wb") as f, open(os.path.join(BUILD, "initramfs.cpio"), "rb") as base:
            shutil.copyfileobj(base, f)
            f.write(cpio)
        args = ["qemu-system-x86_64", "-machine", "q35", *_accel(), "-m", str(self.mem), "-smp", "1",
                "-display", "none", "-monitor", "none", "-serial", f"file:{self.console}", "-no-reboot",
                "-device", "virtio-rng-pci", "-kernel", os.path.join(BUILD, "vmlinux"), "-initrd", initrd,
                "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:{self.ip}:{self.port}-:3366,hostfwd=tcp:{self.ip}:{self.sh_port}-:2222",
                "-device", "virtio-net-pci,netdev=n0",
                "-append", f"console=ttyS0 panic=-1 quiet loglevel=3 cairn.hostname={self.name}"]
        for i, size in enumerate(self.disks):
            path = os.path.join(self.work, f"disk{i}.img")
            subprocess.run(["truncate", "-s", size, path], check=True)
            args += ["-drive", f"file={path},format=raw,if=virtio,cache=unsafe"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        try:
            wait_for(f"VM {self.name} booted", lambda: self.proc.poll() is None and "CAIRN-VM-READY" in self.log(), timeout=120)
            wait_for(f"satellite in {self.name}", lambda: self.sh("kill -0 $(pidof cairn)")[0] == 0, timeout=60)
        except BaseException:
            print(self.log()[-4000:])
            self.stop()
            raise
        return self

    def log(self):
        try:
            return open(self.console, errors="replace").read()
        except OSError:
            return ""

    def sh(self, cmd, timeout=180):
        """Runs `cmd` with bash in the VM; returns (exit code, stdout+stderr)."""
        s = socket.create_connection((self.ip, self.sh_port), timeout=10)
        s.settimeout(timeout)
        s.sendall(f"exec 2>&1; {cmd}\necho __RC=$?\n".encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        text = data.decode(errors="replace")
        head, _, tail = text.rpartition("__RC=")
        try:
            return int(tail.strip()), head
        except ValueError:
            return -1, text

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)


@pytest.fixture
def vm_cluster(vm_image):
    """A controller on the host and one VM satellite `vm1` on 127.0.10.51."""
    root = tempfile.mkdtemp(prefix="cairn-vmtest-")
    ctrl, lin, vm = Controller(root), None, None
    try:
        ctrl.start()
        lin = ctrl.client()
        # No DRBD in these VMs: unreplicated volumes by default.
        ok(lin.controller_set_prop("Cairn/DefaultLayerStack", "STORAGE"))
        vm = Vm("vm1", "127.0.10.51", os.path.join(root, "cluster-secret")).start()
        ok(lin.node_create("vm1", "SATELLITE", "127.0.10.51", port=vm.port))
        wait_for("vm1 online", lambda: lin.node_list_raise().nodes[0].connection_status == "ONLINE", timeout=60)
        c = type("C", (), {})()
        c.ctrl, c.lin, c.vm, c.root = ctrl, lin, vm, root
        yield c
    finally:
        if lin is not None:
            lin.disconnect()
        ctrl.stop()
        if vm is not None:
            vm.stop()
        shutil.rmtree(root, ignore_errors=True)


def req(c, method, path, body=None):
    """A raw REST call to the test controller."""
    return c.ctrl.request(method, path, body)


def sha(c, dev):
    """sha256 of the first 8 MiB of a device in the VM."""
    rc, out = c.vm.sh(f"dd if={dev} bs=1M count=8 status=none | sha256sum")
    assert rc == 0, out
    return out.split()[0]
