"""The LUKS layer in a VM: the master passphrase, encrypted volumes on LVM,
closed after a restart until the passphrase is entered again, grown and
deleted."""

import re

import linstor

from conftest import ok, req, sha, wait_for

MIB = 1024
MAPPER = "/dev/mapper/Linstor-Crypt-sec_00000"


def test_encrypted_volume_survives_restarts_and_opens_once_the_passphrase_is_entered(vm_cluster):
    c = vm_cluster
    status, _, body = req(c, "POST", "/v1/physical-storage/vm1", {
        "provider_kind": "LVM", "device_paths": ["/dev/vda"], "pool_name": "vg0", "with_storage_pool": {"name": "lvm"}})
    assert status == 201, body
    status, _, nodes = req(c, "GET", "/v1/nodes")
    assert "LUKS" in nodes[0]["resource_layers"], nodes
    # Cheap key derivation under software emulation.
    ok(c.lin.controller_set_prop("StorDriver/LuksFormatOptions", "--pbkdf pbkdf2 --pbkdf-force-iterations 1000"))

    # Without a master passphrase nothing encrypted can be made.
    ok(c.lin.resource_dfn_create("sec"))
    ok(c.lin.volume_dfn_create("sec", 32 * MIB, storage_pool="lvm"))
    layers = ["luks", "storage"]
    replies = c.lin.resource_create([linstor.ResourceData("vm1", "sec", storage_pool="lvm", layer_list=layers)])
    assert replies[0].is_error() and "master passphrase" in replies[0].message, [str(r) for r in replies]
    assert req(c, "GET", "/v1/encryption/passphrase")[2] == [{"status": "unset"}]

    status, _, body = req(c, "POST", "/v1/encryption/passphrase", {"new_passphrase": "geheim"})
    assert status == 201, body
    assert req(c, "GET", "/v1/encryption/passphrase")[2] == [{"status": "unlocked"}]
    status, _, props = req(c, "GET", "/v1/controller/properties")
    assert not any(k.startswith("encrypted/") for k in props), props

    ok(c.lin.resource_create([linstor.ResourceData("vm1", "sec", storage_pool="lvm", layer_list=layers)]))
    status, _, view = req(c, "GET", "/v1/view/resources?resources=sec")
    vol = view[0]["volumes"][0]
    assert vol["device_path"] == MAPPER, vol
    assert view[0]["layer_object"]["type"] == "LUKS"
    assert view[0]["layer_object"]["luks"]["luks_volumes"][0]["backing_device"] == "/dev/vg0/sec_00000"
    assert view[0]["layer_object"]["luks"]["luks_volumes"][0]["corrupted_key"] is False
    rc, out = c.vm.sh("cryptsetup isLuks /dev/vg0/sec_00000 && blockdev --getsize64 /dev/vg0/sec_00000 " + MAPPER)
    assert rc == 0, out
    lv_bytes, mapped_bytes = (int(x) for x in out.split())
    assert mapped_bytes == 32 * 1024 * 1024, "the user gets the size asked for"
    assert lv_bytes == 48 * 1024 * 1024, "plus 16 MiB for the LUKS2 header"
    rc, out = c.vm.sh(f"dd if=/dev/urandom of={MAPPER} bs=1M count=8 status=none && sync")
    assert rc == 0, out
    before = sha(c, MAPPER)
    rc, out = c.vm.sh("dd if=/dev/vg0/sec_00000 bs=1M skip=16 count=8 status=none | sha256sum")
    assert out.split()[0] != before, "what lands on the disk is encrypted"

    # Controller restart: locked. The node "reboots": mapping closed,
    # satellite restarted. The volume stays closed and says why.
    c.ctrl.restart()
    assert req(c, "GET", "/v1/encryption/passphrase")[2] == [{"status": "locked"}]
    rc, out = c.vm.sh(f"cryptsetup close {MAPPER.rsplit('/', 1)[1]} && kill $(pidof cairn)")
    assert rc == 0, out
    wait_for("satellite restarted", lambda: c.vm.log().count("satellite ready") == 2, timeout=60)

    def closed_and_says_why():
        # State and reports from one reply: the satellite's answers and
        # observations arrive apart, so two reads may see two moments.
        v = req(c, "GET", "/v1/view/resources?resources=sec")[2][0]["volumes"][0]
        return v["state"].get("disk_state") == "Failed" and any("master passphrase" in (r.get("cause") or "") for r in v["reports"])

    wait_for("closed volume reported with the reason", closed_and_says_why, timeout=60)
    assert c.vm.sh(f"test -e {MAPPER}")[0] != 0

    status, _, body = req(c, "PATCH", "/v1/encryption/passphrase", "wrong")
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 216, body
    status, _, body = req(c, "PATCH", "/v1/encryption/passphrase", "geheim")
    assert status == 200 and body[0]["ret_code"] & 0x7FFF == 4, body
    wait_for("mapping open again", lambda: c.vm.sh(f"test -e {MAPPER}")[0] == 0, timeout=60)
    assert sha(c, MAPPER) == before, "the data is back"

    # DRBD over LUKS over STORAGE: DRBD's disk is the open mapping, with
    # its metadata inside the encrypted volume (config-only DRBD here).
    lin = c.ctrl.client()  # the controller restarted
    ok(lin.resource_dfn_create("rep", layer_list=["drbd", "luks", "storage"]))
    ok(lin.volume_dfn_create("rep", 16 * MIB, storage_pool="lvm"))
    # LUKS format and open plus DRBD's metadata under software emulation:
    # 28.9 s measured alone, over the default 30 s in one CI run.
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/rep/resources",
                                     [{"resource": {"node_name": "vm1", "props": {"StorPoolName": "lvm"}}, "layer_list": ["drbd", "luks", "storage"]}],
                                     timeout=180)
    assert status == 201, body
    rc, res = c.vm.sh("cat /var/lib/cairn-satellite/drbd.d/rep.res")
    assert rc == 0 and "disk        /dev/mapper/Linstor-Crypt-rep_00000;" in res, res
    status, _, rv = req(c, "GET", "/v1/view/resources?resources=rep")
    minor = rv[0]["volumes"][0]["layer_data_list"][0]["data"]["drbd_volume_definition"]["minor_number"]
    assert rv[0]["volumes"][0]["device_path"] == f"/dev/drbd{minor}", rv
    assert [l["type"] for l in rv[0]["volumes"][0]["layer_data_list"]] == ["DRBD", "LUKS", "STORAGE"]
    rc, out = c.vm.sh(f"drbdmeta --force {minor} v09 /dev/mapper/Linstor-Crypt-rep_00000 internal get-gi --node-id 0 && "
                      "blockdev --getsize64 /dev/vg0/rep_00000 /dev/mapper/Linstor-Crypt-rep_00000")
    assert rc == 0, out
    lv_bytes, mapped_bytes = (int(x) for x in out.split()[-2:])
    assert lv_bytes - mapped_bytes == 16 * 1024 * 1024, "the LUKS2 header"
    assert mapped_bytes > 16 * 1024 * 1024, "room for DRBD's metadata above the 16 MiB the user asked for"
    status, _, body = req(c, "DELETE", "/v1/resource-definitions/rep")
    assert status == 200, body
    wait_for("rep gone", lambda: c.vm.sh("test -e /dev/mapper/Linstor-Crypt-rep_00000 || test -e /var/lib/cairn-satellite/drbd.d/rep.res")[0] != 0)

    # Grow through the layers; then delete: mapping closed, volume gone.
    status, _, body = req(c, "PUT", "/v1/resource-definitions/sec/volume-definitions/0", {"size_kib": 64 * MIB})
    assert status == 200, body
    rc, out = c.vm.sh("blockdev --getsize64 " + MAPPER)
    assert int(out) == 64 * 1024 * 1024, out
    status, _, body = req(c, "DELETE", "/v1/resource-definitions/sec")
    assert status == 200, body
    wait_for("mapping closed", lambda: c.vm.sh(f"test -e {MAPPER}")[0] != 0)
    rc, out = c.vm.sh("lvs --noheadings -o lv_name vg0")
    assert out.strip() == "", out


