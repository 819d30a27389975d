//! Shipping a snapshot to a satellite of another cluster (LINSTOR's
//! "linstor-to-linstor" backup shipping): the receiving satellite listens
//! on a port it picks for one connection presenting a one-use token, the
//! sending satellite streams the snapshot's volumes to it in the backup
//! object format (docs/BACKUP-FORMAT.md: header, zstd frames with the
//! SHA-256 of each chunk, trailer), and the receiver answers one status.
//!
//! When the receiving satellite runs with TLS (`--tls-cert`), its
//! listener speaks TLS with that certificate and the sender, which cannot
//! know the other cluster's CA, pins the certificate's sha256 that the
//! receiving side's controller passed on; the token still says who the
//! sender is. Without it the stream is plain TCP.
//!
//! Nothing is held whole in memory: the sender reads one chunk at a time,
//! the receiver writes each verified chunk as it arrives. The receiver
//! writes into hidden files and renames them into place only when every
//! volume arrived complete and verified (LVM_THIN: into thin volumes
//! tagged as receiving, which become snapshots once registered; ZFS:
//! `zfs send` streams into `zfs receive`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_proto::{BackupSent, BackupVolumeSent, Checksum, ObjectError, PoolDesired, ProviderKind, ShipListen, ShipListening, ShipSend};
use cairn_storage::Name;
use cairn_storage::file::Files;
use cairn_storage::lvm::{Lvm, LvmPool};
use cairn_storage::provider::Tools;
use cairn_storage::zfs::{Zfs, ZfsPool};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::backup::{BackupError, Frames, Running, Transfers, chunks_touched, file_pool, frame, header, hidden, io, is_zero, trailer};
use crate::inflight::{Inflight, Placing, Record};

/// What a sender says first: this tag, the token's length (u16) and the token.
const HELLO: &[u8; 8] = b"CAIRNSHP";
/// How long a listener waits for its sender (the source cluster takes
/// its snapshot after the target agreed).
const ACCEPT_WAIT: Duration = Duration::from_secs(600);
/// How long either side waits for the next bytes of a running stream.
const IDLE: Duration = Duration::from_secs(120);
/// The longest token a sender may present.
const MAX_TOKEN: usize = 256;
/// The largest piece of a `zfs send` stream in one frame.
const MAX_PIECE: usize = 1 << 20;

/// A shipment's connection: plain TCP, or TLS over it.
pub trait ShipIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ShipIo for T {}
type Conn = Box<dyn ShipIo>;

/// How this node's listeners speak TLS: the satellite's own certificate
/// and key (no client certificate: the sender belongs to another cluster
/// and proves itself with the token), and that certificate's sha256.
pub struct ShipTls {
    acceptor: tokio_rustls::TlsAcceptor,
    sha256: String,
}

impl ShipTls {
    pub fn new(cert: &std::path::Path, key: &std::path::Path) -> Result<ShipTls, cairn_proto::tls::TlsError> {
        let config = cairn_proto::tls::server_config(cert, key, None)?;
        Ok(ShipTls { acceptor: tokio_rustls::TlsAcceptor::from(config), sha256: cairn_proto::tls::cert_sha256(cert)? })
    }
}

/// The ZFS pool of a shipment, when it is one (those ship as `zfs send`
/// streams; FILE pools as backup frames).
pub(crate) fn zfs_pool(p: &PoolDesired) -> Result<Option<ZfsPool>, BackupError> {
    match (p.kind, p.backing.as_deref()) {
        (ProviderKind::Zfs | ProviderKind::ZfsThin, Some(ds)) => Ok(Some(ZfsPool::new(&p.name, ds, p.kind == ProviderKind::ZfsThin)?)),
        (ProviderKind::Zfs | ProviderKind::ZfsThin, None) => Err(BackupError::Provider(format!("{} without a dataset", p.kind.as_str()))),
        _ => Ok(None),
    }
}

/// The LVM_THIN pool of a shipment, when it is one (those receive into
/// thin volumes tagged as receiving).
pub(crate) fn lvm_thin_pool(p: &PoolDesired) -> Result<Option<LvmPool>, BackupError> {
    match (p.kind, p.backing.as_deref()) {
        (ProviderKind::LvmThin, Some(b)) => Ok(Some(LvmPool::new(&p.name, b, true)?)),
        (ProviderKind::LvmThin, None) => Err(BackupError::Provider("LVM_THIN without a volume group".into())),
        _ => Ok(None),
    }
}

/// Where a shipment's volumes go.
enum Target {
    Files,
    Zfs(Zfs, ZfsPool),
    Lvm(Lvm, LvmPool),
}

/// The shipments this node listens for or receives, by token.
#[derive(Default)]
pub struct Ships {
    pending: parking_lot::Mutex<HashMap<String, Pending>>,
    /// Shipments that arrived complete, by token, and when: cancelled
    /// later (the controller could not register them), what they placed is
    /// removed. Kept for [`ARRIVED_KEPT`].
    arrived: parking_lot::Mutex<HashMap<String, (std::time::Instant, Arrived)>>,
}

