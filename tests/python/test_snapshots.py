"""Snapshots of FILE_THIN volumes (reflink copies) on a real XFS file
system made for the test, through the REST API: take, restore, roll back,
delete; snapshot support probed per pool (ext4: none, refused clearly); a
snapshot that fails shows on itself, never on later changes."""

import hashlib
import os
import subprocess
import time

from conftest import BIN, dev_digest, ok, wait_for, write_dev


def device(c, rd):
    status, _, v = c.ctrl.request("GET", f"/v1/view/resources?resources={rd}")
    assert status == 200, v
    return v[0]["volumes"][0]["device_path"]


def successful(c, rd, snap):
    status, _, s = c.ctrl.request("GET", f"/v1/resource-definitions/{rd}/snapshots/{snap}")
    return status == 200 and "SUCCESSFUL" in s["flags"]


def test_file_thin_snapshots_on_xfs(cluster, xfs_dir):
    c = cluster
    ok(c.lin.storage_pool_create("n1", "reflink", "FILE_THIN", os.path.join(xfs_dir, "pool")))
    ok(c.lin.resource_dfn_create("src"))
    ok(c.lin.volume_dfn_create("src", 16 * 1024, storage_pool="reflink"))
    ok(c.lin.resource_create([__import__("linstor").ResourceData("n1", "src", storage_pool="reflink")]))
    dev = device(c, "src")
    a = os.urandom(4 << 20)
    write_dev(dev, a)
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/src/snapshots", {"name": "s1"})
    assert status == 201, body
    wait_for("s1 successful", lambda: successful(c, "src", "s1"))
    assert os.path.exists(os.path.join(xfs_dir, "pool", "src_00000@s1.snap"))
    # Snapshot properties: LINSTOR whitelists none of its own, Aux/ and
    # EBS tags are free; a create with another key is refused.
    status, _, body = c.ctrl.request("PUT", "/v1/resource-definitions/src/snapshots/s1", {"override_props": {"Aux/x": "1"}})
    assert status == 200, body
    for bad in ({"DrbdOptions/Net/protocol": "C"}, {"Bogus": "1"}, {"Aux/../x": "1"}):
        status, _, body = c.ctrl.request("PUT", "/v1/resource-definitions/src/snapshots/s1", {"override_props": bad})
        assert status == 500 and body[0]["ret_code"] & 0x7FFF == 213, (bad, body)  # FAIL_INVLD_PROP
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/src/snapshots", {"name": "s0", "props": {"Bogus": "1"}})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 213, body
    status, _, s1 = c.ctrl.request("GET", "/v1/resource-definitions/src/snapshots/s1")
    assert s1["props"].get("Aux/x") == "1" and "Bogus" not in s1["props"], s1
    write_dev(dev, os.urandom(4 << 20))
    assert dev_digest(dev, 4 << 20) != hashlib.sha256(a).hexdigest()

    # Restore into a new definition.
    ok(c.lin.resource_dfn_create("copy"))
    for step in ("snapshot-restore-volume-definition", "snapshot-restore-resource"):
        status, _, body = c.ctrl.request("POST", f"/v1/resource-definitions/src/{step}/s1", {"to_resource": "copy"})
        assert status == 200, body
    assert dev_digest(device(c, "copy"), 4 << 20) == hashlib.sha256(a).hexdigest()

    # Roll back in place.
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/src/snapshot-rollback/s1", {})
    assert status == 200, body
    wait_for("rolled back", lambda: dev_digest(device(c, "src"), 4 << 20) == hashlib.sha256(a).hexdigest())

    status, _, body = c.ctrl.request("DELETE", "/v1/resource-definitions/src/snapshots/s1")
    assert status == 200, body
    wait_for("snapshot file gone", lambda: not os.path.exists(os.path.join(xfs_dir, "pool", "src_00000@s1.snap")))
    for rd in ("copy", "src"):
        ok(c.lin.resource_dfn_delete(rd))
    assert [f for f in os.listdir(os.path.join(xfs_dir, "pool")) if not f.startswith(".")] == []


