//! Resource definition clone (`POST /v1/resource-definitions/{rd}/clone`):
//! a new definition with the source's volume definitions and one resource
//! on every node where the source has a diskful one, in the same storage
//! pool, each volume starting as a copy of the source's volume on that
//! node. While the satellites copy, the definition carries `CLONING`; the
//! controller clears it (or sets `FAILED`) when they answered.

use std::collections::BTreeSet;

use cairn_api::rc::{self, ApiCallRc};
use cairn_api::resource::{Resource as WireRsc, ResourceCreate};
use cairn_api::resource_definition::{self as wire, LayerData, ResourceDefinitionCreate};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::key;
use crate::numbers::Taken;
use crate::resource::{PROP_STOR_POOL_NAME, Resource};
use crate::resource_definition::{PROP_DRBD_CURRENT_GI, VolumeDefinition, new_day0_gi, rd_created_reply, vd_created_reply};
use crate::storage_pool::ProviderKind;
use crate::{Ctx, props};

/// Definition flag while the satellites copy (LINSTOR's `CLONING`).
pub const FLAG_CLONING: &str = "CLONING";
/// Definition flag when a copy failed (LINSTOR's `FAILED`): the clone is
/// not usable; delete it.
pub const FLAG_FAILED: &str = "FAILED";
/// Definition property naming the source (LINSTOR's `cloned-from`).
pub const PROP_CLONED_FROM: &str = "cloned-from";
/// Definition property set when ZFS clones were asked for (LINSTOR's
/// `use-zfs-clone`).
pub const PROP_USE_ZFS_CLONE: &str = "use-zfs-clone";
/// Group or controller property choosing ZFS clones by default
/// (LINSTOR's `UseZfsClone`).
pub const PROP_USE_ZFS_CLONE_DEFAULT: &str = "UseZfsClone";
/// Why a clone failed, on the failed definition.
pub const PROP_CLONE_FAILURE: &str = "Cairn/CloneFailure";

/// Where a cloned volume's data comes from: the volume of `resource` with
/// the given UUID, on the same node and in the same pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneSource {
    pub resource: String,
    pub volume_uuid: String,
    /// ZFS: `zfs clone` of a snapshot instead of send/receive.
    #[serde(default)]
    pub zfs_clone: bool,
}

/// The state `GET …/clone/{clone}` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneStatus {
    Cloning,
    Complete,
    Failed,
}

impl CloneStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CloneStatus::Cloning => wire::CLONE_CLONING,
            CloneStatus::Complete => wire::CLONE_COMPLETE,
            CloneStatus::Failed => wire::CLONE_FAILED,
        }
    }
}

/// Providers whose volumes a satellite can copy: reflink or full copies
/// of files, thin LVM snapshots, thick LVM copies (`dd` from a snapshot),
/// ZFS clones or send/receive.
pub fn clone_supported(kind: ProviderKind) -> bool {
    matches!(
        kind,
        ProviderKind::File | ProviderKind::FileThin | ProviderKind::Lvm | ProviderKind::LvmThin | ProviderKind::Zfs | ProviderKind::ZfsThin
    )
}

/// A boolean property as LINSTOR reads one: "true" or "yes", any case.
pub(crate) fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes"))
}

