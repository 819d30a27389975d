//! Snapshots: per resource definition, the cluster-wide view, several at
//! once, restore and rollback.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use cairn_api::PropsModify;
use cairn_api::query::{NameFilter, Query};
use cairn_api::rc;
use cairn_api::snapshot::{CreateMultiSnapshotRequest, Snapshot, SnapshotRestore, SnapshotRollback};
use cairn_domain::Cluster;
use cairn_domain::OpError;
use cairn_domain::name::key;
use cairn_domain::placement::Observer;
use cairn_domain::snapshot::{NodeSnapState, SnapshotDfn, SnapshotPhase};

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/view/snapshots", get(view))
        .route("/v1/actions/snapshot/multi", post(create_multi))
        .route("/v1/resource-definitions/{rd}/snapshots", get(list_of_rd).post(create))
        .route("/v1/resource-definitions/{rd}/snapshots/{snap}", get(get_one).put(modify).delete(remove))
        .route("/v1/resource-definitions/{rd}/snapshot-restore-volume-definition/{snap}", post(restore_vds))
        .route("/v1/resource-definitions/{rd}/snapshot-restore-resource/{snap}", post(restore_rscs))
        .route("/v1/resource-definitions/{rd}/snapshot-rollback/{snap}", post(rollback))
}

/// The wire form; a node's snapshot counts as taken when its satellite
/// reports it, and as failed (with the reason) when it reports that.
fn wire(s: &AppState, d: &SnapshotDfn) -> Snapshot {
    d.to_api(&|node: &str| s.links().snapshot_state(&key(node), &d.resource_definition, &d.name))
}

/// What satellites found out about their pools, for refusing snapshots in
/// FILE_THIN pools without reflinks up front.
fn pool_snapshots(s: &AppState) -> impl Fn(&str, &str) -> Option<bool> + '_ {
    |node: &str, pool: &str| s.links().pool_snapshots(&key(node), pool)
}

fn filtered(s: &AppState, c: &Cluster, q: &Query, only_rd: Option<&str>) -> Result<Vec<Snapshot>, ApiError> {
    let nodes = NameFilter::new(&q.all("nodes"));
    let rscs = NameFilter::new(&q.all("resources"));
    let snaps = NameFilter::new(&q.all("snapshots"));
    let page = input::param(q.page())?;
    let only = only_rd.map(key);
    let out = c
        .snapshots
        .iter()
        .filter(|((rd, _), d)| {
            only.as_ref().is_none_or(|o| o == rd)
                && rscs.matches(&d.resource_definition)
                && snaps.matches(&d.name)
                && (nodes.is_empty() || d.nodes.values().any(|n| nodes.matches(&n.node)))
        })
        .map(|(_, d)| wire(s, d))
        .collect();
    Ok(page.apply(out))
}

async fn view(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    Ok(ok(&filtered(&s, &s.read(), &q, None)?))
}

async fn list_of_rd(State(s): State<AppState>, Path(rd): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    let c = s.read();
    let d = c.rsc_dfn(&rd, rc::MASK_SNAPSHOT)?;
    Ok(ok(&filtered(&s, &c, &q, Some(&d.name))?))
}

async fn get_one(State(s): State<AppState>, Path((rd, snap)): Path<(String, String)>) -> Result<Response, ApiError> {
    let c = s.read();
    Ok(ok(&wire(&s, c.snapshot(&rd, &snap, rc::MASK_SNAPSHOT)?)))
}

async fn create(State(s): State<AppState>, Path(rd): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: Snapshot = input::required(&body)?;
    let snaps = vec![(rd.clone(), req.name.clone())];
    steps(s, snaps, move |s| async move {
        let probed = s.clone();
        s.mutate(201, |c, ctx| c.create_snapshot(&rd, &req, &pool_snapshots(&probed), ctx)).await
    })
    .await
}

/// Takes snapshot `snap` of `rd` as `POST …/snapshots` does (a backup
/// takes its snapshot this way).
pub(crate) async fn take(s: &AppState, rd: &str, snap: &str) -> Result<Reply, ApiError> {
    let req = Snapshot { name: snap.to_string(), ..Default::default() };
    let rd = rd.to_string();
    steps(s.clone(), vec![(rd.clone(), snap.to_string())], move |s| async move {
        let probed = s.clone();
        s.mutate(201, |c, ctx| c.create_snapshot(&rd, &req, &pool_snapshots(&probed), ctx)).await
    })
    .await
}

async fn create_multi(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: CreateMultiSnapshotRequest = input::required(&body)?;
    let snaps = req.snapshots.iter().map(|r| (r.resource_name.clone(), r.name.clone())).collect();
    steps(s, snaps, move |s| async move {
        let probed = s.clone();
        s.mutate(201, |c, ctx| c.create_snapshots(&req.snapshots, &pool_snapshots(&probed), ctx)).await
    })
    .await
}

