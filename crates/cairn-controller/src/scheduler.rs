//! The backup scheduler (LINSTOR's `ScheduleBackupService`): runs the
//! backups of every enabled (definition, remote, schedule) shipping when
//! its cron expressions say, then prunes what the schedule keeps no more.
//!
//! - The next run is the earlier of the next full-cron and the next
//!   inc-cron time (an incremental only after a first backup). Times are
//!   reckoned from the last recorded run (`Schedule/{remote}/{schedule}/
//!   LastBackupTime` of the definition) when the plan is made, and from
//!   the end of a run afterwards. A run that is due while one is going on
//!   waits for it.
//! - A failed run: SKIP waits for the next planned time; RETRY runs again
//!   at once, up to `max_retries` times (without a limit when unset), then
//!   falls back to SKIP.
//! - After a successful run: `keep_remote` deletes the oldest full backups
//!   of the definition in the bucket beyond that count, with the
//!   incrementals based on them; `keep_local` deletes the oldest local
//!   snapshots taken for backups (`back_…`) beyond that count.
//! - Time: a [`Clock`] the controller reads from the environment
//!   (`CAIRN_SCHEDULE_CLOCK_SCALE`, default 1): with 60 a scheduled minute
//!   passes in a real second, so tests see cron runs without waiting
//!   minutes. Crons are evaluated in UTC.

use cairn_domain::remote::RemoteTarget;
use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use cairn_domain::name::key;
use cairn_domain::schedule::{OnFailure, Schedule, Shipping, next_after};

use crate::state::AppState;

/// How often the plan is checked.
const TICK: Duration = Duration::from_millis(250);

/// The scheduler's time: real time, optionally running faster from the
/// moment the controller started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin_ms: i64,
    scale: i64,
}

impl Clock {
    pub fn real() -> Clock {
        Clock { origin_ms: crate::state::now_ms(), scale: 1 }
    }

    /// `CAIRN_SCHEDULE_CLOCK_SCALE=N`: N scheduled milliseconds per real
    /// one (tests).
    pub fn from_env() -> Clock {
        let scale = std::env::var("CAIRN_SCHEDULE_CLOCK_SCALE").ok().and_then(|v| v.parse::<i64>().ok()).filter(|n| *n >= 1).unwrap_or(1);
        if scale != 1 {
            tracing::warn!(scale, "the backup scheduler's clock runs {scale} times faster than real time");
        }
        Clock { scale, ..Clock::real() }
    }

    pub fn now_ms(&self) -> i64 {
        let real = crate::state::now_ms();
        self.origin_ms + (real - self.origin_ms).saturating_mul(self.scale)
    }
}

/// The plan of one shipping.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The crons the plan was made from (a modified schedule replans).
    crons: (String, Option<String>),
    pub next_ms: i64,
    pub next_inc: bool,
    pub planned_full: i64,
    pub planned_inc: i64,
    pub running: bool,
    retries: i32,
}

/// Every shipping's plan, keyed by upper-case (definition, remote,
/// schedule).
#[derive(Default)]
pub struct Plan {
    runs: parking_lot::Mutex<BTreeMap<(String, String, String), Run>>,
    clock: parking_lot::Mutex<Option<Clock>>,
}

impl Plan {
    pub fn get(&self, rsc: &str, remote: &str, schedule: &str) -> Option<Run> {
        self.runs.lock().get(&(key(rsc), key(remote), key(schedule))).cloned()
    }

    /// The scheduler's clock (real time before the scheduler starts).
    pub fn now_ms(&self) -> i64 {
        self.clock.lock().unwrap_or_else(Clock::real).now_ms()
    }
}

fn run_key(sh: &Shipping) -> (String, String, String) {
    (key(&sh.rsc), key(&sh.remote), key(&sh.schedule))
}

