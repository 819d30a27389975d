//! Backups to S3: a snapshot's volumes uploaded as chunked, compressed,
//! checksummed objects, and downloaded again into a snapshot to restore
//! from. The format is described in docs/BACKUP-FORMAT.md.
//!
//! Memory stays bounded: a few chunks at a time (see [`pipeline_depth`])
//! are read, hashed and compressed on the blocking pool and join the parts
//! in their order; parts of a multipart upload are sent as soon as they
//! reach [`PART_SIZE`]; a download is parsed frame by frame as it arrives,
//! a few frames at a time decompressed, verified and written in place.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_proto::{
    BackupDiscard, BackupReceive, BackupSend, BackupSent, BackupVolumeReceive, BackupVolumeSend, BackupVolumeSent, Checksum, ObjectError,
    PoolDesired, ProviderKind, S3Target,
};
use cairn_s3::{Bucket, S3Config};
use cairn_storage::Name;
use cairn_storage::file::{FilePool, Files};
use cairn_storage::provider::{Provider, Tools};
use futures_util::StreamExt;

use crate::inflight::{Inflight, Placing};

/// Start of every backup object.
pub const MAGIC: &[u8; 8] = b"CAIRNBK1";
/// Start of a chunk frame whose checksum is SHA-256 (every backup before
/// BLAKE3, and shipments to another cluster).
const FRAME: &[u8; 4] = b"CHNK";
/// Start of a chunk frame whose checksum is BLAKE3.
const FRAME_B3: &[u8; 4] = b"CHB3";
/// Start of the trailer that closes an object.
const TRAILER: &[u8; 4] = b"CEND";
/// Object header: magic, chunk size, volume size.
const HEADER_LEN: usize = 8 + 8 + 8;
/// Frame header: tag, chunk index, raw length, compressed length, checksum
/// (32 bytes: SHA-256 or BLAKE3, as the tag says).
const FRAME_HEAD_LEN: usize = 4 + 8 + 4 + 4 + 32;
/// Trailer: tag, number of frames.
const TRAILER_LEN: usize = 4 + 8;
/// Parts of a multipart upload (S3 wants at least 5 MiB but the last).
pub const PART_SIZE: usize = 8 << 20;
/// The largest chunk a backup may declare (bounds what a download buffers).
pub const MAX_CHUNK: u64 = 64 << 20;
/// zstd's level: fast, still a good ratio for block data.
const LEVEL: i32 = 3;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    S3(cairn_s3::S3Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("backups of {0} pools are not supported")]
    Provider(String),
    #[error(transparent)]
    Storage(#[from] cairn_storage::StorageError),
    #[error("the backup object '{key}' is damaged: {why}")]
    Corrupt { key: String, why: String },
    #[error("the transfer was aborted")]
    Aborted,
    #[error("a transfer of snapshot '{snapshot}' of '{resource}' is running on this node already")]
    Busy { resource: String, snapshot: String },
}

impl From<cairn_s3::S3Error> for BackupError {
    /// An upload stopped by its transfer's abort flag is the abort.
    fn from(e: cairn_s3::S3Error) -> BackupError {
        match e {
            cairn_s3::S3Error::Stopped => BackupError::Aborted,
            e => BackupError::S3(e),
        }
    }
}

/// The provider of the pool a backup reads from or restores into.
pub(crate) fn provider(tools: &Tools, p: &PoolDesired) -> Result<Arc<dyn Provider>, BackupError> {
    cairn_storage::provider::resolve(tools, p).map_err(|e| match e {
        cairn_storage::provider::ResolveError::Backing(e) => BackupError::Storage(e),
        cairn_storage::provider::ResolveError::NotImplemented(k) => BackupError::Provider(k.as_str().to_string()),
    })
}

/// Which chunks of a volume of `size` bytes the byte ranges touch.
pub(crate) fn chunks_touched(ranges: &[(u64, u64)], chunk_size: u64, size: u64) -> Vec<bool> {
    let n = size.div_ceil(chunk_size) as usize;
    let mut touched = vec![false; n];
    for (off, len) in ranges.iter().filter(|(_, l)| *l > 0) {
        let (first, last) = ((off / chunk_size) as usize, ((off + len - 1) / chunk_size) as usize);
        for t in touched.iter_mut().take(last.saturating_add(1)).skip(first) {
            *t = true;
        }
    }
    touched
}

/// The chunks to read for an incremental: those written, and those only
/// freed where the base's chunk was not all zeros (`""` in its chunk map):
/// a chunk of zeros freed again stays zeros.
fn delta_chunks(d: &cairn_storage::provider::Delta, chunk_size: u64, size: u64, base: &[String]) -> Vec<bool> {
    let written = chunks_touched(&d.written, chunk_size, size);
    let freed = chunks_touched(&d.freed, chunk_size, size);
    written.iter().zip(&freed).enumerate().map(|(i, (w, f))| *w || (*f && base.get(i).is_none_or(|h| !h.is_empty()))).collect()
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// The running transfers of this node, by (resource, snapshot): each has
/// a flag that an abort raises.
#[derive(Default)]
pub struct Transfers {
    running: parking_lot::Mutex<HashMap<(String, String), Arc<AtomicBool>>>,
}

/// A registered transfer; unregistered when dropped.
pub(crate) struct Running<'a> {
    transfers: &'a Transfers,
    id: (String, String),
    stop: Arc<AtomicBool>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.transfers.running.lock().remove(&self.id);
    }
}

impl Running<'_> {
    pub(crate) fn check(&self) -> Result<(), BackupError> {
        if self.stop.load(Ordering::Relaxed) { Err(BackupError::Aborted) } else { Ok(()) }
    }

    /// The abort flag, for work that waits elsewhere (an S3 upload's
    /// parts in flight).
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }
}

