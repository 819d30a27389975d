"""Real replication: three VMs with LINBIT's DRBD 9 module loaded into
Debian's kernel, each running `cairn satellite` for real (not config-only),
on the test's own bridge. Volumes are spawned through python-linstor,
replicate, move between nodes with their data, and go away without a
trace. Needs the DRBD source (CAIRN_DRBD_SRC or ../shared/vendor/); without
it these tests are skipped with one line saying so."""

import json
import os
import re
import subprocess
import urllib.request

import linstor
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import BIN, NO_DRBD, drbd_source, ok, wait_for

if drbd_source() is None:
    pytest.skip(NO_DRBD, allow_module_level=True)  # one line for the whole tier

MIB = 1024


def view(c, rsc):
    status, _, body = c.ctrl.request("GET", f"/v1/view/resources?resources={rsc}")
    assert status == 200, body
    return {r["node_name"]: r for r in body}


def disk_states(c, rsc):
    return {n: r["volumes"][0].get("state", {}).get("disk_state") for n, r in view(c, rsc).items()}


def kernel_status(vm, rsc):
    """What DRBD itself says on a node (`drbdsetup status --json`)."""
    rc, out = vm.sh(f"drbdsetup status --json {rsc}")
    assert rc == 0, out
    return json.loads(out)[0]


def connected_to_both(vm, rsc):
    """The node's DRBD has exactly two connections, both Connected."""
    return sorted(p["connection-state"] for p in kernel_status(vm, rsc)["connections"]) == ["Connected", "Connected"]


def metric_samples(vm):
    """Every sample of the satellite's /metrics (its --metrics-bind, port
    9942 in the VMs), parsed by Prometheus' own client: {(name, labels): value}."""
    with urllib.request.urlopen(f"http://{vm.ip}:9942/metrics", timeout=30) as r:
        assert r.headers.get("Content-Type").startswith("text/plain; version=0.0.4"), r.headers
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def metric(samples, sample_name, /, **labels):
    """The one sample called `sample_name` whose labels include `labels`
    (a `name` label among them: hence positional-only)."""
    found = [v for (n, ls), v in samples.items() if n == sample_name and labels.items() <= dict(ls).items()]
    assert len(found) == 1, (sample_name, labels, found)
    return found[0]


def resync_received(vm, rsc):
    """KiB this node received from its peers by resync or replication since
    the resource came up (`drbdsetup status --json --statistics`)."""
    rc, out = vm.sh(f"drbdsetup status --json --statistics {rsc}")
    assert rc == 0, out
    return sum(pd["received"] for conn in json.loads(out)[0]["connections"] for pd in conn["peer_devices"])


def disk_written(vm, rsc):
    """KiB written to the node's backing disk since it was attached, by
    resync and replication alike; unlike the per-connection counters it
    survives a reconnect in the middle of a resync (seen under load)."""
    rc, out = vm.sh(f"drbdsetup status --json --statistics {rsc}")
    assert rc == 0, out
    return json.loads(out)[0]["devices"][0]["written"]


def whole_sha(vm, dev):
    """sha256 of the whole device; a failed read fails the test with what
    dd and DRBD said (never the digest of nothing)."""
    rc, out = vm.sh(f"set -o pipefail; dd if={dev} bs=1M iflag=direct 2>/tmp/dd.err | sha256sum")
    if rc != 0:
        err = vm.sh("cat /tmp/dd.err; drbdsetup status --verbose")[1]
        raise AssertionError(f"reading {dev} failed: {err}")
    return out.split()[0]


def synced(vm, rsc, peers):
    """The node's kernel has the volume UpToDate, connected to `peers`
    peers with replication established: a fresh thin replica stamped with
    day 0 starts UpToDate and only becomes SyncTarget once it connects, so
    its own disk state alone says nothing about the resync."""
    st = kernel_status(vm, rsc)
    return (st["devices"][0]["disk-state"] == "UpToDate" and len(st["connections"]) == peers
            and all(p["connection-state"] == "Connected" and p["peer_devices"][0]["replication-state"] == "Established"
                    for p in st["connections"]))


def wait_synced(c, rsc, nodes=("d1", "d2", "d3")):
    """Waits until every one of `nodes` is `synced` with the others: REST's
    UpToDate alone does not mean connected (a day-0 thin replica is
    UpToDate before it connects, and without its peers it has no quorum
    to promote: opening it for writing fails with EAGAIN)."""
    for n in nodes:
        wait_for(f"{n}'s {rsc} connected and in sync", lambda: synced(c.vms[n], rsc, len(nodes) - 1), timeout=120)


def initialized(c, rsc):
    status, _, vds = c.ctrl.request("GET", f"/v1/resource-definitions/{rsc}/volume-definitions")
    assert status == 200, vds
    return all("DRBD_INITIALIZED" in v.get("flags", []) for v in vds)


def device(c, rsc, node):
    return view(c, rsc)[node]["volumes"][0]["device_path"]


def spawn3(c, rg, rsc, size_mib, pool="thin"):
    ok(c.lin.resource_group_create(rg, place_count=3, storage_pool=pool))
    ok(c.lin.volume_group_create(rg))
    ok(c.lin.resource_group_spawn(rg, rsc, [size_mib * MIB]))
    assert sorted(view(c, rsc)) == ["d1", "d2", "d3"]


