"""End to end: controller and three satellites as real processes, devices
on real loop files."""

import glob
import json
import os
import signal
import subprocess
import time

import linstor

import satlink
from conftest import BIN, SatelliteProc, err, free_port, loops_under, ok, sat_ip, wait_for

MiB = 1024 * 1024


def view(c, rsc):
    status, _, body = c.ctrl.request("GET", f"/v1/view/resources?resources={rsc}")
    assert status == 200, body
    return {r["node_name"]: r for r in body}


def blocksize(dev):
    return int(subprocess.run(["blockdev", "--getsize64", dev], capture_output=True, text=True, check=True).stdout)


def backing(dev):
    out = json.loads(subprocess.run(["losetup", "--json", "--list", dev], capture_output=True, text=True, check=True).stdout)
    return out["loopdevices"][0]["back-file"]


def volume_files(c, node, rsc, nr=0):
    """The files of volume `nr` of `rsc` in a node's pool directory."""
    pool = os.path.join(c.root, node, "pool")
    return sorted(glob.glob(os.path.join(pool, f"{rsc}_{nr:05d}_*.img")))


def make(c, rsc, size_kib, nodes, **kw):
    ok(c.lin.resource_dfn_create(rsc))
    ok(c.lin.volume_dfn_create(rsc, size_kib))
    return ok(c.lin.resource_create([linstor.ResourceData(n, rsc, **kw) for n in nodes]))


def test_devices_appear_with_the_right_size_when_the_call_returns(cluster):
    c = cluster
    make(c, "web", 16 * 1024, ["n1", "n2"])
    v = view(c, "web")  # right after the call returned (W13)
    assert set(v) == {"n1", "n2"}
    for node in ("n1", "n2"):
        vol = v[node]["volumes"][0]
        dev = vol["device_path"]
        assert dev and dev.startswith("/dev/loop"), vol
        assert blocksize(dev) == 16 * MiB
        assert [backing(dev)] == volume_files(c, node, "web")
        assert vol["usable_size_kib"] == 16 * 1024
        assert vol["state"]["disk_state"] == "UpToDate"
        assert v[node]["state"]["in_use"] is False
    assert v["n1"]["volumes"][0]["allocated_size_kib"] == 0  # FILE_THIN: sparse
    assert v["n2"]["volumes"][0]["allocated_size_kib"] == 16 * 1024  # FILE: allocated
    pools = {(p.node_name, p.name): p for p in c.lin.storage_pool_list_raise().storage_pools}
    fs = pools[("n1", "DfltStorPool")].free_space
    assert fs.total_capacity > 0 and 0 < fs.free_capacity <= fs.total_capacity


def test_data_written_through_a_device_reads_back(cluster):
    c = cluster
    make(c, "data", 8 * 1024, ["n3"])
    dev = view(c, "data")["n3"]["volumes"][0]["device_path"]
    pattern = os.urandom(MiB)
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, pattern, 3 * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(dev, os.O_RDONLY)
    try:
        assert os.pread(fd, MiB, 3 * MiB) == pattern
    finally:
        os.close(fd)
    with open(volume_files(c, "n3", "data")[0], "rb") as f:
        f.seek(3 * MiB)
        assert f.read(MiB) == pattern


def test_grow_resizes_file_and_device_in_place(cluster):
    c = cluster
    make(c, "grow", 8 * 1024, ["n1", "n2"])
    before = {n: r["volumes"][0]["device_path"] for n, r in view(c, "grow").items()}
    fd = os.open(before["n1"], os.O_WRONLY)
    os.pwrite(fd, b"keep me", 0)
    os.fsync(fd)
    os.close(fd)
    ok(c.lin.volume_dfn_modify("grow", 0, size=24 * 1024))
    after = view(c, "grow")
    for n in ("n1", "n2"):
        dev = after[n]["volumes"][0]["device_path"]
        assert dev == before[n], "grow must not create a new device"
        assert blocksize(dev) == 24 * MiB
        assert after[n]["volumes"][0]["usable_size_kib"] == 24 * 1024
    with open(before["n1"], "rb") as f:
        assert f.read(7) == b"keep me"


