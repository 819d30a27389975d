//! `cairn resource` (`r`) and `cairn volume` (`v`).

use cairn_api::resource::{Resource, ResourceCreate, ResourceWithVolumes, Volume};
use cairn_client::seg;
use clap::{Args, Subcommand};

use super::size::human_kib;
use super::table::{Cell, Table, Tone};
use super::{Ctx, query};

#[derive(Subcommand, Debug)]
pub enum ResourceCmd {
    /// Place a resource on the given nodes: `r create NODE... RESOURCE`.
    #[command(visible_alias = "c")]
    Create {
        /// Nodes, then the resource definition.
        #[arg(num_args = 2.., required = true)]
        nodes_then_resource: Vec<String>,
        /// The storage pool for the volumes (default: the resource group's, or DfltStorPool).
        #[arg(short = 's', long = "storage-pool")]
        storage_pool: Option<String>,
        /// A diskless DRBD client: the data lives on the other replicas.
        #[arg(long = "drbd-diskless", alias = "diskless")]
        diskless: bool,
    },
    /// List resources and their states.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        #[command(flatten)]
        filter: ListFilter,
        /// Only resources with these properties (`KEY=VALUE`, or `KEY` for any value).
        #[arg(long = "props", num_args = 1..)]
        props: Vec<String>,
    },
    /// Delete a resource from nodes: `r delete NODE... RESOURCE`.
    #[command(visible_alias = "d")]
    Delete {
        /// Nodes, then the resource definition.
        #[arg(num_args = 2.., required = true)]
        nodes_then_resource: Vec<String>,
        /// Keep a tiebreaker where the definition needs one: the
        /// tiebreaker itself stays, and the auto-tiebreaker is turned on
        /// if it was off.
        #[arg(long)]
        keep_tiebreaker: bool,
    },
    /// Bring a deactivated resource back up on a node.
    Activate {
        /// The node.
        node: String,
        /// The resource.
        resource: String,
    },
    /// Take a resource down on a node (DRBD down), keeping its storage.
    Deactivate {
        /// The node.
        node: String,
        /// The resource.
        resource: String,
    },
    /// Toggle a resource between diskless and diskful (backed by disks).
    #[command(visible_alias = "td")]
    ToggleDisk {
        /// The node where the resource is deployed.
        node: String,
        /// The resource.
        resource: String,
        /// Add disks to a diskless resource using this storage pool.
        #[arg(short = 's', long = "storage-pool", conflicts_with_all = ["default_storage_pool", "diskless"])]
        storage_pool: Option<String>,
        /// Add disks using the storage pools the properties of the volumes' objects determine.
        #[arg(long = "default-storage-pool", visible_alias = "dflt", conflicts_with = "diskless")]
        default_storage_pool: bool,
        /// Remove the disks from a resource.
        #[arg(short = 'd', long = "diskless")]
        diskless: bool,
        /// The node whose replica is deleted once the new disk is in sync.
        #[arg(long = "migrate-from", value_name = "MIGRATION_SOURCE", conflicts_with = "diskless")]
        migrate_from: Option<String>,
        /// Accepted for compatibility; replies always wait for the satellites.
        #[arg(long = "async")]
        r#async: bool,
    },
    /// List the properties of a resource on a node.
    #[command(visible_alias = "lp")]
    ListProperties {
        /// The node.
        node: String,
        /// The resource.
        resource: String,
    },
    /// Set (or, without a value, delete) a property of a resource on a node.
    #[command(visible_alias = "sp")]
    SetProperty {
        /// The node.
        node: String,
        /// The resource.
        resource: String,
        /// The property, e.g. `DrbdOptions/SkipDisk`.
        key: String,
        /// The new value; without one the property is deleted.
        value: Option<String>,
    },
    /// Every replica of the resources that have one on NODE (upstream
    /// `linstor r involved`).
    #[command(visible_alias = "inv")]
    Involved {
        /// The node.
        node: String,
        /// Only resources in use somewhere.
        #[arg(short = 'i', long = "inuse")]
        inuse: bool,
        /// Only resources in use on a diskless replica.
        #[arg(short = 'd', long = "diskless-inuse")]
        diskless_inuse: bool,
        /// Only resources with fewer diskful replicas than this.
        #[arg(long = "min-diskful")]
        min_diskful: Option<usize>,
    },
    /// Set DRBD options of one replica pair (as `resource-connection drbd-peer-options`).
    #[command(name = "drbd-peer-options", visible_alias = "popt")]
    DrbdPeerOptions(super::props::DrbdOptionArgs),
    /// List volumes (as `volume list`).
    #[command(visible_alias = "lv")]
    ListVolumes {
        #[command(flatten)]
        filter: ListFilter,
    },
    /// Ensure a resource is available on a node (diskless unless --diskful).
    #[command(visible_alias = "mkavail")]
    MakeAvailable {
        /// The node.
        node: String,
        /// The resource.
        resource: String,
        /// With a local disk.
        #[arg(long)]
        diskful: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// List volumes: device paths, allocated sizes, states.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        #[command(flatten)]
        filter: ListFilter,
    },
    /// List the properties of one volume of a resource on a node.
    #[command(visible_alias = "lp")]
    ListProperties {
        /// The node.
        node: String,
        /// The resource.
        resource: String,
        /// The volume number.
        volume_nr: u32,
    },
    /// Set (or, without a value, delete) a property of one volume.
    #[command(visible_alias = "sp")]
    SetProperty {
        /// The node.
        node: String,
        /// The resource.
        resource: String,
        /// The volume number.
        volume_nr: u32,
        /// The property.
        key: String,
        /// The new value; without one the property is deleted.
        value: Option<String>,
    },
}