def test_three_replicas_reach_uptodate_and_carry_data_between_nodes(drbd_cluster):
    c = drbd_cluster
    spawn3(c, "repl3", "data", 64)
    wait_for("all replicas UpToDate", lambda: set(disk_states(c, "data").values()) == {"UpToDate"}, timeout=120)
    # The kernel agrees: every peer connected and UpToDate (each node
    # learns its peers' disk states a moment after they change).
    def kernel_agrees(n, vm):
        st = kernel_status(vm, "data")
        return (st["devices"][0]["disk-state"] == "UpToDate"
                and sorted(p["connection-state"] for p in st["connections"]) == ["Connected", "Connected"]
                and all(p["peer_devices"][0]["peer-disk-state"] == "UpToDate" for p in st["connections"]))

    for n, vm in c.vms.items():
        wait_for(f"{n}'s kernel sees everything connected and UpToDate", lambda: kernel_agrees(n, vm), timeout=30)
    # Each satellite's /metrics says the same, in drbd-reactor's names.
    written_before = {}
    for n, vm in c.vms.items():
        m = metric_samples(vm)
        peers = sorted(p for p in c.vms if p != n)
        for p in peers:
            assert metric(m, "drbd_connection_state", name="data", conn_name=p, drbd_connection_state="Connected") == 1, (n, p)
            assert metric(m, "drbd_connection_state", name="data", conn_name=p, drbd_connection_state="Connecting") == 0, (n, p)
            assert metric(m, "drbd_peerdevice_outofsync_bytes", name="data", conn_name=p, volume="0") == 0, (n, p)
        assert metric(m, "drbd_device_state", name="data", volume="0", drbd_device_state="UpToDate") == 1, n
        assert metric(m, "drbd_resource_role", name="data", drbd_resource_role="Secondary") == 1, n
        assert metric(m, "drbd_device_size_bytes", name="data", volume="0") >= 64 * 1024 * 1024, n
        written_before[n] = metric(m, "drbd_device_written_bytes_total", name="data", volume="0")
    # Fresh thin volumes skip the initial sync (day-0 generation id, as
    # LINSTOR does): nothing was received by any replica.
    assert {n: resync_received(vm, "data") for n, vm in c.vms.items()} == {"d1": 0, "d2": 0, "d3": 0}
    wait_for("the volume definition marked DRBD_INITIALIZED", lambda: initialized(c, "data"), timeout=30)
    v = view(c, "data")
    assert all(r["state"]["in_use"] is False for r in v.values()), v
    # REST shows what the satellites last reported (polled): it catches up
    # with the kernels within a few observations.
    wait_for("REST shows every replica connected to its peers",
             lambda: all(r["layer_object"]["drbd"]["connections"][p]["connected"] for vw in [view(c, "data")] for n, r in vw.items()
                         for p in vw if p != n), timeout=30)
    assert all(r["layer_object"]["drbd"].get("promotion_score", 0) > 0 for r in v.values()), v
    # The CLI shows the same: three replicas, all connected and UpToDate.
    out = subprocess.run([BIN, "--no-color", "--no-utf8", "resource", "list", "-r", "data"], capture_output=True, text=True,
                         env=dict(os.environ, LS_CONTROLLERS=c.ctrl.url), timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if "| data " in line]
    assert len(rows) == 3 and all("UpToDate" in r and "Ok" in r for r in rows), out.stdout

    # Write a pattern on d1 (auto-promote on open for writing), read it on d2.
    dev = device(c, "data", "d1")
    rc, out = c.vms["d1"].sh("dd if=/dev/urandom of=/tmp/pat bs=1M count=8 2>/dev/null && sha256sum /tmp/pat"
                             f" && dd if=/tmp/pat of={dev} bs=1M oflag=direct conv=fsync 2>&1")
    assert rc == 0, out
    want = out.split()[0]
    rc, out = c.vms["d2"].sh(f"dd if={device(c, 'data', 'd2')} bs=1M count=8 iflag=direct 2>/dev/null | sha256sum")
    assert rc == 0 and out.split()[0] == want, out
    # The 8 MiB show in the written-bytes counter of the writer and of its
    # peers (protocol C: on their disks too).
    for n, vm in c.vms.items():
        after = metric(metric_samples(vm), "drbd_device_written_bytes_total", name="data", volume="0")
        assert after - written_before[n] >= 8 * 1024 * 1024, (n, written_before[n], after)

    # While a program holds the device open on d3, d3 is primary and in use.
    c.vms["d3"].sh(f"sleep 600 3>{device(c, 'data', 'd3')} >/dev/null 2>&1 & echo $! > /tmp/holder")
    wait_for("d3 in use", lambda: view(c, "data")["d3"]["state"]["in_use"] is True, timeout=30)
    assert kernel_status(c.vms["d3"], "data")["role"] == "Primary"
    c.vms["d3"].sh("kill $(cat /tmp/holder)")
    wait_for("d3 no longer in use", lambda: view(c, "data")["d3"]["state"]["in_use"] is False, timeout=30)


