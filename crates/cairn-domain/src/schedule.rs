//! Backup schedules (LINSTOR's `Schedule` and `CtrlScheduleApiCallHandler`,
//! `CtrlScheduledBackupsApiCallHandler`).
//!
//! A schedule is a named pair of cron expressions (full and, optionally,
//! incremental backups, five-field UNIX syntax as LINSTOR's cron-utils
//! `CronType.UNIX`) with retention counts and a failure policy. It ships
//! nothing by itself: `backup schedule enable` switches a (remote,
//! schedule) pair on for a resource definition, a resource group or the
//! controller by the property `Schedule/{remote}/{schedule}/Enabled`,
//! looked up definition first, then group, then controller, as LINSTOR's
//! `PriorityProps` does. The controller's scheduler runs what is switched
//! on and records each run in the definition's properties
//! (`…/LastBackupTime`, `…/LastBackupInc`).

use cairn_api::rc::{self, ApiCallRc};
use cairn_api::schedule as wire;
use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};

use crate::Props;
use crate::cluster::{Cluster, ObjKey, Object, Outcome};
use crate::ctx::Ctx;
use crate::error::{OpError, OpResult};
use crate::name::{self, NameKind, key};

/// The namespace of the schedule properties.
pub const NAMESPACE: &str = "Schedule";
pub const KEY_ENABLED: &str = "Enabled";
pub const KEY_PREF_NODE: &str = "PrefNode";
/// LINSTOR's keys of a shipping to another cluster: the target
/// definition, and the pool renames (one key per source pool below it).
pub const KEY_DST_RSC_NAME: &str = "TargetResourceName";
pub const KEY_RENAME_STORPOOL_MAP: &str = "RenameStorpoolMap";
pub const KEY_LAST_TIME: &str = "LastBackupTime";
pub const KEY_LAST_INC: &str = "LastBackupInc";

const CRT: i64 = rc::MASK_CRT | rc::MASK_SCHEDULE;
const MOD: i64 = rc::MASK_MOD | rc::MASK_SCHEDULE;
const DEL: i64 = rc::MASK_DEL | rc::MASK_SCHEDULE;
const BACKUP_MOD: i64 = rc::MASK_MOD | rc::MASK_BACKUP;

/// What happens when a scheduled backup fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OnFailure {
    /// Wait for the next planned run.
    Skip,
    /// Try again at once, up to `max_retries` times.
    Retry,
}

impl OnFailure {
    fn parse(s: &str, op: i64) -> OpResult<OnFailure> {
        match s.to_ascii_uppercase().as_str() {
            "SKIP" => Ok(OnFailure::Skip),
            "RETRY" => Ok(OnFailure::Retry),
            _ => Err(OpError::new(op, rc::FAIL_INVLD_CONF, format!("Unknown on-failure value '{s}'.")).correction("Use SKIP or RETRY.")),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            OnFailure::Skip => "SKIP",
            OnFailure::Retry => "RETRY",
        }
    }
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub uuid: String,
    pub full_cron: String,
    pub inc_cron: Option<String>,
    pub keep_local: Option<i32>,
    pub keep_remote: Option<i32>,
    pub on_failure: OnFailure,
    pub max_retries: Option<i32>,
}

/// Parses a five-field cron expression (minute hour day-of-month month
/// day-of-week), as LINSTOR's UNIX cron type does.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    CronParser::builder().seconds(Seconds::Disallowed).build().parse(expr.trim()).map_err(|e| e.to_string())
}

/// The first time strictly after `after_ms` (epoch ms, UTC) the cron
/// expression fires; None for an unparsable expression or one that never
/// fires again.
pub fn next_after(expr: &str, after_ms: i64) -> Option<i64> {
    let cron = parse_cron(expr).ok()?;
    let start: DateTime<Utc> = Utc.timestamp_millis_opt(after_ms).single()?;
    cron.find_next_occurrence(&start, false).ok().map(|t| t.timestamp_millis())
}

