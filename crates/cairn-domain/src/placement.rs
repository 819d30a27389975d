//! The autoplacer: which storage pools get the next replicas of a resource.
//! Pure: observed state (online nodes, pool capacities) comes in through
//! [`Observer`].
//!
//! Phases, as in LINSTOR: filter the pools (node online and eligible, pool
//! big enough, names, providers, layers, do-not-place-with, replicas on
//! same/different), rate them (MaxFreeSpace, MinReservedSpace, MinRscCount,
//! weights from `Autoplacer/Weights/<name>`), then search for the best
//! combination that holds the constraints between the chosen pools (one
//! per node, one per shared space, same/different values).

use std::collections::{BTreeMap, BTreeSet};

use cairn_api::rc;
use cairn_api::resource_group::AutoSelectFilter;

use crate::error::{OpError, OpResult};
use crate::name::key;
use crate::resource::Resource;
use crate::storage_pool::{PoolCapacity, ProviderKind, StorPool};
use crate::{Cluster, Props};

/// Oversubscription ratio of thin pools when no property sets one.
pub const DEFAULT_THIN_RATIO: f64 = 20.0;
const WEIGHT_PREFIX: &str = "Autoplacer/Weights/";
/// Bound on the combinations the search looks at.
const SEARCH_LIMIT: usize = 200_000;

/// What the placer needs to know about the live cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeObs {
    pub online: bool,
    /// Provider kinds the node's satellite supports.
    pub providers: BTreeSet<String>,
    /// Layers the node's satellite supports.
    pub layers: BTreeSet<String>,
}

/// Observed state, supplied by the controller (or a test).
pub trait Observer {
    fn node(&self, node_key: &str) -> NodeObs;
    fn capacity(&self, node_key: &str, pool: &str) -> Option<PoolCapacity>;
    /// [`Observer::capacity`] where `present_kib` is not needed (thin
    /// pools): an observer may leave it 0 and skip the work of finding it.
    fn capacity_figures(&self, node_key: &str, pool: &str) -> Option<PoolCapacity> {
        self.capacity(node_key, pool)
    }
    /// Whether the resource of definition `rd` on the node is in use
    /// (its DRBD device is Primary), as last reported.
    fn in_use(&self, _node_key: &str, _rd: &str) -> bool {
        false
    }
}

/// Strategy weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub max_free_space: f64,
    pub min_reserved_space: f64,
    pub min_rsc_count: f64,
}

impl Weights {
    /// LINSTOR's defaults, overridden by controller properties.
    pub fn from_props(p: &Props) -> Weights {
        let get = |name: &str, dflt: f64| {
            p.get(&format!("{WEIGHT_PREFIX}{name}")).and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite()).unwrap_or(dflt)
        };
        Weights {
            max_free_space: get("MaxFreeSpace", 1.0),
            min_reserved_space: get("MinReservedSpace", 0.0),
            min_rsc_count: get("MinRscCount", 0.00001),
        }
    }
}

/// A pool that passed the filters.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node: String,
    pub node_key: String,
    pub pool: String,
    pub provider: ProviderKind,
    /// Space a new volume can use, KiB (oversubscription applied).
    pub free_kib: i64,
    pub total_kib: i64,
    pub reserved_kib: i64,
    pub rsc_count: usize,
    pub shared_space: String,
    pub score: f64,
    pub ratio: f64,
    node_props: Props,
}

/// Why pools were not candidates, for the error a user reads.
#[derive(Debug, Default)]
pub struct Rejections(BTreeMap<String, BTreeSet<String>>);

