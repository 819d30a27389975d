//! Node evacuate, restore and auto-evict (LINSTOR's
//! `CtrlNodeApiCallHandler.evacuateNode` / `restoreNode` / `declareEvicted`,
//! `ReconnectorTask`, `CtrlRscAutoRePlaceRscHelper`).
//!
//! Evacuate marks the node `EVACUATE` (the autoplacer and the tiebreaker
//! skip it) and each of its replicas `EVACUATE`. A replica that is
//! diskless, not UpToDate, or whose definition has enough UpToDate replicas
//! elsewhere is deleted at once; otherwise a replacement is made elsewhere:
//! a diskless peer gets a disk (toggle-disk), or the autoplacer places a new
//! replica. The replacement carries `DISK_ADDING` and `MigrateFrom`, so the
//! controller's follow-up loop deletes the evacuated replica once the
//! replacement reports UpToDate (the same step as migrate-disk). LINSTOR's
//! request waits for those migrations; Cairn answers once the replacements
//! are registered and the loop finishes them.
//!
//! Auto-evict: a satellite node offline longer than
//! `DrbdOptions/AutoEvictAfterTime` minutes is declared `EVICTED` (within
//! `AutoEvictMaxDisconnectedNodes` percent of the nodes offline, and when
//! `AutoEvictAllowEviction` allows it); its DRBD replicas become `EVICTED`
//! (inactive) and their definitions get new replicas up to
//! `AutoEvictMinReplicaCount`. Time comes in from the caller.

use std::collections::BTreeMap;

use cairn_api::rc::{self, ApiCallRc};

use crate::cluster::{Change, Cluster, ObjKey, Object, Outcome};
use crate::error::OpResult;
use crate::name::key;
use crate::placement::Observer;
use crate::resource::{FLAG_INACTIVE, Resource};
use crate::toggle_disk::{FLAG_DISK_ADDING, PROP_MIGRATE_FROM, ToggleDisk, ToggleOp};
use crate::{Ctx, Props};

pub const FLAG_EVACUATE: &str = "EVACUATE";
pub const FLAG_EVICTED: &str = "EVICTED";
/// A replica that was inactive before its node was evicted (it stays so
/// after a restore).
pub const FLAG_INACTIVE_BEFORE_EVICTION: &str = "INACTIVE_BEFORE_EVICTION";
pub const PROP_AUTO_EVICT_AFTER_TIME: &str = "DrbdOptions/AutoEvictAfterTime";
pub const PROP_AUTO_EVICT_ALLOW: &str = "DrbdOptions/AutoEvictAllowEviction";
pub const PROP_AUTO_EVICT_MAX_DISCONNECTED: &str = "DrbdOptions/AutoEvictMaxDisconnectedNodes";
pub const PROP_AUTO_EVICT_MIN_REPLICAS: &str = "DrbdOptions/AutoEvictMinReplicaCount";

const MOD_NODE: i64 = rc::MASK_MOD | rc::MASK_NODE;

/// What the controller observed that evacuation decisions need.
pub trait Evidence {
    /// All volumes of the replica UpToDate; `unknown` when the satellite
    /// reported no DRBD state for it.
    fn up_to_date(&self, rd_key: &str, node_key: &str, unknown: bool) -> bool;
}

impl<F: Fn(&str, &str, bool) -> bool> Evidence for F {
    fn up_to_date(&self, rd_key: &str, node_key: &str, unknown: bool) -> bool {
        self(rd_key, node_key, unknown)
    }
}

fn bool_prop(v: Option<&String>, dflt: bool) -> bool {
    match v.map(|s| s.to_ascii_lowercase()) {
        Some(s) if s == "true" || s == "yes" => true,
        Some(s) if s == "false" || s == "no" => false,
        _ => dflt,
    }
}

impl Cluster {
    fn place_count_of(&self, rd_key: &str) -> i64 {
        self.rsc_dfns
            .get(rd_key)
            .and_then(|d| self.rsc_grps.get(&key(&d.resource_group)))
            .and_then(|g| g.select_filter.place_count)
            .unwrap_or(crate::autoplace::DEFAULT_PLACE_COUNT)
    }

