"""What crosses the controller-satellite link: a TCP proxy between a real
controller and a real (or simulated) satellite records every byte both
ways. The cluster secret never crosses; captured requests cannot be sent
again or altered; LUKS keys go only over SSL links unless the controller
was started with --allow-plain-luks-keys."""

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import linstor
import pytest

import satlink
from conftest import BIN, Controller, SatelliteProc, free_port, loops_under, ok, wait_for
from satlink import PROTO
from test_tls import make_ca, make_cert


class Proxy:
    """Listens on ip:port (picked free) and forwards every connection to
    `target`, keeping what went each way."""

    def __init__(self, ip, target):
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, 0))
        self.sock.listen(16)
        self.ip, self.port = self.sock.getsockname()
        self.lock = threading.Lock()
        self.streams = []  # [to_satellite bytearray, to_controller bytearray] per connection
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            pair = [bytearray(), bytearray()]
            with self.lock:
                self.streams.append(pair)
            threading.Thread(target=self.pump, args=(client, upstream, pair[0]), daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, client, pair[1]), daemon=True).start()

    def pump(self, src, dst, record):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def sent(self):
        """Everything the controller sent."""
        with self.lock:
            return b"".join(bytes(p[0]) for p in self.streams)

    def received(self):
        with self.lock:
            return b"".join(bytes(p[1]) for p in self.streams)

    def close(self):
        self.sock.close()


def requests_in(stream):
    """The HTTP requests of a recorded client stream: (head, body, raw)."""
    out = []
    while stream:
        end = stream.find(b"\r\n\r\n")
        if end < 0:
            break
        head = stream[:end].decode("latin-1")
        m = re.search(r"(?im)^content-length:\s*(\d+)", head)
        n = int(m.group(1)) if m else 0
        raw = stream[:end + 4 + n]
        out.append((head, stream[end + 4:end + 4 + n], raw))
        stream = stream[end + 4 + n:]
    return out


def raw_send(addr, raw):
    """Sends bytes as they are; the answer's status and body (the
    connection stays open for writing: the server must not take a
    half-close for an abort)."""
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed after {data!r}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while m and len(body) < int(m.group(1)):
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(head.split()[1]), body


def forms(secret):
    """The secret as it could appear on the wire."""
    s = secret.encode()
    return [s, base64.b64encode(s), base64.urlsafe_b64encode(s).rstrip(b"="), s.hex().encode(), s.hex().upper().encode()]