/// How long an arrived shipment can still be cancelled (the controller
/// registers it right after it asked for the verdict).
const ARRIVED_KEPT: Duration = Duration::from_secs(3600);

struct Pending {
    arrived: Arrived,
    /// Its outcome, and whether a failed one left something it could
    /// not remove.
    task: JoinHandle<(Result<(), String>, bool)>,
    /// Its record, kept until the verdict was asked (or it was
    /// cancelled): a satellite that stops before removes what the
    /// shipment placed at its next start.
    record: Record,
    /// The transfer's abort flag, made before its task runs: a cancel
    /// that comes before the task registered still stops it.
    stop: Arc<AtomicBool>,
}

/// What a shipment placed on this node, to remove it again.
struct Arrived {
    req: ShipListen,
    tools: Tools,
}

impl Ships {
    /// Waits for the shipment named by `token` to end (or cancels it):
    /// Ok when every volume arrived and is in place. Cancelling one that
    /// arrived (also after its verdict was asked for) removes what it
    /// placed: nothing of a shipment that is not registered stays.
    pub async fn result(&self, token: &str, cancel: bool) -> Result<(), String> {
        let Some(p) = self.pending.lock().remove(token) else {
            let done = if cancel { self.arrived.lock().remove(token) } else { None };
            if let Some((_, a)) = done {
                a.discard().await;
                return Err("the shipment was cancelled after it arrived; what it placed was removed".into());
            }
            return Err("no shipment with this token is known on this node (it ended or the satellite restarted)".into());
        };
        if cancel {
            p.stop.store(true, Ordering::SeqCst);
        }
        // (A task that panicked may have left anything: its record stays.)
        let (r, left) = match p.task.await {
            Ok(r) => r,
            Err(e) => (Err(format!("the receiving task failed: {e}")), true),
        };
        match (&r, cancel) {
            (Ok(()), true) => {
                p.arrived.settle(p.record).await;
                Err("the shipment was cancelled; what arrived was removed".into())
            }
            (Ok(()), false) => {
                // Registered next: a record left behind would remove it at
                // the next start.
                if let Err(e) = p.record.settle() {
                    p.arrived.discard().await;
                    return Err(format!("the shipment arrived but its record could not be removed, so it was removed: {e}"));
                }
                let now = std::time::Instant::now();
                let mut arrived = self.arrived.lock();
                arrived.retain(|_, (at, _)| now.saturating_duration_since(*at) < ARRIVED_KEPT);
                arrived.insert(token.to_string(), (now, p.arrived));
                r
            }
            (Err(_), _) => {
                // The receive removed what it placed (only what it made:
                // what made it fail may be something else's); the record
                // stays when some of that could not go.
                if left {
                    p.record.keep();
                } else if let Err(e) = p.record.settle() {
                    tracing::warn!(resource = %p.arrived.req.resource, snapshot = %p.arrived.req.snapshot, "{e}");
                }
                r
            }
        }
    }
}

impl Arrived {
    /// Removes what the shipment placed, then its record; the record stays
    /// (for the next start) when some of it could not be removed.
    async fn settle(&self, record: Record) {
        match self.try_discard().await {
            Ok(()) => {
                if let Err(e) = record.settle() {
                    tracing::warn!(resource = %self.req.resource, snapshot = %self.req.snapshot, "{e}");
                }
            }
            Err(e) => {
                tracing::warn!(resource = %self.req.resource, snapshot = %self.req.snapshot, "could not remove a shipment that was not registered: {e}");
                record.keep();
            }
        }
    }

    /// Removes what the shipment placed (best effort: failures are logged).
    async fn discard(&self) {
        if let Err(e) = self.try_discard().await {
            tracing::warn!(resource = %self.req.resource, snapshot = %self.req.snapshot, "could not remove a shipment that was not registered: {e}");
        }
    }

