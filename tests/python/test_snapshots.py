"""Snapshots of FILE_THIN volumes (reflink copies) on a real XFS file
system made for the test, through the REST API: take, restore, roll back,
delete; and a clear error where the file system has no reflinks."""

import hashlib
import os
import subprocess
import tempfile

import pytest

from conftest import BIN, ok, wait_for


@pytest.fixture
def xfs_dir():
    """An XFS file system (reflinks on) on a loop device, mounted."""
    work = tempfile.mkdtemp(prefix="cairn-xfs-")
    img, mnt = os.path.join(work, "xfs.img"), os.path.join(work, "mnt")
    os.makedirs(mnt)
    subprocess.run(["truncate", "-s", "1G", img], check=True)
    dev = subprocess.run(["losetup", "--find", "--show", img], capture_output=True, text=True, check=True).stdout.strip()
    try:
        subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", dev], check=True)
        subprocess.run(["mount", dev, mnt], check=True)
        yield mnt
    finally:
        subprocess.run(["umount", mnt], check=False)
        subprocess.run(["losetup", "--detach", dev], check=False)
        subprocess.run(["rm", "-rf", work], check=False)


def device(c, rd):
    status, _, v = c.ctrl.request("GET", f"/v1/view/resources?resources={rd}")
    assert status == 200, v
    return v[0]["volumes"][0]["device_path"]


def write(dev, data):
    with open(dev, "r+b") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def digest(dev, n):
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read(n)).hexdigest()


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
    write(dev, a)
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/src/snapshots", {"name": "s1"})
    assert status == 201, body
    wait_for("s1 successful", lambda: successful(c, "src", "s1"))
    assert os.path.exists(os.path.join(xfs_dir, "pool", "src_00000@s1.snap"))
    write(dev, os.urandom(4 << 20))
    assert digest(dev, 4 << 20) != hashlib.sha256(a).hexdigest()

    # Restore into a new definition.
    ok(c.lin.resource_dfn_create("copy"))
    for step in ("snapshot-restore-volume-definition", "snapshot-restore-resource"):
        status, _, body = c.ctrl.request("POST", f"/v1/resource-definitions/src/{step}/s1", {"to_resource": "copy"})
        assert status == 200, body
    assert digest(device(c, "copy"), 4 << 20) == hashlib.sha256(a).hexdigest()

    # Roll back in place.
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/src/snapshot-rollback/s1", {})
    assert status == 200, body
    wait_for("rolled back", lambda: digest(device(c, "src"), 4 << 20) == hashlib.sha256(a).hexdigest())

    status, _, body = c.ctrl.request("DELETE", "/v1/resource-definitions/src/snapshots/s1")
    assert status == 200, body
    wait_for("snapshot file gone", lambda: not os.path.exists(os.path.join(xfs_dir, "pool", "src_00000@s1.snap")))
    for rd in ("copy", "src"):
        ok(c.lin.resource_dfn_delete(rd))
    assert [f for f in os.listdir(os.path.join(xfs_dir, "pool")) if not f.startswith(".")] == []


def test_no_reflinks_no_snapshot_and_the_reason_is_shown(cluster):
    c = cluster
    ok(c.lin.resource_dfn_create("ext"))
    ok(c.lin.volume_dfn_create("ext", 4096))
    ok(c.lin.resource_create([__import__("linstor").ResourceData("n1", "ext")]))  # FILE_THIN on ext4
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/ext/snapshots", {"name": "s1"})
    assert any("snapshot" in e["message"] and e["ret_code"] < 0 for e in body), body
    assert not successful(c, "ext", "s1")
    status, _, v = c.ctrl.request("GET", "/v1/view/resources?resources=ext")
    assert any("reflink" in (r.get("details") or "") + (r.get("cause") or "") or "clone" in (r.get("details") or "")
               for r in v[0]["volumes"][0]["reports"]), v[0]["volumes"][0]["reports"]
    # FILE (thick) pools are refused up front.
    ok(c.lin.resource_dfn_create("thick"))
    ok(c.lin.volume_dfn_create("thick", 4096))
    ok(c.lin.resource_create([__import__("linstor").ResourceData("n2", "thick")]))
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/thick/snapshots", {"name": "s1"})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 994, body


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
    ok(c.lin.resource_dfn_create("clicopy"))
    code, out, err = cairn(c, "s", "vd", "restore", "--from-resource", "clisnap", "--from-snapshot", "snap1", "--to-resource", "clicopy")
    assert code == 0, (out, err)
    code, out, err = cairn(c, "s", "r", "restore", "--from-resource", "clisnap", "--from-snapshot", "snap1", "--to-resource", "clicopy")
    assert code == 0, (out, err)
    code, out, err = cairn(c, "s", "rollback", "clisnap", "snap1")
    assert code == 0, (out, err)
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
