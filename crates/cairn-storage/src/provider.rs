//! One interface over every storage provider: a pool is resolved once
//! from its typed [`ProviderKind`] into an `Arc<dyn Provider>` that knows
//! its pool and its tools, and the satellite's apply works through that
//! interface only (no matching on kinds there).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;

use cairn_exec::BoxFuture;
use cairn_proto::{PoolDesired, ProviderKind, VolumeObserved, ZfsRollback};

use crate::file::{FilePool, Files, VolumeFile};
use crate::lvm::{Lvm, LvmPool, lv_name};
use crate::zfs::{Zfs, ZfsPool};
use crate::{Kib, Name, StorageError};

/// One volume to make: resource, number, identity (from its UUID), the
/// size the backing device needs, and the snapshot to start from if it is
/// new (`(resource, snapshot)`, a restore).
#[derive(Debug, Clone, Copy)]
pub struct VolumeSpec<'a> {
    pub rsc: &'a Name,
    pub nr: u32,
    pub id: &'a str,
    pub size: Kib,
    pub source: Option<(&'a Name, &'a Name)>,
    /// The volume to copy if it is new (a clone).
    pub clone_from: Option<CloneFrom<'a>>,
}

/// The volume of another resource, same number, same pool, a clone
/// starts as a copy of.
#[derive(Debug, Clone, Copy)]
pub struct CloneFrom<'a> {
    pub rsc: &'a Name,
    pub id: &'a str,
    /// ZFS: `zfs clone` of a snapshot instead of send/receive.
    pub zfs_clone: bool,
    /// DRBD sits on the copy: the source's metadata must not survive in
    /// it, DRBD makes fresh metadata.
    pub fresh_drbd_md: bool,
}

/// A volume that exists in a pool: resource, number, identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VolumeRef {
    pub rsc: Name,
    pub nr: u32,
    pub id: String,
}

/// A pool's size and free space, KiB, and whether it takes snapshots
/// (None: not known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub total_kib: i64,
    pub free_kib: i64,
    pub supports_snapshots: Option<bool>,
}

/// KiB each volume takes from its pool, by resource and volume number.
pub type Allocated = BTreeMap<(String, u32), i64>;

/// Byte ranges of a volume: `(offset, length)`.
pub type ByteRanges = Vec<(u64, u64)>;

/// What changed between two snapshots of a volume: ranges written, and
/// ranges only freed (zeros now; unchanged where the base held zeros
/// there too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub written: ByteRanges,
    pub freed: ByteRanges,
}

/// Snapshot names of one resource in a pool -> the volume numbers each has.
pub type SnapshotMap = BTreeMap<String, Vec<u32>>;

