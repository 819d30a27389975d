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
