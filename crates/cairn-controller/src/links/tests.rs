//! The links and `AppState::mutate` against fake satellites: a
//! [`Transport`] that answers in memory, a `MemStore`, fast clocks. No
//! network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_api::rc;
use cairn_domain::{Change, Object};
use cairn_proto::{
    Apply, Hello, ObjectError, Observation, ObserveSince, Observed, PATH_APPLY, PATH_HELLO, PATH_OBSERVE, PROTO_VERSION, PoolObserved,
    ProviderSupport, ResourceObserved, VolumeObserved,
};
use cairn_store::MemStore;
use cairn_store::{Store, StoreError};
use hyper::body::Bytes;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::transport::{BoxFuture, CallError, Target, Transport};
use super::{Backoff, Timing};
use crate::rest::error::ApiError;
use crate::rest::reply::Reply;
use crate::state::AppState;

/// One fake satellite.
#[derive(Default)]
struct Sat {
    name: String,
    instance: String,
    /// Every apply it received, in order.
    applies: Vec<Apply>,
    /// Resources whose apply fails.
    fail: BTreeSet<String>,
    resources: BTreeMap<String, ResourceObserved>,
    pools: Vec<PoolObserved>,
    /// Observations to leave unanswered (a timeout each) from now on.
    observe_timeouts: usize,
    /// Observations answered.
    observes: usize,
    /// Of those, answered "unchanged" (the controller holds that state).
    unchanged: usize,
    /// Each observation shows another DRBD state (a resync under way).
    moving: bool,
}

impl Sat {
    /// What the satellite observes at its `n`th observation.
    fn observed(&self, n: usize) -> Observed {
        let moving = self.moving;
        Observed {
            generation: 0,
            instance: self.instance.clone(),
            resources: self
                .resources
                .values()
                .cloned()
                .map(|mut r| {
                    if moving {
                        r.drbd = Some(cairn_proto::DrbdObserved { role: format!("Step{n}"), ..Default::default() });
                    }
                    r
                })
                .collect(),
            removed: vec![],
            pools: self.pools.clone(),
        }
    }
}

#[derive(Default)]
struct Fake {
    sats: Mutex<BTreeMap<SocketAddr, Sat>>,
    /// Resources whose applies wait (a hung command) while named here.
    hold: Mutex<BTreeSet<String>>,
    /// Applies waiting because of `hold`.
    holding: std::sync::atomic::AtomicUsize,
    /// Requests to an address where no fake satellite is.
    refused: std::sync::atomic::AtomicUsize,
    /// The satellites hold observation requests as real ones do (long
    /// poll), watching their state every 5 ms; else they answer at once,
    /// as satellites older than `wait_ms` do.
    holds: AtomicBool,
    /// Observation requests being held.
    holding_observes: std::sync::atomic::AtomicUsize,
    /// The digest the last held request was asked with.
    held_since: Mutex<Option<String>>,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Bytes, CallError> {
    serde_json::to_vec(v).map(Bytes::from).map_err(|e| CallError::BadReply(e.to_string()))
}

impl Fake {
    fn add(&self, port: u16, name: &str) {
        let sat = Sat { name: name.into(), instance: "first".into(), ..Default::default() };
        self.sats.lock().expect("fake").insert(addr(port), sat);
    }

    fn with<R>(&self, port: u16, f: impl FnOnce(&mut Sat) -> R) -> R {
        f(self.sats.lock().expect("fake").get_mut(&addr(port)).expect("a fake satellite on this port"))
    }

