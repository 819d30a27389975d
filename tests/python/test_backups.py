"""Backups to S3 with python-linstor against a real controller, satellites
on loop devices (FILE_THIN on a reflink-capable XFS) and a real S3 server
(moto, signatures checked): create (full, then incremental), list from the
bucket (also by a second controller), info, restore on another node with
the data checked by sha256, a damaged chunk failing the restore, a
restore of two volumes failing after the first (registration refused,
satellite killed, second object damaged) leaving nothing behind, a pool
without room refused before anything is written, delete (by id, cascading,
by time), abort of a running shipment and the queue view."""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time

import boto3
import linstor
import pytest

from conftest import BIN, Controller, device, err, ok, wait_for, write_dev

FAIL_NOT_FOUND_BACKUP, FAIL_NOT_ENOUGH_FREE_SPACE, FAIL_IN_USE, FAIL_UNKNOWN_ERROR = 322, 980, 997, 998
MIB = 1 << 20


def s3_client(s3):
    return boto3.client("s3", endpoint_url=s3.endpoint, region_name=s3.region, aws_access_key_id=s3.access_key,
                        aws_secret_access_key=s3.secret_key)


def keys(s3):
    return sorted(o["Key"] for o in s3_client(s3).list_objects_v2(Bucket=s3.bucket).get("Contents", []))


def remote(lin, s3, name="bk"):
    ok(lin.crypt_create_passphrase("master-pw"))
    ok(lin.remote_create_s3(remote_name=name, endpoint=s3.endpoint, region=s3.region, bucket=s3.bucket,
                            access_key=s3.access_key, secret_key=s3.secret_key, use_path_style=True))


def digest(dev, n):
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read(n)).hexdigest()


def backups(lin, name="bk", **kw):
    reply = lin.backup_list(name, **kw)
    assert reply and not isinstance(reply[0], linstor.ApiCallResponse), reply
    return {b.id: b for b in reply[0].linstor}


def finished(lin, rsc, n):
    """The backups of `rsc` once `n` of them are complete (none shipping)."""
    def done():
        bs = [b for b in backups(lin).values() if b.origin_rsc_name == rsc]
        failed = [b for b in bs if not b._rest_data.get("success") and not b._rest_data.get("shipping")]
        assert not failed, [b._rest_data for b in failed]
        return bs if len(bs) == n and all(b._rest_data.get("success") for b in bs) else None
    return wait_for(f"{n} backups of {rsc}", done, timeout=60)


@pytest.fixture
def bcluster(cluster, xfs_dir, s3_server):
    """The cluster with reflink-capable FILE_THIN pools `xfs` on n1 and n3
    (one XFS file system) and an S3 remote `bk`."""
    c = cluster
    for n in ("n1", "n3"):
        ok(c.lin.storage_pool_create(n, "xfs", "FILE_THIN", os.path.join(xfs_dir, n)))
    remote(c.lin, s3_server)
    c.s3, c.xfs = s3_server, xfs_dir
    yield c


def make_volume(c, rd, size_kib, node="n1"):
    ok(c.lin.resource_dfn_create(rd))
    ok(c.lin.volume_dfn_create(rd, size_kib, storage_pool="xfs"))
    ok(c.lin.resource_create([linstor.ResourceData(node, rd, storage_pool="xfs")]))
    return device(c, rd, node)