impl Cluster {
    /// `POST /v1/resource-definitions/{src}/clone`.
    /// `drbd_synced` tells whether a DRBD replica's satellite reports every
    /// volume UpToDate, or cannot know (config-only DRBD): a copy of a
    /// replica that is behind would be behind too.
    pub fn clone_rsc_dfn(
        &self,
        src: &str,
        req: &wire::ResourceDefinitionCloneRequest,
        drbd_synced: &dyn Fn(&Resource) -> bool,
        ctx: &mut Ctx,
    ) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_RSC_DFN;
        let name = req.name.clone().unwrap_or_default();
        let external = req.external_name.clone().filter(|e| !e.is_empty());
        if name.is_empty() && external.is_none() {
            return Err(OpError::new(OP, rc::FAIL_INVLD_RSC_NAME, "No name for the cloned resource was specified.")
                .correction("Give 'name' (or 'external_name') in the clone request."));
        }
        let s = self.rsc_dfn(src, OP)?;
        if s.flags.contains(FLAG_CLONING) || s.flags.contains(FLAG_FAILED) {
            return Err(OpError::new(
                OP,
                rc::FAIL_INVLD_RSC_STATE,
                format!("Resource definition '{}' is an incomplete clone itself and cannot be cloned.", s.name),
            )
            .correction("Wait until its clone status is COMPLETE."));
        }
        if req.volume_passphrases.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(OpError::new(OP, rc::FAIL_INVLD_REQUEST, "Cairn clones encrypted volumes with the source's keys only.")
                .cause("A copy of an encrypted volume holds data sealed with the source volume's key; new passphrases cannot open it.")
                .correction("Leave out volume_passphrases."));
        }
        let src_key = key(&s.name);
        let sources: Vec<&Resource> = self.resources_of(&src_key).filter(|r| !r.is_diskless() && !r.flags.contains("INACTIVE")).collect();
        for r in &sources {
            let skip = r.props.get("DrbdOptions/SkipDisk").or_else(|| s.props.get("DrbdOptions/SkipDisk"));
            if truthy(skip) {
                return Err(OpError::new(
                    OP,
                    rc::FAIL_INVLD_RSC_STATE,
                    format!("Resource {} on node {} has skip-disk set, unable to clone.", s.name, r.node),
                ));
            }
            if r.has_drbd() && !drbd_synced(r) {
                return Err(OpError::new(
                    OP,
                    rc::FAIL_NOT_ALL_UPTODATE,
                    "Cannot clone resource-definition, because we have a non-UpToDate DRBD device.",
                )
                .cause(format!("The DRBD replica of '{}' on node '{}' is not UpToDate.", s.name, r.node))
                .correction("Wait until the resource is synced (GET …/sync-status)."));
            }
            for v in r.volumes.values() {
                if !clone_supported(v.provider_kind) {
                    return Err(OpError::new(OP, rc::FAIL_INVLD_PROVIDER, "Clone source contains unsupported storage pools")
                        .cause(format!(
                            "Volume {} of '{}' on node '{}' is in the {} pool '{}'.",
                            v.volume_number,
                            s.name,
                            r.node,
                            v.provider_kind.as_str(),
                            v.storage_pool
                        ))
                        .correction("Clones need FILE, FILE_THIN, LVM, LVM_THIN, ZFS or ZFS_THIN pools."));
                }
            }
        }

        // The new definition: the source's properties, the request's
        // changes, its layer stack unless the request names one.
        let mut rd_props = s.props.clone();
        // The source's own bookkeeping stays behind: the clone's DRBD
        // initial-sync source is chosen among its own replicas.
        let own = [
            PROP_CLONED_FROM,
            PROP_USE_ZFS_CLONE,
            PROP_CLONE_FAILURE,
            crate::drbd_auto::PROP_PRIMARY_SET_ON,
            crate::drbd_auto::PROP_INITIAL_SYNC_RSC,
        ];
        rd_props.retain(|k, _| !own.contains(&k.as_str()));
        let modify = cairn_api::PropsModify {
            override_props: req.override_props.clone(),
            delete_props: req.delete_props.clone(),
            delete_namespaces: req.delete_namespaces.clone(),
        };
        let mut rd_props = props::apply(crate::whitelist::PropsObj::RscDfn, &rd_props, &modify, OP)?;
        rd_props.insert(PROP_CLONED_FROM.into(), s.name.clone());
        let rg_name = req.resource_group.clone().filter(|g| !g.is_empty()).unwrap_or_else(|| s.resource_group.clone());
        let rg_props = self.rsc_grps.get(&key(&rg_name)).map(|g| &g.props);
        let zfs_clone = req.use_zfs_clone.unwrap_or_else(|| {
            truthy(rg_props.and_then(|p| p.get(PROP_USE_ZFS_CLONE_DEFAULT)).or_else(|| self.ctrl_props.get(PROP_USE_ZFS_CLONE_DEFAULT)))
        });
        if zfs_clone {
            rd_props.insert(PROP_USE_ZFS_CLONE.into(), "true".into());
        }
        let layer_list: Option<Vec<String>> = req.layer_list.clone().filter(|l| !l.is_empty());
        let stack = layer_list.clone().unwrap_or_else(|| s.layer_stack.clone());
        let create = ResourceDefinitionCreate {
            drbd_peer_slots: s.drbd.peer_slots.map(i64::from),
            drbd_transport_type: s.drbd.transport_type.clone(),
            resource_definition: wire::ResourceDefinition {
                name: name.clone(),
                external_name: external,
                props: rd_props,
                layer_data: stack.iter().map(|l| LayerData { layer_type: l.clone(), data: None }).collect(),
                resource_group_name: Some(rg_name),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut d = self.build_rsc_dfn(&create, ctx)?;
        if !sources.is_empty() {
            d.flags.insert(FLAG_CLONING.into());
        }

        let mut out = Outcome::default();
        let mut taken = Taken::default();
        out.reply(rd_created_reply(&d));
        // Volume definitions: the source's sizes, flags and properties;
        // new DRBD minors and day-0 generation ids.
        let mut vds: Vec<VolumeDefinition> = Vec::new();
        // The new volumes take DRBD minors when its resources get DRBD:
        // the requested stack, else the source replicas' stacks.
        let uses_drbd = match &layer_list {
            Some(l) => l.iter().any(|x| x.eq_ignore_ascii_case("DRBD")),
            None if !sources.is_empty() => sources.iter().any(|r| r.has_drbd()),
            None => self.rd_uses_drbd(&d),
        };
        for vd in self.vlm_dfns_of(&src_key) {
            let mut vprops = vd.props.clone();
            vprops.insert(PROP_DRBD_CURRENT_GI.into(), new_day0_gi(ctx));
            let minor = if uses_drbd { Some(self.alloc_minor(None, &mut taken, OP)?) } else { None };
            let mut flags: BTreeSet<String> = vd.flags.clone();
            flags.remove(crate::resource_definition::FLAG_DRBD_INITIALIZED);
            let v = VolumeDefinition {
                resource_definition: d.name.clone(),
                volume_number: vd.volume_number,
                size_kib: vd.size_kib,
                props: vprops,
                flags,
                drbd_minor: minor,
                uuid: ctx.uuid(),
            };
            out.reply(vd_created_reply(&v));
            vds.push(v);
        }
        let vd_refs: Vec<&VolumeDefinition> = vds.iter().collect();
        let mut rscs: Vec<Resource> = Vec::new();
        for r in &sources {
            let pool = r.volumes.values().next().map(|v| v.storage_pool.clone()).unwrap_or_default();
            let mut rprops = r.props.clone();
            rprops.insert(PROP_STOR_POOL_NAME.into(), pool);
            let create = ResourceCreate {
                resource: WireRsc { node_name: r.node.clone(), props: rprops, ..Default::default() },
                layer_list: Some(stack.clone()),
                ..Default::default()
            };
            let stack = layer_list.clone().unwrap_or_else(|| r.layer_stack.clone());
            let luks_src = r.layer_stack.iter().any(|l| l == "LUKS");
            let luks_dst = stack.iter().any(|l| l.eq_ignore_ascii_case("LUKS"));
            if luks_src != luks_dst {
                return Err(OpError::new(
                    OP,
                    rc::FAIL_INVLD_LAYER_STACK,
                    format!("The clone's layers ({}) and the source's ({}) differ in LUKS.", stack.join(","), r.layer_stack.join(",")),
                )
                .cause("A copy of an encrypted volume is encrypted, a copy of a plain one is not.")
                .correction("Keep LUKS in the layer list exactly when the source has it."));
            }
            // ZFS copies carry no marker for DRBD's fresh metadata yet.
            if stack.iter().any(|l| l.eq_ignore_ascii_case("DRBD"))
                && let Some(v) = r.volumes.values().find(|v| matches!(v.provider_kind, ProviderKind::Zfs | ProviderKind::ZfsThin))
            {
                return Err(OpError::new(OP, rc::FAIL_INVLD_PROVIDER, "Clone source contains unsupported storage pools")
                    .cause(format!(
                        "Volume {} of '{}' on node '{}' is in the ZFS pool '{}'; Cairn clones ZFS volumes only without DRBD.",
                        v.volume_number, s.name, r.node, v.storage_pool
                    ))
                    .correction("Clone with a layer list without DRBD, or use LVM_THIN or FILE_THIN pools."));
            }
            let mut n = self.build_resource(&d, &vd_refs, &r.node, &create, &mut taken, OP, ctx)?;
            for v in n.volumes.iter_mut().map(|(_, v)| v) {
                let Some(sv) = r.volumes.get(&v.volume_number) else {
                    return Err(OpError::new(
                        OP,
                        rc::FAIL_NOT_FOUND_VLM,
                        format!("Resource '{}' on node '{}' has no volume {}.", s.name, r.node, v.volume_number),
                    ));
                };
                v.clone_of = Some(CloneSource { resource: s.name.clone(), volume_uuid: sv.uuid.clone(), zfs_clone });
                // The copy opens with the source's key (or, where a
                // passphrase change has not reached the source yet, with
                // one it had before).
                v.luks_secret = sv.luks_secret.clone();
                v.luks_previous = sv.luks_previous.clone();
                v.props = sv.props.clone();
            }
            out.reply(crate::resource::created_reply(&n));
            rscs.push(n);
        }
        out.reply(
            ApiCallRc::info(OP, 0, format!("Cloning '{}' into '{}' on {} node(s).", s.name, d.name, rscs.len()))
                .with_ref("RscDfn", &d.name)
                .with_ref("CloneFrom", &s.name),
        );
        out.put(Object::RscDfn(d));
        for v in vds {
            out.put(Object::VlmDfn(v));
        }
        for r in rscs {
            out.put(Object::Rsc(r));
        }
        Ok(out)
    }

    /// The satellites answered for clone `name`: without a failure the
    /// copies exist, `CLONING` goes and the volumes forget their source;
    /// with one, the definition is `FAILED` with the reason. A definition
    /// deleted meanwhile, or not cloning any more, is left alone.
    pub fn finish_clone(&self, name: &str, failure: Option<&str>) -> Outcome {
        let mut out = Outcome::default();
        let Some(d) = self.rsc_dfns.get(&key(name)) else { return out };
        if !d.flags.contains(FLAG_CLONING) {
            return out;
        }
        let mut d = d.clone();
        d.flags.remove(FLAG_CLONING);
        match failure {
            Some(why) => {
                d.flags.insert(FLAG_FAILED.into());
                d.props.insert(PROP_CLONE_FAILURE.into(), why.to_string());
            }
            None => {
                for r in self.resources_of(&key(&d.name)) {
                    if r.volumes.values().any(|v| v.clone_of.is_some()) {
                        let mut r = r.clone();
                        for v in r.volumes.iter_mut().map(|(_, v)| v) {
                            v.clone_of = None;
                        }
                        out.put(Object::Rsc(r));
                    }
                }
            }
        }
        out.put(Object::RscDfn(d));
        out
    }

    /// `GET …/clone/{clone}`: FAILED when a copy failed or a node of the
    /// clone is not online (`online`), CLONING while copies run,
    /// otherwise COMPLETE. Only a definition made by a clone has a status.
    pub fn clone_status(&self, clone: &str, online: &dyn Fn(&str) -> bool) -> OpResult<CloneStatus> {
        const OP: i64 = rc::MASK_RSC_DFN;
        let d = self.rsc_dfns.get(&key(clone)).filter(|d| d.props.contains_key(PROP_CLONED_FROM));
        let Some(d) = d else {
            return Err(OpError::new(OP, rc::FAIL_NOT_FOUND_RSC_DFN, "Cloned resource not found.").obj_ref("RscDfn", clone));
        };
        if d.flags.contains(FLAG_FAILED) || self.resources_of(&key(&d.name)).any(|r| !online(&r.node)) {
            return Ok(CloneStatus::Failed);
        }
        Ok(if d.flags.contains(FLAG_CLONING) { CloneStatus::Cloning } else { CloneStatus::Complete })
    }
}

