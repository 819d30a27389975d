//! Resources: per resource definition, and the cluster-wide
//! `/v1/view/resources`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post, put};
use cairn_api::PropsModify;
use cairn_api::query::{NameFilter, Query};
use cairn_api::rc;
use cairn_api::rc::ApiCallRc;
use cairn_api::resource::{ResourceCreate, ResourceModify, ResourceWithVolumes, ToggleDiskDiskful, ToggleDiskRequest, Volume};
use cairn_domain::Cluster;
use cairn_domain::name::key;
use cairn_domain::resource::Resource;
use cairn_domain::resource_json::{ResourceJson, VolumeSeen};
use cairn_domain::toggle_disk::{ToggleDisk, ToggleOp};
use cairn_proto::{DrbdObserved, ResourceObserved};

use super::error::ApiError;
use super::input;
use super::reply::{Encoding, Items, Reply, ok, stream_array, stream_array_split};
use crate::crypto::MasterKey;
use crate::links::LinksSnapshot;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/view/resources", get(view))
        .route("/v1/resource-definitions/{rd}/resources", get(list_of_rd).post(create_list))
        .route("/v1/resource-definitions/{rd}/resources/{node}", get(get_one).post(create_one).put(modify).delete(remove))
        .route("/v1/resource-definitions/{rd}/resources/{node}/activate", post(activate))
        .route("/v1/resource-definitions/{rd}/resources/{node}/deactivate", post(deactivate))
        .route("/v1/resource-definitions/{rd}/resources/{node}/toggle-disk", put(toggle_disk))
        .route("/v1/resource-definitions/{rd}/resources/{node}/toggle-disk/diskless", put(into_diskless))
        .route("/v1/resource-definitions/{rd}/resources/{node}/toggle-disk/diskless/{pool}", put(into_diskless_pool))
        .route("/v1/resource-definitions/{rd}/resources/{node}/toggle-disk/diskful", put(into_diskful))
        .route("/v1/resource-definitions/{rd}/resources/{node}/toggle-disk/diskful/{pool}", put(into_diskful_pool))
        .route("/v1/resource-definitions/{rd}/resources/{node}/migrate-disk/{from}", put(migrate_disk))
        .route("/v1/resource-definitions/{rd}/resources/{node}/migrate-disk/{from}/{pool}", put(migrate_disk_pool))
        .route("/v1/resource-definitions/{rd}/resources/{node}/volumes", get(list_volumes))
        .route("/v1/resource-definitions/{rd}/resources/{node}/volumes/{nr}", put(modify_volume).get(get_volume))
}

/// The wire form of a resource, with what its satellite reported.
pub(super) fn wire(s: &AppState, c: &Cluster, r: &Resource) -> ResourceWithVolumes {
    wire_of(s, &s.links().snapshot(), c, &(key(&r.resource_definition), key(&r.node)), r)
}

/// What its satellite reported of one resource, and whether its LUKS keys
/// open, as a resource's wire form shows them.
struct Reported<'c> {
    r: &'c Resource,
    observed: Option<Arc<ResourceObserved>>,
    master: Option<MasterKey>,
}

impl<'c> Reported<'c> {
    /// `(rd, node)`: the resource's cluster key.
    fn new(s: &AppState, links: &LinksSnapshot, (rd, node): &(String, String), r: &'c Resource) -> Reported<'c> {
        // A LUKS key the unlocked master key cannot open is LINSTOR's
        // corrupted_key (its satellite fails to decrypt it).
        let master = r.volumes.values().any(|v| v.luks_secret.is_some()).then(|| s.links().master()).flatten();
        Reported { r, observed: links.resource(node, rd), master }
    }

    fn volume(&self, nr: u32) -> Option<VolumeSeen<'_>> {
        let sealed = self.r.volumes.get(&nr).and_then(|v| v.luks_secret.as_ref());
        let corrupted = sealed.zip(self.master.as_ref()).is_some_and(|(sealed, m)| m.open(sealed).is_err());
        let seen = self.observed.as_deref().and_then(|o| o.volumes.iter().find(|v| v.number == nr)).map(|v| VolumeSeen {
            device_path: v.device_path.as_deref(),
            allocated_size_kib: v.allocated_kib,
            usable_size_kib: v.usable_kib,
            disk_state: Some(&v.disk_state),
            luks_device_path: v.luks_device_path.as_deref(),
            luks_corrupted_key: false,
        });
        match (seen, corrupted) {
            (seen, true) => Some(VolumeSeen { luks_corrupted_key: true, ..seen.unwrap_or_default() }),
            (seen, false) => seen,
        }
    }

