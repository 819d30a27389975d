//! Resources (a resource definition placed on a node) and their volumes.

use std::collections::BTreeSet;

use cairn_api::rc::{self, ApiCallRc};
use cairn_api::resource as wire;
use cairn_proto::{DrbdConnectionObserved, DrbdObserved, DrbdVolumeObserved};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ObjKey, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::key;
use crate::numbers::Taken;
use crate::resource_definition::{ResourceDefinition, VolumeDefinition, check_layer_stack};
use crate::storage_pool::ProviderKind;
use crate::whitelist::PropsObj;
use crate::{Ctx, DEFAULT_DISKLESS_STOR_POOL, DEFAULT_STOR_POOL, Props, props};

/// The property that chooses a storage pool.
pub const PROP_STOR_POOL_NAME: &str = "StorPoolName";

/// Resource flags a client may set on creation. Diskless kinds imply the
/// generic `DISKLESS` bit, as in LINSTOR.
const CREATE_FLAGS: &[&str] = &["DISKLESS", "DRBD_DISKLESS", "NVME_INITIATOR", "EBS_INITIATOR", "INACTIVE", "TIE_BREAKER"];
/// A deactivated resource: its storage stays, DRBD is down.
pub const FLAG_INACTIVE: &str = "INACTIVE";

/// A volume of a resource on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub volume_number: u32,
    pub storage_pool: String,
    pub provider_kind: ProviderKind,
    pub props: Props,
    pub flags: BTreeSet<String>,
    pub uuid: String,
    /// The volume's LUKS passphrase, sealed with the master key, when the
    /// stack has a LUKS layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub luks_secret: Option<String>,
    /// Passphrases the volume had before `luks_secret` (sealed, newest
    /// first): its device may still open only with one of them (a node
    /// away during a passphrase change, a rollback to an older snapshot).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub luks_previous: Vec<String>,
    /// The snapshot a restored volume starts as a copy of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::snapshot::VolumeSource>,
    /// The volume of another resource on the same node a clone starts as
    /// a copy of; cleared when the clone is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_of: Option<crate::clone::CloneSource>,
}

/// The DRBD numbers of one resource on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrbdRsc {
    pub node_id: u8,
    pub tcp_port: u16,
    /// LINSTOR's DRBD `CLIENT` flag (REST API 1.28): a diskless replica
    /// that is not to act as a tiebreaker for quorum. The auto-tiebreaker
    /// does not count it; DRBD 9.3.1+ would get `tiebreaker no;` for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client: bool,
}

/// A resource's volumes by number, in number order.
pub type Volumes = litemap::LiteMap<u32, Volume>;

/// Always a JSON object, as the `BTreeMap` it replaced wrote it (litemap
/// writes an empty map as `[]`), so stored resources keep their form.
fn volumes_as_map<S: serde::Serializer>(v: &Volumes, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter())
}

/// A resource: a resource definition on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub resource_definition: String,
    pub node: String,
    pub props: Props,
    pub flags: BTreeSet<String>,
    /// The layer stack of this resource, top first, ending in STORAGE.
    pub layer_stack: Vec<String>,
    pub create_timestamp: i64,
    /// By volume number. A sorted vector, not a `BTreeMap`: a resource has
    /// one volume or a few, and a B-tree's first leaf holds room for eleven
    /// (about 2.8 KiB per resource, half the controller's heap at scale).
    #[serde(serialize_with = "volumes_as_map")]
    pub volumes: Volumes,
    pub uuid: String,
    /// Node id and port when the stack has a DRBD layer.
    #[serde(default)]
    pub drbd: Option<DrbdRsc>,
    /// A rollback to a snapshot the satellite carries out once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::snapshot::Rollback>,
}

/// What a satellite reported about one volume (observed state).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeObserved {
    pub device_path: Option<String>,
    pub allocated_size_kib: Option<i64>,
    pub usable_size_kib: Option<i64>,
    pub disk_state: Option<String>,
    /// The opened LUKS device, when the stack has LUKS.
    pub luks_device_path: Option<String>,
    /// The volume's sealed LUKS key does not open with the master key
    /// (LINSTOR's `corrupted_key`, REST API 1.28); false while locked.
    pub luks_corrupted_key: bool,
}

impl Resource {
    pub fn is_diskless(&self) -> bool {
        self.flags.contains("DISKLESS")
    }

    /// A diskless DRBD client (LINSTOR's DRBD `CLIENT` flag).
    pub fn is_drbd_client(&self) -> bool {
        self.drbd.is_some_and(|d| d.client)
    }

    /// Sets or clears the DRBD `CLIENT` flag; false when nothing changed
    /// (or the replica has no DRBD numbers).
    pub fn set_drbd_client(&mut self, client: bool) -> bool {
        match self.drbd.as_mut() {
            Some(d) if d.client != client => {
                d.client = client;
                true
            }
            _ => false,
        }
    }

    /// Whether DRBD is one of its layers.
    pub fn has_drbd(&self) -> bool {
        self.layer_stack.iter().any(|l| l == "DRBD")
    }

