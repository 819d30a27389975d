//! What a satellite acknowledged, apart from what is desired.
//!
//! Per node the [`Ledger`] keeps, for every resource and for the pool
//! list, the version the satellite confirmed (it answered for it without
//! an error) and the operation handed to it that is not confirmed yet
//! (queued, on its way, or failed). Deltas are computed against that:
//! an object goes out when its desired version differs from the one last
//! handed over, or, when nothing is outstanding, from the one
//! acknowledged. Objects whose operation failed are not resent by other
//! changes; the link's worker retries exactly those (see `worker`).
//!
//! Every operation carries the generation of the request it was queued
//! with. An answer settles the operations of its generation and older
//! ones; a newer operation of the same object (queued while the answer was
//! under way) stays outstanding.
//!
//! A version of a resource is kept as a [`Version`]: its digest and the
//! little the controller reads back (the volumes' pools and sizes, the
//! snapshots), not a copy. Full copies cost about 2.5 KB per resource, 71
//! MiB of the controller's memory at 30,000 resources.

use std::collections::{BTreeMap, BTreeSet};

use cairn_proto::{Apply, Observed, PoolDesired, ResourceDesired};

/// What the ledger keeps of one version of a resource (see the module
/// comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    digest: [u8; 16],
    pub volumes: Box<[VolumeKept]>,
    pub snapshots: Box<[String]>,
}

/// A volume of a kept [`Version`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VolumeKept {
    pub number: u32,
    pub pool: Box<str>,
    pub size_kib: i64,
}

impl Version {
    pub(crate) fn of(r: &ResourceDesired) -> Version {
        Version {
            digest: r.digest(),
            volumes: r
                .volumes
                .iter()
                .map(|v| VolumeKept { number: v.number, pool: v.pool.as_str().into(), size_kib: v.size_kib })
                .collect(),
            snapshots: r.snapshots.iter().cloned().collect(),
        }
    }
}

/// An operation on one resource.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Upsert(Version),
    Remove,
}

/// An operation handed to the satellite and not confirmed.
#[derive(Debug, Clone)]
struct Outstanding<T> {
    op: T,
    generation: u64,
    /// The satellite answered with an error (or not for this object):
    /// the worker's retry sends it again.
    failed: bool,
}

/// Acknowledged and outstanding state of one node (see the module comment).
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    generation: u64,
    acked_pools: Option<Vec<PoolDesired>>,
    pools: Option<Outstanding<Vec<PoolDesired>>>,
    /// By resource name (as in the desired state).
    acked: BTreeMap<String, Version>,
    /// The generation of the answer that last spoke for each resource (and
    /// for the pool list): answers can arrive out of order, and an older
    /// one never overrides what a newer one said.
    answered_at: BTreeMap<String, u64>,
    pools_answered_at: u64,
    outstanding: BTreeMap<String, Outstanding<Op>>,
}

/// A delta to send, with the snapshots it asks the node to take (only
/// their failures are the change's errors).
#[derive(Debug)]
pub(crate) struct Delta {
    pub apply: Apply,
    pub new_snapshots: BTreeSet<(String, String)>,
}

impl Ledger {
    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// The version the satellite has or is about to have.
    pub(crate) fn latest(&self, name: &str) -> Option<&Version> {
        match self.outstanding.get(name) {
            Some(Outstanding { op: Op::Upsert(r), .. }) => Some(r),
            Some(Outstanding { op: Op::Remove, .. }) => None,
            None => self.acked.get(name),
        }
    }

    fn latest_pools(&self) -> Option<&Vec<PoolDesired>> {
        match &self.pools {
            Some(o) => Some(&o.op),
            None => self.acked_pools.as_ref(),
        }
    }

    /// The version the satellite confirmed, if any.
    pub(crate) fn acked(&self, name: &str) -> Option<&Version> {
        self.acked.get(name)
    }

    /// Whether the pool list, as last sent, was confirmed.
    #[cfg(test)]
    pub(crate) fn pools_acked(&self) -> bool {
        self.pools.is_none() && self.acked_pools.is_some()
    }

    /// Whether anything failed and waits for the retry.
    pub(crate) fn has_failed(&self) -> bool {
        self.pools.as_ref().is_some_and(|p| p.failed) || self.outstanding.values().any(|o| o.failed)
    }

