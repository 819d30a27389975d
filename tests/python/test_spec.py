"""Every route of LINSTOR's REST API v1 answers with a JSON body:
implemented routes with their data, the rest with a 501 ApiCallRc.

The routes come from the list the project keeps in the tree
(crates/cairn-controller/src/spec_routes.rs). Where LINSTOR's OpenAPI
document is at hand (`$CAIRN_SPEC`, or ../shared/reference/ beside the
clone), the list is also checked against it; without it that one check
is skipped with a one-line reason."""

import os
import re

import pytest
import yaml

from conftest import REPO

SPEC = os.environ.get("CAIRN_SPEC") or os.path.join(REPO, "..", "shared", "reference", "linstor-rest-v1-openapi.yaml")


def embedded_routes():
    src = open(os.path.join(REPO, "crates", "cairn-controller", "src", "spec_routes.rs")).read()
    routes = set(re.findall(r'\(\s*"([A-Z]+)",\s*"([^"]+)",?\s*\)', src))
    assert len(routes) > 150, "the route list could not be read from spec_routes.rs"
    return routes


def spec_routes():
    with open(SPEC) as f:
        doc = yaml.safe_load(f)
    for path, item in doc["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "delete", "patch", "options"):
                yield method.upper(), path


@pytest.mark.skipif(not os.path.isfile(SPEC), reason=f"LINSTOR's OpenAPI document not found at {SPEC} (set CAIRN_SPEC)")
def test_embedded_route_list_matches_the_spec():
    assert embedded_routes() == set(spec_routes())


# Server-sent event streams (test_events.py): they never end, so the walks
# over every route leave them out.
EVENT_STREAMS = {("GET", "/v1/events/drbd/promotion"), ("GET", "/v1/events/nodes")}
# A download: a tar.gz, not JSON (test_error_reports.py reads it).
BINARY = {("GET", "/v1/sos-report/download")}


@pytest.mark.parametrize("method,path", sorted(embedded_routes() - EVENT_STREAMS - BINARY))
def test_spec_route_answers_json(controller, method, path):
    concrete = re.sub(r"\{[^}]+\}", "x1", path)
    body = b"{}" if method in ("POST", "PUT", "PATCH", "OPTIONS") else None
    status, ctype, reply = controller.request(method, concrete, raw_body=body)
    assert ctype == "application/json", (status, reply)
    assert reply != "" and reply is not None
    if isinstance(reply, list) and reply and isinstance(reply[0], dict) and "ret_code" in reply[0]:
        assert "There is no REST endpoint" not in reply[0]["message"], reply
        assert status != 405, reply


# Features Cairn deliberately lacks: their routes answer 501 with an error
# naming the feature (rest/unsupported.rs), not "not implemented yet".
DELIBERATE = {
    "EBS": [("POST", "/v1/nodes/ebs"), ("POST", "/v1/remotes/ebs"), ("PUT", "/v1/remotes/ebs/{remoteName}")],
    "DRBD Proxy": [("PUT", "/v1/resource-definitions/{resource}/drbd-proxy"),
                   ("POST", "/v1/resource-definitions/{resource}/drbd-proxy/enable/{node_a}/{node_b}"),
                   ("POST", "/v1/resource-definitions/{resource}/drbd-proxy/disable/{node_a}/{node_b}")],
    "drbd-reactor": [("POST", f"/v1/nodes/exec/drbd-reactorctl/{verb}")
                     for verb in ("status", "evict", "disable", "enable", "restart")],
}
# Routes of LINSTOR's API Cairn does not serve yet.
NOT_YET = 0
MASK_ERROR = -(1 << 62)
FAIL_INVLD_REQUEST, FAIL_IMPL_ERROR = 234, 999


# Turning token authentication on would make every later request of a walk
# a 401 (test_auth.py covers it).
TOKEN_AUTH_ON = {("POST", "/v1/controller/auth/initialize-token-auth")}


def test_unserved_routes_say_whether_cairn_lacks_them_for_now_or_for_good(controller):
    not_yet, refused = [], {}
    for method, path in sorted(embedded_routes() - EVENT_STREAMS - TOKEN_AUTH_ON - BINARY):
        body = b"{}" if method in ("POST", "PUT", "PATCH", "OPTIONS") else None
        status, _, reply = controller.request(method, re.sub(r"\{[^}]+\}", "x1", path), raw_body=body)
        if status != 501:
            continue
        entry = reply[0]
        if entry["ret_code"] == MASK_ERROR | FAIL_INVLD_REQUEST:
            assert entry["message"].endswith(" is not supported by Cairn."), entry
            assert entry["cause"].startswith("Cairn deliberately does not") and entry["correction"], entry
            refused[(method, path)] = entry["message"]
        else:
            assert entry["ret_code"] == MASK_ERROR | FAIL_IMPL_ERROR, entry
            assert "not implemented by Cairn yet" in entry["message"], entry
            not_yet.append((method, path))
    assert len(not_yet) == NOT_YET, not_yet
    assert set(refused) == {r for routes in DELIBERATE.values() for r in routes}, sorted(refused)
    for feature, routes in DELIBERATE.items():
        for r in routes:
            assert refused[r].startswith(feature), (r, refused[r])
    # A node called "ebs" is still looked up as one (GET is not EBS's).
    status, _, body = controller.request("GET", "/v1/nodes/ebs")
    assert status == 404 and "not supported" not in body[0]["message"], body


def test_properties_info_routes_list_linstors_properties_not_name_lookups(controller):
    # `properties` is a reserved name, so these must never be read as an
    # object called "properties"; each lists the keys LINSTOR documents for
    # its object kind, as PropsInfo maps.
    expect = {
        "/v1/storage-pool-definitions/properties/info": "MaxOversubscriptionRatio",
        "/v1/nodes/properties/info": "PrefNic",
        "/v1/resource-definitions/properties/info": "DrbdOptions/Resource/quorum",
        "/v1/resource-groups/properties/info": "DrbdOptions/Resource/quorum",
        "/v1/nodes/n1/storage-pools/properties/info": "StorDriver/StorPoolName",
        "/v1/controller/properties/info": "DrbdOptions/Net/protocol",
        "/v1/resource-definitions/r1/resource-connections/properties/info": "DrbdOptions/Net/protocol",
        "/v1/resource-definitions/r1/resources/properties/info": "PrefNic",
        "/v1/resource-definitions/r1/volume-definitions/properties/info": "DrbdOptions/Disk/resync-after",
    }
    for path, key in expect.items():
        status, _, body = controller.request("GET", path)
        assert status == 200 and isinstance(body, dict), (path, body)
        assert key in body, (path, sorted(body)[:20])
        assert all("prop_type" in v for v in body.values()), path
    status, _, body = controller.request("GET", "/v1/controller/properties/info")
    assert body["DrbdOptions/Net/protocol"] == {"prop_type": "regex", "value": "(?:A|B|C)"}, body["DrbdOptions/Net/protocol"]
    status, _, all_kinds = controller.request("GET", "/v1/controller/properties/info/all")
    assert status == 200 and {"CTRL", "NODE", "RSC_DFN", "RSC_CONN", "VLM_DFN"} <= set(all_kinds), list(all_kinds)
    assert all_kinds["NODE"] == controller.request("GET", "/v1/nodes/properties/info")[2]


# Routes Cairn serves now; each answers with its data or a domain error,
# never the 501 of a route not implemented.
IMPLEMENTED = [
    ("GET", "/v1/resource-definitions/x1/resource-connections"),
    ("GET", "/v1/resource-definitions/x1/resource-connections/x1/x2"),
    ("PUT", "/v1/resource-definitions/x1/resource-connections/x1/x2"),
    ("POST", "/v1/resource-definitions/x1/resources/x1/activate"),
    ("POST", "/v1/resource-definitions/x1/resources/x1/deactivate"),
    ("POST", "/v1/resource-groups/x1/adjust"),
    ("POST", "/v1/resource-groups/adjustall"),
    ("PUT", "/v1/nodes/x1/reconnect"),
    ("PUT", "/v1/nodes/x1/evacuate"),
    ("PUT", "/v1/nodes/x1/restore"),
    ("GET", "/v1/nodes/x1/config"),
    ("PUT", "/v1/nodes/x1/config"),
    ("GET", "/v1/controller/config"),
    ("PUT", "/v1/controller/config"),
    ("GET", "/v1/stats/nodes"),
    ("GET", "/v1/stats/resource-definitions"),
    ("GET", "/v1/stats/resource-groups"),
    ("GET", "/v1/stats/resources"),
    ("GET", "/v1/stats/storage-pools"),
    ("POST", "/v1/controller/backup/db"),
    ("POST", "/v1/controller/database/export"),
    ("GET", "/v1/files"),
    ("GET", "/v1/files/x1"),
    ("PUT", "/v1/files/x1"),
    ("DELETE", "/v1/files/x1"),
    ("GET", "/v1/files/x1/check/x2"),
    ("GET", "/v1/files/x1/status/x2"),
    ("POST", "/v1/resource-definitions/x1/files/x2"),
    ("DELETE", "/v1/resource-definitions/x1/files/x2"),
    ("GET", "/v1/error-reports"),
    ("GET", "/v1/error-reports/x1"),
    ("GET", "/v1/stats/error-reports"),
    ("PATCH", "/v1/error-reports"),
    ("DELETE", "/v1/error-reports/x1"),
    ("GET", "/v1/schedules"),
    ("POST", "/v1/schedules"),
    ("PUT", "/v1/schedules/x1"),
    ("DELETE", "/v1/schedules/x1"),
    ("PUT", "/v1/remotes/x1/backups/schedule/x2/enable"),
    ("PUT", "/v1/remotes/x1/backups/schedule/x2/disable"),
    ("DELETE", "/v1/remotes/x1/backups/schedule/x2/delete"),
    ("GET", "/v1/view/schedules-by-resource"),
    ("GET", "/v1/view/schedules-by-resource/x1"),
]


def test_implemented_routes_are_not_501(controller):
    for method, path in IMPLEMENTED:
        assert (method, re.sub(r"x\d", "{}", path)) in {(m, re.sub(r"\{[^}]+\}", "{}", p)) for m, p in embedded_routes()}, path
        body = b"{}" if method in ("POST", "PUT") else None
        status, ctype, reply = controller.request(method, path, raw_body=body)
        assert ctype == "application/json" and status != 501, (method, path, status, reply)


def test_error_reports_and_schedules_are_empty_lists_as_linstor_answers_them(controller, lin):
    # A fresh controller has no error reports and no backup schedules: the
    # upstream CLI's `err list` and `schedule list` print empty tables.
    assert lin.error_report_list() == []
    assert lin.error_report_list(ids=["5F3A-00000-000000"]) == []
    assert controller.request("GET", "/v1/stats/error-reports")[:3:2] == (200, {"count": 0})
    assert controller.request("GET", "/v1/schedules")[:3:2] == (200, {})
    assert lin.schedule_list().schedules == []


def test_the_property_table_is_what_the_generator_makes_of_python_linstor(tmp_path):
    # props_info.json is generated (scripts/gen-props-info.py) from the
    # python-linstor this suite runs with; regenerating it changes nothing.
    import json
    import subprocess
    import sys

    table = os.path.join(REPO, "crates", "cairn-domain", "src", "props_info.json")
    with open(table) as f:
        committed = json.load(f)
    script = os.path.join(REPO, "scripts", "gen-props-info.py")
    site = os.path.dirname(os.path.dirname(__import__("linstor").__file__))
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    (copy / "crates" / "cairn-domain" / "src").mkdir(parents=True)
    (copy / "scripts" / "gen-props-info.py").write_text(open(script).read())
    subprocess.run([sys.executable, str(copy / "scripts" / "gen-props-info.py"), site], check=True, capture_output=True)
    with open(copy / "crates" / "cairn-domain" / "src" / "props_info.json") as f:
        assert json.load(f) == committed
