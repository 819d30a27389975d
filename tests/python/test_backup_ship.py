"""Shipping snapshots to another cluster (LINSTOR remotes): two Cairn
clusters on loopback, each a controller with its own satellites and
FILE_THIN pools on a reflink-capable XFS. A full ship with python-linstor's
backup_ship restores the resource on the target (checked by sha256); an
incremental ship with `cairn backup ship` carries only the changed chunk;
a ship the target did not agree to (wrong cluster id, source cluster not
known there, wrong passphrase) is refused, and a ship to an unreachable
remote fails cleanly, leaving nothing behind on either side; a second
shipment of a snapshot still being received is refused; an aborted
shipment registers nothing on the target; a schedule with a LINSTOR
remote ships to the definition its switch names; an encrypted shipment
needs the source's passphrase on the target's remote for it; a receiving
satellite killed mid-shipment removes what arrived when it starts again,
and the source shows the shipment failed."""

import glob
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import time
import uuid

import linstor
import pytest

from conftest import BIN, dev_digest, device, err, free_port, ok, run_cluster, shipped, wait_for, write_dev

MIB = 1 << 20
FAIL_INVLD_CRYPT_PASSPHRASE, FAIL_BACKUP_UNKNOWN_CLUSTER, FAIL_NOT_CONNECTED = 216, 976, 995


def refusal(replies, code):
    """The error entry with `code`."""
    return next(r for r in err(replies, code) if r.is_error() and r.ret_code & 0x7FFF == code)


def cluster_id(c):
    return c.lin.controller_props()[0].properties["Cluster/LocalID"]


@pytest.fixture
def clusters(xfs_dir):
    """Cluster A (node a1) and cluster B (nodes b1, b2), each with a
    FILE_THIN pool `xfs` per node, a master passphrase, and a LINSTOR
    remote for the other: `b` on A, `a` on B."""
    yield from two_clusters(xfs_dir, default_stack="STORAGE")


@pytest.fixture
def drbd_clusters(xfs_dir):
    """The same with DRBD in the default layer stack (DRBD,STORAGE), on
    satellites that write DRBD's configuration and check it with drbdadm
    but bring nothing up."""
    if shutil.which("drbdadm") is None:
        raise RuntimeError("drbdadm not found: install drbd-utils (the test command does)")
    yield from two_clusters(xfs_dir, extra_args=["--drbd-config-only"])


def two_clusters(xfs_dir, **kw):
    ga = run_cluster("cairn-ship-a-", {"a1": "FILE_THIN"}, **kw)
    a = next(ga)
    gb = run_cluster("cairn-ship-b-", {"b1": "FILE_THIN", "b2": "FILE_THIN"}, **kw)
    b = next(gb)
    try:
        for c, nodes in ((a, ["a1"]), (b, ["b1", "b2"])):
            for n in nodes:
                ok(c.lin.storage_pool_create(n, "xfs", "FILE_THIN", os.path.join(xfs_dir, n)))
            ok(c.lin.crypt_create_passphrase("pw-" + nodes[0]))
        ok(a.lin.remote_create_linstor("b", b.ctrl.url, cluster_id=cluster_id(b)))
        ok(b.lin.remote_create_linstor("a", a.ctrl.url, cluster_id=cluster_id(a)))
        a.xfs = b.xfs = xfs_dir
        yield a, b
    finally:
        next(gb, None)
        next(ga, None)


def test_a_drbd_resource_ships_with_the_room_its_metadata_takes(drbd_clusters):
    # The snapshot file of a volume under DRBD holds DRBD's internal
    # metadata after the data, so it is larger than the definition's size
    # the target is told: the stream's own size is taken.
    a, b = drbd_clusters
    ok(a.lin.resource_dfn_create("dr"))
    ok(a.lin.volume_dfn_create("dr", 8 * 1024, storage_pool="xfs"))
    ok(a.lin.resource_create([linstor.ResourceData("a1", "dr", storage_pool="xfs")]))
    files = lambda d: [f for f in glob.glob(os.path.join(d, "dr_00000*")) if "@" not in f]
    [vol] = wait_for("the backing file", lambda: files(os.path.join(a.xfs, "a1")))
    gross = os.path.getsize(vol)
    assert gross > 8 * MIB, gross
    data = os.urandom(3 * MIB)
    with open(vol, "r+b") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    ok(a.lin.backup_ship("b", "dr", "dr", dst_node="b1"))
    [s] = shipped(a, "b", "dr", 1)
    [src] = glob.glob(os.path.join(a.xfs, "a1", f"dr_00000@{s['origin_snap']}.snap"))
    [dst] = wait_for("the snapshot on b1", lambda: glob.glob(os.path.join(b.xfs, "b1", f"dr_00000@{s['origin_snap']}.snap")))
    assert os.path.getsize(dst) == os.path.getsize(src) == gross
    assert dev_digest(dst, gross) == dev_digest(src, gross)
    assert [r.node_name for r in b.lin.resource_list_raise(filter_by_resources=["dr"]).resources] == ["b1"]