impl Rejections {
    fn add(&mut self, why: impl Into<String>, what: &StorPool) {
        self.0.entry(why.into()).or_default().insert(format!("{}/{}", what.node, what.name));
    }

    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            return "no storage pool was excluded by a filter".into();
        }
        self.0
            .iter()
            .map(|(why, pools)| format!("{why}: {}", pools.iter().cloned().collect::<Vec<_>>().join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One `key` or `key=value` entry of replicas-on-same/different.
fn split_kv(entry: &str) -> (&str, Option<&str>) {
    match entry.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (entry, None),
    }
}

/// The ratio a thin pool may be oversubscribed by: pool, then definition,
/// then controller property `MaxOversubscriptionRatio`.
fn thin_ratio(c: &Cluster, p: &StorPool) -> f64 {
    let keyname = "MaxOversubscriptionRatio";
    [Some(&p.props), c.stor_pool_dfns.get(&key(&p.name)).map(|d| &d.props), Some(&c.ctrl_props)]
        .into_iter()
        .flatten()
        .find_map(|props| props.get(keyname).and_then(|v| v.parse::<f64>().ok()))
        .filter(|r| r.is_finite() && *r > 0.0)
        .unwrap_or(DEFAULT_THIN_RATIO)
}

/// Whether two provider kinds may hold replicas of one resource. FILE
/// kinds mix only with each other, SPDK kinds only with themselves; LVM
/// mixes with STORAGE_SPACES; other different kinds only when
/// `AllowMixingStoragePoolDriver=true` (as in LINSTOR, which also needs a
/// recent DRBD for that).
pub fn mixable(a: ProviderKind, b: ProviderKind, allow_mixing: bool) -> bool {
    use ProviderKind::*;
    if a == b || a == Diskless || b == Diskless {
        return true;
    }
    let family = |k: ProviderKind| match k {
        File | FileThin => 1,
        Spdk | RemoteSpdk => 2,
        Lvm | StorageSpaces => 3,
        _ => 0,
    };
    match (family(a), family(b)) {
        (1, 1) | (3, 3) => true,
        (1, _) | (_, 1) | (2, _) | (_, 2) => false,
        _ => allow_mixing,
    }
}

/// The autoplacer for one request.
pub struct Placer<'a> {
    pub c: &'a Cluster,
    pub obs: &'a dyn Observer,
    pub filter: &'a AutoSelectFilter,
    /// The resource definition being placed (its existing replicas count and
    /// constrain the choice), if it exists already.
    pub rd_key: Option<String>,
    /// Total size of one replica (sum of volume sizes), KiB.
    pub size_kib: i64,
    pub weights: Weights,
    /// Layers the replicas will have.
    pub layers: Vec<String>,
}