    fn connects(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn applies(&self, port: u16) -> Vec<Apply> {
        self.with(port, |s| s.applies.clone())
    }

    fn answer(&self, target: Target, path: &str, body: Option<Vec<u8>>) -> Result<Bytes, CallError> {
        let mut sats = self.sats.lock().expect("fake");
        let Some(sat) = sats.get_mut(&target.addr) else {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(CallError::Unreachable { addr: target.addr, reason: "connection refused".into() });
        };
        match path {
            PATH_HELLO => encode(&Hello {
                proto_version: PROTO_VERSION,
                node_name: sat.name.clone(),
                hostname: sat.name.clone(),
                version: "test".into(),
                instance: sat.instance.clone(),
                providers: vec![ProviderSupport { kind: cairn_proto::ProviderKind::FileThin, supported: true, missing: vec![] }],
                layers: vec!["STORAGE".into()],
                unsupported_layers: BTreeMap::new(),
                ext_file_dirs: vec![],
                os_variant: None,
            }),
            PATH_APPLY => {
                let apply: Apply = serde_json::from_slice(&body.unwrap_or_default()).map_err(|e| CallError::Request(e.to_string()))?;
                sat.applies.push(apply.clone());
                if apply.full {
                    sat.resources.clear();
                }
                if apply.pools_set {
                    sat.pools = apply
                        .pools
                        .iter()
                        .map(|p| PoolObserved {
                            name: p.name.clone(),
                            total_kib: Some(1 << 30),
                            free_kib: Some(1 << 30),
                            ..Default::default()
                        })
                        .collect();
                }
                let mut o = Observed {
                    generation: apply.generation,
                    instance: sat.instance.clone(),
                    pools: sat.pools.clone(),
                    ..Default::default()
                };
                for r in &apply.resources {
                    let error = sat.fail.contains(&r.name).then(|| ObjectError {
                        message: format!("Cannot create '{}'.", r.name),
                        cause: Some("the disk is on fire".into()),
                        details: None,
                    });
                    let volumes = if error.is_some() {
                        vec![]
                    } else {
                        r.volumes
                            .iter()
                            .map(|v| VolumeObserved {
                                number: v.number,
                                device_path: Some("/dev/loop7".into()),
                                usable_kib: Some(v.size_kib),
                                disk_state: "UpToDate".into(),
                                ..Default::default()
                            })
                            .collect()
                    };
                    let seen = ResourceObserved { name: r.name.clone(), volumes, error, ..Default::default() };
                    sat.resources.insert(r.name.clone(), seen.clone());
                    o.resources.push(seen);
                }
                for n in &apply.removed {
                    sat.resources.remove(n);
                    o.removed.push(ResourceObserved { name: n.clone(), ..Default::default() });
                }
                encode(&o)
            }
            PATH_OBSERVE if sat.observe_timeouts > 0 => {
                sat.observe_timeouts -= 1;
                Err(CallError::Timeout { addr: target.addr, timeout: Duration::from_secs(10) })
            }
            PATH_OBSERVE => {
                let req: ObserveSince = serde_json::from_slice(&body.unwrap_or_default()).map_err(|e| CallError::Request(e.to_string()))?;
                sat.observes += 1;
                let answer = Observation::answer(sat.observed(sat.observes), req.since.as_deref());
                if answer.observed.is_none() {
                    sat.unchanged += 1;
                }
                encode(&answer)
            }
            other => Err(CallError::Status { status: 404, body: format!("no route {other}") }),
        }
    }
}

impl Transport for Fake {
    fn call(
        &self,
        target: Target,
        path: &'static str,
        body: Option<Vec<u8>>,
        _timeout: Duration,
    ) -> BoxFuture<'_, Result<Bytes, CallError>> {
        let held = |b: &Option<Vec<u8>>| {
            let apply = b.as_deref().and_then(|b| serde_json::from_slice::<Apply>(b).ok());
            let hold = self.hold.lock().expect("fake");
            apply.is_some_and(|a| a.resources.iter().any(|r| hold.contains(&r.name)))
        };
        if path == PATH_OBSERVE && self.holds.load(Ordering::SeqCst) {
            return Box::pin(async move {
                let req = body.as_deref().and_then(|b| serde_json::from_slice::<ObserveSince>(b).ok());
                if let Some(ObserveSince { since: Some(since), wait_ms: Some(ms) }) = req {
                    let until = tokio::time::Instant::now() + Duration::from_millis(ms);
                    let unchanged = || {
                        let sats = self.sats.lock().expect("fake");
                        sats.get(&target.addr).is_some_and(|s| s.observed(s.observes + 1).digest() == since)
                    };
                    *self.held_since.lock().expect("fake") = Some(since.clone());
                    self.holding_observes.fetch_add(1, Ordering::SeqCst);
                    while tokio::time::Instant::now() < until && unchanged() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    self.holding_observes.fetch_sub(1, Ordering::SeqCst);
                }
                self.answer(target, path, body)
            });
        }
        if path == PATH_APPLY && held(&body) {
            return Box::pin(async move {
                self.holding.fetch_add(1, Ordering::SeqCst);
                while held(&body) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                self.holding.fetch_sub(1, Ordering::SeqCst);
                self.answer(target, path, body)
            });
        }
        let answer = self.answer(target, path, body);
        Box::pin(async move { answer })
    }

    fn tls(&self) -> bool {
        false
    }
}

/// A `MemStore` whose commits can be made to fail, or held at a gate.
#[derive(Default)]
struct FlakyStore {
    inner: MemStore,
    fail: AtomicBool,
    /// While set, a commit (after checking `fail`) waits until no more
    /// commits than this have begun.
    release: Mutex<Option<usize>>,
    /// Commits begun.
    commits: std::sync::atomic::AtomicUsize,
}

impl Store for FlakyStore {
    fn load(&self) -> Result<Vec<Object>, StoreError> {
        self.inner.load()
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let nr = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = self.fail.load(Ordering::SeqCst);
        while self.release.lock().expect("release").is_some_and(|r| nr > r) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if fail {
            return Err(StoreError::Encode { kind: "test".into(), key: "commit".into(), reason: "the disk is full".into() });
        }
        self.inner.commit(changes)
    }

    fn describe(&self) -> String {
        "flaky memory".into()
    }
}

fn fast() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(20),
        hold: Duration::from_millis(200),
        reconnect: Backoff::new(Duration::from_millis(20), Duration::from_millis(100)),
        retry: Backoff::new(Duration::from_millis(50), Duration::from_millis(200)),
    }
}

fn req<T: DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid request")
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn errors(r: &Reply) -> Vec<&cairn_api::ApiCallRc> {
    r.entries.iter().filter(|e| e.ret_code & rc::MASK_ERROR == rc::MASK_ERROR).collect()
}

/// A controller with the given nodes (name, fake satellite port) online,
/// each with a FILE_THIN `DfltStorPool`.
async fn cluster(store: Arc<dyn Store>, nodes: &[(&str, u16)]) -> (AppState, Arc<Fake>) {
    cluster_of(store, nodes, Arc::new(Fake::default()), fast()).await
}

/// [`cluster`] with these satellites and clocks.
async fn cluster_of(store: Arc<dyn Store>, nodes: &[(&str, u16)], fake: Arc<Fake>, timing: Timing) -> (AppState, Arc<Fake>) {
    let state = AppState::load(store, fake.clone(), timing).await.expect("load");
    for (name, port) in nodes {
        fake.add(*port, name);
        let node = req(json!({"name": name, "type": "SATELLITE",
            "net_interfaces": [{"name": "default", "address": "127.0.0.1", "satellite_port": port}]}));
        state.mutate(201, |c, ctx| c.create_node(&node, ctx)).await.expect("node");
        wait_for("online", || state.links().connection_status(&name.to_uppercase()) == "ONLINE").await;
        let pool = req(
            json!({"storage_pool_name": "DfltStorPool", "provider_kind": "FILE_THIN", "props": {"StorDriver/StorPoolName": "/srv/pool"}}),
        );
        let r = state.mutate(201, |c, ctx| c.create_stor_pool(name, &pool, ctx)).await.expect("pool");
        assert!(errors(&r).is_empty(), "{:?}", r.entries);
    }
    (state, fake)
}