    async fn try_discard(&self) -> Result<(), BackupError> {
        let req = &self.req;
        tracing::info!(resource = %req.resource, snapshot = %req.snapshot, "removing a received shipment that was not registered");
        match (zfs_pool(&req.pool)?, lvm_thin_pool(&req.pool)?) {
            (Some(zp), _) => {
                for v in &req.volumes {
                    self.tools.zfs.drop_received(&zp, &req.resource, v.number, &req.snapshot, req.base.is_none()).await?;
                }
            }
            (None, Some(lp)) => {
                for v in &req.volumes {
                    self.tools.lvm.receive_abandon(&lp, &req.resource, v.number, &req.snapshot).await?;
                }
            }
            (None, None) => {
                let pool = file_pool(&req.pool)?;
                for v in &req.volumes {
                    let placed = if req.adopt {
                        Files::received_path(&pool, &req.resource, v.number, &req.snapshot)?
                    } else {
                        Files::snapshot_path(&pool, &req.resource, v.number, &req.snapshot)?
                    };
                    match tokio::fs::remove_file(&placed).await {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(format!("remove {}", placed.display()))(e)),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// Binds a port on the requested address and starts waiting for the
/// sender; answers the port (and the certificate's sha256 with `tls`).
pub async fn listen(
    ships: Arc<Ships>,
    transfers: Arc<Transfers>,
    inflight: &Inflight,
    tools: Tools,
    req: ShipListen,
    tls: Option<Arc<ShipTls>>,
) -> Result<ShipListening, BackupError> {
    let target = match (zfs_pool(&req.pool)?, lvm_thin_pool(&req.pool)?) {
        (Some(zp), _) => Target::Zfs(tools.zfs.clone(), zp),
        (None, Some(lp)) => Target::Lvm(tools.lvm.clone(), lp),
        (None, None) => Target::Files,
    };
    match &target {
        Target::Zfs(zfs, zp) => {
            for v in &req.volumes {
                zfs.receive_check(zp, &req.resource, v.number, &req.snapshot, req.base.as_deref()).await?;
            }
        }
        Target::Lvm(lvm, lp) => {
            for v in &req.volumes {
                lvm.receive_check(lp, &req.resource, v.number, &req.snapshot, req.base.as_deref()).await?;
            }
        }
        Target::Files => check_files(&req).await?,
    }
    let listener = TcpListener::bind((req.address.as_str(), 0)).await.map_err(io(format!("listen on {}", req.address)))?;
    let record = inflight.record(&Placing::Ship {
        pool: req.pool.clone(),
        resource: req.resource.clone(),
        snapshot: req.snapshot.clone(),
        volumes: req.volumes.iter().map(|v| v.number).collect(),
        full: req.base.is_none(),
        adopt: req.adopt,
    })?;
    let port = listener.local_addr().map_err(io("read the listening port"))?.port();
    let token = req.token.0.clone();
    let arrived = Arrived { req: req.clone(), tools };
    let tls_sha256 = tls.as_ref().map(|t| t.sha256.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let mut left = false;
        let r = receive(&transfers, flag, listener, &req, target, tls, &mut left).await;
        if let Err(e) = &r {
            tracing::warn!(resource = %req.resource, snapshot = %req.snapshot, "receiving a shipped snapshot failed: {e}");
        }
        (r.map_err(|e| e.to_string()), left)
    });
    ships.pending.lock().insert(token, Pending { arrived, task, record, stop });
    Ok(ShipListening { port, tls_sha256 })
}

/// A FILE pool receives into files that must not exist yet, on top of
/// the base's file for an incremental.
async fn check_files(req: &ShipListen) -> Result<(), BackupError> {
    let pool = file_pool(&req.pool)?;
    pool.create_dir()?;
    for v in &req.volumes {
        let to = Files::snapshot_path(&pool, &req.resource, v.number, &req.snapshot)?;
        if tokio::fs::try_exists(&to).await.unwrap_or(false) {
            return Err(BackupError::Io {
                what: format!("receive into {}", to.display()),
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the snapshot exists on this node"),
            });
        }
        if let Some(base) = &req.base {
            let from = Files::snapshot_path(&pool, &req.resource, v.number, base)?;
            tokio::fs::metadata(&from).await.map_err(io(format!("find the base snapshot {}", from.display())))?;
        }
    }
    Ok(())
}

/// Reads the sender's hello: true when it presents `token`.
async fn hello(sock: &mut Conn, token: &str) -> Result<bool, std::io::Error> {
    let mut head = [0u8; 10];
    sock.read_exact(&mut head).await?;
    let len = usize::from(u16::from_be_bytes([head[8], head[9]]));
    if &head[..8] != HELLO || len > MAX_TOKEN {
        return Ok(false);
    }
    let mut got = vec![0u8; len];
    sock.read_exact(&mut got).await?;
    Ok(ring_eq(&got, token.as_bytes()))
}

/// Compares without stopping at the first difference.
fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The connection after its TLS handshake (when the listener speaks TLS)
/// and a hello with the right token; None for any other.
async fn admit(sock: TcpStream, tls: Option<&ShipTls>, token: &str) -> Option<Conn> {
    let mut conn: Conn = match tls {
        Some(t) => Box::new(t.acceptor.accept(sock).await.map_err(|e| tracing::warn!("a shipment's TLS handshake failed: {e}")).ok()?),
        None => Box::new(sock),
    };
    matches!(hello(&mut conn, token).await, Ok(true)).then_some(conn)
}

async fn receive(
    transfers: &Transfers,
    stop: Arc<AtomicBool>,
    listener: TcpListener,
    req: &ShipListen,
    target: Target,
    tls: Option<Arc<ShipTls>>,
    left: &mut bool,
) -> Result<(), BackupError> {
    let running = transfers.start_with(&req.resource, &req.snapshot, stop)?;
    let deadline = tokio::time::Instant::now() + ACCEPT_WAIT;
    let mut sock = loop {
        running.check()?;
        match tokio::time::timeout(Duration::from_millis(500), listener.accept()).await {
            Ok(Ok((sock, peer))) => match tokio::time::timeout(Duration::from_secs(10), admit(sock, tls.as_deref(), &req.token.0)).await {
                Ok(Some(conn)) => break conn,
                _ => tracing::warn!(%peer, "a connection to a shipment's port did not present its token; closed"),
            },
            Ok(Err(e)) => return Err(io("accept the sender's connection")(e)),
            Err(_) if tokio::time::Instant::now() > deadline => {
                return Err(BackupError::Io {
                    what: "wait for the sender".into(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no sender connected in time"),
                });
            }
            Err(_) => {}
        }
    };
    drop(listener);
    let result = match &target {
        Target::Zfs(zfs, zp) => receive_zfs(&mut sock, zfs, zp, req, &running, left).await,
        Target::Lvm(lvm, lp) => receive_lvm(&mut sock, lvm, lp, req, &running, left).await,
        Target::Files => receive_files(&mut sock, req, &running, left).await,
    };
    // One status for the sender: 0 and nothing, or 1 and the reason.
    let mut status = Vec::new();
    match &result {
        Ok(()) => status.push(0u8),
        Err(e) => {
            let msg = e.to_string();
            status.push(1u8);
            status.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            status.extend_from_slice(msg.as_bytes());
        }
    }
    // (TLS holds what is written until it is flushed.)
    if let Err(e) = async {
        sock.write_all(&status).await?;
        sock.flush().await
    }
    .await
    {
        tracing::warn!("could not tell the sender how the shipment ended: {e}");
    }
    result
}

/// Receives each volume's `zfs send` stream (pieces of at most
/// [`MAX_PIECE`] bytes, each after its length as u32, a length of 0 ending
/// the volume) into `zfs receive`; ZFS checks the stream itself (its
/// records carry checksums, and a stream cut short is refused). What
/// arrived of a shipment that fails goes again.
async fn receive_zfs(
    sock: &mut Conn,
    zfs: &Zfs,
    zp: &ZfsPool,
    req: &ShipListen,
    running: &Running<'_>,
    left: &mut bool,
) -> Result<(), BackupError> {
    let mut done: Vec<u32> = Vec::new();
    let result = async {
        let mut buf = vec![0u8; MAX_PIECE];
        for v in &req.volumes {
            let mut rx = zfs.receive_stream(zp, &req.resource, v.number, &req.snapshot).await?;
            let Some(mut stdin) = rx.stdin.take() else {
                return Err(BackupError::Corrupt { key: "shipment".into(), why: "zfs receive has no input".into() });
            };
            done.push(v.number);
            loop {
                running.check()?;
                let mut len = [0u8; 4];
                read_piece(sock, &mut len, v.number).await?;
                let n = u32::from_be_bytes(len) as usize;
                if n == 0 {
                    break;
                }
                if n > MAX_PIECE {
                    return Err(BackupError::Corrupt { key: format!("shipped volume {}", v.number), why: format!("a piece of {n} bytes") });
                }
                read_piece(sock, &mut buf[..n], v.number).await?;
                if let Err(e) = stdin.write_all(&buf[..n]).await {
                    // zfs receive stopped reading: its own reason counts.
                    drop(stdin);
                    return Err(match rx.finish().await {
                        Err(x) => cairn_storage::StorageError::from(x).into(),
                        Ok(_) => io("feed zfs receive")(e),
                    });
                }
            }
            drop(stdin);
            rx.finish().await.map_err(cairn_storage::StorageError::from)?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        for nr in done {
            if let Err(e) = zfs.drop_received(zp, &req.resource, nr, &req.snapshot, req.base.is_none()).await {
                tracing::warn!(resource = %req.resource, nr, "could not remove what arrived of a failed shipment: {e}");
                *left = true;
            }
        }
    }
    result
}

/// Fills `buf` from the sender of volume `nr`'s stream, waiting at most
/// [`IDLE`] for it.
async fn read_piece(sock: &mut Conn, buf: &mut [u8], nr: u32) -> Result<(), BackupError> {
    match tokio::time::timeout(IDLE, sock.read_exact(buf)).await {
        Ok(r) => r.map(|_| ()).map_err(io("read the shipment (the sender stopped?)")),
        Err(_) => Err(BackupError::Corrupt { key: format!("shipped volume {nr}"), why: "the sender went quiet".into() }),
    }
}

/// Receives the volumes as backup frames into hidden files, renamed into
/// place once all arrived complete.
async fn receive_files(sock: &mut Conn, req: &ShipListen, running: &Running<'_>, left: &mut bool) -> Result<(), BackupError> {
    let pool = file_pool(&req.pool)?;
    let mut placed: Vec<(PathBuf, PathBuf)> = Vec::new();
    // How many of them were renamed into place.
    let mut renamed = 0;
    let result = async {
        let mut carry = Vec::new();
        for v in &req.volumes {
            let to = Files::snapshot_path(&pool, &req.resource, v.number, &req.snapshot)?;
            let tmp = hidden(&to);
            let to = if req.adopt { Files::received_path(&pool, &req.resource, v.number, &req.snapshot)? } else { to };
            placed.push((tmp.clone(), to));
            let base = match &req.base {
                Some(b) => Some(Files::snapshot_path(&pool, &req.resource, v.number, b)?),
                None => None,
            };
            let frames = read_head(sock, carry, v.size, v.number).await?;
            if let Some(b) = &base {
                tokio::fs::copy(b, &tmp).await.map_err(io(format!("copy the base snapshot {}", b.display())))?;
            }
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .truncate(base.is_none())
                .write(true)
                .open(&tmp)
                .await
                .map_err(io(format!("create {}", tmp.display())))?;
            file.set_len(frames.volume_size).await.map_err(io(format!("size {}", tmp.display())))?;
            carry = receive_volume(sock, file, &tmp, frames, running).await?;
        }
        if !carry.is_empty() {
            return Err(BackupError::Corrupt { key: "shipment".into(), why: "bytes follow the last volume".into() });
        }
        for (tmp, to) in &placed {
            tokio::fs::rename(tmp, to).await.map_err(io(format!("rename {} into place", tmp.display())))?;
            renamed += 1;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        for (i, (tmp, to)) in placed.iter().enumerate() {
            let path = if i < renamed { to } else { tmp };
            match tokio::fs::remove_file(path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(file = %path.display(), "could not remove what arrived of a failed shipment: {e}");
                    *left = true;
                }
                _ => {}
            }
        }
    }
    result
}

/// Receives the volumes as backup frames into thin volumes tagged as
/// receiving (for an incremental each a thin snapshot of its base
/// snapshot, so the blocks that did not change stay shared); they become
/// the snapshot when the controller registered it
/// ([`Lvm::adopt_received`]), and are removed when the shipment fails.
async fn receive_lvm(
    sock: &mut Conn,
    lvm: &Lvm,
    lp: &LvmPool,
    req: &ShipListen,
    running: &Running<'_>,
    left: &mut bool,
) -> Result<(), BackupError> {
    let mut made: Vec<u32> = Vec::new();
    let result = async {
        let mut carry = Vec::new();
        for v in &req.volumes {
            let frames = read_head(sock, carry, v.size, v.number).await?;
            made.push(v.number);
            let dev = lvm.receive_create_on(lp, &req.resource, v.number, &req.snapshot, req.base.as_deref(), frames.volume_size).await?;
            let dev = PathBuf::from(dev);
            let file = tokio::fs::OpenOptions::new().write(true).open(&dev).await.map_err(io(format!("open {}", dev.display())))?;
            carry = receive_volume(sock, file, &dev, frames, running).await?;
        }
        if !carry.is_empty() {
            return Err(BackupError::Corrupt { key: "shipment".into(), why: "bytes follow the last volume".into() });
        }
        for nr in &made {
            lvm.receive_park(lp, &req.resource, *nr, &req.snapshot).await?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        for nr in made {
            if let Err(e) = lvm.receive_abandon(lp, &req.resource, nr, &req.snapshot).await {
                tracing::warn!(resource = %req.resource, nr, "could not remove what arrived of a failed shipment: {e}");
                *left = true;
            }
        }
    }
    result
}

/// How much more than its net size a snapshot may hold: DRBD's internal
/// metadata (a bitmap of one bit per 4 KiB per peer, 32 peers at most,
/// plus its activity log and superblock) and a LUKS2 header.
fn layer_margin(net: u64) -> u64 {
    net / 4096 * 32 / 8 + (64 << 20)
}

/// Reads the next bytes of the stream (at most `piece`'s length) into
/// `frames`; `missing` names what the stream may not end before.
async fn more(sock: &mut Conn, frames: &mut Frames, piece: &mut [u8], missing: &str) -> Result<(), BackupError> {
    let n = match tokio::time::timeout(IDLE, sock.read(piece)).await {
        Ok(r) => r.map_err(io("read the shipment"))?,
        Err(_) => return Err(frames.corrupt("the sender went quiet")),
    };
    if n == 0 {
        return Err(frames.corrupt(format!("the stream ends before its {missing} (the sender stopped)")));
    }
    frames.buf.extend_from_slice(&piece[..n]);
    Ok(())
}

/// Reads a volume's header (after `carry`, the bytes that followed the
/// previous volume) and checks its size against the volume's net `size`.
async fn read_head(sock: &mut Conn, carry: Vec<u8>, size: u64, number: u32) -> Result<Frames, BackupError> {
    let mut frames = Frames::new(&format!("shipped volume {number}"));
    frames.rest_follows = true;
    frames.buf = carry;
    let mut piece = vec![0u8; 64 << 10];
    while !frames.read_header()? {
        more(sock, &mut frames, &mut piece, "header").await?;
    }
    // The controller announces the definition's net size; the sender's
    // snapshot also holds what the layers above the storage keep in it
    // (DRBD's internal metadata, a LUKS header): the stream's own size is
    // the snapshot's, within that margin.
    if frames.volume_size < size || frames.volume_size - size > layer_margin(size) {
        return Err(frames.corrupt(format!("it holds {} bytes, the volume has {size}", frames.volume_size)));
    }
    Ok(frames)
}

/// Writes the chunks of one volume (its header read) into `file` (a copy
/// of the base, or zeros); answers the bytes that followed its trailer
/// (the next volume's).
async fn receive_volume(
    sock: &mut Conn,
    mut file: tokio::fs::File,
    path: &std::path::Path,
    mut frames: Frames,
    running: &Running<'_>,
) -> Result<Vec<u8>, BackupError> {
    let mut piece = vec![0u8; 256 << 10];
    loop {
        while let Some(c) = frames.next_chunk()? {
            file.seek(std::io::SeekFrom::Start(c.index * frames.chunk_size)).await.map_err(io(format!("seek in {}", path.display())))?;
            file.write_all(&c.data).await.map_err(io(format!("write {}", path.display())))?;
        }
        if frames.ended {
            break;
        }
        running.check()?;
        more(sock, &mut frames, &mut piece, "trailer").await?;
    }
    file.sync_all().await.map_err(io(format!("sync {}", path.display())))?;
    Ok(std::mem::take(&mut frames.buf))
}

/// Streams the volumes to the listening satellite and waits for its
/// status.
pub async fn send(transfers: &Transfers, tools: &Tools, req: &ShipSend) -> BackupSent {
    let mut out = BackupSent::default();
    let result = async {
        let running = transfers.start(&req.resource, &req.snapshot)?;
        let zpool = zfs_pool(&req.pool)?;
        // Other pools ship frames: FILE pools compare each chunk with the
        // base snapshot's file, LVM_THIN reads only what the thin pool's
        // metadata says changed.
        let provider = match (&zpool, req.pool.kind) {
            (None, ProviderKind::File | ProviderKind::FileThin | ProviderKind::LvmThin) => Some(crate::backup::provider(tools, &req.pool)?),
            (None, k) => return Err(BackupError::Provider(k.as_str().to_string())),
            (Some(_), _) => None,
        };
        let files = file_pool(&req.pool).ok();
        let sock = match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&req.target)).await {
            Ok(r) => r.map_err(io(format!("connect to {}", req.target)))?,
            Err(_) => {
                return Err(BackupError::Io {
                    what: format!("connect to {}", req.target),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"),
                });
            }
        };
        let _ = sock.set_nodelay(true);
        let sock = secure(sock, req).await?;
        let mut w = BufWriter::with_capacity(1 << 20, sock);
        let token = req.token.0.as_bytes();
        let mut hello = HELLO.to_vec();
        hello.extend_from_slice(&(token.len().min(MAX_TOKEN) as u16).to_be_bytes());
        hello.extend_from_slice(&token[..token.len().min(MAX_TOKEN)]);
        w.write_all(&hello).await.map_err(io("send the hello"))?;
        for nr in &req.volumes {
            if let Some(zp) = &zpool {
                out.volumes.push(send_zfs_volume(&mut w, &tools.zfs, zp, req, *nr, &running).await?);
                continue;
            }
            let Some(provider) = &provider else { continue };
            let (rsc, snap) = (Name::new(&req.resource)?, Name::new(&req.snapshot)?);
            let data = provider.snapshot_open(&rsc, *nr, &snap).await?;
            let sent = async {
                let chunk_size = req.chunk_size.clamp(4096, crate::backup::MAX_CHUNK);
                let mut base = Base::None;
                if let Some(b) = &req.base {
                    let b = Name::new(b)?;
                    if let Some(ranges) = provider.snapshot_changes(&rsc, *nr, &b, &snap).await? {
                        base = Base::Only(chunks_touched(&ranges, chunk_size, data.size));
                    } else if let Some(pool) = &files {
                        base = Base::Compare(Files::snapshot_path(pool, &req.resource, *nr, &b)?);
                    } else {
                        return Err(BackupError::Provider(format!("incremental shipping of {}", req.pool.kind.as_str())));
                    }
                }
                send_volume(&mut w, std::path::Path::new(&data.path), data.size, base, *nr, chunk_size, &running).await
            }
            .await;
            if let Err(e) = provider.snapshot_close(&rsc, *nr, &snap).await {
                tracing::warn!(resource = %req.resource, snapshot = %req.snapshot, "could not close the snapshot after shipping it: {e}");
            }
            out.volumes.push(sent?);
        }
        w.flush().await.map_err(io("send the shipment"))?;
        let mut sock = w.into_inner();
        let mut status = [0u8; 1];
        // The receiver syncs its files before it answers.
        match tokio::time::timeout(IDLE, sock.read_exact(&mut status)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(io("read the receiver's status")(e)),
            Err(_) => return Err(BackupError::Corrupt { key: "shipment".into(), why: "the receiver did not confirm it".into() }),
        }
        if status[0] != 0 {
            // The reason follows at once; a receiver that stops in between
            // does not hold the sender up.
            let reason = async {
                let mut len = [0u8; 4];
                sock.read_exact(&mut len).await.ok()?;
                let mut msg = vec![0u8; (u32::from_be_bytes(len) as usize).min(64 << 10)];
                sock.read_exact(&mut msg).await.ok()?;
                Some(String::from_utf8_lossy(&msg).into_owned())
            };
            let why = tokio::time::timeout(Duration::from_secs(10), reason)
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| String::from("(no reason given)"));
            return Err(BackupError::Corrupt { key: "shipment".into(), why: format!("the receiving node refused it: {why}") });
        }
        Ok::<(), BackupError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(resource = %req.resource, snapshot = %req.snapshot, "shipping failed: {e}");
        out.error = Some(ObjectError {
            message: format!("Shipping snapshot '{}' of '{}' failed.", req.snapshot, req.resource),
            cause: Some(e.to_string()),
            details: None,
        });
    }
    out
}

/// The sender's connection: TLS when the receiving node's controller
/// named the listener's certificate (only that certificate is accepted),
/// else the plain socket.
async fn secure(sock: TcpStream, req: &ShipSend) -> Result<Conn, BackupError> {
    let Some(pin) = &req.tls_sha256 else { return Ok(Box::new(sock)) };
    let what = format!("TLS to {}", req.target);
    let config = cairn_proto::tls::pinned_client_config(pin).map_err(|e| BackupError::Io {
        what: what.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
    })?;
    // The name is not checked (the certificate is pinned); the address is
    // what the sender knows.
    let name = match req.target.parse::<std::net::SocketAddr>() {
        Ok(a) => rustls::pki_types::ServerName::IpAddress(a.ip().into()),
        Err(_) => rustls::pki_types::ServerName::try_from("cairn-ship").map_err(|e| BackupError::Io {
            what: what.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
        })?,
    };
    match tokio::time::timeout(Duration::from_secs(10), tokio_rustls::TlsConnector::from(config).connect(name, sock)).await {
        Ok(r) => Ok(Box::new(r.map_err(io(what))?)),
        Err(_) => Err(BackupError::Io { what, source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS handshake") }),
    }
}

/// Sends one volume as `zfs send [-i base]` gives it, in pieces after
/// their length, then a length of 0; only once `zfs send` ended well (a
/// sender that fails closes the connection instead, and the receiver
/// drops what it got).
async fn send_zfs_volume(
    w: &mut BufWriter<Conn>,
    zfs: &Zfs,
    zp: &ZfsPool,
    req: &ShipSend,
    nr: u32,
    running: &Running<'_>,
) -> Result<BackupVolumeSent, BackupError> {
    let mut tx = zfs.send_stream(zp, &req.resource, nr, &req.snapshot, req.base.as_deref()).await?;
    let Some(mut stdout) = tx.stdout.take() else {
        return Err(BackupError::Corrupt { key: "shipment".into(), why: "zfs send has no output".into() });
    };
    let mut sent = BackupVolumeSent { number: nr, ..Default::default() };
    let mut buf = vec![0u8; MAX_PIECE];
    loop {
        running.check()?;
        let n = stdout.read(&mut buf).await.map_err(io("read zfs send"))?;
        if n == 0 {
            break;
        }
        w.write_all(&(n as u32).to_be_bytes()).await.map_err(io("send the stream"))?;
        w.write_all(&buf[..n]).await.map_err(io("send the stream"))?;
        sent.size += n as u64;
        sent.stored_bytes += n as u64 + 4;
        sent.chunks_stored += 1;
    }
    drop(stdout);
    tx.finish().await.map_err(cairn_storage::StorageError::from)?;
    w.write_all(&0u32.to_be_bytes()).await.map_err(io("send the end of a volume"))?;
    sent.stored_bytes += 4;
    Ok(sent)
}

/// What an incremental sends of a volume.
enum Base {
    /// Full: every chunk that is not zeros.
    None,
    /// Every chunk that differs from this file (the base snapshot both
    /// clusters hold).
    Compare(PathBuf),
    /// The chunks marked (those the provider says changed since the
    /// base), zeros included.
    Only(Vec<bool>),
}

/// Sends one volume of `size` bytes read from `path`: every chunk that is
/// not zeros (full), or what `base` says changed (incremental).
async fn send_volume(
    w: &mut BufWriter<Conn>,
    path: &std::path::Path,
    size: u64,
    base: Base,
    number: u32,
    chunk_size: u64,
    running: &Running<'_>,
) -> Result<BackupVolumeSent, BackupError> {
    let mut file = tokio::fs::File::open(path).await.map_err(io(format!("open the snapshot {}", path.display())))?;
    let mut base_file = match &base {
        Base::Compare(b) => {
            let f = tokio::fs::File::open(b).await.map_err(io(format!("open the base snapshot {}", b.display())))?;
            let len = f.metadata().await.map_err(io(format!("read the size of {}", b.display())))?.len();
            Some((f, len))
        }
        _ => None,
    };
    let only = match &base {
        Base::Only(o) => Some(o.as_slice()),
        _ => None,
    };
    let mut sent = BackupVolumeSent { number, size, ..Default::default() };
    let head = header(chunk_size, size);
    w.write_all(&head).await.map_err(io("send a volume header"))?;
    sent.stored_bytes += head.len() as u64;
    let mut buf = vec![0u8; chunk_size as usize];
    let mut old = vec![0u8; chunk_size as usize];
    let (mut index, mut offset) = (0u64, 0u64);
    // Where the file's position is (chunks left unread move it on).
    let mut at = 0u64;
    while offset < size {
        running.check()?;
        let len = (size - offset).min(chunk_size) as usize;
        if only.is_some_and(|o| !o.get(index as usize).copied().unwrap_or(true)) {
            offset += len as u64;
            index += 1;
            continue;
        }
        if at != offset {
            file.seek(std::io::SeekFrom::Start(offset)).await.map_err(io(format!("seek in {}", path.display())))?;
        }
        file.read_exact(&mut buf[..len]).await.map_err(io(format!("read {}", path.display())))?;
        at = offset + len as u64;
        let raw = &buf[..len];
        let wanted = match (&mut base_file, only) {
            (Some((f, base_len)), _) => {
                // The receiver's copy of the base reads as zeros past its end.
                let have = base_len.saturating_sub(offset).min(len as u64) as usize;
                old[..len].fill(0);
                if have > 0 {
                    f.read_exact(&mut old[..have]).await.map_err(io("read the base snapshot"))?;
                }
                raw != &old[..len]
            }
            (None, Some(_)) => true,
            (None, None) => !is_zero(raw),
        };
        if wanted {
            // SHA-256 frames: a receiving cluster of an older Cairn reads
            // only those (a new one reads both).
            let f = frame(index, raw, Checksum::Sha256)?;
            w.write_all(&f).await.map_err(io("send a chunk"))?;
            sent.stored_bytes += f.len() as u64;
            sent.chunks_stored += 1;
        }
        offset += len as u64;
        index += 1;
    }
    let t = trailer(sent.chunks_stored);
    w.write_all(&t).await.map_err(io("send a volume trailer"))?;
    sent.stored_bytes += t.len() as u64;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen_req(dir: &std::path::Path) -> ShipListen {
        ShipListen {
            token: cairn_proto::Secret("t".repeat(64)),
            address: "127.0.0.1".into(),
            pool: PoolDesired { name: "p".into(), kind: ProviderKind::FileThin, backing: Some(dir.display().to_string()) },
            resource: "dst".into(),
            snapshot: "s1".into(),
            base: None,
            volumes: vec![cairn_proto::ShipVolume { number: 0, size: 1 << 20 }],
            adopt: false,
        }
    }

    /// The test runtime runs one task at a time: the listener's task has
    /// not run (nor registered its transfer) when the cancel comes, as on
    /// a busy satellite. The cancel must still end it at once, not after
    /// the listener's ten minutes of waiting for a sender.
    #[tokio::test]
    async fn a_cancel_that_comes_before_the_listener_ran_ends_it_at_once() {
        let pool = tempfile::tempdir().expect("tempdir");
        let tools = crate::apply::Storage::new(Arc::new(cairn_exec::FakeRunner::default()), Duration::from_secs(5)).tools;
        let (ships, transfers) = (Arc::new(Ships::default()), Arc::new(Transfers::default()));
        let req = listen_req(pool.path());
        let token = req.token.0.clone();
        listen(ships.clone(), transfers.clone(), &Inflight::default(), tools, req, None).await.expect("listening");
        let r = tokio::time::timeout(Duration::from_secs(10), ships.result(&token, true)).await.expect("the cancel ends the wait");
        let why = r.expect_err("a cancelled shipment is no success");
        assert!(why.contains("aborted"), "{why}");
        // The transfer is gone: the same snapshot can be received again.
        assert!(transfers.start("dst", "s1").is_ok());
    }
}