impl<'a> Placer<'a> {
    /// `AllowMixingStoragePoolDriver` from the definition, its group or the
    /// controller.
    fn allow_mixing(&self) -> bool {
        let rd = self.rd_key.as_ref().and_then(|k| self.c.rsc_dfns.get(k));
        let rg = rd.and_then(|d| self.c.rsc_grps.get(&key(&d.resource_group)));
        [rd.map(|d| &d.props), rg.map(|g| &g.props), Some(&self.c.ctrl_props)]
            .into_iter()
            .flatten()
            .find_map(|p| p.get("AllowMixingStoragePoolDriver"))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// Existing diskful replicas of the definition. As LINSTOR's
    /// `Selector`, replicas being deleted, evicted or evacuated (or on an
    /// evacuated node) do not count.
    pub fn existing(&self) -> Vec<&Resource> {
        let Some(rd) = &self.rd_key else { return Vec::new() };
        let leaving = |r: &Resource| {
            ["DELETE", "EVICTED", "EVACUATE"].iter().any(|f| r.flags.contains(*f))
                || self.c.nodes.get(&key(&r.node)).is_some_and(|n| n.flags.contains("EVACUATE"))
        };
        self.c.resources_of(rd).filter(|r| !r.is_diskless() && !leaving(r)).collect()
    }

    /// Nodes whose diskless DRBD replica of the definition may become one
    /// of the new diskful replicas: LINSTOR's autoplace leaves the nodes
    /// of diskless replicas (not being deleted, evicted or evacuated, no
    /// `DrbdOptions/SkipDisk`) out of its "already placed" check and turns
    /// the chosen ones diskful (toggle-disk), a tiebreaker losing its flag.
    pub fn takeover_nodes(&self) -> BTreeSet<String> {
        let Some(rd) = &self.rd_key else { return BTreeSet::new() };
        self.c
            .resources_of(rd)
            .filter(|r| r.is_diskless() && r.flags.contains("DRBD_DISKLESS"))
            .filter(|r| {
                !["DELETE", "EVICTED", "EVACUATE"].iter().any(|f| r.flags.contains(*f))
                    && !crate::clone::truthy(r.props.get("DrbdOptions/SkipDisk"))
            })
            .map(|r| key(&r.node))
            .collect()
    }

    /// Values of node property `k` among the existing replicas.
    fn existing_values(&self, k: &str) -> Vec<Option<String>> {
        self.existing().iter().map(|r| self.c.nodes.get(&key(&r.node)).and_then(|n| n.props.get(k).cloned())).collect()
    }

    /// Pools that pass every per-pool filter, rated.
    pub fn candidates(&self, rej: &mut Rejections) -> OpResult<Vec<Candidate>> {
        let f = self.filter;
        let op = rc::MASK_RSC;
        let node_list: Option<BTreeSet<String>> = f.node_name_list.as_ref().map(|l| l.iter().map(|n| key(n)).collect());
        let pool_list: Option<BTreeSet<String>> = f.storage_pool_list.as_ref().map(|l| l.iter().map(|n| key(n)).collect());
        let providers: Option<BTreeSet<String>> = f.provider_list.as_ref().map(|l| l.iter().map(|p| p.to_ascii_uppercase()).collect());
        let regex = match f.not_place_with_rsc_regex.as_deref() {
            Some(r) => Some(regex::RegexBuilder::new(r).case_insensitive(true).build().map_err(|e| {
                OpError::new(op, rc::FAIL_INVLD_REQUEST, format!("The do-not-place-with regex '{r}' is invalid.")).cause(e.to_string())
            })?),
            None => None,
        };
        let avoid: BTreeSet<String> = f.not_place_with_rsc.iter().flatten().map(|n| key(n)).collect();
        // Nodes with a replica of this definition, and nodes with one we
        // must not be placed with.
        let (mut has_it, mut avoided) = (BTreeSet::new(), BTreeSet::new());
        let takeover = self.takeover_nodes();
        let mut block = |rd: &str, node: &str, r: &Resource| {
            let same = self.rd_key.as_deref() == Some(rd);
            if same && takeover.contains(node) {
                return;
            }
            if same || avoid.contains(rd) || regex.as_ref().is_some_and(|re| re.is_match(&r.resource_definition)) {
                if same { &mut has_it } else { &mut avoided }.insert(node.to_string());
            }
        };
        if avoid.is_empty() && regex.is_none() {
            // Only the definition's own replicas block: its index, not
            // every resource of the cluster.
            if let Some(rd) = self.rd_key.as_deref() {
                for r in self.c.resources_of(rd) {
                    block(rd, &key(&r.node), r);
                }
            }
        } else {
            for ((rd, node), r) in &self.c.resources {
                block(rd, node, r);
            }
        }
        // replicas-on-same: the value every replica must share, per key.
        let mut same_fixed: BTreeMap<String, Option<String>> = BTreeMap::new();
        for entry in f.replicas_on_same.iter().flatten() {
            let (k, v) = split_kv(entry);
            let mut values: BTreeSet<String> = self.existing_values(k).into_iter().flatten().collect();
            if let Some(v) = v {
                values.insert(v.to_string());
            }
            if values.len() > 1 {
                return Err(OpError::new(
                    op,
                    985,
                    format!(
                        "Replicas-on-same '{k}' cannot be decided: existing replicas have the values {}.",
                        values.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                )
                .correction("Fix the node properties or the resource group's filter."));
            }
            same_fixed.insert(k.to_string(), values.into_iter().next());
        }
        // replicas-on-different: values already taken, per key.
        let mut diff_taken: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for entry in f.replicas_on_different.iter().flatten() {
            let (k, v) = split_kv(entry);
            let mut taken: BTreeSet<String> = self.existing_values(k).into_iter().flatten().collect();
            if let Some(v) = v {
                taken.insert(v.to_string());
            }
            diff_taken.insert(k.to_string(), taken);
        }
        let x_limits: BTreeMap<String, i64> = f.x_replicas_on_different_map.clone().unwrap_or_default();
        let mut out = Vec::new();
        for ((nk, pk), p) in &self.c.stor_pools {
            let Some(node) = self.c.nodes.get(nk) else { continue };
            if p.provider_kind.is_diskless() {
                continue;
            }
            if !node.node_type.has_satellite()
                || node.flags.contains("DELETE")
                || node.flags.contains("EVACUATE")
                || node.flags.contains("EVICTED")
            {
                rej.add("node cannot take resources (type or flags)", p);
                continue;
            }
            if node_list.as_ref().is_some_and(|l| !l.contains(nk)) {
                rej.add("node not in node_name_list", p);
                continue;
            }
            if pool_list.as_ref().is_some_and(|l| !l.contains(pk)) {
                rej.add("pool not in storage_pool_list", p);
                continue;
            }
            if providers.as_ref().is_some_and(|l| !l.contains(p.provider_kind.as_str())) {
                rej.add("provider not in provider_list", p);
                continue;
            }
            if node.props.get("AutoplaceTarget").is_some_and(|v| v.eq_ignore_ascii_case("false"))
                || p.props.get("AutoplaceTarget").is_some_and(|v| v.eq_ignore_ascii_case("false"))
            {
                rej.add("AutoplaceTarget=false", p);
                continue;
            }
            if has_it.contains(nk.as_str()) {
                rej.add("node already has the resource", p);
                continue;
            }
            if avoided.contains(nk.as_str()) {
                rej.add("node hosts a resource of not_place_with_rsc(_regex)", p);
                continue;
            }
            let obs = self.obs.node(nk);
            if !obs.online {
                rej.add("node offline", p);
                continue;
            }
            if !obs.providers.contains(p.provider_kind.as_str()) {
                rej.add(format!("satellite cannot serve {}", p.provider_kind.as_str()), p);
                continue;
            }
            if let Some(missing) = self.layers.iter().find(|l| !obs.layers.contains(*l)) {
                rej.add(format!("satellite does not support layer {missing}"), p);
                continue;
            }
            let mut ok = true;
            for (k, fixed) in &same_fixed {
                match (node.props.get(k), fixed) {
                    (None, _) => ok = false,
                    (Some(v), Some(want)) if v != want => ok = false,
                    _ => {}
                }
            }
            if !ok {
                rej.add("replicas_on_same", p);
                continue;
            }
            if diff_taken.iter().any(|(k, taken)| node.props.get(k).is_some_and(|v| taken.contains(v))) {
                rej.add("replicas_on_different", p);
                continue;
            }
            if x_limits.iter().any(|(k, n)| {
                node.props.get(k).is_some_and(|v| {
                    self.existing_values(k).iter().filter(|e| e.as_deref() == Some(v.as_str())).count() as i64 >= (*n).max(1)
                })
            }) {
                rej.add("x_replicas_on_different", p);
                continue;
            }
            // A thin pool's figure does not use what was present at the
            // last measurement; finding it walks the node's volumes.
            let cap = if p.provider_kind.is_thin() { self.obs.capacity_figures(nk, &p.name) } else { self.obs.capacity(nk, &p.name) };
            let Some(cap) = cap else {
                rej.add("no capacity reported yet", p);
                continue;
            };
            let (reserved, rsc_count) = self.c.pool_usage(nk, pk);
            let (free, ratio) = if p.provider_kind.is_thin() {
                let r = thin_ratio(self.c, p);
                (((cap.free_kib as f64 * r) as i64).min((cap.total_kib as f64 * r) as i64 - reserved), r)
            } else {
                // Reported free space minus what was placed since the report,
                // and never more than the pool holds minus all placements.
                let pending = (reserved - cap.present_kib).max(0);
                ((cap.free_kib - pending).min(cap.total_kib - reserved), 1.0)
            };
            if free < self.size_kib {
                rej.add(format!("not enough free space (need {} KiB)", self.size_kib), p);
                continue;
            }
            out.push(Candidate {
                node: node.name.clone(),
                node_key: nk.clone(),
                pool: p.name.clone(),
                provider: p.provider_kind,
                free_kib: free,
                total_kib: cap.total_kib,
                reserved_kib: reserved,
                rsc_count,
                shared_space: p.free_space_mgr_name.clone(),
                score: 0.0,
                ratio,
                node_props: node.props.clone(),
            });
        }
        self.rate(&mut out);
        Ok(out)
    }

    /// Scores: each strategy's raw value divided by its largest, times the
    /// weight; minimising strategies count negatively.
    fn rate(&self, cands: &mut [Candidate]) {
        let max = |f: &dyn Fn(&Candidate) -> f64| cands.iter().map(f).fold(0.0f64, f64::max);
        let mf = max(&|c| c.free_kib as f64);
        let mr = max(&|c| c.reserved_kib as f64);
        let mc = max(&|c| c.rsc_count as f64);
        let norm = |v: f64, m: f64| if m > 0.0 { v / m } else { 0.0 };
        for c in cands.iter_mut() {
            c.score = norm(c.free_kib as f64, mf) * self.weights.max_free_space
                - norm(c.reserved_kib as f64, mr) * self.weights.min_reserved_space
                - norm(c.rsc_count as f64, mc) * self.weights.min_rsc_count;
        }
        cands.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.node_key.cmp(&b.node_key)).then_with(|| a.pool.cmp(&b.pool)));
    }

