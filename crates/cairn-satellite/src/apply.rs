//! Applying desired state: idempotent, resources in parallel, one failure
//! never blocking the others.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cairn_proto::{
    Apply, ObjectError, Observed, PoolDesired, PoolObserved, ProviderSupport, ResourceDesired, ResourceObserved, VolumeObserved,
};
use cairn_storage::StorageError;
use cairn_storage::drbd::gross_size_kib;
use cairn_storage::file::{FilePool, Files, VolumeFile};
use cairn_storage::luks::{LUKS2_HEADER_KIB, Luks, LuksError};
use cairn_storage::lvm::{Lvm, LvmPool};
use cairn_storage::zfs::{Zfs, ZfsPool};
use tokio::sync::Mutex;

use crate::drbd::DrbdLayer;
use crate::locked;

/// The satellite's desired state and what it last saw.
#[derive(Default)]
pub struct Desired {
    /// A full apply arrived since this process started.
    pub synced: bool,
    pub pools: BTreeMap<String, PoolDesired>,
    pub resources: BTreeMap<String, ResourceDesired>,
    pub observed: BTreeMap<String, ResourceObserved>,
    pub generation: u64,
}

/// The storage providers and the LUKS layer, each running its tools.
pub struct Storage {
    pub files: Files,
    pub lvm: Lvm,
    pub zfs: Zfs,
    pub luks: Luks,
}

impl Storage {
    pub fn new(runner: Arc<dyn cairn_exec::CommandRunner>, timeout: std::time::Duration) -> Storage {
        Storage {
            files: Files::new(runner.clone(), timeout),
            lvm: Lvm::new(runner.clone(), timeout),
            zfs: Zfs::new(runner.clone(), timeout),
            luks: Luks::new(runner, timeout),
        }
    }
}

/// Applies desired state with the storage providers and layers.
pub struct Applier {
    pub node_name: String,
    pub instance: String,
    files: Files,
    lvm: Lvm,
    zfs: Zfs,
    luks: Luks,
    providers: Vec<ProviderSupport>,
    /// The DRBD layer, or why this node cannot run it.
    drbd: Result<Arc<DrbdLayer>, Vec<String>>,
    pub state: Mutex<Desired>,
    /// Whether a FILE_THIN pool directory makes reflinks, by directory:
    /// probed when first needed (a snapshot or an observation), again after
    /// the pool is (re)configured and after every full apply.
    reflinks: std::sync::Mutex<BTreeMap<std::path::PathBuf, bool>>,
    /// Snapshots that could not be taken: not tried again while desired,
    /// not even after a restart (a snapshot taken later would hold other
    /// data than asked for); forgotten when the snapshot goes.
    failed_snapshots: std::sync::Mutex<FailedSnapshots>,
}

/// Failed snapshots by (resource, snapshot), each also kept as a file
/// `<rsc>@<snap>` (the error as JSON) in a directory of the satellite's, so
/// a restart remembers them. Names are checked names (letters, digits,
/// `_`, `-`), so `@` separates them.
#[derive(Default)]
struct FailedSnapshots {
    map: BTreeMap<(String, String), ObjectError>,
    dir: Option<std::path::PathBuf>,
}

impl FailedSnapshots {
    fn load(dir: Option<std::path::PathBuf>) -> FailedSnapshots {
        let mut map = BTreeMap::new();
        if let Some(entries) = dir.as_deref().and_then(|d| std::fs::read_dir(d).ok()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some((rsc, snap)) = name.split_once('@') else { continue };
                match std::fs::read_to_string(entry.path()).ok().and_then(|t| serde_json::from_str::<ObjectError>(&t).ok()) {
                    Some(e) => {
                        map.insert((rsc.to_string(), snap.to_string()), e);
                    }
                    None => tracing::warn!(file = %entry.path().display(), "unreadable record of a failed snapshot; ignored"),
                }
            }
        }
        FailedSnapshots { map, dir }
    }

    fn get(&self, rsc: &str, snap: &str) -> Option<&ObjectError> {
        self.map.get(&(rsc.to_string(), snap.to_string()))
    }

    fn insert(&mut self, rsc: &str, snap: &str, e: ObjectError) {
        if let Some(dir) = &self.dir {
            let written = cairn_storage::create_private_dir(dir).and_then(|()| {
                let text = serde_json::to_string(&e).map_err(std::io::Error::other)?;
                let mut f = cairn_storage::create_private_file(&dir.join(format!("{rsc}@{snap}")))?;
                std::io::Write::write_all(&mut f, text.as_bytes())
            });
            if let Err(err) = written {
                tracing::warn!(rsc, snap, "cannot record the failed snapshot (a restart will try it again): {err}");
            }
        }
        self.map.insert((rsc.to_string(), snap.to_string()), e);
    }

    /// Forgets the failures of `rsc` that `keep` does not name.
    fn retain(&mut self, rsc: &str, keep: impl Fn(&str) -> bool) {
        let gone: Vec<(String, String)> = self.map.keys().filter(|(r, s)| r == rsc && !keep(s)).cloned().collect();
        for key in gone {
            self.map.remove(&key);
            if let Some(dir) = &self.dir
                && let Err(e) = std::fs::remove_file(dir.join(format!("{}@{}", key.0, key.1)))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(rsc = %key.0, snap = %key.1, "cannot remove the record of a failed snapshot: {e}");
            }
        }
    }
}

