"""Everything acknowledged survives a restart of the controller."""

import json
import os
import signal

import linstor

from conftest import ok


def snapshot(controller):
    paths = ["/v1/nodes", "/v1/view/storage-pools", "/v1/resource-groups", "/v1/resource-definitions?with_volume_definitions=true",
             "/v1/view/resources", "/v1/key-value-store", "/v1/node-connections", "/v1/controller/properties",
             "/v1/storage-pool-definitions", "/v1/resource-groups/rgp/volume-groups"]
    out = {}
    for p in paths:
        status, _, body = controller.request("GET", p)
        assert status == 200, (p, body)
        out[p] = body
    return out


def populate(lin):
    for i, n in enumerate(["Pa", "pb"]):
        ok(lin.node_create(n, "SATELLITE", f"127.0.1.{i + 1}", property_dict={"Aux/i": str(i)}))
        ok(lin.storage_pool_create(n, "pool", "FILE_THIN", "/var/lib/p"))
    ok(lin.resource_group_create("rgp", place_count=2, storage_pool="pool"))
    ok(lin.volume_group_create("rgp"))
    ok(lin.resource_dfn_create("rp", resource_group="rgp"))
    ok(lin.resource_dfn_create("", external_name="ext name"))
    ok(lin.volume_dfn_create("rp", 2048))
    ok(lin.resource_create([linstor.ResourceData("Pa", "rp", storage_pool="pool"), linstor.ResourceData("pb", "rp", diskless=True)]))
    ok(lin.keyvaluestore_modify("kv", property_dict={"a": "b"}))
    ok(lin.node_conn_modify("Pa", "pb", {"Aux/c": "d"}, []))
    ok(lin.controller_set_prop("Aux/ctrl", "1"))


def test_restart_keeps_everything(controller, lin):
    populate(lin)
    before = snapshot(controller)
    controller.restart()
    after = snapshot(controller)
    assert after == before
    c2 = controller.client()
    assert [n.name for n in c2.node_list_raise().nodes] == ["Pa", "pb"]


def test_sigkill_keeps_acknowledged_writes(controller, lin):
    populate(lin)
    before = snapshot(controller)
    controller.stop(signal.SIGKILL)
    controller.start()
    assert snapshot(controller) == before


def test_second_controller_on_same_data_dir_is_refused(controller):
    import subprocess
    from conftest import BIN, free_port
    p = subprocess.run([BIN, "controller", "--rest-bind", f"127.0.0.1:{free_port()}", "--data-dir", controller.data_dir],
                       capture_output=True, timeout=30)
    assert p.returncode != 0
    assert b"already using the data directory" in p.stderr


def test_files_the_controller_creates_are_private(tmp_path):
    import os
    import stat
    from conftest import Controller
    data = tmp_path / "new" / "data"
    os.makedirs(tmp_path / "logs")
    c = Controller(str(data))
    c.log_path = str(tmp_path / "logs" / "controller.log")  # the data dir must not exist before the start
    old = os.umask(0o022)  # what a shell usually has: files 0644 unless the program says otherwise
    try:
        c.start()
    finally:
        os.umask(old)
    try:
        ok(c.client().node_create("private", "SATELLITE", "127.0.10.40"))
        mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
        assert mode(data) == 0o700 and mode(data.parent) == 0o700
        files = ["cairn.db", "cairn.db-wal", "cairn.db-shm", "cluster-secret", "controller.lock"]
        assert {f: mode(data / f) for f in files} == {f: 0o600 for f in files}
    finally:
        c.stop()


def test_a_luks_key_the_master_key_cannot_open_is_reported_corrupted(controller, lin):
    """REST API 1.28's `corrupted_key`: false for a key the unlocked master
    key opens; true once the sealed key in the database is damaged (a
    LINSTOR satellite reports this when it cannot decrypt the key). The
    node has no satellite: the answer is the controller's."""
    import sqlite3

    def luks_volume():
        status, _, view = controller.request("GET", "/v1/view/resources?resources=sec")
        assert status == 200 and len(view) == 1, view
        return view[0]["layer_object"]["luks"]["luks_volumes"][0]

    ok(lin.node_create("n1", "SATELLITE", "127.0.10.99"))
    ok(lin.storage_pool_create("n1", "filepool", "FILE_THIN", "/tmp/cairn-never-made"))
    ok(lin.crypt_create_passphrase("master-pw"))
    ok(lin.resource_dfn_create("sec"))
    ok(lin.volume_dfn_create("sec", 16384))
    ok(lin.resource_create([linstor.ResourceData("n1", "sec", storage_pool="filepool", layer_list=["luks", "storage"])]))
    assert luks_volume()["corrupted_key"] is False
    # Damage the sealed key where it is kept, then unlock again.
    controller.stop()
    db = sqlite3.connect(os.path.join(controller.data_dir, "cairn.db"))
    (key, data), = db.execute("SELECT key, data FROM objects WHERE data LIKE '%luks_secret%'").fetchall()
    doc = json.loads(data)
    sealed = doc["volumes"]["0"]["luks_secret"]
    doc["volumes"]["0"]["luks_secret"] = sealed[:-4] + ("AAAA" if sealed[-4:] != "AAAA" else "BBBB")
    db.execute("UPDATE objects SET data = ? WHERE data LIKE '%luks_secret%'", (json.dumps(doc),))
    db.commit()
    db.close()
    controller.start()
    assert luks_volume()["corrupted_key"] is False, "locked: nothing can be told"
    lin2 = controller.client()
    try:
        ok(lin2.crypt_enter_passphrase("master-pw"))
        assert luks_volume()["corrupted_key"] is True
    finally:
        lin2.disconnect()