def test_thick_replicas_really_sync_and_a_late_thin_replica_gets_what_was_written(drbd_cluster):
    c = drbd_cluster
    # Thick (FILE): only the chosen replica starts UpToDate, the others
    # receive the whole volume.
    spawn3(c, "thick", "thick", 32, pool="thick")
    wait_for("all thick replicas UpToDate", lambda: set(disk_states(c, "thick").values()) == {"UpToDate"}, timeout=180)
    got = sorted(resync_received(vm, "thick") for vm in c.vms.values())
    assert got[0] == 0 and all(32 * MIB <= g <= 33 * MIB for g in got[1:]), got
    shas = {n: whole_sha(vm, device(c, "thick", n)) for n, vm in c.vms.items()}
    assert len(set(shas.values())) == 1, shas
    ok(c.lin.resource_dfn_delete("thick"))

    # Thin: two replicas, data written, then a third replica joins. It
    # starts at day 0 and receives exactly what was written since.
    ok(c.lin.resource_dfn_create("late"))
    ok(c.lin.resource_dfn_modify("late", {"DrbdOptions/auto-add-quorum-tiebreaker": "false"}))
    ok(c.lin.volume_dfn_create("late", 32 * MIB))
    ok(c.lin.resource_create([linstor.ResourceData(n, "late", storage_pool="thin") for n in ("d1", "d2")]))
    wait_for("both UpToDate", lambda: disk_states(c, "late") == {"d1": "UpToDate", "d2": "UpToDate"}, timeout=120)
    wait_synced(c, "late", ("d1", "d2"))
    rc, out = c.vms["d1"].sh(f"dd if=/dev/urandom of={device(c, 'late', 'd1')} bs=1M seek=4 count=8 oflag=direct conv=fsync 2>&1")
    assert rc == 0, out
    want = whole_sha(c.vms["d1"], device(c, "late", "d1"))
    ok(c.lin.resource_create([linstor.ResourceData("d3", "late", storage_pool="thin")]))
    wait_for("d3 UpToDate after its resync", lambda: synced(c.vms["d3"], "late", 2), timeout=120)
    # What was written, not the volume (32 MiB). DRBD 9.2 may resync the
    # same bits from each UpToDate peer in turn (seen: 8 MiB from d1, then
    # d2's bitmap again, 12 MiB written in all): at most twice as much.
    assert 8 * MIB <= disk_written(c.vms["d3"], "late") <= 16 * MIB
    assert whole_sha(c.vms["d3"], device(c, "late", "d3")) == want

    # d3's replica goes, more is written, a new one comes under the same
    # DRBD node id: the peers freed its bitmap slot (forget-peer), so it is
    # synced from day 0 again, not from the old replica's bitmap.
    node_id = view(c, "late")["d3"]["layer_object"]["drbd"]["node_id"]
    ok(c.lin.resource_delete("d3", "late"))
    wait_for("d1 forgot d3", lambda: "d3" not in view(c, "late")["d1"]["layer_object"]["drbd"]["connections"], timeout=60)
    rc, out = c.vms["d1"].sh(f"dd if=/dev/urandom of={device(c, 'late', 'd1')} bs=1M seek=20 count=4 oflag=direct conv=fsync 2>&1")
    assert rc == 0, out
    want = whole_sha(c.vms["d1"], device(c, "late", "d1"))
    # The id is handed out again once every peer reported it forgotten.
    wait_for("d3 created again under its old node id", lambda: not any(
        r.is_error() for r in c.lin.resource_create([linstor.ResourceData("d3", "late", storage_pool="thin", node_id=node_id)])),
        timeout=60)
    assert view(c, "late")["d3"]["layer_object"]["drbd"]["node_id"] == node_id
    wait_for("the new d3 UpToDate after its resync", lambda: synced(c.vms["d3"], "late", 2), timeout=120)
    assert 12 * MIB <= disk_written(c.vms["d3"], "late") <= 24 * MIB
    assert whole_sha(c.vms["d3"], device(c, "late", "d3")) == want
    ok(c.lin.resource_dfn_delete("late"))


def test_snapshots_suspend_io_on_every_node_and_rollback_restore_bring_the_data_back(drbd_cluster):
    c = drbd_cluster
    spawn3(c, "snaps", "sn", 32)
    wait_for("all replicas UpToDate", lambda: set(disk_states(c, "sn").values()) == {"UpToDate"}, timeout=120)
    wait_synced(c, "sn")
    rc, out = c.vms["d1"].sh(f"dd if=/dev/urandom of={device(c, 'sn', 'd1')} bs=1M seek=2 count=8 oflag=direct conv=fsync 2>&1")
    assert rc == 0, out
    before = whole_sha(c.vms["d1"], device(c, "sn", "d1"))
    # Every DRBD event on each node while the snapshot is taken.
    for vm in c.vms.values():
        vm.sh("(drbdsetup events2 --timestamps sn < /dev/null > /tmp/sn.events2 2>&1 & echo $! > /tmp/sn.events2.pid)")
    replies = c.lin.snapshot_create([], "sn", "s1")
    assert all(r.is_success() for r in replies), [str(r) for r in replies]
    status, _, snap = c.ctrl.request("GET", "/v1/resource-definitions/sn/snapshots/s1")
    assert status == 200 and "SUCCESSFUL" in snap["flags"], snap
    assert sorted(n["node_name"] for n in snap["snapshots"]) == ["d1", "d2", "d3"], snap
    for n, vm in c.vms.items():
        vm.sh("kill $(cat /tmp/sn.events2.pid)")
        rc, ev = vm.sh("grep -E '^[^ ]+ change resource name:sn .*suspended:' /tmp/sn.events2")
        states = [line.split("suspended:")[1].split()[0] for line in ev.splitlines()]
        # I/O was suspended by the snapshot and resumed after it, on every node.
        assert "user" in states and states[-1] == "no", (n, ev)
        assert "suspended" not in vm.sh("drbdsetup status sn")[1], n
    # New data over it, then back to the snapshot: every replica rolls
    # back, and DRBD comes back consistent without a resync.
    rc, out = c.vms["d2"].sh(f"dd if=/dev/urandom of={device(c, 'sn', 'd2')} bs=1M seek=1 count=16 oflag=direct conv=fsync 2>&1")
    assert rc == 0, out
    assert whole_sha(c.vms["d2"], device(c, "sn", "d2")) != before
    # A rollback is refused while a replica is in use, as satellites report
    # it (polled): d2's writer has closed the device, REST catches up.
    wait_for("no replica in use", lambda: not any(r["state"].get("in_use") for r in view(c, "sn").values()), timeout=30)
    replies = c.lin.snapshot_rollback("sn", "s1")
    assert all(r.is_success() for r in replies), [str(r) for r in replies]

    def settled():
        return set(disk_states(c, "sn").values()) == {"UpToDate"} and all(
            p["connection-state"] == "Connected" for vm in c.vms.values() for p in kernel_status(vm, "sn")["connections"])

    wait_for("rolled back and connected", settled, timeout=180)
    assert {n: whole_sha(vm, device(c, "sn", n)) for n, vm in c.vms.items()} == {n: before for n in c.vms}
    assert {n: resync_received(vm, "sn") for n, vm in c.vms.items()} == {"d1": 0, "d2": 0, "d3": 0}

    # Restore into a new definition on two nodes: the snapshot's data.
    ok(c.lin.resource_dfn_create("snr"))
    ok(c.lin.snapshot_volume_definition_restore("sn", "s1", "snr"))
    ok(c.lin.snapshot_resource_restore(["d1", "d3"], "sn", "s1", "snr"))
    wait_for("restored replicas UpToDate", lambda: all(disk_states(c, "snr").get(n) == "UpToDate" for n in ("d1", "d3")), timeout=180)
    # REST shows polled observations: the kernels settle first (connected
    # to each other and the tiebreaker, nothing left to sync).
    for n in ("d1", "d3"):
        wait_for(f"{n}'s restored replica connected and in sync", lambda: synced(c.vms[n], "snr", 2), timeout=60)
    for n in ("d1", "d3"):
        assert whole_sha(c.vms[n], device(c, "snr", n)) == before, n
    ok(c.lin.resource_dfn_delete("snr"))
    ok(c.lin.snapshot_delete("sn", "s1"))
    ok(c.lin.resource_dfn_delete("sn"))