def test_delete_leaves_nothing_behind(cluster):
    c = cluster
    make(c, "gone", 4 * 1024, ["n1", "n2", "n3"])
    ok(c.lin.volume_dfn_create("gone", 2048, volume_nr=1))
    assert len(loops_under(c.root)) == 6
    ok(c.lin.volume_dfn_delete("gone", 1))
    assert len(loops_under(c.root)) == 3
    assert volume_files(c, "n1", "gone", 1) == []
    ok(c.lin.resource_delete("n1", "gone"))
    assert volume_files(c, "n1", "gone") == []
    assert len(loops_under(c.root)) == 2
    ok(c.lin.resource_dfn_delete("gone"))
    assert loops_under(c.root) == []
    for n in ("n1", "n2", "n3"):
        assert os.listdir(os.path.join(c.root, n, "pool")) == []


def status_of(c, name):
    return c.lin.node_list_raise(filter_by_nodes=[name]).nodes[0].connection_status


def test_satellite_restart_goes_offline_then_online_with_the_same_devices(cluster):
    c = cluster
    make(c, "keep", 4 * 1024, ["n2"])
    dev = view(c, "keep")["n2"]["volumes"][0]["device_path"]
    c.sats["n2"].stop(signal.SIGKILL)
    wait_for("n2 offline", lambda: status_of(c, "n2") == "OFFLINE")
    # A change while the satellite is away is stored and warned about.
    ok(c.lin.resource_dfn_create("later"))
    ok(c.lin.volume_dfn_create("later", 2048))
    replies = c.lin.resource_create([linstor.ResourceData("n2", "later")])
    assert not [r for r in replies if r.is_error()]
    assert [r for r in replies if r.is_warning()], "an offline node must be warned about"
    c.sats["n2"].start()
    wait_for("n2 online", lambda: status_of(c, "n2") == "ONLINE")
    v = view(c, "keep")["n2"]["volumes"][0]
    assert v["device_path"] == dev, "the restarted satellite adopted its device"
    assert len([d for d in loops_under(c.root) if "/keep_00000_" in d["back-file"]]) == 1
    wait_for("the change made while offline", lambda: view(c, "later").get("n2", {}).get("volumes", [{}])[0].get("device_path"))


def test_a_name_reused_while_the_satellite_was_away_gets_a_new_empty_volume(cluster):
    c = cluster
    make(c, "reuse", 4 * 1024, ["n3"])
    dev = view(c, "reuse")["n3"]["volumes"][0]["device_path"]
    fd = os.open(dev, os.O_WRONLY)
    os.pwrite(fd, b"old tenant's data", 0)
    os.fsync(fd)
    os.close(fd)
    old = volume_files(c, "n3", "reuse")
    c.sats["n3"].stop(signal.SIGKILL)
    wait_for("n3 offline", lambda: status_of(c, "n3") == "OFFLINE")
    ok(c.lin.resource_dfn_delete("reuse"))
    make(c, "reuse", 8 * 1024, ["n3"])
    c.sats["n3"].start()
    wait_for("n3 online", lambda: status_of(c, "n3") == "ONLINE")
    wait_for("the new volume", lambda: view(c, "reuse")["n3"]["volumes"][0].get("device_path"))
    new = volume_files(c, "n3", "reuse")
    assert len(new) == 1 and new != old, (old, new)
    dev = view(c, "reuse")["n3"]["volumes"][0]["device_path"]
    assert blocksize(dev) == 8 * MiB
    with open(dev, "rb") as f:
        assert f.read(17) == bytes(17), "the new volume must not show the old one's data"
    assert len([d for d in loops_under(c.root) if "/reuse_" in d["back-file"]]) == 1


def test_controller_restart_resynchronises(cluster):
    c = cluster
    make(c, "cr", 4 * 1024, ["n1", "n3"])
    devs = {n: r["volumes"][0]["device_path"] for n, r in view(c, "cr").items()}
    c.ctrl.restart()
    lin = c.ctrl.client()
    wait_for("all online again", lambda: all(n.connection_status == "ONLINE" for n in lin.node_list_raise().nodes))
    wait_for("observed state back", lambda: all(r["volumes"][0].get("device_path") for r in view(c, "cr").values()))
    assert {n: r["volumes"][0]["device_path"] for n, r in view(c, "cr").items()} == devs
    ok(lin.resource_create([linstor.ResourceData("n2", "cr")]))
    assert view(c, "cr")["n2"]["volumes"][0]["device_path"].startswith("/dev/loop")
    assert len(loops_under(c.root)) == 3


