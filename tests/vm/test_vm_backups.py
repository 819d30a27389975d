"""Backups to S3 from an LVM_THIN pool in a VM, through python-linstor
against the host's controller: the S3 server (moto, signatures checked)
listens on the test bridge (10.99.0.254) where the VM's satellite reaches
it. A full backup, then an incremental whose changed ranges come from the
thin pool's metadata (thin_delta), both restored into new definitions in
the LVM_THIN pool and compared by sha256 with the data at each backup's
time; the same from a ZFS_THIN pool, restored into LVM_THIN, ZFS_THIN and
ZFS pools."""

import os
import shutil
import tempfile
import time

import boto3
import linstor
import pytest

from conftest import CLIENT_TIMEOUT, LOGS, PLAIN_LUKS, Controller, Vm, _teardown, bridge, e2e, ok, req, wait_for

MIB = 1 << 20
SIZE_MIB = 256
TAP = 7


def backup_cluster(name, tap, **vm_args):
    """A controller, one VM `name` on the test bridge (10.99.0.<tap>), moto
    on 10.99.0.254 and the S3 remote `bk`; a generator for fixtures."""
    root = tempfile.mkdtemp(prefix="cairn-vmbackup-")
    shutil.rmtree(os.path.join(LOGS, name), ignore_errors=True)
    bridge([tap])
    s3 = e2e.S3Server(ip="10.99.0.254")
    ctrl, lin, vm = Controller(root, extra_args=PLAIN_LUKS), None, None
    try:
        ctrl.start()
        lin = linstor.Linstor(ctrl.url, timeout=CLIENT_TIMEOUT)
        lin.connect()
        ok(lin.controller_set_prop("Cairn/DefaultLayerStack", "STORAGE"))
        vm = Vm(name, None, os.path.join(root, "cluster-secret"), mem=768, tap=tap, **vm_args).start()
        ok(lin.node_create(name, "SATELLITE", vm.ip))
        wait_for(f"{name} online", lambda: lin.node_list_raise().nodes[0].connection_status == "ONLINE", timeout=60)
        ok(lin.crypt_create_passphrase("master-pw"))
        ok(lin.remote_create_s3(remote_name="bk", endpoint=s3.endpoint, region=s3.region, bucket=s3.bucket,
                                access_key=s3.access_key, secret_key=s3.secret_key, use_path_style=True))
        c = type("C", (), {})()
        c.ctrl, c.lin, c.vm, c.root, c.s3 = ctrl, lin, vm, root, s3
        c.cluster_id = lin.controller_props()[0].properties["Cluster/LocalID"]
        yield c
        lin = c.lin
    finally:
        _teardown(lin, ctrl, [vm] if vm is not None else [], root)
        s3.stop()


def thin_pool(c, node, disk):
    """An LVM_THIN pool `lvmthin` (thin pool linstor_thin/thin) on `disk`."""
    status, _, body = c.ctrl.request("POST", f"/v1/physical-storage/{node}", {
        "provider_kind": "LVM_THIN", "device_paths": [disk], "pool_name": "thin", "with_storage_pool": {"name": "lvmthin"}})
    assert status == 201, body


@pytest.fixture(scope="module")
def backup_vm(vm_image):
    """VM `vb1` (10.99.0.7) with an LVM_THIN pool `lvmthin` on its disk
    (one boot for the tests of this file that use it)."""
    for c in backup_cluster("vb1", TAP, disks=("1G",)):
        thin_pool(c, "vb1", "/dev/vda")
        yield c


@pytest.fixture
def zfs_backup_vm(zfs_image):
    """VM `vz1` (10.99.0.8) with OpenZFS: a ZFS_THIN pool `zfsthin` and a
    ZFS pool `zfsthick` (datasets of a zpool on its first disk) and an
    LVM_THIN pool `lvmthin` on the second."""
    for c in backup_cluster("vz1", TAP + 1, disks=("1G", "1G"), image=zfs_image, zfs=True):
        assert "CAIRN-VM-NO-ZFS" not in c.vm.log(), c.vm.log()[-3000:]
        sh(c, "zpool create -o ashift=12 -O mountpoint=none -O compression=off tank /dev/vda"
              " && zfs create tank/thin && zfs create tank/thick")
        ok(c.lin.storage_pool_create("vz1", "zfsthin", "ZFS_THIN", "tank/thin"))
        ok(c.lin.storage_pool_create("vz1", "zfsthick", "ZFS", "tank/thick"))
        thin_pool(c, "vz1", "/dev/vdb")
        yield c


