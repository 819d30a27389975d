//! `/v1/nodes` and net interfaces.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{delete, get, put};
use cairn_api::node::{NetInterface, Node, NodeModify};
use cairn_api::query::NameFilter;
use cairn_api::rc;
use cairn_domain::name::key;

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::events::{NodeEvent, NodeModified, Stream};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/nodes", get(list).post(create))
        .route("/v1/nodes/{node}", get(get_one).put(modify).delete(remove))
        .route("/v1/nodes/{node}/lost", delete(lost))
        .route("/v1/nodes/{node}/reconnect", put(reconnect))
        .route("/v1/nodes/{node}/evacuate", put(evacuate))
        .route("/v1/nodes/{node}/restore", put(restore))
        .route("/v1/nodes/{node}/net-interfaces", get(list_nifs).post(create_nif))
        .route("/v1/nodes/{node}/net-interfaces/{nif}", get(get_nif).put(modify_nif).delete(delete_nif))
}

/// The wire form of a node with what its satellite reported.
pub(super) fn wire(s: &AppState, key: &str, n: &cairn_domain::node::Node) -> Node {
    let mut w = n.to_api(s.links().connection_status(key));
    if let Some(h) = s.links().hello(key) {
        w.storage_providers = Some(h.providers.iter().filter(|p| p.supported).map(|p| p.kind.as_str().to_string()).collect());
        w.unsupported_providers =
            Some(h.providers.iter().filter(|p| !p.supported).map(|p| (p.kind.as_str().to_string(), p.missing.clone())).collect());
        w.resource_layers = Some(h.layers.clone());
        w.unsupported_layers = Some(h.unsupported_layers.clone());
        w.platform = Some("LINUX".into());
        w.os_variant = h.os_variant.clone();
    }
    w
}

async fn list(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    let names = NameFilter::new(&q.all("nodes"));
    let props = q.props_filter();
    let page = input::param(q.page())?;
    let c = s.read();
    let out: Vec<Node> =
        c.nodes.iter().filter(|(_, n)| names.matches(&n.name) && props.matches(&n.props)).map(|(k, n)| wire(&s, k, n)).collect();
    Ok(ok(&page.apply(out)))
}

async fn get_one(State(s): State<AppState>, Path(node): Path<String>) -> Result<Response, ApiError> {
    let c = s.read();
    let n = c.node(&node, rc::MASK_NODE)?;
    Ok(ok(&wire(&s, &key(&n.name), n)))
}

/// The node's wire form now, if it exists.
fn wire_of(s: &AppState, node: &str) -> Option<Node> {
    let k = key(node);
    let c = s.read();
    c.nodes.get(&k).map(|n| wire(s, &k, n))
}

/// `node-create` once the node exists, as LINSTOR's `EventNodeHandlerBridge`.
async fn create(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: Node = input::required(&body)?;
    let reply = s.mutate(201, |c, ctx| c.create_node(&req, ctx)).await?;
    if !reply.entries.iter().any(|e| e.is_error())
        && let Some(n) = wire_of(&s, &req.name)
    {
        s.links().events().publish(Stream::Nodes, "node-create", &NodeEvent { node: &n });
    }
    Ok(reply)
}

/// `node-modified` with the node before and after, as LINSTOR.
async fn modify(State(s): State<AppState>, Path(node): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: NodeModify = input::body(&body)?;
    let old = wire_of(&s, &node);
    let reply = s.mutate(200, |c, _| c.modify_node(&node, &req)).await?;
    if !reply.entries.iter().any(|e| e.is_error())
        && let (Some(old), Some(new)) = (old, wire_of(&s, &node))
    {
        s.links().events().publish(Stream::Nodes, "node-modified", &NodeModified { old_node: &old, new_node: &new });
    }
    Ok(reply)
}

/// LINSTOR's node delete: the node's resources go first (refused while
/// one is in use or is the last diskful replica of a definition with
/// diskless replicas), and once the satellites answered for them, the node.
async fn remove(State(s): State<AppState>, Path(node): Path<String>) -> Result<Reply, ApiError> {
    let before = wire_of(&s, &node);
    let reply = remove_in_steps(&s, &node).await?;
    // `node-delete` once it is gone, with the node as it was.
    if !s.read().nodes.contains_key(&key(&node))
        && let Some(n) = before
    {
        s.links().events().publish(Stream::Nodes, "node-delete", &NodeEvent { node: &n });
    }
    Ok(reply)
}