def test_parallel_creates_on_one_node(cluster):
    c = cluster
    names = [f"par{i}" for i in range(12)]
    for n in names:
        ok(c.lin.resource_dfn_create(n))
        ok(c.lin.volume_dfn_create(n, 1024))
    import concurrent.futures
    def create(n):
        lin = linstor.Linstor(c.ctrl.url)
        lin.connect()
        try:
            return lin.resource_create([linstor.ResourceData("n1", n)])
        finally:
            lin.disconnect()
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        for replies in ex.map(create, names):
            ok(replies)
    status, _, body = c.ctrl.request("GET", "/v1/view/resources?nodes=n1")
    devs = [r["volumes"][0]["device_path"] for r in body if r["name"].startswith("par")]
    assert len(devs) == 12 and len(set(devs)) == 12 and all(devs)


def test_wrong_secret_name_and_version_are_reported(cluster):
    c = cluster
    wrong = os.path.join(c.root, "wrong-secret")
    with open(wrong, "w") as f:
        f.write("not-the-secret")
    bad = {
        "n4": SatelliteProc("n4", "127.0.10.4", os.path.join(c.root, "n4"), wrong),
        "n5": SatelliteProc("someone-else", "127.0.10.5", os.path.join(c.root, "n5"), c.ctrl.data_dir + "/cluster-secret"),
        "n6": SatelliteProc("n6", "127.0.10.6", os.path.join(c.root, "n6"), c.ctrl.data_dir + "/cluster-secret", env={"CAIRN_TEST_PROTO_VERSION": "99"}),
    }
    try:
        for i, (name, s) in enumerate(bad.items(), start=4):
            s.start()
            ok(c.lin.node_create(name, "SATELLITE", f"127.0.10.{i}", port=s.port))
        wait_for("n4 auth error", lambda: status_of(c, "n4") == "AUTHENTICATION_ERROR")
        wait_for("n5 hostname mismatch", lambda: status_of(c, "n5") == "HOSTNAME_MISMATCH")
        wait_for("n6 version mismatch", lambda: status_of(c, "n6") == "VERSION_MISMATCH")
        ok(c.lin.node_create("n7", "SATELLITE", "127.0.10.7"))  # nobody listens there
        time.sleep(1.5)
        assert status_of(c, "n7") == "OFFLINE"
    finally:
        for s in bad.values():
            s.stop()


def test_missing_tools_are_reported_and_nothing_is_half_created(cluster):
    c = cluster
    s = SatelliteProc("n8", "127.0.10.8", os.path.join(c.root, "n8"), c.ctrl.data_dir + "/cluster-secret", env={"PATH": "/nonexistent"})
    try:
        s.start()
        ok(c.lin.node_create("n8", "SATELLITE", "127.0.10.8", port=s.port))
        ok(c.lin.storage_pool_create("n8", "DfltStorPool", "FILE_THIN", os.path.join(c.root, "n8", "pool")))
        wait_for("n8 online", lambda: status_of(c, "n8") == "ONLINE")
        node = c.lin.node_list_raise(filter_by_nodes=["n8"]).nodes[0]
        assert "FILE_THIN" not in node.storage_providers
        assert any("losetup" in m for m in node.unsupported_providers["FILE_THIN"])
        ok(c.lin.resource_dfn_create("nt"))
        ok(c.lin.volume_dfn_create("nt", 1024))
        status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/nt/resources", [{"resource": {"node_name": "n8"}}])
        assert status == 500
        errors = [r for r in body if r["ret_code"] < 0 and (r["ret_code"] >> 62) & 3 == 3]
        assert errors and "cannot be served" in errors[0]["message"], body
        assert "losetup" in errors[0]["cause"]
        assert glob.glob(os.path.join(c.root, "n8", "pool", "*")) == []
    finally:
        s.stop()


