"""Pools tell the truth: allocated sizes follow what is written into thin
volumes, and volume files and pool directories are root's alone."""

import os
import stat
import subprocess

import linstor

from conftest import ok, wait_for


def volume(c, rd):
    """The volume as python-linstor's volume list shows it."""
    return c.lin.volume_list(filter_by_resources=[rd])[0].resources[0].volumes[0]


def test_allocated_size_follows_what_is_written(cluster):
    c = cluster
    ok(c.lin.resource_dfn_create("alloc"))
    ok(c.lin.volume_dfn_create("alloc", 64 * 1024))
    ok(c.lin.resource_create([linstor.ResourceData("n1", "alloc")]))  # FILE_THIN
    v = volume(c, "alloc")
    before, dev = v.allocated_size, v.device_path
    assert before < 1024 and dev.startswith("/dev/loop"), (before, dev)
    subprocess.run(["dd", "if=/dev/urandom", f"of={dev}", "bs=1M", "count=16", "oflag=direct", "conv=fsync", "status=none"],
                   check=True)
    # Seen by the periodic observation (every 2 s), no request needed.
    grown = wait_for("allocated size to grow", lambda: (lambda a: a if a >= before + 16 * 1024 else None)(volume(c, "alloc").allocated_size),
                     timeout=10)
    assert grown <= 64 * 1024 + 64, grown
    ok(c.lin.resource_dfn_delete("alloc"))


def test_volume_files_and_pool_directories_are_private(cluster):
    c = cluster
    ok(c.lin.resource_dfn_create("priv"))
    ok(c.lin.volume_dfn_create("priv", 4096))
    for n in ("n1", "n2"):  # FILE_THIN and FILE
        ok(c.lin.resource_create([linstor.ResourceData(n, "priv")]))
        pool_dir = os.path.join(c.root, n, "pool")  # made by the satellite
        files = [f for f in os.listdir(pool_dir) if f.startswith("priv_")]
        assert len(files) == 1, files
        assert stat.S_IMODE(os.stat(os.path.join(pool_dir, files[0])).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(pool_dir).st_mode) == 0o700
    ok(c.lin.resource_dfn_delete("priv"))