impl Transfers {
    /// Registers a transfer of snapshot `snap` of `rsc`; refused while
    /// another of the same runs (a client's retry): both would write the
    /// same places, and an abort or discard by these names would hit both.
    pub(crate) fn start(&self, rsc: &str, snap: &str) -> Result<Running<'_>, BackupError> {
        self.start_with(rsc, snap, Arc::new(AtomicBool::new(false)))
    }

    /// [`Transfers::start`] with an abort flag made before: one raised
    /// before the transfer registered (its task had not run yet) stops it
    /// at its first check.
    pub(crate) fn start_with(&self, rsc: &str, snap: &str, stop: Arc<AtomicBool>) -> Result<Running<'_>, BackupError> {
        let id = (rsc.to_string(), snap.to_string());
        let mut running = self.running.lock();
        if running.contains_key(&id) {
            return Err(BackupError::Busy { resource: id.0, snapshot: id.1 });
        }
        running.insert(id.clone(), stop.clone());
        Ok(Running { transfers: self, id, stop })
    }

    /// Raises the abort flag of the transfers of `rsc` (of one snapshot,
    /// or all); how many were running.
    pub fn abort(&self, rsc: &str, snap: Option<&str>) -> usize {
        let running = self.running.lock();
        let mut n = 0;
        for ((r, s), stop) in running.iter() {
            if r == rsc && snap.is_none_or(|x| x == s) {
                stop.store(true, Ordering::Relaxed);
                n += 1;
            }
        }
        n
    }
}

fn bucket(t: &S3Target) -> Result<Bucket, BackupError> {
    Ok(Bucket::open(&S3Config {
        endpoint: t.endpoint.clone(),
        bucket: t.bucket.clone(),
        region: t.region.clone(),
        access_key: t.access_key.0.clone(),
        secret_key: t.secret_key.0.clone(),
        path_style: t.path_style,
    })?)
}

/// Where the snapshots of a pool are: FILE and FILE_THIN keep each as a
/// file (LVM_THIN would name its snapshot volume's device here).
pub(crate) fn file_pool(p: &PoolDesired) -> Result<FilePool, BackupError> {
    match (p.kind, p.backing.as_deref()) {
        (ProviderKind::File | ProviderKind::FileThin, Some(dir)) => Ok(FilePool::new(&p.name, dir, p.kind == ProviderKind::FileThin)?),
        (k, _) => Err(BackupError::Provider(k.as_str().to_string())),
    }
}

/// Whether a chunk is all zeros, compared a page at a time (memcmp), not
/// byte by byte.
pub(crate) fn is_zero(data: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    data.chunks(ZEROS.len()).all(|page| page == &ZEROS[..page.len()])
}

/// The checksum of a chunk: SHA-256 (ring), or BLAKE3 (the `blake3`
/// crate, several GB/s per core with AVX2 where SHA-256 without the CPU's
/// SHA extensions runs at about 340 MB/s).
fn digest(algo: Checksum, data: &[u8]) -> [u8; 32] {
    match algo {
        Checksum::Sha256 => {
            let mut sum = [0u8; 32];
            sum.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
            sum
        }
        Checksum::Blake3 => *blake3::hash(data).as_bytes(),
    }
}

/// The checksum of a chunk, hex; the empty string for a chunk of zeros
/// (which a full backup leaves out: a restored volume starts out zeroed).
pub fn chunk_hash(data: &[u8], algo: Checksum) -> String {
    if is_zero(data) { String::new() } else { hex(&digest(algo, data)) }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The object header.
pub fn header(chunk_size: u64, volume_size: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&chunk_size.to_be_bytes());
    h.extend_from_slice(&volume_size.to_be_bytes());
    h
}

/// One chunk as a frame: its header (tagged with the algorithm, with the
/// checksum of the raw data) followed by the zstd-compressed data.
pub fn frame(index: u64, raw: &[u8], algo: Checksum) -> Result<Vec<u8>, BackupError> {
    frame_with(index, raw, algo, &digest(algo, raw))
}

/// [`frame`] with the chunk's checksum already computed.
fn frame_with(index: u64, raw: &[u8], algo: Checksum, sum: &[u8; 32]) -> Result<Vec<u8>, BackupError> {
    let packed = zstd::bulk::compress(raw, LEVEL).map_err(io("compress a chunk"))?;
    let mut f = Vec::with_capacity(FRAME_HEAD_LEN + packed.len());
    f.extend_from_slice(match algo {
        Checksum::Sha256 => FRAME,
        Checksum::Blake3 => FRAME_B3,
    });
    f.extend_from_slice(&index.to_be_bytes());
    f.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    f.extend_from_slice(&(packed.len() as u32).to_be_bytes());
    f.extend_from_slice(sum);
    f.extend_from_slice(&packed);
    Ok(f)
}

/// One chunk of a snapshot made ready for the bucket: its entry in the
/// chunk map, and its frame when the backup stores it.
pub(crate) struct Sealed {
    pub(crate) hash: String,
    pub(crate) frame: Option<Vec<u8>>,
}

/// Hashes a chunk once (for the chunk map and the frame both) and frames
/// it when the backup stores it: a full backup (`base` None) every chunk
/// that is not zeros, an incremental one every chunk whose hash differs
/// from the base's entry (`base` Some(None): the base had no such chunk),
/// zeros included. `algo` is the chunk map's (the base's, for an
/// incremental) and the frame's.
pub(crate) fn seal(index: u64, raw: &[u8], base: Option<Option<&str>>, algo: Checksum) -> Result<Sealed, BackupError> {
    let zero = is_zero(raw);
    let sum = if zero { None } else { Some(digest(algo, raw)) };
    let hash = sum.as_ref().map(|s| hex(s)).unwrap_or_default();
    let wanted = match base {
        Some(b) => b != Some(hash.as_str()),
        None => !zero,
    };
    let frame = if wanted { Some(frame_with(index, raw, algo, &sum.unwrap_or_else(|| digest(algo, raw)))?) } else { None };
    Ok(Sealed { hash, frame })
}

/// How many chunks one transfer compresses (or decompresses) at once on
/// the blocking pool: two per core, so a core finding its next chunk ready
/// never waits, at most 8 and at most 64 MiB of chunks.
pub(crate) fn pipeline_depth(chunk_size: u64) -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let by_memory = ((64u64 << 20) / chunk_size.max(1)) as usize;
    (cores * 2).min(8).min(by_memory).max(2)
}

/// Blocking jobs (reading, hashing, compressing; decompressing, checking,
/// writing) run on tokio's blocking pool, up to `depth` at once, their
/// results handed back in the order the jobs were started: the transfer
/// uses every core while its output keeps the order of the chunks.
pub(crate) struct Ordered<T> {
    pub(crate) depth: usize,
    jobs: VecDeque<tokio::task::JoinHandle<Result<T, BackupError>>>,
}

