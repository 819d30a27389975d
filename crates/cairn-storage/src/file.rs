//! FILE and FILE_THIN pools: one file per volume in the pool directory,
//! `<resource>_<volume number, 5 digits>.img`, attached as a loop device.
//! FILE allocates the whole size (`fallocate`), FILE_THIN creates a sparse
//! file (`truncate`).

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_exec::{Cmd, CommandRunner};
use cairn_proto::VolumeObserved;

use crate::{Kib, StorageError, parse, safe_name};

/// A FILE or FILE_THIN pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePool {
    pub name: String,
    pub dir: PathBuf,
    pub thin: bool,
}

impl FilePool {
    /// Checks the directory: absolute, no `..`, no control characters.
    pub fn new(name: &str, dir: &str, thin: bool) -> Result<FilePool, StorageError> {
        let p = Path::new(dir);
        let ok = p.is_absolute() && !p.components().any(|c| matches!(c, Component::ParentDir)) && !dir.chars().any(char::is_control);
        if !ok {
            return Err(StorageError::BadPoolDir(dir.to_string()));
        }
        Ok(FilePool { name: name.to_string(), dir: p.to_path_buf(), thin })
    }

    /// Makes the pool directory (0700, with missing parents) if needed.
    pub fn create_dir(&self) -> Result<(), StorageError> {
        crate::create_private_dir(&self.dir)
            .map_err(|e| StorageError::Io { what: format!("create pool directory {}", self.dir.display()), source: e })
    }

    /// The file of one volume. The name checks keep it inside the pool
    /// directory.
    pub fn volume_path(&self, v: &VolumeFile) -> Result<PathBuf, StorageError> {
        Ok(self.dir.join(v.file_name()?))
    }
}

/// One volume's file: `<resource>_<volume number, 5 digits>_<id>.img`.
/// The id comes from the volume's UUID, so a resource deleted and created
/// again under the same name gets a new, empty file, never the old data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VolumeFile {
    pub rsc: String,
    pub nr: u32,
    pub id: String,
}

fn safe_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

impl VolumeFile {
    pub fn new(rsc: &str, nr: u32, id: &str) -> VolumeFile {
        VolumeFile { rsc: rsc.to_string(), nr, id: id.to_string() }
    }

    pub fn file_name(&self) -> Result<String, StorageError> {
        if !safe_id(&self.id) {
            return Err(StorageError::UnsafeName(self.id.clone()));
        }
        Ok(format!("{}_{:05}_{}.img", safe_name(&self.rsc)?, self.nr, self.id))
    }
}

/// `web_00003_1a2b3c.img` -> web, 3, 1a2b3c; anything else -> None.
pub fn volume_of_file(file: &str) -> Option<VolumeFile> {
    let stem = file.strip_suffix(".img")?;
    let (rest, id) = stem.rsplit_once('_')?;
    let (rsc, nr) = rest.rsplit_once('_')?;
    if nr.len() != 5 || !nr.chars().all(|c| c.is_ascii_digit()) || safe_name(rsc).is_err() || !safe_id(id) {
        return None;
    }
    Some(VolumeFile { rsc: rsc.to_string(), nr: nr.parse().ok()?, id: id.to_string() })
}

/// How long an attach may hold the attach turn before it counts as stuck
/// (a hung `losetup`): the others then get a new turn of their own.
const STUCK_ATTACH: Duration = Duration::from_millis(300);

/// Takes the host's attach lock (`flock` on `cairn-losetup.lock` under
/// /run/lock): loop devices are the kernel's, so `losetup --find` races
/// between processes too, and satellites on one host (tests, or a host
/// running several) share this lock on purpose. It is only tried, for at
/// most [`STUCK_ATTACH`], and not waited for at all again for a while
/// after that failed (`gave_up`): a holder stuck on a hung `losetup`
/// delays the others once, never for the command's timeout. `None` when
/// it cannot be had; losetup's own retry copes then.
async fn host_attach_lock(gave_up: &parking_lot::Mutex<Option<std::time::Instant>>) -> Option<std::fs::File> {
    let dir = if Path::new("/run/lock").is_dir() { Path::new("/run/lock") } else { Path::new("/tmp") };
    let f = std::fs::File::options().create(true).truncate(false).write(true).open(dir.join("cairn-losetup.lock")).ok()?;
    let recently = gave_up.lock().is_some_and(|t| t.elapsed() < 10 * STUCK_ATTACH);
    let deadline = std::time::Instant::now() + if recently { Duration::ZERO } else { STUCK_ATTACH };
    loop {
        match f.try_lock() {
            Ok(()) => {
                *gave_up.lock() = None;
                return Some(f);
            }
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                if !recently {
                    *gave_up.lock() = Some(std::time::Instant::now());
                }
                return None;
            }
            Err(_) => return None,
        }
    }
}

/// Whose turn it is to attach a loop device, in this satellite. A holder
/// that takes longer than [`STUCK_ATTACH`] is fenced off: waiters move on
/// to a fresh gate, so one hung `losetup` delays the others once, by at
/// most that long, instead of for the command's whole timeout.
#[derive(Default)]
struct AttachGate {
    /// The current gate and when its holder took it.
    current: parking_lot::Mutex<(Arc<tokio::sync::Mutex<()>>, HeldSince)>,
    /// When the host's attach lock was last given up on (see
    /// `host_attach_lock`).
    host_gave_up: parking_lot::Mutex<Option<std::time::Instant>>,
}

/// When the holder of a gate took it (None: free).
type HeldSince = Arc<parking_lot::Mutex<Option<std::time::Instant>>>;

/// The attach turn: released (and its start cleared) when dropped.
struct AttachTurn {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    since: HeldSince,
}

impl Drop for AttachTurn {
    fn drop(&mut self) {
        *self.since.lock() = None;
    }
}