    /// Picks `n` candidates with the best total score whose combination
    /// holds: one per node, one per shared space, replicas-on-same values
    /// equal, replicas-on-different values distinct, x-replicas limits.
    pub fn select(&self, cands: &[Candidate], n: usize) -> Option<Vec<Candidate>> {
        if n == 0 {
            return Some(Vec::new());
        }
        let same_keys: Vec<String> = self.filter.replicas_on_same.iter().flatten().map(|e| split_kv(e).0.to_string()).collect();
        let diff_keys: Vec<String> = self.filter.replicas_on_different.iter().flatten().map(|e| split_kv(e).0.to_string()).collect();
        let x_limits: BTreeMap<String, i64> = self.filter.x_replicas_on_different_map.clone().unwrap_or_default();
        let mut existing_x: BTreeMap<(String, String), i64> = BTreeMap::new();
        for k in x_limits.keys() {
            for v in self.existing_values(k).into_iter().flatten() {
                *existing_x.entry((k.clone(), v)).or_default() += 1;
            }
        }
        let allow_mixing = self.allow_mixing();
        let existing_kinds: BTreeSet<ProviderKind> =
            self.existing().iter().flat_map(|r| r.volumes.values().map(|v| v.provider_kind)).collect();
        let fits = |chosen: &[usize], c: &Candidate| -> bool {
            existing_kinds.iter().all(|k| mixable(*k, c.provider, allow_mixing))
                && chosen.iter().all(|&i| mixable(cands[i].provider, c.provider, allow_mixing))
                && chosen.iter().all(|&i| {
                    let o = &cands[i];
                    o.node_key != c.node_key
                        && (o.shared_space != c.shared_space || c.shared_space.contains(';'))
                        && same_keys.iter().all(|k| o.node_props.get(k) == c.node_props.get(k))
                        && diff_keys.iter().all(|k| match (o.node_props.get(k), c.node_props.get(k)) {
                            (Some(a), Some(b)) => a != b,
                            _ => true,
                        })
                })
                && x_limits.iter().all(|(k, limit)| match c.node_props.get(k) {
                    Some(v) => {
                        let picked = chosen.iter().filter(|&&i| cands[i].node_props.get(k) == Some(v)).count() as i64;
                        existing_x.get(&(k.clone(), v.clone())).copied().unwrap_or(0) + picked < (*limit).max(1)
                    }
                    None => true,
                })
        };
        struct Search<'s> {
            best: Option<(f64, Vec<usize>)>,
            visited: usize,
            /// Scores in candidate order (descending): the best possible sum
            /// of the next `k` picks from index i is the sum of scores[i..i+k].
            scores: &'s [f64],
        }
        let scores: Vec<f64> = cands.iter().map(|c| c.score).collect();
        let mut s = Search { best: None, visited: 0, scores: &scores };
        fn dfs(
            i: usize,
            chosen: &mut Vec<usize>,
            sum: f64,
            n: usize,
            cands: &[Candidate],
            fits: &dyn Fn(&[usize], &Candidate) -> bool,
            s: &mut Search,
        ) {
            if chosen.len() == n {
                if s.best.as_ref().is_none_or(|(b, _)| sum > *b + 1e-12) {
                    s.best = Some((sum, chosen.clone()));
                }
                return;
            }
            let need = n - chosen.len();
            let mut j = i;
            while j < cands.len() {
                s.visited += 1;
                if s.visited > SEARCH_LIMIT {
                    return;
                }
                // Bound: even the best remaining scores cannot win.
                let bound: f64 = sum + s.scores[j..].iter().take(need).sum::<f64>();
                if s.best.as_ref().is_some_and(|(b, _)| bound <= *b + 1e-12) {
                    return;
                }
                if fits(chosen, &cands[j]) {
                    chosen.push(j);
                    dfs(j + 1, chosen, sum + cands[j].score, n, cands, fits, s);
                    chosen.pop();
                }
                j += 1;
            }
        }
        dfs(0, &mut Vec::new(), 0.0, n, cands, &fits, &mut s);
        s.best.map(|(_, idx)| idx.into_iter().map(|i| cands[i].clone()).collect())
    }
}
