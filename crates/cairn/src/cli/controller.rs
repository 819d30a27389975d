//! `cairn controller` client verbs and `cairn error-reports`.

use std::collections::BTreeMap;

use cairn_api::controller::ControllerVersion;
use cairn_api::rc;
use cairn_client::seg;
use clap::Subcommand;

use super::{Ctx, prop_body};

#[derive(Subcommand, Debug)]
pub enum ControllerVerb {
    /// Controller and REST API versions.
    #[command(visible_alias = "v")]
    Version,
    /// List the controller properties.
    #[command(visible_alias = "lp")]
    ListProperties,
    /// Set (or, without a value, delete) a controller property.
    #[command(visible_alias = "sp")]
    SetProperty {
        /// The property, e.g. `DrbdOptions/Net/protocol`.
        key: String,
        /// The new value; without one the property is deleted.
        value: Option<String>,
    },
    /// Set cluster-wide DRBD options: `controller drbd-options --max-buffers 8000`.
    #[command(visible_alias = "opt")]
    DrbdOptions(super::props::DrbdOptionArgs),
    /// The largest volume that fits REPLICA_COUNT replicas, per storage pool.
    #[command(visible_alias = "qmvs")]
    QueryMaxVolumeSize {
        /// How many replicas.
        replica_count: i64,
        /// Only this storage pool.
        #[arg(short = 's', long = "storage-pool")]
        storage_pool: Option<String>,
    },
    /// The controller this client talks to (its URL).
    Which,
    /// Set the controller's log level (ERROR, WARN, INFO, DEBUG, TRACE).
    SetLogLevel {
        /// The level.
        level: String,
        /// For the libraries Cairn uses instead of Cairn itself.
        #[arg(long)]
        library: bool,
        /// For every satellite too.
        #[arg(long)]
        global: bool,
    },
    /// Copy the controller's database, while it runs, to BACKUP_NAME.db in
    /// its data directory (upstream `linstor controller backupdb`).
    #[command(name = "backupdb", visible_alias = "bakdb")]
    BackupDb {
        /// Base name of the backup (a file name, no path).
        backup_name: String,
    },
    /// Export every object of the controller's database as JSON to
    /// EXPORT_NAME.json in its data directory (upstream `linstor controller
    /// exportdb`); a time-stamped name without one.
    #[command(name = "exportdb", visible_alias = "expdb")]
    ExportDb {
        /// Name of the export (a file name, no path).
        export_name: Option<String>,
    },
    /// API tokens (LINSTOR's token authentication): once initialised, every
    /// REST request must carry a valid one (`--token`).
    #[command(name = "auth-token", subcommand)]
    AuthToken(AuthTokenCmd),
}

#[derive(Subcommand, Debug)]
pub enum AuthTokenCmd {
    /// Turn token authentication on; prints the first token (shown only this once).
    Init {
        /// What the token is for.
        #[arg(default_value = "init")]
        description: String,
    },
    /// Make a new token; prints it (shown only this once).
    #[command(visible_alias = "c")]
    Create {
        /// What the token is for.
        description: String,
        /// Last day it is valid (YYYY-MM-DD; it expires at that day's 00:00 UTC).
        #[arg(long)]
        expires_at: Option<String>,
        /// The one client address it is accepted from.
        #[arg(long)]
        ip_filter: Option<String>,
    },
    /// List the tokens (never the tokens themselves).
    #[command(visible_alias = "l")]
    List,
    /// Change a token's description, IP filter or state.
    #[command(visible_alias = "m")]
    Modify {
        /// The token's id (see list).
        id: u32,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// New IP filter (empty: none).
        #[arg(long)]
        ip_filter: Option<String>,
        /// Enable (true) or disable (false) the token.
        #[arg(long)]
        active: Option<bool>,
    },
    /// Revoke a token for good.
    #[command(visible_alias = "d")]
    Delete {
        /// The token's id.
        id: u32,
    },
}

