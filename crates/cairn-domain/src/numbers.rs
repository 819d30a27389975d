//! DRBD numbers: node ids per resource definition, TCP ports per node,
//! minor numbers per volume definition. Lowest free number first, as
//! LINSTOR's number pools; computed from what the cluster holds (so a
//! delete frees a number) plus what the current operation already took (so
//! one request never hands out a number twice). Mutations run one at a
//! time under the controller's writer lock, so concurrent requests never
//! collide either.

use std::collections::{BTreeMap, BTreeSet};

use cairn_api::rc;

use crate::Cluster;
use crate::error::{OpError, OpResult};
use crate::name::key;

/// Default range of DRBD TCP ports per node (`TcpPortAutoRange`).
pub const DEFAULT_PORT_RANGE: (u32, u32) = (7000, 7999);
/// Default range of DRBD minor numbers (`MinorNrAutoRange`).
pub const DEFAULT_MINOR_RANGE: (u32, u32) = (1000, 49999);
/// Highest DRBD minor number.
pub const MAX_MINOR: u32 = 1_048_575;
/// DRBD node ids.
pub const MAX_NODE_ID: u8 = 31;
/// Peer slots when nothing else says (`DEFAULT_PEER_SLOTS`).
pub const DEFAULT_PEER_SLOTS: u8 = 7;

const FAIL_POOL_EXHAUSTED_MINOR_NR: i64 = 801;
const FAIL_POOL_EXHAUSTED_TCP_PORT: i64 = 802;
const FAIL_POOL_EXHAUSTED_NODE_ID: i64 = 803;

/// Numbers handed out by the operation in progress.
#[derive(Debug, Default)]
pub struct Taken {
    node_ids: BTreeMap<String, BTreeSet<u8>>,
    ports: BTreeMap<String, BTreeSet<u16>>,
    minors: BTreeSet<u32>,
}

impl Taken {
    /// Marks a node id of `rd_key` as used (by a change not yet applied).
    pub fn reserve_node_id(&mut self, rd_key: &str, id: u8) {
        self.node_ids.entry(rd_key.to_string()).or_default().insert(id);
    }

    /// Marks a port of `node_key` as used (by a change not yet applied).
    pub fn reserve_port(&mut self, node_key: &str, port: u16) {
        self.ports.entry(node_key.to_string()).or_default().insert(port);
    }
}

/// Parses `7000-7999`.
pub fn parse_range(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once('-')?;
    let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a.max(1), b))
}

impl Cluster {
    fn range(&self, prop: &str, node_key: Option<&str>, dflt: (u32, u32)) -> (u32, u32) {
        node_key
            .and_then(|n| self.nodes.get(n))
            .and_then(|n| n.props.get(prop))
            .or_else(|| self.ctrl_props.get(prop))
            .and_then(|v| parse_range(v))
            .unwrap_or(dflt)
    }

    /// A node id for a new DRBD resource of `rd_key`.
    pub(crate) fn alloc_node_id(&self, rd_key: &str, requested: Option<i64>, taken: &mut Taken, op: i64) -> OpResult<u8> {
        let mut used: BTreeSet<u8> = self.resources_of(rd_key).filter_map(|r| r.drbd.as_ref().map(|d| d.node_id)).collect();
        used.extend(taken.node_ids.get(rd_key).into_iter().flatten());
        // Ids of deleted replicas that a peer has not forgotten yet: a new
        // replica with one would inherit the old one's bitmap there.
        let forgetting: BTreeSet<u8> = self.rsc_dfns.get(rd_key).into_iter().flat_map(|d| d.drbd.forgetting.keys().copied()).collect();
        if let Some(id) = requested.and_then(|n| u8::try_from(n).ok()).filter(|id| forgetting.contains(id) && !used.contains(id)) {
            return Err(OpError::new(
                op,
                rc::FAIL_INVLD_NODE_ID,
                format!("DRBD node id {id} belonged to a deleted replica that a peer has not forgotten yet."),
            )
            .cause("Until every remaining diskful replica has run `drbdsetup forget-peer` for it, its bitmap slot there keeps the deleted replica's history.")
            .correction("Use another node id, or wait until the satellites of the other replicas are online and have applied the delete."));
        }
        used.extend(forgetting);
        let id = match requested {
            Some(n) => {
                let id = u8::try_from(n).ok().filter(|id| *id <= MAX_NODE_ID).ok_or_else(|| {
                    OpError::new(op, rc::FAIL_INVLD_NODE_ID, format!("The DRBD node id {n} is invalid."))
                        .correction("Use a node id from 0 to 31.")
                })?;
                if used.contains(&id) {
                    return Err(OpError::new(op, rc::FAIL_INVLD_NODE_ID, format!("DRBD node id {id} is already used by another replica.")));
                }
                id
            }
            None => (0..=MAX_NODE_ID)
                .find(|i| !used.contains(i))
                .ok_or_else(|| OpError::new(op, FAIL_POOL_EXHAUSTED_NODE_ID, "All 32 DRBD node ids of the resource are in use."))?,
        };
        taken.node_ids.entry(rd_key.to_string()).or_default().insert(id);
        Ok(id)
    }

