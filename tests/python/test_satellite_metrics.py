"""The satellite's --metrics-bind listener: GET /metrics in the Prometheus
text format, without sign-in, on its own port and nothing else there; and
the satellite's --log-format json. The DRBD values themselves are checked
against real DRBD 9 in tests/vm/test_vm_drbd.py and against captured output
in cairn-storage's drbd::metrics tests."""

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import SatelliteProc, free_port


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def test_metrics_listener_serves_drbd_metrics_only_and_logs_are_json():
    d = tempfile.mkdtemp(prefix="cairn-satmetrics-")
    secret = os.path.join(d, "secret")
    with open(secret, "w") as f:
        f.write("metrics-test-secret\n")
    ip = "127.0.10.77"
    mport = free_port(ip)
    s = SatelliteProc("m1", ip, os.path.join(d, "sat"), secret,
                      extra_args=["--metrics-bind", f"{ip}:{mport}", "--log-format", "json"]).start()
    try:
        status, ctype, text = get(f"http://{ip}:{mport}/metrics")
        assert status == 200, text
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["drbd_resource_resources"].type == "gauge"
        # No DRBD resource runs on this host: a count of zero, no per-resource families.
        assert families["drbd_resource_resources"].samples[0].value == 0
        assert set(families) == {"drbd_resource_resources"}, set(families)
        # Only /metrics there; the control API is not reachable through it.
        assert get(f"http://{ip}:{mport}/v1/hello")[0] == 404
        # And /metrics is not on the controller's port (the cluster secret guards it).
        assert get(f"http://{ip}:{s.port}/metrics")[0] == 401
        s.stop()
        lines = [json.loads(line) for line in s.log().splitlines() if line.strip()]
        ready = [e for e in lines if e.get("message") == "satellite ready"]
        assert ready and ready[0]["metrics"] == f"{ip}:{mport}" and ready[0]["node"] == "m1", lines
        assert all(e["level"] in ("TRACE", "DEBUG", "INFO", "WARN", "ERROR") for e in lines)
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)
