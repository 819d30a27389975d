//! Simulated satellites: many in one process, each on a port of its own,
//! speaking the real controller-satellite protocol (hello, apply, observe,
//! the cluster secret and the protocol version checked as a real satellite
//! checks them). Nothing is created: every volume is "made" at once and
//! reported UpToDate, every DRBD peer Connected, every pool with the
//! capacity its volumes leave. It exists so that the controller's whole
//! control loop (placement, dispatch, link workers, observations) can be
//! measured at thousands of nodes on one machine (`cairn sim-satellites`,
//! docs/BENCHMARKS.md).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_proto::auth::{PATH_CHALLENGE, PATH_SESSION};
use cairn_proto::{
    Apply, DrbdConnectionObserved, DrbdObserved, DrbdPeerVolumeObserved, DrbdVolumeObserved, Hello, LogLevels, Observed, PATH_APPLY,
    PATH_CONFIG, PATH_HELLO, PATH_OBSERVE, PROTO_VERSION, PoolDesired, PoolObserved, ProviderKind, ProviderSupport, ResourceDesired,
    ResourceObserved, VolumeObserved,
};
use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::SatelliteError;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How many satellites.
    pub count: usize,
    /// The address they all listen on.
    pub ip: IpAddr,
    /// Satellite `i` (from 0) listens on `base_port + i`.
    pub base_port: u16,
    /// Satellite `i` is node `format!("{prefix}{i:05}")`.
    pub name_prefix: String,
    pub secret: String,
    /// Size of every pool, KiB.
    pub pool_kib: i64,
    /// Mutual TLS, as a real satellite's `--tls-*` (the nodes' interfaces
    /// are then `SSL`).
    pub tls: Option<crate::tls::TlsFiles>,
}

impl SimConfig {
    /// The node name of satellite `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}{i:05}", self.name_prefix)
    }
}

#[derive(Default)]
struct NodeState {
    synced: bool,
    /// As a real satellite counts it: the newest request's generation
    /// since the last full apply.
    generation: u64,
    pools: Vec<PoolDesired>,
    resources: BTreeMap<String, ResourceDesired>,
}

struct SimNode {
    /// The real satellite's checks (its hello is this node's).
    gate: crate::server::Gate,
    pool_kib: i64,
    state: Mutex<NodeState>,
    /// Bumped by every apply: wakes the observation requests it holds.
    changed: tokio::sync::watch::Sender<u64>,
    /// Set when the simulation stops: held observations answer at once.
    stop: tokio::sync::watch::Receiver<bool>,
}

/// Binds every satellite's port, then serves them all until `shutdown`.
/// A port that cannot be bound stops the start with that error.
pub async fn run(cfg: &SimConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), SatelliteError> {
    let mut servers = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tls = match &cfg.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(files)?)),
        None => None,
    };
    for i in 0..cfg.count {
        let port = u16::try_from(usize::from(cfg.base_port) + i).map_err(|_| SatelliteError::Bind {
            addr: format!("{}:{}+{i}", cfg.ip, cfg.base_port),
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        let addr = SocketAddr::new(cfg.ip, port);
        let listener = TcpListener::bind(addr).await.map_err(|source| SatelliteError::Bind { addr: addr.to_string(), source })?;
        let node = Arc::new(SimNode {
            gate: crate::server::Gate::new(&cfg.secret, PROTO_VERSION, hello(&cfg.node_name(i), i)),
            pool_kib: cfg.pool_kib,
            state: Mutex::new(NodeState::default()),
            changed: tokio::sync::watch::Sender::new(0),
            stop: stop_rx.clone(),
        });
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match &tls {
            Some(acceptor) => {
                let listener = crate::tls::TlsListener::new(listener, acceptor.clone()).map_err(SatelliteError::Serve)?;
                servers.spawn(async move { axum::serve(listener, router(node)).with_graceful_shutdown(stopped).await });
            }
            None => {
                servers.spawn(async move { axum::serve(listener, router(node)).with_graceful_shutdown(stopped).await });
            }
        }
    }
    tracing::info!(count = cfg.count, ip = %cfg.ip, base_port = cfg.base_port, "simulated satellites ready");
    shutdown.await;
    let _ = stop_tx.send(true);
    while let Some(done) = servers.join_next().await {
        if let Ok(Err(e)) = done {
            return Err(SatelliteError::Serve(e));
        }
    }
    Ok(())
}

fn hello(name: &str, i: usize) -> Hello {
    let supported = [ProviderKind::Diskless, ProviderKind::Lvm, ProviderKind::LvmThin, ProviderKind::File, ProviderKind::FileThin];
    Hello {
        proto_version: PROTO_VERSION,
        node_name: name.to_string(),
        hostname: name.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        instance: format!("sim-{i}-{}", uuid::Uuid::new_v4()),
        providers: supported.iter().map(|k| ProviderSupport { kind: *k, supported: true, missing: vec![] }).collect(),
        layers: vec!["DRBD".into(), "LUKS".into(), "STORAGE".into()],
        unsupported_layers: BTreeMap::new(),
        ext_file_dirs: vec![],
        os_variant: Some("Cairn simulated satellite".into()),
    }
}

fn router(node: Arc<SimNode>) -> Router {
    Router::new()
        .route(PATH_HELLO, get(|State(n): State<Arc<SimNode>>| async move { Json(n.gate.hello.clone()) }))
        .route(PATH_CHALLENGE, get(|| async { StatusCode::NOT_FOUND }))
        .route(PATH_SESSION, post(|| async { StatusCode::NOT_FOUND }))
        .route(PATH_APPLY, post(apply).layer(axum::extract::DefaultBodyLimit::disable()))
        .route(PATH_OBSERVE, post(observe))
        .route(PATH_CONFIG, get(|| async { Json(LogLevels::default()) }))
        .layer(middleware::from_fn_with_state(node.clone(), guard))
        .with_state(node)
}

/// The same checks as a real satellite's (`server::Gate`).
async fn guard(State(n): State<Arc<SimNode>>, req: Request, next: Next) -> Response {
    n.gate.check(req, next).await
}

async fn apply(State(n): State<Arc<SimNode>>, body: Bytes) -> Response {
    let req: Apply = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad apply request: {e}")).into_response(),
    };
    let mut st = n.state.lock();
    if !req.full && !st.synced {
        return (StatusCode::PRECONDITION_REQUIRED, "this satellite needs a full apply first").into_response();
    }
    if req.full {
        st.resources.clear();
        st.synced = true;
        st.generation = req.generation;
    }
    st.generation = st.generation.max(req.generation);
    if req.full || req.pools_set {
        st.pools = req.pools.clone();
    }
    let mut out = Observed { generation: req.generation, instance: n.gate.hello.instance.clone(), ..Default::default() };
    for r in req.resources {
        out.resources.push(observed(&r));
        st.resources.insert(r.name.clone(), r);
    }
    for name in req.removed {
        st.resources.remove(&name);
        out.removed.push(ResourceObserved { name, ..Default::default() });
    }
    out.pools = n.pools(&st);
    drop(st);
    n.changed.send_modify(|g| *g += 1);
    Json(out).into_response()
}

