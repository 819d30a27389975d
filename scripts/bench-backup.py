#!/usr/bin/env python3
"""Backup throughput against the S3 test server, beside a plain S3 client.

    sudo CAIRN_BIN=target/release/cairn .venv/bin/python scripts/bench-backup.py [--mib 1024]

Starts moto's S3 server (tests/s3server.py, signatures checked), a
controller and two satellites (n1, n3) with FILE_THIN pools on one
reflink-capable XFS file system, and an S3 remote. Then, for a volume of
`--mib` MiB filled with random bytes (they do not compress: the worst case
for zstd):

1. the same bytes uploaded and downloaded with boto3 (`upload_file` /
   `download_file`: multipart, its default 8 MiB parts and 10 threads;
   and one `get_object` read as a stream), the plain S3 client the issue
   compares with;
2. a full backup (create until the bucket lists it as complete) and its
   restore on n3 (the request returns once the data is in place), with the
   data checked by sha256;
3. 1 % of the volume changed (ten 1 % / 10 writes at random, unaligned
   offsets), an incremental backup: its time and the bytes it put in the
   bucket.

Prints a Markdown table for docs/BENCHMARKS.md. Needs root (loop devices,
mount), mkfs.xfs and the venv of scripts/test.sh (moto, boto3,
python-linstor). A measurement, not a test: it fails only when something
does not work.
"""

import argparse
import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))

import boto3  # noqa: E402
import linstor  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402

from conftest import S3Server, mounted_fs, ok, run_cluster, wait_for  # noqa: E402

MIB = 1 << 20


def s3_client(s3):
    return boto3.client("s3", endpoint_url=s3.endpoint, region_name=s3.region, aws_access_key_id=s3.access_key,
                        aws_secret_access_key=s3.secret_key)


def bucket_bytes(s3):
    total = 0
    for page in s3_client(s3).get_paginator("list_objects_v2").paginate(Bucket=s3.bucket):
        total += sum(o["Size"] for o in page.get("Contents", []))
    return total


def device(c, rd, node):
    status, _, v = c.ctrl.request("GET", f"/v1/view/resources?resources={rd}&nodes={node}")
    assert status == 200 and v, v
    return v[0]["volumes"][0]["device_path"]


def sha256_of(path, n):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = n
        while left:
            b = f.read(min(left, 16 * MIB))
            if not b:
                break
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def complete(lin, rsc, n):
    def done():
        reply = lin.backup_list("bk")
        bs = [b for b in reply[0].linstor if b.origin_rsc_name == rsc]
        failed = [b for b in bs if not b._rest_data.get("success") and not b._rest_data.get("shipping")]
        assert not failed, [b._rest_data for b in failed]
        return bs if len(bs) == n and all(b._rest_data.get("success") for b in bs) else None
    return wait_for(f"{n} backups of {rsc}", done, timeout=3600)


def settle():
    """Writes back what earlier phases left dirty (the bench's files, moto's
    spooled objects in /tmp: the same disk) before a timed phase, so no
    phase pays for the writeback of another's data."""
    os.sync()
    time.sleep(1)