    /// The wire form. `observed` gives what satellites reported per volume
    /// number (the STORAGE layer); `drbd` what the node's DRBD reported;
    /// `in_use` is what the satellite says without DRBD: `Some(false)` once
    /// it reported the resource, None before. `minor` gives the
    /// The wire form. `observed` gives what satellites reported per volume
    /// number (the STORAGE layer); `drbd` what the node's DRBD reported;
    /// `in_use` is what the satellite says without DRBD: `Some(false)` once
    /// it reported the resource, None before. `minor` gives the
    /// DRBD minor of a volume number.
    pub fn to_api(
        &self,
        observed: &dyn Fn(u32) -> Option<VolumeObserved>,
        minor: &dyn Fn(u32) -> Option<u32>,
        in_use: Option<bool>,
        drbd: Option<&DrbdObserved>,
    ) -> wire::ResourceWithVolumes {
        let has_drbd = self.has_drbd();
        let drbd = drbd.filter(|_| has_drbd);
        // Each volume's observed state and minor, asked once: the layer
        // tree and the volume list both show them.
        let seen: Vec<(&Volume, VolumeObserved, Option<u32>)> =
            self.volumes.values().map(|v| (v, observed(v.volume_number).unwrap_or_default(), minor(v.volume_number))).collect();
        let volumes: Vec<wire::Volume> = seen
            .iter()
            .map(|(v, o, minor)| {
                let nr = v.volume_number;
                let dv = drbd_volume_of(drbd, nr);
                let layer_data_list = self
                    .layer_stack
                    .iter()
                    .map(|l| wire::VolumeLayer {
                        layer_type: l.clone(),
                        data: match l.as_str() {
                            "STORAGE" => Some(wire::VolumeLayerData::Storage(storage_volume(nr, o))),
                            "LUKS" => Some(wire::VolumeLayerData::Luks(luks_volume(nr, o))),
                            "DRBD" => minor.map(|m| wire::VolumeLayerData::Drbd(self.drbd_volume(nr, m, o, dv))),
                            _ => None,
                        },
                    })
                    .collect();
                let (device_path, disk_state) = match (has_drbd, minor) {
                    (true, Some(m)) => (Some(format!("/dev/drbd{m}")), dv.map(|d| d.disk.clone()).or_else(|| o.disk_state.clone())),
                    _ if self.layer_stack.first().is_some_and(|l| l == "LUKS") => (o.luks_device_path.clone(), o.disk_state.clone()),
                    _ => (o.device_path.clone(), o.disk_state.clone()),
                };
                let replication_states = dv.filter(|d| !d.peers.is_empty()).map(|d| {
                    d.peers
                        .iter()
                        .map(|p| {
                            (
                                p.peer.clone(),
                                wire::ReplicationState { replication_state: Some(p.replication.clone()), done_percentage: p.done },
                            )
                        })
                        .collect()
                });
                wire::Volume {
                    volume_number: i64::from(nr),
                    storage_pool_name: v.storage_pool.clone(),
                    provider_kind: v.provider_kind.as_str().to_string(),
                    device_path,
                    allocated_size_kib: o.allocated_size_kib,
                    usable_size_kib: o.usable_size_kib,
                    props: v.props.clone(),
                    flags: v.flags.iter().cloned().collect(),
                    state: wire::VolumeState { disk_state, replication_states },
                    layer_data_list,
                    uuid: Some(v.uuid.clone()),
                    reports: Vec::new(),
                }
            })
            .collect();
        let layer_object = self.layer_tree(0, &seen, drbd);
        // DRBD knows whether the device is open (Primary). Once the
        // satellite reported the resource `in_use` is always a bool, as
        // clients OR it (`linstor r involved`): a DRBD device the kernel
        // does not show (down, or a config-only satellite that brings
        // nothing up) is not in use. Before any report LINSTOR sends no
        // `state` at all; Cairn sends an empty one (linstor-csi marks a
        // volume abnormal without `state`) and no `in_use`.
        let in_use = match drbd {
            Some(d) if d.kernel => Some(d.role == "Primary"),
            _ => in_use,
        };
        wire::ResourceWithVolumes {
            resource: wire::Resource {
                name: self.resource_definition.clone(),
                node_name: self.node.clone(),
                props: self.props.clone(),
                flags: self.flags.iter().cloned().collect(),
                layer_object: Some(layer_object),
                state: Some(wire::ResourceState { in_use }),
                uuid: Some(self.uuid.clone()),
                create_timestamp: Some(self.create_timestamp),
            },
            volumes,
        }
    }

    /// A DRBD volume as the layer tree and the volume's layer data show it.
    fn drbd_volume(&self, nr: u32, minor: u32, o: &VolumeObserved, dv: Option<&DrbdVolumeObserved>) -> wire::DrbdVolume {
        let backing = o.device_path.as_ref().filter(|_| !self.is_diskless());
        wire::DrbdVolume {
            allocated_size_kib: o.allocated_size_kib,
            backing_device: backing.cloned(),
            device_path: Some(format!("/dev/drbd{minor}")),
            disk_state: dv.map(|d| d.disk.clone()),
            drbd_volume_definition: Some(wire::DrbdVolumeDefinition {
                minor_number: Some(i64::from(minor)),
                volume_number: Some(i64::from(nr)),
            }),
            meta_disk: backing.map(|_| "internal".to_string()),
            usable_size_kib: dv.and_then(|d| d.size_kib),
        }
    }

    /// The DRBD part of the layer tree: numbers, flags, volumes and what
    /// the node's DRBD reported of its connections.
    fn drbd_resource(&self, seen: &[(&Volume, VolumeObserved, Option<u32>)], drbd: Option<&DrbdObserved>) -> wire::DrbdResource {
        let mut flags = Vec::new();
        if self.is_diskless() {
            flags.push("DISKLESS".to_string());
        }
        if self.flags.contains("TIE_BREAKER") {
            flags.push("TIE_BREAKER".to_string());
        }
        if self.is_drbd_client() {
            flags.push("CLIENT".to_string());
        }
        let drbd_volumes = seen
            .iter()
            .filter_map(|(v, o, minor)| minor.map(|m| self.drbd_volume(v.volume_number, m, o, drbd_volume_of(drbd, v.volume_number))))
            .collect();
        let connections =
            drbd.map(|d| d.connections.iter().map(|c| (c.peer.clone(), self.drbd_connection(c))).collect()).unwrap_or_default();
        let numbers = self.drbd;
        wire::DrbdResource {
            al_size: numbers.map(|_| 32),
            al_stripes: numbers.map(|_| 1),
            connections,
            drbd_volumes,
            flags,
            may_promote: drbd.and_then(|d| d.may_promote),
            node_id: numbers.map(|d| i64::from(d.node_id)),
            promotion_score: drbd.and_then(|d| d.promotion_score),
            tcp_ports: numbers.map(|d| vec![i64::from(d.tcp_port)]),
        }
    }

    fn drbd_connection(&self, c: &DrbdConnectionObserved) -> wire::DrbdConnection {
        let message = if c.split_brain {
            struct Message<'a>(&'a DrbdConnectionObserved, &'a str);
            impl std::fmt::Display for Message<'_> {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    split_brain_message(f, self.0, self.1)
                }
            }
            Message(c, &self.resource_definition).to_string()
        } else {
            c.connection.clone()
        };
        wire::DrbdConnection { connected: c.connection == "Connected", message }
    }

    fn layer_tree(
        &self,
        depth: usize,
        seen: &[(&Volume, VolumeObserved, Option<u32>)],
        drbd: Option<&DrbdObserved>,
    ) -> wire::ResourceLayer {
        let kind = self.layer_stack.get(depth).map_or("STORAGE", String::as_str);
        let mut layer = wire::ResourceLayer { layer_type: kind.to_string(), ..Default::default() };
        match kind {
            "STORAGE" => {
                let storage_volumes = seen.iter().map(|(v, o, _)| storage_volume(v.volume_number, o)).collect();
                layer.storage = Some(wire::StorageResource { storage_volumes });
                return layer;
            }
            "DRBD" => layer.drbd = Some(self.drbd_resource(seen, drbd)),
            "LUKS" => {
                let luks_volumes = seen.iter().map(|(v, o, _)| luks_volume(v.volume_number, o)).collect();
                layer.luks = Some(wire::LuksResource { luks_volumes });
            }
            _ => {}
        }
        layer.children = vec![self.layer_tree(depth + 1, seen, drbd)];
        layer
    }
}