def test_zfs_delete_strategy_delete_refuses_while_snapshots_exist_and_the_rollback_body_is_read(cluster, xfs_dir):
    """LINSTOR's `StorDriver/Zfs/DeleteStrategy` 'Delete' refuses deleting a
    resource or a volume definition of a definition with snapshots
    (FAIL_EXISTS_SNAPSHOT, whatever the provider, as LINSTOR checks it);
    python-linstor's `snapshot_rollback(zfs_rollback_strategy=...)` body is
    read, and leaves a FILE_THIN rollback as it is (LINSTOR applies the
    strategies to ZFS only). The ZFS side runs for real in
    tests/vm/test_vm_zfs.py."""
    import linstor

    c = cluster
    fail_exists_snapshot = 516
    ok(c.lin.storage_pool_create("n1", "reflink", "FILE_THIN", os.path.join(xfs_dir, "pool")))
    ok(c.lin.resource_dfn_create("ds"))
    ok(c.lin.volume_dfn_create("ds", 4 * 1024, storage_pool="reflink"))
    ok(c.lin.volume_dfn_create("ds", 4 * 1024, storage_pool="reflink"))
    ok(c.lin.resource_create([linstor.ResourceData("n1", "ds", storage_pool="reflink")]))
    dev = device(c, "ds")
    a = os.urandom(1 << 20)
    write_dev(dev, a)
    for name in ("s1", "s2"):
        status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/ds/snapshots", {"name": name})
        assert status == 201, body
        wait_for(f"{name} successful", lambda: successful(c, "ds", name))
    write_dev(dev, os.urandom(1 << 20))
    # 'Rollback' for this call, to the older snapshot: not ZFS, so done.
    replies = c.lin.snapshot_rollback("ds", "s1", zfs_rollback_strategy="rollback")
    assert replies and not [r for r in replies if r.is_error()], [str(r) for r in replies]
    wait_for("rolled back", lambda: dev_digest(device(c, "ds"), 1 << 20) == hashlib.sha256(a).hexdigest())

    ok(c.lin.resource_dfn_modify("ds", {"StorDriver/Zfs/DeleteStrategy": "Delete"}))
    want = "Cannot use DELETE strategy since the resource definition 'ds' still has snapshots"
    for replies in (c.lin.resource_delete("n1", "ds"), c.lin.volume_dfn_delete("ds", 1)):
        errors = [r for r in replies if r.is_error()]
        assert len(errors) == 1 and errors[0].ret_code & 0x7FFF == fail_exists_snapshot, [str(r) for r in replies]
        assert errors[0].message == want, errors[0].message
    status, _, v = c.ctrl.request("GET", "/v1/view/resources?resources=ds")
    assert status == 200 and len(v) == 1 and len(v[0]["volumes"]) == 2, v
    for name in ("s1", "s2"):
        status, _, body = c.ctrl.request("DELETE", f"/v1/resource-definitions/ds/snapshots/{name}")
        assert status == 200, body
    ok(c.lin.volume_dfn_delete("ds", 1))
    ok(c.lin.resource_delete("n1", "ds"))
    ok(c.lin.resource_dfn_delete("ds"))


def pool(c, node, name):
    """A storage pool as python-linstor reads it."""
    return c.lin.storage_pool_list_raise(filter_by_nodes=[node], filter_by_stor_pools=[name]).storage_pools[0]


def test_snapshot_support_of_file_thin_pools_is_probed_and_refusals_are_clear(cluster, xfs_dir, ext4_dir):
    c = cluster
    ok(c.lin.storage_pool_create("n1", "onext4", "FILE_THIN", os.path.join(ext4_dir, "pool")))
    ok(c.lin.storage_pool_create("n1", "onxfs", "FILE_THIN", os.path.join(xfs_dir, "pool")))
    assert pool(c, "n1", "onext4").supports_snapshots() is False
    assert pool(c, "n1", "onext4").static_traits["SupportsSnapshots"] == "false"
    assert pool(c, "n1", "onxfs").supports_snapshots() is True
    assert pool(c, "n1", "onxfs").static_traits["SupportsSnapshots"] == "true"
    assert pool(c, "n2", "DfltStorPool").supports_snapshots() is False  # FILE
    # The probe cleans up after itself.
    for d in (ext4_dir, xfs_dir):
        assert os.listdir(os.path.join(d, "pool")) == [], os.listdir(os.path.join(d, "pool"))

    ok(c.lin.resource_dfn_create("ext"))
    ok(c.lin.volume_dfn_create("ext", 4096, storage_pool="onext4"))
    ok(c.lin.resource_create([__import__("linstor").ResourceData("n1", "ext", storage_pool="onext4")]))
    replies = c.lin.snapshot_create(["n1"], "ext", "s1")
    errors = [r for r in replies if r.is_error()]
    assert errors and errors[0].ret_code & 0x7FFF == 994, [str(r) for r in replies]  # FAIL_SNAPSHOTS_NOT_SUPPORTED
    assert "onext4" in errors[0].message and "reflinks" in (errors[0].cause or ""), str(errors[0])
    assert c.lin.snapshot_dfn_list(filter_by_resources=["ext"])[0].snapshots == []
    status, _, v = c.ctrl.request("GET", "/v1/view/resources?resources=ext")
    assert v[0]["volumes"][0]["reports"] == [], v[0]["volumes"][0]["reports"]
    # FILE (thick) pools are refused up front too.
    ok(c.lin.resource_dfn_create("thick"))
    ok(c.lin.volume_dfn_create("thick", 4096))
    ok(c.lin.resource_create([__import__("linstor").ResourceData("n2", "thick")]))
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/thick/snapshots", {"name": "s1"})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 994, body
    for rd in ("ext", "thick"):
        ok(c.lin.resource_dfn_delete(rd))