def slow_node(c, name, addr, path, timeout):
    """Starts and registers a satellite whose tools come from PATH `path`
    and whose commands time out after `timeout` seconds, with a FILE_THIN
    pool; returns it once ONLINE (the caller stops it)."""
    s = SatelliteProc(name, addr, os.path.join(c.root, name), c.ctrl.data_dir + "/cluster-secret",
                      env={"PATH": path}, extra_args=["--command-timeout", str(timeout)])
    s.start()
    ok(c.lin.node_create(name, "SATELLITE", addr, port=s.port))
    ok(c.lin.storage_pool_create(name, "DfltStorPool", "FILE_THIN", os.path.join(c.root, name, "pool")))
    wait_for(f"{name} online", lambda: status_of(c, name) == "ONLINE")
    return s


def test_a_hung_command_times_out_with_the_tool_named(cluster):
    c = cluster
    fake = os.path.join(c.root, "fakebin")
    os.makedirs(fake)
    real = {}
    for tool in ("wipefs", "df", "truncate", "fallocate", "losetup"):
        real[tool] = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
    for tool, path in real.items():
        os.symlink(path, os.path.join(fake, tool))
    # losetup hangs: every create on this node hits the timeout.
    os.unlink(os.path.join(fake, "losetup"))
    with open(os.path.join(fake, "losetup"), "w") as f:
        f.write("#!/bin/sh\nif [ \"$1\" = --version ]; then exit 0; fi\nexec sleep 600\n")
    os.chmod(os.path.join(fake, "losetup"), 0o755)
    s = slow_node(c, "n9", "127.0.10.9", fake + ":/usr/bin:/bin", 2)
    try:
        ok(c.lin.resource_dfn_create("hang"))
        ok(c.lin.volume_dfn_create("hang", 1024))
        t = time.time()
        status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/hang/resources", [{"resource": {"node_name": "n9"}}])
        assert time.time() - t < 30
        assert status == 500, body
        e = [r for r in body if r["ret_code"] < 0 and (r["ret_code"] >> 62) & 3 == 3][0]
        assert "losetup" in e["cause"] and "2 s" in e["cause"], e
        assert "losetup" in e.get("details", "")
        # The satellite keeps serving: the node is still online and answers.
        assert status_of(c, "n9") == "ONLINE"
        ok(c.lin.resource_create([linstor.ResourceData("n1", "hang")]))
        assert view(c, "hang")["n1"]["volumes"][0]["device_path"]
    finally:
        s.stop()


def test_a_hung_command_on_one_resource_holds_up_no_other(cluster):
    """One losetup hangs (the file of resource hung0): creates of other
    resources on the same node all return, and well, while that create
    still waits; then it fails naming the timeout."""
    import threading
    c = cluster
    fake = os.path.join(c.root, "fakebin-hang")
    os.makedirs(fake)
    real = subprocess.run(["sh", "-c", "command -v losetup"], capture_output=True, text=True).stdout.strip()
    with open(os.path.join(fake, "losetup"), "w") as f:
        f.write("#!/bin/sh\ncase \"$*\" in *hung0_*) exec sleep 600;; esac\nexec %s \"$@\"\n" % real)
    os.chmod(os.path.join(fake, "losetup"), 0o755)
    # 30 s: the five other creates must all be done while the hung one
    # waits, also on a loaded machine.
    s = slow_node(c, "n10", "127.0.10.10", fake + ":/usr/sbin:/usr/bin:/sbin:/bin", 30)
    try:
        for name in ["hung0"] + [f"free{i}" for i in range(5)]:
            ok(c.lin.resource_dfn_create(name))
            ok(c.lin.volume_dfn_create(name, 1024))
        hung = {}

        def create_hung():
            hung["reply"] = c.ctrl.request("POST", "/v1/resource-definitions/hung0/resources", [{"resource": {"node_name": "n10"}}], timeout=90)

        t = threading.Thread(target=create_hung)
        t.start()
        wait_for("the hung losetup", lambda: subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True).returncode == 0)
        for i in range(5):
            ok(c.lin.resource_create([linstor.ResourceData("n10", f"free{i}")]))
            assert view(c, f"free{i}")["n10"]["volumes"][0]["device_path"].startswith("/dev/loop")
        assert t.is_alive(), "the other creates returned while the hung one still waits"
        t.join(60)
        status, _, body = hung["reply"]
        assert status == 500, body
        e = [r for r in body if r["ret_code"] < 0][0]
        assert "losetup" in e["cause"] and "30 s" in e["cause"], e
    finally:
        subprocess.run(["pkill", "-f", "sleep 600"])
        s.stop()