/// The message of a DRBD connection in split brain (resource `rd`).
pub(crate) fn split_brain_message(f: &mut std::fmt::Formatter<'_>, c: &DrbdConnectionObserved, rd: &str) -> std::fmt::Result {
    write!(
        f,
        "{}: split brain, the replicas' data diverged; DRBD resolves nothing by itself: \
         keep one side and, on the node whose changes are dropped, run \
         `drbdsetup connect {} {} --discard-my-data` (and on the other node \
         `drbdsetup connect {} <its peer's node id>`)",
        c.connection, rd, c.peer_node_id, rd
    )
}

/// What the node's DRBD reported of one volume.
fn drbd_volume_of(drbd: Option<&DrbdObserved>, nr: u32) -> Option<&DrbdVolumeObserved> {
    drbd.and_then(|d| d.volumes.iter().find(|v| v.number == nr))
}

fn luks_volume(nr: u32, o: &VolumeObserved) -> wire::LuksVolume {
    wire::LuksVolume {
        allocated_size_kib: o.allocated_size_kib,
        backing_device: o.device_path.clone(),
        corrupted_key: o.luks_corrupted_key,
        device_path: o.luks_device_path.clone(),
        disk_state: o.disk_state.clone(),
        opened: o.luks_device_path.is_some(),
        // LUKS2's header takes 16 MiB of the backing device.
        usable_size_kib: o.usable_size_kib.map(|s| (s - 16 * 1024).max(0)),
        volume_number: i64::from(nr),
    }
}

fn storage_volume(nr: u32, o: &VolumeObserved) -> wire::StorageVolume {
    wire::StorageVolume {
        volume_number: i64::from(nr),
        device_path: o.device_path.clone(),
        allocated_size_kib: o.allocated_size_kib,
        usable_size_kib: o.usable_size_kib,
        disk_state: o.disk_state.clone(),
    }
}

/// The reply LINSTOR gives for a new resource.
pub(crate) fn created_reply(r: &Resource) -> ApiCallRc {
    const OP: i64 = rc::MASK_CRT | rc::MASK_RSC;
    ApiCallRc::success(OP, rc::CREATED, format!("New resource '{}' on node '{}' registered.", r.resource_definition, r.node))
        .with_details(format!("Resource '{}' on node '{}' UUID is: {}", r.resource_definition, r.node, r.uuid))
        .with_ref("RscDfn", &r.resource_definition)
        .with_ref("Node", &r.node)
}

fn rsc_not_found(op: i64, rd: &str, node: &str) -> OpError {
    OpError::new(op, rc::FAIL_NOT_FOUND_RSC, format!("Resource '{rd}' on node '{node}' not found."))
        .cause(format!("The resource definition '{rd}' is not deployed on node '{node}'."))
        .correction("Use an existing resource.")
        .obj_ref("RscDfn", rd)
        .obj_ref("Node", node)
}

/// Whether a layer stack can hold a diskless replica: only a layer that
/// reaches its data over the network (DRBD, NVMe) can.
pub fn stack_supports_diskless(stack: &[String]) -> bool {
    stack.iter().any(|l| l == "DRBD" || l == "NVME")
}

/// Refuses a diskless replica on a stack without a diskless-capable layer,
/// with LINSTOR's entry (`CompatibilityUtils.mapDisklessFlagToNvmeOrDrbd`):
/// such a replica would have no device at all.
pub fn check_diskless_stack(stack: &[String], op: i64) -> OpResult<()> {
    if stack_supports_diskless(stack) {
        return Ok(());
    }
    Err(OpError::new(
        op,
        rc::FAIL_INVLD_LAYER_STACK,
        "The given storage pool is a diskless storage pool, but no layer from the given layer-list supports diskless storage pools",
    )
    .cause(format!("The layer stack is {}; only DRBD (or NVME) can have diskless replicas.", stack.join(",")))
    .correction("Create the resource diskful, or use a resource definition with the DRBD layer."))
}

impl Cluster {
    pub fn resource(&self, rd: &str, node: &str, op: i64) -> OpResult<&Resource> {
        let d = self.rsc_dfn(rd, op)?;
        let n = self.node(node, op)?;
        self.resources.get(&(key(&d.name), key(&n.name))).ok_or_else(|| rsc_not_found(op, &d.name, &n.name))
    }

