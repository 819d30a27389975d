"""Throwaway VMs booting Debian's kernel (device-mapper, LVM, LUKS) with the
`cairn satellite` inside, driven by a `cairn controller` on the host.

qemu's user network forwards the satellite's port (3366 in the VM) and a
command channel (2222 in the VM) to free ports on a loopback address of the
host (127.0.10.5x, never the addresses `cairn up` uses); the VM reaches
nothing else (restrict=on). Disks are sparse files, /dev/vda, /dev/vdb, ..."""

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import linstor
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
DRBD_BUILD = os.path.join(os.path.dirname(BUILD), "vm-drbd")
ZFS_BUILD = os.path.join(os.path.dirname(BUILD), "vm-zfs")


_in_private_network = False


def private_network():
    """Moves this test process into a network namespace of its own (gone
    with the process): its loopback, the test bridge and the VMs' addresses
    (10.99.0.0/24) exist nowhere else. Called once the images are built
    (they download from Debian's archive); unshare() applies to the calling
    thread, and pytest runs tests on its only thread."""
    global _in_private_network
    if _in_private_network:
        return
    import ctypes

    CLONE_NEWNET = 0x40000000
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise RuntimeError(f"unshare(CLONE_NEWNET) failed: errno {ctypes.get_errno()} (the VM tests need root)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    _in_private_network = True


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


def drbd_source():
    """The DRBD 9 source tarball: $CAIRN_DRBD_SRC, else the newest
    drbd-9.*.tar.xz in ../shared/vendor/ beside the clone; None if neither."""
    src = os.environ.get("CAIRN_DRBD_SRC")
    if src:
        return src if os.path.isfile(src) else None
    vendor = os.path.join(ROOT, "..", "shared", "vendor")
    found = sorted((f for f in (os.listdir(vendor) if os.path.isdir(vendor) else []) if re.fullmatch(r"drbd-9[\d.]*\.tar\.xz", f)),
                   key=lambda f: [int(x) for x in re.findall(r"\d+", f)])  # 9.2.18 after 9.2.9
    return os.path.join(vendor, found[-1]) if found else None


NO_DRBD = "no DRBD 9 source (set CAIRN_DRBD_SRC, or put drbd-9.*.tar.xz in ../shared/vendor/): the real-DRBD VM tests did not run"


def _run(what, args, env=None):
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n" + out.stdout + out.stderr)
    return out.stdout


def build_images():
    """Builds the VM images (downloads from Debian's archive, so before the
    tests leave the host's network): the plain one, and with the DRBD 9
    modules when their source is at hand; returns where they are
    (JSON-serialisable, see tests/vm/build_images.py)."""
    if shutil.which("qemu-system-x86_64") is None:
        raise RuntimeError("qemu-system-x86_64 not found: install qemu-system-x86 (scripts/test.sh does)")
    _run("building the VM image", ["bash", os.path.join(HERE, "build-image.sh"), BUILD, BIN])
    images = {"plain": BUILD, "drbd": None}
    src = drbd_source()
    ko = None
    if src:
        kernel = os.path.join(BUILD, "kernel")
        ko = _run("building the DRBD 9 modules", ["bash", os.path.join(HERE, "build-drbd.sh"), os.path.join(BUILD, "drbd"), kernel, src])
        ko = ko.strip().splitlines()[-1]
        env = dict(os.environ, CAIRN_VM_KERNEL=kernel)
        _run("building the DRBD VM image", ["bash", os.path.join(HERE, "build-image.sh"), DRBD_BUILD, BIN, ko], env)
        images["drbd"] = DRBD_BUILD
    images["zfs"], images["no_zfs"] = _zfs_image(ko)
    images["zfs_drbd"] = ko is not None
    return images


@pytest.fixture(scope="session")
def vm_images():
    """The images: built here, or, when CAIRN_VM_IMAGES names the file
    tests/vm/build_images.py wrote, as built there for several test
    processes at once (scripts/test.sh)."""
    ready = os.environ.get("CAIRN_VM_IMAGES")
    if ready:
        with open(ready) as f:
            images = json.load(f)
    else:
        images = build_images()
    private_network()
    return images


def _zfs_image(drbd_ko):
    """The image with OpenZFS from Debian's archive (tests/vm/build-zfs.sh,
    cached in CAIRN_VM_BUILD/zfs) and None, carrying the DRBD 9 modules too
    when `drbd_ko` (build-drbd.sh's output) is given; (None, why) when the
    archive cannot be reached."""
    kernel = os.path.join(BUILD, "kernel")
    out = subprocess.run(["bash", os.path.join(HERE, "build-zfs.sh"), os.path.join(BUILD, "zfs"), kernel], capture_output=True, text=True)
    if out.returncode == 3:
        why = out.stderr.strip().splitlines()[-1] + ": the ZFS VM tests did not run"
        print(why)
        return None, why
    if out.returncode != 0:
        raise RuntimeError("building the ZFS modules failed:\n" + out.stdout + out.stderr)
    env = dict(os.environ, CAIRN_VM_KERNEL=kernel, CAIRN_VM_ZFS=out.stdout.strip().splitlines()[-1])
    _run("building the ZFS VM image", ["bash", os.path.join(HERE, "build-image.sh"), ZFS_BUILD, BIN] + ([drbd_ko] if drbd_ko else []), env)
    return ZFS_BUILD, None


@pytest.fixture(scope="session")
def vm_image(vm_images):
    return vm_images["plain"]


@pytest.fixture(scope="session")
def drbd_image(vm_images):
    if vm_images["drbd"] is None:
        pytest.skip(NO_DRBD)
    return vm_images["drbd"]


@pytest.fixture(scope="session")
def zfs_image(vm_images):
    if vm_images["zfs"] is None:
        pytest.skip(vm_images["no_zfs"])
    return vm_images["zfs"]


@pytest.fixture(scope="session")
def zfs_drbd_image(vm_images):
    """The ZFS image when it carries the DRBD 9 modules too (DRBD over ZFS)."""
    if vm_images["zfs"] is None:
        pytest.skip(vm_images["no_zfs"])
    if not vm_images["zfs_drbd"]:
        pytest.skip(NO_DRBD)
    return vm_images["zfs"]


class Vm:
    """One VM; `sh` runs a command in it and returns (rc, output)."""

    def __init__(self, name, ip, secret_path, disks=("2G", "2G"), mem=768, image=None, tap=None, zfs=False, drbd=None, tls=None):
        """With `tap` (index n), eth0 is tap `ctapn` on the test bridge with
        address 10.99.0.n, the satellite and the command channel answer there
        on their own ports, and DRBD runs for real (`image` must carry its
        modules) except in a ZFS VM, where `drbd=True` asks for it (the ZFS
        image carries DRBD's modules when their source is at hand);
        otherwise qemu's user network forwards them to `ip`. With `tls`
        (the host's paths of certificate, key and CA, PEM) the satellite
        speaks mutual TLS with its controller (--tls-cert, --tls-key,
        --tls-ca), on port 3367: its node's interface is SSL."""
        self.name, self.image, self.tap, self.zfs, self.tls = name, image or BUILD, tap, zfs, tls
        self.guest_port = 3367 if tls else 3366
        self.drbd = tap is not None and (drbd if drbd is not None else not zfs)
        self.work = tempfile.mkdtemp(prefix=f"cairn-vm-{name}-")
        self.console = os.path.join(self.work, "console.log")
        self.secret_path, self.disks, self.mem = secret_path, disks, mem
        if tap is None:
            self.ip = ip
            self.port, self.sh_port = e2e.free_port(ip), e2e.free_port(ip)
        else:
            self.ip, self.port, self.sh_port = f"10.99.0.{tap}", self.guest_port, 2222
        self.proc = None

    def launch(self):
        """Starts qemu; `wait_ready` waits for the satellite inside."""
        payload = os.path.join(self.work, "payload")
        shutil.rmtree(payload, ignore_errors=True)
        os.makedirs(os.path.join(payload, "cairn"))
        shutil.copy(self.secret_path, os.path.join(payload, "cairn", "secret"))
        if self.tls:  # init.sh starts the satellite with TLS when it finds them
            for src, dst in zip(self.tls, ("tls.crt", "tls.key", "tls-ca.crt")):
                shutil.copy(src, os.path.join(payload, "cairn", dst))
        cpio = subprocess.run("find . -print0 | cpio --null -o -H newc --quiet", shell=True, cwd=payload,
                              capture_output=True, check=True).stdout
        initrd = os.path.join(self.work, "initrd")
        with open(initrd, "wb") as f, open(os.path.join(self.image, "initramfs.cpio"), "rb") as base:
            shutil.copyfileobj(base, f)
            f.write(cpio)
        args = ["qemu-system-x86_64", "-machine", "q35", *_accel(), "-m", str(self.mem), "-smp", "1",
                "-display", "none", "-monitor", "none", "-serial", f"file:{self.console}", "-no-reboot",
                "-device", "virtio-rng-pci", "-kernel", os.path.join(self.image, "vmlinux"), "-initrd", initrd]
        append = f"console=ttyS0 panic=-1 quiet loglevel=3 log_buf_len=8M cairn.hostname={self.name}"
        if self.tap is None:
            args += ["-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:{self.ip}:{self.port}-:{self.guest_port},hostfwd=tcp:{self.ip}:{self.sh_port}-:2222",
                     "-device", "virtio-net-pci,netdev=n0"]
        else:
            args += ["-netdev", f"tap,id=n0,ifname=ctap{self.tap},script=no,downscript=no",
                     "-device", f"virtio-net-pci,netdev=n0,mac=52:54:00:99:00:{self.tap:02x}"]
            append += f" cairn.ip={self.ip}/24" + (" cairn.drbd=1" if self.drbd else "")
        if self.zfs:
            # A small ARC: the VM's memory is for the test.
            append += " cairn.zfs=1 zfs.zfs_arc_max=67108864"
        args += ["-append", append]
        for i, size in enumerate(self.disks):
            path = os.path.join(self.work, f"disk{i}.img")
            if not os.path.exists(path):  # a restarted VM keeps its disks
                subprocess.run(["truncate", "-s", size, path], check=True)
            args += ["-drive", f"file={path},format=raw,if=virtio,cache=unsafe"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        return self

    def start(self):
        return self.launch().wait_ready()

    def wait_ready(self):
        try:
            wait_for(f"VM {self.name} booted", lambda: self.proc.poll() is None and "CAIRN-VM-READY" in self.log(), timeout=120)
            wait_for(f"satellite in {self.name}", self._satellite_running, timeout=60)
        except BaseException:
            print(self.log()[-4000:])
            self.stop()
            raise
        return self

    def _satellite_running(self):
        # Right after boot the guest may not answer ARP yet ("No route to host"): not ready, ask again.
        try:
            return self.sh("kill -0 $(pidof cairn)", timeout=20)[0] == 0
        except OSError:
            return False

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

    def kill(self):
        """Pulls the plug (SIGKILL to qemu); the disks stay for a restart."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        try:
            os.unlink(self.console)
        except FileNotFoundError:
            pass

    def stop(self):
        self.kill()
        shutil.rmtree(self.work, ignore_errors=True)


# The VMs' satellite links are PLAIN (but for a Vm(tls=...)); the LUKS tests need the keys on them.
PLAIN_LUKS = ["--allow-plain-luks-keys"]


def single_vm(name, ip, **vm_args):
    """A controller and one VM satellite `name` on loopback address `ip`
    (forwarded by qemu's user network); a generator for fixtures."""
    root = tempfile.mkdtemp(prefix="cairn-vmtest-")
    ctrl, lin, vm = Controller(root, extra_args=PLAIN_LUKS), None, None
    try:
        ctrl.start()
        lin = ctrl.client()
        # No DRBD in these VMs: unreplicated volumes by default.
        ok(lin.controller_set_prop("Cairn/DefaultLayerStack", "STORAGE"))
        vm = Vm(name, ip, os.path.join(root, "cluster-secret"), **vm_args).start()
        ok(lin.node_create(name, "SATELLITE", ip, port=vm.port))
        wait_for(f"{name} online", lambda: lin.node_list_raise().nodes[0].connection_status == "ONLINE", timeout=60)
        c = type("C", (), {})()
        c.ctrl, c.lin, c.vm, c.root = ctrl, lin, vm, root
        yield c
    finally:
        _teardown(lin, ctrl, [vm] if vm is not None else [], root)


@pytest.fixture
def vm_cluster(vm_image):
    """A controller and one VM satellite `vm1` on 127.0.10.51."""
    yield from single_vm("vm1", "127.0.10.51")


LOGS = os.path.join(ROOT, "target", "vm-logs")


def _teardown(lin, ctrl, vms, root):
    """Ends a VM cluster fixture: client, controller, VMs, files. The
    controller's log and the VMs' consoles (with their satellites' logs)
    are kept for whoever reads a failure, one directory per cluster
    (target/vm-logs/d1-d2-d3/, target/vm-logs/vm1/), each replaced by the
    next run of the same cluster only."""
    if lin is not None:
        lin.disconnect()
    ctrl.stop()
    logs = os.path.join(LOGS, "-".join(vm.name for vm in vms) or "controller")
    shutil.rmtree(logs, ignore_errors=True)
    os.makedirs(logs, exist_ok=True)
    for src, name in [(os.path.join(root, "controller.log"), "controller.log")] + [(vm.console, f"{vm.name}.console.log") for vm in vms]:
        if os.path.exists(src):
            shutil.copy(src, os.path.join(logs, name))
    for vm in vms:
        # The kernel's log (DRBD's decisions) and, with real DRBD, every
        # command the satellite ran; a VM that no longer answers has none.
        for what, cmd in (("dmesg", "dmesg"), ("satellite", "cat /var/log/cairn-satellite.log 2>/dev/null")):
            try:
                out = vm.sh(cmd, timeout=30)[1] if vm.proc is not None and vm.proc.poll() is None else ""
            except OSError:
                out = ""
            if out:
                with open(os.path.join(logs, f"{vm.name}.{what}.log"), "w") as f:
                    f.write(out)
        vm.stop()
    shutil.rmtree(root, ignore_errors=True)


def req(c, method, path, body=None):
    """A raw REST call to the test controller."""
    return c.ctrl.request(method, path, body)


def sha(c, dev):
    """sha256 of the first 8 MiB of a device in the VM."""
    rc, out = c.vm.sh(f"set -o pipefail; dd if={dev} bs=1M count=8 status=none | sha256sum")
    assert rc == 0, out
    return out.split()[0]


# Replies wait for the satellites (the controller gives each 300 s); three
# TCG VMs on two cores are slow.
CLIENT_TIMEOUT = 120


def bridge(taps):
    """The test's own layer-2 network in the private namespace: bridge cbr0
    (10.99.0.254/24, the controller's side) and one tap per VM."""
    if subprocess.run(["ip", "link", "show", "cbr0"], capture_output=True).returncode != 0:
        for cmd in (["ip", "link", "add", "cbr0", "type", "bridge"], ["ip", "addr", "add", "10.99.0.254/24", "dev", "cbr0"],
                    ["ip", "link", "set", "cbr0", "up"]):
            subprocess.run(cmd, check=True)
    for n in taps:
        if subprocess.run(["ip", "link", "show", f"ctap{n}"], capture_output=True).returncode != 0:
            subprocess.run(["ip", "tuntap", "add", f"ctap{n}", "mode", "tap"], check=True)
            subprocess.run(["ip", "link", "set", f"ctap{n}", "master", "cbr0", "up"], check=True)


@pytest.fixture(scope="module")
def drbd_cluster_shared(drbd_image, request):
    """A controller and three VMs d1-d3 with DRBD 9 loaded (10.99.0.1-3 on
    the test bridge), each with an LVM_THIN pool `thin` on its disk, a
    FILE_THIN pool `file` and a FILE pool `thick`; the default layer stack
    DRBD,STORAGE. The disk is a sparse file of the module's `DRBD_DISK`
    (default 1G; the benchmarks need more)."""
    disk = getattr(request.module, "DRBD_DISK", "1G")
    root = tempfile.mkdtemp(prefix="cairn-drbdtest-")
    shutil.rmtree(os.path.join(LOGS, "failed"), ignore_errors=True)  # a previous run's
    names = ["d1", "d2", "d3"]
    bridge(range(1, len(names) + 1))
    ctrl, lin, vms = Controller(root, extra_args=PLAIN_LUKS), None, {}
    try:
        ctrl.start()
        lin = linstor.Linstor(ctrl.url, timeout=CLIENT_TIMEOUT)
        lin.connect()
        for i, n in enumerate(names, start=1):  # booting at once
            vms[n] = Vm(n, None, os.path.join(root, "cluster-secret"), disks=(disk,), mem=640, image=drbd_image, tap=i).launch()
        for n, vm in vms.items():
            vm.wait_ready()
            ok(lin.node_create(n, "SATELLITE", vm.ip))
        wait_for("satellites online", lambda: all(x.connection_status == "ONLINE" for x in lin.node_list_raise().nodes), timeout=60)
        for n in names:
            rc, version = vms[n].sh("cat /sys/module/drbd/version")
            assert rc == 0 and version.startswith("9."), f"the DRBD 9 module is not loaded in {n}: {version}"
            assert "DRBD" in lin.node_list_raise(filter_by_nodes=[n]).nodes[0].resource_layers
            status, _, body = ctrl.request("POST", f"/v1/physical-storage/{n}", {
                "provider_kind": "LVM_THIN", "device_paths": ["/dev/vda"], "pool_name": "thin", "with_storage_pool": {"name": "thin"}})
            assert status == 201, body
            ok(lin.storage_pool_create(n, "file", "FILE_THIN", "/var/lib/cairn-pool"))
            ok(lin.storage_pool_create(n, "thick", "FILE", "/var/lib/cairn-thick"))
        c = type("C", (), {})()
        c.ctrl, c.lin, c.vms, c.root = ctrl, lin, vms, root
        yield c
        lin = c.lin
    finally:
        _teardown(lin, ctrl, vms.values(), root)


@pytest.fixture
def drbd_cluster(drbd_cluster_shared):
    """The three-VM cluster with a client of its own for each test: a
    request that timed out leaves python-linstor's connection unusable
    (http.client's CannotSendRequest on every later call), which must fail
    that test alone."""
    c = drbd_cluster_shared
    try:
        c.lin.disconnect()
    except Exception:  # noqa: BLE001 - whatever state the old one is in
        pass
    c.lin = linstor.Linstor(c.ctrl.url, timeout=CLIENT_TIMEOUT)
    c.lin.connect()
    yield c


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test of the three-VM cluster carries the warnings and errors
    its controller and satellites logged last, in its own report: CI keeps
    only what pytest prints, and a slow or hung request says nothing about
    which node held it."""
    outcome = yield
    rep = outcome.get_result()
    c = item.funcargs.get("drbd_cluster") if rep.when == "call" and rep.failed else None
    if c is None:
        return
    pick = re.compile(r"WARN|ERROR|did not|timed out")
    try:
        with open(os.path.join(c.root, "controller.log"), errors="replace") as f:
            lines = [x.rstrip() for x in f if pick.search(x)]
        rep.sections.append(("controller: last warnings and errors", "\n".join(lines[-25:])))
    except OSError as e:
        rep.sections.append(("controller log", f"unreadable: {e}"))
    # Each node's whole kernel log and satellite log as they were when the
    # test failed (a later test may restart the VM and lose them), beside
    # the logs the cluster leaves at its end.
    saved = os.path.join(LOGS, "failed", item.name)
    shutil.rmtree(saved, ignore_errors=True)
    os.makedirs(saved, exist_ok=True)
    def running(vm):
        return vm.proc is not None and vm.proc.poll() is None

    for n, vm in c.vms.items():
        for what, cmd in (("dmesg", "dmesg"), ("satellite", "cat /var/log/cairn-satellite.log"), ("drbd-status", "drbdsetup status --verbose --statistics")):
            try:
                out = vm.sh(cmd, timeout=30)[1] if running(vm) else "the VM is not running"
            except Exception as e:  # noqa: BLE001 - a report must never break the run
                out = f"unreachable: {e}"
            with open(os.path.join(saved, f"{n}.{what}.log"), "w") as f:
                f.write(out)
    for n, vm in c.vms.items():
        if not running(vm):
            rep.sections.append((f"satellite {n}", "the VM is not running"))
            continue
        try:
            # The last commands other than the capacity reads every few
            # seconds: what the node was doing.
            _, out = vm.sh("grep -E ' (WARN|ERROR) ' /var/log/cairn-satellite.log | tail -n 15; echo '-- last commands'; "
                           "grep -vE 'cmd=(vgs|df|lvs|pvs) ' /var/log/cairn-satellite.log | tail -n 8", timeout=30)
        except Exception as e:  # noqa: BLE001 - as above
            out = f"unreachable: {e}"
        rep.sections.append((f"satellite {n}: last warnings, errors and commands", out))