enum PoolKind {
    Diskless,
    File(FilePool),
    Lvm(LvmPool),
    Zfs(ZfsPool),
}

/// The size of a backing volume: the usable size, plus DRBD's internal
/// metadata when a DRBD layer sits on top, plus the LUKS2 header when the
/// volume is encrypted.
fn backing_kib(v: &cairn_proto::VolumeDesired, drbd_peer_slots: Option<u8>) -> i64 {
    let net = match drbd_peer_slots {
        Some(slots) => i64::try_from(gross_size_kib(u64::try_from(v.size_kib).unwrap_or(0), slots)).unwrap_or(i64::MAX),
        None => v.size_kib,
    };
    if v.luks.is_some() { net.saturating_add(LUKS2_HEADER_KIB) } else { net }
}

fn luks_err(message: String, e: &LuksError) -> ObjectError {
    match e {
        LuksError::Storage(s) => err(message, s),
        LuksError::HoldsData(..) => ObjectError { message, cause: Some(e.to_string()), details: None },
        LuksError::NoKey => ObjectError {
            message,
            cause: Some(e.to_string()),
            details: Some("Enter the master passphrase on the controller (PATCH /v1/encryption/passphrase).".into()),
        },
    }
}

fn err(message: String, e: &StorageError) -> ObjectError {
    ObjectError { message, cause: Some(e.to_string()), details: e.details() }
}

impl Applier {
    pub fn new(
        node_name: String,
        instance: String,
        storage: Storage,
        providers: Vec<ProviderSupport>,
        drbd: Result<Arc<DrbdLayer>, Vec<String>>,
        state_dir: Option<std::path::PathBuf>,
    ) -> Applier {
        let Storage { files, lvm, zfs, luks } = storage;
        Applier {
            node_name,
            instance,
            files,
            lvm,
            zfs,
            luks,
            providers,
            drbd,
            state: Mutex::new(Desired::default()),
            reflinks: std::sync::Mutex::new(BTreeMap::new()),
            failed_snapshots: std::sync::Mutex::new(FailedSnapshots::load(state_dir.map(|d| d.join("failed-snapshots")))),
        }
    }

    fn pool_kind(&self, p: &PoolDesired) -> Result<PoolKind, ObjectError> {
        let support = self.providers.iter().find(|s| s.kind == p.kind);
        match support {
            Some(s) if !s.supported => {
                return Err(ObjectError {
                    message: format!("Storage pool '{}' ({}) cannot be served by satellite '{}'.", p.name, p.kind, self.node_name),
                    cause: Some(format!("Missing: {}", s.missing.join("; "))),
                    details: None,
                });
            }
            None => {
                return Err(ObjectError {
                    message: format!("Unknown provider kind '{}' for storage pool '{}'.", p.kind, p.name),
                    cause: None,
                    details: None,
                });
            }
            Some(_) => {}
        }
        match p.kind.as_str() {
            "DISKLESS" => Ok(PoolKind::Diskless),
            "FILE" | "FILE_THIN" => {
                let dir = p.backing.as_deref().unwrap_or_default();
                FilePool::new(&p.name, dir, p.kind == "FILE_THIN")
                    .map(PoolKind::File)
                    .map_err(|e| err(format!("Storage pool '{}' has an unusable directory.", p.name), &e))
            }
            "LVM" | "LVM_THIN" => {
                let backing = p.backing.as_deref().unwrap_or_default();
                LvmPool::new(&p.name, backing, p.kind == "LVM_THIN")
                    .map(PoolKind::Lvm)
                    .map_err(|e| err(format!("Storage pool '{}' names an unusable volume group.", p.name), &e))
            }
            "ZFS" | "ZFS_THIN" => {
                let backing = p.backing.as_deref().unwrap_or_default();
                ZfsPool::new(&p.name, backing, p.kind == "ZFS_THIN")
                    .map(PoolKind::Zfs)
                    .map_err(|e| err(format!("Storage pool '{}' names an unusable ZFS dataset.", p.name), &e))
            }
            other => Err(ObjectError { message: format!("Provider {other} is not implemented yet."), cause: None, details: None }),
        }
    }

    /// The pools of one provider family, by a projection of their kind.
    fn pools_of<T>(&self, pools: &BTreeMap<String, PoolDesired>, pick: fn(PoolKind) -> Option<T>) -> Vec<T> {
        pools.values().filter_map(|p| self.pool_kind(p).ok().and_then(pick)).collect()
    }

    fn lvm_pools(&self, pools: &BTreeMap<String, PoolDesired>) -> Vec<LvmPool> {
        self.pools_of(pools, |k| if let PoolKind::Lvm(l) = k { Some(l) } else { None })
    }

