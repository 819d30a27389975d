//! Resource definitions and volume definitions.

use std::collections::{BTreeMap, BTreeSet};

use cairn_api::LAYER_KINDS;
use cairn_api::rc::{self, ApiCallRc};
use cairn_api::resource_definition::{self as wire, LayerData};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ObjKey, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::{self, NameKind, key};
use crate::numbers::Taken;
use crate::resource_group::{MAX_VLM_NR, check_flags, lowest_free, modify_flags};
use crate::whitelist::PropsObj;
use crate::{Ctx, DEFAULT_RSC_GRP, Props, props};

/// Largest volume size: 2^53 KiB = 8 EiB, the largest block device Linux
/// can address.
pub const MAX_VLM_SIZE_KIB: i64 = 1 << 53;
/// The longest external name accepted, in bytes.
pub const MAX_EXTERNAL_NAME_LEN: usize = 1024;

/// DRBD settings given when the resource definition was created, and the
/// node ids its deleted replicas left behind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrbdRscDfnOptions {
    pub port: Option<u16>,
    pub secret: Option<String>,
    pub peer_slots: Option<u8>,
    pub transport_type: Option<String>,
    /// Node ids of deleted replicas, each with the keys of the nodes whose
    /// diskful replica still has to forget it (`drbdsetup forget-peer`:
    /// its bitmap slot keeps the old peer's history). Not handed out again
    /// until every one of them has (see `drbd_auto`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forgetting: BTreeMap<u8, BTreeSet<String>>,
    /// The node key and TCP port of each deleted replica in `forgetting`:
    /// its peers may still have it in their configuration (a peer that has
    /// not applied the delete yet), and `drbdadm` there refuses any other
    /// resource that uses the same address and port. Not handed out again
    /// on that node until its id is forgotten.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub freed_ports: BTreeMap<u8, (String, u16)>,
}

/// A resource definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceDefinition {
    pub name: String,
    pub external_name: Option<String>,
    pub props: Props,
    pub flags: BTreeSet<String>,
    /// Requested layer stack, top first; empty means "decide at placement".
    pub layer_stack: Vec<String>,
    pub resource_group: String,
    pub drbd: DrbdRscDfnOptions,
    pub uuid: String,
}

/// A volume definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeDefinition {
    pub resource_definition: String,
    pub volume_number: u32,
    pub size_kib: i64,
    pub props: Props,
    pub flags: BTreeSet<String>,
    pub drbd_minor: Option<u32>,
    pub uuid: String,
}

const VD_FLAGS: &[&str] = &["GROSS_SIZE", "ENCRYPTED"];

/// Volume definition property with its day-0 DRBD generation id, set when
/// the definition is made (LINSTOR's `DrbdCurrentGi`).
pub const PROP_DRBD_CURRENT_GI: &str = "DrbdCurrentGi";
/// Volume definition flag: the replica chosen for the initial sync has
/// been UpToDate, the race to declare fresh data UpToDate is over.
pub const FLAG_DRBD_INITIALIZED: &str = "DRBD_INITIALIZED";
/// Volume definition property: the user's LUKS passphrase, sealed with the
/// master key (set by `…/encryption-passphrase`, not by property edits).
pub const PROP_VD_PASSPHRASE: &str = "Encryption/Passphrase";

/// `Encryption/Passphrase` holds a sealed value: only the passphrase
/// routes set it.
fn passphrase_prop_refused(op: i64) -> OpError {
    OpError::new(op, rc::FAIL_INVLD_PROP, format!("The property '{PROP_VD_PASSPHRASE}' is not set by property edits."))
        .cause("It holds the volume definition's LUKS passphrase sealed with the master key.")
        .correction(
            "Give `passphrase` when creating the volume definition, or use PUT …/encryption-passphrase (`linstor vd modify-passphrase`).",
        )
}