    /// A TCP port on `node_key` for a new DRBD resource.
    pub(crate) fn alloc_port(&self, node_key: &str, requested: Option<i64>, taken: &mut Taken, op: i64) -> OpResult<u16> {
        let (lo, hi) = self.range("TcpPortAutoRange", Some(node_key), DEFAULT_PORT_RANGE);
        let mut used: BTreeSet<u16> = self.ports_on(node_key).collect();
        used.extend(taken.ports.get(node_key).into_iter().flatten());
        // Ports of deleted replicas their peers may still have configured.
        used.extend(self.freed_ports_on(node_key));
        let port = match requested {
            Some(p) => {
                let port = u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                    OpError::new(op, rc::FAIL_INVLD_TCP_PORT, format!("The TCP port {p} is invalid."))
                        .correction("Use a port from 1 to 65535.")
                })?;
                if used.contains(&port) {
                    return Err(OpError::new(op, rc::FAIL_INVLD_TCP_PORT, format!("TCP port {port} is already used on this node.")));
                }
                port
            }
            None => (lo..=hi.min(65535)).map(|p| p as u16).find(|p| !used.contains(p)).ok_or_else(|| {
                OpError::new(op, FAIL_POOL_EXHAUSTED_TCP_PORT, format!("All DRBD ports {lo}-{hi} of the node are in use."))
            })?,
        };
        taken.ports.entry(node_key.to_string()).or_default().insert(port);
        Ok(port)
    }

    /// A minor number for a new volume definition.
    pub(crate) fn alloc_minor(&self, requested: Option<i64>, taken: &mut Taken, op: i64) -> OpResult<u32> {
        let (lo, hi) = self.range("MinorNrAutoRange", None, DEFAULT_MINOR_RANGE);
        let used = |m: &u32| self.minors.contains_key(m) || taken.minors.contains(m);
        let minor = match requested {
            Some(m) => {
                let minor = u32::try_from(m).ok().filter(|m| *m <= MAX_MINOR).ok_or_else(|| {
                    OpError::new(op, rc::FAIL_INVLD_MINOR_NR, format!("The minor number {m} is invalid."))
                        .correction(format!("Use a minor number from 0 to {MAX_MINOR}."))
                })?;
                if used(&minor) {
                    return Err(OpError::new(op, rc::FAIL_INVLD_MINOR_NR, format!("Minor number {minor} is already in use.")));
                }
                minor
            }
            // The lowest free number from `lo`: a look-up in the runs of
            // held minors, and one more for each number this operation took.
            None => {
                let hi = hi.min(MAX_MINOR);
                let mut from = lo;
                loop {
                    let Some(free) = self.free_minor_from(from).filter(|m| *m <= hi) else {
                        return Err(OpError::new(op, FAIL_POOL_EXHAUSTED_MINOR_NR, format!("All minor numbers {lo}-{hi} are in use.")));
                    };
                    if !taken.minors.contains(&free) {
                        break free;
                    }
                    from = free + 1;
                }
            }
        };
        taken.minors.insert(minor);
        Ok(minor)
    }

    /// Peer slots of a resource definition: its own, its group's, the
    /// `PeerSlotsNewResource` property, else 7.
    pub fn peer_slots(&self, rd_key: &str) -> u8 {
        let Some(d) = self.rsc_dfns.get(rd_key) else { return DEFAULT_PEER_SLOTS };
        let rg = self.rsc_grps.get(&key(&d.resource_group));
        d.drbd
            .peer_slots
            .or_else(|| rg.and_then(|g| g.peer_slots).and_then(|p| u8::try_from(p).ok()))
            .or_else(|| {
                [Some(&d.props), rg.map(|g| &g.props), Some(&self.ctrl_props)]
                    .into_iter()
                    .flatten()
                    .find_map(|p| p.get("PeerSlotsNewResource").and_then(|v| v.parse().ok()))
            })
            .filter(|p| (1..=MAX_NODE_ID).contains(p))
            .unwrap_or(DEFAULT_PEER_SLOTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Change, ObjKey, Object};
    use crate::resource_definition::{DrbdRscDfnOptions, ResourceDefinition, VolumeDefinition};

    fn vd(rd: &str, minor: u32) -> Object {
        Object::VlmDfn(VolumeDefinition {
            resource_definition: rd.into(),
            volume_number: 0,
            size_kib: 1024,
            props: Default::default(),
            flags: Default::default(),
            drbd_minor: Some(minor),
            uuid: rd.into(),
        })
    }

    fn rd(name: &str, freed: &[(u8, &str, u16)]) -> Object {
        let freed_ports = freed.iter().map(|(id, n, p)| (*id, (n.to_string(), *p))).collect();
        Object::RscDfn(ResourceDefinition {
            name: name.into(),
            external_name: None,
            props: Default::default(),
            flags: Default::default(),
            layer_stack: vec![],
            resource_group: "DfltRscGrp".into(),
            drbd: DrbdRscDfnOptions { freed_ports, ..Default::default() },
            uuid: name.into(),
        })
    }

    #[test]
    fn minors_come_from_the_index_lowest_gap_first_and_follow_changes() {
        let mut c = Cluster::from_objects([vd("A", 1000), vd("B", 1001), vd("C", 1003), vd("D", 7)]);
        let mut taken = Taken::default();
        assert_eq!(c.alloc_minor(None, &mut taken, 0).ok(), Some(1002));
        // What the operation took counts too.
        assert_eq!(c.alloc_minor(None, &mut taken, 0).ok(), Some(1004));
        assert!(c.alloc_minor(Some(1003), &mut Taken::default(), 0).is_err(), "held");
        assert_eq!(c.alloc_minor(Some(1002), &mut Taken::default(), 0).ok(), Some(1002));
        // A delete frees its minor; a modify that keeps it keeps it held.
        c.apply([Change::Delete(ObjKey::VlmDfn("B".into(), 0)), Change::Put(vd("C", 1003))]);
        assert_eq!(c.alloc_minor(None, &mut Taken::default(), 0).ok(), Some(1001));
        c.apply([Change::Put(vd("B", 1001)), Change::Put(vd("E", 1002)), Change::Put(vd("C", 1004))]);
        assert_eq!(c.alloc_minor(None, &mut Taken::default(), 0).ok(), Some(1003), "C moved from 1003 to 1004");
        c.ctrl_props.insert("MinorNrAutoRange".into(), "1000-1004".into());
        c.apply([Change::Put(vd("F", 1003))]);
        let e = c.alloc_minor(None, &mut Taken::default(), 0).expect_err("exhausted");
        assert_eq!(e.rc.ret_code & rc::MASK_BITS_CODE, FAIL_POOL_EXHAUSTED_MINOR_NR);
    }

    /// The runs of held minors, and the lowest free minor from each
    /// number, agree with the held minors themselves through any sequence
    /// of puts and deletes.
    #[test]
    fn the_runs_of_held_minors_follow_every_change() {
        let mut c = Cluster::default();
        // A fixed pseudo-random walk: volume definitions "R0".."R39" take
        // minors 0..24, move and go.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for step in 0..3000 {
            let rd = format!("R{}", next() % 40);
            if next() % 3 == 0 {
                c.apply([Change::Delete(ObjKey::VlmDfn(rd, 0))]);
            } else {
                c.apply([Change::Put(vd(&rd, (next() % 25) as u32))]);
            }
            let held: BTreeSet<u32> = c.minors.keys().copied().collect();
            let mut runs: Vec<(u32, u32)> = Vec::new();
            for m in &held {
                match runs.last_mut() {
                    Some((_, last)) if *last + 1 == *m => *last = *m,
                    _ => runs.push((*m, *m)),
                }
            }
            assert_eq!(c.minor_runs.iter().map(|(f, l)| (*f, *l)).collect::<Vec<_>>(), runs, "step {step}");
            for from in 0..27 {
                let free = (from..).find(|m| !held.contains(m));
                assert_eq!(c.free_minor_from(from), free, "step {step}, from {from}");
            }
        }
        // Held more than once, a minor stays held until the last goes.
        let mut c = Cluster::from_objects([vd("A", 5), vd("B", 5), vd("C", 6)]);
        c.apply([Change::Delete(ObjKey::VlmDfn("A".into(), 0))]);
        assert_eq!(c.free_minor_from(5), Some(7));
        c.apply([Change::Delete(ObjKey::VlmDfn("B".into(), 0))]);
        assert_eq!(c.free_minor_from(5), Some(5));
        assert_eq!(c.free_minor_from(6), Some(7));
    }

    fn rsc(rd: &str, node: &str, port: Option<u16>) -> Object {
        Object::Rsc(crate::resource::Resource {
            resource_definition: rd.into(),
            node: node.into(),
            props: Default::default(),
            flags: Default::default(),
            layer_stack: vec!["DRBD".into(), "STORAGE".into()],
            create_timestamp: 0,
            volumes: Default::default(),
            uuid: format!("{rd}-{node}"),
            drbd: port.map(|tcp_port| crate::resource::DrbdRsc { node_id: 0, tcp_port, client: false }),
            rollback: None,
        })
    }

    #[test]
    fn ports_in_use_come_from_the_index_and_follow_changes() {
        let mut c = Cluster::from_objects([
            rsc("A", "N1", Some(7000)),
            rsc("B", "N1", Some(7001)),
            rsc("C", "N1", Some(7003)),
            rsc("D", "N2", Some(7000)),
            rsc("E", "N1", None),
        ]);
        let mut taken = Taken::default();
        assert_eq!(c.alloc_port("N1", None, &mut taken, 0).ok(), Some(7002));
        assert_eq!(c.alloc_port("N1", None, &mut taken, 0).ok(), Some(7004), "what the operation took counts too");
        assert_eq!(c.alloc_port("N2", None, &mut Taken::default(), 0).ok(), Some(7001));
        assert_eq!(c.alloc_port("N3", None, &mut Taken::default(), 0).ok(), Some(7000));
        assert!(c.alloc_port("N1", Some(7003), &mut Taken::default(), 0).is_err(), "in use");
        // A delete frees its port, a modify that moves it frees the old one,
        // a resource that loses DRBD frees its port too.
        c.apply([Change::Delete(ObjKey::Rsc("A".into(), "N1".into()))]);
        assert_eq!(c.alloc_port("N1", None, &mut Taken::default(), 0).ok(), Some(7000));
        c.apply([Change::Put(rsc("A", "N1", Some(7000))), Change::Put(rsc("B", "N1", Some(7002)))]);
        assert_eq!(c.alloc_port("N1", None, &mut Taken::default(), 0).ok(), Some(7001));
        c.apply([Change::Put(rsc("B", "N1", None))]);
        assert_eq!(c.ports_on("N1").collect::<Vec<_>>(), vec![7000, 7003]);
        c.apply([Change::Delete(ObjKey::Rsc("D".into(), "N2".into()))]);
        assert_eq!(c.ports_on("N2").count(), 0);
        assert!(c.rscs_by_node.get("N2").is_none(), "an empty node leaves the index");
    }

    #[test]
    fn ports_of_deleted_replicas_stay_held_until_forgotten() {
        let mut c = Cluster::from_objects([rd("A", &[(1, "N1", 7000), (2, "N2", 7001)]), rd("B", &[(1, "N1", 7001)])]);
        assert_eq!(c.alloc_port("N1", None, &mut Taken::default(), 0).ok(), Some(7002));
        assert_eq!(c.alloc_port("N2", None, &mut Taken::default(), 0).ok(), Some(7000));
        // Every peer forgot A's deleted replicas; B's is still held.
        c.apply([Change::Put(rd("A", &[]))]);
        assert_eq!(c.alloc_port("N1", None, &mut Taken::default(), 0).ok(), Some(7000));
        assert_eq!(c.alloc_port("N2", None, &mut Taken::default(), 0).ok(), Some(7000));
        c.apply([Change::Put(rd("A", &[(1, "N1", 7000)])), Change::Delete(ObjKey::RscDfn("B".into()))]);
        let mut taken = Taken::default();
        assert_eq!(c.alloc_port("N1", None, &mut taken, 0).ok(), Some(7001));
        assert_eq!(c.alloc_port("N1", None, &mut taken, 0).ok(), Some(7002));
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("7000-7999"), Some((7000, 7999)));
        assert_eq!(parse_range(" 10 - 20 "), Some((10, 20)));
        assert_eq!(parse_range("20-10"), None);
        assert_eq!(parse_range("0-5"), Some((1, 5)), "never 0");
        assert_eq!(parse_range("x"), None);
    }
}