    fn zfs_pools(&self, pools: &BTreeMap<String, PoolDesired>) -> Vec<ZfsPool> {
        self.pools_of(pools, |k| if let PoolKind::Zfs(z) = k { Some(z) } else { None })
    }

    fn file_pools(&self, pools: &BTreeMap<String, PoolDesired>) -> Vec<FilePool> {
        self.pools_of(pools, |k| if let PoolKind::File(f) = k { Some(f) } else { None })
    }

    /// Makes one resource exist: its storage, then its DRBD layer.
    async fn ensure(&self, pools: &BTreeMap<String, PoolDesired>, r: &ResourceDesired) -> ResourceObserved {
        let Some(d) = &r.drbd else { return self.ensure_storage(pools, r, None, true).await };
        let layer = match &self.drbd {
            Ok(l) => l.clone(),
            Err(reasons) => {
                // Refuse before touching storage: nothing is half-created.
                let mut out = ResourceObserved { name: r.name.clone(), ..Default::default() };
                out.error = Some(ObjectError {
                    message: format!(
                        "Satellite '{}' does not support the following layers: [DRBD]; resource '{}' was not created.",
                        self.node_name, r.name
                    ),
                    cause: Some(reasons.join("; ")),
                    details: Some("Load the DRBD 9 kernel module and install drbd-utils 9, then restart the satellite.".into()),
                });
                out.volumes = r
                    .volumes
                    .iter()
                    .map(|v| VolumeObserved { number: v.number, disk_state: "Failed".into(), ..Default::default() })
                    .collect();
                return out;
            }
        };
        // Volumes that go are removed only after DRBD let go of them.
        let mut out = self.ensure_storage(pools, r, Some(d.peer_slots), false).await;
        if out.error.is_some() {
            return out;
        }
        let disks: BTreeMap<u32, String> = if r.diskless {
            BTreeMap::new()
        } else {
            out.volumes.iter().filter_map(|v| Some((v.number, v.luks_device_path.clone().or(v.device_path.clone())?))).collect()
        };
        let net: BTreeMap<u32, i64> = r.volumes.iter().map(|v| (v.number, v.size_kib)).collect();
        match layer.ensure(&r.name, d, &disks, &net).await {
            Ok(o) => {
                out.drbd = Some(o);
                self.remove_unwanted(pools, r, &mut out).await;
            }
            Err(e) => {
                out.drbd = Some(layer.observed(&r.name, d));
                out.error = Some(e);
            }
        }
        out
    }

    /// Removes volumes of the resource that are not wanted any more (other
    /// numbers, or an earlier incarnation of a wanted one), closing their
    /// LUKS mappings first.
    async fn remove_unwanted(&self, pools: &BTreeMap<String, PoolDesired>, r: &ResourceDesired, out: &mut ResourceObserved) {
        let keep: Vec<u32> = r.volumes.iter().map(|v| v.number).collect();
        if let Err(e) = self.luks.close_all_except(&r.name, &keep).await {
            out.error.get_or_insert(luks_err(format!("Cannot close the encrypted volumes of '{}' that go.", r.name), &e));
            return;
        }
        // Files of this resource that are not wanted: other volume numbers,
        // or an earlier incarnation (another id) of a wanted one.
        let wanted: BTreeSet<(u32, &str)> = r.volumes.iter().map(|v| (v.number, v.id.as_str())).collect();
        for fp in self.file_pools(pools) {
            let stale: Vec<VolumeFile> = match fp.list() {
                Ok(l) => l.into_iter().filter(|f| f.rsc == r.name && !wanted.contains(&(f.nr, f.id.as_str()))).collect(),
                Err(e) => {
                    out.error.get_or_insert(err(format!("Cannot list storage pool '{}'.", fp.name), &e));
                    continue;
                }
            };
            for f in stale {
                if let Err(e) = self.files.remove(&fp, &f).await {
                    out.error
                        .get_or_insert(err(format!("Failed to remove volume {} of '{}' on node '{}'.", f.nr, r.name, self.node_name), &e));
                }
            }
        }
        for lp in self.lvm_pools(pools) {
            if let Err(e) = self.lvm.remove_others(&lp, &r.name, &keep).await {
                out.error.get_or_insert(err(format!("Failed to remove unwanted volumes of '{}' from pool '{}'.", r.name, lp.name), &e));
            }
        }
        for zp in self.zfs_pools(pools) {
            if let Err(e) = self.zfs.remove_others(&zp, &r.name, &keep).await {
                out.error.get_or_insert(err(format!("Failed to remove unwanted volumes of '{}' from pool '{}'.", r.name, zp.name), &e));
            }
        }
    }