/// Registers snapshots with `register`, then takes those of replicated
/// resources through LINSTOR's steps: registering suspends I/O on every
/// node of the resource (the call returns once the satellites confirmed);
/// then every node takes its snapshot; then I/O resumes. When a node
/// could not suspend, the snapshot goes (and I/O resumes) instead. The
/// steps run in a task of their own: a client that goes away never leaves
/// I/O suspended (and a controller that stops between them finishes them
/// when it starts again).
async fn steps<F, Fut>(s: AppState, snaps: Vec<(String, String)>, register: F) -> Result<Reply, ApiError>
where
    F: FnOnce(AppState) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Reply, ApiError>> + Send,
{
    let task = tokio::spawn(async move {
        let registered = register(s.clone()).await?;
        let suspended: Vec<(String, String)> = {
            let c = s.read();
            snaps
                .into_iter()
                .filter(|(rd, snap)| c.snapshots.get(&(key(rd), key(snap))).is_some_and(|d| d.phase == SnapshotPhase::Suspend))
                .collect()
        };
        if suspended.is_empty() {
            return Ok(registered);
        }
        let mut entries = registered.entries;
        // One mutation applying `op` to every suspended snapshot.
        let each = |op: fn(&Cluster, &str, &str, SnapshotPhase) -> Result<cairn_domain::Outcome, OpError>, to: SnapshotPhase| {
            let snaps = suspended.clone();
            move |c: &Cluster, _: &mut cairn_domain::Ctx| -> Result<cairn_domain::Outcome, OpError> {
                let mut out = cairn_domain::Outcome::default();
                for (rd, snap) in &snaps {
                    out.changes.extend(op(c, rd, snap, to)?.changes);
                }
                Ok(out)
            }
        };
        let phase = |to: SnapshotPhase| each(|c, rd, snap, to| c.snapshot_phase(rd, snap, to), to);
        let mut more = Vec::new();
        if entries.iter().any(|e| e.is_error()) {
            for (rd, snap) in &suspended {
                entries.push(cairn_api::rc::ApiCallRc::error(
                    rc::MASK_CRT | rc::MASK_SNAPSHOT,
                    rc::FAIL_UNKNOWN_ERROR,
                    format!("Snapshot '{snap}' of resource '{rd}' was not taken: I/O could not be suspended on every node."),
                ));
            }
            let abort = each(|c, rd, snap, _| c.delete_snapshot(rd, snap, &[]), SnapshotPhase::Done);
            more.push(s.mutate(200, abort).await);
        } else {
            more.push(s.mutate(201, phase(SnapshotPhase::Take)).await);
            // Resumed whatever the snapshots' outcome; a failing database
            // is given a few seconds.
            let mut resumed = s.mutate(201, phase(SnapshotPhase::Done)).await;
            for _ in 0..5 {
                if resumed.is_ok() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                resumed = s.mutate(201, phase(SnapshotPhase::Done)).await;
            }
            more.push(resumed);
        }
        for r in more {
            match r {
                // What the satellites said in the later steps, once.
                Ok(r) => {
                    for e in r.entries {
                        if !entries.iter().any(|x| x.message == e.message) {
                            entries.push(e);
                        }
                    }
                }
                Err(e) => {
                    // Left to the controller's next start when the resume
                    // itself failed (it finishes unfinished snapshots).
                    tracing::error!("a step of taking snapshots {suspended:?} failed: {e}");
                    return Err(e);
                }
            }
        }
        Ok(Reply::new(rc::status_for(&entries, 201), entries))
    });
    task.await.map_err(|e| ApiError::Internal(format!("the snapshot steps failed: {e}")))?
}

async fn modify(State(s): State<AppState>, Path((rd, snap)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: PropsModify = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_snapshot(&rd, &snap, &req)).await
}

async fn remove(State(s): State<AppState>, Path((rd, snap)): Path<(String, String)>, RawQuery(q): RawQuery) -> Result<Reply, ApiError> {
    let q = input::query(q);
    let nodes = q.all("nodes");
    s.mutate(200, |c, _| c.delete_snapshot(&rd, &snap, &nodes)).await
}

async fn restore_vds(State(s): State<AppState>, Path((rd, snap)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: SnapshotRestore = input::required(&body)?;
    s.mutate(200, |c, ctx| c.restore_vlm_dfns(&rd, &snap, &req, ctx)).await
}

/// Refuses to use a snapshot that one of `nodes` (all when empty) failed
/// to take: there is nothing (or only part of it) there.
fn not_failed(s: &AppState, rd: &str, snap: &str, nodes: &[String], op: i64) -> Result<(), ApiError> {
    let c = s.read();
    let d = c.snapshot(rd, snap, op)?;
    for n in d.nodes.values().filter(|n| nodes.is_empty() || nodes.iter().any(|x| key(x) == key(&n.node))) {
        if let NodeSnapState::Failed(why) = s.links().snapshot_state(&key(&n.node), &d.resource_definition, &d.name) {
            return Err(OpError::new(
                op,
                rc::FAIL_NOT_FOUND_SNAPSHOT,
                format!("Snapshot '{}' of '{}' failed on node '{}'; there is nothing to use there.", d.name, d.resource_definition, n.node),
            )
            .cause(why)
            .correction("Delete the snapshot and take a new one.")
            .into());
        }
    }
    Ok(())
}

async fn restore_rscs(State(s): State<AppState>, Path((rd, snap)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: SnapshotRestore = input::required(&body)?;
    not_failed(&s, &rd, &snap, &req.nodes, rc::MASK_CRT | rc::MASK_RSC)?;
    s.mutate(200, |c, ctx| c.restore_resources(&rd, &snap, &req, ctx)).await
}

/// The body is optional (`SnapshotRollback`: the client's ZFS rollback
/// strategy for this call).
async fn rollback(State(s): State<AppState>, Path((rd, snap)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: SnapshotRollback = input::body(&body)?;
    not_failed(&s, &rd, &snap, &[], rc::MASK_MOD | rc::MASK_RSC)?;
    let links = s.clone();
    let in_use = move |r: &cairn_domain::resource::Resource| links.links().in_use(&key(&r.node), &r.resource_definition);
    s.mutate(200, |c, ctx| c.rollback(&rd, &snap, req.zfs_rollback_strategy.as_deref(), &in_use, ctx)).await
}
