"""The security of shipping between clusters (LINSTOR remotes): a target
controller reached over HTTPS, its certificate checked against the CA the
source controller is given (`--remote-tls-ca`); an untrusted certificate
refused before any snapshot is taken; a target with REST sign-in on
accepting a shipment only with its master passphrase; between clusters
whose satellites run with TLS (each its own CA), the stream in TLS with
the receiving satellite's certificate pinned, a plain connection refused
even with the right token, a certificate other than the pinned one
refused by the sender."""

import hashlib
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import ssl
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import linstor
import pytest

from conftest import Controller, dev_digest, device, err, free_port, ok, run_cluster, shipped, wait_for, write_dev
from test_tls import make_ca, make_cert

MIB = 1 << 20
FAIL_ACC_DENIED_COMMAND, FAIL_NOT_CONNECTED = 412, 995


@pytest.fixture(scope="module")
def pki():
    if shutil.which("openssl") is None:
        raise RuntimeError("the shipping TLS tests need the openssl command")
    d = tempfile.mkdtemp(prefix="cairn-ship-pki-")
    make_ca(d, "ca")
    make_ca(d, "rogue")
    make_cert(d, "server", "ca", "IP:127.0.0.1")
    make_cert(d, "rogueserver", "rogue", "IP:127.0.0.1")
    yield lambda f: os.path.join(d, f)
    shutil.rmtree(d, ignore_errors=True)


def refusal(replies, code):
    return next(r for r in err(replies, code) if r.is_error() and r.ret_code & 0x7FFF == code)


def cluster_id(c):
    return c.lin.controller_props()[0].properties["Cluster/LocalID"]


def source(a, rsc, mib, written):
    """Resource `rsc` of `mib` MiB on a1 in pool xfs, its first `written`
    MiB random: answers those bytes."""
    ok(a.lin.resource_dfn_create(rsc))
    ok(a.lin.volume_dfn_create(rsc, mib * 1024, storage_pool="xfs"))
    ok(a.lin.resource_create([linstor.ResourceData("a1", rsc, storage_pool="xfs")]))
    data = os.urandom(written * MIB)
    write_dev(device(a, rsc, "a1"), data)
    return data


def https_args(pki, cert, port):
    return ["--rest-bind-secure", f"127.0.0.1:{port}", "--rest-tls-cert", pki(f"{cert}.crt"), "--rest-tls-key", pki(f"{cert}.key")]