    /// `PUT /v1/nodes/{node}/evacuate`. `targets` / `avoid`: the request's
    /// `target` / `do_not_target` node lists.
    pub fn evacuate_node(
        &self,
        node: &str,
        targets: Option<&[String]>,
        avoid: Option<&[String]>,
        obs: &dyn Observer,
        ev: &dyn Evidence,
        ctx: &mut Ctx,
    ) -> OpResult<Outcome> {
        let n = self.node(node, MOD_NODE)?;
        let nk = key(&n.name);
        let mut out = Outcome::default();
        let mut marked = n.clone();
        marked.flags.insert(FLAG_EVACUATE.into());
        let mut scratch = self.clone();
        scratch.apply([Change::Put(Object::Node(marked.clone()))]);
        out.put(Object::Node(marked));
        // Nodes a replacement may go to.
        let allowed: Option<Vec<String>> = match (targets.filter(|t| !t.is_empty()), avoid.filter(|a| !a.is_empty())) {
            (Some(t), _) => Some(t.to_vec()),
            (None, Some(a)) => {
                let a: Vec<String> = a.iter().map(|x| key(x)).collect();
                Some(self.nodes.iter().filter(|(k, _)| !a.contains(k)).map(|(_, n)| n.name.clone()).collect())
            }
            (None, None) => None,
        };
        let allowed_key = |k: &str| allowed.as_ref().is_none_or(|l| l.iter().any(|x| key(x) == k));
        let rscs: Vec<Resource> = self.resources_on(&nk).cloned().collect();
        for r in rscs {
            let rd_key = key(&r.resource_definition);
            let mut flagged = r.clone();
            flagged.flags.insert(FLAG_EVACUATE.into());
            scratch.apply([Change::Put(Object::Rsc(flagged.clone()))]);
            out.put(Object::Rsc(flagged));
            if !r.has_drbd() {
                out.reply(ApiCallRc::warning(
                    0,
                    rc::WARN_NOT_EVACUATING,
                    format!("Resource '{}' cannot be evacuated as it is not a DRBD resource", r.resource_definition),
                ));
                continue;
            }
            // Already being replaced (an evacuation asked again).
            if self.resources_of(&rd_key).any(|p| p.props.get(PROP_MIGRATE_FROM).is_some_and(|f| key(f) == nk)) {
                continue;
            }
            // LINSTOR ships the node's snapshots to the replacement first;
            // Cairn does not move snapshots, so such a replica stays.
            if let Some(snap) = self.snapshots_of(&rd_key).find(|s| s.nodes.contains_key(&nk)) {
                out.reply(
                    ApiCallRc::warning(
                        0,
                        rc::WARN_NOT_EVACUATING,
                        format!("Resource '{}' cannot be evacuated as it has snapshots on the node", r.resource_definition),
                    )
                    .with_cause(format!("Snapshot '{}' is kept on node '{}'; Cairn does not move snapshots.", snap.name, n.name))
                    .with_correction("Delete the node's snapshots of the resource, then evacuate the node again."),
                );
                continue;
            }
            let up_to_date_peers = self
                .resources_of(&rd_key)
                .filter(|p| key(&p.node) != nk && !p.is_diskless())
                .filter(|p| ![FLAG_EVACUATE, "DELETE", FLAG_INACTIVE].iter().any(|f| p.flags.contains(*f)))
                .filter(|p| ev.up_to_date(&rd_key, &key(&p.node), false))
                .count() as i64;
            let just_delete = r.is_diskless() || !ev.up_to_date(&rd_key, &nk, true) || up_to_date_peers >= self.place_count_of(&rd_key);
            if just_delete {
                match scratch.delete_resource(&r.resource_definition, &n.name) {
                    Ok(o) => {
                        scratch.apply(o.changes.clone());
                        out.changes.extend(o.changes);
                        out.replies.extend(o.replies);
                    }
                    Err(e) => out.reply(*e.rc),
                }
                continue;
            }
            match scratch.replacement(&r, Some(&n.name), allowed.clone(), &allowed_key, obs, ctx) {
                Some(o) => {
                    scratch.apply(o.changes.clone());
                    out.changes.extend(o.changes);
                    out.replies.extend(o.replies);
                }
                None => out.reply(ApiCallRc::warning(
                    0,
                    rc::WARN_NOT_EVACUATING,
                    format!("Resource '{}' cannot be evacuated as no available storage pool was found", r.resource_definition),
                )),
            }
        }
        Ok(out)
    }

