"""Backup schedules with python-linstor against a real controller: the
schedule routes and LINSTOR's validation errors, switching a schedule on
and off per definition, group and controller (and the views of it), and
the scheduler running real backups to a real S3 server (moto) with a fast
clock (CAIRN_SCHEDULE_CLOCK_SCALE=60: a cron minute per real second):
full backups on full_cron, incrementals on inc_cron, keep_remote and
keep_local pruning old backups and snapshots."""

import os
import subprocess
import time

import pytest

from conftest import BIN, err, ok, wait_for
from test_backups import backups, bcluster, make_volume  # noqa: F401 (bcluster is a fixture)

FAIL_INVLD_SCHEDULE_NAME, FAIL_NOT_FOUND_REMOTE, FAIL_NOT_FOUND_SCHEDULE, FAIL_EXISTS_SCHEDULE = 241, 321, 323, 528
FAIL_NOT_FOUND_RSC_DFN, WARN_NOT_FOUND = 301, 3000
MASK_SCHEDULE = 0x540000


def test_schedules_are_created_listed_modified_and_deleted_with_linstors_errors(controller, lin):
    ok(lin.schedule_create("nightly", "0 2 * * *", keep_local=3, keep_remote=7, on_failure="RETRY",
                           incremental_cron="0 * * * *", max_retries=2))
    created = lin.schedule_list().schedules
    assert [(s.schedule_name, s.full_cron, s.inc_cron, s.keep_local, s.keep_remote, s.on_failure, s.max_retries)
            for s in created] == [("nightly", "0 2 * * *", "0 * * * *", 3, 7, "RETRY", 2)]
    err(lin.schedule_create("Nightly", "0 3 * * *"), FAIL_EXISTS_SCHEDULE)
    err(lin.schedule_create("bad name!", "0 3 * * *"), FAIL_INVLD_SCHEDULE_NAME)
    # Five fields (LINSTOR's UNIX cron), each checked.
    for bad in ("0 2 * *", "61 2 * * *", "0 0 2 * * *", "every day"):
        replies = lin.schedule_create("other", bad)
        assert replies[0].is_error() and "full-cron" in replies[0].message, (bad, replies)
        assert replies[0].ret_code & MASK_SCHEDULE == MASK_SCHEDULE
    replies = lin.schedule_create("other", "0 3 * * *", incremental_cron="x")
    assert replies[0].is_error() and "inc-cron" in replies[0].message
    assert [s.schedule_name for s in lin.schedule_list().schedules] == ["nightly"]

    # Modify: an empty inc-cron removes it, a negative count unsets it.
    ok(lin.schedule_modify("NIGHTLY", full_cron="30 1 * * 0", incremental_cron="", keep_local=-1, on_failure="skip"))
    s = lin.schedule_list().schedules[0]
    assert (s.full_cron, s.inc_cron, s.keep_local, s.keep_remote, s.on_failure) == ("30 1 * * 0", None, None, 7, "SKIP")
    assert lin.schedule_modify("nightly", full_cron="30 1 * *")[0].is_error()
    err(lin.schedule_modify("ghost", keep_local=1), FAIL_NOT_FOUND_SCHEDULE)

    # Switching needs the remote and the schedule.
    err(lin.backup_schedule_enable("nowhere", "nightly"), FAIL_NOT_FOUND_REMOTE)
    ok(lin.crypt_create_passphrase("master-pw"))
    ok(lin.remote_create_linstor("far", "http://127.0.0.2:3370"))
    err(lin.backup_schedule_enable("far", "ghost"), FAIL_NOT_FOUND_SCHEDULE)
    err(lin.backup_schedule_enable("far", "nightly", resource_name="nord"), FAIL_NOT_FOUND_RSC_DFN)

    # On for the controller, off for one definition, on for a group.
    ok(lin.resource_group_create("grp"))
    ok(lin.resource_dfn_create("rd1", resource_group="grp"))
    ok(lin.resource_dfn_create("rd2"))
    ok(lin.backup_schedule_enable("far", "nightly"))
    ok(lin.backup_schedule_disable("far", "nightly", resource_name="rd1"))
    ok(lin.backup_schedule_enable("far", "nightly", resource_group_name="grp"))
    assert controller.request("GET", "/v1/view/schedules-by-resource/rd1")[2] == {
        "data": [{"remote_name": "far", "schedule_name": "nightly", "ctrl": True, "rsc_grp": True, "rsc_dfn": False}]}
    status, _, view = controller.request("GET", "/v1/view/schedules-by-resource")
    assert status == 200
    rows = {(r["rsc_name"], r.get("remote_name"), r.get("reason")) for r in view["data"]}
    # rd1 is switched off itself; rd2 is on by the controller but has no resources.
    assert rows == {("rd1", "far", "disabled"), ("rd2", None, "undeployed")}, view
    assert controller.request("GET", "/v1/view/schedules-by-resource?active-only=true")[2] == {}

    # Deleting the switch of rd1 lets the group's decide.
    ok(lin.backup_schedule_delete("far", "nightly", resource_name="rd1"))
    assert controller.request("GET", "/v1/view/schedules-by-resource/rd1")[2]["data"][0].get("rsc_dfn") is None

    # Deleting the schedule deletes every switch of it.
    replies = ok(lin.schedule_delete("nightly"))
    assert "deleted" in replies[-1].message
    assert controller.request("GET", "/v1/schedules")[2] == {}
    assert controller.request("GET", "/v1/view/schedules-by-resource/rd1")[2] == {}
    replies = lin.schedule_delete("nightly")
    assert replies[0].ret_code & 0x7FFF == WARN_NOT_FOUND and not replies[0].is_error()
    assert not any(k.startswith("Schedule/") for k in controller.request("GET", "/v1/controller/properties")[2])