/// As a real satellite: the whole state, or "unchanged" by its digest,
/// held while unchanged as the request allows (woken by applies, the only
/// thing that changes a simulated node).
async fn observe(State(n): State<Arc<SimNode>>, body: Bytes) -> Response {
    let wake = crate::server::Wake {
        changes: Some(n.changed.subscribe()),
        every: std::time::Duration::from_millis(cairn_proto::MAX_OBSERVE_WAIT_MS),
        stop: n.stop.clone(),
    };
    let answer = crate::server::observation(&body, || std::future::ready(n.observe_all()), wake).await;
    crate::server::reply(answer)
}

impl SimNode {
    fn observe_all(&self) -> Observed {
        let st = self.state.lock();
        Observed {
            generation: st.generation,
            instance: self.gate.hello.instance.clone(),
            resources: st.resources.values().map(observed).collect(),
            removed: vec![],
            pools: self.pools(&st),
        }
    }

    /// Every pool's capacity: its size less the volumes placed in it
    /// (diskless pools have none).
    fn pools(&self, st: &NodeState) -> Vec<PoolObserved> {
        let mut used: BTreeMap<&str, i64> = BTreeMap::new();
        for r in st.resources.values().filter(|r| !r.diskless) {
            for v in &r.volumes {
                *used.entry(v.pool.as_str()).or_default() += v.size_kib;
            }
        }
        st.pools
            .iter()
            .map(|p| {
                let diskless = p.kind == ProviderKind::Diskless;
                let free = (self.pool_kib - used.get(p.name.as_str()).copied().unwrap_or(0)).max(0);
                PoolObserved {
                    name: p.name.clone(),
                    total_kib: (!diskless).then_some(self.pool_kib),
                    free_kib: (!diskless).then_some(free),
                    error: None,
                    supports_snapshots: Some(!diskless),
                }
            })
            .collect()
    }
}

/// What a real satellite reports of a LUKS volume whose key it did not
/// get (the controller is locked, or kept the key back).
fn luks_error(r: &ResourceDesired) -> Option<cairn_proto::ObjectError> {
    let (v, l) = r.volumes.iter().find_map(|v| v.luks.as_ref().filter(|l| l.key.is_none()).map(|l| (v, l)))?;
    let e = match &l.withheld {
        Some(why) => cairn_storage::luks::LuksError::Withheld(why.clone()),
        None => cairn_storage::luks::LuksError::NoKey,
    };
    Some(cairn_proto::ObjectError {
        message: format!("Cannot open the encrypted volume {} of '{}' (simulated).", v.number, r.name),
        cause: Some(e.to_string()),
        details: None,
    })
}

