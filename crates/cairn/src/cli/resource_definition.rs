//! `cairn resource-definition` (`rd`) and `cairn volume-definition` (`vd`).

use cairn_api::placement::AutoPlaceRequest;
use cairn_api::resource_definition::{ResourceDefinition, ResourceDefinitionCreate, VolumeDefinition, VolumeDefinitionCreate};
use cairn_client::seg;
use clap::Subcommand;

use super::resource_group::FilterArgs;
use super::size::human_kib;
use super::table::{Cell, Table, Tone};
use super::{Ctx, prop_body, query};

#[derive(Subcommand, Debug)]
pub enum ResourceDefinitionCmd {
    /// Create a resource definition (no volumes, no replicas yet).
    #[command(visible_alias = "c")]
    Create {
        /// The resource's name.
        name: String,
        /// The resource group it belongs to (default: DfltRscGrp).
        #[arg(long = "resource-group")]
        resource_group: Option<String>,
        /// Layers from the top, comma-separated: e.g. `drbd,storage`.
        #[arg(long = "layer-list", value_delimiter = ',')]
        layer_list: Vec<String>,
    },
    /// List resource definitions.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        /// Only these resources.
        #[arg(short = 'r', long = "resources", num_args = 1..)]
        resources: Vec<String>,
        /// Only definitions with these properties (`KEY=VALUE`, or `KEY` for any value).
        #[arg(long = "props", num_args = 1..)]
        props: Vec<String>,
    },
    /// Move to another resource group.
    #[command(visible_alias = "m")]
    Modify {
        /// The resource.
        name: String,
        /// The new resource group.
        #[arg(long = "resource-group")]
        resource_group: Option<String>,
    },
    /// Delete a resource definition with all its replicas and snapshots.
    #[command(visible_alias = "d")]
    Delete {
        /// The resource.
        name: String,
    },
    /// Set (or, without a value, delete) a resource definition property.
    #[command(visible_alias = "sp")]
    SetProperty {
        /// The resource.
        name: String,
        /// The property, e.g. `DrbdOptions/Net/protocol`.
        key: String,
        /// The new value; without one the property is deleted.
        value: Option<String>,
    },
    /// Place replicas with the autoplacer.
    #[command(visible_alias = "ap")]
    AutoPlace {
        /// The resource.
        name: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum VolumeDefinitionCmd {
    /// Add a volume to a resource definition.
    #[command(visible_alias = "c")]
    Create {
        /// The resource.
        resource: String,
        /// The volume's size (e.g. 10G, 512M; no unit means bytes).
        size: String,
        /// The volume number (default: the next free one).
        #[arg(long = "vlmnr")]
        volume_number: Option<i64>,
    },
    /// List volume definitions.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        /// Only these resources.
        #[arg(short = 'r', long = "resources", num_args = 1..)]
        resources: Vec<String>,
    },
    /// Grow a volume.
    SetSize {
        /// The resource.
        resource: String,
        /// The volume number.
        volume_number: i64,
        /// The new size (e.g. 20G).
        size: String,
    },
    /// Delete a volume definition.
    #[command(visible_alias = "d")]
    Delete {
        /// The resource.
        resource: String,
        /// The volume number.
        volume_number: i64,
    },
}