fn describe(expr: &str) -> String {
    parse_cron(expr).map(|c| c.describe()).unwrap_or_else(|_| expr.to_string())
}

fn label(name: &str) -> String {
    format!("Schedule: {name}")
}

impl Schedule {
    pub fn to_api(&self) -> wire::Schedule {
        wire::Schedule {
            schedule_name: self.name.clone(),
            full_cron: self.full_cron.clone(),
            inc_cron: self.inc_cron.clone(),
            keep_local: self.keep_local,
            keep_remote: self.keep_remote,
            on_failure: Some(self.on_failure.as_str().to_string()),
            max_retries: self.max_retries,
        }
    }

    /// LINSTOR's detailed description: the name and what the crons mean.
    fn detailed(&self) -> String {
        let inc = self.inc_cron.as_deref().map(|c| format!(", IncCron: {}", describe(c))).unwrap_or_default();
        format!("Schedule: {}, FullCron: {}{inc}", self.name, describe(&self.full_cron))
    }

    /// The property prefix of this schedule for `remote`.
    pub fn prop_prefix(remote: &str, schedule: &str) -> String {
        format!("{NAMESPACE}/{remote}/{schedule}/")
    }
}

/// Checks one cron expression; `what` is "full" or "inc".
fn check_cron(expr: &str, what: &str, op: i64, now_ms: i64) -> OpResult<()> {
    let cron = parse_cron(expr).map_err(|e| {
        OpError::new(op, 0, format!("Error parsing {what}-cron \"{expr}\": {e}"))
            .correction("Give five fields: minute hour day-of-month month day-of-week.")
    })?;
    let start = Utc.timestamp_millis_opt(now_ms).single().unwrap_or_default();
    if cron.find_next_occurrence(&start, false).is_err() {
        return Err(OpError::new(op, 0, format!("The cron expression for {what} backups '{expr}' has no possible future executions.")));
    }
    Ok(())
}

/// A negative count unsets it (LINSTOR's modify).
fn count(v: i32) -> Option<i32> {
    (v >= 0).then_some(v)
}

/// One (definition, remote, schedule) triple the scheduler runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shipping {
    pub rsc: String,
    pub remote: String,
    pub schedule: String,
    pub pref_node: Option<String>,
    /// Shipping to another cluster: the target definition (None: the
    /// same name) and the pool renames.
    pub dst_rsc: Option<String>,
    pub stor_pool_rename: std::collections::BTreeMap<String, String>,
}

impl Cluster {
    fn schedule_get(&self, name: &str, op: i64) -> OpResult<&Schedule> {
        self.schedules.get(&key(name)).ok_or_else(|| {
            OpError::new(op, rc::FAIL_NOT_FOUND_SCHEDULE, format!("Schedule '{name}' not found."))
                .correction(format!("Create a schedule with the name '{name}' first."))
        })
    }