    /// Chooses the storage pool of one volume: the `StorPoolName` property
    /// of the resource, the volume definition, the resource definition or
    /// its resource group (first match), else the group's storage pool
    /// list, else `DfltStorPool` (`DfltDisklessStorPool` when diskless).
    pub(crate) fn new_volume(
        &self,
        rd: &ResourceDefinition,
        r: &Resource,
        vd: &VolumeDefinition,
        op: i64,
        ctx: &mut Ctx,
    ) -> OpResult<Volume> {
        let rg = self.rsc_grps.get(&key(&rd.resource_group));
        let diskless = r.is_diskless();
        // A diskless resource goes to the pool its own request names, else
        // to a diskless pool: LINSTOR (CtrlRscCrtApiHelper) gives it
        // `StorPoolName=DfltDisklessStorPool` before the volumes resolve
        // their pool, so the definition's or group's `StorPoolName` (a
        // diskful pool) never applies to it.
        let layers: [Option<&Props>; 4] = if diskless {
            [Some(&r.props), None, None, None]
        } else {
            [Some(&r.props), Some(&vd.props), Some(&rd.props), rg.map(|g| &g.props)]
        };
        let from_props = layers.into_iter().flatten().find_map(|p| p.get(PROP_STOR_POOL_NAME).filter(|v| !v.is_empty()).cloned());
        let (pool_name, explicit) = match from_props {
            Some(p) => (p, true),
            None if diskless => (
                rg.and_then(|g| g.select_filter.storage_pool_diskless_list.as_ref())
                    .and_then(|l| l.first().cloned())
                    .unwrap_or_else(|| DEFAULT_DISKLESS_STOR_POOL.to_string()),
                false,
            ),
            None => (
                rg.and_then(|g| g.select_filter.storage_pool_list.as_ref())
                    .and_then(|l| l.first().cloned())
                    .unwrap_or_else(|| DEFAULT_STOR_POOL.to_string()),
                false,
            ),
        };
        let pool = match self.stor_pools.get(&(key(&r.node), key(&pool_name))) {
            Some(p) => p,
            None => {
                let code = if explicit || !pool_name.eq_ignore_ascii_case(DEFAULT_STOR_POOL) {
                    rc::FAIL_NOT_FOUND_STOR_POOL
                } else {
                    rc::FAIL_NOT_FOUND_DFLT_STOR_POOL
                };
                return Err(OpError::new(op, code, format!("Storage pool '{pool_name}' not found on node '{}'.", r.node))
                    .cause(format!(
                        "Volume {} of resource '{}' would be placed in storage pool '{pool_name}', which node '{}' does not have.",
                        vd.volume_number, r.resource_definition, r.node
                    ))
                    .correction("Create that storage pool on the node, or set the 'StorPoolName' property to an existing pool.")
                    .obj_ref("Node", &r.node)
                    .obj_ref("StorPool", &pool_name));
            }
        };
        if pool.provider_kind.is_diskless() != diskless {
            let what = if diskless { "a diskless resource needs a DISKLESS pool" } else { "a diskful resource needs a pool with storage" };
            return Err(OpError::new(
                op,
                rc::FAIL_INVLD_STOR_POOL_NAME,
                format!("Storage pool '{}' on node '{}' is {}; {what}.", pool.name, pool.node, pool.provider_kind.as_str()),
            )
            .correction("Choose a matching storage pool or set the DISKLESS flag as intended."));
        }
        let luks_secret = if r.layer_stack.iter().any(|l| l == "LUKS") && !diskless {
            Some(crate::resource_definition::new_luks_secret(vd, ctx).ok_or_else(|| {
                OpError::new(op, rc::FAIL_NOT_FOUND_CRYPT_KEY, "Cannot create an encrypted volume: the master passphrase is not available.")
                    .cause("A LUKS layer needs the controller's master key, which exists only after the master passphrase was created (POST /v1/encryption/passphrase) and, after a restart, entered again (PATCH).")
                    .correction("Create or enter the master passphrase, e.g. `linstor encryption create-passphrase` / `enter-passphrase`.")
            })?)
        } else {
            None
        };
        Ok(Volume {
            volume_number: vd.volume_number,
            storage_pool: pool.name.clone(),
            provider_kind: pool.provider_kind,
            props: Props::new(),
            flags: BTreeSet::new(),
            uuid: ctx.uuid(),
            luks_secret,
            luks_previous: Vec::new(),
            source: None,
            clone_of: None,
        })
    }

