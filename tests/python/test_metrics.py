"""`GET /metrics` against a real controller and two FILE_THIN satellites:
parsed with prometheus_client's text parser, every value checked against
what the REST API reports at the same moment."""

import math
import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ok, run_cluster, wait_for

# LINSTOR's `linstor_volume_state` numbers.
VOLUME_STATES = {"UpToDate": 1, "Created": 2, "Attached": 3, "Diskless": 4, "Inconsistent": 5, "Failed": 6}


@pytest.fixture(scope="module")
def mcluster():
    yield from run_cluster("cairn-metrics-", {"m1": "FILE_THIN", "m2": "FILE_THIN"}, default_stack="STORAGE")


def scrape(c, query=""):
    status, ctype, text = c.ctrl.request("GET", "/metrics" + query)
    assert status == 200, text
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return families


def samples(families, name):
    """{frozenset(labels): value} of a family's samples named `name`."""
    return {frozenset(s.labels.items()): s.value for f in families.values() for s in f.samples if s.name == name}


def one(families, metric, **labels):
    """The value of the one sample of `name` with (at least) these labels."""
    found = [s.value for f in families.values() for s in f.samples if s.name == metric and labels.items() <= s.labels.items()]
    assert len(found) == 1, f"{metric} {labels}: {found}"
    return found[0]


def rest(c, path):
    status, _, body = c.ctrl.request("GET", path)
    assert status == 200, body
    return body


@pytest.fixture(scope="module")
def spawned(mcluster):
    c = mcluster
    ok(c.lin.resource_group_create("rg-met", place_count=2))
    ok(c.lin.volume_group_create("rg-met"))
    ok(c.lin.volume_group_create("rg-met"))
    ok(c.lin.resource_group_spawn("rg-met", "met", ["16M", "8M"]))
    return c


def test_info_nodes_and_definitions_match_the_rest_api(spawned):
    c = spawned
    m = scrape(c)
    version = rest(c, "/v1/controller/version")
    info = samples(m, "linstor_info")
    assert list(info.values()) == [1.0]
    (labels,) = [dict(k) for k in info]
    assert labels == {"version": version["version"], "buildtime": version["build_time"], "gitid": version["git_hash"]}

    for n in rest(c, "/v1/nodes"):
        nif = n["net_interfaces"][0]
        state = one(m, "linstor_node_state", node=n["name"])
        assert state == 2 and n["connection_status"] == "ONLINE"
        (labels,) = [dict(k) for k in samples(m, "linstor_node_state") if dict(k)["node"] == n["name"]]
        assert labels == {"node": n["name"], "nodetype": "SATELLITE", "address": nif["address"],
                          "port": str(nif["satellite_port"]), "encryption": "PLAIN"}

    rds = rest(c, "/v1/resource-definitions")
    assert one(m, "linstor_resource_definition_count") == len(rds) >= 1
    assert one(m, "linstor_resource_definition_resource_count", name="met", resource_group="rg-met") == 2
    for vd in rest(c, "/v1/resource-definitions/met/volume-definitions"):
        size = one(m, "linstor_volume_definition_size_bytes", name="met", volume_number=str(vd["volume_number"]),
                   resource_group="rg-met")
        assert size == vd["size_kib"] * 1024
    assert one(m, "linstor_volume_definition_size_bytes", name="met", volume_number="1") == 8 * 1024 * 1024
    assert one(m, "linstor_error_reports_count") == 0


def test_resources_and_volumes_match_the_rest_api(spawned):
    c = spawned
    m = scrape(c)
    view = rest(c, "/v1/view/resources?resources=met")
    assert sorted(r["node_name"] for r in view) == ["m1", "m2"]
    for r in view:
        assert one(m, "linstor_resource_state", name="met", node=r["node_name"]) == (1 if r["state"]["in_use"] else 0)
        for v in r["volumes"]:
            labels = {"resource": "met", "node": r["node_name"], "volume": str(v["volume_number"]),
                      "device_path": v["device_path"], "storage_pool": "DfltStorPool"}
            assert v["device_path"].startswith("/dev/loop")
            assert one(m, "linstor_volume_state", **labels) == VOLUME_STATES[v["state"]["disk_state"]]
            assert one(m, "linstor_volume_allocated_size_bytes", **labels) == v["allocated_size_kib"] * 1024


def pools_agree(c):
    """Whether one scrape's pool capacities equal the REST pool list taken
    just before and after it (a heartbeat may refresh them in between)."""
    before = rest(c, "/v1/view/storage-pools")
    m = scrape(c)
    after = rest(c, "/v1/view/storage-pools")
    if before != after:
        return False
    for p in before:
        labels = {"storage_pool": p["storage_pool_name"], "node": p["node_name"], "driver": p["provider_kind"]}
        free = one(m, "linstor_storage_pool_capacity_free_bytes", **labels)
        total = one(m, "linstor_storage_pool_capacity_total_bytes", **labels)
        if p["provider_kind"] == "DISKLESS":
            assert (free, total) == (0, 0)
            continue
        assert p["free_capacity"] > 0 and p["total_capacity"] >= p["free_capacity"]
        if (free, total) != (p["free_capacity"] * 1024, p["total_capacity"] * 1024):
            return False
        assert one(m, "linstor_storage_pool_error_count", **labels) == 0
    return True


