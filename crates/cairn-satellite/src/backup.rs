//! Backups to S3: a snapshot's volumes uploaded as chunked, compressed,
//! checksummed objects, and downloaded again into a snapshot to restore
//! from. The format is described in docs/BACKUP-FORMAT.md.
//!
//! Memory stays bounded: one chunk is read, hashed and compressed at a
//! time, and parts of a multipart upload are sent as soon as they reach
//! [`PART_SIZE`]; a download is parsed frame by frame as it arrives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_proto::{
    BackupReceive, BackupSend, BackupSent, BackupVolumeReceive, BackupVolumeSend, BackupVolumeSent, ObjectError, PoolDesired, ProviderKind,
    S3Target,
};
use cairn_s3::{Bucket, S3Config};
use cairn_storage::Name;
use cairn_storage::file::{FilePool, Files};
use cairn_storage::provider::{Provider, Tools};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Start of every backup object.
pub const MAGIC: &[u8; 8] = b"CAIRNBK1";
/// Start of every chunk frame.
const FRAME: &[u8; 4] = b"CHNK";
/// Start of the trailer that closes an object.
const TRAILER: &[u8; 4] = b"CEND";
/// Object header: magic, chunk size, volume size.
const HEADER_LEN: usize = 8 + 8 + 8;
/// Frame header: tag, chunk index, raw length, compressed length, sha256.
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
    S3(#[from] cairn_s3::S3Error),
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
}

/// The provider of the pool a backup reads from or restores into.
fn provider(tools: &Tools, p: &PoolDesired) -> Result<Arc<dyn Provider>, BackupError> {
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
}

