//! Resource definition clone: `POST …/{rd}/clone` answers once the clone
//! is stored and handed to the satellites, then follows the copies in the
//! background and clears `CLONING` (or sets `FAILED`); `GET
//! …/clone/{clone}` reports CLONING/COMPLETE/FAILED; `GET …/sync-status`
//! whether every diskful replica is UpToDate.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use cairn_api::rc::{self, ApiCallRc};
use cairn_api::resource_definition::{
    ResourceDefinitionCloneRequest, ResourceDefinitionCloneStarted, ResourceDefinitionCloneStatus, ResourceDefinitionSyncStatus,
};
use cairn_domain::clone::FLAG_CLONING;
use cairn_domain::name::key;

use super::error::ApiError;
use super::input;
use super::reply::{json, ok};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/resource-definitions/{rd}/clone", post(start))
        .route("/v1/resource-definitions/{rd}/clone/{clone}", get(status))
        .route("/v1/resource-definitions/{rd}/sync-status", get(sync_status))
}

/// How often the background follow-up looks at the satellites' reports
/// when their answers did not settle the clone.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

async fn start(State(s): State<AppState>, Path(rd): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let req: ResourceDefinitionCloneRequest = input::body(&body)?;
    let asked = req.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "__invalid_name__".into());
    let started = |clone_name: &str, status: StatusCode, messages: Vec<ApiCallRc>| {
        json(
            status,
            &ResourceDefinitionCloneStarted {
                location: format!("/v1/resource-definitions/{rd}/clone/{clone_name}"),
                source_name: rd.clone(),
                clone_name: clone_name.to_string(),
                messages,
            },
        )
    };
    let links = s.clone();
    let drbd_synced = move |r: &cairn_domain::resource::Resource| drbd_up_to_date(&links, r);
    match s.mutate_detached(|c, ctx| c.clone_rsc_dfn(&rd, &req, &drbd_synced, ctx)).await {
        Ok((replies, pending)) => {
            // The first reply names the new definition (derived from an
            // external name when no name was given).
            let clone_name = replies.first().and_then(|r| r.obj_refs.get("RscDfn")).cloned().unwrap_or(asked);
            let follow = s.clone();
            let name = clone_name.clone();
            tokio::spawn(async move { follow_clone(follow, name, pending).await });
            Ok(started(&clone_name, StatusCode::CREATED, replies))
        }
        // LINSTOR answers a refused clone with the same shape and 500,
        // the error in `messages` (python-linstor reads it from there).
        Err(ApiError::Op(e)) => Ok(started(&asked, StatusCode::INTERNAL_SERVER_ERROR, vec![*e.rc])),
        Err(other) => Err(other),
    }
}

/// Follows every clone still CLONING (after a controller restart): by the
/// satellites' reports, once they are connected again.
pub fn resume(s: &AppState) {
    let cloning: Vec<String> = s.read().rsc_dfns.values().filter(|d| d.flags.contains(FLAG_CLONING)).map(|d| d.name.clone()).collect();
    for name in cloning {
        tracing::info!(clone = %name, "following an unfinished clone");
        let follow = s.clone();
        tokio::spawn(async move { follow_clone(follow, name, std::future::ready(Vec::new())).await });
    }
}

/// Waits for the satellites' answers to the clone, then for their reports
/// if the answers did not settle it, and records the outcome.
async fn follow_clone(s: AppState, name: String, pending: impl Future<Output = Vec<ApiCallRc>>) {
    let answers = pending.await;
    let failure =
        answers.iter().find(|r| r.is_error() && r.obj_refs.get("RscDfn").is_some_and(|n| key(n) == key(&name))).map(|r| match &r.cause {
            Some(c) => format!("{} {c}", r.message),
            None => r.message.clone(),
        });
    let failure = match failure {
        Some(f) => Some(f),
        None => loop {
            match copies_done(&s, &name) {
                Progress::Gone => return,
                Progress::Done => break None,
                Progress::Failed(why) => break Some(why),
                Progress::Running => tokio::time::sleep(FOLLOW_EVERY).await,
            }
        },
    };
    match &failure {
        Some(why) => tracing::warn!(clone = %name, "clone failed: {why}"),
        None => tracing::info!(clone = %name, "clone complete"),
    }
    if let Err(e) = s.mutate(200, |c, _| Ok(c.finish_clone(&name, failure.as_deref()))).await {
        tracing::warn!(clone = %name, "cannot record the end of the clone: {e}");
    }
}

enum Progress {
    /// The definition went away or is not cloning any more.
    Gone,
    Running,
    Done,
    Failed(String),
}

/// Whether every replica of the clone reports all its volumes.
fn copies_done(s: &AppState, name: &str) -> Progress {
    let c = s.read();
    let Some(d) = c.rsc_dfns.get(&key(name)).filter(|d| d.flags.contains(FLAG_CLONING)) else { return Progress::Gone };
    for r in c.resources_of(&key(&d.name)) {
        let Some(o) = s.links().resource(&key(&r.node), &d.name) else { return Progress::Running };
        if let Some(e) = &o.error {
            return Progress::Failed(format!("(Node: '{}') {}", r.node, e.message));
        }
        if r.volumes.keys().any(|nr| !o.volumes.iter().any(|v| v.number == *nr)) {
            return Progress::Running;
        }
    }
    Progress::Done
}

/// Whether a DRBD replica's satellite reports every volume UpToDate;
/// true also where it cannot know (config-only DRBD, no kernel module).
fn drbd_up_to_date(s: &AppState, r: &cairn_domain::resource::Resource) -> bool {
    match s.links().resource(&key(&r.node), &r.resource_definition).and_then(|o| o.drbd.clone()) {
        Some(d) if d.kernel => !d.volumes.is_empty() && d.volumes.iter().all(|v| v.disk.eq_ignore_ascii_case("UpToDate")),
        Some(_) => true,
        None => false,
    }
}

async fn status(State(s): State<AppState>, Path((_rd, clone)): Path<(String, String)>) -> Result<Response, ApiError> {
    let c = s.read();
    let online = |node: &str| s.links().connection_status(&key(node)) == "ONLINE";
    let st = c.clone_status(&clone, &online)?;
    Ok(ok(&ResourceDefinitionCloneStatus { status: st.as_str().to_string() }))
}

async fn sync_status(State(s): State<AppState>, Path(rd): Path<String>) -> Result<Response, ApiError> {
    let c = s.read();
    let d = c.rsc_dfn(&rd, rc::MASK_RSC_DFN)?;
    // DRBD replicas count by DRBD's disk state (unknown without the
    // kernel module: not synced); plain ones by their volumes' state.
    let synced_on_all = c.resources_of(&key(&d.name)).filter(|r| !r.is_diskless()).all(|r| {
        s.links().resource(&key(&r.node), &d.name).is_some_and(|o| match &o.drbd {
            Some(dr) => {
                dr.kernel
                    && r.volumes.keys().all(|nr| dr.volumes.iter().any(|v| v.number == *nr && v.disk.eq_ignore_ascii_case("UpToDate")))
            }
            None => {
                o.error.is_none()
                    && r.volumes.keys().all(|nr| o.volumes.iter().any(|v| v.number == *nr && v.disk_state.eq_ignore_ascii_case("UpToDate")))
            }
        })
    });
    Ok(ok(&ResourceDefinitionSyncStatus { synced_on_all }))
}