    /// `POST /v1/schedules`.
    pub fn create_schedule(&self, req: &wire::Schedule, ctx: &mut Ctx) -> OpResult<Outcome> {
        let name = req.schedule_name.as_str();
        name::check(NameKind::Schedule, name, CRT)?;
        if self.schedules.contains_key(&key(name)) {
            return Err(OpError::new(
                CRT,
                rc::FAIL_EXISTS_SCHEDULE,
                format!(
                    "A schedule with the name '{name}' already exists. Please use a different name or try to modify the schedule instead."
                ),
            ));
        }
        check_cron(&req.full_cron, "full", CRT, ctx.now_ms)?;
        let inc_cron = req.inc_cron.clone().filter(|c| !c.is_empty());
        if let Some(c) = &inc_cron {
            check_cron(c, "inc", CRT, ctx.now_ms)?;
        }
        let on_failure = match req.on_failure.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => OnFailure::parse(s, CRT)?,
            None => OnFailure::Skip,
        };
        let s = Schedule {
            name: name.to_string(),
            uuid: ctx.uuid(),
            full_cron: req.full_cron.trim().to_string(),
            inc_cron,
            keep_local: req.keep_local,
            keep_remote: req.keep_remote,
            on_failure,
            max_retries: req.max_retries,
        };
        let mut out = Outcome::default();
        out.reply(ApiCallRc::success(CRT, rc::CREATED, format!("{} created successfully.", s.detailed())).with_details(format!(
            "{} UUID is: {}",
            s.detailed(),
            s.uuid
        )));
        out.put(Object::Schedule(s));
        Ok(out)
    }

    /// `PUT /v1/schedules/{name}`.
    pub fn modify_schedule(&self, name: &str, req: &wire::ScheduleModify, now_ms: i64) -> OpResult<Outcome> {
        name::check(NameKind::Schedule, name, MOD)?;
        let mut s = self.schedule_get(name, MOD)?.clone();
        if let Some(c) = req.full_cron.as_deref().filter(|c| !c.is_empty()) {
            check_cron(c, "full", MOD, now_ms)?;
            s.full_cron = c.trim().to_string();
        }
        if let Some(c) = req.inc_cron.as_deref() {
            if c.is_empty() {
                s.inc_cron = None;
            } else {
                check_cron(c, "inc", MOD, now_ms)?;
                s.inc_cron = Some(c.trim().to_string());
            }
        }
        if let Some(n) = req.keep_local {
            s.keep_local = count(n);
        }
        if let Some(n) = req.keep_remote {
            s.keep_remote = count(n);
        }
        if let Some(f) = req.on_failure.as_deref().filter(|f| !f.is_empty()) {
            s.on_failure = OnFailure::parse(f, MOD)?;
        }
        if let Some(n) = req.max_retries {
            s.max_retries = count(n);
        }
        let mut out = Outcome::default();
        out.reply(ApiCallRc::success(MOD, rc::MODIFIED, format!("{} modified successfully.", s.detailed())).with_details(format!(
            "{} UUID is: {}",
            s.detailed(),
            s.uuid
        )));
        out.put(Object::Schedule(s));
        Ok(out)
    }

    /// `DELETE /v1/schedules/{name}`: the schedule and every property that
    /// switches it on or off anywhere.
    pub fn delete_schedule(&self, name: &str) -> OpResult<Outcome> {
        let mut out = Outcome::default();
        let Some(s) = self.schedules.get(&key(name)) else {
            out.reply(ApiCallRc::warning(DEL, rc::WARN_NOT_FOUND, format!("{} not found.", label(name))));
            return Ok(out);
        };
        let matches = |k: &str| {
            let parts: Vec<&str> = k.split('/').collect();
            parts.len() >= 4 && parts[0] == NAMESPACE && key(parts[2]) == key(&s.name)
        };
        self.drop_schedule_props(&mut out, &matches);
        out.reply(ApiCallRc::success(DEL, rc::DELETED, format!("{} deleted.", label(&s.name))).with_details(format!(
            "{} UUID was: {}",
            label(&s.name),
            s.uuid
        )));
        out.delete(ObjKey::Schedule(key(&s.name)));
        Ok(out)
    }

    /// Removes the properties `matches` selects from every definition,
    /// group and the controller.
    fn drop_schedule_props(&self, out: &mut Outcome, matches: &dyn Fn(&str) -> bool) {
        let strip = |p: &Props| -> Option<Props> {
            p.keys().any(|k| matches(k)).then(|| p.iter().filter(|(k, _)| !matches(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
        };
        for d in self.rsc_dfns.values() {
            if let Some(props) = strip(&d.props) {
                let mut d = d.clone();
                d.props = props;
                out.put(Object::RscDfn(d));
            }
        }
        for g in self.rsc_grps.values() {
            if let Some(props) = strip(&g.props) {
                let mut g = g.clone();
                g.props = props;
                out.put(Object::RscGrp(g));
            }
        }
        if let Some(props) = strip(&self.ctrl_props) {
            out.put(Object::CtrlProps(props));
        }
    }

    /// `PUT /v1/remotes/{remote}/backups/schedule/{schedule}/enable|disable`.
    pub fn set_backup_schedule(&self, remote: &str, schedule: &str, req: &wire::BackupSchedule, enable: bool) -> OpResult<Outcome> {
        let r = self.remote_get(remote)?.name.clone();
        let s = self.schedule_get(schedule, BACKUP_MOD)?.name.clone();
        let rd = req.rsc_name.as_deref().filter(|x| !x.is_empty());
        let rg = req.grp_name.as_deref().filter(|x| !x.is_empty());
        if rd.is_some() && rg.is_some() {
            return Err(OpError::new(BACKUP_MOD, rc::FAIL_INVLD_CONF, "Only one of resource definition and resource group can be given."));
        }
        let prefix = Schedule::prop_prefix(&r, &s);
        let set = |props: &mut Props| {
            props.insert(format!("{prefix}{KEY_ENABLED}"), if enable { "true" } else { "false" }.to_string());
            if enable {
                match req.node_name.as_deref().filter(|n| !n.is_empty()) {
                    Some(n) => props.insert(format!("{prefix}{KEY_PREF_NODE}"), n.to_string()),
                    None => props.remove(&format!("{prefix}{KEY_PREF_NODE}")),
                };
                match req.dst_rsc_name.as_deref().filter(|n| !n.is_empty()) {
                    Some(n) => props.insert(format!("{prefix}{KEY_DST_RSC_NAME}"), n.to_string()),
                    None => props.remove(&format!("{prefix}{KEY_DST_RSC_NAME}")),
                };
                let map = format!("{prefix}{KEY_RENAME_STORPOOL_MAP}/");
                props.retain(|k, _| !k.starts_with(&map));
                for (from, to) in &req.stor_pool_rename {
                    props.insert(format!("{map}{from}"), to.clone());
                }
            }
        };
        let mut out = Outcome::default();
        let where_ = if let Some(rd) = rd {
            let mut d = self.rsc_dfn(rd, BACKUP_MOD)?.clone();
            set(&mut d.props);
            let name = d.name.clone();
            if enable && self.resources_of(&key(&name)).next().is_none() {
                out.reply(ApiCallRc::warning(
                    BACKUP_MOD,
                    0,
                    format!("ResourceDefinition {name} to remote {r} scheduled, but will not ship unless resources are created."),
                ));
            }
            out.put(Object::RscDfn(d));
            format!(" for resource definition '{name}'")
        } else if let Some(rg) = rg {
            let mut g = self.rsc_grp(rg, BACKUP_MOD)?.clone();
            set(&mut g.props);
            let name = g.name.clone();
            out.put(Object::RscGrp(g));
            format!(" for resource group '{name}'")
        } else {
            let mut props = self.ctrl_props.clone();
            set(&mut props);
            out.put(Object::CtrlProps(props));
            " on controller".to_string()
        };
        let verb = if enable { "enabled" } else { "disabled" };
        out.reply(ApiCallRc::success(
            BACKUP_MOD,
            rc::MODIFIED,
            format!("Backup shipping schedule '{s}' successfully {verb}{where_} to remote '{r}'."),
        ));
        Ok(out)
    }

    /// `DELETE /v1/remotes/{remote}/backups/schedule/{schedule}/delete`:
    /// removes the switch (on or off) at the level named, so the level
    /// below decides again.
    pub fn delete_backup_schedule(&self, remote: &str, schedule: &str, rd: Option<&str>, rg: Option<&str>) -> OpResult<Outcome> {
        let r = self.remote_get(remote)?.name.clone();
        let s = self.schedule_get(schedule, BACKUP_MOD)?.name.clone();
        let prefix = Schedule::prop_prefix(&r, &s);
        let drop = |props: &mut Props| {
            props.remove(&format!("{prefix}{KEY_ENABLED}"));
            props.remove(&format!("{prefix}{KEY_PREF_NODE}"));
            props.remove(&format!("{prefix}{KEY_DST_RSC_NAME}"));
            let map = format!("{prefix}{KEY_RENAME_STORPOOL_MAP}/");
            props.retain(|k, _| !k.starts_with(&map));
        };
        let mut out = Outcome::default();
        let where_ = match (rd.filter(|x| !x.is_empty()), rg.filter(|x| !x.is_empty())) {
            (Some(_), Some(_)) => {
                return Err(OpError::new(
                    BACKUP_MOD,
                    rc::FAIL_INVLD_CONF,
                    "Only one of resource definition and resource group can be given.",
                ));
            }
            (Some(rd), None) => {
                let mut d = self.rsc_dfn(rd, BACKUP_MOD)?.clone();
                drop(&mut d.props);
                let w = format!(" for resource definition '{}'", d.name);
                out.put(Object::RscDfn(d));
                w
            }
            (None, Some(rg)) => {
                let mut g = self.rsc_grp(rg, BACKUP_MOD)?.clone();
                drop(&mut g.props);
                let w = format!(" for resource group '{}'", g.name);
                out.put(Object::RscGrp(g));
                w
            }
            (None, None) => {
                let mut props = self.ctrl_props.clone();
                drop(&mut props);
                out.put(Object::CtrlProps(props));
                " on controller".to_string()
            }
        };
        out.reply(ApiCallRc::success(
            BACKUP_MOD,
            rc::MODIFIED,
            format!("Backup shipping schedule '{s}' successfully deleted{where_} to remote '{r}'."),
        ));
        Ok(out)
    }

    /// A schedule property of a definition, looked up definition first,
    /// then its group, then the controller.
    pub fn schedule_prop(&self, rd_key: &str, prop: &str) -> Option<String> {
        let d = self.rsc_dfns.get(rd_key)?;
        self.rd_prop(d, prop).cloned()
    }

    /// Where each (remote, schedule) switch of a definition is set: the
    /// definition's, group's and controller's values (`Some(true)` on,
    /// `Some(false)` off, None not set there).
    pub fn schedule_switches(&self, rd_key: &str) -> Vec<(String, String, [Option<bool>; 3])> {
        let Some(d) = self.rsc_dfns.get(rd_key) else { return Vec::new() };
        let empty = Props::new();
        let g = self.rsc_grps.get(&key(&d.resource_group)).map(|g| &g.props).unwrap_or(&empty);
        let levels = [&d.props, g, &self.ctrl_props];
        let mut out: std::collections::BTreeMap<(String, String), [Option<bool>; 3]> = Default::default();
        for (i, props) in levels.iter().enumerate() {
            for (k, v) in props.iter() {
                let parts: Vec<&str> = k.split('/').collect();
                if parts.len() == 4 && parts[0] == NAMESPACE && parts[3] == KEY_ENABLED {
                    let e = out.entry((parts[1].to_string(), parts[2].to_string())).or_default();
                    e[i] = match v.as_str() {
                        "true" => Some(true),
                        "false" => Some(false),
                        _ => None,
                    };
                }
            }
        }
        out.into_iter().map(|((r, s), v)| (r, s, v)).collect()
    }

    /// The shippings the scheduler runs: every definition with resources
    /// whose switch for an existing remote and schedule is on.
    pub fn active_shippings(&self) -> Vec<Shipping> {
        let mut out = Vec::new();
        // The scheduler asks four times a second: a cluster without
        // schedules or remotes (most) costs nothing, whatever its size.
        if self.schedules.is_empty() || self.remotes.is_empty() {
            return out;
        }
        for (rd_key, d) in self.rsc_dfns.iter() {
            if self.resources_of(rd_key).next().is_none() {
                continue;
            }
            for (remote, schedule, levels) in self.schedule_switches(rd_key) {
                let on = levels.iter().flatten().next().copied().unwrap_or(false);
                let (Some(r), Some(s)) = (self.remotes.get(&key(&remote)), self.schedules.get(&key(&schedule))) else { continue };
                if on {
                    let prefix = Schedule::prop_prefix(&remote, &schedule);
                    let pref = self.schedule_prop(rd_key, &format!("{prefix}{KEY_PREF_NODE}"));
                    let dst_rsc = self.schedule_prop(rd_key, &format!("{prefix}{KEY_DST_RSC_NAME}"));
                    let map = format!("{prefix}{KEY_RENAME_STORPOOL_MAP}/");
                    // The definition's renames over its group's over the controller's.
                    let mut stor_pool_rename = std::collections::BTreeMap::new();
                    let g = self.rsc_grps.get(&key(&d.resource_group));
                    for props in [Some(&self.ctrl_props), g.map(|g| &g.props), Some(&d.props)].into_iter().flatten() {
                        for (k, v) in props.iter().filter_map(|(k, v)| k.strip_prefix(&map).map(|k| (k, v))) {
                            stor_pool_rename.insert(k.to_string(), v.clone());
                        }
                    }
                    out.push(Shipping {
                        rsc: d.name.clone(),
                        remote: r.name.clone(),
                        schedule: s.name.clone(),
                        pref_node: pref,
                        dst_rsc,
                        stor_pool_rename,
                    });
                }
            }
        }
        out
    }

    /// Records a scheduled backup's start time and kind in the definition.
    pub fn record_scheduled_backup(&self, rsc: &str, remote: &str, schedule: &str, at_ms: i64, incremental: bool) -> OpResult<Outcome> {
        let mut d = self.rsc_dfn(rsc, BACKUP_MOD)?.clone();
        let prefix = Schedule::prop_prefix(remote, schedule);
        d.props.insert(format!("{prefix}{KEY_LAST_TIME}"), at_ms.to_string());
        d.props.insert(format!("{prefix}{KEY_LAST_INC}"), incremental.to_string());
        let mut out = Outcome::default();
        out.put(Object::RscDfn(d));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z.
    const NEW_YEAR: i64 = 1_767_225_600_000;
    const MIN: i64 = 60_000;

    #[test]
    fn five_field_crons_fire_at_their_next_minute_in_utc() {
        assert_eq!(next_after("* * * * *", NEW_YEAR), Some(NEW_YEAR + MIN));
        assert_eq!(next_after("* * * * *", NEW_YEAR + 1), Some(NEW_YEAR + MIN));
        assert_eq!(next_after("30 2 * * *", NEW_YEAR), Some(NEW_YEAR + (2 * 60 + 30) * MIN));
        // LINSTOR's UNIX cron has no seconds field; six fields are refused.
        assert!(parse_cron("0 * * * * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        assert_eq!(next_after("not a cron", NEW_YEAR), None);
    }

    fn cluster_with(req: wire::Schedule) -> OpResult<Outcome> {
        Cluster::default().create_schedule(&req, &mut Ctx::deterministic())
    }

    #[test]
    fn creation_checks_name_crons_and_failure_policy() {
        let ok = wire::Schedule { schedule_name: "daily".into(), full_cron: "0 4 * * *".into(), ..Default::default() };
        let out = cluster_with(ok.clone()).expect("valid schedule");
        let Some(crate::Change::Put(Object::Schedule(s))) = out.changes.first() else { panic!("no schedule stored: {out:?}") };
        assert_eq!((s.on_failure, s.inc_cron.clone()), (OnFailure::Skip, None));
        let code = |r: OpResult<Outcome>| r.err().map(|e| e.rc.ret_code & 0x7FFF);
        assert_eq!(code(cluster_with(wire::Schedule { schedule_name: "a b".into(), ..ok.clone() })), Some(rc::FAIL_INVLD_SCHEDULE_NAME));
        let bad_cron = cluster_with(wire::Schedule { full_cron: "0 4 * *".into(), ..ok.clone() }).expect_err("4 fields");
        assert!(bad_cron.rc.message.starts_with("Error parsing full-cron"), "{}", bad_cron.rc.message);
        let bad_inc = cluster_with(wire::Schedule { inc_cron: Some("x".into()), ..ok.clone() }).expect_err("bad inc");
        assert!(bad_inc.rc.message.starts_with("Error parsing inc-cron"), "{}", bad_inc.rc.message);
        assert!(cluster_with(wire::Schedule { on_failure: Some("later".into()), ..ok }).is_err());
    }
}
