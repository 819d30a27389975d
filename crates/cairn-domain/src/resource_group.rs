//! Resource groups (templates with an auto-select filter) and volume groups.

use std::collections::BTreeSet;

use cairn_api::rc::{self, ApiCallRc};
use cairn_api::resource_group::{self as wire, AutoSelectFilter};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ObjKey, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::{self, NameKind, key};
use crate::resource_definition::check_layer_stack;
use crate::storage_pool::ProviderKind;
use crate::whitelist::PropsObj;
use crate::{Ctx, DEFAULT_RSC_GRP, Props, props};

/// Largest replica count accepted (DRBD 9 connects at most 32 peers).
pub const MAX_PLACE_COUNT: i64 = 32;
/// Largest volume number.
pub const MAX_VLM_NR: i64 = 65534;

/// A resource group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceGroup {
    pub name: String,
    pub description: Option<String>,
    pub props: Props,
    pub select_filter: AutoSelectFilter,
    pub peer_slots: Option<i64>,
    pub uuid: String,
}

/// A volume group: a volume template of a resource group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeGroup {
    pub resource_group: String,
    pub volume_number: u32,
    pub props: Props,
    pub flags: BTreeSet<String>,
    pub uuid: String,
}

const CRT: i64 = rc::MASK_CRT | rc::MASK_RSC_GRP;
const MOD: i64 = rc::MASK_MOD | rc::MASK_RSC_GRP;
const DEL: i64 = rc::MASK_DEL | rc::MASK_RSC_GRP;

impl ResourceGroup {
    /// `DfltRscGrp`, as the initial database has it: place count 2.
    pub fn default_group(uuid: String) -> ResourceGroup {
        ResourceGroup {
            name: DEFAULT_RSC_GRP.to_string(),
            description: None,
            props: Props::new(),
            select_filter: AutoSelectFilter { place_count: Some(2), ..Default::default() },
            peer_slots: None,
            uuid,
        }
    }

    pub fn to_api(&self) -> wire::ResourceGroup {
        // LINSTOR's Json.apiToResourceGroup shows `storage_pool` beside the
        // list when the list names exactly one pool.
        let mut select_filter = self.select_filter.clone();
        if let Some([only]) = select_filter.storage_pool_list.as_deref() {
            select_filter.storage_pool = Some(only.clone());
        }
        wire::ResourceGroup {
            name: self.name.clone(),
            description: self.description.clone(),
            props: self.props.clone(),
            select_filter,
            uuid: Some(self.uuid.clone()),
            peer_slots: self.peer_slots,
        }
    }
}

impl VolumeGroup {
    pub fn to_api(&self) -> wire::VolumeGroup {
        wire::VolumeGroup {
            volume_number: Some(i64::from(self.volume_number)),
            props: self.props.clone(),
            uuid: Some(self.uuid.clone()),
            flags: self.flags.iter().cloned().collect(),
        }
    }
}

fn non_empty(v: Option<Vec<String>>) -> Option<Vec<String>> {
    v.filter(|l| !l.is_empty())
}