@pytest.fixture
def fast_clock(monkeypatch):
    monkeypatch.setenv("CAIRN_SCHEDULE_CLOCK_SCALE", "60")


@pytest.fixture
def scluster(fast_clock, bcluster):  # noqa: F811 (the imported fixture)
    yield bcluster


def test_the_scheduler_ships_full_and_incremental_backups_and_prunes_old_ones(scluster):
    c = scluster
    make_volume(c, "sched", 4 * 1024)
    # A full backup every scheduled minute (a real second); keep two fulls
    # in the bucket and one backup snapshot on the node.
    ok(c.lin.schedule_create("often", "* * * * *", keep_remote=2, keep_local=1))
    ok(c.lin.backup_schedule_enable("bk", "often", resource_name="sched"))
    seen = set()

    def pruned():
        # The backups kept at the moment the condition held (the next
        # scheduled run may start any second after it).
        now = {i: b for i, b in backups(c.lin).items() if b.origin_rsc_name == "sched"}
        seen.update(now)
        done = {i: b for i, b in now.items() if b._rest_data.get("success")}
        return len(seen) >= 4 and len(done) == 2 and done
    kept = wait_for("four scheduled full backups, two kept", pruned, timeout=90)
    assert all("based_on_id" not in b._rest_data for b in kept.values()), kept
    status, _, view = c.ctrl.request("GET", "/v1/view/schedules-by-resource?rsc=sched")
    row = view["data"][0]
    assert (row["remote_name"], row["schedule_name"], row["last_snap_inc"]) == ("bk", "often", False), row
    assert row["last_snap_time"] > 0 and row["next_planned_full"] > row["last_snap_time"], row

    def snaps():
        return sorted(s.snapshot_name for s in c.lin.snapshot_dfn_list()[0].snapshots if s.rsc_name == "sched")

    # Incrementals now: full backups once a year, an incremental each minute.
    ok(c.lin.schedule_modify("often", full_cron="0 0 1 1 *", incremental_cron="* * * * *"))

    def incremental():
        return [b for b in backups(c.lin).values()
                if b.origin_rsc_name == "sched" and b._rest_data.get("success") and b._rest_data.get("based_on_id")]
    wait_for("a scheduled incremental backup", incremental, timeout=60)

    # Switched off, nothing more ships; keep_local left one backup snapshot.
    ok(c.lin.backup_schedule_disable("bk", "often", resource_name="sched"))
    wait_for("no running shipment", lambda: not any(b._rest_data.get("shipping") for b in backups(c.lin).values()), timeout=30)
    before = set(backups(c.lin))
    wait_for("one backup snapshot kept", lambda: len(snaps()) == 1, timeout=30)
    time.sleep(3)
    # Nothing new ships (a prune that was under way may still remove one).
    assert set(backups(c.lin)) <= before, (set(backups(c.lin)), before)
    row = c.ctrl.request("GET", "/v1/view/schedules-by-resource?rsc=sched")[2]["data"][0]
    assert row["reason"] == "disabled", row