fn run_auth_token(ctx: &Ctx, cmd: AuthTokenCmd) -> i32 {
    use cairn_api::controller::{AuthTokenListResponse, CreateAuthToken, InitAuthTokenRequest, ModifyAuthToken};
    const BASE: &str = "/v1/controller/auth";
    match cmd {
        AuthTokenCmd::Init { description } => {
            // Cairn makes no certificate of its own, so `no_https` changes nothing.
            ctx.send("POST", &format!("{BASE}/initialize-token-auth"), Some(&InitAuthTokenRequest { description, ..Default::default() }))
        }
        AuthTokenCmd::Create { description, expires_at, ip_filter } => {
            ctx.send("POST", &format!("{BASE}/token"), Some(&CreateAuthToken { description, expires_at, ip_filter }))
        }
        AuthTokenCmd::List => {
            let list: AuthTokenListResponse = match ctx.get(&format!("{BASE}/token")) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = super::table::Table::new(&["Id", "Description", "Active", "Created", "Expires", "IpFilter"]);
            let day = |s: &Option<String>| s.as_deref().map(|s| s.get(..10).unwrap_or(s).to_string()).unwrap_or_default();
            for a in &list.list {
                t.row(vec![
                    a.id.to_string().into(),
                    a.description.clone().into(),
                    a.is_active.to_string().into(),
                    day(&Some(a.created_at.clone())).into(),
                    day(&a.expires_at).into(),
                    a.ip_filter.clone().unwrap_or_default().into(),
                ]);
            }
            ctx.show(&list, t)
        }
        AuthTokenCmd::Modify { id, description, ip_filter, active } => {
            ctx.send("PUT", &format!("{BASE}/token/{id}"), Some(&ModifyAuthToken { description, ip_filter, is_active: active }))
        }
        AuthTokenCmd::Delete { id } => ctx.send::<()>("DELETE", &format!("{BASE}/token/{id}"), None),
    }
}

#[derive(Subcommand, Debug)]
pub enum ErrorReportsCmd {
    /// List error reports of the controller and the satellites.
    #[command(visible_alias = "l")]
    List {
        /// Reports since this long ago (`3days`, `5d6h`, `2h`) or this
        /// date (`2026-11-25`, `2026-11-25 13:40:00`, UTC).
        #[arg(short, long)]
        since: Option<String>,
        /// Reports up to the end of this day (`YYYY-MM-DD`, UTC).
        #[arg(short, long)]
        to: Option<String>,
        /// Only these nodes' reports (`Controller` for the controller's).
        #[arg(short, long, num_args = 1..)]
        nodes: Vec<String>,
        /// Only these reports.
        #[arg(long = "report-id", num_args = 1..)]
        report_id: Vec<String>,
        /// Also the origin and version columns.
        #[arg(short, long)]
        full: bool,
    },
    /// Print reports' full text.
    #[command(visible_alias = "s")]
    Show {
        /// The reports' ids.
        #[arg(required = true)]
        report_id: Vec<String>,
    },
    /// Delete reports: by id, or all matching the filters.
    #[command(visible_alias = "d")]
    Delete {
        /// Reports to delete.
        id: Vec<String>,
        /// Only on these nodes.
        #[arg(long, num_args = 1..)]
        nodes: Vec<String>,
        /// Reports since this time (as for `list`).
        #[arg(long)]
        since: Option<String>,
        /// Reports up to this time (as for `list --since`).
        #[arg(long)]
        to: Option<String>,
        /// Only reports of this exception.
        #[arg(long)]
        exception: Option<String>,
        /// Only reports of this version.
        #[arg(long)]
        version: Option<String>,
    },
}

/// A time as the upstream client reads `--since`: a span back from now
/// (`3days`, `5d6h`, `90m`) or a date with an optional time (UTC).
pub fn parse_when(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    if let Some(day) = cairn_api::time::day_start_ms(t) {
        let rest = t.get(10..).unwrap_or("").trim();
        if rest.is_empty() {
            return Ok(day);
        }
        let parts: Vec<Option<i64>> = rest.split(':').map(|p| p.parse().ok()).collect();
        return match parts.as_slice() {
            [Some(h), Some(m)] => Ok(day + (h * 3600 + m * 60) * 1000),
            [Some(h), Some(m), Some(s)] => Ok(day + (h * 3600 + m * 60 + s) * 1000),
            _ => Err(format!("'{text}' is no time: give YYYY-MM-DD [HH:MM[:SS]] or a span like 3days, 5d6h")),
        };
    }
    let (mut total, mut num, mut unit) = (0i64, String::new(), String::new());
    let mut flush = |num: &mut String, unit: &mut String| -> Result<(), String> {
        if num.is_empty() {
            return Err(format!("'{text}' is no span: give a number before each unit, like 3days or 5d6h"));
        }
        let n: i64 = num.parse().map_err(|_| format!("'{num}' is no number"))?;
        let secs = match unit.as_str() {
            "d" | "day" | "days" => 86_400,
            "h" | "hour" | "hours" => 3600,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            other => return Err(format!("unknown time unit '{other}' in '{text}' (days, hours, minutes, seconds)")),
        };
        total += n * secs;
        num.clear();
        unit.clear();
        Ok(())
    };
    for c in t.chars() {
        if c.is_ascii_digit() {
            if !unit.is_empty() {
                flush(&mut num, &mut unit)?;
            }
            num.push(c);
        } else if !c.is_whitespace() {
            unit.push(c.to_ascii_lowercase());
        }
    }
    flush(&mut num, &mut unit)?;
    Ok(now_ms - total * 1000)
}