def test_volume_definition_passphrase_change_keeps_the_data(vm_cluster):
    """`PUT …/encryption-passphrase` (`linstor vd modify-passphrase`): the
    satellite changes the LUKS key in place (luksChangeKey), on an open
    mapping and on a closed one, and the volume opens with the new
    passphrase after a satellite restart."""
    c = vm_cluster
    status, _, body = req(c, "POST", "/v1/physical-storage/vm1", {
        "provider_kind": "LVM", "device_paths": ["/dev/vda"], "pool_name": "vg0", "with_storage_pool": {"name": "lvm"}})
    assert status == 201, body
    ok(c.lin.controller_set_prop("StorDriver/LuksFormatOptions", "--pbkdf pbkdf2 --pbkdf-force-iterations 1000"))
    status, _, body = req(c, "POST", "/v1/encryption/passphrase", {"new_passphrase": "geheim"})
    assert status == 201, body
    ok(c.lin.resource_dfn_create("pp"))
    ok(c.lin.volume_dfn_create("pp", 32 * MIB, storage_pool="lvm"))
    ok(c.lin.resource_create([linstor.ResourceData("vm1", "pp", storage_pool="lvm", layer_list=["luks", "storage"])]))
    mapper, lv = "/dev/mapper/Linstor-Crypt-pp_00000", "/dev/vg0/pp_00000"
    rc, out = c.vm.sh(f"dd if=/dev/urandom of={mapper} bs=1M count=8 status=none && sync")
    assert rc == 0, out
    before = sha(c, mapper)

    def opens_with(passphrase):
        return c.vm.sh(f"printf '%s\\n' '{passphrase}' | cryptsetup open --test-passphrase --tries 1 {lv}")[0] == 0

    def key_slots():
        rc, out = c.vm.sh(f"cryptsetup luksDump {lv}")
        assert rc == 0, out
        return len(re.findall(r"^\s+\d+: luks2$", out, re.M))

    assert not opens_with("first-pass")
    # Open mapping: the key changes under it.
    ok(c.lin.volume_dfn_modify_passphrase("pp", 0, "first-pass"))
    assert opens_with("first-pass"), "the new passphrase opens the device"
    assert key_slots() == 1, "the random passphrase's slot is gone, not kept beside the new one"
    assert sha(c, mapper) == before
    status, _, vds = req(c, "GET", "/v1/resource-definitions/pp/volume-definitions/0")
    sealed = vds["props"].get("Encryption/Passphrase", "")
    assert sealed and "first-pass" not in sealed, vds

    # Closed mapping: opened with the new passphrase after the change.
    rc, out = c.vm.sh("cryptsetup close Linstor-Crypt-pp_00000")
    assert rc == 0, out
    ok(c.lin.volume_dfn_modify_passphrase("pp", 0, "second-pass"))
    wait_for("mapping open again", lambda: c.vm.sh(f"test -e {mapper}")[0] == 0, timeout=60)
    assert opens_with("second-pass") and not opens_with("first-pass"), "the old passphrase no longer opens it"
    assert key_slots() == 1
    assert sha(c, mapper) == before, "the data stays"

    # Satellite restart with the mapping closed: it opens with the new key.
    restarts = c.vm.log().count("satellite ready")
    rc, out = c.vm.sh("cryptsetup close Linstor-Crypt-pp_00000 && kill $(pidof cairn)")
    assert rc == 0, out
    wait_for("satellite restarted", lambda: c.vm.log().count("satellite ready") == restarts + 1, timeout=60)
    wait_for("mapping open after the restart", lambda: c.vm.sh(f"test -e {mapper}")[0] == 0, timeout=60)
    assert sha(c, mapper) == before
    v = req(c, "GET", "/v1/view/resources?resources=pp")[2][0]["volumes"][0]
    assert v["state"].get("disk_state") != "Failed" and not any(r["ret_code"] < 0 for r in v.get("reports", [])), v

    # A passphrase given when the volume definition is made: the volume is
    # formatted with it (python-linstor's `passphrase`).
    ok(c.lin.resource_dfn_create("given"))
    ok(c.lin.volume_dfn_create("given", 16 * MIB, storage_pool="lvm", passphrase="chosen-pass"))
    ok(c.lin.resource_create([linstor.ResourceData("vm1", "given", storage_pool="lvm", layer_list=["luks", "storage"])]))
    rc, out = c.vm.sh("printf '%s\\n' chosen-pass | cryptsetup open --test-passphrase --tries 1 /dev/vg0/given_00000")
    assert rc == 0, out
    v = req(c, "GET", "/v1/view/resources?resources=given")[2][0]["volumes"][0]
    assert v["state"].get("disk_state") != "Failed" and not any(r["ret_code"] < 0 for r in v.get("reports", [])), v