    /// Without DRBD nothing can hold a plain volume open behind our back;
    /// "in use" is known once the satellite reported the resource.
    fn in_use(&self) -> Option<bool> {
        self.observed.as_ref().map(|_| false)
    }

    fn drbd(&self) -> Option<&DrbdObserved> {
        self.observed.as_deref().and_then(|o| o.drbd.as_ref())
    }

    /// What the satellite could not do shows with the volumes, as
    /// LINSTOR's volume reports do.
    fn report(&self) -> Option<ApiCallRc> {
        let e = self.observed.as_deref().and_then(|o| o.error.as_ref())?;
        let mut report = ApiCallRc::error(rc::MASK_VLM, rc::FAIL_UNKNOWN_ERROR, e.message.clone());
        if let Some(c) = &e.cause {
            report = report.with_cause(c.clone());
        }
        if let Some(d) = &e.details {
            report = report.with_details(d.clone());
        }
        Some(report)
    }
}

/// The DRBD minor of volume `nr` of definition `rd` (key).
fn minor_of(c: &Cluster, rd: &str, nr: u32) -> Option<u32> {
    c.vlm_dfns.get(&(rd.to_string(), nr)).and_then(|v| v.drbd_minor)
}

/// [`wire`] for a resource under its cluster key (definition, node), with
/// the links taken once for a whole list.
pub(super) fn wire_of(s: &AppState, links: &LinksSnapshot, c: &Cluster, k: &(String, String), r: &Resource) -> ResourceWithVolumes {
    let rep = Reported::new(s, links, k, r);
    let volume = |nr: u32| rep.volume(nr).map(|v| v.to_owned());
    let minor = |nr: u32| minor_of(c, &k.0, nr);
    let mut out = r.to_api(&volume, &minor, rep.in_use(), rep.drbd());
    if let Some(report) = rep.report() {
        for v in &mut out.volumes {
            v.reports.push(report.clone());
        }
    }
    out
}

/// Writes a resource of a list as [`wire_of`] shows it, straight from the
/// cluster's objects (see `cairn_domain::resource_json`).
fn write_resource(
    w: &mut impl Items,
    s: &AppState,
    links: &LinksSnapshot,
    c: &Cluster,
    k: &(String, String),
    r: &Resource,
) -> std::io::Result<()> {
    let rep = Reported::new(s, links, k, r);
    let report = rep.report();
    let json = ResourceJson::new(r, |nr| rep.volume(nr), |nr| minor_of(c, &k.0, nr), rep.in_use(), rep.drbd(), report.as_ref());
    w.item(&json)
}

/// The filters of a resource list.
struct Wanted {
    nodes: NameFilter,
    rscs: NameFilter,
    pools: NameFilter,
    props: cairn_api::query::PropsFilter,
}

impl Wanted {
    /// No filter: every resource is kept.
    fn everything(&self) -> bool {
        self.nodes.is_empty() && self.rscs.is_empty() && self.pools.is_empty() && self.props.is_empty()
    }

    fn keep(&self, r: &Resource) -> bool {
        self.nodes.matches(&r.node)
            && self.rscs.matches(&r.resource_definition)
            && self.props.matches(&r.props)
            && (self.pools.is_empty() || r.volumes.values().any(|v| self.pools.matches(&v.storage_pool)))
    }
}

