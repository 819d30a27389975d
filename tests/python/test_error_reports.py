"""Error reports as LINSTOR has them: a satellite's failed command becomes a
report on that satellite, listed, filtered, shown and deleted through the
controller with python-linstor, counted in /metrics."""

import datetime
import io
import json
import re
import tarfile
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import ok, wait_for

ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{5}-\d{6}$")


def reports_of(lin, node, needle):
    return [r for r in lin.error_report_list(nodes=[node], with_content=True) if needle in (r.text or "")]


def too_big(c, rd):
    """A 64 TiB volume on n2's FILE pool: `fallocate` fails for real (the
    disk is not that large); the reply is the satellite's error."""
    ok(c.lin.resource_dfn_create(rd))
    ok(c.lin.volume_dfn_create(rd, 64 * 1024 ** 3))
    status, _, body = c.ctrl.request("POST", f"/v1/resource-definitions/{rd}/resources", [{"resource": {"node_name": "n2"}}])
    assert status >= 400 and any(x["ret_code"] < 0 for x in body), body


def test_a_failed_command_on_a_satellite_is_a_report(cluster):
    c = cluster
    too_big(c, "huge")
    got = wait_for("n2's report of the failed fallocate", lambda: reports_of(c.lin, "n2", "huge"), timeout=30)
    r = got[0]
    assert r.node_name == "n2" and r.module == "SATELLITE"
    assert ID.match(r.id), r.id
    assert r.exception == "CommandFailed", r.text
    assert "Exit code:" in r.text and "fallocate --length" in r.text and "Node:" in r.text, r.text
    assert "END OF ERROR REPORT." in r.text
    # The same failure seen again (observations, retries) is one report.
    c.ctrl.request("GET", "/v1/resources")
    assert len(reports_of(c.lin, "n2", "huge")) == 1

    # Lists: no text unless asked, filters by node and time.
    plain = c.lin.error_report_list(nodes=["n2"])
    assert any(p.id == r.id for p in plain) and all(p.text is None for p in plain)
    assert not [x for x in c.lin.error_report_list(nodes=["n1"]) if x.id == r.id]
    when = r.datetime
    later = when + datetime.timedelta(hours=1)
    earlier = when - datetime.timedelta(hours=1)
    assert not [x for x in c.lin.error_report_list(since=later) if x.id == r.id]
    assert not [x for x in c.lin.error_report_list(to=earlier) if x.id == r.id]
    assert [x for x in c.lin.error_report_list(since=earlier, to=later) if x.id == r.id]
    status, _, body = c.ctrl.request("GET", f"/v1/error-reports?node=n2&since={r._rest_data['error_time']}&to={r._rest_data['error_time']}")
    assert status == 200 and [x["filename"] for x in body] == [f"ErrorReport-{r.id}.log"], body
    # One id (python-linstor asks /v1/error-reports/{id}).
    shown = c.lin.error_report_list(ids=[r.id], with_content=True)
    assert len(shown) == 1 and shown[0].text == r.text
    status, _, body = c.ctrl.request("GET", "/v1/error-reports/00000000-00000-000000")
    assert (status, body) == (200, [])

    # Counted in /metrics (total and per node) and in the stats.
    status, _, text = c.ctrl.request("GET", "/metrics")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {frozenset(s.labels.items()): s.value for s in fams["linstor_error_reports_count"].samples}
    total = samples[frozenset()]
    assert total >= 1
    assert samples[frozenset({("hostname", "n2"), ("module", "SATELLITE")})] >= 1
    status, _, stats = c.ctrl.request("GET", "/v1/stats/error-reports")
    assert status == 200 and stats["count"] == total

    # Delete by id, then a second failure by a PATCH filter.
    rc = c.lin.error_report_delete(ids=[r.id])
    assert any("Deleted 1 error-report(s)" in x.message for x in rc), [x.message for x in rc]
    assert not reports_of(c.lin, "n2", "huge")
    too_big(c, "huge2")
    second = wait_for("the second report", lambda: reports_of(c.lin, "n2", "huge2"), timeout=30)[0]
    rc = c.lin.error_report_delete(nodes=["n2"], since=second.datetime - datetime.timedelta(seconds=2))
    assert any("n2" in x.message and "Deleted" in x.message for x in rc), [x.message for x in rc]
    assert not reports_of(c.lin, "n2", "huge2")
    rc = c.lin.error_report_delete(ids=["00000000-00000-000000"])
    assert [x.message for x in rc] == ["No error reports deleted."]
    ok(c.lin.resource_dfn_delete("huge"))
    ok(c.lin.resource_dfn_delete("huge2"))