#[cfg(test)]
mod tests {
    use cairn_api::resource_definition::{
        ResourceDefinition as WireRd, ResourceDefinitionCloneRequest, VolumeDefinition as WireVd, VolumeDefinitionCreate,
    };

    use super::*;
    use crate::testing;

    fn cluster(kinds: &[(&str, &str, &str)]) -> (Cluster, Ctx) {
        let mut ctx = Ctx::deterministic();
        let mut c = testing::seeded();
        c.ctrl_props.insert(crate::PROP_DEFAULT_LAYER_STACK.into(), "STORAGE".into());
        for (n, kind, backing) in kinds {
            let o = c.create_node(&testing::satellite(n, &[]), &mut ctx).unwrap();
            c.apply(o.changes);
            let o = c.create_stor_pool(n, &testing::pool("DfltStorPool", kind, backing), &mut ctx).unwrap();
            c.apply(o.changes);
        }
        let req =
            ResourceDefinitionCreate { resource_definition: WireRd { name: "src".into(), ..Default::default() }, ..Default::default() };
        let o = c.create_rsc_dfn(&req, &mut ctx).unwrap();
        c.apply(o.changes);
        for size in [4096, 8192] {
            let vd =
                VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(size), ..Default::default() }, ..Default::default() };
            let o = c.create_vlm_dfn("src", &vd, &mut ctx).unwrap();
            c.apply(o.changes);
        }
        for (n, _, _) in kinds {
            let r = ResourceCreate { resource: WireRsc { node_name: n.to_string(), ..Default::default() }, ..Default::default() };
            let o = c.create_resources("src", &[r], None, &mut ctx).unwrap();
            c.apply(o.changes);
        }
        (c, ctx)
    }

    fn named(n: &str) -> ResourceDefinitionCloneRequest {
        ResourceDefinitionCloneRequest { name: Some(n.into()), ..Default::default() }
    }

    fn synced(_: &Resource) -> bool {
        true
    }

    fn code(e: OpError) -> i64 {
        e.rc.ret_code & rc::MASK_BITS_CODE
    }

    #[test]
    fn an_encrypted_copy_gets_the_sources_key_and_the_keys_it_had_before() {
        let (mut c, mut ctx) = cluster(&[("n1", "FILE_THIN", "/p1")]);
        let mut r = c.resources[&("SRC".to_string(), "N1".to_string())].clone();
        r.layer_stack = vec!["LUKS".into(), "STORAGE".into()];
        for v in r.volumes.iter_mut().map(|(_, v)| v) {
            v.luks_secret = Some(format!("now-{}", v.volume_number));
            v.luks_previous = vec![format!("before-{}", v.volume_number)];
        }
        c.apply([Object::Rsc(r).into_put()]);
        let o = c.clone_rsc_dfn("src", &named("dst"), &synced, &mut ctx).unwrap();
        c.apply(o.changes);
        let dst = &c.resources[&("DST".to_string(), "N1".to_string())];
        for (nr, v) in &dst.volumes {
            assert_eq!(v.luks_secret, Some(format!("now-{nr}")));
            // The source's device may still hold an older key (a change
            // that has not reached its node): so may the copy.
            assert_eq!(v.luks_previous, vec![format!("before-{nr}")]);
        }
    }

    #[test]
    fn a_clone_copies_definitions_and_places_one_copy_per_diskful_source() {
        let (mut c, mut ctx) = cluster(&[("n1", "FILE_THIN", "/p1"), ("n2", "LVM_THIN", "vg/thin")]);
        let mut d = c.rsc_dfns["SRC"].clone();
        d.props.insert(crate::drbd_auto::PROP_INITIAL_SYNC_RSC.into(), "uuid-of-a-source-replica".into());
        d.props.insert("Aux/kept".into(), "yes".into());
        c.apply([Object::RscDfn(d).into_put()]);
        let mut req = named("dst");
        req.override_props.insert("Aux/x".into(), "1".into());
        let o = c.clone_rsc_dfn("src", &req, &synced, &mut ctx).unwrap();
        c.apply(o.changes);
        let d = &c.rsc_dfns["DST"];
        assert!(d.flags.contains(FLAG_CLONING));
        assert_eq!(d.props.get(PROP_CLONED_FROM).map(String::as_str), Some("src"));
        assert_eq!(d.props.get("Aux/x").map(String::as_str), Some("1"));
        assert_eq!(d.props.get("Aux/kept").map(String::as_str), Some("yes"));
        assert!(!d.props.contains_key(crate::drbd_auto::PROP_INITIAL_SYNC_RSC));
        let sizes: Vec<i64> = c.vlm_dfns_of("DST").map(|v| v.size_kib).collect();
        assert_eq!(sizes, [4096, 8192]);
        for node in ["N1", "N2"] {
            let src = &c.resources[&("SRC".to_string(), node.to_string())];
            let dst = &c.resources[&("DST".to_string(), node.to_string())];
            for (nr, v) in &dst.volumes {
                assert_eq!(v.storage_pool, src.volumes[nr].storage_pool);
                assert_eq!(
                    v.clone_of.as_ref().map(|s| (s.resource.as_str(), s.volume_uuid.as_str())),
                    Some(("src", src.volumes[nr].uuid.as_str()))
                );
                assert_ne!(v.uuid, src.volumes[nr].uuid);
            }
        }
        // The satellite is told where each copy comes from.
        let (_, rscs) = crate::desired::desired_for_node(&c, "N1");
        let dst = rscs.iter().find(|r| r.name == "dst").unwrap();
        let src_id = crate::desired::volume_id(&c.resources[&("SRC".to_string(), "N1".to_string())].volumes[&0].uuid);
        assert_eq!(dst.volumes[0].clone_from.as_ref().map(|s| (s.resource.as_str(), s.id.as_str())), Some(("src", src_id.as_str())));
        // Status follows the flag; an offline node fails it, as LINSTOR.
        assert_eq!(c.clone_status("dst", &|_| true).unwrap(), CloneStatus::Cloning);
        assert_eq!(c.clone_status("dst", &|n| n != "n2").unwrap(), CloneStatus::Failed);
        let o = c.finish_clone("dst", None);
        c.apply(o.changes);
        assert_eq!(c.clone_status("dst", &|_| true).unwrap(), CloneStatus::Complete);
        assert!(c.resources_of("DST").all(|r| r.volumes.values().all(|v| v.clone_of.is_none())));
        let (_, rscs) = crate::desired::desired_for_node(&c, "N1");
        assert!(rscs.iter().find(|r| r.name == "dst").unwrap().volumes.iter().all(|v| v.clone_from.is_none()));
        // Finishing again changes nothing.
        assert!(c.finish_clone("dst", Some("late")).changes.is_empty());
        // Only clones have a status.
        assert_eq!(code(c.clone_status("src", &|_| true).unwrap_err()), rc::FAIL_NOT_FOUND_RSC_DFN);
        assert_eq!(code(c.clone_status("nope", &|_| true).unwrap_err()), rc::FAIL_NOT_FOUND_RSC_DFN);
    }

    #[test]
    fn a_failed_copy_marks_the_clone_failed_with_the_reason() {
        let (mut c, mut ctx) = cluster(&[("n1", "FILE", "/p1")]);
        let o = c.clone_rsc_dfn("src", &named("dst"), &synced, &mut ctx).unwrap();
        c.apply(o.changes);
        let o = c.finish_clone("dst", Some("cp: no space left"));
        c.apply(o.changes);
        let d = &c.rsc_dfns["DST"];
        assert!(d.flags.contains(FLAG_FAILED) && !d.flags.contains(FLAG_CLONING));
        assert_eq!(d.props.get(PROP_CLONE_FAILURE).map(String::as_str), Some("cp: no space left"));
        assert_eq!(c.clone_status("dst", &|_| true).unwrap(), CloneStatus::Failed);
        // A failed clone is no source.
        assert_eq!(code(c.clone_rsc_dfn("dst", &named("dst2"), &synced, &mut ctx).unwrap_err()), rc::FAIL_INVLD_RSC_STATE);
    }

    #[test]
    fn bad_clone_requests_get_linstors_codes() {
        let (mut c, mut ctx) = cluster(&[("n1", "FILE_THIN", "/p1"), ("n2", "LVM", "vg")]);
        // A replica in a pool no copy is made for (SPDK here).
        let mut r = c.resources[&("SRC".to_string(), "N2".to_string())].clone();
        for v in r.volumes.iter_mut().map(|(_, v)| v) {
            v.provider_kind = ProviderKind::Spdk;
        }
        c.apply([Object::Rsc(r).into_put()]);
        assert_eq!(code(c.clone_rsc_dfn("missing", &named("dst"), &synced, &mut ctx).unwrap_err()), rc::FAIL_NOT_FOUND_RSC_DFN);
        assert_eq!(code(c.clone_rsc_dfn("src", &named("SRC"), &synced, &mut ctx).unwrap_err()), rc::FAIL_INVLD_PROVIDER);
        assert_eq!(
            code(c.clone_rsc_dfn("src", &ResourceDefinitionCloneRequest::default(), &synced, &mut ctx).unwrap_err()),
            rc::FAIL_INVLD_RSC_NAME
        );
        // Without that replica the name decides.
        let o = c.delete_resource("src", "n2").unwrap();
        c.apply(o.changes);
        assert_eq!(code(c.clone_rsc_dfn("src", &named("SRC"), &synced, &mut ctx).unwrap_err()), rc::FAIL_EXISTS_RSC_DFN);
        assert_eq!(code(c.clone_rsc_dfn("src", &named("-bad"), &synced, &mut ctx).unwrap_err()), rc::FAIL_INVLD_RSC_NAME);
        let mut pw = named("dst");
        pw.volume_passphrases = Some(vec!["a".into(), "b".into()]);
        assert_eq!(code(c.clone_rsc_dfn("src", &pw, &synced, &mut ctx).unwrap_err()), rc::FAIL_INVLD_REQUEST);
        let mut luks = named("dst");
        luks.layer_list = Some(vec!["LUKS".into(), "STORAGE".into()]);
        assert_eq!(code(c.clone_rsc_dfn("src", &luks, &synced, &mut ctx).unwrap_err()), rc::FAIL_INVLD_LAYER_STACK);
        let mut rg = named("dst");
        rg.resource_group = Some("nogroup".into());
        assert_eq!(code(c.clone_rsc_dfn("src", &rg, &synced, &mut ctx).unwrap_err()), rc::FAIL_NOT_FOUND_RSC_GRP);
        // Skip-disk sources are refused, as LINSTOR does.
        let mut r = c.resources[&("SRC".to_string(), "N1".to_string())].clone();
        r.props.insert("DrbdOptions/SkipDisk".into(), "True".into());
        c.apply([Object::Rsc(r).into_put()]);
        assert_eq!(code(c.clone_rsc_dfn("src", &named("dst"), &synced, &mut ctx).unwrap_err()), rc::FAIL_INVLD_RSC_STATE);
    }

    #[test]
    fn zfs_clones_are_plain_only() {
        let (c, mut ctx) = cluster(&[("n1", "ZFS_THIN", "tank")]);
        let mut drbd = named("dst");
        drbd.layer_list = Some(vec!["DRBD".into(), "STORAGE".into()]);
        assert_eq!(code(c.clone_rsc_dfn("src", &drbd, &synced, &mut ctx).unwrap_err()), rc::FAIL_INVLD_PROVIDER);
        let o = c.clone_rsc_dfn("src", &named("dst"), &synced, &mut ctx).unwrap();
        assert_eq!(o.changes.iter().filter(|ch| matches!(ch.key(), crate::ObjKey::Rsc(..))).count(), 1);
    }

    #[test]
    fn a_drbd_source_must_be_up_to_date() {
        let (mut c, mut ctx) = cluster(&[("n1", "FILE_THIN", "/p1")]);
        let mut r = c.resources[&("SRC".to_string(), "N1".to_string())].clone();
        r.layer_stack = vec!["DRBD".into(), "STORAGE".into()];
        c.apply([Object::Rsc(r).into_put()]);
        let behind = |_: &Resource| false;
        assert_eq!(code(c.clone_rsc_dfn("src", &named("dst"), &behind, &mut ctx).unwrap_err()), rc::FAIL_NOT_ALL_UPTODATE);
        // Plain replicas have no DRBD state to wait for.
        let (c, mut ctx) = cluster(&[("n1", "FILE_THIN", "/p1")]);
        assert!(c.clone_rsc_dfn("src", &named("dst"), &behind, &mut ctx).is_ok());
    }

    #[test]
    fn external_names_and_zfs_clone_are_recorded() {
        let (mut c, mut ctx) = cluster(&[("n1", "FILE_THIN", "/p1")]);
        let req =
            ResourceDefinitionCloneRequest { external_name: Some("pvc-0a1b".into()), use_zfs_clone: Some(true), ..Default::default() };
        let o = c.clone_rsc_dfn("src", &req, &synced, &mut ctx).unwrap();
        let name = o.replies[0].obj_refs.get("RscDfn").cloned().unwrap();
        c.apply(o.changes);
        let d = &c.rsc_dfns[&key(&name)];
        assert_eq!(d.external_name.as_deref(), Some("pvc-0a1b"));
        assert_eq!(d.props.get(PROP_USE_ZFS_CLONE).map(String::as_str), Some("true"));
        assert!(c.resources_of(&key(&name)).all(|r| r.volumes.values().all(|v| v.clone_of.as_ref().is_some_and(|s| s.zfs_clone))));
        // A source without diskful replicas gives a complete, empty clone.
        let o = c.delete_resource("src", "n1").unwrap();
        c.apply(o.changes);
        let o = c.clone_rsc_dfn("src", &named("empty"), &synced, &mut ctx).unwrap();
        c.apply(o.changes);
        assert_eq!(c.clone_status("empty", &|_| true).unwrap(), CloneStatus::Complete);
    }
}
