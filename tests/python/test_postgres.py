"""The controller on PostgreSQL, and `cairn db export`/`import` moving a
cluster from SQLite to PostgreSQL and back (issue 19, items 1 and 2)."""

import json
import os
import signal
import subprocess

import pytest

from conftest import BIN, Controller, ok
from test_persistence import populate, snapshot


def cairn_db(*args):
    return subprocess.run([BIN, "db", *args], capture_output=True, text=True, timeout=60)


def test_controller_on_postgres_keeps_everything_across_restart(postgres, tmp_path):
    url = postgres.url("restart")
    c = Controller(str(tmp_path), extra_args=["--db-url", url]).start()
    try:
        lin = c.client()
        populate(lin)
        lin.disconnect()
        before = snapshot(c)
        c.restart()
        assert snapshot(c) == before
        c.stop(signal.SIGKILL)
        c.start()
        assert snapshot(c) == before, "acknowledged writes survive a SIGKILL"
        status, _, cfg = c.request("GET", "/v1/controller/config")
        assert status == 200
        assert cfg["db"]["connection_url"] == url.replace("postgres://", "postgresql://")
        assert not os.path.exists(tmp_path / "cairn.db"), "no SQLite file beside PostgreSQL"
        status, _, replies = c.request("POST", "/v1/controller/backup/db", {"backup_name": "b1"})
        assert status == 500 and "pg_dump" in replies[0]["message"], replies
        assert not os.path.exists(tmp_path / "b1.db")
        status, _, replies = c.request("POST", "/v1/controller/database/export", {"backup_name": "x1"})
        assert status == 201, replies
        assert tables(tmp_path / "x1.json")["node"], "the REST export reads PostgreSQL"
    finally:
        c.stop()


def test_a_bad_database_url_stops_the_start_with_the_reason(tmp_path):
    p = subprocess.run([BIN, "controller", "--rest-bind", "127.0.0.1:1", "--data-dir", str(tmp_path), "--db-url", "mysql://u:secret@db/x"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "invalid database URL" in p.stderr and "secret" not in p.stderr, p.stderr


def tables(path):
    with open(path) as f:
        doc = json.load(f)
    assert doc["data_version"] == "cairn-objects-1"
    return {t["name"]: t["data"] for t in doc["tables"]}


def test_sqlite_to_postgres_and_back_keeps_every_object(postgres, tmp_path):
    data = tmp_path / "ctrl"
    os.makedirs(data)
    os.makedirs(tmp_path / "ctrl2")
    c = Controller(str(data)).start()
    lin = c.client()
    populate(lin)
    ok(lin.resource_group_create("rg2", place_count=1, description="second"))
    ok(lin.resource_dfn_create("rd2", resource_group="rg2"))
    ok(lin.volume_dfn_create("rd2", 4096))
    lin.disconnect()
    before = snapshot(c)
    c.stop()

    # SQLite -> file -> PostgreSQL.
    e1, e2, e3 = (tmp_path / f"e{i}.json" for i in (1, 2, 3))
    p = cairn_db("export", "--data-dir", str(data), str(e1))
    assert p.returncode == 0, p.stderr
    assert os.stat(e1).st_mode & 0o077 == 0, "the export holds secrets: owner only"
    assert cairn_db("export", "--data-dir", str(data), str(e1)).returncode != 0, "an existing file is never overwritten"
    url = postgres.url("moved")
    p = cairn_db("import", "--db-url", url, str(e1))
    assert p.returncode == 0, p.stderr

    # The same controller (data directory, cluster secret) on PostgreSQL.
    on_pg = Controller(str(data), extra_args=["--db-url", url]).start()
    assert snapshot(on_pg) == before
    on_pg.stop()
    p = cairn_db("import", "--db-url", url, str(e1))
    assert p.returncode != 0 and "holds" in p.stderr, "a database in use is not imported into"

    # PostgreSQL -> file -> a new SQLite file.
    assert cairn_db("export", "--db-url", url, str(e2)).returncode == 0
    back = tmp_path / "back.db"
    p = cairn_db("import", "--db-path", str(back), str(e2))
    assert p.returncode == 0, p.stderr
    assert cairn_db("export", "--db-path", str(back), str(e3)).returncode == 0
    first = tables(e1)
    assert sum(len(rows) for rows in first.values()) > 10
    assert tables(e2) == first, "PostgreSQL holds every object as SQLite did"
    assert tables(e3) == first, "and so does the SQLite file made from it"

    on_sqlite = Controller(str(tmp_path / "ctrl2"), extra_args=["--db-path", str(back)]).start()
    try:
        assert snapshot(on_sqlite) == before
    finally:
        on_sqlite.stop()


def test_import_refuses_while_the_controller_runs_and_bad_files(controller, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"linstor_version": "1.33.0", "export_timestamp_ms": 0, "exported_from": "sql/h2",
                               "data_version": "v1_27_1", "tables": []}))
    p = cairn_db("import", "--data-dir", controller.data_dir, str(bad))
    assert p.returncode != 0 and "data version is 'v1_27_1'" in p.stderr, p.stderr
    good = tmp_path / "good.json"
    assert cairn_db("export", "--data-dir", controller.data_dir, str(good)).returncode == 0
    p = cairn_db("import", "--data-dir", controller.data_dir, "--replace", str(good))
    assert p.returncode != 0 and "a controller is running" in p.stderr, p.stderr


