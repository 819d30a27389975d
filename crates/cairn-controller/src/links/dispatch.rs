//! A change's way to the satellites: the delta of each node it touches,
//! queued to the node's worker, and the answers turned into replies.

use std::collections::{BTreeMap, BTreeSet};

use cairn_api::rc::{self, ApiCallRc};
use cairn_domain::Cluster;
use cairn_proto::{Apply, Observed, ResourceDesired};
use tokio::sync::oneshot;

use super::{APPLY_TIMEOUT, ConnStatus, Job, LinkError, Links};

/// A change sent to a node, to wait for.
pub struct Pending {
    node: String,
    /// Snapshots (resource, snapshot) this change asks the node to take:
    /// only their failures are this change's errors.
    new_snapshots: BTreeSet<(String, String)>,
    rx: oneshot::Receiver<Result<Observed, LinkError>>,
}

impl Links {
    /// Queues the delta of each node to its worker. Call under the order
    /// lock, after the changes were applied to `cluster`. Offline nodes
    /// get nothing (their next full apply carries it) and a warning, unless
    /// they are `fresh` (registered by this very change). With `scope`
    /// (upper-case resource definition keys) only those resources are
    /// compared: the change touched nothing else.
    pub fn dispatch(
        &self,
        cluster: &Cluster,
        nodes: &BTreeSet<String>,
        fresh: &BTreeSet<String>,
        scope: Option<&BTreeSet<String>>,
    ) -> (Vec<Pending>, Vec<ApiCallRc>) {
        let mut pending = Vec::new();
        let mut warnings = Vec::new();
        for nk in nodes {
            let Some(node) = cluster.nodes.get(nk) else { continue };
            let link = self.get(nk);
            let online = link.as_ref().is_some_and(|l| l.view().status == ConnStatus::Online);
            let Some(link) = link.filter(|_| online) else {
                if fresh.contains(nk) {
                    continue;
                }
                warnings.push(
                    ApiCallRc::warning(
                        rc::MASK_NODE,
                        rc::WARN_NOT_CONNECTED,
                        format!("No active connection to satellite '{}'.", node.name),
                    )
                    .with_details("The change is stored and will be applied when the satellite connects.")
                    .with_ref("Node", &node.name),
                );
                continue;
            };
            let (pools, rscs) = self.host.desired_of(cluster, nk, scope);
            let Some(delta) = link.ledger.lock().delta_of(pools, rscs, scope) else { continue };
            let (done, rx) = oneshot::channel();
            if link.tx.send(Job { apply: delta.apply, done: Some(done) }).is_ok() {
                pending.push(Pending { node: node.name.clone(), new_snapshots: delta.new_snapshots, rx });
            }
        }
        (pending, warnings)
    }
}

/// Waits for the satellites' answers and turns failures into replies.
pub async fn collect(pending: Vec<Pending>) -> Vec<ApiCallRc> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
    for p in pending {
        let answer = tokio::time::timeout_at(deadline, p.rx).await;
        match answer {
            Ok(Ok(Ok(observed))) => {
                // A snapshot this change asked for and the node could not
                // take; older snapshot failures show on their snapshots.
                for r in &observed.resources {
                    for (snap, e) in r.snapshot_errors.iter().filter(|(s, _)| p.new_snapshots.contains(&(r.name.clone(), (*s).clone()))) {
                        let mut entry =
                            ApiCallRc::error(rc::MASK_SNAPSHOT, rc::FAIL_UNKNOWN_ERROR, format!("(Node: '{}') {}", p.node, e.message))
                                .with_ref("Node", &p.node)
                                .with_ref("RscDfn", &r.name)
                                .with_ref("Snapshot", snap);
                        entry.cause = e.cause.clone();
                        entry.details = e.details.clone();
                        entry.correction = Some(format!("Delete the snapshot ('{snap}') to clean it up; it is not taken again."));
                        out.push(entry);
                    }
                }
                for r in observed.resources.iter().chain(observed.removed.iter()) {
                    if let Some(e) = &r.error {
                        let mut entry =
                            ApiCallRc::error(rc::MASK_RSC, rc::FAIL_UNKNOWN_ERROR, format!("(Node: '{}') {}", p.node, e.message))
                                .with_ref("Node", &p.node)
                                .with_ref("RscDfn", &r.name);
                        entry.cause = e.cause.clone();
                        entry.details = e.details.clone();
                        out.push(entry);
                    }
                }
            }
            Ok(Ok(Err(e))) => out.push(
                ApiCallRc::warning(rc::MASK_NODE, rc::WARN_NOT_CONNECTED, format!("Satellite '{}' did not confirm the change.", p.node))
                    .with_cause(e.to_string())
                    .with_details("The change is stored and will be applied when the satellite reconnects.")
                    .with_ref("Node", &p.node),
            ),
            Ok(Err(_)) => out.push(
                ApiCallRc::warning(
                    rc::MASK_NODE,
                    rc::WARN_NOT_CONNECTED,
                    format!("The link to satellite '{}' closed before it answered.", p.node),
                )
                .with_ref("Node", &p.node),
            ),
            Err(_) => out.push(
                ApiCallRc::error(
                    rc::MASK_NODE,
                    rc::FAIL_UNKNOWN_ERROR,
                    format!("Satellite '{}' did not answer within {} s.", p.node, APPLY_TIMEOUT.as_secs()),
                )
                .with_correction("Check the satellite's log; the change is stored and is retried on reconnect.")
                .with_ref("Node", &p.node),
            ),
        }
    }
    out
}