async fn create_resource(state: &AppState, name: &str, node: &str, size_kib: i64) -> Reply {
    let rd = req(json!({"resource_definition": {"name": name}}));
    state.mutate(201, |c, ctx| c.create_rsc_dfn(&rd, ctx)).await.expect("rd");
    let vd = req(json!({"volume_definition": {"size_kib": size_kib}}));
    state.mutate(201, |c, ctx| c.create_vlm_dfn(name, &vd, ctx)).await.expect("vd");
    let r: Vec<cairn_api::resource::ResourceCreate> =
        req(json!([{"resource": {"name": name, "node_name": node}, "layer_list": ["STORAGE"]}]));
    state.mutate(201, |c, ctx| c.create_resources(name, &r, None, ctx)).await.expect("resource")
}

fn names(a: &Apply) -> Vec<&str> {
    a.resources.iter().map(|r| r.name.as_str()).collect()
}

#[tokio::test]
async fn dispatch_sends_each_node_its_delta_and_retries_only_what_failed() {
    let (state, fake) = cluster(Arc::new(MemStore::new()), &[("n1", 4001), ("n2", 4002)]).await;
    for port in [4001, 4002] {
        let applies = fake.applies(port);
        assert!(applies[0].full, "a full apply on connect");
        let pools = applies.last().expect("the pool's delta");
        assert!(!pools.full && pools.pools_set && pools.resources.is_empty(), "{pools:?}");
    }
    let n2_before = fake.applies(4002).len();

    // A resource on n1: a delta with it alone, to n1 alone.
    let r = create_resource(&state, "ra", "n1", 1024).await;
    assert!(errors(&r).is_empty(), "{:?}", r.entries);
    let last = fake.applies(4001).pop().expect("a's delta");
    assert!(!last.full && !last.pools_set && last.removed.is_empty());
    assert_eq!(names(&last), ["ra"]);
    assert_eq!(fake.applies(4002).len(), n2_before, "n2 is not concerned");
    assert_eq!(state.links().acknowledged_sizes("N1", "ra").map(|v| v[0].1), Some(1024));

    // b fails on n1: the error is in the reply, b is not acknowledged.
    fake.with(4001, |s| s.fail.insert("rb".into()));
    let r = create_resource(&state, "rb", "n1", 2048).await;
    let errs = errors(&r);
    assert_eq!(errs.len(), 1, "{:?}", r.entries);
    assert!(errs[0].message.contains("(Node: 'n1') Cannot create 'rb'."), "{:?}", errs[0]);
    assert_eq!(errs[0].cause.as_deref(), Some("the disk is on fire"));
    assert_eq!(names(&fake.applies(4001).pop().expect("b's delta")), ["rb"]);
    assert!(state.links().acknowledged_sizes("N1", "rb").is_none());

    // Growing a sends a alone: b is the retry's business, not this change's.
    let grow = req(json!({"size_kib": 4096}));
    let r = state.mutate(200, |c, _| c.modify_vlm_dfn("ra", 0, &grow)).await.expect("grow");
    assert!(errors(&r).is_empty(), "{:?}", r.entries);
    let grown = fake.applies(4001).into_iter().rev().find(|a| names(a).contains(&"ra")).expect("a's growth");
    assert_eq!(names(&grown), ["ra"]);
    assert_eq!(grown.resources[0].volumes[0].size_kib, 4096);
    wait_for("a acknowledged at its new size", || state.links().acknowledged_sizes("N1", "ra").is_some_and(|v| v[0].1 == 4096)).await;

    // The retry sends b alone, as a delta, until it works.
    let retries_before = fake.applies(4001).iter().filter(|a| names(a) == ["rb"]).count();
    wait_for("a retry of b", || fake.applies(4001).iter().filter(|a| names(a) == ["rb"]).count() > retries_before + 1).await;
    fake.with(4001, |s| s.fail.clear());
    wait_for("b acknowledged", || state.links().acknowledged_sizes("N1", "rb").is_some()).await;
    let applies = fake.applies(4001);
    assert_eq!(applies.iter().filter(|a| a.full).count(), 1, "no full apply after the first one");
    for a in applies.iter().skip_while(|a| names(a) != ["rb"]) {
        assert!(!a.full && !a.pools_set && a.removed.is_empty(), "{a:?}");
        assert!(names(a) == ["rb"] || names(a) == ["ra"], "{a:?}");
    }
    // Once acknowledged, nothing more is sent.
    let settled = fake.applies(4001).len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.applies(4001).len(), settled);
    assert_eq!(fake.applies(4002).len(), n2_before);
}