def test_full_and_incremental_backups_restore_on_another_node_and_show_in_any_controller(bcluster):
    c = bcluster
    dev = make_volume(c, "src", 16 * 1024)
    a = os.urandom(5 * MIB)
    write_dev(dev, a)
    # python-linstor asks for an incremental by default: with nothing to
    # base it on, the backup is a full one, and says so.
    replies = ok(c.lin.backup_create("bk", "src"))
    assert any("full one" in r.message for r in replies), [r.message for r in replies]
    [full] = finished(c.lin, "src", 1)
    assert full.id.startswith("src_back_") and full._rest_data["origin_node"] == "n1" and full._rest_data.get("based_on_id") is None
    assert len(full._rest_data["vlms"]) == 1
    meta_key = full._rest_data["s3"]["meta_name"]
    assert meta_key == full.id + ".meta" and meta_key in keys(c.s3)
    # Zero chunks are left out: the volume object holds about the 5 MiB
    # written (random data does not compress), not 16 MiB.
    obj = s3_client(c.s3).head_object(Bucket=c.s3.bucket, Key=full._rest_data["vlms"][0]["s3"]["key"])
    assert 5 * MIB <= obj["ContentLength"] < 6 * MIB, obj["ContentLength"]

    # Change one MiB; the next backup is incremental and uploads about that.
    time.sleep(1.1)  # backup ids have a resolution of one second
    b = os.urandom(MIB)
    write_dev(dev, b, offset=2 * MIB)
    expected = hashlib.sha256(a[:2 * MIB] + b + a[3 * MIB:]).hexdigest()
    ok(c.lin.backup_create("bk", "src", incremental=True))
    bs = finished(c.lin, "src", 2)
    inc = next(x for x in bs if x.id != full.id)
    assert inc._rest_data["based_on_id"] == full.id, inc._rest_data
    obj = s3_client(c.s3).head_object(Bucket=c.s3.bucket, Key=inc._rest_data["vlms"][0]["s3"]["key"])
    assert obj["ContentLength"] < 1.1 * MIB, obj["ContentLength"]

    # Info: the chain and what it needs on n3.
    info = c.lin.backup_info("bk", resource_name="src", target_node="n3")[0]
    assert (info.rsc, info.full, info.latest, info.count) == ("src", full.id, inc.id, 2), info._rest_data
    assert info.alloc_size == 16 * 1024 and 6 * 1024 <= info.dl_size < 8 * 1024, info._rest_data
    [sp] = info.storpools
    assert sp.name == "xfs" and sp.target_name == "xfs" and sp.remaining_space > 0, sp._rest_data

    # Restore the chain into a new definition on n3: the data of the
    # newest backup, byte for byte.
    ok(c.lin.backup_restore("bk", "n3", "dst", resource_name="src"))
    wait_for("restored volume", lambda: digest(device(c, "dst", "n3"), 16 * MIB) ==
             hashlib.sha256(a[:2 * MIB] + b + a[3 * MIB:] + bytes(11 * MIB)).hexdigest())
    assert digest(device(c, "dst", "n3"), 5 * MIB) == expected
    # Restoring the full backup alone gives the older data.
    ok(c.lin.backup_restore("bk", "n3", "old", bak_id=full.id))
    wait_for("older data", lambda: digest(device(c, "old", "n3"), 5 * MIB) == hashlib.sha256(a).hexdigest())

    # A second controller pointed at the same bucket sees both backups.
    d = tempfile.mkdtemp(prefix="cairn-test-")
    other = Controller(d).start()
    try:
        lin2 = other.client()
        remote(lin2, c.s3, "same")
        seen = backups(lin2, "same", resource_name="src")
        assert set(seen) == {full.id, inc.id}, seen
        assert seen[inc.id]._rest_data["based_on_id"] == full.id
        lin2.disconnect()
    finally:
        other.stop()
        shutil.rmtree(d, ignore_errors=True)

    # Delete: the full one has a dependant, so it goes only with cascading.
    err(c.lin.backup_delete("bk", bak_id=full.id), FAIL_IN_USE)
    dry = ok(c.lin.backup_delete("bk", bak_id=full.id, cascade=True, dryrun=True))
    assert len(dry) == 2 and len(backups(c.lin)) == 2
    ok(c.lin.backup_delete("bk", bak_id=full.id, cascade=True))
    assert backups(c.lin) == {} and keys(c.s3) == []
    err(c.lin.backup_delete("bk", bak_id=full.id), FAIL_NOT_FOUND_BACKUP)