def test_the_secret_never_crosses_and_captured_requests_are_refused():
    if os.geteuid() != 0:
        raise RuntimeError("needs root for loop devices")
    root = tempfile.mkdtemp(prefix="cairn-wire-")
    os.makedirs(os.path.join(root, "ctrl"))
    ctrl = Controller(os.path.join(root, "ctrl")).start()
    secret_file = os.path.join(ctrl.data_dir, "cluster-secret")
    with open(secret_file) as f:
        secret = f.read().strip()
    sat = SatelliteProc("w1", "127.0.10.60", os.path.join(root, "w1"), secret_file).start()
    proxy = Proxy("127.0.10.61", (sat.ip, sat.port))
    lin = ctrl.client()
    try:
        ok(lin.node_create("w1", "SATELLITE", proxy.ip, port=proxy.port))
        ok(lin.storage_pool_create("w1", "DfltStorPool", "FILE_THIN", os.path.join(root, "w1", "pool")))
        wait_for("w1 online", lambda: lin.node_list_raise().nodes[0].connection_status == "ONLINE")
        ok(lin.resource_dfn_create("wire", layer_list=["storage"]))
        ok(lin.volume_dfn_create("wire", 4096))
        ok(lin.resource_create([linstor.ResourceData("w1", "wire")]))
        assert lin.volume_list_raise().resources[0].volumes[0].device_path.startswith("/dev/loop")
        ok(lin.resource_dfn_delete("wire"))
        time.sleep(2.5)  # a heartbeat or two

        sent, received = proxy.sent(), proxy.received()
        reqs = requests_in(sent)
        paths = [h.split()[1] for h, _, _ in reqs]
        assert "/internal/v1/auth/session" in paths and paths.count("/internal/v1/apply") >= 3, paths
        for form in forms(secret):
            assert form not in sent and form not in received, form
        assert b"authorization" not in sent.lower()

        # The last apply (the delete), sent again verbatim straight to the
        # satellite: its sequence number was used.
        applies = [r for r in reqs if r[0].split()[1] == "/internal/v1/apply"]
        head, body, raw = applies[-1]
        status, answer = raw_send((sat.ip, sat.port), raw)
        assert status == 401 and b"replayed" in answer, (status, answer)
        # With a sequence number never used, the MAC no longer matches.
        seq = int(re.search(r"(?im)^x-cairn-seq:\s*(\d+)", head).group(1))
        fresh = re.sub(rb"(?im)^(x-cairn-seq:\s*)\d+", lambda m: m.group(1) + str(seq + 50).encode(), raw)
        status, answer = raw_send((sat.ip, sat.port), fresh)
        assert status == 401 and b"MAC does not match" in answer, (status, answer)
        # A full apply with nothing in it would delete everything: a new
        # body under a valid session's MAC header is refused too.
        evil = raw.replace(body, b"{" + b" " * (len(body) - 2) + b"}") if len(body) >= 2 else raw
        evil = re.sub(rb"(?im)^(x-cairn-seq:\s*)\d+", lambda m: m.group(1) + str(seq + 51).encode(), evil)
        status, answer = raw_send((sat.ip, sat.port), evil)
        assert status == 401 and b"MAC does not match" in answer, (status, answer)
        # A request without a session, and one with the secret as a bearer
        # token (the old protocol), are refused.
        status, _ = raw_send((sat.ip, sat.port), b"GET /internal/v1/hello HTTP/1.1\r\nHost: x\r\nx-cairn-proto: %d\r\n"
                             b"Authorization: Bearer %s\r\n\r\n" % (PROTO, secret.encode()))
        assert status == 401
        # The python side of the protocol with the real secret gets in (so
        # the refusals above are for the reasons given).
        s = satlink.Session(f"http://{sat.ip}:{sat.port}", secret, PROTO)
        status, hello = s.request("GET", "/internal/v1/hello")
        assert status == 200 and json.loads(hello)["node_name"] == "w1"
        # The controller keeps working after all that.
        ok(lin.resource_dfn_create("after", layer_list=["storage"]))
        ok(lin.volume_dfn_create("after", 4096))
        ok(lin.resource_create([linstor.ResourceData("w1", "after")]))
        ok(lin.resource_dfn_delete("after"))
        # A satellite restart forgets the sessions: the controller opens a
        # new one and carries on.
        sat.stop()
        sat.start()
        wait_for("w1 online again", lambda: lin.node_list_raise().nodes[0].connection_status == "ONLINE", timeout=30)
        ok(lin.resource_dfn_create("again", layer_list=["storage"]))
        ok(lin.volume_dfn_create("again", 4096))
        ok(lin.resource_create([linstor.ResourceData("w1", "again")]))
        ok(lin.resource_dfn_delete("again"))
    finally:
        lin.disconnect()
        ctrl.stop()
        sat.stop()
        proxy.close()
        for d in loops_under(root):
            subprocess.run(["losetup", "--detach", d["name"]], check=False)
        shutil.rmtree(root, ignore_errors=True)


SIM_IP = "127.0.11.60"


