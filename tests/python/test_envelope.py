"""Wire rules every client depends on (client-wire-rules.md W1-W20)."""

import gzip
import http.client
import json
import socket
import urllib.error
import urllib.request

import linstor
import pytest

from conftest import err, ok

MASK_ERROR = -(1 << 62) - (1 << 62)  # 0xC000000000000000 as a signed 64-bit value


def test_handshake_and_version(controller, lin):
    # python-linstor sent GET /v1/controller/version twice while connecting
    # and parsed rest_api_version as a tuple of ints (W15).
    v = lin.controller_version()
    assert v.rest_api_version == "1.28.0"
    status, ctype, body = controller.request("GET", "/v1/controller/version")
    assert status == 200 and ctype == "application/json"
    assert set(body) >= {"version", "git_hash", "build_time", "rest_api_version"}


def test_health(controller):
    status, _, body = controller.request("GET", "/health")
    assert status == 200
    assert body["status"] == "ok"


def test_json_without_content_type_is_accepted(controller):
    # W1: urllib sends no Content-Type when none is given.
    status, ctype, body = controller.request(
        "POST", "/v1/resource-groups", raw_body=b'{"name":"nocontenttype","select_filter":{"place_count":"2"}}'
    )
    assert status == 201, body
    assert ctype == "application/json"
    assert body[0]["ret_code"] > 0
    status, _, rg = controller.request("GET", "/v1/resource-groups/nocontenttype")
    assert rg["select_filter"]["place_count"] == 2  # W7: "2" became 2


def test_error_bodies_are_apicallrc_lists_with_negative_codes(controller):
    status, ctype, body = controller.request("GET", "/v1/nodes/missing-node")
    assert status == 404
    assert ctype == "application/json"
    assert isinstance(body, list) and body[0]["ret_code"] < 0
    assert body[0]["ret_code"] & 0x7FFF == 300  # FAIL_NOT_FOUND_NODE
    assert "missing-node" in body[0]["message"]
    assert body[0].get("correction")


def test_exists_error_has_linstor_value_and_500(controller, lin):
    ok(lin.resource_dfn_create("dup-rd"))
    status, _, body = controller.request("POST", "/v1/resource-definitions", {"resource_definition": {"name": "dup-rd"}})
    assert status == 500
    assert body[0]["ret_code"] == -4611686018406940171  # FAIL_EXISTS_RSC_DFN | MASK_CRT | MASK_RSC_DFN


def test_unparsable_json_is_400(controller):
    status, ctype, body = controller.request("POST", "/v1/nodes", raw_body=b"{not json")
    assert status == 400 and ctype == "application/json"
    assert body[0]["ret_code"] < 0
    status, _, body = controller.request("POST", "/v1/resource-groups", {"name": "x1", "select_filter": {"place_count": "two"}})
    assert status == 400, body


def test_empty_or_null_body_means_defaults(controller, lin):
    ok(lin.resource_dfn_create("empty-body"))
    for raw in (b"", b"   ", b"null", b"{}"):
        status, _, body = controller.request("PUT", "/v1/resource-definitions/empty-body", raw_body=raw)
        assert status == 200, (raw, body)
        assert body and body[0]["ret_code"] > 0


def test_unknown_route_is_404_with_apicallrc(controller):
    status, ctype, body = controller.request("GET", "/v1/no-such-thing")
    assert status == 404 and ctype == "application/json"
    assert body[0]["ret_code"] < 0


def test_unsupported_spec_route_is_501_with_apicallrc(controller):
    # Every route of LINSTOR's API is served except the features Cairn
    # deliberately lacks (test_spec.py walks them all).
    status, ctype, body = controller.request("POST", "/v1/remotes/ebs", {})
    assert status == 501 and ctype == "application/json"
    assert body[0]["ret_code"] < 0 and "not supported by Cairn" in body[0]["message"]