    /// Makes one resource's volumes exist and removes volumes of it that
    /// are no longer desired. With `drbd_peer_slots`, each volume gets room
    /// for DRBD's internal metadata.
    async fn ensure_storage(
        &self,
        pools: &BTreeMap<String, PoolDesired>,
        r: &ResourceDesired,
        drbd_peer_slots: Option<u8>,
        remove_unwanted: bool,
    ) -> ResourceObserved {
        let mut out = ResourceObserved { name: r.name.clone(), ..Default::default() };
        if remove_unwanted {
            self.remove_unwanted(pools, r, &mut out).await;
        }
        for v in &r.volumes {
            let pool = match pools.get(&v.pool) {
                Some(p) => p,
                None => {
                    out.volumes.push(VolumeObserved { number: v.number, disk_state: "Failed".into(), ..Default::default() });
                    out.error.get_or_insert(ObjectError {
                        message: format!("Storage pool '{}' is not configured on node '{}'.", v.pool, self.node_name),
                        cause: None,
                        details: None,
                    });
                    continue;
                }
            };
            let observed = match self.pool_kind(pool) {
                Ok(PoolKind::Diskless) => Ok(VolumeObserved { number: v.number, disk_state: "Diskless".into(), ..Default::default() }),
                Ok(PoolKind::File(_) | PoolKind::Lvm(_) | PoolKind::Zfs(_)) if r.diskless => {
                    Ok(VolumeObserved { number: v.number, disk_state: "Diskless".into(), ..Default::default() })
                }
                Ok(PoolKind::Zfs(zp)) => self
                    .zfs
                    .ensure(&zp, &r.name, v.number, &v.id, backing_kib(v, drbd_peer_slots))
                    .await
                    .map_err(|e| err(format!("Failed to create volume {} of '{}' on node '{}'.", v.number, r.name, self.node_name), &e)),
                Ok(PoolKind::Lvm(lp)) => self.ensure_lvm(&lp, r, v, drbd_peer_slots).await,
                Ok(PoolKind::File(fp)) => self.ensure_file(&fp, r, v, drbd_peer_slots).await,
                Err(e) => Err(e),
            };
            // The LUKS layer on top of a real backing device.
            let observed = match (observed, &v.luks) {
                (Ok(mut o), Some(l)) if !r.diskless && o.device_path.is_some() => {
                    let dev = o.device_path.clone().unwrap_or_default();
                    match self.luks.ensure(&dev, &r.name, v.number, l).await {
                        Ok(mapped) => {
                            o.luks_device_path = Some(mapped);
                            Ok(o)
                        }
                        Err(e) => Err(luks_err(
                            format!("Cannot open the encrypted volume {} of '{}' on node '{}'.", v.number, r.name, self.node_name),
                            &e,
                        )),
                    }
                }
                (o, _) => o,
            };
            match observed {
                Ok(o) => out.volumes.push(o),
                Err(e) => {
                    out.volumes.push(VolumeObserved { number: v.number, disk_state: "Failed".into(), ..Default::default() });
                    out.error.get_or_insert(e);
                }
            }
        }
        if out.error.is_none() && !r.diskless {
            self.snapshots(pools, r, &mut out).await;
        }
        out
    }

    /// An LVM volume: rolled back first when asked (closing its LUKS
    /// mapping), created from a snapshot when restored, grown.
    async fn ensure_lvm(
        &self,
        lp: &LvmPool,
        r: &ResourceDesired,
        v: &cairn_proto::VolumeDesired,
        slots: Option<u8>,
    ) -> Result<VolumeObserved, ObjectError> {
        let fail = |what: &str, e: &StorageError| {
            err(format!("Failed to {what} volume {} of '{}' on node '{}'.", v.number, r.name, self.node_name), e)
        };
        if let Some(rb) = &r.rollback
            && self.lvm.needs_rollback(lp, &r.name, v.number, &rb.snapshot, &rb.id).await.map_err(|e| fail("check", &e))?
        {
            if let Err(e) = self.luks.close(&r.name, v.number).await {
                return Err(luks_err(format!("Cannot close encrypted volume {} of '{}' for the rollback.", v.number, r.name), &e));
            }
            self.lvm.rollback(lp, &r.name, v.number, &v.id, &rb.snapshot, &rb.id).await.map_err(|e| fail("roll back", &e))?;
        }
        let source = match &v.source {
            Some(s) => {
                Some(format!("{}_{}", cairn_storage::lvm::lv_name(&s.resource, v.number).map_err(|e| fail("restore", &e))?, s.snapshot))
            }
            None => None,
        };
        self.lvm.ensure_from(lp, &r.name, v.number, &v.id, backing_kib(v, slots), source.as_deref()).await.map_err(|e| fail("create", &e))
    }

    /// A file volume: rolled back first when asked, restored from a
    /// snapshot when new, then created or grown and attached.
    async fn ensure_file(
        &self,
        fp: &FilePool,
        r: &ResourceDesired,
        v: &cairn_proto::VolumeDesired,
        slots: Option<u8>,
    ) -> Result<VolumeObserved, ObjectError> {
        let fail = |what: &str, e: &StorageError| {
            err(format!("Failed to {what} volume {} of '{}' on node '{}'.", v.number, r.name, self.node_name), e)
        };
        let vf = VolumeFile::new(&r.name, v.number, &v.id);
        if let Some(rb) = &r.rollback
            && fp.volume_path(&vf).is_ok_and(|p| p.exists())
        {
            if let Err(e) = self.luks.close(&r.name, v.number).await {
                return Err(luks_err(format!("Cannot close encrypted volume {} of '{}' for the rollback.", v.number, r.name), &e));
            }
            self.files.rollback(fp, &vf, &rb.snapshot, &rb.id).await.map_err(|e| fail("roll back", &e))?;
        }
        if let Some(s) = &v.source {
            self.files.restore_into(fp, &vf, &s.resource, &s.snapshot).await.map_err(|e| fail("restore", &e))?;
        }
        self.files.ensure(fp, &vf, backing_kib(v, slots)).await.map_err(|e| fail("create", &e))
    }

