"""Benchmarks of real replication in the three-VM tier (not run by the
suite; numbers go to docs/BENCHMARKS.md):

    CAIRN_BIN=target/debug/cairn .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/vm/bench_drbd.py

(`CAIRN_BENCH_RUNS`: the spawns per side, default 5.)

1. 3-replica spawn of a 64 MiB thin volume until every replica is UpToDate
   in REST, against the same DRBD work done by hand on the same VMs at
   once (lvcreate, .res, create-md, the day-0 `drbdmeta set-gi` calls,
   up, wait until all are UpToDate).
2. A primary's VM killed while it holds the device open: time until a
   survivor has promoted and written.
3. Resync throughput (the initial sync of a thick FILE volume, from d1's
   events2 timestamps) against the raw throughput of the VMs' link (nc
   over TCP).
4. Node evacuate of d1 holding 10 replicated thin volumes (2 replicas on
   d1 and d2, the tiebreaker on d3; CAIRN_BENCH_EVAC_MIB each, default
   256 as the issue asks, all written), until d1 holds nothing and d3 is UpToDate everywhere,
   against the raw resync of the same data on the same VMs (`drbdsetup
   invalidate` on d3: a full resync from its peer, nothing else).
5. Toggle-disk of a diskless replica (d1) to a thin disk until UpToDate,
   against `drbdsetup invalidate` of the same replica afterwards."""

import os
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import linstor

from conftest import ok, wait_for
from test_vm_drbd import device, disk_states, synced, view

MIB = 1024
RUNS = int(os.environ.get("CAIRN_BENCH_RUNS", "5"))
# Ten 256 MiB volumes written in full, on each of two nodes, with thin
# metadata beside them: the sparse 1 GiB disk of the tests is too small.
DRBD_DISK = "3G"


def report(what, values, unit="s"):
    print(f"BENCH {what}: median {statistics.median(values):.2f} {unit} (runs: {', '.join(f'{v:.2f}' for v in values)})")


def sh(vm, cmd, timeout=300):
    rc, out = vm.sh(cmd, timeout=timeout)
    assert rc == 0, (cmd, out)
    return out


def bare_drbd(c, name, minor, port):
    """The same work as Cairn's 3-replica thin spawn, by hand, on the three
    VMs at once: lvcreate, .res, create-md, the day-0 generation ids
    (`drbdmeta set-gi`: d1 all 32 node ids as the chosen replica, d2 and d3
    their own), up, then wait until every replica is UpToDate."""
    hosts = "".join(f"  on {n} {{ node-id {i}; address 10.99.0.{i + 1}:{port}; volume 0 {{ device minor {minor}; "
                    f"disk /dev/linstor_thin/{name}; meta-disk internal; }} }}\n" for i, n in enumerate(c.vms))
    res = f"resource {name} {{\n  net {{ protocol C; }}\n{hosts}  connection-mesh {{ hosts {' '.join(c.vms)}; }}\n}}\n"
    day0, current = "51C2E7A9B3D0F148", "3A5F0C2B9E1D4C66"
    dev = f"/dev/linstor_thin/{name}"

    def one(i, vm):
        if i == 0:
            gi = "; ".join(f"drbdmeta --force --node-id {n} {minor} v09 {dev} internal set-gi "
                           + (f"{current}:{day0}:::1:1" if n == 0 else f":{day0}::::") for n in range(32))
        else:
            gi = f"drbdmeta --force --node-id {i} {minor} v09 {dev} internal set-gi {day0}::::1:1"
        sh(vm, f"lvcreate -q -V {64 * 1024 + 4096}k -T linstor_thin/thin -n {name} >/dev/null && mkdir -p /etc/bare "
               f"&& printf '%s' '{res}' > /etc/bare/{name}.res && printf 'global {{ usage-count no; }}\\ninclude \"/etc/bare/*.res\";\\n' > /etc/bare/bare.conf "
               f"&& drbdadm -c /etc/bare/bare.conf create-md --force --max-peers 7 {name} >/dev/null 2>&1 && {{ {gi}; }} >/dev/null "
               f"&& drbdadm -c /etc/bare/bare.conf up {name} "
               f"&& until [ $(drbdsetup status {name} | grep -c 'UpToDate') = 3 ]; do sleep 0.1; done")

    t = time.time()
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda a: one(*a), enumerate(c.vms.values())))
    elapsed = time.time() - t
    for vm in c.vms.values():
        sh(vm, f"drbdsetup down {name} && lvremove -qq -f linstor_thin/{name}")
    return elapsed