    /// `POST /v1/resource-definitions/{rd}/resources` (list form) and
    /// `…/resources/{node}` (object form; `node` overrides the body).
    pub fn create_resources(
        &self,
        rd: &str,
        reqs: &[wire::ResourceCreate],
        node_override: Option<&str>,
        ctx: &mut Ctx,
    ) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_RSC;
        let d = self.rsc_dfn(rd, OP)?;
        let rd_key = key(&d.name);
        if reqs.is_empty() {
            return Err(
                OpError::new(OP, rc::FAIL_INVLD_REQUEST, "No resource to create was given.").correction("Send at least one resource.")
            );
        }
        let vds: Vec<&VolumeDefinition> = self.vlm_dfns_of(&rd_key).collect();
        // The requests' properties against LINSTOR's whitelist, normalized.
        let reqs = reqs
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.resource.props = props::checked(PropsObj::Rsc, &r.resource.props, OP)?;
                Ok(r)
            })
            .collect::<OpResult<Vec<_>>>()?;
        let mut out = Outcome::default();
        let mut seen = BTreeSet::new();
        let mut taken = Taken::default();
        for req in &reqs {
            let node_name = node_override.unwrap_or(&req.resource.node_name);
            let nk = key(node_name);
            // A tiebreaker makes room for a replica the user asks for: a
            // diskless one takes it over, a diskful one replaces it.
            if let Some(tb) = self.resources.get(&(rd_key.clone(), nk.clone())).filter(|r| r.flags.contains("TIE_BREAKER"))
                && seen.insert(nk.clone())
            {
                let wants_disk =
                    !req.resource.flags.iter().any(|f| f.to_ascii_uppercase().contains("DISKLESS")) && req.drbd_client != Some(true);
                if wants_disk {
                    let mut r = self.build_resource(d, &vds, node_name, req, &mut taken, OP, ctx)?;
                    // Same DRBD identity as the tiebreaker it replaces.
                    if r.drbd.is_some() {
                        r.drbd = tb.drbd.or(r.drbd);
                    }
                    out.delete(ObjKey::Rsc(rd_key.clone(), nk.clone()));
                    if let Some(e) = props::created_entry(rc::MASK_RSC, &req.resource.props) {
                        out.reply(e);
                    }
                    out.reply(created_reply(&r));
                    out.put(Object::Rsc(r));
                } else {
                    let mut r = tb.clone();
                    r.flags.remove("TIE_BREAKER");
                    r.props.extend(req.resource.props.clone());
                    out.reply(ApiCallRc::info(
                        OP,
                        rc::INFO_TIE_BREAKER_TAKEOVER,
                        format!("The tie breaker resource '{}' on node '{}' is now a regular diskless resource.", d.name, r.node),
                    ));
                    out.put(Object::Rsc(r));
                }
                continue;
            }
            if self.resources.contains_key(&(rd_key.clone(), nk.clone())) || seen.contains(&nk) {
                return Err(OpError::new(
                    OP,
                    rc::FAIL_EXISTS_RSC,
                    format!("Resource '{}' already exists on node '{}'.", d.name, node_name),
                )
                .correction("Use another node, or delete the existing resource first.")
                .obj_ref("RscDfn", &d.name)
                .obj_ref("Node", node_name));
            }
            let r = self.build_resource(d, &vds, node_name, req, &mut taken, OP, ctx)?;
            seen.insert(key(&r.node));
            // LINSTOR (CtrlRscCrtApiHelper) names the properties it set first.
            if let Some(e) = props::created_entry(rc::MASK_RSC, &req.resource.props) {
                out.reply(e);
            }
            out.reply(created_reply(&r));
            out.put(Object::Rsc(r));
        }
        Ok(out)
    }

    /// Validates one resource request and builds the resource with its
    /// volumes. The definition and its volume definitions are passed in, so
    /// a spawn can build resources of a definition it is creating in the
    /// same transaction.
    #[expect(clippy::too_many_arguments, reason = "the definition, its volumes, the request and the numbers taken so far")]
    pub(crate) fn build_resource(
        &self,
        d: &ResourceDefinition,
        vds: &[&VolumeDefinition],
        node_name: &str,
        req: &wire::ResourceCreate,
        taken: &mut Taken,
        op: i64,
        ctx: &mut Ctx,
    ) -> OpResult<Resource> {
        if node_name.is_empty() {
            return Err(OpError::new(op, rc::FAIL_INVLD_NODE_NAME, "A resource needs a node_name.").correction("Give resource.node_name."));
        }
        let n = self.node(node_name, op)?;
        if !n.node_type.has_satellite() {
            return Err(OpError::new(
                op,
                rc::FAIL_INVLD_NODE_TYPE,
                format!("Node '{}' is a {} node and cannot hold resources.", n.name, n.node_type.as_str()),
            )
            .correction("Place the resource on a SATELLITE or COMBINED node."));
        }
        props::check_all(&req.resource.props, op)?;
        let mut flags: BTreeSet<String> = BTreeSet::new();
        for f in &req.resource.flags {
            let u = f.trim().to_ascii_uppercase();
            if !CREATE_FLAGS.contains(&u.as_str()) {
                return Err(OpError::new(op, rc::FAIL_INVLD_REQUEST, format!("The resource flag '{f}' cannot be set on creation."))
                    .correction(format!("Valid flags: {}.", CREATE_FLAGS.join(", "))));
            }
            flags.insert(u);
        }
        if req.drbd_client == Some(true) {
            flags.insert("DRBD_DISKLESS".into());
        }
        if flags.iter().any(|f| f != "INACTIVE") {
            flags.insert("DISKLESS".into());
        }
        let rg = self.rsc_grps.get(&key(&d.resource_group));
        let stack = match req.layer_list.as_ref().filter(|l| !l.is_empty()) {
            Some(l) => check_layer_stack(l, op)?,
            None if !d.layer_stack.is_empty() => d.layer_stack.clone(),
            None => {
                rg.and_then(|g| g.select_filter.layer_stack.clone()).filter(|l| !l.is_empty()).unwrap_or_else(|| self.default_stack_for(d))
            }
        };
        // A definition from before DRBD was the default has volumes without
        // minors: it keeps replicas without DRBD unless asked explicitly.
        let implicit = req.layer_list.as_ref().is_none_or(|l| l.is_empty())
            && d.layer_stack.is_empty()
            && rg.and_then(|g| g.select_filter.layer_stack.as_ref()).is_none_or(|l| l.is_empty());
        let stack = if implicit && vds.iter().any(|v| v.drbd_minor.is_none()) {
            stack.into_iter().filter(|l| l != "DRBD").collect()
        } else {
            stack
        };
        if flags.contains("DISKLESS") && !flags.contains("TIE_BREAKER") {
            check_diskless_stack(&stack, op)?;
        }
        let drbd = if stack.iter().any(|l| l == "DRBD") {
            if let Some(vd) = vds.iter().find(|v| v.drbd_minor.is_none()) {
                return Err(OpError::new(
                    op,
                    rc::FAIL_INVLD_LAYER_STACK,
                    format!("Volume {} of '{}' has no DRBD minor number.", vd.volume_number, d.name),
                )
                .cause("The resource definition was created without a DRBD layer.")
                .correction("Create the resource definition with layer list DRBD,STORAGE (or in a resource group that has it)."));
            }
            let port_count = req.drbd_tcp_port_count.unwrap_or(1).max(req.drbd_tcp_ports.as_ref().map_or(0, |p| p.len() as i64));
            if port_count != 1 {
                return Err(OpError::new(
                    op,
                    rc::FAIL_INVLD_TCP_PORT,
                    format!("Resource '{}' asks for {port_count} DRBD TCP ports; Cairn gives each replica exactly one.", d.name),
                )
                .correction("Leave out drbd_tcp_port_count (or use 1) and give at most one port in drbd_tcp_ports."));
            }
            let node_id = self.alloc_node_id(&key(&d.name), req.drbd_node_id, taken, op)?;
            let requested_port = match req.drbd_tcp_ports.as_ref().and_then(|p| p.first()) {
                Some(p) => Some(
                    p.trim()
                        .parse::<i64>()
                        .map_err(|_| OpError::new(op, rc::FAIL_INVLD_TCP_PORT, format!("The TCP port '{p}' is invalid.")))?,
                ),
                None => None,
            };
            let tcp_port = self.alloc_port(&key(&n.name), requested_port, taken, op)?;
            Some(DrbdRsc { node_id, tcp_port, client: req.drbd_client == Some(true) })
        } else {
            None
        };
        let mut r = Resource {
            resource_definition: d.name.clone(),
            node: n.name.clone(),
            props: req.resource.props.clone(),
            flags,
            layer_stack: stack,
            create_timestamp: ctx.now_ms,
            volumes: Volumes::new(),
            uuid: ctx.uuid(),
            drbd,
            rollback: None,
        };
        for vd in vds {
            let v = self.new_volume(d, &r, vd, op, ctx)?;
            r.volumes.insert(vd.volume_number, v);
        }
        Ok(r)
    }

    /// `PUT …/resources/{node}`.
    pub fn modify_resource(&self, rd: &str, node: &str, req: &wire::ResourceModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_RSC;
        let mut r = self.resource(rd, node, OP)?.clone();
        r.props = props::apply(PropsObj::Rsc, &r.props, &req.props, OP)?;
        self.set_diskless_role(&mut r, req, OP)?;
        let mut out = Outcome::default();
        // LINSTOR answers the keys it set before the 'modified' entry.
        if let Some(e) = crate::props::set_entry(rc::MASK_RSC, &req.props) {
            out.reply(e);
        }
        out.reply(
            ApiCallRc::success(OP, rc::MODIFIED, format!("Resource '{}' on node '{}' modified.", r.resource_definition, r.node))
                .with_ref("RscDfn", &r.resource_definition)
                .with_ref("Node", &r.node),
        );
        out.put(Object::Rsc(r));
        Ok(out)
    }

    /// `drbd_tiebreaker` and `drbd_client` of a resource modify (REST API
    /// 1.28), as LINSTOR's `DrbdLayerUtils.setTiebreaker` and
    /// `setClientFlag`: `drbd_tiebreaker: true` flags a replica
    /// `TIE_BREAKER`, false clears the flag and leaves a plain
    /// `DRBD_DISKLESS` replica; `drbd_client` sets or clears the DRBD
    /// `CLIENT` flag (a client is no tiebreaker, so setting it clears
    /// `TIE_BREAKER`). The DRBD follow-up then sees the new state. Both set
    /// together are LINSTOR's `FAIL_INVLD_CONF`. Unlike LINSTOR, a replica
    /// with a disk is never flagged: the tiebreaker bookkeeping deletes
    /// tiebreakers it no longer needs, and that must never take data with
    /// it; a client flag on a disk would say nothing true.
    fn set_diskless_role(&self, r: &mut Resource, req: &wire::ResourceModify, op: i64) -> OpResult<()> {
        if req.drbd_tiebreaker == Some(true) && req.drbd_client == Some(true) {
            return Err(OpError::new(
                op,
                rc::FAIL_INVLD_CONF,
                "Tiebreaker flag and DRBD client flag are mutually exclusive flags, but both were set",
            ));
        }
        let refuse = |r: &Resource, role: &str| {
            OpError::new(
                op,
                rc::FAIL_INVLD_CONF,
                format!(
                    "Resource '{}' on node '{}' is not a diskless DRBD replica; only those can be {role}.",
                    r.resource_definition, r.node
                ),
            )
        };
        let diskless_drbd = r.is_diskless() && r.has_drbd() && r.drbd.is_some();
        match req.drbd_tiebreaker {
            Some(true) if !diskless_drbd => return Err(refuse(r, "a tiebreaker")),
            Some(true) => {
                r.flags.insert(crate::drbd_auto::FLAG_TIE_BREAKER.into());
                r.set_drbd_client(false);
            }
            Some(false) if r.flags.remove(crate::drbd_auto::FLAG_TIE_BREAKER) => {
                r.flags.insert("DRBD_DISKLESS".into());
            }
            _ => {}
        }
        match req.drbd_client {
            Some(true) if !diskless_drbd => return Err(refuse(r, "a DRBD client")),
            Some(true) => {
                if r.flags.remove(crate::drbd_auto::FLAG_TIE_BREAKER) {
                    r.flags.insert("DRBD_DISKLESS".into());
                }
                r.set_drbd_client(true);
            }
            Some(false) => {
                r.set_drbd_client(false);
            }
            None => {}
        }
        Ok(())
    }

    /// `POST …/resources/{node}/activate` (`active`) and `…/deactivate`:
    /// sets or clears the `INACTIVE` flag. A replica that is already so is
    /// left alone with an info, as LINSTOR does; one in use (DRBD Primary,
    /// `in_use`) cannot be deactivated.
    pub fn set_resource_active(&self, rd: &str, node: &str, active: bool, in_use: bool) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_RSC;
        let mut r = self.resource(rd, node, OP)?.clone();
        let verb = if active { "activated" } else { "deactivated" };
        let mut out = Outcome::default();
        if r.flags.contains(FLAG_INACTIVE) != active {
            out.reply(
                ApiCallRc::info(OP, rc::INFO_NOOP, format!("Resource is already {verb}. Noop"))
                    .with_ref("RscDfn", &r.resource_definition)
                    .with_ref("Node", &r.node),
            );
            return Ok(out);
        }
        if !active && in_use {
            return Err(OpError::new(OP, rc::FAIL_IN_USE, "Cannot deactivate a resource while being in use!")
                .cause(format!("Resource '{}' is Primary on node '{}'.", r.resource_definition, r.node))
                .correction("Stop what uses the device (unmount it, stop the VM) first.")
                .obj_ref("RscDfn", &r.resource_definition)
                .obj_ref("Node", &r.node));
        }
        if active {
            r.flags.remove(FLAG_INACTIVE);
        } else {
            r.flags.insert(FLAG_INACTIVE.to_string());
        }
        out.reply(
            ApiCallRc::success(OP, rc::MODIFIED, format!("Resource '{}' {verb} on node '{}'.", r.resource_definition, r.node))
                .with_ref("RscDfn", &r.resource_definition)
                .with_ref("Node", &r.node),
        );
        out.put(Object::Rsc(r));
        Ok(out)
    }

    /// `PUT …/resources/{node}/volumes/{nr}`.
    pub fn modify_volume(&self, rd: &str, node: &str, nr: i64, req: &cairn_api::PropsModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_VLM;
        let mut r = self.resource(rd, node, OP)?.clone();
        let v = u32::try_from(nr).ok().and_then(|n| r.volumes.get_mut(&n)).ok_or_else(|| {
            OpError::new(OP, rc::FAIL_NOT_FOUND_VLM, format!("Volume {nr} of resource '{rd}' on node '{node}' not found."))
        })?;
        v.props = props::apply(PropsObj::Vlm, &v.props, req, OP)?;
        let mut out = Outcome::default();
        // LINSTOR answers the keys it set before the 'modified' entry.
        if let Some(e) = crate::props::set_entry(rc::MASK_VLM, req) {
            out.reply(e);
        }
        out.reply(ApiCallRc::success(
            OP,
            rc::MODIFIED,
            format!("Volume {nr} of resource '{}' on node '{}' modified.", r.resource_definition, r.node),
        ));
        out.put(Object::Rsc(r));
        Ok(out)
    }

    /// `DELETE …/resources/{node}`.
    pub fn delete_resource(&self, rd: &str, node: &str) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_DEL | rc::MASK_RSC;
        let r = self.resource(rd, node, OP)?;
        // Whatever the ZFS delete strategy (refused by the REST delete
        // only, `delete_resource_keeping_quorum`; LINSTOR's node delete and
        // evacuation never ask it):
        // a ZFS resource goes while its snapshots stay (the satellite
        // renames its zvols aside with them); other providers' snapshots
        // live in the volume's pool as dependents of it.
        let zfs = |k: ProviderKind| matches!(k, ProviderKind::Zfs | ProviderKind::ZfsThin);
        let on_node = |s: &&crate::snapshot::SnapshotDfn| s.nodes.get(&key(&r.node)).cloned();
        let keeps = |s: &crate::snapshot::NodeSnapshot| {
            !r.volumes.is_empty() && r.volumes.values().all(|v| zfs(v.provider_kind)) && s.volumes.iter().all(|v| zfs(v.provider_kind))
        };
        if let Some(s) = self.snapshots_of(&key(&r.resource_definition)).find(|s| on_node(s).is_some_and(|ns| !keeps(&ns))) {
            return Err(OpError::new(
                OP,
                rc::FAIL_IN_USE,
                format!("Resource '{}' on node '{}' has snapshots.", r.resource_definition, r.node),
            )
            .cause(format!("Snapshot '{}' is kept on this node with the resource's volumes.", s.name))
            .correction("Delete the snapshots on this node first."));
        }
        let mut out = Outcome::default();
        out.delete(ObjKey::Rsc(key(&r.resource_definition), key(&r.node)));
        out.reply(
            ApiCallRc::success(OP, rc::DELETED, format!("Resource '{}' on node '{}' deleted.", r.resource_definition, r.node))
                .with_details(format!("Resource '{}' on node '{}' UUID was: {}", r.resource_definition, r.node, r.uuid))
                .with_ref("RscDfn", &r.resource_definition)
                .with_ref("Node", &r.node),
        );
        Ok(out)
    }
}