    /// Makes the snapshots of a resource on this node what is desired;
    /// returns the ones present.
    async fn snapshots(&self, pools: &BTreeMap<String, PoolDesired>, r: &ResourceDesired, out: &mut ResourceObserved) {
        let pool_of = |nr: u32| r.volumes.iter().find(|v| v.number == nr).and_then(|v| pools.get(&v.pool)).map(|p| self.pool_kind(p));
        let mut present: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut seen_pools = BTreeSet::new();
        for v in &r.volumes {
            if !seen_pools.insert(v.pool.clone()) {
                continue;
            }
            let listed = match pools.get(&v.pool).map(|p| self.pool_kind(p)) {
                Some(Ok(PoolKind::Lvm(lp))) => self.lvm.snapshots(&lp, &r.name).await,
                Some(Ok(PoolKind::File(fp))) => Files::snapshots(&fp, &r.name),
                _ => continue,
            };
            match listed {
                Ok(s) => {
                    for (name, nrs) in s {
                        present.entry(name).or_default().extend(nrs);
                    }
                }
                Err(e) => {
                    out.error.get_or_insert(err(format!("Cannot list the snapshots of '{}'.", r.name), &e));
                    return;
                }
            }
        }
        // Failures of a snapshot belong to that snapshot (`snapshot_errors`),
        // never to the resource: its later changes must not report them.
        locked(&self.failed_snapshots).retain(&r.name, |snap| r.snapshots.iter().any(|s| s == snap));
        for snap in &r.snapshots {
            let failed = locked(&self.failed_snapshots).get(&r.name, snap).cloned();
            if let Some(e) = failed {
                out.snapshot_errors.insert(snap.clone(), e);
                continue;
            }
            for v in &r.volumes {
                if present.get(snap).is_some_and(|n| n.contains(&v.number)) {
                    continue;
                }
                let cannot = |cause: &str| ObjectError {
                    message: format!("Storage pool '{}' on node '{}' cannot take snapshots.", v.pool, self.node_name),
                    cause: Some(cause.to_string()),
                    details: None,
                };
                let res = match pool_of(v.number) {
                    Some(Ok(PoolKind::Lvm(lp))) if lp.thin_pool.is_some() => self.lvm.create_snapshot(&lp, &r.name, v.number, snap).await,
                    Some(Ok(PoolKind::File(fp))) if fp.thin && self.reflinks(&fp).await == Some(false) => {
                        let e = cannot(&format!(
                            "The file system of '{}' has no reflinks (cp --reflink=always fails there); FILE_THIN snapshots need XFS (reflink=1) or Btrfs.",
                            fp.dir.display()
                        ));
                        self.snapshot_failed(&r.name, snap, e, out);
                        break;
                    }
                    Some(Ok(PoolKind::File(fp))) if fp.thin => {
                        self.files.create_snapshot(&fp, &VolumeFile::new(&r.name, v.number, &v.id), snap).await
                    }
                    _ => {
                        let e = cannot("Snapshots need an LVM_THIN pool, or a FILE_THIN pool on a file system with reflinks.");
                        self.snapshot_failed(&r.name, snap, e, out);
                        break;
                    }
                };
                match res {
                    Ok(()) => present.entry(snap.clone()).or_default().push(v.number),
                    Err(e) => {
                        let e = err(
                            format!(
                                "Failed to take snapshot '{snap}' of volume {} of '{}' on node '{}'.",
                                v.number, r.name, self.node_name
                            ),
                            &e,
                        );
                        self.snapshot_failed(&r.name, snap, e, out);
                        break;
                    }
                }
            }
        }
        for (snap, nrs) in present.clone() {
            if r.snapshots.contains(&snap) {
                continue;
            }
            for nr in nrs {
                let res = match pool_of(nr) {
                    Some(Ok(PoolKind::Lvm(lp))) => self.lvm.delete_snapshot(&lp, &r.name, nr, &snap).await,
                    Some(Ok(PoolKind::File(fp))) => self.files.delete_snapshot(&fp, &r.name, nr, &snap).await,
                    _ => continue,
                };
                match res {
                    Ok(()) => {
                        present.remove(&snap);
                    }
                    Err(e) => {
                        out.error.get_or_insert(err(format!("Failed to delete snapshot '{snap}' of '{}'.", r.name), &e));
                    }
                }
            }
        }
        let all: BTreeSet<u32> = r.volumes.iter().map(|v| v.number).collect();
        out.snapshots = present.into_iter().filter(|(_, n)| all.iter().all(|x| n.contains(x))).map(|(s, _)| s).collect();
    }

