//! `cairn resource-group` (`rg`) and `cairn volume-group` (`vg`).

use cairn_api::placement::{MaxVolumeSizes, QuerySizeInfoResponse, ResourceGroupSpawn};
use cairn_api::resource_group::{AutoSelectFilter, ResourceGroup, ResourceGroupModify, VolumeGroup};
use cairn_client::seg;
use clap::{Args, Subcommand};

use super::size::human_kib;
use super::table::Table;
use super::{Ctx, prop_body, query};

/// The auto-select filter options of create, modify and spawn.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// How many diskful replicas to place.
    #[arg(long = "place-count")]
    pub place_count: Option<i64>,
    /// Place only in these storage pools.
    #[arg(long = "storage-pool", num_args = 1..)]
    pub storage_pool: Vec<String>,
    /// Avoid the nodes that hold these resources.
    #[arg(long = "do-not-place-with", num_args = 1..)]
    pub do_not_place_with: Vec<String>,
    /// Avoid the nodes that hold resources whose names match this regex.
    #[arg(long = "do-not-place-with-regex")]
    pub do_not_place_with_regex: Option<String>,
    /// Node properties the replicas' nodes must share (`KEY` or `KEY=VALUE`, e.g. `Aux/site`).
    #[arg(long = "replicas-on-same", num_args = 1..)]
    pub replicas_on_same: Vec<String>,
    /// Node properties the replicas' nodes must differ in (e.g. `Aux/rack`).
    #[arg(long = "replicas-on-different", num_args = 1..)]
    pub replicas_on_different: Vec<String>,
    /// Whether the other nodes get a diskless replica (true or false).
    #[arg(long = "diskless-on-remaining")]
    pub diskless_on_remaining: Option<bool>,
    /// Layers from the top, comma-separated: e.g. `drbd,storage` or `luks,storage`.
    #[arg(long = "layer-list", value_delimiter = ',')]
    pub layer_list: Vec<String>,
    /// Allowed storage providers, comma-separated: LVM, LVM_THIN, ZFS, ZFS_THIN, FILE, FILE_THIN, DISKLESS.
    #[arg(long = "providers", value_delimiter = ',')]
    pub providers: Vec<String>,
}