def test_a_volume_added_while_in_use_becomes_uptodate_everywhere(drbd_cluster):
    c = drbd_cluster
    spawn3(c, "grow2", "vadd", 16)
    wait_for("all replicas UpToDate", lambda: set(disk_states(c, "vadd").values()) == {"UpToDate"}, timeout=120)
    wait_synced(c, "vadd")
    # d2 holds volume 0 open: the resource is primary there, in use.
    c.vms["d2"].sh(f"sleep 600 3>{device(c, 'vadd', 'd2')} >/dev/null 2>&1 & echo $! > /tmp/vadd.holder")
    wait_for("d2 in use", lambda: view(c, "vadd")["d2"]["state"]["in_use"] is True, timeout=30)
    ok(c.lin.volume_dfn_create("vadd", 16 * MIB))

    def second(n):
        vols = {v["volume_number"]: v for v in view(c, "vadd")[n]["volumes"]}
        return vols.get(1, {}).get("state", {}).get("disk_state")

    try:
        wait_for("the new volume UpToDate on every node", lambda: {second(n) for n in c.vms} == {"UpToDate"}, timeout=180)
    except AssertionError:
        for n, vm in c.vms.items():
            print(n, vm.sh("drbdsetup status --verbose vadd; ls /var/lib/cairn-satellite/drbd.d; lvs")[1])
        print(json.dumps(view(c, "vadd"), indent=1))
        raise
    # Written on the primary, read on a secondary.
    dev1 = {n: [v for v in view(c, "vadd")[n]["volumes"] if v["volume_number"] == 1][0]["device_path"] for n in c.vms}
    rc, out = c.vms["d2"].sh(f"dd if=/dev/urandom of={dev1['d2']} bs=1M count=4 oflag=direct conv=fsync 2>&1")
    assert rc == 0, out
    want = whole_sha(c.vms["d2"], dev1["d2"])
    c.vms["d2"].sh("kill $(cat /tmp/vadd.holder)")
    wait_for("d2 no longer in use", lambda: view(c, "vadd")["d2"]["state"]["in_use"] is False, timeout=30)
    assert whole_sha(c.vms["d3"], dev1["d3"]) == want
    ok(c.lin.resource_dfn_delete("vadd"))


def test_delete_leaves_nothing_behind(drbd_cluster):
    c = drbd_cluster
    spawn3(c, "gone", "gone", 32)
    wait_for("all replicas UpToDate", lambda: set(disk_states(c, "gone").values()) == {"UpToDate"}, timeout=120)
    ok(c.lin.resource_dfn_delete("gone"))
    for n, vm in c.vms.items():
        rc, out = vm.sh("drbdsetup status gone")
        assert rc != 0, (n, out)
        rc, out = vm.sh("lvs --noheadings -o lv_name linstor_thin")
        assert rc == 0 and "gone_" not in out, (n, out)
        rc, out = vm.sh("ls /var/lib/cairn-satellite/drbd.d/")
        assert "gone.res" not in out, (n, out)


def test_two_replicas_get_a_diskless_tiebreaker_with_majority_quorum(drbd_cluster):
    c = drbd_cluster
    ok(c.lin.resource_group_create("pair", place_count=2, storage_pool="thin"))
    ok(c.lin.volume_group_create("pair"))
    ok(c.lin.resource_group_spawn("pair", "duo", [32 * MIB]))
    v = view(c, "duo")
    assert len(v) == 3, v
    tb = [n for n, r in v.items() if "TIE_BREAKER" in r["flags"]]
    assert len(tb) == 1, v
    diskful = sorted(n for n in v if n not in tb)
    wait_for("both diskful replicas UpToDate", lambda: [disk_states(c, "duo")[n] for n in diskful] == ["UpToDate", "UpToDate"], timeout=120)
    # The tiebreaker connects to both a moment later.
    wait_for("the tiebreaker connected to both", lambda: connected_to_both(c.vms[tb[0]], "duo"), timeout=60)
    st = kernel_status(c.vms[tb[0]], "duo")
    assert st["devices"][0]["disk-state"] == "Diskless", st
    assert all(d["quorum"] for d in st["devices"]), st
    rc, out = c.vms[diskful[0]].sh("drbdsetup show duo")
    assert rc == 0 and "quorum" in out and "majority" in out and "on-no-quorum" in out and "io-error" in out, out
    ok(c.lin.resource_dfn_delete("duo"))