/// The next run after `from_ms`; an incremental only when a backup was
/// made before (`had_backup`).
pub fn plan(s: &Schedule, from_ms: i64, had_backup: bool) -> Run {
    let full = next_after(&s.full_cron, from_ms).unwrap_or(i64::MAX);
    let inc = s.inc_cron.as_deref().and_then(|c| next_after(c, from_ms));
    let (next_ms, next_inc) = match inc {
        Some(i) if had_backup && i < full => (i, true),
        _ => (full, false),
    };
    Run {
        crons: (s.full_cron.clone(), s.inc_cron.clone()),
        next_ms,
        next_inc,
        planned_full: if full == i64::MAX { -1 } else { full },
        planned_inc: inc.unwrap_or(-1),
        running: false,
        retries: 0,
    }
}

/// Starts the scheduler; it ends with the controller.
pub fn spawn(s: &AppState, clock: Clock) {
    *s.scheduler().clock.lock() = Some(clock);
    let weak = s.downgrade();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            let Some(s) = weak.upgrade() else { break };
            tick(&s, clock);
        }
    });
}

/// One look at the plan: new shippings planned, stale ones dropped, due
/// ones started.
fn tick(s: &AppState, clock: Clock) {
    let now = clock.now_ms();
    let c = s.read();
    let active = c.active_shippings();
    let mut runs = s.scheduler().runs.lock();
    runs.retain(|k, r| r.running || active.iter().any(|a| run_key(a) == *k));
    for sh in active {
        let Some(sched) = c.schedules.get(&key(&sh.schedule)).cloned() else { continue };
        let prefix = Schedule::prop_prefix(&sh.remote, &sh.schedule);
        let last =
            c.rsc_dfns.get(&key(&sh.rsc)).and_then(|d| d.props.get(&format!("{prefix}LastBackupTime"))).and_then(|v| v.parse::<i64>().ok());
        let crons = (sched.full_cron.clone(), sched.inc_cron.clone());
        let run = runs.entry(run_key(&sh)).or_insert_with(|| plan(&sched, last.unwrap_or(now), last.is_some()));
        if run.crons != crons && !run.running {
            *run = plan(&sched, now, last.is_some());
        }
        if !run.running && now >= run.next_ms {
            run.running = true;
            let inc = run.next_inc;
            tokio::spawn(execute(s.clone(), sh, sched, inc, clock));
        }
    }
}

/// Runs one scheduled backup to its end, records it and plans the next.
async fn execute(s: AppState, sh: Shipping, sched: Schedule, inc: bool, clock: Clock) {
    let started = clock.now_ms();
    tracing::info!(rsc = %sh.rsc, remote = %sh.remote, schedule = %sh.schedule, incremental = inc, "scheduled backup starts");
    let result = backup(&s, &sh, inc).await;
    let now = clock.now_ms();
    let ok = result.is_ok();
    match &result {
        Ok(()) => {
            let record = s.mutate(200, |c, _| c.record_scheduled_backup(&sh.rsc, &sh.remote, &sh.schedule, started, inc)).await;
            if let Err(e) = record {
                tracing::warn!(rsc = %sh.rsc, "recording the scheduled backup failed: {e:?}");
            }
            prune(&s, &sh, &sched).await;
        }
        Err(why) => tracing::warn!(rsc = %sh.rsc, remote = %sh.remote, schedule = %sh.schedule, "scheduled backup failed: {why}"),
    }
    let mut runs = s.scheduler().runs.lock();
    let Some(run) = runs.get_mut(&run_key(&sh)) else { return };
    let retries = run.retries;
    let retry = !ok && sched.on_failure == OnFailure::Retry && sched.max_retries.is_none_or(|m| retries < m);
    if retry {
        tracing::warn!(rsc = %sh.rsc, "the scheduled backup will be retried ({}. retry)", retries + 1);
        run.retries = retries + 1;
        run.running = false;
        run.next_ms = now;
    } else {
        let had_backup = ok
            || s.read()
                .rsc_dfns
                .get(&key(&sh.rsc))
                .is_some_and(|d| d.props.contains_key(&format!("{}LastBackupTime", Schedule::prop_prefix(&sh.remote, &sh.schedule))));
        *run = plan(&sched, now, had_backup);
    }
}

