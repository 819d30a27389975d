//! Shipping a snapshot to another cluster through a LINSTOR remote
//! (LINSTOR's "linstor-to-linstor" shipping, `CtrlBackupL2LSrcApiCallHandler`
//! and `CtrlBackupL2LDstApiCallHandler`):
//!
//! 1. the source controller (`POST /v1/remotes/{remote}/backups/ship`)
//!    asks the target controller to prepare (`POST
//!    /v1/internal/backups/requestReceive`): the target checks that the
//!    request is meant for it (its cluster id) and comes from a cluster it
//!    knows (a LINSTOR remote of its own with the source's cluster id, as
//!    LINSTOR's `isClusterAllowedContact`), picks node, pool and the base
//!    of an incremental, and has its satellite listen on a port it picks
//!    for one connection presenting a one-use token;
//! 2. the source takes the snapshot and its satellite streams it to that
//!    port (only the chunks that differ from the base when there is one);
//! 3. the source reports the end (`POST /v1/internal/backups/requestReceiveDone`):
//!    the target waits for its satellite's verdict and only then registers
//!    the snapshot (and the resource restored from it, for a new
//!    definition). Nothing is registered on the target before every
//!    volume arrived verified.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use cairn_api::rc::{self, ApiCallRc};
use cairn_domain::OpError;
use cairn_domain::backup::BackupRestorePlan;
use cairn_domain::name::key;
use cairn_domain::remote::RemoteTarget;
use cairn_proto::{
    BackupReceived, BackupSent, PATH_SHIP_LISTEN, PATH_SHIP_RESULT, PATH_SHIP_SEND, PoolDesired, Secret, ShipListen, ShipListening,
    ShipSend, ShipToken, ShipVolume,
};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::backups::{CHUNK_SIZE, Shipment, TRANSFER_TIMEOUT, backup_id, full_id, source, wait_taken};
use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::backup_keys::{self, LuksInfo};
use crate::links::transport::chain;
use crate::state::AppState;

const OP: i64 = rc::MASK_CRT | rc::MASK_BACKUP;
/// The target controller's internal routes.
const PATH_PREPARE: &str = "/v1/internal/backups/requestReceive";
const PATH_DONE: &str = "/v1/internal/backups/requestReceiveDone";
/// How long the source waits for the target controller to prepare.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether REST sign-in (a users file, or tokens) is on, as the
/// authentication layer tells the routes that check their own requests.
#[derive(Debug, Clone, Copy)]
pub struct RestAuthOn(pub bool);

/// The routes another cluster's controller calls: they pass the
/// authentication layer, which has no credentials of the source, and
/// check the request themselves. With sign-in on, `requestReceive` must
/// carry this cluster's master passphrase (the remote's passphrase on the
/// source); `requestReceiveDone` names a shipment by its one-use random
/// token, which only the source that was answered the token knows.
pub fn authenticates_itself(path: &str) -> bool {
    path == PATH_PREPARE || path == PATH_DONE
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/remotes/{remote}/backups/ship", post(ship)).route(PATH_PREPARE, post(prepare)).route(PATH_DONE, post(done))
}

/// LINSTOR's `BackupShip`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ShipReq {
    src_rsc_name: String,
    src_node_name: Option<String>,
    src_snap_name: Option<String>,
    dst_rsc_name: Option<String>,
    dst_node_name: Option<String>,
    dst_net_if_name: Option<String>,
    dst_stor_pool: Option<String>,
    stor_pool_rename: BTreeMap<String, String>,
    download_only: bool,
    allow_incremental: Option<bool>,
}

/// What the source asks the target to prepare.
#[derive(Debug, Serialize, Deserialize)]
struct PrepareReq {
    src_cluster_id: String,
    /// The target's cluster id as the source's remote names it.
    #[serde(default)]
    dst_cluster_id: Option<String>,
    /// The target's master passphrase, when the source's remote has one.
    #[serde(default)]
    passphrase: Option<Secret>,
    src_rsc_name: String,
    dst_rsc_name: String,
    #[serde(default)]
    dst_node_name: Option<String>,
    #[serde(default)]
    dst_net_if_name: Option<String>,
    #[serde(default)]
    dst_stor_pool: Option<String>,
    #[serde(default)]
    stor_pool_rename: BTreeMap<String, String>,
    #[serde(default)]
    download_only: bool,
    snapshot: String,
    layer_stack: Vec<String>,
    /// (volume number, size in KiB, size in bytes, source pool)
    volumes: Vec<(u32, i64, u64, String)>,
    /// Snapshots of the source definition on the sending node, newest
    /// first: an incremental may be based on one the target holds too.
    bases: Vec<String>,
    /// Their snapshot definitions' uuids, in the same order: the target
    /// takes as base only a snapshot received from one of them (LINSTOR's
    /// `srcSnapDfnUuids`), never one that merely has the same name.
    #[serde(default)]
    base_uuids: Vec<String>,
    /// Encrypted volumes: the source's master key sealed with its master
    /// passphrase (LINSTOR's luksInfo) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    luks_info: Option<LuksInfo>,
    /// ... and each volume's LUKS passphrase sealed with that master key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    luks_secrets: BTreeMap<u32, String>,
}

