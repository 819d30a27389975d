"""REST authentication over HTTPS: HTTP Basic against the controller's users
file and LINSTOR's bearer tokens, with python-linstor's `username/password`
and `auth_token` client paths, raw requests for LINSTOR's 401 answers, and
the cairn CLI's --user/--token."""

import base64
import http.client
import json
import os
import shutil
import ssl
import subprocess
import tempfile

import linstor
import linstor.responses
import linstor.sharedconsts as consts
import pytest

from conftest import BIN, Controller, free_port, ok
from test_https import pki  # noqa: F401 (the fixture)



def wire(code):
    """python-linstor's constant as the signed 64-bit number on the wire."""
    return code - (1 << 64) if code >= (1 << 63) else code


FAIL_ACC_DENIED_COMMAND = wire(consts.FAIL_ACC_DENIED_COMMAND)
FAIL_SIGN_IN = wire(consts.FAIL_SIGN_IN)
FAIL_SIGN_IN_MISSING_CREDENTIALS = wire(consts.FAIL_SIGN_IN_MISSING_CREDENTIALS)


def add_user(users_file, name, password):
    env = dict(os.environ, CAIRN_PASSWORD=password)
    p = subprocess.run([BIN, "user", "add", "--users-file", users_file, name], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def start(pki, extra=()):
    d = tempfile.mkdtemp(prefix="cairn-auth-")
    port = free_port()
    args = ["--rest-bind-secure", f"127.0.0.1:{port}", "--rest-tls-cert", pki("server.crt"), "--rest-tls-key", pki("server.key"), *extra]
    c = Controller(d, extra_args=args).start()
    c.https_port = port
    c.ssl_url = f"linstor+ssl://127.0.0.1:{port}"
    return c


def stop(c):
    c.stop()
    shutil.rmtree(c.data_dir, ignore_errors=True)


def https(c, pki, method, path, body=None, headers=None):
    """A raw HTTPS request: (status, headers, parsed JSON body)."""
    context = ssl.create_default_context(cafile=pki("ca.crt"))
    conn = http.client.HTTPSConnection("127.0.0.1", c.https_port, context=context, timeout=10)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=hdrs)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.headers, json.loads(data) if data else None


def bearer(token):
    return {"Authorization": "Bearer " + token}


def connect(url, pki, username=None, password=None, token=None):
    lin = linstor.Linstor(url, timeout=10, auth_token=token)
    lin.cafile = pki("ca.crt")
    lin.username, lin.password = username, password
    lin.connect()
    return lin