def snapshot(c, rd, name):
    """The snapshot as python-linstor's snapshot list shows it, or None."""
    snaps = c.lin.snapshot_dfn_list(filter_by_resources=[rd])[0].snapshots
    return next((s for s in snaps if s.name == name), None)


def test_a_failed_snapshot_shows_on_itself_and_never_on_later_changes(cluster, xfs_dir):
    c = cluster
    pool_dir = os.path.join(xfs_dir, "pool")
    ok(c.lin.storage_pool_create("n1", "reflink", "FILE_THIN", pool_dir))
    ok(c.lin.resource_dfn_create("fs"))
    ok(c.lin.volume_dfn_create("fs", 16 * 1024, storage_pool="reflink"))
    ok(c.lin.resource_create([__import__("linstor").ResourceData("n1", "fs", storage_pool="reflink")]))
    ok(c.lin.snapshot_create(["n1"], "fs", "s1"))
    wait_for("s1 successful", lambda: successful(c, "fs", "s1"))
    # The copy for s2 cannot be written: an immutable directory sits where
    # its temporary file goes.
    blocker = os.path.join(pool_dir, ".fs_00000@s2.snap.cairn-tmp")
    os.mkdir(blocker)
    subprocess.run(["chattr", "+i", blocker], check=True)
    try:
        replies = c.lin.snapshot_create(["n1"], "fs", "s2")
        errors = [r for r in replies if r.is_error()]
        assert errors and "snapshot 's2'" in errors[0].message, [str(r) for r in replies]
        # Later changes of the resource do not report s2's failure.
        ok(c.lin.volume_dfn_modify("fs", 0, size=24 * 1024))
        ok(c.lin.snapshot_create(["n1"], "fs", "s3"))
        wait_for("s3 successful", lambda: successful(c, "fs", "s3"))
        ok(c.lin.snapshot_delete("fs", "s1"))
        status, _, v = c.ctrl.request("GET", "/v1/view/resources?resources=fs")
        assert v[0]["volumes"][0]["reports"] == [], v[0]["volumes"][0]["reports"]
        assert v[0]["volumes"][0]["usable_size_kib"] >= 24 * 1024, v[0]["volumes"][0]
        # The failure and its reason show on s2 itself.
        s2 = snapshot(c, "fs", "s2")
        assert "FAILED_DEPLOYMENT" in s2.flags and "SUCCESSFUL" not in s2.flags, s2.flags
        node = s2.snapshots[0]
        assert node.node_name == "n1" and node.flags == ["FAILED_DEPLOYMENT"], node.flags
        vol = node.snapshot_volumes[0]
        reason = vol.properties.get("Cairn/FailureReason", "")
        assert vol.state == "Failed" and "s2" in reason and "Operation not permitted" in reason, (vol.state, reason)
        from test_cli import cairn
        code, out, err = cairn(c, "--no-utf8", "s", "l", "-r", "fs")
        rows = {line.split("|")[2].strip(): line for line in out.splitlines() if line.count("|") > 5 and "fs" in line}
        assert code == 0 and "Failed" in rows["s2"] and "Successful" in rows["s3"], (out, err)
        # There is nothing to roll back to.
        status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/fs/snapshot-rollback/s2", {})
        assert status == 404 and body[0]["ret_code"] & 0x7FFF == 315 and "failed on node 'n1'" in body[0]["message"], body
        # Nothing tries it again: one failure in the satellite's log after
        # longer than the controller's first retry (10 s).
        time.sleep(12)
        assert c.sats["n1"].log().count("snapshot failed") == 1, c.sats["n1"].log()
        # Not after a restart of the satellite either: the failure is
        # remembered (trying later would take other data than asked for).
        c.sats["n1"].stop()
        c.sats["n1"].start()
        wait_for("n1 online again", lambda: [n for n in c.lin.node_list_raise(filter_by_nodes=["n1"]).nodes if n.connection_status == "ONLINE"])
        time.sleep(3)
        assert "FAILED_DEPLOYMENT" in snapshot(c, "fs", "s2").flags
        assert c.sats["n1"].log().count("snapshot failed") == 1, c.sats["n1"].log()
    finally:
        subprocess.run(["chattr", "-i", blocker], check=False)
        os.rmdir(blocker)
    # Deleting it cleans up, with no error.
    ok(c.lin.snapshot_delete("fs", "s2"))
    assert snapshot(c, "fs", "s2") is None
    ok(c.lin.volume_dfn_modify("fs", 0, size=32 * 1024))
    ok(c.lin.snapshot_delete("fs", "s3"))
    wait_for("snapshot files gone", lambda: not [f for f in os.listdir(pool_dir) if f.endswith(".snap")])
    ok(c.lin.resource_dfn_delete("fs"))
    assert os.listdir(pool_dir) == []