def sh(c, cmd, timeout=600):
    rc, out = c.vm.sh(cmd, timeout=timeout)
    assert rc == 0, f"{cmd}: {out}"
    return out


def digest(c, dev, mib=SIZE_MIB):
    """sha256 of the first `mib` MiB of a device in the VM."""
    return sh(c, f"set -o pipefail; dd if={dev} bs=1M count={mib} status=none | sha256sum").split()[0]


def backups(c, rsc):
    """The finished backups of `rsc` (failures fail the test)."""
    reply = c.lin.backup_list("bk", resource_name=rsc)
    assert reply and not isinstance(reply[0], linstor.ApiCallResponse), reply
    bs = list(reply[0].linstor)
    failed = [b._rest_data for b in bs if not b._rest_data.get("success") and not b._rest_data.get("shipping")]
    assert not failed, failed
    return bs


def finished(c, rsc, n):
    def done():
        bs = backups(c, rsc)
        return bs if len(bs) == n and all(b._rest_data.get("success") for b in bs) else None
    return wait_for(f"{n} backups of {rsc}", done, timeout=600)


def stored(c, b):
    """Bytes of a backup's volume object in the bucket."""
    s3 = boto3.client("s3", endpoint_url=c.s3.endpoint, region_name=c.s3.region, aws_access_key_id=c.s3.access_key,
                      aws_secret_access_key=c.s3.secret_key)
    return s3.head_object(Bucket=c.s3.bucket, Key=b._rest_data["vlms"][0]["s3"]["key"])["ContentLength"]


def deployed(c, rd):
    """The device of volume 0 of `rd` once the satellite reports it."""
    def device():
        status, _, view = req(c, "GET", f"/v1/view/resources?resources={rd}")
        return status == 200 and view and view[0]["volumes"] and view[0]["volumes"][0].get("device_path")
    return wait_for(f"{rd} deployed", device, timeout=120)


def test_lvm_thin_full_and_incremental_backup_restore(backup_vm):
    c = backup_vm
    ok(c.lin.resource_dfn_create("src"))
    ok(c.lin.volume_dfn_create("src", SIZE_MIB * 1024, storage_pool="lvmthin"))
    ok(c.lin.resource_create([linstor.ResourceData("vb1", "src", storage_pool="lvmthin")]))
    dev = "/dev/linstor_thin/src_00000"
    # A pattern over the first 96 MiB; the rest stays unwritten (zeros).
    sh(c, f"dd if=/dev/urandom of={dev} bs=1M count=96 oflag=direct status=none && sync")
    a = digest(c, dev)

    ok(c.lin.backup_create("bk", "src", incremental=False))
    [full] = finished(c, "src", 1)
    full_bytes = stored(c, full)
    assert 96 * MIB <= full_bytes < 100 * MIB, full_bytes  # zero chunks left out, random data stays its size

    # About 1 % changed: 1 MiB at 10 MiB, 1 MiB straddling 50-51 MiB, and
    # 1 MiB at 200 MiB where nothing was written before.
    time.sleep(1.1)  # backup ids have a resolution of one second
    sh(c, f"dd if=/dev/urandom of={dev} bs=1M count=1 seek=10 oflag=direct status=none")
    sh(c, f"dd if=/dev/urandom of={dev} bs=4K count=256 seek={50 * 256 + 100} oflag=direct status=none")
    sh(c, f"dd if=/dev/urandom of={dev} bs=1M count=1 seek=200 oflag=direct status=none && sync")
    b = digest(c, dev)
    assert b != a
    ok(c.lin.backup_create("bk", "src", incremental=True))
    inc = next(x for x in finished(c, "src", 2) if x.id != full.id)
    assert inc._rest_data["based_on_id"] == full.id, inc._rest_data
    inc_bytes = stored(c, inc)
    # The chunks touched: 1 + 2 + 1 of 1 MiB.
    assert inc_bytes <= 4.1 * MIB and inc_bytes < 0.02 * SIZE_MIB * MIB, inc_bytes
    # The satellite read only those chunks (thin_delta), not the volume.
    wait_for("the incremental's read in the log", lambda: "read 4 of 256 chunks" in c.vm.log(), timeout=30)
    # The metadata snapshot was released, the snapshots deactivated again.
    tpool = sh(c, "dmsetup status linstor_thin-thin-tpool")
    assert tpool.split()[6] == "-", tpool  # held metadata root: none
    snaps = sh(c, "lvs --noheadings -o lv_name,lv_attr linstor_thin")
    assert all(line.split()[1][4] != "a" for line in snaps.splitlines() if line.split()[0].startswith("src_00000_")), snaps

    # Both restored into new definitions in the LVM_THIN pool.
    ok(c.lin.backup_restore("bk", "vb1", "fullr", bak_id=full.id))
    ok(c.lin.backup_restore("bk", "vb1", "incr", resource_name="src"))
    for rd in ("fullr", "incr"):
        assert deployed(c, rd) == f"/dev/linstor_thin/{rd}_00000"
    assert digest(c, "/dev/linstor_thin/fullr_00000") == a
    assert digest(c, "/dev/linstor_thin/incr_00000") == b
    # The restored snapshots look like the provider's: tagged, read-only.
    lvs = sh(c, "lvs --noheadings -o lv_name,lv_attr,lv_tags linstor_thin")
    restored = [line.split() for line in lvs.splitlines() if line.split()[0].startswith(("fullr_00000_", "incr_00000_"))]
    assert len(restored) == 2 and all(r[1][1] == "r" and "cairn_snap" in r[2] for r in restored), lvs
    assert "cairn_receiving" not in lvs, lvs