/// LINSTOR's answer to a volume definition change.
fn vd_modified(op: i64, rd: &str, nr: i64) -> ApiCallRc {
    ApiCallRc::success(op, rc::MODIFIED, format!("Volume definition with number '{nr}' of resource definition '{rd}' modified."))
        .with_ref("RscDfn", rd)
        .with_ref("VlmNr", nr.to_string())
}

/// The sealed passphrase a new encrypted volume of `vd` starts with: the
/// definition's own (`Encryption/Passphrase`) or a fresh random one; None
/// while the controller has no master key.
pub fn new_luks_secret(vd: &VolumeDefinition, ctx: &mut Ctx) -> Option<String> {
    let fresh = ctx.luks_secret()?;
    Some(vd.props.get(PROP_VD_PASSPHRASE).cloned().unwrap_or(fresh))
}

/// A random DRBD generation id, made from a fresh UUID (its last 64 bits):
/// upper-case hex as LINSTOR writes it, the lowest bit (DRBD's primary
/// flag) clear, never one of the values DRBD gives a meaning (0 and 4).
pub fn new_day0_gi(ctx: &mut Ctx) -> String {
    loop {
        let hex: String = ctx.uuid().chars().filter(char::is_ascii_hexdigit).collect();
        let tail = &hex[hex.len().saturating_sub(16)..];
        let gi = u64::from_str_radix(tail, 16).unwrap_or(0) & !1;
        if gi != 0 && gi != 4 {
            return format!("{gi:X}");
        }
    }
}

/// Validates a layer stack: known kinds, no repeats, STORAGE exactly once
/// and last. Returns it upper-cased.
pub fn check_layer_stack(stack: &[String], op: i64) -> OpResult<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(stack.len());
    for l in stack {
        let u = l.trim().to_ascii_uppercase();
        if !LAYER_KINDS.contains(&u.as_str()) {
            return Err(OpError::new(op, rc::FAIL_INVLD_LAYER_KIND, format!("The layer kind '{l}' is invalid."))
                .correction(format!("Use layers from {}.", LAYER_KINDS.join(", "))));
        }
        if out.contains(&u) {
            return Err(OpError::new(op, rc::FAIL_INVLD_LAYER_STACK, format!("The layer '{u}' appears twice in the layer stack.")));
        }
        out.push(u);
    }
    if !out.is_empty() && out.last().map(String::as_str) != Some("STORAGE") {
        return Err(OpError::new(op, rc::FAIL_INVLD_LAYER_STACK, format!("The layer stack '{}' is invalid.", out.join(",")))
            .cause("Every layer stack ends with the STORAGE layer.")
            .correction("Put STORAGE last, e.g. DRBD,STORAGE."));
    }
    Ok(out)
}

fn check_size(size: i64, op: i64) -> OpResult<i64> {
    if (1..=MAX_VLM_SIZE_KIB).contains(&size) {
        Ok(size)
    } else {
        Err(OpError::new(op, rc::FAIL_INVLD_VLM_SIZE, format!("The volume size {size} KiB is invalid."))
            .correction(format!("Use a size from 1 KiB to {MAX_VLM_SIZE_KIB} KiB.")))
    }
}

pub(crate) fn rd_created_reply(d: &ResourceDefinition) -> ApiCallRc {
    const OP: i64 = rc::MASK_CRT | rc::MASK_RSC_DFN;
    ApiCallRc::success(OP, rc::CREATED, format!("New resource definition '{}' created.", d.name))
        .with_details(format!("Resource definition '{}' UUID is: {}", d.name, d.uuid))
        .with_ref("RscDfn", &d.name)
}

/// The reply LINSTOR gives for a new volume definition.
pub(crate) fn vd_created_reply(vd: &VolumeDefinition) -> ApiCallRc {
    const OP: i64 = rc::MASK_CRT | rc::MASK_VLM_DFN;
    let (nr, rd) = (vd.volume_number, &vd.resource_definition);
    ApiCallRc::success(OP, rc::CREATED, format!("New volume definition with number '{nr}' of resource definition '{rd}' created."))
        .with_details(format!("Volume definition with number '{nr}' of resource definition '{rd}' UUID is: {}", vd.uuid))
        .with_ref("RscDfn", rd)
        .with_ref("VlmNr", nr.to_string())
}

