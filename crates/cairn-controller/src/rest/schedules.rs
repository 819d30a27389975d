//! Backup schedules: `/v1/schedules` (LINSTOR's `Schedules`), switching
//! them on and off per definition, group or controller
//! (`/v1/remotes/{remote}/backups/schedule/{schedule}/…`) and the view of
//! what is scheduled (`/v1/view/schedules-by-resource`, LINSTOR's
//! `View.listScheduledRscs` and `listScheduleDetails`). The scheduler
//! that runs them is `crate::scheduler`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{delete, get, put};
use cairn_api::schedule::{BackupSchedule, DataList, Schedule, ScheduleDetails, ScheduleModify, ScheduledRscs};
use cairn_domain::name::key;
use cairn_domain::schedule::{KEY_LAST_INC, KEY_LAST_TIME, Schedule as Stored, next_after};

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/schedules", get(list).post(create))
        .route("/v1/schedules/{name}", put(modify).delete(remove))
        .route("/v1/remotes/{remote}/backups/schedule/{schedule}/enable", put(enable))
        .route("/v1/remotes/{remote}/backups/schedule/{schedule}/disable", put(disable))
        .route("/v1/remotes/{remote}/backups/schedule/{schedule}/delete", delete(remove_switch))
        .route("/v1/view/schedules-by-resource", get(by_resource))
        .route("/v1/view/schedules-by-resource/{rsc}", get(details))
}

async fn list(State(s): State<AppState>) -> Response {
    let data: Vec<Schedule> = s.read().schedules.values().map(Stored::to_api).collect();
    ok(&DataList { data })
}

async fn create(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: Schedule = input::required(&body)?;
    s.mutate(200, |c, ctx| c.create_schedule(&req, ctx)).await
}

async fn modify(State(s): State<AppState>, Path(name): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ScheduleModify = input::body(&body)?;
    s.mutate(200, |c, ctx| c.modify_schedule(&name, &req, ctx.now_ms)).await
}

async fn remove(State(s): State<AppState>, Path(name): Path<String>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.delete_schedule(&name)).await
}

async fn enable(State(s): State<AppState>, Path((remote, schedule)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: BackupSchedule = input::body(&body)?;
    s.mutate(200, |c, _| c.set_backup_schedule(&remote, &schedule, &req, true)).await
}

async fn disable(State(s): State<AppState>, Path((remote, schedule)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: BackupSchedule = input::body(&body)?;
    s.mutate(200, |c, _| c.set_backup_schedule(&remote, &schedule, &req, false)).await
}

async fn remove_switch(
    State(s): State<AppState>,
    Path((remote, schedule)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Reply, ApiError> {
    let q = input::query(q);
    let rd = q.get("rsc_dfn_name").map(str::to_string);
    let rg = q.get("rsc_grp_name").map(str::to_string);
    s.mutate(200, |c, _| c.delete_backup_schedule(&remote, &schedule, rd.as_deref(), rg.as_deref())).await
}

/// `GET /v1/view/schedules-by-resource?rsc=&remote=&schedule=&active-only=`:
/// each definition's active shippings with their last and next runs, and,
/// unless `active-only`, the definitions without one and why ("none set",
/// "disabled", "undeployed").
async fn by_resource(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let q = input::query(q);
    let filter = |k: &str| q.get(k).filter(|v| !v.is_empty()).map(key);
    let (rsc, remote, schedule) = (filter("rsc"), filter("remote"), filter("schedule"));
    let active_only = q.get("active-only").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let c = s.read();
    let now = s.scheduler().now_ms();
    let mut rows = Vec::new();
    for sh in c.active_shippings() {
        if rsc.as_ref().is_some_and(|r| *r != key(&sh.rsc))
            || remote.as_ref().is_some_and(|r| *r != key(&sh.remote))
            || schedule.as_ref().is_some_and(|x| *x != key(&sh.schedule))
        {
            continue;
        }
        let Some(sched) = c.schedules.get(&key(&sh.schedule)) else { continue };
        let prefix = Stored::prop_prefix(&sh.remote, &sh.schedule);
        let props = c.rsc_dfns.get(&key(&sh.rsc)).map(|d| d.props.clone()).unwrap_or_default();
        let last = props.get(&format!("{prefix}{KEY_LAST_TIME}")).and_then(|v| v.parse::<i64>().ok());
        let from = last.unwrap_or(now);
        let run = s.scheduler().get(&sh.rsc, &sh.remote, &sh.schedule);
        rows.push(ScheduledRscs {
            rsc_name: sh.rsc.clone(),
            remote_name: Some(sh.remote.clone()),
            schedule_name: Some(sh.schedule.clone()),
            reason: None,
            last_snap_time: last.unwrap_or(-1),
            last_snap_inc: props.get(&format!("{prefix}{KEY_LAST_INC}")).is_some_and(|v| v == "true"),
            next_exec_time: run.as_ref().map_or(-1, |r| if r.running { -1 } else { r.next_ms }),
            next_exec_inc: run.as_ref().is_some_and(|r| r.next_inc),
            next_planned_full: next_after(&sched.full_cron, from).unwrap_or(-1),
            next_planned_inc: sched.inc_cron.as_deref().and_then(|ic| next_after(ic, from)).unwrap_or(-1),
        });
    }
    if !active_only {
        for (rd_key, d) in c.rsc_dfns.iter() {
            if rsc.as_ref().is_some_and(|r| r != rd_key) {
                continue;
            }
            let switches = c.schedule_switches(rd_key);
            let effective: Vec<(String, String, Option<bool>)> =
                switches.iter().map(|(r, x, lv)| (r.clone(), x.clone(), lv.iter().flatten().next().copied())).collect();
            let unset = |reason: &str| ScheduledRscs {
                rsc_name: d.name.clone(),
                reason: Some(reason.to_string()),
                last_snap_time: -1,
                next_exec_time: -1,
                next_planned_full: -1,
                next_planned_inc: -1,
                ..Default::default()
            };
            if effective.iter().any(|(_, _, on)| *on == Some(true)) {
                if c.resources_of(rd_key).next().is_none() {
                    rows.push(unset("undeployed"));
                }
                continue;
            }
            let off: Vec<_> = effective.iter().filter(|(_, _, on)| *on == Some(false)).collect();
            if off.is_empty() {
                rows.push(unset("none set"));
            }
            for (r, x, _) in off {
                rows.push(ScheduledRscs { remote_name: Some(r.clone()), schedule_name: Some(x.clone()), ..unset("disabled") });
            }
        }
    }
    rows.sort_by(|a, b| (&a.rsc_name, &a.remote_name, &a.schedule_name).cmp(&(&b.rsc_name, &b.remote_name, &b.schedule_name)));
    ok(&DataList { data: rows })
}

/// `GET /v1/view/schedules-by-resource/{rsc}`: each (remote, schedule)
/// switch of the definition and where it is set.
async fn details(State(s): State<AppState>, Path(rsc): Path<String>) -> Result<Response, ApiError> {
    let c = s.read();
    let d = c.rsc_dfn(&rsc, cairn_api::rc::MASK_BACKUP)?;
    let data: Vec<ScheduleDetails> = c
        .schedule_switches(&key(&d.name))
        .into_iter()
        .map(|(remote_name, schedule_name, [rsc_dfn, rsc_grp, ctrl])| ScheduleDetails {
            remote_name,
            schedule_name,
            ctrl,
            rsc_grp,
            rsc_dfn,
        })
        .collect();
    Ok(ok(&DataList { data }))
}