#[tokio::test]
async fn a_slow_resource_does_not_hold_up_changes_to_other_resources_of_its_node() {
    let (state, fake) = cluster(Arc::new(MemStore::new()), &[("n1", 4051)]).await;
    fake.hold.lock().expect("fake").insert("slow".into());
    let st = state.clone();
    let slow = tokio::spawn(async move { create_resource(&st, "slow", "n1", 1024).await });
    wait_for("the slow apply is under way", || fake.holding.load(Ordering::SeqCst) == 1).await;
    for name in ["fast1", "fast2"] {
        let r = create_resource(&state, name, "n1", 1024).await;
        assert!(errors(&r).is_empty(), "{:?}", r.entries);
        assert!(state.links().acknowledged_sizes("N1", name).is_some());
    }
    assert!(!slow.is_finished(), "the other creates were answered while the slow one still waits");
    fake.hold.lock().expect("fake").clear();
    let r = slow.await.expect("task");
    assert!(errors(&r).is_empty(), "{:?}", r.entries);
    wait_for("slow acknowledged", || state.links().acknowledged_sizes("N1", "slow").is_some()).await;
    // Out-of-order answers left the view right: all three are there.
    let seen: Vec<bool> = ["slow", "fast1", "fast2"].iter().map(|n| state.links().resource("N1", n).is_some()).collect();
    assert_eq!(seen, [true, true, true]);
}

#[tokio::test]
async fn a_restarted_satellite_gets_its_full_state_again() {
    let (state, fake) = cluster(Arc::new(MemStore::new()), &[("n1", 4011)]).await;
    let r = create_resource(&state, "ra", "n1", 1024).await;
    assert!(errors(&r).is_empty(), "{:?}", r.entries);
    fake.with(4011, |s| s.instance = "second".into());
    wait_for("a second full apply", || fake.applies(4011).iter().filter(|a| a.full).count() == 2).await;
    let full = fake.applies(4011).into_iter().rfind(|a| a.full).expect("full");
    assert_eq!(names(&full), ["ra"]);
    assert!(full.pools_set && full.pools.iter().any(|p| p.name == "DfltStorPool"), "{:?}", full.pools);
    wait_for("a acknowledged again", || state.links().acknowledged_sizes("N1", "ra").is_some()).await;
}

#[tokio::test]
async fn one_late_observation_keeps_the_node_two_in_a_row_end_the_session() {
    let (state, fake) = cluster(Arc::new(MemStore::new()), &[("n1", 4013)]).await;
    let fulls = || fake.applies(4013).iter().filter(|a| a.full).count();
    assert_eq!(fulls(), 1);
    fake.with(4013, |s| s.observe_timeouts = 1);
    wait_for("the late observation", || fake.with(4013, |s| s.observe_timeouts) == 0).await;
    // Several heartbeats later: still the same session, pools still known.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fulls(), 1, "no new session");
    assert_eq!(state.links().connection_status("N1"), "ONLINE");
    assert!(state.links().capacity("N1", "DfltStorPool").is_some());
    fake.with(4013, |s| s.observe_timeouts = 2);
    wait_for("a new session after two late observations", || fulls() == 2).await;
}

#[tokio::test]
async fn observations_come_sooner_while_the_drbd_state_moves() {
    let (state, fake) = cluster(Arc::new(MemStore::new()), &[("n1", 4014)]).await;
    let r = create_resource(&state, "rm", "n1", 1024).await;
    assert!(errors(&r).is_empty(), "{:?}", r.entries);
    async fn count(fake: &Fake, moving: bool) -> usize {
        fake.with(4014, |s| s.moving = moving);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = fake.with(4014, |s| s.observes);
        tokio::time::sleep(Duration::from_millis(600)).await;
        fake.with(4014, |s| s.observes) - before
    }
    let steady = count(&fake, false).await;
    let moving = count(&fake, true).await;
    // Heartbeat 20 ms: about 30 observations steady, up to 120 moving.
    assert!(steady >= 5 && moving >= 2 * steady, "steady {steady}, moving {moving}");
}

#[tokio::test]
async fn an_observed_failure_is_retried() {
    let (state, fake) = cluster(Arc::new(MemStore::new()), &[("n1", 4021)]).await;
    let r = create_resource(&state, "ra", "n1", 1024).await;
    assert!(errors(&r).is_empty(), "{:?}", r.entries);
    let before = fake.applies(4021).len();
    // The satellite reports a failing on its own (its device went away).
    fake.with(4021, |s| {
        if let Some(a) = s.resources.get_mut("ra") {
            a.error = Some(ObjectError { message: "gone".into(), cause: None, details: None });
        }
    });
    wait_for("a sent again", || fake.applies(4021).len() > before).await;
    let again = &fake.applies(4021)[before];
    assert!(!again.full && names(again) == ["ra"], "{again:?}");
    wait_for("a acknowledged again", || state.links().acknowledged_sizes("N1", "ra").is_some()).await;
}

#[tokio::test]
async fn mutate_commits_then_applies_and_stamps_replies() {
    let store = Arc::new(FlakyStore::default());
    let fake = Arc::new(Fake::default());
    let state = AppState::load(store.clone(), fake, fast()).await.expect("load");
    let node = |name: &str| {
        req(
            json!({"name": name, "type": "SATELLITE", "net_interfaces": [{"name": "default", "address": "127.0.0.1", "satellite_port": 4041}]}),
        )
    };

    let n1 = node("n1");
    let r = state.mutate(201, |c, ctx| c.create_node(&n1, ctx)).await.expect("created");
    assert_eq!(r.status, 201);
    assert!(!r.entries.is_empty() && r.entries.iter().all(|e| e.created_at.is_some()), "{:?}", r.entries);
    assert!(state.read().nodes.contains_key("N1"), "applied in memory");
    assert!(store.inner.load().expect("load").iter().any(|o| matches!(o, Object::Node(n) if n.name == "n1")), "committed");

    store.fail.store(true, Ordering::SeqCst);
    let n2 = node("n2");
    let err = state.mutate(201, |c, ctx| c.create_node(&n2, ctx)).await.expect_err("the commit fails");
    assert!(matches!(err, ApiError::Store(_)), "{err:?}");
    assert!(!state.read().nodes.contains_key("N2"), "nothing applied when the commit failed");
    assert!(!store.inner.load().expect("load").iter().any(|o| matches!(o, Object::Node(n) if n.name == "n2")));

    // A refused request commits nothing either.
    store.fail.store(false, Ordering::SeqCst);
    let again = node("n1");
    assert!(state.mutate(201, |c, ctx| c.create_node(&again, ctx)).await.is_err());
    assert_eq!(state.read().nodes.len(), 1);
}