    /// A full apply of this desired state: nothing is acknowledged any
    /// more, everything is outstanding under its generation.
    pub(crate) fn full(&mut self, pools: &[PoolDesired], rscs: &[ResourceDesired]) -> u64 {
        let generation = self.next_generation();
        self.acked.clear();
        self.answered_at.clear();
        self.pools_answered_at = 0;
        self.acked_pools = None;
        self.pools = Some(Outstanding { op: pools.to_vec(), generation, failed: false });
        self.outstanding =
            rscs.iter().map(|r| (r.name.clone(), Outstanding { op: Op::Upsert(Version::of(r)), generation, failed: false })).collect();
        generation
    }

    /// What must go to the satellite so that it gets this desired state,
    /// recorded as outstanding; None when nothing changed.
    #[cfg(test)]
    pub(crate) fn delta(&mut self, pools: Vec<PoolDesired>, rscs: Vec<ResourceDesired>) -> Option<Delta> {
        self.delta_of(pools, rscs, None)
    }

    /// [`Ledger::delta`] where `rscs` holds only the resources of the
    /// definitions in `scope` (upper-case keys), when set: removals are
    /// looked for among those only.
    pub(crate) fn delta_of(
        &mut self,
        pools: Vec<PoolDesired>,
        rscs: Vec<ResourceDesired>,
        scope: Option<&BTreeSet<String>>,
    ) -> Option<Delta> {
        let mut apply = Apply::default();
        let mut new_snapshots = BTreeSet::new();
        let mut ops: Vec<(String, Op)> = Vec::new();
        let pools_changed = self.latest_pools() != Some(&pools);
        let now: BTreeMap<String, ResourceDesired> = rscs.into_iter().map(|r| (r.name.clone(), r)).collect();
        for (name, r) in &now {
            let before = self.latest(name);
            let version = Version::of(r);
            if before != Some(&version) {
                let had = |s: &String| before.is_some_and(|b| b.snapshots.contains(s));
                new_snapshots.extend(r.snapshots.iter().filter(|s| !had(s)).map(|s| (name.clone(), s.clone())));
                apply.resources.push(r.clone());
                ops.push((name.clone(), Op::Upsert(version)));
            }
        }
        let in_scope = |name: &String| scope.is_none_or(|s| s.contains(&cairn_domain::name::key(name)));
        let known: BTreeSet<&String> = self.acked.keys().chain(self.outstanding.keys()).filter(|n| in_scope(n)).collect();
        for name in known {
            if !now.contains_key(name) && self.latest(name).is_some() {
                apply.removed.push(name.clone());
                ops.push((name.clone(), Op::Remove));
            }
        }
        if !pools_changed && ops.is_empty() {
            return None;
        }
        let generation = self.next_generation();
        apply.generation = generation;
        if pools_changed {
            apply.pools_set = true;
            apply.pools = pools.clone();
            self.pools = Some(Outstanding { op: pools, generation, failed: false });
        }
        for (name, op) in ops {
            self.outstanding.insert(name, Outstanding { op, generation, failed: false });
        }
        Some(Delta { apply, new_snapshots })
    }

    /// The retry: every failed object with its current desired version (a
    /// resource no longer desired is removed), recorded as outstanding;
    /// None when nothing failed.
    pub(crate) fn retry(&mut self, pools: Vec<PoolDesired>, rscs: Vec<ResourceDesired>) -> Option<Apply> {
        let failed: Vec<String> = self.outstanding.iter().filter(|(_, o)| o.failed).map(|(n, _)| n.clone()).collect();
        let pools_failed = self.pools.as_ref().is_some_and(|p| p.failed);
        if failed.is_empty() && !pools_failed {
            return None;
        }
        let generation = self.next_generation();
        let mut apply = Apply { generation, ..Default::default() };
        if pools_failed {
            apply.pools_set = true;
            apply.pools = pools.clone();
            self.pools = Some(Outstanding { op: pools, generation, failed: false });
        }
        let mut now: BTreeMap<String, ResourceDesired> = rscs.into_iter().map(|r| (r.name.clone(), r)).collect();
        for name in failed {
            let op = match now.remove(&name) {
                Some(r) => {
                    let version = Version::of(&r);
                    apply.resources.push(r);
                    Op::Upsert(version)
                }
                None => {
                    apply.removed.push(name.clone());
                    Op::Remove
                }
            };
            self.outstanding.insert(name, Outstanding { op, generation, failed: false });
        }
        Some(apply)
    }