/// The target's answer: where to stream, and on what base.
#[derive(Debug, Serialize, Deserialize)]
struct Prepared {
    token: Secret,
    target: String,
    node: String,
    #[serde(default)]
    base: Option<String>,
    /// The receiving satellite's listener speaks TLS with the certificate
    /// of this sha256 (hex), which the sender pins; None: plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_sha256: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DoneReq {
    token: Secret,
    success: bool,
    #[serde(default)]
    message: Option<String>,
    /// The uuid of the source's snapshot definition, kept on the received
    /// snapshot (`Backup/Target/SourceSnapDfnUUID`).
    #[serde(default)]
    src_snap_uuid: Option<String>,
}

/// A shipment this (target) controller agreed to and waits for.
pub struct Receive {
    plan: BackupRestorePlan,
    download_only: bool,
    incremental: bool,
    /// When the target agreed to it.
    since: std::time::Instant,
}

/// A shipment whose end was not reported this long after the target
/// agreed to it never ends: the source's satellite gives up a stream
/// after [`TRANSFER_TIMEOUT`], and the receiving one waits at most 10
/// minutes for the connection.
const RECEIVE_FORGOTTEN: Duration = Duration::from_secs(TRANSFER_TIMEOUT.as_secs() + 3600);

impl Receives {
    /// Removes the shipments agreed to [`RECEIVE_FORGOTTEN`] or longer
    /// before `now`, freeing their slots.
    fn take_stale(&self, now: std::time::Instant) -> Vec<(String, Receive)> {
        let stale: Vec<(String, Receive)> = {
            let mut pending = self.pending.lock();
            let old: Vec<String> = pending
                .iter()
                .filter(|(_, r)| now.saturating_duration_since(r.since) >= RECEIVE_FORGOTTEN)
                .map(|(t, _)| t.clone())
                .collect();
            old.into_iter().filter_map(|t| pending.remove(&t).map(|r| (t, r))).collect()
        };
        let mut busy = self.busy.lock();
        for (_, r) in &stale {
            busy.remove(&(key(&r.plan.target), key(&r.plan.snapshot)));
        }
        stale
    }

    /// Forgets the shipments whose end never came (the source died, or
    /// its controller lost the shipment in a restart): their slots are
    /// freed, and the receiving satellite is told to cancel (a transfer
    /// still running stops and removes its files; in the background, best
    /// effort).
    fn forget_stale(&self, s: &AppState, now: std::time::Instant) {
        for (token, r) in self.take_stale(now) {
            tracing::warn!(rsc = %r.plan.target, snapshot = %r.plan.snapshot, "a shipment's end never came; forgetting it");
            let s = s.clone();
            tokio::spawn(async move {
                let ask = ShipToken { token: Secret(token), cancel: true };
                if let Ok(raw) = serde_json::to_vec(&ask) {
                    let got: Result<BackupReceived, _> =
                        s.links().request(&key(&r.plan.node), PATH_SHIP_RESULT, Some(raw), Duration::from_secs(60)).await;
                    if let Err(e) = got {
                        tracing::debug!(rsc = %r.plan.target, "cancelling a forgotten shipment: {e}");
                    }
                }
            });
        }
    }
}

/// The shipments this controller receives, by token.
#[derive(Default)]
pub struct Receives {
    pending: parking_lot::Mutex<HashMap<String, Receive>>,
    /// (definition, snapshot) keys of the shipments agreed to and not
    /// ended: a second shipment of the same snapshot into the same
    /// definition is refused while one runs.
    busy: parking_lot::Mutex<HashSet<(String, String)>>,
}

/// Holds a (definition, snapshot) slot in [`Receives::busy`] while a
/// shipment is being agreed to; gives it back on drop unless `kept`.
struct Slot<'a> {
    receives: &'a Receives,
    key: (String, String),
    kept: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.receives.busy.lock().remove(&self.key);
        }
    }
}

/// The other controller's base URL, and the remote's cluster id and
/// opened passphrase.
fn linstor_remote(s: &AppState, remote: &str) -> Result<(String, Option<String>, Option<Secret>), ApiError> {
    let c = s.read();
    let Some(r) = c.remotes.get(&key(remote)) else {
        return Err(OpError::new(OP, rc::FAIL_NOT_FOUND_REMOTE, format!("Remote '{remote}' does not exist.")).into());
    };
    let RemoteTarget::Linstor { url, passphrase, cluster_id } = &r.target else {
        return Err(OpError::new(OP, rc::FAIL_INVLD_BACKUP_CONFIG, format!("Remote '{remote}' is not a LINSTOR remote."))
            .correction("Backups to S3 are created with `backup create`.")
            .into());
    };
    let passphrase = match passphrase {
        None => None,
        Some(sealed) => {
            let Some(master) = s.links().master() else {
                return Err(OpError::new(
                    OP,
                    rc::FAIL_NOT_FOUND_CRYPT_KEY,
                    "The remote's passphrase cannot be opened without the master passphrase.",
                )
                .correction("Enter the master passphrase first.")
                .into());
            };
            Some(Secret(master.open(sealed).map_err(|e| ApiError::Internal(format!("cannot open a sealed remote passphrase: {e}")))?))
        }
    };
    Ok((url.trim_end_matches('/').to_string(), cluster_id.clone(), passphrase))
}