def test_a_damaged_chunk_fails_the_restore_and_a_full_pool_is_refused_before_writing(bcluster, ext4_dir):
    c = bcluster
    dev = make_volume(c, "src", 8 * 1024)
    write_dev(dev, os.urandom(3 * MIB))
    ok(c.lin.backup_create("bk", "src", incremental=False))
    [bk] = finished(c.lin, "src", 1)
    key = bk._rest_data["vlms"][0]["s3"]["key"]
    s3 = s3_client(c.s3)
    data = bytearray(s3.get_object(Bucket=c.s3.bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3.put_object(Bucket=c.s3.bucket, Key=key, Body=bytes(data))

    replies = c.lin.backup_restore("bk", "n3", "dst", bak_id=bk.id)
    err(replies, FAIL_UNKNOWN_ERROR)
    causes = " ".join(r.cause or "" for r in replies)
    assert f"the backup object '{key}' is damaged" in causes and "chunk" in causes, causes
    # A target name the definition rules refuse is refused before the
    # download, too.
    replies = c.lin.backup_restore("bk", "n3", "-bad", bak_id=bk.id)
    assert replies and replies[0].is_error() and "-bad" in replies[0].message, replies
    # Nothing was left behind: no definition, no snapshot file.
    assert not [r for r in c.lin.resource_dfn_list_raise().resource_definitions if r.name == "dst"]
    assert [f for f in os.listdir(os.path.join(c.xfs, "n3")) if "dst" in f or "bad" in f] == []

    # A pool without room for what the backup holds is refused before
    # anything is written: 300 MiB of data (compressible: a small upload)
    # restored into a pool on a 256 MiB file system.
    ok(c.lin.storage_pool_create("n3", "small", "FILE_THIN", os.path.join(ext4_dir, "pool")))
    big = make_volume(c, "big", 384 * 1024)
    with open(big, "r+b") as f:
        for i in range(300):
            f.write(bytes([i % 251 + 1]) * MIB)
        f.flush()
        os.fsync(f.fileno())
    ok(c.lin.backup_create("bk", "big", incremental=False))
    finished(c.lin, "big", 1)
    before = keys(c.s3)
    replies = c.lin.backup_restore("bk", "n3", "big2", resource_name="big", stor_pool_map={"xfs": "small"})
    err(replies, FAIL_NOT_ENOUGH_FREE_SPACE)
    assert "no room" in replies[0].message and "KiB free" in (replies[0].cause or ""), replies
    assert [f for f in os.listdir(os.path.join(ext4_dir, "pool")) if "big2" in f] == []
    assert keys(c.s3) == before
    # Unknown backups are clear errors.
    err(c.lin.backup_restore("bk", "n3", "x2", resource_name="nothing"), FAIL_NOT_FOUND_BACKUP)
    # Delete by time and resource: only big's backup was made before the
    # given time and of that resource.
    ok(c.lin.backup_delete("bk", timestamp="99991231_235959", resource_name="big"))
    assert [x.origin_rsc_name for x in backups(c.lin).values()] == ["src"]
    err(c.lin.backup_delete("bk", timestamp="20000101_000000"), FAIL_NOT_FOUND_BACKUP)


def test_a_running_shipment_is_queued_and_can_be_aborted(bcluster):
    c = bcluster
    dev = make_volume(c, "slow", 256 * 1024)
    with open(dev, "r+b") as f:
        for _ in range(256):
            f.write(os.urandom(MIB))
        f.flush()
        os.fsync(f.fileno())
    ok(c.lin.backup_create("bk", "slow", incremental=False))
    # The S3 server is held (SIGSTOP) while the queue is read and the
    # shipment aborted: 256 MiB reach it in about 3 s on a fast machine,
    # and a shipment that ended first cannot be aborted.
    os.kill(c.s3.proc.pid, signal.SIGSTOP)
    try:
        status, _, q = c.ctrl.request("GET", "/v1/view/backup/queue")
        assert status == 200, q
        [entry] = q["snap_queues"]
        assert entry["resource_name"] == "slow" and entry["remote_name"] == "bk" and entry["queue"] == [{"node_name": "n1"}], q
        status, _, q = c.ctrl.request("GET", "/v1/view/backup/queue?snap_to_node=true")
        assert q["node_queues"][0]["node_name"] == "n1" and q["node_queues"][0]["queue"][0]["resource_name"] == "slow", q
        ok(c.lin.backup_abort("bk", "slow", create=True))
    finally:
        os.kill(c.s3.proc.pid, signal.SIGCONT)

    def failed():
        bs = [b for b in backups(c.lin).values() if b.origin_rsc_name == "slow"]
        return bs if bs and not bs[0]._rest_data.get("shipping") else None
    [b] = wait_for("shipment ended", failed, timeout=60)
    assert b._rest_data["success"] is False and "aborted" in b._rest_data.get("fail_messages", ""), b._rest_data
    # No object of it is in the bucket, and the queue is empty again.
    assert keys(c.s3) == [], keys(c.s3)
    status, _, q = c.ctrl.request("GET", "/v1/view/backup/queue")
    assert q["snap_queues"] == [], q


def test_backup_verbs_of_the_cli(bcluster):
    c = bcluster
    env = dict(os.environ, LS_CONTROLLERS=c.ctrl.url)

    def cairn(*args):
        p = subprocess.run([BIN, "--no-utf8", "--no-color", *args], capture_output=True, text=True, env=env, timeout=120)
        return p.returncode, p.stdout, p.stderr

    dev = make_volume(c, "cli", 4 * 1024)
    data = os.urandom(2 * MIB)
    write_dev(dev, data)
    code, out, e = cairn("backup", "create", "bk", "cli", "--full")
    assert code == 0 and "Backup shipping of resource 'cli'" in out, (out, e)
    [b] = finished(c.lin, "cli", 1)
    code, out, e = cairn("backup", "list", "bk", "--resource", "cli")
    assert code == 0 and "| cli " in out and "Success" in out, (out, e)
    code, out, e = cairn("backup", "info", "bk", "--id", b.id, "--target-node", "n3")
    assert code == 0 and b.id in out, (out, e)
    code, out, e = cairn("backup", "restore", "bk", "n3", "cli2", "--id", b.id)
    assert code == 0, (out, e)
    assert digest(device(c, "cli2", "n3"), 2 * MIB) == hashlib.sha256(data).hexdigest()
    code, out, e = cairn("backup", "queue-list")
    assert code == 0, (out, e)
    code, out, e = cairn("backup", "delete", "filter", "bk", "--resource", "cli", "--dry-run")
    assert code == 0 and "would be deleted" in out and len(keys(c.s3)) == 2, (out, e)
    code, out, e = cairn("backup", "delete", "id", "bk", b.id)
    assert code == 0 and keys(c.s3) == [], (out, e)
    code, out, e = cairn("backup", "delete", "id", "bk", b.id)
    assert code != 0, (out, e)


def test_one_percent_changed_of_a_gibibyte_volume_uploads_about_one_percent(bcluster):
    c = bcluster
    gib = 1 << 30
    dev = make_volume(c, "big1", gib // 1024)
    ok(c.lin.backup_create("bk", "big1", incremental=False))
    [full] = finished(c.lin, "big1", 1)
    time.sleep(1.1)
    # 1 % of the volume, in ten pieces of about 1 MiB spread over it.
    with open(dev, "r+b") as f:
        for i in range(10):
            f.seek(i * (gib // 10) + 12345)
            f.write(os.urandom(gib // 1000))
        f.flush()
        os.fsync(f.fileno())
    ok(c.lin.backup_create("bk", "big1"))
    inc = next(b for b in finished(c.lin, "big1", 2) if b.id != full.id)
    assert inc._rest_data["based_on_id"] == full.id
    size = s3_client(c.s3).head_object(Bucket=c.s3.bucket, Key=inc._rest_data["vlms"][0]["s3"]["key"])["ContentLength"]
    # The changed ranges straddle at most two 1 MiB chunks each.
    assert size <= 0.05 * gib and size <= 21 * MIB, size
    ok(c.lin.backup_restore("bk", "n3", "big1r", resource_name="big1"))
    assert digest(device(c, "big1r", "n3"), gib) == digest(dev, gib)


class CuttingProxy:
    """A TCP proxy in front of the S3 server that counts the bytes going to
    it and, once `cut_after` bytes went through, drops every connection
    and refuses new ones for `outage` seconds: the endpoint dies in the
    middle of an upload and comes back."""

    def __init__(self, target, cut_after, outage):
        import socket
        import threading
        self.target, self.cut_after, self.outage = target, cut_after, outage
        self.sock = socket.socket()
        self.sock.bind(("127.0.31.20", 0))
        self.sock.listen(64)
        self.ip, self.port = self.sock.getsockname()
        self.lock = threading.Lock()
        self.up = 0  # bytes sent on to the server
        self.down_until = None
        self.cut_at = None
        self.conns = []
        threading.Thread(target=self.accept, daemon=True).start()

    @property
    def endpoint(self):
        return f"http://{self.ip}:{self.port}"

    def is_down(self):
        with self.lock:
            return self.down_until is not None and time.monotonic() < self.down_until

    def accept(self):
        import socket
        import threading
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.is_down():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self.pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, client, False), daemon=True).start()

    def pump(self, src, dst, to_server):
        import socket
        try:
            while True:
                data = src.recv(65536)
                if not data or self.is_down():
                    break
                dst.sendall(data)
                if to_server:
                    with self.lock:
                        self.up += len(data)
                        if self.cut_at is None and self.up >= self.cut_after:
                            self.cut_at = self.up
                            self.down_until = time.monotonic() + self.outage
                            conns, self.conns = self.conns, []
                        else:
                            conns = []
                    for s in conns:
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def stop(self):
        self.sock.close()


def cut_remote(c, cut_after, outage):
    """An S3 remote `px` reaching the test server through a CuttingProxy."""
    host, port = c.s3.endpoint.removeprefix("http://").split(":")
    proxy = CuttingProxy((host, int(port)), cut_after=cut_after, outage=outage)
    ok(c.lin.remote_create_s3(remote_name="px", endpoint=proxy.endpoint, region=c.s3.region, bucket=c.s3.bucket,
                              access_key=c.s3.access_key, secret_key=c.s3.secret_key, use_path_style=True))
    return proxy


def test_an_upload_goes_on_after_the_endpoint_was_down_and_sends_again_only_what_was_not_stored(bcluster):
    c = bcluster
    proxy = cut_remote(c, 40 * MIB, 12)
    try:
        size = 96 * MIB
        dev = make_volume(c, "rsm", size // 1024)
        data = os.urandom(size)
        write_dev(dev, data)
        ok(c.lin.backup_create("px", "rsm", incremental=False))
        # The server is cut off after 40 MiB for 12 s: longer than the S3
        # client's own quick retries, so the parts in flight fail and are
        # tried again; the upload goes on with the parts not yet stored.
        wait_for("the endpoint cut off", lambda: proxy.cut_at is not None, timeout=120)
        # Lists read the bucket (through the proxy too): ask once it is back.
        wait_for("the endpoint back", lambda: not proxy.is_down(), timeout=60)
        [bk] = finished(c.lin, "rsm", 1)
        sent = proxy.up
        assert "not stored" in c.sats["n1"].log(), "no part was tried again: the cut came too late"
        obj = s3_client(c.s3).head_object(Bucket=c.s3.bucket, Key=bk._rest_data["vlms"][0]["s3"]["key"])
        stored = obj["ContentLength"]
        # Starting over would send the 40 MiB before the cut again; going on
        # sends again at most the four 8 MiB parts that were in flight (plus
        # HTTP headers and the bucket listings).
        assert stored <= sent < stored + 5 * 8 * MIB, (sent, stored)
        ok(c.lin.backup_restore("px", "n3", "rsm2", resource_name="rsm"))
        assert digest(device(c, "rsm2", "n3"), size) == hashlib.sha256(data).hexdigest()
    finally:
        proxy.stop()


def test_an_abort_during_an_outage_ends_the_upload_at_once(bcluster):
    """Parts being tried again through an outage look at the abort flag:
    the shipment ends within seconds, not when the outage (or the five
    minutes a part is tried) is over."""
    c = bcluster
    proxy = cut_remote(c, 24 * MIB, 40)
    try:
        dev = make_volume(c, "cut", 96 * 1024)
        write_dev(dev, os.urandom(96 * MIB))
        ok(c.lin.backup_create("px", "cut", incremental=False))
        wait_for("the endpoint cut off", lambda: proxy.cut_at is not None, timeout=120)
        wait_for("a part tried again", lambda: "not stored" in c.sats["n1"].log(), timeout=30)
        ok(c.lin.backup_abort("px", "cut", create=True))
        started = time.monotonic()

        def queue_empty():
            status, _, q = c.ctrl.request("GET", "/v1/view/backup/queue")
            assert status == 200, q
            return not q["snap_queues"]
        wait_for("the aborted upload to end", queue_empty, timeout=40)
        assert time.monotonic() - started < 10 and proxy.is_down(), (time.monotonic() - started, proxy.is_down())
        # Once S3 is back, the list (read through the proxy) shows it aborted.
        wait_for("the endpoint back", lambda: not proxy.is_down(), timeout=60)
        [b] = [b for b in backups(c.lin, "px").values() if b.origin_rsc_name == "cut"]
        assert b._rest_data["success"] is False and "aborted" in b._rest_data.get("fail_messages", ""), b._rest_data
    finally:
        proxy.stop()


OLD_BACKUP = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "cairn-satellite", "testdata", "backup-sha256")


def old_chunk(i):
    """A chunk of the captured SHA-256 backup: 4 KiB of seeded random bytes
    repeated to 1 MiB (testdata/backup-sha256/README.md)."""
    return random.Random(i).randbytes(4096) * 256


def upload_old_backup(c):
    """Puts the captured backup (written by Cairn before BLAKE3: SHA-256
    frames and chunk map) into the bucket; its .meta key and volume key."""
    s3 = s3_client(c.s3)
    names = sorted(os.listdir(OLD_BACKUP))
    [meta] = [n for n in names if n.endswith(".meta")]
    [vol] = [n for n in names if n.startswith("oldfmt_00000_")]
    for n in (vol, meta):
        with open(os.path.join(OLD_BACKUP, n), "rb") as f:
            s3.put_object(Bucket=c.s3.bucket, Key=n, Body=f.read())
    return meta, vol


def meta_of(c, key):
    return json.loads(s3_client(c.s3).get_object(Bucket=c.s3.bucket, Key=key)["Body"].read())


def test_new_backups_use_blake3_and_a_sha256_chain_written_before_restores_and_grows_with_sha256(bcluster):
    c = bcluster
    meta_key, vol_key = upload_old_backup(c)
    old = meta_of(c, meta_key)
    assert old["cairn"]["checksum"] == "sha256"
    old_data = old_chunk(0) + bytes(MIB) + old_chunk(2)
    # The old backup restores on n3, byte for byte.
    ok(c.lin.backup_restore("bk", "n3", "oldback", bak_id=meta_key[:-len(".meta")]))
    assert digest(device(c, "oldback", "n3"), 3 * MIB) == hashlib.sha256(old_data).hexdigest()

    # An incremental on top of it (its snapshot exists on n1, as the
    # source's would): it keeps SHA-256, says so, and carries only the
    # changed chunk, the others matching the old chunk map.
    snap = old["cairn"]["volumes"]["0"]["key"].split("_00000_", 1)[1]
    dev = make_volume(c, "oldfmt", 3 * 1024)
    write_dev(dev, old_data)
    ok(c.lin.snapshot_create(["n1"], "oldfmt", snap))
    time.sleep(1.1)
    new = os.urandom(MIB)
    write_dev(dev, new, offset=2 * MIB)
    replies = ok(c.lin.backup_create("bk", "oldfmt", incremental=True))
    assert any("chunk checksums are sha256: it uses sha256 too" in r.message for r in replies), [r.message for r in replies]
    bs = finished(c.lin, "oldfmt", 2)
    inc = next(b for b in bs if b.id != meta_key[:-len(".meta")])
    assert inc._rest_data["based_on_id"] == meta_key[:-len(".meta")], inc._rest_data
    inc_meta = meta_of(c, inc._rest_data["s3"]["meta_name"])
    assert inc_meta["cairn"]["checksum"] == "sha256"
    assert inc_meta["cairn"]["volumes"]["0"]["chunkMap"][0] == old["cairn"]["volumes"]["0"]["chunkMap"][0]
    assert inc_meta["cairn"]["volumes"]["0"]["chunksStored"] == 1, inc_meta
    inc_obj = s3_client(c.s3).get_object(Bucket=c.s3.bucket, Key=inc._rest_data["vlms"][0]["s3"]["key"])["Body"].read()
    assert inc_obj[24:28] == b"CHNK", inc_obj[:28]
    ok(c.lin.backup_restore("bk", "n3", "incback", bak_id=inc.id))
    assert digest(device(c, "incback", "n3"), 3 * MIB) == hashlib.sha256(old_data[:2 * MIB] + new).hexdigest()

    # A full backup starts a BLAKE3 chain: its .meta says so, its frames
    # are tagged so, and it restores.
    time.sleep(1.1)
    ok(c.lin.backup_create("bk", "oldfmt", incremental=False))
    bs = finished(c.lin, "oldfmt", 3)
    full = next(b for b in bs if b.id not in (inc.id, meta_key[:-len(".meta")]))
    full_meta = meta_of(c, full._rest_data["s3"]["meta_name"])
    assert full_meta["cairn"]["checksum"] == "blake3" and full_meta.get("basedOn") is None, full_meta
    assert len(full_meta["cairn"]["volumes"]["0"]["chunkMap"][0]) == 64
    full_key = full._rest_data["vlms"][0]["s3"]["key"]
    full_obj = s3_client(c.s3).get_object(Bucket=c.s3.bucket, Key=full_key)["Body"].read()
    assert full_obj[24:28] == b"CHB3", full_obj[:28]
    ok(c.lin.backup_restore("bk", "n3", "b3back", bak_id=full.id))
    assert digest(device(c, "b3back", "n3"), 3 * MIB) == hashlib.sha256(old_data[:2 * MIB] + new).hexdigest()

    # A damaged object fails the restore with the algorithm named, both
    # the old SHA-256 one and the new BLAKE3 one (a byte of the first
    # frame's checksum flipped: the data still decompresses).
    s3 = s3_client(c.s3)
    for key, obj, algo in ((vol_key, None, "sha256"), (full_key, full_obj, "blake3")):
        if obj is None:
            obj = s3.get_object(Bucket=c.s3.bucket, Key=key)["Body"].read()
        bad = bytearray(obj)
        bad[24 + 20] ^= 0x01
        s3.put_object(Bucket=c.s3.bucket, Key=key, Body=bytes(bad))
    for bak_id, key, algo, target in ((meta_key[:-len(".meta")], vol_key, "sha256", "bad1"), (full.id, full_key, "blake3", "bad2")):
        replies = c.lin.backup_restore("bk", "n3", target, bak_id=bak_id)
        err(replies, FAIL_UNKNOWN_ERROR)
        causes = " ".join(r.cause or "" for r in replies)
        assert f"the backup object '{key}' is damaged: chunk 0 fails its {algo} checksum" in causes, causes
        assert not [r for r in c.lin.resource_dfn_list_raise().resource_definitions if r.name == target]


class HoldingProxy:
    """A TCP proxy in front of the S3 server that holds back every request
    whose bytes contain `marker` (the key of one object) until `release` is
    set, telling `hit` when one arrived: a download stops, deterministically,
    at the object the test picks."""

    def __init__(self, target, marker):
        import socket
        import threading
        self.target, self.marker = target, marker.encode()
        self.hit, self.release = threading.Event(), threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.31.21", 0))
        self.sock.listen(64)
        self.ip, self.port = self.sock.getsockname()
        threading.Thread(target=self.accept, daemon=True).start()

    @property
    def endpoint(self):
        return f"http://{self.ip}:{self.port}"

    def accept(self):
        import socket
        import threading
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self.pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, client, False), daemon=True).start()

    def pump(self, src, dst, to_server):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if to_server and self.marker in data:
                    self.hit.set()
                    self.release.wait(120)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def stop(self):
        self.release.set()
        self.sock.close()


def leftovers(c, node, rd):
    """What the pool `xfs` of `node` holds of definition `rd` (its
    volumes, snapshots, and files being written or waiting)."""
    return sorted(f for f in os.listdir(os.path.join(c.xfs, node)) if f.lstrip(".").startswith(rd + "_"))


def two_volumes(c, rd):
    """A definition of two 4 MiB volumes of random data on n1, backed up in
    full to `bk`; answers the backup."""
    ok(c.lin.resource_dfn_create(rd))
    for _ in range(2):
        ok(c.lin.volume_dfn_create(rd, 4 * 1024, storage_pool="xfs"))
    ok(c.lin.resource_create([linstor.ResourceData("n1", rd, storage_pool="xfs")]))
    status, _, v = c.ctrl.request("GET", f"/v1/view/resources?resources={rd}&nodes=n1")
    assert status == 200 and len(v[0]["volumes"]) == 2, v
    for vol in v[0]["volumes"]:
        write_dev(vol["device_path"], os.urandom(3 * MIB))
    ok(c.lin.backup_create("bk", rd, incremental=False))
    [bk] = finished(c.lin, rd, 1)
    assert len(bk._rest_data["vlms"]) == 2, bk._rest_data
    return bk


def restore_in_background(c, remote, target, bak_id):
    """Starts a restore of `bak_id` into `target` on n3 through the REST API
    (the call blocks until the restore ended); answers the thread and a
    dict that gets its (status, body)."""
    import threading
    out = {}

    def run():
        out["reply"] = c.ctrl.request("POST", f"/v1/remotes/{remote}/backups/restore",
                                      {"last_backup": bak_id, "node_name": "n3", "target_rsc_name": target}, timeout=300)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_a_restore_that_fails_after_its_first_volume_leaves_nothing_behind(bcluster):
    """A restore of two volumes whose registration fails after both were
    downloaded, one whose satellite is killed while it downloads the second
    volume, and one whose second volume's object is damaged: each fails
    with a clear error, and nothing of it stays on the node (neither the
    first volume's snapshot nor the second one's half-written file)."""
    c = bcluster
    bk = two_volumes(c, "two")
    vol1 = next(v["s3"]["key"] for v in bk._rest_data["vlms"] if v["vlm_nr"] == 1)
    host, port = c.s3.endpoint.removeprefix("http://").split(":")

    # The registration fails: the target definition appeared while the
    # second volume was held back (the restore checked the name before it
    # started downloading).
    proxy = HoldingProxy((host, int(port)), vol1)
    try:
        ok(c.lin.remote_create_s3(remote_name="px", endpoint=proxy.endpoint, region=c.s3.region, bucket=c.s3.bucket,
                                  access_key=c.s3.access_key, secret_key=c.s3.secret_key, use_path_style=True))
        t, out = restore_in_background(c, "px", "dst", bk.id)
        assert proxy.hit.wait(60), "the second volume's download never started"
        # The first volume is downloaded, the second one's place is made.
        writing = [f".dst_{nr:05}@{bk._rest_data['origin_snap']}.snap.receiving" for nr in (0, 1)]
        assert leftovers(c, "n3", "dst") == writing
        ok(c.lin.resource_dfn_create("dst"))
        proxy.release.set()
        t.join(120)
        status, _, body = out["reply"]
        assert status >= 400, body
        [e] = [x for x in body if x["ret_code"] < 0]
        assert "dst" in e["message"] and "downloaded" in e.get("details", "") and "was removed" in e["details"], e
        assert leftovers(c, "n3", "dst") == []
        assert c.lin.snapshot_dfn_list_raise(filter_by_resources=["dst"]).snapshots == []
        ok(c.lin.resource_dfn_delete("dst"))

        # The satellite is killed while the second volume is held back: the
        # controller reports the node's failure, and the restarted
        # satellite removed what the download had written before it serves.
        proxy.hit.clear()
        proxy.release.clear()
        t, out = restore_in_background(c, "px", "dst", bk.id)
        assert proxy.hit.wait(60), "the second volume's download never started"
        assert leftovers(c, "n3", "dst") == writing
        sat = c.sats["n3"]
        sat.proc.kill()
        sat.proc.wait(30)
        t.join(120)
        status, _, body = out["reply"]
        assert status >= 400, body
        [e] = [x for x in body if x["ret_code"] < 0]
        assert e["ret_code"] & 0x7FFF == 995 and "could not receive the backup" in e["message"], e
        proxy.release.set()
        sat.start()
        assert leftovers(c, "n3", "dst") == []
        assert "cut off when the satellite stopped" in sat.log()
        wait_for("n3 online", lambda: all(n.connection_status == "ONLINE" for n in c.lin.node_list_raise().nodes))
    finally:
        proxy.stop()
    assert not [r for r in c.lin.resource_dfn_list_raise().resource_definitions if r.name == "dst"]

    # The second volume's object is damaged: the first volume, already
    # downloaded, goes with the failed second one.
    s3 = s3_client(c.s3)
    data = bytearray(s3.get_object(Bucket=c.s3.bucket, Key=vol1)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3.put_object(Bucket=c.s3.bucket, Key=vol1, Body=bytes(data))
    replies = c.lin.backup_restore("bk", "n3", "dst", bak_id=bk.id)
    err(replies, FAIL_UNKNOWN_ERROR)
    causes = " ".join(r.cause or "" for r in replies)
    assert f"the backup object '{vol1}' is damaged" in causes, causes
    assert leftovers(c, "n3", "dst") == []
    assert not [r for r in c.lin.resource_dfn_list_raise().resource_definitions if r.name == "dst"]
    assert c.lin.snapshot_dfn_list_raise(filter_by_resources=["dst"]).snapshots == []


def test_a_second_restore_into_the_same_target_is_refused_while_the_first_runs(bcluster):
    """Two restores of one backup into the same new definition on the same
    node (a client's retry): the second is refused at once with a clear
    error, and the first completes with the data intact (sha256)."""
    c = bcluster
    bk = two_volumes(c, "twin")
    status, _, v = c.ctrl.request("GET", "/v1/view/resources?resources=twin&nodes=n1")
    assert status == 200, v
    want = {vol["volume_number"]: digest(vol["device_path"], 4 * MIB) for vol in v[0]["volumes"]}
    vol1 = next(x["s3"]["key"] for x in bk._rest_data["vlms"] if x["vlm_nr"] == 1)
    host, port = c.s3.endpoint.removeprefix("http://").split(":")
    proxy = HoldingProxy((host, int(port)), vol1)
    try:
        ok(c.lin.remote_create_s3(remote_name="hx", endpoint=proxy.endpoint, region=c.s3.region, bucket=c.s3.bucket,
                                  access_key=c.s3.access_key, secret_key=c.s3.secret_key, use_path_style=True))
        t, out = restore_in_background(c, "hx", "twin2", bk.id)
        assert proxy.hit.wait(60), "the second volume's download never started"
        # The retry, while the first still downloads.
        replies = c.lin.backup_restore("hx", "n3", "twin2", bak_id=bk.id)
        err(replies, 501)
        [e] = [r for r in replies if r.is_error()]
        assert "restore into resource definition 'twin2' is in progress" in e.message, e
        proxy.release.set()
        t.join(120)
        status, _, body = out["reply"]
        assert status < 400, body
    finally:
        proxy.stop()
    status, _, v = c.ctrl.request("GET", "/v1/view/resources?resources=twin2&nodes=n3")
    assert status == 200 and v, v
    wait_for("restored volumes", lambda: all(digest(vol["device_path"], 4 * MIB) == want[vol["volume_number"]]
                                             for vol in v[0]["volumes"]) and len(v[0]["volumes"]) == 2 or None)
    # Once it ended, a restore into it is refused as into any definition
    # that exists.
    err(c.lin.backup_restore("bk", "n3", "twin2", bak_id=bk.id), 501)