/// The `-n`, `-r`, `-s` filters of resource and volume lists.
#[derive(Args, Debug, Clone, Default)]
pub struct ListFilter {
    /// Only on these nodes.
    #[arg(short = 'n', long = "nodes", num_args = 1..)]
    nodes: Vec<String>,
    /// Only these resources.
    #[arg(short = 'r', long = "resources", num_args = 1..)]
    resources: Vec<String>,
    /// Only in these storage pools.
    #[arg(short = 's', long = "storage-pools", num_args = 1..)]
    pools: Vec<String>,
}

/// The state column of a resource, from the observed volume states.
pub fn resource_state(r: &ResourceWithVolumes) -> Cell {
    if r.resource.flags.iter().any(|f| f == "DELETE") {
        return Cell::toned("DELETING", Tone::Warn);
    }
    if r.resource.flags.iter().any(|f| f == "INACTIVE") {
        return Cell::toned("INACTIVE", Tone::Warn);
    }
    let states: Vec<&str> = r.volumes.iter().map(|v| v.state.disk_state.as_deref().unwrap_or("Unknown")).collect();
    let mut cell = volume_state_cell(if states.is_empty() {
        "Created"
    } else if states.iter().all(|s| *s == states[0]) {
        states[0]
    } else if let Some(bad) = states.iter().find(|s| **s != "UpToDate" && **s != "Diskless") {
        bad
    } else {
        "UpToDate"
    });
    // As upstream's client: a disk being added by toggle-disk says so.
    if r.resource.flags.iter().any(|f| f == "DISK_ADDING") {
        cell.text.push_str(", Adding Disk");
    }
    cell
}

/// Colours a disk state.
pub fn volume_state_cell(s: &str) -> Cell {
    let tone = match s {
        "UpToDate" | "Diskless" | "Created" => Tone::Good,
        "Failed" => Tone::Bad,
        _ => Tone::Warn,
    };
    Cell::toned(s, tone)
}

fn usage(r: &Resource) -> Cell {
    match r.state.as_ref().and_then(|s| s.in_use) {
        Some(true) => Cell::toned("InUse", Tone::Good),
        Some(false) => "Unused".into(),
        None => Cell::toned("Unknown", Tone::Warn),
    }
}

/// DRBD connection state; resources without DRBD have no connections.
/// LINSTOR's Conns column: `Ok` when every DRBD peer is connected, else
/// `State(peer)` for each one that is not; `Unknown` before the satellite
/// reported.
fn conns(r: &Resource) -> Cell {
    let Some(drbd) = r.layer_object.as_ref().and_then(|l| l.drbd.as_ref()) else { return Cell::from("") };
    let reported = drbd.drbd_volumes.iter().any(|v| v.disk_state.as_deref().is_some_and(|s| s != "Unknown"));
    let conns = &drbd.connections;
    if conns.is_empty() && !reported {
        return Cell::toned("Unknown", Tone::Warn);
    }
    let down: Vec<String> = conns
        .iter()
        .filter(|(_, c)| !c.connected)
        .map(|(peer, c)| {
            let state = if c.message.is_empty() { "Unknown" } else { c.message.as_str() };
            format!("{}({peer})", state.split(':').next().unwrap_or(state))
        })
        .collect();
    if down.is_empty() { Cell::toned("Ok", Tone::Good) } else { Cell::toned(down.join(","), Tone::Bad) }
}