def test_wrong_method_is_405_with_apicallrc_and_allow(controller):
    for path, allowed in [("/v1/nodes", {"GET", "POST"}), ("/v1/remotes", {"GET", "DELETE"}), ("/health", {"GET"}),
                          ("/v1/view/backup/queue", {"GET"})]:
        req = urllib.request.Request(controller.url + path, data=b"{}", method="PATCH")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 405, path
        assert e.value.headers.get("Content-Type") == "application/json"
        body = json.loads(e.value.read())
        assert body[0]["ret_code"] < 0 and "not allowed" in body[0]["message"], body
        allow = {m.strip() for m in e.value.headers.get("Allow", "").split(",")}
        assert allowed <= allow and "PATCH" not in allow, (path, allow)


def test_remote_lists_answer_as_linstor_without_remotes(controller, lin):
    # CtrlRemoteApiCallHandler / Remotes.java: the combined list is an
    # object whose empty lists LINSTOR leaves out; the per-kind lists are
    # arrays. linstor-csi's CreateSnapshot reads GET /v1/remotes.
    status, ctype, body = controller.request("GET", "/v1/remotes")
    assert (status, ctype, body) == (200, "application/json", {})
    for kind in ("s3", "linstor", "ebs"):
        status, ctype, body = controller.request("GET", f"/v1/remotes/{kind}")
        assert (status, ctype, body) == (200, "application/json", []), kind
    r = lin.remote_list()[0]
    assert (r.s3_remotes, r.linstor_remotes, r.ebs_remotes) == ([], [], [])