impl AttachGate {
    async fn turn(&self) -> AttachTurn {
        loop {
            let (gate, since) = self.current.lock().clone();
            match tokio::time::timeout(Duration::from_millis(50), gate.clone().lock_owned()).await {
                Ok(guard) => {
                    *since.lock() = Some(std::time::Instant::now());
                    return AttachTurn { _guard: guard, since };
                }
                Err(_) => {
                    let stuck = since.lock().is_some_and(|t| t.elapsed() > STUCK_ATTACH);
                    let mut current = self.current.lock();
                    if stuck && Arc::ptr_eq(&current.0, &gate) {
                        tracing::warn!("a loop device attach is stuck; the other attaches go on without waiting for it");
                        *current = Default::default();
                        // The stuck holder holds the host's lock too.
                        *self.host_gave_up.lock() = Some(std::time::Instant::now());
                    }
                }
            }
        }
    }
}

/// Loop devices by the canonical path of their backing file.
type LoopIndex = std::collections::BTreeMap<PathBuf, Vec<String>>;

/// The loop index and this satellite's own attaches since it was last
/// dropped (merged into the next listing: an attach that ends while the
/// host is being listed is never lost).
#[derive(Default)]
struct Loops {
    index: Option<LoopIndex>,
    own: Vec<(PathBuf, String)>,
}

/// The canonical form of a volume file's path (its directory resolved),
/// as the kernel reports backing files; also for a file already unlinked.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent().and_then(|d| std::fs::canonicalize(d).ok()), path.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Runs the file provider's commands.
#[derive(Clone)]
pub struct Files {
    runner: Arc<dyn CommandRunner>,
    timeout: Duration,
    /// `losetup --find` picks a free device and then claims it; two at once
    /// collide and util-linux backs off for 200 ms. One attach at a time
    /// in this satellite (this gate) and on the host (a lock file, tried
    /// for a bounded time: see `host_attach_lock`) avoids that; everything
    /// else stays parallel.
    attach: Arc<AttachGate>,
    /// Serialises reflink probes.
    probe: Arc<tokio::sync::Mutex<()>>,
    /// Loop devices by backing file: read from one `losetup --json --list`
    /// when empty (first use, and after [`Files::forget_loops`] at each full
    /// apply), then kept current by this satellite's own attaches and
    /// detaches. Never one host-wide listing per volume.
    loops: Arc<parking_lot::Mutex<Loops>>,
    /// One listing at a time (attaches do not wait for it).
    listing: Arc<tokio::sync::Mutex<()>>,
    /// Where the kernel shows each loop device's backing file
    /// (`<sysfs>/loopN/loop/backing_file`): an index entry is checked
    /// there before it is trusted. None: trust the index (unit tests).
    sysfs: Option<PathBuf>,
}

impl Files {
    pub fn new(runner: Arc<dyn CommandRunner>, timeout: Duration) -> Files {
        Files {
            runner,
            timeout,
            attach: Arc::new(AttachGate::default()),
            probe: Arc::new(tokio::sync::Mutex::new(())),
            loops: Arc::new(parking_lot::Mutex::new(Loops::default())),
            listing: Arc::new(tokio::sync::Mutex::new(())),
            sysfs: Some(PathBuf::from("/sys/block")),
        }
    }

    /// Checks index entries against another sysfs directory (None: not at all).
    pub fn with_sysfs(mut self, sysfs: Option<PathBuf>) -> Files {
        self.sysfs = sysfs;
        self
    }

    fn cmd(&self, program: &str) -> Cmd {
        Cmd::new(program).timeout(self.timeout)
    }

    /// Drops the loop index: the next lookup lists the host's loop devices
    /// again (devices attached or detached by someone else are seen then).
    pub fn forget_loops(&self) {
        let mut loops = self.loops.lock();
        loops.index = None;
        loops.own.clear();
    }

    /// Whether the kernel says `device` holds `file`: Some(false) when the
    /// device is detached or holds another file, or, for a file that
    /// exists (`live`: its inode), when it holds an unlinked file of the
    /// same name or another inode; None when that cannot be read.
    fn holds(&self, device: &str, file: &Path, live: Option<u64>) -> Option<bool> {
        let sysfs = self.sysfs.as_ref()?;
        let dir = sysfs.join(Path::new(device).file_name()?).join("loop");
        let text = match std::fs::read_to_string(dir.join("backing_file")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
            Err(_) => return None,
        };
        let text = text.trim_end_matches('\n');
        let (name, deleted) = match text.strip_suffix(" (deleted)") {
            Some(name) => (name, true),
            None => (text, false),
        };
        if Path::new(name) != file || (deleted && live.is_some()) {
            return Some(false);
        }
        let inode = std::fs::read_to_string(dir.join("backing_inode")).ok().and_then(|t| t.trim().parse::<u64>().ok());
        match (live, inode) {
            (Some(want), Some(have)) => Some(want == have),
            _ => Some(true),
        }
    }

    /// Fills the index from one `losetup --json --list` if it is empty.
    /// Attaches do not wait for the listing: one that ends meanwhile is in
    /// `own`, merged into what is stored.
    async fn load_loops(&self) -> Result<(), StorageError> {
        let _one_listing = self.listing.lock().await;
        if self.loops.lock().index.is_some() {
            return Ok(());
        }
        let out = self.runner.run(&self.cmd("losetup").args(["--json", "--list"])).await?;
        let mut index = LoopIndex::new();
        for d in parse::losetup_list(&out.stdout)? {
            let file = d.back_file.strip_suffix(" (deleted)").unwrap_or(&d.back_file);
            index.entry(PathBuf::from(file)).or_default().push(d.name);
        }
        let mut loops = self.loops.lock();
        for (file, device) in &loops.own {
            let devices = index.entry(file.clone()).or_default();
            if !devices.contains(device) {
                devices.push(device.clone());
            }
        }
        loops.index = Some(index);
        Ok(())
    }

    fn remember_loop(&self, file: &Path, device: &str) {
        let file = canonical(file);
        let mut loops = self.loops.lock();
        if !loops.own.iter().any(|(f, d)| *f == file && d == device) {
            loops.own.push((file.clone(), device.to_string()));
        }
        if let Some(index) = loops.index.as_mut() {
            let devices = index.entry(file).or_default();
            if !devices.iter().any(|d| d == device) {
                devices.push(device.to_string());
            }
        }
    }

    fn forget_loop(&self, device: &str) {
        let mut loops = self.loops.lock();
        loops.own.retain(|(_, d)| d != device);
        if let Some(index) = loops.index.as_mut() {
            index.retain(|_, devices| {
                devices.retain(|d| d != device);
                !devices.is_empty()
            });
        }
    }