fn when(ctx: &Ctx, text: Option<&str>) -> Result<Option<i64>, i32> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    text.map(|t| parse_when(t, now)).transpose().map_err(|e| ctx.problem(rc::FAIL_INVLD_REQUEST, e))
}

/// Which nodes and how far back a SOS report looks (linstor-client's
/// `sos-report create`/`download` options).
#[derive(clap::Args, Debug)]
pub struct SosArgs {
    /// Error reports since this long ago (`3days`) or this date.
    #[arg(short, long)]
    since: Option<String>,
    /// Only these nodes.
    #[arg(short, long, num_args = 1..)]
    nodes: Vec<String>,
    /// Only nodes holding one of these resources.
    #[arg(short, long, num_args = 1..)]
    resources: Vec<String>,
    /// Leave these nodes out.
    #[arg(short, long = "exclude-nodes", num_args = 1..)]
    exclude_nodes: Vec<String>,
    /// Leave the controller's part out.
    #[arg(long)]
    no_controller: bool,
}

#[derive(Subcommand, Debug)]
pub enum SosReportCmd {
    /// Write a SOS report into the controller's data directory.
    #[command(visible_alias = "c")]
    Create(SosArgs),
    /// Make a SOS report and save it here (or in PATH).
    #[command(visible_alias = "dl")]
    Download {
        #[command(flatten)]
        args: SosArgs,
        /// Directory to save the archive in (default: the current one).
        path: Option<std::path::PathBuf>,
    },
}

fn sos_query(ctx: &Ctx, a: &SosArgs) -> Result<String, i32> {
    let since: Vec<String> = when(ctx, a.since.as_deref())?.map(|t| t.to_string()).into_iter().collect();
    let ctrl: Vec<String> = if a.no_controller { vec!["false".into()] } else { Vec::new() };
    Ok(super::query(&[
        ("nodes", &a.nodes),
        ("rscs", &a.resources),
        ("exclude", &a.exclude_nodes),
        ("since", &since),
        ("include-ctrl", &ctrl),
    ]))
}

pub fn run_sos_report(ctx: &Ctx, cmd: SosReportCmd) -> i32 {
    match cmd {
        SosReportCmd::Create(a) => match sos_query(ctx, &a) {
            Ok(q) => ctx.send::<()>("GET", &format!("/v1/sos-report{q}"), None),
            Err(code) => code,
        },
        SosReportCmd::Download { args, path } => {
            let q = match sos_query(ctx, &args) {
                Ok(q) => q,
                Err(code) => return code,
            };
            let r = match ctx.client.raw("GET", &format!("/v1/sos-report/download{q}"), None) {
                Ok(r) => r,
                Err(e) => return ctx.error(&e),
            };
            if r.status >= 400 {
                return match serde_json::from_slice::<Vec<rc::ApiCallRc>>(&r.body) {
                    Ok(rcs) => ctx.replies(&rcs),
                    Err(_) => ctx.problem(rc::FAIL_UNKNOWN_ERROR, format!("the download failed (HTTP {})", r.status)),
                };
            }
            // Only the last path component of the name the controller gives.
            let name = r.filename.as_deref().and_then(|n| std::path::Path::new(n).file_name()).map(|n| n.to_owned());
            let name = name.unwrap_or_else(|| "sos-report.tar.gz".into());
            let target = path.unwrap_or_else(|| std::path::PathBuf::from(".")).join(name);
            match std::fs::write(&target, &r.body) {
                Ok(()) => {
                    if ctx.machine {
                        println!("{}", serde_json::json!({ "path": target.display().to_string() }));
                    } else {
                        println!("SOS report saved to {}", target.display());
                    }
                    0
                }
                Err(e) => ctx.problem(rc::FAIL_UNKNOWN_ERROR, format!("cannot write {}: {e}", target.display())),
            }
        }
    }
}