/// A storage pool of one provider kind. Every method is idempotent:
/// making what exists or removing what is gone succeeds.
pub trait Provider: Send + Sync {
    /// The pool's name.
    fn pool(&self) -> &str;
    fn kind(&self) -> ProviderKind;
    /// Whether volumes take space here (false for DISKLESS).
    fn has_storage(&self) -> bool {
        true
    }
    /// Makes the volume exist with at least the size, as a block device.
    fn ensure<'a>(&'a self, v: VolumeSpec<'a>) -> BoxFuture<'a, Result<VolumeObserved, StorageError>>;
    /// Removes the volumes of `rsc` that `keep` does not name (by number
    /// and identity; an earlier incarnation of a number goes too). An
    /// empty `keep` removes all of them.
    fn remove_others<'a>(&'a self, rsc: &'a Name, keep: &'a [(u32, String)]) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Resources with volumes in this pool (made by Cairn).
    fn resources(&self) -> BoxFuture<'_, Result<BTreeSet<String>, StorageError>>;
    fn capacity(&self) -> BoxFuture<'_, Result<Capacity, StorageError>>;
    /// What each of `volumes` takes from the pool now, KiB (thin volumes
    /// grow as they are written). Volumes not found are left out.
    fn allocated<'a>(&'a self, volumes: &'a [VolumeRef]) -> BoxFuture<'a, Result<Allocated, StorageError>>;
    /// Why this pool cannot take snapshots; None when it can (or when
    /// that cannot be known before trying).
    fn snapshots_refused(&self) -> BoxFuture<'_, Option<String>> {
        let why = format!("A {} pool takes no snapshots: they need LVM_THIN, or FILE_THIN on a file system with reflinks.", self.kind());
        Box::pin(async move { Some(why) })
    }
    fn snapshots<'a>(&'a self, _rsc: &'a Name) -> BoxFuture<'a, Result<SnapshotMap, StorageError>> {
        Box::pin(async { Ok(SnapshotMap::new()) })
    }
    fn create_snapshot<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        let why = format!("pool '{}' ({}) takes no snapshot '{snap}' of {}", self.pool(), self.kind(), v.rsc);
        Box::pin(async move { Err(StorageError::BadBacking(why)) })
    }
    fn delete_snapshot<'a>(&'a self, _rsc: &'a Name, _nr: u32, _snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }
    /// Removes what is left of `rsc` after its volumes once none of its
    /// snapshots is wanted here (ZFS: snapshots kept on volumes renamed
    /// aside).
    fn forget<'a>(&'a self, _rsc: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }
    /// Gives a snapshot shipped from another cluster its name now that it
    /// is desired: true when there was one (ZFS; FILE adopts its received
    /// files itself).
    fn adopt_received<'a>(&'a self, _v: &'a VolumeRef, _snap: &'a Name) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async { Ok(false) })
    }
    /// Removes what a shipment of snapshot `snap` left waiting for a
    /// registration that never came (before a snapshot of that name is
    /// taken here).
    fn discard_received<'a>(&'a self, _v: &'a VolumeRef, _snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }
    /// Whether the volume still has to go back to `snap` for rollback `id`
    /// (each rollback id happens once).
    fn needs_rollback<'a>(&'a self, _v: &'a VolumeRef, _snap: &'a Name, _id: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async { Ok(false) })
    }
    /// Back to `snap` for rollback `id`; `zfs` is how ZFS does it (LINSTOR's
    /// strategy; other providers have one way).
    fn rollback<'a>(
        &'a self,
        _v: &'a VolumeRef,
        _snap: &'a Name,
        _id: &'a str,
        _zfs: ZfsRollback,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }
    /// A snapshot's data for a backup to read: its device or file and its
    /// size in bytes. [`Provider::snapshot_close`] follows the read.
    fn snapshot_open<'a>(&'a self, _rsc: &'a Name, _nr: u32, _snap: &'a Name) -> BoxFuture<'a, Result<SnapshotData, StorageError>> {
        let why = format!("backups of {} pools are not supported", self.kind());
        Box::pin(async move { Err(StorageError::BadBacking(why)) })
    }
    fn snapshot_close<'a>(&'a self, _rsc: &'a Name, _nr: u32, _snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }
    /// The byte ranges `(offset, length)` where snapshot `snap` differs
    /// from snapshot `base` of the same volume, from what the provider
    /// knows without reading the data; None when it knows nothing (the
    /// reader compares every chunk).
    fn snapshot_changes<'a>(
        &'a self,
        _rsc: &'a Name,
        _nr: u32,
        _base: &'a Name,
        _snap: &'a Name,
    ) -> BoxFuture<'a, Result<Option<ByteRanges>, StorageError>> {
        Box::pin(async { Ok(None) })
    }
    /// [`Provider::snapshot_changes`] with the ranges only freed apart,
    /// where the provider tells them apart (ZFS); the others' changes count
    /// as written.
    fn snapshot_delta<'a>(
        &'a self,
        rsc: &'a Name,
        nr: u32,
        base: &'a Name,
        snap: &'a Name,
    ) -> BoxFuture<'a, Result<Option<Delta>, StorageError>> {
        Box::pin(async move { Ok(self.snapshot_changes(rsc, nr, base, snap).await?.map(|written| Delta { written, freed: Vec::new() })) })
    }
    /// Somewhere zeroed, `size` bytes long, to write snapshot `snap` of
    /// volume `nr` of `rsc` into (a restore): its device or file, which
    /// becomes the snapshot with [`Provider::receive_done`] or goes with
    /// [`Provider::receive_abandon`]. Never one that exists (another
    /// transfer's); one that fails removes what it began itself, so the
    /// caller removes nothing after a failure here.
    fn receive_create<'a>(&'a self, _rsc: &'a Name, _nr: u32, _snap: &'a Name, _size: u64) -> BoxFuture<'a, Result<String, StorageError>> {
        let why = format!("pool '{}' ({}) cannot receive a backup", self.pool(), self.kind());
        Box::pin(async move { Err(StorageError::BadBacking(why)) })
    }
    fn receive_done<'a>(&'a self, _rsc: &'a Name, _nr: u32, _snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }
    fn receive_abandon<'a>(&'a self, _rsc: &'a Name, _nr: u32, _snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }
    /// Removes whatever [`Provider::receive_create`] and
    /// [`Provider::receive_done`] made of snapshot `snap` of volume `nr`,
    /// whichever step it reached (a restore that failed later, or whose
    /// registration failed): the place it was written, and the snapshot it
    /// became. Nothing else: ZFS only destroys a zvol no resource took
    /// over, LVM only an LV tagged as receiving or as a snapshot.
    fn receive_undo<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        self.receive_abandon(rsc, nr, snap)
    }
}