    /// Loop devices attached to `path`, from the index; entries the kernel
    /// contradicts are dropped. While the file exists, only devices on
    /// that very file count; once it is unlinked, devices still holding
    /// the deleted file do (for removal).
    pub async fn loops_of(&self, path: &Path) -> Result<Vec<String>, StorageError> {
        let file = canonical(path);
        let live = std::fs::symlink_metadata(path).ok().map(|m| m.ino());
        let listed = loop {
            self.load_loops().await?;
            // A full apply may have dropped the index meanwhile: list again.
            if let Some(index) = self.loops.lock().index.as_ref() {
                break index.get(&file).cloned().unwrap_or_default();
            }
        };
        let mut out = Vec::new();
        for device in listed {
            match self.holds(&device, &file, live) {
                Some(false) => {
                    if self.holds(&device, &file, None) != Some(true) {
                        // Detached, or another file's: forget it.
                        self.forget_loop(&device);
                    }
                }
                _ => out.push(device),
            }
        }
        Ok(out)
    }

    async fn detach(&self, device: &str) -> Result<(), StorageError> {
        self.runner.run(&self.cmd("losetup").arg("--detach").arg(device)).await?;
        self.forget_loop(device);
        Ok(())
    }

    /// Makes volume `nr` of `rsc` exist with at least `size`, attached
    /// to exactly one loop device. Idempotent: an existing file and device
    /// are adopted; a smaller file is grown and the device refreshed. A
    /// file this call created is removed again if attaching it fails.
    pub async fn ensure(&self, pool: &FilePool, v: &VolumeFile, size: Kib) -> Result<VolumeObserved, StorageError> {
        let nr = v.nr;
        let path = pool.volume_path(v)?;
        let want = size.bytes();
        pool.create_dir()?;
        // Never follow a link: a symlink named like a volume must not make
        // root grow, attach or wipe whatever it points to.
        let existing = match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_file() => {
                return Err(StorageError::Io {
                    what: format!("use {}", path.display()),
                    source: std::io::Error::other("not a regular file (a symlink or device); refusing to touch it"),
                });
            }
            Ok(m) => {
                // Volume data is root's alone, also in files made before
                // Cairn created them 0600.
                if m.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| StorageError::Io { what: format!("chmod 0600 {}", path.display()), source: e })?;
                }
                Some(m.len())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(StorageError::Io { what: format!("inspect {}", path.display()), source: e });
            }
        };
        let created = existing.is_none();
        if created {
            // Created 0600 here; truncate/fallocate only size it.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| StorageError::Io { what: format!("create {}", path.display()), source: e })?;
        }
        let grown = existing.is_some_and(|len| len < want);
        if created || grown {
            // FILE_THIN: a sparse file is only its length, set here (what
            // `truncate` does, without a process). FILE: `fallocate`.
            let sized = if pool.thin {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(want))
                    .map_err(|e| StorageError::Io { what: format!("size {}", path.display()), source: e })
            } else {
                let cmd = self.cmd("fallocate").arg("--length").arg(want.to_string()).arg(&path);
                self.runner.run(&cmd).await.map(|_| ()).map_err(StorageError::from)
            };
            if let Err(e) = sized {
                if created {
                    let _ = std::fs::remove_file(&path);
                }
                return Err(e);
            }
        }
        let result = self.attach(&path, grown).await;
        if result.is_err() && created {
            // A losetup killed by its timeout may have attached the file
            // all the same: list the host again and let go of it first.
            self.forget_loops();
            if let Ok(devices) = self.loops_of(&path).await {
                for dev in devices {
                    if let Err(e) = self.detach(&dev).await {
                        tracing::warn!(device = %dev, file = %path.display(), "cannot detach the device of a failed attach: {e}");
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        let device = result?;
        let (usable, allocated) = Files::sizes(pool, v)?;
        Ok(VolumeObserved {
            number: nr,
            device_path: Some(device),
            allocated_kib: Some(allocated),
            usable_kib: Some(usable),
            disk_state: "UpToDate".into(),
            luks_device_path: None,
        })
    }

    /// Attaches `path` to one loop device, reusing an existing one and
    /// detaching duplicates; refreshes its size after a grow.
    async fn attach(&self, path: &Path, grown: bool) -> Result<String, StorageError> {
        let loops = self.loops_of(path).await?;
        let Some((first, extra)) = loops.split_first() else {
            let _one_at_a_time = self.attach.turn().await;
            let _host_wide = host_attach_lock(&self.attach.host_gave_up).await;
            let out = self.runner.run(&self.cmd("losetup").args(["--find", "--show"]).arg(path)).await?;
            let device = parse::losetup_show(&out.stdout)?;
            self.remember_loop(path, &device);
            return Ok(device);
        };
        for dup in extra {
            tracing::warn!(device = %dup, file = %path.display(), "detaching a duplicate loop device");
            self.detach(dup).await?;
        }
        if grown {
            self.runner.run(&self.cmd("losetup").arg("--set-capacity").arg(first)).await?;
        }
        Ok(first.clone())
    }

    /// The file of a snapshot: `<rsc>_<NNNNN>@<snap>.snap` (`@` appears in
    /// no resource or snapshot name, and `.snap` in no volume file).
    pub fn snapshot_path(pool: &FilePool, rsc: &str, nr: u32, snap: &str) -> Result<PathBuf, StorageError> {
        Ok(pool.dir.join(format!("{}_{nr:05}@{}.snap", safe_name(rsc)?, safe_name(snap)?)))
    }

    /// Where a download writes before it is renamed to `to` (hidden: no
    /// listing sees it, and a failed download never passes for a snapshot).
    pub fn receiving_path(to: &Path) -> PathBuf {
        let name = to.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        to.with_file_name(format!(".{name}.receiving"))
    }

    /// Where a snapshot received from another cluster waits to be adopted
    /// (hidden: no snapshot listing sees it).
    pub fn received_path(pool: &FilePool, rsc: &str, nr: u32, snap: &str) -> Result<PathBuf, StorageError> {
        Ok(pool.dir.join(format!(".{}_{nr:05}@{}.snap.received", safe_name(rsc)?, safe_name(snap)?)))
    }

    /// `cp --reflink=always FROM TO`, through a hidden temporary file that
    /// is renamed into place only when it is complete: a failed cp leaves
    /// an empty destination behind, which must never pass for a copy.
    async fn reflink(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        self.copy_into_place(from, to, Copy::Reflink, None).await
    }

    /// Copies FROM to TO through a hidden temporary file renamed into
    /// place when complete. `fresh_md` = Some(size in bytes): the copy is
    /// first grown to that size if smaller, then the DRBD superblock at
    /// its end is zeroed, so DRBD finds no metadata there and makes its
    /// own (a copy must not pass for the source's replica).
    async fn copy_into_place(&self, from: &Path, to: &Path, how: Copy, fresh_md: Option<u64>) -> Result<(), StorageError> {
        let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = to.with_file_name(format!(".{name}.cairn-tmp"));
        let io = |what: &str, e| StorageError::Io { what: format!("{what} {}", tmp.display()), source: e };
        let cp = match how {
            Copy::Reflink => self.cmd("cp").arg("--reflink=always"),
            // A full copy takes as long as the data: no command timeout.
            Copy::Sparse => Cmd::new("cp").arg("--sparse=always").timeout(COPY_TIMEOUT),
            Copy::Full => Cmd::new("cp").arg("--sparse=never").timeout(COPY_TIMEOUT),
        };
        if let Err(e) = self.runner.run(&cp.arg(from).arg(&tmp)).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        let same = std::fs::metadata(from).and_then(|a| std::fs::metadata(&tmp).map(|b| a.len() == b.len()));
        if !matches!(same, Ok(true)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("incomplete copy", std::io::Error::other("the copy's size differs from the source")));
        }
        let finish = || -> std::io::Result<()> {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            let f = std::fs::OpenOptions::new().write(true).open(&tmp)?;
            if let Some(size) = fresh_md {
                if f.metadata()?.len() < size {
                    f.set_len(size)?;
                }
                let (start, len) = drbd_superblock_range(f.metadata()?.len());
                std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; len as usize], start)?;
            }
            f.sync_all()
        };
        if let Err(e) = finish() {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("finish the copy", e));
        }
        std::fs::rename(&tmp, to).map_err(|e| io("rename", e))
    }

    /// A new volume file as a copy of another resource's volume in the
    /// same pool (a clone): a reflink copy where the file system makes
    /// them, else a full copy (sparse for FILE_THIN). Nothing happens when
    /// the volume exists.
    pub async fn clone_into(
        &self,
        pool: &FilePool,
        v: &VolumeFile,
        src: &VolumeFile,
        reflinks: bool,
        fresh_md: Option<u64>,
    ) -> Result<(), StorageError> {
        let path = pool.volume_path(v)?;
        if std::fs::symlink_metadata(&path).is_ok() {
            return Ok(());
        }
        let from = pool.volume_path(src)?;
        match std::fs::symlink_metadata(&from) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => {
                return Err(StorageError::Io {
                    what: format!("clone {}", from.display()),
                    source: std::io::Error::other("the source is not a regular file"),
                });
            }
            Err(e) => return Err(StorageError::Io { what: format!("clone from {}", from.display()), source: e }),
        }
        let how = if reflinks {
            Copy::Reflink
        } else if pool.thin {
            Copy::Sparse
        } else {
            Copy::Full
        };
        self.copy_into_place(&from, &path, how, fresh_md).await
    }

    /// A reflink copy of the volume's file (needs a file system with
    /// reflinks: XFS, Btrfs; anything else fails with cp's message).
    pub async fn create_snapshot(&self, pool: &FilePool, v: &VolumeFile, snap: &str) -> Result<(), StorageError> {
        let from = pool.volume_path(v)?;
        let to = Files::snapshot_path(pool, &v.rsc, v.nr, snap)?;
        self.reflink(&from, &to).await
    }

    /// A snapshot shipped from another cluster into a resource that exists
    /// here waits beside its place until it is desired as a received one:
    /// then it takes its place (true when there was one).
    pub fn adopt_received(&self, pool: &FilePool, rsc: &str, nr: u32, snap: &str) -> Result<bool, StorageError> {
        let received = Files::received_path(pool, rsc, nr, snap)?;
        if std::fs::symlink_metadata(&received).is_err() {
            return Ok(false);
        }
        let to = Files::snapshot_path(pool, rsc, nr, snap)?;
        std::fs::rename(&received, &to).map_err(|e| StorageError::Io { what: format!("adopt {}", received.display()), source: e })?;
        Ok(true)
    }

    /// Removes a received snapshot file that was never registered.
    pub fn discard_received(pool: &FilePool, rsc: &str, nr: u32, snap: &str) -> Result<(), StorageError> {
        let received = Files::received_path(pool, rsc, nr, snap)?;
        match std::fs::remove_file(&received) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StorageError::Io { what: format!("remove {}", received.display()), source: e })
            }
            _ => Ok(()),
        }
    }

    pub async fn delete_snapshot(&self, pool: &FilePool, rsc: &str, nr: u32, snap: &str) -> Result<(), StorageError> {
        let p = Files::snapshot_path(pool, rsc, nr, snap)?;
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::Io { what: format!("remove {}", p.display()), source: e }),
        }
    }

    /// A new volume file as a reflink copy of another resource's snapshot
    /// (restore); nothing happens when the volume exists.
    pub async fn restore_into(&self, pool: &FilePool, v: &VolumeFile, src_rsc: &str, snap: &str) -> Result<(), StorageError> {
        let path = pool.volume_path(v)?;
        if std::fs::symlink_metadata(&path).is_ok() {
            return Ok(());
        }
        let from = Files::snapshot_path(pool, src_rsc, v.nr, snap)?;
        self.reflink(&from, &path).await
    }

    fn rollback_marker(pool: &FilePool, v: &VolumeFile, id: &str) -> Result<PathBuf, StorageError> {
        Ok(pool.dir.join(format!(".{}_{:05}.rollback-{}", safe_name(&v.rsc)?, v.nr, safe_name(id)?)))
    }

    /// Whether rollback `id` still has to happen: it did not yet, and
    /// both the volume and the snapshot are there (otherwise there is
    /// nothing to go back to, or nothing to replace).
    pub fn needs_rollback(&self, pool: &FilePool, v: &VolumeFile, snap: &str, id: &str) -> Result<bool, StorageError> {
        Ok(!Files::rollback_marker(pool, v, id)?.exists()
            && Files::snapshot_path(pool, &v.rsc, v.nr, snap)?.is_file()
            && pool.volume_path(v)?.is_file())
    }

    /// Puts the volume back to a snapshot once per rollback `id`: detach,
    /// reflink the snapshot over the file, remember the id.
    pub async fn rollback(&self, pool: &FilePool, v: &VolumeFile, snap: &str, id: &str) -> Result<(), StorageError> {
        if !self.needs_rollback(pool, v, snap, id)? {
            return Ok(());
        }
        let marker = Files::rollback_marker(pool, v, id)?;
        let path = pool.volume_path(v)?;
        let from = Files::snapshot_path(pool, &v.rsc, v.nr, snap)?;
        for dev in self.loops_of(&path).await? {
            self.detach(&dev).await?;
        }
        // The volume is replaced only by a complete copy.
        self.reflink(&from, &path).await?;
        std::fs::write(&marker, b"").map_err(|e| StorageError::Io { what: format!("write {}", marker.display()), source: e })
    }

    /// Wipes signatures, detaches every loop device of the volume and
    /// unlinks its file. Removing what is not there succeeds.
    pub async fn remove(&self, pool: &FilePool, v: &VolumeFile) -> Result<(), StorageError> {
        let path = pool.volume_path(v)?;
        let devices = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => self.loops_of(&path).await?,
            Ok(_) => {
                return Err(StorageError::Io {
                    what: format!("remove {}", path.display()),
                    source: std::io::Error::other("not a regular file (a symlink or device); refusing to touch it"),
                });
            }
            Err(_) => {
                // The file is gone; a device may still hold it.
                for dev in self.loops_of(&path).await? {
                    self.detach(&dev).await?;
                }
                return Ok(());
            }
        };
        for dev in devices {
            self.runner.run(&self.cmd("wipefs").args(["--all", "--quiet"]).arg(&dev)).await?;
            self.detach(&dev).await?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::Io { what: format!("remove {}", path.display()), source: e }),
        }
    }

    /// Whether the pool's file system makes reflink copies (XFS with
    /// reflink=1, Btrfs): a small file in the pool directory is copied with
    /// `cp --reflink=always`, and both files are removed again. `false`
    /// when cp refuses; an error when the probe itself cannot run.
    pub async fn probe_reflink(&self, pool: &FilePool) -> Result<bool, StorageError> {
        // One probe at a time: they share the file names.
        let _one_at_a_time = self.probe.lock().await;
        pool.create_dir()?;
        let src = pool.dir.join(".cairn-reflink-probe");
        let dst = pool.dir.join(".cairn-reflink-probe.copy");
        let written = crate::create_private_file(&src).and_then(|mut f| {
            use std::io::Write;
            f.write_all(&[0x5a; 4096])?;
            f.sync_all()
        });
        let result = match written {
            Err(e) => Err(StorageError::Io { what: format!("write {}", src.display()), source: e }),
            Ok(()) => match self.runner.run(&self.cmd("cp").arg("--reflink=always").arg(&src).arg(&dst).quiet()).await {
                Ok(_) => Ok(true),
                Err(cairn_exec::ExecError::NonZero { stderr, .. }) => {
                    tracing::debug!(pool = %pool.name, dir = %pool.dir.display(), "no reflinks in the pool's file system: {}", stderr.trim());
                    Ok(false)
                }
                Err(e) => Err(e.into()),
            },
        };
        for f in [&src, &dst] {
            if let Err(e) = std::fs::remove_file(f)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %f.display(), "cannot remove the reflink probe: {e}");
            }
        }
        result
    }

    /// (size, allocated) KiB of a volume's file as the file system has it
    /// now (a thin file grows as data is written into it).
    pub fn sizes(pool: &FilePool, v: &VolumeFile) -> Result<(i64, i64), StorageError> {
        let path = pool.volume_path(v)?;
        let m =
            std::fs::symlink_metadata(&path).map_err(|e| StorageError::Io { what: format!("inspect {}", path.display()), source: e })?;
        let kib = |bytes: u64| i64::try_from(bytes / 1024).unwrap_or(i64::MAX);
        Ok((kib(m.len()), kib(m.blocks().saturating_mul(512))))
    }

    /// (total, free) KiB of the file system holding the pool.
    pub async fn capacity(&self, pool: &FilePool) -> Result<(i64, i64), StorageError> {
        pool.create_dir()?;
        let out = self.runner.run(&self.cmd("df").args(["--output=size,avail", "--block-size=1K"]).arg(&pool.dir)).await?;
        parse::df_kib(&out.stdout)
    }
}