def test_csi_and_proxmox_attach_detach_on_the_tiebreaker_node_keep_quorum_throughout(drbd_cluster):
    """linstor-csi's ControllerPublish/Unpublish and the Proxmox plugin's
    activate/deactivate, as their sources send them (the same requests as
    tests/python/test_tiebreaker.py), on the node that holds the
    tiebreaker: it becomes a diskless client the workload writes through,
    then the tiebreaker again; no node's kernel loses quorum at any step."""
    c = drbd_cluster
    ok(c.lin.resource_group_create("pair2", place_count=2, storage_pool="thin"))
    ok(c.lin.volume_group_create("pair2"))
    ok(c.lin.resource_group_spawn("pair2", "pvc", [32 * MIB]))
    v = view(c, "pvc")
    tb = next(n for n, r in v.items() if "TIE_BREAKER" in r["flags"])
    diskful = sorted(n for n in v if n != tb)
    for n in diskful:
        wait_for(f"{n} connected and in sync", lambda: synced(c.vms[n], "pvc", 2), timeout=120)
    for vm in c.vms.values():
        vm.sh("(drbdsetup events2 --timestamps pvc < /dev/null > /tmp/pvc.events2 2>&1 & echo $! > /tmp/pvc.events2.pid)")

    def call(method, path, body=None):
        status, _, reply = c.ctrl.request(method, path, body)
        assert status == 200, (method, path, status, reply)
        return reply

    def flags_on_tb():
        return sorted(view(c, "pvc")[tb]["flags"])

    for who, available, unpublish in (("csi", {}, "true"), ("proxmox", {"diskful": False}, "True")):
        if who == "proxmox":
            call("PUT", "/v1/resource-definitions/pvc", {"override_props": {"DrbdOptions/ExactSize": "False"}})
        call("POST", f"/v1/resource-definitions/pvc/resources/{tb}/make-available", available)
        assert flags_on_tb() == ["DISKLESS", "DRBD_DISKLESS"], who
        # The workload writes through the diskless client; both disks get it.
        dev = device(c, "pvc", tb)
        rc, out = c.vms[tb].sh(f"dd if=/dev/urandom of={dev} bs=1M seek=1 count=4 oflag=direct conv=fsync 2>&1")
        assert rc == 0, (who, out)
        want = whole_sha(c.vms[tb], dev)
        assert {n: whole_sha(c.vms[n], device(c, "pvc", n)) for n in diskful} == {n: want for n in diskful}, who
        replies = call("DELETE", f"/v1/resource-definitions/pvc/resources/{tb}?keep_tiebreaker={unpublish}")
        assert flags_on_tb() == ["DISKLESS", "DRBD_DISKLESS", "TIE_BREAKER"], (who, replies)
        st = kernel_status(c.vms[tb], "pvc")
        assert st["devices"][0]["disk-state"] == "Diskless" and st["role"] == "Secondary", (who, st)
    for n, vm in c.vms.items():
        vm.sh("kill $(cat /tmp/pvc.events2.pid)")
        rc, ev = vm.sh("grep -E 'quorum:' /tmp/pvc.events2")
        # The first dump says quorum:yes; nothing ever said quorum:no, and
        # the resource was never taken down on any node.
        assert "quorum:yes" in ev and "quorum:no" not in ev, (n, ev)
        rc, ev = vm.sh("grep -cE '^[^ ]+ destroy resource name:pvc' /tmp/pvc.events2")
        assert ev.strip() == "0", (n, ev)
        assert all(d["quorum"] for d in kernel_status(vm, "pvc")["devices"]), n
    ok(c.lin.resource_dfn_delete("pvc"))
    ok(c.lin.resource_group_delete("pair2"))


def test_online_grow_of_three_replicas(drbd_cluster):
    c = drbd_cluster
    spawn3(c, "grow", "grow", 32)
    wait_for("all replicas UpToDate", lambda: set(disk_states(c, "grow").values()) == {"UpToDate"}, timeout=120)
    wait_synced(c, "grow")
    def size(vm, dev):
        rc, out = vm.sh(f"blockdev --getsize64 {dev}")
        assert rc == 0, out
        return int(out.strip())

    before = {n: size(vm, device(c, "grow", n)) for n, vm in c.vms.items()}
    assert all(32 * 2**20 <= b < 48 * 2**20 for b in before.values()), before
    ok(c.lin.volume_dfn_modify("grow", 0, size=48 * MIB))
    # The backing volumes grew (extent-rounded), then DRBD on top of them.
    for n, vm in c.vms.items():
        dev = device(c, "grow", n)
        wait_for(f"{dev} on {n} grown to 48 MiB", lambda: size(vm, dev) >= 48 * 2**20, timeout=60)
    status, _, vds = c.ctrl.request("GET", "/v1/resource-definitions/grow/volume-definitions")
    assert status == 200 and vds[0]["size_kib"] == 48 * MIB, vds

    def rest_usable(n):
        r = view(c, "grow")[n]
        return [d["data"] for d in r["volumes"][0]["layer_data_list"] if d["type"] == "DRBD"][0].get("usable_size_kib")

    for n, vm in c.vms.items():
        wait_for(f"REST shows {n}'s new size", lambda: rest_usable(n) * 1024 == size(vm, device(c, "grow", n)), timeout=30)
    wait_for("all replicas UpToDate after the grow", lambda: set(disk_states(c, "grow").values()) == {"UpToDate"}, timeout=120)
    ok(c.lin.resource_dfn_delete("grow"))


def thin_pair_and_diskless_d3(c, rsc):
    """A 32 MiB resource with thin replicas on d1 and d2, in sync and
    connected, and a diskless one on d3.

    Written before the two disks finished their (empty) day-0 resync,
    DRBD 9.2.18 lost a megabyte on d2 once: d1's bitmap got the bits of a
    write made while it waited for d2's bitmap, d2 had already ended its
    resync with nothing to do, and d1 ended its own without sending them
    (dmesg: "expected n_oos:256 to be equal to rs_failed:0"), d2 UpToDate
    with other data. So writes start once the kernels connected."""
    ok(c.lin.resource_dfn_create(rsc))
    ok(c.lin.volume_dfn_create(rsc, 32 * MIB))
    ok(c.lin.resource_create([linstor.ResourceData(n, rsc, storage_pool="thin") for n in ("d1", "d2")]
                             + [linstor.ResourceData("d3", rsc, diskless=True)]))
    wait_for("d1 and d2 UpToDate, d3 diskless",
             lambda: disk_states(c, rsc) == {"d1": "UpToDate", "d2": "UpToDate", "d3": "Diskless"}, timeout=180)
    for n in ("d1", "d2"):
        wait_for(f"{n} connected and in sync", lambda: synced(c.vms[n], rsc, 2), timeout=120)


