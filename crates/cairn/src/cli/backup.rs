//! `cairn backup`: backups to S3 remotes (`linstor backup …`): create,
//! list, info, restore, delete, abort and the shipping queue.

use std::collections::BTreeMap;

use cairn_client::seg;
use clap::Subcommand;
use serde_json::{Value, json};

use super::Ctx;
use super::table::Table;

#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// List the backups in a remote's bucket.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        /// The S3 remote.
        remote: String,
        /// Only backups of this resource.
        #[arg(short = 'r', long)]
        resource: Option<String>,
        /// Only backups of this snapshot.
        #[arg(short = 's', long)]
        snapshot: Option<String>,
    },
    /// Take a snapshot and ship it to a remote (incremental when a base
    /// exists, unless --full).
    #[command(visible_alias = "c")]
    Create {
        /// The S3 remote.
        remote: String,
        /// The resource to back up.
        resource: String,
        /// Ship a full backup even when an incremental one is possible.
        #[arg(long)]
        full: bool,
        /// The node whose replica is shipped.
        #[arg(short = 'n', long)]
        node: Option<String>,
        /// The snapshot's name (default: the backup id).
        #[arg(short = 's', long)]
        snapshot: Option<String>,
    },
    /// What restoring a backup downloads and needs.
    #[command(visible_alias = "i")]
    Info {
        /// The S3 remote.
        remote: String,
        /// The newest backup of this resource.
        #[arg(short = 'r', long)]
        resource: Option<String>,
        /// This backup (its id, as `backup list` shows).
        #[arg(long)]
        id: Option<String>,
        /// The node the restore would go to (for the free space).
        #[arg(short = 'n', long = "target-node")]
        target_node: Option<String>,
        /// Pool renames, OLD=NEW.
        #[arg(long = "storpool-rename", alias = "stor-pool-map")]
        storpool_rename: Vec<String>,
    },
    /// Restore a backup (its whole chain) into a new resource on a node.
    #[command(visible_alias = "r")]
    Restore {
        /// The S3 remote.
        remote: String,
        /// The node to restore on.
        node: String,
        /// The new resource definition.
        target_resource: String,
        /// The newest backup of this resource.
        #[arg(short = 'r', long)]
        resource: Option<String>,
        /// This backup (its id, as `backup list` shows).
        #[arg(long)]
        id: Option<String>,
        /// Pool renames, OLD=NEW.
        #[arg(long = "storpool-rename", alias = "stor-pool-map")]
        storpool_rename: Vec<String>,
        /// The master passphrase of the cluster that made the backup,
        /// for encrypted (LUKS) volumes of another cluster.
        #[arg(long)]
        passphrase: Option<String>,
    },
    /// Delete backups from a remote's bucket.
    #[command(visible_alias = "d", subcommand)]
    Delete(BackupDelete),
    /// Abort the running shipments of a resource.
    Abort {
        /// The S3 remote.
        remote: String,
        /// The resource.
        resource: String,
    },
    /// Ship a snapshot of a resource to another cluster (a LINSTOR
    /// remote): incremental when both clusters hold an older snapshot of
    /// it, unless --full.
    #[command(visible_alias = "s")]
    Ship {
        /// The LINSTOR remote (the target cluster's controller).
        remote: String,
        /// The local resource to ship.
        source_resource: String,
        /// The resource's name on the target cluster.
        target_resource: String,
        /// Prefer this node to send.
        #[arg(long = "source-node")]
        source_node: Option<String>,
        /// The node of the target cluster that receives.
        #[arg(long = "target-node")]
        target_node: Option<String>,
        /// The target node's network interface to receive on.
        #[arg(long = "target-net-if")]
        target_net_if: Option<String>,
        /// The target cluster's storage pool.
        #[arg(long = "target-storage-pool")]
        target_storage_pool: Option<String>,
        /// Pool renames, OLD=NEW.
        #[arg(long = "storpool-rename", num_args = 0..)]
        storpool_rename: Vec<String>,
        /// Only receive the snapshot; restore no resource from it.
        #[arg(long = "download-only")]
        download_only: bool,
        /// Ship a full copy even when an incremental one is possible.
        #[arg(long = "force-full", alias = "full")]
        force_full: bool,
        /// Ship this snapshot (taken first when it does not exist).
        #[arg(long = "source-snapshot")]
        source_snapshot: Option<String>,
    },
    /// The shipments running now.
    #[command(name = "queue-list", visible_alias = "ql")]
    QueueList,
    /// Switch backup schedules on and off.
    #[command(visible_alias = "sched", subcommand)]
    Schedule(super::schedule::BackupScheduleCmd),
}

