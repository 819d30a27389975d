//! `cairn snapshot` (`s`).

use cairn_api::snapshot::Snapshot;
use cairn_api::time::datetime_utc;
use cairn_client::seg;
use clap::Subcommand;

use super::size::human_kib;
use super::table::Table;
use super::{Ctx, query};

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Take a snapshot of a resource definition on its diskful nodes.
    #[command(visible_alias = "c")]
    Create {
        /// The resource definition.
        resource_definition: String,
        /// The snapshot's name.
        snapshot_name: String,
        /// Only on these nodes.
        #[arg(short = 'n', long = "nodes", num_args = 1..)]
        nodes: Vec<String>,
    },
    /// Snapshots of several resource definitions at once.
    #[command(name = "create-multiple")]
    CreateMultiple {
        /// The snapshots' name, the same for every resource definition.
        snapshot_name: String,
        /// The resource definitions.
        #[arg(required = true)]
        resource_definitions: Vec<String>,
    },
    /// List snapshots.
    #[command(visible_alias = "l")]
    List {
        /// Only of these resource definitions.
        #[arg(short = 'r', long = "resources", num_args = 1..)]
        resources: Vec<String>,
        /// Only on these nodes.
        #[arg(short = 'n', long = "nodes", num_args = 1..)]
        nodes: Vec<String>,
    },
    /// Delete a snapshot.
    #[command(visible_alias = "d")]
    Delete {
        /// The resource definition.
        resource_definition: String,
        /// The snapshot.
        snapshot_name: String,
        /// Only on these nodes.
        #[arg(short = 'n', long = "nodes", num_args = 1..)]
        nodes: Vec<String>,
    },
    /// Roll the resource back to a snapshot (it must not be in use).
    #[command(visible_alias = "rb")]
    Rollback {
        /// The resource definition.
        resource_definition: String,
        /// The snapshot (on ZFS, any; `zfs rollback` itself only to the
        /// newest).
        snapshot_name: String,
        /// Overrides `StorDriver/Zfs/RollbackStrategy` for this rollback.
        #[arg(long = "zfs-rollback-strategy", value_parser = ["rollback", "clone", "dynamic"])]
        zfs_rollback_strategy: Option<String>,
    },
    /// List a snapshot's properties.
    #[command(visible_alias = "lp")]
    ListProperties {
        /// The resource definition.
        resource_definition: String,
        /// The snapshot.
        snapshot_name: String,
    },
    /// Set (or, without a value, delete) a snapshot property.
    #[command(visible_alias = "sp")]
    SetProperty {
        /// The resource definition.
        resource_definition: String,
        /// The snapshot.
        snapshot_name: String,
        /// The property, e.g. `Aux/purpose`.
        key: String,
        /// The new value; without one the property is deleted.
        value: Option<String>,
    },
    /// Restore resources from a snapshot.
    #[command(visible_alias = "r", subcommand)]
    Resource(RestoreCmd),
    /// Restore volume definitions from a snapshot.
    #[command(name = "volume-definition", visible_alias = "vd", subcommand)]
    VolumeDefinition(RestoreCmd),
}