#[cfg(test)]
mod volumes_form {
    use super::*;

    fn rsc(volumes: Volumes) -> Resource {
        Resource {
            resource_definition: "r".into(),
            node: "n".into(),
            props: Props::new(),
            flags: BTreeSet::new(),
            layer_stack: vec!["STORAGE".into()],
            create_timestamp: 1,
            volumes,
            uuid: "u".into(),
            drbd: None,
            rollback: None,
        }
    }

    fn vol(nr: u32) -> Volume {
        Volume {
            volume_number: nr,
            storage_pool: "p".into(),
            provider_kind: ProviderKind::FileThin,
            props: Props::new(),
            flags: BTreeSet::new(),
            uuid: format!("v{nr}"),
            luks_secret: None,
            luks_previous: Vec::new(),
            source: None,
            clone_of: None,
        }
    }

    #[test]
    fn volumes_are_stored_as_an_object_and_read_back_in_number_order() -> Result<(), serde_json::Error> {
        let empty = serde_json::to_value(rsc(Volumes::new()))?;
        assert_eq!(empty["volumes"], serde_json::json!({}));
        let two: Volumes = [(2, vol(2)), (0, vol(0))].into_iter().collect();
        let json = serde_json::to_value(rsc(two))?;
        assert_eq!(json["volumes"]["0"]["uuid"], "v0");
        assert_eq!(json["volumes"]["2"]["uuid"], "v2");
        let back: Resource = serde_json::from_value(json)?;
        assert_eq!(back.volumes.keys().copied().collect::<Vec<_>>(), vec![0, 2]);
        // The form a BTreeMap wrote (before litemap) reads the same.
        let old: Resource = serde_json::from_value(empty)?;
        assert!(old.volumes.is_empty());
        Ok(())
    }
}