/// Validates a filter and brings it to its stored form: `storage_pool` is
/// folded into `storage_pool_list`, empty lists mean "none".
pub fn normalize_filter(f: &AutoSelectFilter, op: i64) -> OpResult<AutoSelectFilter> {
    let mut f = f.clone();
    for (what, v) in [("place_count", f.place_count), ("additional_place_count", f.additional_place_count)] {
        if let Some(n) = v {
            let min = if what == "place_count" { 1 } else { 0 };
            if n < min || n > MAX_PLACE_COUNT {
                return Err(OpError::new(op, rc::FAIL_INVLD_PLACE_COUNT, format!("The {what} {n} is invalid."))
                    .correction(format!("Use a number from {min} to {MAX_PLACE_COUNT}.")));
            }
        }
    }
    if let Some(sp) = f.storage_pool.take().filter(|s| !s.is_empty())
        && f.storage_pool_list.as_ref().is_none_or(|l| l.is_empty())
    {
        f.storage_pool_list = Some(vec![sp]);
    }
    f.storage_pool_list = non_empty(f.storage_pool_list);
    f.storage_pool_diskless_list = non_empty(f.storage_pool_diskless_list);
    f.node_name_list = non_empty(f.node_name_list);
    f.not_place_with_rsc = non_empty(f.not_place_with_rsc);
    f.replicas_on_same = non_empty(f.replicas_on_same);
    f.replicas_on_different = non_empty(f.replicas_on_different);
    f.provider_list = non_empty(f.provider_list);
    f.layer_stack = non_empty(f.layer_stack);
    f.not_place_with_rsc_regex = f.not_place_with_rsc_regex.filter(|s| !s.is_empty());
    f.diskless_type = f.diskless_type.filter(|s| !s.is_empty());
    f.x_replicas_on_different_map = f.x_replicas_on_different_map.filter(|m| !m.is_empty());
    for sp in f.storage_pool_list.iter().chain(f.storage_pool_diskless_list.iter()).flatten() {
        name::check(NameKind::StoragePool, sp, op)?;
    }
    for n in f.node_name_list.iter().flatten() {
        name::check(NameKind::Node, n, op)?;
    }
    for r in f.not_place_with_rsc.iter().flatten() {
        name::check(NameKind::ResourceDefinition, r, op)?;
    }
    if let Some(list) = &mut f.provider_list {
        for p in list.iter_mut() {
            *p = ProviderKind::parse(p)
                .ok_or_else(|| OpError::new(op, rc::FAIL_INVLD_PROVIDER, format!("The provider kind '{p}' is invalid.")))?
                .as_str()
                .to_string();
        }
    }
    if let Some(stack) = &f.layer_stack {
        f.layer_stack = Some(check_layer_stack(stack, op)?);
    }
    if let Some(t) = &f.diskless_type {
        let u = t.to_ascii_uppercase();
        if !matches!(u.as_str(), "DRBD_DISKLESS" | "NVME_INITIATOR" | "EBS_INITIATOR") {
            return Err(OpError::new(op, rc::FAIL_INVLD_REQUEST, format!("The diskless type '{t}' is invalid."))
                .correction("Use DRBD_DISKLESS, NVME_INITIATOR or EBS_INITIATOR."));
        }
        f.diskless_type = Some(u);
    }
    if let Some(o) = f.overprovision
        && (!o.is_finite() || o < 0.0)
    {
        return Err(OpError::new(op, rc::FAIL_INVLD_REQUEST, format!("The overprovision ratio {o} is invalid.")));
    }
    Ok(f)
}

/// Merges the fields a modify call carries into the stored filter.
pub fn merge_filter(cur: &AutoSelectFilter, m: &AutoSelectFilter) -> AutoSelectFilter {
    macro_rules! pick {
        ($($f:ident),*) => { AutoSelectFilter { $($f: m.$f.clone().or_else(|| cur.$f.clone()),)* } };
    }
    let mut merged = pick!(
        place_count,
        additional_place_count,
        node_name_list,
        storage_pool,
        storage_pool_list,
        storage_pool_diskless_list,
        not_place_with_rsc,
        not_place_with_rsc_regex,
        replicas_on_same,
        replicas_on_different,
        x_replicas_on_different_map,
        layer_stack,
        provider_list,
        diskless_on_remaining,
        diskless_type,
        overprovision
    );
    // An explicitly empty list clears the stored one.
    macro_rules! clear_if_empty {
        ($($f:ident),*) => { $(if m.$f.as_ref().is_some_and(|l| l.is_empty()) { merged.$f = None; })* };
    }
    clear_if_empty!(
        node_name_list,
        storage_pool_list,
        storage_pool_diskless_list,
        not_place_with_rsc,
        replicas_on_same,
        replicas_on_different,
        layer_stack,
        provider_list
    );
    if m.storage_pool.is_some() && m.storage_pool_list.is_none() {
        merged.storage_pool_list = None;
    }
    merged
}

fn rg_not_found(op: i64, rg: &str) -> OpError {
    OpError::new(op, rc::FAIL_NOT_FOUND_RSC_GRP, format!("Resource group '{rg}' not found."))
        .correction("Create the resource group first or use an existing one.")
        .obj_ref("ResourceGroup", rg)
}

fn check_peer_slots(p: Option<i64>, op: i64) -> OpResult<()> {
    match p {
        Some(n) if !(1..=31).contains(&n) => Err(OpError::new(op, rc::FAIL_INVLD_REQUEST, format!("The peer slot count {n} is invalid."))
            .correction("Use a number from 1 to 31.")),
        _ => Ok(()),
    }
}

fn check_vlm_nr(n: i64, op: i64) -> OpResult<u32> {
    if (0..=MAX_VLM_NR).contains(&n) {
        Ok(n as u32)
    } else {
        Err(OpError::new(op, rc::FAIL_INVLD_VLM_NR, format!("The volume number {n} is invalid."))
            .correction(format!("Use a volume number from 0 to {MAX_VLM_NR}.")))
    }
}

/// Validates volume-group / volume-definition flags against the allowed set.
pub(crate) fn check_flags(flags: &[String], allowed: &[&str], op: i64) -> OpResult<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for f in flags {
        let u = f.trim().to_ascii_uppercase();
        if !allowed.contains(&u.as_str()) {
            return Err(OpError::new(op, rc::FAIL_INVLD_REQUEST, format!("The flag '{f}' is not valid here."))
                .correction(format!("Valid flags: {}.", allowed.join(", "))));
        }
        out.insert(u);
    }
    Ok(out)
}

