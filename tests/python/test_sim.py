"""`cairn sim-satellites`, the benchmarking tool: simulated satellites
speak the real protocol to a real controller, so nodes come ONLINE, the
autoplacer places on them and every replica is reported UpToDate and
connected (docs/BENCHMARKS.md uses it at 1,000 nodes)."""

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

import satlink
from conftest import BIN, free_port, ok, wait_for
from satlink import PROTO

SIM_IP = "127.0.11.1"


def test_simulated_satellites_come_online_and_serve_spawned_resources(controller, lin):
    base = free_port(SIM_IP)
    count = 4
    sim = subprocess.Popen([BIN, "sim-satellites", "--count", str(count), "--ip", SIM_IP, "--base-port", str(base),
                            "--name-prefix", "sim", "--cluster-secret-file", os.path.join(controller.data_dir, "cluster-secret"),
                            "--pool-gib", "100"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for i in range(count):
            ok(lin.node_create(f"sim{i:05}", "SATELLITE", SIM_IP, port=base + i))
            ok(lin.storage_pool_create(f"sim{i:05}", "pool", "FILE_THIN", "/var/lib/sim"))
        wait_for("every simulated node ONLINE",
                 lambda: all(n.connection_status == "ONLINE" for n in lin.node_list_raise().nodes), timeout=30)
        ok(lin.resource_group_create("simrg", place_count=3, storage_pool="pool"))
        ok(lin.resource_group_spawn("simrg", "vol", ["10M"]))
        status, _, rscs = controller.request("GET", "/v1/view/resources?resources=vol")
        assert status == 200 and len(rscs) == 3, rscs
        for r in rscs:
            assert r["volumes"][0]["state"]["disk_state"] == "UpToDate", r
            conns = r["layer_object"]["drbd"]["connections"]
            assert len(conns) == 2 and all(c["connected"] for c in conns.values()), r
        # Pools report their size less what the volumes take.
        pools = {p.node_name: p for p in lin.storage_pool_list_raise(filter_by_stor_pools=["pool"]).storage_pools}
        used = {n for n, p in pools.items() if p.free_space.free_capacity < p.free_space.total_capacity}
        assert used == {r["node_name"] for r in rscs}, pools
        assert all(p.free_space.total_capacity == 100 * 2**20 for p in pools.values())
        # A wrong secret is refused as a real satellite refuses it; the
        # right one opens a session (the protocol as python implements it).
        url = f"http://{SIM_IP}:{base}"
        assert satlink.Session(url, "wrong", PROTO).open_status == 401
        with open(os.path.join(controller.data_dir, "cluster-secret")) as f:
            s = satlink.Session(url, f.read().strip(), PROTO)
        status, hello = s.request("GET", "/internal/v1/hello")
        assert status == 200 and json.loads(hello)["node_name"] == "sim00000", hello
        req = urllib.request.Request(url + "/internal/v1/hello", headers={"Authorization": "Bearer " + s.secret.decode()})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 401
    finally:
        sim.terminate()
        _, err = sim.communicate(timeout=30)
    assert sim.returncode == 0, err
