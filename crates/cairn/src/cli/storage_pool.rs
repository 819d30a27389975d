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
        kind: String,
        node: String,
        name: String,
        /// Volume group, vg/thinpool, zpool, or directory.
        backing: Option<String>,
        #[arg(long = "shared-space")]
        shared_space: Option<String>,
    },
    #[command(visible_alias = "l", alias = "ls")]
    List {
        #[arg(short = 'n', long = "nodes", num_args = 1..)]
        nodes: Vec<String>,
        #[arg(short = 's', long = "storage-pools", num_args = 1..)]
        pools: Vec<String>,
        #[arg(long = "props", num_args = 1..)]
        props: Vec<String>,
    },
    #[command(visible_alias = "d")]
    Delete { node: String, name: String },
    #[command(visible_alias = "sp")]
    SetProperty { node: String, name: String, key: String, value: Option<String> },
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
                eprintln!("Error: unknown storage pool kind '{kind}' (lvm, lvmthin, zfs, zfsthin, file, filethin, diskless)");
                return super::output::EXIT_CLIENT;
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
        StoragePoolCmd::SetProperty { node, name, key, value } => {
            ctx.send("PUT", &format!("/v1/nodes/{}/storage-pools/{}", seg(&node), seg(&name)), Some(&prop_body(&key, value.as_deref())))
        }
    }
}