/// Applies `["GROSS_SIZE", "-GROSS_SIZE"]`-style flag changes.
pub(crate) fn modify_flags(cur: &BTreeSet<String>, changes: &[String], allowed: &[&str], op: i64) -> OpResult<BTreeSet<String>> {
    let mut out = cur.clone();
    for c in changes {
        let (remove, f) = match c.strip_prefix('-') {
            Some(f) => (true, f),
            None => (false, c.as_str()),
        };
        let f = check_flags(&[f.to_string()], allowed, op)?.into_iter().next().unwrap_or_default();
        if remove {
            out.remove(&f);
        } else {
            out.insert(f);
        }
    }
    Ok(out)
}

pub(crate) fn lowest_free(used: impl Iterator<Item = u32>) -> Option<u32> {
    let used: BTreeSet<u32> = used.collect();
    (0..=MAX_VLM_NR as u32).find(|n| !used.contains(n))
}

impl Cluster {
    pub fn rsc_grp(&self, rg: &str, op: i64) -> OpResult<&ResourceGroup> {
        self.rsc_grps.get(&key(rg)).ok_or_else(|| rg_not_found(op, rg))
    }

    /// `POST /v1/resource-groups`.
    pub fn create_rsc_grp(&self, req: &wire::ResourceGroup, ctx: &mut Ctx) -> OpResult<Outcome> {
        name::check(NameKind::ResourceGroup, &req.name, CRT)?;
        if let Some(g) = self.rsc_grps.get(&key(&req.name)) {
            return Err(OpError::new(CRT, rc::FAIL_EXISTS_RSC_GRP, format!("A resource group with the name '{}' already exists.", g.name))
                .correction("Use another name or modify the existing group.")
                .obj_ref("ResourceGroup", &g.name));
        }
        let rg_props = props::checked(PropsObj::RscDfn, &req.props, CRT)?;
        check_peer_slots(req.peer_slots, CRT)?;
        let g = ResourceGroup {
            name: req.name.clone(),
            description: req.description.clone().filter(|d| !d.is_empty()),
            props: rg_props,
            select_filter: normalize_filter(&req.select_filter, CRT)?,
            peer_slots: req.peer_slots,
            uuid: ctx.uuid(),
        };
        let mut out = Outcome::default();
        // LINSTOR (CtrlPropsHelper.fillProperties) names the keys it set first.
        if let Some(e) = crate::props::created_entry(rc::MASK_RSC_GRP, &req.props) {
            out.reply(e);
        }
        out.reply(
            ApiCallRc::success(CRT, rc::CREATED, format!("New resource group '{}' created.", g.name))
                .with_details(format!("Resource group '{}' UUID is: {}", g.name, g.uuid))
                .with_ref("ResourceGroup", &g.name),
        );
        out.put(Object::RscGrp(g));
        Ok(out)
    }

    /// `PUT /v1/resource-groups/{rg}`.
    pub fn modify_rsc_grp(&self, rg: &str, req: &wire::ResourceGroupModify) -> OpResult<Outcome> {
        let mut g = self.rsc_grp(rg, MOD)?.clone();
        if let Some(d) = &req.description {
            g.description = Some(d.clone()).filter(|d| !d.is_empty());
        }
        g.props = props::apply(PropsObj::RscDfn, &g.props, &req.props, MOD)?;
        if let Some(m) = &req.select_filter {
            g.select_filter = normalize_filter(&merge_filter(&g.select_filter, m), MOD)?;
        }
        if req.peer_slots.is_some() {
            check_peer_slots(req.peer_slots, MOD)?;
            g.peer_slots = req.peer_slots;
        }
        let mut out = Outcome::default();
        // LINSTOR answers the keys it set before the 'modified' entry.
        if let Some(e) = crate::props::set_entry(rc::MASK_RSC_GRP, &req.props) {
            out.reply(e);
        }
        out.reply(
            ApiCallRc::success(MOD, rc::MODIFIED, format!("Resource group '{}' modified.", g.name)).with_ref("ResourceGroup", &g.name),
        );
        out.put(Object::RscGrp(g));
        Ok(out)
    }