def test_snapshot_and_encryption_verbs_of_the_cli(cluster, xfs_dir):
    from test_cli import cairn

    c = cluster
    ok(c.lin.storage_pool_create("n1", "reflink", "FILE_THIN", os.path.join(xfs_dir, "pool")))
    ok(c.lin.resource_dfn_create("clisnap"))
    ok(c.lin.volume_dfn_create("clisnap", 8 * 1024, storage_pool="reflink"))
    ok(c.lin.resource_create([__import__("linstor").ResourceData("n1", "clisnap", storage_pool="reflink")]))
    code, out, err = cairn(c, "snapshot", "create", "clisnap", "snap1")
    assert code == 0 and "SUCCESS" in out, (out, err)
    wait_for("snap1 successful", lambda: successful(c, "clisnap", "snap1"))
    code, out, err = cairn(c, "--no-utf8", "s", "l", "-r", "clisnap")
    assert code == 0 and "| clisnap" in out and "snap1" in out and "Successful" in out and "0: 8 MiB" in out, (out, err)
    # Snapshot properties.
    code, out, err = cairn(c, "s", "set-property", "clisnap", "snap1", "Aux/purpose", "test")
    assert code == 0 and "SUCCESS" in out, (out, err)
    status, _, snap = c.ctrl.request("GET", "/v1/resource-definitions/clisnap/snapshots/snap1")
    assert snap["props"]["Aux/purpose"] == "test", snap
    code, out, err = cairn(c, "-m", "s", "list-properties", "clisnap", "snap1")
    assert code == 0 and __import__("json").loads(out)["Aux/purpose"] == "test", (out, err)
    code, out, err = cairn(c, "s", "sp", "clisnap", "snap1", "Aux/purpose")
    assert code == 0, err
    code, out, err = cairn(c, "s", "lp", "clisnap", "snap1")
    assert code == 0 and "Aux/purpose" not in out, (out, err)
    ok(c.lin.resource_dfn_create("clicopy"))
    code, out, err = cairn(c, "s", "vd", "restore", "--from-resource", "clisnap", "--from-snapshot", "snap1", "--to-resource", "clicopy")
    assert code == 0, (out, err)
    code, out, err = cairn(c, "s", "r", "restore", "--from-resource", "clisnap", "--from-snapshot", "snap1", "--to-resource", "clicopy")
    assert code == 0, (out, err)
    code, out, err = cairn(c, "s", "rollback", "clisnap", "snap1")
    assert code == 0, (out, err)
    code, out, err = cairn(c, "s", "rb", "--zfs-rollback-strategy", "clone", "clisnap", "snap1")
    assert code == 0, (out, err)
    code, out, err = cairn(c, "s", "rb", "--zfs-rollback-strategy", "snapshot", "clisnap", "snap1")
    assert code != 0 and "rollback, clone, dynamic" in err, (out, err)
    code, out, err = cairn(c, "s", "d", "clisnap", "snap1")
    assert code == 0, (out, err)
    code, out, err = cairn(c, "s", "d", "clisnap", "snap1")
    assert code == 10 and "not found" in out + err, (out, err)
    # The master passphrase through the CLI, from stdin or an option.
    env_run = subprocess.run([BIN, "encryption", "create-passphrase"],
                             input="s3cret\n", capture_output=True, text=True,
                             env=dict(os.environ, LS_CONTROLLERS=c.ctrl.url), timeout=60)
    assert env_run.returncode == 0, env_run.stderr
    code, out, err = cairn(c, "e", "ep", "--passphrase", "wrong")
    assert code == 10, (out, err)
    code, out, err = cairn(c, "e", "mp", "--old-passphrase", "s3cret", "--new-passphrase", "n3w")
    assert code == 0, (out, err)
    code, out, err = cairn(c, "e", "ep", "--passphrase", "n3w")
    assert code == 0 and "accepted" in out, (out, err)