def test_pool_capacities_equal_the_rest_pool_list(spawned):
    c = spawned
    wait_for("a scrape between two equal pool lists", lambda: pools_agree(c), timeout=30)
    m = scrape(c)
    file_pools = [dict(k) for k in samples(m, "linstor_storage_pool_capacity_total_bytes") if dict(k)["driver"] == "FILE_THIN"]
    assert sorted(p["node"] for p in file_pools) == ["m1", "m2"]
    # LINSTOR's backing_pool: the pool's StorDriver/StorPoolName.
    for p in file_pools:
        sp = rest(c, f"/v1/nodes/{p['node']}/storage-pools/DfltStorPool")
        assert p["backing_pool"] == sp["props"]["StorDriver/StorPoolName"]


def test_query_switches_leave_out_their_families(spawned):
    c = spawned
    resource_families = {"linstor_resource_state", "linstor_volume_state", "linstor_volume_allocated_size_bytes",
                         "linstor_resource_definition_resource_count"}
    pool_families = {"linstor_storage_pool_capacity_free_bytes", "linstor_storage_pool_capacity_total_bytes",
                     "linstor_storage_pool_error_count"}
    always = {"linstor_info", "linstor_node_state", "linstor_resource_definition_count",
              "linstor_volume_definition_size_bytes", "linstor_scrape_duration_seconds"}
    full = set(scrape(c))
    assert resource_families | pool_families | always | {"linstor_error_reports_count"} <= full
    no_rsc = set(scrape(c, "?resource=false"))
    assert not no_rsc & resource_families and pool_families | always <= no_rsc
    no_pools = set(scrape(c, "?storage_pools=false"))
    assert not no_pools & pool_families and resource_families | always <= no_pools
    no_errors = set(scrape(c, "?error_reports=false"))
    assert "linstor_error_reports_count" not in no_errors and resource_families | pool_families <= no_errors
    # Anything but `true` switches a family off, as JAX-RS reads a boolean.
    assert not set(scrape(c, "?resource=no")) & resource_families
    assert resource_families <= set(scrape(c, "?resource=TRUE"))


def test_scrapes_and_request_durations_are_counted(spawned):
    c = spawned
    # A counter without `_total`, as LINSTOR writes it; the parser names
    # its sample with the suffix.
    first = one(scrape(c), "linstor_scrape_requests_count_total")
    m = scrape(c)
    assert m["linstor_scrape_requests_count"].type == "counter"
    assert one(m, "linstor_scrape_requests_count_total") == first + 1
    assert 0 <= one(m, "linstor_scrape_duration_seconds") < 10

    def count(m):
        return samples(m, "linstor_restapi_request_duration_seconds_count").get(frozenset({("apicall", "GET /v1/nodes/{node}")}), 0)

    before = count(scrape(c))
    for _ in range(3):
        rest(c, "/v1/nodes/m1")
    m = scrape(c)
    assert count(m) == before + 3
    buckets = sorted(((float(dict(k)["le"]), v) for k, v in samples(m, "linstor_restapi_request_duration_seconds_bucket").items()
                      if dict(k)["apicall"] == "GET /v1/nodes/{node}"))
    assert len(buckets) == 20 and buckets[-1] == (math.inf, count(m))
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    total = samples(m, "linstor_restapi_request_duration_seconds_sum")[frozenset({("apicall", "GET /v1/nodes/{node}")})]
    assert 0 < total < 10 * count(m)
    # Unrouted paths are not API calls.
    c.ctrl.request("GET", "/v1/no-such-thing")
    assert not [k for k in samples(scrape(c), "linstor_restapi_request_duration_seconds_count") if "no-such" in dict(k)["apicall"]]


def test_a_stopped_satellite_shows_offline(spawned):
    c = spawned
    c.sats["m2"].stop()
    wait_for("m2 offline in /metrics", lambda: one(scrape(c), "linstor_node_state", node="m2") == 0, timeout=30)
    assert rest(c, "/v1/nodes/m2")["connection_status"] == "OFFLINE"
    m = scrape(c)
    assert one(m, "linstor_node_state", node="m1") == 2
    # What m2 reported is no longer current: its volumes' states are unknown.
    for r in rest(c, "/v1/view/resources?resources=met&nodes=m2"):
        for v in r["volumes"]:
            expected = VOLUME_STATES.get((v.get("state") or {}).get("disk_state"), -1)
            assert one(m, "linstor_volume_state", resource="met", node="m2", volume=str(v["volume_number"])) == expected


def test_process_metrics_describe_the_controller_process(controller):
    status, _, text = controller.request("GET", "/metrics")
    assert status == 200
    m = {f.name: f for f in text_string_to_metric_families(text)}
    pid = controller.proc.pid
    open_fds = len(os.listdir(f"/proc/{pid}/fd"))
    assert abs(one(m, "process_open_fds") - open_fds) <= 3
    with open(f"/proc/{pid}/status") as f:
        rss_kib = int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
    assert 0.5 * rss_kib * 1024 < one(m, "process_resident_memory_bytes") < 2 * rss_kib * 1024
    assert one(m, "process_virtual_memory_bytes") >= one(m, "process_resident_memory_bytes")
    assert time.time() - 120 < one(m, "process_start_time_seconds") <= time.time()
    assert one(m, "process_cpu_seconds_total") > 0
    assert one(m, "process_max_fds") >= open_fds
    # Nodes, resources and pools of an empty cluster: families without samples.
    assert one(m, "linstor_resource_definition_count") == 0
    assert not samples(m, "linstor_node_state")