    /// Records a snapshot that could not be taken: reported with the
    /// snapshot, and not tried again while it is desired.
    fn snapshot_failed(&self, rsc: &str, snap: &str, e: ObjectError, out: &mut ResourceObserved) {
        tracing::warn!(rsc, snap, "snapshot failed: {}{}", e.message, e.cause.as_deref().map(|c| format!(" ({c})")).unwrap_or_default());
        locked(&self.failed_snapshots).insert(rsc, snap, e.clone());
        out.snapshot_errors.insert(snap.to_string(), e);
    }

    /// Whether a FILE_THIN pool's directory makes reflinks: the cached
    /// answer, else a probe; None when the probe could not run.
    async fn reflinks(&self, fp: &FilePool) -> Option<bool> {
        if let Some(known) = locked(&self.reflinks).get(&fp.dir) {
            return Some(*known);
        }
        match self.files.probe_reflink(fp).await {
            Ok(yes) => {
                tracing::info!(pool = %fp.name, dir = %fp.dir.display(), reflinks = yes, "probed the pool's file system");
                locked(&self.reflinks).insert(fp.dir.clone(), yes);
                Some(yes)
            }
            Err(e) => {
                tracing::warn!(pool = %fp.name, dir = %fp.dir.display(), "cannot probe the pool for reflinks: {e}");
                None
            }
        }
    }

    /// Takes the DRBD layer down, then removes every volume of a resource
    /// from every file pool. `host` is the resource's DRBD host name.
    async fn remove(&self, pools: &BTreeMap<String, PoolDesired>, name: &str, host: &str) -> ResourceObserved {
        let mut out = ResourceObserved { name: name.to_string(), ..Default::default() };
        locked(&self.failed_snapshots).retain(name, |_| false);
        if let Ok(layer) = &self.drbd
            && let Err(e) = layer.remove(name, host).await
        {
            // The storage stays while DRBD may still use it.
            out.error = Some(e);
            return out;
        }
        if let Err(e) = self.luks.close_all(name).await {
            // The storage stays while the mapping may still be open.
            out.error = Some(luks_err(format!("Cannot close the encrypted volumes of '{name}' on node '{}'.", self.node_name), &e));
            return out;
        }
        for lp in self.lvm_pools(pools) {
            if let Err(e) = self.lvm.remove(&lp, name).await {
                out.error.get_or_insert(err(format!("Failed to delete the volumes of '{name}' on node '{}'.", self.node_name), &e));
            }
        }
        for zp in self.zfs_pools(pools) {
            if let Err(e) = self.zfs.remove_others(&zp, name, &[]).await {
                out.error.get_or_insert(err(format!("Failed to delete the volumes of '{name}' on node '{}'.", self.node_name), &e));
            }
        }
        for fp in self.file_pools(pools) {
            let files: Vec<VolumeFile> = match fp.list() {
                Ok(l) => l.into_iter().filter(|f| f.rsc == name).collect(),
                Err(e) => {
                    out.error.get_or_insert(err(format!("Cannot list storage pool '{}'.", fp.name), &e));
                    continue;
                }
            };
            for f in files {
                if let Err(e) = self.files.remove(&fp, &f).await {
                    out.error.get_or_insert(err(format!("Failed to delete volume {} of '{name}' on node '{}'.", f.nr, self.node_name), &e));
                }
            }
        }
        out
    }

    async fn pool_capacity(&self, pools: &BTreeMap<String, PoolDesired>) -> Vec<PoolObserved> {
        let mut out = Vec::new();
        for p in pools.values() {
            let o = match self.pool_kind(p) {
                Ok(PoolKind::Diskless) => PoolObserved { name: p.name.clone(), ..Default::default() },
                Ok(PoolKind::Zfs(zp)) => match self.zfs.capacity(&zp).await {
                    Ok((total, free)) => PoolObserved {
                        name: p.name.clone(),
                        total_kib: Some(total),
                        free_kib: Some(free),
                        supports_snapshots: Some(false),
                        ..Default::default()
                    },
                    Err(e) => PoolObserved {
                        name: p.name.clone(),
                        error: Some(err(format!("Cannot read the capacity of '{}'.", p.name), &e)),
                        ..Default::default()
                    },
                },
                Ok(PoolKind::Lvm(lp)) => match self.lvm.capacity(&lp).await {
                    Ok(c) => PoolObserved {
                        name: p.name.clone(),
                        total_kib: Some(c.total_kib),
                        free_kib: Some(c.free_kib),
                        supports_snapshots: Some(lp.thin_pool.is_some()),
                        ..Default::default()
                    },
                    Err(e) => PoolObserved {
                        name: p.name.clone(),
                        error: Some(err(format!("Cannot read the capacity of '{}'.", p.name), &e)),
                        ..Default::default()
                    },
                },
                Ok(PoolKind::File(fp)) => match self.files.capacity(&fp).await {
                    Ok((total, free)) => PoolObserved {
                        name: p.name.clone(),
                        total_kib: Some(total),
                        free_kib: Some(free),
                        supports_snapshots: if fp.thin { self.reflinks(&fp).await } else { Some(false) },
                        ..Default::default()
                    },
                    Err(e) => PoolObserved {
                        name: p.name.clone(),
                        error: Some(err(format!("Cannot read the capacity of '{}'.", p.name), &e)),
                        ..Default::default()
                    },
                },
                Err(e) => PoolObserved { name: p.name.clone(), error: Some(e), ..Default::default() },
            };
            out.push(o);
        }
        out
    }

