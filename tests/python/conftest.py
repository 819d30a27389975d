"""Fixtures that run the real `cairn controller` binary on loopback and talk
to it with the real python-linstor client from PyPI."""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import linstor
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("CAIRN_BIN", os.path.join(REPO, "target", "debug", "cairn"))


# Tests never use the addresses `cairn up` listens on (127.0.0.1:3366 and
# :3370): satellites live on 127.0.10.x, and every port is picked free.
def sat_ip(i):
    """The loopback address of the i-th test satellite."""
    return f"127.0.10.{i}"


def free_port(ip="127.0.0.1"):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class Controller:
    """One `cairn controller` process with its own data directory."""

    def __init__(self, data_dir, extra_args=None):
        self.extra_args = extra_args or []
        if not os.access(BIN, os.X_OK):
            raise RuntimeError(f"cairn binary not found at {BIN}; build it first (cargo build)")
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log_path = os.path.join(data_dir, "controller.log")

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "controller", "--rest-bind", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir] + self.extra_args,
            stdout=log,
            stderr=log,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        raise RuntimeError("controller did not become healthy: " + self.log())

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def client(self):
        c = linstor.Linstor(self.url, timeout=30)
        c.connect()
        return c

    def request(self, method, path, body=None, headers=None, raw_body=None, timeout=30):
        """A raw HTTP request; returns (status, content_type, parsed_json_or_text)."""
        data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, ctype, text = r.status, r.headers.get("Content-Type"), r.read().decode()
        except urllib.error.HTTPError as e:
            status, ctype, text = e.code, e.headers.get("Content-Type"), e.read().decode()
        try:
            return status, ctype, json.loads(text)
        except ValueError:
            return status, ctype, text


@pytest.fixture
def controller():
    d = tempfile.mkdtemp(prefix="cairn-test-")
    c = Controller(d).start()
    yield c
    c.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def lin(controller):
    c = controller.client()
    yield c
    c.disconnect()


class S3Server:
    """moto's S3 server with authentication on (tests/s3server.py): a
    bucket and an access key that the server really checks."""

    def __init__(self, ip="127.0.31.10"):
        import sys
        port = free_port(ip)
        self.proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "s3server.py"), ip, str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"tests/s3server.py exited with {self.proc.wait()} (is moto[server] installed?)")
        info = json.loads(line)
        self.endpoint, self.region, self.bucket = info["endpoint"], info["region"], info["bucket"]
        self.access_key, self.secret_key = info["access_key"], info["secret_key"]

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def s3_server():
    s = S3Server()
    yield s
    s.stop()


def ok(replies):
    """Asserts a python-linstor reply list has no error and returns it."""
    assert replies, "expected at least one ApiCallResponse"
    errors = [r for r in replies if r.is_error()]
    assert not errors, "unexpected errors: " + "; ".join(str(r) for r in errors)
    return replies


def write_dev(dev, data, offset=0):
    """Writes `data` at `offset` of a block device (or file) and syncs it."""
    with open(dev, "r+b") as f:
        f.seek(offset)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def dev_digest(dev, n):
    """The sha256 of the first `n` bytes of a device."""
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read(n)).hexdigest()


def device(c, rd, node):
    """The device path of volume 0 of resource `rd` on `node` in cluster `c`."""
    status, _, v = c.ctrl.request("GET", f"/v1/view/resources?resources={rd}&nodes={node}")
    assert status == 200 and v, v
    return v[0]["volumes"][0]["device_path"]


def err(replies, code):
    """Asserts the replies contain an error with the given code (low 15 bits)."""
    codes = [r.ret_code & 0x7FFF for r in replies if r.is_error()]
    assert code in codes, f"expected error code {code}, got {codes}: " + "; ".join(str(r) for r in replies)
    return replies