/// A snapshot opened for a backup: where to read it, and how many bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotData {
    pub path: String,
    pub size: u64,
}

/// The tools of every provider, shared by all pools of a satellite.
#[derive(Clone)]
pub struct Tools {
    pub files: Files,
    pub lvm: Lvm,
    pub zfs: Zfs,
}

/// Why a pool cannot be resolved into a provider.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    Backing(#[from] StorageError),
    #[error("provider {0} is not implemented")]
    NotImplemented(ProviderKind),
}

/// Resolves a pool into its provider: once per pool configuration.
pub fn resolve(tools: &Tools, p: &PoolDesired) -> Result<Arc<dyn Provider>, ResolveError> {
    let backing = p.backing.as_deref().unwrap_or_default();
    Ok(match p.kind {
        ProviderKind::Diskless => Arc::new(Diskless { pool: p.name.clone() }),
        ProviderKind::File | ProviderKind::FileThin => Arc::new(FileProvider {
            pool: FilePool::new(&p.name, backing, p.kind == ProviderKind::FileThin)?,
            files: tools.files.clone(),
            reflinks: Mutex::new(None),
            contents: Mutex::new(None),
        }),
        ProviderKind::Lvm | ProviderKind::LvmThin => Arc::new(LvmProvider {
            pool: LvmPool::new(&p.name, backing, p.kind == ProviderKind::LvmThin)?,
            lvm: tools.lvm.clone(),
            kind: p.kind,
        }),
        ProviderKind::Zfs | ProviderKind::ZfsThin => Arc::new(ZfsProvider {
            pool: ZfsPool::new(&p.name, backing, p.kind == ProviderKind::ZfsThin)?,
            zfs: tools.zfs.clone(),
            kind: p.kind,
        }),
        other => return Err(ResolveError::NotImplemented(other)),
    })
}

/// DISKLESS: no storage; a DRBD client.
pub struct Diskless {
    pool: String,
}

impl Provider for Diskless {
    fn pool(&self) -> &str {
        &self.pool
    }
    fn kind(&self) -> ProviderKind {
        ProviderKind::Diskless
    }
    fn has_storage(&self) -> bool {
        false
    }
    fn ensure<'a>(&'a self, v: VolumeSpec<'a>) -> BoxFuture<'a, Result<VolumeObserved, StorageError>> {
        Box::pin(async move { Ok(VolumeObserved { number: v.nr, disk_state: "Diskless".into(), ..Default::default() }) })
    }
    fn remove_others<'a>(&'a self, _rsc: &'a Name, _keep: &'a [(u32, String)]) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }
    fn resources(&self) -> BoxFuture<'_, Result<BTreeSet<String>, StorageError>> {
        Box::pin(async { Ok(BTreeSet::new()) })
    }
    fn capacity(&self) -> BoxFuture<'_, Result<Capacity, StorageError>> {
        Box::pin(async { Ok(Capacity { total_kib: 0, free_kib: 0, supports_snapshots: None }) })
    }
    fn allocated<'a>(&'a self, _volumes: &'a [VolumeRef]) -> BoxFuture<'a, Result<Allocated, StorageError>> {
        Box::pin(async { Ok(BTreeMap::new()) })
    }
}

/// FILE and FILE_THIN: a file per volume, attached as a loop device.
pub struct FileProvider {
    pool: FilePool,
    files: Files,
    /// Whether the directory makes reflinks: probed when first needed,
    /// again when the pool is resolved anew (configured, or a full apply).
    reflinks: Mutex<Option<bool>>,
    /// What the directory holds: read once, when first needed (this
    /// provider is made anew on each full apply and whenever the pool is
    /// configured again), then kept current by its own changes, so no
    /// request lists the whole directory.
    contents: Mutex<Option<Contents>>,
}

/// A pool directory's volume and snapshot files, by resource.
#[derive(Debug, Default)]
struct Contents {
    volumes: BTreeMap<String, BTreeSet<(u32, String)>>,
    snapshots: BTreeMap<String, SnapshotMap>,
}