def https(port, pki, method, path, body=None, headers=None):
    """A raw HTTPS request to a controller: (status, parsed JSON body)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(cafile=pki("ca.crt")), timeout=30)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data) if data else None


@pytest.fixture
def https_clusters(pki, xfs_dir):
    """Cluster A (node a1), trusting the test CA for remotes, and cluster
    B (node b1) whose REST API is served over HTTPS with a certificate of
    that CA; a FILE_THIN pool `xfs` on each node and a master passphrase
    on each; `b` on A is B's https:// URL, `a` on B is A's URL."""
    b_port = free_port()
    ga = run_cluster("cairn-shipsec-a-", {"a1": "FILE_THIN"}, default_stack="STORAGE",
                     ctrl_args=["--remote-tls-ca", pki("ca.crt")])
    a = next(ga)
    gb = run_cluster("cairn-shipsec-b-", {"b1": "FILE_THIN"}, default_stack="STORAGE",
                     ctrl_args=https_args(pki, "server", b_port))
    b = next(gb)
    b.https_port = b_port
    try:
        for c, n in ((a, "a1"), (b, "b1")):
            ok(c.lin.storage_pool_create(n, "xfs", "FILE_THIN", os.path.join(xfs_dir, n)))
            ok(c.lin.crypt_create_passphrase("pw-" + n))
        ok(a.lin.remote_create_linstor("b", f"https://127.0.0.1:{b_port}", cluster_id=cluster_id(b)))
        ok(b.lin.remote_create_linstor("a", a.ctrl.url, cluster_id=cluster_id(a)))
        a.xfs = b.xfs = xfs_dir
        yield a, b
    finally:
        next(gb, None)
        next(ga, None)


def test_ship_over_https_with_the_remote_ca_and_sign_in_on_the_target(pki, https_clusters):
    a, b = https_clusters
    data = source(a, "src", 8, 3)

    # A controller whose certificate is signed by a CA A does not trust:
    # refused before anything is taken on A, with what to do.
    rogue_dir = tempfile.mkdtemp(prefix="cairn-shipsec-rogue-")
    rogue_port = free_port()
    rogue = Controller(rogue_dir, extra_args=https_args(pki, "rogueserver", rogue_port)).start()
    try:
        ok(a.lin.remote_create_linstor("rogue", f"https://127.0.0.1:{rogue_port}", cluster_id=cluster_id(b)))
        e = refusal(a.lin.backup_ship("rogue", "src", "dst"), FAIL_NOT_CONNECTED)
        assert "certificate" in (e.cause or "") and "--remote-tls-ca" in (e.correction or ""), (e.message, e.cause, e.correction)
    finally:
        rogue.stop()
        shutil.rmtree(rogue_dir, ignore_errors=True)
    # B's plain port redirects to HTTPS: the source says so instead of
    # following a redirect of a POST.
    ok(a.lin.remote_create_linstor("plainb", b.ctrl.url, cluster_id=cluster_id(b)))
    e = refusal(a.lin.backup_ship("plainb", "src", "dst"), FAIL_NOT_CONNECTED)
    assert "redirects to https://" in (e.cause or ""), e.cause
    assert a.lin.snapshot_dfn_list_raise().snapshots == []

    # Over HTTPS with B's certificate checked against the given CA; B's
    # satellites run without TLS, so the stream is plain TCP, as said.
    replies = ok(a.lin.backup_ship("b", "src", "dst", dst_node="b1"))
    assert any("plain TCP" in (r.details or "") for r in replies), [r.details for r in replies]
    [first] = shipped(a, "b", "src", 1)
    expected = hashlib.sha256(data + bytes(5 * MIB)).hexdigest()
    # (python-linstor follows B's redirect to HTTPS; urllib would check the certificate)
    path = lambda: [v.device_path for r in b.lin.volume_list_raise(filter_by_resources=["dst"]).resources for v in r.volumes]
    [dev] = wait_for("the restored volume on b1", lambda: [p for p in path() if p])
    wait_for("the shipped data on b1", lambda: dev_digest(dev, 8 * MIB) == expected)

    time.sleep(1.1)  # snapshot names have a resolution of one second
    # B turns token sign-in on: A's remote without a passphrase is refused
    # (cluster ids are no secrets) ...
    b_id = cluster_id(b)
    status, body = https(b.https_port, pki, "POST", "/v1/controller/auth/initialize-token-auth", {"description": "admin"})
    assert status == 201, body
    token = {"Authorization": "Bearer " + body[0]["obj_refs"]["token"]}
    assert https(b.https_port, pki, "GET", "/v1/resource-definitions")[0] == 401
    e = refusal(a.lin.backup_ship("b", "src", "dst"), FAIL_ACC_DENIED_COMMAND)
    assert "master passphrase" in (e.cause or "") + e.message, (e.message, e.cause)
    # ... a wrong passphrase too; B's own passphrase lets the shipment in
    # (an incremental on the first).
    ok(a.lin.remote_create_linstor("badpw", f"https://127.0.0.1:{b.https_port}", passphrase="nope", cluster_id=b_id))
    err(a.lin.backup_ship("badpw", "src", "dst"), 216)
    ok(a.lin.remote_create_linstor("bpw", f"https://127.0.0.1:{b.https_port}", passphrase="pw-b1", cluster_id=b_id))
    time.sleep(1.1)  # snapshot names have a resolution of one second
    change = os.urandom(MIB)
    write_dev(device(a, "src", "a1"), change, offset=MIB)
    replies = ok(a.lin.backup_ship("bpw", "src", "dst"))
    assert any("incremental" in r.message for r in replies), [r.message for r in replies]
    [second] = shipped(a, "bpw", "src", 1)
    assert second["sent_chunks"] == 1, second
    status, snaps = https(b.https_port, pki, "GET", "/v1/resource-definitions/dst/snapshots", headers=token)
    assert status == 200, snaps
    assert sorted(s["name"] for s in snaps) == sorted([first["origin_snap"], second["origin_snap"]])
    [snap_file] = [os.path.join(b.xfs, "b1", f) for f in os.listdir(os.path.join(b.xfs, "b1"))
                   if f == f"dst_00000@{second['origin_snap']}.snap"]
    new = data[:MIB] + change + data[2 * MIB:] + bytes(5 * MIB)
    assert dev_digest(snap_file, 8 * MIB) == hashlib.sha256(new).hexdigest()


@pytest.fixture
def tls_clusters(xfs_dir):
    """Clusters A (a1) and B (b1) whose satellites speak mutual TLS with
    their controllers, each cluster with a CA of its own; FILE_THIN pool
    `xfs`, master passphrases and remotes as above (plain REST)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the shipping TLS tests need the openssl command")
    d = tempfile.mkdtemp(prefix="cairn-ship-tls-pki-")
    for c in ("a", "b"):
        make_ca(d, f"ca{c}")
        make_cert(d, f"sat{c}", f"ca{c}", "IP:127.0.10.1")
        make_cert(d, f"ctrl{c}", f"ca{c}", "DNS:controller")
    p = lambda f: os.path.join(d, f)
    ctrl = lambda c: ["--satellite-tls-cert", p(f"ctrl{c}.crt"), "--satellite-tls-key", p(f"ctrl{c}.key"),
                      "--satellite-tls-ca", p(f"ca{c}.crt")]
    sat = lambda c: lambda name, root: ["--tls-cert", p(f"sat{c}.crt"), "--tls-key", p(f"sat{c}.key"), "--tls-ca", p(f"ca{c}.crt")]
    ga = run_cluster("cairn-shiptls-a-", {"a1": "FILE_THIN"}, default_stack="STORAGE", ctrl_args=ctrl("a"), sat_args=sat("a"),
                     com_type="SSL")
    a = next(ga)
    gb = run_cluster("cairn-shiptls-b-", {"b1": "FILE_THIN"}, default_stack="STORAGE", ctrl_args=ctrl("b"), sat_args=sat("b"),
                     com_type="SSL")
    b = next(gb)
    try:
        for c, n in ((a, "a1"), (b, "b1")):
            ok(c.lin.storage_pool_create(n, "xfs", "FILE_THIN", os.path.join(xfs_dir, n)))
            ok(c.lin.crypt_create_passphrase("pw-" + n))
        ok(a.lin.remote_create_linstor("b", b.ctrl.url, cluster_id=cluster_id(b)))
        ok(b.lin.remote_create_linstor("a", a.ctrl.url, cluster_id=cluster_id(a)))
        a.xfs = b.xfs = xfs_dir
        b.pki = p
        yield a, b
    finally:
        next(gb, None)
        next(ga, None)
        shutil.rmtree(d, ignore_errors=True)