async fn remove_in_steps(s: &AppState, node: &str) -> Result<Reply, ApiError> {
    let links = s.clone();
    let in_use = move |r: &cairn_domain::resource::Resource| {
        links
            .links()
            .resource(&key(&r.node), &r.resource_definition)
            .and_then(|o| o.drbd.clone())
            .is_some_and(|d| d.kernel && d.role == "Primary")
    };
    let first = s.mutate(200, |c, _| c.delete_node_resources(node, &in_use)).await?;
    let gone = !s.read().nodes.contains_key(&key(node));
    if gone || first.entries.iter().any(|e| e.is_error()) {
        return Ok(first);
    }
    let mut second = s.mutate(200, |c, _| c.delete_node(node)).await?;
    let mut entries = first.entries;
    entries.append(&mut second.entries);
    Ok(Reply::new(rc::status_for(&entries, 200), entries))
}

async fn lost(State(s): State<AppState>, Path(node): Path<String>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.lose_node(&node)).await
}

/// The body of `PUT /v1/nodes/{node}/evacuate` (all optional).
#[derive(Debug, Default, serde::Deserialize)]
struct NodeEvacuate {
    #[serde(default)]
    target: Option<Vec<String>>,
    #[serde(default)]
    do_not_target: Option<Vec<String>>,
}

/// The body of `PUT /v1/nodes/{node}/restore` (all optional).
#[derive(Debug, Default, serde::Deserialize)]
struct NodeRestore {
    #[serde(default)]
    delete_resources: Option<bool>,
    #[serde(default)]
    delete_snapshots: Option<bool>,
}

/// `PUT /v1/nodes/{node}/evacuate`: the node gets `EVACUATE` and
/// replacements of its replicas are registered; the controller's follow-up
/// loop deletes each evacuated replica once its replacement is UpToDate.
async fn evacuate(State(s): State<AppState>, Path(node): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: NodeEvacuate = input::body(&body)?;
    if req.target.as_ref().is_some_and(|t| !t.is_empty()) && req.do_not_target.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(cairn_domain::OpError::new(
            rc::MASK_MOD | rc::MASK_NODE,
            rc::FAIL_INVLD_REQUEST,
            "target and do_not_target must not be used together!",
        )
        .into());
    }
    let links = s.clone();
    let up_to_date = move |rd: &str, node: &str, unknown: bool| match links.links().resource(node, rd).and_then(|o| o.drbd.clone()) {
        Some(d) if d.kernel => !d.volumes.is_empty() && d.volumes.iter().all(|v| v.disk == "UpToDate"),
        _ => unknown,
    };
    let (mut replies, pending) = s
        .mutate_detached(|c, ctx| c.evacuate_node(&node, req.target.as_deref(), req.do_not_target.as_deref(), s.links(), &up_to_date, ctx))
        .await?;
    // The satellites' answers join the reply if they come soon; creating
    // and attaching the replacements' disks can take long (the resync
    // itself is never waited for), and then they are logged instead.
    let mut pending = Box::pin(pending);
    match tokio::time::timeout(EVACUATE_WAIT, &mut pending).await {
        Ok(answers) => replies.extend(answers),
        Err(_) => {
            let name = node.clone();
            tokio::spawn(async move {
                for e in pending.await.iter().filter(|e| e.is_error()) {
                    tracing::warn!(node = %name, "evacuation: {}", e.message);
                }
            });
            replies.push(rc::ApiCallRc::info(
                rc::MASK_MOD | rc::MASK_NODE,
                0,
                format!("The satellites are still applying the evacuation of node '{node}'; it goes on in the background."),
            ));
        }
    }
    Ok(Reply::new(rc::status_for(&replies, 200), replies))
}