def test_a_failing_scheduled_backup_is_retried_max_retries_times_then_waits_for_its_next_time(scluster):
    """on_failure RETRY with the S3 server gone: each planned run is tried
    once and retried max_retries (2) times at once, then the schedule gives
    up until its next planned time, with a fresh count (LINSTOR's
    ScheduleBackupService)."""
    c = scluster
    make_volume(c, "flaky", 4 * 1024)
    c.s3.stop()
    # Every fifth scheduled minute: five real seconds apart.
    ok(c.lin.schedule_create("retrying", "*/5 * * * *", on_failure="RETRY", max_retries=2))
    ok(c.lin.backup_schedule_enable("bk", "retrying", resource_name="flaky"))

    def events():
        out = []
        for line in c.ctrl.log().splitlines():
            if "flaky" not in line:
                continue
            for word, what in (("scheduled backup starts", "start"), ("scheduled backup failed", "fail"),
                               ("will be retried", "retry")):
                if word in line:
                    out.append(what)
        return out

    def two_rounds():
        e = events()
        return e.count("start") >= 7 and e
    e = wait_for("two planned runs, each retried", two_rounds, timeout=60)
    # Per planned run: start, fail, retry, start, fail, retry, start, fail.
    round_ = ["start", "fail", "retry"] * 2 + ["start", "fail"]
    assert e[:8] == round_ and e[8:16] == round_[:len(e[8:16])], e
    log = c.ctrl.log()
    assert "(1. retry)" in log and "(2. retry)" in log and "(3. retry)" not in log, log[-3000:]
    # Nothing was shipped, and nothing was recorded as a backup.
    row = c.ctrl.request("GET", "/v1/view/schedules-by-resource?rsc=flaky")[2]["data"][0]
    assert row["schedule_name"] == "retrying" and row["last_snap_time"] == -1, row


def test_schedule_verbs_of_the_cli(controller, lin):
    env = dict(os.environ, LS_CONTROLLERS=controller.url)

    def cairn(*args):
        p = subprocess.run([BIN, "--no-utf8", "--no-color", *args], capture_output=True, text=True, env=env, timeout=60)
        return p.returncode, p.stdout, p.stderr

    code, out, e = cairn("schedule", "create", "daily", "0 4 * * *", "-i", "0 * * * *", "-l", "2", "-r", "5",
                         "--on-failure", "retry", "--max-retries", "3")
    assert code == 0 and "created successfully" in out, (out, e)
    code, out, e = cairn("schedule", "create", "broken", "0 4 * *")
    assert code != 0 and "full-cron" in out + e, (out, e)
    code, out, e = cairn("schedule", "modify", "daily", "--keep-local", "all", "-f", "0 5 * * *")
    assert code == 0, (out, e)
    code, out, e = cairn("schedule", "list")
    assert code == 0 and "| daily " in out and "0 5 * * *" in out and "RETRY[3]" in out, (out, e)
    [s] = lin.schedule_list().schedules
    assert (s.keep_local, s.keep_remote) == (None, 5)
    ok(lin.crypt_create_passphrase("master-pw"))
    ok(lin.remote_create_linstor("far", "http://127.0.0.2:3370"))
    ok(lin.resource_dfn_create("rd1"))
    code, out, e = cairn("backup", "schedule", "enable", "far", "daily", "--rd", "rd1")
    assert code == 0 and "successfully enabled for resource definition 'rd1'" in out, (out, e)
    code, out, e = cairn("schedule", "list-by-resource-details", "rd1")
    assert code == 0 and "| far " in out and "enabled" in out, (out, e)
    code, out, e = cairn("backup", "schedule", "disable", "far", "daily")
    assert code == 0 and "disabled on controller" in out, (out, e)
    code, out, e = cairn("schedule", "lbr")
    assert code == 0 and "| rd1 " in out and "undeployed" in out, (out, e)
    code, out, e = cairn("backup", "schedule", "delete", "far", "daily", "--rd", "rd1")
    assert code == 0, (out, e)
    code, out, e = cairn("schedule", "lbr", "-r", "rd1")
    assert code == 0 and "disabled" in out, (out, e)
    code, out, e = cairn("schedule", "delete", "daily")
    assert code == 0 and lin.schedule_list().schedules == [], (out, e)