def test_the_stream_between_tls_satellites_is_tls_with_the_receivers_certificate_pinned(tls_clusters):
    a, b = tls_clusters
    data = source(a, "src", 8, 3)
    replies = ok(a.lin.backup_ship("b", "src", "dst", dst_node="b1"))
    assert any("encrypted with TLS" in (r.details or "") for r in replies), [r.details for r in replies]
    shipped(a, "b", "src", 1)
    expected = hashlib.sha256(data + bytes(5 * MIB)).hexdigest()
    wait_for("the shipped data on b1", lambda: dev_digest(device(b, "dst", "b1"), 8 * MIB) == expected)

    # B's controller names the certificate its satellite listens with:
    # b1's own (the sha256 of its DER).
    prepare = {
        "src_cluster_id": cluster_id(a), "dst_cluster_id": cluster_id(b), "src_rsc_name": "src", "dst_rsc_name": "other",
        "dst_node_name": "b1", "dst_stor_pool": "xfs", "snapshot": "s1", "layer_stack": ["STORAGE"],
        "volumes": [[0, 4096, 4 * MIB, "xfs"]], "bases": [],
    }
    status, _, got = b.ctrl.request("POST", "/v1/internal/backups/requestReceive", prepare)
    assert status == 200, got
    der = subprocess.run(["openssl", "x509", "-in", b.pki("satb.crt"), "-outform", "DER"], capture_output=True, check=True).stdout
    assert got["tls_sha256"] == hashlib.sha256(der).hexdigest(), got
    # A plain connection presenting the right token is refused: the
    # listener speaks TLS only (a plain listener would take the hello and
    # wait for the volumes).
    host, port = got["target"].rsplit(":", 1)
    token = got["token"].encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"CAIRNSHP" + struct.pack(">H", len(token)) + token)
        try:
            answer = conn.recv(64)
        except ConnectionResetError:
            answer = b""
    assert answer == b"" or answer[0] == 0x15, answer  # closed, or a TLS alert record
    wait_for("the refusal in b1's log", lambda: "a shipment's TLS handshake failed" in b.sats["b1"].log())
    # The shipment still waits for its sender; the source gives it up.
    status, _, body = b.ctrl.request("POST", "/v1/internal/backups/requestReceiveDone",
                                     {"token": got["token"], "success": False, "message": "test"})
    assert status == 200, body
    assert [d.name for d in b.lin.resource_dfn_list_raise().resource_definitions] == ["dst"]


