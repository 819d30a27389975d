"""LINSTOR's server-sent event streams (/v1/events/nodes,
/v1/events/drbd/promotion) read with a plain HTTP client against the real
controller and satellites, and the controller's database backup and export
(REST, python-linstor and the `cairn` CLI)."""

import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest

from conftest import BIN, Controller, SatelliteProc, err, ok, run_cluster, sat_ip, wait_for

FAIL_INVLD_DB_EXPORT_FILE = 242


class Sse:
    """One event stream, read as bytes off the socket: `event:` and `data:`
    lines, a blank line ending an event, `:` lines being comments."""

    def __init__(self, base_url, path, headers=None, timeout=20):
        u = urllib.parse.urlparse(base_url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        self.conn.request("GET", path, headers=headers or {})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, (self.resp.status, self.resp.read())
        assert self.resp.getheader("Content-Type") == "text/event-stream"

    def next(self):
        """The next event as (name, data parsed as JSON)."""
        name, data = None, []
        while True:
            line = self.resp.readline()
            assert line, "the stream ended"
            line = line.decode().rstrip("\n")
            if line == "":
                if name is not None or data:
                    return name, json.loads("\n".join(data))
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)

    def close(self):
        self.conn.close()


@pytest.fixture
def one_sat():
    yield from run_cluster("cairn-events-", {"n1": "FILE_THIN"}, default_stack="STORAGE")


def test_node_events_are_linstors_create_modify_delete_and_nothing_for_connections(one_sat):
    c = one_sat
    s = Sse(c.ctrl.url, "/v1/events/nodes")
    try:
        # A second satellite: node-create when it is registered (LINSTOR's
        # CtrlNodeCrtApiCallHandler), with the node as GET shows it.
        root2 = os.path.join(c.root, "n2")
        sat = SatelliteProc("n2", sat_ip(2), root2, os.path.join(c.ctrl.data_dir, "cluster-secret")).start()
        try:
            ok(c.lin.node_create("n2", "SATELLITE", sat_ip(2), port=sat.port))
            name, data = s.next()
            assert name == "node-create", (name, data)
            assert data["node"]["name"] == "n2" and data["node"]["type"] == "SATELLITE"
            assert data["node"]["net_interfaces"][0]["address"] == sat_ip(2)
            wait_for("n2 online", lambda: c.lin.node_list_raise(filter_by_nodes=["n2"]).nodes[0].connection_status == "ONLINE")
            # LINSTOR sends no node event when a satellite connects or goes
            # away: the next event after n2's satellite stopped and was seen
            # offline is the modification made afterwards.
            sat.stop()
            wait_for("n2 offline", lambda: c.lin.node_list_raise(filter_by_nodes=["n2"]).nodes[0].connection_status != "ONLINE",
                     timeout=30)
            ok(c.lin.node_modify("n2", property_dict={"Aux/rack": "r7"}))
            name, data = s.next()
            assert name == "node-modified", (name, data)
            assert "Aux/rack" not in data["old_node"].get("props", {})
            assert data["new_node"]["props"]["Aux/rack"] == "r7"
            ok(c.lin.node_delete("n2"))
            name, data = s.next()
            assert name == "node-delete" and data["node"]["name"] == "n2", (name, data)
            assert data["node"]["props"]["Aux/rack"] == "r7"
        finally:
            sat.stop()
    finally:
        s.close()


def fds(proc):
    return len(os.listdir(f"/proc/{proc.pid}/fd"))


def test_fifty_streams_opened_and_closed_leave_nothing_behind(one_sat):
    c = one_sat
    base = fds(c.ctrl.proc)
    streams = [Sse(c.ctrl.url, "/v1/events/nodes") for _ in range(50)]
    # Each open stream holds its connection in the controller.
    assert fds(c.ctrl.proc) >= base + 50
    ok(c.lin.node_modify("n1", property_dict={"Aux/a": "1"}))
    for s in streams:
        name, data = s.next()
        assert name == "node-modified" and data["new_node"]["props"]["Aux/a"] == "1"
    for s in streams:
        s.close()
    # The controller lets go of every connection once the clients are
    # gone, without an event having to be written to find out.
    wait_for("connections released", lambda: fds(c.ctrl.proc) <= base + 2, timeout=10)
    # And still serves events to the next client.
    s = Sse(c.ctrl.url, "/v1/events/nodes")
    ok(c.lin.node_modify("n1", property_dict={"Aux/a": "2"}))
    assert s.next()[1]["new_node"]["props"]["Aux/a"] == "2"
    s.close()


@pytest.fixture
def drbd_pair():
    if shutil.which("drbdadm") is None:
        raise RuntimeError("drbdadm not found: install drbd-utils (the test command does)")
    yield from run_cluster("cairn-events-drbd-", {"d1": "FILE_THIN", "d2": "FILE_THIN"}, extra_args=["--drbd-config-only"])


