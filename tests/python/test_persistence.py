"""Everything acknowledged survives a restart of the controller."""

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