    /// Whether a full apply arrived since this process started; deltas
    /// before that would be applied to an empty pool list.
    pub async fn synced(&self) -> bool {
        self.state.lock().await.synced
    }

    /// Applies a full or delta request. Resources are worked on in
    /// parallel; each reports its own result.
    pub async fn apply(self: &Arc<Self>, req: Apply) -> Observed {
        let mut st = self.state.lock().await;
        // DRBD host names of what was desired, for removals.
        let hosts: BTreeMap<String, String> =
            st.resources.values().filter_map(|r| Some((r.name.clone(), r.drbd.as_ref()?.host.clone()))).collect();
        // A pool configured anew (or every pool, on a full apply) is probed
        // for reflinks again.
        if req.full {
            locked(&self.reflinks).clear();
        } else if req.pools_set {
            let fresh: Vec<std::path::PathBuf> = req
                .pools
                .iter()
                .filter(|p| st.pools.get(&p.name) != Some(p))
                .filter_map(|p| p.backing.as_deref().map(std::path::PathBuf::from))
                .collect();
            locked(&self.reflinks).retain(|dir, _| !fresh.contains(dir));
        }
        let (upserts, removals): (Vec<ResourceDesired>, BTreeSet<String>) = if req.full {
            st.pools = req.pools.iter().map(|p| (p.name.clone(), p.clone())).collect();
            let keep: BTreeSet<String> = req.resources.iter().map(|r| r.name.clone()).collect();
            // Whatever exists on disk or was desired before and is not
            // desired now goes: this is how deletes missed while the
            // satellite was away are caught up.
            let mut gone: BTreeSet<String> = st.resources.keys().filter(|n| !keep.contains(*n)).cloned().collect();
            if let Ok(layer) = &self.drbd {
                gone.extend(layer.configured().into_iter().filter(|r| !keep.contains(r)));
            }
            for lp in self.lvm_pools(&st.pools) {
                match self.lvm.resources(&lp).await {
                    Ok(l) => gone.extend(l.into_iter().filter(|r| !keep.contains(r))),
                    Err(e) => tracing::warn!(pool = %lp.name, "cannot list the volume group: {e}"),
                }
            }
            for zp in self.zfs_pools(&st.pools) {
                match self.zfs.resources(&zp).await {
                    Ok(l) => gone.extend(l.into_iter().filter(|r| !keep.contains(r))),
                    Err(e) => tracing::warn!(pool = %zp.name, "cannot list the dataset: {e}"),
                }
            }
            for fp in self.file_pools(&st.pools) {
                match fp.list() {
                    Ok(l) => gone.extend(l.into_iter().map(|f| f.rsc).filter(|r| !keep.contains(r))),
                    Err(e) => tracing::warn!(pool = %fp.name, "cannot list the pool directory: {e}"),
                }
            }
            st.resources = req.resources.iter().map(|r| (r.name.clone(), r.clone())).collect();
            st.observed.retain(|n, _| keep.contains(n));
            (req.resources, gone)
        } else {
            if req.pools_set {
                st.pools = req.pools.into_iter().map(|p| (p.name.clone(), p)).collect();
            }
            for r in &req.resources {
                st.resources.insert(r.name.clone(), r.clone());
            }
            for n in &req.removed {
                st.resources.remove(n);
            }
            (req.resources, req.removed.into_iter().collect())
        };
        st.generation = req.generation;
        st.synced |= req.full;
        let host_of = |n: &str| hosts.get(n).cloned().unwrap_or_else(|| self.node_name.clone());
        let pools = Arc::new(st.pools.clone());
        let mut tasks = Vec::new();
        for r in upserts {
            let (me, pools) = (self.clone(), pools.clone());
            tasks.push(tokio::spawn(async move { (true, me.ensure(&pools, &r).await) }));
        }
        for n in removals {
            let (me, pools, host) = (self.clone(), pools.clone(), host_of(&n));
            tasks.push(tokio::spawn(async move { (false, me.remove(&pools, &n, &host).await) }));
        }
        let mut out = Observed { generation: req.generation, instance: self.instance.clone(), ..Default::default() };
        for t in tasks {
            match t.await {
                Ok((true, o)) => {
                    st.observed.insert(o.name.clone(), o.clone());
                    out.resources.push(o);
                }
                Ok((false, o)) => {
                    st.observed.remove(&o.name);
                    out.removed.push(o);
                }
                Err(e) => {
                    tracing::error!("an apply task panicked: {e}");
                    out.resources.push(ResourceObserved {
                        name: "(unknown)".into(),
                        error: Some(ObjectError {
                            message: format!("An apply task on node '{}' failed: {e}", self.node_name),
                            cause: None,
                            details: None,
                        }),
                        ..Default::default()
                    });
                }
            }
        }
        out.pools = self.pool_capacity(&pools).await;
        out
    }

