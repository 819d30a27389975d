//! Transfers that place storage on this node while they run — restores of
//! S3 backups, shipments received from another cluster — each recorded in
//! a file of `<data_dir>/inflight/` from its start until its outcome is
//! settled. A satellite that stopped in between (killed, crashed, the
//! machine restarted) loses the transfer and the controller never
//! registers what it placed; at its next start the satellite reads the
//! records left and removes what each transfer placed (half-written files,
//! thin volumes tagged as receiving, zvols no resource took, and snapshots
//! a restore or shipment finished but nobody registered).
//!
//! A record goes when its outcome is settled: a restore that answered its
//! success (the controller registers it next; a failed registration is
//! undone through [`cairn_proto::PATH_BACKUP_DISCARD`]), a restore that
//! failed and removed what it wrote, a shipment whose verdict was asked
//! (registered next, or cancelled), one cancelled or failed that removed
//! what it placed. A transfer whose leftovers could not all be removed
//! keeps its record, and so does a start whose clean-up of it failed (a
//! pool not ready yet): the next start tries again.

use std::path::{Path, PathBuf};

use cairn_proto::PoolDesired;
use cairn_storage::Name;
use cairn_storage::file::Files;
use cairn_storage::provider::Tools;
use serde::{Deserialize, Serialize};

use crate::backup::{BackupError, file_pool, hidden, io};

/// What a transfer places, enough to remove it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Placing {
    /// A restore from S3 into snapshot `snapshot` of the new resource
    /// `resource` (`Provider::receive_create`, then `receive_done`).
    Restore { pool: PoolDesired, resource: String, snapshot: String, volumes: Vec<u32> },
    /// A shipment received into snapshot `snapshot` of `resource`: `full`
    /// without a base, `adopt` when it waits beside a resource of this
    /// node (FILE: `.received` files) rather than in the snapshot's place.
    Ship { pool: PoolDesired, resource: String, snapshot: String, volumes: Vec<u32>, full: bool, adopt: bool },
}

impl Placing {
    fn names(&self) -> (&str, &str) {
        match self {
            Placing::Restore { resource, snapshot, .. } | Placing::Ship { resource, snapshot, .. } => (resource, snapshot),
        }
    }