def test_toggle_disk_gives_a_diskless_replica_the_data_and_takes_its_disk_back(drbd_cluster):
    c = drbd_cluster
    thin_pair_and_diskless_d3(c, "tgd")
    rc, out = c.vms["d1"].sh(f"dd if=/dev/urandom of={device(c, 'tgd', 'd1')} bs=1M seek=4 count=8 oflag=direct conv=fsync 2>&1")
    assert rc == 0, out
    want = whole_sha(c.vms["d1"], device(c, "tgd", "d1"))

    # Diskful: a backing LV, metadata without the day-0 stamp, attach, and
    # a full sync from the peers (the data exists; nothing was tracked for
    # a diskless peer).
    ok(c.lin.resource_toggle_disk("d3", "tgd", storage_pool="thin"))
    wait_for("d3 UpToDate", lambda: disk_states(c, "tgd").get("d3") == "UpToDate", timeout=300)
    assert resync_received(c.vms["d3"], "tgd") >= 32 * MIB
    shas = {n: whole_sha(vm, device(c, "tgd", n)) for n, vm in c.vms.items()}
    assert set(shas.values()) == {want}, shas
    rc, out = c.vms["d3"].sh("lvs --noheadings -o lv_name linstor_thin")
    assert rc == 0 and "tgd_" in out, out
    wait_for("DISK_ADDING cleared once UpToDate", lambda: "DISK_ADDING" not in view(c, "tgd")["d3"]["flags"], timeout=60)

    # Diskless again: detached, the LV gone, still a connected peer that
    # reads the data over the network.
    ok(c.lin.resource_toggle_disk("d3", "tgd", diskless=True))
    st = kernel_status(c.vms["d3"], "tgd")
    assert st["devices"][0]["disk-state"] == "Diskless", st
    wait_for("d3 connected to both peers", lambda: connected_to_both(c.vms["d3"], "tgd"), timeout=60)
    rc, out = c.vms["d3"].sh("lvs --noheadings -o lv_name linstor_thin")
    assert rc == 0 and "tgd_" not in out, out
    assert whole_sha(c.vms["d3"], device(c, "tgd", "d3")) == want
    assert "DISKLESS" in view(c, "tgd")["d3"]["flags"]

    # migrate-disk: d3 takes d2's place; d2's disk goes once d3 is UpToDate
    # (what stays on d2 is at most the auto-tiebreaker, diskless).
    def d2_diskless_or_gone():
        r = view(c, "tgd").get("d2")
        return r is None or "DISKLESS" in r["flags"]

    ok(c.lin.resource_toggle_disk("d3", "tgd", storage_pool="thin", migrate_from="d2"))
    # Marked as migrating, unless (slow satellites: the call waits for
    # them) the resync finished and the migration completed already.
    assert view(c, "tgd")["d3"]["props"].get("MigrateFrom") == "d2" or d2_diskless_or_gone()
    wait_for("d3 UpToDate again", lambda: disk_states(c, "tgd").get("d3") == "UpToDate", timeout=300)

    wait_for("d2's diskful replica deleted", d2_diskless_or_gone, timeout=120)
    assert "MigrateFrom" not in view(c, "tgd")["d3"]["props"]
    wait_for("d2's LV gone", lambda: "tgd_" not in c.vms["d2"].sh("lvs --noheadings -o lv_name linstor_thin")[1], timeout=60)
    assert whole_sha(c.vms["d3"], device(c, "tgd", "d3")) == want
    ok(c.lin.resource_dfn_delete("tgd"))


def tcp_flows(vm, port):
    """The node's established TCP connections with `port` at either end:
    [(local address, local port, remote address, remote port)], read from
    /proc/net/tcp (addresses there are little-endian hex)."""
    rc, out = vm.sh("cat /proc/net/tcp")
    assert rc == 0, out

    def addr(h):
        ip, p = h.split(":")
        return ".".join(str(b) for b in bytes.fromhex(ip)[::-1]), int(p, 16)

    found = []
    for line in out.splitlines()[1:]:
        f = line.split()
        if len(f) > 3 and f[3] == "01":  # ESTABLISHED
            (lip, lport), (rip, rport) = addr(f[1]), addr(f[2])
            if port in (lport, rport):
                found.append((lip, lport, rip, rport))
    return found