    /// `DELETE /v1/resource-groups/{rg}`: refused while resource
    /// definitions use it, and always for `DfltRscGrp`.
    pub fn delete_rsc_grp(&self, rg: &str) -> OpResult<Outcome> {
        let g = self.rsc_grp(rg, DEL)?;
        let k = key(&g.name);
        if k == key(DEFAULT_RSC_GRP) {
            return Err(OpError::new(DEL, rc::FAIL_IN_USE, format!("The default resource group '{}' cannot be deleted.", g.name))
                .obj_ref("ResourceGroup", &g.name));
        }
        let rds: Vec<&str> = self.rsc_dfns.values().filter(|d| key(&d.resource_group) == k).map(|d| d.name.as_str()).collect();
        if !rds.is_empty() {
            return Err(OpError::new(DEL, rc::FAIL_EXISTS_RSC_DFN, format!("Resource group '{}' still has resource definitions.", g.name))
                .cause(format!("Resource definitions: {}", rds.join(", ")))
                .correction("Delete those resource definitions or move them to another resource group first.")
                .obj_ref("ResourceGroup", &g.name));
        }
        let mut out = Outcome::default();
        for v in self.vlm_grps_of(&k) {
            out.delete(ObjKey::VlmGrp(k.clone(), v.volume_number));
        }
        out.delete(ObjKey::RscGrp(k));
        out.reply(ApiCallRc::success(DEL, rc::DELETED, format!("Resource group '{}' deleted.", g.name)).with_ref("ResourceGroup", &g.name));
        Ok(out)
    }

    pub fn vlm_grp(&self, rg: &str, nr: i64, op: i64) -> OpResult<&VolumeGroup> {
        let g = self.rsc_grp(rg, op)?;
        u32::try_from(nr).ok().and_then(|n| self.vlm_grps.get(&(key(&g.name), n))).ok_or_else(|| {
            OpError::new(op, rc::FAIL_NOT_FOUND_VLM_GRP, format!("Volume group {nr} of resource group '{}' not found.", g.name))
        })
    }

    /// `POST /v1/resource-groups/{rg}/volume-groups`.
    pub fn create_vlm_grp(&self, rg: &str, req: &wire::VolumeGroup, ctx: &mut Ctx) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_VLM_GRP;
        let g = self.rsc_grp(rg, OP)?;
        let k = key(&g.name);
        let nr = match req.volume_number {
            Some(n) => check_vlm_nr(n, OP)?,
            None => lowest_free(self.vlm_grps_of(&k).map(|v| v.volume_number))
                .ok_or_else(|| OpError::new(OP, rc::FAIL_POOL_EXHAUSTED_VLM_NR, "No free volume number left."))?,
        };
        if self.vlm_grps.contains_key(&(k.clone(), nr)) {
            return Err(OpError::new(
                OP,
                rc::FAIL_EXISTS_VLM_GRP,
                format!("Volume group {nr} of resource group '{}' already exists.", g.name),
            ));
        }
        let vg_props = props::checked(PropsObj::VlmDfn, &req.props, OP)?;
        let v = VolumeGroup {
            resource_group: g.name.clone(),
            volume_number: nr,
            props: vg_props,
            flags: check_flags(&req.flags, &["GROSS_SIZE"], OP)?,
            uuid: ctx.uuid(),
        };
        let mut out = Outcome::default();
        // LINSTOR (CtrlPropsHelper.fillProperties) names the keys it set first.
        if let Some(e) = crate::props::created_entry(rc::MASK_VLM_GRP, &req.props) {
            out.reply(e);
        }
        out.reply(
            ApiCallRc::success(OP, rc::CREATED, format!("New volume group {nr} of resource group '{}' created.", g.name))
                .with_ref("ResourceGroup", &g.name)
                .with_ref("VlmNr", nr.to_string()),
        );
        out.put(Object::VlmGrp(v));
        Ok(out)
    }

    /// `PUT /v1/resource-groups/{rg}/volume-groups/{nr}`.
    pub fn modify_vlm_grp(&self, rg: &str, nr: i64, req: &wire::VolumeGroupModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_VLM_GRP;
        let mut v = self.vlm_grp(rg, nr, OP)?.clone();
        v.props = props::apply(PropsObj::VlmDfn, &v.props, &req.props, OP)?;
        v.flags = modify_flags(&v.flags, &req.flags, &["GROSS_SIZE"], OP)?;
        let mut out = Outcome::default();
        // LINSTOR answers the keys it set before the 'modified' entry.
        if let Some(e) = crate::props::set_entry(rc::MASK_VLM_GRP, &req.props) {
            out.reply(e);
        }
        out.reply(ApiCallRc::success(OP, rc::MODIFIED, format!("Volume group {nr} of resource group '{}' modified.", v.resource_group)));
        out.put(Object::VlmGrp(v));
        Ok(out)
    }

    /// `DELETE /v1/resource-groups/{rg}/volume-groups/{nr}`.
    pub fn delete_vlm_grp(&self, rg: &str, nr: i64) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_DEL | rc::MASK_VLM_GRP;
        let v = self.vlm_grp(rg, nr, OP)?;
        let mut out = Outcome::default();
        out.delete(ObjKey::VlmGrp(key(&v.resource_group), v.volume_number));
        out.reply(ApiCallRc::success(OP, rc::DELETED, format!("Volume group {nr} of resource group '{}' deleted.", v.resource_group)));
        Ok(out)
    }
}