def test_cairn_up_runs_a_single_node_cluster(tmp_path):
    if os.geteuid() != 0:
        raise RuntimeError("needs root for loop devices")
    port, sat_port = free_port(), free_port("127.0.10.30")
    log = open(tmp_path / "up.log", "wb")
    up = [BIN, "up", "--rest-bind", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
          "--listen-address", "127.0.10.30", "--satellite-port", str(sat_port)]
    proc = subprocess.Popen(up, stdout=log, stderr=log, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        lin = linstor.Linstor(url)
        wait_for("cairn up to answer", lambda: proc.poll() is None and _connects(lin), timeout=30)
        wait_for("the node to be online", lambda: [n for n in lin.node_list_raise().nodes if n.connection_status == "ONLINE"])
        node = lin.node_list_raise().nodes[0].name
        nif = lin.node_list_raise().nodes[0].net_interfaces[0]
        assert (nif.address, nif.stlt_port) == ("127.0.10.30", sat_port), "registered where it listens"
        pools = lin.storage_pool_list_raise(filter_by_stor_pools=["DfltStorPool"]).storage_pools
        assert pools and pools[0].provider_kind == "FILE_THIN"
        ok(lin.resource_group_create("quick", place_count=1))
        ok(lin.resource_group_spawn("quick", "first", [1024 * 1024]))
        vols = lin.volume_list_raise().resources
        assert [r.node_name for r in vols] == [node]
        dev = vols[0].volumes[0].device_path
        assert dev.startswith("/dev/loop") and blocksize(dev) == 1024 * MiB
        ok(lin.resource_dfn_delete("first"))
        assert loops_under(str(tmp_path)) == []
        lin.disconnect()
        # A restart on another address moves the node with it.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        moved = free_port("127.0.10.31")
        proc = subprocess.Popen(up[:-4] + ["--listen-address", "127.0.10.31", "--satellite-port", str(moved)],
                                stdout=log, stderr=log, cwd=tmp_path)
        lin = linstor.Linstor(url)
        wait_for("cairn up to answer again", lambda: proc.poll() is None and _connects(lin), timeout=30)
        wait_for("the node online at its new address", lambda: [
            n for n in lin.node_list_raise().nodes
            if n.connection_status == "ONLINE" and (n.net_interfaces[0].address, n.net_interfaces[0].stlt_port) == ("127.0.10.31", moved)])
        assert [n.name for n in lin.node_list_raise().nodes] == [node], "the same node, not a second one"
        lin.disconnect()
        # Restarted without an address: it stays where it is registered.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        proc = subprocess.Popen(up[:-4], stdout=log, stderr=log, cwd=tmp_path)
        lin = linstor.Linstor(url)
        wait_for("cairn up to answer a third time", lambda: proc.poll() is None and _connects(lin), timeout=30)
        wait_for("the node online where it was", lambda: [
            n for n in lin.node_list_raise().nodes
            if n.connection_status == "ONLINE" and (n.net_interfaces[0].address, n.net_interfaces[0].stlt_port) == ("127.0.10.31", moved)])
        assert (tmp_path / "data" / "up-node").read_text().strip() == node
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        for d in loops_under(str(tmp_path)):
            subprocess.run(["losetup", "--detach", d["name"]], check=False)
    text = (tmp_path / "up.log").read_text(errors="replace")
    # A quiet first start: one summary line of what this host offers, no
    # warnings from probes of tools that are not installed.
    assert "\x1b[" not in text, "no colour codes in a log that is not a terminal"
    assert len([line for line in text.splitlines() if "storage DISKLESS" in line]) == 3, text
    assert " WARN " not in text, text


def test_cairn_up_refuses_wildcard_addresses_and_non_root(tmp_path):
    p = subprocess.run([BIN, "up", "--listen-address", "0.0.0.0", "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "--listen-address 0.0.0.0" in p.stderr, p.stderr
    os.chmod(tmp_path, 0o777)
    p = subprocess.run([BIN, "up", "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, timeout=30,
                       preexec_fn=lambda: os.setuid(65534))
    assert p.returncode != 0, p.stderr
    assert "needs root" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "d").exists(), "nothing started, nothing created"


def _connects(lin):
    try:
        lin.connect()
        return True
    except Exception:
        return False


def test_drbd_resources_are_refused_clearly_on_satellites_without_drbd(cluster):
    c = cluster
    # The node says what is missing.
    status, _, nodes = c.ctrl.request("GET", "/v1/nodes")
    for n in nodes:
        assert "DRBD" not in n["resource_layers"], n
        assert any("DRBD 9 kernel module" in why for why in n["unsupported_layers"]["DRBD"]), n
    ok(c.lin.resource_dfn_create("repl", layer_list=["drbd", "storage"]))
    ok(c.lin.volume_dfn_create("repl", 4096))
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/repl/resources",
                                     [{"resource": {"node_name": "n1"}}, {"resource": {"node_name": "n2"}}])
    assert status == 500, body
    assert body[0]["ret_code"] & 0x7FFF == 988, body  # FAIL_STLT_DOES_NOT_SUPPORT_LAYER
    assert body[0]["message"] == "Satellite 'n1' does not support the following layers: [DRBD]", body
    # Nothing was created, neither in the controller nor on the nodes.
    assert view(c, "repl") == {}
    assert volume_files(c, "n1", "repl") == [] and volume_files(c, "n2", "repl") == []
    # The autoplacer does not pick satellites that cannot run the layer.
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/repl/autoplace", {"select_filter": {"place_count": 3}})
    assert status == 500 and "does not support layer DRBD" in body[0]["cause"], body


def test_kernel_storage_this_host_lacks_is_reported_per_provider_and_layer(cluster):
    """These hosts have no device-mapper driver and no ZFS module: LVM, LUKS
    and ZFS say so (the VM tests run them for real)."""
    c = cluster
    status, _, nodes = c.ctrl.request("GET", "/v1/nodes?nodes=n1")
    n = nodes[0]
    for kind in ("ZFS", "ZFS_THIN"):
        assert kind not in n["storage_providers"]
        assert any("ZFS kernel module" in m or "zfsutils" in m for m in n["unsupported_providers"][kind]), n
    for kind in ("LVM", "LVM_THIN"):
        assert kind not in n["storage_providers"]
        assert any("device-mapper" in m or "lvm" in m for m in n["unsupported_providers"][kind]), n
    assert "LUKS" not in n["resource_layers"]
    assert any("device-mapper" in m or "cryptsetup" in m for m in n["unsupported_layers"]["LUKS"]), n
    # A pool of a kind the node cannot serve is refused with the reason.
    ok(c.lin.storage_pool_create("n1", "zpool1", "ZFS", "tank"))
    ok(c.lin.resource_dfn_create("zr", layer_list=["storage"]))
    ok(c.lin.volume_dfn_create("zr", 4096, storage_pool="zpool1"))
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/zr/resources",
                                     [{"resource": {"node_name": "n1", "props": {"StorPoolName": "zpool1"}}, "layer_list": ["storage"]}])
    assert any("ZFS" in (e.get("message", "") + e.get("cause", "")) for e in body), body


def test_a_restarted_satellite_still_fences_a_deposed_leader(tmp_path):
    """The newest leader epoch a satellite has seen is kept in its data
    directory (`leader-epoch`): after a restart of the satellite, a
    request of an older leader is still refused (403 "fenced")."""
    secret = tmp_path / "secret"
    secret.write_text("e" * 32)
    sat = SatelliteProc("ep1", sat_ip(77), str(tmp_path / "ep1"), str(secret)).start()
    url = f"http://{sat_ip(77)}:{sat.port}"

    def observe(epoch):
        s = satlink.Session(url, "e" * 32, satlink.PROTO, epoch=epoch)
        if s.open_status != 200:
            return s.open_status, s.open_body.decode()
        status, answer = s.request("POST", "/internal/v1/observe", b"{}")
        return status, answer.decode()

    try:
        assert observe(5)[0] == 200
        status, text = observe(4)
        assert status == 403 and "fenced" in text, (status, text)
        sat.stop()
        assert (tmp_path / "ep1" / "leader-epoch").read_text().strip() == "5"
        sat.start()
        status, text = observe(4)
        assert status == 403 and "a leader of epoch 5" in text, (status, text)
        assert observe(6)[0] == 200
    finally:
        sat.stop()