def test_spawn_to_uptodate_vs_bare_drbdadm(drbd_cluster):
    c = drbd_cluster
    ok(c.lin.resource_group_create("bench", place_count=3, storage_pool="thin"))
    ok(c.lin.volume_group_create("bench"))
    cairn, bare = [], []
    for i in range(RUNS):
        t = time.time()
        print(f"spawn b{i} at {time.strftime('%H:%M:%S', time.gmtime(t))}.{int(t % 1 * 1000):03d} UTC", flush=True)
        ok(c.lin.resource_group_spawn("bench", f"b{i}", [64 * MIB]))
        # As the hand-made side waits: every replica UpToDate and connected
        # to both peers (stamped thin replicas start UpToDate on their own).
        wait_for("UpToDate and connected", lambda: all(
            r["volumes"][0].get("state", {}).get("disk_state") == "UpToDate"
            and len(r["layer_object"]["drbd"]["connections"]) == 2
            and all(p["connected"] for p in r["layer_object"]["drbd"]["connections"].values())
            for r in view(c, f"b{i}").values()) and len(view(c, f"b{i}")) == 3, timeout=300)
        cairn.append(time.time() - t)
        if i == RUNS - 1:
            # Where the time went: each satellite's log from the spawn until
            # REST showed it done (its clock is the VM's: two seconds of
            # margin on both sides).
            since, until = (time.strftime("%H:%M:%S", time.gmtime(x)) for x in (t - 2, time.time() + 2))
            for n, vm in c.vms.items():
                print(f"{n}:\n" + sh(vm, f"awk 'substr($1, 12, 8) >= \"{since}\" && substr($1, 12, 8) <= \"{until}\"' "
                                         "/var/log/cairn-satellite.log | cut -c12-220"))
        ok(c.lin.resource_dfn_delete(f"b{i}"))
        # Each side starts on quiet VMs: the satellites' removal (down,
        # wipe-md, lvremove) done first.
        for vm in c.vms.values():
            wait_for("removed", lambda: vm.sh(f"lvs linstor_thin/b{i} >/dev/null 2>&1")[0] != 0, timeout=120)
        bare.append(bare_drbd(c, f"bare{i}", 2000 + i, 7700 + i))
    report("3-replica 64 MiB thin spawn to all UpToDate (cairn)", cairn)
    report("the same by hand with drbdadm", bare)
    print(f"BENCH ratio cairn/bare: {statistics.median(cairn) / statistics.median(bare):.2f}")


def test_failover_and_resync_throughput(drbd_cluster):
    c = drbd_cluster
    # Thick: the initial sync really runs (thin volumes skip it).
    ok(c.lin.resource_group_create("fo", place_count=3, storage_pool="thick"))
    ok(c.lin.volume_group_create("fo"))
    # Every event on each node from before the resource exists.
    for vm in c.vms.values():
        sh(vm, "(drbdsetup events2 --timestamps all < /dev/null > /tmp/fo.events2 2>&1 &)")
    ok(c.lin.resource_group_spawn("fo", "fo", [64 * MIB]))
    wait_for("UpToDate", lambda: set(disk_states(c, "fo").values()) == {"UpToDate"}, timeout=300)
    # Resync: the initial sync as the source's events saw it (the chosen
    # replica, whichever node that is).
    from datetime import datetime
    for n, vm in c.vms.items():
        ev = [line for line in sh(vm, "cat /tmp/fo.events2").splitlines() if " name:fo " in line]
        starts = [line.split()[0] for line in ev if "replication:SyncSource" in line]
        ends = [line.split()[0] for line in ev if "replication:Established" in line and "peer-disk:UpToDate" in line]
        if starts and ends:
            dt = (datetime.fromisoformat(ends[-1]) - datetime.fromisoformat(starts[0])).total_seconds()
            print(f"BENCH initial sync of a 64 MiB thick volume from {n} to two peers: {dt:.2f} s, {64 / dt:.1f} MiB/s per peer")
    # The link: 64 MiB over TCP from d1 to d2.
    c.vms["d2"].sh("(nc -l -p 5001 </dev/null >/dev/null 2>&1 &)")
    time.sleep(0.5)
    t = time.time()
    sh(c.vms["d1"], "dd if=/dev/zero bs=1M count=64 2>/dev/null | nc -w 5 10.99.0.2 5001")
    dt = time.time() - t
    print(f"BENCH raw link d1->d2, 64 MiB over TCP: {dt:.2f} s, {64 / dt:.1f} MiB/s")
    # Failover: d1 holds the device open (primary), its VM dies.
    dev = device(c, "fo", "d1")
    c.vms["d1"].sh(f"sleep 600 3>{dev} >/dev/null 2>&1 &")
    wait_for("d1 primary", lambda: view(c, "fo")["d1"]["state"]["in_use"] is True, timeout=30)
    d2 = device(c, "fo", "d2")
    t = time.time()
    c.vms["d1"].kill()
    while True:
        rc, _ = c.vms["d2"].sh(f"dd if=/dev/zero of={d2} bs=4k count=1 oflag=direct conv=fsync 2>/dev/null")
        if rc == 0:
            break
        assert time.time() - t < 120, "d2 never became writable"
        time.sleep(0.2)
    print(f"BENCH primary's VM killed until a survivor promoted and wrote: {time.time() - t:.2f} s")
    c.vms["d1"].start()
    wait_for("d1 back", lambda: c.lin.node_list_raise(filter_by_nodes=["d1"]).nodes[0].connection_status == "ONLINE", timeout=120)