/// The layer data was `serde_json::Value` maps before it was typed; these
/// are those builders, kept to show that the typed form says the same.
#[cfg(test)]
pub(crate) mod layer_data_as_before {
    use super::*;
    use cairn_proto::DrbdPeerVolumeObserved;
    use serde_json::{Map, Value, json};

    fn old_drbd_volume(r: &Resource, nr: u32, minor: u32, o: &VolumeObserved, dv: Option<&DrbdVolumeObserved>) -> Value {
        let mut m = Map::new();
        m.insert("drbd_volume_definition".into(), json!({ "volume_number": nr, "minor_number": minor }));
        m.insert("device_path".into(), format!("/dev/drbd{minor}").into());
        if let Some(b) = o.device_path.clone().filter(|_| !r.is_diskless()) {
            m.insert("backing_device".into(), b.into());
            m.insert("meta_disk".into(), "internal".into());
        }
        if let Some(s) = o.allocated_size_kib {
            m.insert("allocated_size_kib".into(), s.into());
        }
        if let Some(s) = dv.and_then(|d| d.size_kib) {
            m.insert("usable_size_kib".into(), s.into());
        }
        if let Some(d) = dv {
            m.insert("disk_state".into(), d.disk.clone().into());
        }
        Value::Object(m)
    }

    fn old_drbd(
        r: &Resource,
        observed: &dyn Fn(u32) -> Option<VolumeObserved>,
        minor: &dyn Fn(u32) -> Option<u32>,
        drbd: Option<&DrbdObserved>,
    ) -> Value {
        let mut m = Map::new();
        if let Some(d) = r.drbd {
            m.insert("node_id".into(), d.node_id.into());
            m.insert("tcp_ports".into(), json!([d.tcp_port]));
            m.insert("al_stripes".into(), 1.into());
            m.insert("al_size".into(), 32.into());
        }
        let mut flags = Vec::new();
        if r.is_diskless() {
            flags.push("DISKLESS");
        }
        if r.flags.contains("TIE_BREAKER") {
            flags.push("TIE_BREAKER");
        }
        if r.is_drbd_client() {
            flags.push("CLIENT");
        }
        m.insert("flags".into(), json!(flags));
        let vols: Vec<Value> = r
            .volumes
            .values()
            .filter_map(|v| {
                let o = observed(v.volume_number).unwrap_or_default();
                let dv = drbd.and_then(|d| d.volumes.iter().find(|x| x.number == v.volume_number));
                minor(v.volume_number).map(|mn| old_drbd_volume(r, v.volume_number, mn, &o, dv))
            })
            .collect();
        m.insert("drbd_volumes".into(), vols.into());
        let conns: Map<String, Value> = drbd
            .map(|d| {
                d.connections
                    .iter()
                    .map(|c| {
                        // The fixture's one split brain: `web`, peer node id 1.
                        let message = if c.split_brain {
                            "StandAlone: split brain, the replicas' data diverged; DRBD resolves nothing by itself: \
                             keep one side and, on the node whose changes are dropped, run \
                             `drbdsetup connect web 1 --discard-my-data` (and on the other node \
                             `drbdsetup connect web <its peer's node id>`)"
                                .to_string()
                        } else {
                            c.connection.clone()
                        };
                        (c.peer.clone(), json!({ "connected": c.connection == "Connected", "message": message }))
                    })
                    .collect()
            })
            .unwrap_or_default();
        m.insert("connections".into(), conns.into());
        if let Some(d) = drbd {
            if let Some(p) = d.promotion_score {
                m.insert("promotion_score".into(), p.into());
            }
            if let Some(p) = d.may_promote {
                m.insert("may_promote".into(), p.into());
            }
        }
        Value::Object(m)
    }

    fn old_luks_volume(nr: u32, o: &VolumeObserved) -> Value {
        let mut m = Map::new();
        m.insert("volume_number".into(), nr.into());
        if let Some(p) = &o.luks_device_path {
            m.insert("device_path".into(), p.clone().into());
        }
        if let Some(p) = &o.device_path {
            m.insert("backing_device".into(), p.clone().into());
        }
        if let Some(s) = o.allocated_size_kib {
            m.insert("allocated_size_kib".into(), s.into());
        }
        if let Some(s) = o.usable_size_kib {
            m.insert("usable_size_kib".into(), (s - 16 * 1024).max(0).into());
        }
        m.insert("opened".into(), o.luks_device_path.is_some().into());
        m.insert("corrupted_key".into(), o.luks_corrupted_key.into());
        if let Some(s) = &o.disk_state {
            m.insert("disk_state".into(), s.clone().into());
        }
        Value::Object(m)
    }

