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


def test_a_broken_pool_fails_only_what_is_placed_in_it(cluster):
    """A FILE_THIN pool whose directory is a regular file: resources in it
    fail with the reason, the pool shows it, and creates and deletes in
    the node's other pool go on answering 201/200."""
    c = cluster
    plain = os.path.join(c.root, "n1", "not-a-directory")
    with open(plain, "w") as f:
        f.write("x")
    ok(c.lin.storage_pool_create("n1", "broken", "FILE_THIN", plain))
    pool = wait_for("the pool's error", lambda: next((p for p in c.lin.storage_pool_list_raise(filter_by_nodes=["n1"]).storage_pools
                                                      if p.name == "broken" and p.reports), None))
    assert any("broken" in r.message or "capacity" in r.message.lower() for r in pool.reports), [r.message for r in pool.reports]
    for rd in ("inbroken", "ingood"):
        ok(c.lin.resource_dfn_create(rd))
        ok(c.lin.volume_dfn_create(rd, 4096))
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/inbroken/resources",
                                     [{"resource": {"node_name": "n1", "props": {"StorPoolName": "broken"}}}])
    assert status == 500 and any(r["ret_code"] < 0 for r in body), body
    for _ in range(2):  # create and delete in the good pool, twice
        status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/ingood/resources", [{"resource": {"node_name": "n1"}}])
        assert status == 201, body
        status, _, body = c.ctrl.request("DELETE", "/v1/resource-definitions/ingood/resources/n1")
        assert status == 200, body
    ok(c.lin.resource_dfn_delete("inbroken"))
    ok(c.lin.resource_dfn_delete("ingood"))
    ok(c.lin.storage_pool_delete("n1", "broken"))
    os.unlink(plain)