def test_promotion_stream_sends_the_current_state_only_when_asked(drbd_pair):
    c = drbd_pair
    ok(c.lin.resource_group_create("ev", place_count=2))
    ok(c.lin.volume_group_create("ev"))
    ok(c.lin.resource_group_spawn("ev", "evres", ["16M"]))
    # A STORAGE-only resource is not DRBD: LINSTOR's initial state skips it.
    ok(c.lin.resource_dfn_create("plain", resource_group="ev"))
    ok(c.lin.volume_dfn_create("plain", 16384))
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/plain/resources",
                                     [{"resource": {"node_name": "d1", "layer_list": ["STORAGE"]}}])
    assert status == 201, body
    # LINSTOR's `Last-Event-ID: current`: one may-promote-change per DRBD
    # replica first. A config-only satellite has no kernel state, so the
    # value is unknown (null), as LINSTOR reports a replica not reported yet.
    s = Sse(c.ctrl.url, "/v1/events/drbd/promotion", headers={"Last-Event-ID": "current"})
    first = [s.next(), s.next()]
    assert {n for n, _ in first} == {"may-promote-change"}
    assert sorted((d["node_name"], d["resource_name"]) for _, d in first) == [("d1", "evres"), ("d2", "evres")]
    assert all(d["may_promote"] is None and set(d) == {"node_name", "resource_name", "may_promote"} for _, d in first)
    s.close()
    # Without it the stream starts with nothing: no event comes (the
    # keep-alive comment only after 15 s).
    u = urllib.parse.urlparse(c.ctrl.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=3)
    conn.request("GET", "/v1/events/drbd/promotion")
    r = conn.getresponse()
    assert r.status == 200
    with pytest.raises(TimeoutError):
        r.readline()
    conn.close()


def test_backup_db_is_a_consistent_copy_taken_under_writes_and_a_controller_starts_from_it(one_sat):
    c = one_sat
    stop = threading.Event()
    written = []

    def writer():
        lin = c.ctrl.client()
        i = 0
        while not stop.is_set():
            ok(lin.resource_group_create(f"bk{i}"))
            written.append(f"bk{i}")
            i += 1
        lin.disconnect()

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_for("some writes", lambda: len(written) >= 5)
        before = len(written)
        replies = ok(c.lin.controller_backupdb("snap1"))
        after = len(written)
    finally:
        stop.set()
        t.join()
    path = os.path.join(c.ctrl.data_dir, "snap1.db")
    assert replies[0].message == f"Database backup created: {path}"
    assert os.stat(path).st_mode & 0o777 == 0o600
    # A controller started on the copy has what was committed before the
    # call, and only whole changes (every group it has is complete).
    d = tempfile.mkdtemp(prefix="cairn-restored-")
    try:
        shutil.copy(path, os.path.join(d, "cairn.db"))
        other = Controller(d).start()
        try:
            lin = other.client()
            groups = {g.name for g in lin.resource_group_list_raise().resource_groups}
            assert set(written[:before]) <= groups
            assert groups - {"DfltRscGrp"} <= set(written[:after + 1])
            assert [n.name for n in lin.node_list_raise().nodes] == ["n1"]
            lin.disconnect()
        finally:
            other.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    # The same name again, or a name with a path, is refused.
    err(c.lin.controller_backupdb("snap1"), FAIL_INVLD_DB_EXPORT_FILE)
    err(c.lin.controller_backupdb("../escape"), FAIL_INVLD_DB_EXPORT_FILE)
    assert not os.path.exists(os.path.join(os.path.dirname(c.ctrl.data_dir), "escape.db"))


def cairn(c, *args):
    env = dict(os.environ, LS_CONTROLLERS=c.ctrl.url)
    p = subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_export_and_backup_through_python_linstor_and_the_cli(one_sat):
    c = one_sat
    ok(c.lin.resource_group_create("exported-rg"))
    # python-linstor's controller_exportdb (it asks for REST API 1.28).
    replies = c.lin.controller_exportdb("exp1")
    path = os.path.join(c.ctrl.data_dir, "exp1.json")
    assert replies[0].is_success() and replies[0].message == f"Exported database to {path}", replies
    with open(path) as f:
        doc = json.load(f)
    assert {"linstor_version", "export_timestamp_ms", "exported_from", "tables"} <= set(doc)
    tables = {t["name"]: t["data"] for t in doc["tables"]}
    assert [n["name"] for n in tables["node"]] == ["n1"]
    assert "exported-rg" in [g["name"] for g in tables["rsc_grp"]]
    assert sorted(p["name"] for p in tables["stor_pool"] if p["node"] == "n1") == ["DfltDisklessStorPool", "DfltStorPool"]
    status, _, replies = c.ctrl.request("POST", "/v1/controller/database/export", {"backup_name": "exp1"})
    assert replies[0]["ret_code"] & 0x7FFF == FAIL_INVLD_DB_EXPORT_FILE and replies[0]["ret_code"] < 0, replies

    code, out, e = cairn(c, "controller", "exportdb", "exp2")
    assert code == 0 and "Exported database to" in out, (out, e)
    assert os.path.exists(os.path.join(c.ctrl.data_dir, "exp2.json"))
    code, out, e = cairn(c, "c", "bakdb", "bk-cli")
    assert code == 0 and "Database backup created" in out, (out, e)
    assert os.path.exists(os.path.join(c.ctrl.data_dir, "bk-cli.db"))
    code, out, e = cairn(c, "controller", "backupdb", "a/b")
    assert code != 0 and "not a valid backup name" in out + e, (code, out, e)
    # Without a name: a time-stamped export.
    code, out, e = cairn(c, "controller", "exportdb")
    assert code == 0, e
    assert any(f.startswith("cairndb-backup-") and f.endswith(".json") for f in os.listdir(c.ctrl.data_dir))
