"""A controller's side of the satellite link written in python from the
protocol's description (crates/cairn-proto/src/auth.rs): challenge,
proof, session key, MACed requests. Tests use it to talk to satellites
directly and to build requests that must be refused."""

import base64
import hashlib
import hmac
import json
import os
import struct
import urllib.error
import urllib.request


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def framed(label, *fields):
    out = label.encode() + b"\0"
    for f in fields:
        f = f.encode() if isinstance(f, str) else f
        out += struct.pack(">Q", len(f)) + f
    return out


def mac(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()


def http(url, method, headers, body=None, timeout=10):
    """(status, headers, body bytes) of one request."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class Session:
    """One session with the satellite at `base` (http://ip:port)."""

    def __init__(self, base, secret, proto, epoch=None):
        self.base, self.secret, self.proto, self.epoch = base, secret.encode(), str(proto), epoch
        status, _, body = http(base + "/internal/v1/auth/challenge", "GET", {})
        assert status == 200, (status, body)
        sn = json.loads(body)["nonce"]
        cn = b64(os.urandom(32))
        epoch_s = "" if epoch is None else str(epoch)
        proof = b64(mac(self.secret, framed("cairn proof", sn, cn, self.proto, epoch_s)))
        self.open_status, headers, body = http(base + "/internal/v1/auth/session", "POST", self.context(),
                                               json.dumps({"satellite_nonce": sn, "controller_nonce": cn, "proof": proof}).encode())
        self.open_body = body
        self.key = mac(self.secret, framed("cairn session-key", sn, cn))
        self.id = json.loads(body)["session"] if self.open_status == 200 else None
        if self.open_status != 401:
            assert self.answer_ok(0, self.open_status, body, headers.get("x-cairn-mac") or ""), "the session answer's MAC"
        self.seq = 0

    def context(self):
        h = {"x-cairn-proto": self.proto, "Content-Type": "application/json"}
        if self.epoch is not None:
            h["x-cairn-epoch"] = str(self.epoch)
        return h

    def answer_ok(self, seq, status, body, tag):
        want = mac(self.key, framed("cairn response", self.id or "", struct.pack(">Q", seq), struct.pack(">H", status),
                                    hashlib.sha256(body).digest()))
        try:
            return hmac.compare_digest(want, unb64(tag))
        except ValueError:
            return False

    def headers(self, method, path, body, seq=None):
        """The headers of a request (the next sequence number unless given)."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        h = self.context()
        epoch_s = "" if self.epoch is None else str(self.epoch)
        tag = mac(self.key, framed("cairn request", self.id, struct.pack(">Q", seq), method, path, self.proto, epoch_s,
                                   hashlib.sha256(body or b"").digest()))
        h.update({"x-cairn-session": self.id, "x-cairn-seq": str(seq), "x-cairn-mac": b64(tag)})
        return h

    def request(self, method, path, body=None):
        """(status, body bytes); the answer's MAC is checked unless 401."""
        h = self.headers(method, path, body)
        status, headers, answer = http(self.base + path, method, h, body)
        if status != 401:
            assert self.answer_ok(int(h["x-cairn-seq"]), status, answer, headers.get("x-cairn-mac") or ""), "the answer's MAC"
        return status, answer


def proto_version():
    """PROTO_VERSION as the source of the binary under test defines it."""
    import re
    src = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "cairn-proto", "src", "lib.rs")
    with open(src) as f:
        return int(re.search(r"pub const PROTO_VERSION: u32 = (\d+);", f.read()).group(1))


PROTO = proto_version()