/// Merges queued deltas, in order, into one: a later upsert or removal of
/// a resource replaces an earlier one; the last pool list wins.
pub(super) fn merge<'a>(applies: impl Iterator<Item = &'a Apply>) -> Apply {
    let mut out = Apply::default();
    let mut ops: BTreeMap<String, Option<ResourceDesired>> = BTreeMap::new();
    for a in applies {
        out.generation = a.generation;
        if a.pools_set {
            out.pools_set = true;
            out.pools = a.pools.clone();
        }
        for r in &a.resources {
            ops.insert(r.name.clone(), Some(r.clone()));
        }
        for n in &a.removed {
            ops.insert(n.clone(), None);
        }
    }
    for (name, op) in ops {
        match op {
            Some(r) => out.resources.push(r),
            None => out.removed.push(name),
        }
    }
    out
}

/// The part of a merged answer that concerns one of the merged deltas, so
/// each caller sees only its own objects' errors.
pub(super) fn only_of(o: &Observed, a: &Apply) -> Observed {
    let mine: BTreeSet<&str> = a.resources.iter().map(|r| r.name.as_str()).chain(a.removed.iter().map(String::as_str)).collect();
    Observed {
        generation: o.generation,
        instance: o.instance.clone(),
        resources: o.resources.iter().filter(|r| mine.contains(r.name.as_str())).cloned().collect(),
        removed: o.removed.iter().filter(|r| mine.contains(r.name.as_str())).cloned().collect(),
        pools: o.pools.clone(),
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::{ResourceObserved, VolumeDesired};

    use super::*;

    fn rd(name: &str, size: i64) -> ResourceDesired {
        ResourceDesired {
            name: name.into(),
            diskless: false,
            volumes: vec![VolumeDesired { number: 0, id: "ab".into(), size_kib: size, pool: "p".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn merged_deltas_keep_the_last_word_per_resource() {
        let a1 = Apply { generation: 1, resources: vec![rd("a", 1), rd("b", 1)], ..Default::default() };
        let a2 = Apply { generation: 2, resources: vec![rd("a", 2)], removed: vec!["b".into()], ..Default::default() };
        let a3 = Apply { generation: 3, resources: vec![rd("b", 3)], removed: vec!["c".into()], ..Default::default() };
        let m = merge([&a1, &a2, &a3].into_iter());
        assert_eq!(m.generation, 3);
        assert_eq!(m.resources, vec![rd("a", 2), rd("b", 3)]);
        assert_eq!(m.removed, vec!["c".to_string()]);
        assert!(!m.full);
    }

    #[test]
    fn a_change_reports_only_the_snapshot_failures_it_asked_for() {
        let failed = |m: &str| cairn_proto::ObjectError { message: m.into(), cause: Some("cp failed".into()), details: None };
        let answer = Observed {
            resources: vec![ResourceObserved {
                name: "web".into(),
                snapshot_errors: [("old".to_string(), failed("old failed")), ("new".to_string(), failed("new failed"))].into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let ask = |new: &[&str]| {
            let (tx, rx) = oneshot::channel();
            tx.send(Ok(answer.clone())).expect("send");
            let new_snapshots = new.iter().map(|s| ("web".to_string(), s.to_string())).collect();
            rt.block_on(collect(vec![Pending { node: "n1".into(), new_snapshots, rx }]))
        };
        // A resize of web (no new snapshot): no error at all.
        assert!(ask(&[]).is_empty());
        // Taking "new": its failure, as a snapshot error, and nothing of "old".
        let out = ask(&["new"]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].message.contains("new failed") && out[0].cause.as_deref() == Some("cp failed"), "{:?}", out[0]);
        assert_eq!(out[0].ret_code & rc::MASK_SNAPSHOT, rc::MASK_SNAPSHOT);
        assert!(out[0].ret_code < 0, "an error");
    }

    #[test]
    fn each_caller_sees_only_its_own_results() {
        let o = Observed {
            resources: vec![
                ResourceObserved { name: "a".into(), ..Default::default() },
                ResourceObserved { name: "b".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        let mine = only_of(&o, &Apply { resources: vec![rd("b", 1)], ..Default::default() });
        assert_eq!(mine.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["b"]);
    }
}