def cli(*args, env=None):
    base = {k: v for k, v in os.environ.items() if k not in ("LS_CONTROLLERS", "CAIRN_PASSWORD", "LS_PASSWORD", "CAIRN_TOKEN")}
    return subprocess.run([BIN, *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def users_ctrl(pki):
    d = tempfile.mkdtemp(prefix="cairn-users-")
    users = os.path.join(d, "users")
    add_user(users, "alice", "wonder land")
    c = start(pki, ["--rest-users-file", users])
    c.users_file = users
    yield c
    stop(c)
    shutil.rmtree(d, ignore_errors=True)


def test_basic_auth_refuses_without_and_with_wrong_credentials(users_ctrl, pki):
    status, headers, body = https(users_ctrl, pki, "GET", "/v1/nodes")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="Linstor"'
    assert body[0]["ret_code"] == FAIL_SIGN_IN_MISSING_CREDENTIALS
    status, headers, body = https(users_ctrl, pki, "GET", "/v1/nodes", headers={"Authorization": "Basic YWxpY2U6bm9wZQ=="})
    assert status == 401 and body[0]["ret_code"] == FAIL_SIGN_IN
    assert headers["WWW-Authenticate"] == 'Basic realm="Linstor"'
    # As in LINSTOR, the version and the health check need no sign-in.
    status, _, body = https(users_ctrl, pki, "GET", "/v1/controller/version")
    assert status == 200 and body["rest_api_version"].startswith("1.")
    status, _, _ = https(users_ctrl, pki, "GET", "/health")
    assert status == 200


def test_python_linstor_username_password_over_https(users_ctrl, pki):
    lin = connect(users_ctrl.ssl_url, pki, "alice", "wonder land")
    try:
        ok(lin.resource_group_create("signedin"))
        assert "signedin" in [g.name for g in lin.resource_group_list_raise().resource_groups]
    finally:
        lin.disconnect()
    # Through the plain port's redirect too.
    lin = connect(users_ctrl.url, pki, "alice", "wonder land")
    try:
        assert lin.is_secure_connection
        assert lin.node_list_raise().nodes == []
    finally:
        lin.disconnect()
    # A wrong password: python-linstor raises on the 401.
    lin = connect(users_ctrl.ssl_url, pki, "alice", "wrong")
    try:
        with pytest.raises(linstor.LinstorApiCallError) as e:
            lin.node_list()
        assert wire(e.value.main_error.ret_code) == FAIL_SIGN_IN
    finally:
        lin.disconnect()
    # A user added while the controller runs can sign in at once.
    add_user(users_ctrl.users_file, "bob", "builder")
    lin = connect(users_ctrl.ssl_url, pki, "bob", "builder")
    try:
        assert lin.node_list_raise().nodes == []
    finally:
        lin.disconnect()


def test_cli_user_over_https(users_ctrl, pki):
    ca = ["--cafile", pki("ca.crt")]
    p = cli("--controllers", users_ctrl.ssl_url, *ca, "--user", "alice", "rg", "create", "fromcli", env={"CAIRN_PASSWORD": "wonder land"})
    assert p.returncode == 0, p.stdout + p.stderr
    p = cli("--controllers", users_ctrl.url, *ca, "-u", "alice", "-m", "rg", "list", env={"LS_PASSWORD": "wonder land"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "fromcli" in [g["name"] for g in json.loads(p.stdout)]
    # No credentials, or wrong ones: the controller's 401 is shown.
    p = cli("--controllers", users_ctrl.ssl_url, *ca, "rg", "list")
    assert p.returncode != 0 and "Login required" in p.stdout + p.stderr
    p = cli("--controllers", users_ctrl.ssl_url, *ca, "-u", "alice", "rg", "list", env={"CAIRN_PASSWORD": "nope"})
    assert p.returncode != 0 and "wrong user name or password" in p.stdout + p.stderr


def test_cli_refuses_a_password_over_plain_http(controller):
    p = cli("--controllers", controller.url, "-u", "alice", "rg", "list", env={"CAIRN_PASSWORD": "x"})
    assert p.returncode != 0 and "not allowed" in p.stdout + p.stderr


def test_users_file_is_checked_at_start(pki):
    d = tempfile.mkdtemp(prefix="cairn-users-bad-")
    try:
        bad = os.path.join(d, "users")
        with open(bad, "w") as f:
            f.write("alice:plaintext\n")
        for users in (bad, os.path.join(d, "missing")):
            p = subprocess.run([BIN, "controller", "--rest-bind", f"127.0.0.1:{free_port()}", "--data-dir", d,
                                "--rest-users-file", users], capture_output=True, text=True, timeout=30)
            assert p.returncode != 0 and "users file" in p.stderr, p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ctrl(pki):
    c = start(pki)
    yield c
    stop(c)


def test_token_auth(ctrl, pki):
    # Before initialisation nothing is required.
    status, _, _ = https(ctrl, pki, "GET", "/v1/nodes")
    assert status == 200
    status, _, body = https(ctrl, pki, "POST", "/v1/controller/auth/initialize-token-auth", {"description": "admin"})
    assert status == 201, body
    assert body[0]["ret_code"] == wire(consts.CREATED)
    admin = body[0]["obj_refs"]["token"]
    assert len(admin) == 32 and admin.isalnum() and admin in body[0]["message"]

    # From now on: LINSTOR's 401 without a token or with a wrong one, the
    # version included; /health stays open.
    for headers in ({}, bearer("x" * 32), {"Authorization": "Basic YTpi"}):
        for path in ("/v1/nodes", "/v1/controller/version"):
            status, hdrs, body = https(ctrl, pki, "GET", path, headers=headers)
            assert status == 401, (path, headers)
            assert hdrs["WWW-Authenticate"] == 'Bearer realm="linstor-controller"'
            assert body[0]["ret_code"] == FAIL_ACC_DENIED_COMMAND
            assert body[0]["message"] == "Unauthorized: token invalid or not provided"
    assert https(ctrl, pki, "GET", "/health")[0] == 200
    status, _, body = https(ctrl, pki, "POST", "/v1/controller/auth/initialize-token-auth", {"description": "again"}, bearer(admin))
    # LINSTOR answers the call 201 whatever its entries are, unless one is an error.
    assert status == 201 and body[0]["ret_code"] == wire(consts.WARN_NO_EFFECT)

    # python-linstor's auth_token path.
    lin = connect(ctrl.ssl_url, pki, token=admin)
    try:
        ok(lin.resource_group_create("bytoken"))
        assert "bytoken" in [g.name for g in lin.resource_group_list_raise().resource_groups]
    finally:
        lin.disconnect()
    with pytest.raises(linstor.LinstorApiCallError):
        connect(ctrl.ssl_url, pki, token="y" * 32)

    def create(**body):
        status, _, reply = https(ctrl, pki, "POST", "/v1/controller/auth/token", body, bearer(admin))
        assert status == 201, reply
        return reply[0]["obj_refs"]["token"]

    def works(token):
        return https(ctrl, pki, "GET", "/v1/nodes", headers=bearer(token))[0] == 200

    here = create(description="from here", ip_filter="127.0.0.1", expires_at="2999-12-31")
    elsewhere = create(description="elsewhere", ip_filter="127.0.0.2")
    expired = create(description="old", expires_at="2000-01-01")
    assert works(here) and not works(elsewhere) and not works(expired)
    status, _, body = https(ctrl, pki, "POST", "/v1/controller/auth/token", {"description": "x", "ip_filter": "10.0.0.0/8"}, bearer(admin))
    assert status == 500 and body[0]["ret_code"] == wire(consts.FAIL_INVLD_CONF)

    status, _, listing = https(ctrl, pki, "GET", "/v1/controller/auth/token", headers=bearer(admin))
    assert status == 200 and listing["count"] == 4
    tokens = {t["description"]: t for t in listing["list"]}
    assert tokens["from here"]["ip_filter"] == "127.0.0.1" and tokens["from here"]["expires_at"].startswith("2999-12-31T00:00:00")
    assert tokens["admin"]["is_user_token"] and tokens["admin"]["is_active"] and tokens["admin"]["deleted_at"] is None
    text = json.dumps(listing)
    assert admin not in text and here not in text, "the list never shows a token"
    # python-linstor reads the list's shape.
    parsed = linstor.responses.AuthTokenListResponse(listing).auth_tokens
    assert sorted(t.id for t in parsed) == [1, 2, 3, 4] and parsed[0].created_at.year >= 2026

    # Disabled, then revoked: refused. A revoked token leaves the list.
    here_id = tokens["from here"]["id"]
    status, _, body = https(ctrl, pki, "PUT", f"/v1/controller/auth/token/{here_id}", {"is_active": False}, bearer(admin))
    assert status == 200 and body[0]["ret_code"] == wire(consts.MODIFIED)
    assert not works(here)
    status, _, body = https(ctrl, pki, "PUT", "/v1/controller/auth/token/99", {"is_active": True}, bearer(admin))
    assert status == 404 and body[0]["ret_code"] == wire(consts.FAIL_NOT_FOUND_NODE)
    second = create(description="second admin")
    status, _, body = https(ctrl, pki, "DELETE", f"/v1/controller/auth/token/{tokens['admin']['id']}", headers=bearer(second))
    assert status == 200 and body[0]["ret_code"] == wire(consts.DELETED)
    assert not works(admin) and works(second)
    status, _, listing = https(ctrl, pki, "GET", "/v1/controller/auth/token", headers=bearer(second))
    assert "admin" not in [t["description"] for t in listing["list"]]

    # The tokens live in the database: a restart keeps them and the rule.
    ctrl.restart()
    assert works(second) and not works(admin)
    assert https(ctrl, pki, "GET", "/v1/nodes")[0] == 401

    # The CLI's --token (and CAIRN_TOKEN).
    ca = ["--cafile", pki("ca.crt")]
    p = cli("--controllers", ctrl.ssl_url, *ca, "--token", second, "-m", "rg", "list")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "bytoken" in [g["name"] for g in json.loads(p.stdout)]
    p = cli("--controllers", ctrl.url, *ca, "-m", "rg", "list", env={"CAIRN_TOKEN": second})
    assert p.returncode == 0, p.stdout + p.stderr
    p = cli("--controllers", ctrl.ssl_url, *ca, "rg", "list")
    assert p.returncode != 0 and "token invalid or not provided" in p.stdout + p.stderr


def test_cli_auth_token_verbs(ctrl, pki):
    base = ["--controllers", ctrl.ssl_url, "--cafile", pki("ca.crt")]
    p = cli(*base, "-m", "controller", "auth-token", "init", "admin")
    assert p.returncode == 0, p.stdout + p.stderr
    admin = json.loads(p.stdout)[0]["obj_refs"]["token"]
    # Without the token the CLI shows the controller's 401.
    p = cli(*base, "controller", "auth-token", "list")
    assert p.returncode != 0 and "token invalid or not provided" in p.stdout + p.stderr
    with_token = [*base, "--token", admin]
    p = cli(*with_token, "-m", "controller", "auth-token", "create", "ci", "--expires-at", "2999-01-01", "--ip-filter", "127.0.0.1")
    assert p.returncode == 0, p.stdout + p.stderr
    ci = json.loads(p.stdout)[0]["obj_refs"]["token"]
    p = cli(*with_token, "controller", "auth-token", "list")
    assert p.returncode == 0 and "ci" in p.stdout and "2999-01-01" in p.stdout and ci not in p.stdout, p.stdout + p.stderr
    assert cli(*base, "--token", ci, "rg", "list").returncode == 0
    assert cli(*with_token, "controller", "auth-token", "modify", "2", "--active", "false").returncode == 0
    assert cli(*base, "--token", ci, "rg", "list").returncode != 0
    assert cli(*with_token, "controller", "auth-token", "delete", "2").returncode == 0
    p = cli(*with_token, "-m", "controller", "auth-token", "list")
    assert [t["description"] for t in json.loads(p.stdout)["list"]] == ["admin"]


def test_cli_sends_a_token_over_plain_http_only_when_allowed(controller):
    status, _, body = controller.request("POST", "/v1/controller/auth/initialize-token-auth", {"description": "admin"})
    assert status == 201, body
    token = body[0]["obj_refs"]["token"]
    assert body[1]["ret_code"] == wire(consts.WARN_NO_EFFECT) and "HTTPS is not configured" in body[1]["message"]
    p = cli("--controllers", controller.url, "--token", token, "rg", "list")
    assert p.returncode != 0 and "not sending the token" in p.stderr, p.stdout + p.stderr
    p = cli("--controllers", controller.url, "--token", token, "--allow-insecure-auth", "rg", "list")
    assert p.returncode == 0, p.stdout + p.stderr


def test_users_and_tokens_together(users_ctrl, pki):
    alice = {"Authorization": "Basic " + base64.b64encode(b"alice:wonder land").decode()}
    status, _, body = https(users_ctrl, pki, "POST", "/v1/controller/auth/initialize-token-auth", {"description": "t"}, alice)
    assert status == 201, body
    token = body[0]["obj_refs"]["token"]
    # Either credential passes; neither gets both challenges.
    assert https(users_ctrl, pki, "GET", "/v1/nodes", headers=alice)[0] == 200
    assert https(users_ctrl, pki, "GET", "/v1/nodes", headers=bearer(token))[0] == 200
    status, headers, body = https(users_ctrl, pki, "GET", "/v1/nodes")
    assert status == 401 and body[0]["ret_code"] == FAIL_ACC_DENIED_COMMAND
    assert headers.get_all("WWW-Authenticate") == ['Basic realm="Linstor"', 'Bearer realm="linstor-controller"']
    # With tokens on, the version is no longer open (LINSTOR's token filter covers it).
    assert https(users_ctrl, pki, "GET", "/v1/controller/version")[0] == 401
    lin = connect(users_ctrl.ssl_url, pki, "alice", "wonder land")
    try:
        assert lin.node_list_raise().nodes == []
    finally:
        lin.disconnect()


def test_python_linstor_token_calls(ctrl, pki):
    # python-linstor gates these on REST API 1.28, which Cairn reports now.
    lin = connect(ctrl.ssl_url, pki)
    try:
        replies = lin.controller_init_auth_token("first admin")
        assert replies[0].is_success() and replies[0].ret_code == consts.CREATED, replies
        admin = replies[0].object_refs["token"]
    finally:
        lin.disconnect()
    lin = connect(ctrl.ssl_url, pki, token=admin)
    try:
        replies = lin.controller_create_auth_token("ci", ip_filter="127.0.0.1", expires_at="2999-01-01")
        assert replies[0].is_success(), replies
        ci = replies[0].object_refs["token"]
        listing = lin.controller_list_auth_tokens()[0].auth_tokens
        assert sorted(t.description for t in listing) == ["ci", "first admin"]
        ci_id = next(t.id for t in listing if t.description == "ci")
        assert https(ctrl, pki, "GET", "/v1/nodes", headers=bearer(ci))[0] == 200
        ok(lin.controller_modify_auth_token(ci_id, is_active=False))
        assert https(ctrl, pki, "GET", "/v1/nodes", headers=bearer(ci))[0] == 401
        ok(lin.controller_delete_auth_token(ci_id))
        assert [t.description for t in lin.controller_list_auth_tokens()[0].auth_tokens] == ["first admin"]
    finally:
        lin.disconnect()