class SatelliteProc:
    """One `cairn satellite` process on its own loopback address."""

    def __init__(self, name, ip, data_dir, secret_file, env=None, extra_args=None, port=None, allow_pool_dirs=None):
        self.name, self.ip, self.data_dir = name, ip, data_dir
        # Pools of the tests live in temporary directories (their cluster's
        # root, mounted test file systems): the satellite allows them.
        self.allow_pool_dirs = [tempfile.gettempdir()] if allow_pool_dirs is None else allow_pool_dirs
        self.port = port or free_port(ip)
        self.secret_file = secret_file
        self.env = dict(os.environ, **(env or {}))
        self.extra_args = extra_args or []
        self.proc = None
        os.makedirs(data_dir, exist_ok=True)
        self.log_path = os.path.join(data_dir, "satellite.log")

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "satellite", "--node-name", self.name, "--listen", f"{self.ip}:{self.port}", "--data-dir", self.data_dir,
             "--cluster-secret-file", self.secret_file]
            + (["--allow-pool-dirs", ",".join(self.allow_pool_dirs)] if self.allow_pool_dirs else []) + self.extra_args,
            stdout=log, stderr=log, env=self.env)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"satellite {self.name} exited: {self.log()}")
            try:
                with socket.create_connection((self.ip, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"satellite {self.name} did not listen: {self.log()}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def loops_under(directory):
    """Loop devices whose backing file lies under `directory`."""
    out = subprocess.run(["losetup", "--json", "--list"], capture_output=True, text=True, check=True).stdout
    devs = json.loads(out).get("loopdevices", []) if out.strip() else []
    return [d for d in devs if (d.get("back-file") or "").startswith(directory.rstrip("/") + "/")]


# A test PKI with the openssl command: make_ca(d, "ca") writes ca.crt and
# ca.key into directory d; make_cert(d, "sat", "ca", "IP:127.0.10.1") a
# certificate for server and client use signed by that CA (sat.crt, sat.key).
def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
            "-days", "2", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_cert(d, name, ca, san):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


def wait_for(what, predicate, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def shipped(a, remote, rsc, n, timeout=60):
    """The shipments of `rsc` to LINSTOR remote `remote` of cluster `a`
    once `n` of them ended well (fails at once on a failed one)."""
    def done():
        status, _, body = a.ctrl.request("GET", f"/v1/remotes/{remote}/backups")
        assert status == 200, body
        ships = [s for s in body["linstor"].values() if s["origin_rsc"] == rsc]
        failed = [s for s in ships if not s["success"] and not s["shipping"]]
        assert not failed, failed
        return ships if len(ships) == n and all(s["success"] for s in ships) else None
    return wait_for(f"{n} shipments of {rsc}", done, timeout=timeout)


def run_cluster(prefix, kinds, extra_args=None, default_stack=None, sat_args=None, ctrl_args=None, com_type="PLAIN"):
    """A controller and one satellite per entry of `kinds` (node name ->
    provider of its DfltStorPool) on 127.0.10.1, .2, ...; yields a handle and
    detaches everything the satellites made on teardown. `sat_args(name,
    root)` adds arguments of one satellite, `ctrl_args` the controller's;
    `com_type` is the nodes' (SSL: satellites with --tls-cert)."""
    if os.geteuid() != 0:
        raise RuntimeError("the satellite tests need root for loop devices")
    root = tempfile.mkdtemp(prefix=prefix)
    ctrl_dir = os.path.join(root, "controller")
    os.makedirs(ctrl_dir)
    ctrl = Controller(ctrl_dir, extra_args=ctrl_args).start()
    secret = os.path.join(ctrl_dir, "cluster-secret")
    sats = {}
    lin = ctrl.client()
    if default_stack:
        ok(lin.controller_set_prop("Cairn/DefaultLayerStack", default_stack))
    for i, (name, kind) in enumerate(kinds.items(), start=1):
        args = (extra_args or []) + (sat_args(name, root) if sat_args else [])
        sats[name] = SatelliteProc(name, sat_ip(i), os.path.join(root, name), secret, extra_args=args).start()
        ok(lin.node_create(name, "SATELLITE", sat_ip(i), port=sats[name].port, com_type=com_type))
        ok(lin.storage_pool_create(name, "DfltStorPool", kind, os.path.join(root, name, "pool")))
    wait_for("satellites online", lambda: all(n.connection_status == "ONLINE" for n in lin.node_list_raise().nodes))
    c = type("C", (), {})()
    c.root, c.ctrl, c.sats, c.lin, c.kinds = root, ctrl, sats, lin, kinds
    yield c
    lin.disconnect()
    ctrl.stop()
    for s in sats.values():
        s.stop()
    for d in loops_under(root):
        subprocess.run(["losetup", "--detach", d["name"]], check=False)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster():
    """Controller + satellites n1 (FILE_THIN), n2 (FILE), n3 (FILE_THIN) on
    127.0.10.1-3. These satellites have no DRBD 9 module: unreplicated
    volumes by default, as `cairn up` does on such a host (test_drbd covers
    DRBD)."""
    yield from run_cluster("cairn-e2e-", {"n1": "FILE_THIN", "n2": "FILE", "n3": "FILE_THIN"}, default_stack="STORAGE")


def mounted_fs(mkfs, size="1G"):
    """A file system made by `mkfs` (argv without the device) on a loop
    device over a sparse file, mounted; yields the mount point and takes
    everything down again."""
    work = tempfile.mkdtemp(prefix="cairn-fs-")
    img, mnt = os.path.join(work, "fs.img"), os.path.join(work, "mnt")
    os.makedirs(mnt)
    subprocess.run(["truncate", "-s", size, img], check=True)
    dev = subprocess.run(["losetup", "--find", "--show", img], capture_output=True, text=True, check=True).stdout.strip()
    try:
        subprocess.run(mkfs + [dev], check=True)
        subprocess.run(["mount", dev, mnt], check=True)
        yield mnt
    finally:
        # A failed test may leave volumes attached (this fixture ends before
        # the cluster's): let go of them, or the file system stays busy.
        for d in loops_under(mnt):
            subprocess.run(["losetup", "--detach", d["name"]], check=False)
        if subprocess.run(["umount", mnt], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", mnt], check=False)
        subprocess.run(["losetup", "--detach", dev], check=False)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def xfs_dir():
    """An XFS file system with reflinks, mounted."""
    yield from mounted_fs(["mkfs.xfs", "-q", "-m", "reflink=1"])


@pytest.fixture
def ext4_dir():
    """An ext4 file system (no reflinks), mounted."""
    yield from mounted_fs(["mkfs.ext4", "-q", "-F"], size="256M")


def pg_bin():
    """The directory of PostgreSQL's initdb and pg_ctl: CAIRN_PG_BIN, PATH,
    or Debian's newest /usr/lib/postgresql/N/bin; None without one."""
    has = lambda d: os.path.isfile(os.path.join(d, "initdb")) and os.path.isfile(os.path.join(d, "pg_ctl"))
    if os.environ.get("CAIRN_PG_BIN"):
        d = os.environ["CAIRN_PG_BIN"]
        return d if has(d) else None
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and has(d):
            # Symbolic links on PATH: the directory with the other programs.
            return os.path.dirname(os.path.realpath(os.path.join(d, "initdb")))
    try:
        versions = sorted((int(v), v) for v in os.listdir("/usr/lib/postgresql") if v.isdigit())
    except OSError:
        versions = []
    for _, v in reversed(versions):
        d = os.path.join("/usr/lib/postgresql", v, "bin")
        if has(d):
            return d
    return None


class PgServer:
    """A PostgreSQL server of its own in a temporary directory (initdb,
    pg_ctl), as the `postgres` user when the tests run as root (PostgreSQL
    refuses root), on 127.0.32.1 at a free port; superuser `cairn`, trust
    authentication. `stop()` stops it and removes the directory."""

    IP = "127.0.32.1"

    def __init__(self, bin_dir):
        self.bin = bin_dir
        self.dir = tempfile.mkdtemp(prefix="cairn-pg-")
        self.user = None
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.user = "postgres"
        self.port = free_port(self.IP)
        data = os.path.join(self.dir, "data")
        try:
            self.run("initdb", "-D", data, "-U", "cairn", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions")
            opts = f"-c listen_addresses={self.IP} -c port={self.port} -c unix_socket_directories={self.dir} -c fsync=off"
            self.run("pg_ctl", "-D", data, "-l", os.path.join(self.dir, "server.log"), "-o", opts, "-w", "-t", "60", "start")
        except Exception:
            self.stop()
            raise

    def run(self, program, *args, check=True):
        argv = [os.path.join(self.bin, program), *args]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        p = subprocess.run(argv, cwd=self.dir, capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise RuntimeError(f"{program} failed: {p.stdout}{p.stderr}")
        return p

    def url(self, db):
        """The URL of database `db`, created empty."""
        self.run("createdb", "-h", self.IP, "-p", str(self.port), "-U", "cairn", db)
        return f"postgres://cairn@{self.IP}:{self.port}/{db}"

    def stop(self):
        self.run("pg_ctl", "-D", os.path.join(self.dir, "data"), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres():
    """A running PostgreSQL server; skipped, with the reason, where there
    are no PostgreSQL binaries (scripts/test.sh installs Debian's)."""
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) in CAIRN_PG_BIN, PATH or /usr/lib/postgresql/*/bin: install Debian's postgresql")
    if os.geteuid() == 0:
        import pwd
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as (Debian's postgresql makes it)")
    server = PgServer(bin_dir)
    yield server
    server.stop()