#[derive(Subcommand, Debug)]
pub enum BackupDelete {
    /// One backup by its id.
    Id {
        /// The S3 remote.
        remote: String,
        /// The backup's id.
        id: String,
        /// Delete the incremental backups based on it too.
        #[arg(long)]
        cascade: bool,
        /// Only show what would be deleted.
        #[arg(long = "dry-run", alias = "dryrun")]
        dry_run: bool,
    },
    /// The backups matching every filter given.
    Filter {
        /// The S3 remote.
        remote: String,
        /// Made before this time (YYYYMMDD_HHMMSS, UTC).
        #[arg(short = 't', long = "time")]
        time: Option<String>,
        /// Of this resource.
        #[arg(short = 'r', long)]
        resource: Option<String>,
        /// Made on this node.
        #[arg(short = 'n', long)]
        node: Option<String>,
        /// Delete the incremental backups based on them too.
        #[arg(long)]
        cascade: bool,
        /// Only show what would be deleted.
        #[arg(long = "dry-run", alias = "dryrun")]
        dry_run: bool,
    },
    /// Every backup in the bucket.
    All {
        /// The S3 remote.
        remote: String,
        /// Only show what would be deleted.
        #[arg(long = "dry-run", alias = "dryrun")]
        dry_run: bool,
    },
}