    /// Reads what each volume takes from its pool again (a thin volume
    /// grows as data is written, without any request): a file's allocated
    /// blocks, one `lvs` or `zfs list` per LVM or ZFS pool.
    async fn refresh_allocated(
        &self,
        pools: &BTreeMap<String, PoolDesired>,
        resources: &BTreeMap<String, ResourceDesired>,
        observed: &mut [ResourceObserved],
    ) {
        type Listed = Option<BTreeMap<(String, u32), i64>>;
        fn listed<E: std::fmt::Display>(pool: &str, r: Result<BTreeMap<(String, u32), i64>, E>) -> Listed {
            r.map_err(|e| tracing::debug!(pool, "cannot read the allocated sizes: {e}")).ok()
        }
        let mut by_pool: BTreeMap<String, Listed> = BTreeMap::new();
        for o in observed.iter_mut() {
            let Some(r) = resources.get(&o.name) else { continue };
            for ov in o.volumes.iter_mut().filter(|v| v.device_path.is_some()) {
                let Some(v) = r.volumes.iter().find(|v| v.number == ov.number) else { continue };
                let Some(p) = pools.get(&v.pool) else { continue };
                let in_pool =
                    |by_pool: &BTreeMap<String, Listed>| by_pool.get(&p.name)?.as_ref()?.get(&(r.name.clone(), v.number)).copied();
                let now = match self.pool_kind(p) {
                    Ok(PoolKind::File(fp)) => Files::sizes(&fp, &VolumeFile::new(&r.name, v.number, &v.id))
                        .map(|(_, allocated)| allocated)
                        .map_err(|e| tracing::debug!(rsc = %r.name, volume = v.number, "cannot read the allocated size: {e}"))
                        .ok(),
                    Ok(PoolKind::Lvm(lp)) => {
                        if !by_pool.contains_key(&p.name) {
                            by_pool.insert(p.name.clone(), listed(&p.name, self.lvm.allocated(&lp).await));
                        }
                        in_pool(&by_pool)
                    }
                    Ok(PoolKind::Zfs(zp)) => {
                        if !by_pool.contains_key(&p.name) {
                            by_pool.insert(p.name.clone(), listed(&p.name, self.zfs.allocated(&zp).await));
                        }
                        in_pool(&by_pool)
                    }
                    _ => None,
                };
                if now.is_some() {
                    ov.allocated_kib = now;
                }
            }
        }
    }

    /// Everything the satellite currently knows, with fresh capacities
    /// and allocated sizes.
    pub async fn observe(&self) -> Observed {
        let (mut observed, pools, resources, generation) = {
            let st = self.state.lock().await;
            let mut observed: Vec<ResourceObserved> = st.observed.values().cloned().collect();
            // DRBD state changes without any request: read it fresh.
            if let Ok(layer) = &self.drbd {
                for o in observed.iter_mut().filter(|o| o.drbd.is_some()) {
                    if let Some(d) = st.resources.get(&o.name).and_then(|r| r.drbd.as_ref()) {
                        o.drbd = Some(layer.observed(&o.name, d));
                    }
                }
            }
            (observed, st.pools.clone(), st.resources.clone(), st.generation)
        };
        // Outside the lock: applies do not wait for these reads.
        self.refresh_allocated(&pools, &resources, &mut observed).await;
        Observed {
            generation,
            instance: self.instance.clone(),
            resources: observed,
            removed: Vec::new(),
            pools: self.pool_capacity(&pools).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(why: &str) -> ObjectError {
        ObjectError { message: format!("Failed to take snapshot: {why}"), cause: Some(why.into()), details: None }
    }

    #[test]
    fn failed_snapshots_survive_a_restart_and_go_with_their_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = Some(dir.path().join("failed-snapshots"));
        let mut f = FailedSnapshots::load(at.clone());
        f.insert("web", "s1", failure("no space"));
        f.insert("web", "s2", failure("busy"));
        f.insert("db", "s1", failure("gone"));
        // A restart reads them back.
        let mut again = FailedSnapshots::load(at.clone());
        assert_eq!(again.get("web", "s1"), Some(&failure("no space")));
        assert_eq!(again.get("db", "s1"), Some(&failure("gone")));
        // s2 is no longer desired: forgotten, also on disk; db is untouched.
        again.retain("web", |s| s == "s1");
        assert!(again.get("web", "s2").is_none());
        let third = FailedSnapshots::load(at.clone());
        assert!(third.get("web", "s2").is_none() && third.get("web", "s1").is_some() && third.get("db", "s1").is_some());
        let mut files: Vec<String> = std::fs::read_dir(dir.path().join("failed-snapshots"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["db@s1", "web@s1"]);
        // Without a directory (unit tests of the applier) it still works in memory.
        let mut mem = FailedSnapshots::load(None);
        mem.insert("x", "y", failure("z"));
        assert!(mem.get("x", "y").is_some());
    }
}