#[derive(Subcommand, Debug)]
pub enum RestoreCmd {
    /// Restore into a new resource definition.
    Restore {
        /// The resource definition the snapshot is of.
        #[arg(long = "from-resource", visible_alias = "from-rsc")]
        from_resource: String,
        /// The snapshot.
        #[arg(long = "from-snapshot", visible_alias = "from-snap")]
        from_snapshot: String,
        /// The resource definition to restore into (created beforehand, without volumes).
        #[arg(long = "to-resource", visible_alias = "to-rsc")]
        to_resource: String,
        /// Nodes to restore on (default: every node of the snapshot).
        nodes: Vec<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: SnapshotCmd) -> i32 {
    match cmd {
        SnapshotCmd::Create { resource_definition, snapshot_name, nodes } => ctx.send(
            "POST",
            &format!("/v1/resource-definitions/{}/snapshots", seg(&resource_definition)),
            Some(&serde_json::json!({ "name": snapshot_name, "nodes": nodes })),
        ),
        SnapshotCmd::CreateMultiple { snapshot_name, resource_definitions } => {
            let snaps: Vec<serde_json::Value> =
                resource_definitions.iter().map(|rd| serde_json::json!({ "name": snapshot_name, "resource_name": rd })).collect();
            ctx.send("POST", "/v1/actions/snapshot/multi", Some(&serde_json::json!({ "snapshots": snaps })))
        }
        SnapshotCmd::List { resources, nodes } => {
            let list: Vec<Snapshot> =
                match ctx.get(&format!("/v1/view/snapshots{}", query(&[("resources", &resources), ("nodes", &nodes)]))) {
                    Ok(l) => l,
                    Err(code) => return code,
                };
            let mut t = Table::new(&["ResourceName", "SnapshotName", "NodeNames", "Volumes", "CreatedOn", "State"]);
            for s in &list {
                let volumes: Vec<String> =
                    s.volume_definitions.iter().map(|v| format!("{}: {}", v.volume_number, human_kib(v.size_kib))).collect();
                let created = s.snapshots.iter().map(|n| n.create_timestamp).min().map(datetime_utc).unwrap_or_default();
                // LINSTOR's client: a failed node makes the snapshot "Failed".
                let has = |flag: &str| s.flags.iter().any(|f| f == flag);
                let state = if has("FAILED_DEPLOYMENT") {
                    "Failed"
                } else if has("SUCCESSFUL") {
                    "Successful"
                } else {
                    "Incomplete"
                };
                t.row(vec![
                    s.resource_name.clone().into(),
                    s.name.clone().into(),
                    s.nodes.join(", ").into(),
                    volumes.join(", ").into(),
                    created.into(),
                    state.to_string().into(),
                ]);
            }
            ctx.show(&list, t)
        }
        SnapshotCmd::ListProperties { resource_definition, snapshot_name } => {
            super::props::list(ctx, &format!("/v1/resource-definitions/{}/snapshots/{}", seg(&resource_definition), seg(&snapshot_name)))
        }
        SnapshotCmd::SetProperty { resource_definition, snapshot_name, key, value } => super::props::set(
            ctx,
            &format!("/v1/resource-definitions/{}/snapshots/{}", seg(&resource_definition), seg(&snapshot_name)),
            &key,
            value.as_deref(),
        ),
        SnapshotCmd::Delete { resource_definition, snapshot_name, nodes } => ctx.send::<()>(
            "DELETE",
            &format!(
                "/v1/resource-definitions/{}/snapshots/{}{}",
                seg(&resource_definition),
                seg(&snapshot_name),
                query(&[("nodes", &nodes)])
            ),
            None,
        ),
        SnapshotCmd::Rollback { resource_definition, snapshot_name, zfs_rollback_strategy } => ctx.send(
            "POST",
            &format!("/v1/resource-definitions/{}/snapshot-rollback/{}", seg(&resource_definition), seg(&snapshot_name)),
            Some(&match zfs_rollback_strategy {
                Some(s) => serde_json::json!({ "zfs_rollback_strategy": s }),
                None => serde_json::json!({}),
            }),
        ),
        SnapshotCmd::Resource(RestoreCmd::Restore { from_resource, from_snapshot, to_resource, nodes }) => ctx.send(
            "POST",
            &format!("/v1/resource-definitions/{}/snapshot-restore-resource/{}", seg(&from_resource), seg(&from_snapshot)),
            Some(&serde_json::json!({ "to_resource": to_resource, "nodes": nodes })),
        ),
        SnapshotCmd::VolumeDefinition(RestoreCmd::Restore { from_resource, from_snapshot, to_resource, .. }) => ctx.send(
            "POST",
            &format!("/v1/resource-definitions/{}/snapshot-restore-volume-definition/{}", seg(&from_resource), seg(&from_snapshot)),
            Some(&serde_json::json!({ "to_resource": to_resource })),
        ),
    }
}