pub fn run(ctx: &Ctx, cmd: ResourceDefinitionCmd) -> i32 {
    match cmd {
        ResourceDefinitionCmd::Create { name, resource_group, layer_list } => {
            let body = ResourceDefinitionCreate {
                resource_definition: ResourceDefinition {
                    name,
                    resource_group_name: resource_group,
                    layer_data: layer_list
                        .into_iter()
                        .map(|l| cairn_api::resource_definition::LayerData { layer_type: l.to_ascii_uppercase(), data: None })
                        .collect(),
                    ..Default::default()
                },
                ..Default::default()
            };
            ctx.send("POST", "/v1/resource-definitions", Some(&body))
        }
        ResourceDefinitionCmd::List { resources, props } => {
            let path = format!("/v1/resource-definitions{}", query(&[("resource_definitions", &resources), ("props", &props)]));
            let list: Vec<ResourceDefinition> = match ctx.get(&path) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["ResourceName", "ResourceGroup", "Layers", "State"]);
            for d in &list {
                let layers = d.layer_data.iter().map(|l| l.layer_type.clone()).collect::<Vec<_>>().join(",");
                let state =
                    if d.flags.iter().any(|f| f == "DELETE") { Cell::toned("DELETING", Tone::Warn) } else { Cell::toned("ok", Tone::Good) };
                t.row(vec![d.name.clone().into(), d.resource_group_name.clone().unwrap_or_default().into(), layers.into(), state]);
            }
            t.sort_by_column(0);
            ctx.show(&list, t)
        }
        ResourceDefinitionCmd::Modify { name, resource_group } => {
            let body = serde_json::json!({ "resource_group": resource_group });
            ctx.send("PUT", &format!("/v1/resource-definitions/{}", seg(&name)), Some(&body))
        }
        ResourceDefinitionCmd::Delete { name } => {
            ctx.send_showing::<()>(&format!("Deleting '{name}'"), "DELETE", &format!("/v1/resource-definitions/{}", seg(&name)), None)
        }
        ResourceDefinitionCmd::SetProperty { name, key, value } => {
            ctx.send("PUT", &format!("/v1/resource-definitions/{}", seg(&name)), Some(&prop_body(&key, value.as_deref())))
        }
        ResourceDefinitionCmd::AutoPlace { name, filter } => {
            let body = AutoPlaceRequest { select_filter: filter.filter(), ..Default::default() };
            ctx.send_showing(
                &format!("Placing '{name}'"),
                "POST",
                &format!("/v1/resource-definitions/{}/autoplace", seg(&name)),
                Some(&body),
            )
        }
    }
}

pub fn run_vd(ctx: &Ctx, cmd: VolumeDefinitionCmd) -> i32 {
    match cmd {
        VolumeDefinitionCmd::Create { resource, size, volume_number } => {
            let size = match ctx.size_kib(&size) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let body = VolumeDefinitionCreate {
                volume_definition: VolumeDefinition { volume_number, size_kib: Some(size), ..Default::default() },
                ..Default::default()
            };
            ctx.send("POST", &format!("/v1/resource-definitions/{}/volume-definitions", seg(&resource)), Some(&body))
        }
        VolumeDefinitionCmd::List { resources } => {
            let path = format!(
                "/v1/resource-definitions?with_volume_definitions=true{}",
                query(&[("resource_definitions", &resources)]).replacen('?', "&", 1)
            );
            let list: Vec<ResourceDefinition> = match ctx.get(&path) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["ResourceName", "VolumeNr", "VolumeMinor", "Size", "Gross", "State"]);
            for d in &list {
                for v in d.volume_definitions.iter().flatten() {
                    let minor = v
                        .layer_data
                        .iter()
                        .find_map(|l| l.data.as_ref()?.get("minor_number")?.as_i64())
                        .map(|m| m.to_string())
                        .unwrap_or_default();
                    t.row(vec![
                        d.name.clone().into(),
                        v.volume_number.unwrap_or(0).to_string().into(),
                        minor.into(),
                        v.size_kib.map(human_kib).unwrap_or_default().into(),
                        if v.flags.iter().any(|f| f == "GROSS_SIZE") { "+" } else { "" }.into(),
                        if v.flags.iter().any(|f| f == "DELETE") {
                            Cell::toned("DELETING", Tone::Warn)
                        } else {
                            Cell::toned("ok", Tone::Good)
                        },
                    ]);
                }
            }
            t.sort_by_column(0);
            ctx.show(&list, t)
        }
        VolumeDefinitionCmd::SetSize { resource, volume_number, size } => {
            let size = match ctx.size_kib(&size) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let body = serde_json::json!({ "size_kib": size });
            let path = format!("/v1/resource-definitions/{}/volume-definitions/{volume_number}", seg(&resource));
            ctx.send_showing(&format!("Resizing '{resource}' volume {volume_number}"), "PUT", &path, Some(&body))
        }
        VolumeDefinitionCmd::Delete { resource, volume_number } => {
            ctx.send::<()>("DELETE", &format!("/v1/resource-definitions/{}/volume-definitions/{volume_number}", seg(&resource)), None)
        }
    }
}