def test_an_attach_whose_handshake_never_arrives_is_restarted_by_the_satellite(drbd_cluster):
    """DRBD 9.2.18 once left a replica toggled back to diskful `Negotiating`
    for good, its connections up: its peers did their side of the
    handshake and waited in `WFBitMapS`, it never did its own, and
    `drbdsetup attach` waited uninterruptibly. The same is made here on
    purpose: d3 drops what its peers send it on the data connections the
    resource has before the toggle (tc in d3), while the meta connections,
    which carry DRBD's pings, keep the connections up. The satellite's
    watchdog must cycle the connections after half a minute; the new ones
    use new ports, which nothing drops, and d3 gets the data."""
    c = drbd_cluster
    d3 = c.vms["d3"]
    thin_pair_and_diskless_d3(c, "neg")
    wait_for("d3 connected to both peers", lambda: connected_to_both(d3, "neg"), timeout=120)
    rc, out = d3.sh("modprobe -a sch_ingress cls_u32 act_gact && tc qdisc add dev eth0 clsact")
    assert rc == 0, out
    try:
        rc, out = d3.sh("drbdsetup show neg")
        assert rc == 0, out
        ports = set(re.findall(r"_this_host\s+ipv4\s+[\d.]+:(\d+)", out))
        assert len(ports) == 1, out
        flows = tcp_flows(d3, int(ports.pop()))
        assert len(flows) == 4, flows  # a data and a meta connection per peer
        # Which are the data connections: d3, diskless, writes through
        # both of them and through neither meta connection. A counting
        # filter per connection says how much each carried.
        for i, (_, lport, rip, rport) in enumerate(flows):
            rc, out = d3.sh(f"tc filter add dev eth0 egress protocol ip prio {10 + i} u32 match ip dst {rip}/32 "
                            f"match ip sport {lport} 0xffff match ip dport {rport} 0xffff action ok")
            assert rc == 0, out
        rc, out = d3.sh(f"dd if=/dev/urandom of={device(c, 'neg', 'd3')} bs=1M count=8 oflag=direct conv=fsync 2>&1")
        assert rc == 0, out
        want = whole_sha(c.vms["d1"], device(c, "neg", "d1"))

        def sent(i):
            rc, out = d3.sh(f"tc -s filter show dev eth0 egress prio {10 + i}")
            assert rc == 0, out
            return int(re.search(r"Sent (\d+) bytes", out).group(1))

        data = [f for i, f in enumerate(flows) if sent(i) > 4 * 1024 * 1024]
        assert sorted(f[2] for f in data) == ["10.99.0.1", "10.99.0.2"], [(f, sent(i)) for i, f in enumerate(flows)]
        for _, lport, rip, rport in data:
            rc, out = d3.sh(f"tc filter add dev eth0 ingress protocol ip prio 1 u32 match ip src {rip}/32 "
                            f"match ip sport {rport} 0xffff match ip dport {lport} 0xffff action drop")
            assert rc == 0, out

        ok(c.lin.resource_toggle_disk("d3", "neg", storage_pool="thin"))
        wait_for("d3 UpToDate", lambda: disk_states(c, "neg").get("d3") == "UpToDate", timeout=300)
        rc, out = d3.sh("tc -s filter show dev eth0 ingress")
        assert rc == 0, out
        dropped = sum(int(x) for x in re.findall(r"\(dropped (\d+)", out))
        assert dropped > 0, f"nothing was dropped, so nothing was proven: {out}"
    finally:
        d3.sh("tc qdisc del dev eth0 clsact")
    rc, out = d3.sh("grep 'looks stuck' /var/log/cairn-satellite.log")
    assert rc == 0 and "neg" in out, out
    assert {n: whole_sha(vm, device(c, "neg", n)) for n, vm in c.vms.items()} == {n: want for n in c.vms}
    ok(c.lin.resource_dfn_delete("neg"))


def test_evacuate_moves_a_replica_to_the_third_node_with_its_data(drbd_cluster):
    c = drbd_cluster
    # Two thin replicas on d1 and d2 (the auto-tiebreaker goes to d3).
    ok(c.lin.resource_dfn_create("evq"))
    ok(c.lin.volume_dfn_create("evq", 32 * MIB))
    ok(c.lin.resource_create([linstor.ResourceData(n, "evq", storage_pool="thin") for n in ("d1", "d2")]))
    wait_for("d1 and d2 UpToDate", lambda: {n: s for n, s in disk_states(c, "evq").items() if n != "d3"} == {"d1": "UpToDate", "d2": "UpToDate"},
             timeout=180)
    # A thin replica stamped with day 0 is UpToDate before it connects;
    # data written then would diverge from the replica chosen for the
    # initial sync (a split brain, as in LINSTOR): first the two connect.
    for n in ("d1", "d2"):
        wait_for(f"{n} connected and in sync", lambda: synced(c.vms[n], "evq", 2), timeout=60)
    rc, out = c.vms["d1"].sh(f"dd if=/dev/urandom of={device(c, 'evq', 'd1')} bs=1M seek=2 count=8 oflag=direct conv=fsync 2>&1")
    assert rc == 0, out
    want = whole_sha(c.vms["d1"], device(c, "evq", "d1"))
    # Definitions of earlier tests with a diskful replica on every node have
    # nowhere to go: they stay on d1 (LINSTOR's WARN_NOT_EVACUATING); all
    # else leaves.
    nodes_of = {}
    for r in c.ctrl.request("GET", "/v1/view/resources")[2]:
        if not {"DISKLESS", "DRBD_DISKLESS", "TIE_BREAKER"} & set(r["flags"]):
            nodes_of.setdefault(r["name"], set()).add(r["node_name"])
    stuck = {rd for rd, ns in nodes_of.items() if ns >= {"d1", "d2", "d3"}}
    try:
        ok(c.lin.node_evacuate("d1"))
        status, _, n = c.ctrl.request("GET", "/v1/nodes/d1")
        assert "EVACUATE" in n["flags"], n
        v = view(c, "evq")
        assert "EVACUATE" in v["d1"]["flags"] and v["d3"]["props"].get("MigrateFrom") == "d1", v
        wait_for("d3 UpToDate", lambda: disk_states(c, "evq").get("d3") == "UpToDate", timeout=300)
        # d1's replica goes once d3 is UpToDate; d1 ends with no resources.
        wait_for("d1's replica deleted", lambda: "d1" not in view(c, "evq"), timeout=120)
        wait_for("d1 left with only what cannot move",
                 lambda: {r["name"] for r in c.ctrl.request("GET", "/v1/view/resources?nodes=d1")[2]} <= stuck, timeout=120)
        assert "evq" not in stuck
        wait_for("d1's LV gone", lambda: "evq_" not in c.vms["d1"].sh("lvs --noheadings -o lv_name linstor_thin")[1], timeout=60)
        # d3's new thin volume read zeros: the same sha256 is the synced data
        # (its resync counters went with d1's connection, if d1 was the source).
        shas = {n: whole_sha(c.vms[n], device(c, "evq", n)) for n in ("d2", "d3")}
        assert set(shas.values()) == {want}, shas
        v = view(c, "evq")
        assert sorted(v) == ["d2", "d3"] and "MigrateFrom" not in v["d3"]["props"], v
        # LINSTOR keeps the node, flagged, until someone deletes or restores it.
        status, _, n = c.ctrl.request("GET", "/v1/nodes/d1")
        assert "EVACUATE" in n["flags"], n
    finally:
        c.lin.node_restore("d1")
    ok(c.lin.resource_dfn_delete("evq"))