/// A resource as a healthy node reports it: its volumes UpToDate (or
/// diskless), DRBD Secondary and connected to every peer.
fn observed(r: &ResourceDesired) -> ResourceObserved {
    let disk = if r.diskless { "Diskless" } else { "UpToDate" };
    let minor = |nr: u32| r.drbd.as_ref().and_then(|d| d.volumes.iter().find(|v| v.number == nr)).map(|v| v.minor);
    let volumes = r
        .volumes
        .iter()
        .map(|v| VolumeObserved {
            number: v.number,
            device_path: Some(match minor(v.number) {
                Some(m) => format!("/dev/drbd{m}"),
                None => format!("/dev/sim/{}_{:05}", r.name, v.number),
            }),
            allocated_kib: (!r.diskless).then_some(v.size_kib),
            usable_kib: Some(v.size_kib),
            disk_state: disk.to_string(),
            luks_device_path: None,
        })
        .collect();
    let drbd = r.drbd.as_ref().map(|d| DrbdObserved {
        kernel: true,
        role: "Secondary".into(),
        may_promote: Some(!r.diskless),
        promotion_score: Some(if r.diskless { 0 } else { 10102 }),
        suspended: Some("no".into()),
        connections: d
            .peers
            .iter()
            .map(|p| DrbdConnectionObserved {
                peer: p.host.clone(),
                peer_node_id: p.node_id,
                connection: "Connected".into(),
                peer_role: Some("Secondary".into()),
                split_brain: false,
            })
            .collect(),
        volumes: d
            .volumes
            .iter()
            .map(|v| DrbdVolumeObserved {
                number: v.number,
                minor: v.minor,
                disk: disk.to_string(),
                quorum: Some(true),
                size_kib: r.volumes.iter().find(|x| x.number == v.number).map(|x| x.size_kib),
                peers: d
                    .peers
                    .iter()
                    .map(|p| DrbdPeerVolumeObserved {
                        peer: p.host.clone(),
                        replication: "Established".into(),
                        peer_disk: if p.diskless { "Diskless" } else { "UpToDate" }.into(),
                        done: None,
                    })
                    .collect(),
            })
            .collect(),
        forgotten: d.forget_peers.clone(),
    });
    ResourceObserved {
        name: r.name.clone(),
        volumes,
        error: luks_error(r),
        drbd,
        snapshots: r.snapshots.clone(),
        snapshot_errors: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::{DrbdDesired, DrbdPeer, DrbdVolumeDesired, VolumeDesired};

    #[test]
    fn a_replicated_resource_is_reported_uptodate_and_connected_and_takes_its_pool_space() {
        let node = SimNode {
            gate: crate::server::Gate::new("s", PROTO_VERSION, hello("n1", 0)),
            pool_kib: 1000,
            state: Mutex::new(NodeState::default()),
            changed: tokio::sync::watch::Sender::new(0),
            stop: tokio::sync::watch::channel(false).1,
        };
        let r = ResourceDesired {
            name: "r1".into(),
            volumes: vec![VolumeDesired { number: 0, size_kib: 300, pool: "p".into(), ..Default::default() }],
            drbd: Some(DrbdDesired {
                volumes: vec![DrbdVolumeDesired { number: 0, minor: 1000, ..Default::default() }],
                peers: vec![DrbdPeer { host: "n2".into(), node_id: 1, diskless: true, ..Default::default() }],
                forget_peers: vec![3],
                ..Default::default()
            }),
            ..Default::default()
        };
        {
            let mut st = node.state.lock();
            st.pools = vec![PoolDesired { name: "p".into(), kind: ProviderKind::FileThin, backing: None }];
            st.resources.insert("r1".into(), r);
        }
        let o = node.observe_all();
        assert_eq!(o.pools[0].free_kib, Some(700));
        let r = &o.resources[0];
        assert_eq!(r.volumes[0].device_path.as_deref(), Some("/dev/drbd1000"));
        let d = r.drbd.as_ref().expect("drbd");
        assert_eq!(d.connections[0].connection, "Connected");
        assert_eq!(d.volumes[0].peers[0].peer_disk, "Diskless");
        assert_eq!(d.forgotten, vec![3]);
    }

    #[test]
    fn a_luks_volume_without_its_key_reports_why_as_a_real_satellite_does() {
        use cairn_proto::{LuksDesired, Secret};
        let vol = |luks| VolumeDesired { number: 0, size_kib: 1, pool: "p".into(), luks: Some(luks), ..Default::default() };
        let r = |luks| ResourceDesired { name: "enc".into(), volumes: vec![vol(luks)], ..Default::default() };
        assert_eq!(observed(&r(LuksDesired { key: Some(Secret("k".into())), ..Default::default() })).error, None);
        let withheld = observed(&r(LuksDesired { withheld: Some("kept back: PLAIN".into()), ..Default::default() }));
        assert_eq!(withheld.error.and_then(|e| e.cause).as_deref(), Some("kept back: PLAIN"));
        let locked = observed(&r(LuksDesired::default())).error.and_then(|e| e.cause).unwrap_or_default();
        assert!(locked.contains("master passphrase"), "{locked}");
    }
}