impl<T: Send + 'static> Ordered<T> {
    pub(crate) fn new(depth: usize) -> Ordered<T> {
        Ordered { depth: depth.max(1), jobs: VecDeque::new() }
    }

    /// Starts `job`. With `depth` jobs running it first waits for the
    /// oldest and returns its result; its failure is returned instead and
    /// `job` is not started.
    pub(crate) async fn push<F>(&mut self, job: F) -> Result<Option<T>, BackupError>
    where
        F: FnOnce() -> Result<T, BackupError> + Send + 'static,
    {
        let oldest = if self.jobs.len() >= self.depth { self.next().await.transpose()? } else { None };
        self.jobs.push_back(tokio::task::spawn_blocking(job));
        Ok(oldest)
    }

    /// The result of the oldest job still unclaimed (None: there is none).
    pub(crate) async fn next(&mut self) -> Option<Result<T, BackupError>> {
        let job = self.jobs.pop_front()?;
        Some(job.await.unwrap_or_else(|e| Err(BackupError::Io { what: "a chunk worker ended".into(), source: std::io::Error::other(e) })))
    }

    /// Waits for every job still running, dropping their results: after a
    /// failure, so that none writes after the transfer ended.
    pub(crate) async fn settle(&mut self) {
        while self.next().await.is_some() {}
    }
}

/// The trailer: how many frames the object has.
pub fn trailer(frames: u64) -> Vec<u8> {
    let mut t = Vec::with_capacity(TRAILER_LEN);
    t.extend_from_slice(TRAILER);
    t.extend_from_slice(&frames.to_be_bytes());
    t
}

/// Uploads every volume of the request; the first failure ends it (the
/// unfinished multipart upload is aborted, so no object appears). The
/// pool's provider opens each snapshot for reading and, for an
/// incremental, says which byte ranges changed since the base snapshot
/// where it knows (LVM_THIN, ZFS); only the chunks they touch are read.
pub async fn send(transfers: &Transfers, tools: &Tools, req: &BackupSend) -> BackupSent {
    let mut out = BackupSent { checksum: req.checksum, ..Default::default() };
    let result = async {
        let running = transfers.start(&req.resource, &req.snapshot)?;
        let b = bucket(&req.s3)?;
        let provider = provider(tools, &req.pool)?;
        let (rsc, snap) = (Name::new(&req.resource)?, Name::new(&req.snapshot)?);
        let base = req.base_snapshot.as_deref().map(Name::new).transpose()?;
        let chunk_size = req.chunk_size.clamp(4096, MAX_CHUNK);
        for v in &req.volumes {
            let data = provider.snapshot_open(&rsc, v.number, &snap).await?;
            let sent = async {
                let changed = match (&base, &v.base_chunks) {
                    (Some(base), Some(_)) => provider.snapshot_delta(&rsc, v.number, base, &snap).await?,
                    _ => None,
                };
                let only = changed.map(|d| delta_chunks(&d, chunk_size, data.size, v.base_chunks.as_deref().unwrap_or_default()));
                if let (Some(o), Some(base_map), Some(base)) = (&only, &v.base_chunks, &base) {
                    let read = o.iter().enumerate().filter(|(i, t)| **t || *i >= base_map.len()).count();
                    tracing::info!(resource = %req.resource, "incremental backup of volume {}: read {read} of {} chunks (the rest are unchanged since snapshot '{base}')", v.number, o.len());
                }
                send_volume(&b, Path::new(&data.path), data.size, v, req, only.as_deref(), &running).await
            }
            .await;
            if let Err(e) = provider.snapshot_close(&rsc, v.number, &snap).await {
                tracing::warn!(resource = %req.resource, snapshot = %req.snapshot, "could not close the snapshot after reading it: {e}");
            }
            out.volumes.push(sent?);
        }
        Ok::<(), BackupError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(resource = %req.resource, snapshot = %req.snapshot, "backup upload failed: {e}");
        out.error = Some(ObjectError {
            message: format!("Uploading snapshot '{}' of '{}' failed.", req.snapshot, req.resource),
            cause: Some(e.to_string()),
            details: None,
        });
    }
    out
}

/// Uploads one volume of `size` bytes read from `path`; with `only`, an
/// incremental reads just the chunks marked there and takes the base's
/// hashes for the rest. Chunk size and checksum are the request's.
async fn send_volume(
    b: &Bucket,
    path: &Path,
    size: u64,
    v: &BackupVolumeSend,
    req: &BackupSend,
    only: Option<&[bool]>,
    running: &Running<'_>,
) -> Result<BackupVolumeSent, BackupError> {
    let (chunk_size, algo) = (req.chunk_size.clamp(4096, MAX_CHUNK), req.checksum);
    let file = tokio::fs::File::open(path).await.map_err(io(format!("open the snapshot {}", path.display())))?;
    let file = Arc::new(file.into_std().await);
    let base = v.base_chunks.clone().map(Arc::new);
    let mut work = Ordered::new(pipeline_depth(chunk_size));
    let mut upload = b.upload(&v.key).await?.stop_when(running.flag());
    let result = async {
        let mut part = header(chunk_size, size);
        let mut sent = BackupVolumeSent { number: v.number, key: v.key.clone(), size, ..Default::default() };
        // Chunks are read, hashed and compressed several at a time on the
        // blocking pool; they join the parts in their order.
        for index in 0..size.div_ceil(chunk_size) {
            running.check()?;
            let (file, base, path) = (file.clone(), base.clone(), path.to_path_buf());
            let offset = index * chunk_size;
            let len = (size - offset).min(chunk_size) as usize;
            // Unchanged since the base (the provider says so): the base's
            // hash, nothing read. Still a job, so the chunk map stays in
            // chunk order.
            let unchanged = only.is_some_and(|o| o.get(index as usize) == Some(&false));
            let kept = if unchanged { v.base_chunks.as_ref().and_then(|b| b.get(index as usize)).cloned() } else { None };
            let job = move || {
                if let Some(hash) = kept {
                    return Ok(Sealed { hash, frame: None });
                }
                let mut raw = vec![0u8; len];
                file.read_exact_at(&mut raw, offset).map_err(io(format!("read {}", path.display())))?;
                seal(index, &raw, base.as_ref().map(|b| b.get(index as usize).map(String::as_str)), algo)
            };
            if let Some(done) = work.push(job).await? {
                stow(done, &mut part, &mut sent, &mut upload).await?;
            }
        }
        while let Some(done) = work.next().await {
            stow(done?, &mut part, &mut sent, &mut upload).await?;
        }
        part.extend_from_slice(&trailer(sent.chunks_stored));
        sent.stored_bytes += part.len() as u64;
        upload.part(part).await?;
        Ok::<_, BackupError>(sent)
    }
    .await;
    match result {
        Ok(sent) => {
            upload.finish().await?;
            Ok(sent)
        }
        Err(e) => {
            work.settle().await;
            if let Err(abort) = upload.abort().await {
                tracing::warn!(key = %v.key, "could not abort the multipart upload: {abort}");
            }
            Err(e)
        }
    }
}