def raw(controller, head, body=b""):
    """One raw HTTP/1.1 exchange on a fresh connection: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", controller.port), timeout=30) as s:
        s.sendall(head + body)
        r = http.client.HTTPResponse(s)
        r.begin()
        return r.status, r.headers, r.read()


def test_oversized_requests_get_apicallrc_bodies(controller):
    big = b"x" * (3 * 1024 * 1024)
    # A body over 2 MiB: 413, read to its end and dropped, so the
    # connection stays usable (with a Content-Length, and chunked).
    conn = http.client.HTTPConnection("127.0.0.1", controller.port, timeout=30)
    for body in (big, iter([big[:1 << 20], big[1 << 20:]])):
        conn.request("POST", "/v1/nodes", body=body, encode_chunked=not isinstance(body, bytes))
        r = conn.getresponse()
        assert r.status == 413 and r.getheader("Content-Type") == "application/json"
        entry = json.loads(r.read())[0]
        assert entry["ret_code"] < 0 and "too large" in entry["message"], entry
        conn.request("GET", "/v1/nodes")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read()) == []
    conn.close()
    # One that announces more than is worth reading: answered at once,
    # and the connection is closed.
    status, headers, body = raw(controller, b"POST /v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (100 << 20), b"{}")
    assert status == 413 and headers["Content-Type"] == "application/json" and headers["Connection"] == "close"
    assert json.loads(body)[0]["ret_code"] < 0
    # URI too long (hyper refuses it before any handler runs).
    status, headers, body = raw(controller, b"GET /v1/nodes?nodes=" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414 and headers["Content-Type"] == "application/json"
    entry = json.loads(body)[0]
    assert entry["ret_code"] < 0 and entry["message"] == "The request URI is too long.", entry
    # Not HTTP at all: 400, with a body too.
    status, headers, body = raw(controller, b"GARBAGE\r\n\r\n")
    assert status == 400 and json.loads(body)[0]["ret_code"] < 0
    # The controller still serves.
    assert controller.request("GET", "/v1/nodes")[0] == 200


def test_keep_alive_survives_refusals_that_never_read_the_body(controller):
    # python-linstor reuses one connection: after a 501/404/405 to a POST
    # with a body, the next call on it once failed with a broken pipe.
    conn = http.client.HTTPConnection("127.0.0.1", controller.port, timeout=30)
    body = json.dumps({"remote_name": "x" * 200000, "endpoint": "e"})
    refusals = [("POST", "/v1/remotes/ebs", 501), ("POST", "/v1/no-such-thing", 404), ("PATCH", "/v1/nodes", 405),
                ("POST", "/v1/resource-definitions/missing/volume-definitions", 404)]
    for method, path, code in refusals:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == code, (method, path, r.status)
        assert r.getheader("Connection") != "close"
        assert json.loads(r.read())[0]["ret_code"] < 0
        conn.request("GET", "/v1/nodes")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read()) == []
    conn.close()


def test_python_linstor_keeps_working_after_a_refused_post(controller, lin):
    # The original failure: python-linstor's call after a 501 to a POST with
    # a body ended in "Broken pipe", and every call after it in
    # CannotSendRequest, on the same kept-alive connection.
    for _ in range(3):
        replies = lin.remote_create_ebs("e1", "zone-a", "a" * 100000, "secret")
        assert replies and replies[0].is_error() and "not supported by Cairn" in replies[0].message, replies
        assert lin.node_list_raise().nodes == []


def test_trailing_slash_is_tolerated(controller, lin):
    ok(lin.node_create("slash-node", "SATELLITE", "127.0.10.2"))
    status, _, body = controller.request("GET", "/v1/nodes/")
    assert status == 200 and [n["name"] for n in body] == ["slash-node"]
    status, _, body = controller.request("GET", "/v1/nodes/slash-node/")
    assert status == 200 and body["name"] == "slash-node"


def test_collections_are_lists_never_null(controller):
    for path in ["/v1/nodes", "/v1/resource-definitions", "/v1/view/resources", "/v1/view/storage-pools",
                 "/v1/key-value-store", "/v1/node-connections", "/v1/storage-pool-definitions"]:
        status, _, body = controller.request("GET", path)
        assert status == 200 and isinstance(body, list), path


def test_mutations_carry_created_at_and_obj_refs(controller):
    status, _, body = controller.request("POST", "/v1/resource-definitions", {"resource_definition": {"name": "refs-rd"}})
    assert status == 201
    assert body[0]["obj_refs"]["RscDfn"] == "refs-rd"
    assert body[0]["created_at"].endswith("+00:00")


def test_python_client_raises_nothing_on_plain_flow(lin):
    # The python client's own error handling path: a not-found node list
    # filter returns an empty list, not an exception.
    assert lin.node_list_raise(filter_by_nodes=["nope"]).nodes == []
    assert isinstance(lin.resource_dfn_list_raise(), linstor.responses.ResourceDefinitionResponse)


def test_replies_are_gzip_compressed_for_clients_that_ask_and_event_streams_never(controller):
    """python-linstor sends `Accept-Encoding: gzip` on every call and
    inflates what says `Content-Encoding: gzip`: large replies go
    compressed to such clients, plain to others; an event stream is never
    compressed (it would be held back in the compressor's buffer)."""
    def get(path, accept):
        conn = http.client.HTTPConnection("127.0.0.1", controller.port, timeout=30)
        conn.request("GET", path, headers={"Accept-Encoding": accept})
        r = conn.getresponse()
        encoding = r.getheader("Content-Encoding")
        body = r.read() if not r.getheader("Content-Type", "").startswith("text/event-stream") else b""
        conn.close()
        return r.status, encoding, body

    status, encoding, plain = get("/v1/controller/properties/info", "identity")
    assert status == 200 and encoding is None and len(plain) > 10_000
    status, encoding, packed = get("/v1/controller/properties/info", "gzip")
    assert status == 200 and encoding == "gzip" and len(packed) < len(plain) / 3, (encoding, len(packed))
    assert json.loads(gzip.decompress(packed)) == json.loads(plain)
    # Streamed lists (no length known up front) go through the encoder too.
    for path in ("/v1/resource-definitions", "/v1/view/resources", "/v1/nodes"):
        status, encoding, packed = get(path, "gzip")
        assert status == 200 and json.loads(gzip.decompress(packed) if encoding == "gzip" else packed) == [], (path, packed)
    # Errors too: an ApiCallRc list, compressed alike.
    status, encoding, packed = get("/v1/nodes/nowhere", "gzip")
    reply = json.loads(gzip.decompress(packed) if encoding == "gzip" else packed)
    assert status == 404 and reply[0]["ret_code"] < 0, reply
    status, encoding, _ = get("/v1/events/nodes", "gzip")
    assert status == 200 and encoding is None
    # And python-linstor reads the compressed replies.
    lin = controller.client()
    try:
        assert lin.node_list()[0].nodes == []
    finally:
        lin.disconnect()