fn rd_not_found(op: i64, rd: &str) -> OpError {
    OpError::new(op, rc::FAIL_NOT_FOUND_RSC_DFN, format!("Resource definition '{rd}' not found."))
        .cause(format!("The specified resource definition '{rd}' could not be found in the database."))
        .correction("Create a resource definition with the name specified first.")
        .obj_ref("RscDfn", rd)
}

impl ResourceDefinition {
    /// The wire form; `uses_drbd` tells whether replicas get DRBD by
    /// default ([`Cluster::rd_uses_drbd`]).
    pub fn to_api(&self, vlm_dfns: Option<Vec<wire::VolumeDefinition>>, uses_drbd: bool) -> wire::ResourceDefinition {
        let stack = if !self.layer_stack.is_empty() {
            self.layer_stack.clone()
        } else if uses_drbd {
            crate::default_layer_stack()
        } else {
            vec!["STORAGE".to_string()]
        };
        let layer_data = stack
            .into_iter()
            .map(|t| {
                let data = (t == "DRBD").then(|| {
                    let mut m = serde_json::Map::new();
                    if let Some(p) = self.drbd.peer_slots {
                        m.insert("peer_slots".into(), p.into());
                    }
                    if let Some(t) = &self.drbd.transport_type {
                        m.insert("transport_type".into(), t.clone().into());
                    }
                    serde_json::Value::Object(m)
                });
                LayerData { layer_type: t, data }
            })
            .collect();
        wire::ResourceDefinition {
            name: self.name.clone(),
            external_name: self.external_name.clone(),
            props: self.props.clone(),
            flags: self.flags.iter().cloned().collect(),
            layer_data,
            uuid: Some(self.uuid.clone()),
            resource_group_name: Some(self.resource_group.clone()),
            volume_definitions: vlm_dfns,
        }
    }
}

impl VolumeDefinition {
    pub fn to_api(&self) -> wire::VolumeDefinition {
        let layer_data = match self.drbd_minor {
            Some(m) => vec![LayerData { layer_type: "DRBD".into(), data: Some(serde_json::json!({ "minor_number": m })) }],
            None => Vec::new(),
        };
        wire::VolumeDefinition {
            volume_number: Some(i64::from(self.volume_number)),
            size_kib: Some(self.size_kib),
            props: self.props.clone(),
            flags: self.flags.iter().cloned().collect(),
            layer_data,
            uuid: Some(self.uuid.clone()),
        }
    }
}

impl Cluster {
    /// Whether resources of `d` get a DRBD layer: its own layer stack, or
    /// its group's. Only those volume definitions take a minor number.
    pub fn rd_uses_drbd(&self, d: &ResourceDefinition) -> bool {
        self.uses_drbd(d)
    }

    /// Whether replicas of `d` get a DRBD layer unless a request says
    /// otherwise: its own stack, else its group's, else the default.
    pub(crate) fn uses_drbd(&self, d: &ResourceDefinition) -> bool {
        let group = self.rsc_grps.get(&key(&d.resource_group)).and_then(|g| g.select_filter.layer_stack.clone()).unwrap_or_default();
        let stack = if !d.layer_stack.is_empty() {
            d.layer_stack.clone()
        } else if !group.is_empty() {
            group
        } else if self.vlm_dfns_of(&key(&d.name)).any(|v| v.drbd_minor.is_none()) {
            // Created before DRBD was the default: stays without it.
            return false;
        } else {
            self.default_stack()
        };
        stack.iter().any(|l| l == "DRBD")
    }

    pub fn rsc_dfn(&self, rd: &str, op: i64) -> OpResult<&ResourceDefinition> {
        self.rsc_dfns.get(&key(rd)).ok_or_else(|| rd_not_found(op, rd))
    }

