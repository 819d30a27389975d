//! `cairn controller` client verbs and `cairn error-reports`.

use std::collections::BTreeMap;

use cairn_api::controller::ControllerVersion;
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
    /// List the controller's error reports (not implemented yet).
    #[command(visible_alias = "l")]
    List,
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
        ErrorReportsCmd::List => {
            // Cairn writes no error reports (failures are in the replies and
            // the logs), so this is empty against Cairn; the columns are
            // LINSTOR's for a controller that has some.
            let list: Vec<serde_json::Value> = match ctx.get("/v1/error-reports") {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = super::table::Table::new(&["Id", "Datetime", "Node", "Exception"]);
            let text = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            for r in &list {
                t.row(vec![
                    text(&r["filename"]).into(),
                    text(&r["error_time"]).into(),
                    text(&r["node_name"]).into(),
                    text(&r["exception"]).into(),
                ]);
            }
            ctx.show(&list, t)
        }
    }
}