/// `<rsc>_<NNNNN>@<snap>.snap` -> resource, volume number, snapshot.
fn snapshot_of_file(file: &str) -> Option<(String, u32, String)> {
    let (vol, snap) = file.strip_suffix(".snap")?.split_once('@')?;
    let (rsc, nr) = crate::split_volume_name(vol)?;
    (crate::safe_name(rsc).is_ok() && crate::safe_name(snap).is_ok()).then(|| (rsc.to_string(), nr, snap.to_string()))
}

impl Contents {
    fn read(pool: &FilePool) -> Result<Contents, StorageError> {
        let mut c = Contents::default();
        let entries = match std::fs::read_dir(&pool.dir) {
            Ok(rd) => rd,
            // Nothing can be there (the pool's capacity says why).
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => return Ok(c),
            Err(e) => return Err(StorageError::Io { what: format!("list {}", pool.dir.display()), source: e }),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(v) = crate::file::volume_of_file(&name) {
                c.volumes.entry(v.rsc).or_default().insert((v.nr, v.id));
            } else if let Some((rsc, nr, snap)) = snapshot_of_file(&name) {
                c.snapshots.entry(rsc).or_default().entry(snap).or_default().push(nr);
            }
        }
        Ok(c)
    }
}

impl FileProvider {
    fn file(v: &VolumeRef) -> VolumeFile {
        VolumeFile::new(&v.rsc, v.nr, &v.id)
    }

    /// Works on the directory's contents, reading them first if needed.
    fn contents<R>(&self, f: impl FnOnce(&mut Contents) -> R) -> Result<R, StorageError> {
        let mut guard = self.contents.lock();
        let c = match &mut *guard {
            Some(c) => c,
            empty => empty.insert(Contents::read(&self.pool)?),
        };
        Ok(f(c))
    }

    /// The cached answer, else a probe; None when the probe cannot run.
    async fn reflinks(&self) -> Option<bool> {
        if let Some(known) = *self.reflinks.lock() {
            return Some(known);
        }
        match self.files.probe_reflink(&self.pool).await {
            Ok(yes) => {
                tracing::info!(pool = %self.pool.name, dir = %self.pool.dir.display(), reflinks = yes, "probed the pool's file system");
                *self.reflinks.lock() = Some(yes);
                Some(yes)
            }
            Err(e) => {
                tracing::warn!(pool = %self.pool.name, dir = %self.pool.dir.display(), "cannot probe the pool for reflinks: {e}");
                None
            }
        }
    }
}

