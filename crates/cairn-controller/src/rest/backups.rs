//! Backups to S3 remotes: create (a snapshot Cairn takes, uploaded by the
//! satellite that holds it), list and info (read from the bucket, so any
//! controller pointed at it sees the same backups), restore (downloaded
//! into a snapshot of a new definition on a chosen node, then restored
//! from it), delete, abort and the queue view.
//!
//! The bucket follows LINSTOR's names: `<rsc>_<backup id>[^<snap>].meta`
//! for the metadata (LINSTOR's `BackupMetaDataPojo` as JSON, with Cairn's
//! chunk details under `cairn`) and `<rsc>_<NNNNN>_<backup id>[^<snap>]`
//! per volume. docs/BACKUP-FORMAT.md describes the volume objects.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use cairn_api::rc::{self, ApiCallRc};
use cairn_domain::OpError;
use cairn_domain::backup::BackupRestorePlan;
use cairn_domain::name::key;
use cairn_domain::remote::RemoteTarget;
use cairn_domain::snapshot::NodeSnapState;
use cairn_proto::{
    BackupAbort, BackupDiscard, BackupReceive, BackupReceived, BackupSend, BackupSent, BackupVolumeReceive, BackupVolumeSend, Checksum,
    PATH_BACKUP_ABORT, PATH_BACKUP_DISCARD, PATH_BACKUP_RECEIVE, PATH_BACKUP_SEND, PoolDesired, S3Target, Secret,
};
use cairn_s3::{Bucket, S3Config};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::backup_keys::{self, LuksInfo};
use crate::state::AppState;

/// Bytes of volume data per chunk.
pub const CHUNK_SIZE: u64 = 1 << 20;
/// How long a shipment or a restore may take.
pub(crate) const TRANSFER_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/remotes/{remote}/backups", get(list).post(create).delete(remove))
        .route("/v1/remotes/{remote}/backups/info", post(info))
        .route("/v1/remotes/{remote}/backups/restore", post(restore))
        .route("/v1/remotes/{remote}/backups/abort", post(abort))
        .route("/v1/view/backup/queue", get(queue))
}

/// A shipment this controller started: running, or failed (a finished
/// one is its `.meta` object in the bucket).
#[derive(Debug, Clone)]
pub struct Shipment {
    pub remote: String,
    pub rsc: String,
    pub snap: String,
    pub id: String,
    pub node: String,
    pub start_ms: i64,
    pub based_on: Option<String>,
    pub failed: Option<String>,
    /// A shipment to another cluster that ended well (kept for the list,
    /// since no bucket records it): bytes and chunks sent.
    pub done: Option<(u64, u64)>,
}

impl Shipment {
    fn running(&self) -> bool {
        self.failed.is_none() && self.done.is_none()
    }
}

#[derive(Default)]
pub struct Shipments {
    list: parking_lot::Mutex<Vec<Shipment>>,
}

impl Shipments {
    pub(crate) fn add(&self, s: Shipment) {
        self.list.lock().push(s);
    }

    /// A shipment to another cluster ended well.
    pub(crate) fn shipped(&self, id: &str, remote: &str, sent: (u64, u64)) {
        for s in self.list.lock().iter_mut().filter(|s| s.id == id && s.remote == remote) {
            s.done = Some(sent);
        }
    }

    pub(crate) fn end(&self, id: &str, remote: &str, failed: Option<String>) {
        let mut l = self.list.lock();
        match failed {
            None => l.retain(|s| !(s.id == id && s.remote == remote)),
            Some(why) => {
                for s in l.iter_mut().filter(|s| s.id == id && s.remote == remote) {
                    s.failed = Some(why.clone());
                }
            }
        }
    }

    pub fn all(&self) -> Vec<Shipment> {
        self.list.lock().clone()
    }
}

/// The target resource definitions (by key) of the restores running: a
/// second restore into one is refused while the first runs (a client's
/// retry), or both would download into the same node's volumes and the
/// loser's clean-up could remove the winner's.
#[derive(Default)]
pub struct Restores {
    running: parking_lot::Mutex<std::collections::BTreeSet<String>>,
}

/// A running restore's claim on its target; released when dropped.
pub(crate) struct Restoring<'a> {
    restores: &'a Restores,
    key: String,
}

impl Restores {
    /// Claims `target` for a restore; None while another restore into it
    /// runs.
    pub(crate) fn begin(&self, target: &str) -> Option<Restoring<'_>> {
        let key = key(target);
        // (Not `then_some`: it would build, and drop, a claim on the
        // target of the restore that runs.)
        let claimed = self.running.lock().insert(key.clone());
        if claimed { Some(Restoring { restores: self, key }) } else { None }
    }
}

impl Drop for Restoring<'_> {
    fn drop(&mut self) {
        self.restores.running.lock().remove(&self.key);
    }
}

const OP_CRT: i64 = rc::MASK_CRT | rc::MASK_BACKUP;

/// The S3 remote and its opened keys.
fn target(s: &AppState, remote: &str, op: i64) -> Result<S3Target, ApiError> {
    let c = s.read();
    let Some(r) = c.remotes.get(&key(remote)) else {
        return Err(OpError::new(op, rc::FAIL_NOT_FOUND_REMOTE, format!("Remote '{remote}' does not exist.")).into());
    };
    let RemoteTarget::S3 { endpoint, bucket, region, access_key, secret_key, use_path_style } = &r.target else {
        return Err(OpError::new(op, rc::FAIL_INVLD_BACKUP_CONFIG, format!("Remote '{remote}' is not an S3 remote."))
            .correction("Backups to another cluster are shipped with `backup ship`.")
            .into());
    };
    let Some(master) = s.links().master() else {
        return Err(OpError::new(op, rc::FAIL_NOT_FOUND_CRYPT_KEY, "The remote's keys cannot be opened without the master passphrase.")
            .correction("Enter the master passphrase first.")
            .into());
    };
    let open = |sealed: &str| master.open(sealed).map_err(|e| ApiError::Internal(format!("cannot open a sealed remote key: {e}")));
    Ok(S3Target {
        endpoint: endpoint.clone(),
        bucket: bucket.clone(),
        region: region.clone(),
        access_key: Secret(open(access_key)?),
        secret_key: Secret(open(secret_key)?),
        path_style: *use_path_style,
    })
}

fn open_bucket(t: &S3Target, op: i64) -> Result<Bucket, ApiError> {
    let cfg = S3Config {
        endpoint: t.endpoint.clone(),
        bucket: t.bucket.clone(),
        region: t.region.clone(),
        access_key: t.access_key.0.clone(),
        secret_key: t.secret_key.0.clone(),
        path_style: t.path_style,
    };
    Bucket::open(&cfg).map_err(|e| s3_failed(op, e))
}

fn s3_failed(op: i64, e: cairn_s3::S3Error) -> ApiError {
    OpError::new(op, rc::FAIL_UNKNOWN_ERROR, "The S3 remote could not be used.")
        .cause(e.to_string())
        .correction("Check the remote's endpoint, keys and bucket, and that the S3 server runs.")
        .into()
}

