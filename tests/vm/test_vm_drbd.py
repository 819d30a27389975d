"""Real replication: three VMs with LINBIT's DRBD 9 module loaded into
Debian's kernel, each running `cairn satellite` for real (not config-only),
on the test's own bridge. Volumes are spawned through python-linstor,
replicate, move between nodes with their data, and go away without a
trace. Needs the DRBD source (CAIRN_DRBD_SRC or ../shared/vendor/); without
it these tests are skipped with one line saying so."""

import json

from conftest import ok, wait_for

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
    # The kernel agrees: every peer connected and UpToDate.
    for n, vm in c.vms.items():
        st = kernel_status(vm, "data")
        assert st["devices"][0]["disk-state"] == "UpToDate", (n, st)
        assert sorted(p["connection-state"] for p in st["connections"]) == ["Connected", "Connected"], (n, st)
        assert all(p["peer_devices"][0]["peer-disk-state"] == "UpToDate" for p in st["connections"]), (n, st)
    v = view(c, "data")
    assert all(r["state"]["in_use"] is False for r in v.values()), v

    # Write a pattern on d1 (auto-promote on open for writing), read it on d2.
    dev = device(c, "data", "d1")
    rc, out = c.vms["d1"].sh("dd if=/dev/urandom of=/tmp/pat bs=1M count=8 2>/dev/null && sha256sum /tmp/pat"
                             f" && dd if=/tmp/pat of={dev} bs=1M oflag=direct conv=fsync 2>&1")
    assert rc == 0, out
    want = out.split()[0]
    rc, out = c.vms["d2"].sh(f"dd if={device(c, 'data', 'd2')} bs=1M count=8 iflag=direct 2>/dev/null | sha256sum")
    assert rc == 0 and out.split()[0] == want, out

    # While a program holds the device open on d3, d3 is primary and in use.
    c.vms["d3"].sh(f"(exec 3>{device(c, 'data', 'd3')}; sleep 600) >/dev/null 2>&1 & echo $! > /tmp/holder")
    wait_for("d3 in use", lambda: view(c, "data")["d3"]["state"]["in_use"] is True, timeout=30)
    assert kernel_status(c.vms["d3"], "data")["role"] == "Primary"
    c.vms["d3"].sh("kill $(cat /tmp/holder)")
    wait_for("d3 no longer in use", lambda: view(c, "data")["d3"]["state"]["in_use"] is False, timeout=30)


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