def test_a_running_cluster_moves_to_postgres_and_back_with_its_devices(cluster, postgres, tmp_path):
    """Real satellites keep their volumes (same devices, same data) while
    the controller moves SQLite -> PostgreSQL -> SQLite."""
    from conftest import dev_digest, wait_for, write_dev

    c = cluster
    ok(c.lin.resource_group_create("mv", place_count=2))
    ok(c.lin.volume_group_create("mv"))
    ok(c.lin.resource_group_spawn("mv", "mvol", ["8M"]))

    def devices(ctrl):
        status, _, v = ctrl.request("GET", "/v1/view/resources?resources=mvol")
        assert status == 200, v
        return {r["node_name"]: r["volumes"][0].get("device_path") for r in v}

    placed = wait_for("devices", lambda: (lambda d: d if len(d) == 2 and all(d.values()) else None)(devices(c.ctrl)))
    first = sorted(placed)[0]
    data = os.urandom(1 << 20)
    write_dev(placed[first], data)
    digest = dev_digest(placed[first], len(data))

    def serve(ctrl):
        lin = ctrl.client()
        wait_for("satellites online", lambda: all(n.connection_status == "ONLINE" for n in lin.node_list_raise().nodes))
        lin.disconnect()
        assert wait_for("devices", lambda: devices(ctrl) == placed and placed), "every replica keeps its device"
        assert dev_digest(placed[first], len(data)) == digest

    data_dir = c.ctrl.data_dir
    c.ctrl.stop()
    e1, e2, e3 = (tmp_path / f"run{i}.json" for i in (1, 2, 3))
    assert cairn_db("export", "--data-dir", data_dir, str(e1)).returncode == 0
    url = postgres.url("running")
    p = cairn_db("import", "--db-url", url, str(e1))
    assert p.returncode == 0, p.stderr
    on_pg = Controller(data_dir, extra_args=["--db-url", url]).start()
    try:
        serve(on_pg)
    finally:
        on_pg.stop()
    assert cairn_db("export", "--db-url", url, str(e2)).returncode == 0
    back = tmp_path / "back.db"
    p = cairn_db("import", "--db-path", str(back), str(e2))
    assert p.returncode == 0, p.stderr
    on_sqlite = Controller(data_dir, extra_args=["--db-path", str(back)]).start()
    try:
        serve(on_sqlite)
        assert cairn_db("export", "--db-path", str(back), str(e3)).returncode == 0
    finally:
        on_sqlite.stop()
    assert tables(e2) == tables(e1) and tables(e3) == tables(e1), "every object identical after the round trip"


def test_tls_to_postgresql(postgres, tmp_path):
    """The controller talks TLS to a PostgreSQL server that only accepts
    TLS (`hostssl` in pg_hba.conf): libpq's sslmode/sslrootcert in the
    URL; the server's certificate is verified (a CA that did not sign it
    is refused), and TLS required without a CA to check against is
    refused before any connection."""
    import shutil as sh
    from test_tls import make_ca, make_cert
    d = str(tmp_path)
    make_ca(d, "ca")
    make_ca(d, "rogue")
    make_cert(d, "pg", "ca", f"IP:{postgres.IP}")
    url = postgres.url("tlsdb")
    data = os.path.join(postgres.dir, "data")
    for f in ("pg.crt", "pg.key"):
        sh.copy(os.path.join(d, f), os.path.join(data, f))
        os.chmod(os.path.join(data, f), 0o600)
        if postgres.user:
            sh.chown(os.path.join(data, f), postgres.user, postgres.user)
    with open(os.path.join(data, "pg_hba.conf"), "w") as f:
        f.write("local all all trust\nhostssl all all 127.0.0.0/8 trust\n")

    def sql(query):
        p = postgres.run("psql", "-h", postgres.dir, "-p", str(postgres.port), "-U", "cairn", "-d", "tlsdb", "-Atc", query)
        return p.stdout.strip()

    sql("ALTER SYSTEM SET ssl = on")
    sql("ALTER SYSTEM SET ssl_cert_file = 'pg.crt'")
    sql("ALTER SYSTEM SET ssl_key_file = 'pg.key'")
    sql("SELECT pg_reload_conf()")
    assert sql("SHOW ssl") == "on"

    def start(db_url, name):
        os.makedirs(tmp_path / name)
        return Controller(str(tmp_path / name), extra_args=["--db-url", db_url]).start()

    ca = os.path.join(d, "ca.crt")
    c = start(f"{url}?sslmode=verify-full&sslrootcert={ca}", "good")
    try:
        lin = c.client()
        ok(lin.resource_group_create("over-tls"))
        lin.disconnect()
        assert sql("SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                   "WHERE application_name = 'cairn-controller' AND ssl") != "0"
    finally:
        c.stop()
    # Plain connections are not accepted by this server.
    with pytest.raises(RuntimeError):
        start(url, "plain")
    # A CA that did not sign the server's certificate.
    with pytest.raises(RuntimeError) as e:
        start(f"{url}?sslmode=verify-full&sslrootcert={os.path.join(d, 'rogue.crt')}", "rogue")
    assert "certificate" in str(e.value).lower(), e.value
    # TLS required, nothing to verify the server with.
    with pytest.raises(RuntimeError) as e:
        start(f"{url}?sslmode=require", "noca")
    assert "needs sslrootcert" in str(e.value), e.value