def start_sim(secret_file, prefix, extra=()):
    base = free_port(SIM_IP)
    sim = subprocess.Popen([BIN, "sim-satellites", "--count", "1", "--ip", SIM_IP, "--base-port", str(base), "--name-prefix", prefix,
                            "--cluster-secret-file", secret_file, "--pool-gib", "10", *extra],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection((SIM_IP, base), timeout=0.5):
                return sim, base
        except OSError:
            time.sleep(0.05)
    sim.kill()
    raise RuntimeError("the simulated satellite did not listen")


def luks_objects(stream):
    """Every `luks` object of the apply requests in a recorded stream."""
    found = []

    def walk(v):
        if isinstance(v, dict):
            if isinstance(v.get("luks"), dict):
                found.append(v["luks"])
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for head, body, _ in requests_in(stream):
        if head.split()[1] == "/internal/v1/apply":
            walk(json.loads(body))
    return found


def encrypted_on(lin, node):
    ok(lin.crypt_create_passphrase("geheim-und-lang"))
    ok(lin.storage_pool_create(node, "pool", "FILE_THIN", "/var/lib/sim"))
    ok(lin.resource_dfn_create("enc", layer_list=["luks", "storage"]))
    ok(lin.volume_dfn_create("enc", 4096))
    return lin.resource_create([linstor.ResourceData(node, "enc", storage_pool="pool")])


@pytest.mark.parametrize("allowed", [False, True])
def test_luks_keys_stay_off_plain_links_unless_allowed(allowed):
    root = tempfile.mkdtemp(prefix="cairn-luks-wire-")
    ctrl = Controller(root, extra_args=["--allow-plain-luks-keys"] if allowed else []).start()
    sim, base = start_sim(os.path.join(root, "cluster-secret"), "lk")
    proxy = Proxy("127.0.11.61", (SIM_IP, base))
    lin = ctrl.client()
    try:
        ok(lin.node_create("lk00000", "SATELLITE", proxy.ip, port=proxy.port))
        wait_for("online", lambda: lin.node_list_raise().nodes[0].connection_status == "ONLINE")
        replies = encrypted_on(lin, "lk00000")
        objs = luks_objects(proxy.sent())
        assert objs, "the apply carried the LUKS layer"
        if allowed:
            ok(replies)
            assert all(o.get("key") for o in objs), objs
            status, _, view = ctrl.request("GET", "/v1/view/resources?resources=enc")
            assert view[0]["volumes"][0]["state"]["disk_state"] == "UpToDate", view
        else:
            assert not any("key" in o for o in objs), objs
            assert all("--allow-plain-luks-keys" in o["withheld"] for o in objs), objs
            errors = [r for r in replies if r.is_error()]
            assert errors, [str(r) for r in replies]
            e = errors[0]
            assert e.ret_code & 0xC000000000000000 == 0xC000000000000000 and "(Node: 'lk00000')" in e.message, str(e)
            assert "PLAIN" in e.cause and "--allow-plain-luks-keys" in e.cause, e.cause
            # The replica says so too.
            status, _, view = ctrl.request("GET", "/v1/view/resources?resources=enc")
            reports = view[0]["volumes"][0].get("reports", []) + view[0].get("reports", [])
            assert any("--allow-plain-luks-keys" in (r.get("cause") or "") for r in reports), view
    finally:
        lin.disconnect()
        ctrl.stop()
        sim.terminate()
        sim.communicate(timeout=30)
        proxy.close()
        shutil.rmtree(root, ignore_errors=True)


def test_luks_keys_go_over_ssl_without_the_option():
    if shutil.which("openssl") is None:
        raise RuntimeError("needs the openssl command")
    pki = tempfile.mkdtemp(prefix="cairn-luks-pki-")
    root = tempfile.mkdtemp(prefix="cairn-luks-ssl-")
    make_ca(pki, "ca")
    make_cert(pki, "sat", "ca", f"IP:{SIM_IP}")
    make_cert(pki, "ctrl", "ca", "DNS:controller")
    p = lambda f: os.path.join(pki, f)
    ctrl = Controller(root, extra_args=["--satellite-tls-cert", p("ctrl.crt"), "--satellite-tls-key", p("ctrl.key"),
                                        "--satellite-tls-ca", p("ca.crt")]).start()
    sim, base = start_sim(os.path.join(root, "cluster-secret"), "ls",
                          ["--tls-cert", p("sat.crt"), "--tls-key", p("sat.key"), "--tls-ca", p("ca.crt")])
    lin = ctrl.client()
    try:
        ok(lin.node_create("ls00000", "SATELLITE", SIM_IP, com_type="SSL", port=base))
        wait_for("online over SSL", lambda: lin.node_list_raise().nodes[0].connection_status == "ONLINE")
        ok(encrypted_on(lin, "ls00000"))
        status, _, view = ctrl.request("GET", "/v1/view/resources?resources=enc")
        assert view[0]["volumes"][0]["state"]["disk_state"] == "UpToDate", view
        assert not any("withheld" in json.dumps(r) or "PLAIN" in (r.get("cause") or "") for r in view[0]["volumes"][0].get("reports", []))
    finally:
        lin.disconnect()
        ctrl.stop()
        sim.terminate()
        sim.communicate(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pki, ignore_errors=True)