/// How long an evacuate request waits for the satellites' answers.
const EVACUATE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `PUT /v1/nodes/{node}/restore`.
async fn restore(State(s): State<AppState>, Path(node): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: NodeRestore = input::body(&body)?;
    let evicted = s.read().nodes.get(&key(&node)).is_some_and(|n| n.flags.contains(cairn_domain::evacuate::FLAG_EVICTED));
    let reply =
        s.mutate(200, |c, _| c.restore_node(&node, req.delete_resources.unwrap_or(false), req.delete_snapshots.unwrap_or(false))).await?;
    // An evicted node is connected again (as LINSTOR's reconnector).
    if evicted && !reply.entries.iter().any(|e| e.is_error()) {
        let c = s.read();
        s.links().reconnect(&c, &key(&node));
    }
    Ok(reply)
}

async fn list_nifs(State(s): State<AppState>, Path(node): Path<String>) -> Result<Response, ApiError> {
    let c = s.read();
    let n = c.node(&node, rc::MASK_NET_IF)?;
    Ok(ok(&n.net_interfaces.iter().map(|i| i.to_api()).collect::<Vec<NetInterface>>()))
}

async fn get_nif(State(s): State<AppState>, Path((node, nif)): Path<(String, String)>) -> Result<Response, ApiError> {
    let c = s.read();
    let n = c.node(&node, rc::MASK_NET_IF)?;
    let i = n.net_interfaces.iter().find(|i| i.name.eq_ignore_ascii_case(&nif)).ok_or_else(|| {
        cairn_domain::OpError::new(
            rc::MASK_NET_IF,
            rc::FAIL_NOT_FOUND_NET_IF,
            format!("Net interface '{nif}' on node '{}' not found.", n.name),
        )
    })?;
    Ok(ok(&i.to_api()))
}

async fn create_nif(State(s): State<AppState>, Path(node): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: NetInterface = input::required(&body)?;
    s.mutate(201, |c, ctx| c.create_net_interface(&node, &req, ctx)).await
}

async fn modify_nif(State(s): State<AppState>, Path((node, nif)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: NetInterface = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_net_interface(&node, &nif, &req)).await
}

async fn delete_nif(State(s): State<AppState>, Path((node, nif)): Path<(String, String)>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.delete_net_interface(&node, &nif)).await
}

/// `PUT /v1/nodes/{node}/reconnect`: drops the satellite link and connects
/// anew (hello, full state), as LINSTOR's `node reconnect`, and waits (a
/// while) for the node to be ONLINE again, as LINSTOR waits for the
/// connection. An evicted node stays as it is.
async fn reconnect(State(s): State<AppState>, Path(node): Path<String>) -> Result<Reply, ApiError> {
    const OP: i64 = rc::MASK_MOD | rc::MASK_NODE;
    let (name, node_key, entry) = {
        let c = s.read();
        let n = c.node(&node, OP)?;
        let node_key = key(&n.name);
        let entry = if n.flags.contains("EVICTED") {
            rc::ApiCallRc::warning(
                OP,
                rc::WARN_NODE_EVICTED,
                format!("Nodes [{}] are evicted and will not be reconnected. Use node restore <node-name> to reconnect.", n.name),
            )
        } else if s.links().reconnect(&c, &node_key) {
            rc::ApiCallRc::success(OP, 0, format!("Nodes [{}] will be reconnected.", n.name))
        } else {
            return Err(cairn_domain::OpError::new(
                OP,
                rc::FAIL_INVLD_REQUEST,
                format!("Node '{}' has no satellite to reconnect.", n.name),
            )
            .cause(format!("Node '{}' is of type {}.", n.name, n.node_type.as_str()))
            .into());
        };
        (n.name.clone(), node_key, entry.with_ref("Node", &n.name))
    };
    let mut replies = vec![entry];
    if replies[0].is_warning() {
        return Ok(Reply::new(200, replies));
    }
    let deadline = tokio::time::Instant::now() + RECONNECT_WAIT;
    let mut status = s.links().connection_status(&node_key);
    while status != "ONLINE" && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        status = s.links().connection_status(&node_key);
    }
    if status != "ONLINE" {
        replies.push(
            rc::ApiCallRc::warning(OP, rc::WARN_NOT_CONNECTED, format!("Node '{name}' is not connected again yet ({status})."))
                .with_correction("The controller keeps trying; see the node's connection status.")
                .with_ref("Node", &name),
        );
    }
    Ok(Reply::new(200, replies))
}

/// How long a reconnect waits for the node to be ONLINE again.
const RECONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(15);
