//! DRBD bookkeeping that follows every change of resources, as LINSTOR's
//! controller does it after each API call:
//!
//! * a node whose satellite reported its layers must support every layer
//!   of a new resource (`FAIL_STLT_DOES_NOT_SUPPORT_LAYER`);
//! * auto-tiebreaker: an even number (≥ 2) of diskful DRBD replicas and no
//!   diskless one gets a diskless `TIE_BREAKER` replica on another node;
//!   it goes again when the condition stops holding;
//! * auto-quorum: `DrbdOptions/Resource/quorum` is `majority` with ≥ 3
//!   diskful replicas or 2 diskful + ≥ 1 diskless, else `off`, unless a
//!   user set quorum;
//! * the initial sync source: the first diskful replica of a definition is
//!   recorded (`DrbdPrimarySetOn`); only that replica, and only while its
//!   metadata is brand-new, is forced primary by its satellite.

use std::collections::{BTreeMap, BTreeSet};

use cairn_api::rc::{self, ApiCallRc};
use cairn_api::resource::{Resource as WireRsc, ResourceCreate};

use crate::cluster::{Change, Cluster, ObjKey, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::key;
use crate::numbers::Taken;
use crate::placement::Observer;
use crate::resource::Resource;
use crate::resource_definition::{FLAG_DRBD_INITIALIZED, ResourceDefinition, VolumeDefinition};
use crate::storage_pool::ProviderKind;
use crate::{Ctx, Props};

/// RD property naming the node whose replica started the initial sync.
pub const PROP_PRIMARY_SET_ON: &str = "DrbdPrimarySetOn";
/// RD property with the UUID of that replica.
pub const PROP_INITIAL_SYNC_RSC: &str = "Internal/Drbd/InitialSyncRsc";
/// Who set the quorum option: `linstor` (automatic) or `user`.
pub const PROP_QUORUM_SET_BY: &str = "Internal/Drbd/QuorumSetBy";
pub const PROP_QUORUM: &str = "DrbdOptions/Resource/quorum";
pub const PROP_ON_NO_QUORUM: &str = "DrbdOptions/Resource/on-no-quorum";
pub const PROP_AUTO_TIEBREAKER: &str = "DrbdOptions/auto-add-quorum-tiebreaker";

fn is_diskful(r: &Resource) -> bool {
    r.drbd.is_some() && !r.is_diskless() && !r.flags.contains("DELETE") && !r.flags.contains("INACTIVE")
}

/// A diskless DRBD replica that counts (not being deleted, not
/// deactivated), as LINSTOR's auto-quorum and tiebreaker count them.
fn is_active_diskless(r: &Resource) -> bool {
    r.drbd.is_some() && r.is_diskless() && !r.flags.contains("DELETE") && !r.flags.contains("INACTIVE")
}

fn is_tiebreaker(r: &Resource) -> bool {
    r.flags.contains("TIE_BREAKER")
}

/// One definition as it will be after the outcome.
struct After {
    rd: ResourceDefinition,
    vds: Vec<VolumeDefinition>,
    rscs: BTreeMap<String, Resource>,
    /// Tiebreakers this outcome deletes on purpose: not put back at once.
    deleted_tiebreaker: bool,
}

fn after(c: &Cluster, changes: &[Change], rd_key: &str) -> Option<After> {
    let mut rd = c.rsc_dfns.get(rd_key).cloned();
    let mut vds: BTreeMap<u32, VolumeDefinition> = c.vlm_dfns_of(rd_key).map(|v| (v.volume_number, v.clone())).collect();
    let mut rscs: BTreeMap<String, Resource> = c.resources_of(rd_key).map(|r| (key(&r.node), r.clone())).collect();
    let mut deleted_tiebreaker = false;
    for ch in changes {
        match ch {
            Change::Put(Object::RscDfn(d)) if key(&d.name) == rd_key => rd = Some(d.clone()),
            Change::Put(Object::VlmDfn(v)) if key(&v.resource_definition) == rd_key => {
                vds.insert(v.volume_number, v.clone());
            }
            Change::Put(Object::Rsc(r)) if key(&r.resource_definition) == rd_key => {
                rscs.insert(key(&r.node), r.clone());
            }
            Change::Delete(ObjKey::RscDfn(k)) if k == rd_key => rd = None,
            Change::Delete(ObjKey::VlmDfn(k, nr)) if k == rd_key => {
                vds.remove(nr);
            }
            Change::Delete(ObjKey::Rsc(k, n)) if k == rd_key => {
                deleted_tiebreaker |= rscs.get(n).is_some_and(is_tiebreaker);
                rscs.remove(n);
            }
            _ => {}
        }
    }
    Some(After { rd: rd?, vds: vds.into_values().collect(), rscs, deleted_tiebreaker })
}

impl Cluster {
    /// The first value of `prop` from the definition, its group, the
    /// controller.
    fn rd_prop<'a>(&'a self, d: &'a ResourceDefinition, prop: &str) -> Option<&'a String> {
        let rg = self.rsc_grps.get(&key(&d.resource_group));
        [Some(&d.props), rg.map(|g| &g.props), Some(&self.ctrl_props)].into_iter().flatten().find_map(|p| p.get(prop))
    }

    /// The bookkeeping after `out` (computed against the cluster before
    /// it): more changes and replies to commit with it, or an error that
    /// refuses the whole change.
    pub fn drbd_follow_up(&self, out: &Outcome, obs: &dyn Observer, ctx: &mut Ctx) -> OpResult<Outcome> {
        let mut follow = Outcome::default();
        let mut rds = BTreeSet::new();
        for ch in &out.changes {
            match ch.key() {
                ObjKey::Rsc(rd, node) => {
                    if let Change::Put(Object::Rsc(r)) = ch
                        && !self.resources.contains_key(&(rd.clone(), node.clone()))
                    {
                        self.check_layers(r, obs)?;
                    }
                    rds.insert(rd);
                }
                ObjKey::RscDfn(rd) => {
                    rds.insert(rd);
                }
                _ => {}
            }
        }
        // One pool of numbers for the whole follow-up: tiebreakers of
        // several definitions on one node get different ports.
        let mut taken = Taken::default();
        for ch in &out.changes {
            if let Change::Put(Object::Rsc(r)) = ch
                && let Some(d) = r.drbd
            {
                taken.reserve_port(&key(&r.node), d.tcp_port);
            }
        }
        for rd_key in rds {
            let Some(mut a) = after(self, &out.changes, &rd_key) else { continue };
            if !a.rscs.values().any(|r| r.drbd.is_some()) {
                continue;
            }
            self.tiebreaker(&mut a, &out.changes, obs, &mut taken, ctx, &mut follow);
            let props = self.drbd_rd_props(&a);
            if props != a.rd.props {
                let mut d = a.rd.clone();
                d.props = props;
                follow.put(Object::RscDfn(d));
            }
        }
        Ok(follow)
    }

    fn check_layers(&self, r: &Resource, obs: &dyn Observer) -> OpResult<()> {
        let o = obs.node(&key(&r.node));
        if !o.online {
            // Not connected yet: the satellite reports the problem when it
            // gets the resource.
            return Ok(());
        }
        let missing: Vec<&String> = r.layer_stack.iter().filter(|l| !o.layers.contains(*l)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let list = missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        Err(OpError::new(
            rc::MASK_CRT | rc::MASK_RSC,
            rc::FAIL_STLT_DOES_NOT_SUPPORT_LAYER,
            format!("Satellite '{}' does not support the following layers: [{list}]", r.node),
        )
        .cause(format!("The node's satellite reported the layers {:?}; the resource needs {:?}.", o.layers, r.layer_stack))
        .correction("See the node's unsupported_layers for what is missing, or choose another layer list or node."))
    }

    /// Adds or removes the tiebreaker of one definition.
    fn tiebreaker(&self, a: &mut After, changes: &[Change], obs: &dyn Observer, taken: &mut Taken, ctx: &mut Ctx, follow: &mut Outcome) {
        let enabled = self.rd_prop(&a.rd, PROP_AUTO_TIEBREAKER).is_none_or(|v| !v.eq_ignore_ascii_case("false"));
        let diskful = a.rscs.values().filter(|r| is_diskful(r)).count();
        let other_diskless = a.rscs.values().filter(|r| is_active_diskless(r) && !is_tiebreaker(r)).count();
        let want = enabled && diskful >= 2 && diskful % 2 == 0 && other_diskless == 0;
        let existing: Vec<String> = a.rscs.iter().filter(|(_, r)| is_tiebreaker(r)).map(|(k, _)| k.clone()).collect();
        const OP: i64 = rc::MASK_CRT | rc::MASK_RSC;
        if !want {
            for k in existing {
                if let Some(r) = a.rscs.remove(&k) {
                    follow.delete(ObjKey::Rsc(key(&r.resource_definition), k));
                    follow.reply(ApiCallRc::info(
                        rc::MASK_DEL | rc::MASK_RSC,
                        rc::INFO_TIE_BREAKER_DELETING,
                        format!(
                            "Tie breaker resource '{}' on node '{}' is no longer needed and is deleted.",
                            r.resource_definition, r.node
                        ),
                    ));
                }
            }
            return;
        }
        if !existing.is_empty() || a.deleted_tiebreaker {
            return;
        }
        let rd_key = key(&a.rd.name);
        // Never on a node whose replica this change removes: its satellite
        // would see a changed resource instead of a removal.
        let losing: BTreeSet<&String> = changes
            .iter()
            .filter_map(|ch| match ch {
                Change::Delete(ObjKey::Rsc(rd, n)) if *rd == rd_key => Some(n),
                _ => None,
            })
            .collect();
        let node = self
            .nodes
            .iter()
            .filter(|(k, n)| n.node_type.has_satellite() && !a.rscs.contains_key(*k) && !losing.contains(k))
            .filter(|(_, n)| !n.flags.contains("DELETE") && !n.flags.contains("EVACUATE"))
            .filter(|(k, _)| {
                let o = obs.node(k);
                o.online && o.layers.contains("DRBD")
            })
            .filter_map(|(k, n)| {
                let pool = self.stor_pools_of(k).find(|p| p.provider_kind == ProviderKind::Diskless)?;
                Some((self.resources_on(k).count(), n.name.clone(), pool.name.clone()))
            })
            .min();
        let Some((_, node, pool)) = node else {
            follow.reply(
                ApiCallRc::warning(
                    OP,
                    rc::WARN_NOT_ENOUGH_NODES_FOR_TIE_BREAKER,
                    format!("Could not find a node for a tie breaker of resource '{}'.", a.rd.name),
                )
                .with_cause("A tie breaker needs another online node with DRBD support and a diskless storage pool."),
            );
            return;
        };
        for r in a.rscs.values() {
            if let Some(d) = r.drbd {
                taken.reserve_node_id(&rd_key, d.node_id);
            }
        }
        let mut props = Props::new();
        props.insert(crate::resource::PROP_STOR_POOL_NAME.to_string(), pool);
        let req = ResourceCreate {
            resource: WireRsc {
                node_name: node.clone(),
                props,
                flags: vec!["DRBD_DISKLESS".into(), "TIE_BREAKER".into()],
                ..Default::default()
            },
            layer_list: Some(vec!["DRBD".into(), "STORAGE".into()]),
            ..Default::default()
        };
        let vds: Vec<&VolumeDefinition> = a.vds.iter().collect();
        match self.build_resource(&a.rd, &vds, &node, &req, taken, OP, ctx) {
            Ok(r) => {
                follow.reply(
                    ApiCallRc::info(
                        OP,
                        rc::INFO_TIE_BREAKER_CREATED,
                        format!("Tie breaker resource '{}' created on {}", a.rd.name, r.node),
                    )
                    .with_ref("RscDfn", &a.rd.name)
                    .with_ref("Node", &r.node),
                );
                a.rscs.insert(key(&node), r.clone());
                follow.put(Object::Rsc(r));
            }
            Err(e) => follow.reply(
                ApiCallRc::warning(
                    OP,
                    rc::WARN_NOT_ENOUGH_NODES_FOR_TIE_BREAKER,
                    format!("Could not create a tie breaker for resource '{}' on node '{node}'.", a.rd.name),
                )
                .with_cause(e.rc.message.clone()),
            ),
        }
    }

    /// Quorum and initial-sync properties of a definition after a change.
    fn drbd_rd_props(&self, a: &After) -> Props {
        let mut props = a.rd.props.clone();
        let diskful: Vec<&Resource> = a.rscs.values().filter(|r| is_diskful(r)).collect();
        let diskless = a.rscs.values().filter(|r| is_active_diskless(r)).count();
        // Quorum, unless a user decided it somewhere.
        let rg = self.rsc_grps.get(&key(&a.rd.resource_group));
        let user_above = [rg.map(|g| &g.props), Some(&self.ctrl_props)].into_iter().flatten().any(|p| p.contains_key(PROP_QUORUM));
        let user_here = props.contains_key(PROP_QUORUM) && props.get(PROP_QUORUM_SET_BY).is_none_or(|v| v != "linstor");
        let set_by_user = props.get(PROP_QUORUM_SET_BY).is_some_and(|v| v == "user");
        if user_above && props.get(PROP_QUORUM_SET_BY).is_some_and(|v| v == "linstor") {
            // What auto-quorum put here would override the user's choice.
            props.remove(PROP_QUORUM);
            props.remove(PROP_QUORUM_SET_BY);
            if props.get(PROP_ON_NO_QUORUM).is_some_and(|v| v == "io-error") {
                props.remove(PROP_ON_NO_QUORUM);
            }
        } else if !(user_above || user_here || set_by_user) {
            let majority = diskful.len() >= 3 || (diskful.len() == 2 && diskless >= 1);
            props.insert(PROP_QUORUM.into(), if majority { "majority" } else { "off" }.into());
            props.insert(PROP_QUORUM_SET_BY.into(), "linstor".into());
            let on_no_quorum_set = [Some(&a.rd.props), rg.map(|g| &g.props), Some(&self.ctrl_props)]
                .into_iter()
                .flatten()
                .any(|p| p.contains_key(PROP_ON_NO_QUORUM));
            if majority && !on_no_quorum_set {
                props.insert(PROP_ON_NO_QUORUM.into(), "io-error".into());
            }
        }
        // The initial sync source: the diskful replica with the lowest node
        // id, chosen once; chosen again when the one chosen is gone while a
        // volume still waits to be initialized (nobody else would ever make
        // it UpToDate on a thick replica).
        let chosen_gone = props.get(PROP_INITIAL_SYNC_RSC).is_some_and(|u| !diskful.iter().any(|r| &r.uuid == u));
        let waiting = a.vds.iter().any(|v| !v.flags.contains(FLAG_DRBD_INITIALIZED));
        if (!props.contains_key(PROP_INITIAL_SYNC_RSC) || (chosen_gone && waiting))
            && let Some(first) = diskful.iter().min_by_key(|r| r.drbd.map(|d| d.node_id))
        {
            props.insert(PROP_PRIMARY_SET_ON.into(), first.node.to_ascii_uppercase());
            props.insert(PROP_INITIAL_SYNC_RSC.into(), first.uuid.clone());
        }
        props
    }
}

/// A volume waiting for its initial sync to be recorded as done: the
/// replica chosen for it, by definition key, volume number and node key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwaitingInit {
    pub rd: String,
    pub volume: u32,
    pub node: String,
}

impl Cluster {
    /// DRBD volume definitions without `DRBD_INITIALIZED`, each with the
    /// node of the replica chosen to make it UpToDate first. When that
    /// replica reports the volume UpToDate, [`Cluster::drbd_initialized`]
    /// records it.
    pub fn awaiting_drbd_init(&self) -> Vec<AwaitingInit> {
        let mut out = Vec::new();
        for ((rd_key, nr), vd) in &self.vlm_dfns {
            if vd.drbd_minor.is_none() || vd.flags.contains(FLAG_DRBD_INITIALIZED) {
                continue;
            }
            let Some(chosen) = self.rsc_dfns.get(rd_key).and_then(|d| d.props.get(PROP_INITIAL_SYNC_RSC)) else { continue };
            if let Some(r) = self.resources_of(rd_key).find(|r| &r.uuid == chosen) {
                out.push(AwaitingInit { rd: rd_key.clone(), volume: *nr, node: key(&r.node) });
            }
        }
        out
    }

    /// Records that the chosen replica of these volumes was UpToDate: from
    /// now on no fresh metadata declares itself UpToDate (LINSTOR's
    /// `DRBD_INITIALIZED` volume definition flag).
    pub fn drbd_initialized(&self, done: &[(String, u32)]) -> Outcome {
        let mut out = Outcome::default();
        for (rd, nr) in done {
            if let Some(vd) = self.vlm_dfns.get(&(key(rd), *nr)).filter(|v| !v.flags.contains(FLAG_DRBD_INITIALIZED)) {
                let mut vd = vd.clone();
                vd.flags.insert(FLAG_DRBD_INITIALIZED.into());
                out.put(Object::VlmDfn(vd));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use cairn_api::resource::{Resource as WireRsc, ResourceCreate};
    use cairn_api::resource_definition::{
        ResourceDefinition as WireRd, ResourceDefinitionCreate, ResourceDefinitionModify, VolumeDefinition as WireVd,
        VolumeDefinitionCreate,
    };

    use super::*;
    use crate::desired::desired_for_node;
    use crate::placement::NodeObs;
    use crate::storage_pool::PoolCapacity;
    use crate::testing;

    /// Every satellite online with DRBD, except those named.
    #[derive(Default)]
    struct Obs {
        storage_only: BTreeSet<String>,
        offline: BTreeSet<String>,
    }

    impl Observer for Obs {
        fn node(&self, k: &str) -> NodeObs {
            let layers: &[&str] = if self.storage_only.contains(k) { &["STORAGE"] } else { &["DRBD", "STORAGE"] };
            NodeObs {
                online: !self.offline.contains(k),
                providers: ["DISKLESS", "FILE_THIN"].iter().map(|s| s.to_string()).collect(),
                layers: layers.iter().map(|s| s.to_string()).collect(),
            }
        }
        fn capacity(&self, _: &str, _: &str) -> Option<PoolCapacity> {
            None
        }
    }

    struct T {
        c: Cluster,
        ctx: Ctx,
        obs: Obs,
    }

    impl T {
        fn new(nodes: &[&str]) -> T {
            let mut t = T { c: testing::seeded(), ctx: Ctx::deterministic(), obs: Obs::default() };
            for n in nodes {
                let o = t.c.create_node(&testing::satellite(n, &[]), &mut t.ctx).unwrap();
                t.c.apply(o.changes);
                let o = t.c.create_stor_pool(n, &testing::pool("DfltStorPool", "FILE_THIN", "/srv/p"), &mut t.ctx).unwrap();
                t.c.apply(o.changes);
            }
            let rd =
                ResourceDefinitionCreate { resource_definition: WireRd { name: "web".into(), ..Default::default() }, ..Default::default() };
            t.commit(|c, ctx| c.create_rsc_dfn(&rd, ctx)).unwrap();
            let vd =
                VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(65536), ..Default::default() }, ..Default::default() };
            t.commit(|c, ctx| c.create_vlm_dfn("web", &vd, ctx)).unwrap();
            t
        }

        /// The controller's sequence: the operation, then the follow-up,
        /// committed together.
        fn commit(&mut self, op: impl FnOnce(&Cluster, &mut Ctx) -> OpResult<Outcome>) -> OpResult<Outcome> {
            let mut out = op(&self.c, &mut self.ctx)?;
            let f = self.c.drbd_follow_up(&out, &self.obs, &mut self.ctx)?;
            out.changes.extend(f.changes);
            out.replies.extend(f.replies);
            self.c.apply(out.changes.clone());
            Ok(out)
        }

        fn create(&mut self, node: &str, flags: &[&str]) -> OpResult<Outcome> {
            let req = ResourceCreate {
                resource: WireRsc { node_name: node.into(), flags: flags.iter().map(|s| s.to_string()).collect(), ..Default::default() },
                ..Default::default()
            };
            self.commit(|c, ctx| c.create_resources("web", &[req], None, ctx))
        }

        fn delete(&mut self, node: &str) {
            self.commit(|c, _| c.delete_resource("web", node)).unwrap();
        }

        fn rd_prop(&self, k: &str) -> Option<String> {
            self.c.rsc_dfns["WEB"].props.get(k).cloned()
        }

        fn tiebreakers(&self) -> Vec<String> {
            self.c.resources_of("WEB").filter(|r| is_tiebreaker(r)).map(|r| r.node.clone()).collect()
        }
    }

    #[test]
    fn two_replicas_get_a_tiebreaker_and_quorum() {
        let mut t = T::new(&["n1", "n2", "n3"]);
        t.create("n1", &[]).unwrap();
        assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("off"), "one replica has no quorum to keep");
        assert!(t.tiebreakers().is_empty());
        let out = t.create("n2", &[]).unwrap();
        assert_eq!(t.tiebreakers(), vec!["n3"]);
        assert!(out.replies.iter().any(|r| r.ret_code & rc::MASK_BITS_CODE == rc::INFO_TIE_BREAKER_CREATED), "{:?}", out.replies);
        let tb = &t.c.resources[&("WEB".to_string(), "N3".to_string())];
        assert!(tb.is_diskless() && tb.flags.contains("DRBD_DISKLESS"));
        assert_eq!(tb.drbd.map(|d| d.node_id), Some(2));
        assert_eq!(tb.volumes[&0].storage_pool, "DfltDisklessStorPool");
        assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("majority"));
        assert_eq!(t.rd_prop(PROP_ON_NO_QUORUM).as_deref(), Some("io-error"));
        assert_eq!(t.rd_prop(PROP_QUORUM_SET_BY).as_deref(), Some("linstor"));
        // The tiebreaker is in every peer's configuration, diskless.
        let d = desired_for_node(&t.c, "N1").1[0].drbd.clone().unwrap();
        assert!(d.peers.iter().any(|p| p.host == "n3" && p.diskless), "{d:?}");
        assert_eq!(d.options.get(PROP_QUORUM).map(String::as_str), Some("majority"));
    }

    #[test]
    fn the_tiebreaker_goes_when_the_count_turns_odd_or_a_client_joins() {
        let mut t = T::new(&["n1", "n2", "n3", "n4"]);
        t.create("n1", &[]).unwrap();
        t.create("n2", &[]).unwrap();
        assert_eq!(t.tiebreakers().len(), 1);
        let tb = t.tiebreakers()[0].clone();
        let other = if tb == "n3" { "n4" } else { "n3" };
        let out = t.create(other, &[]).unwrap();
        assert!(t.tiebreakers().is_empty(), "three diskful replicas need no tiebreaker");
        assert!(out.replies.iter().any(|r| r.ret_code & rc::MASK_BITS_CODE == rc::INFO_TIE_BREAKER_DELETING));
        assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("majority"));
        t.delete(other);
        assert_eq!(t.tiebreakers().len(), 1, "back to two");
        // A user's diskless client takes the tiebreaker's role.
        let tb = t.tiebreakers()[0].clone();
        let free = ["n3", "n4"].into_iter().find(|n| *n != tb).unwrap();
        t.create(free, &["DRBD_DISKLESS"]).unwrap();
        assert!(t.tiebreakers().is_empty());
        assert!(t.c.resources.contains_key(&("WEB".to_string(), free.to_ascii_uppercase())));
        t.delete(free);
        // Or takes it over on its node.
        let tb = t.tiebreakers()[0].clone();
        let out = t.create(&tb, &["DRBD_DISKLESS"]).unwrap();
        assert!(out.replies.iter().any(|r| r.ret_code & rc::MASK_BITS_CODE == rc::INFO_TIE_BREAKER_TAKEOVER));
        assert!(t.tiebreakers().is_empty());
        let r = &t.c.resources[&("WEB".to_string(), tb.to_ascii_uppercase())];
        assert!(r.is_diskless() && !r.flags.contains("TIE_BREAKER"));
        assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("majority"), "2 diskful + 1 diskless");
        t.delete("n2");
        assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("off"));
    }

    #[test]
    fn deactivated_replicas_do_not_count_for_quorum_and_tiebreaker() {
        let mut t = T::new(&["n1", "n2", "n3", "n4"]);
        for n in ["n1", "n2", "n3"] {
            t.create(n, &[]).unwrap();
        }
        assert!(t.tiebreakers().is_empty());
        assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("majority"));
        // Two active diskful replicas are left: they get a tiebreaker.
        t.commit(|c, _| c.set_resource_active("web", "n3", false, false)).unwrap();
        assert_eq!(t.tiebreakers(), vec!["n4"]);
        assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("majority"), "2 diskful + the tiebreaker");
        t.commit(|c, _| c.set_resource_active("web", "n3", true, false)).unwrap();
        assert!(t.tiebreakers().is_empty(), "three again");
        // A deactivated diskless client counts for neither.
        t.delete("n3");
        assert_eq!(t.tiebreakers().len(), 1);
        let tb = t.tiebreakers()[0].clone();
        let free = ["n3", "n4"].into_iter().find(|n| *n != tb).unwrap();
        t.create(free, &["DRBD_DISKLESS"]).unwrap();
        assert!(t.tiebreakers().is_empty(), "the client takes the tiebreaker's role");
        t.commit(|c, _| c.set_resource_active("web", free, false, false)).unwrap();
        assert_eq!(t.tiebreakers(), vec![tb], "an inactive client does not");
    }

    #[test]
    fn no_tiebreaker_when_disabled_or_no_node_qualifies() {
        let mut t = T::new(&["n1", "n2", "n3"]);
        t.obs.storage_only.insert("N3".into());
        t.create("n1", &[]).unwrap();
        let out = t.create("n2", &[]).unwrap();
        assert!(t.tiebreakers().is_empty());
        assert!(out.replies.iter().any(|r| r.ret_code & rc::MASK_BITS_CODE == rc::WARN_NOT_ENOUGH_NODES_FOR_TIE_BREAKER));
        assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("off"), "2 diskful alone cannot keep quorum");

        let mut t = T::new(&["n1", "n2", "n3"]);
        let m = ResourceDefinitionModify {
            props: cairn_api::PropsModify {
                override_props: [(PROP_AUTO_TIEBREAKER.to_string(), "false".to_string())].into(),
                ..Default::default()
            },
            ..Default::default()
        };
        t.commit(|c, _| c.modify_rsc_dfn("web", &m)).unwrap();
        t.create("n1", &[]).unwrap();
        t.create("n2", &[]).unwrap();
        assert!(t.tiebreakers().is_empty());
    }

    #[test]
    fn a_replica_being_deleted_never_hosts_the_tiebreaker() {
        let mut t = T::new(&["n1", "n2", "n3"]);
        for n in ["n1", "n2", "n3"] {
            t.create(n, &[]).unwrap();
        }
        let out = t.commit(|c, _| c.delete_resource("web", "n3")).unwrap();
        assert!(t.tiebreakers().is_empty(), "n3 is leaving; no other node");
        assert!(out.replies.iter().any(|r| r.ret_code & rc::MASK_BITS_CODE == rc::WARN_NOT_ENOUGH_NODES_FOR_TIE_BREAKER));
        assert!(!t.c.resources.contains_key(&("WEB".to_string(), "N3".to_string())));
    }

    #[test]
    fn a_quorum_set_on_the_group_replaces_the_automatic_one() {
        let mut t = T::new(&["n1", "n2", "n3"]);
        for n in ["n1", "n2", "n3"] {
            t.create(n, &[]).unwrap();
        }
        assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("majority"));
        t.c.ctrl_props.insert(PROP_QUORUM.into(), "off".into());
        t.delete("n3");
        assert_eq!(t.rd_prop(PROP_QUORUM), None, "the controller's value applies");
        assert_eq!(t.rd_prop(PROP_QUORUM_SET_BY), None);
        assert_eq!(t.rd_prop(PROP_ON_NO_QUORUM), None);
    }

    #[test]
    fn definitions_from_before_the_drbd_default_keep_their_storage_stack() {
        let mut t = T::new(&["n1"]);
        // As stored by an older Cairn: no minor on the volume definition.
        let k = ("WEB".to_string(), 0);
        let mut vd = t.c.vlm_dfns[&k].clone();
        vd.drbd_minor = None;
        t.c.apply([Change::Put(Object::VlmDfn(vd))]);
        t.create("n1", &[]).unwrap();
        let r = &t.c.resources[&("WEB".to_string(), "N1".to_string())];
        assert_eq!(r.layer_stack, vec!["STORAGE".to_string()]);
        assert!(r.drbd.is_none());
    }

    #[test]
    fn a_users_quorum_is_left_alone() {
        let mut t = T::new(&["n1", "n2", "n3", "n4"]);
        let m = ResourceDefinitionModify {
            props: cairn_api::PropsModify { override_props: [(PROP_QUORUM.to_string(), "2".to_string())].into(), ..Default::default() },
            ..Default::default()
        };
        t.commit(|c, _| c.modify_rsc_dfn("web", &m)).unwrap();
        for n in ["n1", "n2", "n3"] {
            t.create(n, &[]).unwrap();
        }
        assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("2"));
        assert_eq!(t.rd_prop(PROP_QUORUM_SET_BY).as_deref(), Some("user"));
    }

    #[test]
    fn one_replica_is_chosen_once_for_the_initial_sync() {
        let mut t = T::new(&["n1", "n2", "n3"]);
        t.create("n1", &[]).unwrap();
        t.create("n2", &[]).unwrap();
        assert_eq!(t.rd_prop(PROP_PRIMARY_SET_ON).as_deref(), Some("N1"));
        let sync = |t: &T, n: &str| desired_for_node(&t.c, n).1.first().and_then(|r| r.drbd.as_ref()).is_some_and(|d| d.initial_sync);
        assert!(sync(&t, "N1"));
        assert!(!sync(&t, "N2"));
        assert!(!sync(&t, "N3"), "never a diskless tiebreaker");
        // A replica created again on that node later is not a sync source.
        t.delete("n1");
        t.create("n1", &[]).unwrap();
        assert!(!sync(&t, "N1"));
    }

    #[test]
    fn the_initial_sync_is_recorded_per_volume_and_a_lost_choice_is_made_again_until_then() {
        use crate::resource_definition::PROP_DRBD_CURRENT_GI;
        let mut t = T::new(&["n1", "n2", "n3"]);
        t.create("n1", &[]).unwrap();
        t.create("n2", &[]).unwrap();
        // Every volume definition carries a day-0 generation id.
        let gi = t.c.vlm_dfns.values().next().and_then(|v| v.props.get(PROP_DRBD_CURRENT_GI)).cloned().unwrap();
        let n = u64::from_str_radix(&gi, 16).unwrap();
        assert!(gi.len() <= 16 && n & 1 == 0 && n != 0 && n != 4 && gi == gi.to_ascii_uppercase(), "{gi}");
        let vol = |t: &T, node: &str| {
            let d = desired_for_node(&t.c, node).1.first().and_then(|r| r.drbd.clone()).unwrap();
            (d.initial_sync, d.volumes[0].day0_gi.clone(), d.volumes[0].initialized)
        };
        assert_eq!(vol(&t, "N1"), (true, Some(gi.clone()), false));
        assert_eq!(vol(&t, "N2"), (false, Some(gi.clone()), false));
        let waiting = |t: &T| t.c.awaiting_drbd_init().into_iter().map(|a| (a.rd, a.volume, a.node)).collect::<Vec<_>>();
        assert_eq!(waiting(&t), [("WEB".to_string(), 0, "N1".to_string())]);
        // The chosen replica goes before it was ever UpToDate: another one
        // is chosen (else a thick volume would never become UpToDate).
        t.delete("n1");
        assert_eq!(vol(&t, "N2"), (true, Some(gi.clone()), false));
        assert_eq!(waiting(&t), [("WEB".to_string(), 0, "N2".to_string())]);
        // It reported UpToDate: recorded once, shown in REST, sent along.
        t.commit(|c, _| Ok(c.drbd_initialized(&[("web".into(), 0)]))).unwrap();
        assert!(waiting(&t).is_empty());
        assert_eq!(vol(&t, "N2"), (true, Some(gi.clone()), true));
        assert!(t.c.vlm_dfns.values().next().unwrap().to_api().flags.contains(&FLAG_DRBD_INITIALIZED.to_string()));
        assert!(t.c.drbd_initialized(&[("web".into(), 0), ("nope".into(), 0)]).changes.is_empty());
        // From now on a lost choice is not made again.
        t.create("n1", &[]).unwrap();
        t.delete("n2");
        assert_eq!(vol(&t, "N1"), (false, Some(gi), true));
    }

    #[test]
    fn nodes_must_support_the_layers_of_new_resources() {
        let mut t = T::new(&["n1", "n2"]);
        t.obs.storage_only.insert("N1".into());
        let e = t.create("n1", &[]).unwrap_err();
        assert_eq!(e.rc.ret_code & rc::MASK_BITS_CODE, rc::FAIL_STLT_DOES_NOT_SUPPORT_LAYER);
        assert_eq!(e.rc.message, "Satellite 'n1' does not support the following layers: [DRBD]");
        assert!(t.c.resources.is_empty(), "nothing was created");
        // STORAGE alone works there.
        let req = ResourceCreate {
            resource: WireRsc { node_name: "n1".into(), ..Default::default() },
            layer_list: Some(vec!["STORAGE".into()]),
            ..Default::default()
        };
        t.commit(|c, ctx| c.create_resources("web", &[req], None, ctx)).unwrap();
        // A node whose satellite never reported is not judged yet.
        t.obs.offline.insert("N2".into());
        t.obs.storage_only.insert("N2".into());
        t.create("n2", &[]).unwrap();
    }

    fn toggle(t: &mut T, node: &str, op: crate::toggle_disk::ToggleOp, from: Option<&str>, in_use: bool) -> OpResult<Outcome> {
        let req = crate::toggle_disk::ToggleDisk { op: Some(op), migrate_from: from.map(String::from), ..Default::default() };
        let obs = std::mem::take(&mut t.obs);
        let out = t.commit(|c, ctx| c.toggle_disk("web", node, &req, &obs, &|_| in_use, ctx));
        t.obs = obs;
        out
    }

    #[test]
    fn a_tiebreaker_toggled_diskful_joins_unstamped_and_a_migration_deletes_its_source_once_up_to_date() {
        use crate::toggle_disk::{FLAG_DISK_ADDING, PROP_MIGRATE_FROM, ToggleOp};
        let mut t = T::new(&["n1", "n2", "n3"]);
        t.create("n1", &[]).unwrap();
        t.create("n2", &[]).unwrap();
        assert_eq!(t.tiebreakers(), vec!["n3"]);
        // The source may not be in use when the migration is asked for.
        assert_eq!(toggle(&mut t, "n3", ToggleOp::Diskful, Some("n1"), true).unwrap_err().rc.code(), rc::FAIL_IN_USE);
        toggle(&mut t, "n3", ToggleOp::Diskful, Some("n1"), false).unwrap();
        let r = &t.c.resources[&("WEB".to_string(), "N3".to_string())];
        assert!(!r.is_diskless() && !r.flags.contains("TIE_BREAKER") && r.flags.contains(FLAG_DISK_ADDING), "{:?}", r.flags);
        assert_eq!(r.props.get(PROP_MIGRATE_FROM).map(String::as_str), Some("n1"));
        assert_eq!(r.volumes[&0].storage_pool, "DfltStorPool");
        let d = desired_for_node(&t.c, "N3").1[0].drbd.clone().unwrap();
        assert!(d.joining && !d.diskless, "{d:?}");
        // Three diskful replicas now: quorum by majority, no tiebreaker.
        assert!(t.tiebreakers().is_empty());
        assert_eq!(t.c.awaiting_disk_added(), vec![("WEB".to_string(), "N3".to_string(), vec![0])]);
        // UpToDate while the source is Primary: nothing yet.
        let done = [("WEB".to_string(), "N3".to_string())];
        assert!(t.c.disk_added(&done, &|_, _| true).changes.is_empty());
        let out = t.c.disk_added(&done, &|_, _| false);
        t.c.apply(out.changes);
        assert!(!t.c.resources.contains_key(&("WEB".to_string(), "N1".to_string())), "the source is deleted");
        let r = &t.c.resources[&("WEB".to_string(), "N3".to_string())];
        assert!(!r.flags.contains(FLAG_DISK_ADDING) && !r.props.contains_key(PROP_MIGRATE_FROM), "{r:?}");
        assert!(!desired_for_node(&t.c, "N3").1[0].drbd.as_ref().unwrap().joining);
    }

    #[test]
    fn the_last_diskful_replica_on_an_online_node_keeps_its_disk() {
        use crate::toggle_disk::ToggleOp;
        let mut t = T::new(&["n1", "n2", "n3"]);
        t.create("n1", &[]).unwrap();
        t.create("n2", &[]).unwrap();
        // n2 is offline: n1 is the only diskful replica that counts.
        t.obs.offline.insert("N2".into());
        let e = toggle(&mut t, "n1", ToggleOp::Diskless, None, false).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_INSUFFICIENT_REPLICA_COUNT);
        t.obs.offline.clear();
        let out = toggle(&mut t, "n1", ToggleOp::Diskless, None, false).unwrap();
        assert!(out.replies.iter().any(|r| r.message.contains("Removal of disk from resource 'web' on node 'n1' registered")));
        let r = &t.c.resources[&("WEB".to_string(), "N1".to_string())];
        assert!(r.flags.contains("DRBD_DISKLESS") && r.volumes[&0].storage_pool == "DfltDisklessStorPool");
        // Already so: a no-op answer, nothing changed.
        let out = toggle(&mut t, "n1", ToggleOp::Diskless, None, false).unwrap();
        assert_eq!(out.replies[0].ret_code & rc::MASK_BITS_CODE, rc::INFO_NOOP);
        assert!(out.changes.is_empty());
    }
}
