//! ZFS and ZFS_THIN pools: one zvol per volume (`<zpool>/<rsc>_<NNNNN>`,
//! sparse with `-s` for ZFS_THIN), with LINSTOR's command lines. Sizes are
//! KiB with the `KB` suffix (ZFS reads it as KiB). Like the LVM tag, the
//! user property `cairn:vid` records the volume's identity.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_exec::{BoxFuture, Cmd, CommandRunner, ExecError, Feed, Output, Streaming};
use cairn_proto::{VolumeObserved, ZfsRollback};
use parking_lot::Mutex;

use crate::provider::VolumeSpec;
use crate::{Kib, StorageError, safe_name, split_volume_name, volume_number};

/// A ZFS pool: a zpool or a dataset in one (`tank` or `tank/linstor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsPool {
    pub name: String,
    pub dataset: String,
    pub thin: bool,
}

impl ZfsPool {
    pub fn new(name: &str, dataset: &str, thin: bool) -> Result<ZfsPool, StorageError> {
        let ok = !dataset.is_empty()
            && !dataset.starts_with(['-', '/'])
            && !dataset.ends_with('/')
            && !dataset.contains("//")
            && dataset.chars().all(|c| c.is_ascii_alphanumeric() || "_.-:/".contains(c));
        if !ok {
            return Err(StorageError::BadBacking(format!("'{dataset}' is not a ZFS dataset name")));
        }
        Ok(ZfsPool { name: name.to_string(), dataset: dataset.to_string(), thin })
    }

    /// The zpool the dataset lives in.
    pub fn zpool(&self) -> &str {
        self.dataset.split('/').next().unwrap_or(&self.dataset)
    }
}

/// The columns Cairn lists: LINSTOR's (`name,refer,volsize,type,
/// volblocksize,origin,clones`) and two user properties, the volume's
/// identity and the last rollback done to it.
pub const LIST_COLUMNS: &str = "name,refer,volsize,type,volblocksize,origin,clones,cairn:vid,cairn:rb";

/// One line of `zfs list -H -p -o` [`LIST_COLUMNS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zvol {
    pub name: String,
    pub refer: u64,
    pub volsize: Option<u64>,
    pub kind: String,
    /// The snapshot a clone was made from.
    pub origin: Option<String>,
    /// The clones of a snapshot (comma-separated in the list).
    pub clones: Vec<String>,
    pub vid: Option<String>,
    /// The id of the rollback last done to the volume.
    pub rollback: Option<String>,
}

impl Zvol {
    /// KiB the zvol references (`refer`).
    pub fn allocated_kib(&self) -> i64 {
        i64::try_from(self.refer / 1024).unwrap_or(i64::MAX)
    }
}

fn num(v: &str) -> Option<u64> {
    if v == "-" { None } else { v.parse().ok() }
}

/// Parses the tab-separated `zfs list -H -p` output.
pub fn parse_list(out: &str) -> Result<Vec<Zvol>, StorageError> {
    let mut v = Vec::new();
    let set = |v: &str| Some(v.to_string()).filter(|s| s != "-" && !s.is_empty());
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 9 {
            return Err(StorageError::Output { program: "zfs", detail: format!("expected 9 fields: {line}") });
        }
        let refer = f[1].parse().map_err(|_| StorageError::Output { program: "zfs", detail: format!("bad refer: {line}") })?;
        v.push(Zvol {
            name: f[0].to_string(),
            refer,
            volsize: num(f[2]),
            kind: f[3].to_string(),
            origin: set(f[5]),
            clones: set(f[6]).map(|c| c.split(',').map(str::to_string).collect()).unwrap_or_default(),
            vid: set(f[7]),
            rollback: set(f[8]),
        });
    }
    Ok(v)
}

/// The value column of `zfs get -H -p -o value …` / `zpool get -H -p …`.
pub fn parse_value(out: &str, program: &'static str) -> Result<u64, StorageError> {
    let line = out.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    // `zpool get size -Hp pool` prints `pool size 123 -`; `-o value` just `123`.
    let fields: Vec<&str> = line.split('\t').collect();
    let v = if fields.len() >= 3 { fields[2] } else { fields[0] };
    v.trim().parse().map_err(|_| StorageError::Output { program, detail: format!("not a number: {line}") })
}

/// The prefix of what is deleted but must wait for its snapshots or clones.
const DELETED: &str = "_deleted_";
/// The prefix of the snapshots clones of a resource are made from.
const CLONE_SNAP: &str = "cairn_clone_";
/// The prefix a snapshot shipped from another cluster arrives under; it
/// takes its own name when the controller registered it (until then the
/// satellite would delete it as not desired).
const RECEIVED: &str = "cairn_recv_";

/// A full copy takes as long as the data: an hour before it is killed.
const COPY_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long a pool's `zfs list` answers for a create or a snapshot listing
/// while no command that changes datasets ran since (as the LVM provider
/// reuses a volume group's PV list): under emulation one `zfs` command
/// costs 0.2-0.4 s, as much as the `zfs create` itself.
const LIST_REUSE: Duration = Duration::from_secs(10);

/// The count of commands that may have changed datasets, one for the
/// whole process: the satellite's backups and shipments run their own
/// [`Zfs`], and what they change must spoil every list.
fn process_changes() -> Arc<AtomicU64> {
    static CHANGES: std::sync::OnceLock<Arc<AtomicU64>> = std::sync::OnceLock::new();
    CHANGES.get_or_init(Arc::default).clone()
}

/// The pools' last lists: a list is reused only while the count of
/// changes has not moved since it was read, and never after
/// [`LIST_REUSE`] (something outside Cairn may change a pool too).
struct Lists {
    changes: Arc<AtomicU64>,
    by_dataset: Mutex<HashMap<String, Listed>>,
}

struct Listed {
    changes: u64,
    at: tokio::time::Instant,
    zvols: Vec<Zvol>,
}

impl Lists {
    fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    fn reuse(&self, dataset: &str) -> Option<Vec<Zvol>> {
        let m = self.by_dataset.lock();
        let l = m.get(dataset)?;
        (l.changes == self.changes() && l.at.elapsed() < LIST_REUSE).then(|| l.zvols.clone())
    }

    /// Keeps a list read while the count stood at `changes`, unless
    /// something changed meanwhile.
    fn keep(&self, dataset: &str, changes: u64, zvols: &[Zvol]) {
        let mut m = self.by_dataset.lock();
        if changes == self.changes() {
            m.insert(dataset.to_string(), Listed { changes, at: tokio::time::Instant::now(), zvols: zvols.to_vec() });
        }
    }

    /// Amends a list that was current before a command of our own (the
    /// count then stood at `before`) for what that command did, when no
    /// other change ran meanwhile (the command counted itself twice).
    fn amend(&self, dataset: &str, before: u64, f: impl FnOnce(&mut Vec<Zvol>)) {
        let now = self.changes();
        let mut m = self.by_dataset.lock();
        if let Some(l) = m.get_mut(dataset).filter(|l| l.changes == before && now == before + 2) {
            f(&mut l.zvols);
            l.changes = now;
        }
    }
}

/// Whether a command may change datasets: anything but the reading
/// `zfs list/get/send`, `zpool list/get` and `blockdev` (every stage of a
/// pipeline).
fn changes_datasets(argv: &[String]) -> bool {
    argv.split(|a| a == "|").any(|stage| {
        let (program, first) = (stage.first().map(String::as_str), stage.get(1).map(String::as_str));
        !matches!(
            (program, first),
            (Some("zfs"), Some("list" | "get" | "send")) | (Some("zpool"), Some("list" | "get")) | (Some("blockdev"), _)
        )
    })
}

/// The runner as the ZFS provider uses it: it counts every command that
/// may change datasets, before and after it runs (a streamed one when it
/// starts and when it is over).
struct Counting {
    inner: Arc<dyn CommandRunner>,
    changes: Arc<AtomicU64>,
}

impl Counting {
    fn changing(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }
}

impl CommandRunner for Counting {
    fn run<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(async move {
            let changing = changes_datasets(&cmd.argv());
            if changing {
                self.changing();
            }
            let r = self.inner.run(cmd).await;
            if changing {
                self.changing();
            }
            r
        })
    }

    fn stream<'a>(&'a self, cmd: &'a Cmd, feed: Feed) -> BoxFuture<'a, Result<Streaming, ExecError>> {
        Box::pin(async move {
            if !changes_datasets(&cmd.argv()) {
                return self.inner.stream(cmd, feed).await;
            }
            self.changing();
            let changes = self.changes.clone();
            Ok(self.inner.stream(cmd, feed).await?.on_end(move || {
                changes.fetch_add(1, Ordering::SeqCst);
            }))
        })
    }
}

#[derive(Clone)]
pub struct Zfs {
    runner: Arc<dyn CommandRunner>,
    timeout: Duration,
    /// How long to wait for udev's `/dev/zvol/…` link after a create.
    settle: Duration,
    lists: Arc<Lists>,
}

fn zvol_name(pool: &ZfsPool, rsc: &str, nr: u32) -> Result<String, StorageError> {
    Ok(format!("{}/{}_{nr:05}", pool.dataset, safe_name(rsc)?))
}