    /// `POST /v1/resource-definitions`.
    pub fn create_rsc_dfn(&self, req: &wire::ResourceDefinitionCreate, ctx: &mut Ctx) -> OpResult<Outcome> {
        let mut checked = req.clone();
        checked.resource_definition.props =
            props::checked(PropsObj::RscDfn, &req.resource_definition.props, rc::MASK_CRT | rc::MASK_RSC_DFN)?;
        let d = self.build_rsc_dfn(&checked, ctx)?;
        let mut out = Outcome::default();
        // LINSTOR (CtrlPropsHelper.fillProperties) names the keys it set first.
        if let Some(e) = crate::props::created_entry(rc::MASK_RSC_DFN, &req.resource_definition.props) {
            out.reply(e);
        }
        out.reply(rd_created_reply(&d));
        out.put(Object::RscDfn(d));
        Ok(out)
    }

    /// Validates a new resource definition and builds it.
    pub(crate) fn build_rsc_dfn(&self, req: &wire::ResourceDefinitionCreate, ctx: &mut Ctx) -> OpResult<ResourceDefinition> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_RSC_DFN;
        let r = &req.resource_definition;
        let external = r.external_name.clone().filter(|e| !e.is_empty());
        if let Some(e) = &external {
            if e.len() > MAX_EXTERNAL_NAME_LEN || e.chars().any(char::is_control) {
                return Err(OpError::new(OP, rc::FAIL_INVLD_EXT_NAME, "The external name is invalid.")
                    .cause(format!("External names are at most {MAX_EXTERNAL_NAME_LEN} bytes of printable UTF-8.")));
            }
            if let Some(d) = self.rsc_dfns.values().find(|d| d.external_name.as_deref() == Some(e.as_str())) {
                return Err(OpError::new(
                    OP,
                    rc::FAIL_EXISTS_EXT_NAME,
                    format!("A resource definition with the external name '{e}' already exists."),
                )
                .obj_ref("RscDfn", &d.name));
            }
        }
        let name = if !r.name.is_empty() {
            name::check(NameKind::ResourceDefinition, &r.name, OP)?;
            r.name.clone()
        } else if let Some(e) = &external {
            name::from_external(e, |n| self.rsc_dfns.contains_key(&key(n)))
                .ok_or_else(|| OpError::new(OP, rc::FAIL_INVLD_EXT_NAME, format!("No resource name could be derived from '{e}'.")))?
        } else {
            return Err(OpError::new(OP, rc::FAIL_INVLD_RSC_NAME, "The resource definition has neither a name nor an external name.")
                .correction("Give 'name' or 'external_name' in resource_definition."));
        };
        if let Some(d) = self.rsc_dfns.get(&key(&name)) {
            return Err(OpError::new(
                OP,
                rc::FAIL_EXISTS_RSC_DFN,
                format!("A resource definition with the name '{}' already exists.", d.name),
            )
            .correction("Use another name, or delete the existing resource definition first.")
            .obj_ref("RscDfn", &d.name));
        }
        let rg_name = r.resource_group_name.clone().filter(|g| !g.is_empty()).unwrap_or_else(|| DEFAULT_RSC_GRP.to_string());
        let rg = self.rsc_grp(&rg_name, OP)?;
        props::check_all(&r.props, OP)?;
        let stack: Vec<String> = r.layer_data.iter().map(|l| l.layer_type.clone()).collect();
        let layer_stack = check_layer_stack(&stack, OP)?;
        let mut drbd =
            check_drbd_options(req.drbd_port, req.drbd_secret.clone(), req.drbd_peer_slots, req.drbd_transport_type.clone(), OP)?;
        // DRBD's shared secret: 20 random characters, as LINSTOR makes it.
        if drbd.secret.is_none() {
            drbd.secret = Some(ctx.uuid().chars().filter(char::is_ascii_alphanumeric).take(20).collect());
        }
        let d = ResourceDefinition {
            name,
            external_name: external,
            props: r.props.clone(),
            flags: BTreeSet::new(),
            layer_stack,
            resource_group: rg.name.clone(),
            drbd,
            uuid: ctx.uuid(),
        };
        Ok(d)
    }

    /// `PUT /v1/resource-definitions/{rd}`.
    pub fn modify_rsc_dfn(&self, rd: &str, req: &wire::ResourceDefinitionModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_RSC_DFN;
        let mut d = self.rsc_dfn(rd, OP)?.clone();
        d.props = props::apply(PropsObj::RscDfn, &d.props, &req.props, OP)?;
        // A quorum a user sets (or removes) is theirs: auto-quorum stays away.
        if req.props.override_props.contains_key(crate::drbd_auto::PROP_QUORUM) {
            d.props.insert(crate::drbd_auto::PROP_QUORUM_SET_BY.into(), "user".into());
        } else if req.props.delete_props.iter().any(|k| k == crate::drbd_auto::PROP_QUORUM) {
            d.props.remove(crate::drbd_auto::PROP_QUORUM_SET_BY);
        }
        if let Some(g) = req.resource_group.as_deref().filter(|g| !g.is_empty()) {
            d.resource_group = self.rsc_grp(g, OP)?.name.clone();
        }
        if let Some(stack) = &req.layer_stack {
            let stack = check_layer_stack(stack, OP)?;
            if stack != d.layer_stack && self.resources_of(&key(&d.name)).next().is_some() {
                return Err(OpError::new(
                    OP,
                    rc::FAIL_INVLD_LAYER_STACK,
                    format!("The layer stack of '{}' cannot change while it has resources.", d.name),
                )
                .correction("Delete the resources first."));
            }
            d.layer_stack = stack;
        }
        let new = check_drbd_options(req.drbd_port, None, req.drbd_peer_slots, None, OP)?;
        if new.port.is_some() {
            d.drbd.port = new.port;
        }
        if new.peer_slots.is_some() {
            d.drbd.peer_slots = new.peer_slots;
        }
        let mut out = Outcome::default();
        // LINSTOR answers the keys it set before the 'modified' entry.
        if let Some(e) = crate::props::set_entry(rc::MASK_RSC_DFN, &req.props) {
            out.reply(e);
        }
        out.reply(ApiCallRc::success(OP, rc::MODIFIED, format!("Resource definition '{}' modified.", d.name)).with_ref("RscDfn", &d.name));
        out.put(Object::RscDfn(d));
        Ok(out)
    }

    /// `DELETE /v1/resource-definitions/{rd}`: removes its resources and
    /// volume definitions with it.
    pub fn delete_rsc_dfn(&self, rd: &str) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_DEL | rc::MASK_RSC_DFN;
        // LINSTOR (CtrlRscDfnDeleteApiCallHandler): a definition that does
        // not exist is a warning, not an error, so the call answers 200.
        let Some(d) = self.rsc_dfns.get(&key(rd)) else {
            let mut out = Outcome::default();
            out.reply(ApiCallRc::warning(OP, rc::WARN_NOT_FOUND, format!("Resource definition: {rd} not found.")).with_ref("RscDfn", rd));
            return Ok(out);
        };
        let k = key(&d.name);
        if let Some(s) = self.snapshots_of(&k).next() {
            return Err(OpError::new(
                OP,
                rc::FAIL_EXISTS_SNAPSHOT_DFN,
                format!("Cannot delete resource definition '{}' because it has snapshots.", d.name),
            )
            .cause(format!("Snapshot '{}' (and maybe others) would lose its origin.", s.name))
            .correction("Delete its snapshots first."));
        }
        let mut out = Outcome::default();
        for r in self.resources_of(&k) {
            out.delete(ObjKey::Rsc(k.clone(), key(&r.node)));
        }
        for v in self.vlm_dfns_of(&k) {
            out.delete(ObjKey::VlmDfn(k.clone(), v.volume_number));
        }
        out.delete(ObjKey::RscDfn(k));
        out.reply(
            ApiCallRc::success(OP, rc::DELETED, format!("Resource definition '{}' deleted.", d.name))
                .with_details(format!("Resource definition '{}' UUID was: {}", d.name, d.uuid))
                .with_ref("RscDfn", &d.name),
        );
        Ok(out)
    }

    pub fn vlm_dfn(&self, rd: &str, nr: i64, op: i64) -> OpResult<&VolumeDefinition> {
        let d = self.rsc_dfn(rd, op)?;
        u32::try_from(nr).ok().and_then(|n| self.vlm_dfns.get(&(key(&d.name), n))).ok_or_else(|| {
            OpError::new(op, rc::FAIL_NOT_FOUND_VLM_DFN, format!("Volume definition {nr} of resource definition '{}' not found.", d.name))
                .obj_ref("RscDfn", &d.name)
                .obj_ref("VlmNr", nr.to_string())
        })
    }

    /// `POST /v1/resource-definitions/{rd}/volume-definitions`. Existing
    /// resources of the definition get the new volume.
    pub fn create_vlm_dfn(&self, rd: &str, req: &wire::VolumeDefinitionCreate, ctx: &mut Ctx) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_VLM_DFN;
        let d = self.rsc_dfn(rd, OP)?;
        let k = key(&d.name);
        let taken: BTreeSet<u32> = self.vlm_dfns_of(&k).map(|v| v.volume_number).collect();
        let minor = if req.drbd_minor_number.is_some() || self.uses_drbd(d) {
            Some(self.alloc_minor(req.drbd_minor_number, &mut Taken::default(), OP)?)
        } else {
            None
        };
        if req.volume_definition.props.contains_key(PROP_VD_PASSPHRASE) {
            return Err(passphrase_prop_refused(OP));
        }
        let mut checked = req.clone();
        checked.volume_definition.props = props::checked(PropsObj::VlmDfn, &req.volume_definition.props, OP)?;
        let mut vd = build_vlm_dfn(d, &taken, &checked, minor, ctx)?;
        // `passphrase` arrives sealed: the REST handler sealed the user's.
        if let Some(sealed) = &req.passphrase {
            vd.props.insert(PROP_VD_PASSPHRASE.to_string(), sealed.clone());
        }
        let nr = vd.volume_number;
        let mut out = Outcome::default();
        // LINSTOR (CtrlPropsHelper.fillProperties) names the keys it set first.
        if let Some(e) = crate::props::created_entry(rc::MASK_VLM_DFN, &req.volume_definition.props) {
            out.reply(e);
        }
        for r in self.resources_of(&k) {
            let mut r = r.clone();
            let vol = self.new_volume(d, &r, &vd, OP, ctx)?;
            r.volumes.insert(nr, vol);
            out.put(Object::Rsc(r));
        }
        out.reply(vd_created_reply(&vd));
        out.put(Object::VlmDfn(vd));
        Ok(out)
    }

    /// `PUT …/volume-definitions/{nr}`: size (grow; shrink only while no
    /// resource exists), props, flags.
    pub fn modify_vlm_dfn(&self, rd: &str, nr: i64, req: &wire::VolumeDefinitionModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_VLM_DFN;
        let mut vd = self.vlm_dfn(rd, nr, OP)?.clone();
        if let Some(size) = req.size_kib {
            let size = check_size(size, OP)?;
            if size < vd.size_kib && self.resources_of(&key(&vd.resource_definition)).next().is_some() {
                return Err(OpError::new(
                    OP,
                    rc::FAIL_INVLD_VLM_SIZE,
                    format!("Volume definition {nr} of '{}' cannot shrink from {} KiB to {size} KiB.", vd.resource_definition, vd.size_kib),
                )
                .cause("The resource definition has deployed resources; shrinking would cut off their data.")
                .correction("Grow instead, or delete the resources first."));
            }
            vd.size_kib = size;
        }
        if req.props.override_props.contains_key(PROP_VD_PASSPHRASE) || req.props.delete_props.iter().any(|k| k == PROP_VD_PASSPHRASE) {
            return Err(passphrase_prop_refused(OP));
        }
        vd.props = props::apply(PropsObj::VlmDfn, &vd.props, &req.props, OP)?;
        vd.flags = modify_flags(&vd.flags, &req.flags, VD_FLAGS, OP)?;
        let mut out = Outcome::default();
        // LINSTOR answers the keys it set before the 'modified' entry.
        if let Some(e) = crate::props::set_entry(rc::MASK_VLM_DFN, &req.props) {
            out.reply(e);
        }
        out.reply(vd_modified(OP, &vd.resource_definition, nr));
        out.put(Object::VlmDfn(vd));
        Ok(out)
    }

    /// `PUT …/volume-definitions/{nr}/encryption-passphrase`: `sealed` (the
    /// user's passphrase sealed with the master key) becomes the
    /// definition's `Encryption/Passphrase` (LINSTOR's property: later
    /// volumes start with it) and the passphrase of every encrypted volume
    /// of it. A volume keeps the passphrases it had ([`Volume::luks_previous`]):
    /// its satellite changes the LUKS key from whichever of them opens
    /// the device.
    pub fn modify_vlm_dfn_passphrase(&self, rd: &str, nr: i64, sealed: &str) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_VLM_DFN;
        let mut vd = self.vlm_dfn(rd, nr, OP)?.clone();
        vd.props.insert(PROP_VD_PASSPHRASE.to_string(), sealed.to_string());
        let mut out = Outcome::default();
        let mut changed = false;
        for r in self.resources_of(&key(&vd.resource_definition)) {
            let mut r = r.clone();
            let Some(v) = r.volumes.get_mut(&vd.volume_number) else { continue };
            let Some(old) = v.luks_secret.replace(sealed.to_string()) else { continue };
            if !v.luks_previous.contains(&old) {
                v.luks_previous.insert(0, old);
            }
            changed = true;
            out.put(Object::Rsc(r));
        }
        if !changed {
            out.reply(ApiCallRc::warning(OP, rc::WARN_NOT_FOUND, "No resources have any luks layer, no passphrase has been changed."));
        }
        out.reply(vd_modified(OP, &vd.resource_definition, nr));
        out.put(Object::VlmDfn(vd));
        Ok(out)
    }

    /// `DELETE …/volume-definitions/{nr}`: the volume goes from every
    /// resource too.
    pub fn delete_vlm_dfn(&self, rd: &str, nr: i64) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_DEL | rc::MASK_VLM_DFN;
        let vd = self.vlm_dfn(rd, nr, OP)?;
        let k = key(&vd.resource_definition);
        // LINSTOR's `StorDriver/Zfs/DeleteStrategy` 'Delete'.
        if let Some(d) = self.rsc_dfns.get(&k) {
            self.check_zfs_delete(d, OP)?;
        }
        let mut out = Outcome::default();
        for r in self.resources_of(&k) {
            let mut r = r.clone();
            r.volumes.remove(&vd.volume_number);
            out.put(Object::Rsc(r));
        }
        out.delete(ObjKey::VlmDfn(k, vd.volume_number));
        out.reply(
            ApiCallRc::success(
                OP,
                rc::DELETED,
                format!("Volume definition with number '{nr}' of resource definition '{}' deleted.", vd.resource_definition),
            )
            .with_ref("RscDfn", &vd.resource_definition)
            .with_ref("VlmNr", nr.to_string()),
        );
        Ok(out)
    }
}