/// LINSTOR's backup id for an instant: `back_YYYYMMDD_HHMMSS` (UTC).
pub fn backup_id(now_ms: i64) -> String {
    let t = cairn_api::time::datetime_utc(now_ms);
    format!("back_{}", t.replace(['-', ':'], "").replace(' ', "_"))
}

/// A backup's full id: `<rsc>_<backup id>`, with `^<snap>` when the
/// snapshot is not named like the backup (LINSTOR's `toFullBackupId`).
pub(crate) fn full_id(rsc: &str, id: &str, snap: &str) -> String {
    if snap.is_empty() || snap == id { format!("{rsc}_{id}") } else { format!("{rsc}_{id}^{snap}") }
}

fn volume_key(rsc: &str, nr: u32, id: &str, snap: &str) -> String {
    let suffix = if snap.is_empty() || snap == id { String::new() } else { format!("^{snap}") };
    format!("{rsc}_{nr:05}_{id}{suffix}")
}

/// The parts of a `.meta` key (LINSTOR's `S3MetafileNameInfo`): resource,
/// backup id, snapshot. None for other keys.
pub fn parse_meta_key(k: &str) -> Option<(String, String, String)> {
    let stem = k.strip_suffix(".meta")?;
    let (stem, snap) = match stem.split_once('^') {
        Some((a, b)) => (a, Some(b)),
        None => (stem, None),
    };
    let at = stem.rfind("_back_")?;
    let (rsc, id) = (&stem[..at], &stem[at + 1..]);
    let digits = id.strip_prefix("back_")?;
    let ok_id = digits.len() == 15 && digits.as_bytes()[8] == b'_' && digits.chars().filter(|c| *c != '_').all(|c| c.is_ascii_digit());
    let ok_rsc = (2..=48).contains(&rsc.len()) && rsc.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok_id || !ok_rsc {
        return None;
    }
    Some((rsc.to_string(), id.to_string(), snap.filter(|s| !s.is_empty()).unwrap_or(id).to_string()))
}

/// What Cairn reads back from a `.meta` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    node_name: String,
    #[serde(default)]
    start_timestamp: i64,
    #[serde(default)]
    finish_timestamp: i64,
    #[serde(default)]
    based_on: Option<String>,
    #[serde(default)]
    cairn: Option<CairnMeta>,
    /// The source's sealed master key, in a backup of encrypted volumes.
    #[serde(default)]
    luks_info: Option<LuksInfo>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CairnMeta {
    #[serde(default)]
    layer_stack: Vec<String>,
    #[serde(default)]
    chunk_size: u64,
    /// The algorithm of the chunk maps and frames ("sha256" in every
    /// backup before BLAKE3; read so when absent).
    #[serde(default)]
    checksum: Option<String>,
    volumes: BTreeMap<u32, CairnVolume>,
}

impl CairnMeta {
    /// The algorithm of the chunk maps; None: one this version does not know.
    fn checksum(&self) -> Option<Checksum> {
        Checksum::parse(self.checksum.as_deref().unwrap_or("sha256"))
    }

    /// KiB a restore writes of one volume into a thin pool: its chunks
    /// that are not zeros (the rest stays a hole), at most its size.
    fn allocated_kib(&self, v: &CairnVolume) -> i64 {
        let written = v.chunk_map.iter().filter(|h| !h.is_empty()).count() as u64;
        let kib = (written.saturating_mul(self.chunk_size) / 1024) as i64;
        kib.min(v.size_kib)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CairnVolume {
    key: String,
    size_bytes: u64,
    size_kib: i64,
    stor_pool: String,
    stored_bytes: u64,
    #[serde(default)]
    chunk_map: Vec<String>,
    /// An encrypted volume's LUKS passphrase, sealed with the source's
    /// master key.
    #[serde(default)]
    luks_secret: Option<String>,
}

/// One backup found in the bucket.
#[derive(Debug, Clone)]
struct Found {
    meta_key: String,
    rsc: String,
    id: String,
    snap: String,
    meta: Meta,
}

impl Found {
    fn full_id(&self) -> String {
        full_id(&self.rsc, &self.id, &self.snap)
    }

    fn cairn(&self) -> Option<&CairnMeta> {
        self.meta.cairn.as_ref()
    }
}

/// Every backup in the bucket (readable `.meta` objects), and the keys
/// that belong to none.
async fn scan(b: &Bucket, op: i64) -> Result<(Vec<Found>, Vec<String>), ApiError> {
    let objects = b.list("").await.map_err(|e| s3_failed(op, e))?;
    let mut found = Vec::new();
    for o in &objects {
        let Some((rsc, id, snap)) = parse_meta_key(&o.key) else { continue };
        let raw = match b.get(&o.key).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(key = %o.key, "backup metadata unreadable: {e}");
                continue;
            }
        };
        match serde_json::from_slice::<Meta>(&raw) {
            Ok(meta) => found.push(Found { meta_key: o.key.clone(), rsc, id, snap, meta }),
            Err(e) => tracing::warn!(key = %o.key, "backup metadata is not valid: {e}"),
        }
    }
    let used: std::collections::BTreeSet<String> = found
        .iter()
        .flat_map(|f| {
            let mut keys = vec![f.meta_key.clone()];
            keys.extend(f.cairn().into_iter().flat_map(|c| c.volumes.values().map(|v| v.key.clone())));
            keys
        })
        .collect();
    let other = objects.into_iter().map(|o| o.key).filter(|k| !used.contains(k)).collect();
    Ok((found, other))
}

fn time_pair(ms: i64) -> (String, i64) {
    (cairn_api::time::iso8601_utc(ms), ms)
}

fn wire(f: &Found) -> Value {
    let (start, start_ms) = time_pair(f.meta.start_timestamp);
    let (fin, fin_ms) = time_pair(f.meta.finish_timestamp);
    let vlms: Vec<Value> = f
        .cairn()
        .map(|c| {
            c.volumes
                .iter()
                .map(|(nr, v)| json!({"vlm_nr": nr, "finished_time": fin, "finished_timestamp": fin_ms, "s3": {"key": v.key}}))
                .collect()
        })
        .unwrap_or_default();
    let mut b = json!({
        "id": f.full_id(),
        "start_time": start, "start_timestamp": start_ms,
        "finished_time": fin, "finished_timestamp": fin_ms,
        "origin_rsc": f.rsc, "origin_snap": f.snap, "origin_node": f.meta.node_name,
        "vlms": vlms,
        "success": true, "shipping": false,
        // Only Cairn's own format can be restored here.
        "restorable": f.cairn().is_some(),
        "s3": {"meta_name": f.meta_key},
    });
    if let Some(base) = &f.meta.based_on {
        b["based_on_id"] = json!(base.strip_suffix(".meta").unwrap_or(base));
    }
    b
}