def test_evacuate_against_raw_resync(drbd_cluster):
    c = drbd_cluster
    size = int(os.environ.get("CAIRN_BENCH_EVAC_MIB", "256"))
    names = [f"ev{i}" for i in range(10)]
    # Two thin replicas each on d1 and d2 (the auto-tiebreaker goes to d3).
    for n in names:
        ok(c.lin.resource_dfn_create(n))
        ok(c.lin.volume_dfn_create(n, size * MIB))
        ok(c.lin.resource_create([linstor.ResourceData(x, n, storage_pool="thin") for x in ("d1", "d2")]))
    for n in names:
        for x in ("d1", "d2"):
            wait_for(f"{n} connected on {x}", lambda: synced(c.vms[x], n, 2), timeout=300)
        sh(c.vms["d1"], f"dd if=/dev/urandom of={device(c, n, 'd1')} bs=1M count={size} oflag=direct conv=fsync 2>&1", timeout=600)
    t = time.time()
    ok(c.lin.node_evacuate("d1"))
    wait_for("d1 evacuated, d3 UpToDate everywhere", lambda: all(
        "d1" not in view(c, n) and view(c, n).get("d3", {}).get("volumes", [{}])[0].get("state", {}).get("disk_state") == "UpToDate"
        for n in names), timeout=1800)
    evac = time.time() - t
    print(f"BENCH evacuate: {evac:.1f} s", flush=True)
    # Raw: the same data resynced by DRBD alone, d3 invalidated on every
    # definition at once (a full resync from d2).
    t = time.time()
    for n in names:
        sh(c.vms["d3"], invalidate(n))
    for n in names:
        wait_for(f"{n} resynced", lambda: synced(c.vms["d3"], n, 1), timeout=1800)
    raw = time.time() - t
    print(f"BENCH evacuate d1 with 10 x {size} MiB thin replicas until d1 holds nothing: {evac:.1f} s; "
          f"raw resync of the same data (invalidate on d3): {raw:.1f} s; ratio {evac / raw:.2f}")
    ok(c.lin.node_restore("d1"))
    for n in names:
        ok(c.lin.resource_dfn_delete(n))


def test_toggle_disk_against_raw_resync(drbd_cluster):
    """The diskless tiebreaker on d1 of a definition with thin replicas on
    d2 and d3 (written in full) toggled to a thin disk, until d1 is
    UpToDate; against the raw resync of the same data (`invalidate` on
    d1)."""
    c = drbd_cluster
    size = int(os.environ.get("CAIRN_BENCH_EVAC_MIB", "256"))
    ok(c.lin.resource_dfn_create("tg"))
    ok(c.lin.volume_dfn_create("tg", size * MIB))
    ok(c.lin.resource_create([linstor.ResourceData(x, "tg", storage_pool="thin") for x in ("d2", "d3")]))
    for x in ("d2", "d3"):
        wait_for(f"tg connected on {x}", lambda: synced(c.vms[x], "tg", 2), timeout=300)
    sh(c.vms["d2"], f"dd if=/dev/urandom of={device(c, 'tg', 'd2')} bs=1M count={size} oflag=direct conv=fsync 2>&1", timeout=600)
    wait_for("d1 diskless and connected", lambda: synced_diskless(c.vms["d1"], "tg"), timeout=300)
    mark = sh(c.vms["d1"], "cut -d' ' -f1 /proc/uptime").strip()
    t = time.time()
    ok(c.lin.resource_toggle_disk("d1", "tg", storage_pool="thin"))
    wait_for("d1 UpToDate", lambda: synced(c.vms["d1"], "tg", 2), timeout=1800)
    toggle = time.time() - t
    # Where the time went: d1's kernel log for the resource since the toggle.
    for line in sh(c.vms["d1"], "dmesg").splitlines():
        m = re.match(r"\[\s*([0-9.]+)\]", line)
        if m and float(m.group(1)) >= float(mark) and " tg" in line:
            print(line)
    print(sh(c.vms["d1"], "grep -E ' tg|tg_0|/tg' /var/log/cairn-satellite.log | tail -40 | cut -c1-300"))
    t = time.time()
    sh(c.vms["d1"], invalidate("tg"))
    wait_for("d1 resynced", lambda: synced(c.vms["d1"], "tg", 2), timeout=1800)
    raw = time.time() - t
    print(f"BENCH toggle-disk of a {size} MiB replica to UpToDate: {toggle:.1f} s; raw resync (invalidate): {raw:.1f} s; "
          f"ratio {toggle / raw:.2f}")
    ok(c.lin.resource_dfn_delete("tg"))


def invalidate(rsc):
    """A full resync of the resource's first volume from its peers, by
    minor (Cairn's drbdadm configuration is its own, not /etc/drbd.conf)."""
    return f"drbdsetup invalidate $(drbdsetup status {rsc} --verbose | grep -o 'minor:[0-9]*' | head -1 | cut -d: -f2)"


def synced_diskless(vm, rsc):
    from test_vm_drbd import kernel_status
    st = kernel_status(vm, rsc)
    return st["devices"][0]["disk-state"] == "Diskless" and all(p["connection-state"] == "Connected" for p in st["connections"])