/// Validates a new volume definition of `d` (whose volume numbers in
/// `taken` are in use) and builds it.
pub(crate) fn build_vlm_dfn(
    d: &ResourceDefinition,
    taken: &BTreeSet<u32>,
    req: &wire::VolumeDefinitionCreate,
    minor: Option<u32>,
    ctx: &mut Ctx,
) -> OpResult<VolumeDefinition> {
    const OP: i64 = rc::MASK_CRT | rc::MASK_VLM_DFN;
    let v = &req.volume_definition;
    let nr = match v.volume_number {
        Some(n) if (0..=MAX_VLM_NR).contains(&n) => n as u32,
        Some(n) => {
            return Err(OpError::new(OP, rc::FAIL_INVLD_VLM_NR, format!("The volume number {n} is invalid."))
                .correction(format!("Use a volume number from 0 to {MAX_VLM_NR}.")));
        }
        None => lowest_free(taken.iter().copied())
            .ok_or_else(|| OpError::new(OP, rc::FAIL_POOL_EXHAUSTED_VLM_NR, "No free volume number left."))?,
    };
    if taken.contains(&nr) {
        return Err(OpError::new(
            OP,
            rc::FAIL_EXISTS_VLM_DFN,
            format!("Volume definition {nr} of resource definition '{}' already exists.", d.name),
        )
        .correction("Use another volume number.")
        .obj_ref("RscDfn", &d.name)
        .obj_ref("VlmNr", nr.to_string()));
    }
    let size = v
        .size_kib
        .ok_or_else(|| OpError::new(OP, rc::FAIL_INVLD_VLM_SIZE, "The volume definition has no size.").correction("Give size_kib."))?;
    let size = check_size(size, OP)?;
    props::check_all(&v.props, OP)?;
    let mut props = v.props.clone();
    if !props.contains_key(PROP_DRBD_CURRENT_GI) {
        props.insert(PROP_DRBD_CURRENT_GI.into(), new_day0_gi(ctx));
    }
    Ok(VolumeDefinition {
        resource_definition: d.name.clone(),
        volume_number: nr,
        size_kib: size,
        props,
        flags: check_flags(&v.flags, VD_FLAGS, OP)?,
        drbd_minor: minor,
        uuid: ctx.uuid(),
    })
}