/// The keys of a shipment's encrypted volumes, sealed with this cluster's
/// master key: opened with this cluster's own master key when the source
/// has the same, else with the passphrase of the LINSTOR remote here that
/// names the source cluster (LINSTOR's `getRemoteMasterKey`). Empty
/// without LUKS in the stack.
fn received_keys(s: &AppState, req: &PrepareReq) -> Result<BTreeMap<u32, String>, ApiError> {
    if !req.layer_stack.iter().any(|l| l.eq_ignore_ascii_case("LUKS")) {
        return Ok(BTreeMap::new());
    }
    let master = s.links().master();
    let sealed_pass = {
        let c = s.read();
        c.remotes.values().find_map(|r| match &r.target {
            RemoteTarget::Linstor { cluster_id: Some(id), passphrase, .. } if id.eq_ignore_ascii_case(&req.src_cluster_id) => {
                passphrase.clone()
            }
            _ => None,
        })
    };
    let pass = match (sealed_pass, &master) {
        (Some(sealed), Some(m)) => {
            Some(m.open(&sealed).map_err(|e| ApiError::Internal(format!("cannot open a sealed remote passphrase: {e}")))?)
        }
        _ => None,
    };
    let sealed: BTreeMap<u32, Option<String>> = req.volumes.iter().map(|v| (v.0, req.luks_secrets.get(&v.0).cloned())).collect();
    backup_keys::reseal(OP, &req.src_rsc_name, req.luks_info.as_ref(), &sealed, pass.as_deref(), master.as_ref()).map_err(|e| {
        if e.rc.message.contains("no passphrase was given") {
            e.correction("Set the passphrase of this cluster's LINSTOR remote for the source cluster to the source's master passphrase.")
                .into()
        } else {
            e.into()
        }
    })
}