impl FilterArgs {
    pub fn filter(&self) -> AutoSelectFilter {
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        AutoSelectFilter {
            place_count: self.place_count,
            storage_pool_list: list(&self.storage_pool),
            not_place_with_rsc: list(&self.do_not_place_with),
            not_place_with_rsc_regex: self.do_not_place_with_regex.clone(),
            replicas_on_same: list(&self.replicas_on_same),
            replicas_on_different: list(&self.replicas_on_different),
            diskless_on_remaining: self.diskless_on_remaining,
            layer_stack: list(&self.layer_list),
            provider_list: list(&self.providers),
            ..Default::default()
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ResourceGroupCmd {
    /// Create a resource group: placement rules for the resources spawned from it.
    #[command(visible_alias = "c")]
    Create {
        /// The group's name.
        name: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Change a resource group's description or placement rules.
    #[command(visible_alias = "m")]
    Modify {
        /// The group.
        name: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// List resource groups.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        /// Only these groups.
        #[arg(short = 'r', long = "resource-groups", num_args = 1..)]
        groups: Vec<String>,
        /// Only groups with these properties (`KEY=VALUE`, or `KEY` for any value).
        #[arg(long = "props", num_args = 1..)]
        props: Vec<String>,
    },
    /// Create a resource definition with volumes from the group and place it.
    #[command(visible_alias = "spawn-resources")]
    Spawn {
        /// The resource group.
        group: String,
        /// The new resource definition's name.
        name: String,
        /// Volume sizes (e.g. 1G 512M).
        sizes: Vec<String>,
        /// Create the definitions only, place no replica.
        #[arg(long = "definitions-only")]
        definitions_only: bool,
        /// Allow fewer sizes than the group has volume groups.
        #[arg(long)]
        partial: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// How big a volume the group can spawn now.
    #[command(visible_alias = "qsi")]
    QuerySizeInfo {
        /// The resource group.
        name: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Delete a resource group (refused while resource definitions use it).
    #[command(visible_alias = "d")]
    Delete {
        /// The group.
        name: String,
    },
    /// Place the resource definitions of a group (of every group without a
    /// name) again as the group says: missing replicas are added.
    Adjust {
        /// The group; without one every group is adjusted.
        name: Option<String>,
    },
    /// Set (or, without a value, delete) a resource group property.
    #[command(visible_alias = "sp")]
    SetProperty {
        /// The group.
        name: String,
        /// The property, e.g. `DrbdOptions/Net/protocol`.
        key: String,
        /// The new value; without one the property is deleted.
        value: Option<String>,
    },
    /// List a resource group's properties.
    #[command(visible_alias = "lp")]
    ListProperties {
        /// The group.
        name: String,
    },
    /// Set DRBD options of a resource group: `rg drbd-options --protocol C GROUP`.
    #[command(visible_alias = "opt")]
    DrbdOptions(super::props::DrbdOptionArgs),
    /// The largest volume the group's filter can place, per storage pool.
    #[command(visible_alias = "qmvs")]
    QueryMaxVolumeSize {
        /// The group.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum VolumeGroupCmd {
    /// Add a volume group: one more volume in every resource spawned from the group.
    #[command(visible_alias = "c")]
    Create {
        /// The resource group.
        group: String,
        /// The volume number (default: the next free one).
        #[arg(long = "vlmnr")]
        volume_number: Option<i64>,
        /// Sizes given at spawn are gross: they include the DRBD metadata.
        #[arg(long)]
        gross: bool,
    },
    /// List a resource group's volume groups.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        /// The resource group.
        group: String,
    },
    /// Delete a volume group.
    #[command(visible_alias = "d")]
    Delete {
        /// The resource group.
        group: String,
        /// The volume number.
        volume_number: i64,
    },
    /// List a volume group's properties.
    #[command(visible_alias = "lp")]
    ListProperties {
        /// The resource group.
        group: String,
        /// The volume number.
        volume_number: i64,
    },
    /// Set (or, without a value, delete) a volume group property.
    #[command(visible_alias = "sp")]
    SetProperty {
        /// The resource group.
        group: String,
        /// The volume number.
        volume_number: i64,
        /// The property.
        key: String,
        /// The new value; without one the property is deleted.
        value: Option<String>,
    },
    /// Set DRBD disk options of a volume group: `vg drbd-options --resync-rate 100M GROUP VOLUME_NR`.
    #[command(visible_alias = "opt")]
    DrbdOptions(super::props::DrbdOptionArgs),
}

/// A query answered with an object (or, on failure, the controller's
/// entries, printed): `method path` with a JSON body.
fn fetch<T: serde::de::DeserializeOwned>(ctx: &Ctx, method: &'static str, path: &str, body: Option<&serde_json::Value>) -> Result<T, i32> {
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
    let r = ctx.client.raw(method, path, bytes.as_deref()).map_err(|e| ctx.error(&e))?;
    if r.status >= 400 {
        let rcs: Vec<cairn_api::ApiCallRc> = serde_json::from_slice(&r.body).unwrap_or_default();
        return Err(ctx.replies(&rcs));
    }
    serde_json::from_slice(&r.body).map_err(|e| ctx.problem(cairn_api::rc::FAIL_UNKNOWN_ERROR, format!("unexpected reply: {e}")))
}

/// The `query-max-volume-size` table (upstream's columns) of what
/// `method path` answers.
pub fn show_max_volume_sizes(ctx: &Ctx, method: &'static str, path: &str, body: Option<&serde_json::Value>) -> i32 {
    let m: MaxVolumeSizes = match fetch(ctx, method, path, body) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let mut t = Table::new(&["StoragePool", "MaxVolumeSize", "Provisioning", "Nodes"]);
    for c in &m.candidates {
        let provisioning =
            if c.all_thin { format!("Thin, oversubscription ratio {}", m.default_max_oversubscription_ratio) } else { "Thick".to_string() };
        t.row(vec![
            c.storage_pool.clone().into(),
            human_kib(c.max_volume_size_kib).into(),
            provisioning.into(),
            c.node_names.join(", ").into(),
        ]);
    }
    ctx.show(&m, t)
}

fn filter_text(f: &AutoSelectFilter) -> String {
    let mut parts = Vec::new();
    if let Some(n) = f.place_count {
        parts.push(format!("PlaceCount: {n}"));
    }
    if let Some(l) = &f.storage_pool_list {
        parts.push(format!("StoragePool(s): {}", l.join(", ")));
    }
    if let Some(l) = &f.replicas_on_same {
        parts.push(format!("ReplicasOnSame: {}", l.join(", ")));
    }
    if let Some(l) = &f.replicas_on_different {
        parts.push(format!("ReplicasOnDifferent: {}", l.join(", ")));
    }
    if let Some(l) = &f.not_place_with_rsc {
        parts.push(format!("DoNotPlaceWith: {}", l.join(", ")));
    }
    if let Some(l) = &f.layer_stack {
        parts.push(format!("LayerStack: {}", l.join(", ")));
    }
    if let Some(l) = &f.provider_list {
        parts.push(format!("Providers: {}", l.join(", ")));
    }
    if f.diskless_on_remaining == Some(true) {
        parts.push("DisklessOnRemaining: True".into());
    }
    parts.join(", ")
}

pub fn run(ctx: &Ctx, cmd: ResourceGroupCmd) -> i32 {
    match cmd {
        ResourceGroupCmd::Create { name, description, filter } => {
            let body = ResourceGroup { name, description, select_filter: filter.filter(), ..Default::default() };
            ctx.send("POST", "/v1/resource-groups", Some(&body))
        }
        ResourceGroupCmd::Modify { name, description, filter } => {
            let body = ResourceGroupModify { description, select_filter: Some(filter.filter()), ..Default::default() };
            ctx.send("PUT", &format!("/v1/resource-groups/{}", seg(&name)), Some(&body))
        }
        ResourceGroupCmd::List { groups, props } => {
            let list: Vec<ResourceGroup> =
                match ctx.get(&format!("/v1/resource-groups{}", query(&[("resource_groups", &groups), ("props", &props)]))) {
                    Ok(l) => l,
                    Err(code) => return code,
                };
            let mut t = Table::new(&["ResourceGroup", "SelectFilter", "VlmNrs", "Description"]);
            for g in &list {
                let vgs: Vec<VolumeGroup> =
                    ctx.client.get(&format!("/v1/resource-groups/{}/volume-groups", seg(&g.name))).unwrap_or_default();
                let nrs = vgs.iter().filter_map(|v| v.volume_number).map(|n| n.to_string()).collect::<Vec<_>>().join(",");
                t.row(vec![
                    g.name.clone().into(),
                    filter_text(&g.select_filter).into(),
                    nrs.into(),
                    g.description.clone().unwrap_or_default().into(),
                ]);
            }
            t.sort_by_column(0);
            ctx.show(&list, t)
        }
        ResourceGroupCmd::Spawn { group, name, sizes, definitions_only, partial, filter } => {
            let kib = match sizes.iter().map(|s| ctx.size_kib(s)).collect::<Result<Vec<i64>, i32>>() {
                Ok(kib) => kib,
                Err(code) => return code,
            };
            let body = ResourceGroupSpawn {
                resource_definition_name: name.clone(),
                volume_sizes: kib,
                select_filter: filter.filter(),
                definitions_only,
                partial,
                ..Default::default()
            };
            ctx.send_showing(
                &format!("Spawning '{name}' from '{group}'"),
                "POST",
                &format!("/v1/resource-groups/{}/spawn", seg(&group)),
                Some(&body),
            )
        }
        ResourceGroupCmd::QuerySizeInfo { name, filter } => {
            let body = serde_json::json!({ "select_filter": filter.filter() });
            let path = format!("/v1/resource-groups/{}/query-size-info", seg(&name));
            let q: QuerySizeInfoResponse = match fetch(ctx, "POST", &path, Some(&body)) {
                Ok(q) => q,
                Err(code) => return code,
            };
            let mut t = Table::new(&["MaxVolumeSize", "AvailableSize", "Capacity", "Next Spawn Result"]);
            if let Some(s) = &q.space_info {
                let next =
                    s.next_spawn_result.iter().map(|n| format!("{} on {}", n.stor_pool_name, n.node_name)).collect::<Vec<_>>().join(", ");
                t.row(vec![
                    human_kib(s.max_vlm_size_in_kib).into(),
                    s.available_size_in_kib.map(human_kib).unwrap_or_default().into(),
                    s.capacity_in_kib.map(human_kib).unwrap_or_default().into(),
                    next.into(),
                ]);
            }
            let code = ctx.show(&q, t);
            if !ctx.machine {
                super::output::replies(&q.reports, ctx.style.color);
            }
            code
        }
        ResourceGroupCmd::Delete { name } => ctx.send::<()>("DELETE", &format!("/v1/resource-groups/{}", seg(&name)), None),
        ResourceGroupCmd::Adjust { name } => match name {
            Some(n) => ctx.send_showing::<()>("Adjusting", "POST", &format!("/v1/resource-groups/{}/adjust", seg(&n)), None),
            None => ctx.send_showing::<()>("Adjusting", "POST", "/v1/resource-groups/adjustall", None),
        },
        ResourceGroupCmd::ListProperties { name } => super::props::list(ctx, &format!("/v1/resource-groups/{}", seg(&name))),
        ResourceGroupCmd::DrbdOptions(o) => {
            super::props::drbd_options(ctx, "RSC_DFN", 1, &o.args, |n| ("PUT", format!("/v1/resource-groups/{}", seg(&n[0]))))
        }
        ResourceGroupCmd::QueryMaxVolumeSize { name } => {
            show_max_volume_sizes(ctx, "GET", &format!("/v1/resource-groups/{}/query-max-volume-size", seg(&name)), None)
        }
        ResourceGroupCmd::SetProperty { name, key, value } => {
            let mut body = prop_body(&key, value.as_deref());
            body["select_filter"] = serde_json::json!({});
            ctx.send("PUT", &format!("/v1/resource-groups/{}", seg(&name)), Some(&body))
        }
    }
}

pub fn run_vg(ctx: &Ctx, cmd: VolumeGroupCmd) -> i32 {
    match cmd {
        VolumeGroupCmd::Create { group, volume_number, gross } => {
            let body = VolumeGroup { volume_number, flags: if gross { vec!["GROSS_SIZE".into()] } else { vec![] }, ..Default::default() };
            ctx.send("POST", &format!("/v1/resource-groups/{}/volume-groups", seg(&group)), Some(&body))
        }
        VolumeGroupCmd::List { group } => {
            let list: Vec<VolumeGroup> = match ctx.get(&format!("/v1/resource-groups/{}/volume-groups", seg(&group))) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["VolumeNr", "Flags"]);
            for v in &list {
                t.row(vec![v.volume_number.map(|n| n.to_string()).unwrap_or_default().into(), v.flags.join(", ").into()]);
            }
            ctx.show(&list, t)
        }
        VolumeGroupCmd::ListProperties { group, volume_number } => {
            super::props::list(ctx, &format!("/v1/resource-groups/{}/volume-groups/{volume_number}", seg(&group)))
        }
        VolumeGroupCmd::SetProperty { group, volume_number, key, value } => {
            super::props::set(ctx, &format!("/v1/resource-groups/{}/volume-groups/{volume_number}", seg(&group)), &key, value.as_deref())
        }
        VolumeGroupCmd::DrbdOptions(o) => super::props::drbd_options(ctx, "VLM_DFN", 2, &o.args, |n| {
            ("PUT", format!("/v1/resource-groups/{}/volume-groups/{}", seg(&n[0]), seg(&n[1])))
        }),
        VolumeGroupCmd::Delete { group, volume_number } => {
            ctx.send::<()>("DELETE", &format!("/v1/resource-groups/{}/volume-groups/{volume_number}", seg(&group)), None)
        }
    }
}
