//! `cairn remote` and `cairn schedule`: the backup targets and backup
//! schedules of LINSTOR's tree. Cairn keeps neither yet, so only the lists
//! exist; they show what the controller answers (an empty table today).

use cairn_api::remote::RemoteList;
use clap::Subcommand;

use super::Ctx;
use super::table::Table;

#[derive(Subcommand, Debug)]
pub enum RemoteCmd {
    /// List the remotes (S3, LINSTOR, EBS) backups could be shipped to.
    #[command(visible_alias = "l", alias = "ls")]
    List,
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCmd {
    /// List the backup schedules.
    #[command(visible_alias = "l", alias = "ls")]
    List,
}

pub fn run(ctx: &Ctx, cmd: RemoteCmd) -> i32 {
    match cmd {
        RemoteCmd::List => {
            let list: RemoteList = match ctx.get("/v1/remotes") {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Name", "Type", "Info"]);
            let name = |n: &Option<String>| n.clone().unwrap_or_default().into();
            for r in &list.s3_remotes {
                let info = format!("{}/{}", r.endpoint.clone().unwrap_or_default(), r.bucket.clone().unwrap_or_default());
                t.row(vec![name(&r.remote_name), "S3".into(), info.into()]);
            }
            for r in &list.linstor_remotes {
                t.row(vec![name(&r.remote_name), "LINSTOR".into(), r.url.clone().unwrap_or_default().into()]);
            }
            for r in &list.ebs_remotes {
                t.row(vec![name(&r.remote_name), "EBS".into(), r.region.clone().unwrap_or_default().into()]);
            }
            ctx.show(&list, t)
        }
    }
}

pub fn run_schedule(ctx: &Ctx, cmd: ScheduleCmd) -> i32 {
    match cmd {
        ScheduleCmd::List => {
            let list: serde_json::Value = match ctx.get("/v1/schedules") {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Name", "Full", "Incremental", "KeepLocal", "KeepRemote"]);
            let cell = |s: &serde_json::Value, k: &str| match &s[k] {
                serde_json::Value::Null => String::new().into(),
                serde_json::Value::String(v) => v.clone().into(),
                v => v.to_string().into(),
            };
            for s in list["data"].as_array().into_iter().flatten() {
                t.row(vec![
                    cell(s, "schedule_name"),
                    cell(s, "full_cron"),
                    cell(s, "inc_cron"),
                    cell(s, "keep_local"),
                    cell(s, "keep_remote"),
                ]);
            }
            ctx.show(&list, t)
        }
    }
}
