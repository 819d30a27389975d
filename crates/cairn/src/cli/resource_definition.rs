//! `cairn resource-definition` (`rd`) and `cairn volume-definition` (`vd`).

use cairn_api::placement::AutoPlaceRequest;
use std::time::{Duration, Instant};

use cairn_api::rc;
use cairn_api::resource_definition::{
    CLONE_COMPLETE, CLONE_FAILED, ResourceDefinition, ResourceDefinitionCloneRequest, ResourceDefinitionCloneStarted,
    ResourceDefinitionCloneStatus, ResourceDefinitionCreate, ResourceDefinitionSyncStatus, VolumeDefinition, VolumeDefinitionCreate,
};
use cairn_client::seg;
use clap::Subcommand;

use super::output::{EXIT_API_ERROR, EXIT_OK};
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
    /// List a resource definition's properties.
    #[command(visible_alias = "lp")]
    ListProperties {
        /// The resource.
        name: String,
    },
    /// Set DRBD options of a resource definition: `rd drbd-options --protocol C RESOURCE`.
    #[command(visible_alias = "opt")]
    DrbdOptions(super::props::DrbdOptionArgs),
    /// Place replicas with the autoplacer.
    #[command(visible_alias = "ap")]
    AutoPlace {
        /// The resource.
        name: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Clone a resource definition with all its replicas and their data;
    /// waits until the copies are complete unless --no-wait.
    Clone {
        /// Source resource definition name.
        source_resource: String,
        /// Name of the new resource definition (ignored with --external-name).
        clone_name: Option<String>,
        /// User specified name.
        #[arg(short = 'e', long = "external-name")]
        external_name: Option<String>,
        /// Return once the clone is started.
        #[arg(long = "no-wait")]
        no_wait: bool,
        /// Wait at most this many seconds for the clone to finish.
        #[arg(long = "wait-timeout")]
        wait_timeout: Option<u64>,
        /// Use ZFS clone instead of send/recv (a dependent snapshot stays).
        #[arg(long = "use-zfs-clone")]
        use_zfs_clone: bool,
        /// User provided volume passphrases.
        #[arg(long = "volume-passphrase", num_args = 0..)]
        volume_passphrase: Option<Vec<String>>,
        /// Layers of the clone from the top, comma-separated.
        #[arg(short = 'l', long = "layer-list", value_delimiter = ',')]
        layer_list: Vec<String>,
        /// Resource group of the clone (default: the source's).
        #[arg(long = "resource-group")]
        resource_group: Option<String>,
    },
    /// Show the state of a clone: CLONING, COMPLETE or FAILED.
    CloneStatus {
        /// Source resource definition name.
        source_resource: String,
        /// The clone.
        clone_name: String,
    },
    /// Wait until every diskful replica of a resource is UpToDate.
    WaitSync {
        /// Wait at most this many seconds.
        #[arg(long = "wait-timeout")]
        wait_timeout: Option<u64>,
        /// The resource.
        resource_name: String,
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
    /// Set the LUKS passphrase of a volume definition's encrypted volumes
    /// (their data stays; satellites change the key of every replica).
    #[command(name = "modify-passphrase", visible_alias = "mp")]
    ModifyPassphrase {
        /// The resource.
        resource: String,
        /// The volume number.
        volume_number: i64,
        /// The new passphrase; read from stdin when not given.
        new_passphrase: Option<String>,
    },
    /// Delete a volume definition.
    #[command(visible_alias = "d")]
    Delete {
        /// The resource.
        resource: String,
        /// The volume number.
        volume_number: i64,
    },
    /// List a volume definition's properties.
    #[command(visible_alias = "lp")]
    ListProperties {
        /// The resource.
        resource: String,
        /// The volume number.
        volume_number: i64,
    },
    /// Set (or, without a value, delete) a volume definition property.
    #[command(visible_alias = "sp")]
    SetProperty {
        /// The resource.
        resource: String,
        /// The volume number.
        volume_number: i64,
        /// The property.
        key: String,
        /// The new value; without one the property is deleted.
        value: Option<String>,
    },
    /// Set DRBD disk options of a volume definition: `vd drbd-options --resync-after r/0 RESOURCE VOLUME_NR`.
    #[command(visible_alias = "opt")]
    DrbdOptions(super::props::DrbdOptionArgs),
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
        ResourceDefinitionCmd::ListProperties { name } => super::props::list(ctx, &format!("/v1/resource-definitions/{}", seg(&name))),
        ResourceDefinitionCmd::DrbdOptions(o) => {
            super::props::drbd_options(ctx, "RSC_DFN", 1, &o.args, |n| ("PUT", format!("/v1/resource-definitions/{}", seg(&n[0]))))
        }
        ResourceDefinitionCmd::SetProperty { name, key, value } => {
            ctx.send("PUT", &format!("/v1/resource-definitions/{}", seg(&name)), Some(&prop_body(&key, value.as_deref())))
        }
        ResourceDefinitionCmd::Clone {
            source_resource,
            clone_name,
            external_name,
            no_wait,
            wait_timeout,
            use_zfs_clone,
            volume_passphrase,
            layer_list,
            resource_group,
        } => {
            let req = ResourceDefinitionCloneRequest {
                name: if external_name.is_some() { None } else { clone_name },
                external_name,
                use_zfs_clone: use_zfs_clone.then_some(true),
                layer_list: (!layer_list.is_empty()).then(|| layer_list.iter().map(|l| l.to_ascii_uppercase()).collect()),
                volume_passphrases: volume_passphrase,
                resource_group,
                ..Default::default()
            };
            clone(ctx, &source_resource, &req, no_wait, wait_timeout)
        }
        ResourceDefinitionCmd::CloneStatus { source_resource, clone_name } => {
            let path = format!("/v1/resource-definitions/{}/clone/{}", seg(&source_resource), seg(&clone_name));
            let st: ResourceDefinitionCloneStatus = match ctx.get(&path) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let tone = match st.status.as_str() {
                CLONE_COMPLETE => Tone::Good,
                CLONE_FAILED => Tone::Bad,
                _ => Tone::Warn,
            };
            let mut t = Table::new(&["ResourceName", "Status"]);
            t.row(vec![clone_name.into(), Cell::toned(st.status.clone(), tone)]);
            ctx.show(&st, t)
        }
        ResourceDefinitionCmd::WaitSync { wait_timeout, resource_name } => {
            let path = format!("/v1/resource-definitions/{}/sync-status", seg(&resource_name));
            let deadline = wait_timeout.map(|s| Instant::now() + Duration::from_secs(s));
            loop {
                let st: ResourceDefinitionSyncStatus = match ctx.get(&path) {
                    Ok(s) => s,
                    Err(code) => return code,
                };
                if st.synced_on_all {
                    return EXIT_OK;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return ctx.problem(rc::FAIL_UNKNOWN_ERROR, format!("{resource_name} resource didn't get ready in time."));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
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

/// `rd clone`: as the upstream client, prints the clone's replies, then
/// (unless `no_wait`) polls its status until COMPLETE or FAILED.
fn clone(ctx: &Ctx, src: &str, req: &ResourceDefinitionCloneRequest, no_wait: bool, wait_timeout: Option<u64>) -> i32 {
    let path = format!("/v1/resource-definitions/{}/clone", seg(src));
    let body = serde_json::to_vec(req).unwrap_or_default();
    let r = match ctx.client.raw("POST", &path, Some(&body)) {
        Ok(r) => r,
        Err(e) => return ctx.error(&e),
    };
    let started: ResourceDefinitionCloneStarted = match serde_json::from_slice(&r.body) {
        Ok(s) => s,
        Err(_) => {
            // Not the clone shape (e.g. a 400 for a bad body): the usual replies.
            return match serde_json::from_slice::<Vec<cairn_api::ApiCallRc>>(&r.body) {
                Ok(rcs) => ctx.replies(&rcs),
                Err(_) => ctx.problem(rc::FAIL_UNKNOWN_ERROR, format!("unexpected reply (HTTP {})", r.status)),
            };
        }
    };
    let code = ctx.replies(&started.messages);
    if code != EXIT_OK || no_wait {
        return code;
    }
    if !ctx.machine {
        println!("Waiting for cloning to complete...");
    }
    let status_path = format!("/v1/resource-definitions/{}/clone/{}", seg(&started.source_name), seg(&started.clone_name));
    let deadline = wait_timeout.map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        let st: ResourceDefinitionCloneStatus = match ctx.get(&status_path) {
            Ok(s) => s,
            Err(code) => return code,
        };
        match st.status.as_str() {
            CLONE_COMPLETE => {
                if !ctx.machine {
                    println!("Completed cloning {}.", started.clone_name);
                }
                return EXIT_OK;
            }
            CLONE_FAILED => {
                if !ctx.machine {
                    println!("Failed cloning {}, please check resource status or satellite errors.", started.clone_name);
                }
                return EXIT_API_ERROR;
            }
            _ => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return ctx.problem(rc::FAIL_UNKNOWN_ERROR, format!("{} clone didn't finish in time.", started.clone_name));
        }
        std::thread::sleep(Duration::from_millis(500));
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
        VolumeDefinitionCmd::ListProperties { resource, volume_number } => {
            super::props::list(ctx, &format!("/v1/resource-definitions/{}/volume-definitions/{volume_number}", seg(&resource)))
        }
        VolumeDefinitionCmd::SetProperty { resource, volume_number, key, value } => super::props::set(
            ctx,
            &format!("/v1/resource-definitions/{}/volume-definitions/{volume_number}", seg(&resource)),
            &key,
            value.as_deref(),
        ),
        VolumeDefinitionCmd::DrbdOptions(o) => super::props::drbd_options(ctx, "VLM_DFN", 2, &o.args, |n| {
            ("PUT", format!("/v1/resource-definitions/{}/volume-definitions/{}", seg(&n[0]), seg(&n[1])))
        }),
        VolumeDefinitionCmd::ModifyPassphrase { resource, volume_number, new_passphrase } => {
            match super::encryption::secret(new_passphrase, "New volume passphrase") {
                Some(p) => ctx.send(
                    "PUT",
                    &format!("/v1/resource-definitions/{}/volume-definitions/{volume_number}/encryption-passphrase", seg(&resource)),
                    Some(&serde_json::json!({ "new_passphrase": p })),
                ),
                None => ctx.problem(cairn_api::rc::FAIL_INVLD_CRYPT_PASSPHRASE, "a passphrase is needed"),
            }
        }
        VolumeDefinitionCmd::Delete { resource, volume_number } => {
            ctx.send::<()>("DELETE", &format!("/v1/resource-definitions/{}/volume-definitions/{volume_number}", seg(&resource)), None)
        }
    }
}