    /// A replica that takes over from `r`: a diskless peer on an allowed
    /// node gets a disk, else the autoplacer places one more. With `from`
    /// (an evacuation), it carries `DISK_ADDING` and `MigrateFrom`.
    fn replacement(
        &self,
        r: &Resource,
        from: Option<&str>,
        allowed: Option<Vec<String>>,
        allowed_key: &dyn Fn(&str) -> bool,
        obs: &dyn Observer,
        ctx: &mut Ctx,
    ) -> Option<Outcome> {
        let rd_key = key(&r.resource_definition);
        let diskless: Vec<String> = self
            .resources_of(&rd_key)
            .filter(|p| p.is_diskless() && key(&p.node) != key(&r.node) && allowed_key(&key(&p.node)))
            .filter(|p| self.nodes.get(&key(&p.node)).is_some_and(|n| !n.flags.contains(FLAG_EVACUATE) && !n.flags.contains(FLAG_EVICTED)))
            .map(|p| p.node.clone())
            .collect();
        let toggle = ToggleDisk {
            op: Some(ToggleOp::Diskful),
            migrate_from: from.map(str::to_string),
            diskful_by: Some("auto-placer"),
            ..Default::default()
        };
        for node in diskless {
            if let Ok(o) = self.toggle_disk(&r.resource_definition, &node, &toggle, obs, &|_| false, ctx) {
                return Some(o);
            }
        }
        let mut o = self.place_more(&r.resource_definition, 1, allowed, obs, ctx).ok()?;
        let Some(from) = from else { return Some(o) };
        for ch in &mut o.changes {
            if let Change::Put(Object::Rsc(new)) = ch {
                new.flags.insert(FLAG_DISK_ADDING.into());
                new.props.insert(PROP_MIGRATE_FROM.into(), from.to_string());
                new.props.insert(crate::toggle_disk::PROP_DISKFUL_BY.into(), "auto-placer".into());
            }
        }
        Some(o)
    }

    /// `PUT /v1/nodes/{node}/restore`: the node loses `EVACUATE` and
    /// `EVICTED`, its replicas too (an evicted one that was inactive before
    /// stays inactive). Replacements made for an unfinished evacuation stay
    /// but no longer delete the node's replica once they are UpToDate.
    /// `delete_resources`: the node's replicas are deleted instead, except
    /// the last diskful one of a definition. `delete_snapshots`: the
    /// node's part of every snapshot goes (a snapshot kept nowhere else
    /// goes whole), as LINSTOR's snapshot delete on that node.
    pub fn restore_node(&self, node: &str, delete_resources: bool, delete_snapshots: bool) -> OpResult<Outcome> {
        let n = self.node(node, MOD_NODE)?;
        let nk = key(&n.name);
        if !n.flags.contains(FLAG_EVACUATE) && !n.flags.contains(FLAG_EVICTED) {
            return Err(crate::OpError::new(0, 0, format!("Node '{}' is neither evicted nor evacuated.", n.name)));
        }
        let mut out = Outcome::default();
        let mut restored = n.clone();
        restored.flags.remove(FLAG_EVACUATE);
        restored.flags.remove(FLAG_EVICTED);
        out.put(Object::Node(restored));
        for r in self.resources_on(&nk) {
            let rd_key = key(&r.resource_definition);
            if delete_resources {
                let last = r.has_drbd()
                    && !self.resources_of(&rd_key).any(|o| key(&o.node) != nk && !o.is_diskless() && !o.flags.contains("DELETE"));
                if last {
                    out.reply(ApiCallRc::warning(
                        0,
                        rc::WARN_STLT_NOT_UPDATED,
                        format!(
                            "Not deleting resource {} since it is the last non-deleting diskful resource of this resource-definition",
                            r.resource_definition
                        ),
                    ));
                } else {
                    out.delete(ObjKey::Rsc(rd_key, nk.clone()));
                    out.reply(
                        ApiCallRc::success(
                            rc::MASK_DEL | rc::MASK_RSC,
                            rc::DELETED,
                            format!("Resource '{}' on node '{}' deleted.", r.resource_definition, r.node),
                        )
                        .with_ref("RscDfn", &r.resource_definition)
                        .with_ref("Node", &r.node),
                    );
                }
                continue;
            }
            let mut next = r.clone();
            next.flags.remove(FLAG_EVACUATE);
            if next.flags.remove(FLAG_EVICTED) && !next.flags.remove(FLAG_INACTIVE_BEFORE_EVICTION) {
                next.flags.remove(FLAG_INACTIVE);
            }
            if next != *r {
                out.put(Object::Rsc(next));
            }
            for p in self.resources_of(&rd_key) {
                if p.props.get(PROP_MIGRATE_FROM).is_some_and(|f| key(f) == nk) {
                    let mut kept = p.clone();
                    kept.props.remove(PROP_MIGRATE_FROM);
                    out.put(Object::Rsc(kept));
                }
            }
        }
        if delete_snapshots {
            let on_node: Vec<(String, String)> = self
                .snapshots
                .values()
                .filter(|s| s.nodes.contains_key(&nk))
                .map(|s| (s.resource_definition.clone(), s.name.clone()))
                .collect();
            for (rd, snap) in on_node {
                let o = self.delete_snapshot(&rd, &snap, std::slice::from_ref(&n.name))?;
                out.changes.extend(o.changes);
                out.replies.extend(o.replies);
            }
        }
        out.reply(ApiCallRc::success(rc::MASK_NODE, 0, format!("Successfully restored node {}", n.name)).with_ref("Node", &n.name));
        Ok(out)
    }

