"""The controller's access log with --log-format json: one JSON object per
line, one INFO line per REST request with method, path, status, duration and
the signed-in user, and no password, passphrase or query string in it."""

import base64
import json
import os
import shutil
import subprocess
import tempfile

from conftest import BIN, Controller

PASSWORD = "pw-Zq81-secret"
PASSPHRASE = "pp-Kx42-master-secret"


def log_lines(c):
    out = []
    for line in c.log().splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line is one JSON object
    return out


def requests_logged(c):
    return [e for e in log_lines(c) if e.get("message") == "REST request"]


def test_json_access_log_names_requests_and_users_and_keeps_secrets_out():
    d = tempfile.mkdtemp(prefix="cairn-accesslog-")
    users = os.path.join(d, "users")
    env = dict(os.environ, CAIRN_PASSWORD=PASSWORD)
    p = subprocess.run([BIN, "user", "add", "--users-file", users, "alice"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    c = Controller(d, extra_args=["--log-format", "json", "--rest-users-file", users]).start()
    try:
        basic = {"Authorization": "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}
        wrong = {"Authorization": "Basic " + base64.b64encode(b"alice:not-" + PASSWORD.encode()).decode()}
        status, _, _ = c.request("GET", "/v1/nodes", headers=basic)
        assert status == 200
        status, _, _ = c.request("GET", "/v1/no-such-thing", headers=basic)
        assert status == 404
        status, _, _ = c.request("GET", "/v1/nodes", headers=wrong)
        assert status == 401
        status, _, _ = c.request("GET", "/v1/controller/version")
        assert status == 200
        # A passphrase in a body and a secret in a query string.
        status, _, _ = c.request("POST", "/v1/encryption/passphrase", body={"new_passphrase": PASSPHRASE}, headers=basic)
        assert status == 201, status
        status, _, _ = c.request("GET", f"/v1/nodes?secret={PASSWORD}", headers=basic)
        assert status == 200
        c.stop()

        logged = requests_logged(c)
        for e in logged:
            assert e["level"] == "INFO", e
            assert isinstance(e["duration_ms"], float) and 0 <= e["duration_ms"] < 30000, e
            assert set(e) >= {"timestamp", "method", "path", "status", "duration_ms", "user"}, e
        seen = [(e["method"], e["path"], e["status"], e["user"]) for e in logged]
        want = [
            ("GET", "/v1/nodes", 200, "alice"),
            ("GET", "/v1/no-such-thing", 404, "alice"),
            ("GET", "/v1/nodes", 401, "-"),
            ("GET", "/v1/controller/version", 200, "-"),
            ("POST", "/v1/encryption/passphrase", 201, "alice"),
            ("GET", "/v1/nodes", 200, "alice"),
        ]
        # /health polls of the fixture come first; everything else once, in order.
        assert [s for s in seen if s[1] != "/health"] == want, seen
        text = c.log()
        assert PASSWORD not in text
        assert PASSPHRASE not in text
        assert base64.b64encode(f"alice:{PASSWORD}".encode()).decode() not in text
        assert "secret=" not in text
    finally:
        c.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_text_log_stays_the_default(controller):
    status, _, _ = controller.request("GET", "/v1/nodes")
    assert status == 200
    lines = [line for line in controller.log().splitlines() if "REST request" in line]
    assert lines, controller.log()
    assert not lines[-1].lstrip().startswith("{")
    assert "method=GET" in lines[-1] and "path=/v1/nodes" in lines[-1] and "status=200" in lines[-1] and "user=-" in lines[-1], lines[-1]
