"""HTTPS on the REST API (LINSTOR's port 3371 listener): python-linstor over
linstor+ssl:// and through the plain port's redirect, client certificates,
and the cairn CLI over HTTPS."""

import http.client
import json
import os
import shutil
import ssl
import subprocess
import tempfile

import linstor
import pytest

from conftest import BIN, Controller, free_port, ok
from test_tls import make_ca, make_cert


@pytest.fixture(scope="module")
def pki():
    if shutil.which("openssl") is None:
        raise RuntimeError("the HTTPS tests need the openssl command")
    d = tempfile.mkdtemp(prefix="cairn-https-pki-")
    make_ca(d, "ca")
    make_ca(d, "rogue")
    make_cert(d, "server", "ca", "IP:127.0.0.1")
    make_cert(d, "client", "ca", "DNS:client")
    make_cert(d, "rogueclient", "rogue", "DNS:client")
    yield lambda f: os.path.join(d, f)
    shutil.rmtree(d, ignore_errors=True)


def https_controller(pki, client_ca=False):
    d = tempfile.mkdtemp(prefix="cairn-https-")
    port = free_port()
    args = ["--rest-bind-secure", f"127.0.0.1:{port}", "--rest-tls-cert", pki("server.crt"), "--rest-tls-key", pki("server.key")]
    if client_ca:
        args += ["--rest-tls-client-ca", pki("ca.crt")]
    c = Controller(d, extra_args=args).start()
    c.https_port = port
    return c


@pytest.fixture
def ctrl(pki):
    c = https_controller(pki)
    yield c
    c.stop()
    shutil.rmtree(c.data_dir, ignore_errors=True)


@pytest.fixture
def mtls_ctrl(pki):
    c = https_controller(pki, client_ca=True)
    yield c
    c.stop()
    shutil.rmtree(c.data_dir, ignore_errors=True)


def connect(url, cafile=None, cert=None):
    lin = linstor.Linstor(url, timeout=10)
    lin.cafile = cafile
    if cert:
        lin.certfile, lin.keyfile = cert
    lin.connect()
    return lin


def test_python_linstor_over_linstor_ssl(ctrl, pki):
    lin = connect(f"linstor+ssl://127.0.0.1:{ctrl.https_port}", cafile=pki("ca.crt"))
    try:
        assert lin.is_secure_connection
        ok(lin.resource_group_create("overtls"))
        assert "overtls" in [g.name for g in lin.resource_group_list_raise().resource_groups]
    finally:
        lin.disconnect()
    # A CA that did not sign the controller's certificate: no connection.
    with pytest.raises(linstor.LinstorNetworkError):
        connect(f"linstor+ssl://127.0.0.1:{ctrl.https_port}", cafile=pki("rogue.crt"))


def test_plain_port_redirects_to_https(ctrl, pki):
    # python-linstor's has_linstor_https probe, then the whole session on HTTPS.
    assert linstor.Linstor.has_linstor_https("127.0.0.1", ctrl.port) == ctrl.https_port
    lin = connect(ctrl.url, cafile=pki("ca.crt"))
    try:
        assert lin.is_secure_connection
        ok(lin.resource_group_create("redirected"))
    finally:
        lin.disconnect()
    # Every /v1 request on the plain port gets the redirect, with an
    # ApiCallRc body, the same path and query; /health stays served.
    conn = http.client.HTTPConnection("127.0.0.1", ctrl.port, timeout=5)
    conn.request("POST", "/v1/resource-groups?x=1", body=json.dumps({"name": "nope"}), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 302
    assert r.getheader("Location") == f"https://127.0.0.1:{ctrl.https_port}/v1/resource-groups?x=1"
    assert body[0]["message"].startswith("The REST API is served over HTTPS")
    # The connection stays usable after the redirect (the body was read).
    conn.request("GET", "/health")
    r = conn.getresponse()
    r.read()
    assert r.status == 200
    conn.close()
    # The controller's configuration shows both listeners (LINSTOR's ControllerConfigHttps).
    context = ssl.create_default_context(cafile=pki("ca.crt"))
    conn = http.client.HTTPSConnection("127.0.0.1", ctrl.https_port, context=context, timeout=5)
    conn.request("GET", "/v1/controller/config")
    config = json.loads(conn.getresponse().read())
    conn.close()
    assert config["https"] == {"enabled": True, "listen_address": "127.0.0.1", "port": ctrl.https_port}
    assert config["http"]["port"] == ctrl.port


def test_hypers_own_errors_keep_their_json_body_over_tls(ctrl, pki):
    context = ssl.create_default_context(cafile=pki("ca.crt"))
    conn = http.client.HTTPSConnection("127.0.0.1", ctrl.https_port, context=context, timeout=5)
    conn.request("GET", "/v1/nodes?" + "a" * 70000)
    r = conn.getresponse()
    assert r.status in (414, 431)
    assert r.getheader("Content-Type") == "application/json"
    assert json.loads(r.read())[0]["ret_code"] < 0
    conn.close()


def test_client_certificate_required(mtls_ctrl, pki):
    url = f"linstor+ssl://127.0.0.1:{mtls_ctrl.https_port}"
    for cert in (None, (pki("rogueclient.crt"), pki("rogueclient.key"))):
        with pytest.raises((linstor.LinstorError, OSError)):
            connect(url, cafile=pki("ca.crt"), cert=cert)
    lin = connect(url, cafile=pki("ca.crt"), cert=(pki("client.crt"), pki("client.key")))
    try:
        ok(lin.resource_group_create("withcert"))
    finally:
        lin.disconnect()


def cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "LS_CONTROLLERS"}
    return subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=60)


def test_cli_over_https(mtls_ctrl, pki):
    ssl_url = f"linstor+ssl://127.0.0.1:{mtls_ctrl.https_port}"
    cert = ["--certfile", pki("client.crt"), "--keyfile", pki("client.key")]
    p = cli("--controllers", ssl_url, "--cafile", pki("ca.crt"), *cert, "rg", "create", "clirg")
    assert p.returncode == 0, p.stdout + p.stderr
    # The plain URL is redirected; the group made above is there.
    p = cli("--controllers", mtls_ctrl.url, "--cafile", pki("ca.crt"), *cert, "-m", "rg", "list")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "clirg" in [g["name"] for g in json.loads(p.stdout)]
    # Without the CA the self-signed certificate is not trusted; without a
    # client certificate the controller refuses: exit 20 (connection).
    assert cli("--controllers", ssl_url, *cert, "rg", "list").returncode == 20
    assert cli("--controllers", ssl_url, "--cafile", pki("ca.crt"), "rg", "list").returncode == 20


def test_https_settings_are_checked_at_start(pki):
    d = tempfile.mkdtemp(prefix="cairn-https-bad-")
    try:
        p = subprocess.run([BIN, "controller", "--rest-bind", f"127.0.0.1:{free_port()}", "--data-dir", d,
                            "--rest-tls-cert", pki("server.crt")], capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "--rest-tls-key" in p.stderr
        p = subprocess.run([BIN, "controller", "--rest-bind", f"127.0.0.1:{free_port()}", "--data-dir", d,
                            "--rest-tls-cert", pki("ca.srl"), "--rest-tls-key", pki("server.key")],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "no certificate" in p.stderr, p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)