/// A mutation to run in a task of its own.
type Op = Box<dyn FnOnce(&cairn_domain::Cluster, &mut cairn_domain::Ctx) -> Result<cairn_domain::Outcome, cairn_domain::OpError> + Send>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_fails_every_request_in_it_and_leaves_memory_as_stored() {
    let store = Arc::new(FlakyStore::default());
    let state = AppState::load(store.clone(), Arc::new(Fake::default()), fast()).await.expect("load");
    let rd =
        |name: &str| -> cairn_api::resource_definition::ResourceDefinitionCreate { req(json!({"resource_definition": {"name": name}})) };
    let spawn = |op: Op| {
        let state = state.clone();
        tokio::spawn(async move { state.mutate(201, op).await })
    };

    let release = |upto: Option<usize>| *store.release.lock().expect("release") = upto;
    let commits = || store.commits.load(Ordering::SeqCst);
    let failed = |i: usize, r: Result<Result<Reply, ApiError>, tokio::task::JoinError>| {
        let err = r.expect("task").expect_err("the request fails with the batch");
        assert!(matches!(&err, ApiError::Store(e) if e.to_string().contains("the disk is full")), "request {i}: {err:?}");
    };

    // The committer is held in the commit of "first" (which will succeed).
    let base = commits();
    release(Some(base));
    let first = rd("first");
    let held = spawn(Box::new(move |c, ctx| c.create_rsc_dfn(&first, ctx)));
    wait_for("the first commit begun", || commits() == base + 1).await;
    store.fail.store(true, Ordering::SeqCst);
    // Queued behind it: eight creates, a volume definition of one of them
    // (valid only on top of its create), and a duplicate create (refused
    // only because of a queued one).
    let mut batch = Vec::new();
    for i in 0..8 {
        let d = rd(&format!("b{i}"));
        batch.push(spawn(Box::new(move |c, ctx| c.create_rsc_dfn(&d, ctx))));
        wait_for("queued", || state.in_flight() == i + 2).await;
    }
    let vd: cairn_api::resource_definition::VolumeDefinitionCreate = req(json!({"volume_definition": {"size_kib": 1024}}));
    batch.push(spawn(Box::new(move |c, ctx| c.create_vlm_dfn("b0", &vd, ctx))));
    let dup = rd("b1");
    batch.push(spawn(Box::new(move |c, ctx| c.create_rsc_dfn(&dup, ctx))));
    wait_for("all queued", || state.in_flight() == 11).await;
    assert!(!state.read().rsc_dfns.contains_key("B0"), "readers never see a change before it is durable");

    // "first" commits; the batch's commit begins (and will fail) and is
    // held in turn while two more requests are validated on top of it.
    release(Some(base + 1));
    let r = held.await.expect("task").expect("the first commit succeeds");
    assert_eq!(r.status, 201);
    wait_for("the batch's commit begun", || commits() == base + 2).await;
    let behind = rd("c0");
    let mut later = vec![spawn(Box::new(move |c, ctx| c.create_rsc_dfn(&behind, ctx)))];
    let vd: cairn_api::resource_definition::VolumeDefinitionCreate = req(json!({"volume_definition": {"size_kib": 1024}}));
    later.push(spawn(Box::new(move |c, ctx| c.create_vlm_dfn("b2", &vd, ctx))));
    wait_for("queued behind the batch", || state.in_flight() == 12).await;
    release(None);

    for (i, t) in batch.into_iter().enumerate() {
        failed(i, t.await);
    }
    for (i, t) in later.into_iter().enumerate() {
        failed(10 + i, t.await);
    }
    assert_eq!(commits(), base + 2, "the ten requests were one transaction, and those behind it were never committed");
    assert_eq!(state.in_flight(), 0);
    let memory = state.read();
    assert!(memory.rsc_dfns.contains_key("FIRST") && memory.rsc_dfns.len() == 1 && memory.vlm_dfns.is_empty(), "{:?}", memory.rsc_dfns);
    assert_eq!(*memory, cairn_domain::Cluster::from_objects(store.inner.load().expect("load")), "memory equals the database");

    // The next request is validated against the committed cluster again.
    store.fail.store(false, Ordering::SeqCst);
    let again = rd("b1");
    let r = state.mutate(201, |c, ctx| c.create_rsc_dfn(&again, ctx)).await.expect("b1 once the disk has room");
    assert_eq!(r.status, 201);
    assert!(state.read().rsc_dfns.contains_key("B1"));
}

#[tokio::test]
async fn satellite_errors_and_offline_nodes_are_folded_into_replies() {
    let (state, fake) = cluster(Arc::new(MemStore::new()), &[("n1", 4031)]).await;
    fake.with(4031, |s| s.fail.insert("bad".into()));
    let r = create_resource(&state, "bad", "n1", 1024).await;
    assert_eq!(r.status, 500, "the satellite's error decides the status: {:?}", r.entries);
    assert!(r.entries.iter().any(|e| e.ret_code > 0), "the stored creation is reported too: {:?}", r.entries);
    assert!(r.entries.iter().all(|e| e.created_at.is_some()));

    // The satellite goes away: the next change is stored with a warning.
    fake.sats.lock().expect("fake").clear();
    wait_for("offline", || state.links().connection_status("N1") == "OFFLINE").await;
    let grow = req(json!({"size_kib": 2048}));
    let r = state.mutate(200, |c, _| c.modify_vlm_dfn("bad", 0, &grow)).await.expect("grow");
    assert!(errors(&r).is_empty(), "{:?}", r.entries);
    assert!(r.entries.iter().any(|e| e.message.contains("No active connection to satellite 'n1'")), "{:?}", r.entries);
}