/// How a volume file is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    Reflink,
    Sparse,
    Full,
}

/// A full copy of a volume may take long: an hour before it is killed.
const COPY_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where DRBD 9 keeps the superblock of internal metadata on a device of
/// `len` bytes: the last 4 KiB before the device's end rounded down to
/// 4 KiB, plus what lies beyond that rounding. Zeroed, DRBD finds no
/// metadata there.
pub fn drbd_superblock_range(len: u64) -> (u64, u64) {
    let start = (len & !4095).saturating_sub(4096);
    (start, len - start)
}

#[cfg(test)]
mod tests {
    use cairn_exec::FakeRunner;

    use super::*;

    fn kib(k: i64) -> Kib {
        Kib::new(k).unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    const EMPTY: &str = include_str!("../testdata/losetup-associated-none.json");

    /// A fake that also sizes the (sparse) file, as `truncate`/`fallocate`
    /// would.
    struct Creating(Arc<FakeRunner>);

    impl CommandRunner for Creating {
        fn run<'a>(&'a self, cmd: &'a Cmd) -> cairn_exec::BoxFuture<'a, Result<cairn_exec::Output, cairn_exec::ExecError>> {
            let args = cmd.get_args();
            if matches!(cmd.program(), "truncate" | "fallocate")
                && let (Some(size), Some(path)) = (args.get(1), args.last())
            {
                let len: u64 = size.to_str().unwrap().parse().unwrap();
                std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).unwrap().set_len(len).unwrap();
            }
            self.0.run(cmd)
        }
    }

