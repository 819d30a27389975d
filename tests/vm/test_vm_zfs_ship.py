"""Shipping a ZFS volume to another cluster as `zfs send` / `zfs receive`
streams, as LINSTOR ships ZFS snapshots: two Cairn clusters, each a
controller on the host (inside the test's network namespace) with one VM of
the ZFS image as its satellite (both booted at once, on the test bridge so
the satellites reach each other), a ZFS_THIN pool on a real zpool in each,
and LINSTOR remotes registered both ways. zb's satellite speaks mutual TLS
with its controller (a CA of cluster B's own), za's link is plain: a ship
to zb streams in TLS with zb's certificate pinned, a ship to za in plain
TCP, and every ship checks which the source's reply announced. A full ship
restores the resource on the target; after more writes an incremental
ship (`zfs send -i`) of the snapshot both hold; the target's data is
compared by sha256 with the source's; then the received volume ships back
to za, full, in plain TCP. The same two VMs have an LVM_THIN pool on their
second disk: an LVM_THIN volume ships as backup frames, full, then, after
the volume grew, incremental with only the chunks the thin pool's metadata
says changed."""

import os
import shutil
import tempfile

import linstor
import pytest

from conftest import CLIENT_TIMEOUT, PLAIN_LUKS, Controller, Vm, _teardown, bridge, e2e, ok, private_network, wait_for

MIB = 1024  # KiB
TAPS = {"za": 5, "zb": 6}
REMOTE = {"za": "b", "zb": "a"}  # each cluster's name for the other one
TLS = {"zb"}  # satellites that speak mutual TLS with their controller
STREAM = {True: "the stream encrypted with TLS", False: "the stream in plain TCP"}


def sh(vm, cmd):
    rc, out = vm.sh(cmd)
    assert rc == 0, f"{cmd}: {out}"
    return out


def digest(vm, dev):
    """sha256 of the whole device, read past the page cache."""
    out = sh(vm, f"set -o pipefail; udevadm settle -t 20; blockdev --flushbufs {dev} && "
                 f"dd if={dev} bs=1M iflag=direct status=none | sha256sum")
    return out.split()[0]


def datasets(vm):
    return sorted(sh(vm, "zfs list -H -r -t volume,snapshot -o name tank/thin").split())