    /// The first value of `prop` on the node, else the controller's.
    fn node_or_ctrl<'a>(&'a self, node_props: &'a Props, prop: &str) -> Option<&'a String> {
        node_props.get(prop).or_else(|| self.ctrl_props.get(prop))
    }

    /// Auto-evict (LINSTOR's `ReconnectorTask`): the satellite nodes to
    /// declare evicted now, given since when (ms) each offline node is
    /// offline. Nodes whose time is not up, that do not allow eviction, or
    /// all of them while more than `AutoEvictMaxDisconnectedNodes` percent
    /// of the nodes are offline, are not.
    pub fn nodes_to_evict(&self, offline_since: &BTreeMap<String, i64>, now_ms: i64) -> Vec<String> {
        let offline: Vec<(&String, i64)> = offline_since
            .iter()
            .filter(|(k, _)| self.nodes.get(*k).is_some_and(|n| n.node_type.has_satellite() && !n.flags.contains(FLAG_EVICTED)))
            .map(|(k, t)| (k, *t))
            .collect();
        let total = self.nodes.len() as f64;
        let mut out = Vec::new();
        for (k, since) in &offline {
            let Some(n) = self.nodes.get(*k) else { continue };
            let minutes = self.node_or_ctrl(&n.props, PROP_AUTO_EVICT_AFTER_TIME).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(720);
            if now_ms < since.saturating_add(minutes.saturating_mul(60_000)) {
                continue;
            }
            if !bool_prop(self.node_or_ctrl(&n.props, PROP_AUTO_EVICT_ALLOW), true) {
                continue;
            }
            let pct =
                self.node_or_ctrl(&n.props, PROP_AUTO_EVICT_MAX_DISCONNECTED).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(34);
            let max = (pct as f64 * total / 100.0).round() as usize;
            if offline.len() <= max {
                out.push(n.name.clone());
            }
        }
        out
    }

