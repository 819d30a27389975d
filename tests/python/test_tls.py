"""Mutual TLS between controller and satellite (port 3367)."""

import os
import shutil
import subprocess
import tempfile
import time

import linstor
import pytest

from conftest import Controller, SatelliteProc, loops_under, make_ca, make_cert, ok, wait_for


@pytest.fixture
def pki():
    if shutil.which("openssl") is None:
        raise RuntimeError("the TLS test needs the openssl command")
    d = tempfile.mkdtemp(prefix="cairn-pki-")
    make_ca(d, "ca")
    make_ca(d, "rogue")
    make_cert(d, "sat", "ca", "IP:127.0.10.20")
    make_cert(d, "ctrl", "ca", "DNS:controller")
    make_cert(d, "badctrl", "rogue", "DNS:controller")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_satellite_over_mutual_tls(pki):
    if os.geteuid() != 0:
        raise RuntimeError("needs root for loop devices")
    root = tempfile.mkdtemp(prefix="cairn-tls-")
    p = lambda f: os.path.join(pki, f)
    dirs = {n: os.path.join(root, n) for n in ("ctrl", "rogue", "plain")}
    for d in dirs.values():
        os.makedirs(d)
    tls_args = lambda who: ["--satellite-tls-cert", p(f"{who}.crt"), "--satellite-tls-key", p(f"{who}.key"), "--satellite-tls-ca", p("ca.crt")]
    ctrl = Controller(dirs["ctrl"], extra_args=tls_args("ctrl")).start()
    rogue = Controller(dirs["rogue"], extra_args=tls_args("badctrl")).start()
    plain = Controller(dirs["plain"]).start()
    secret = os.path.join(root, "ctrl", "cluster-secret")
    for c in (rogue, plain):  # the same secret, so only TLS decides
        shutil.copy(secret, os.path.join(c.data_dir, "cluster-secret"))
    sat = SatelliteProc("tls1", "127.0.10.20", os.path.join(root, "tls1"), secret, port=3367,
                        extra_args=["--tls-cert", p("sat.crt"), "--tls-key", p("sat.key"), "--tls-ca", p("ca.crt")]).start()
    try:
        lin = ctrl.client()
        ok(lin.node_create("tls1", "SATELLITE", "127.0.10.20", com_type="SSL", port=3367))
        ok(lin.storage_pool_create("tls1", "DfltStorPool", "FILE_THIN", os.path.join(root, "tls1", "pool")))
        wait_for("TLS satellite online", lambda: lin.node_list_raise().nodes[0].connection_status == "ONLINE")
        ok(lin.resource_dfn_create("secure", layer_list=["storage"]))  # no DRBD module here
        ok(lin.volume_dfn_create("secure", 4096))
        ok(lin.resource_create([linstor.ResourceData("tls1", "secure")]))
        assert lin.volume_list_raise().resources[0].volumes[0].device_path.startswith("/dev/loop")
        # A controller whose client certificate is from another CA, and one
        # without TLS, never get through.
        for other in (rogue, plain):
            l2 = other.client()
            ok(l2.node_create("tls1", "SATELLITE", "127.0.10.20", com_type="SSL", port=3367))
        time.sleep(2.5)
        for other in (rogue, plain):
            assert other.client().node_list_raise().nodes[0].connection_status == "OFFLINE"
        # The rogue controller did try, and the satellite turned it away.
        assert "TLS handshake refused" in sat.log()
        assert "no satellite TLS certificate configured" in plain.log()
        ok(lin.resource_dfn_delete("secure"))
    finally:
        for c in (ctrl, rogue, plain):
            c.stop()
        sat.stop()
        for dev in loops_under(root):
            subprocess.run(["losetup", "--detach", dev["name"]], check=False)
        shutil.rmtree(root, ignore_errors=True)
