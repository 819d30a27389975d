//! Physical storage: the unused disks satellites report, and LVM volume
//! groups or thin pools made on them (optionally registered as a storage
//! pool in the same call).

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use cairn_api::physical::{PhysicalStorage, PhysicalStorageCreate, PhysicalStorageDevice, PhysicalStorageNode};
use cairn_api::rc::{self, ApiCallRc};
use cairn_api::storage_pool::StoragePool;
use cairn_domain::OpError;
use cairn_domain::name::key;
use cairn_proto::{PATH_PHYSICAL, PhysicalCreate, PhysicalCreated, PhysicalDevice};

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::links::LinkError;
use crate::state::AppState;

const OP: i64 = rc::MASK_PHYSICAL_DEVICE;
/// pvcreate + vgcreate + lvcreate on slow disks.
const CREATE_TIMEOUT: Duration = Duration::from_secs(300);

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/physical-storage", get(view)).route("/v1/physical-storage/{node}", get(of_node).post(create))
}

async fn devices(s: &AppState, node_key: &str) -> Result<Vec<PhysicalDevice>, LinkError> {
    s.links().request(node_key, PATH_PHYSICAL, None, Duration::from_secs(60)).await
}

fn not_online(node: &str, why: &LinkError) -> ApiError {
    ApiError::Op(
        OpError::new(OP, rc::FAIL_UNKNOWN_ERROR, format!("Cannot ask node '{node}' for its physical storage."))
            .cause(why.to_string())
            .correction("Wait until the node's satellite is ONLINE."),
    )
}

async fn view(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    let page = input::param(q.page())?;
    let nodes: Vec<(String, String)> = {
        let c = s.read();
        c.nodes.iter().filter(|(_, n)| n.node_type.has_satellite()).map(|(k, n)| (k.clone(), n.name.clone())).collect()
    };
    let mut groups: Vec<PhysicalStorage> = Vec::new();
    for (k, name) in nodes {
        // Offline nodes have nothing to offer now.
        let Ok(devs) = devices(&s, &k).await else { continue };
        for d in devs {
            let dev = PhysicalStorageDevice { device: d.device, model: d.model, serial: d.serial, wwn: d.wwn };
            match groups.iter_mut().find(|g| g.size == d.size && g.rotational == d.rotational) {
                Some(g) => g.nodes.entry(name.clone()).or_default().push(dev),
                None => groups.push(PhysicalStorage { size: d.size, rotational: d.rotational, nodes: [(name.clone(), vec![dev])].into() }),
            }
        }
    }
    groups.sort_by_key(|g| (g.size, g.rotational));
    Ok(ok(&page.apply(groups)))
}

async fn of_node(State(s): State<AppState>, Path(node): Path<String>) -> Result<Response, ApiError> {
    let name = s.read().node(&node, OP)?.name.clone();
    let devs = devices(&s, &key(&name)).await.map_err(|e| not_online(&name, &e))?;
    let out: Vec<PhysicalStorageNode> = devs
        .into_iter()
        .map(|d| PhysicalStorageNode {
            size: d.size,
            rotational: d.rotational,
            device: PhysicalStorageDevice { device: d.device, model: d.model, serial: d.serial, wwn: d.wwn },
        })
        .collect();
    Ok(ok(&out))
}

fn invalid(code: i64, msg: String, correction: &str) -> ApiError {
    ApiError::Op(OpError::new(OP | rc::MASK_CRT, code, msg).correction(correction.to_string()))
}

async fn create(State(s): State<AppState>, Path(node): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: PhysicalStorageCreate = input::required(&body)?;
    let name = s.read().node(&node, OP | rc::MASK_CRT)?.name.clone();
    let kind = req.provider_kind.trim().to_ascii_uppercase();
    if !matches!(kind.as_str(), "LVM" | "LVM_THIN") {
        return Err(invalid(
            rc::FAIL_INVLD_PROVIDER,
            format!("Physical storage of kind '{}' cannot be created by Cairn.", req.provider_kind),
            "Use LVM or LVM_THIN.",
        ));
    }
    if req.vdo_enable == Some(true) || req.sed == Some(true) {
        return Err(invalid(rc::FAIL_INVLD_REQUEST, "VDO and SED are not supported.".into(), "Leave vdo_enable and sed unset."));
    }
    if req.raid_level.as_deref().is_some_and(|r| !r.eq_ignore_ascii_case("JBOD")) {
        return Err(invalid(rc::FAIL_INVLD_REQUEST, "Only raid_level JBOD is supported.".into(), "Use JBOD."));
    }
    if req.pool_name.trim().is_empty() || req.device_paths.is_empty() {
        return Err(invalid(
            rc::FAIL_INVLD_REQUEST,
            "A pool_name and at least one device path are needed.".into(),
            "Give pool_name and device_paths.",
        ));
    }
    let msg = PhysicalCreate {
        provider_kind: kind.clone(),
        device_paths: req.device_paths.clone(),
        pool_name: req.pool_name.trim().to_string(),
        pv_create_arguments: req.pv_create_arguments.clone(),
        vg_create_arguments: req.vg_create_arguments.clone(),
        lv_create_arguments: req.lv_create_arguments.clone(),
    };
    let body = serde_json::to_vec(&msg).map_err(|e| ApiError::Internal(e.to_string()))?;
    let created: PhysicalCreated =
        s.links().request(&key(&name), PATH_PHYSICAL, Some(body), CREATE_TIMEOUT).await.map_err(|e| not_online(&name, &e))?;
    let backing = match (created.backing, created.error) {
        (Some(b), None) => b,
        (_, e) => {
            let e = e.unwrap_or(cairn_proto::ObjectError { message: "The satellite did not say why.".into(), cause: None, details: None });
            let mut rc = ApiCallRc::error(OP | rc::MASK_CRT, rc::FAIL_UNKNOWN_ERROR, e.message);
            if let Some(c) = e.cause {
                rc = rc.with_cause(c);
            }
            if let Some(d) = e.details {
                rc = rc.with_details(d);
            }
            return Ok(Reply::new(500, vec![rc]));
        }
    };
    let mut replies = vec![
        ApiCallRc::success(OP | rc::MASK_CRT, rc::CREATED, format!("{kind} pool '{backing}' created on node '{name}'."))
            .with_ref("Node", &name),
    ];
    if let Some(sp) = req.with_storage_pool {
        let mut props = sp.props.clone();
        props.insert("StorDriver/StorPoolName".into(), backing.clone());
        let pool = StoragePool { storage_pool_name: sp.name.clone(), provider_kind: kind.clone(), props, ..Default::default() };
        match s.mutate(201, |c, ctx| c.create_stor_pool(&name, &pool, ctx)).await {
            Ok(r) => replies.extend(r.entries),
            Err(e) => {
                let mut r = vec![
                    ApiCallRc::warning(
                        OP,
                        rc::WARN_NOT_FOUND,
                        format!("The {kind} pool '{backing}' exists on node '{name}', but the storage pool was not created."),
                    )
                    .with_cause(e.to_string()),
                ];
                r.extend(replies);
                return Ok(Reply::new(500, r));
            }
        }
    }
    Ok(Reply::new(rc::status_for(&replies, 201), replies))
}