    /// Declares a node evicted (LINSTOR's `declareEvicted`): the node and
    /// its DRBD replicas get `EVICTED` (the replicas stop counting, as
    /// inactive ones), and each definition gets new replicas up to
    /// `AutoEvictMinReplicaCount` (at most the group's place count) on the
    /// other nodes.
    pub fn declare_evicted(&self, node: &str, obs: &dyn Observer, ctx: &mut Ctx) -> OpResult<Outcome> {
        let n = self.node(node, MOD_NODE)?;
        let nk = key(&n.name);
        let mut out = Outcome::default();
        let mut evicted = n.clone();
        evicted.flags.insert(FLAG_EVICTED.into());
        let mut scratch = self.clone();
        scratch.apply([Change::Put(Object::Node(evicted.clone()))]);
        out.put(Object::Node(evicted));
        let rscs: Vec<Resource> = self.resources_on(&nk).filter(|r| r.has_drbd()).cloned().collect();
        for r in &rscs {
            let mut next = r.clone();
            if next.flags.contains(FLAG_INACTIVE) {
                next.flags.insert(FLAG_INACTIVE_BEFORE_EVICTION.into());
            }
            next.flags.insert(FLAG_EVICTED.into());
            next.flags.insert(FLAG_INACTIVE.into());
            scratch.apply([Change::Put(Object::Rsc(next.clone()))]);
            out.put(Object::Rsc(next));
        }
        for r in &rscs {
            let rd_key = key(&r.resource_definition);
            let Some(d) = self.rsc_dfns.get(&rd_key) else { continue };
            let place_count = self.place_count_of(&rd_key);
            let min = self
                .rd_prop(d, PROP_AUTO_EVICT_MIN_REPLICAS)
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(place_count)
                .min(place_count);
            let current = scratch
                .resources_of(&rd_key)
                .filter(|p| p.has_drbd() && !p.is_diskless() && !p.flags.contains("DELETE") && !p.flags.contains(FLAG_INACTIVE))
                .filter(|p| scratch.nodes.get(&key(&p.node)).is_some_and(|n| !n.flags.contains(FLAG_EVICTED)))
                .count() as i64;
            if current == 0 {
                out.reply(ApiCallRc::warning(
                    rc::MASK_RSC,
                    rc::WARN_NOT_EVACUATING,
                    format!("There are no diskful resources of resource definition {} that are connected", r.resource_definition),
                ));
                continue;
            }
            if current >= min {
                continue;
            }
            for _ in current..min {
                match scratch.replacement(r, None, None, &|_| true, obs, ctx) {
                    Some(o) => {
                        scratch.apply(o.changes.clone());
                        out.changes.extend(o.changes);
                        out.replies.extend(o.replies);
                    }
                    None => {
                        out.reply(ApiCallRc::warning(
                            rc::MASK_RSC,
                            rc::WARN_NOT_EVACUATING,
                            format!(
                                "Resource '{}' cannot be replaced elsewhere as no available storage pool was found",
                                r.resource_definition
                            ),
                        ));
                        break;
                    }
                }
            }
        }
        out.reply(
            ApiCallRc::warning(MOD_NODE, rc::WARN_NODE_EVICTED, format!("Node '{}' is evicted.", n.name))
                .with_cause("It was offline longer than DrbdOptions/AutoEvictAfterTime.")
                .with_correction(format!("Use node restore {} to reconnect it.", n.name))
                .with_ref("Node", &n.name),
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::testing::{satellite, seeded};
    use crate::{Cluster, Ctx};

    const MIN: i64 = 60_000;

    fn cluster(nodes: &[(&str, &[(&str, &str)])], ctrl: &[(&str, &str)]) -> Cluster {
        let mut c = seeded();
        let mut ctx = Ctx::deterministic();
        for (n, props) in nodes {
            let out = c.create_node(&satellite(n, props), &mut ctx).expect("node");
            c.apply(out.changes);
        }
        for (k, v) in ctrl {
            c.ctrl_props.insert(k.to_string(), v.to_string());
        }
        c
    }

    fn since(nodes: &[(&str, i64)]) -> BTreeMap<String, i64> {
        nodes.iter().map(|(n, t)| (crate::name::key(n), *t)).collect()
    }

    #[test]
    fn a_node_is_evicted_once_its_offline_time_is_up() {
        let c = cluster(&[("na", &[]), ("nb", &[]), ("nc", &[])], &[(super::PROP_AUTO_EVICT_AFTER_TIME, "2")]);
        let off = since(&[("na", 1_000)]);
        assert!(c.nodes_to_evict(&off, 1_000 + 2 * MIN - 1).is_empty());
        assert_eq!(c.nodes_to_evict(&off, 1_000 + 2 * MIN), vec!["na".to_string()]);
        // LINSTOR's default: 12 hours.
        let c = cluster(&[("na", &[]), ("nb", &[]), ("nc", &[])], &[]);
        assert!(c.nodes_to_evict(&off, 1_000 + 719 * MIN).is_empty());
        assert_eq!(c.nodes_to_evict(&off, 1_000 + 720 * MIN).len(), 1);
    }

    #[test]
    fn too_many_offline_nodes_or_a_node_that_forbids_it_are_not_evicted() {
        let after = (super::PROP_AUTO_EVICT_AFTER_TIME, "0");
        // 34 % of 3 nodes rounds to 1: one offline node may go, two may not.
        let c = cluster(&[("na", &[]), ("nb", &[]), ("nc", &[])], &[after]);
        assert_eq!(c.nodes_to_evict(&since(&[("na", 0)]), 0).len(), 1);
        assert!(c.nodes_to_evict(&since(&[("na", 0), ("nb", 0)]), 0).is_empty());
        let c = cluster(&[("na", &[]), ("nb", &[]), ("nc", &[])], &[after, (super::PROP_AUTO_EVICT_MAX_DISCONNECTED, "10")]);
        assert!(c.nodes_to_evict(&since(&[("na", 0)]), 0).is_empty());
        let c = cluster(&[("na", &[(super::PROP_AUTO_EVICT_ALLOW, "false")]), ("nb", &[]), ("nc", &[])], &[after]);
        assert!(c.nodes_to_evict(&since(&[("na", 0)]), 0).is_empty());
        let c = cluster(
            &[("na", &[(super::PROP_AUTO_EVICT_ALLOW, "true")]), ("nb", &[]), ("nc", &[])],
            &[after, (super::PROP_AUTO_EVICT_ALLOW, "false")],
        );
        assert_eq!(c.nodes_to_evict(&since(&[("na", 0)]), 0).len(), 1, "the node's property wins over the controller's");
    }
}