/// The resources a list asks for, streamed (see [`stream_array`]).
/// Named definitions or nodes are looked up through the indexes: the cost
/// follows the answer, not the cluster. The list of every resource, with
/// no filter and no page, is written by several threads
/// ([`stream_array_split`]). The order is always the full list's
/// (definition, then node), each resource once.
fn filtered(s: &AppState, c: Arc<Cluster>, q: &Query, only_rd: Option<String>, enc: Encoding) -> Result<Response, ApiError> {
    let want = Wanted {
        nodes: NameFilter::new(&q.all("nodes")),
        rscs: NameFilter::new(&q.all("resources")),
        pools: NameFilter::new(&q.all("storage_pools")),
        props: q.props_filter(),
    };
    let page = input::param(q.page())?;
    let s = s.clone();
    if only_rd.is_none() && want.everything() && page.limit <= 0 {
        // The whole list: the cluster's keys as they are, no copies.
        let links = s.links().snapshot();
        return Ok(stream_array_split(enc, move |w| {
            for (k, r) in c.resources.iter() {
                if w.mine() {
                    write_resource(w, &s, &links, &c, k, r)?;
                }
            }
            Ok(())
        }));
    }
    Ok(stream_array(enc, move |w| {
        let keep = |r: &&Resource| want.keep(r);
        let rd_key = only_rd.as_deref().map(key);
        let links = s.links().snapshot();
        let picked: Vec<&Resource> = match &rd_key {
            Some(rd) => c.resources_of(rd).filter(keep).collect(),
            None if !want.rscs.is_empty() => in_order(want.rscs.names().iter().flat_map(|rd| c.resources_of(rd)).filter(keep)),
            None if !want.nodes.is_empty() => in_order(want.nodes.names().iter().flat_map(|n| c.resources_on(n)).filter(keep)),
            None => {
                // Every resource, filtered or paged: the cluster's keys as
                // they are, no copies.
                for (k, r) in page.window(c.resources.iter().filter(|(_, r)| want.keep(r))) {
                    write_resource(w, &s, &links, &c, k, r)?;
                }
                return Ok(());
            }
        };
        for r in page.window(picked.into_iter()) {
            write_resource(w, &s, &links, &c, &(key(&r.resource_definition), key(&r.node)), r)?;
        }
        Ok(())
    }))
}

/// Resources in the cluster's order (definition, then node), each once.
fn in_order<'a>(rs: impl Iterator<Item = &'a Resource>) -> Vec<&'a Resource> {
    let by_key: BTreeMap<(String, String), &Resource> = rs.map(|r| ((key(&r.resource_definition), key(&r.node)), r)).collect();
    by_key.into_values().collect()
}

async fn view(State(s): State<AppState>, enc: Encoding, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    filtered(&s, s.read(), &q, None, enc)
}

async fn list_of_rd(State(s): State<AppState>, enc: Encoding, Path(rd): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    let c = s.read();
    let name = c.rsc_dfn(&rd, rc::MASK_RSC)?.name.clone();
    filtered(&s, c, &q, Some(name), enc)
}

async fn get_one(State(s): State<AppState>, Path((rd, node)): Path<(String, String)>) -> Result<Response, ApiError> {
    let c = s.read();
    Ok(ok(&wire(&s, &c, c.resource(&rd, &node, rc::MASK_RSC)?)))
}

async fn create_list(State(s): State<AppState>, Path(rd): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: Vec<ResourceCreate> = input::required(&body)?;
    s.mutate(201, |c, ctx| c.create_resources(&rd, &req, None, ctx)).await
}

async fn create_one(State(s): State<AppState>, Path((rd, node)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ResourceCreate = input::body(&body)?;
    s.mutate(201, |c, ctx| c.create_resources(&rd, std::slice::from_ref(&req), Some(&node), ctx)).await
}

async fn modify(State(s): State<AppState>, Path((rd, node)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ResourceModify = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_resource(&rd, &node, &req)).await
}

async fn remove(State(s): State<AppState>, Path((rd, node)): Path<(String, String)>, RawQuery(q): RawQuery) -> Result<Reply, ApiError> {
    let keep = input::param(input::query(q).flag("keep_tiebreaker"))?;
    s.mutate(200, |c, _| c.delete_resource_keeping_quorum(&rd, &node, keep)).await
}

async fn list_volumes(State(s): State<AppState>, Path((rd, node)): Path<(String, String)>) -> Result<Response, ApiError> {
    let c = s.read();
    let r = c.resource(&rd, &node, rc::MASK_VLM)?;
    Ok(ok(&wire(&s, &c, r).volumes))
}

async fn get_volume(State(s): State<AppState>, Path((rd, node, nr)): Path<(String, String, String)>) -> Result<Response, ApiError> {
    let nr = input::vlm_nr(&nr)?;
    let c = s.read();
    let r = c.resource(&rd, &node, rc::MASK_VLM)?;
    let v: Option<Volume> = wire(&s, &c, r).volumes.into_iter().find(|v| v.volume_number == nr);
    v.map(|v| ok(&v)).ok_or_else(|| {
        ApiError::Op(cairn_domain::OpError::new(
            rc::MASK_VLM,
            rc::FAIL_NOT_FOUND_VLM,
            format!("Volume {nr} of resource '{rd}' on node '{node}' not found."),
        ))
    })
}

async fn modify_volume(
    State(s): State<AppState>,
    Path((rd, node, nr)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let nr = input::vlm_nr(&nr)?;
    let req: PropsModify = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_volume(&rd, &node, nr, &req)).await
}

async fn activate(State(s): State<AppState>, Path((rd, node)): Path<(String, String)>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.set_resource_active(&rd, &node, true, false)).await
}