pub(crate) fn wire_shipment(s: &Shipment) -> Value {
    let (start, start_ms) = time_pair(s.start_ms);
    let mut b = json!({
        "id": full_id(&s.rsc, &s.id, &s.snap),
        "start_time": start, "start_timestamp": start_ms,
        "origin_rsc": s.rsc, "origin_snap": s.snap, "origin_node": s.node,
        "vlms": [],
        "success": s.done.is_some(), "shipping": s.running(), "restorable": false,
    });
    if let Some((bytes, chunks)) = s.done {
        b["sent_bytes"] = json!(bytes);
        b["sent_chunks"] = json!(chunks);
    }
    if let Some(why) = &s.failed {
        b["fail_messages"] = json!(why);
    }
    if let Some(base) = &s.based_on {
        b["based_on_id"] = json!(base);
    }
    b
}

/// `GET /v1/remotes/{remote}/backups`: LINSTOR's `BackupList`.
async fn list(State(s): State<AppState>, Path(remote): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    const OP: i64 = rc::MASK_BACKUP;
    let q = input::query(q);
    let rsc = q.get("rsc_name").filter(|v| !v.is_empty()).map(key);
    let snap = q.get("snap_name").filter(|v| !v.is_empty()).map(key);
    let wanted = |r: &str, sn: &str| rsc.as_ref().is_none_or(|x| *x == key(r)) && snap.as_ref().is_none_or(|x| *x == key(sn));
    if s.read().remotes.get(&key(&remote)).is_some_and(|r| matches!(r.target, RemoteTarget::Linstor { .. })) {
        // Shipments to another cluster: what this controller remembers.
        let linstor: serde_json::Map<String, Value> = s
            .backups()
            .all()
            .iter()
            .filter(|sh| key(&sh.remote) == key(&remote) && wanted(&sh.rsc, &sh.snap))
            .map(|sh| (full_id(&sh.rsc, &sh.id, &sh.snap), wire_shipment(sh)))
            .collect();
        return Ok(ok(&json!({ "linstor": linstor })));
    }
    let t = target(&s, &remote, OP)?;
    let b = open_bucket(&t, OP)?;
    let (found, other) = scan(&b, OP).await?;
    let mut linstor = serde_json::Map::new();
    for f in found.iter().filter(|f| wanted(&f.rsc, &f.snap)) {
        linstor.insert(f.full_id(), wire(f));
    }
    for sh in s.backups().all().iter().filter(|sh| key(&sh.remote) == key(&remote) && wanted(&sh.rsc, &sh.snap)) {
        linstor.entry(full_id(&sh.rsc, &sh.id, &sh.snap)).or_insert_with(|| wire_shipment(sh));
    }
    let mut out = json!({ "linstor": linstor });
    if !other.is_empty() {
        out["other"] = json!({ "files": other });
    }
    Ok(ok(&out))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateReq {
    rsc_name: String,
    node_name: Option<String>,
    snap_name: Option<String>,
    incremental: bool,
}

/// The newest backup of `rsc` in the bucket whose snapshot still exists
/// on `node` (an incremental is based on it).
fn base_of<'a>(s: &AppState, found: &'a [Found], rsc: &str, node: &str) -> Option<&'a Found> {
    let c = s.read();
    found
        .iter()
        // A chunk map of another chunk size would compare the wrong ranges,
        // one of an algorithm unknown here could not be compared at all.
        .filter(|f| key(&f.rsc) == key(rsc) && f.cairn().is_some_and(|m| m.chunk_size == CHUNK_SIZE && m.checksum().is_some()))
        .filter(|f| c.snapshots.get(&(key(rsc), key(&f.snap))).is_some_and(|d| d.nodes.contains_key(&key(node))))
        .max_by_key(|f| (f.meta.finish_timestamp, f.id.clone()))
}

/// The checksum of a new backup: its base's, so that the chunk maps
/// compare (a chain begun with SHA-256 keeps it until the next full
/// backup); BLAKE3 for a full one.
fn chain_checksum(base: Option<&Found>) -> Checksum {
    base.and_then(Found::cairn).and_then(CairnMeta::checksum).unwrap_or(Checksum::Blake3)
}

/// Where a backup of a definition is taken and read from.
pub(crate) struct Source {
    pub rsc: String,
    pub node: String,
    pub pool: PoolDesired,
    pub layer_stack: Vec<String>,
    /// volume number -> (size in KiB, storage pool)
    pub sizes: BTreeMap<u32, (i64, String)>,
}

/// The diskful replica of `rsc_name` a backup is shipped from (on
/// `node_name` when given; a snapshot-capable pool preferred).
pub(crate) fn source(s: &AppState, rsc_name: &str, node_name: Option<&str>) -> Result<Source, ApiError> {
    let c = s.read();
    let d = c.rsc_dfn(rsc_name, OP_CRT)?;
    let rd_key = key(&d.name);
    let rscs: Vec<_> =
        c.resources_of(&rd_key).filter(|r| !r.is_diskless()).filter(|r| node_name.is_none_or(|n| key(n) == key(&r.node))).collect();
    let Some(r) = rscs.iter().find(|r| r.volumes.values().all(|v| v.provider_kind.supports_snapshots())).or(rscs.first()) else {
        return Err(OpError::new(OP_CRT, rc::FAIL_NOT_FOUND_RSC, format!("Resource '{}' has no diskful replica to back up.", d.name))
            .correction("Name a node that holds the resource with a disk.")
            .into());
    };
    let pool = c.stor_pools.get(&(key(&r.node), key(&r.volumes.values().next().map(|v| v.storage_pool.clone()).unwrap_or_default())));
    let Some(pool) = pool else {
        return Err(OpError::new(OP_CRT, rc::FAIL_NOT_FOUND_STOR_POOL, "The resource's storage pool is gone.").into());
    };
    let pool_desired = PoolDesired {
        name: pool.name.clone(),
        kind: pool.provider_kind,
        backing: ["StorDriver/StorPoolName", "StorDriver/FileDir"].iter().find_map(|k| pool.props.get(*k).cloned()),
    };
    let sizes: BTreeMap<u32, (i64, String)> = c
        .vlm_dfns_of(&key(&d.name))
        .map(|v| (v.volume_number, (v.size_kib, r.volumes.get(&v.volume_number).map(|x| x.storage_pool.clone()).unwrap_or_default())))
        .collect();
    Ok(Source { rsc: d.name.clone(), node: r.node.clone(), pool: pool_desired, layer_stack: r.layer_stack.clone(), sizes })
}

/// Waits until `node` reports snapshot `snap` of `rsc` taken.
pub(crate) async fn wait_taken(s: &AppState, node: &str, rsc: &str, snap: &str) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match s.links().snapshot_state(&key(node), rsc, snap) {
            NodeSnapState::Taken => break,
            NodeSnapState::Failed(why) => {
                return Err(OpError::new(OP_CRT, rc::FAIL_UNKNOWN_ERROR, format!("Snapshot '{snap}' of '{rsc}' failed on '{node}'."))
                    .cause(why)
                    .into());
            }
            NodeSnapState::Pending if tokio::time::Instant::now() > deadline => {
                return Err(OpError::new(
                    OP_CRT,
                    rc::FAIL_UNKNOWN_ERROR,
                    format!("Snapshot '{snap}' of '{rsc}' was not taken on '{node}' in time."),
                )
                .into());
            }
            NodeSnapState::Pending => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(())
}