/// The volume number when `base` is volume `nr` of `rsc` (`<rsc>_<NNNNN>`)
/// or one of its earlier volumes renamed aside
/// (`_deleted_<rsc>_<NNNNN>_<id>[-<n>]`; the id holds no `_`, so another
/// resource's name that starts the same never matches).
fn owner(pool: &ZfsPool, rsc: &str, base: &str) -> Option<u32> {
    let leaf = base.strip_prefix(&pool.dataset)?.strip_prefix('/')?;
    if let Some(nr) = leaf.strip_prefix(rsc).and_then(|r| r.strip_prefix('_')).and_then(volume_number) {
        return Some(nr);
    }
    let rest = leaf.strip_prefix(DELETED)?.strip_prefix(rsc)?.strip_prefix('_')?;
    let (nr, id) = rest.split_once('_')?;
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')).then(|| volume_number(nr)).flatten()
}

/// The origin snapshot of `name` when it waits only for `name` to go: it
/// was deleted already (renamed aside) or made only for clones, and `name`
/// is its last clone. `gone` lists what was destroyed since `all` was read.
fn orphaned_origin(all: &[Zvol], name: &str, gone: &[String]) -> Option<String> {
    let snap = all.iter().find(|z| z.name == name)?.origin.clone()?;
    let o = all.iter().find(|z| z.name == snap && !gone.contains(&z.name))?;
    let waiting = snap.rsplit_once('@').is_some_and(|(_, s)| s.starts_with(DELETED) || s.starts_with(CLONE_SNAP));
    (waiting && o.clones.iter().all(|c| c == name || gone.contains(c))).then_some(snap)
}

impl Zfs {
    pub fn new(runner: Arc<dyn CommandRunner>, timeout: Duration) -> Zfs {
        Zfs::counting_in(runner, timeout, process_changes())
    }

    /// A provider whose count of changes is `changes` (the process's in
    /// [`Zfs::new`]; a test's own, so tests running at once do not spoil
    /// each other's lists).
    fn counting_in(runner: Arc<dyn CommandRunner>, timeout: Duration, changes: Arc<AtomicU64>) -> Zfs {
        let lists = Arc::new(Lists { changes: changes.clone(), by_dataset: Mutex::default() });
        Zfs { runner: Arc::new(Counting { inner: runner, changes }), timeout, settle: Duration::from_secs(5), lists }
    }

    pub fn with_settle(mut self, settle: Duration) -> Zfs {
        self.settle = settle;
        self
    }

    fn zfs(&self) -> Cmd {
        Cmd::new("zfs").timeout(self.timeout)
    }