impl Provider for FileProvider {
    fn pool(&self) -> &str {
        &self.pool.name
    }
    fn kind(&self) -> ProviderKind {
        if self.pool.thin { ProviderKind::FileThin } else { ProviderKind::File }
    }
    fn ensure<'a>(&'a self, v: VolumeSpec<'a>) -> BoxFuture<'a, Result<VolumeObserved, StorageError>> {
        Box::pin(async move {
            let vf = VolumeFile::new(v.rsc, v.nr, v.id);
            if let Some((src, snap)) = v.source {
                self.files.restore_into(&self.pool, &vf, src, snap).await?;
            }
            if let Some(c) = v.clone_from {
                let reflinks = self.pool.thin && self.reflinks().await == Some(true);
                let fresh_md = c.fresh_drbd_md.then(|| v.size.get().saturating_mul(1024));
                self.files.clone_into(&self.pool, &vf, &VolumeFile::new(c.rsc, v.nr, c.id), reflinks, fresh_md).await?;
            }
            let made = self.files.ensure(&self.pool, &vf, v.size).await?;
            self.contents(|c| c.volumes.entry(vf.rsc).or_default().insert((vf.nr, vf.id)))?;
            Ok(made)
        })
    }
    fn remove_others<'a>(&'a self, rsc: &'a Name, keep: &'a [(u32, String)]) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let stale: Vec<(u32, String)> = self.contents(|c| {
                c.volumes.get(rsc.as_str()).map(|have| have.iter().filter(|v| !keep.contains(v)).cloned().collect()).unwrap_or_default()
            })?;
            for (nr, id) in stale {
                self.files.remove(&self.pool, &VolumeFile::new(rsc, nr, &id)).await?;
                self.contents(|c| {
                    if let Some(have) = c.volumes.get_mut(rsc.as_str()) {
                        have.remove(&(nr, id.clone()));
                        if have.is_empty() {
                            c.volumes.remove(rsc.as_str());
                        }
                    }
                })?;
            }
            Ok(())
        })
    }
    fn resources(&self) -> BoxFuture<'_, Result<BTreeSet<String>, StorageError>> {
        Box::pin(async move { self.contents(|c| c.volumes.keys().cloned().collect()) })
    }
    fn capacity(&self) -> BoxFuture<'_, Result<Capacity, StorageError>> {
        Box::pin(async move {
            let (total_kib, free_kib) = self.files.capacity(&self.pool).await?;
            let supports_snapshots = if self.pool.thin { self.reflinks().await } else { Some(false) };
            Ok(Capacity { total_kib, free_kib, supports_snapshots })
        })
    }
    fn allocated<'a>(&'a self, volumes: &'a [VolumeRef]) -> BoxFuture<'a, Result<Allocated, StorageError>> {
        Box::pin(async move {
            let mut out = BTreeMap::new();
            for v in volumes {
                match Files::sizes(&self.pool, &Self::file(v)) {
                    Ok((_, allocated)) => {
                        out.insert((v.rsc.to_string(), v.nr), allocated);
                    }
                    Err(e) => tracing::debug!(rsc = %v.rsc, volume = v.nr, "cannot read the allocated size: {e}"),
                }
            }
            Ok(out)
        })
    }
    fn snapshots_refused(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(async move {
            if !self.pool.thin {
                return Some("A FILE pool takes no snapshots: they need FILE_THIN on a file system with reflinks, or LVM_THIN.".into());
            }
            (self.reflinks().await == Some(false)).then(|| {
                format!(
                    "The file system of '{}' has no reflinks (cp --reflink=always fails there); FILE_THIN snapshots need XFS (reflink=1) or Btrfs.",
                    self.pool.dir.display()
                )
            })
        })
    }
    fn snapshots<'a>(&'a self, rsc: &'a Name) -> BoxFuture<'a, Result<SnapshotMap, StorageError>> {
        Box::pin(async move { self.contents(|c| c.snapshots.get(rsc.as_str()).cloned().unwrap_or_default()) })
    }
    fn create_snapshot<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.files.create_snapshot(&self.pool, &Self::file(v), snap).await?;
            self.contents(|c| {
                let nrs = c.snapshots.entry(v.rsc.to_string()).or_default().entry(snap.to_string()).or_default();
                if !nrs.contains(&v.nr) {
                    nrs.push(v.nr);
                }
            })
        })
    }
    fn adopt_received<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            if !self.files.adopt_received(&self.pool, &v.rsc, v.nr, snap)? {
                return Ok(false);
            }
            self.contents(|c| {
                let nrs = c.snapshots.entry(v.rsc.to_string()).or_default().entry(snap.to_string()).or_default();
                if !nrs.contains(&v.nr) {
                    nrs.push(v.nr);
                }
            })?;
            Ok(true)
        })
    }
    fn discard_received<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { Files::discard_received(&self.pool, &v.rsc, v.nr, snap) })
    }
    fn snapshot_open<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<SnapshotData, StorageError>> {
        Box::pin(async move {
            let path = Files::snapshot_path(&self.pool, rsc, nr, snap)?;
            let meta = std::fs::metadata(&path).map_err(|e| StorageError::Io { what: format!("open {}", path.display()), source: e })?;
            Ok(SnapshotData { path: path.to_string_lossy().to_string(), size: meta.len() })
        })
    }
    fn receive_create<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name, size: u64) -> BoxFuture<'a, Result<String, StorageError>> {
        Box::pin(async move {
            self.pool.create_dir()?;
            let tmp = Files::receiving_path(&Files::snapshot_path(&self.pool, rsc, nr, snap)?);
            let io = |what: &str| {
                let what = format!("{what} {}", tmp.display());
                move |source| StorageError::Io { what, source }
            };
            // Never one that exists: it is another transfer's, or left by
            // one whose record could not be cleaned up (removed by hand).
            let f = std::fs::OpenOptions::new().create_new(true).write(true).open(&tmp).map_err(io("create"))?;
            if let Err(e) = f.set_len(size) {
                drop(f);
                let _ = std::fs::remove_file(&tmp);
                return Err(io("size")(e));
            }
            Ok(tmp.to_string_lossy().to_string())
        })
    }
    fn receive_done<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let to = Files::snapshot_path(&self.pool, rsc, nr, snap)?;
            let tmp = Files::receiving_path(&to);
            std::fs::rename(&tmp, &to).map_err(|e| StorageError::Io { what: format!("rename {} into place", tmp.display()), source: e })
        })
    }
    fn receive_abandon<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let tmp = Files::receiving_path(&Files::snapshot_path(&self.pool, rsc, nr, snap)?);
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(StorageError::Io { what: format!("remove {}", tmp.display()), source: e })
                }
                _ => Ok(()),
            }
        })
    }
    fn receive_undo<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.receive_abandon(rsc, nr, snap).await?;
            self.delete_snapshot(rsc, nr, snap).await
        })
    }
    fn delete_snapshot<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.files.delete_snapshot(&self.pool, rsc, nr, snap).await?;
            self.contents(|c| {
                if let Some(snaps) = c.snapshots.get_mut(rsc.as_str()) {
                    if let Some(nrs) = snaps.get_mut(snap.as_str()) {
                        nrs.retain(|n| *n != nr);
                        if nrs.is_empty() {
                            snaps.remove(snap.as_str());
                        }
                    }
                    if snaps.is_empty() {
                        c.snapshots.remove(rsc.as_str());
                    }
                }
            })
        })
    }
    fn needs_rollback<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name, id: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move { self.files.needs_rollback(&self.pool, &Self::file(v), snap, id) })
    }
    fn rollback<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name, id: &'a str, _zfs: ZfsRollback) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.files.rollback(&self.pool, &Self::file(v), snap, id).await })
    }
}