def test_a_split_brain_is_reported_and_left_for_a_person(drbd_cluster):
    c = drbd_cluster
    # Two replicas without quorum (the only way both sides can write while
    # apart): d1 and d2.
    ok(c.lin.resource_dfn_create("sb"))
    ok(c.lin.resource_dfn_modify("sb", {"DrbdOptions/Resource/quorum": "off", "DrbdOptions/auto-add-quorum-tiebreaker": "false"}))
    ok(c.lin.volume_dfn_create("sb", 16 * MIB, storage_pool="thin"))
    ok(c.lin.resource_create([linstor.ResourceData(n, "sb", storage_pool="thin") for n in ("d1", "d2")]))
    wait_for("both UpToDate", lambda: disk_states(c, "sb") == {"d1": "UpToDate", "d2": "UpToDate"}, timeout=120)
    wait_synced(c, "sb", ("d1", "d2"))
    # Cut the network between d1 and d2, write on both sides, join them
    # again. Their ports on the test's bridge are isolated from each other
    # (the controller, on the bridge itself, still reaches both): a
    # `drbdsetup disconnect` would be undone by the next `drbdadm adjust` a
    # satellite runs (under load, the one for DRBD_INITIALIZED came after
    # the disconnect and connected the two again before they wrote).
    taps = ("ctap1", "ctap2")  # d1's and d2's

    def isolate(on):
        for t in taps:
            subprocess.run(["bridge", "link", "set", "dev", t, "isolated", "on" if on else "off"], check=True)

    isolate(True)
    try:
        for n in ("d1", "d2"):
            wait_for(f"{n} sees its peer gone",
                     lambda: kernel_status(c.vms[n], "sb")["connections"][0]["connection-state"] != "Connected", timeout=90)
        for n in ("d1", "d2"):
            rc, out = c.vms[n].sh(f"dd if=/dev/urandom of={device(c, 'sb', n)} bs=1M count=1 oflag=direct conv=fsync")
            assert rc == 0, (n, out)
    finally:
        isolate(False)

    def split(n, peer):
        conn = view(c, "sb")[n]["layer_object"]["drbd"]["connections"].get(peer, {})
        return conn.get("connected") is False and "split brain" in conn.get("message", "")

    wait_for("the split brain in REST on both sides", lambda: split("d1", "d2") and split("d2", "d1"), timeout=90)
    # Nothing was resolved silently: both keep their own data, still apart.
    for n in ("d1", "d2"):
        st = kernel_status(c.vms[n], "sb")
        assert st["devices"][0]["disk-state"] == "UpToDate" and st["connections"][0]["connection-state"] != "Connected", st
    ok(c.lin.resource_dfn_delete("sb"))


def connected(c, rsc, node, peer):
    return view(c, rsc)[node]["layer_object"]["drbd"]["connections"].get(peer, {}).get("connected")


def test_a_killed_node_resyncs_when_it_returns_and_quorum_guards_writes(drbd_cluster):
    c = drbd_cluster
    spawn3(c, "repl-ha", "ha", 32)
    wait_for("all replicas UpToDate", lambda: set(disk_states(c, "ha").values()) == {"UpToDate"}, timeout=120)
    wait_synced(c, "ha")
    dev = device(c, "ha", "d1")
    write = f"dd if=/dev/urandom of={dev} bs=1M count=4 oflag=direct conv=fsync"
    # d1's whole event stream through what follows (kept as parser test
    # data when CAIRN_DRBD_CAPTURE names a directory).
    c.vms["d1"].sh("(drbdsetup events2 --timestamps --statistics ha > /tmp/ha.events2 2>&1 &)")

    # One node lost: the survivors keep quorum and d1 keeps writing.
    c.vms["d3"].kill()
    wait_for("d3 offline", lambda: c.lin.node_list_raise(filter_by_nodes=["d3"]).nodes[0].connection_status == "OFFLINE", timeout=60)
    wait_for("d1 and d2 see d3 gone", lambda: connected(c, "ha", "d1", "d3") is False and connected(c, "ha", "d2", "d3") is False, timeout=60)
    rc, out = c.vms["d1"].sh(write)
    assert rc == 0, out
    rc, want = c.vms["d1"].sh(f"dd if={dev} bs=1M count=32 iflag=direct 2>/dev/null | sha256sum")

    # It comes back: the satellite returns, DRBD resyncs what it missed.
    c.vms["d3"].start()
    wait_for("d3 online", lambda: c.lin.node_list_raise(filter_by_nodes=["d3"]).nodes[0].connection_status == "ONLINE", timeout=120)
    wait_for("d3 UpToDate again", lambda: set(disk_states(c, "ha").values()) == {"UpToDate"}, timeout=180)
    rc, got = c.vms["d3"].sh(f"dd if={device(c, 'ha', 'd3')} bs=1M count=32 iflag=direct 2>/dev/null | sha256sum")
    assert rc == 0 and got.split()[0] == want.split()[0], (got, want)

    # Two nodes lost: d1 alone has no quorum, and writes fail (on-no-quorum io-error).
    c.vms["d2"].kill()
    c.vms["d3"].kill()
    wait_for("d1 without quorum", lambda: not kernel_status(c.vms["d1"], "ha")["devices"][0]["quorum"], timeout=60)
    rc, out = c.vms["d1"].sh(write)
    assert rc != 0, out
    # A peer returns: quorum and writes are back.
    c.vms["d2"].start()
    wait_for("d1 has quorum again", lambda: kernel_status(c.vms["d1"], "ha")["devices"][0]["quorum"], timeout=180)
    rc, out = c.vms["d1"].sh(write)
    assert rc == 0, out
    c.vms["d3"].start()
    wait_for("all nodes online", lambda: all(n.connection_status == "ONLINE" for n in c.lin.node_list_raise().nodes), timeout=120)
    wait_for("all UpToDate at the end", lambda: set(disk_states(c, "ha").values()) == {"UpToDate"}, timeout=180)
    capture(c.vms["d1"], "/tmp/ha.events2", "vm-kill-quorum-resync.d1.events2")


def capture(vm, path, name):
    out = os.environ.get("CAIRN_DRBD_CAPTURE")
    if out:
        rc, text = vm.sh(f"cat {path}")
        assert rc == 0, text
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