#[tokio::test]
async fn may_promote_changes_a_satellite_reports_become_linstors_events() {
    use futures_util::StreamExt;
    let (state, fake) = cluster(Arc::new(MemStore::new()), &[("n1", 4051)]).await;
    let r = create_resource(&state, "rp", "n1", 1024).await;
    assert!(errors(&r).is_empty(), "{:?}", r.entries);
    let mut events = state.links().events().body(crate::events::Stream::Promotion, Vec::new).into_data_stream();
    let set = |v: Option<bool>| {
        fake.with(4051, |s| {
            if let Some(o) = s.resources.get_mut("rp") {
                o.drbd = Some(cairn_proto::DrbdObserved { kernel: true, role: "Secondary".into(), may_promote: v, ..Default::default() });
            }
        })
    };
    let mut next = async || {
        let f = tokio::time::timeout(Duration::from_secs(5), events.next()).await.ok().flatten().and_then(Result::ok);
        String::from_utf8_lossy(&f.unwrap_or_default()).into_owned()
    };
    set(Some(true));
    assert_eq!(next().await, "event: may-promote-change\ndata: {\"resource_name\":\"rp\",\"node_name\":\"n1\",\"may_promote\":true}\n\n");
    set(Some(false));
    assert!(next().await.ends_with("\"may_promote\":false}\n\n"));
    // The node goes away: what it reported is unknown now.
    fake.sats.lock().expect("fake").clear();
    assert!(next().await.ends_with("\"may_promote\":null}\n\n"));
}

/// How often the node's view took in an answer.
fn absorbed(state: &AppState, node_key: &str) -> usize {
    state.links().get(node_key).expect("a link").view().absorbed
}

#[tokio::test]
async fn an_idle_heartbeat_is_answered_unchanged_and_not_absorbed() {
    let (state, fake) = cluster(Arc::new(MemStore::new()), &[("n1", 4061)]).await;
    let r = create_resource(&state, "ra", "n1", 1024).await;
    assert!(errors(&r).is_empty(), "{:?}", r.entries);
    wait_for("an unchanged answer", || fake.with(4061, |s| s.unchanged) > 0).await;
    let (observes, unchanged, before) = (fake.with(4061, |s| s.observes), fake.with(4061, |s| s.unchanged), absorbed(&state, "N1"));
    let changes = state.links().changes();
    // About ten heartbeats of 20 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(state.links().changes(), changes, "idle heartbeats change nothing in the view");
    let observed = fake.with(4061, |s| s.observes) - observes;
    assert!(observed >= 3, "{observed} observations");
    assert_eq!(fake.with(4061, |s| s.unchanged) - unchanged, observed, "every idle observation answered unchanged");
    assert_eq!(absorbed(&state, "N1"), before, "nothing absorbed");
    // What the view holds is still the satellite's state.
    assert_eq!(state.links().resource("N1", "ra").map(|r| r.volumes.len()), Some(1));
    assert!(state.links().capacity("N1", "DfltStorPool").is_some());
}

#[tokio::test]
async fn a_change_after_unchanged_heartbeats_arrives_with_the_next_one() {
    let (state, fake) = cluster(Arc::new(MemStore::new()), &[("n1", 4062)]).await;
    let r = create_resource(&state, "ra", "n1", 1024).await;
    assert!(errors(&r).is_empty(), "{:?}", r.entries);
    wait_for("an unchanged answer", || fake.with(4062, |s| s.unchanged) > 0).await;
    let free = || state.links().get("N1").and_then(|l| l.view().pools.get("DFLTSTORPOOL").and_then(|p| p.free_kib));
    assert_eq!(free(), Some(1 << 30));
    // A pool's capacity changes on its own (data written to thin volumes).
    let changes = state.links().changes();
    fake.with(4062, |s| s.pools.iter_mut().filter(|p| p.name == "DfltStorPool").for_each(|p| p.free_kib = Some(1000)));
    wait_for("the new capacity", || free() == Some(1000)).await;
    assert!(state.links().changes() > changes, "a new observation counts as a change");
    // Then the heartbeats are idle again.
    let before = absorbed(&state, "N1");
    let unchanged = fake.with(4062, |s| s.unchanged);
    wait_for("unchanged again", || fake.with(4062, |s| s.unchanged) > unchanged).await;
    assert_eq!(absorbed(&state, "N1"), before);
    // A DRBD state change arrives the same way.
    fake.with(4062, |s| {
        if let Some(o) = s.resources.get_mut("ra") {
            o.drbd = Some(cairn_proto::DrbdObserved { kernel: true, role: "Primary".into(), ..Default::default() });
        }
    });
    wait_for("the new role", || state.links().resource("N1", "ra").and_then(|r| r.drbd.clone()).is_some_and(|d| d.role == "Primary")).await;
}

/// Satellites that hold observation requests, held up to 10 s.
async fn holding_cluster(port: u16) -> (AppState, Arc<Fake>) {
    let fake = Arc::new(Fake { holds: AtomicBool::new(true), ..Default::default() });
    let timing = Timing { hold: Duration::from_secs(10), ..fast() };
    let (state, fake) = cluster_of(Arc::new(MemStore::new()), &[("n1", port)], fake, timing).await;
    wait_for("an observation held", || held_current(&fake, port)).await;
    (state, fake)
}