/// LVM and LVM_THIN: a logical volume per volume.
pub struct LvmProvider {
    pool: LvmPool,
    lvm: Lvm,
    kind: ProviderKind,
}

impl Provider for LvmProvider {
    fn pool(&self) -> &str {
        &self.pool.name
    }
    fn kind(&self) -> ProviderKind {
        self.kind
    }
    fn ensure<'a>(&'a self, v: VolumeSpec<'a>) -> BoxFuture<'a, Result<VolumeObserved, StorageError>> {
        Box::pin(async move {
            let source = match (v.source, v.clone_from) {
                (Some((src, snap)), _) => Some(format!("{}_{snap}", lv_name(src, v.nr)?)),
                // A clone is a thin snapshot of the source's volume itself.
                (None, Some(c)) => Some(lv_name(c.rsc, v.nr)?),
                (None, None) => None,
            };
            let fresh_md = v.source.is_none() && v.clone_from.is_some_and(|c| c.fresh_drbd_md);
            if let (None, Some(src), None) = (v.source, source.as_deref(), &self.pool.thin_pool) {
                return self.lvm.ensure_thick_clone(&self.pool, v.rsc, v.nr, v.id, v.size, src, fresh_md).await;
            }
            self.lvm.ensure_from(&self.pool, v.rsc, v.nr, v.id, v.size, source.as_deref().map(|s| (s, fresh_md))).await
        })
    }
    fn remove_others<'a>(&'a self, rsc: &'a Name, keep: &'a [(u32, String)]) -> BoxFuture<'a, Result<(), StorageError>> {
        // An earlier incarnation of a kept number is replaced by `ensure`
        // (its id tag differs), so numbers are enough here.
        let keep: Vec<u32> = keep.iter().map(|(nr, _)| *nr).collect();
        Box::pin(async move { self.lvm.remove_others(&self.pool, rsc, &keep).await })
    }
    fn resources(&self) -> BoxFuture<'_, Result<BTreeSet<String>, StorageError>> {
        Box::pin(async move { Ok(self.lvm.resources(&self.pool).await?.into_iter().collect()) })
    }
    fn capacity(&self) -> BoxFuture<'_, Result<Capacity, StorageError>> {
        Box::pin(async move {
            let c = self.lvm.capacity(&self.pool).await?;
            Ok(Capacity { total_kib: c.total_kib, free_kib: c.free_kib, supports_snapshots: Some(self.pool.thin_pool.is_some()) })
        })
    }
    fn allocated<'a>(&'a self, _volumes: &'a [VolumeRef]) -> BoxFuture<'a, Result<Allocated, StorageError>> {
        Box::pin(async move { self.lvm.allocated(&self.pool).await })
    }
    fn snapshots_refused(&self) -> BoxFuture<'_, Option<String>> {
        let thick = self.pool.thin_pool.is_none();
        Box::pin(async move { thick.then(|| "A thick LVM pool takes no snapshots here: they need LVM_THIN.".to_string()) })
    }
    fn snapshots<'a>(&'a self, rsc: &'a Name) -> BoxFuture<'a, Result<SnapshotMap, StorageError>> {
        Box::pin(async move { self.lvm.snapshots(&self.pool, rsc).await })
    }
    fn create_snapshot<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.lvm.create_snapshot(&self.pool, &v.rsc, v.nr, snap).await })
    }
    fn delete_snapshot<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.lvm.delete_snapshot(&self.pool, rsc, nr, snap).await })
    }
    fn needs_rollback<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name, id: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move { self.lvm.needs_rollback(&self.pool, &v.rsc, v.nr, snap, id).await })
    }
    fn rollback<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name, id: &'a str, _zfs: ZfsRollback) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.lvm.rollback(&self.pool, &v.rsc, v.nr, &v.id, snap, id).await })
    }
    fn snapshot_open<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<SnapshotData, StorageError>> {
        Box::pin(async move {
            let (path, size) = self.lvm.snapshot_open(&self.pool, rsc, nr, snap).await?;
            Ok(SnapshotData { path, size })
        })
    }
    fn snapshot_close<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.lvm.snapshot_close(&self.pool, rsc, nr, snap).await })
    }
    fn snapshot_changes<'a>(
        &'a self,
        rsc: &'a Name,
        nr: u32,
        base: &'a Name,
        snap: &'a Name,
    ) -> BoxFuture<'a, Result<Option<ByteRanges>, StorageError>> {
        Box::pin(async move { self.lvm.snapshot_changes(&self.pool, rsc, nr, base, snap).await.map(Some) })
    }
    fn receive_create<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name, size: u64) -> BoxFuture<'a, Result<String, StorageError>> {
        Box::pin(async move { self.lvm.receive_create(&self.pool, rsc, nr, snap, size).await })
    }
    fn receive_done<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.lvm.receive_done(&self.pool, rsc, nr, snap).await })
    }
    fn receive_abandon<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.lvm.receive_abandon(&self.pool, rsc, nr, snap).await })
    }
    fn receive_undo<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.lvm.receive_abandon(&self.pool, rsc, nr, snap).await?;
            self.lvm.delete_snapshot(&self.pool, rsc, nr, snap).await
        })
    }
    fn adopt_received<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            if self.pool.thin_pool.is_none() {
                return Ok(false);
            }
            self.lvm.adopt_received(&self.pool, &v.rsc, v.nr, snap).await
        })
    }
    fn discard_received<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            if self.pool.thin_pool.is_none() {
                return Ok(());
            }
            self.lvm.receive_abandon(&self.pool, &v.rsc, v.nr, snap).await
        })
    }
}