/// A replica that is Primary on its node (as its satellite reported) is in
/// use and stays active.
async fn deactivate(State(s): State<AppState>, Path((rd, node)): Path<(String, String)>) -> Result<Reply, ApiError> {
    let links = s.links();
    s.mutate(200, |c, _| {
        let in_use = c
            .resource(&rd, &node, rc::MASK_MOD | rc::MASK_RSC)
            .ok()
            .and_then(|r| links.resource(&key(&r.node), &r.resource_definition))
            .and_then(|o| o.drbd.clone())
            .is_some_and(|d| d.role == "Primary");
        c.set_resource_active(&rd, &node, false, in_use)
    })
    .await
}

/// Whether the replica of `rd` on `node` is Primary, as its satellite
/// reported.
fn primary(s: &AppState, rd: &str, node: &str) -> bool {
    s.links().resource(&key(node), rd).and_then(|o| o.drbd.clone()).is_some_and(|d| d.role == "Primary")
}

/// Runs one toggle-disk request.
async fn toggle(s: AppState, rd: String, node: String, req: ToggleDisk) -> Result<Reply, ApiError> {
    s.mutate(200, |c, ctx| {
        let rd_name = c.rsc_dfns.get(&key(&rd)).map_or(rd.clone(), |d| d.name.clone());
        c.toggle_disk(&rd, &node, &req, s.links(), &|n| primary(&s, &rd_name, n), ctx)
    })
    .await
}

/// `PUT …/toggle-disk` with a `ToggleDiskRequest` body.
async fn toggle_disk(State(s): State<AppState>, Path((rd, node)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ToggleDiskRequest = input::body(&body)?;
    let op = ToggleOp::parse(req.operation.as_deref()).map_err(ApiError::Op)?;
    let req = ToggleDisk {
        op: Some(op),
        storage_pool: req.storage_pool,
        migrate_from: req.migrate_from,
        layer_list: req.layer_list,
        ..Default::default()
    };
    toggle(s, rd, node, req).await
}

fn diskless(pool: Option<String>) -> ToggleDisk {
    ToggleDisk { op: Some(ToggleOp::Diskless), storage_pool: pool, ..Default::default() }
}

fn diskful(pool: Option<String>, from: Option<String>, body: &Bytes) -> Result<ToggleDisk, ApiError> {
    let b: ToggleDiskDiskful = input::body(body)?;
    Ok(ToggleDisk { op: Some(ToggleOp::Diskful), storage_pool: pool, migrate_from: from, layer_list: b.layer_list, ..Default::default() })
}

async fn into_diskless(State(s): State<AppState>, Path((rd, node)): Path<(String, String)>) -> Result<Reply, ApiError> {
    toggle(s, rd, node, diskless(None)).await
}

async fn into_diskless_pool(State(s): State<AppState>, Path((rd, node, pool)): Path<(String, String, String)>) -> Result<Reply, ApiError> {
    toggle(s, rd, node, diskless(Some(pool))).await
}

async fn into_diskful(State(s): State<AppState>, Path((rd, node)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req = diskful(None, None, &body)?;
    toggle(s, rd, node, req).await
}

async fn into_diskful_pool(
    State(s): State<AppState>,
    Path((rd, node, pool)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let req = diskful(Some(pool), None, &body)?;
    toggle(s, rd, node, req).await
}

async fn migrate_disk(
    State(s): State<AppState>,
    Path((rd, node, from)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let req = diskful(None, Some(from), &body)?;
    toggle(s, rd, node, req).await
}

async fn migrate_disk_pool(
    State(s): State<AppState>,
    Path((rd, node, from, pool)): Path<(String, String, String, String)>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let req = diskful(Some(pool), Some(from), &body)?;
    toggle(s, rd, node, req).await
}