/// One observation request is held, asked with the satellite's current
/// state (not one a change has just made stale).
fn held_current(fake: &Fake, port: u16) -> bool {
    let now = fake.with(port, |s| s.observed(s.observes + 1).digest());
    fake.holding_observes.load(Ordering::SeqCst) == 1 && fake.held_since.lock().expect("fake").as_deref() == Some(now.as_str())
}

#[tokio::test]
async fn an_idle_node_holds_one_observation_instead_of_a_heartbeat_each_20_ms() {
    let (state, fake) = holding_cluster(4064).await;
    let observes = fake.with(4064, |s| s.observes);
    // Ten heartbeats' time: the one held request stays out, nothing else.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.with(4064, |s| s.observes), observes, "no observation answered meanwhile");
    assert_eq!(fake.holding_observes.load(Ordering::SeqCst), 1);
    assert_eq!(state.links().connection_status("N1"), "ONLINE");
}

#[tokio::test]
async fn a_held_observation_keeps_out_of_the_way_of_changes() {
    let (state, fake) = holding_cluster(4065).await;
    // The apply goes out and is answered while the observation is held
    // (its hold lasts 10 s).
    let r = tokio::time::timeout(Duration::from_secs(2), create_resource(&state, "ra", "n1", 1024))
        .await
        .expect("the create answered before the held observation");
    assert!(errors(&r).is_empty(), "{:?}", r.entries);
    assert_eq!(state.links().resource("N1", "ra").map(|r| r.volumes.len()), Some(1));
    // The held request saw the satellite's state change and came back; it
    // was older than the apply's answer, so a whole observation follows,
    // then one is held again.
    let before = absorbed(&state, "N1");
    wait_for("a whole observation", || absorbed(&state, "N1") > before).await;
    wait_for("held again", || held_current(&fake, 4065)).await;
    assert_eq!(state.links().resource("N1", "ra").map(|r| r.volumes.len()), Some(1));
}

#[tokio::test]
async fn a_change_a_held_observation_sees_arrives_before_the_hold_ends() {
    let (state, fake) = holding_cluster(4066).await;
    let free = || state.links().get("N1").and_then(|l| l.view().pools.get("DFLTSTORPOOL").and_then(|p| p.free_kib));
    assert_eq!(free(), Some(1 << 30));
    fake.with(4066, |s| s.pools.iter_mut().for_each(|p| p.free_kib = Some(1000)));
    // wait_for gives up after 5 s, the hold lasts 10.
    wait_for("the new capacity", || free() == Some(1000)).await;
    wait_for("held again", || held_current(&fake, 4066)).await;
}

#[tokio::test]
async fn an_apply_answer_makes_the_next_observation_a_whole_one() {
    let (state, fake) = cluster(Arc::new(MemStore::new()), &[("n1", 4063)]).await;
    wait_for("an unchanged answer", || fake.with(4063, |s| s.unchanged) > 0).await;
    let before = absorbed(&state, "N1");
    let r = create_resource(&state, "ra", "n1", 1024).await;
    assert!(errors(&r).is_empty(), "{:?}", r.entries);
    // The apply answer, then one whole observation (the view is no longer
    // the observation it held), then unchanged ones.
    let unchanged = fake.with(4063, |s| s.unchanged);
    wait_for("unchanged again", || fake.with(4063, |s| s.unchanged) > unchanged + 2).await;
    assert_eq!(absorbed(&state, "N1") - before, 2);
}

#[test]
fn keys_withheld_from_a_plain_link_leave_the_reason_in_their_place() {
    use cairn_proto::{LuksDesired, ResourceDesired, Secret, VolumeDesired};
    let luks = |key: Option<&str>| LuksDesired {
        key: key.map(|k| Secret(k.into())),
        // Locked, the controller opens no previous key either.
        previous_keys: key.map(|_| Secret("old0".into())).into_iter().collect(),
        ..Default::default()
    };
    let vol = |number, l| VolumeDesired { number, luks: l, ..Default::default() };
    let mut rscs = vec![ResourceDesired {
        name: "enc".into(),
        volumes: vec![vol(0, Some(luks(Some("k0")))), vol(1, None), vol(2, Some(luks(None)))],
        ..Default::default()
    }];
    super::withhold_luks_keys(&mut rscs);
    let v = &rscs[0].volumes;
    let l0 = v[0].luks.as_ref().expect("luks");
    assert!(l0.key.is_none() && l0.withheld.as_deref().is_some_and(|w| w.contains("--allow-plain-luks-keys")));
    assert!(v[1].luks.is_none());
    // A key the controller does not have (locked) is not "withheld".
    assert_eq!(v[2].luks.as_ref().and_then(|l| l.withheld.clone()), None);
    let sent = serde_json::to_string(&rscs).unwrap_or_default();
    assert!(!sent.contains("k0") && !sent.contains("old0"), "{sent}");
}