/// How this controller checks other controllers' HTTPS certificates:
/// against the system's roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the
/// platform's store) and, when given, the CA certificates in `ca`.
pub fn remote_tls_config(ca: Option<&std::path::Path>) -> Result<std::sync::Arc<rustls::ClientConfig>, cairn_proto::tls::TlsError> {
    use cairn_proto::tls;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!("system roots: {e}");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca {
        for cert in tls::load_certs(ca)? {
            roots.add(cert).map_err(|e| tls::TlsError { path: ca.display().to_string(), reason: e.to_string() })?;
        }
    }
    tracing::debug!(system_roots = added, extra = ca.is_some(), "HTTPS to other controllers");
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls::TlsError { path: "(built in)".into(), reason: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// A configuration that trusts no certificate (when even the system's
/// roots could not be set up).
pub fn empty_tls_config() -> std::sync::Arc<rustls::ClientConfig> {
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(cairn_proto::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| rustls::ClientConfig::builder())
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    )
}

/// A JSON POST to another controller (`http://` or `https://`, the
/// certificate checked by [`AppState::remote_tls`]): its status and body.
async fn call(s: &AppState, base: &str, path: &str, body: Vec<u8>, timeout: Duration) -> Result<(u16, Bytes), String> {
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config((*s.remote_tls()).clone()).https_or_http().enable_http1().build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let req = hyper::Request::post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request to {base}: {e}"))?;
    let work = async {
        let resp = client.request(req).await.map_err(|e| format!("{base} cannot be reached: {}", chain(&e)))?;
        let status = resp.status().as_u16();
        if resp.status().is_redirection() {
            let to = resp.headers().get(hyper::header::LOCATION).and_then(|l| l.to_str().ok()).unwrap_or("?").to_string();
            return Err(format!("{base} redirects to {to} (its REST API is served over HTTPS there): use that URL for the remote"));
        }
        let bytes = resp.into_body().collect().await.map_err(|e| format!("reading the answer of {base}: {e}"))?.to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("{base} did not answer in {} s", timeout.as_secs()))?
}

/// The messages of a refusal the other controller answered.
fn refusal(body: &[u8]) -> String {
    match serde_json::from_slice::<Vec<ApiCallRc>>(body) {
        Ok(entries) => entries
            .iter()
            .filter(|e| e.is_error())
            .map(|e| match &e.cause {
                Some(c) => format!("{} ({c})", e.message),
                None => e.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => String::from_utf8_lossy(body).chars().take(500).collect(),
    }
}

/// `POST /v1/remotes/{remote}/backups/ship`: the target prepares, then
/// the snapshot is taken and streamed in the background; the answer comes
/// once the stream started.
pub(crate) async fn ship(State(s): State<AppState>, Path(remote): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ShipReq = input::required(&body)?;
    let (url, dst_cluster_id, passphrase) = linstor_remote(&s, &remote)?;
    let src = source(&s, &req.src_rsc_name, req.src_node_name.as_deref())?;
    let now = crate::state::now_ms();
    let id = backup_id(now);
    let snap = req.src_snap_name.clone().filter(|x| !x.is_empty()).unwrap_or_else(|| id.clone());
    // A named snapshot that exists is shipped as it is (upstream's
    // `--source-snapshot`); otherwise it is taken.
    let (src_cluster_id, bases, existing) = {
        let c = s.read();
        let existing = c.snapshots.get(&(key(&src.rsc), key(&snap))).map(|d| d.create_timestamp);
        if existing.is_some() && req.src_snap_name.as_ref().is_none_or(|x| x.is_empty()) {
            return Err(OpError::new(OP, rc::FAIL_EXISTS_SNAPSHOT_DFN, format!("Snapshot '{snap}' of '{}' exists already.", src.rsc))
                .correction("Wait a second and try again.")
                .into());
        }
        let mut bases: Vec<(i64, String, String)> = c
            .snapshots
            .values()
            .filter(|d| key(&d.resource_definition) == key(&src.rsc) && d.nodes.contains_key(&key(&src.node)))
            .filter(|d| key(&d.name) != key(&snap) && existing.is_none_or(|t| d.create_timestamp < t))
            .map(|d| (d.create_timestamp, d.name.clone(), d.uuid.clone()))
            .collect();
        bases.sort_by(|a, b| b.cmp(a));
        (c.ctrl_props.get("Cluster/LocalID").cloned().unwrap_or_default(), bases, existing)
    };
    // Encrypted volumes go with their keys as the source holds them
    // (sealed) and its sealed master key: the target opens them with the
    // passphrase its remote for this cluster has (LINSTOR's way).
    let (luks_info, luks_secrets) = if src.layer_stack.iter().any(|l| l.eq_ignore_ascii_case("LUKS")) {
        let c = s.read();
        let info = LuksInfo::from_props(&|k| c.ctrl_props.get(k).cloned());
        let secrets: BTreeMap<u32, String> = c
            .resources
            .get(&(key(&src.rsc), key(&src.node)))
            .map(|r| r.volumes.values().filter_map(|v| v.luks_secret.clone().map(|x| (v.volume_number, x))).collect())
            .unwrap_or_default();
        (info, secrets)
    } else {
        (None, BTreeMap::new())
    };
    let incremental = req.allow_incremental.unwrap_or(true);
    let prepare = PrepareReq {
        src_cluster_id,
        dst_cluster_id,
        passphrase,
        src_rsc_name: src.rsc.clone(),
        dst_rsc_name: req.dst_rsc_name.clone().filter(|x| !x.is_empty()).unwrap_or_else(|| src.rsc.clone()),
        dst_node_name: req.dst_node_name.clone().filter(|x| !x.is_empty()),
        dst_net_if_name: req.dst_net_if_name.clone().filter(|x| !x.is_empty()),
        dst_stor_pool: req.dst_stor_pool.clone().filter(|x| !x.is_empty()),
        stor_pool_rename: req.stor_pool_rename.clone(),
        download_only: req.download_only,
        snapshot: snap.clone(),
        layer_stack: src.layer_stack.clone(),
        volumes: src.sizes.iter().map(|(nr, (kib, pool))| (*nr, *kib, (*kib as u64) * 1024, pool.clone())).collect(),
        bases: if incremental { bases.iter().map(|b| b.1.clone()).collect() } else { Vec::new() },
        base_uuids: if incremental { bases.iter().map(|b| b.2.clone()).collect() } else { Vec::new() },
        luks_info,
        luks_secrets,
    };
    let raw = serde_json::to_vec(&prepare).map_err(|e| ApiError::Internal(e.to_string()))?;
    let prepared: Prepared = match call(&s, &url, PATH_PREPARE, raw, PREPARE_TIMEOUT).await {
        Ok((200, body)) => serde_json::from_slice(&body).map_err(|e| {
            ApiError::from(
                OpError::new(OP, rc::FAIL_UNKNOWN_ERROR, format!("Remote '{remote}' answered what Cairn does not understand."))
                    .cause(e.to_string()),
            )
        })?,
        Ok((status, body)) => {
            // The target's own code when it gives one (unknown cluster, ...).
            let code = serde_json::from_slice::<Vec<ApiCallRc>>(&body)
                .ok()
                .and_then(|v| v.into_iter().find(|e| e.is_error()))
                .map(|e| e.ret_code & rc::MASK_BITS_CODE)
                .filter(|c| *c > 0)
                .unwrap_or(rc::FAIL_UNKNOWN_ERROR);
            return Err(OpError::new(OP, code, format!("The cluster of remote '{remote}' refused the shipment (HTTP {status})."))
                .cause(refusal(&body))
                .correction(
                    "Check the remote's cluster id and passphrase, and that the target cluster has a LINSTOR remote for this cluster.",
                )
                .into());
        }
        Err(why) => {
            return Err(OpError::new(
                OP,
                rc::FAIL_NOT_CONNECTED,
                format!("The cluster of remote '{remote}' could not be asked to receive the shipment."),
            )
            .correction(if why.contains("certificate") {
                "The target's HTTPS certificate is not trusted: start this controller with --remote-tls-ca naming the CA that signed it \
                 (the system's roots are trusted too), and check that the certificate names the host of the remote's URL."
            } else {
                "Check the remote's URL and that its controller runs."
            })
            .cause(why)
            .into());
        }
    };
    let mut entries = Vec::new();
    let base = prepared.base.clone();
    let kind = match &base {
        Some(b) => format!("incremental, based on snapshot '{b}' which both clusters hold"),
        None => "full: the target holds none of this definition's snapshots".to_string(),
    };
    // The snapshot, taken as a snapshot request would; the target gives up
    // its listener when it fails.
    let tell_failed = |why: String| {
        let s = s.clone();
        let url = url.clone();
        let token = prepared.token.clone();
        async move {
            let raw = serde_json::to_vec(&DoneReq { token, success: false, message: Some(why), src_snap_uuid: None }).unwrap_or_default();
            if let Err(e) = call(&s, &url, PATH_DONE, raw, PREPARE_TIMEOUT).await {
                tracing::warn!("could not tell the target cluster that the shipment failed: {e}");
            }
        }
    };
    if existing.is_none() {
        let taken = match super::snapshots::take(&s, &src.rsc, &snap).await {
            Ok(t) => t,
            Err(e) => {
                tell_failed("the snapshot could not be taken".into()).await;
                return Err(e);
            }
        };
        if taken.entries.iter().any(|e| e.is_error()) {
            tell_failed("the snapshot could not be taken".into()).await;
            return Ok(taken);
        }
        entries.extend(taken.entries);
    }
    if let Err(e) = wait_taken(&s, &src.node, &src.rsc, &snap).await {
        tell_failed("the snapshot was not taken".into()).await;
        return Err(e);
    }
    let snap_uuid = s.read().snapshots.get(&(key(&src.rsc), key(&snap))).map(|d| d.uuid.clone());
    let send = ShipSend {
        target: prepared.target.clone(),
        token: prepared.token.clone(),
        pool: src.pool.clone(),
        resource: src.rsc.clone(),
        snapshot: snap.clone(),
        base: base.clone(),
        volumes: src.sizes.keys().copied().collect(),
        chunk_size: CHUNK_SIZE,
        tls_sha256: prepared.tls_sha256.clone(),
    };
    let shipment = Shipment {
        remote: remote.clone(),
        rsc: src.rsc.clone(),
        snap: snap.clone(),
        id: id.clone(),
        node: src.node.clone(),
        start_ms: now,
        based_on: base.as_ref().map(|b| full_id(&src.rsc, b, b)),
        failed: None,
        done: None,
    };
    s.backups().add(shipment.clone());
    let task_state = s.clone();
    let node = src.node.clone();
    let token = prepared.token.clone();
    let target_url = url.clone();
    tokio::spawn(async move {
        let s = task_state;
        let result = stream(&s, &node, &send, &target_url, token, snap_uuid).await;
        match result {
            Ok(sent) => s.backups().shipped(&shipment.id, &shipment.remote, sent),
            Err(why) => {
                tracing::warn!(rsc = %shipment.rsc, snapshot = %shipment.snap, "shipping to another cluster failed: {why}");
                s.backups().end(&shipment.id, &shipment.remote, Some(why));
            }
        }
    });
    entries.push(
        ApiCallRc::success(OP, 0, format!("Shipping of resource '{}' to remote '{remote}' started ({kind}).", src.rsc)).with_details(
            format!(
                "Snapshot '{snap}' from node '{}' to node '{}' of the target cluster, {}.",
                src.node,
                prepared.node,
                match prepared.tls_sha256 {
                    Some(_) => "the stream encrypted with TLS (the receiving node's certificate pinned)",
                    None => "the stream in plain TCP (the target's satellites run without TLS)",
                }
            ),
        ),
    );
    Ok(Reply::new(201, entries))
}

/// The source satellite streams; then the target controller registers
/// what arrived (or gives it up). Answers bytes and chunks sent.
async fn stream(
    s: &AppState,
    node: &str,
    send: &ShipSend,
    url: &str,
    token: Secret,
    snap_uuid: Option<String>,
) -> Result<(u64, u64), String> {
    let body = serde_json::to_vec(send).map_err(|e| e.to_string())?;
    let sent: Result<BackupSent, String> =
        s.links().request(&key(node), PATH_SHIP_SEND, Some(body), TRANSFER_TIMEOUT).await.map_err(|e| format!("node '{node}': {e}"));
    let failure = match &sent {
        Ok(x) => x.error.as_ref().map(|e| format!("{} {}", e.message, e.cause.clone().unwrap_or_default())),
        Err(why) => Some(why.clone()),
    };
    let done = DoneReq { token, success: failure.is_none(), message: failure.clone(), src_snap_uuid: snap_uuid };
    let raw = serde_json::to_vec(&done).map_err(|e| e.to_string())?;
    let answer = call(s, url, PATH_DONE, raw, TRANSFER_TIMEOUT).await;
    if let Some(why) = failure {
        return Err(why);
    }
    match answer {
        Ok((s, _)) if s < 300 => {}
        Ok((status, body)) => return Err(format!("the target cluster did not register the shipment (HTTP {status}): {}", refusal(&body))),
        Err(why) => return Err(format!("the target cluster could not be told the shipment ended: {why}")),
    }
    let sent = sent.unwrap_or_default();
    Ok((sent.volumes.iter().map(|v| v.stored_bytes).sum(), sent.volumes.iter().map(|v| v.chunks_stored).sum()))
}

fn random_token() -> Result<String, ApiError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut b).map_err(|_| ApiError::Internal("no random numbers".into()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// `POST /v1/internal/backups/requestReceive` (target side): checks the
/// request, chooses node, pool and base, and has the satellite listen.
async fn prepare(State(s): State<AppState>, auth: Option<axum::Extension<RestAuthOn>>, body: Bytes) -> Result<Response, ApiError> {
    let req: PrepareReq = input::required(&body)?;
    // Cluster ids are no secrets: with sign-in on, only the master
    // passphrase lets a request in that brings no credentials.
    if auth.is_some_and(|a| a.0.0) && req.passphrase.is_none() {
        return Err(OpError::new(
            OP,
            rc::FAIL_ACC_DENIED_COMMAND,
            "This cluster requires REST sign-in: a shipment from another cluster must carry its master passphrase.",
        )
        .correction("Set the passphrase of the LINSTOR remote on the source cluster to this cluster's master passphrase.")
        .into());
    }
    let (local_id, known) = {
        let c = s.read();
        let local = c.ctrl_props.get("Cluster/LocalID").cloned().unwrap_or_default();
        let known = c.remotes.values().any(
            |r| matches!(&r.target, RemoteTarget::Linstor { cluster_id: Some(id), .. } if id.eq_ignore_ascii_case(&req.src_cluster_id)),
        );
        (local, known)
    };
    if let Some(want) = req.dst_cluster_id.as_ref().filter(|x| !x.is_empty() && !x.eq_ignore_ascii_case(&local_id)) {
        return Err(OpError::new(OP, rc::FAIL_BACKUP_UNKNOWN_CLUSTER, "The shipment is meant for another cluster.")
            .cause(format!("The source's remote names cluster id {want}; this cluster is {local_id}."))
            .correction("Set the remote's cluster id to the target cluster's (Cluster/LocalID of its controller).")
            .into());
    }
    if !known {
        return Err(OpError::new(
            OP,
            rc::FAIL_BACKUP_UNKNOWN_CLUSTER,
            format!("Unknown Cluster. Source Cluster ID: {}", req.src_cluster_id),
        )
        .correction("Create a LINSTOR remote for the source cluster here, with its cluster id, to accept its shipments.")
        .into());
    }
    if let Some(p) = &req.passphrase {
        let wrong = !super::encryption::is_set(&s) || crate::crypto::MasterKey::unlock(&p.0, &super::encryption::stored(&s)).is_err();
        if wrong {
            return Err(OpError::new(
                OP,
                rc::FAIL_INVLD_CRYPT_PASSPHRASE,
                "The passphrase of the shipment is not this cluster's master passphrase.",
            )
            .correction("Set the remote's passphrase to the target cluster's master passphrase.")
            .into());
        }
    }
    let luks_secrets = received_keys(&s, &req)?;
    let dst = req.dst_rsc_name.clone();
    let receives = s.receives();
    receives.forget_stale(&s, std::time::Instant::now());
    let slot_key = (key(&dst), key(&req.snapshot));
    if !receives.busy.lock().insert(slot_key.clone()) {
        return Err(OpError::new(
            OP,
            rc::FAIL_EXISTS_SNAPSHOT_DFN,
            format!("Snapshot '{}' of '{dst}' is being received already.", req.snapshot),
        )
        .correction("Wait for that shipment to end, or ship under another snapshot name.")
        .into());
    }
    let mut slot = Slot { receives, key: slot_key, kept: false };
    let src_pool = req.volumes.first().map(|v| v.3.clone()).unwrap_or_default();
    let pool = req.dst_stor_pool.clone().or_else(|| req.stor_pool_rename.get(&src_pool).cloned()).unwrap_or(src_pool);
    // Node and base: an existing definition is received where its newest
    // shared snapshot is; a new one on the named node, or the first online
    // node with the pool. A shared snapshot is one received from a
    // snapshot the source still holds (its uuid kept on it), whatever its
    // name: (the source's name, this cluster's name, its nodes).
    let (node, base, address) = {
        let c = s.read();
        let shared = shared_base(&c, &dst, &req.bases, &req.base_uuids);
        let node_key = match (&req.dst_node_name, &shared) {
            (Some(n), _) => key(n),
            (None, Some((_, _, nodes))) => nodes.first().cloned().unwrap_or_default(),
            (None, None) => c
                .stor_pools
                .keys()
                .filter(|(n, p)| *p == key(&pool) && s.links().capacity(n, &pool).is_some())
                .map(|(n, _)| n.clone())
                .next()
                .unwrap_or_default(),
        };
        let Some(n) = c.nodes.get(&node_key) else {
            return Err(OpError::new(
                OP,
                rc::FAIL_NOT_FOUND_NODE,
                format!("No node of the target cluster can receive into pool '{pool}'."),
            )
            .correction("Name a target node (dst_node_name) and pool (dst_stor_pool).")
            .into());
        };
        let base = shared.filter(|(_, _, nodes)| nodes.contains(&node_key)).map(|(src_name, dst_name, _)| (src_name, dst_name));
        let nif = match &req.dst_net_if_name {
            Some(want) => n.net_interfaces.iter().find(|i| key(&i.name) == key(want)),
            None => n.net_interfaces.iter().find(|i| i.satellite_port.is_some()).or(n.net_interfaces.first()),
        };
        let Some(nif) = nif else {
            return Err(OpError::new(OP, rc::FAIL_NOT_FOUND_NET_IF, format!("Node '{}' has no such network interface.", n.name)).into());
        };
        (n.name.clone(), base, nif.address.to_string())
    };
    let plan = BackupRestorePlan {
        target: dst.clone(),
        snapshot: req.snapshot.clone(),
        node: node.clone(),
        pool: pool.clone(),
        layer_stack: if req.layer_stack.is_empty() { vec!["STORAGE".into()] } else { req.layer_stack.clone() },
        volumes: req.volumes.iter().map(|v| (v.0, v.1)).collect(),
        source_snap_uuid: None,
        luks_secrets,
    };
    // Everything the registration checks is checked before the stream
    // (the follow-up checks too: the node runs every layer of the stack).
    let pool_desired = {
        let c = s.read();
        let mut dry = cairn_domain::Ctx::deterministic().with_luks(|| Some(String::new()));
        let out = c.receive_shipment(&plan, req.download_only, &mut dry)?;
        c.drbd_follow_up(&out, s.links(), &mut dry)?;
        let Some(sp) = c.stor_pools.get(&(key(&node), key(&pool))) else { return Err(ApiError::Internal("pool vanished".into())) };
        PoolDesired {
            name: sp.name.clone(),
            kind: sp.provider_kind,
            backing: ["StorDriver/StorPoolName", "StorDriver/FileDir"].iter().find_map(|k| sp.props.get(*k).cloned()),
        }
    };
    let token = random_token()?;
    let listen = ShipListen {
        token: Secret(token.clone()),
        address: address.clone(),
        pool: pool_desired,
        resource: dst.clone(),
        snapshot: req.snapshot.clone(),
        base: base.as_ref().map(|b| b.1.clone()),
        volumes: req.volumes.iter().map(|v| ShipVolume { number: v.0, size: v.2 }).collect(),
        adopt: s.read().resources_of(&key(&dst)).any(|r| key(&r.node) == key(&node)),
    };
    let raw = serde_json::to_vec(&listen).map_err(|e| ApiError::Internal(e.to_string()))?;
    let listening: ShipListening =
        s.links().request(&key(&node), PATH_SHIP_LISTEN, Some(raw), Duration::from_secs(30)).await.map_err(|e| {
            ApiError::from(
                OpError::new(OP, rc::FAIL_NOT_CONNECTED, format!("Node '{node}' cannot receive the shipment.")).cause(e.to_string()),
            )
        })?;
    let since = std::time::Instant::now();
    receives.pending.lock().insert(token.clone(), Receive { plan, download_only: req.download_only, incremental: base.is_some(), since });
    slot.kept = true; // given back when the shipment ends (`done`)
    let target = if address.contains(':') { format!("[{address}]:{}", listening.port) } else { format!("{address}:{}", listening.port) };
    tracing::info!(rsc = %dst, snapshot = %req.snapshot, %node, %target, "receiving a shipment from cluster {}", req.src_cluster_id);
    Ok(ok(&json!(Prepared { token: Secret(token), target, node, base: base.map(|b| b.0), tls_sha256: listening.tls_sha256 })))
}

/// The newest snapshot of definition `dst` received from one of the
/// source's snapshots (`uuids`, named `names` there, in the same order):
/// (the source's name, this cluster's name, its nodes). A snapshot of the
/// same name without that identity (taken here, or received from an
/// unrelated definition) is never a base: the chunks an incremental sends
/// would land on other data.
fn shared_base(c: &cairn_domain::Cluster, dst: &str, names: &[String], uuids: &[String]) -> Option<(String, String, Vec<String>)> {
    c.snapshots
        .values()
        .filter(|d| key(&d.resource_definition) == key(dst))
        .filter_map(|d| {
            let from = d.props.get(cairn_domain::backup::SOURCE_SNAP_UUID_PROP)?;
            let i = uuids.iter().position(|u| u.eq_ignore_ascii_case(from))?;
            Some((d.create_timestamp, names.get(i)?.clone(), d))
        })
        .max_by_key(|(t, _, _)| *t)
        .map(|(_, src_name, d)| (src_name, d.name.clone(), d.nodes.keys().cloned().collect()))
}

/// `POST /v1/internal/backups/requestReceiveDone` (target side): the
/// source's stream ended; the satellite's verdict decides whether the
/// snapshot is registered.
async fn done(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: DoneReq = input::required(&body)?;
    let receives = s.receives();
    let Some(mut r) = receives.pending.lock().remove(&req.token.0) else {
        return Err(OpError::new(OP, rc::FAIL_NOT_FOUND_BACKUP, "No shipment with this token is expected.").into());
    };
    // Whatever the verdict, the slot is free once this call ends.
    let _slot = Slot { receives, key: (key(&r.plan.target), key(&r.plan.snapshot)), kept: false };
    let node = r.plan.node.clone();
    let ask = ShipToken { token: req.token.clone(), cancel: !req.success };
    let raw = serde_json::to_vec(&ask).map_err(|e| ApiError::Internal(e.to_string()))?;
    let got: Result<BackupReceived, _> = s.links().request(&key(&node), PATH_SHIP_RESULT, Some(raw), TRANSFER_TIMEOUT).await;
    if !req.success {
        tracing::warn!(rsc = %r.plan.target, "the source gave up the shipment: {}", req.message.clone().unwrap_or_default());
        return Ok(Reply::new(
            200,
            vec![ApiCallRc::info(OP, 0, format!("Receiving snapshot '{}' into '{}' was given up.", r.plan.snapshot, r.plan.target))],
        ));
    }
    let got = got.map_err(|e| {
        ApiError::from(
            OpError::new(OP, rc::FAIL_NOT_CONNECTED, format!("Node '{node}' could not say how the shipment ended.")).cause(e.to_string()),
        )
    })?;
    if let Some(e) = got.error {
        let mut err = OpError::new(OP, rc::FAIL_UNKNOWN_ERROR, e.message).correction("Nothing was registered; ship again.");
        if let Some(c) = e.cause {
            err = err.cause(c);
        }
        return Err(err.into());
    }
    r.plan.source_snap_uuid = req.src_snap_uuid.clone();
    let mut reply = match s.mutate(201, |c, ctx| c.receive_shipment(&r.plan, r.download_only, ctx)).await {
        Ok(reply) => reply,
        Err(e) => {
            // Not registered: what arrived must not stay on the node.
            let cancel = ShipToken { token: req.token.clone(), cancel: true };
            if let Ok(raw) = serde_json::to_vec(&cancel) {
                let gone: Result<BackupReceived, _> =
                    s.links().request(&key(&node), PATH_SHIP_RESULT, Some(raw), Duration::from_secs(60)).await;
                if let Err(x) = gone {
                    tracing::warn!(rsc = %r.plan.target, "could not have node '{node}' remove a shipment that was not registered: {x}");
                }
            }
            return Err(e);
        }
    };
    let how = if r.incremental { "incremental" } else { "full" };
    reply.entries.push(ApiCallRc::success(
        OP,
        0,
        format!("Snapshot '{}' of '{}' received on node '{}' ({how}).", r.plan.snapshot, r.plan.target, r.plan.node),
    ));
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(target: &str, snapshot: &str, since: std::time::Instant) -> Receive {
        let plan = BackupRestorePlan {
            target: target.into(),
            snapshot: snapshot.into(),
            node: "b1".into(),
            pool: "xfs".into(),
            layer_stack: vec!["STORAGE".into()],
            volumes: vec![(0, 4096)],
            source_snap_uuid: None,
            luks_secrets: Default::default(),
        };
        Receive { plan, download_only: false, incremental: false, since }
    }

    #[test]
    fn a_remote_ca_file_without_a_certificate_stops_the_start() {
        assert!(remote_tls_config(None).is_ok(), "the system's roots alone, however many there are");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "not a certificate\n").unwrap();
        let e = remote_tls_config(Some(&bad)).unwrap_err();
        assert_eq!(e.path, bad.display().to_string());
        assert!(remote_tls_config(Some(&dir.path().join("missing.pem"))).is_err());
    }

    #[test]
    fn a_shipment_whose_end_never_came_is_forgotten_and_frees_its_snapshot() {
        let r = Receives::default();
        let t0 = std::time::Instant::now();
        for (token, rsc, since) in [("old", "Dst", t0), ("new", "other", t0 + Duration::from_secs(3600))] {
            r.pending.lock().insert(token.into(), receive(rsc, "s1", since));
            r.busy.lock().insert((key(rsc), key("s1")));
        }
        assert!(r.take_stale(t0 + RECEIVE_FORGOTTEN - Duration::from_secs(1)).is_empty());
        let gone = r.take_stale(t0 + RECEIVE_FORGOTTEN);
        assert_eq!(gone.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["old"]);
        assert!(!r.busy.lock().contains(&(key("Dst"), key("s1"))));
        assert!(r.busy.lock().contains(&(key("other"), key("s1"))));
        assert!(r.pending.lock().contains_key("new"));
    }
}