def pki(d):
    """Cluster B's CA, a certificate for zb's satellite (its address on the
    bridge: the controller checks it) and one for B's controller; answers
    the controller's arguments and the satellite's (certificate, key, CA)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the ZFS shipping VM tests need the openssl command")
    e2e.make_ca(d, "ca")
    e2e.make_cert(d, "sat", "ca", f"IP:10.99.0.{TAPS['zb']}")
    e2e.make_cert(d, "ctrl", "ca", "DNS:controller")
    p = lambda f: os.path.join(d, f)
    ctrl = ["--satellite-tls-cert", p("ctrl.crt"), "--satellite-tls-key", p("ctrl.key"), "--satellite-tls-ca", p("ca.crt")]
    return ctrl, (p("sat.crt"), p("sat.key"), p("ca.crt"))


@pytest.fixture(scope="module")
def two_zfs_clusters(zfs_image):
    private_network()
    bridge(TAPS.values())
    roots, ctrls, lins, vms = {}, {}, {}, {}
    certs = tempfile.mkdtemp(prefix="cairn-zship-pki-")
    try:
        ctrl_tls, sat_tls = pki(certs)
        for n in TAPS:
            roots[n] = tempfile.mkdtemp(prefix=f"cairn-zship-{n}-")
            # LUKS keys go to zb over TLS without --allow-plain-luks-keys.
            ctrls[n] = Controller(roots[n], extra_args=ctrl_tls if n in TLS else PLAIN_LUKS).start()
            lins[n] = linstor.Linstor(ctrls[n].url, timeout=CLIENT_TIMEOUT)
            lins[n].connect()
            ok(lins[n].controller_set_prop("Cairn/DefaultLayerStack", "STORAGE"))
        for n, tap in TAPS.items():  # booting at once
            vms[n] = Vm(n, None, os.path.join(roots[n], "cluster-secret"), disks=("1G", "1G"), mem=768, image=zfs_image,
                        tap=tap, zfs=True, tls=sat_tls if n in TLS else None).launch()
        for n, vm in vms.items():
            vm.wait_ready()
            assert "CAIRN-VM-NO-ZFS" not in vm.log(), vm.log()[-3000:]
            ok(lins[n].node_create(n, "SATELLITE", vm.ip, port=vm.port, com_type="SSL" if n in TLS else "PLAIN"))
            wait_for(f"{n} online", lambda: lins[n].node_list_raise().nodes[0].connection_status == "ONLINE", timeout=60)
            sh(vm, "zpool create -o ashift=12 -O mountpoint=none -O compression=off tank /dev/vda && zfs create tank/thin")
            ok(lins[n].storage_pool_create(n, "zfsthin", "ZFS_THIN", "tank/thin"))
            status, _, body = ctrls[n].request("POST", f"/v1/physical-storage/{n}", {
                "provider_kind": "LVM_THIN", "device_paths": ["/dev/vdb"], "pool_name": "thin",
                "with_storage_pool": {"name": "lvmthin"}})
            assert status == 201, body
        ids = {n: lins[n].controller_props()[0].properties["Cluster/LocalID"] for n in TAPS}
        ok(lins["za"].remote_create_linstor("b", ctrls["zb"].url, cluster_id=ids["zb"]))
        ok(lins["zb"].remote_create_linstor("a", ctrls["za"].url, cluster_id=ids["za"]))
        clusters = []
        for n in TAPS:
            c = type("C", (), {})()
            c.ctrl, c.lin, c.vm, c.remote, c.tls = ctrls[n], lins[n], vms[n], REMOTE[n], n in TLS
            clusters.append(c)
        yield clusters
    finally:
        shutil.rmtree(certs, ignore_errors=True)
        for n in TAPS:
            if n in ctrls:
                _teardown(lins.get(n), ctrls[n], [vms[n]] if n in vms else [], roots[n])
            elif n in roots:
                shutil.rmtree(roots[n], ignore_errors=True)


def volume(a, rsc, mib, pool):
    """Definition `rsc` with one volume of `mib` MiB and its resource on za."""
    ok(a.lin.resource_dfn_create(rsc))
    ok(a.lin.volume_dfn_create(rsc, mib * MIB, storage_pool=pool))
    ok(a.lin.resource_create([linstor.ResourceData("za", rsc, storage_pool=pool)]))


def ship(a, b, rsc, dst, how, before=()):
    """Ships `rsc` of cluster `a` into `dst` on b's node, `how` ("full" or
    "incremental") as the reply says, and the stream in TLS exactly when
    b's satellite runs with TLS; the shipment once it ended well
    (`before`: the earlier ones)."""
    replies = ok(a.lin.backup_ship(a.remote, rsc, dst, dst_node=b.vm.name))
    assert any(how in r.message for r in replies), [r.message for r in replies]
    assert any(STREAM[b.tls] in (r.details or "") for r in replies), [r.details for r in replies]
    ships = e2e.shipped(a, a.remote, rsc, len(before) + 1, timeout=180)
    [new] = [s for s in ships if s["id"] not in [x["id"] for x in before]]
    return new


def restore(b, rsc, snap, to):
    """Restores snapshot `snap` of `rsc` on B into the new definition `to`."""
    ok(b.lin.resource_dfn_create(to))
    for what in ("snapshot-restore-volume-definition", "snapshot-restore-resource"):
        status, _, body = b.ctrl.request("POST", f"/v1/resource-definitions/{rsc}/{what}/{snap}", {"to_resource": to})
        assert status == 200, body


def ship_and_compare(a, b, rsc, dst, src, dev_of, landed, before=()):
    """Ships `rsc` (device `src` on a's node) into `dst` on b's: full when
    `before` (the earlier shipments) is empty, else incremental on the
    last of them. Waits until B holds the snapshot under its name
    (`landed(snap)`), then compares with the source by sha256: after a
    full ship the resource B restored, after an incremental the snapshot
    restored into a new definition (`dev_of(definition)`: its device).
    Answers the shipment."""
    want = digest(a.vm, src)
    shipment = ship(a, b, rsc, dst, "incremental" if before else "full", before)
    snap = shipment["origin_snap"]
    if before:
        assert shipment["based_on_id"].endswith(before[-1]["origin_snap"]), shipment
    count = len(before) + 1
    wait_for(f"{count} snapshots of {dst} on B",
             lambda: len(b.lin.snapshot_dfn_list_raise(filter_by_resources=[dst]).snapshots) == count)
    wait_for("the received snapshot under its name", lambda: landed(snap), timeout=60)
    if before:
        check = f"{dst}c{count}"
        restore(b, dst, snap, check)
    else:
        check = dst
        wait_for(f"the restored resource on {b.vm.name}",
                 lambda: [r.node_name for r in b.lin.resource_list_raise(filter_by_resources=[dst]).resources] == [b.vm.name])
    wait_for(f"{check}'s device on {b.vm.name}", lambda: b.vm.sh(f"test -b {dev_of(check)}")[0] == 0, timeout=120)
    assert digest(b.vm, dev_of(check)) == want, f"{check} on {b.vm.name}"
    assert digest(a.vm, src) == want, "the source is untouched"
    return shipment


def test_full_then_incremental_zfs_send_receive_to_another_cluster(two_zfs_clusters):
    a, b = two_zfs_clusters
    volume(a, "zs", 32, "zfsthin")
    src = "/dev/zvol/tank/thin/zs_00000"
    zvol = lambda rd: f"/dev/zvol/tank/thin/{rd}_00000"
    landed = lambda snap: f"tank/thin/zd_00000@{snap}" in datasets(b.vm)
    sh(a.vm, f"dd if=/dev/urandom of={src} bs=1M count=6 oflag=direct conv=fsync status=none")

    # Full: `zfs send zs_00000@<snap>` into `zfs receive` on zb; B
    # registers the definition, the snapshot and a resource restored
    # from it (the received zvol itself).
    first = ship_and_compare(a, b, "zs", "zd", src, zvol, landed)
    # About the 6 MiB written: zfs send leaves out what was never written.
    assert 6 * 1024 * 1024 <= first["sent_bytes"] < 8 * 1024 * 1024, first
    assert [(s.rsc_name, s.snapshot_name) for s in b.lin.snapshot_dfn_list_raise(filter_by_resources=["zd"]).snapshots] \
        == [("zd", first["origin_snap"])]
    assert not [d for d in datasets(b.vm) if "cairn_recv_" in d]

    # More data, then an incremental ship based on the snapshot both hold:
    # `zfs send -i`, carrying about what changed; restored from it on B:
    # the source's data at the second snapshot.
    sh(a.vm, f"dd if=/dev/urandom of={src} bs=1M count=2 seek=10 oflag=direct conv=fsync status=none")
    second = ship_and_compare(a, b, "zs", "zd", src, zvol, landed, [first])
    assert second["sent_bytes"] < 3 * 1024 * 1024, second

    # Both ships went to zb's TLS listener (ship() checked the replies).
    # Back from B to za, whose satellite runs without TLS: the received
    # zvol (a snapshot of it) ships full in plain TCP and holds the same
    # data on za; B's satellite link being TLS changes nothing there.
    back = ship_and_compare(b, a, "zd", "zr", zvol("zd"), zvol, lambda snap: f"tank/thin/zr_00000@{snap}" in datasets(a.vm))
    assert 8 * 1024 * 1024 <= back["sent_bytes"] < 10 * 1024 * 1024, back


def lvs(vm):
    """name -> tags of the LVs in the thin pool's volume group."""
    out = sh(vm, "lvs --noheadings --separator '|' -o lv_name,lv_tags linstor_thin")
    return {n.strip(): t.strip() for n, t in (line.split("|") for line in out.splitlines() if "|" in line)}


def test_full_then_incremental_lvm_thin_ship_to_another_cluster_of_a_grown_volume(two_zfs_clusters):
    a, b = two_zfs_clusters
    volume(a, "ls", 64, "lvmthin")
    src = "/dev/linstor_thin/ls_00000"
    thin = lambda rd: f"/dev/linstor_thin/{rd}_00000"
    landed = lambda snap: lvs(b.vm).get(f"ld_00000_{snap}") == "cairn_snap"
    sh(a.vm, f"dd if=/dev/urandom of={src} bs=1M count=8 oflag=direct conv=fsync status=none")

    # Full: every chunk that is not zeros, into a thin volume on zb that
    # becomes the snapshot (tagged as one) once B registered it; B
    # restores the resource from it.
    first = ship_and_compare(a, b, "ls", "ld", src, thin, landed)
    assert first["sent_chunks"] == 8, first
    assert 8 * 1024 * 1024 <= first["sent_bytes"] < 9 * 1024 * 1024, first
    assert not [n for n, t in lvs(b.vm).items() if "cairn_receiving" in t]

    # The volume grows from 64 to 96 MiB and three places change (one of
    # them 4 KiB), one in the new part: the incremental reads and sends
    # only the chunks thin_delta names, onto a thin snapshot of the base
    # on zb grown to the new size first.
    status, _, body = a.ctrl.request("PUT", "/v1/resource-definitions/ls/volume-definitions/0", {"size_kib": 96 * MIB})
    assert status == 200, body
    wait_for("ls grown on za", lambda: sh(a.vm, f"blockdev --getsize64 {src}").strip() == str(96 << 20))
    for seek_kib, kib in ((3 * 1024, 4), (20 * 1024, 1024), (80 * 1024, 1024)):
        sh(a.vm, f"dd if=/dev/urandom of={src} bs=1K count={kib} seek={seek_kib} oflag=direct conv=fsync status=none")
    second = ship_and_compare(a, b, "ls", "ld", src, thin, landed, [first])
    assert second["sent_chunks"] == 3, second
    assert second["sent_bytes"] < 3 * 1024 * 1024 + 4096, second
    assert sh(b.vm, "blockdev --getsize64 /dev/linstor_thin/ldc2_00000").strip() == str(96 << 20)
    assert not [n for n, t in lvs(b.vm).items() if "cairn_receiving" in t]


def test_luks_volume_ships_with_its_key_and_opens_on_the_other_cluster(two_zfs_clusters):
    """A LUKS,STORAGE volume on LVM_THIN ships as its storage volume
    (ciphertext and LUKS header) with its key sealed by A's master key; B
    opens that key with the passphrase its remote for A holds (A's master
    passphrase, LINSTOR's way) and seals it again with its own: the
    resource B restores, and a snapshot of the incremental restored there,
    open with it and hold the source's data."""
    a, b = two_zfs_clusters
    ok(a.lin.crypt_create_passphrase("pw-a"))
    ok(b.lin.crypt_create_passphrase("pw-b"))
    ok(b.lin.remote_modify_linstor("a", passphrase="pw-a"))
    for c in (a, b):  # cheap key derivation under software emulation
        ok(c.lin.controller_set_prop("StorDriver/LuksFormatOptions", "--pbkdf pbkdf2 --pbkdf-force-iterations 1000"))
    ok(a.lin.resource_dfn_create("lx"))
    ok(a.lin.volume_dfn_create("lx", 32 * MIB, storage_pool="lvmthin"))
    status, _, body = a.ctrl.request("POST", "/v1/resource-definitions/lx/resources",
                                     [{"resource": {"node_name": "za", "props": {"StorPoolName": "lvmthin"}},
                                       "layer_list": ["luks", "storage"]}], timeout=180)
    assert status == 201, body
    mapper = lambda rd: f"/dev/mapper/Linstor-Crypt-{rd}_00000"
    src = mapper("lx")
    wait_for("lx open on za", lambda: a.vm.sh(f"test -b {src}")[0] == 0, timeout=120)
    sh(a.vm, f"dd if=/dev/urandom of={src} bs=1M count=6 oflag=direct conv=fsync status=none")
    landed = lambda snap: lvs(b.vm).get(f"lx_00000_{snap}") == "cairn_snap"
    first = ship_and_compare(a, b, "lx", "lx", src, mapper, landed)
    assert sh(b.vm, "cryptsetup isLuks /dev/linstor_thin/lx_00000 && echo luks").strip() == "luks"
    sh(a.vm, f"dd if=/dev/urandom of={src} bs=1M count=1 seek=20 oflag=direct conv=fsync status=none")
    second = ship_and_compare(a, b, "lx", "lx", src, mapper, landed, [first])
    assert second["sent_chunks"] <= 2, second