    /// Volumes and snapshots under the pool's dataset, read now.
    pub async fn list(&self, pool: &ZfsPool) -> Result<Vec<Zvol>, StorageError> {
        let changes = self.lists.changes();
        let c = self.zfs().args(["list", "-r", "-H", "-p", "-o", LIST_COLUMNS, "-t", "volume,snapshot", &pool.dataset]);
        let zvols = match self.runner.run(&c).await {
            Ok(o) => parse_list(&o.stdout)?,
            // Exit 1 with nothing listed: no volumes yet (LINSTOR tolerates
            // it), but nothing to reuse either.
            Err(ExecError::NonZero { code: 1, stderr, .. }) if !stderr.contains("does not exist") => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        self.lists.keep(&pool.dataset, changes, &zvols);
        Ok(zvols)
    }

    /// The pool's last list while nothing changed datasets since (and it
    /// is younger than [`LIST_REUSE`]), else a new one. For what only our
    /// own commands change (which volumes and snapshots exist, their
    /// sizes and identities), never for sizes that grow with data.
    async fn list_reused(&self, pool: &ZfsPool) -> Result<Vec<Zvol>, StorageError> {
        match self.lists.reuse(&pool.dataset) {
            Some(zvols) => Ok(zvols),
            None => self.list(pool).await,
        }
    }

    /// Makes volume `nr` of `rsc` exist with at least `size`: created, or
    /// grown. The figures reported are those the pool's list gave, or the
    /// requested size right after a create or grow (a thin or new zvol
    /// references next to nothing; the pools' measurement reads the real
    /// figure a moment later), so a create runs one `zfs` command when the
    /// pool was listed shortly before.
    pub async fn ensure(&self, pool: &ZfsPool, rsc: &str, nr: u32, id: &str, size: Kib) -> Result<VolumeObserved, StorageError> {
        let size_kib = size.get();
        let name = zvol_name(pool, rsc, nr)?;
        let vid: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let all = self.list_reused(pool).await?;
        let existing = all.iter().find(|z| z.name == name && z.kind == "volume");
        if let Some(old) = existing.filter(|z| z.vid.as_deref() != Some(vid.as_str())) {
            tracing::warn!(zvol = %old.name, "removing a zvol of an earlier resource of the same name");
            self.destroy(&all, &old.name).await?;
        }
        let want_bytes = size.bytes();
        let before = self.lists.changes();
        let (volsize, refer) = match existing.filter(|z| z.vid.as_deref() == Some(vid.as_str())) {
            Some(z) if z.volsize.unwrap_or(0) < want_bytes => {
                self.runner.run(&self.zfs().args(["set", &format!("volsize={size_kib}KB"), &name])).await?;
                self.lists.amend(&pool.dataset, before, |l| {
                    l.iter_mut().filter(|z| z.name == name).for_each(|z| z.volsize = Some(want_bytes));
                });
                (want_bytes, z.refer)
            }
            Some(z) => (z.volsize.unwrap_or(want_bytes), z.refer),
            None => {
                let mut c = self.zfs().arg("create");
                if pool.thin {
                    c = c.arg("-s");
                }
                c = c.args(["-V", &format!("{size_kib}KB"), "-o", &format!("cairn:vid={vid}"), &name]);
                self.runner.run(&c).await?;
                let made = Zvol {
                    name: name.clone(),
                    refer: 0,
                    volsize: Some(want_bytes),
                    kind: "volume".into(),
                    origin: None,
                    clones: Vec::new(),
                    vid: Some(vid.clone()),
                    rollback: None,
                };
                self.lists.amend(&pool.dataset, before, |l| {
                    l.retain(|z| z.name != name);
                    l.push(made);
                });
                (want_bytes, 0)
            }
        };
        let dev = format!("/dev/zvol/{name}");
        // udev makes the zvol link a moment after `zfs create`.
        let deadline = tokio::time::Instant::now() + self.settle;
        while !std::path::Path::new(&dev).exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(VolumeObserved {
            number: nr,
            device_path: Some(dev),
            allocated_kib: Some(i64::try_from(refer / 1024).unwrap_or(i64::MAX)),
            usable_kib: Some(i64::try_from(volsize / 1024).unwrap_or(i64::MAX)),
            disk_state: "UpToDate".into(),
            luks_device_path: None,
        })
    }

    /// A clone of volume `nr` of `src_rsc` in the same pool, as LINSTOR
    /// makes it: a snapshot of the source (`<src>@cairn_clone_<rsc>`), then
    /// `zfs clone` of it (`zfs_clone`: fast, but the snapshot stays as long
    /// as the clone) or `zfs send --embed --large-block | zfs receive -F`
    /// (a full copy; both snapshots go afterwards). The identity is set as
    /// the copy is made (`-o cairn:vid=…`), so a copy cut short is found
    /// without it and made again. An existing clone is only grown.
    #[allow(clippy::too_many_arguments)]
    pub async fn ensure_clone(
        &self,
        pool: &ZfsPool,
        rsc: &str,
        nr: u32,
        id: &str,
        size: Kib,
        src_rsc: &str,
        zfs_clone: bool,
    ) -> Result<VolumeObserved, StorageError> {
        let name = zvol_name(pool, rsc, nr)?;
        let src = zvol_name(pool, src_rsc, nr)?;
        let vid: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let all = self.list(pool).await?;
        let existing = all.iter().find(|z| z.name == name && z.kind == "volume");
        if existing.is_some_and(|z| z.vid.as_deref() == Some(vid.as_str())) {
            return self.ensure(pool, rsc, nr, id, size).await;
        }
        if let Some(old) = existing {
            tracing::warn!(zvol = %old.name, "removing a zvol that is no complete clone");
            self.destroy(&all, &old.name).await?;
        }
        let tag = format!("{CLONE_SNAP}{}", safe_name(rsc)?);
        let snap = format!("{src}@{tag}");
        if !all.iter().any(|z| z.name == snap) {
            if !all.iter().any(|z| z.name == src && z.kind == "volume") {
                return Err(StorageError::BadBacking(format!("the clone source {src} does not exist")));
            }
            self.runner.run(&self.zfs().args(["snapshot", &snap])).await?;
        }
        let with_vid = format!("cairn:vid={vid}");
        if zfs_clone {
            self.runner.run(&self.zfs().args(["clone", "-o", &with_vid, &snap, &name])).await?;
        } else {
            let send = Cmd::new("zfs").args(["send", "--embed", "--large-block", &snap]).timeout(COPY_TIMEOUT);
            let receive = Cmd::new("zfs").args(["receive", "-F", "-o", &with_vid, &name]);
            self.runner.run(&send.pipe(receive)).await?;
            // The copy arrives with the snapshot it was sent from.
            self.runner.run(&self.zfs().args(["destroy", &format!("{name}@{tag}")])).await?;
            self.runner.run(&self.zfs().args(["destroy", &snap])).await?;
        }
        self.ensure(pool, rsc, nr, id, size).await
    }

    /// `zfs destroy`, or — while snapshots of it remain — a rename out of
    /// the way (`_deleted_<name>_<identity>`, its snapshots with it; `-<n>`
    /// added when that name is taken), as LINSTOR's ZfsProvider does. A
    /// clone that goes takes its origin snapshot with it when that was
    /// deleted already (renamed aside) or was made only for clones, and
    /// has no other clone; a volume renamed aside goes with its last
    /// snapshot.
    async fn destroy(&self, all: &[Zvol], name: &str) -> Result<(), StorageError> {
        let has_snapshots = all.iter().any(|z| z.name.starts_with(&format!("{name}@")));
        if has_snapshots {
            let (parent, leaf) = name.rsplit_once('/').unwrap_or(("", name));
            let vid = all.iter().find(|z| z.name == name).and_then(|z| z.vid.as_deref()).unwrap_or("");
            let mut short: String = vid.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
            if short.is_empty() {
                short.push('0');
            }
            let first = format!("{parent}/{DELETED}{leaf}_{short}");
            let target = std::iter::once(first.clone())
                .chain((1..).map(|n| format!("{first}-{n}")))
                .find(|t| !all.iter().any(|z| &z.name == t))
                .unwrap_or(first);
            self.runner.run(&self.zfs().args(["rename", name, &target])).await?;
            return Ok(());
        }
        self.destroy_dataset(name, false).await?;
        if let Some(snap) = orphaned_origin(all, name, &[]) {
            self.destroy_snapshot(all, &snap).await?;
        }
        Ok(())
    }

    /// `zfs destroy name`, tried again every half second for up to a
    /// minute while ZFS says "dataset is busy". Whoever last opened a zvol
    /// (DRBD's `wipe-md` after `down`, a restore's writer) makes udev probe
    /// it when it is closed, and udev holds it open meanwhile: a destroy
    /// right after fails for a moment (seen in the VMs: a resource deleted
    /// right after a rollback, a failed restore).
    async fn destroy_dataset(&self, name: &str, recursive: bool) -> Result<(), StorageError> {
        let args: &[&str] = if recursive { &["destroy", "-r", name] } else { &["destroy", name] };
        let mut tries = 0;
        loop {
            match self.runner.run(&self.zfs().args(args)).await {
                Err(e) if tries < 120 && e.stderr().is_some_and(|s| s.contains("dataset is busy")) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                done => return done.map(|_| ()).map_err(StorageError::from),
            }
        }
    }

    /// Destroys a snapshot, then its volume if that was renamed aside and
    /// has no other snapshot, then that volume's origin if it was waiting
    /// for its last clone, and so on.
    async fn destroy_snapshot(&self, all: &[Zvol], snap: &str) -> Result<(), StorageError> {
        let mut gone: Vec<String> = Vec::new();
        let mut next = Some(snap.to_string());
        while let Some(snap) = next.take() {
            self.destroy_dataset(&snap, false).await?;
            gone.push(snap.clone());
            let Some((base, _)) = snap.rsplit_once('@') else { break };
            let aside = base.rsplit_once('/').is_some_and(|(_, leaf)| leaf.starts_with(DELETED));
            let others = all.iter().any(|z| !gone.contains(&z.name) && z.name.starts_with(&format!("{base}@")));
            if aside && !others {
                self.destroy_dataset(base, false).await?;
                gone.push(base.to_string());
                next = orphaned_origin(all, base, &gone);
            }
        }
        Ok(())
    }

    /// The snapshot `snap` of volume `nr` of `rsc`: on the volume, else on
    /// one of its earlier volumes renamed aside (kept for their snapshots
    /// after a delete or a rollback to an older snapshot).
    fn snapshot_of(all: &[Zvol], pool: &ZfsPool, rsc: &str, nr: u32, snap: &str) -> Option<String> {
        let live = format!("{}/{rsc}_{nr:05}@{snap}", pool.dataset);
        if all.iter().any(|z| z.name == live) {
            return Some(live);
        }
        all.iter()
            .filter(|z| z.kind == "snapshot")
            .find(|z| z.name.split_once('@').is_some_and(|(base, s)| s == snap && owner(pool, rsc, base) == Some(nr)))
            .map(|z| z.name.clone())
    }

    /// Snapshots of `rsc`'s volumes (`<rsc>_<NNNNN>@<snap>`): snapshot name
    /// -> volume numbers, also those kept on volumes renamed aside
    /// (`_deleted_<rsc>_<NNNNN>_<id>@<snap>`). Snapshots renamed aside and
    /// those made for clones are not the user's.
    pub async fn snapshots(&self, pool: &ZfsPool, rsc: &str) -> Result<std::collections::BTreeMap<String, Vec<u32>>, StorageError> {
        let rsc = safe_name(rsc)?;
        let mut out: std::collections::BTreeMap<String, Vec<u32>> = std::collections::BTreeMap::new();
        for z in self.list_reused(pool).await?.iter().filter(|z| z.kind == "snapshot") {
            let Some((base, snap)) = z.name.split_once('@') else { continue };
            let Some(nr) = owner(pool, rsc, base) else { continue };
            if !snap.starts_with(DELETED) && !snap.starts_with(CLONE_SNAP) && !snap.starts_with(RECEIVED) {
                let nrs = out.entry(snap.to_string()).or_default();
                if !nrs.contains(&nr) {
                    nrs.push(nr);
                }
            }
        }
        Ok(out)
    }

    /// `zfs snapshot <zvol>@<snap>`.
    pub async fn create_snapshot(&self, pool: &ZfsPool, rsc: &str, nr: u32, snap: &str) -> Result<(), StorageError> {
        let name = format!("{}@{}", zvol_name(pool, rsc, nr)?, safe_name(snap)?);
        self.runner.run(&self.zfs().args(["snapshot", &name])).await?;
        Ok(())
    }

    /// The device of a snapshot for a backup to read and its size in bytes:
    /// `snapdev=visible` on the zvol makes ZFS expose its snapshots as
    /// read-only devices (`/dev/zvol/<zvol>@<snap>`, linked by udev a
    /// moment later). [`Zfs::snapshot_close`] hides them again.
    pub async fn snapshot_open(&self, pool: &ZfsPool, rsc: &str, nr: u32, snap: &str) -> Result<(String, u64), StorageError> {
        let zvol = zvol_name(pool, rsc, nr)?;
        let name = format!("{zvol}@{}", safe_name(snap)?);
        if !self.list(pool).await?.iter().any(|z| z.name == name) {
            return Err(StorageError::Missing(format!("snapshot {name} does not exist")));
        }
        self.runner.run(&self.zfs().args(["set", "snapdev=visible", &zvol])).await?;
        let dev = format!("/dev/zvol/{name}");
        let deadline = tokio::time::Instant::now() + self.settle.max(Duration::from_secs(30));
        while !std::path::Path::new(&dev).exists() {
            if tokio::time::Instant::now() > deadline {
                return Err(StorageError::Missing(format!("the device {dev} did not appear after snapdev=visible")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let bytes = self.runner.run(&Cmd::new("blockdev").timeout(self.timeout).args(["--getsize64", &dev])).await?.stdout;
        Ok((dev, parse_value(&bytes, "blockdev")?))
    }

    /// Hides the zvol's snapshot devices again (`snapdev` inherited).
    pub async fn snapshot_close(&self, pool: &ZfsPool, rsc: &str, nr: u32) -> Result<(), StorageError> {
        self.runner.run(&self.zfs().args(["inherit", "snapdev", &zvol_name(pool, rsc, nr)?])).await?;
        Ok(())
    }

    /// Destroys the snapshot (on the volume or on one renamed aside), or —
    /// while clones of it remain — renames it aside
    /// (`@_deleted_<snap>_<n>`); the last clone takes it along.
    pub async fn delete_snapshot(&self, pool: &ZfsPool, rsc: &str, nr: u32, snap: &str) -> Result<(), StorageError> {
        let (rsc, snap) = (safe_name(rsc)?, safe_name(snap)?);
        let all = self.list(pool).await?;
        let Some(name) = Self::snapshot_of(&all, pool, rsc, nr, snap) else { return Ok(()) };
        let Some(z) = all.iter().find(|z| z.name == name) else { return Ok(()) };
        if z.clones.is_empty() {
            return self.destroy_snapshot(&all, &name).await;
        }
        let base = name.split_once('@').map(|(b, _)| b).unwrap_or_default();
        let target = (0..).map(|n| format!("{base}@{DELETED}{snap}_{n}")).find(|t| !all.iter().any(|z| &z.name == t)).unwrap_or_default();
        self.runner.run(&self.zfs().args(["rename", &name, &target])).await?;
        Ok(())
    }

    /// `zfs send [-i <base>] <zvol>@<snap>` (LINSTOR's shipping command),
    /// its stdout for the caller to stream; the snapshots may be on the
    /// volume or on one renamed aside.
    pub async fn send_stream(
        &self,
        pool: &ZfsPool,
        rsc: &str,
        nr: u32,
        snap: &str,
        base: Option<&str>,
    ) -> Result<cairn_exec::Streaming, StorageError> {
        let rsc = safe_name(rsc)?;
        let all = self.list(pool).await?;
        let missing =
            |s: &str| StorageError::BadBacking(format!("snapshot '{s}' of volume {nr} of '{rsc}' is not in pool '{}'", pool.name));
        let from = Self::snapshot_of(&all, pool, rsc, nr, safe_name(snap)?).ok_or_else(|| missing(snap))?;
        let mut c = Cmd::new("zfs").arg("send").timeout(COPY_TIMEOUT);
        if let Some(b) = base {
            c = c.args(["-i", &Self::snapshot_of(&all, pool, rsc, nr, safe_name(b)?).ok_or_else(|| missing(b))?]);
        }
        Ok(self.runner.stream(&c.arg(&from), cairn_exec::Feed::Out).await?)
    }

    /// Whether volume `nr` of `rsc` can receive snapshot `snap` (full
    /// without `base`, else incremental on top of `base`): the snapshot
    /// is not here yet, and for an incremental the volume holds `base`
    /// (`zfs receive` applies the stream to the volume itself).
    pub async fn receive_check(&self, pool: &ZfsPool, rsc: &str, nr: u32, snap: &str, base: Option<&str>) -> Result<(), StorageError> {
        let name = zvol_name(pool, rsc, nr)?;
        let snap = safe_name(snap)?;
        let all = self.list(pool).await?;
        if all.iter().any(|z| z.name == format!("{name}@{snap}") || z.name == format!("{name}@{RECEIVED}{snap}")) {
            return Err(StorageError::BadBacking(format!("snapshot {name}@{snap} exists on this node")));
        }
        match base {
            Some(b) if !all.iter().any(|z| z.name == format!("{name}@{}", safe_name(b).unwrap_or_default())) => {
                Err(StorageError::BadBacking(format!("the base snapshot {name}@{b} is not on this node")))
            }
            None if all.iter().any(|z| z.name == name) => {
                Err(StorageError::BadBacking(format!("volume {name} exists on this node: a full stream or a restore cannot go into it")))
            }
            _ => Ok(()),
        }
    }

    /// A zvol to restore a backup into: `<rsc>_<NNNNN>` itself (sparse in
    /// a ZFS_THIN pool), made without an identity, so that no resource
    /// takes it and the satellite does not count it as one, and `bytes`
    /// long (rounded up to KiB). Its device, once udev linked it. As a
    /// snapshot shipped from another cluster (and as LINSTOR receives into
    /// the resource's zvol), [`Zfs::receive_done`] snapshots it under the
    /// received name and the resource restored from that snapshot on this
    /// node takes the zvol over ([`Zfs::ensure_restored`]).
    pub async fn receive_create(&self, pool: &ZfsPool, rsc: &str, nr: u32, snap: &str, bytes: u64) -> Result<String, StorageError> {
        self.receive_check(pool, rsc, nr, snap, None).await?;
        let name = zvol_name(pool, rsc, nr)?;
        let mut c = self.zfs().arg("create");
        if pool.thin {
            c = c.arg("-s");
        }
        self.runner.run(&c.args(["-V", &format!("{}KB", bytes.div_ceil(1024)), &name])).await?;
        let dev = format!("/dev/zvol/{name}");
        let deadline = tokio::time::Instant::now() + self.settle.max(Duration::from_secs(30));
        while !std::path::Path::new(&dev).exists() {
            if tokio::time::Instant::now() > deadline {
                self.runner.run(&self.zfs().args(["destroy", &name])).await?;
                return Err(StorageError::Missing(format!("the device {dev} did not appear after zfs create")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(dev)
    }

    /// The restored data is complete: `zfs snapshot <zvol>@cairn_recv_<snap>`,
    /// which takes its own name when the controller registered it.
    pub async fn receive_done(&self, pool: &ZfsPool, rsc: &str, nr: u32, snap: &str) -> Result<(), StorageError> {
        let name = format!("{}@{RECEIVED}{}", zvol_name(pool, rsc, nr)?, safe_name(snap)?);
        self.runner.run(&self.zfs().args(["snapshot", &name])).await?;
        Ok(())
    }

    /// `zfs receive -F <zvol>@cairn_recv_<snap>` (LINSTOR's receiving
    /// command, under the name that waits for the registration), its stdin
    /// for the caller to stream. A stream that does not end complete is
    /// refused by ZFS and leaves nothing.
    pub async fn receive_stream(&self, pool: &ZfsPool, rsc: &str, nr: u32, snap: &str) -> Result<cairn_exec::Streaming, StorageError> {
        let to = format!("{}@{RECEIVED}{}", zvol_name(pool, rsc, nr)?, safe_name(snap)?);
        let c = Cmd::new("zfs").args(["receive", "-F", &to]).timeout(COPY_TIMEOUT);
        Ok(self.runner.stream(&c, cairn_exec::Feed::In).await?)
    }

    /// Removes what arrived of a shipment that failed: the received
    /// snapshot, and with a full stream the volume it made.
    pub async fn drop_received(&self, pool: &ZfsPool, rsc: &str, nr: u32, snap: &str, full: bool) -> Result<(), StorageError> {
        let name = zvol_name(pool, rsc, nr)?;
        let got = format!("{name}@{RECEIVED}{}", safe_name(snap)?);
        let all = self.list(pool).await?;
        if full && all.iter().any(|z| z.name == name && z.vid.is_none()) {
            self.destroy_dataset(&name, true).await?;
        } else if all.iter().any(|z| z.name == got) {
            self.destroy_dataset(&got, false).await?;
        }
        Ok(())
    }

    /// Removes the zvol of a restore that failed ([`Zfs::receive_create`])
    /// with what it holds (its destroy waits out udev's hold on the zvol
    /// the failed write closed: `destroy_dataset`).
    pub async fn receive_abandon(&self, pool: &ZfsPool, rsc: &str, nr: u32, snap: &str) -> Result<(), StorageError> {
        self.drop_received(pool, rsc, nr, snap, true).await
    }

    /// A received snapshot takes its name once it is desired (registered
    /// by the controller): true when there was one.
    pub async fn adopt_received(&self, pool: &ZfsPool, rsc: &str, nr: u32, snap: &str) -> Result<bool, StorageError> {
        let (rsc, snap) = (safe_name(rsc)?, safe_name(snap)?);
        let all = self.list(pool).await?;
        let Some(got) = Self::snapshot_of(&all, pool, rsc, nr, &format!("{RECEIVED}{snap}")) else { return Ok(false) };
        let base = got.split_once('@').map(|(b, _)| b).unwrap_or_default();
        self.runner.run(&self.zfs().args(["rename", &got, &format!("{base}@{snap}")])).await?;
        Ok(true)
    }

    /// Removes what is left of `rsc` once no snapshot of it is wanted on
    /// this node: the snapshots kept on its volumes renamed aside (and with
    /// the last one each such volume).
    pub async fn forget(&self, pool: &ZfsPool, rsc: &str) -> Result<(), StorageError> {
        let rsc = safe_name(rsc)?;
        let snaps = self.snapshots(pool, rsc).await?;
        for (snap, nrs) in snaps {
            for nr in nrs {
                self.delete_snapshot(pool, rsc, nr, &snap).await?;
            }
        }
        Ok(())
    }

    /// Whether volume `nr` still has to go back to `snap` for rollback
    /// `id`: it has not had that rollback (or is missing: a rollback cut
    /// short between its steps), and the snapshot exists.
    pub async fn needs_rollback(&self, pool: &ZfsPool, rsc: &str, nr: u32, snap: &str, id: &str) -> Result<bool, StorageError> {
        let name = zvol_name(pool, rsc, nr)?;
        let all = self.list(pool).await?;
        let done = all.iter().any(|z| z.name == name && z.kind == "volume" && z.rollback.as_deref() == Some(id));
        Ok(!done && Self::snapshot_of(&all, pool, safe_name(rsc)?, nr, safe_name(snap)?).is_some())
    }

    /// Back to `snap`, by LINSTOR's strategy `mode`: `zfs rollback
    /// <zvol>@<snap>` (`Rollback`; ZFS refuses a snapshot with newer ones
    /// or one that is not on the zvol), or — `Clone` — the volume is
    /// renamed aside with all its snapshots and a `zfs clone` of the
    /// snapshot takes its place, so every snapshot stays; `Dynamic` rolls
    /// back when the snapshot is the volume's newest and clones otherwise
    /// (ZFS would destroy the newer ones). Then the rollback id is on the
    /// volume (set by the clone itself), so it happens once.
    #[allow(clippy::too_many_arguments)]
    pub async fn rollback(
        &self,
        pool: &ZfsPool,
        rsc: &str,
        nr: u32,
        vid: &str,
        snap: &str,
        id: &str,
        mode: ZfsRollback,
    ) -> Result<(), StorageError> {
        let (rsc, snap) = (safe_name(rsc)?, safe_name(snap)?);
        let name = zvol_name(pool, rsc, nr)?;
        let id: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        let all = self.list(pool).await?;
        let live = all.iter().find(|z| z.name == name && z.kind == "volume");
        let target = format!("{name}@{snap}");
        let own: Vec<&Zvol> = all.iter().filter(|z| z.kind == "snapshot" && z.name.starts_with(&format!("{name}@"))).collect();
        // `zfs list` gives a volume's snapshots oldest first.
        let newest = own.last().is_some_and(|z| z.name == target);
        let in_place = match mode {
            ZfsRollback::Rollback => true,
            ZfsRollback::Clone => false,
            ZfsRollback::Dynamic => live.is_some() && newest,
        };
        if in_place {
            self.runner.run(&self.zfs().args(["rollback", &target])).await?;
            self.runner.run(&self.zfs().args(["set", &format!("cairn:rb={id}"), &name])).await?;
            return Ok(());
        }
        let vid: String = live.and_then(|z| z.vid.clone()).unwrap_or_else(|| vid.chars().filter(char::is_ascii_alphanumeric).collect());
        if let Some(l) = live {
            self.destroy(&all, &l.name).await?;
        }
        let all = self.list(pool).await?;
        let Some(from) = Self::snapshot_of(&all, pool, rsc, nr, snap) else {
            return Err(StorageError::BadBacking(format!("the snapshot {target} to roll back to does not exist")));
        };
        self.runner
            .run(&self.zfs().args(["clone", "-o", &format!("cairn:vid={vid}"), "-o", &format!("cairn:rb={id}"), &from, &name]))
            .await?;
        if !pool.thin {
            // A clone reserves nothing; the thick volume it replaces did
            // (`auto`: what `zfs create` without `-s` reserves).
            self.runner.run(&self.zfs().args(["set", "refreservation=auto", &name])).await?;
        }
        Ok(())
    }

    /// A new volume `v` restored from snapshot `snap` of `src_rsc`'s volume
    /// of the same number: `zfs clone` of the snapshot, as LINSTOR
    /// restores, with the identity set as it is made; then grown to the
    /// size if larger.
    pub async fn ensure_restored(
        &self,
        pool: &ZfsPool,
        v: &VolumeSpec<'_>,
        src_rsc: &str,
        snap: &str,
    ) -> Result<VolumeObserved, StorageError> {
        let (rsc, nr, id, size) = (v.rsc.as_str(), v.nr, v.id, v.size);
        let name = zvol_name(pool, rsc, nr)?;
        let mut all = self.list(pool).await?;
        let received = all.iter().find(|z| z.name == name && z.kind == "volume" && z.vid.is_none());
        if received.is_some() && safe_name(src_rsc)? == rsc {
            // Shipped from another cluster into this very volume (as
            // LINSTOR receives): it becomes the resource's, with the
            // snapshot it came with.
            self.adopt_received(pool, rsc, nr, snap).await?;
            let vid: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
            self.runner.run(&self.zfs().args(["set", &format!("cairn:vid={vid}"), &name])).await?;
            all = self.list(pool).await?;
        }
        if !all.iter().any(|z| z.name == name && z.kind == "volume") {
            let Some(from) = Self::snapshot_of(&all, pool, safe_name(src_rsc)?, nr, safe_name(snap)?) else {
                let from = format!("{}@{snap}", zvol_name(pool, src_rsc, nr)?);
                return Err(StorageError::BadBacking(format!("the snapshot {from} to restore from does not exist")));
            };
            let vid: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
            self.runner.run(&self.zfs().args(["clone", "-o", &format!("cairn:vid={vid}"), &from, &name])).await?;
        }
        self.ensure(pool, rsc, nr, id, size).await
    }

    /// Removes volumes of `rsc` whose number is not in `keep` (all with an
    /// empty `keep`).
    pub async fn remove_others(&self, pool: &ZfsPool, rsc: &str, keep: &[u32]) -> Result<(), StorageError> {
        let prefix = format!("{}/{}_", pool.dataset, safe_name(rsc)?);
        let all = self.list(pool).await?;
        for z in all.iter().filter(|z| z.kind == "volume") {
            let nr = z.name.strip_prefix(&prefix).and_then(volume_number);
            if nr.is_some_and(|nr| !keep.contains(&nr)) {
                self.destroy(&all, &z.name).await?;
            }
        }
        Ok(())
    }

    /// What each zvol of the pool references now, KiB, by resource and
    /// volume number (one `zfs list`).
    pub async fn allocated(&self, pool: &ZfsPool) -> Result<std::collections::BTreeMap<(String, u32), i64>, StorageError> {
        let prefix = format!("{}/", pool.dataset);
        Ok(self
            .list(pool)
            .await?
            .iter()
            .filter(|z| z.kind == "volume")
            .filter_map(|z| {
                z.name.strip_prefix(&prefix).and_then(split_volume_name).map(|(rsc, nr)| ((rsc.to_string(), nr), z.allocated_kib()))
            })
            .collect())
    }

    /// Resources with volumes in the pool (made by Cairn).
    pub async fn resources(&self, pool: &ZfsPool) -> Result<Vec<String>, StorageError> {
        let prefix = format!("{}/", pool.dataset);
        Ok(self
            .list(pool)
            .await?
            .into_iter()
            .filter(|z| z.kind == "volume" && z.vid.is_some())
            .filter_map(|z| z.name.strip_prefix(&prefix).and_then(split_volume_name).map(|(r, _)| r.to_string()))
            .filter(|r| !r.contains('/') && !r.starts_with("_deleted_"))
            .collect())
    }

    /// (total, free) KiB: the zpool's size and the dataset's available space.
    pub async fn capacity(&self, pool: &ZfsPool) -> Result<(i64, i64), StorageError> {
        let size = self.runner.run(&Cmd::new("zpool").args(["get", "size", "-Hp", pool.zpool()]).timeout(self.timeout)).await?;
        let avail = self.runner.run(&self.zfs().args(["get", "available", "-o", "value", "-Hp", &pool.dataset])).await?;
        let total = parse_value(&size.stdout, "zpool")? / 1024;
        let free = parse_value(&avail.stdout, "zfs")? / 1024;
        Ok((total as i64, free as i64))
    }
}

#[cfg(test)]
mod tests {
    use cairn_exec::FakeRunner;

    use super::*;
    use crate::Name;

    /// A command captured from real OpenZFS (testdata/zfs/README.md):
    /// its stdout, stderr and exit code.
    struct Captured {
        out: String,
        err: String,
        rc: i32,
    }

    fn captured(name: &str) -> Captured {
        let read = |ext: &str| {
            let path = format!("{}/testdata/zfs/{name}.{ext}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        Captured { out: read("out"), err: read("err"), rc: read("rc").trim().parse().expect("exit code") }
    }

    /// The argv of a capture (`NAME.cmd`, made with shlex quoting, none
    /// needed here).
    fn argv(name: &str) -> Vec<String> {
        let path = format!("{}/testdata/zfs/{name}.cmd", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).split_whitespace().map(str::to_string).collect()
    }

    /// The runner answers a captured command as OpenZFS did.
    fn replay(f: &FakeRunner, name: &str) {
        let a = argv(name);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let c = captured(name);
        if c.rc == 0 {
            f.expect(&a, &c.out);
        } else {
            f.expect_failure(&a, c.rc, &c.err);
        }
    }

    const POOL: &str = "tank/linstor";

    fn list_cmd(ds: &str) -> Vec<&str> {
        ["zfs", "list", "-r", "-H", "-p", "-o", LIST_COLUMNS, "-t", "volume,snapshot", ds].to_vec()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn on(thin: bool) -> (Arc<FakeRunner>, Zfs, ZfsPool) {
        let f = Arc::new(FakeRunner::new());
        let z = Zfs::counting_in(f.clone(), Duration::from_secs(5), Arc::default()).with_settle(Duration::ZERO);
        (f, z, ZfsPool::new("zp", POOL, thin).unwrap())
    }

    fn err_text(r: Result<impl std::fmt::Debug, StorageError>) -> String {
        match r {
            Err(StorageError::Exec(e)) => e.stderr().unwrap_or_default().to_string(),
            other => panic!("expected a failed command, got {other:?}"),
        }
    }

    #[test]
    fn the_captured_list_gives_volumes_snapshots_clones_and_marks() {
        // The capture is of exactly the command `list` runs.
        assert_eq!(argv("list"), list_cmd(POOL));
        let v = parse_list(&captured("list").out).unwrap();
        let by = |n: &str| v.iter().find(|z| z.name == format!("{POOL}/{n}")).unwrap_or_else(|| panic!("{n} in {v:?}"));
        let web = by("web_00000");
        assert_eq!((web.kind.as_str(), web.volsize, web.vid.as_deref()), ("volume", Some(67_108_864), Some("0a1b2c3d4e5f")));
        assert!(web.origin.is_none() && web.clones.is_empty() && web.rollback.is_none());
        let db = by("db_00000");
        assert_eq!((db.volsize, db.vid.as_deref(), db.rollback.as_deref()), (Some(1_073_741_824), Some("ffeeddccbbaa"), Some("rb-7")));
        assert!(db.refer > 4 * 1024 * 1024, "4 MiB were written: {db:?}");
        let snap = by("db_00000@snap1");
        assert_eq!((snap.kind.as_str(), snap.volsize), ("snapshot", Some(1_073_741_824)));
        assert_eq!(snap.clones, [format!("{POOL}/copy_00000")]);
        let copy = by("copy_00000");
        assert_eq!((copy.origin.as_deref(), copy.vid.as_deref()), (Some(format!("{POOL}/db_00000@snap1").as_str()), Some("c0ffee000001")));
        assert_eq!(by("_deleted_old_00000_abcdef01@keep").kind, "snapshot");
        assert_eq!(v.len(), 6, "{v:?}");
        assert!(parse_list("tank/x\t1\n").is_err());
        assert!(parse_list("tank/x\tnope\t-\tvolume\t-\t-\t-\t-\t-\n").is_err());
        assert!(ZfsPool::new("p", "tank/linstor", false).is_ok());
        for bad in ["", "-o", "/tank", "tank/", "ta nk", "tank//x"] {
            assert!(ZfsPool::new("p", bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn pools_volumes_and_snapshots_from_one_list() {
        let (f, z, pool) = on(true);
        replay(&f, "list");
        let a = rt().block_on(z.allocated(&pool)).unwrap();
        let v = parse_list(&captured("list").out).unwrap();
        let kib = |n: &str| v.iter().find(|z| z.name == format!("{POOL}/{n}")).map(Zvol::allocated_kib).unwrap();
        // Snapshots and volumes renamed aside are no volumes of a resource.
        assert_eq!(
            a,
            [
                (("copy".to_string(), 0), kib("copy_00000")),
                (("db".to_string(), 0), kib("db_00000")),
                (("web".to_string(), 0), kib("web_00000"))
            ]
            .into()
        );
        replay(&f, "list");
        assert_eq!(rt().block_on(z.resources(&pool)).unwrap(), ["copy", "db", "web"]);
        // The snapshot listings reuse that list: nothing changed since.
        let snaps = rt().block_on(z.snapshots(&pool, "db")).unwrap();
        assert_eq!(snaps, [("snap1".to_string(), vec![0])].into());
        // A volume renamed aside keeps its snapshots for its resource
        // (LINSTOR keeps them after the resource is deleted) ...
        assert_eq!(rt().block_on(z.snapshots(&pool, "old")).unwrap(), [("keep".to_string(), vec![0])].into());
        // ... but not for another resource whose name starts the same.
        assert!(rt().block_on(z.snapshots(&pool, "ol")).unwrap().is_empty());
        assert!(owner(&pool, "old", "tank/linstor/_deleted_old_00000_abcdef01-2") == Some(0));
        assert!(owner(&pool, "old", "tank/linstor/_deleted_old_00000_x_00000_ab").is_none(), "that is resource old_00000_x");
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn capacity_reads_zpool_and_zfs() {
        let (f, z, pool) = on(true);
        replay(&f, "zpool_get_size");
        replay(&f, "zfs_get_available");
        let size: i64 = captured("zpool_get_size").out.split('\t').nth(2).unwrap().parse().unwrap();
        let avail: i64 = captured("zfs_get_available").out.trim().parse().unwrap();
        assert_eq!(rt().block_on(z.capacity(&pool)).unwrap(), (size / 1024, avail / 1024));
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn a_missing_dataset_fails_the_list() {
        let (f, z, _) = on(false);
        replay(&f, "list_missing");
        let missing = ZfsPool::new("zp", "tank/nonexist", false).unwrap();
        assert!(err_text(rt().block_on(z.list(&missing))).contains("dataset does not exist"));
        // Exit 1 without that text: nothing listed yet.
        f.expect_failure(&list_cmd(POOL), 1, "");
        assert!(rt().block_on(z.list(&ZfsPool::new("zp", POOL, false).unwrap())).unwrap().is_empty());
    }

    #[test]
    fn create_grow_and_the_failures_real_zfs_gives() {
        let (f, z, thick) = on(false);
        let l = list_cmd(POOL);
        // The capture's command line is what ensure runs; here ZFS says it exists.
        f.expect(&l, "");
        replay(&f, "create_exists");
        let e = err_text(rt().block_on(z.ensure(&thick, "web", 0, "0a1b2c3d4e5f", Kib::new(65536).unwrap())));
        assert!(e.contains("dataset already exists"), "{e}");
        f.expect(&l, "");
        replay(&f, "create_too_big");
        let e = err_text(rt().block_on(z.ensure(&thick, "huge", 0, "0123", Kib::new(104_857_600).unwrap())));
        assert!(e.contains("out of space"), "{e}");
        // A grow past the pool.
        let web = captured("list").out.lines().filter(|l| l.starts_with("tank/linstor/web_00000\t")).collect::<String>() + "\n";
        f.expect(&l, &web);
        replay(&f, "grow_too_big");
        let e = err_text(rt().block_on(z.ensure(&thick, "web", 0, "0a1b2c3d4e5f", Kib::new(104_857_600).unwrap())));
        assert!(e.contains("size is greater than available space"), "{e}");
        assert!(f.is_done(), "{:?}", f.calls());
        // Thin: -s; the figures are the requested size and nothing
        // referenced yet (the pools' measurement reads the real ones).
        let (f, z, thin) = on(true);
        f.expect(&l, "").expect(&["zfs", "create", "-s", "-V", "65536KB", "-o", "cairn:vid=abc", "tank/linstor/db_00000"], "");
        let o = rt().block_on(z.ensure(&thin, "db", 0, "abc", Kib::new(65536).unwrap())).unwrap();
        assert_eq!(o.device_path.as_deref(), Some("/dev/zvol/tank/linstor/db_00000"));
        assert_eq!((o.usable_kib, o.allocated_kib), (Some(65536), Some(0)));
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn a_create_reuses_the_pools_list_until_something_changes_datasets() {
        let (f, z, pool) = on(true);
        let l = list_cmd(POOL);
        // The measurement lists the pool; the create that follows runs
        // `zfs create` only, and the snapshot listing after it nothing.
        f.expect(&l, "tank/linstor/old_00000\t4096\t1048576\tvolume\t8192\t-\t-\tf00\t-\n")
            .expect(&["zfs", "create", "-s", "-V", "1024KB", "-o", "cairn:vid=abc", "tank/linstor/db_00000"], "");
        rt().block_on(z.allocated(&pool)).unwrap();
        rt().block_on(z.ensure(&pool, "db", 0, "abc", Kib::new(1024).unwrap())).unwrap();
        assert!(rt().block_on(z.snapshots(&pool, "db")).unwrap().is_empty());
        // The amended list knows the new zvol: ensuring it again runs nothing.
        let o = rt().block_on(z.ensure(&pool, "db", 0, "abc", Kib::new(1024).unwrap())).unwrap();
        assert_eq!(o.usable_kib, Some(1024));
        assert!(f.is_done(), "{:?}", f.calls());
        // A snapshot changes datasets: the next listing reads the pool again.
        f.expect(&["zfs", "snapshot", "tank/linstor/db_00000@s1"], "").expect(
            &l,
            "tank/linstor/db_00000\t4096\t1048576\tvolume\t8192\t-\t-\tabc\t-\ntank/linstor/db_00000@s1\t0\t-\tsnapshot\t-\t-\t-\tabc\t-\n",
        );
        rt().block_on(z.create_snapshot(&pool, "db", 0, "s1")).unwrap();
        assert_eq!(rt().block_on(z.snapshots(&pool, "db")).unwrap(), [("s1".to_string(), vec![0])].into());
        assert!(f.is_done(), "{:?}", f.calls());
        // A failed create leaves nothing to reuse either.
        f.expect_failure(&["zfs", "create", "-s", "-V", "1024KB", "-o", "cairn:vid=web", "tank/linstor/web_00000"], 1, "cannot create")
            .expect(&l, "");
        assert!(rt().block_on(z.ensure(&pool, "web", 0, "web", Kib::new(1024).unwrap())).is_err());
        assert!(rt().block_on(z.snapshots(&pool, "web")).unwrap().is_empty());
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn a_change_made_through_another_provider_of_the_process_spoils_the_list() {
        // The satellite's backups and shipments run providers of their own.
        let changes: Arc<AtomicU64> = Arc::default();
        let (f, g) = (Arc::new(FakeRunner::new()), Arc::new(FakeRunner::new()));
        let a = Zfs::counting_in(f.clone(), Duration::from_secs(5), changes.clone()).with_settle(Duration::ZERO);
        let b = Zfs::counting_in(g.clone(), Duration::from_secs(5), changes).with_settle(Duration::ZERO);
        let pool = ZfsPool::new("zp", POOL, true).unwrap();
        let l = list_cmd(POOL);
        f.expect(&l, "").expect(&l, "tank/linstor/db_00000@s1\t0\t-\tsnapshot\t-\t-\t-\tabc\t-\n");
        rt().block_on(a.allocated(&pool)).unwrap();
        assert!(rt().block_on(a.snapshots(&pool, "db")).unwrap().is_empty(), "reused: no command");
        g.expect(&["zfs", "snapshot", "tank/linstor/db_00000@s1"], "");
        rt().block_on(b.create_snapshot(&pool, "db", 0, "s1")).unwrap();
        assert_eq!(rt().block_on(a.snapshots(&pool, "db")).unwrap(), [("s1".to_string(), vec![0])].into());
        assert!(f.is_done() && g.is_done(), "{:?} {:?}", f.calls(), g.calls());
    }

    #[test]
    fn only_reading_commands_leave_the_lists_current() {
        let argv = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        for read in
            ["zfs list -r tank", "zfs get available tank", "zpool get size -Hp tank", "blockdev --getsize64 /dev/x", "zfs send tank/a@s"]
        {
            assert!(!changes_datasets(&argv(read)), "{read}");
        }
        for change in [
            "zfs create -V 1KB tank/a",
            "zfs destroy tank/a",
            "zfs rename tank/a tank/b",
            "zfs rollback tank/a@s",
            "zfs set volsize=2KB tank/a",
            "zfs send tank/a@s | zfs receive -F tank/b",
            "zpool create tank /dev/vdb",
        ] {
            assert!(changes_datasets(&argv(change)), "{change}");
        }
    }

    #[test]
    fn delete_renames_aside_what_snapshots_or_clones_still_need() {
        let (f, z, pool) = on(false);
        let l = list_cmd(POOL);
        // db has a snapshot: renamed aside with it, by its identity.
        replay(&f, "list");
        f.expect(&["zfs", "rename", "tank/linstor/db_00000", "tank/linstor/_deleted_db_00000_ffeeddcc"], "");
        rt().block_on(z.remove_others(&pool, "db", &[])).unwrap();
        // web has none: destroyed.
        replay(&f, "list");
        f.expect(&["zfs", "destroy", "tank/linstor/web_00000"], "");
        rt().block_on(z.remove_others(&pool, "web", &[])).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // snap1 has a clone: renamed aside, not destroyed.
        replay(&f, "list");
        f.expect(&["zfs", "rename", "tank/linstor/db_00000@snap1", "tank/linstor/db_00000@_deleted_snap1_0"], "");
        rt().block_on(z.delete_snapshot(&pool, "db", 0, "snap1")).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // Then the clone goes and takes the snapshot renamed aside along.
        let after = captured("list").out.replace("db_00000@snap1", "db_00000@_deleted_snap1_0");
        f.expect(&l, &after)
            .expect(&["zfs", "destroy", "tank/linstor/copy_00000"], "")
            .expect(&["zfs", "destroy", "tank/linstor/db_00000@_deleted_snap1_0"], "");
        rt().block_on(z.remove_others(&pool, "copy", &[])).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // The last snapshot of a volume renamed aside takes the volume.
        f.expect(&["zfs", "destroy", "tank/linstor/_deleted_old_00000_abcdef01@keep"], "")
            .expect(&["zfs", "destroy", "tank/linstor/_deleted_old_00000_abcdef01"], "");
        rt().block_on(z.destroy_snapshot(&parse_list(&captured("list").out).unwrap(), "tank/linstor/_deleted_old_00000_abcdef01@keep"))
            .unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // A busy volume (snapshots taken since the list): ZFS's refusal.
        f.expect(&l, "tank/linstor/db_00000\t1\t2\tvolume\t8192\t-\t-\tffeeddccbbaa\t-\n");
        replay(&f, "destroy_with_snapshots");
        assert!(err_text(rt().block_on(z.remove_others(&pool, "db", &[]))).contains("volume has children"));
        // A snapshot with a clone made since the list, the same.
        f.expect(&l, "tank/linstor/db_00000@snap1\t1\t2\tsnapshot\t-\t-\t-\t-\t-\n");
        replay(&f, "destroy_snapshot_with_clone");
        assert!(err_text(rt().block_on(z.delete_snapshot(&pool, "db", 0, "snap1"))).contains("dependent clones"));
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn snapshot_rollback_and_restore_command_lines() {
        let (f, z, pool) = on(true);
        f.expect(&["zfs", "snapshot", "tank/linstor/db_00000@s2"], "");
        rt().block_on(z.create_snapshot(&pool, "db", 0, "s2")).unwrap();
        // db carries rollback rb-7 already: done once only.
        for (id, needed) in [("rb-7", false), ("rb-8", true)] {
            replay(&f, "list");
            assert_eq!(rt().block_on(z.needs_rollback(&pool, "db", 0, "snap1", id)).unwrap(), needed, "{id}");
        }
        replay(&f, "list");
        assert!(!rt().block_on(z.needs_rollback(&pool, "db", 0, "nosuch", "rb-8")).unwrap(), "no snapshot, no rollback");
        // snap1 is db's newest snapshot: `zfs rollback`.
        replay(&f, "list");
        f.expect(&["zfs", "rollback", "tank/linstor/db_00000@snap1"], "")
            .expect(&["zfs", "set", "cairn:rb=rb-8", "tank/linstor/db_00000"], "");
        rt().block_on(z.rollback(&pool, "db", 0, "ffeeddccbbaa", "snap1", "rb-8", ZfsRollback::Dynamic)).unwrap();
        // A newer snapshot exists: ZFS would refuse (or, with -r, destroy
        // it), so the volume goes aside with both snapshots and a clone of
        // snap1 takes its place, identity and rollback id set at once.
        let with_s2 = format!("{}tank/linstor/db_00000@s2\t8192\t1073741824\tsnapshot\t-\t-\t-\tffeeddccbbaa\t-\n", captured("list").out);
        let aside = with_s2.replace("tank/linstor/db_00000", "tank/linstor/_deleted_db_00000_ffeeddcc");
        let l = list_cmd(POOL);
        let clone = [
            "zfs",
            "clone",
            "-o",
            "cairn:vid=ffeeddccbbaa",
            "-o",
            "cairn:rb=rb-9",
            "tank/linstor/_deleted_db_00000_ffeeddcc@snap1",
            "tank/linstor/db_00000",
        ];
        // In a thick pool the clone then reserves the volume's size, as the
        // zvol it replaces did.
        let (thick_f, thick, thick_pool) = on(false);
        for (runner, set_reservation) in [(&f, false), (&thick_f, true)] {
            runner
                .expect(&l, &with_s2)
                .expect(&["zfs", "rename", "tank/linstor/db_00000", "tank/linstor/_deleted_db_00000_ffeeddcc"], "")
                .expect(&l, &aside)
                .expect(&clone, "");
            if set_reservation {
                runner.expect(&["zfs", "set", "refreservation=auto", "tank/linstor/db_00000"], "");
            }
        }
        rt().block_on(z.rollback(&pool, "db", 0, "ffeeddccbbaa", "snap1", "rb-9", ZfsRollback::Dynamic)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        rt().block_on(thick.rollback(&thick_pool, "db", 0, "ffeeddccbbaa", "snap1", "rb-9", ZfsRollback::Dynamic)).unwrap();
        assert!(thick_f.is_done(), "{:?}", thick_f.calls());
        // Both snapshots are still the resource's, from the volume aside.
        f.expect(&l, &aside);
        assert_eq!(rt().block_on(z.snapshots(&pool, "db")).unwrap(), [("s2".to_string(), vec![0]), ("snap1".to_string(), vec![0])].into());
        // The real error text of the refused `zfs rollback` (why the clone).
        let c = captured("rollback_not_latest");
        assert_ne!(c.rc, 0);
        assert!(c.err.contains("more recent snapshots"), "{}", c.err);
        assert!(f.is_done(), "{:?}", f.calls());
        // LINSTOR's 'Rollback' strategy: `zfs rollback` whatever the list
        // says, and ZFS's refusal is the volume's error (the controller
        // allows it only for the newest snapshot).
        f.expect(&l, &with_s2).expect_failure(&["zfs", "rollback", "tank/linstor/db_00000@snap1"], c.rc, &c.err);
        let e = err_text(rt().block_on(z.rollback(&pool, "db", 0, "ffeeddccbbaa", "snap1", "rb-10", ZfsRollback::Rollback)));
        assert!(e.contains("more recent snapshots"), "{e}");
        assert!(f.is_done(), "{:?}", f.calls());
        // 'Clone': even to the newest snapshot, the volume goes aside and a
        // clone takes its place.
        let snap1_aside = captured("list").out.replace("tank/linstor/db_00000", "tank/linstor/_deleted_db_00000_ffeeddcc");
        let mut clone11 = clone;
        clone11[5] = "cairn:rb=rb-11";
        replay(&f, "list");
        f.expect(&["zfs", "rename", "tank/linstor/db_00000", "tank/linstor/_deleted_db_00000_ffeeddcc"], "")
            .expect(&l, &snap1_aside)
            .expect(&clone11, "");
        rt().block_on(z.rollback(&pool, "db", 0, "ffeeddccbbaa", "snap1", "rb-11", ZfsRollback::Clone)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // Restore: a clone of the snapshot with the new identity, then ensured.
        let l = list_cmd(POOL);
        let cloned = "tank/linstor/new_00000\t8192\t1073741824\tvolume\t8192\ttank/linstor/db_00000@snap1\t-\tn1\t-\n";
        replay(&f, "list");
        f.expect(&["zfs", "clone", "-o", "cairn:vid=n1", "tank/linstor/db_00000@snap1", "tank/linstor/new_00000"], "").expect(&l, cloned);
        let new = Name::new("new").unwrap();
        let spec = |size| VolumeSpec { rsc: &new, nr: 0, id: "n1", size: Kib::new(size).unwrap(), source: None, clone_from: None };
        let o = rt().block_on(z.ensure_restored(&pool, &spec(1_048_576), "db", "snap1")).unwrap();
        assert_eq!(o.device_path.as_deref(), Some("/dev/zvol/tank/linstor/new_00000"));
        // No such snapshot: an error, nothing made.
        replay(&f, "list");
        assert!(rt().block_on(z.ensure_restored(&pool, &spec(1024), "db", "gone")).is_err());
        assert!(f.is_done(), "{:?}", f.calls());
    }

    /// What `zfs destroy` said in the VM while udev still probed the zvol
    /// a failed restore had written (tests/vm/test_vm_backups.py).
    const BUSY: &str = "cannot destroy 'tank/linstor/new_00000': dataset is busy\n";

    #[test]
    fn a_volume_udev_still_holds_is_destroyed_once_it_lets_go() {
        let (f, z, pool) = on(true);
        let l = list_cmd(POOL);
        let busy = "cannot destroy 'tank/linstor/new_00000': dataset is busy\n";
        f.expect(&l, "tank/linstor/new_00000\t8192\t1048576\tvolume\t8192\t-\t-\tabc\t-\n")
            .expect_failure(&["zfs", "destroy", "tank/linstor/new_00000"], 1, busy)
            .expect_failure(&["zfs", "destroy", "tank/linstor/new_00000"], 1, busy)
            .expect(&["zfs", "destroy", "tank/linstor/new_00000"], "");
        rt().block_on(z.remove_others(&pool, "new", &[])).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // Any other refusal is not waited out.
        f.expect(&l, "tank/linstor/new_00000\t8192\t1048576\tvolume\t8192\t-\t-\tabc\t-\n").expect_failure(
            &["zfs", "destroy", "tank/linstor/new_00000"],
            1,
            "cannot destroy: permission denied\n",
        );
        assert!(err_text(rt().block_on(z.remove_others(&pool, "new", &[]))).contains("permission denied"));
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn a_restore_goes_into_the_new_volume_itself_snapshotted_only_when_complete() {
        let (f, z, pool) = on(true);
        let l = list_cmd(POOL);
        // Taken names are refused before anything is made: db_00000 exists
        // (the capture's list), and so does db_00000@snap1.
        replay(&f, "list");
        let e = rt().block_on(z.receive_create(&pool, "db", 0, "s9", 1 << 20)).unwrap_err().to_string();
        assert!(e.contains("exists on this node"), "{e}");
        replay(&f, "list");
        assert!(rt().block_on(z.receive_create(&pool, "db", 0, "snap1", 1 << 20)).is_err());
        assert!(f.is_done(), "{:?}", f.calls());
        // Complete: snapshotted under the name that waits for the registration.
        f.expect(&["zfs", "snapshot", "tank/linstor/new_00000@cairn_recv_s1"], "");
        rt().block_on(z.receive_done(&pool, "new", 0, "s1")).unwrap();
        // Failed: the volume goes with what it holds (again while udev
        // holds it), but only one without an identity (never a resource's
        // volume).
        f.expect(&l, "tank/linstor/new_00000\t8192\t1048576\tvolume\t8192\t-\t-\t-\t-\n")
            .expect_failure(&["zfs", "destroy", "-r", "tank/linstor/new_00000"], 1, BUSY)
            .expect(&["zfs", "destroy", "-r", "tank/linstor/new_00000"], "");
        rt().block_on(z.receive_abandon(&pool, "new", 0, "s1")).unwrap();
        f.expect(&l, "tank/linstor/new_00000\t8192\t1048576\tvolume\t8192\t-\t-\tabc\t-\n");
        rt().block_on(z.drop_received(&pool, "new", 0, "s1", true)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // Once registered, the resource restored from the snapshot on this
        // node takes the volume over: the snapshot gets its name, the
        // volume its identity; no clone.
        let got = "tank/linstor/new_00000\t8192\t1048576\tvolume\t8192\t-\t-\t-\t-\n\
                   tank/linstor/new_00000@cairn_recv_s1\t0\t-\tsnapshot\t-\t-\t-\t-\t-\n";
        let mine = "tank/linstor/new_00000\t8192\t1048576\tvolume\t8192\t-\t-\tn1\t-\n\
                    tank/linstor/new_00000@s1\t0\t-\tsnapshot\t-\t-\t-\t-\t-\n";
        f.expect(&l, got)
            .expect(&l, got)
            .expect(&["zfs", "rename", "tank/linstor/new_00000@cairn_recv_s1", "tank/linstor/new_00000@s1"], "")
            .expect(&["zfs", "set", "cairn:vid=n1", "tank/linstor/new_00000"], "")
            .expect(&l, mine);
        let new = Name::new("new").unwrap();
        let spec = VolumeSpec { rsc: &new, nr: 0, id: "n1", size: Kib::new(1024).unwrap(), source: None, clone_from: None };
        let o = rt().block_on(z.ensure_restored(&pool, &spec, "new", "s1")).unwrap();
        assert_eq!(o.device_path.as_deref(), Some("/dev/zvol/tank/linstor/new_00000"));
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn clones_are_zfs_clones_or_send_receive_from_a_snapshot_of_the_source() {
        let f = Arc::new(FakeRunner::new());
        let z = Zfs::counting_in(f.clone(), Duration::from_secs(5), Arc::default()).with_settle(Duration::ZERO);
        let pool = ZfsPool::new("zt", "tank", true).unwrap();
        let l = list_cmd("tank");
        let src = "tank/web_00000\t57344\t67108864\tvolume\t16384\t-\t-\ta1\t-\n";
        let done = "tank/cl_00000\t1024\t67108864\tvolume\t16384\t-\t-\tc9\t-\n";
        let size = Kib::new(65536).unwrap();
        // use_zfs_clone: snapshot, clone with the identity; the snapshot stays.
        f.expect(&l, src)
            .expect(&["zfs", "snapshot", "tank/web_00000@cairn_clone_cl"], "")
            .expect(&["zfs", "clone", "-o", "cairn:vid=c9", "tank/web_00000@cairn_clone_cl", "tank/cl_00000"], "")
            .expect(&l, &format!("{src}{done}"));
        let o = rt().block_on(z.ensure_clone(&pool, "cl", 0, "c9", size, "web", true)).unwrap();
        assert_eq!(o.device_path.as_deref(), Some("/dev/zvol/tank/cl_00000"));
        assert!(f.is_done(), "{:?}", f.calls());
        // send/receive, as LINSTOR pipes it (no shell here); both snapshots go.
        f.expect(&l, src)
            .expect(&["zfs", "snapshot", "tank/web_00000@cairn_clone_cl"], "")
            .expect(
                &[
                    "zfs",
                    "send",
                    "--embed",
                    "--large-block",
                    "tank/web_00000@cairn_clone_cl",
                    "|",
                    "zfs",
                    "receive",
                    "-F",
                    "-o",
                    "cairn:vid=c9",
                    "tank/cl_00000",
                ],
                "",
            )
            .expect(&["zfs", "destroy", "tank/cl_00000@cairn_clone_cl"], "")
            .expect(&["zfs", "destroy", "tank/web_00000@cairn_clone_cl"], "")
            .expect(&l, &format!("{src}{done}"));
        rt().block_on(z.ensure_clone(&pool, "cl", 0, "c9", size, "web", false)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // A finished clone is only ensured (no copy); a zvol without the
        // identity (a copy cut short) is destroyed and copied again, from
        // the snapshot already there.
        f.expect(&l, &format!("{src}{done}"));
        rt().block_on(z.ensure_clone(&pool, "cl", 0, "c9", size, "web", false)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        let partial = "tank/cl_00000\t1024\t67108864\tvolume\t16384\t-\t-\t-\t-\n";
        let snap = "tank/web_00000@cairn_clone_cl\t0\t-\tsnapshot\t-\t-\t-\t-\t-\n";
        f.expect(&l, &format!("{src}{snap}{partial}"))
            .expect(&["zfs", "destroy", "tank/cl_00000"], "")
            .expect(&["zfs", "clone", "-o", "cairn:vid=c9", "tank/web_00000@cairn_clone_cl", "tank/cl_00000"], "")
            .expect(&l, &format!("{src}{done}"));
        rt().block_on(z.ensure_clone(&pool, "cl", 0, "c9", size, "web", true)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // No source: an error, nothing made.
        f.expect(&l, "");
        assert!(rt().block_on(z.ensure_clone(&pool, "cl", 0, "c9", size, "web", true)).is_err());
        assert!(f.is_done(), "{:?}", f.calls());
    }
}