    /// Records the satellite's answer to `apply` (a delta, a merge of
    /// deltas, or a full apply).
    pub(crate) fn answered(&mut self, apply: &Apply, o: &Observed) {
        let generation = apply.generation;
        // Pool errors come with the answers to requests that set the pools
        // (and full applies): the pool list counts as acknowledged only
        // while none is reported. Other answers say nothing about pools.
        if apply.pools_set || apply.full {
            self.answered_pools(apply, o);
        }
        for r in &apply.resources {
            let ok = o.resources.iter().any(|a| a.name == r.name && a.error.is_none());
            if self.newest_answer(&r.name, generation) {
                if ok {
                    self.acked.insert(r.name.clone(), Version::of(r));
                } else {
                    self.acked.remove(&r.name);
                }
            }
            self.settle(&r.name, generation, ok);
        }
        for name in &apply.removed {
            let ok = o.removed.iter().any(|a| &a.name == name && a.error.is_none());
            if self.newest_answer(name, generation) {
                self.acked.remove(name);
            }
            self.settle(name, generation, ok);
        }
        if apply.full {
            // Leftovers the satellite found and could not remove.
            for gone in o.removed.iter().filter(|g| g.error.is_some() && !apply.resources.iter().any(|r| r.name == g.name)) {
                self.outstanding.insert(gone.name.clone(), Outstanding { op: Op::Remove, generation, failed: true });
            }
        }
    }

    fn answered_pools(&mut self, apply: &Apply, o: &Observed) {
        let generation = apply.generation;
        if o.pools.iter().all(|p| p.error.is_none()) {
            if apply.pools_set && generation >= self.pools_answered_at {
                self.acked_pools = Some(apply.pools.clone());
                self.pools_answered_at = generation;
            }
            if self.pools.as_ref().is_some_and(|p| p.generation <= generation) {
                self.pools = None;
            }
        } else {
            let previous = self.acked_pools.take();
            match &mut self.pools {
                Some(p) if p.generation <= generation => p.failed = true,
                Some(_) => {}
                None => {
                    let op = if apply.pools_set { apply.pools.clone() } else { previous.unwrap_or_default() };
                    self.pools = Some(Outstanding { op, generation, failed: true });
                }
            }
        }
    }

    /// Whether an answer of `generation` is the newest yet for `name`
    /// (then it is recorded as such).
    fn newest_answer(&mut self, name: &str, generation: u64) -> bool {
        if self.answered_at.get(name).is_some_and(|g| *g > generation) {
            return false;
        }
        self.answered_at.insert(name.to_string(), generation);
        true
    }

    fn settle(&mut self, name: &str, generation: u64, ok: bool) {
        if let Some(out) = self.outstanding.get_mut(name).filter(|o| o.generation <= generation) {
            if ok {
                self.outstanding.remove(name);
            } else {
                out.failed = true;
            }
        }
    }

