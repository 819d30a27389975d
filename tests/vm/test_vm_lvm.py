"""LVM and LVM_THIN end to end in a VM with Debian's kernel: physical
storage becomes a volume group and a thin pool through the REST API, the
pools report what vgs/lvs say, and resources are created, grown and deleted
for real."""

import linstor

from conftest import ok, wait_for

MIB = 1024


def pool(c, name):
    status, _, body = c.ctrl.request("GET", f"/v1/nodes/vm1/storage-pools/{name}")
    assert status == 200, body
    return body


def lvs(c, vg):
    rc, out = c.vm.sh(f"lvs --noheadings --units k --nosuffix -o lv_name,lv_size,pool_lv --separator ';' {vg}")
    assert rc == 0, out
    return {f[0].strip(): (round(float(f[1])), f[2].strip()) for f in (l.split(";") for l in out.split("\n") if l.strip())}


def test_physical_storage_lvm_and_thin_pools_and_volumes(vm_cluster):
    c = vm_cluster
    # The VM's two empty disks are offered.
    status, _, body = c.ctrl.request("GET", "/v1/physical-storage")
    assert status == 200, body
    assert len(body) == 1 and body[0]["size"] == 2 * 1024 ** 3
    assert sorted(d["device"] for d in body[0]["nodes"]["vm1"]) == ["/dev/vda", "/dev/vdb"]

    # A volume group on vda, registered as storage pool "lvm".
    status, _, body = c.ctrl.request("POST", "/v1/physical-storage/vm1", {
        "provider_kind": "LVM", "device_paths": ["/dev/vda"], "pool_name": "vg0", "with_storage_pool": {"name": "lvm"}})
    assert status == 201, body
    assert pool(c, "lvm")["props"]["StorDriver/StorPoolName"] == "vg0"
    # A thin pool on vdb, as LINSTOR names it.
    status, _, body = c.ctrl.request("POST", "/v1/physical-storage/vm1", {
        "provider_kind": "LVM_THIN", "device_paths": ["/dev/vdb"], "pool_name": "thin", "with_storage_pool": {"name": "lvmthin"}})
    assert status == 201, body
    assert pool(c, "lvmthin")["props"]["StorDriver/StorPoolName"] == "linstor_thin/thin"
    # Used disks are gone from the offer, and cannot be used again.
    status, _, body = c.ctrl.request("GET", "/v1/physical-storage/vm1")
    assert status == 200 and body == [], body
    status, _, body = c.ctrl.request("POST", "/v1/physical-storage/vm1", {
        "provider_kind": "LVM", "device_paths": ["/dev/vda"], "pool_name": "again"})
    assert status == 500 and "not an unused disk" in body[0]["cause"], body

    # Capacities are what vgs says.
    rc, out = c.vm.sh("vgs --noheadings --units k --nosuffix -o vg_size,vg_free vg0")
    size, free = (round(float(x)) for x in out.split())
    wait_for("lvm capacity", lambda: pool(c, "lvm").get("total_capacity") == size and pool(c, "lvm").get("free_capacity") == free)
    thin_size = lvs(c, "linstor_thin")["thin"][0]
    wait_for("thin capacity", lambda: pool(c, "lvmthin").get("total_capacity") == thin_size)

    # Resources on both pools.
    for rd, sp, size_mib in (("web", "lvm", 64), ("db", "lvmthin", 100)):
        ok(c.lin.resource_dfn_create(rd))
        ok(c.lin.volume_dfn_create(rd, size_mib * MIB, storage_pool=sp))
        ok(c.lin.resource_create([linstor.ResourceData("vm1", rd, storage_pool=sp)]))
    vols = {v.name: v for v in c.lin.volume_list_raise().resources}
    assert vols["web"].volumes[0].device_path == "/dev/vg0/web_00000"
    assert vols["db"].volumes[0].device_path == "/dev/linstor_thin/db_00000"
    assert lvs(c, "vg0")["web_00000"][0] == 64 * MIB
    assert lvs(c, "linstor_thin")["db_00000"] == (100 * MIB, "thin")
    rc, out = c.vm.sh("dd if=/dev/urandom of=/dev/vg0/web_00000 bs=1M count=8 status=none && sync && blockdev --getsize64 /dev/vg0/web_00000")
    assert rc == 0 and int(out.strip()) == 64 * 1024 * 1024, out
    # Thick pools lose exactly what was allocated.
    wait_for("lvm free space", lambda: pool(c, "lvm").get("free_capacity") == free - 64 * MIB)

    # Grow: 70 MiB becomes 72 MiB (whole 4 MiB extents).
    ok(c.lin.volume_dfn_modify("web", 0, size=70 * MIB))
    assert lvs(c, "vg0")["web_00000"][0] == 72 * MIB
    ok(c.lin.volume_dfn_modify("db", 0, size=200 * MIB))
    assert lvs(c, "linstor_thin")["db_00000"][0] == 200 * MIB

    # The satellite restarts: it adopts the volumes, no duplicates.
    rc, out = c.vm.sh("kill $(pidof cairn)")
    assert rc == 0, out
    wait_for("satellite back", lambda: c.vm.log().count("satellite ready") == 2, timeout=60)
    assert set(lvs(c, "vg0")) == {"web_00000"}

    # Delete leaves nothing behind (at once, or with the full apply when
    # the controller reconnects to the restarted satellite).
    for rd in ("web", "db"):
        ok(c.lin.resource_dfn_delete(rd))
    wait_for("volumes removed", lambda: lvs(c, "vg0") == {} and set(lvs(c, "linstor_thin")) == {"thin"}, timeout=60)
    wait_for("lvm free again", lambda: pool(c, "lvm").get("free_capacity") == free)


def test_a_missing_volume_group_is_a_clear_error(vm_cluster):
    c = vm_cluster
    ok(c.lin.storage_pool_create("vm1", "ghost", "LVM", "novg"))
    ok(c.lin.resource_dfn_create("lost"))
    ok(c.lin.volume_dfn_create("lost", 4 * MIB, storage_pool="ghost"))
    replies = c.lin.resource_create([linstor.ResourceData("vm1", "lost", storage_pool="ghost")])
    errors = [r for r in replies if r.is_error() or r.is_warning()]
    assert errors and any("novg" in (r.cause or "") + (r.details or "") + r.message for r in errors), [str(r) for r in replies]