def test_sos_report_is_a_tar_gz_without_secrets(cluster, s3_server):
    c, s3 = cluster, s3_server
    ok(c.lin.resource_dfn_create("sosrd"))
    ok(c.lin.resource_dfn_modify("sosrd", {"DrbdOptions/Net/shared-secret": "drbd-secret-4711"}))
    ok(c.lin.crypt_create_passphrase("master-pass-4711"))
    ok(c.lin.remote_create_s3("sosremote", s3.endpoint, s3.region, s3.bucket, s3.access_key, s3.secret_key, use_path_style=True))
    too_big(c, "sosbig")  # a satellite report for the archive
    wait_for("n2's report", lambda: reports_of(c.lin, "n2", "sosbig"), timeout=30)

    status, _, body = c.ctrl.request("GET", "/v1/sos-report?nodes=n1,n2")
    assert status == 201 and body[0]["message"].startswith("SOS Report created on Controller: "), body
    path = body[0]["obj_refs"]["path"]
    assert path.endswith(".tar.gz") and open(path, "rb").read(2) == b"\x1f\x8b"

    req = urllib.request.Request(c.ctrl.url + "/v1/sos-report/download?exclude=n1")
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert re.match(r"attachment; filename=sos_.*\.tar\.gz$", r.headers["Content-Disposition"]), r.headers
        data = r.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
        names = t.getnames()
        files = {n.split("/", 1)[1]: t.extractfile(n).read().decode() for n in names}
    assert "controller/version.txt" in files and "controller/log.txt" in files, names
    assert "n2/version.txt" in files and "n2/drbdsetup-status.txt" in files and "n3/version.txt" in files, names
    assert not any(n.startswith("n1/") for n in files), names  # excluded
    assert any(n.startswith("n2/error-reports/ErrorReport-") and "sosbig" in v for n, v in files.items()), names
    db = json.loads(files["controller/database.json"])
    tables = {t["name"]: t["data"] for t in db["tables"]}
    assert any(d["name"] == "sosrd" for d in tables["rsc_dfn"]) and tables["remote"], tables.keys()
    everything = "\n".join(files.values())
    for secret in ("drbd-secret-4711", s3.access_key, s3.secret_key, "master-pass-4711"):
        assert secret not in everything, secret
    assert "<redacted>" in files["controller/database.json"]
    ok(c.lin.resource_dfn_delete("sosrd"))
    ok(c.lin.resource_dfn_delete("sosbig"))


def test_cli_err_list_show_delete(cluster):
    import os
    import subprocess
    from conftest import BIN
    c = cluster

    def cairn(*args):
        env = dict(os.environ, LS_CONTROLLERS=c.ctrl.url)
        p = subprocess.run([BIN, "--no-color", *args], capture_output=True, text=True, env=env, timeout=120)
        return p.returncode, p.stdout, p.stderr

    too_big(c, "clibig")
    r = wait_for("n2's report", lambda: reports_of(c.lin, "n2", "clibig"), timeout=30)[0]
    code, out, err = cairn("err", "list", "--nodes", "n2", "--since", "1h")
    assert code == 0, err
    row = next(line for line in out.splitlines() if r.id in line)
    assert "S|n2" in row and "CommandFailed: Failed to create volume" in row, out
    code, out, _ = cairn("err", "list", "--to", "2000-01-01")
    assert code == 0 and r.id not in out
    code, out, _ = cairn("-m", "err", "list", "--report-id", r.id)
    assert code == 0 and [x["filename"] for x in json.loads(out)] == [f"ErrorReport-{r.id}.log"]
    code, out, _ = cairn("err", "show", r.id)
    assert code == 0 and out.startswith(f"ERROR REPORT {r.id}") and "fallocate --length" in out, out
    code, out, err = cairn("err", "delete", r.id)
    assert code == 0 and "Deleted 1 error-report(s)" in out, (out, err)
    code, out, _ = cairn("err", "list", "--nodes", "n2")
    assert r.id not in out
    code, _, err = cairn("err", "list", "--since", "3 fortnights")
    assert code != 0 and "unknown time unit" in err, err
    # sos-report create (on the controller) and download (here).
    code, out, err = cairn("sos-report", "create", "--nodes", "n1", "--no-controller")
    assert code == 0 and "SOS Report created on Controller: " in out, (out, err)
    code, out, err = cairn("sos", "download", "-e", "n1", "n3", "--", c.root)
    assert code == 0 and out.startswith("SOS report saved to "), (out, err)
    saved = out.strip().split("SOS report saved to ", 1)[1]
    assert os.path.dirname(saved) == c.root and re.match(r"sos_.*\.tar\.gz$", os.path.basename(saved)), saved
    with tarfile.open(saved, "r:gz") as t:
        parts = {n.split("/")[1] for n in t.getnames()}
    assert parts == {"controller", "n2"}, parts
    ok(c.lin.resource_dfn_delete("clibig"))