/// Adds a sealed chunk to the chunk map and its frame to the part being
/// filled, and hands the part to the upload once it is full.
async fn stow(done: Sealed, part: &mut Vec<u8>, sent: &mut BackupVolumeSent, upload: &mut cairn_s3::Upload<'_>) -> Result<(), BackupError> {
    if let Some(f) = done.frame {
        part.extend_from_slice(&f);
        sent.chunks_stored += 1;
    }
    sent.chunk_map.push(done.hash);
    if part.len() >= PART_SIZE {
        sent.stored_bytes += part.len() as u64;
        upload.part(std::mem::take(part)).await?;
    }
    Ok(())
}

/// Reads frames out of a byte stream as it arrives.
pub(crate) struct Frames {
    key: String,
    pub(crate) buf: Vec<u8>,
    pub(crate) chunk_size: u64,
    pub(crate) volume_size: u64,
    frames: u64,
    /// The index the next frame must reach at least (frames come in
    /// increasing chunk order, so no two write the same chunk).
    next_index: u64,
    header: bool,
    pub(crate) ended: bool,
    /// Bytes after the trailer belong to what follows (a stream of
    /// several volumes), not an error.
    pub(crate) rest_follows: bool,
}

/// One decoded, verified chunk.
pub(crate) struct Chunk {
    pub(crate) index: u64,
    pub(crate) data: Vec<u8>,
}

/// One frame as read, not yet decompressed nor verified ([`Packed::open`]
/// does both, on any thread).
pub(crate) struct Packed {
    key: String,
    pub(crate) index: u64,
    raw_len: usize,
    algo: Checksum,
    sum: [u8; 32],
    data: Vec<u8>,
}

impl Packed {
    /// Decompresses the frame and checks its checksum (the algorithm its
    /// tag names).
    pub(crate) fn open(self) -> Result<Chunk, BackupError> {
        let corrupt = |why: String| BackupError::Corrupt { key: self.key.clone(), why };
        let index = self.index;
        let data =
            zstd::bulk::decompress(&self.data, self.raw_len).map_err(|e| corrupt(format!("chunk {index} does not decompress: {e}")))?;
        if data.len() != self.raw_len || digest(self.algo, &data) != self.sum {
            return Err(corrupt(format!("chunk {index} fails its {} checksum", self.algo.as_str())));
        }
        Ok(Chunk { index, data })
    }
}

impl Frames {
    pub(crate) fn corrupt(&self, why: impl Into<String>) -> BackupError {
        BackupError::Corrupt { key: self.key.clone(), why: why.into() }
    }

    fn be64(b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        u64::from_be_bytes(a)
    }

    fn be32(b: &[u8]) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[..4]);
        u32::from_be_bytes(a)
    }

    pub(crate) fn new(key: &str) -> Frames {
        Frames {
            key: key.to_string(),
            buf: Vec::new(),
            chunk_size: 0,
            volume_size: 0,
            frames: 0,
            next_index: 0,
            header: false,
            ended: false,
            rest_follows: false,
        }
    }

    /// Reads the header once enough bytes arrived (Ok(false): not yet).
    pub(crate) fn read_header(&mut self) -> Result<bool, BackupError> {
        if self.header {
            return Ok(true);
        }
        if self.buf.len() < HEADER_LEN {
            return Ok(false);
        }
        if &self.buf[..8] != MAGIC {
            return Err(self.corrupt("it does not start like a Cairn backup object"));
        }
        self.chunk_size = Self::be64(&self.buf[8..]);
        self.volume_size = Self::be64(&self.buf[16..]);
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK {
            return Err(self.corrupt(format!("chunk size {} is out of range", self.chunk_size)));
        }
        self.buf.drain(..HEADER_LEN);
        self.header = true;
        Ok(true)
    }

    /// The next complete chunk in the buffer, verified; None when more
    /// bytes are needed (or the trailer was read).
    pub(crate) fn next_chunk(&mut self) -> Result<Option<Chunk>, BackupError> {
        self.next_frame()?.map(Packed::open).transpose()
    }

    /// The next complete frame in the buffer, its sizes and index checked
    /// but not yet its data; None when more bytes are needed (or the
    /// trailer was read).
    pub(crate) fn next_frame(&mut self) -> Result<Option<Packed>, BackupError> {
        if !self.read_header()? {
            return Ok(None);
        }
        if self.ended {
            if !self.buf.is_empty() && !self.rest_follows {
                return Err(self.corrupt("there are bytes after its end"));
            }
            return Ok(None);
        }
        if self.buf.len() < 4 {
            return Ok(None);
        }
        if &self.buf[..4] == TRAILER {
            if self.buf.len() < TRAILER_LEN {
                return Ok(None);
            }
            let n = Self::be64(&self.buf[4..]);
            if n != self.frames {
                return Err(self.corrupt(format!("its trailer counts {n} chunks, it holds {}", self.frames)));
            }
            self.buf.drain(..TRAILER_LEN);
            self.ended = true;
            return self.next_frame();
        }
        let algo = match &self.buf[..4] {
            t if t == FRAME => Checksum::Sha256,
            t if t == FRAME_B3 => Checksum::Blake3,
            _ => return Err(self.corrupt(format!("chunk {} does not start with a frame header", self.frames))),
        };
        if self.buf.len() < FRAME_HEAD_LEN {
            return Ok(None);
        }
        let index = Self::be64(&self.buf[4..]);
        let raw_len = u64::from(Self::be32(&self.buf[12..]));
        let packed_len = Self::be32(&self.buf[16..]) as usize;
        let chunks = self.volume_size.div_ceil(self.chunk_size);
        if index >= chunks || raw_len > self.chunk_size || packed_len as u64 > self.chunk_size + (1 << 20) {
            return Err(self.corrupt(format!("frame {} has impossible sizes or index", self.frames)));
        }
        if index < self.next_index {
            return Err(self.corrupt(format!("frame {} holds chunk {index} out of order", self.frames)));
        }
        if self.buf.len() < FRAME_HEAD_LEN + packed_len {
            return Ok(None);
        }
        let mut sum = [0u8; 32];
        sum.copy_from_slice(&self.buf[20..52]);
        let data = self.buf[FRAME_HEAD_LEN..FRAME_HEAD_LEN + packed_len].to_vec();
        self.buf.drain(..FRAME_HEAD_LEN + packed_len);
        self.frames += 1;
        self.next_index = index + 1;
        Ok(Some(Packed { key: self.key.clone(), index, raw_len: raw_len as usize, algo, sum, data }))
    }
}

