"""Fixtures that run the real `cairn controller` binary on loopback and talk
to it with the real python-linstor client from PyPI."""

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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Controller:
    """One `cairn controller` process with its own data directory."""

    def __init__(self, data_dir):
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
            [BIN, "controller", "--rest-bind", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir],
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

    def request(self, method, path, body=None, headers=None, raw_body=None):
        """A raw HTTP request; returns (status, content_type, parsed_json_or_text)."""
        data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
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


def ok(replies):
    """Asserts a python-linstor reply list has no error and returns it."""
    assert replies, "expected at least one ApiCallResponse"
    errors = [r for r in replies if r.is_error()]
    assert not errors, "unexpected errors: " + "; ".join(str(r) for r in errors)
    return replies


def err(replies, code):
    """Asserts the replies contain an error with the given code (low 15 bits)."""
    codes = [r.ret_code & 0x7FFF for r in replies if r.is_error()]
    assert code in codes, f"expected error code {code}, got {codes}: " + "; ".join(str(r) for r in replies)
    return replies
