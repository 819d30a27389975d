"""Benchmark of a zvol's create-to-device in the ZFS VM (not run by the
suite; numbers go to docs/BENCHMARKS.md):

    CAIRN_BIN=target/debug/cairn .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/vm/bench_zfs.py

A 64 MiB volume in the ZFS pool through python-linstor with the layer list
`storage` (a zvol and nothing above it; resource_create returns once the
satellite reports the device), against the bare
`zfs create -V 64M` plus `udevadm settle` until the /dev/zvol link exists,
on the same VM, alternating; the goal is a ratio of at most 1.5."""

import statistics
import time

import linstor

from conftest import ok
from test_vm_zfs import datasets, sh, wait_for, zfs  # noqa: F401 - the module's VM fixture

MIB = 1024
RUNS = 5


def test_create_to_device_against_bare_zfs(zfs):  # noqa: F811 - the fixture
    c = zfs
    cairn, bare = [], []
    for i in range(RUNS):
        rd = f"bench{i}"
        ok(c.lin.resource_dfn_create(rd))
        ok(c.lin.volume_dfn_create(rd, 64 * MIB, storage_pool="zfs"))
        t = time.monotonic()
        ok(c.lin.resource_create([linstor.ResourceData("zvm", rd, storage_pool="zfs", layer_list=["storage"])]))
        cairn.append(time.monotonic() - t)
        sh(c, f"test -b /dev/zvol/tank/thick/{rd}_00000")
        # The bare steps, timed inside the VM (no command-channel overhead).
        # (busybox's date has no %N: /proc/uptime, 10 ms steps.)
        out = sh(c, f"t0=$(cut -d' ' -f1 /proc/uptime); zfs create -V 64M tank/thick/raw{i} && udevadm settle -t 20 && "
                    f"test -b /dev/zvol/tank/thick/raw{i}; t1=$(cut -d' ' -f1 /proc/uptime); echo $t0 $t1")
        t0, t1 = (float(x) for x in out.split()[-2:])
        bare.append(t1 - t0)
    med_c, med_b = statistics.median(cairn), statistics.median(bare)
    print(f"BENCH zvol create-to-device: cairn median {med_c:.2f} s (runs: {', '.join(f'{v:.2f}' for v in cairn)}), "
          f"bare median {med_b:.2f} s (runs: {', '.join(f'{v:.2f}' for v in bare)}), ratio {med_c / med_b:.2f}")
    for i in range(RUNS):
        ok(c.lin.resource_dfn_delete(f"bench{i}"))
        sh(c, f"zfs destroy tank/thick/raw{i}")
    wait_for("all gone", lambda: datasets(c, "tank") == [])