/// Downloads each volume's chain into what the pool's provider makes for
/// it (a hidden file, a thin volume tagged as receiving, a zvol without
/// identity), verifying every chunk, and makes those the snapshot only
/// once every volume was applied. A restore that fails at any step —
/// making a volume's place, a download, turning one into the snapshot —
/// removes what it made of every volume (earlier ones included): a failed
/// restore leaves no snapshot and no half-written volume behind. It is
/// recorded in `inflight` while it runs, so a satellite that stops in the
/// middle removes its leftovers at the next start.
pub async fn receive(transfers: &Transfers, tools: &Tools, inflight: &Inflight, req: &BackupReceive) -> Result<(), BackupError> {
    let running = transfers.start(&req.resource, &req.snapshot)?;
    let provider = provider(tools, &req.pool)?;
    let (rsc, snap) = (Name::new(&req.resource)?, Name::new(&req.snapshot)?);
    let record = inflight.record(&Placing::Restore {
        pool: req.pool.clone(),
        resource: req.resource.clone(),
        snapshot: req.snapshot.clone(),
        volumes: req.volumes.iter().map(|v| v.number).collect(),
    })?;
    // The volumes whose place was made (and so are removed on failure).
    let mut made: Vec<u32> = Vec::new();
    let result = async {
        let b = bucket(&req.s3)?;
        for v in &req.volumes {
            // A place that could not be made is not removed here: it may
            // be something else's (a zvol or file of that name that made
            // receive_create refuse), and receive_create removes what it
            // began itself before it fails.
            let to = provider.receive_create(&rsc, v.number, &snap, v.size).await?;
            made.push(v.number);
            let to = Path::new(&to);
            let file = tokio::fs::OpenOptions::new().write(true).open(to).await.map_err(io(format!("open {}", to.display())))?;
            receive_volume(&b, file, to, v, &running).await?;
        }
        for v in &req.volumes {
            running.check()?;
            provider.receive_done(&rsc, v.number, &snap).await?;
        }
        Ok::<(), BackupError>(())
    }
    .await;
    // Success only once the record went: a record left behind would undo
    // the snapshot at the next start, after the controller registered it.
    let (result, record) = match result {
        Ok(()) => match record.settle() {
            Ok(()) => return Ok(()),
            // The record file may stay: it names what is removed now.
            Err(e) => (Err(e), None),
        },
        Err(e) => (Err(e), Some(record)),
    };
    // The record goes only once what the restore made went: if not, the
    // next start tries again.
    let undone = undo(provider.as_ref(), &rsc, &snap, &made).await;
    if let Some(record) = record {
        if undone {
            if let Err(e) = record.settle() {
                tracing::warn!(resource = %req.resource, snapshot = %req.snapshot, "{e}");
            }
        } else {
            record.keep();
        }
    }
    result
}

/// Removes what a restore made of `volumes` (failures are logged): true
/// when all of it went.
async fn undo(provider: &dyn Provider, rsc: &Name, snap: &Name, volumes: &[u32]) -> bool {
    let mut all = true;
    for nr in volumes {
        if let Err(e) = provider.receive_undo(rsc, *nr, snap).await {
            tracing::warn!(resource = %rsc, snapshot = %snap, nr, "could not remove what the failed restore wrote: {e}");
            all = false;
        }
    }
    all
}

