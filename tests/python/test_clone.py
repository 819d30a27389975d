"""Resource definition clone through python-linstor and the `cairn` CLI
against real satellites: data copied per node (checked by sha256), reflink
copies on XFS, the CLONING -> COMPLETE transition, LINSTOR's errors, the
linstor-csi PVC-from-PVC flow, and sync-status."""

import hashlib
import os
import signal
import subprocess

import linstor
import pytest

from conftest import BIN, dev_digest, ok, wait_for, write_dev

MIB = 1 << 20


def device(c, rd, node):
    status, _, v = c.ctrl.request("GET", f"/v1/view/resources?resources={rd}&nodes={node}")
    assert status == 200 and len(v) == 1, v
    return v[0]["volumes"][0]["device_path"]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def rd_flags(c, rd):
    status, _, d = c.ctrl.request("GET", f"/v1/resource-definitions/{rd}")
    assert status == 200, d
    return d["flags"], d["props"]


def source(c, rd, nodes, pool=None, size_kib=16 * 1024):
    ok(c.lin.resource_dfn_create(rd))
    ok(c.lin.volume_dfn_create(rd, size_kib))
    ok(c.lin.resource_create([linstor.ResourceData(n, rd, storage_pool=pool) for n in nodes]))


def test_clone_copies_each_nodes_data_and_reports_cloning_then_complete(cluster):
    c = cluster
    source(c, "cl-src", ["n1", "n2"])  # n1 FILE_THIN, n2 FILE
    data = {n: os.urandom(4 * MIB) for n in ("n1", "n2")}
    for n, d in data.items():
        write_dev(device(c, "cl-src", n), d)

    # Hold n1's satellite so the copy there cannot finish: the clone is
    # stored and answered at once, and it is CLONING until n1 copied.
    sat = c.sats["n1"].proc
    sat.send_signal(signal.SIGSTOP)
    try:
        started = c.lin.resource_dfn_clone("cl-src", "cl-dst")
        assert isinstance(started, linstor.responses.CloneStarted), started
        assert (started.source_name, started.clone_name) == ("cl-src", "cl-dst")
        assert started.location == "/v1/resource-definitions/cl-src/clone/cl-dst"
        assert not [m for m in started.messages if m.is_error()], started.messages
        flags, props = rd_flags(c, "cl-dst")
        assert "CLONING" in flags and props["cloned-from"] == "cl-src"
        assert c.lin.resource_dfn_clone_status("cl-src", "cl-dst").status == linstor.consts.CloneStatus.CLONING
    finally:
        sat.send_signal(signal.SIGCONT)
    assert c.lin.resource_dfn_clone_wait_complete("cl-src", "cl-dst", timeout=60)
    assert "CLONING" not in rd_flags(c, "cl-dst")[0]

    # One replica per diskful source replica, same pool, the same bytes.
    rscs = {r.node_name: r for r in c.lin.resource_list_raise(filter_by_resources=["cl-dst"]).resources}
    assert sorted(rscs) == ["n1", "n2"]
    vds = c.lin.resource_dfn_list_raise(query_volume_definitions=True, filter_by_resource_definitions=["cl-dst"]).resource_definitions[0].volume_definitions
    assert [v.size for v in vds] == [16 * 1024]
    for n, d in data.items():
        assert dev_digest(device(c, "cl-dst", n), 4 * MIB) == sha(d), n
    # The clone is a copy, not a view: writes to the source stay there.
    write_dev(device(c, "cl-src", "n1"), os.urandom(4 * MIB))
    assert dev_digest(device(c, "cl-dst", "n1"), 4 * MIB) == sha(data["n1"])
    assert c.lin.resource_dfn_sync_status("cl-dst").synced_on_all
    for rd in ("cl-dst", "cl-src"):
        ok(c.lin.resource_dfn_delete(rd))


def test_clone_on_xfs_shares_extents_with_the_source(cluster, xfs_dir):
    c = cluster
    pool_dir = os.path.join(xfs_dir, "pool")
    ok(c.lin.storage_pool_create("n1", "reflink", "FILE_THIN", pool_dir))
    source(c, "xr-src", ["n1"], pool="reflink")
    pattern = os.urandom(8 * MIB)
    write_dev(device(c, "xr-src", "n1"), pattern)
    started = c.lin.resource_dfn_clone("xr-src", "xr-dst")
    assert not [m for m in started.messages if m.is_error()], started.messages
    assert c.lin.resource_dfn_clone_wait_complete("xr-src", "xr-dst", timeout=60)
    assert dev_digest(device(c, "xr-dst", "n1"), 8 * MIB) == sha(pattern)
    clone_file = [f for f in os.listdir(pool_dir) if f.startswith("xr-dst_00000_") and f.endswith(".img")]
    assert len(clone_file) == 1, os.listdir(pool_dir)
    frag = subprocess.run(["filefrag", "-v", os.path.join(pool_dir, clone_file[0])], capture_output=True, text=True, check=True)
    assert "shared" in frag.stdout, frag.stdout
    for rd in ("xr-dst", "xr-src"):
        ok(c.lin.resource_dfn_delete(rd))


