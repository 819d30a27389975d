//! `cairn schedule` and `cairn backup schedule`: backup schedules as
//! upstream's `linstor schedule …` (list, create, modify, delete,
//! list-by-resource, list-by-resource-details) and `linstor backup
//! schedule enable|disable|delete`.

use cairn_api::schedule::{BackupSchedule, DataList, Schedule, ScheduleDetails, ScheduleModify, ScheduledRscs};
use cairn_client::seg;
use clap::{Args, Subcommand};

use super::Ctx;
use super::table::Table;

/// Upstream's keep and retry counts: a number, or "all"/"forever" (-1:
/// unset on modify).
fn count(s: &str) -> Result<i32, String> {
    match s.to_ascii_lowercase().as_str() {
        "all" | "forever" => Ok(-1),
        n => n.parse::<i32>().ok().filter(|v| *v >= 0).ok_or_else(|| format!("'{s}' is not a count (a number >= 0, or 'all')")),
    }
}

fn on_failure(s: &str) -> Result<String, String> {
    let up = s.to_ascii_uppercase();
    if up == "SKIP" || up == "RETRY" { Ok(up) } else { Err(format!("'{s}' is neither RETRY nor SKIP")) }
}

/// The options `create` and `modify` share.
#[derive(Args, Debug)]
pub struct ScheduleOpts {
    /// Cron expression (5 fields) for incremental backups ("" removes it
    /// on modify).
    #[arg(short = 'i', long = "incremental-cron")]
    incremental_cron: Option<String>,
    /// Full backups (with their snapshots) to keep locally ("all" unsets
    /// it on modify).
    #[arg(short = 'l', long = "keep-local", value_parser = count)]
    keep_local: Option<i32>,
    /// Full backups to keep on the remote ("all" unsets it on modify).
    #[arg(short = 'r', long = "keep-remote", value_parser = count)]
    keep_remote: Option<i32>,
    /// What a failed backup does: RETRY or SKIP.
    #[arg(long = "on-failure", value_parser = on_failure)]
    on_failure: Option<String>,
    /// How often a failed backup is retried with RETRY ("forever" unsets
    /// it on modify).
    #[arg(long = "max-retries", value_parser = count)]
    max_retries: Option<i32>,
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCmd {
    /// List the backup schedules.
    #[command(visible_alias = "l", alias = "ls")]
    List,
    /// Create a backup schedule.
    #[command(visible_alias = "c")]
    Create {
        /// The schedule's name.
        schedule_name: String,
        /// Cron expression (5 fields) for full backups.
        full_cron: String,
        #[command(flatten)]
        opts: ScheduleOpts,
    },
    /// Modify a backup schedule.
    #[command(visible_alias = "m")]
    Modify {
        /// The schedule's name.
        schedule_name: String,
        /// Cron expression for full backups.
        #[arg(short = 'f', long = "full-cron")]
        full_cron: Option<String>,
        #[command(flatten)]
        opts: ScheduleOpts,
    },
    /// Delete a backup schedule (and every switch of it).
    #[command(visible_alias = "d")]
    Delete {
        /// The schedule's name.
        schedule_name: String,
    },
    /// The resources with their schedules, last and next runs.
    #[command(name = "list-by-resource", visible_alias = "lbr")]
    ListByResource {
        /// Only this resource.
        #[arg(short = 'r', long)]
        resource: Option<String>,
        /// Only this remote.
        #[arg(short = 'o', long)]
        remote: Option<String>,
        /// Only this schedule.
        #[arg(short = 's', long)]
        schedule: Option<String>,
        /// Only schedules that are on.
        #[arg(short = 'a', long = "active-only")]
        active_only: bool,
    },
    /// Where each schedule of a resource is switched on or off.
    #[command(name = "list-by-resource-details", visible_alias = "lbd")]
    ListByResourceDetails {
        /// The resource definition.
        resource_name: String,
    },
}

/// Which switch: remote, schedule and where (definition, group, or the
/// controller when neither is named).
#[derive(Args, Debug)]
pub struct Switch {
    /// The remote.
    remote_name: String,
    /// The schedule.
    schedule_name: String,
    /// Of this resource definition.
    #[arg(long = "rd", alias = "resource-definition", conflicts_with = "rg")]
    rd: Option<String>,
    /// Of this resource group.
    #[arg(long = "rg", alias = "resource-group")]
    rg: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum BackupScheduleCmd {
    /// Switch a schedule on for a resource definition, a group or the
    /// controller (neither named).
    #[command(visible_alias = "e")]
    Enable {
        /// The remote.
        remote_name: String,
        /// The schedule.
        schedule_name: String,
        /// The node whose replica is shipped, when it has one.
        #[arg(long = "node", alias = "preferred-node")]
        node: Option<String>,
        /// Of this resource definition.
        #[arg(long = "rd", alias = "resource-definition", conflicts_with = "rg")]
        rd: Option<String>,
        /// Of this resource group.
        #[arg(long = "rg", alias = "resource-group")]
        rg: Option<String>,
    },
    /// Switch a schedule off (for a definition, group or the controller).
    #[command(visible_alias = "dis")]
    Disable(Switch),
    /// Remove the switch, so the level below decides again.
    #[command(visible_alias = "d")]
    Delete(Switch),
}

fn opt(v: &Option<impl ToString>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_default()
}

/// A time of the view: `-1` is none.
fn when(ms: i64, inc: bool) -> String {
    if ms < 0 {
        return String::new();
    }
    format!("{} ({})", cairn_api::time::datetime_utc(ms), if inc { "Inc" } else { "Full" })
}

pub fn run(ctx: &Ctx, cmd: ScheduleCmd) -> i32 {
    match cmd {
        ScheduleCmd::List => {
            let list: DataList<Schedule> = match ctx.get("/v1/schedules") {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Name", "Full", "Incremental", "KeepLocal", "KeepRemote", "OnFailure"]);
            for s in &list.data {
                let failure = match (&s.on_failure, s.max_retries) {
                    (Some(f), Some(n)) if f == "RETRY" => format!("{f}[{n}]"),
                    (f, _) => opt(f),
                };
                t.row(vec![
                    s.schedule_name.clone().into(),
                    s.full_cron.clone().into(),
                    opt(&s.inc_cron).into(),
                    opt(&s.keep_local).into(),
                    opt(&s.keep_remote).into(),
                    failure.into(),
                ]);
            }
            ctx.show(&list, t)
        }
        ScheduleCmd::Create { schedule_name, full_cron, opts } => {
            let body = Schedule {
                schedule_name,
                full_cron,
                inc_cron: opts.incremental_cron,
                keep_local: opts.keep_local.filter(|n| *n >= 0),
                keep_remote: opts.keep_remote.filter(|n| *n >= 0),
                on_failure: opts.on_failure,
                max_retries: opts.max_retries.filter(|n| *n >= 0),
            };
            ctx.send("POST", "/v1/schedules", Some(&body))
        }
        ScheduleCmd::Modify { schedule_name, full_cron, opts } => {
            let ScheduleOpts { incremental_cron, keep_local, keep_remote, on_failure, max_retries } = opts;
            let body = ScheduleModify { full_cron, inc_cron: incremental_cron, keep_local, keep_remote, on_failure, max_retries };
            ctx.send("PUT", &format!("/v1/schedules/{}", seg(&schedule_name)), Some(&body))
        }
        ScheduleCmd::Delete { schedule_name } => ctx.send("DELETE", &format!("/v1/schedules/{}", seg(&schedule_name)), None::<&()>),
        ScheduleCmd::ListByResource { resource, remote, schedule, active_only } => {
            let mut q = Vec::new();
            q.extend(resource.map(|r| ("rsc", vec![r])));
            q.extend(remote.map(|r| ("remote", vec![r])));
            q.extend(schedule.map(|s| ("schedule", vec![s])));
            if active_only {
                q.push(("active-only", vec!["true".to_string()]));
            }
            let pairs: Vec<(&str, &[String])> = q.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            let list: DataList<ScheduledRscs> = match ctx.get(&format!("/v1/view/schedules-by-resource{}", super::query(&pairs))) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["ResourceName", "RemoteName", "ScheduleName", "Reason", "Last backup", "Next backup"]);
            for r in &list.data {
                t.row(vec![
                    r.rsc_name.clone().into(),
                    opt(&r.remote_name).into(),
                    opt(&r.schedule_name).into(),
                    opt(&r.reason).into(),
                    when(r.last_snap_time, r.last_snap_inc).into(),
                    when(r.next_exec_time, r.next_exec_inc).into(),
                ]);
            }
            ctx.show(&list, t)
        }
        ScheduleCmd::ListByResourceDetails { resource_name } => {
            let list: DataList<ScheduleDetails> = match ctx.get(&format!("/v1/view/schedules-by-resource/{}", seg(&resource_name))) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mark = |v: Option<bool>| match v {
                Some(true) => "enabled",
                Some(false) => "disabled",
                None => "",
            };
            let mut t = Table::new(&["Remote", "Schedule", "Resource-Definition", "Resource-Group", "Controller"]);
            for d in &list.data {
                t.row(vec![
                    d.remote_name.clone().into(),
                    d.schedule_name.clone().into(),
                    mark(d.rsc_dfn).into(),
                    mark(d.rsc_grp).into(),
                    mark(d.ctrl).into(),
                ]);
            }
            ctx.show(&list, t)
        }
    }
}

fn switch_path(remote: &str, schedule: &str, verb: &str) -> String {
    format!("/v1/remotes/{}/backups/schedule/{}/{verb}", seg(remote), seg(schedule))
}

pub fn run_backup(ctx: &Ctx, cmd: BackupScheduleCmd) -> i32 {
    match cmd {
        BackupScheduleCmd::Enable { remote_name, schedule_name, node, rd, rg } => {
            let body = BackupSchedule { rsc_name: rd, grp_name: rg, node_name: node, ..Default::default() };
            ctx.send("PUT", &switch_path(&remote_name, &schedule_name, "enable"), Some(&body))
        }
        BackupScheduleCmd::Disable(Switch { remote_name, schedule_name, rd, rg }) => {
            let body = BackupSchedule { rsc_name: rd, grp_name: rg, ..Default::default() };
            ctx.send("PUT", &switch_path(&remote_name, &schedule_name, "disable"), Some(&body))
        }
        BackupScheduleCmd::Delete(Switch { remote_name, schedule_name, rd, rg }) => {
            let mut q = Vec::new();
            q.extend(rd.map(|r| ("rsc_dfn_name", vec![r])));
            q.extend(rg.map(|r| ("rsc_grp_name", vec![r])));
            let pairs: Vec<(&str, &[String])> = q.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            let path = format!("{}{}", switch_path(&remote_name, &schedule_name, "delete"), super::query(&pairs));
            ctx.send("DELETE", &path, None::<&()>)
        }
    }
}