/// `POST /v1/remotes/{remote}/backups`: takes a snapshot, then ships it in
/// the background; the answer comes once the snapshot is taken.
pub(crate) async fn create(State(s): State<AppState>, Path(remote): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: CreateReq = input::required(&body)?;
    let t = target(&s, &remote, OP_CRT)?;
    let Source { rsc, node, pool, layer_stack, sizes } = source(&s, &req.rsc_name, req.node_name.as_deref())?;
    let now = crate::state::now_ms();
    let id = backup_id(now);
    let snap = req.snap_name.clone().filter(|x| !x.is_empty()).unwrap_or_else(|| id.clone());
    let b = open_bucket(&t, OP_CRT)?;
    let (found, _) = scan(&b, OP_CRT).await?;
    if found.iter().any(|f| key(&f.rsc) == key(&rsc) && f.id == id) || s.backups().all().iter().any(|x| x.rsc == rsc && x.id == id) {
        return Err(OpError::new(
            OP_CRT,
            rc::FAIL_EXISTS_SNAPSHOT_DFN,
            format!("A backup of '{rsc}' was started this second already ({id})."),
        )
        .correction("Wait a second and try again.")
        .into());
    }
    let mut entries = Vec::new();
    let base = if req.incremental { base_of(&s, &found, &rsc, &node) } else { None };
    if req.incremental && base.is_none() {
        entries.push(ApiCallRc::info(
            OP_CRT,
            0,
            format!("No previous backup of '{rsc}' whose snapshot still exists on '{node}': the backup is a full one."),
        ));
    }
    let checksum = chain_checksum(base);
    if let Some(f) = base.filter(|_| checksum != Checksum::Blake3) {
        entries.push(ApiCallRc::info(
            OP_CRT,
            0,
            format!(
                "The backup is based on '{}', whose chunk checksums are {}: it uses {} too (the next full backup starts a chain with BLAKE3, which costs less CPU).",
                f.full_id(),
                checksum.as_str(),
                checksum.as_str()
            ),
        ));
    }
    // The snapshot, taken as a snapshot request would.
    let taken = super::snapshots::take(&s, &rsc, &snap).await?;
    if taken.entries.iter().any(|e| e.is_error()) {
        return Ok(taken);
    }
    entries.extend(taken.entries);
    wait_taken(&s, &node, &rsc, &snap).await?;
    let base_chunks = |nr: u32| base.and_then(|f| f.cairn()).and_then(|c| c.volumes.get(&nr)).map(|v| v.chunk_map.clone());
    let send = BackupSend {
        s3: t,
        pool,
        resource: rsc.clone(),
        snapshot: snap.clone(),
        volumes: sizes
            .keys()
            .map(|nr| BackupVolumeSend { number: *nr, key: volume_key(&rsc, *nr, &id, &snap), base_chunks: base_chunks(*nr) })
            .collect(),
        chunk_size: CHUNK_SIZE,
        base_snapshot: base.map(|f| f.snap.clone()),
        checksum,
    };
    let shipment = Shipment {
        remote: remote.clone(),
        rsc: rsc.clone(),
        snap: snap.clone(),
        id: id.clone(),
        node: node.clone(),
        start_ms: now,
        based_on: base.map(Found::full_id),
        failed: None,
        done: None,
    };
    let details = format!("Backup id: {}; snapshot '{snap}' on node '{node}'.", full_id(&rsc, &id, &snap));
    s.backups().add(shipment.clone());
    let base_meta = base.map(|f| f.meta_key.clone());
    let task_state = s.clone();
    tokio::spawn(async move {
        let s = task_state;
        let result = ship(&s, &b, &node, &send, &shipment, base_meta, &layer_stack, &sizes).await;
        if let Err(why) = &result {
            tracing::warn!(rsc = %shipment.rsc, id = %shipment.id, "backup shipment failed: {why}");
        }
        s.backups().end(&shipment.id, &shipment.remote, result.err());
    });
    entries.push(
        ApiCallRc::success(OP_CRT, 0, format!("Backup shipping of resource '{rsc}' to remote '{remote}' started.")).with_details(details),
    );
    Ok(Reply::new(200, entries))
}