    /// Removes what the transfer placed, whichever step it reached.
    pub async fn remove(&self, tools: &Tools) -> Result<(), BackupError> {
        match self {
            Placing::Restore { pool, resource, snapshot, volumes } => {
                let provider = crate::backup::provider(tools, pool)?;
                let (rsc, snap) = (Name::new(resource)?, Name::new(snapshot)?);
                let mut first = None;
                for nr in volumes {
                    if let Err(e) = provider.receive_undo(&rsc, *nr, &snap).await {
                        tracing::warn!(resource, snapshot, nr, "could not remove what a restore wrote: {e}");
                        first.get_or_insert(e);
                    }
                }
                first.map_or(Ok(()), |e| Err(e.into()))
            }
            Placing::Ship { pool, resource, snapshot, volumes, full, adopt } => {
                match (crate::ship::zfs_pool(pool)?, crate::ship::lvm_thin_pool(pool)?) {
                    (Some(zp), _) => {
                        for nr in volumes {
                            tools.zfs.drop_received(&zp, resource, *nr, snapshot, *full).await?;
                        }
                    }
                    (None, Some(lp)) => {
                        for nr in volumes {
                            tools.lvm.receive_abandon(&lp, resource, *nr, snapshot).await?;
                        }
                    }
                    (None, None) => {
                        let fp = file_pool(pool)?;
                        for nr in volumes {
                            let to = Files::snapshot_path(&fp, resource, *nr, snapshot)?;
                            let placed = if *adopt { Files::received_path(&fp, resource, *nr, snapshot)? } else { to.clone() };
                            for path in [hidden(&to), placed] {
                                remove_file(&path).await?;
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

async fn remove_file(path: &Path) -> Result<(), BackupError> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(format!("remove {}", path.display()))(e)),
        _ => Ok(()),
    }
}

/// The records of this node's transfers (none kept without a directory:
/// tests, and satellites built without one).
#[derive(Debug, Default)]
pub struct Inflight {
    dir: Option<PathBuf>,
}

/// A transfer's record; removed when dropped (or by [`Record::settle`],
/// which says whether that worked).
#[derive(Debug)]
pub struct Record {
    path: Option<PathBuf>,
}

impl Record {
    /// Removes the record: the transfer's outcome no longer needs it.
    pub fn settle(mut self) -> Result<(), BackupError> {
        match self.path.take() {
            Some(p) => unlink(&p).map_err(io(format!("remove the record {}", p.display()))),
            None => Ok(()),
        }
    }

    /// Keeps the record: what the transfer placed could not all be
    /// removed, and the next start of the satellite tries again.
    pub fn keep(mut self) {
        if let Some(p) = self.path.take() {
            tracing::warn!(record = %p.display(), "a transfer's leftovers could not all be removed; its record stays for the next start");
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(p) = self.path.take()
            && let Err(e) = unlink(&p)
        {
            tracing::warn!(record = %p.display(), "could not remove a transfer's record (the next start removes what it names): {e}");
        }
    }
}

/// Makes a change to the entries of `dir` (a rename, an unlink) durable:
/// a record whose removal was lost at a power cut would come back and
/// have the next start remove a snapshot the controller registered.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes a record's file, durably.
fn unlink(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    path.parent().map_or(Ok(()), sync_dir)
}

impl Inflight {
    /// The records under `data_dir`: the directory is made if missing;
    /// answers the records a previous run left, with their files.
    pub fn open(data_dir: &Path) -> Result<(Inflight, Vec<(PathBuf, Placing)>), std::io::Error> {
        let dir = data_dir.join("inflight");
        cairn_storage::create_private_dir(&dir)?;
        let mut left = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|x| x != "json") {
                // A record whose write was cut off before its rename.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            match std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Placing>(&b).ok()) {
                Some(p) => left.push((path, p)),
                None => {
                    tracing::warn!(record = %path.display(), "unreadable record of a transfer; removed");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok((Inflight { dir: Some(dir) }, left))
    }

    /// Records a transfer before it places anything.
    pub fn record(&self, what: &Placing) -> Result<Record, BackupError> {
        let Some(dir) = &self.dir else { return Ok(Record { path: None }) };
        let id = uuid::Uuid::new_v4();
        let (tmp, path) = (dir.join(format!("{id}.tmp")), dir.join(format!("{id}.json")));
        let body = serde_json::to_vec(what).map_err(|e| BackupError::Io { what: "encode a transfer's record".into(), source: e.into() })?;
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(dir)
        };
        write().map_err(io(format!("write the record {}", path.display())))?;
        Ok(Record { path: Some(path) })
    }
}

/// Removes what the transfers of the records `left` placed (each tried
/// once; a failure is logged) and the record of each removed; a record
/// whose removal failed stays, for the next start.
pub async fn clean_up(tools: &Tools, left: Vec<(PathBuf, Placing)>) {
    for (path, p) in left {
        let (rsc, snap) = p.names();
        tracing::warn!(resource = rsc, snapshot = snap, "a transfer was cut off when the satellite stopped; removing what it placed");
        if let Err(e) = p.remove(tools).await {
            // (The pool may not be ready yet: a zpool not imported, a
            // volume group not active.)
            tracing::warn!(
                resource = rsc,
                snapshot = snap,
                "could not remove all a cut-off transfer placed (its record stays for the next start): {e}"
            );
            continue;
        }
        if let Err(e) = unlink(&path) {
            tracing::warn!(record = %path.display(), "could not remove a transfer's record: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::ProviderKind;

    fn tools() -> Tools {
        crate::apply::Storage::new(std::sync::Arc::new(cairn_exec::FakeRunner::default()), std::time::Duration::from_secs(5)).tools
    }

    fn pool(dir: &Path) -> PoolDesired {
        PoolDesired { name: "p".into(), kind: ProviderKind::FileThin, backing: Some(dir.display().to_string()) }
    }

    #[tokio::test]
    async fn what_a_cut_off_restore_or_shipment_placed_goes_at_the_next_start_and_nothing_else() {
        let state = tempfile::tempdir().expect("tempdir");
        let pool_dir = tempfile::tempdir().expect("tempdir");
        let p = pool(pool_dir.path());
        let file = |name: &str| {
            let path = pool_dir.path().join(name);
            std::fs::write(&path, b"data").expect("write");
            path
        };
        // A restore cut off after volume 0 became the snapshot and while
        // volume 1 was written.
        let restored = [file("dst_00000@s1.snap"), file(".dst_00001@s1.snap.receiving")];
        // A shipment cut off while writing, and one that arrived beside a
        // resource of this node before its verdict was asked.
        let shipped = [file(".cp_00000@s2.snap.receiving"), file(".web_00000@s3.snap.received")];
        // Neither touches other snapshots, volumes, or an earlier snapshot.
        let kept = [file("dst_00000@s0.snap"), file("web_00000.img"), file("web_00000@s2.snap"), file("other_00000@s1.snap")];
        {
            let (inflight, left) = Inflight::open(state.path()).expect("open");
            assert!(left.is_empty());
            let restore = Placing::Restore { pool: p.clone(), resource: "dst".into(), snapshot: "s1".into(), volumes: vec![0, 1] };
            let ship = |rsc: &str, snap: &str, adopt| Placing::Ship {
                pool: p.clone(),
                resource: rsc.into(),
                snapshot: snap.into(),
                volumes: vec![0],
                full: true,
                adopt,
            };
            // The satellite stops with these running: their records stay.
            std::mem::forget(inflight.record(&restore).expect("record"));
            std::mem::forget(inflight.record(&ship("cp", "s2", false)).expect("record"));
            std::mem::forget(inflight.record(&ship("web", "s3", true)).expect("record"));
            // One that ended, and one settled: nothing of them is undone.
            drop(inflight.record(&ship("web", "s0", true)).expect("record"));
            inflight.record(&ship("dst", "s0", false)).expect("record").settle().expect("settle");
        }
        let (_, left) = Inflight::open(state.path()).expect("reopen");
        assert_eq!(left.len(), 3, "{left:?}");
        clean_up(&tools(), left).await;
        for f in restored.iter().chain(&shipped) {
            assert!(!f.exists(), "{} stayed", f.display());
        }
        for f in &kept {
            assert!(f.exists(), "{} was removed", f.display());
        }
        let (_, left) = Inflight::open(state.path()).expect("reopen");
        assert!(left.is_empty(), "the records go with what they named: {left:?}");
    }

    #[test]
    fn an_unreadable_or_half_written_record_is_dropped() {
        let state = tempfile::tempdir().expect("tempdir");
        let dir = state.path().join("inflight");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("a.json"), b"{not json").expect("write");
        std::fs::write(dir.join("b.tmp"), b"{\"kind\":").expect("write");
        let (_, left) = Inflight::open(state.path()).expect("open");
        assert!(left.is_empty());
        assert_eq!(std::fs::read_dir(&dir).expect("read").count(), 0);
    }

    #[tokio::test]
    async fn a_record_whose_leftovers_could_not_be_removed_stays_for_the_next_start() {
        let state = tempfile::tempdir().expect("tempdir");
        let pool_dir = tempfile::tempdir().expect("tempdir");
        // What the restore wrote cannot be removed (unlink fails on a
        // directory: as a pool not ready yet would).
        let stuck = pool_dir.path().join(".dst_00000@s1.snap.receiving");
        std::fs::create_dir(&stuck).expect("mkdir");
        std::fs::write(stuck.join("x"), b"x").expect("write");
        {
            let (inflight, _) = Inflight::open(state.path()).expect("open");
            let restore = Placing::Restore { pool: pool(pool_dir.path()), resource: "dst".into(), snapshot: "s1".into(), volumes: vec![0] };
            inflight.record(&restore).expect("record").keep();
        }
        let (_, left) = Inflight::open(state.path()).expect("reopen");
        assert_eq!(left.len(), 1, "a kept record stays");
        clean_up(&tools(), left).await;
        let (_, left) = Inflight::open(state.path()).expect("reopen");
        assert_eq!(left.len(), 1, "the removal failed: its record stays");
        std::fs::remove_dir_all(&stuck).expect("rmdir");
        clean_up(&tools(), left).await;
        let (_, left) = Inflight::open(state.path()).expect("reopen");
        assert!(left.is_empty(), "{left:?}");
    }
}