    fn old_storage_volume(nr: u32, o: &VolumeObserved) -> Value {
        let mut m = Map::new();
        m.insert("volume_number".into(), nr.into());
        if let Some(p) = &o.device_path {
            m.insert("device_path".into(), p.clone().into());
        }
        if let Some(s) = o.allocated_size_kib {
            m.insert("allocated_size_kib".into(), s.into());
        }
        if let Some(s) = o.usable_size_kib {
            m.insert("usable_size_kib".into(), s.into());
        }
        if let Some(s) = &o.disk_state {
            m.insert("disk_state".into(), s.clone().into());
        }
        Value::Object(m)
    }

    fn volume(nr: u32) -> Volume {
        Volume {
            volume_number: nr,
            storage_pool: "pool".into(),
            provider_kind: ProviderKind::LvmThin,
            props: Props::new(),
            flags: BTreeSet::new(),
            uuid: format!("v{nr}"),
            luks_secret: Some("sealed".into()),
            luks_previous: Vec::new(),
            source: None,
            clone_of: None,
        }
    }

    pub(crate) fn resource(node: &str, flags: &[&str], client: bool) -> Resource {
        Resource {
            resource_definition: "web".into(),
            node: node.into(),
            props: Props::new(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            layer_stack: ["DRBD", "LUKS", "STORAGE"].map(String::from).to_vec(),
            create_timestamp: 1,
            volumes: [(0, volume(0)), (1, volume(1)), (2, volume(2))].into_iter().collect(),
            uuid: "u".into(),
            drbd: Some(DrbdRsc { node_id: 2, tcp_port: 7001, client }),
            rollback: None,
        }
    }

    pub(crate) fn drbd_seen() -> DrbdObserved {
        let peer = |p: &str, done| DrbdPeerVolumeObserved {
            peer: p.into(),
            replication: "SyncSource".into(),
            peer_disk: "Inconsistent".into(),
            done,
        };
        DrbdObserved {
            kernel: true,
            role: "Primary".into(),
            may_promote: Some(false),
            promotion_score: Some(10102),
            suspended: None,
            connections: vec![
                DrbdConnectionObserved {
                    peer: "n3".into(),
                    peer_node_id: 0,
                    connection: "Connected".into(),
                    peer_role: None,
                    split_brain: false,
                },
                DrbdConnectionObserved {
                    peer: "n1".into(),
                    peer_node_id: 1,
                    connection: "StandAlone".into(),
                    peer_role: None,
                    split_brain: true,
                },
            ],
            volumes: vec![
                DrbdVolumeObserved {
                    number: 0,
                    minor: 1000,
                    disk: "UpToDate".into(),
                    quorum: Some(true),
                    size_kib: Some(1024),
                    peers: vec![peer("n1", Some(12.5)), peer("n3", None)],
                },
                DrbdVolumeObserved { number: 2, minor: 1002, disk: "Diskless".into(), quorum: None, size_kib: None, peers: vec![] },
            ],
            forgotten: vec![],
        }
    }

    /// Volume 0 fully reported, 1 with nothing, 2 with a corrupted key and
    /// no LUKS device; volume 1 has no minor.
    pub(crate) fn observed(nr: u32) -> Option<VolumeObserved> {
        match nr {
            0 => Some(VolumeObserved {
                device_path: Some("/dev/vg/web_00000".into()),
                allocated_size_kib: Some(4096),
                usable_size_kib: Some(40960),
                disk_state: Some("UpToDate".into()),
                luks_device_path: Some("/dev/mapper/Linstor-Crypt-web_00000".into()),
                luks_corrupted_key: false,
            }),
            2 => Some(VolumeObserved { usable_size_kib: Some(100), luks_corrupted_key: true, ..Default::default() }),
            _ => None,
        }
    }

    pub(crate) fn minor(nr: u32) -> Option<u32> {
        (nr != 1).then_some(1000 + nr)
    }

    fn compare(r: &Resource, drbd: Option<&DrbdObserved>) -> Result<(), serde_json::Error> {
        let api = r.to_api(&observed, &minor, Some(false), drbd);
        let layer = api.resource.layer_object.clone().expect("a layer tree");
        // Byte for byte where the old maps' (alphabetical) order is the
        // struct's: the DRBD and LUKS layer objects.
        assert_eq!(serde_json::to_string(&layer.drbd)?, serde_json::to_string(&old_drbd(r, &observed, &minor, drbd))?);
        let luks = layer.children.first().and_then(|l| l.luks.as_ref()).expect("a LUKS layer under DRBD");
        let old_luks_volumes = [0, 1, 2].map(|nr| old_luks_volume(nr, &observed(nr).unwrap_or_default()));
        let old_luks = json!({ "luks_volumes": old_luks_volumes });
        assert_eq!(serde_json::to_string(luks)?, serde_json::to_string(&old_luks)?);
        let json = serde_json::to_value(&api)?;
        for (i, nr) in [0u32, 1, 2].into_iter().enumerate() {
            let o = observed(nr).unwrap_or_default();
            let dv = drbd.and_then(|d| d.volumes.iter().find(|v| v.number == nr));
            let old_drbd_data = minor(nr).map(|m| old_drbd_volume(r, nr, m, &o, dv));
            let old = json!([
                { "type": "DRBD", "data": old_drbd_data },
                { "type": "LUKS", "data": old_luks_volume(nr, &o) },
                { "type": "STORAGE", "data": old_storage_volume(nr, &o) },
            ]);
            let mut new = json["volumes"][i]["layer_data_list"].clone();
            // The old form skipped a missing `data` too.
            if let Some(first) = new.get_mut(0).and_then(Value::as_object_mut) {
                first.entry("data").or_insert(Value::Null);
            }
            assert_eq!(new, old, "volume {nr}");
        }
        Ok(())
    }

    #[test]
    fn typed_layer_data_is_the_json_the_value_maps_made() -> Result<(), serde_json::Error> {
        let drbd = drbd_seen();
        compare(&resource("n2", &[], false), Some(&drbd))?;
        compare(&resource("n2", &[], false), None)?;
        compare(&resource("n4", &["DISKLESS", "DRBD_DISKLESS", "TIE_BREAKER"], false), Some(&drbd))?;
        compare(&resource("n5", &["DISKLESS", "DRBD_DISKLESS"], true), Some(&drbd))?;
        let mut plain = resource("n6", &[], false);
        plain.drbd = None;
        compare(&plain, Some(&drbd))
    }
}