pub fn run(ctx: &Ctx, verb: ControllerVerb) -> i32 {
    match verb {
        ControllerVerb::Version => {
            let v: ControllerVersion = match ctx.get("/v1/controller/version") {
                Ok(v) => v,
                Err(code) => return code,
            };
            if ctx.machine {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("cairn controller {} REST API {}", cairn_controller::build_info::describe(&v), v.rest_api_version);
            }
            0
        }
        ControllerVerb::ListProperties => match ctx.get::<BTreeMap<String, String>>("/v1/controller/properties") {
            Ok(props) => super::props::show(ctx, &props),
            Err(code) => code,
        },
        ControllerVerb::Which => {
            if ctx.machine {
                println!("{}", serde_json::json!({ "controller_uri": ctx.client.base() }));
            } else {
                println!("{}", ctx.client.base());
            }
            0
        }
        ControllerVerb::DrbdOptions(o) => {
            super::props::drbd_options(ctx, "CTRL", 0, &o.args, |_| ("POST", "/v1/controller/properties".to_string()))
        }
        ControllerVerb::QueryMaxVolumeSize { replica_count, storage_pool } => {
            let mut filter = serde_json::json!({ "place_count": replica_count });
            if let Some(p) = storage_pool {
                filter["storage_pool"] = p.into();
            }
            super::resource_group::show_max_volume_sizes(ctx, "OPTIONS", "/v1/query-max-volume-size", Some(&filter))
        }
        ControllerVerb::SetLogLevel { level, library, global } => {
            // As python-linstor's controller_set_log_level names the key.
            let key = format!("level{}{}", if library { "" } else { "_linstor" }, if global { "_global" } else { "" });
            ctx.send("PUT", "/v1/controller/config", Some(&serde_json::json!({ "log": { key: level } })))
        }
        ControllerVerb::BackupDb { backup_name } => {
            ctx.send("POST", "/v1/controller/backup/db", Some(&serde_json::json!({ "backup_name": backup_name })))
        }
        ControllerVerb::ExportDb { export_name } => {
            ctx.send("POST", "/v1/controller/database/export", Some(&serde_json::json!({ "backup_name": export_name })))
        }
        ControllerVerb::AuthToken(cmd) => run_auth_token(ctx, cmd),
        ControllerVerb::SetProperty { key, value } => match value {
            Some(v) => ctx.send("POST", "/v1/controller/properties", Some(&prop_body(&key, Some(&v)))),
            None => ctx.send::<()>("DELETE", &format!("/v1/controller/properties/{}", seg(&key)), None),
        },
    }
}

