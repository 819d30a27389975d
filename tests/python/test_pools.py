"""Pools tell the truth: allocated sizes follow what is written into thin
volumes, and volume files and pool directories are root's alone."""

import os
import stat
import subprocess

import linstor

from conftest import SatelliteProc, ok, wait_for


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
    # Seen by the periodic observation, no request needed: the satellite
    # measures its pools every 10 s while nothing is applied.
    grown = wait_for("allocated size to grow", lambda: (lambda a: a if a >= before + 16 * 1024 else None)(volume(c, "alloc").allocated_size),
                     timeout=25)
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


def pool_reports(c, node, name):
    return wait_for(f"the error of pool {name}", lambda: next(
        (p.reports for p in c.lin.storage_pool_list_raise(filter_by_nodes=[node]).storage_pools if p.name == name and p.reports), None))


def test_pool_directories_only_where_the_satellite_allows(cluster):
    """A root satellite refuses FILE pools in system directories (also through
    a symlink) and outside its data directory and
    --allow-pool-dirs; the pool shows why, and nothing is made there."""
    c = cluster
    link = os.path.join(c.root, "n1", "to-usr")
    os.symlink("/usr", link)
    cases = {
        "root": ("/", "root directory"),
        "proc": ("/proc/cairn-pool", "system directory /proc"),
        "etc": ("/etc/cairn-pool", "system directory /etc"),  # `..` is refused by the controller already
        "linked": (os.path.join(link, "cairn-pool"), "system directory /usr"),
        "outside": ("/var/lib/cairn-test-outside/pool", "outside the directories this satellite allows"),
    }
    for name, (path, _) in cases.items():
        ok(c.lin.storage_pool_create("n1", name, "FILE_THIN", path))
    for name, (path, why) in cases.items():
        reports = pool_reports(c, "n1", name)
        assert any(why in r.message for r in reports), (name, [r.message for r in reports])
    # A directory that is not there is said to be missing.
    causes = [r.cause for r in pool_reports(c, "n1", "outside")]
    assert any("does not exist" in (cause or "") for cause in causes), causes
    assert any("resolves to /usr/cairn-pool" in (r.cause or "") for r in pool_reports(c, "n1", "linked"))
    ok(c.lin.resource_dfn_create("nowhere"))
    ok(c.lin.volume_dfn_create("nowhere", 4096))
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/nowhere/resources",
                                     [{"resource": {"node_name": "n1", "props": {"StorPoolName": "etc"}}}])
    assert status == 500 and any("system directory /etc" in r["message"] for r in body if r["ret_code"] < 0), body
    for path in ("/etc/cairn-pool", "/usr/cairn-pool", "/var/lib/cairn-test-outside"):
        assert not os.path.exists(path), path


def test_a_satellite_allows_its_data_directory_by_default(cluster):
    c = cluster
    s = SatelliteProc("n7", "127.0.10.7", os.path.join(c.root, "n7"), c.ctrl.data_dir + "/cluster-secret", allow_pool_dirs=[])
    try:
        s.start()
        ok(c.lin.node_create("n7", "SATELLITE", "127.0.10.7", port=s.port))
        ok(c.lin.storage_pool_create("n7", "inside", "FILE_THIN", os.path.join(c.root, "n7", "pool")))
        ok(c.lin.storage_pool_create("n7", "beside", "FILE_THIN", os.path.join(c.root, "n1", "pool")))
        reports = pool_reports(c, "n7", "beside")
        assert any("outside the directories" in r.message for r in reports), [r.message for r in reports]
        ok(c.lin.resource_dfn_create("home"))
        ok(c.lin.volume_dfn_create("home", 4096))
        ok(c.lin.resource_create([linstor.ResourceData("n7", "home", storage_pool="inside")]))
        assert os.listdir(os.path.join(c.root, "n7", "pool"))
        ok(c.lin.resource_dfn_delete("home"))
    finally:
        s.stop()