/// ZFS and ZFS_THIN: a zvol per volume.
pub struct ZfsProvider {
    pool: ZfsPool,
    zfs: Zfs,
    kind: ProviderKind,
}

impl Provider for ZfsProvider {
    fn pool(&self) -> &str {
        &self.pool.name
    }
    fn kind(&self) -> ProviderKind {
        self.kind
    }
    fn ensure<'a>(&'a self, v: VolumeSpec<'a>) -> BoxFuture<'a, Result<VolumeObserved, StorageError>> {
        Box::pin(async move {
            match (v.source, v.clone_from) {
                (Some((src, snap)), _) => self.zfs.ensure_restored(&self.pool, &v, src, snap).await,
                (None, Some(c)) => self.zfs.ensure_clone(&self.pool, v.rsc, v.nr, v.id, v.size, c.rsc, c.zfs_clone).await,
                (None, None) => self.zfs.ensure(&self.pool, v.rsc, v.nr, v.id, v.size).await,
            }
        })
    }
    fn remove_others<'a>(&'a self, rsc: &'a Name, keep: &'a [(u32, String)]) -> BoxFuture<'a, Result<(), StorageError>> {
        let keep: Vec<u32> = keep.iter().map(|(nr, _)| *nr).collect();
        Box::pin(async move { self.zfs.remove_others(&self.pool, rsc, &keep).await })
    }
    fn resources(&self) -> BoxFuture<'_, Result<BTreeSet<String>, StorageError>> {
        Box::pin(async move { Ok(self.zfs.resources(&self.pool).await?.into_iter().collect()) })
    }
    fn capacity(&self) -> BoxFuture<'_, Result<Capacity, StorageError>> {
        Box::pin(async move {
            let (total_kib, free_kib) = self.zfs.capacity(&self.pool).await?;
            Ok(Capacity { total_kib, free_kib, supports_snapshots: Some(true) })
        })
    }
    fn allocated<'a>(&'a self, _volumes: &'a [VolumeRef]) -> BoxFuture<'a, Result<Allocated, StorageError>> {
        Box::pin(async move { self.zfs.allocated(&self.pool).await })
    }
    fn snapshots_refused(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(async { None })
    }
    fn snapshots<'a>(&'a self, rsc: &'a Name) -> BoxFuture<'a, Result<SnapshotMap, StorageError>> {
        Box::pin(async move { self.zfs.snapshots(&self.pool, rsc).await })
    }
    fn create_snapshot<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.zfs.create_snapshot(&self.pool, &v.rsc, v.nr, snap).await })
    }
    fn delete_snapshot<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.zfs.delete_snapshot(&self.pool, rsc, nr, snap).await })
    }
    fn needs_rollback<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name, id: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move { self.zfs.needs_rollback(&self.pool, &v.rsc, v.nr, snap, id).await })
    }
    fn rollback<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name, id: &'a str, zfs: ZfsRollback) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.zfs.rollback(&self.pool, &v.rsc, v.nr, &v.id, snap, id, zfs).await })
    }
    fn forget<'a>(&'a self, rsc: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.zfs.forget(&self.pool, rsc).await })
    }
    fn adopt_received<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move { self.zfs.adopt_received(&self.pool, &v.rsc, v.nr, snap).await })
    }
    fn discard_received<'a>(&'a self, v: &'a VolumeRef, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.zfs.drop_received(&self.pool, &v.rsc, v.nr, snap, false).await })
    }
    fn snapshot_open<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<SnapshotData, StorageError>> {
        Box::pin(async move {
            let (path, size) = self.zfs.snapshot_open(&self.pool, rsc, nr, snap).await?;
            Ok(SnapshotData { path, size })
        })
    }
    fn snapshot_close<'a>(&'a self, rsc: &'a Name, nr: u32, _snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.zfs.snapshot_close(&self.pool, rsc, nr).await })
    }
    /// From the records of `zfs send -i` (crate::zfs_send); None when the
    /// stream cannot be read (every chunk is compared then). ZFS frees
    /// more than changed (the tail past a volume's last block, holes in
    /// indirect blocks it rewrote), so the freed ranges come apart.
    fn snapshot_delta<'a>(
        &'a self,
        rsc: &'a Name,
        nr: u32,
        base: &'a Name,
        snap: &'a Name,
    ) -> BoxFuture<'a, Result<Option<Delta>, StorageError>> {
        Box::pin(async move { self.zfs.snapshot_changes(&self.pool, rsc, nr, base, snap).await })
    }
    fn receive_create<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name, size: u64) -> BoxFuture<'a, Result<String, StorageError>> {
        Box::pin(async move { self.zfs.receive_create(&self.pool, rsc, nr, snap, size).await })
    }
    fn receive_done<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.zfs.receive_done(&self.pool, rsc, nr, snap).await })
    }
    fn receive_abandon<'a>(&'a self, rsc: &'a Name, nr: u32, snap: &'a Name) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.zfs.receive_abandon(&self.pool, rsc, nr, snap).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_read_once_into_volumes_and_snapshots_by_resource() {
        assert_eq!(snapshot_of_file("web_00001@s1.snap"), Some(("web".into(), 1, "s1".into())));
        for bad in ["web_1@s1.snap", "web_00001@s1.img", "web_00001_s1.snap", ".web_00001@s1.snap.cairn-tmp", "../x_00001@s.snap"] {
            assert_eq!(snapshot_of_file(bad), None, "{bad}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["web_00000_ab.img", "web_00001_cd.img", "db_00000_ef.img", "web_00000@s1.snap", "web_00001@s1.snap", "notes.txt"] {
            std::fs::write(dir.path().join(f), b"").expect("write");
        }
        let pool = FilePool::new("p", dir.path().to_str().expect("utf-8"), true).expect("pool");
        let c = Contents::read(&pool).expect("read");
        assert_eq!(c.volumes.keys().collect::<Vec<_>>(), ["db", "web"]);
        assert_eq!(c.volumes["web"], BTreeSet::from([(0, "ab".to_string()), (1, "cd".to_string())]));
        let mut s1 = c.snapshots["web"]["s1"].clone();
        s1.sort();
        assert_eq!(s1, [0, 1]);
        // A pool "directory" that is a file holds no volumes (its capacity
        // reports the problem), so removals there are done at once.
        let not_dir = FilePool::new("q", dir.path().join("notes.txt").to_str().expect("utf-8"), true).expect("pool");
        assert!(Contents::read(&not_dir).expect("a file holds nothing").volumes.is_empty());
        let missing = FilePool::new("r", dir.path().join("nope").to_str().expect("utf-8"), true).expect("pool");
        assert!(Contents::read(&missing).expect("missing is empty").volumes.is_empty());
    }
}
