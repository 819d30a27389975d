//! `cairn storage-pool` (`sp`).

use cairn_api::storage_pool::StoragePool;
use cairn_client::seg;
use clap::Subcommand;

use super::size::human_kib;
use super::table::{Cell, Table, Tone};
use super::{Ctx, prop_body, query};

#[derive(Subcommand, Debug)]
pub enum StoragePoolCmd {
    /// Create a pool: `sp create <kind> NODE NAME [BACKING]`, kind one of
    /// lvm, lvmthin, zfs, zfsthin, file, filethin, diskless.
    #[command(visible_alias = "c")]
    Create {
        /// lvm, lvmthin, zfs, zfsthin, file, filethin or diskless.
        kind: String,
        /// The node the pool is on.
        node: String,
        /// The pool's name, e.g. `DfltStorPool`.
        name: String,
        /// Volume group, vg/thinpool, zpool, or directory.
        backing: Option<String>,
        /// Name of the storage that several nodes share (the same volume group on shared disks).
        #[arg(long = "shared-space")]
        shared_space: Option<String>,
    },
    /// List storage pools with their capacity.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        /// Only pools on these nodes.
        #[arg(short = 'n', long = "nodes", num_args = 1..)]
        nodes: Vec<String>,
        /// Only these pools.
        #[arg(short = 's', long = "storage-pools", num_args = 1..)]
        pools: Vec<String>,
        /// Only pools with these properties (`KEY=VALUE`, or `KEY` for any value).
        #[arg(long = "props", num_args = 1..)]
        props: Vec<String>,
    },
    /// Delete a storage pool (refused while it holds volumes).
    #[command(visible_alias = "d")]
    Delete {
        /// The node.
        node: String,
        /// The pool.
        name: String,
    },
    /// List a storage pool's properties.
    #[command(visible_alias = "lp")]
    ListProperties {
        /// The node.
        node: String,
        /// The storage pool.
        name: String,
    },
    /// Set (or, without a value, delete) a storage pool property.
    #[command(visible_alias = "sp")]
    SetProperty {
        /// The node.
        node: String,
        /// The pool.
        name: String,
        /// The property, e.g. `MaxOversubscriptionRatio`.
        key: String,
        /// The new value; without one the property is deleted.
        value: Option<String>,
    },
}

/// The provider kind a CLI kind word means.
pub fn provider(kind: &str) -> Option<&'static str> {
    Some(match kind.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
        "lvm" => "LVM",
        "lvmthin" => "LVM_THIN",
        "zfs" => "ZFS",
        "zfsthin" => "ZFS_THIN",
        "file" => "FILE",
        "filethin" => "FILE_THIN",
        "diskless" => "DISKLESS",
        _ => return None,
    })
}

pub fn run(ctx: &Ctx, cmd: StoragePoolCmd) -> i32 {
    match cmd {
        StoragePoolCmd::Create { kind, node, name, backing, shared_space } => {
            let Some(kind) = provider(&kind) else {
                let message = format!("unknown storage pool kind '{kind}' (lvm, lvmthin, zfs, zfsthin, file, filethin, diskless)");
                return ctx.problem(cairn_api::rc::FAIL_INVLD_STOR_DRIVER, message);
            };
            let mut body = StoragePool {
                storage_pool_name: name,
                provider_kind: kind.into(),
                free_space_mgr_name: shared_space,
                ..Default::default()
            };
            if let Some(b) = backing {
                body.props.insert("StorDriver/StorPoolName".into(), b);
            }
            ctx.send("POST", &format!("/v1/nodes/{}/storage-pools", seg(&node)), Some(&body))
        }
        StoragePoolCmd::List { nodes, pools, props } => {
            let path = format!("/v1/view/storage-pools{}", query(&[("nodes", &nodes), ("storage_pools", &pools), ("props", &props)]));
            let list: Vec<StoragePool> = match ctx.get(&path) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&[
                "StoragePool",
                "Node",
                "Driver",
                "PoolName",
                "FreeCapacity",
                "TotalCapacity",
                "CanSnapshots",
                "State",
                "SharedName",
            ]);
            for p in &list {
                let diskless = p.provider_kind == "DISKLESS";
                let state = match (diskless, p.free_capacity) {
                    (true, _) | (false, Some(_)) => Cell::toned("Ok", Tone::Good),
                    (false, None) => Cell::toned("Unknown", Tone::Warn),
                };
                t.row(vec![
                    p.storage_pool_name.clone().into(),
                    p.node_name.clone().into(),
                    p.provider_kind.clone().into(),
                    p.props.get("StorDriver/StorPoolName").cloned().unwrap_or_default().into(),
                    p.free_capacity.filter(|_| !diskless).map(human_kib).unwrap_or_default().into(),
                    p.total_capacity.filter(|_| !diskless).map(human_kib).unwrap_or_default().into(),
                    p.supports_snapshots.unwrap_or(false).to_string().into(),
                    state,
                    p.free_space_mgr_name.clone().unwrap_or_default().into(),
                ]);
            }
            t.sort_by_column(0);
            ctx.show(&list, t)
        }
        StoragePoolCmd::Delete { node, name } => {
            ctx.send::<()>("DELETE", &format!("/v1/nodes/{}/storage-pools/{}", seg(&node), seg(&name)), None)
        }
        StoragePoolCmd::ListProperties { node, name } => {
            super::props::list(ctx, &format!("/v1/nodes/{}/storage-pools/{}", seg(&node), seg(&name)))
        }
        StoragePoolCmd::SetProperty { node, name, key, value } => {
            ctx.send("PUT", &format!("/v1/nodes/{}/storage-pools/{}", seg(&node), seg(&name)), Some(&prop_body(&key, value.as_deref())))
        }
    }
}