impl Transfers {
    pub(crate) fn start(&self, rsc: &str, snap: &str) -> Running<'_> {
        let stop = Arc::new(AtomicBool::new(false));
        let id = (rsc.to_string(), snap.to_string());
        self.running.lock().insert(id.clone(), stop.clone());
        Running { transfers: self, id, stop }
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

/// sha256 of a chunk, hex; the empty string for a chunk of zeros (which a
/// full backup leaves out: a restored volume starts out zeroed).
pub fn chunk_hash(data: &[u8]) -> String {
    // Compared a page at a time (memcmp), not byte by byte.
    const ZEROS: [u8; 4096] = [0; 4096];
    if data.chunks(ZEROS.len()).all(|page| page == &ZEROS[..page.len()]) {
        return String::new();
    }
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
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

/// One chunk as a frame: its header (with the sha256 of the raw data)
/// followed by the zstd-compressed data.
pub fn frame(index: u64, raw: &[u8]) -> Result<Vec<u8>, BackupError> {
    let packed = zstd::bulk::compress(raw, LEVEL).map_err(io("compress a chunk"))?;
    let mut f = Vec::with_capacity(FRAME_HEAD_LEN + packed.len());
    f.extend_from_slice(FRAME);
    f.extend_from_slice(&index.to_be_bytes());
    f.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    f.extend_from_slice(&(packed.len() as u32).to_be_bytes());
    f.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, raw).as_ref());
    f.extend_from_slice(&packed);
    Ok(f)
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
/// where it knows (LVM_THIN); only the chunks they touch are read.
pub async fn send(transfers: &Transfers, tools: &Tools, req: &BackupSend) -> BackupSent {
    let running = transfers.start(&req.resource, &req.snapshot);
    let mut out = BackupSent::default();
    let result = async {
        let b = bucket(&req.s3)?;
        let provider = provider(tools, &req.pool)?;
        let (rsc, snap) = (Name::new(&req.resource)?, Name::new(&req.snapshot)?);
        let base = req.base_snapshot.as_deref().map(Name::new).transpose()?;
        let chunk_size = req.chunk_size.clamp(4096, MAX_CHUNK);
        for v in &req.volumes {
            let data = provider.snapshot_open(&rsc, v.number, &snap).await?;
            let sent = async {
                let changed = match (&base, &v.base_chunks) {
                    (Some(base), Some(_)) => provider.snapshot_changes(&rsc, v.number, base, &snap).await?,
                    _ => None,
                };
                let only = changed.map(|r| chunks_touched(&r, chunk_size, data.size));
                if let (Some(o), Some(base_map), Some(base)) = (&only, &v.base_chunks, &base) {
                    let read = o.iter().enumerate().filter(|(i, t)| **t || *i >= base_map.len()).count();
                    tracing::info!(resource = %req.resource, "incremental backup of volume {}: read {read} of {} chunks (the rest are unchanged since snapshot '{base}')", v.number, o.len());
                }
                send_volume(&b, Path::new(&data.path), data.size, v, chunk_size, only.as_deref(), &running).await
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
/// hashes for the rest.
async fn send_volume(
    b: &Bucket,
    path: &Path,
    size: u64,
    v: &BackupVolumeSend,
    chunk_size: u64,
    only: Option<&[bool]>,
    running: &Running<'_>,
) -> Result<BackupVolumeSent, BackupError> {
    let chunk_size = chunk_size.clamp(4096, MAX_CHUNK);
    let mut file = tokio::fs::File::open(path).await.map_err(io(format!("open the snapshot {}", path.display())))?;
    let mut upload = b.upload(&v.key).await?;
    let result = async {
        let mut part = header(chunk_size, size);
        let mut sent = BackupVolumeSent { number: v.number, key: v.key.clone(), size, ..Default::default() };
        let mut buf = vec![0u8; chunk_size as usize];
        let mut index = 0u64;
        let mut offset = 0u64;
        let mut skipped = false;
        while offset < size {
            running.check()?;
            let len = (size - offset).min(chunk_size) as usize;
            // Unchanged since the base (the provider says so): its hash.
            let unchanged = only.is_some_and(|o| o.get(index as usize) == Some(&false));
            if let (true, Some(hash)) = (unchanged, v.base_chunks.as_ref().and_then(|b| b.get(index as usize))) {
                sent.chunk_map.push(hash.clone());
                offset += len as u64;
                index += 1;
                skipped = true;
                continue;
            }
            if std::mem::take(&mut skipped) {
                file.seek(std::io::SeekFrom::Start(offset)).await.map_err(io(format!("seek in {}", path.display())))?;
            }
            file.read_exact(&mut buf[..len]).await.map_err(io(format!("read {}", path.display())))?;
            let raw = &buf[..len];
            let hash = chunk_hash(raw);
            let wanted = match &v.base_chunks {
                // Incremental: what differs from the base, zeros included.
                Some(base) => base.get(index as usize) != Some(&hash),
                None => !hash.is_empty(),
            };
            if wanted {
                part.extend_from_slice(&frame(index, raw)?);
                sent.chunks_stored += 1;
            }
            sent.chunk_map.push(hash);
            if part.len() >= PART_SIZE {
                sent.stored_bytes += part.len() as u64;
                upload.part(std::mem::take(&mut part)).await?;
            }
            offset += len as u64;
            index += 1;
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
            if let Err(abort) = upload.abort().await {
                tracing::warn!(key = %v.key, "could not abort the multipart upload: {abort}");
            }
            Err(e)
        }
    }
}

/// Reads frames out of a byte stream as it arrives.
pub(crate) struct Frames {
    key: String,
    pub(crate) buf: Vec<u8>,
    pub(crate) chunk_size: u64,
    pub(crate) volume_size: u64,
    frames: u64,
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
            return self.next_chunk();
        }
        if &self.buf[..4] != FRAME {
            return Err(self.corrupt(format!("chunk {} does not start with a frame header", self.frames)));
        }
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
        if self.buf.len() < FRAME_HEAD_LEN + packed_len {
            return Ok(None);
        }
        let sum = self.buf[20..52].to_vec();
        let data = zstd::bulk::decompress(&self.buf[FRAME_HEAD_LEN..FRAME_HEAD_LEN + packed_len], raw_len as usize)
            .map_err(|e| self.corrupt(format!("chunk {index} does not decompress: {e}")))?;
        if data.len() as u64 != raw_len || ring::digest::digest(&ring::digest::SHA256, &data).as_ref() != sum.as_slice() {
            return Err(self.corrupt(format!("chunk {index} fails its sha256 checksum")));
        }
        self.buf.drain(..FRAME_HEAD_LEN + packed_len);
        self.frames += 1;
        Ok(Some(Chunk { index, data }))
    }
}

/// Downloads each volume's chain into what the pool's provider makes for
/// it (a hidden file, a thin volume tagged as receiving), verifying every
/// chunk, and makes that the snapshot only when the whole chain was
/// applied: a failed restore leaves no snapshot behind.
pub async fn receive(transfers: &Transfers, tools: &Tools, req: &BackupReceive) -> Result<(), BackupError> {
    let running = transfers.start(&req.resource, &req.snapshot);
    let b = bucket(&req.s3)?;
    let provider = provider(tools, &req.pool)?;
    let (rsc, snap) = (Name::new(&req.resource)?, Name::new(&req.snapshot)?);
    for v in &req.volumes {
        let to = provider.receive_create(&rsc, v.number, &snap, v.size).await?;
        let to = Path::new(&to);
        let result = async {
            let file = tokio::fs::OpenOptions::new().write(true).open(to).await.map_err(io(format!("open {}", to.display())))?;
            receive_volume(&b, file, to, v, &running).await
        }
        .await;
        match result {
            Ok(()) => provider.receive_done(&rsc, v.number, &snap).await?,
            Err(e) => {
                if let Err(x) = provider.receive_abandon(&rsc, v.number, &snap).await {
                    tracing::warn!(resource = %req.resource, "could not remove what the failed restore wrote: {x}");
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

pub(crate) fn hidden(to: &Path) -> PathBuf {
    Files::receiving_path(to)
}

/// Writes the chain's objects into `file` (zeroed, `v.size` bytes), in order.
async fn receive_volume(
    b: &Bucket,
    mut file: tokio::fs::File,
    tmp: &Path,
    v: &BackupVolumeReceive,
    running: &Running<'_>,
) -> Result<(), BackupError> {
    for key in &v.keys {
        let mut frames = Frames::new(key);
        let mut stream = Box::pin(b.get_stream(key).await?);
        while let Some(piece) = stream.next().await {
            running.check()?;
            frames.buf.extend_from_slice(&piece?);
            // An older backup of the chain may be smaller (the volume grew
            // since), never larger.
            if frames.read_header()? && frames.volume_size > v.size {
                return Err(frames.corrupt(format!("it holds {} bytes, the volume has {}", frames.volume_size, v.size)));
            }
            while let Some(c) = frames.next_chunk()? {
                file.seek(std::io::SeekFrom::Start(c.index * frames.chunk_size)).await.map_err(io(format!("seek in {}", tmp.display())))?;
                file.write_all(&c.data).await.map_err(io(format!("write {}", tmp.display())))?;
            }
        }
        if !frames.ended {
            return Err(frames.corrupt("it ends before its trailer (truncated)"));
        }
    }
    file.sync_all().await.map_err(io(format!("sync {}", tmp.display())))?;
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
        let mut o = header(chunk_size, size);
        for (i, c) in chunks {
            o.extend_from_slice(&frame(*i, c).expect("frame"));
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
        let o = object(&[(0, a)], 4096, 4096);
        let mut bad = o.clone();
        let last_payload = o.len() - TRAILER_LEN - 1;
        bad[last_payload] ^= 0x40;
        let e = parse_all(&bad, 64).expect_err("corrupt");
        assert!(matches!(e, BackupError::Corrupt { .. }), "{e}");
        let cut = &o[..o.len() - 3];
        let e = parse_all(cut, 64).expect_err("truncated");
        assert!(e.to_string().contains("truncated"), "{e}");
        let mut other = o.clone();
        other[0] = b'X';
        assert!(parse_all(&other, 64).is_err());
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
    fn zero_chunks_hash_to_nothing_and_others_to_sha256() {
        assert_eq!(chunk_hash(&[0u8; 512]), "");
        assert_eq!(chunk_hash(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