    /// Records an observation: an acknowledged resource the satellite
    /// reports with an error, or not at all, is no longer acknowledged and
    /// waits for the retry. Observations never acknowledge anything (they
    /// do not say which version the satellite holds). Returns whether
    /// anything was taken back.
    pub(crate) fn observed(&mut self, o: &Observed) -> bool {
        let demote: Vec<String> = self
            .acked
            .keys()
            .filter(|n| !self.outstanding.contains_key(*n))
            .filter(|n| o.resources.iter().find(|r| &r.name == *n).is_none_or(|r| r.error.is_some()))
            .cloned()
            .collect();
        for name in &demote {
            if let Some(r) = self.acked.remove(name) {
                self.outstanding.insert(name.clone(), Outstanding { op: Op::Upsert(r), generation: self.generation, failed: true });
            }
        }
        !demote.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::{ObjectError, PoolObserved, ResourceObserved, VolumeDesired};

    use super::*;

    fn rd(name: &str, size: i64) -> ResourceDesired {
        ResourceDesired {
            name: name.into(),
            volumes: vec![VolumeDesired { number: 0, id: "ab".into(), size_kib: size, pool: "p".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    fn v(r: ResourceDesired) -> Version {
        Version::of(&r)
    }

    fn pool() -> Vec<PoolDesired> {
        vec![PoolDesired { name: "p".into(), kind: cairn_proto::ProviderKind::FileThin, backing: Some("/p".into()) }]
    }

    fn answer(ok: &[&str], failed: &[&str]) -> Observed {
        let err = || Some(ObjectError { message: "failed".into(), cause: None, details: None });
        Observed {
            resources: ok
                .iter()
                .map(|n| ResourceObserved { name: n.to_string(), ..Default::default() })
                .chain(failed.iter().map(|n| ResourceObserved { name: n.to_string(), error: err(), ..Default::default() }))
                .collect(),
            pools: vec![PoolObserved { name: "p".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    fn names(rs: &[ResourceDesired]) -> Vec<&str> {
        rs.iter().map(|r| r.name.as_str()).collect()
    }

    /// A ledger after a full apply of `rscs` answered with `o`.
    fn synced(rscs: &[ResourceDesired], o: &Observed) -> Ledger {
        let mut l = Ledger::default();
        let generation = l.full(&pool(), rscs);
        l.answered(&Apply { generation, full: true, pools_set: true, pools: pool(), resources: rscs.to_vec(), removed: vec![] }, o);
        l
    }

    #[test]
    fn only_failed_objects_are_retried_with_their_current_version() {
        let mut l = Ledger::default();
        let g = l.full(&pool(), &[rd("a", 1), rd("b", 1)]);
        let full =
            Apply { generation: g, full: true, pools_set: true, pools: pool(), resources: vec![rd("a", 1), rd("b", 1)], removed: vec![] };
        l.answered(&full, &answer(&["a"], &["b"]));
        assert_eq!(l.acked("a"), Some(&v(rd("a", 1))));
        assert_eq!(l.acked("b"), None, "an error is no acknowledgement");
        assert!(l.pools_acked() && l.has_failed());
        // A change of another resource does not carry b along.
        let d = l.delta(pool(), vec![rd("a", 2), rd("b", 1)]).expect("a changed");
        assert_eq!(names(&d.apply.resources), ["a"]);
        assert!(!d.apply.pools_set && d.apply.removed.is_empty());
        // The retry sends b only, at the version desired now.
        let r = l.retry(pool(), vec![rd("a", 2), rd("b", 3)]).expect("b failed");
        assert_eq!(r.resources, vec![rd("b", 3)]);
        assert!(!r.pools_set && !r.full);
        assert!(!l.has_failed(), "b is on its way again");
        assert!(l.retry(pool(), vec![rd("a", 2), rd("b", 3)]).is_none(), "nothing else failed");
        l.answered(&r, &answer(&["b"], &[]));
        assert_eq!(l.acked("b"), Some(&v(rd("b", 3))));
    }

    #[test]
    fn an_answer_settles_only_what_it_carried() {
        let mut l = synced(&[], &answer(&[], &[]));
        let first = l.delta(pool(), vec![rd("a", 1)]).expect("new").apply;
        // Changed again before the satellite answered the first delta.
        let second = l.delta(pool(), vec![rd("a", 2)]).expect("grown").apply;
        assert_eq!(second.resources, vec![rd("a", 2)]);
        l.answered(&first, &answer(&["a"], &[]));
        assert_eq!(l.acked("a"), Some(&v(rd("a", 1))));
        assert_eq!(l.latest("a"), Some(&v(rd("a", 2))), "the second delta is still outstanding");
        // The first one failing instead would not mark the newer one failed.
        l.answered(&first, &answer(&[], &["a"]));
        assert!(!l.has_failed());
        l.answered(&second, &answer(&["a"], &[]));
        assert_eq!(l.acked("a"), Some(&v(rd("a", 2))));
        // Nothing to send while desired equals acknowledged.
        assert!(l.delta(pool(), vec![rd("a", 2)]).is_none());
    }

    #[test]
    fn an_older_answer_arriving_last_does_not_roll_back_the_acknowledgement() {
        let mut l = synced(&[], &answer(&[], &[]));
        let first = l.delta(pool(), vec![rd("a", 1)]).expect("new").apply;
        let second = l.delta(pool(), vec![rd("a", 2)]).expect("grown").apply;
        // The second request is answered first (pipelined requests).
        l.answered(&second, &answer(&["a"], &[]));
        assert_eq!(l.acked("a"), Some(&v(rd("a", 2))));
        l.answered(&first, &answer(&["a"], &[]));
        assert_eq!(l.acked("a"), Some(&v(rd("a", 2))), "the older answer changes nothing");
        assert!(l.delta(pool(), vec![rd("a", 2)]).is_none());
        // Going back to version 1 is a change the satellite must hear of.
        assert_eq!(l.delta(pool(), vec![rd("a", 1)]).expect("back").apply.resources, vec![rd("a", 1)]);
        // A late failure of an older removal does not take back a newer upsert either.
        let mut l = synced(&[rd("b", 1)], &answer(&["b"], &[]));
        let gone = l.delta(pool(), vec![]).expect("b goes").apply;
        let back = l.delta(pool(), vec![rd("b", 2)]).expect("b again").apply;
        l.answered(&back, &answer(&["b"], &[]));
        l.answered(&gone, &answer(&[], &[]));
        assert_eq!(l.acked("b"), Some(&v(rd("b", 2))));
    }

    #[test]
    fn a_scoped_delta_looks_for_removals_only_in_its_scope() {
        let mut l = synced(&[rd("a", 1), rd("b", 1)], &answer(&["a", "b"], &[]));
        // Only b's definition was touched: a, absent from the scoped list,
        // is not removed.
        let d = l.delta_of(pool(), vec![rd("b", 2)], Some(&BTreeSet::from(["B".to_string()]))).expect("b changed");
        assert_eq!(d.apply.resources, vec![rd("b", 2)]);
        assert!(d.apply.removed.is_empty());
        // b deleted: in scope and absent, so removed.
        let d = l.delta_of(pool(), vec![], Some(&BTreeSet::from(["B".to_string()]))).expect("b goes");
        assert_eq!(d.apply.removed, ["b"]);
    }

    #[test]
    fn removals_and_failed_removals() {
        let mut l = synced(&[rd("a", 1)], &answer(&["a"], &[]));
        let d = l.delta(pool(), vec![]).expect("a goes").apply;
        assert_eq!(d.removed, ["a"]);
        assert!(l.delta(pool(), vec![]).is_none(), "the removal is on its way");
        let failed = Observed {
            removed: vec![ResourceObserved {
                name: "a".into(),
                error: Some(ObjectError { message: "busy".into(), cause: None, details: None }),
                ..Default::default()
            }],
            ..answer(&[], &[])
        };
        l.answered(&d, &failed);
        assert!(l.has_failed());
        assert_eq!(l.retry(pool(), vec![]).expect("retry").removed, ["a"]);
        // Created again before the retry's answer: an upsert.
        assert_eq!(l.delta(pool(), vec![rd("a", 5)]).expect("again").apply.resources, vec![rd("a", 5)]);
    }

    #[test]
    fn pool_errors_retry_the_pool_list_and_observations_take_back() {
        let mut o = answer(&["a"], &[]);
        o.pools[0].error = Some(ObjectError { message: "no capacity".into(), cause: None, details: None });
        let mut l = synced(&[rd("a", 1)], &o);
        assert!(!l.pools_acked() && l.has_failed());
        let r = l.retry(pool(), vec![rd("a", 1)]).expect("pools");
        assert!(r.pools_set && r.resources.is_empty());
        l.answered(&r, &answer(&[], &[]));
        assert!(l.pools_acked() && !l.has_failed());
        // An observation that shows a with an error takes it back.
        assert!(!l.observed(&answer(&["a"], &[])));
        assert!(l.observed(&answer(&[], &["a"])));
        assert_eq!(l.acked("a"), None);
        assert_eq!(l.retry(pool(), vec![rd("a", 1)]).expect("a").resources, vec![rd("a", 1)]);
    }

    #[test]
    fn new_snapshots_are_those_not_handed_over_before() {
        let mut l = synced(&[rd("a", 1)], &answer(&["a"], &[]));
        let with = |snaps: &[&str]| ResourceDesired { snapshots: snaps.iter().map(|s| s.to_string()).collect(), ..rd("a", 1) };
        let d = l.delta(pool(), vec![with(&["s1"])]).expect("s1");
        assert_eq!(d.new_snapshots, [("a".to_string(), "s1".to_string())].into());
        let d = l.delta(pool(), vec![with(&["s1", "s2"])]).expect("s2");
        assert_eq!(d.new_snapshots, [("a".to_string(), "s2".to_string())].into());
    }
}