def test_luks_volume_backup_and_restore_with_its_data(backup_vm):
    """A LUKS,STORAGE volume on LVM_THIN: data written through the open
    LUKS device; full and incremental backups carry the storage volume
    as it is (encrypted, with its LUKS header), the key sealed in the
    `.meta`; each restored definition's LUKS device opens with the key
    sealed again for it and holds the data of its backup's time."""
    c = backup_vm
    mib = 64
    # Cheap key derivation under software emulation.
    ok(c.lin.controller_set_prop("StorDriver/LuksFormatOptions", "--pbkdf pbkdf2 --pbkdf-force-iterations 1000"))
    ok(c.lin.resource_dfn_create("lsec"))
    ok(c.lin.volume_dfn_create("lsec", mib * 1024, storage_pool="lvmthin"))
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/lsec/resources",
                                     [{"resource": {"node_name": "vb1", "props": {"StorPoolName": "lvmthin"}},
                                       "layer_list": ["luks", "storage"]}], timeout=180)
    assert status == 201, body
    mapper = lambda rd: f"/dev/mapper/Linstor-Crypt-{rd}_00000"
    assert deployed(c, "lsec") == mapper("lsec")
    sh(c, f"dd if=/dev/urandom of={mapper('lsec')} bs=1M count=12 oflag=direct status=none && sync")
    a = digest(c, mapper("lsec"), mib)
    # What the pool holds is ciphertext behind a 16 MiB LUKS2 header.
    sh(c, "cryptsetup isLuks /dev/linstor_thin/lsec_00000")
    assert digest(c, "/dev/linstor_thin/lsec_00000", mib) != a

    ok(c.lin.backup_create("bk", "lsec", incremental=False))
    [full] = finished(c, "lsec", 1)
    assert 12 * MIB <= stored(c, full) < 30 * MIB, stored(c, full)
    time.sleep(1.1)  # backup ids have a resolution of one second
    sh(c, f"dd if=/dev/urandom of={mapper('lsec')} bs=1M count=1 seek=40 oflag=direct status=none && sync")
    b = digest(c, mapper("lsec"), mib)
    assert b != a
    ok(c.lin.backup_create("bk", "lsec", incremental=True))
    inc = next(x for x in finished(c, "lsec", 2) if x.id != full.id)
    assert inc._rest_data["based_on_id"] == full.id, inc._rest_data
    # 1 MiB written through LUKS at 40 MiB sits at 56 MiB of the storage
    # volume: at most two chunks changed.
    assert stored(c, inc) <= 2.1 * MIB, stored(c, inc)

    ok(c.lin.backup_restore("bk", "vb1", "lfull", bak_id=full.id))
    ok(c.lin.backup_restore("bk", "vb1", "linc", resource_name="lsec"))
    for rd, want in (("lfull", a), ("linc", b)):
        assert deployed(c, rd) == mapper(rd), rd
        _, _, view = req(c, "GET", f"/v1/view/resources?resources={rd}")
        assert view[0]["layer_object"]["type"] == "LUKS", view
        assert digest(c, mapper(rd), mib) == want, rd
    # The restored volumes keep the source's LUKS header (restored, not
    # formatted anew): the same LUKS UUID as the source's.
    uuids = {rd: sh(c, f"cryptsetup luksUUID /dev/linstor_thin/{rd}_00000").strip() for rd in ("lsec", "lfull", "linc")}
    assert len(set(uuids.values())) == 1, uuids

    # Another cluster (a second controller, its own master passphrase, the
    # same bucket) takes the node over and restores the incremental chain
    # with the source's master passphrase (LINSTOR's `passphrase`):
    # without it, and with a wrong one, refused before anything is written.
    root = tempfile.mkdtemp(prefix="cairn-vmbackup-other-")
    shutil.copy(os.path.join(c.root, "cluster-secret"), os.path.join(root, "cluster-secret"))
    c.ctrl.stop()
    other, lin = Controller(root, extra_args=PLAIN_LUKS).start(), None
    try:
        lin = linstor.Linstor(other.url, timeout=CLIENT_TIMEOUT)
        lin.connect()
        assert lin.controller_props()[0].properties["Cluster/LocalID"] != c.cluster_id
        ok(lin.controller_set_prop("Cairn/DefaultLayerStack", "STORAGE"))
        ok(lin.crypt_create_passphrase("other-pw"))
        ok(lin.node_create("vb1", "SATELLITE", c.vm.ip))
        wait_for("vb1 online for the other cluster",
                 lambda: lin.node_list_raise().nodes[0].connection_status == "ONLINE", timeout=60)
        ok(lin.storage_pool_create("vb1", "lvmthin", "LVM_THIN", "linstor_thin/thin"))
        o = type("C", (), {})()
        o.ctrl, o.vm = other, c.vm
        wait_for("the pool's free space known",
                 lambda: req(o, "GET", "/v1/nodes/vb1/storage-pools/lvmthin")[2].get("free_capacity"), timeout=60)
        s3 = c.s3
        ok(lin.remote_create_s3(remote_name="bk", endpoint=s3.endpoint, region=s3.region, bucket=s3.bucket,
                                access_key=s3.access_key, secret_key=s3.secret_key, use_path_style=True))
        for passphrase, code in ((None, 312), ("wrong-pw", 998)):  # FAIL_NOT_FOUND_CRYPT_KEY, FAIL_UNKNOWN_ERROR
            restore = {"src_rsc_name": "lsec", "target_rsc_name": "xrest", "node_name": "vb1"}
            if passphrase:
                restore["passphrase"] = passphrase
            status, _, reply = other.request("POST", "/v1/remotes/bk/backups/restore", restore, timeout=300)
            assert status >= 400 and reply[0]["ret_code"] & 0x7FFF == code, (passphrase, reply)
            assert "xrest" not in sh(c, "lvs --noheadings -o lv_name linstor_thin")
            assert req(o, "GET", "/v1/resource-definitions/xrest")[0] == 404
        ok(lin.backup_restore("bk", "vb1", "xrest", resource_name="lsec", passphrase="master-pw"))
        assert deployed(o, "xrest") == mapper("xrest")
        assert digest(c, mapper("xrest"), mib) == b
    finally:
        if lin is not None:
            lin.disconnect()
        other.stop()
        logs = os.path.join(LOGS, "vb1-other-cluster")
        os.makedirs(logs, exist_ok=True)
        shutil.copy(other.log_path, logs)
        shutil.rmtree(root, ignore_errors=True)


