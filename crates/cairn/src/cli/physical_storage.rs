//! `cairn physical-storage` (`ps`).

use cairn_api::physical::PhysicalStorage;
use cairn_client::seg;
use clap::Subcommand;

use super::Ctx;
use super::size::human_kib;
use super::table::Table;

#[derive(Subcommand, Debug)]
pub enum PhysicalStorageCmd {
    /// Unused disks of all nodes, grouped by size.
    #[command(visible_alias = "l")]
    List,
    /// Make an LVM volume group or thin pool on unused disks.
    #[command(name = "create-device-pool", visible_alias = "cdp")]
    CreateDevicePool {
        /// lvm or lvmthin.
        provider_kind: String,
        /// The node the disks are in.
        node_name: String,
        /// The disks, e.g. /dev/sdb /dev/sdc.
        #[arg(required = true)]
        device_paths: Vec<String>,
        /// The volume group to create (lvm), or the thin pool, in volume group `linstor_<NAME>` (lvmthin).
        #[arg(long = "pool-name")]
        pool_name: String,
        /// Also create this storage pool on the new device pool.
        #[arg(long = "storage-pool")]
        storage_pool: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: PhysicalStorageCmd) -> i32 {
    match cmd {
        PhysicalStorageCmd::List => {
            let list: Vec<PhysicalStorage> = match ctx.get("/v1/physical-storage") {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Size", "Rotational", "Nodes"]);
            for g in &list {
                let nodes: Vec<String> = g
                    .nodes
                    .iter()
                    .map(|(n, devs)| format!("{n}[{}]", devs.iter().map(|d| d.device.as_str()).collect::<Vec<_>>().join(",")))
                    .collect();
                t.row(vec![human_kib(g.size / 1024).into(), g.rotational.to_string().into(), nodes.join(" ").into()]);
            }
            ctx.show(&list, t)
        }
        PhysicalStorageCmd::CreateDevicePool { provider_kind, node_name, device_paths, pool_name, storage_pool } => {
            let kind = match provider_kind.to_ascii_lowercase().as_str() {
                "lvm" => "LVM",
                "lvmthin" | "lvm_thin" => "LVM_THIN",
                other => other,
            }
            .to_ascii_uppercase();
            let mut body = serde_json::json!({ "provider_kind": kind, "device_paths": device_paths, "pool_name": pool_name });
            if let Some(sp) = storage_pool {
                body["with_storage_pool"] = serde_json::json!({ "name": sp });
            }
            ctx.send("POST", &format!("/v1/physical-storage/{}", seg(&node_name)), Some(&body))
        }
    }
}