@contextlib.contextmanager
def perf(prefix, phase):
    """`perf record -a` while the block runs (no-op without a prefix)."""
    if not prefix:
        yield
        return
    p = subprocess.Popen(["perf", "record", "-q", "-a", "-F", "499", "-o", f"{prefix}.{phase}.data"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="volume size in MiB (default 1024)")
    ap.add_argument("--perf", metavar="PREFIX",
                    help="record each phase system-wide with `perf record` into PREFIX.<phase>.data")
    ap.add_argument("--no-ranged", action="store_true",
                    help="skip boto3's download_file (ranged GETs: moto serves them slowly, about 90 s for 1 GiB)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (loop devices, an XFS mount)")
    size = a.mib * MIB
    rows = []
    s3 = S3Server()
    # Source volume, its restore, boto3's copy and its download, with room
    # to spare: the pools' free figures a restore is checked against are
    # measured every few seconds, and one taken while boto3's two files
    # were there must still leave room for the restore.
    fs = mounted_fs(["mkfs.xfs", "-q", "-m", "reflink=1"], size=f"{6 * a.mib + 1024}M")
    xfs = next(fs)
    cl = run_cluster("cairn-bkbench-", {"n1": "FILE_THIN", "n3": "FILE_THIN"}, default_stack="STORAGE")
    c = next(cl)
    try:
        lin = c.lin
        for n in ("n1", "n3"):
            ok(lin.storage_pool_create(n, "xfs", "FILE_THIN", os.path.join(xfs, n)))
        ok(lin.crypt_create_passphrase("bench-pw"))
        ok(lin.remote_create_s3(remote_name="bk", endpoint=s3.endpoint, region=s3.region, bucket=s3.bucket,
                                access_key=s3.access_key, secret_key=s3.secret_key, use_path_style=True))
        ok(lin.resource_dfn_create("src"))
        ok(lin.volume_dfn_create("src", a.mib * 1024, storage_pool="xfs"))
        ok(lin.resource_create([linstor.ResourceData("n1", "src", storage_pool="xfs")]))
        dev = device(c, "src", "n1")
        plain = os.path.join(xfs, "plain.bin")
        with open(dev, "r+b") as d, open(plain, "wb") as p:
            for _ in range(a.mib // 64):
                chunk = os.urandom(64 * MIB)
                d.write(chunk)
                p.write(chunk)
            d.flush()
            os.fsync(d.fileno())
        want = sha256_of(dev, size)

        # 1. The plain client.
        cfg = TransferConfig()
        cli = s3_client(s3)
        settle()
        with perf(a.perf, "boto3-upload"):
            t = time.monotonic()
            cli.upload_file(plain, s3.bucket, "plain/volume", Config=cfg)
            up = time.monotonic() - t
        back = os.path.join(xfs, "plain.down")
        down = None
        if not a.no_ranged:
            t = time.monotonic()
            cli.download_file(s3.bucket, "plain/volume", back, Config=cfg)
            down = time.monotonic() - t
            assert sha256_of(back, size) == want
        # One GET read as a stream, as Cairn's restore reads an object.
        settle()
        with perf(a.perf, "boto3-get"), open(back, "wb") as f:
            t = time.monotonic()
            for piece in cli.get_object(Bucket=s3.bucket, Key="plain/volume")["Body"].iter_chunks(MIB):
                f.write(piece)
            f.flush()
            down1 = time.monotonic() - t
            # Cairn's restore syncs the file before it says the data is in
            # place: the same GET made durable.
            os.fsync(f.fileno())
        down1_sync = time.monotonic() - t
        assert sha256_of(back, size) == want
        cli.delete_object(Bucket=s3.bucket, Key="plain/volume")
        os.unlink(back)
        os.unlink(plain)
        base = bucket_bytes(s3)

        # 2. A full backup and its restore.
        settle()
        with perf(a.perf, "backup"):
            t = time.monotonic()
            ok(lin.backup_create("bk", "src", incremental=False))
            complete(lin, "src", 1)
            full_s = time.monotonic() - t
        full_bytes = bucket_bytes(s3) - base
        settle()
        with perf(a.perf, "restore"):
            t = time.monotonic()
            ok(lin.backup_restore("bk", "n3", "dst", resource_name="src"))
            restore_req = time.monotonic() - t
            wait_for("the restored volume", lambda: device(c, "dst", "n3"), timeout=600)
            restore_s = time.monotonic() - t
        assert sha256_of(device(c, "dst", "n3"), size) == want, "the restore differs"
        # The same GET as in 1., of the object the backup wrote: how fast the
        # server hands out that object (moto serves objects differently by
        # how their upload was checksummed).
        data_keys = [o["Key"] for o in cli.list_objects_v2(Bucket=s3.bucket)["Contents"] if not o["Key"].endswith(".meta")]
        settle()
        with open(os.path.join(xfs, "cairn.down"), "wb") as f:
            t = time.monotonic()
            for piece in cli.get_object(Bucket=s3.bucket, Key=data_keys[0])["Body"].iter_chunks(MIB):
                f.write(piece)
            f.flush()
            down_cairn = time.monotonic() - t
        os.unlink(os.path.join(xfs, "cairn.down"))

        # 3. 1 % changed, an incremental backup.
        time.sleep(1.1)  # backup ids have a resolution of one second
        rng = random.Random(7)
        piece = size // 100 // 10
        with open(dev, "r+b") as d:
            for _ in range(10):
                d.seek(rng.randrange(0, size - piece))
                d.write(os.urandom(piece))
            d.flush()
            os.fsync(d.fileno())
        before = bucket_bytes(s3)
        settle()
        t = time.monotonic()
        ok(lin.backup_create("bk", "src", incremental=True))
        complete(lin, "src", 2)
        inc_s = time.monotonic() - t
        inc_bytes = bucket_bytes(s3) - before

        mib = lambda b: b / MIB
        rate = lambda secs: size / MIB / secs
        rows.append(("volume", f"{a.mib} MiB of random bytes (incompressible)"))
        rows.append(("boto3 upload_file (multipart, 8 MiB parts, 10 threads)", f"{up:.1f} s, {rate(up):.0f} MiB/s"))
        if down is not None:
            rows.append(("boto3 download_file (ranged GETs, 10 threads)", f"{down:.1f} s, {rate(down):.0f} MiB/s"))
        rows.append(("boto3 get_object, one GET read as a stream", f"{down1:.1f} s, {rate(down1):.0f} MiB/s"))
        rows.append(("the same GET, then fsync", f"{down1_sync:.1f} s, {rate(down1_sync):.0f} MiB/s"))
        rows.append(("Cairn full backup (create until listed complete)",
                     f"{full_s:.1f} s, {rate(full_s):.0f} MiB/s; {mib(full_bytes):.1f} MiB in the bucket; {up / full_s:.2f}x boto3's rate"))
        rows.append(("Cairn restore on another node (request until the data is in place)",
                     f"{restore_s:.1f} s, {rate(restore_s):.0f} MiB/s; {down1 / restore_s:.2f}x the GET's rate, "
                     f"{down1_sync / restore_s:.2f}x with fsync; sha256 equal"))
        rows.append(("boto3 get_object of the backup's object, as in the GET above",
                     f"{down_cairn:.1f} s, {rate(down_cairn):.0f} MiB/s; the restore: {down_cairn / restore_s:.2f}x its rate"))
        rows.append(("of which the restore request (data downloaded, checked, synced)",
                     f"{restore_req:.1f} s, {rate(restore_req):.0f} MiB/s; {down1 / restore_req:.2f}x the GET's rate, "
                     f"{down1_sync / restore_req:.2f}x with fsync"))
        rows.append(("incremental after 1 % changed (10 writes at random offsets)",
                     f"{inc_s:.1f} s; {mib(inc_bytes):.1f} MiB in the bucket = {100 * inc_bytes / size:.1f} % of the volume"))
        print("| measurement | result |")
        print("| --- | --- |")
        for k, v in rows:
            print(f"| {k} | {v} |")
    finally:
        next(cl, None)
        next(fs, None)
        s3.stop()


if __name__ == "__main__":
    tempfile.tempdir = tempfile.gettempdir()
    main()