/// One request through the REST router: status and JSON body.
async fn rest(state: &AppState, method: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    use tower::ServiceExt;
    let req = axum::http::Request::builder().method(method).uri(path).body(axum::body::Body::from(body.to_string())).expect("request");
    let resp = crate::rest::router(state.clone(), None, None).oneshot(req).await.expect("answer");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn a_database_failure_becomes_an_error_report_named_in_the_reply() {
    let store = Arc::new(FlakyStore::default());
    let state = AppState::load(store.clone(), Arc::new(Fake::default()), fast()).await.expect("load");

    // A healthy store keeps the report with the cluster's objects.
    let p =
        cairn_proto::error_report::Problem { exception: "InternalError".into(), message: "token=abc123 lost".into(), ..Default::default() };
    let kept = state.report(p).await.expect("reported");
    let stored = store.inner.load().expect("load");
    let text = stored.iter().find_map(|o| match o {
        Object::ErrorReport(r) if r.id == kept => r.text.clone(),
        _ => None,
    });
    assert!(text.as_deref().is_some_and(|t| t.contains("token=<redacted>") && !t.contains("abc123")), "{text:?}");

    // The store fails: the 500 names the report, which says what failed.
    store.fail.store(true, Ordering::SeqCst);
    let (status, body) = rest(&state, "POST", "/v1/resource-definitions", json!({"resource_definition": {"name": "rd1"}})).await;
    assert_eq!(status, 500, "{body}");
    let ids = body[0]["error_report_ids"].as_array().cloned().unwrap_or_default();
    assert_eq!(ids.len(), 1, "{body}");
    let id = ids[0].as_str().unwrap_or_default().to_string();
    assert!(id.len() == 21 && id.ends_with("-000001") && &id[8..15] == "-00000-", "{id}");
    store.fail.store(false, Ordering::SeqCst);

    let (status, list) = rest(&state, "GET", &format!("/v1/error-reports/{id}"), serde_json::Value::Null).await;
    assert_eq!(status, 200);
    let r = &list[0];
    assert_eq!(r["node_name"], "Controller");
    assert_eq!(r["module"], "CONTROLLER");
    assert_eq!(r["exception"], "StoreError");
    assert_eq!(r["filename"], format!("ErrorReport-{id}.log"));
    let text = r["text"].as_str().unwrap_or_default();
    assert!(text.contains("the disk is full") && text.contains("POST /v1/resource-definitions"), "{text}");

    // Lists leave the text out unless asked; since/to filter by time.
    let (_, all) = rest(&state, "GET", "/v1/error-reports", serde_json::Value::Null).await;
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    assert!(all[0].get("text").is_none());
    let later = crate::state::now_ms() + 60_000;
    let (_, none) = rest(&state, "GET", &format!("/v1/error-reports?since={later}"), serde_json::Value::Null).await;
    assert_eq!(none, json!([]));
    let (_, none) = rest(&state, "GET", "/v1/error-reports?to=1000", serde_json::Value::Null).await;
    assert_eq!(none, json!([]));
    let (_, unknown) = rest(&state, "GET", "/v1/error-reports/00000000-00000-000000", serde_json::Value::Null).await;
    assert_eq!(unknown, json!([]));

    // Deletes: by id, then by filter; nothing left is LINSTOR's no-op entry.
    let (status, del) = rest(&state, "DELETE", &format!("/v1/error-reports/{id}"), serde_json::Value::Null).await;
    assert_eq!((status, del[0]["message"].as_str()), (200, Some("Deleted 1 error-report(s)")), "{del}");
    let (_, del) = rest(&state, "PATCH", "/v1/error-reports", json!({"nodes": ["controller"], "exception": "InternalError"})).await;
    assert_eq!(del[0]["message"], "Deleted 1 error-report(s)", "{del}");
    let (_, del) = rest(&state, "PATCH", "/v1/error-reports", json!({})).await;
    assert_eq!(del[0]["message"], "No error reports deleted.", "{del}");
    assert!(!store.inner.load().expect("load").iter().any(|o| matches!(o, Object::ErrorReport(_))));
    let (_, stats) = rest(&state, "GET", "/v1/stats/error-reports", serde_json::Value::Null).await;
    assert_eq!(stats, json!({"count": 0}));
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_becomes_an_error_report() {
    use tower::ServiceExt;
    let store = Arc::new(FlakyStore::default());
    let state = AppState::load(store.clone(), Arc::new(Fake::default()), fast()).await.expect("load");
    async fn boom() -> &'static str {
        panic!("the handler gave up")
    }
    let app = axum::Router::new()
        .route("/boom", axum::routing::get(boom))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::rest::error::record_failures))
        .with_state(state.clone());
    let resp =
        app.oneshot(axum::http::Request::builder().uri("/boom").body(axum::body::Body::empty()).expect("request")).await.expect("answer");
    assert_eq!(resp.status().as_u16(), 500);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    let body: serde_json::Value = serde_json::from_slice(&bytes).expect("ApiCallRc list");
    assert_eq!(body[0]["ret_code"].as_i64(), Some(cairn_api::rc::MASK_ERROR | cairn_api::rc::FAIL_IMPL_ERROR), "{body}");
    assert!(body[0]["message"].as_str().is_some_and(|m| m.contains("GET /boom") && m.contains("the handler gave up")), "{body}");
    let ids = body[0]["error_report_ids"].as_array().cloned().unwrap_or_default();
    assert_eq!(ids.len(), 1, "{body}");
    let (_, list) =
        rest(&state, "GET", &format!("/v1/error-reports/{}", ids[0].as_str().unwrap_or_default()), serde_json::Value::Null).await;
    assert_eq!(list[0]["exception"], "Panic", "{list}");
}

#[tokio::test]
async fn an_offline_node_retried_is_no_change_once_it_is_offline() {
    let (state, fake) = cluster(Arc::new(MemStore::new()), &[("n1", 4064)]).await;
    wait_for("online", || state.links().connection_status("N1") == "ONLINE").await;
    let online = state.links().changes();
    fake.sats.lock().expect("fake").clear();
    wait_for("offline", || state.links().connection_status("N1") == "OFFLINE").await;
    let offline = state.links().changes();
    assert!(offline > online, "going offline is a change");
    let attempts = fake.connects();
    wait_for("two more connection attempts", || fake.connects() >= attempts + 2).await;
    assert_eq!(state.links().changes(), offline, "failed retries change nothing");
}