def codes(messages):
    return [m.ret_code & 0x7FFF for m in messages if m.is_error()]


def test_clone_errors_use_linstors_codes(cluster):
    c = cluster
    source(c, "ce-src", ["n3"])
    missing = c.lin.resource_dfn_clone("ce-missing", "ce-dst")
    assert isinstance(missing, linstor.responses.CloneStarted)
    assert codes(missing.messages) == [linstor.consts.FAIL_NOT_FOUND_RSC_DFN & 0x7FFF]
    taken = c.lin.resource_dfn_clone("ce-src", "ce-src")
    assert codes(taken.messages) == [linstor.consts.FAIL_EXISTS_RSC_DFN & 0x7FFF]
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/ce-src/clone", {})
    assert status == 500 and body["clone_name"] == "__invalid_name__", body
    assert [m["ret_code"] & 0x7FFF for m in body["messages"]] == [linstor.consts.FAIL_INVLD_RSC_NAME & 0x7FFF]
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/ce-src/clone", raw_body=b"{nope")
    assert status == 400 and body[0]["ret_code"] & 0xFFFFFFFFFFFFFFFF == linstor.consts.API_CALL_PARSE_ERROR, body
    # Nothing was made by any of them.
    assert [d.name for d in c.lin.resource_dfn_list_raise().resource_definitions if d.name.startswith("ce-")] == ["ce-src"]
    with pytest.raises(linstor.LinstorApiCallError) as e:
        c.lin.resource_dfn_clone_status("ce-src", "ce-nothing")
    assert e.value.main_error.ret_code & 0x7FFF == linstor.consts.FAIL_NOT_FOUND_RSC_DFN & 0x7FFF
    status, _, body = c.ctrl.request("GET", "/v1/resource-definitions/ce-src/clone/ce-nothing")
    assert status == 404, body
    # A definition that is no clone has no clone status either.
    status, _, body = c.ctrl.request("GET", "/v1/resource-definitions/x/clone/ce-src")
    assert status == 404, body
    status, _, body = c.ctrl.request("GET", "/v1/resource-definitions/ce-missing/sync-status")
    assert status == 404 and body[0]["ret_code"] & 0x7FFF == linstor.consts.FAIL_NOT_FOUND_RSC_DFN & 0x7FFF, body
    ok(c.lin.resource_dfn_delete("ce-src"))


def test_linstor_csi_pvc_from_pvc(cluster):
    """linstor-csi's CreateVolume with a volume content source: clone into
    the storage class's group, poll the clone status until COMPLETE, then
    set its properties and grow the volume to the requested size."""
    c = cluster
    ok(c.lin.resource_group_create("csi-sc", place_count=2, storage_pool="DfltStorPool"))
    ok(c.lin.volume_group_create("csi-sc"))
    ok(c.lin.resource_group_spawn("csi-sc", "pvc-src", [16 * 1024]))
    nodes = [r.node_name for r in c.lin.resource_list_raise(filter_by_resources=["pvc-src"]).resources]
    assert len(nodes) == 2
    pattern = os.urandom(2 * MIB)
    for n in nodes:
        write_dev(device(c, "pvc-src", n), pattern)
    status, _, started = c.ctrl.request(
        "POST",
        "/v1/resource-definitions/pvc-src/clone",
        {"name": "pvc-dst", "resource_group": "csi-sc", "use_zfs_clone": True},
    )
    assert status == 201, started
    assert started["location"] == "/v1/resource-definitions/pvc-src/clone/pvc-dst"

    def done():
        s, _, body = c.ctrl.request("GET", started["location"])
        assert s == 200 and body["status"] in ("CLONING", "COMPLETE"), body
        return body["status"] == "COMPLETE"

    wait_for("clone COMPLETE", done, timeout=60)
    s, _, body = c.ctrl.request("PUT", "/v1/resource-definitions/pvc-dst",
                                {"override_props": {"Aux/csi-volume-annotations": "{}"}})
    assert s == 200, body
    s, _, body = c.ctrl.request("PUT", "/v1/resource-definitions/pvc-dst/volume-definitions/0", {"size_kib": 32 * 1024})
    assert s == 200, body
    d = c.lin.resource_dfn_list_raise(filter_by_resource_definitions=["pvc-dst"]).resource_definitions[0]
    assert d.resource_group_name == "csi-sc" and d.properties["Aux/csi-volume-annotations"] == "{}"
    for n in nodes:
        dev = device(c, "pvc-dst", n)
        assert dev_digest(dev, 2 * MIB) == sha(pattern), n
        with open(dev, "rb") as f:
            assert f.seek(0, os.SEEK_END) >= 32 * MIB
    for rd in ("pvc-dst", "pvc-src"):
        ok(c.lin.resource_dfn_delete(rd))


def cairn(c, *args):
    env = dict(os.environ, LS_CONTROLLERS=c.ctrl.url)
    p = subprocess.run([BIN, "--no-color", *args], capture_output=True, text=True, env=env, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_cli_clone_waits_and_reports(cluster):
    c = cluster
    source(c, "cc-src", ["n3"])
    pattern = os.urandom(MIB)
    write_dev(device(c, "cc-src", "n3"), pattern)
    code, out, err = cairn(c, "rd", "clone", "cc-src", "cc-dst")
    assert code == 0, (out, err)
    assert "Waiting for cloning to complete..." in out and "Completed cloning cc-dst." in out, out
    assert dev_digest(device(c, "cc-dst", "n3"), MIB) == sha(pattern)
    code, out, err = cairn(c, "rd", "clone-status", "cc-src", "cc-dst")
    assert code == 0 and "COMPLETE" in out, (out, err)
    code, out, err = cairn(c, "rd", "wait-sync", "--wait-timeout", "10", "cc-dst")
    assert code == 0, (out, err)
    code, out, err = cairn(c, "rd", "clone", "cc-src", "cc-dst")
    assert code == 10 and "already exists" in out + err, (out, err)
    code, out, err = cairn(c, "rd", "clone", "--no-wait", "cc-none", "cc-x")
    assert code == 10 and "not found" in out + err, (out, err)
    code, out, err = cairn(c, "rd", "clone-status", "cc-src", "cc-none")
    assert code == 10, (out, err)
    for rd in ("cc-dst", "cc-src"):
        ok(c.lin.resource_dfn_delete(rd))


def test_a_clone_left_cloning_by_a_controller_restart_completes(cluster):
    c = cluster
    source(c, "rs-src", ["n1"])
    pattern = os.urandom(MIB)
    write_dev(device(c, "rs-src", "n1"), pattern)
    sat = c.sats["n1"].proc
    sat.send_signal(signal.SIGSTOP)
    try:
        started = c.lin.resource_dfn_clone("rs-src", "rs-dst")
        assert not [m for m in started.messages if m.is_error()], started.messages
        assert "CLONING" in rd_flags(c, "rs-dst")[0]
        c.ctrl.restart()
    finally:
        sat.send_signal(signal.SIGCONT)
    lin = c.ctrl.client()
    assert "CLONING" in rd_flags(c, "rs-dst")[0], "the flag is stored"
    # As in LINSTOR, the status says FAILED while a node of the clone is
    # not online; the copy goes on once it is.
    wait_for("all online again", lambda: all(n.connection_status == "ONLINE" for n in lin.node_list_raise().nodes))
    assert lin.resource_dfn_clone_wait_complete("rs-src", "rs-dst", timeout=60)
    assert dev_digest(device(c, "rs-dst", "n1"), MIB) == sha(pattern)
    for rd in ("rs-dst", "rs-src"):
        ok(lin.resource_dfn_delete(rd))
    lin.disconnect()


def test_a_copy_that_fails_marks_the_clone_failed_with_the_reason(cluster):
    c = cluster
    source(c, "fl-src", ["n1"])
    pool_dir = os.path.join(c.root, "n1", "pool")
    img = [f for f in os.listdir(pool_dir) if f.startswith("fl-src_00000_")]
    assert len(img) == 1, os.listdir(pool_dir)
    sat = c.sats["n1"].proc
    sat.send_signal(signal.SIGSTOP)
    try:
        started = c.lin.resource_dfn_clone("fl-src", "fl-dst")
        assert not [m for m in started.messages if m.is_error()], started.messages
        # The source's file vanishes before the satellite gets to copy it.
        os.rename(os.path.join(pool_dir, img[0]), os.path.join(c.root, "moved-away.img"))
    finally:
        sat.send_signal(signal.SIGCONT)
    assert c.lin.resource_dfn_clone_wait_complete("fl-src", "fl-dst", timeout=60) is False
    flags, props = rd_flags(c, "fl-dst")
    assert "FAILED" in flags and "CLONING" not in flags, flags
    assert "fl-src_00000_" in props["Cairn/CloneFailure"], props
    assert c.lin.resource_dfn_clone_status("fl-src", "fl-dst").status == linstor.consts.CloneStatus.FAILED
    # A failed clone is deleted like any definition; the source survives.
    ok(c.lin.resource_dfn_delete("fl-dst"))
    os.rename(os.path.join(c.root, "moved-away.img"), os.path.join(pool_dir, img[0]))
    ok(c.lin.resource_dfn_delete("fl-src"))