/// The satellite uploads the volumes; then the `.meta` object makes the
/// backup visible (never before every volume object is complete).
#[allow(clippy::too_many_arguments)]
async fn ship(
    s: &AppState,
    b: &Bucket,
    node: &str,
    send: &BackupSend,
    sh: &Shipment,
    base_meta: Option<String>,
    layer_stack: &[String],
    sizes: &BTreeMap<u32, (i64, String)>,
) -> Result<(), String> {
    let body = serde_json::to_vec(send).map_err(|e| e.to_string())?;
    let sent: BackupSent =
        s.links().request(&key(node), PATH_BACKUP_SEND, Some(body), TRANSFER_TIMEOUT).await.map_err(|e| format!("node '{node}': {e}"))?;
    if let Some(e) = sent.error {
        return Err(format!("{} {}", e.message, e.cause.unwrap_or_default()));
    }
    let finish = crate::state::now_ms();
    let luks = layer_stack.iter().any(|l| l.eq_ignore_ascii_case("LUKS"));
    let (cluster_id, snap_uuid, luks_info, luks_secrets) = {
        let c = s.read();
        let cid = c.ctrl_props.get("Cluster/LocalID").cloned().unwrap_or_default();
        let d = c.snapshots.get(&(key(&sh.rsc), key(&sh.snap)));
        let su = d.map(|d| d.uuid.clone()).unwrap_or_default();
        // An encrypted volume's key goes into the metadata as the snapshot
        // holds it (sealed with the master key), with the sealed master
        // key, as LINSTOR's luksInfo.
        let info = if luks { LuksInfo::from_props(&|k| c.ctrl_props.get(k).cloned()) } else { None };
        let secrets: BTreeMap<u32, String> = d
            .and_then(|d| d.nodes.get(&key(node)))
            .map(|n| n.volumes.iter().filter_map(|v| v.luks_secret.clone().map(|x| (v.volume_number, x))).collect())
            .unwrap_or_default();
        (cid, su, info, secrets)
    };
    let mut backups = serde_json::Map::new();
    let mut volumes = serde_json::Map::new();
    for v in &sent.volumes {
        backups.insert(v.number.to_string(), json!([{"name": v.key, "finishedTimestamp": finish, "node": node}]));
        let (size_kib, pool) = sizes.get(&v.number).cloned().unwrap_or_default();
        let mut vol = json!({
            "key": v.key, "sizeBytes": v.size, "sizeKib": size_kib, "storPool": pool,
            "storedBytes": v.stored_bytes, "chunksStored": v.chunks_stored, "chunkMap": v.chunk_map,
        });
        if let Some(secret) = luks_secrets.get(&v.number) {
            vol["luksSecret"] = json!(secret);
        }
        volumes.insert(v.number.to_string(), vol);
    }
    let mut meta = json!({
        "rscName": sh.rsc,
        "nodeName": node,
        "startTimestamp": sh.start_ms,
        "finishTimestamp": finish,
        "basedOn": base_meta,
        "backups": backups,
        "clusterId": cluster_id,
        "snapDfnUuid": snap_uuid,
        "cairn": {"format": 1, "chunkSize": send.chunk_size, "compression": "zstd", "checksum": sent.checksum.as_str(),
                  "layerStack": layer_stack, "volumes": volumes},
    });
    if let Some(info) = luks_info {
        meta["luksInfo"] = serde_json::to_value(info).map_err(|e| e.to_string())?;
    }
    let meta_key = format!("{}.meta", full_id(&sh.rsc, &sh.id, &sh.snap));
    let raw = serde_json::to_vec(&meta).map_err(|e| e.to_string())?;
    b.put(&meta_key, raw).await.map_err(|e| format!("writing {meta_key}: {e}"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InfoReq {
    src_rsc_name: Option<String>,
    src_snap_name: Option<String>,
    last_backup: Option<String>,
    stor_pool_map: BTreeMap<String, String>,
    node_name: Option<String>,
    // restore only
    target_rsc_name: String,
    /// The source cluster's master passphrase, for encrypted volumes of a
    /// backup another cluster made.
    passphrase: Option<String>,
}

/// The backup a restore or info request names, and its chain (full first).
fn chain<'a>(found: &'a [Found], req: &InfoReq, op: i64) -> Result<Vec<&'a Found>, ApiError> {
    let pick = match &req.last_backup {
        Some(id) if !id.is_empty() => found.iter().find(|f| f.full_id() == *id || f.meta_key == *id),
        _ => {
            let rsc = req.src_rsc_name.clone().unwrap_or_default();
            found
                .iter()
                .filter(|f| key(&f.rsc) == key(&rsc))
                .filter(|f| req.src_snap_name.as_ref().filter(|x| !x.is_empty()).is_none_or(|x| key(x) == key(&f.snap)))
                .max_by_key(|f| (f.meta.finish_timestamp, f.id.clone()))
        }
    };
    let Some(mut f) = pick else {
        return Err(OpError::new(op, rc::FAIL_NOT_FOUND_BACKUP, "No backup matches the request.")
            .correction("List the backups of the remote (backup list) and name one.")
            .into());
    };
    let mut out = vec![f];
    while let Some(base) = &f.meta.based_on {
        let Some(b) = found.iter().find(|x| x.meta_key == *base || x.full_id() == *base) else {
            return Err(OpError::new(
                op,
                rc::FAIL_NOT_FOUND_BACKUP,
                format!("Backup '{}' is based on '{base}', which is gone.", f.full_id()),
            )
            .into());
        };
        if out.len() > 10_000 || out.iter().any(|x| x.meta_key == b.meta_key) {
            return Err(OpError::new(op, rc::FAIL_UNKNOWN_ERROR, format!("The chain of backup '{}' loops.", f.full_id())).into());
        }
        out.push(b);
        f = b;
    }
    if let Some(bad) = out.iter().find(|x| x.cairn().is_none()) {
        return Err(OpError::new(op, rc::FAIL_UNKNOWN_ERROR, format!("Backup '{}' was not written by Cairn.", bad.full_id()))
            .cause("Its volume data is in another format.")
            .into());
    }
    out.reverse();
    Ok(out)
}

/// Where each volume goes: its origin pool, or what `stor_pool_map` says.
fn target_pool(req: &InfoReq, origin: &str) -> String {
    req.stor_pool_map.get(origin).cloned().unwrap_or_else(|| origin.to_string())
}

/// `POST /v1/remotes/{remote}/backups/info`: what a restore downloads and
/// needs room for.
async fn info(State(s): State<AppState>, Path(remote): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    const OP: i64 = rc::MASK_BACKUP;
    let req: InfoReq = input::body(&body)?;
    let t = target(&s, &remote, OP)?;
    let b = open_bucket(&t, OP)?;
    let (found, _) = scan(&b, OP).await?;
    let chain = chain(&found, &req, OP)?;
    let (Some(first), Some(last)) = (chain.first(), chain.last()) else { return Err(ApiError::Internal("empty backup chain".into())) };
    let dl: u64 = chain.iter().flat_map(|f| f.cairn().into_iter().flat_map(|c| c.volumes.values().map(|v| v.stored_bytes))).sum();
    let mut pools: BTreeMap<String, (String, Vec<Value>)> = BTreeMap::new();
    let mut alloc = 0i64;
    for (nr, v) in last.cairn().map(|c| c.volumes.iter().collect::<Vec<_>>()).unwrap_or_default() {
        alloc += v.size_kib;
        let dl_v: u64 = chain.iter().filter_map(|f| f.cairn().and_then(|c| c.volumes.get(nr))).map(|x| x.stored_bytes).sum();
        let entry = pools.entry(v.stor_pool.clone()).or_insert_with(|| (target_pool(&req, &v.stor_pool), Vec::new()));
        entry.1.push(json!({
            "name": format!("{}_{nr:05}", last.rsc), "layer_type": "STORAGE",
            "dl_size_kib": dl_v.div_ceil(1024), "alloc_size_kib": v.size_kib, "usable_size_kib": v.size_kib,
        }));
    }
    let node = req.node_name.clone().filter(|n| !n.is_empty());
    let storpools: Vec<Value> = pools
        .into_iter()
        .map(|(name, (to, vlms))| {
            let mut p = json!({"name": name, "target_name": to, "vlms": vlms});
            if let Some(n) = &node {
                if let Some(cap) = s.links().capacity(&key(n), &to) {
                    p["remaining_space_kib"] = json!(cap.free_kib - vlms_alloc(&p));
                }
                if let Some(sp) = s.read().stor_pools.get(&(key(n), key(&to))) {
                    p["provider_kind"] = json!(sp.provider_kind.as_str());
                }
            }
            p
        })
        .collect();
    Ok(ok(&json!({
        "rsc": last.rsc, "full": first.full_id(), "snap": last.snap, "latest": last.full_id(), "count": chain.len(),
        "dl_size_kib": dl.div_ceil(1024), "alloc_size_kib": alloc, "storpools": storpools,
    })))
}

fn vlms_alloc(p: &Value) -> i64 {
    p["vlms"].as_array().map(|v| v.iter().filter_map(|x| x["alloc_size_kib"].as_i64()).sum()).unwrap_or(0)
}

/// `POST /v1/remotes/{remote}/backups/restore`: checks the target first
/// (new definition, node, pool kind and room), then the satellite
/// downloads the chain into a snapshot of the new definition, verifying
/// every chunk, and the resource is restored from it.
async fn restore(State(s): State<AppState>, Path(remote): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: InfoReq = input::required(&body)?;
    let node = req.node_name.clone().unwrap_or_default();
    if req.target_rsc_name.is_empty() || node.is_empty() {
        return Err(OpError::new(OP_CRT, rc::FAIL_INVLD_BACKUP_CONFIG, "A restore needs target_rsc_name and node_name.").into());
    }
    let Some(_restoring) = s.restores().begin(&req.target_rsc_name) else {
        return Err(OpError::new(
            OP_CRT,
            rc::FAIL_EXISTS_RSC_DFN,
            format!("A restore into resource definition '{}' is in progress already.", req.target_rsc_name),
        )
        .cause("Another request restores a backup into this resource definition; this one was refused before it downloaded anything.")
        .correction("Wait for the running restore to end, or restore into another resource definition.")
        .into());
    };
    let t = target(&s, &remote, OP_CRT)?;
    let b = open_bucket(&t, OP_CRT)?;
    let (found, _) = scan(&b, OP_CRT).await?;
    let chain = chain(&found, &req, OP_CRT)?;
    let Some(last) = chain.last() else { return Err(ApiError::Internal("empty backup chain".into())) };
    let Some(cm) = last.cairn() else { return Err(ApiError::Internal("backup without Cairn metadata".into())) };
    // Encrypted volumes: their keys, sealed again with this cluster's
    // master key, checked before anything is written.
    let luks_secrets = if cm.layer_stack.iter().any(|l| l.eq_ignore_ascii_case("LUKS")) {
        let sealed: BTreeMap<u32, Option<String>> = cm.volumes.iter().map(|(nr, v)| (*nr, v.luks_secret.clone())).collect();
        let master = s.links().master();
        backup_keys::reseal(OP_CRT, &last.rsc, last.meta.luks_info.as_ref(), &sealed, req.passphrase.as_deref(), master.as_ref())?
    } else {
        BTreeMap::new()
    };
    let pools: std::collections::BTreeSet<String> = cm.volumes.values().map(|v| target_pool(&req, &v.stor_pool)).collect();
    if pools.len() != 1 {
        return Err(OpError::new(OP_CRT, rc::FAIL_INVLD_BACKUP_CONFIG, "The volumes of a restore go into one storage pool.")
            .correction("Map every origin pool to the same pool (stor_pool_map).")
            .into());
    }
    let pool = pools.into_iter().next().unwrap_or_default();
    let pool_desired = {
        let c = s.read();
        c.check_backup_restore(&req.target_rsc_name, &node, &pool)?;
        let Some(sp) = c.stor_pools.get(&(key(&node), key(&pool))) else { return Err(ApiError::Internal("pool vanished".into())) };
        PoolDesired {
            name: sp.name.clone(),
            kind: sp.provider_kind,
            backing: ["StorDriver/StorPoolName", "StorDriver/FileDir"].iter().find_map(|k| sp.props.get(*k).cloned()),
        }
    };
    // In a thin pool what is written counts, not the size; a thick (ZFS)
    // zvol reserves its whole size.
    let need: i64 = match pool_desired.kind {
        cairn_proto::ProviderKind::Zfs => cm.volumes.values().map(|v| v.size_kib).sum(),
        _ => cm.volumes.values().map(|v| cm.allocated_kib(v)).sum(),
    };
    match s.links().capacity(&key(&node), &pool) {
        Some(cap) if cap.free_kib >= need => {}
        cap => {
            return Err(OpError::new(
                OP_CRT,
                rc::FAIL_NOT_ENOUGH_FREE_SPACE,
                format!("Storage pool '{pool}' on node '{node}' has no room for the backup's {need} KiB."),
            )
            .cause(match cap {
                Some(c) => format!("The pool has {} KiB free.", c.free_kib),
                None => "The pool's free space is not known (is the node online?).".to_string(),
            })
            .correction("Choose another pool (stor_pool_map) or node, or make room.")
            .into());
        }
    }
    let snap = last.snap.clone();
    let plan = BackupRestorePlan {
        target: req.target_rsc_name.clone(),
        snapshot: snap.clone(),
        node: node.clone(),
        pool: pool.clone(),
        layer_stack: if cm.layer_stack.is_empty() { vec!["STORAGE".into()] } else { cm.layer_stack.clone() },
        volumes: cm.volumes.iter().map(|(nr, v)| (*nr, v.size_kib)).collect(),
        source_snap_uuid: None,
        luks_secrets,
    };
    // Everything the registration checks (names, numbers, placement) is
    // checked now, before anything is downloaded.
    // (An encrypted volume's key is the re-sealed one; the dry run only
    // needs the master key's presence, which reseal checked.)
    // The follow-up checks too (the node runs every layer of the stack,
    // LUKS included), or a refused registration would come only after
    // the download.
    let mut dry = cairn_domain::Ctx::deterministic().with_luks(|| Some(String::new()));
    {
        let c = s.read();
        let out = c.restore_backup(&plan, &mut dry)?;
        c.drbd_follow_up(&out, s.links(), &mut dry)?;
    }
    let receive = BackupReceive {
        s3: t,
        pool: pool_desired,
        resource: req.target_rsc_name.clone(),
        snapshot: snap.clone(),
        volumes: cm
            .volumes
            .iter()
            .map(|(nr, v)| BackupVolumeReceive {
                number: *nr,
                keys: chain.iter().filter_map(|f| f.cairn().and_then(|c| c.volumes.get(nr)).map(|x| x.key.clone())).collect(),
                size: v.size_bytes,
            })
            .collect(),
    };
    let body = serde_json::to_vec(&receive).map_err(|e| ApiError::Internal(e.to_string()))?;
    let discard = BackupDiscard {
        pool: receive.pool.clone(),
        resource: receive.resource.clone(),
        snapshot: receive.snapshot.clone(),
        volumes: receive.volumes.iter().map(|v| v.number).collect(),
    };
    let got: BackupReceived = match s.links().request(&key(&node), PATH_BACKUP_RECEIVE, Some(body), TRANSFER_TIMEOUT).await {
        Ok(got) => got,
        Err(e) => {
            // The satellite may still be downloading (or have finished):
            // what it made goes (a satellite that restarted removed it at
            // its start already).
            let removed = discard_restore(&s, &node, &discard).await;
            return Err(OpError::new(OP_CRT, rc::FAIL_NOT_CONNECTED, format!("Node '{node}' could not receive the backup."))
                .cause(format!("{e}; {removed}"))
                .into());
        }
    };
    if let Some(e) = got.error {
        let mut err =
            OpError::new(OP_CRT, rc::FAIL_UNKNOWN_ERROR, e.message).correction("Nothing was restored; the backup object may be damaged.");
        if let Some(c) = e.cause {
            err = err.cause(c);
        }
        return Err(err.into());
    }
    let mut reply = match s.mutate(201, |c, ctx| c.restore_backup(&plan, ctx)).await {
        Ok(reply) => reply,
        Err(e) => {
            // Not registered: what was downloaded must not stay on the node.
            let removed = discard_restore(&s, &node, &discard).await;
            tracing::warn!(rsc = %plan.target, "a restore was downloaded but not registered; {removed}");
            return Err(match e {
                ApiError::Op(op) => {
                    let details = match op.rc.details.clone() {
                        Some(d) => format!("{d} The backup was downloaded before the registration failed: {removed}."),
                        None => format!("The backup was downloaded before the registration failed: {removed}."),
                    };
                    ApiError::Op(op.details(details))
                }
                // (The database or a task failed: its text, and what
                // became of the download.)
                other => {
                    let code = if matches!(other, ApiError::Store(_)) { rc::FAIL_SQL } else { rc::FAIL_UNKNOWN_ERROR };
                    tracing::error!(rsc = %plan.target, "registering a restore failed: {other}");
                    ApiError::Op(
                        OpError::new(OP_CRT, code, format!("The restore into '{}' could not be registered.", plan.target))
                            .cause(other.to_string())
                            .details(format!("The backup was downloaded before the registration failed: {removed}.")),
                    )
                }
            });
        }
    };
    reply.entries.push(ApiCallRc::success(
        OP_CRT,
        0,
        format!("Backup '{}' restored into '{}' ({} backups applied).", last.full_id(), plan.target, chain.len()),
    ));
    Ok(reply)
}

/// Has `node` remove what a restore downloaded; says how that went.
async fn discard_restore(s: &AppState, node: &str, discard: &BackupDiscard) -> String {
    let body = match serde_json::to_vec(discard) {
        Ok(b) => b,
        Err(e) => return format!("what was downloaded could not be removed: {e}"),
    };
    match s.links().request::<BackupReceived>(&key(node), PATH_BACKUP_DISCARD, Some(body), Duration::from_secs(180)).await {
        Ok(BackupReceived { error: None }) => format!("what node '{node}' downloaded was removed"),
        Ok(BackupReceived { error: Some(e) }) => {
            format!("node '{node}' could not remove what it downloaded: {}", e.cause.unwrap_or(e.message))
        }
        Err(e) => format!("node '{node}' could not be asked to remove anything it may have downloaded: {e}"),
    }
}

/// `DELETE /v1/remotes/{remote}/backups`: by id, id prefix, time,
/// resource or node; `cascading` takes the incrementals based on them
/// too, otherwise a backup others depend on is refused.
pub(crate) async fn remove(State(s): State<AppState>, Path(remote): Path<String>, RawQuery(q): RawQuery) -> Result<Reply, ApiError> {
    const OP: i64 = rc::MASK_DEL | rc::MASK_BACKUP;
    let q = input::query(q);
    let flag = |k: &str| q.get(k).is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true"));
    let t = target(&s, &remote, OP)?;
    let b = open_bucket(&t, OP)?;
    let (found, _) = scan(&b, OP).await?;
    let before = match q.get("timestamp").filter(|v| !v.is_empty()) {
        Some(ts) => Some(parse_timestamp(ts).ok_or_else(|| {
            ApiError::from(
                OpError::new(OP, rc::FAIL_INVLD_BACKUP_CONFIG, format!("The timestamp '{ts}' is not understood."))
                    .correction("Give YYYYMMDD_HHMMSS (UTC) or milliseconds since the epoch."),
            )
        })?),
        None => None,
    };
    let id = q.get("id").filter(|v| !v.is_empty());
    let prefix = q.get("id_prefix").filter(|v| !v.is_empty());
    let rsc = q.get("resource_name").filter(|v| !v.is_empty()).map(key);
    let node = q.get("node_name").filter(|v| !v.is_empty()).map(key);
    let all = flag("all");
    if id.is_none() && prefix.is_none() && before.is_none() && rsc.is_none() && node.is_none() && !all {
        return Err(OpError::new(OP, rc::FAIL_INVLD_BACKUP_CONFIG, "Say which backups to delete.")
            .correction("Give id, id_prefix, timestamp, resource_name, node_name or all.")
            .into());
    }
    let selected: Vec<&Found> = found
        .iter()
        .filter(|f| {
            all || (id.is_none_or(|i| f.full_id() == i)
                && prefix.is_none_or(|p| f.full_id().starts_with(p))
                && before.is_none_or(|ts| f.meta.start_timestamp < ts)
                && rsc.as_ref().is_none_or(|r| *r == key(&f.rsc))
                && node.as_ref().is_none_or(|n| *n == key(&f.meta.node_name)))
        })
        .collect();
    if selected.is_empty() {
        return Err(OpError::new(OP, rc::FAIL_NOT_FOUND_BACKUP, "No backup matches.").into());
    }
    // Dependants: backups based (directly or not) on a selected one.
    let mut doomed: Vec<&Found> = selected.clone();
    loop {
        let more: Vec<&Found> = found
            .iter()
            .filter(|f| !doomed.iter().any(|d| d.meta_key == f.meta_key))
            .filter(|f| f.meta.based_on.as_ref().is_some_and(|base| doomed.iter().any(|d| d.meta_key == *base)))
            .collect();
        if more.is_empty() {
            break;
        }
        if !flag("cascading") {
            return Err(OpError::new(
                OP,
                rc::FAIL_IN_USE,
                format!("Backup '{}' is the base of '{}'.", more[0].meta.based_on.clone().unwrap_or_default(), more[0].full_id()),
            )
            .correction("Delete with cascading to take the dependent incremental backups too.")
            .into());
        }
        doomed.extend(more);
    }
    let dry = flag("dryrun");
    let mut entries = Vec::new();
    for f in &doomed {
        if !dry {
            // The metadata first: a half-deleted backup is never listed.
            b.delete(&f.meta_key).await.map_err(|e| s3_failed(OP, e))?;
            for v in f.cairn().into_iter().flat_map(|c| c.volumes.values()) {
                b.delete(&v.key).await.map_err(|e| s3_failed(OP, e))?;
            }
        }
        let verb = if dry { "would be deleted" } else { "deleted" };
        entries.push(ApiCallRc::success(OP, 0, format!("Backup '{}' {verb}.", f.full_id())));
    }
    Ok(Reply::new(200, entries))
}

/// The full backups of `rsc` in the remote's bucket, oldest first: full
/// id and start time (the scheduler's `keep_remote`).
pub(crate) async fn full_backups(s: &AppState, remote: &str, rsc: &str) -> Result<Vec<(String, i64)>, ApiError> {
    const OP: i64 = rc::MASK_DEL | rc::MASK_BACKUP;
    let b = open_bucket(&target(s, remote, OP)?, OP)?;
    let (found, _) = scan(&b, OP).await?;
    let mut fulls: Vec<(String, i64)> = found
        .iter()
        .filter(|f| key(&f.rsc) == key(rsc) && f.meta.based_on.is_none())
        .map(|f| (f.full_id(), f.meta.start_timestamp))
        .collect();
    fulls.sort_by_key(|(id, ts)| (*ts, id.clone()));
    Ok(fulls)
}

/// `YYYYMMDD_HHMMSS` (LINSTOR's form, UTC) or epoch milliseconds.
fn parse_timestamp(ts: &str) -> Option<i64> {
    if let Ok(ms) = ts.parse::<i64>() {
        return Some(ms);
    }
    let (d, t) = ts.split_once('_')?;
    if d.len() != 8 || t.len() != 6 {
        return None;
    }
    let n = |s: &str| s.parse::<u32>().ok();
    let month = time::Month::try_from(n(&d[4..6])? as u8).ok()?;
    let date = time::Date::from_calendar_date(n(&d[..4])? as i32, month, n(&d[6..8])? as u8).ok()?;
    let at = time::Time::from_hms(n(&t[..2])? as u8, n(&t[2..4])? as u8, n(&t[4..6])? as u8).ok()?;
    let dt = time::PrimitiveDateTime::new(date, at).assume_utc();
    Some((dt.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AbortReq {
    rsc_name: String,
    snapshot: Option<String>,
}

/// `POST /v1/remotes/{remote}/backups/abort`: the satellite stops the
/// upload (its multipart upload is aborted, no object appears) and the
/// shipment shows as failed.
async fn abort(State(s): State<AppState>, Path(remote): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    const OP: i64 = rc::MASK_DEL | rc::MASK_BACKUP;
    let req: AbortReq = input::required(&body)?;
    let running: Vec<Shipment> = s
        .backups()
        .all()
        .into_iter()
        .filter(|x| x.running() && key(&x.remote) == key(&remote) && key(&x.rsc) == key(&req.rsc_name))
        .filter(|x| req.snapshot.as_ref().is_none_or(|sn| key(sn) == key(&x.snap)))
        .collect();
    if running.is_empty() {
        return Ok(Reply::new(
            200,
            vec![ApiCallRc::warning(OP, rc::WARN_NOT_FOUND, format!("No shipment of '{}' to '{remote}' is running.", req.rsc_name))],
        ));
    }
    let mut entries = Vec::new();
    for sh in running {
        let body = serde_json::to_vec(&BackupAbort { resource: sh.rsc.clone(), snapshot: Some(sh.snap.clone()) })
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        match s.links().request::<usize>(&key(&sh.node), PATH_BACKUP_ABORT, Some(body), Duration::from_secs(30)).await {
            Ok(_) => {
                entries.push(ApiCallRc::success(OP, 0, format!("Shipment of backup '{}' aborted.", full_id(&sh.rsc, &sh.id, &sh.snap))))
            }
            Err(e) => entries.push(
                ApiCallRc::error(OP, rc::FAIL_NOT_CONNECTED, format!("Node '{}' could not be told to abort the shipment.", sh.node))
                    .with_cause(e.to_string()),
            ),
        }
    }
    Ok(Reply::new(rc::status_for(&entries, 200), entries))
}

/// `GET /v1/view/backup/queue`: the shipments running now, per snapshot (or per node
/// with `snap_to_node`), as LINSTOR's `BackupQueues`.
async fn queue(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    let by_node = q.get("snap_to_node").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let running: Vec<Shipment> = s.backups().all().into_iter().filter(Shipment::running).collect();
    let snap_entry = |x: &Shipment| {
        let mut e = json!({
            "resource_name": x.rsc, "snapshot_name": x.snap, "remote_name": x.remote,
            "incremental": x.based_on.is_some(), "start_timestamp": x.start_ms, "pref_node": x.node,
        });
        if let Some(b) = &x.based_on {
            e["based_on"] = json!(b);
        }
        e
    };
    if by_node {
        let mut nodes: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for x in &running {
            nodes.entry(x.node.clone()).or_default().push(snap_entry(x));
        }
        let list: Vec<Value> = nodes.into_iter().map(|(n, q)| json!({"node_name": n, "queue": q})).collect();
        return Ok(ok(&json!({ "node_queues": list })));
    }
    let list: Vec<Value> = running
        .iter()
        .map(|x| {
            let mut e = snap_entry(x);
            e["queue"] = json!([{"node_name": x.node}]);
            e
        })
        .collect();
    Ok(ok(&json!({ "snap_queues": list })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_ids_and_keys_follow_linstors_names() {
        // 2026-11-26 17:05:09 UTC
        assert_eq!(backup_id(1_795_712_709_000), "back_20261126_170509");
        assert_eq!(full_id("rsc", "back_20261126_170509", "back_20261126_170509"), "rsc_back_20261126_170509");
        assert_eq!(full_id("rsc", "back_20261126_170509", "s1"), "rsc_back_20261126_170509^s1");
        assert_eq!(volume_key("rsc", 3, "back_20261126_170509", "s1"), "rsc_00003_back_20261126_170509^s1");
        assert_eq!(
            parse_meta_key("my_rsc_back_20261126_170509^s1.meta"),
            Some(("my_rsc".into(), "back_20261126_170509".into(), "s1".into()))
        );
        assert_eq!(
            parse_meta_key("rsc_back_20261126_170509.meta"),
            Some(("rsc".into(), "back_20261126_170509".into(), "back_20261126_170509".into()))
        );
        assert_eq!(parse_meta_key("rsc_00000_back_20261126_170509"), None);
        assert_eq!(parse_meta_key("rsc_back_2026112_170509.meta"), None);
        assert_eq!(parse_meta_key("x_back_20261126_170509.meta"), None);
    }

    fn found(checksum: Option<&str>) -> Found {
        let mut cairn = json!({"chunkSize": CHUNK_SIZE, "volumes": {}});
        if let Some(c) = checksum {
            cairn["checksum"] = json!(c);
        }
        let meta = serde_json::from_value(json!({"rscName": "r", "cairn": cairn})).expect("meta");
        Found { meta_key: "r_back_20261126_170509.meta".into(), rsc: "r".into(), id: "back_20261126_170509".into(), snap: "s".into(), meta }
    }

    #[test]
    fn an_incremental_keeps_its_chains_checksum_and_a_full_backup_takes_blake3() {
        assert_eq!(chain_checksum(None), Checksum::Blake3);
        assert_eq!(chain_checksum(Some(&found(Some("sha256")))), Checksum::Sha256);
        assert_eq!(chain_checksum(Some(&found(None))), Checksum::Sha256);
        assert_eq!(chain_checksum(Some(&found(Some("blake3")))), Checksum::Blake3);
        // An algorithm this version does not know is no base at all.
        assert_eq!(found(Some("md5")).cairn().and_then(CairnMeta::checksum), None);
    }

    #[test]
    fn timestamps_are_linstors_form_or_milliseconds() {
        assert_eq!(parse_timestamp("20261126_170509"), Some(1_795_712_709_000));
        assert_eq!(parse_timestamp("1795712709000"), Some(1_795_712_709_000));
        assert_eq!(parse_timestamp("2026-11-26"), None);
        assert_eq!(parse_timestamp("20261326_170509"), None);
    }

    #[test]
    fn a_second_restore_into_a_target_is_refused_while_the_first_runs() {
        let r = Restores::default();
        let first = r.begin("Dst").expect("the first claims it");
        assert!(r.begin("dst").is_none(), "names compare without case");
        let other = r.begin("other").expect("another target");
        drop(first);
        assert!(r.begin("DST").is_some(), "free once the first ended");
        drop(other);
    }
}