pub fn run_error_reports(ctx: &Ctx, cmd: ErrorReportsCmd) -> i32 {
    match cmd {
        ErrorReportsCmd::List { since, to, nodes, report_id, full } => {
            let since = match when(ctx, since.as_deref()) {
                Ok(t) => t.map(|t| t.to_string()),
                Err(code) => return code,
            };
            // `--to DAY`: up to the end of that day, as the upstream client.
            let to = match to.as_deref().map(|d| cairn_api::time::day_start_ms(d).ok_or(d)) {
                None => None,
                Some(Ok(day)) => Some((day + 86_400_000 - 1).to_string()),
                Some(Err(d)) => return ctx.problem(rc::FAIL_INVLD_REQUEST, format!("'{d}' is no date (YYYY-MM-DD)")),
            };
            let (since, to) = (since.into_iter().collect::<Vec<_>>(), to.into_iter().collect::<Vec<_>>());
            let mut list: Vec<serde_json::Value> = Vec::new();
            let paths: Vec<String> = if !report_id.is_empty() {
                report_id
                    .iter()
                    .map(|id| format!("/v1/error-reports/{}{}", seg(id), super::query(&[("withContent", &["false".to_string()])])))
                    .collect()
            } else if !nodes.is_empty() {
                nodes
                    .iter()
                    .map(|n| {
                        format!("/v1/error-reports{}", super::query(&[("node", std::slice::from_ref(n)), ("since", &since), ("to", &to)]))
                    })
                    .collect()
            } else {
                vec![format!("/v1/error-reports{}", super::query(&[("since", &since), ("to", &to)]))]
            };
            for p in paths {
                match ctx.get::<Vec<serde_json::Value>>(&p) {
                    Ok(l) => list.extend(l),
                    Err(code) => return code,
                }
            }
            let mut headers = vec!["Id", "Datetime", "Node", "Exception"];
            if full {
                headers.extend(["Location", "Version"]);
            }
            let mut t = super::table::Table::new(&headers);
            let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
            for r in &list {
                let id = text(&r["filename"]).trim_start_matches("ErrorReport-").trim_end_matches(".log").to_string();
                let module = text(&r["module"]);
                let node = match module.chars().next() {
                    Some(m) => format!("{m}|{}", text(&r["node_name"])),
                    None => text(&r["node_name"]),
                };
                let msg = text(&r["exception_message"]);
                let msg = if msg.chars().count() < 60 { msg } else { format!("{}...", msg.chars().take(57).collect::<String>()) };
                let exception = if msg.is_empty() { text(&r["exception"]) } else { format!("{}: {msg}", text(&r["exception"])) };
                let time = r["error_time"].as_i64().map(cairn_api::time::datetime_utc).unwrap_or_default();
                let mut row = vec![id.into(), time.into(), node.into(), exception.into()];
                if full {
                    let at = match (r["origin_file"].as_str(), r["origin_line"].as_i64()) {
                        (Some(f), Some(l)) => format!("{f}:{l}"),
                        (Some(f), None) => f.to_string(),
                        _ => String::new(),
                    };
                    row.extend([at.into(), text(&r["version"]).into()]);
                }
                t.row(row);
            }
            ctx.show(&list, t)
        }
        ErrorReportsCmd::Show { report_id } => {
            let mut list: Vec<serde_json::Value> = Vec::new();
            for id in &report_id {
                match ctx.get::<Vec<serde_json::Value>>(&format!("/v1/error-reports/{}?withContent=true", seg(id))) {
                    Ok(l) => list.extend(l),
                    Err(code) => return code,
                }
            }
            if ctx.machine {
                println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
            } else {
                for r in &list {
                    println!("{}", r["text"].as_str().unwrap_or(""));
                }
            }
            0
        }
        ErrorReportsCmd::Delete { id, nodes, since, to, exception, version } => {
            let (since, to) = match (when(ctx, since.as_deref()), when(ctx, to.as_deref())) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(code), _) | (_, Err(code)) => return code,
            };
            let mut body = serde_json::json!({});
            if !nodes.is_empty() {
                body["nodes"] = nodes.into();
            }
            if let Some(t) = since {
                body["since"] = t.into();
            }
            if let Some(t) = to {
                body["to"] = t.into();
            }
            if let Some(e) = exception {
                body["exception"] = e.into();
            }
            if let Some(v) = version {
                body["version"] = v.into();
            }
            if !id.is_empty() {
                body["ids"] = id.into();
            }
            ctx.send("PATCH", "/v1/error-reports", Some(&body))
        }
    }
}

#[cfg(test)]
mod when_tests {
    use super::parse_when;

    #[test]
    fn spans_and_dates_as_the_upstream_client_reads_them() {
        let now = 10 * 86_400_000;
        assert_eq!(parse_when("3days", now), Ok(7 * 86_400_000));
        assert_eq!(parse_when("5d6h", now), Ok(now - (5 * 86_400 + 6 * 3600) * 1000));
        assert_eq!(parse_when("1970-01-02", now), Ok(86_400_000));
        assert_eq!(parse_when("1970-01-02 01:00:30", now), Ok(86_400_000 + 3_630_000));
        assert!(parse_when("3 fortnights", now).is_err());
        assert!(parse_when("days", now).is_err());
    }
}

#[derive(Subcommand, Debug)]
pub enum SpaceReportingCmd {
    /// Print the controller's space report.
    #[command(visible_alias = "q")]
    Query,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct SpaceReport {
    #[serde(rename = "reportText", default)]
    report_text: String,
}

pub fn run_space_reporting(ctx: &Ctx, cmd: SpaceReportingCmd) -> i32 {
    match cmd {
        SpaceReportingCmd::Query => match ctx.get::<SpaceReport>("/v1/space-report") {
            Ok(r) => {
                if ctx.machine {
                    println!("{}", serde_json::json!(r));
                } else {
                    print!("{}", r.report_text);
                }
                0
            }
            Err(code) => code,
        },
    }
}