fn port(r: &Resource) -> String {
    r.layer_object
        .as_ref()
        .and_then(|l| l.drbd.as_ref())
        .and_then(|d| d.tcp_ports.as_ref().and_then(|p| p.first()))
        .map(|p| p.to_string())
        .unwrap_or_default()
}

fn created_on(ms: Option<i64>) -> String {
    ms.map(cairn_api::time::datetime_utc).unwrap_or_default()
}

fn view(ctx: &Ctx, f: &ListFilter, props: &[String]) -> Result<Vec<ResourceWithVolumes>, i32> {
    let q = query(&[("nodes", &f.nodes), ("resources", &f.resources), ("storage_pools", &f.pools), ("props", props)]);
    ctx.get(&format!("/v1/view/resources{q}"))
}

pub fn run(ctx: &Ctx, cmd: ResourceCmd) -> i32 {
    match cmd {
        ResourceCmd::Create { mut nodes_then_resource, storage_pool, diskless } => {
            let Some(rsc) = nodes_then_resource.pop() else { return super::output::EXIT_CLIENT };
            let body: Vec<ResourceCreate> = nodes_then_resource
                .iter()
                .map(|n| {
                    let mut r = Resource { node_name: n.clone(), ..Default::default() };
                    if let Some(sp) = &storage_pool {
                        r.props.insert("StorPoolName".into(), sp.clone());
                    }
                    if diskless {
                        r.flags.push("DRBD_DISKLESS".into());
                    }
                    ResourceCreate { resource: r, ..Default::default() }
                })
                .collect();
            ctx.send("POST", &format!("/v1/resource-definitions/{}/resources", seg(&rsc)), Some(&body))
        }
        ResourceCmd::Activate { node, resource } => {
            ctx.send::<()>("POST", &format!("/v1/resource-definitions/{}/resources/{}/activate", seg(&resource), seg(&node)), None)
        }
        ResourceCmd::Deactivate { node, resource } => {
            ctx.send::<()>("POST", &format!("/v1/resource-definitions/{}/resources/{}/deactivate", seg(&resource), seg(&node)), None)
        }
        ResourceCmd::List { filter, props } => match view(ctx, &filter, &props) {
            Ok(list) => show_resources(ctx, &list),
            Err(code) => code,
        },
        ResourceCmd::ListProperties { node, resource } => super::props::list(ctx, &rsc_path(&resource, &node)),
        ResourceCmd::SetProperty { node, resource, key, value } => {
            super::props::set(ctx, &rsc_path(&resource, &node), &key, value.as_deref())
        }
        ResourceCmd::Involved { node, inuse, diskless_inuse, min_diskful } => match view(ctx, &ListFilter::default(), &[]) {
            Ok(list) => show_resources(ctx, &involved(list, &node, inuse, diskless_inuse, min_diskful)),
            Err(code) => code,
        },
        ResourceCmd::DrbdPeerOptions(o) => super::resource_connection::drbd_peer_options(ctx, &o.args),
        ResourceCmd::ListVolumes { filter } => run_volume(ctx, VolumeCmd::List { filter }),
        ResourceCmd::Delete { mut nodes_then_resource, keep_tiebreaker } => {
            let Some(rsc) = nodes_then_resource.pop() else { return super::output::EXIT_CLIENT };
            // The linstor client's spelling.
            let query = if keep_tiebreaker { "?keep_tiebreaker=True" } else { "" };
            let deletes: Vec<(&str, String, Option<&()>)> = nodes_then_resource
                .iter()
                .map(|n| ("DELETE", format!("/v1/resource-definitions/{}/resources/{}{query}", seg(&rsc), seg(n)), None))
                .collect();
            ctx.send_all(&format!("Deleting '{rsc}' from {} node(s)", nodes_then_resource.len()), &deletes)
        }
        ResourceCmd::ToggleDisk { node, resource, storage_pool, diskless, migrate_from, .. } => {
            let body = cairn_api::resource::ToggleDiskRequest {
                operation: Some(if diskless { "INTO_DRBD_DISKLESS" } else { "INTO_DRBD_DISKFUL" }.into()),
                storage_pool,
                migrate_from,
                layer_list: None,
            };
            ctx.send("PUT", &format!("/v1/resource-definitions/{}/resources/{}/toggle-disk", seg(&resource), seg(&node)), Some(&body))
        }
        ResourceCmd::MakeAvailable { node, resource, diskful } => {
            let body = serde_json::json!({ "diskful": diskful });
            ctx.send("POST", &format!("/v1/resource-definitions/{}/resources/{}/make-available", seg(&resource), seg(&node)), Some(&body))
        }
    }
}

