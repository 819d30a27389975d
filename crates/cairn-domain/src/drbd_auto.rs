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
/// The flag of a diskless replica the auto-tiebreaker manages.
pub const FLAG_TIE_BREAKER: &str = "TIE_BREAKER";

fn is_diskful(r: &Resource) -> bool {
    r.drbd.is_some() && !r.is_diskless() && !r.flags.contains("DELETE") && !r.flags.contains("INACTIVE")
}

/// A diskless DRBD replica that counts (not being deleted, not
/// deactivated), as LINSTOR's auto-quorum and tiebreaker count them.
fn is_active_diskless(r: &Resource) -> bool {
    r.drbd.is_some() && r.is_diskless() && !r.flags.contains("DELETE") && !r.flags.contains("INACTIVE")
}

fn is_tiebreaker(r: &Resource) -> bool {
    r.flags.contains(FLAG_TIE_BREAKER)
}

/// LINSTOR's rule (`CtrlRscAutoTieBreakerHelper.shouldTieBreakerExist`):
/// an even number (>= 2) of diskful replicas and no diskless one besides
/// a tiebreaker or a DRBD client (a client is no tiebreaker). Replicas
/// being deleted or deactivated do not count.
fn needs_tiebreaker<'a>(rscs: impl Iterator<Item = &'a Resource>) -> bool {
    let (mut diskful, mut other_diskless) = (0, 0);
    for r in rscs {
        if is_diskful(r) {
            diskful += 1;
        } else if is_active_diskless(r) && !is_tiebreaker(r) && !r.is_drbd_client() {
            other_diskless += 1;
        }
    }
    diskful >= 2 && diskful % 2 == 0 && other_diskless == 0
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
    pub(crate) fn rd_prop<'a>(&'a self, d: &'a ResourceDefinition, prop: &str) -> Option<&'a String> {
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
                ObjKey::VlmDfn(rd, nr) => {
                    if let Change::Put(Object::VlmDfn(v)) = ch
                        && !self.vlm_dfns.contains_key(&(rd.clone(), nr))
                        && let Some(v) = self.initial_sync_on_the_user(v, obs)
                    {
                        follow.put(Object::VlmDfn(v));
                    }
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
            let (forgetting, freed_ports) = self.forgetting(&a, &rd_key, out.changes.iter().chain(&follow.changes));
            if props != a.rd.props || forgetting != a.rd.drbd.forgetting || freed_ports != a.rd.drbd.freed_ports {
                let mut d = a.rd.clone();
                d.props = props;
                d.drbd.forgetting = forgetting;
                d.drbd.freed_ports = freed_ports;
                follow.put(Object::RscDfn(d));
            }
        }
        Ok(follow)
    }

    /// The uuid of the replica that makes a new volume UpToDate first: the
    /// volume definition's own choice while that replica exists (a volume
    /// added while the definition was in use), else the definition's.
    pub fn initial_sync_rsc<'a>(&'a self, rd_key: &str, vd: &'a VolumeDefinition) -> Option<&'a String> {
        vd.props
            .get(PROP_INITIAL_SYNC_RSC)
            .filter(|u| self.resources_of(rd_key).any(|r| &r.uuid == *u))
            .or_else(|| self.rsc_dfns.get(rd_key).and_then(|d| d.props.get(PROP_INITIAL_SYNC_RSC)))
    }

    /// A volume added to a definition that is in use somewhere: the
    /// replica in use is its initial sync source (as LINSTOR chooses it),
    /// since it is the one that writes to the new volume from the start;
    /// any other source would make a second data generation beside it (a
    /// split brain of the new volume). None when nothing is in use: the
    /// definition's chosen replica serves.
    fn initial_sync_on_the_user(&self, v: &VolumeDefinition, obs: &dyn Observer) -> Option<VolumeDefinition> {
        let rd_key = key(&v.resource_definition);
        let user = self.resources_of(&rd_key).filter(|r| is_diskful(r)).find(|r| obs.in_use(&key(&r.node), &r.resource_definition))?;
        let mut v = v.clone();
        v.props.insert(PROP_INITIAL_SYNC_RSC.into(), user.uuid.clone());
        Some(v)
    }

    /// `DELETE …/resources/{node}` (`keep_tiebreaker`): LINSTOR marks a DRBD
    /// replica for deletion and runs its auto-tiebreaker first
    /// (`CtrlRscDeleteApiCallHandler`, `CtrlRscAutoTieBreakerHelper`):
    ///
    /// * `keep_tiebreaker` with the auto-tiebreaker off turns it on for the
    ///   definition (`INFO_PROP_SET`);
    /// * when the replicas left need a tiebreaker and none is there, a
    ///   diskless replica being deleted is not deleted but becomes the
    ///   tiebreaker (`INFO_TIE_BREAKER_TAKEOVER`), with or without
    ///   `keep_tiebreaker`. LINSTOR turns a diskful one into the tiebreaker
    ///   with toggle-disk, which Cairn does not have: it is deleted and the
    ///   follow-up places a tiebreaker on another node;
    /// * the tiebreaker itself, while needed, stays with `keep_tiebreaker`;
    ///   without it, it is deleted and the definition's auto-tiebreaker is
    ///   turned off, so it does not come back (`INFO_PROP_SET`).
    ///
    /// Anything else is [`Cluster::delete_resource`].
    pub fn delete_resource_keeping_quorum(&self, rd: &str, node: &str, keep_tiebreaker: bool) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_DEL | rc::MASK_RSC;
        // LINSTOR's `StorDriver/Zfs/DeleteStrategy` 'Delete'
        // (CtrlRscDeleteApiCallHandler): no delete while the definition has
        // snapshots.
        let r = self.resource(rd, node, OP)?;
        if let Some(d) = self.rsc_dfns.get(&key(&r.resource_definition)) {
            self.check_zfs_delete(d, OP)?;
        }
        // The same refusals as a plain delete, whatever happens next.
        let deleted = self.delete_resource(rd, node)?;
        let Some(d) = self.rsc_dfns.get(&key(&r.resource_definition)).filter(|_| r.drbd.is_some()) else {
            return Ok(deleted);
        };
        let (rd_key, node_key) = (key(&d.name), key(&r.node));
        let mut out = Outcome::default();
        let mut new_rd = d.clone();
        let mut enabled = self.tiebreaker_enabled(d);
        if !enabled && keep_tiebreaker {
            new_rd.props.insert(PROP_AUTO_TIEBREAKER.into(), "True".into());
            out.reply(ApiCallRc::info(OP, rc::INFO_PROP_SET, "Autotiebreaker automatically enabled due to --keep-tiebreaker"));
            enabled = true;
        }
        let needed = enabled && needs_tiebreaker(self.resources_of(&rd_key).filter(|x| key(&x.node) != node_key));
        let other_tiebreaker = self.resources_of(&rd_key).any(|x| is_tiebreaker(x) && key(&x.node) != node_key);
        let takeover = ApiCallRc::info(
            OP,
            rc::INFO_TIE_BREAKER_TAKEOVER,
            "The given resource will not be deleted but will be taken over as a linstor managed tiebreaker resource.",
        )
        .with_ref("RscDfn", &d.name)
        .with_ref("Node", &r.node);
        let mut stays = false;
        if needed && !other_tiebreaker {
            if is_tiebreaker(r) {
                if keep_tiebreaker {
                    out.reply(takeover);
                    stays = true;
                } else {
                    new_rd.props.insert(PROP_AUTO_TIEBREAKER.into(), "False".into());
                    out.reply(ApiCallRc::info(
                        OP,
                        rc::INFO_PROP_SET,
                        format!(
                            "Disabling auto-tiebreaker on resource-definition '{}' as tiebreaker resource was manually deleted",
                            d.name
                        ),
                    ));
                }
            } else if self.could_be_tiebreaker(r) {
                let mut tb = r.clone();
                tb.flags.insert(FLAG_TIE_BREAKER.into());
                out.put(Object::Rsc(tb));
                out.reply(takeover);
                stays = true;
            }
        }
        if new_rd != *d {
            out.changes.insert(0, Change::Put(Object::RscDfn(new_rd)));
        }
        if !stays {
            out.changes.extend(deleted.changes);
            out.replies.extend(deleted.replies);
        }
        Ok(out)
    }

    /// A replica LINSTOR would take over as the tiebreaker: DRBD diskless,
    /// active, every volume in a diskless pool, on a node that is not
    /// being evacuated or deleted. Cairn leaves DRBD clients out: the two
    /// flags exclude each other.
    fn could_be_tiebreaker(&self, r: &Resource) -> bool {
        let node_ok = self
            .nodes
            .get(&key(&r.node))
            .is_some_and(|n| !n.flags.contains("DELETE") && !n.flags.contains("EVACUATE") && !n.flags.contains("EVICTED"));
        node_ok
            && is_active_diskless(r)
            && !r.is_drbd_client()
            && r.flags.contains("DRBD_DISKLESS")
            && r.volumes.values().all(|v| v.provider_kind == ProviderKind::Diskless)
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

    /// `DrbdOptions/auto-add-quorum-tiebreaker` of a definition (its own,
    /// its group's, the controller's), on unless `false`.
    fn tiebreaker_enabled(&self, d: &ResourceDefinition) -> bool {
        self.rd_prop(d, PROP_AUTO_TIEBREAKER).is_none_or(|v| !v.eq_ignore_ascii_case("false"))
    }

    /// Adds or removes the tiebreaker of one definition.
    fn tiebreaker(&self, a: &mut After, changes: &[Change], obs: &dyn Observer, taken: &mut Taken, ctx: &mut Ctx, follow: &mut Outcome) {
        let want = self.tiebreaker_enabled(&a.rd) && needs_tiebreaker(a.rscs.values());
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
            .filter(|(_, n)| !n.flags.contains("DELETE") && !n.flags.contains("EVACUATE") && !n.flags.contains("EVICTED"))
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

    /// The node ids of a definition's deleted replicas that peers still
    /// have to forget, after a change (`changes`: the operation's and the
    /// follow-up's). As LINSTOR's satellites do when a peer is deleted
    /// (`DrbdLayer`: `del-peer`, then `forget-peer` on every diskful
    /// replica), each diskful replica left frees the bitmap slot of the
    /// deleted one; LINSTOR keeps the deleted replica, and with it its node
    /// id, until the satellites answered. Here the id stays taken until
    /// each of those replicas has reported it forgotten
    /// ([`Cluster::peers_forgot`]), or is gone or diskless itself.
    ///
    /// Beside it, the port each of those replicas used on its node
    /// (`freed_ports`), held as long as its id.
    fn forgetting<'a>(&self, a: &After, rd_key: &str, changes: impl Iterator<Item = &'a Change>) -> Forgetting {
        let holds = |id: u8| a.rscs.values().any(|r| r.drbd.is_some_and(|d| d.node_id == id));
        let diskful: BTreeSet<&String> = a.rscs.iter().filter(|(_, r)| r.drbd.is_some() && !r.is_diskless()).map(|(k, _)| k).collect();
        let mut map = a.rd.drbd.forgetting.clone();
        let mut ports = a.rd.drbd.freed_ports.clone();
        for ch in changes {
            if let Change::Delete(ObjKey::Rsc(rd, n)) = ch
                && rd == rd_key
                && let Some(d) = self.resources.get(&(rd.clone(), n.clone())).and_then(|r| r.drbd)
                && !holds(d.node_id)
            {
                map.entry(d.node_id).or_default().extend(diskful.iter().map(|k| (*k).clone()));
                ports.insert(d.node_id, (n.clone(), d.tcp_port));
            }
        }
        for nodes in map.values_mut() {
            nodes.retain(|k| diskful.contains(k));
        }
        map.retain(|id, nodes| !nodes.is_empty() && !holds(*id));
        ports.retain(|id, _| map.contains_key(id));
        (map, ports)
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
            let Some(chosen) = self.initial_sync_rsc(rd_key, vd) else { continue };
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

/// A node id a replica has to forget: definition key, node id, node key
/// of the replica.
pub type Forget = (String, u8, String);

/// A definition's `forgetting` and `freed_ports`, as stored.
type Forgetting = (BTreeMap<u8, BTreeSet<String>>, BTreeMap<u8, (String, u16)>);

impl Cluster {
    /// Every node id some replica still has to forget.
    pub fn pending_forgets(&self) -> Vec<Forget> {
        let mut out = Vec::new();
        for (rd_key, d) in &self.rsc_dfns {
            for (id, nodes) in &d.drbd.forgetting {
                out.extend(nodes.iter().map(|n| (rd_key.clone(), *id, n.clone())));
            }
        }
        out
    }

    /// Records that these replicas reported the node ids forgotten; an id
    /// every replica forgot can be handed out again.
    pub fn peers_forgot(&self, done: &[Forget]) -> Outcome {
        let mut changed: BTreeMap<String, ResourceDefinition> = BTreeMap::new();
        for (rd, id, node) in done {
            let rd_key = key(rd);
            let Some(d) = changed.get(&rd_key).or_else(|| self.rsc_dfns.get(&rd_key)) else { continue };
            if !d.drbd.forgetting.get(id).is_some_and(|n| n.contains(&key(node))) {
                continue;
            }
            let mut d = d.clone();
            if let Some(nodes) = d.drbd.forgetting.get_mut(id) {
                nodes.remove(&key(node));
                if nodes.is_empty() {
                    d.drbd.forgetting.remove(id);
                    d.drbd.freed_ports.remove(id);
                }
            }
            changed.insert(rd_key, d);
        }
        let mut out = Outcome::default();
        for d in changed.into_values() {
            out.put(Object::RscDfn(d));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use cairn_api::placement::ResourceMakeAvailable;
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
        /// Node keys where the definition's resource is in use.
        in_use: BTreeSet<String>,
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
        fn in_use(&self, k: &str, _: &str) -> bool {
            self.in_use.contains(k)
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
            self.commit_observed(|c, _, ctx| op(c, ctx))
        }

        /// [`T::commit`] of an operation that looks at the satellites.
        fn commit_observed(&mut self, op: impl FnOnce(&Cluster, &Obs, &mut Ctx) -> OpResult<Outcome>) -> OpResult<Outcome> {
            let mut out = op(&self.c, &self.obs, &mut self.ctx)?;
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

        /// `DELETE …/resources/{node}` as the REST handler runs it.
        fn user_delete(&mut self, node: &str, keep_tiebreaker: bool) -> Outcome {
            self.commit(|c, _| c.delete_resource_keeping_quorum("web", node, keep_tiebreaker)).unwrap()
        }

        fn make_available(&mut self, node: &str) -> Outcome {
            self.commit_observed(|c, o, ctx| c.make_available("web", node, &ResourceMakeAvailable::default(), o, ctx)).unwrap()
        }

        /// Every replica of `web` with its flags.
        fn flags(&self) -> BTreeMap<String, Vec<String>> {
            self.c.resources_of("WEB").map(|r| (r.node.clone(), r.flags.iter().cloned().collect())).collect()
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

    fn codes(out: &Outcome) -> Vec<i64> {
        out.replies.iter().map(|r| r.ret_code & rc::MASK_BITS_CODE).collect()
    }

    #[test]
    fn make_available_on_the_tiebreaker_makes_it_a_wanted_diskless_replica() {
        let mut t = T::new(&["n1", "n2", "n3"]);
        t.create("n1", &[]).unwrap();
        t.create("n2", &[]).unwrap();
        let tb = t.c.resources[&("WEB".to_string(), "N3".to_string())].clone();
        assert!(tb.flags.contains(FLAG_TIE_BREAKER));
        let out = t.make_available("n3");
        assert_eq!(out.replies[0].message, "Resource already deployed as requested");
        assert_eq!(out.replies[0].ret_code, 0, "LINSTOR's MASK_SUCCESS");
        let r = &t.c.resources[&("WEB".to_string(), "N3".to_string())];
        assert_eq!(r.flags.iter().map(String::as_str).collect::<Vec<_>>(), ["DISKLESS", "DRBD_DISKLESS"]);
        assert_eq!((r.uuid.as_str(), r.drbd), (tb.uuid.as_str(), tb.drbd), "the same replica, not a new one");
        assert!(t.tiebreakers().is_empty(), "no tiebreaker placed elsewhere");
        assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("majority"), "2 diskful + 1 diskless");
        // Again: nothing changes.
        assert!(t.make_available("n3").changes.is_empty());
        // A deactivated replica is activated.
        t.commit(|c, _| c.set_resource_active("web", "n3", false, false)).unwrap();
        assert_eq!(t.tiebreakers(), Vec::<String>::new(), "no fourth node to place one on");
        t.make_available("n3");
        assert!(!t.c.resources[&("WEB".to_string(), "N3".to_string())].flags.contains(crate::resource::FLAG_INACTIVE));
    }

    #[test]
    fn deleting_a_diskless_replica_that_quorum_needs_makes_it_the_tiebreaker() {
        for keep in [true, false] {
            let mut t = T::new(&["n1", "n2", "n3"]);
            t.create("n1", &[]).unwrap();
            t.create("n2", &[]).unwrap();
            t.make_available("n3");
            let client = t.c.resources[&("WEB".to_string(), "N3".to_string())].clone();
            let out = t.user_delete("n3", keep);
            assert_eq!(codes(&out), [rc::INFO_TIE_BREAKER_TAKEOVER], "keep={keep}: {:?}", out.replies);
            let r = &t.c.resources[&("WEB".to_string(), "N3".to_string())];
            assert!(r.flags.contains(FLAG_TIE_BREAKER) && r.flags.contains("DRBD_DISKLESS"), "keep={keep}: {:?}", r.flags);
            assert_eq!((r.uuid.as_str(), r.drbd), (client.uuid.as_str(), client.drbd));
            assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("majority"));
            assert_eq!(t.rd_prop(PROP_AUTO_TIEBREAKER), None, "keep={keep}: nothing to switch on");
        }
    }

    #[test]
    fn a_diskless_replica_nobody_needs_is_deleted_even_with_keep_tiebreaker() {
        let mut t = T::new(&["n1", "n2", "n3", "n4"]);
        for n in ["n1", "n2", "n3"] {
            t.create(n, &[]).unwrap();
        }
        t.make_available("n4");
        let out = t.user_delete("n4", true);
        assert_eq!(codes(&out), [rc::DELETED]);
        assert!(!t.flags().contains_key("n4"));
        assert!(t.tiebreakers().is_empty());
        // A diskful replica is deleted; Cairn has no toggle-disk to turn it
        // into the tiebreaker, so one is placed on another node.
        let out = t.user_delete("n3", true);
        assert!(codes(&out).contains(&rc::DELETED), "{:?}", out.replies);
        assert!(!t.flags().contains_key("n3"));
        assert_eq!(t.tiebreakers(), ["n4"]);
    }

    #[test]
    fn deleting_the_tiebreaker_keeps_it_with_keep_tiebreaker_and_switches_the_feature_off_without() {
        let mut t = T::new(&["n1", "n2", "n3", "n4"]);
        t.create("n1", &[]).unwrap();
        t.create("n2", &[]).unwrap();
        let tb = t.tiebreakers()[0].clone();
        let out = t.user_delete(&tb, true);
        assert_eq!(codes(&out), [rc::INFO_TIE_BREAKER_TAKEOVER]);
        assert!(out.changes.is_empty(), "{:?}", out.changes);
        assert_eq!(t.tiebreakers(), std::slice::from_ref(&tb));
        let out = t.user_delete(&tb, false);
        assert_eq!(codes(&out), [rc::INFO_PROP_SET, rc::DELETED], "{:?}", out.replies);
        assert!(out.replies[0].message.contains("Disabling auto-tiebreaker on resource-definition 'web'"));
        assert!(t.tiebreakers().is_empty() && !t.flags().contains_key(&tb));
        assert_eq!(t.rd_prop(PROP_AUTO_TIEBREAKER).as_deref(), Some("False"));
        assert_eq!(t.rd_prop(PROP_QUORUM).as_deref(), Some("off"));
        // It stays off: the next change places none.
        let other = ["n3", "n4"].into_iter().find(|n| *n != tb).unwrap();
        t.create(other, &[]).unwrap();
        t.user_delete(other, false);
        assert!(t.tiebreakers().is_empty());
        // keep_tiebreaker switches it on again, and the client being
        // deleted becomes the tiebreaker.
        t.make_available(other);
        let out = t.user_delete(other, true);
        assert_eq!(codes(&out), [rc::INFO_PROP_SET, rc::INFO_TIE_BREAKER_TAKEOVER], "{:?}", out.replies);
        assert_eq!(out.replies[0].message, "Autotiebreaker automatically enabled due to --keep-tiebreaker");
        assert_eq!(t.rd_prop(PROP_AUTO_TIEBREAKER).as_deref(), Some("True"));
        assert_eq!(t.tiebreakers(), [other]);
    }

    #[test]
    fn a_deleted_replicas_node_id_is_not_reused_until_every_diskful_peer_forgot_it() {
        let mut t = T::new(&["n1", "n2", "n3", "n4", "n5"]);
        for n in ["n1", "n2", "n3"] {
            t.create(n, &[]).unwrap();
        }
        t.create("n4", &["DRBD_DISKLESS"]).unwrap();
        let id = |t: &T, n: &str| t.c.resources[&("WEB".to_string(), n.to_ascii_uppercase())].drbd.map(|d| d.node_id);
        assert_eq!([id(&t, "n1"), id(&t, "n2"), id(&t, "n3"), id(&t, "n4")], [Some(0), Some(1), Some(2), Some(3)]);
        let forgetting = |t: &T| {
            t.c.rsc_dfns["WEB"].drbd.forgetting.iter().map(|(id, n)| (*id, n.iter().cloned().collect::<Vec<_>>())).collect::<Vec<_>>()
        };
        let forget_peers = |t: &T, n: &str| desired_for_node(&t.c, n).1[0].drbd.clone().unwrap().forget_peers;
        t.delete("n3");
        // The diskful replicas left have a bitmap slot for node id 2; the
        // diskless client has none.
        assert_eq!(forgetting(&t), [(2, vec!["N1".to_string(), "N2".to_string()])]);
        assert_eq!((forget_peers(&t, "N1"), forget_peers(&t, "N4")), (vec![2], vec![]));
        // Its port on n3 stays taken too: n1 and n2 may still have it in
        // their configuration, where drbdadm refuses a second user.
        let freed = t.c.rsc_dfns["WEB"].drbd.freed_ports.clone();
        let (node, port) = freed.get(&2).cloned().expect("n3's port held");
        assert_eq!(node, "N3");
        let next = t.c.alloc_port("N3", None, &mut crate::numbers::Taken::default(), 0).unwrap();
        assert_ne!(next, port);
        assert!(t.c.alloc_port("N3", Some(i64::from(port)), &mut crate::numbers::Taken::default(), 0).is_err());
        assert_eq!(t.c.pending_forgets().len(), 2);
        // Not handed out meanwhile, nor taken when asked for.
        t.create("n5", &[]).unwrap();
        assert_eq!(id(&t, "n5"), Some(4));
        let req = ResourceCreate {
            resource: WireRsc { node_name: "n3".into(), ..Default::default() },
            drbd_node_id: Some(2),
            ..Default::default()
        };
        let e = t.commit(|c, ctx| c.create_resources("web", &[req], None, ctx)).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_INVLD_NODE_ID);
        assert!(e.rc.message.contains("not forgotten yet"), "{}", e.rc.message);
        // n1 reports it forgotten (twice: nothing changes the second time).
        let done = [("web".to_string(), 2, "n1".to_string())];
        t.commit(|c, _| Ok(c.peers_forgot(&done))).unwrap();
        assert!(t.c.peers_forgot(&done).changes.is_empty());
        assert_eq!(forgetting(&t), [(2, vec!["N2".to_string()])]);
        assert!(forget_peers(&t, "N1").is_empty());
        assert!(t.c.rsc_dfns["WEB"].drbd.freed_ports.contains_key(&2), "held until every peer forgot");
        // n2 goes itself: nothing left to wait for about id 2; its own id
        // waits for n1 and n5 (n5 never knew n3, it is asked all the same).
        t.delete("n2");
        assert_eq!(forgetting(&t), [(1, vec!["N1".to_string(), "N5".to_string()])]);
        assert_eq!(t.c.rsc_dfns["WEB"].drbd.freed_ports.keys().copied().collect::<Vec<_>>(), [1], "n3's port free again");
        t.create("n3", &[]).unwrap();
        assert_eq!(id(&t, "n3"), Some(2));
        t.commit(|c, _| Ok(c.peers_forgot(&[("WEB".into(), 1, "N1".into()), ("WEB".into(), 1, "N5".into())]))).unwrap();
        assert!(forgetting(&t).is_empty());
        t.create("n2", &[]).unwrap();
        assert_eq!(id(&t, "n2"), Some(1));
    }

    #[test]
    fn a_replica_taking_the_tiebreakers_place_keeps_its_node_id_and_frees_nothing() {
        let mut t = T::new(&["n1", "n2", "n3"]);
        t.create("n1", &[]).unwrap();
        t.create("n2", &[]).unwrap();
        t.create("n3", &[]).unwrap();
        let r = &t.c.resources[&("WEB".to_string(), "N3".to_string())];
        assert_eq!((r.drbd.map(|d| d.node_id), r.is_diskless()), (Some(2), false));
        assert!(t.c.rsc_dfns["WEB"].drbd.forgetting.is_empty());
        // The tiebreaker going because the count turned odd frees its id.
        let mut t = T::new(&["n1", "n2", "n3", "n4"]);
        t.create("n1", &[]).unwrap();
        t.create("n2", &[]).unwrap();
        t.create("n4", &[]).unwrap();
        assert!(t.tiebreakers().is_empty());
        assert_eq!(t.c.rsc_dfns["WEB"].drbd.forgetting.keys().copied().collect::<Vec<_>>(), [2]);
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
    fn a_volume_added_while_in_use_starts_on_the_replica_in_use() {
        let mut t = T::new(&["n1", "n2", "n3"]);
        for n in ["n1", "n2", "n3"] {
            t.create(n, &[]).unwrap();
        }
        t.commit(|c, _| Ok(c.drbd_initialized(&[("web".into(), 0)]))).unwrap();
        let sync = |t: &T, node: &str, nr: usize| {
            let d = desired_for_node(&t.c, node).1.first().and_then(|r| r.drbd.clone()).unwrap();
            d.volumes[nr].initial_sync.unwrap_or(d.initial_sync)
        };
        // In use on n2 (not the definition's chosen n1): volume 1 starts there.
        t.obs.in_use.insert("N2".into());
        let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(4096), ..Default::default() }, ..Default::default() };
        t.commit(|c, ctx| c.create_vlm_dfn("web", &vd, ctx)).unwrap();
        assert_eq!(["N1", "N2", "N3"].map(|n| sync(&t, n, 1)), [false, true, false]);
        assert_eq!(["N1", "N2", "N3"].map(|n| sync(&t, n, 0)), [true, false, false], "volume 0 keeps its choice");
        let waiting = t.c.awaiting_drbd_init().into_iter().map(|a| (a.volume, a.node)).collect::<Vec<_>>();
        assert_eq!(waiting, [(1, "N2".to_string())]);
        // That replica goes before the volume was UpToDate: the
        // definition's choice serves.
        t.delete("n2");
        assert!(sync(&t, "N1", 1));
        // Not in use anywhere: the definition's choice.
        t.obs.in_use.clear();
        t.commit(|c, ctx| c.create_vlm_dfn("web", &vd, ctx)).unwrap();
        assert!(sync(&t, "N1", 2) && !sync(&t, "N3", 2));
        assert_eq!(desired_for_node(&t.c, "N1").1[0].drbd.as_ref().unwrap().volumes[2].initial_sync, None);
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

    #[test]
    fn a_drbd_client_is_no_tiebreaker_and_is_set_by_create_modify_and_toggle_disk() {
        use crate::toggle_disk::ToggleOp;
        use cairn_api::resource::ResourceModify;
        let rsc = |t: &T, node: &str| t.c.resources[&("WEB".to_string(), node.to_ascii_uppercase())].clone();
        let drbd_flags = |t: &T, node: &str| {
            let api = rsc(t, node).to_api(&|_| None, &|_| None, None, None);
            api.resource.layer_object.and_then(|l| l.drbd).map(|d| d.flags).unwrap_or_default()
        };
        let mut t = T::new(&["n1", "n2", "n3", "n4"]);
        t.create("n1", &[]).unwrap();
        t.create("n2", &[]).unwrap();
        // A client made with drbd_client does not take the tiebreaker's
        // role (a plain diskless replica would: see above).
        let tb = t.tiebreakers()[0].clone();
        let free = ["n3", "n4"].into_iter().find(|n| *n != tb).unwrap();
        let req = ResourceCreate {
            resource: WireRsc { node_name: free.into(), ..Default::default() },
            drbd_client: Some(true),
            ..Default::default()
        };
        t.commit(|c, ctx| c.create_resources("web", &[req], None, ctx)).unwrap();
        let client = rsc(&t, free);
        assert!(client.is_drbd_client() && client.is_diskless() && client.flags.contains("DRBD_DISKLESS"), "{client:?}");
        assert_eq!(t.tiebreakers(), vec![tb.clone()], "a client does not replace the tiebreaker");
        assert_eq!(drbd_flags(&t, free), ["DISKLESS", "CLIENT"]);
        // Modify: back to a plain diskless replica, which does replace it.
        let modify = |t: &mut T, node: &str, client: Option<bool>| {
            let req = ResourceModify { drbd_client: client, ..Default::default() };
            t.commit(|c, _| c.modify_resource("web", node, &req))
        };
        modify(&mut t, free, Some(false)).unwrap();
        assert!(!rsc(&t, free).is_drbd_client());
        assert!(t.tiebreakers().is_empty());
        // Toggle-disk into a client: flags only (already diskless), and the
        // tiebreaker comes back.
        let out = toggle(&mut t, free, ToggleOp::Client, None, false).unwrap();
        assert!(codes(&out).contains(&rc::MODIFIED), "{:?}", out.replies);
        assert!(rsc(&t, free).is_drbd_client());
        assert_eq!(t.tiebreakers().len(), 1);
        let out = toggle(&mut t, free, ToggleOp::Client, None, false).unwrap();
        assert_eq!(codes(&out), vec![rc::INFO_NOOP]);
        assert!(out.replies[0].message.ends_with("is already a diskless client"), "{:?}", out.replies);
        // INTO_DRBD_DISKLESS clears it again.
        toggle(&mut t, free, ToggleOp::Diskless, None, false).unwrap();
        assert!(!rsc(&t, free).is_drbd_client());
        // A replica with a disk: refused, and the tiebreaker cannot be one.
        let e = modify(&mut t, "n1", Some(true)).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_INVLD_CONF);
        // A tiebreaker made a client stops being the tiebreaker.
        t.delete(free);
        let tb = t.tiebreakers()[0].clone();
        modify(&mut t, &tb, Some(true)).unwrap();
        let r = rsc(&t, &tb);
        assert!(r.is_drbd_client() && !r.flags.contains(FLAG_TIE_BREAKER) && r.flags.contains("DRBD_DISKLESS"), "{r:?}");
        assert_eq!(t.tiebreakers().len(), 1, "another node becomes the tiebreaker");
        assert_ne!(t.tiebreakers()[0], tb);
        // Diskful toggled from a client loses the flag.
        let out = toggle(&mut t, &tb, ToggleOp::Diskful, None, false).unwrap();
        assert!(codes(&out).contains(&rc::MODIFIED), "{:?}", out.replies);
        assert!(!rsc(&t, &tb).is_drbd_client());
    }

    #[test]
    fn the_tiebreaker_flag_is_set_and_cleared_by_a_resource_modify() {
        use cairn_api::resource::ResourceModify;
        let modify = |t: &mut T, node: &str, tb: Option<bool>, client: Option<bool>| {
            let req = ResourceModify { drbd_tiebreaker: tb, drbd_client: client, ..Default::default() };
            t.commit(|c, _| c.modify_resource("web", node, &req))
        };
        let mut t = T::new(&["n1", "n2", "n3"]);
        t.create("n1", &[]).unwrap();
        t.create("n2", &[]).unwrap();
        assert_eq!(t.tiebreakers(), vec!["n3"]);
        // Cleared: a plain diskless replica that stays (it still gives
        // quorum; no new tiebreaker is placed beside it).
        modify(&mut t, "n3", Some(false), None).unwrap();
        assert!(t.tiebreakers().is_empty());
        let r = &t.c.resources[&("WEB".to_string(), "N3".to_string())];
        assert!(r.flags.contains("DRBD_DISKLESS") && r.is_diskless(), "{:?}", r.flags);
        // Set again.
        modify(&mut t, "n3", Some(true), None).unwrap();
        assert_eq!(t.tiebreakers(), vec!["n3"]);
        // Refused: both flags, and a replica with a disk.
        let e = modify(&mut t, "n3", Some(true), Some(true)).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_INVLD_CONF);
        let e = modify(&mut t, "n1", Some(true), None).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_INVLD_CONF);
        assert!(!t.c.resources[&("WEB".to_string(), "N1".to_string())].flags.contains(FLAG_TIE_BREAKER));
    }
}