/// Removes what a restore of `req.snapshot` made (the controller could not
/// register it, or stopped waiting for it): a restore still running is
/// aborted first and waited for (at most [`DISCARD_WAIT`]; it removes what
/// it wrote itself then).
pub async fn discard(transfers: &Transfers, tools: &Tools, req: &BackupDiscard) -> Result<(), BackupError> {
    let provider = provider(tools, &req.pool)?;
    let (rsc, snap) = (Name::new(&req.resource)?, Name::new(&req.snapshot)?);
    let deadline = tokio::time::Instant::now() + DISCARD_WAIT;
    while transfers.abort(&req.resource, Some(&req.snapshot)) > 0 {
        if tokio::time::Instant::now() > deadline {
            return Err(BackupError::Io {
                what: "wait for the restore to stop".into(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "it still runs"),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tracing::info!(resource = %req.resource, snapshot = %req.snapshot, "removing a restore that was not registered");
    let mut first = None;
    for nr in &req.volumes {
        if let Err(e) = provider.receive_undo(&rsc, *nr, &snap).await {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), |e| Err(e.into()))
}

/// How long a discard waits for the aborted restore to stop.
const DISCARD_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

pub(crate) fn hidden(to: &Path) -> PathBuf {
    Files::receiving_path(to)
}

/// Writes the chain's objects into `file` (zeroed, `v.size` bytes), in order.
async fn receive_volume(
    b: &Bucket,
    file: tokio::fs::File,
    tmp: &Path,
    v: &BackupVolumeReceive,
    running: &Running<'_>,
) -> Result<(), BackupError> {
    let file = Arc::new(file.into_std().await);
    let mut work = Ordered::new(2);
    let result = async {
        for key in &v.keys {
            let stream = b.get_stream(key).await?;
            apply(key, stream, &file, tmp, v.size, &mut work, running).await?;
        }
        Ok::<(), BackupError>(())
    }
    .await;
    if result.is_err() {
        work.settle().await;
        return result;
    }
    let f = file.clone();
    tokio::task::spawn_blocking(move || f.sync_all())
        .await
        .map_err(|e| BackupError::Io { what: "sync".into(), source: std::io::Error::other(e) })?
        .map_err(io(format!("sync {}", tmp.display())))?;
    Ok(())
}

/// Writes the chunks of one backup object into the volume's file as the
/// object arrives: frames are read here, decompressed, verified and
/// written at their offset (positioned writes) several at a time on the
/// blocking pool. It returns once every chunk of the object is written,
/// so the next object of the chain overwrites this one's chunks.
async fn apply<S>(
    key: &str,
    stream: S,
    file: &Arc<std::fs::File>,
    tmp: &Path,
    size: u64,
    work: &mut Ordered<()>,
    running: &Running<'_>,
) -> Result<(), BackupError>
where
    S: futures_util::Stream<Item = Result<Vec<u8>, cairn_s3::S3Error>>,
{
    let mut frames = Frames::new(key);
    let mut stream = std::pin::pin!(stream);
    while let Some(piece) = stream.next().await {
        running.check()?;
        frames.buf.extend_from_slice(&piece?);
        if !frames.read_header()? {
            continue;
        }
        // An older backup of the chain may be smaller (the volume grew
        // since), never larger.
        if frames.volume_size > size {
            return Err(frames.corrupt(format!("it holds {} bytes, the volume has {size}", frames.volume_size)));
        }
        work.depth = pipeline_depth(frames.chunk_size);
        while let Some(p) = frames.next_frame()? {
            let (file, at, what) = (file.clone(), p.index * frames.chunk_size, format!("write {}", tmp.display()));
            work.push(move || {
                let c = p.open()?;
                file.write_all_at(&c.data, at).map_err(io(what))
            })
            .await?;
        }
    }
    if !frames.ended {
        return Err(frames.corrupt("it ends before its trailer (truncated)"));
    }
    while let Some(done) = work.next().await {
        done?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8], piece: usize) -> Result<Vec<(u64, Vec<u8>)>, BackupError> {
        let mut f = Frames::new("k");
        let mut out = Vec::new();
        for p in bytes.chunks(piece) {
            f.buf.extend_from_slice(p);
            while let Some(c) = f.next_chunk()? {
                out.push((c.index, c.data));
            }
        }
        if !f.ended {
            return Err(f.corrupt("truncated"));
        }
        Ok(out)
    }

    fn object(chunks: &[(u64, Vec<u8>)], chunk_size: u64, size: u64) -> Vec<u8> {
        object_with(Checksum::Blake3, chunks, chunk_size, size)
    }

    fn object_with(algo: Checksum, chunks: &[(u64, Vec<u8>)], chunk_size: u64, size: u64) -> Vec<u8> {
        let mut o = header(chunk_size, size);
        for (i, c) in chunks {
            o.extend_from_slice(&frame(*i, c, algo).expect("frame"));
        }
        o.extend_from_slice(&trailer(chunks.len() as u64));
        o
    }

    #[test]
    fn frames_round_trip_whatever_the_pieces_they_arrive_in() {
        let a: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let b = vec![9u8; 1000];
        let o = object(&[(0, a.clone()), (2, b.clone())], 4096, 3 * 4096);
        for piece in [1, 7, 100, o.len()] {
            assert_eq!(parse_all(&o, piece).expect("parses"), vec![(0, a.clone()), (2, b.clone())]);
        }
    }

    #[test]
    fn a_flipped_byte_or_a_cut_fails_and_says_so() {
        let a: Vec<u8> = (0..4096u32).map(|i| (i % 13) as u8).collect();
        for algo in [Checksum::Blake3, Checksum::Sha256] {
            let o = object_with(algo, &[(0, a.clone())], 4096, 4096);
            assert_eq!(parse_all(&o, 64).expect("parses"), vec![(0, a.clone())]);
            // A byte of the checksum itself: the data decompresses and
            // fails the check, naming the algorithm.
            let mut bad = o.clone();
            bad[HEADER_LEN + 20] ^= 0x40;
            let e = parse_all(&bad, 64).expect_err("corrupt");
            assert!(e.to_string().contains(&format!("chunk 0 fails its {} checksum", algo.as_str())), "{e}");
            // A byte of the compressed data (zstd itself may notice first).
            let mut bad = o.clone();
            bad[o.len() - TRAILER_LEN - 1] ^= 0x40;
            let e = parse_all(&bad, 64).expect_err("corrupt");
            assert!(matches!(e, BackupError::Corrupt { .. }), "{e}");
            let cut = &o[..o.len() - 3];
            let e = parse_all(cut, 64).expect_err("truncated");
            assert!(e.to_string().contains("truncated"), "{e}");
            let mut other = o.clone();
            other[0] = b'X';
            assert!(parse_all(&other, 64).is_err());
        }
        // A frame tag neither algorithm has.
        let mut tag = object(&[(0, a)], 4096, 4096);
        tag[HEADER_LEN + 3] = b'?';
        let e = parse_all(&tag, 64).expect_err("unknown tag");
        assert!(e.to_string().contains("does not start with a frame header"), "{e}");
    }

    /// The chunks of the captured backup (testdata/backup-sha256): 4 KiB of
    /// seeded random bytes repeated to 1 MiB, zeros, another such MiB.
    const OLD_OBJECT: &[u8] = include_bytes!("../testdata/backup-sha256/oldfmt_00000_back_20261127_184256");

    #[test]
    fn a_sha256_object_written_before_blake3_still_restores_and_its_damage_is_found() {
        let got = parse_all(OLD_OBJECT, 1000).expect("the old object parses and verifies");
        let indexes: Vec<u64> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, vec![0, 2], "the zero chunk is left out");
        for (i, data) in &got {
            assert_eq!(data.len(), 1 << 20);
            assert_eq!(data[..4096].repeat(256), *data, "chunk {i} is its 4 KiB repeated");
        }
        assert_ne!(got[0].1[..4096], got[1].1[..4096]);
        // Its frames are SHA-256 ones, and the checksum is the real SHA-256
        // of the chunk (as the chunk map of its .meta says).
        assert_eq!(&OLD_OBJECT[HEADER_LEN..HEADER_LEN + 4], FRAME);
        let sum = &OLD_OBJECT[HEADER_LEN + 20..HEADER_LEN + 52];
        assert_eq!(hex(sum), chunk_hash(&got[0].1, Checksum::Sha256));
        let mut bad = OLD_OBJECT.to_vec();
        bad[HEADER_LEN + 60] ^= 1;
        let e = parse_all(&bad, 1000).expect_err("damaged");
        assert!(matches!(e, BackupError::Corrupt { .. }), "{e}");
    }

    #[test]
    fn changed_byte_ranges_mark_the_chunks_they_touch() {
        const MIB: u64 = 1 << 20;
        let t = chunks_touched(&[(2 * MIB, MIB), (5 * MIB + 4096, MIB), (9 * MIB + 1, 1), (3 * MIB, 0)], MIB, 10 * MIB - 100);
        let marked: Vec<usize> = t.iter().enumerate().filter(|(_, x)| **x).map(|(i, _)| i).collect();
        assert_eq!((t.len(), marked), (10, vec![2, 5, 6, 9]));
        // Ranges past the end (the pool's blocks round up) are cut off.
        assert_eq!(chunks_touched(&[(9 * MIB, 4 * MIB)], MIB, 10 * MIB).iter().filter(|x| **x).count(), 1);
    }

    #[test]
    fn freed_chunks_that_were_zeros_are_not_read() {
        const MIB: u64 = 1 << 20;
        // ZFS's incremental: 1 MiB written at 4 MiB; freed: a discard at
        // 1 MiB (data before) and everything past 6 MiB (zeros before, and
        // past the end of the 8 MiB volume); chunk 7 is new (grown).
        let d = cairn_storage::provider::Delta { written: vec![(4 * MIB, MIB)], freed: vec![(MIB, 4096), (6 * MIB, u64::MAX - 6 * MIB)] };
        let base: Vec<String> = ["a", "b", "c", "d", "e", "f", "", ""][..7].iter().map(|s| s.to_string()).collect();
        let t = delta_chunks(&d, MIB, 8 * MIB, &base);
        let marked: Vec<usize> = t.iter().enumerate().filter(|(_, x)| **x).map(|(i, _)| i).collect();
        assert_eq!(marked, vec![1, 4, 7]);
    }

    #[test]
    fn zero_chunks_hash_to_nothing_and_others_to_their_checksum() {
        for algo in [Checksum::Sha256, Checksum::Blake3] {
            assert_eq!(chunk_hash(&[0u8; 512], algo), "");
        }
        // The published test vectors of both algorithms.
        assert_eq!(chunk_hash(b"abc", Checksum::Sha256), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(chunk_hash(b"abc", Checksum::Blake3), "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ordered_jobs_come_back_in_the_order_they_started_whatever_their_speed() {
        let mut work = Ordered::new(4);
        let mut got = Vec::new();
        for i in 0..20u64 {
            // Later jobs finish first.
            let job = move || {
                std::thread::sleep(std::time::Duration::from_millis(20 - i));
                Ok(i)
            };
            if let Some(done) = work.push(job).await.expect("no job fails") {
                got.push(done);
            }
        }
        while let Some(done) = work.next().await {
            got.push(done.expect("no job fails"));
        }
        assert_eq!(got, (0..20).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_job_fails_the_whole_in_its_place() {
        let mut work = Ordered::new(3);
        let mut got = Vec::new();
        let mut failed = None;
        for i in 0..10u64 {
            let job = move || if i == 4 { Err(BackupError::Aborted) } else { Ok(i) };
            match work.push(job).await {
                Ok(Some(done)) => got.push(done),
                Ok(None) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        work.settle().await;
        assert!(matches!(failed, Some(BackupError::Aborted)), "{failed:?}");
        // Everything before the failed chunk came out, nothing after it.
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_chunk_is_hashed_once_for_the_map_and_its_frame() {
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 253) as u8).collect();
        let zeros = vec![0u8; 8192];
        for algo in [Checksum::Blake3, Checksum::Sha256] {
            // Full: data is framed, zeros are left out.
            let s = seal(5, &data, None, algo).expect("seal");
            assert_eq!(s.hash, chunk_hash(&data, algo));
            assert_eq!(s.frame.expect("framed"), frame(5, &data, algo).expect("frame"));
            let s = seal(6, &zeros, None, algo).expect("seal");
            assert_eq!((s.hash.as_str(), s.frame.is_none()), ("", true));
            // Incremental: only what differs from the base, zeros included.
            let h = chunk_hash(&data, algo);
            assert!(seal(5, &data, Some(Some(h.as_str())), algo).expect("seal").frame.is_none());
            assert!(seal(5, &data, Some(Some("00")), algo).expect("seal").frame.is_some());
            assert!(seal(5, &data, Some(None), algo).expect("seal").frame.is_some());
            assert!(seal(6, &zeros, Some(Some(h.as_str())), algo).expect("seal").frame.is_some());
            assert!(seal(6, &zeros, Some(Some("")), algo).expect("seal").frame.is_none());
        }
    }

    #[test]
    fn an_incremental_on_a_sha256_chain_compares_with_its_chunk_map() {
        // The chunk map of the backup written before BLAKE3 (its .meta,
        // captured in testdata/backup-sha256), and chunk 0 as it held it.
        let old_map = ["ddad2c8b006413831e3354365b4929497f2d117d2368cf0336fb17e43f2e3275", ""];
        let meta = include_str!("../testdata/backup-sha256/oldfmt_back_20261127_184256.meta");
        assert!(meta.contains(old_map[0]) && meta.contains(r#""checksum":"sha256""#));
        let got = parse_all(OLD_OBJECT, OLD_OBJECT.len()).expect("parses");
        let chunk0 = &got[0].1;
        // Hashed the chain's way, the unchanged chunk matches and is left
        // out; a changed one is framed with SHA-256, as the rest of the chain.
        let s = seal(0, chunk0, Some(Some(old_map[0])), Checksum::Sha256).expect("seal");
        assert_eq!((s.hash.as_str(), s.frame.is_none()), (old_map[0], true));
        let mut changed = chunk0.clone();
        changed[7] ^= 1;
        let s = seal(0, &changed, Some(Some(old_map[0])), Checksum::Sha256).expect("seal");
        assert_eq!(&s.frame.expect("framed")[..4], FRAME);
        // Hashed with BLAKE3 it would look changed: why a chain keeps its algorithm.
        assert!(seal(0, chunk0, Some(Some(old_map[0])), Checksum::Blake3).expect("seal").frame.is_some());
        assert!(seal(1, &vec![0u8; 1 << 20], Some(Some(old_map[1])), Checksum::Sha256).expect("seal").frame.is_none());
    }

    fn pieces(o: &[u8], n: usize) -> impl futures_util::Stream<Item = Result<Vec<u8>, cairn_s3::S3Error>> + use<> {
        futures_util::stream::iter(o.chunks(n).map(|p| Ok(p.to_vec())).collect::<Vec<_>>())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chain_is_applied_in_order_and_a_damaged_object_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vol");
        let cs = 4096u64;
        let size = 40 * cs;
        let file = Arc::new(std::fs::File::options().create(true).truncate(true).read(true).write(true).open(&path).expect("create"));
        file.set_len(size).expect("size");
        let transfers = Transfers::default();
        let running = transfers.start("r", "s").expect("start");
        let mut work = Ordered::new(4);
        let fill = |b: u8| vec![b; cs as usize];
        let full: Vec<(u64, Vec<u8>)> = (0..40).filter(|i| i % 3 != 0).map(|i| (i, fill(i as u8 + 1))).collect();
        let later = vec![(1, fill(200)), (39, fill(201))];
        for (o, n) in [(object(&full, cs, size), 1000), (object(&later, cs, size), 333)] {
            apply("k", pieces(&o, n), &file, &path, size, &mut work, &running).await.expect("applies");
        }
        let got = std::fs::read(&path).expect("read");
        for i in 0..40u64 {
            let want = match i {
                1 => 200,
                39 => 201,
                i if i % 3 == 0 => 0,
                i => i as u8 + 1,
            };
            let at = (i * cs) as usize;
            assert!(got[at..at + cs as usize].iter().all(|b| *b == want), "chunk {i}");
        }
        // A flipped byte in the middle of the object.
        let mut bad = object(&full, cs, size);
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        let e = apply("k", pieces(&bad, 4096), &file, &path, size, &mut work, &running).await.expect_err("damaged");
        assert!(matches!(e, BackupError::Corrupt { .. }), "{e}");
        work.settle().await;
        // Frames out of order (two writing one chunk) are refused.
        let twice = object(&[(3, fill(1)), (3, fill(2))], cs, size);
        let e = apply("k", pieces(&twice, 100), &file, &path, size, &mut work, &running).await.expect_err("out of order");
        assert!(e.to_string().contains("out of order"), "{e}");
        // An object larger than the volume.
        let big = object(&[(0, fill(1))], cs, 2 * size);
        assert!(apply("k", pieces(&big, 100), &file, &path, size, &mut work, &running).await.is_err());
    }

    fn file_restore(dir: &Path, volumes: &[u32]) -> BackupReceive {
        BackupReceive {
            s3: S3Target {
                endpoint: "http://127.0.0.1:9".into(),
                bucket: "b".into(),
                region: "r".into(),
                access_key: cairn_proto::Secret("a".into()),
                secret_key: cairn_proto::Secret("s".into()),
                path_style: true,
            },
            pool: PoolDesired { name: "p".into(), kind: ProviderKind::FileThin, backing: Some(dir.display().to_string()) },
            resource: "dst".into(),
            snapshot: "s1".into(),
            volumes: volumes.iter().map(|n| BackupVolumeReceive { number: *n, keys: vec!["k".into()], size: 1 << 20 }).collect(),
        }
    }

    #[tokio::test]
    async fn a_restore_that_cannot_make_its_place_removes_nothing_it_did_not_make() {
        let pool = tempfile::tempdir().expect("tempdir");
        let tools = crate::apply::Storage::new(Arc::new(cairn_exec::FakeRunner::default()), std::time::Duration::from_secs(5)).tools;
        // Another transfer is writing volume 0 of the same snapshot.
        let other = pool.path().join(".dst_00000@s1.snap.receiving");
        std::fs::write(&other, b"the other's data").expect("write");
        let e = receive(&Transfers::default(), &tools, &Inflight::default(), &file_restore(pool.path(), &[0, 1]))
            .await
            .expect_err("its place exists");
        assert!(e.to_string().contains("create"), "{e}");
        assert_eq!(std::fs::read(&other).expect("the other's file stays"), b"the other's data");
        assert!(!pool.path().join(".dst_00001@s1.snap.receiving").exists());
    }

    #[tokio::test]
    async fn a_failed_restore_removes_what_it_wrote_and_then_its_record() {
        let (pool, state) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let tools = crate::apply::Storage::new(Arc::new(cairn_exec::FakeRunner::default()), std::time::Duration::from_secs(5)).tools;
        let (inflight, _) = Inflight::open(state.path()).expect("open");
        // The bucket cannot be reached: the download of volume 0 fails.
        receive(&Transfers::default(), &tools, &inflight, &file_restore(pool.path(), &[0, 1])).await.expect_err("no bucket");
        assert_eq!(std::fs::read_dir(pool.path()).expect("read").count(), 0, "what it wrote went");
        let (_, left) = Inflight::open(state.path()).expect("reopen");
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_second_transfer_of_the_same_snapshot_is_refused_while_the_first_runs() {
        let transfers = Transfers::default();
        let first = transfers.start("dst", "s1").expect("start");
        let e = transfers.start("dst", "s1").err().expect("a duplicate is refused");
        assert!(matches!(&e, BackupError::Busy { resource, snapshot } if resource == "dst" && snapshot == "s1"), "{e}");
        assert!(e.to_string().contains("running on this node already"), "{e}");
        // Others run beside it; the abort reaches only the first.
        let other = transfers.start("dst", "s2").expect("another snapshot");
        assert_eq!(transfers.abort("dst", Some("s1")), 1);
        assert!(first.check().is_err() && other.check().is_ok());
        // A restore of that snapshot is refused before it makes anything.
        let (pool, state) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let tools = crate::apply::Storage::new(Arc::new(cairn_exec::FakeRunner::default()), std::time::Duration::from_secs(5)).tools;
        let (inflight, _) = Inflight::open(state.path()).expect("open");
        let e = receive(&transfers, &tools, &inflight, &file_restore(pool.path(), &[0])).await.expect_err("busy");
        assert!(matches!(e, BackupError::Busy { .. }), "{e}");
        assert_eq!(std::fs::read_dir(pool.path()).expect("read").count(), 0);
        // Once it ended, the snapshot can be transferred again.
        drop(first);
        assert!(transfers.start("dst", "s1").is_ok());
    }
}