fn rsc_path(resource: &str, node: &str) -> String {
    format!("/v1/resource-definitions/{}/resources/{}", seg(resource), seg(node))
}

/// The resource table of `r list` and `r involved`.
fn show_resources(ctx: &Ctx, list: &[ResourceWithVolumes]) -> i32 {
    let mut t = Table::new(&["ResourceName", "Node", "Port", "Usage", "Conns", "State", "CreatedOn"]);
    for r in list {
        t.row(vec![
            r.resource.name.clone().into(),
            r.resource.node_name.clone().into(),
            port(&r.resource).into(),
            usage(&r.resource),
            conns(&r.resource),
            resource_state(r),
            created_on(r.resource.create_timestamp).into(),
        ]);
    }
    t.sort_by_column(0);
    ctx.show(&list, t)
}

/// Upstream's `r involved` filter: every replica of each resource with a
/// replica on `node`; `inuse`: only resources in use on some replica;
/// `diskless_inuse`: only those in use on a diskless one; `min_diskful`:
/// only those with fewer diskful replicas.
fn involved(
    list: Vec<ResourceWithVolumes>,
    node: &str,
    inuse: bool,
    diskless_inuse: bool,
    min_diskful: Option<usize>,
) -> Vec<ResourceWithVolumes> {
    let diskless = |r: &Resource| r.flags.iter().any(|f| f == "DISKLESS");
    let in_use = |r: &Resource| r.state.as_ref().and_then(|s| s.in_use) == Some(true);
    let keep = |name: &str| {
        let bundle: Vec<&Resource> = list.iter().map(|r| &r.resource).filter(|r| r.name == name).collect();
        bundle.iter().any(|r| r.node_name.eq_ignore_ascii_case(node))
            && (!inuse || bundle.iter().any(|r| in_use(r)))
            && (!diskless_inuse || bundle.iter().any(|r| in_use(r) && diskless(r)))
            && min_diskful.is_none_or(|n| bundle.iter().filter(|r| !diskless(r)).count() < n)
    };
    let names: std::collections::BTreeSet<String> = list.iter().map(|r| r.resource.name.clone()).filter(|n| keep(n)).collect();
    list.into_iter().filter(|r| names.contains(&r.resource.name)).collect()
}

pub fn run_volume(ctx: &Ctx, cmd: VolumeCmd) -> i32 {
    let filter = match cmd {
        VolumeCmd::List { filter } => filter,
        VolumeCmd::ListProperties { node, resource, volume_nr } => {
            return super::props::list(ctx, &format!("{}/volumes/{volume_nr}", rsc_path(&resource, &node)));
        }
        VolumeCmd::SetProperty { node, resource, volume_nr, key, value } => {
            return super::props::set(ctx, &format!("{}/volumes/{volume_nr}", rsc_path(&resource, &node)), &key, value.as_deref());
        }
    };
    let list = match view(ctx, &filter, &[]) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut t = Table::new(&["Node", "Resource", "StoragePool", "VolNr", "DeviceName", "Allocated", "InUse", "State"]);
    for r in &list {
        for v in &r.volumes {
            let v: &Volume = v;
            t.row(vec![
                r.resource.node_name.clone().into(),
                r.resource.name.clone().into(),
                v.storage_pool_name.clone().into(),
                v.volume_number.to_string().into(),
                v.device_path.clone().unwrap_or_default().into(),
                v.allocated_size_kib.map(human_kib).unwrap_or_default().into(),
                usage(&r.resource),
                volume_state_cell(v.state.disk_state.as_deref().unwrap_or("Unknown")),
            ]);
        }
    }
    t.sort_by_column(0);
    ctx.show(&list, t)
}