    #[test]
    fn pool_directories_must_be_absolute_without_dotdot() {
        assert!(FilePool::new("p", "relative", true).is_err());
        assert!(FilePool::new("p", "/a/../b", true).is_err());
        let p = FilePool::new("p", "/srv/pool", true).unwrap();
        assert_eq!(p.volume_path(&VolumeFile::new("web", 3, "ab12")).unwrap(), PathBuf::from("/srv/pool/web_00003_ab12.img"));
        assert!(p.volume_path(&VolumeFile::new("../x", 0, "ab12")).is_err());
        assert!(p.volume_path(&VolumeFile::new("web", 0, "../x")).is_err());
        assert!(p.volume_path(&VolumeFile::new("web", 0, "")).is_err());
    }

    #[test]
    fn volume_files_are_recognised_by_name() {
        assert_eq!(volume_of_file("web_00003_ab12.img"), Some(VolumeFile::new("web", 3, "ab12")));
        assert_eq!(volume_of_file("my_rsc_00000_0f.img"), Some(VolumeFile::new("my_rsc", 0, "0f")));
        assert_eq!(volume_of_file("web_00003.img"), None);
        assert_eq!(volume_of_file("web_3_ab.img"), None);
        assert_eq!(volume_of_file("web_00003_ab.raw"), None);
        assert_eq!(volume_of_file("web_00003_XY.img"), None);
        assert_eq!(volume_of_file("notes.txt"), None);
    }