fn pool_map(renames: &[String]) -> BTreeMap<String, String> {
    renames.iter().filter_map(|r| r.split_once('=')).map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn backups_path(remote: &str, rest: &str) -> String {
    format!("/v1/remotes/{}/backups{rest}", seg(remote))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn run(ctx: &Ctx, cmd: BackupCmd) -> i32 {
    match cmd {
        BackupCmd::List { remote, resource, snapshot } => {
            let mut q = Vec::new();
            q.extend(resource.map(|r| ("rsc_name", vec![r])));
            q.extend(snapshot.map(|s| ("snap_name", vec![s])));
            let pairs: Vec<(&str, &[String])> = q.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            let list: Value = match ctx.get(&backups_path(&remote, &super::query(&pairs))) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Resource", "Snapshot", "Finished at", "Based On", "Status"]);
            for b in list["linstor"].as_object().into_iter().flat_map(|m| m.values()) {
                let status = if b["shipping"] == json!(true) {
                    "Shipping"
                } else if b["success"] == json!(true) {
                    "Success"
                } else {
                    "Failed"
                };
                t.row(vec![
                    text(&b["origin_rsc"]).into(),
                    text(&b["origin_snap"]).into(),
                    text(&b["finished_time"]).into(),
                    text(&b["based_on_id"]).into(),
                    status.into(),
                ]);
            }
            ctx.show(&list, t)
        }
        BackupCmd::Create { remote, resource, full, node, snapshot } => {
            let body = json!({"rsc_name": resource, "node_name": node, "snap_name": snapshot, "incremental": !full});
            ctx.send("POST", &backups_path(&remote, ""), Some(&body))
        }
        BackupCmd::Info { remote, resource, id, target_node, storpool_rename } => {
            let body = json!({"src_rsc_name": resource, "last_backup": id, "node_name": target_node,
                              "stor_pool_map": pool_map(&storpool_rename)});
            let info: Value = match ctx.request("POST", &backups_path(&remote, "/info"), Some(&body)) {
                Ok(a) if a.status < 400 => match serde_json::from_slice(&a.body) {
                    Ok(v) => v,
                    Err(e) => return ctx.problem(cairn_api::rc::FAIL_UNKNOWN_ERROR, format!("unexpected answer: {e}")),
                },
                other => return ctx.print_answer(other),
            };
            let mut t = Table::new(&["Resource", "Full backup", "Latest backup", "Backups", "Download KiB", "Allocated KiB"]);
            t.row(vec![
                text(&info["rsc"]).into(),
                text(&info["full"]).into(),
                text(&info["latest"]).into(),
                text(&info["count"]).into(),
                text(&info["dl_size_kib"]).into(),
                text(&info["alloc_size_kib"]).into(),
            ]);
            ctx.show(&info, t)
        }
        BackupCmd::Restore { remote, node, target_resource, resource, id, storpool_rename, passphrase } => {
            let mut body = json!({"src_rsc_name": resource, "last_backup": id, "node_name": node,
                                  "target_rsc_name": target_resource, "stor_pool_map": pool_map(&storpool_rename)});
            if let Some(p) = passphrase {
                body["passphrase"] = json!(p);
            }
            ctx.send("POST", &backups_path(&remote, "/restore"), Some(&body))
        }
        BackupCmd::Delete(d) => {
            let (remote, mut q): (String, Vec<(&str, Vec<String>)>) = match d {
                BackupDelete::Id { remote, id, cascade, dry_run } => {
                    (remote, vec![("id", vec![id]), flag("cascading", cascade), flag("dryrun", dry_run)])
                }
                BackupDelete::Filter { remote, time, resource, node, cascade, dry_run } => {
                    let mut q = vec![flag("cascading", cascade), flag("dryrun", dry_run)];
                    q.extend(time.map(|t| ("timestamp", vec![t])));
                    q.extend(resource.map(|r| ("resource_name", vec![r])));
                    q.extend(node.map(|n| ("node_name", vec![n])));
                    (remote, q)
                }
                BackupDelete::All { remote, dry_run } => (remote, vec![("all", vec!["true".into()]), flag("dryrun", dry_run)]),
            };
            q.retain(|(_, v)| !v.is_empty());
            let pairs: Vec<(&str, &[String])> = q.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            ctx.send("DELETE", &backups_path(&remote, &super::query(&pairs)), None::<&()>)
        }
        BackupCmd::Abort { remote, resource } => {
            ctx.send("POST", &backups_path(&remote, "/abort"), Some(&json!({"rsc_name": resource, "create": true})))
        }
        BackupCmd::Ship {
            remote,
            source_resource,
            target_resource,
            source_node,
            target_node,
            target_net_if,
            target_storage_pool,
            storpool_rename,
            download_only,
            force_full,
            source_snapshot,
        } => {
            let body = json!({"src_rsc_name": source_resource, "dst_rsc_name": target_resource, "src_node_name": source_node,
                              "dst_node_name": target_node, "dst_net_if_name": target_net_if, "dst_stor_pool": target_storage_pool,
                              "stor_pool_rename": pool_map(&storpool_rename), "download_only": download_only,
                              "allow_incremental": !force_full, "src_snap_name": source_snapshot});
            ctx.send("POST", &backups_path(&remote, "/ship"), Some(&body))
        }
        BackupCmd::Schedule(cmd) => super::schedule::run_backup(ctx, cmd),
        BackupCmd::QueueList => {
            let q: Value = match ctx.get("/v1/view/backup/queue") {
                Ok(q) => q,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Resource", "Snapshot", "Remote", "Node", "Incremental"]);
            for s in q["snap_queues"].as_array().into_iter().flatten() {
                t.row(vec![
                    text(&s["resource_name"]).into(),
                    text(&s["snapshot_name"]).into(),
                    text(&s["remote_name"]).into(),
                    text(&s["pref_node"]).into(),
                    text(&s["incremental"]).into(),
                ]);
            }
            ctx.show(&q, t)
        }
    }
}

/// A `true` query flag, or nothing.
fn flag(name: &'static str, on: bool) -> (&'static str, Vec<String>) {
    (name, if on { vec!["true".into()] } else { Vec::new() })
}