def test_full_then_incremental_ship_to_another_cluster(clusters):
    a, b = clusters
    ok(a.lin.resource_dfn_create("src"))
    ok(a.lin.volume_dfn_create("src", 16 * 1024, storage_pool="xfs"))
    ok(a.lin.resource_create([linstor.ResourceData("a1", "src", storage_pool="xfs")]))
    dev = device(a, "src", "a1")
    data = os.urandom(5 * MIB)
    write_dev(dev, data)

    # Full: nothing of `src` on B yet. python-linstor's call.
    replies = ok(a.lin.backup_ship("b", "src", "dst", dst_node="b2"))
    assert any("full" in r.message for r in replies), [r.message for r in replies]
    [first] = shipped(a, "b", "src", 1)
    # Zero chunks are not sent: about the 5 MiB written (random data does
    # not compress), not 16 MiB.
    assert 5 * MIB <= first["sent_bytes"] < 6 * MIB and first["sent_chunks"] == 5, first
    # python-linstor reads the same list.
    [listed] = a.lin.backup_list("b")[0].linstor
    assert (listed.id, listed.origin_rsc_name, listed._rest_data["success"]) == (first["id"], "src", True)
    # B registered the definition, the snapshot and a resource restored
    # from it on b2, holding the same bytes.
    rd = b.lin.resource_dfn_list_raise().resource_definitions
    assert [d.name for d in rd] == ["dst"]
    snaps = b.lin.snapshot_dfn_list_raise().snapshots
    assert [(s.rsc_name, s.snapshot_name) for s in snaps] == [("dst", first["origin_snap"])]
    expected = hashlib.sha256(data + bytes(11 * MIB)).hexdigest()
    wait_for("the shipped data on b2", lambda: dev_digest(device(b, "dst", "b2"), 16 * MIB) == expected)
    # Nothing half-written is left in B's pool.
    assert not glob.glob(os.path.join(b.xfs, "b2", ".*receiving")), os.listdir(os.path.join(b.xfs, "b2"))

    # Change one MiB (one chunk) and ship again with the CLI: incremental,
    # based on the snapshot both clusters hold, carrying that chunk only.
    time.sleep(1.1)  # snapshot names have a resolution of one second
    change = os.urandom(MIB)
    write_dev(dev, change, offset=2 * MIB)
    env = dict(os.environ, LS_CONTROLLERS=a.ctrl.url)
    p = subprocess.run([BIN, "backup", "ship", "b", "src", "dst"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "incremental" in p.stdout, p.stdout
    ships = shipped(a, "b", "src", 2)
    [second] = [s for s in ships if s["id"] != first["id"]]
    assert second["based_on_id"].endswith(first["origin_snap"]), second
    assert second["sent_chunks"] == 1 and second["sent_bytes"] < 1.1 * MIB, second
    # The definition on B has a resource already: the second snapshot is
    # received beside it (LINSTOR's download-only default), and its file
    # holds the new data, byte for byte.
    wait_for("second snapshot on B", lambda: len(b.lin.snapshot_dfn_list_raise().snapshots) == 2)
    [snap_file] = glob.glob(os.path.join(b.xfs, "b2", f"dst_00000@{second['origin_snap']}.snap"))
    new = data[:2 * MIB] + change + data[3 * MIB:] + bytes(11 * MIB)
    assert dev_digest(snap_file, 16 * MIB) == hashlib.sha256(new).hexdigest()
    # The first shipment's resource still holds the old data.
    assert dev_digest(device(b, "dst", "b2"), 16 * MIB) == expected

    # --force-full ships everything again although a base exists.
    time.sleep(1.1)
    p = subprocess.run([BIN, "backup", "ship", "--force-full", "b", "src", "dst"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0 and "full" in p.stdout, p.stdout + p.stderr
    third = [s for s in shipped(a, "b", "src", 3) if s["id"] not in (first["id"], second["id"])][0]
    assert third["sent_chunks"] == 5 and "based_on_id" not in third, third


def volume_with(c, rd, node, mib):
    """A definition `rd` of `mib` MiB in pool `xfs` with its resource on
    `node` of cluster `c`, filled with random bytes; answers them."""
    ok(c.lin.resource_dfn_create(rd))
    ok(c.lin.volume_dfn_create(rd, mib * 1024, storage_pool="xfs"))
    ok(c.lin.resource_create([linstor.ResourceData(node, rd, storage_pool="xfs")]))
    data = os.urandom(mib * MIB)
    write_dev(device(c, rd, node), data)
    return data


def test_a_snapshot_of_the_same_name_that_was_not_shipped_is_never_a_base(clusters):
    """An incremental's base is a snapshot received from one the source
    holds (its uuid kept on it, as LINSTOR's
    Backup/Target/SourceSnapDfnUUID), not one that merely has its name."""
    a, b = clusters
    data = volume_with(a, "src", "a1", 8)
    volume_with(b, "dst", "b1", 8)
    # Both definitions have a snapshot `s1`, of unrelated data.
    ok(a.lin.snapshot_create(["a1"], "src", "s1"))
    ok(b.lin.snapshot_create(["b1"], "dst", "s1"))
    change = os.urandom(MIB)
    write_dev(device(a, "src", "a1"), change, offset=MIB)
    data = data[:MIB] + change + data[2 * MIB:]

    # B's `s1` was not received from A's: the shipment is full, and the
    # received snapshot holds A's data, not B's with A's changes on it.
    replies = ok(a.lin.backup_ship("b", "src", "dst", dst_node="b1", src_snap="s2"))
    assert any("full" in r.message for r in replies), [r.message for r in replies]
    [first] = shipped(a, "b", "src", 1)
    assert "based_on_id" not in first and first["sent_chunks"] == 8, first
    [s2] = wait_for("s2 on b1", lambda: glob.glob(os.path.join(b.xfs, "b1", "dst_00000@s2.snap")))
    assert dev_digest(s2, 8 * MIB) == hashlib.sha256(data).hexdigest()
    status, _, src_snap = a.ctrl.request("GET", "/v1/resource-definitions/src/snapshots/s2")
    assert status == 200, src_snap
    status, _, got = b.ctrl.request("GET", "/v1/resource-definitions/dst/snapshots/s2")
    assert status == 200, got
    assert got["props"]["Backup/Target/SourceSnapDfnUUID"] == src_snap["uuid"], (got, src_snap)

    # `s2` was: the next shipment is incremental on it, one chunk.
    time.sleep(1.1)  # shipment ids have a resolution of one second
    write_dev(device(a, "src", "a1"), change[::-1], offset=5 * MIB)
    data = data[:5 * MIB] + change[::-1] + data[6 * MIB:]
    replies = ok(a.lin.backup_ship("b", "src", "dst", dst_node="b1", src_snap="s3"))
    assert any("based on snapshot 's2'" in r.message for r in replies), [r.message for r in replies]
    second = [s for s in shipped(a, "b", "src", 2) if s["id"] != first["id"]][0]
    assert second["sent_chunks"] == 1, second
    [s3] = wait_for("s3 on b1", lambda: glob.glob(os.path.join(b.xfs, "b1", "dst_00000@s3.snap")))
    assert dev_digest(s3, 8 * MIB) == hashlib.sha256(data).hexdigest()


def test_ships_the_target_did_not_agree_to_are_refused_and_leave_nothing(clusters):
    a, b = clusters
    ok(a.lin.resource_dfn_create("src"))
    ok(a.lin.volume_dfn_create("src", 4 * 1024, storage_pool="xfs"))
    ok(a.lin.resource_create([linstor.ResourceData("a1", "src", storage_pool="xfs")]))

    def nothing_happened():
        assert b.lin.resource_dfn_list_raise().resource_definitions == []
        assert b.lin.snapshot_dfn_list_raise().snapshots == []
        assert a.lin.snapshot_dfn_list_raise().snapshots == []
        status, _, q = a.ctrl.request("GET", "/v1/view/backup/queue")
        assert status == 200 and not q.get("snap_queues"), q

    # A remote that names another cluster id than B's.
    ok(a.lin.remote_create_linstor("other", b.ctrl.url, cluster_id=str(uuid.uuid4())))
    e = refusal(a.lin.backup_ship("other", "src", "dst"), FAIL_BACKUP_UNKNOWN_CLUSTER)
    assert "refused" in e.message and "another cluster" in (e.cause or ""), (e.message, e.cause)
    nothing_happened()

    # A passphrase that is not B's master passphrase.
    ok(a.lin.remote_create_linstor("badpw", b.ctrl.url, passphrase="not-it", cluster_id=cluster_id(b)))
    err(a.lin.backup_ship("badpw", "src", "dst"), FAIL_INVLD_CRYPT_PASSPHRASE)
    nothing_happened()
    # ... and B's own passphrase is accepted.
    ok(a.lin.remote_create_linstor("goodpw", b.ctrl.url, passphrase="pw-b1", cluster_id=cluster_id(b)))

    # B does not know cluster A (no LINSTOR remote with A's id): LINSTOR's
    # "Unknown Cluster".
    ok(b.lin.remote_delete("a"))
    e = refusal(a.lin.backup_ship("goodpw", "src", "dst"), FAIL_BACKUP_UNKNOWN_CLUSTER)
    assert "Unknown Cluster" in (e.cause or ""), (e.message, e.cause)
    nothing_happened()

    # A controller that does not answer: a clear error, nothing taken on A.
    ok(a.lin.remote_create_linstor("gone", f"http://127.0.0.1:{free_port()}", cluster_id=cluster_id(b)))
    e = refusal(a.lin.backup_ship("gone", "src", "dst"), FAIL_NOT_CONNECTED)
    assert "could not be asked" in e.message, e.message
    nothing_happened()

    # With B knowing A again, the same remote ships.
    ok(b.lin.remote_create_linstor("a", a.ctrl.url, cluster_id=cluster_id(a)))
    ok(a.lin.backup_ship("goodpw", "src", "dst"))
    shipped(a, "goodpw", "src", 1)
    assert [d.name for d in b.lin.resource_dfn_list_raise().resource_definitions] == ["dst"]


@pytest.fixture
def fast_clock(monkeypatch):
    # A cron minute per real second in the controllers started after it.
    monkeypatch.setenv("CAIRN_SCHEDULE_CLOCK_SCALE", "60")


def test_a_schedule_with_a_linstor_remote_ships_to_its_target_definition(fast_clock, clusters):
    a, b = clusters
    ok(a.lin.resource_dfn_create("src"))
    ok(a.lin.volume_dfn_create("src", 4 * 1024, storage_pool="xfs"))
    ok(a.lin.resource_create([linstor.ResourceData("a1", "src", storage_pool="xfs")]))
    data = os.urandom(2 * MIB)
    write_dev(device(a, "src", "a1"), data)
    # A full shipment every third (fast) minute, an incremental every
    # minute after it; the switch names the target definition, which the
    # shipments use.
    ok(a.lin.schedule_create("l2l", "*/3 * * * *", incremental_cron="* * * * *", keep_local=3))
    ok(a.lin.backup_schedule_enable("b", "l2l", resource_name="src", dst_rsc_name="copy"))
    props = a.lin.resource_dfn_list_raise(filter_by_resource_definitions=["src"]).resource_definitions[0].properties
    assert props.get("Schedule/b/l2l/TargetResourceName") == "copy", props

    def two():
        status, _, body = a.ctrl.request("GET", "/v1/remotes/b/backups")
        done = [s for s in body["linstor"].values() if s["success"]]
        return any("based_on_id" in s for s in done) and done
    done = wait_for("a full and an incremental scheduled shipment", two, timeout=60)
    ok(a.lin.backup_schedule_disable("b", "l2l", resource_name="src"))
    # The first one was full (nothing on B), a later one incremental.
    assert any("based_on_id" not in s for s in done) and any("based_on_id" in s for s in done), done
    assert [d.name for d in b.lin.resource_dfn_list_raise().resource_definitions] == ["copy"]
    wait_for("the data on B", lambda: dev_digest(device(b, "copy", "b1"), 4 * MIB) ==
             hashlib.sha256(data + bytes(2 * MIB)).hexdigest())


def test_an_aborted_ship_registers_nothing_on_the_target(clusters):
    a, b = clusters
    ok(a.lin.resource_dfn_create("big"))
    ok(a.lin.volume_dfn_create("big", 128 * 1024, storage_pool="xfs"))
    ok(a.lin.resource_create([linstor.ResourceData("a1", "big", storage_pool="xfs")]))
    write_dev(device(a, "big", "a1"), os.urandom(128 * MIB))
    seen = set()
    # A fast machine may finish the 128 chunks before the abort arrives:
    # then the received copy is removed and the race is run again.
    for attempt in range(5):
        target = f"big{attempt}"
        ok(a.lin.backup_ship("b", "big", target))
        ok(a.lin.backup_abort("b", "big"))

        def ended():
            status, _, body = a.ctrl.request("GET", "/v1/remotes/b/backups")
            assert status == 200, body
            new = [s for s in body["linstor"].values() if s["id"] not in seen]
            return len(new) == 1 and not new[0]["shipping"] and new[0]
        s = wait_for("the shipment to end", ended, timeout=60)
        seen.add(s["id"])
        if not s["success"]:
            break
        wait_for(f"{target} registered on B", lambda: b.lin.snapshot_dfn_list_raise(filter_by_resources=[target]).snapshots,
                 timeout=30)
        for snap in b.lin.snapshot_dfn_list_raise(filter_by_resources=[target]).snapshots:
            ok(b.lin.snapshot_delete(target, snap.name))
        ok(b.lin.resource_dfn_delete(target))
        time.sleep(1.1)  # backup ids are per second
    else:
        pytest.fail("five shipments of 128 MiB all ended before their abort arrived")
    assert "aborted" in s["fail_messages"], s
    # The target registered nothing and removed what it had received.
    assert b.lin.resource_dfn_list_raise().resource_definitions == []
    assert b.lin.snapshot_dfn_list_raise().snapshots == []
    wait_for("no files left on B", lambda: not [f for n in ("b1", "b2") for f in os.listdir(os.path.join(b.xfs, n))
                                                if f.startswith(".") or f.endswith(".snap")])


def test_a_second_shipment_of_the_same_snapshot_is_refused_while_the_first_runs(clusters):
    """The target agrees to one shipment per definition and snapshot at a
    time (asked as the source controller asks, through the internal
    route); the slot is free again once the first one ended."""
    a, b = clusters
    prepare = {
        "src_cluster_id": cluster_id(a), "dst_cluster_id": cluster_id(b), "src_rsc_name": "src", "dst_rsc_name": "dst",
        "dst_stor_pool": "xfs", "snapshot": "s1", "layer_stack": ["STORAGE"], "volumes": [[0, 4096, 4 * MIB, "xfs"]], "bases": [],
    }
    status, _, first = b.ctrl.request("POST", "/v1/internal/backups/requestReceive", prepare)
    assert status == 200, first
    status, _, second = b.ctrl.request("POST", "/v1/internal/backups/requestReceive", prepare)
    assert status >= 400, second
    [entry] = [e for e in second if e["ret_code"] < 0]
    assert entry["ret_code"] & 0x7FFF == 514 and "being received already" in entry["message"], entry
    # Another snapshot name is a different shipment.
    status, _, other = b.ctrl.request("POST", "/v1/internal/backups/requestReceive", dict(prepare, snapshot="s2"))
    assert status == 200, other
    # The source gives up the first: the same snapshot may be shipped again.
    for t in (first, other):
        status, _, body = b.ctrl.request("POST", "/v1/internal/backups/requestReceiveDone",
                                         {"token": t["token"], "success": False, "message": "test"})
        assert status == 200, body
    status, _, again = b.ctrl.request("POST", "/v1/internal/backups/requestReceive", prepare)
    assert status == 200, again
    status, _, body = b.ctrl.request("POST", "/v1/internal/backups/requestReceiveDone",
                                     {"token": again["token"], "success": False, "message": "test"})
    assert status == 200, body
    assert b.lin.resource_dfn_list_raise().resource_definitions == []
    assert b.lin.snapshot_dfn_list_raise().snapshots == []


def stream_zeros(target, token, size):
    """Plays a sending satellite: the hello with `token`, then one volume
    of `size` bytes holding only zeros (header, no frames, trailer);
    answers the receiver's status byte."""
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=30) as sock:
        sock.sendall(b"CAIRNSHP" + struct.pack(">H", len(token)) + token.encode())
        sock.sendall(b"CAIRNBK1" + struct.pack(">QQ", MIB, size) + b"CEND" + struct.pack(">Q", 0))
        return sock.recv(1)


def test_a_received_snapshot_that_is_never_registered_is_removed_and_never_adopted(clusters):
    """What a shipment placed on the target's node goes when the shipment
    is given up after it arrived, and a snapshot taken there under its name
    holds the volume's data, never what the shipment left."""
    a, b = clusters
    data = volume_with(b, "dst", "b1", 4)
    pool = os.path.join(b.xfs, "b1")

    def arrive(snap):
        """A shipment of `snap` into `dst` on b1 agreed to and streamed
        (all zeros), its end not reported yet: it waits beside its place."""
        prepare = {
            "src_cluster_id": cluster_id(a), "dst_cluster_id": cluster_id(b), "src_rsc_name": "src", "dst_rsc_name": "dst",
            "dst_node_name": "b1", "snapshot": snap, "layer_stack": ["STORAGE"], "volumes": [[0, 4096, 4 * MIB, "xfs"]],
            "bases": [],
        }
        status, _, agreed = b.ctrl.request("POST", "/v1/internal/backups/requestReceive", prepare)
        assert status == 200, agreed
        assert stream_zeros(agreed["target"], agreed["token"], 4 * MIB) == b"\0"
        waiting = os.path.join(pool, f".dst_00000@{snap}.snap.received")
        assert os.path.exists(waiting), os.listdir(pool)
        return agreed["token"], waiting

    # The source gives up after the stream ended: nothing stays.
    token, waiting = arrive("s1")
    status, _, body = b.ctrl.request("POST", "/v1/internal/backups/requestReceiveDone",
                                     {"token": token, "success": False, "message": "test"})
    assert status == 200, body
    wait_for("the received file removed", lambda: not os.path.exists(waiting))
    assert b.lin.snapshot_dfn_list_raise().snapshots == []

    # A snapshot taken here under the name of a shipment that waits (its
    # source died before reporting the end) is the volume's, not the
    # shipment's zeros; the waiting file goes.
    _, waiting = arrive("s2")
    ok(b.lin.snapshot_create(["b1"], "dst", "s2"))
    taken = os.path.join(pool, "dst_00000@s2.snap")
    wait_for("the snapshot taken", lambda: os.path.exists(taken))
    assert dev_digest(taken, 4 * MIB) == hashlib.sha256(data).hexdigest()
    assert not os.path.exists(waiting), os.listdir(pool)


def test_an_encrypted_shipment_needs_the_source_passphrase_on_the_targets_remote(clusters):
    """Plays cluster A sending an encrypted (LUKS,STORAGE) volume to B: the
    request carries the volume's key sealed with A's master key and A's
    master key sealed with A's passphrase (LINSTOR's luksInfo; made here as
    tests/python/test_backup_luks.py makes it, since these hosts cannot run
    LUKS). B opens them with the passphrase of its remote for A, as
    LINSTOR's target does; without it, or with a wrong one, the shipment is
    refused before anything is received. With it the keys open, and what
    refuses the shipment is that b1 cannot run the LUKS layer (no
    device-mapper here), still before anything is received."""
    from test_backup_luks import seal, source_cluster
    a, b = clusters
    master, info = source_cluster("source-pw")
    prepare = {
        "src_cluster_id": cluster_id(a), "dst_cluster_id": cluster_id(b), "src_rsc_name": "enc", "dst_rsc_name": "enc",
        "dst_node_name": "b1", "snapshot": "s1", "layer_stack": ["LUKS", "STORAGE"], "volumes": [[0, 4096, 4 * MIB, "xfs"]],
        "bases": [], "luks_info": info, "luks_secrets": {"0": seal(master, os.urandom(32).hex().encode())},
    }

    def refused(code, text):
        status, _, body = b.ctrl.request("POST", "/v1/internal/backups/requestReceive", prepare)
        assert status >= 400 and isinstance(body, list), (status, body)
        e = next(x for x in body if x["ret_code"] < 0)
        assert e["ret_code"] & 0x7FFF == code and text in e["message"] + (e.get("cause") or ""), e
        assert b.lin.resource_dfn_list_raise().resource_definitions == []
        assert [f for f in os.listdir(os.path.join(b.xfs, "b1")) if "enc" in f] == []
        return e

    e = refused(312, "luks configured, but no passphrase was given")
    assert "remote" in (e.get("correction") or ""), e
    ok(b.lin.remote_modify_linstor("a", passphrase="not-it"))
    refused(998, "does not open the source cluster's master key")
    ok(b.lin.remote_modify_linstor("a", passphrase="source-pw"))
    status, _, body = b.ctrl.request("POST", "/v1/internal/backups/requestReceive", prepare)
    assert status >= 400 and "does not support the following layers: [LUKS]" in str(body), (status, body)
    assert b.lin.resource_dfn_list_raise().resource_definitions == []
    # A shipment without keys (a source that kept them back) is refused too.
    del prepare["luks_secrets"]
    refused(238, "without their keys")


def test_a_receiving_satellite_restarted_mid_shipment_removes_what_arrived_and_the_shipment_fails(clusters):
    """The receiving satellite is killed in the middle of a shipment (its
    second volume's file is a named pipe nobody reads, so the receive stops
    there, after the first volume was written, for as long as the test
    wants) and started again: the source reports the shipment failed, the
    restarted satellite removed everything the shipment had written before
    it served again, nothing is registered on the target, and the same
    snapshot ships well afterwards."""
    a, b = clusters
    ok(a.lin.resource_dfn_create("src"))
    for _ in range(2):
        ok(a.lin.volume_dfn_create("src", 4 * 1024, storage_pool="xfs"))
    ok(a.lin.resource_create([linstor.ResourceData("a1", "src", storage_pool="xfs")]))
    status, _, v = a.ctrl.request("GET", "/v1/view/resources?resources=src&nodes=a1")
    assert status == 200 and len(v[0]["volumes"]) == 2, v
    data = [os.urandom(4 * MIB) for _ in range(2)]
    for vol, d in zip(v[0]["volumes"], data):
        write_dev(vol["device_path"], d)
    # A named snapshot: the shipment waits until it is taken.
    ok(a.lin.snapshot_create(["a1"], "src", "s1"))
    pool = os.path.join(b.xfs, "b1")
    first, second = (os.path.join(pool, f".dst_{nr:05}@s1.snap.receiving") for nr in (0, 1))
    os.mkfifo(second)

    ok(a.lin.backup_ship("b", "src", "dst", dst_node="b1", src_snap="s1"))
    # The first volume's file is made once its header arrived; the
    # receive then blocks at the second volume, whatever the timing.
    wait_for("the first volume arriving on b1", lambda: os.path.exists(first), timeout=60)
    sat = b.sats["b1"]
    sat.proc.kill()
    sat.proc.wait(30)
    assert os.path.exists(first) and os.path.exists(second), os.listdir(pool)
    started = time.monotonic()
    sat.start()
    # Removed before the satellite answers anything.
    assert [f for f in os.listdir(pool) if "dst" in f] == [], os.listdir(pool)
    assert "cut off when the satellite stopped" in sat.log()

    def ended():
        status, _, body = a.ctrl.request("GET", "/v1/remotes/b/backups")
        assert status == 200, body
        ships = [s for s in body["linstor"].values() if s["origin_rsc"] == "src"]
        return ships if ships and not any(s["shipping"] for s in ships) else None
    [failed] = wait_for("the shipment to end", ended, timeout=60)
    assert failed["success"] is False and "Shipping snapshot 's1' of 'src' failed" in failed["fail_messages"], failed
    assert time.monotonic() - started < 60
    assert b.lin.resource_dfn_list_raise().resource_definitions == []
    assert b.lin.snapshot_dfn_list_raise().snapshots == []
    wait_for("b1 online", lambda: all(n.connection_status == "ONLINE" for n in b.lin.node_list_raise().nodes))

    # Nothing is left in the way: the same snapshot ships well now.
    ok(a.lin.backup_ship("b", "src", "dst", dst_node="b1", src_snap="s1"))
    wait_for("the second shipment registered on B",
             lambda: [s.snapshot_name for s in b.lin.snapshot_dfn_list_raise(filter_by_resources=["dst"]).snapshots] == ["s1"],
             timeout=60)
    for nr, d in enumerate(data):
        assert dev_digest(os.path.join(pool, f"dst_{nr:05}@s1.snap"), 4 * MIB) == hashlib.sha256(d).hexdigest()