    #[test]
    fn thin_create_truncates_then_attaches() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let file = format!("{d}/web_00000_aa.img");
        let f = Arc::new(FakeRunner::new());
        f.expect(&["losetup", "--json", "--list"], EMPTY).expect(&["losetup", "--find", "--show", &file], "/dev/loop7\n");
        let files = Files::new(Arc::new(Creating(f.clone())), Duration::from_secs(5)).with_sysfs(None);
        let pool = FilePool::new("p", d, true).unwrap();
        let v = rt().block_on(files.ensure(&pool, &VolumeFile::new("web", 0, "aa"), kib(1024))).unwrap();
        assert_eq!(v.device_path.as_deref(), Some("/dev/loop7"));
        assert_eq!((v.usable_kib, v.allocated_kib), (Some(1024), Some(0)));
        assert!(f.is_done(), "{:?}", f.calls());
        assert_eq!(mode(Path::new(&file)), 0o600, "volume files are root's alone");
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn new_pool_directories_are_0700_and_old_wide_volume_files_become_0600() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("made").join("pool");
        let file = d.join("web_00000_aa.img");
        let f = Arc::new(FakeRunner::new());
        let file_s = file.to_str().unwrap();
        f.expect(&["losetup", "--json", "--list"], EMPTY).expect(&["losetup", "--find", "--show", file_s], "/dev/loop7\n");
        let files = Files::new(f.clone(), Duration::from_secs(5)).with_sysfs(None);
        let pool = FilePool::new("p", d.to_str().unwrap(), true).unwrap();
        rt().block_on(files.ensure(&pool, &VolumeFile::new("web", 0, "aa"), kib(1024))).unwrap();
        assert_eq!((mode(&dir.path().join("made")), mode(&d), mode(&file)), (0o700, 0o700, 0o600));
        // A file made world-readable (by an older version) is narrowed.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        // The device attached above is known: no command runs at all.
        std::fs::File::options().write(true).open(&file).unwrap().set_len(1 << 20).unwrap();
        rt().block_on(files.ensure(&pool, &VolumeFile::new("web", 0, "aa"), kib(1024))).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn the_reflink_probe_copies_a_file_with_cp_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let (src, dst) = (format!("{d}/.cairn-reflink-probe"), format!("{d}/.cairn-reflink-probe.copy"));
        let f = Arc::new(FakeRunner::new());
        let files = Files::new(f.clone(), Duration::from_secs(5)).with_sysfs(None);
        let pool = FilePool::new("p", d, true).unwrap();
        // XFS: cp succeeds.
        f.expect(&["cp", "--reflink=always", &src, &dst], "");
        assert!(rt().block_on(files.probe_reflink(&pool)).unwrap());
        // ext4: cp refuses (coreutils' words on this host).
        f.expect_failure(
            &["cp", "--reflink=always", &src, &dst],
            1,
            &format!("cp: failed to clone '{dst}' from '{src}': Operation not supported"),
        );
        assert!(!rt().block_on(files.probe_reflink(&pool)).unwrap());
        assert!(f.is_done(), "{:?}", f.calls());
        // cp could not run at all: that is an error, not "no reflinks".
        assert!(rt().block_on(files.probe_reflink(&pool)).is_err());
        let left: Vec<_> = std::fs::read_dir(d).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "the probe left {left:?}");
    }

    #[test]
    fn sizes_follow_what_is_written_into_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::new("p", dir.path().to_str().unwrap(), true).unwrap();
        let v = VolumeFile::new("web", 0, "aa");
        let path = pool.volume_path(&v).unwrap();
        std::fs::File::create(&path).unwrap().set_len(8 << 20).unwrap();
        let (size, before) = Files::sizes(&pool, &v).unwrap();
        assert_eq!(size, 8192);
        {
            use std::io::{Seek, Write};
            let mut fh = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            fh.seek(std::io::SeekFrom::Start(1 << 20)).unwrap();
            fh.write_all(&[1u8; 1 << 20]).unwrap();
            fh.sync_all().unwrap();
        }
        let (_, after) = Files::sizes(&pool, &v).unwrap();
        assert!(after >= before + 1024, "allocated {before} -> {after} KiB");
        assert!(Files::sizes(&pool, &VolumeFile::new("nope", 0, "aa")).is_err());
    }

    #[test]
    fn fat_create_fallocates_and_a_failed_attach_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let file = format!("{d}/db_00001_aa.img");
        let f = Arc::new(FakeRunner::new());
        f.expect(&["fallocate", "--length", "2097152", &file], "")
            .expect(&["losetup", "--json", "--list"], EMPTY)
            .expect_failure(&["losetup", "--find", "--show", &file], 1, "losetup: cannot find an unused loop device")
            // Listed again: a killed losetup may have attached it anyway.
            .expect(&["losetup", "--json", "--list"], EMPTY);
        let files = Files::new(Arc::new(Creating(f.clone())), Duration::from_secs(5)).with_sysfs(None);
        let pool = FilePool::new("p", d, false).unwrap();
        let err = rt().block_on(files.ensure(&pool, &VolumeFile::new("db", 1, "aa"), kib(2048))).unwrap_err();
        assert!(err.details().unwrap().contains("cannot find an unused loop device"), "{err:?}");
        assert!(f.is_done());
        assert!(!Path::new(&file).exists(), "the half-created file was left behind");
    }

    #[test]
    fn existing_volume_is_adopted_and_grown_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let file = format!("{d}/web_00000_aa.img");
        std::fs::write(&file, vec![0u8; 1024]).unwrap();
        let listed =
            format!(r#"{{"loopdevices":[{{"name":"/dev/loop3","back-file":"{file}"}},{{"name":"/dev/loop9","back-file":"{file}"}}]}}"#);
        let f = Arc::new(FakeRunner::new());
        f.expect(&["losetup", "--json", "--list"], &listed)
            .expect(&["losetup", "--detach", "/dev/loop9"], "")
            .expect(&["losetup", "--set-capacity", "/dev/loop3"], "");
        let files = Files::new(f.clone(), Duration::from_secs(5)).with_sysfs(None);
        let pool = FilePool::new("p", d, true).unwrap();
        let v = rt().block_on(files.ensure(&pool, &VolumeFile::new("web", 0, "aa"), kib(4))).unwrap();
        assert_eq!(v.device_path.as_deref(), Some("/dev/loop3"));
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 4096, "grown in place");
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn remove_wipes_detaches_and_unlinks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let file = format!("{d}/web_00000_aa.img");
        std::fs::write(&file, b"x").unwrap();
        let listed = format!(r#"{{"loopdevices":[{{"name":"/dev/loop3","back-file":"{file}"}}]}}"#);
        let f = Arc::new(FakeRunner::new());
        f.expect(&["losetup", "--json", "--list"], &listed)
            .expect(&["wipefs", "--all", "--quiet", "/dev/loop3"], "")
            .expect(&["losetup", "--detach", "/dev/loop3"], "");
        let files = Files::new(f.clone(), Duration::from_secs(5)).with_sysfs(None);
        let pool = FilePool::new("p", d, true).unwrap();
        rt().block_on(files.remove(&pool, &VolumeFile::new("web", 0, "aa"))).unwrap();
        assert!(!Path::new(&file).exists());
        assert!(f.is_done());
        // Removing again looks for a device still holding the unlinked
        // file in the index (kept current by the detach): none, and no
        // command runs.
        rt().block_on(files.remove(&pool, &VolumeFile::new("web", 0, "aa"))).unwrap();
        assert_eq!(f.calls().len(), 3);
        assert!(f.is_done());
    }

    #[test]
    fn a_device_left_on_a_deleted_file_is_detached() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let file = format!("{d}/web_00000_aa.img");
        let listed = format!(
            r#"{{"loopdevices":[{{"name":"/dev/loop5","back-file":"{file} (deleted)"}},{{"name":"/dev/loop6","back-file":"/elsewhere.img"}}]}}"#
        );
        let f = Arc::new(FakeRunner::new());
        f.expect(&["losetup", "--json", "--list"], &listed).expect(&["losetup", "--detach", "/dev/loop5"], "");
        let files = Files::new(f.clone(), Duration::from_secs(5)).with_sysfs(None);
        let pool = FilePool::new("p", d, true).unwrap();
        rt().block_on(files.remove(&pool, &VolumeFile::new("web", 0, "aa"))).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn one_listing_serves_many_volumes_and_the_kernel_has_the_last_word() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let sys = tempfile::tempdir().unwrap();
        let (a, b) = (format!("{d}/a_00000_aa.img"), format!("{d}/b_00000_aa.img"));
        for p in [&a, &b] {
            std::fs::write(p, vec![0u8; 4096]).unwrap();
        }
        // The kernel's view (sysfs): loop3 holds a; loop4 was detached by
        // someone else after the listing.
        std::fs::create_dir_all(sys.path().join("loop3/loop")).unwrap();
        std::fs::write(sys.path().join("loop3/loop/backing_file"), format!("{a}\n")).unwrap();
        let listed = format!(r#"{{"loopdevices":[{{"name":"/dev/loop3","back-file":"{a}"}},{{"name":"/dev/loop4","back-file":"{b}"}}]}}"#);
        let f = Arc::new(FakeRunner::new());
        f.expect(&["losetup", "--json", "--list"], &listed).expect(&["losetup", "--find", "--show", &b], "/dev/loop5\n");
        let files = Files::new(f.clone(), Duration::from_secs(5)).with_sysfs(Some(sys.path().to_path_buf()));
        let pool = FilePool::new("p", d, true).unwrap();
        let va = rt().block_on(files.ensure(&pool, &VolumeFile::new("a", 0, "aa"), kib(4))).unwrap();
        let vb = rt().block_on(files.ensure(&pool, &VolumeFile::new("b", 0, "aa"), kib(4))).unwrap();
        assert_eq!((va.device_path.as_deref(), vb.device_path.as_deref()), (Some("/dev/loop3"), Some("/dev/loop5")));
        assert!(f.is_done(), "{:?}", f.calls());
        // After forget_loops (a full apply) the host is listed again.
        files.forget_loops();
        f.expect(&["losetup", "--json", "--list"], EMPTY);
        std::fs::remove_file(sys.path().join("loop3/loop/backing_file")).unwrap();
        f.expect(&["losetup", "--find", "--show", &a], "/dev/loop6\n");
        let va = rt().block_on(files.ensure(&pool, &VolumeFile::new("a", 0, "aa"), kib(4))).unwrap();
        assert_eq!(va.device_path.as_deref(), Some("/dev/loop6"));
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn a_device_on_an_unlinked_file_or_another_inode_is_never_adopted() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let sys = tempfile::tempdir().unwrap();
        let a = format!("{d}/a_00000_aa.img");
        std::fs::write(&a, vec![0u8; 4096]).unwrap();
        let ino = std::fs::metadata(&a).unwrap().ino();
        let dev = |n: &str, backing: &str, inode: u64| {
            std::fs::create_dir_all(sys.path().join(n).join("loop")).unwrap();
            std::fs::write(sys.path().join(n).join("loop/backing_file"), format!("{backing}\n")).unwrap();
            std::fs::write(sys.path().join(n).join("loop/backing_inode"), format!("{inode}\n")).unwrap();
        };
        // loop3 holds an earlier, unlinked file of the same name; loop4 a
        // file of that name with another inode.
        dev("loop3", &format!("{a} (deleted)"), ino + 1);
        dev("loop4", &a, ino + 2);
        let listed =
            format!(r#"{{"loopdevices":[{{"name":"/dev/loop3","back-file":"{a} (deleted)"}},{{"name":"/dev/loop4","back-file":"{a}"}}]}}"#);
        let f = Arc::new(FakeRunner::new());
        f.expect(&["losetup", "--json", "--list"], &listed).expect(&["losetup", "--find", "--show", &a], "/dev/loop5\n");
        let files = Files::new(f.clone(), Duration::from_secs(5)).with_sysfs(Some(sys.path().to_path_buf()));
        let pool = FilePool::new("p", d, true).unwrap();
        let v = rt().block_on(files.ensure(&pool, &VolumeFile::new("a", 0, "aa"), kib(4))).unwrap();
        assert_eq!(v.device_path.as_deref(), Some("/dev/loop5"), "a fresh device, not one of the strangers");
        assert!(f.is_done(), "{:?}", f.calls());
        // Once the file is gone, the devices on unlinked files of that
        // name are found for removal.
        std::fs::remove_file(&a).unwrap();
        dev("loop5", &format!("{a} (deleted)"), ino);
        let mut left = rt().block_on(files.loops_of(Path::new(&a))).unwrap();
        left.sort();
        assert_eq!(left, ["/dev/loop3", "/dev/loop4", "/dev/loop5"]);
    }

    #[test]
    fn an_attach_that_ends_while_the_host_is_listed_is_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b_00000_aa.img");
        std::fs::write(&file, b"x").unwrap();
        let f = Arc::new(FakeRunner::new());
        let files = Files::new(f.clone(), Duration::from_secs(5)).with_sysfs(None);
        // A full apply dropped the index; an attach ends before the next
        // listing is stored, and the listing (taken earlier) lacks it.
        files.forget_loops();
        files.remember_loop(&file, "/dev/loop9");
        f.expect(&["losetup", "--json", "--list"], EMPTY);
        assert_eq!(rt().block_on(files.loops_of(&file)).unwrap(), ["/dev/loop9"]);
        assert!(f.is_done());
    }

    #[test]
    fn symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, b"data").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("web_00000_aa.img")).unwrap();
        let f = Arc::new(FakeRunner::new());
        let files = Files::new(f.clone(), Duration::from_secs(5)).with_sysfs(None);
        let pool = FilePool::new("p", d, true).unwrap();
        assert!(rt().block_on(files.ensure(&pool, &VolumeFile::new("web", 0, "aa"), kib(1024))).is_err());
        assert!(rt().block_on(files.remove(&pool, &VolumeFile::new("web", 0, "aa"))).is_err());

        assert!(f.calls().is_empty(), "no command ran: {:?}", f.calls());
        assert_eq!(std::fs::read(&target).unwrap(), b"data");
    }

    #[test]
    fn the_drbd_superblock_is_the_last_4k_before_the_aligned_end() {
        assert_eq!(drbd_superblock_range(1 << 20), ((1 << 20) - 4096, 4096));
        assert_eq!(drbd_superblock_range((1 << 20) + 1024), ((1 << 20) - 4096, 5120), "the unaligned tail goes too");
        assert_eq!(drbd_superblock_range(1024), (0, 1024));
    }

    #[test]
    fn a_clone_is_a_complete_copy_renamed_into_place_with_fresh_drbd_room() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let pool = FilePool::new("p", d, false).unwrap();
        let src = VolumeFile::new("web", 0, "aa");
        let dst = VolumeFile::new("cl", 0, "bb");
        let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(pool.volume_path(&src).unwrap(), &data).unwrap();
        let files = Files::new(Arc::new(cairn_exec::HostRunner), Duration::from_secs(5)).with_sysfs(None);
        // Without DRBD: the bytes as they are.
        rt().block_on(files.clone_into(&pool, &dst, &src, false, None)).unwrap();
        assert_eq!(std::fs::read(pool.volume_path(&dst).unwrap()).unwrap(), data);
        // With DRBD: grown to the backing size, the superblock zeroed,
        // the data before it kept; no temporary file left.
        let md = VolumeFile::new("md", 0, "cc");
        rt().block_on(files.clone_into(&pool, &md, &src, false, Some(128 * 1024))).unwrap();
        let got = std::fs::read(pool.volume_path(&md).unwrap()).unwrap();
        assert_eq!(got.len(), 128 * 1024);
        assert_eq!(&got[..64 * 1024], &data[..]);
        assert!(got[124 * 1024..].iter().all(|b| *b == 0));
        let mut names: Vec<String> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["cl_00000_bb.img", "md_00000_cc.img", "web_00000_aa.img"]);
        // An existing volume is never copied over; a missing source fails
        // without leaving anything behind.
        std::fs::write(pool.volume_path(&src).unwrap(), b"changed").unwrap();
        rt().block_on(files.clone_into(&pool, &dst, &src, false, None)).unwrap();
        assert_eq!(std::fs::read(pool.volume_path(&dst).unwrap()).unwrap(), data);
        let none = VolumeFile::new("gone", 0, "dd");
        assert!(rt().block_on(files.clone_into(&pool, &VolumeFile::new("x", 0, "ee"), &none, false, None)).is_err());
        assert!(!pool.volume_path(&VolumeFile::new("x", 0, "ee")).unwrap().exists());
    }
}