def pin_swapping_proxy(url, pin):
    """A plain HTTP proxy in front of the controller at `url` that puts
    `pin` in place of the `tls_sha256` of every requestReceive answer (as
    if the pin had been changed on its way); answers the server and the
    pins it replaced."""
    to = urllib.parse.urlparse(url)
    replaced = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            conn = http.client.HTTPConnection(to.hostname, to.port, timeout=120)
            conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            conn.close()
            if self.path == "/v1/internal/backups/requestReceive" and r.status == 200:
                answer = json.loads(data)
                replaced.append(answer.get("tls_sha256"))
                answer["tls_sha256"] = pin
                data = json.dumps(answer).encode()
            self.send_response(r.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, replaced


def test_a_receiver_whose_certificate_is_not_the_pinned_one_is_refused_by_the_sender(tls_clusters):
    """The pin the sender gets names another certificate than the one the
    receiving satellite presents (here: a1's, put in by a proxy between
    the controllers): the sender ends the TLS handshake, the shipment fails
    saying why, and B registers nothing and keeps nothing of it."""
    a, b = tls_clusters
    source(a, "src", 8, 3)
    der = lambda name: subprocess.run(["openssl", "x509", "-in", b.pki(f"{name}.crt"), "-outform", "DER"],
                                      capture_output=True, check=True).stdout
    wrong = hashlib.sha256(der("sata")).hexdigest()
    pool = os.path.join(b.xfs, "b1")
    before = sorted(os.listdir(pool))
    server, replaced = pin_swapping_proxy(b.ctrl.url, wrong)
    try:
        ok(a.lin.remote_create_linstor("swapped", f"http://127.0.0.1:{server.server_address[1]}", cluster_id=cluster_id(b)))
        replies = ok(a.lin.backup_ship("swapped", "src", "dst", dst_node="b1"))
        assert any("encrypted with TLS" in (r.details or "") for r in replies), [r.details for r in replies]
        assert replaced == [hashlib.sha256(der("satb")).hexdigest()], replaced

        def failed():
            status, _, body = a.ctrl.request("GET", "/v1/remotes/swapped/backups")
            assert status == 200, body
            ships = [x for x in body["linstor"].values() if x["origin_rsc"] == "src"]
            assert not any(x["success"] for x in ships), ships
            return [x for x in ships if not x["shipping"]]

        [ship] = wait_for("the shipment failed", failed, timeout=60)
        why = ship.get("fail_messages") or ""
        assert "not the pinned one" in why and wrong in why, why
        # B registered nothing, and what its satellite had made for the
        # shipment is gone once the source reported the failure.
        assert b.lin.resource_dfn_list_raise().resource_definitions == []
        assert b.lin.snapshot_dfn_list_raise().snapshots == []
        wait_for("nothing of the shipment left in b1's pool", lambda: sorted(os.listdir(pool)) == before)
        wait_for("the failed handshake in b1's log", lambda: "a shipment's TLS handshake failed" in b.sats["b1"].log())
        # Nothing of it stands in the way: through the controllers' own
        # connection the shipment goes (full: B holds no snapshot of it).
        time.sleep(1.1)  # snapshot names have a resolution of one second
        replies = ok(a.lin.backup_ship("b", "src", "dst", dst_node="b1"))
        assert any("full" in r.message for r in replies), [r.message for r in replies]
        shipped(a, "b", "src", 1)
    finally:
        server.shutdown()
        server.server_close()