def test_zfs_thin_backups_restore_into_lvm_thin_and_zfs(zfs_backup_vm):
    """A ZFS_THIN volume is read through its snapshot's device
    (snapdev=visible while the backup reads); an incremental reads only the
    chunks the records of `zfs send -i` touch and uploads what changed; restores go
    into the LVM_THIN pool (stor_pool_map) and into the ZFS_THIN and ZFS
    pools (into the new resource's own zvol, snapshotted when complete)."""
    c = zfs_backup_vm
    mib = 64
    ok(c.lin.resource_dfn_create("zsrc"))
    ok(c.lin.volume_dfn_create("zsrc", mib * 1024, storage_pool="zfsthin"))
    ok(c.lin.resource_create([linstor.ResourceData("vz1", "zsrc", storage_pool="zfsthin")]))
    dev = deployed(c, "zsrc")
    assert dev == "/dev/zvol/tank/thin/zsrc_00000", dev
    sh(c, f"dd if=/dev/urandom of={dev} bs=1M count=16 oflag=direct conv=fsync status=none")
    a = digest(c, dev, mib)
    ok(c.lin.backup_create("bk", "zsrc", incremental=False))
    [full] = finished(c, "zsrc", 1)
    assert 16 * MIB <= stored(c, full) < 17 * MIB, stored(c, full)
    time.sleep(1.1)
    sh(c, f"dd if=/dev/urandom of={dev} bs=1M count=1 seek=4 oflag=direct conv=fsync status=none")
    b = digest(c, dev, mib)
    ok(c.lin.backup_create("bk", "zsrc", incremental=True))
    inc = next(x for x in finished(c, "zsrc", 2) if x.id != full.id)
    assert inc._rest_data["based_on_id"] == full.id, inc._rest_data
    assert stored(c, inc) < 1.1 * MIB, stored(c, inc)
    # The satellite read only the chunk `zfs send -i` names, not the volume.
    wait_for("the incremental's read in the log", lambda: "read 1 of 64 chunks" in c.vm.log(), timeout=30)
    # The snapshot devices are hidden again.
    assert sh(c, "zfs get -H -o value,source snapdev tank/thin/zsrc_00000").split() == ["hidden", "default"]
    pools = {"zfsthin": "lvmthin"}
    ok(c.lin.backup_restore("bk", "vz1", "zfull", bak_id=full.id, stor_pool_map=pools))
    ok(c.lin.backup_restore("bk", "vz1", "zinc", resource_name="zsrc", stor_pool_map=pools))
    assert deployed(c, "zfull") == "/dev/linstor_thin/zfull_00000"
    assert deployed(c, "zinc") == "/dev/linstor_thin/zinc_00000"
    assert digest(c, "/dev/linstor_thin/zfull_00000", mib) == a
    assert digest(c, "/dev/linstor_thin/zinc_00000", mib) == b

    # Into the ZFS_THIN pool (the backup's own pool name) and, through
    # stor_pool_map, the thick ZFS pool: full and incremental chains.
    thick = {"zfsthin": "zfsthick"}
    ok(c.lin.backup_restore("bk", "vz1", "tfull", bak_id=full.id))
    ok(c.lin.backup_restore("bk", "vz1", "tinc", resource_name="zsrc"))
    ok(c.lin.backup_restore("bk", "vz1", "kfull", bak_id=full.id, stor_pool_map=thick))
    ok(c.lin.backup_restore("bk", "vz1", "kinc", resource_name="zsrc", stor_pool_map=thick))
    for rd, ds, want in (("tfull", "thin", a), ("tinc", "thin", b), ("kfull", "thick", a), ("kinc", "thick", b)):
        zvol = f"tank/{ds}/{rd}_00000"
        assert deployed(c, rd) == f"/dev/zvol/{zvol}"
        assert digest(c, f"/dev/zvol/{zvol}", mib) == want, rd
        # The resource is the zvol the backup was written into (no clone),
        # with the backup's snapshot under its own name.
        origin, vid = sh(c, f"zfs get -H -p -o value origin,cairn:vid {zvol}").split()
        assert origin == "-" and vid != "-", (rd, origin, vid)
        snaps = sh(c, f"zfs list -H -o name -t snapshot -r {zvol}").split()
        last = full if rd.endswith("full") else inc
        assert snaps == [f"{zvol}@{last._rest_data['origin_snap']}"], (rd, snaps)
        _, _, s = req(c, "GET", f"/v1/resource-definitions/{rd}/snapshots")
        assert [x["name"] for x in s] == [last._rest_data["origin_snap"]], s
    # A thick zvol reserves its size; a thin one does not.
    volsize, refres = map(int, sh(c, "zfs get -H -p -o value volsize,refreservation tank/thick/kinc_00000").split())
    assert refres >= volsize == mib * MIB, (volsize, refres)
    assert sh(c, "zfs get -H -p -o value refreservation tank/thin/tinc_00000").split() == ["0"]

    # A damaged incremental fails the restore after the full backup was
    # written: nothing of the target is left on the pool or in the cluster.
    s3 = boto3.client("s3", endpoint_url=c.s3.endpoint, region_name=c.s3.region, aws_access_key_id=c.s3.access_key,
                      aws_secret_access_key=c.s3.secret_key)
    key = inc._rest_data["vlms"][0]["s3"]["key"]
    body = bytearray(s3.get_object(Bucket=c.s3.bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=c.s3.bucket, Key=key, Body=bytes(body))
    status, _, reply = c.ctrl.request("POST", "/v1/remotes/bk/backups/restore",
                                      {"src_rsc_name": "zsrc", "target_rsc_name": "zbad", "node_name": "vz1"}, timeout=300)
    assert status >= 400, reply
    assert "zbad" not in sh(c, "zfs list -H -o name -t all -r tank"), sh(c, "zfs list -t all -r tank")
    assert req(c, "GET", "/v1/resource-definitions/zbad")[0] == 404