fn check_drbd_options(
    port: Option<i64>,
    secret: Option<String>,
    peer_slots: Option<i64>,
    transport: Option<String>,
    op: i64,
) -> OpResult<DrbdRscDfnOptions> {
    let port = match port {
        None => None,
        Some(p) if (1..=65535).contains(&p) => Some(p as u16),
        Some(p) => {
            return Err(OpError::new(op, rc::FAIL_INVLD_RSC_PORT, format!("The DRBD port {p} is invalid."))
                .correction("Use a TCP port from 1 to 65535."));
        }
    };
    let peer_slots = match peer_slots {
        None => None,
        Some(p) if (1..=31).contains(&p) => Some(p as u8),
        Some(p) => {
            return Err(OpError::new(op, rc::FAIL_INVLD_REQUEST, format!("The peer slot count {p} is invalid."))
                .correction("Use a number from 1 to 31."));
        }
    };
    let transport_type = match transport.filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => match t.to_ascii_uppercase().as_str() {
            u @ ("IP" | "RDMA" | "RD_MA" | "ROCE") => Some(u.to_string()),
            _ => {
                return Err(OpError::new(op, rc::FAIL_INVLD_TRANSPORT_TYPE, format!("The transport type '{t}' is invalid."))
                    .correction("Use IP, RDMA or ROCE."));
            }
        },
    };
    let secret = secret.filter(|s| !s.is_empty());
    if let Some(s) = &secret
        && (s.len() > 64 || s.chars().any(|c| c.is_control() || c == '"'))
    {
        return Err(OpError::new(op, rc::FAIL_INVLD_REQUEST, "The DRBD shared secret is invalid.")
            .correction("Use at most 64 printable characters without quotes."));
    }
    Ok(DrbdRscDfnOptions { port, secret, peer_slots, transport_type, forgetting: BTreeMap::new(), freed_ports: BTreeMap::new() })
}