def path_without(tool, into):
    """A directory of links to every program on PATH except `tool`, to be
    a satellite's whole PATH: the tool is hidden, everything else works."""
    os.makedirs(into, exist_ok=True)
    for d in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            src, dst = os.path.join(d, name), os.path.join(into, name)
            if name != tool and os.access(src, os.X_OK) and not os.path.lexists(dst):
                os.symlink(src, dst)
    assert not os.path.exists(os.path.join(into, tool))
    return into


def test_rollback_of_plain_file_thin_volumes_never_calls_cryptsetup(xfs_dir):
    """A rollback on a FILE_THIN pool with nothing encrypted must not touch
    cryptsetup: here the satellite cannot even find it, so any call would
    fail the rollback. Afterwards the volume is fine: resize and snapshot
    delete work."""
    import shutil
    import tempfile

    from conftest import Controller, SatelliteProc, loops_under, sat_ip

    root = tempfile.mkdtemp(prefix="cairn-nocrypt-")
    ctrl = Controller(os.path.join(root, "controller"))
    os.makedirs(ctrl.data_dir)
    ctrl.start()
    secret = os.path.join(ctrl.data_dir, "cluster-secret")
    sat = SatelliteProc("n1", sat_ip(1), os.path.join(root, "n1"), secret,
                        env={"PATH": path_without("cryptsetup", os.path.join(root, "bin"))})
    lin = ctrl.client()
    try:
        sat.start()
        ok(lin.controller_set_prop("Cairn/DefaultLayerStack", "STORAGE"))
        ok(lin.node_create("n1", "SATELLITE", sat_ip(1), port=sat.port))
        wait_for("n1 online", lambda: lin.node_list_raise().nodes[0].connection_status == "ONLINE")
        status, _, node = ctrl.request("GET", "/v1/nodes/n1")
        assert "cryptsetup" in str(node.get("unsupported_layers", {}).get("LUKS")), node
        ok(lin.storage_pool_create("n1", "reflink", "FILE_THIN", os.path.join(xfs_dir, "pool")))
        ok(lin.resource_dfn_create("plain"))
        ok(lin.volume_dfn_create("plain", 16 * 1024, storage_pool="reflink"))
        ok(lin.resource_create([__import__("linstor").ResourceData("n1", "plain", storage_pool="reflink")]))
        c = type("C", (), {"ctrl": ctrl})()
        dev = device(c, "plain")
        a = os.urandom(1 << 20)
        write_dev(dev, a)
        status, _, body = ctrl.request("POST", "/v1/resource-definitions/plain/snapshots", {"name": "s1"})
        assert status == 201, body
        wait_for("s1 successful", lambda: successful(c, "plain", "s1"))
        write_dev(dev, os.urandom(1 << 20))

        status, _, body = ctrl.request("POST", "/v1/resource-definitions/plain/snapshot-rollback/s1", {})
        assert status == 200, body
        assert not [e for e in body if e["ret_code"] < 0], body
        assert dev_digest(device(c, "plain"), 1 << 20) == hashlib.sha256(a).hexdigest()
        status, _, v = ctrl.request("GET", "/v1/view/resources?resources=plain")
        assert v[0]["volumes"][0]["state"]["disk_state"] != "Failed", v

        # The volume is usable afterwards: it grows, the snapshot goes.
        ok(lin.volume_dfn_modify("plain", 0, size=32 * 1024))
        status, _, body = ctrl.request("DELETE", "/v1/resource-definitions/plain/snapshots/s1")
        assert status == 200 and not [e for e in body if e["ret_code"] < 0], body
        assert not os.path.exists(os.path.join(xfs_dir, "pool", "plain_00000@s1.snap"))
        ok(lin.resource_dfn_delete("plain"))
    finally:
        lin.disconnect()
        ctrl.stop()
        sat.stop()
        for d in loops_under(root) + loops_under(xfs_dir):
            subprocess.run(["losetup", "--detach", d["name"]], check=False)
        shutil.rmtree(root, ignore_errors=True)