/// Starts a backup as `POST /v1/remotes/{remote}/backups` would and waits
/// for its shipment to end.
async fn backup(s: &AppState, sh: &Shipping, inc: bool) -> Result<(), String> {
    let mut body = serde_json::json!({ "rsc_name": sh.rsc, "incremental": inc });
    if let Some(n) = &sh.pref_node {
        body["node_name"] = serde_json::Value::String(n.clone());
    }
    let before: Vec<String> = s.backups().all().into_iter().map(|x| x.id).collect();
    let to_cluster = s.read().remotes.get(&key(&sh.remote)).is_some_and(|r| matches!(r.target, RemoteTarget::Linstor { .. }));
    let reply = if to_cluster {
        // Another cluster: a shipment with the switch's target fields.
        let body = serde_json::json!({
            "src_rsc_name": sh.rsc, "dst_rsc_name": sh.dst_rsc.clone().unwrap_or_else(|| sh.rsc.clone()),
            "src_node_name": sh.pref_node, "stor_pool_rename": sh.stor_pool_rename, "allow_incremental": inc,
        });
        crate::rest::ship::ship(State(s.clone()), Path(sh.remote.clone()), body.to_string().into()).await
    } else {
        crate::rest::backups::create(State(s.clone()), Path(sh.remote.clone()), body.to_string().into()).await
    }
    .map_err(|e| format!("{e:?}"))?;
    if let Some(e) = reply.entries.iter().find(|e| e.is_error()) {
        return Err(e.message.clone());
    }
    let Some(id) = s
        .backups()
        .all()
        .into_iter()
        .filter(|x| key(&x.rsc) == key(&sh.rsc) && key(&x.remote) == key(&sh.remote) && !before.contains(&x.id))
        .map(|x| x.id)
        .next_back()
    else {
        return Err("the backup did not start".into());
    };
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = s.backups().all();
        match now.iter().find(|x| x.id == id && key(&x.remote) == key(&sh.remote)) {
            None => return Ok(()),
            Some(x) if x.done.is_some() => return Ok(()),
            Some(x) => {
                if let Some(why) = &x.failed {
                    return Err(why.clone());
                }
            }
        }
    }
}

/// `keep_remote` and `keep_local` after a successful run.
async fn prune(s: &AppState, sh: &Shipping, sched: &Schedule) {
    // keep_remote counts backups in a bucket; another cluster's snapshots
    // are its own to prune (not done yet).
    let in_bucket = s.read().remotes.get(&key(&sh.remote)).is_some_and(|r| matches!(r.target, RemoteTarget::S3 { .. }));
    if let Some(keep) = sched.keep_remote.and_then(|k| usize::try_from(k).ok()).filter(|_| in_bucket) {
        match crate::rest::backups::full_backups(s, &sh.remote, &sh.rsc).await {
            Ok(fulls) if fulls.len() > keep => {
                for (id, _) in &fulls[..fulls.len() - keep] {
                    tracing::info!(rsc = %sh.rsc, "backup {id} and all backups dependent on it are deleted on remote {} due to schedule {}", sh.remote, sh.schedule);
                    let q = format!("id={id}&cascading=true");
                    if let Err(e) = crate::rest::backups::remove(State(s.clone()), Path(sh.remote.clone()), RawQuery(Some(q))).await {
                        tracing::warn!(rsc = %sh.rsc, "deleting backup {id} failed: {e:?}");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(rsc = %sh.rsc, "listing the backups for keep-remote failed: {e:?}"),
        }
    }
    if let Some(keep) = sched.keep_local.and_then(|k| usize::try_from(k).ok()) {
        let mut snaps: Vec<(i64, String)> = {
            let c = s.read();
            c.snapshots
                .values()
                .filter(|d| key(&d.resource_definition) == key(&sh.rsc) && d.name.starts_with("back_"))
                .map(|d| (d.create_timestamp, d.name.clone()))
                .collect()
        };
        snaps.sort();
        if snaps.len() > keep {
            for (_, name) in &snaps[..snaps.len() - keep] {
                tracing::info!(rsc = %sh.rsc, "snapshot {name} is deleted due to schedule {}", sh.schedule);
                if let Err(e) = s.mutate(200, |c, _| c.delete_snapshot(&sh.rsc, name, &[])).await {
                    tracing::warn!(rsc = %sh.rsc, "deleting snapshot {name} failed: {e:?}");
                }
            }
        }
    }
}
