//! The DRBD layer on a satellite: writes each resource's `.res` file
//! (validated by drbdadm's own parser before it replaces the old one),
//! creates metadata on new diskful volumes, brings the resource up with
//! `drbdadm adjust`, forces the initial sync where the controller chose
//! this node for it, resizes, and takes everything down on delete. The
//! kernel's view comes from `drbdsetup events2`, followed in a task.
//!
//! Without the DRBD 9 kernel module the layer is unsupported, unless the
//! satellite runs in config-only mode: then everything that does not need
//! the kernel still happens for real (storage with room for metadata, the
//! `.res` file, `create-md`, and `drbdadm -d adjust` planning the kernel
//! commands), and the resource reports that the kernel part did not run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use cairn_exec::{CommandRunner, ExecError};
use cairn_proto::{DrbdDesired, DrbdObserved, DrbdVolumeDesired, DrbdVolumeObserved, ObjectError};
use cairn_storage::drbd::adm::{Adm, DrbdVersions, parse_versions};
use cairn_storage::drbd::events::Events2;
use cairn_storage::drbd::render_res;
use tokio::io::AsyncBufReadExt;

/// How far the layer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrbdMode {
    /// The DRBD 9 module is loaded: the full sequence.
    Kernel,
    /// No kernel module: configuration and metadata only.
    ConfigOnly,
}

/// The name of Cairn's top-level drbdadm configuration in the config dir.
pub const CONF_FILE: &str = "cairn.conf";

/// With `true`, every new replica receives a full initial sync, also where
/// its backing device reads zeros (LINSTOR's property of the same name).
pub const FORCE_INITIAL_SYNC: &str = "DrbdOptions/ForceInitialSyncPermanent";

/// DRBD's highest node id: metadata has a bitmap base for each.
const MAX_NODE_ID: u8 = 31;

/// A random generation id: 64 random bits, the lowest (DRBD's primary
/// flag) clear, not one of the values DRBD gives a meaning (0, 4).
fn random_gi() -> String {
    loop {
        let gi = (uuid::Uuid::new_v4().as_u128() as u64) & !1;
        if gi != 0 && gi != 4 {
            return format!("{gi:X}");
        }
    }
}

/// Whether the DRBD layer can run here, and in which mode.
pub async fn probe(runner: &dyn CommandRunner, config_only: bool) -> Result<DrbdMode, Vec<String>> {
    let out = match runner.run(&cairn_exec::Cmd::new("drbdadm").arg("--version").timeout(Duration::from_secs(10)).quiet()).await {
        Ok(o) => o.stdout,
        Err(ExecError::Spawn { not_found: true, .. }) => return Err(vec!["drbd-utils: drbdadm not found".into()]),
        Err(e) => return Err(vec![format!("drbdadm --version failed: {e}")]),
    };
    let v: DrbdVersions = parse_versions(&out);
    let problems = v.problems();
    if runner.run(&cairn_exec::Cmd::new("drbdmeta").timeout(Duration::from_secs(10)).quiet()).await.as_ref().is_err_and(is_not_found) {
        return Err(vec!["drbd-utils: drbdmeta not found".into()]);
    }
    if problems.is_empty() {
        Ok(DrbdMode::Kernel)
    } else if config_only && v.utils.is_some_and(|(maj, _, _)| maj >= 9) {
        Ok(DrbdMode::ConfigOnly)
    } else {
        Err(problems)
    }
}

fn is_not_found(e: &ExecError) -> bool {
    matches!(e, ExecError::Spawn { not_found: true, .. })
}

/// The DRBD layer of one satellite.
pub struct DrbdLayer {
    runner: Arc<dyn CommandRunner>,
    adm: Adm,
    dir: PathBuf,
    pub mode: DrbdMode,
    events: Arc<Mutex<Events2>>,
    /// Bumped by every events2 line the follower reads: wakes the
    /// observation requests the satellite holds.
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// Backing devices each resource's `.res` names, as written by this
    /// process: `wipe-md` on delete only touches devices known this way.
    written: Mutex<BTreeMap<String, BTreeMap<u32, String>>>,
    /// Where sysfs is (`/sys`); None: sizes come from events2 only (tests).
    sysfs: Option<PathBuf>,
    /// Per resource, the node ids of deleted peers this replica has freed
    /// the bitmap slots of (reported until the controller stops asking).
    forgotten: Mutex<BTreeMap<String, BTreeSet<u8>>>,
    /// Connections with a volume waiting for its peer's bitmap
    /// (`WFBitMapT`): since when, and when this layer last cycled them.
    stalls: Mutex<Stalls>,
}

/// A bitmap exchange that has not finished after this long is taken as
/// stuck (seen under heavy load when a volume is added to a resource in
/// use: DRBD 9.2 left one peer device in `WFBitMapT` for minutes).
pub const BITMAP_STALL: Duration = Duration::from_secs(60);

/// The same on the sending side (`WFBitMapS`), which acts only after the
/// receiving side had its chance: seen on a loaded machine when a
/// diskless replica attached a disk (evacuation, toggle-disk), the new
/// disk's node never reached `WFBitMapT` (its `drbdadm adjust` hung), and
/// both its peers waited in `WFBitMapS` for half an hour.
pub const BITMAP_STALL_SENDER: Duration = Duration::from_secs(150);

/// A local disk still `Negotiating` after this long while its peers'
/// connections are up is taken as a handshake that will not come: seen in
/// the VMs on an idle machine, when a replica toggled back to diskful
/// attached its new disk, its peers did their side of the handshake and
/// sent their bitmaps (`WFBitMapS`), and the node itself never did its
/// side. DRBD's attach waits, uninterruptibly, for the negotiation to end,
/// so `drbdadm adjust` hung until it was killed (and its `drbdsetup`
/// stayed). Normal negotiations take well under a second.
pub const NEGOTIATION_STALL: Duration = Duration::from_secs(30);

/// Per (resource, peer node id): since when a volume has waited for the
/// bitmap, and when the connection was last cycled for it.
#[derive(Default)]
struct Stalls {
    since: BTreeMap<(String, u8), std::time::Instant>,
    cycled: BTreeMap<(String, u8), std::time::Instant>,
}

fn obj_err(message: String, e: &dyn std::fmt::Display, details: Option<String>) -> ObjectError {
    ObjectError { message, cause: Some(e.to_string()), details }
}

fn exec_err(message: String, e: &ExecError) -> ObjectError {
    obj_err(message, e, Some(e.details()))
}

impl DrbdLayer {
    /// Prepares the configuration directory and its top-level file.
    pub fn new(runner: Arc<dyn CommandRunner>, dir: PathBuf, mode: DrbdMode, timeout: Duration) -> std::io::Result<DrbdLayer> {
        cairn_storage::create_private_dir(&dir.join(".backup"))?;
        let conf = dir.join(CONF_FILE);
        let text =
            format!("# Written by the Cairn satellite; do not edit.\nglobal {{ usage-count no; }}\ninclude \"{}/*.res\";\n", dir.display());
        if std::fs::read_to_string(&conf).ok().as_deref() != Some(text.as_str()) {
            write_atomically(&conf, &text)?;
        }
        Ok(DrbdLayer {
            runner,
            adm: Adm::new(conf, timeout),
            dir,
            mode,
            events: Arc::new(Mutex::new(Events2::new())),
            changed: Arc::new(tokio::sync::watch::Sender::new(0)),
            written: Mutex::new(BTreeMap::new()),
            sysfs: Some(PathBuf::from("/sys")),
            forgotten: Mutex::new(BTreeMap::new()),
            stalls: Mutex::new(Stalls::default()),
        })
    }

    /// Reads device sizes from another sysfs root, or (None) from events2
    /// only.
    pub fn with_sysfs(mut self, root: Option<PathBuf>) -> DrbdLayer {
        self.sysfs = root;
        self
    }

    pub fn res_path(&self, rsc: &str) -> PathBuf {
        self.dir.join(format!("{rsc}.res"))
    }

    /// Follows `drbdsetup events2` for as long as the process runs
    /// (kernel mode only); restarts the stream with back-off.
    pub fn follow_events(self: &Arc<Self>) {
        if self.mode != DrbdMode::Kernel {
            return;
        }
        let events = self.events.clone();
        let changed = self.changed.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let cmd = Adm::events2(false);
                let argv = cmd.argv();
                let child = tokio::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn();
                match child {
                    Ok(mut child) => {
                        if let Some(out) = child.stdout.take() {
                            let mut lines = tokio::io::BufReader::new(out).lines();
                            while let Ok(Some(line)) = lines.next_line().await {
                                events.lock().feed(&line);
                                changed.send_modify(|n| *n = n.wrapping_add(1));
                                backoff = Duration::from_secs(1);
                            }
                        }
                        let _ = child.wait().await;
                        tracing::warn!("drbdsetup events2 ended; restarting it");
                    }
                    Err(e) => tracing::warn!("cannot start drbdsetup events2: {e}"),
                }
                events.lock().reset();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
    }

    /// Wakes when DRBD's state may have changed (an events2 line came).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Feeds events2 lines (tests, and the follower).
    pub fn feed_events(&self, lines: &str) {
        let mut e = self.events.lock();
        for l in lines.lines() {
            e.feed(l);
        }
    }

    /// The connections whose bitmap exchange looks stuck at `now`: some
    /// volume has waited for the peer's bitmap (`WFBitMapT`, the side that
    /// receives it) for [`BITMAP_STALL`] or longer, or to send its own
    /// (`WFBitMapS`) for [`BITMAP_STALL_SENDER`] (longer, so that where
    /// both sides see the stall the receiving one acts first), and the
    /// connection was not cycled within the last `BITMAP_STALL`; or a
    /// local disk has been `Negotiating` for [`NEGOTIATION_STALL`] while
    /// the connection is up. A state seen for the first time starts its
    /// clock.
    pub fn stalled_connections(&self, now: std::time::Instant) -> Vec<(String, u8)> {
        let mut waiting: BTreeMap<(String, u8), Duration> = BTreeMap::new();
        {
            // A connection waiting for several things gets the shortest limit.
            let mut wait = |key: (String, u8), limit: Duration| {
                waiting.entry(key).and_modify(|l| *l = (*l).min(limit)).or_insert(limit);
            };
            let events = self.events.lock();
            for (rsc, r) in events.resources() {
                if r.volumes.iter().any(|v| v.disk == "Negotiating") {
                    for c in r.connections.iter().filter(|c| c.connection == "Connected") {
                        wait((rsc.clone(), c.peer_node_id), NEGOTIATION_STALL);
                    }
                }
                for v in &r.volumes {
                    for p in &v.peers {
                        let limit = match p.replication.as_str() {
                            "WFBitMapT" => BITMAP_STALL,
                            "WFBitMapS" => BITMAP_STALL_SENDER,
                            _ => continue,
                        };
                        if let Some(c) = r.connections.iter().find(|c| c.peer == p.peer) {
                            wait((rsc.clone(), c.peer_node_id), limit);
                        }
                    }
                }
            }
        }
        let mut stalls = self.stalls.lock();
        stalls.since.retain(|k, _| waiting.contains_key(k));
        let mut out = Vec::new();
        for (k, limit) in waiting {
            let since = *stalls.since.entry(k.clone()).or_insert(now);
            let recently = stalls.cycled.get(&k).is_some_and(|t| now.saturating_duration_since(*t) < BITMAP_STALL);
            if now.saturating_duration_since(since) >= limit && !recently {
                stalls.cycled.insert(k.clone(), now);
                stalls.since.insert(k.clone(), now);
                out.push(k);
            }
        }
        let keep: BTreeSet<_> = stalls.since.keys().cloned().collect();
        stalls.cycled.retain(|k, t| keep.contains(k) || now.saturating_duration_since(*t) < BITMAP_STALL);
        out
    }

    /// Disconnects and reconnects each stuck connection
    /// ([`Self::stalled_connections`]): the handshake starts over, and the
    /// bitmap is exchanged again. The other peers keep the resource's
    /// quorum meanwhile; a failed command is logged and the next apply's
    /// `adjust` connects what is configured anyway.
    pub async fn unstick(&self, now: std::time::Instant) {
        for (rsc, id) in self.stalled_connections(now) {
            tracing::warn!(rsc, peer_node_id = id, "the handshake or bitmap exchange with this peer looks stuck; reconnecting to it");
            if let Err(e) = self.runner.run(&self.adm.disconnect(&rsc, id)).await {
                tracing::warn!(rsc, peer_node_id = id, "drbdsetup disconnect failed: {e}");
            }
            if let Err(e) = self.runner.run(&self.adm.connect(&rsc, id)).await {
                tracing::warn!(rsc, peer_node_id = id, "drbdsetup connect failed: {e}");
            }
        }
    }

    /// Looks for stuck bitmap exchanges every 5 s (kernel mode only).
    pub fn watch_stalls(self: &Arc<Self>) {
        if self.mode != DrbdMode::Kernel {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                me.unstick(std::time::Instant::now()).await;
            }
        });
    }

    /// The current state of a resource as the layer sees it.
    pub fn observed(&self, rsc: &str, d: &DrbdDesired) -> DrbdObserved {
        let mut o = self.kernel_state(rsc, d);
        o.forgotten = self.forgotten.lock().get(rsc).into_iter().flatten().copied().filter(|id| d.forget_peers.contains(id)).collect();
        o
    }

    fn kernel_state(&self, rsc: &str, d: &DrbdDesired) -> DrbdObserved {
        match self.mode {
            DrbdMode::Kernel => {
                let mut o = self.events.lock().resource(rsc).cloned().unwrap_or_else(|| DrbdObserved {
                    kernel: true,
                    role: "Unknown".into(),
                    ..Default::default()
                });
                // A resize shows in sysfs at once, in events2 only later.
                for v in &mut o.volumes {
                    if let Some(k) = self.sysfs_kib(v.minor) {
                        v.size_kib = Some(k);
                    }
                }
                o
            }
            DrbdMode::ConfigOnly => DrbdObserved {
                kernel: false,
                role: "Unknown".into(),
                volumes: d
                    .volumes
                    .iter()
                    .map(|v| DrbdVolumeObserved { number: v.number, minor: v.minor, disk: "Unknown".into(), ..Default::default() })
                    .collect(),
                ..Default::default()
            },
        }
    }

    /// Writes the `.res` file if it changed: rendered, checked by the
    /// real parser in a temporary file, then renamed over the old one
    /// (kept in `.backup/`). Returns the previous text, if any.
    async fn write_res(&self, rsc: &str, d: &DrbdDesired, disks: &BTreeMap<u32, String>) -> Result<Option<String>, ObjectError> {
        let text = render_res(rsc, d, &|nr| disks.get(&nr).cloned());
        let path = self.res_path(rsc);
        let old = std::fs::read_to_string(&path).ok();
        if old.as_deref() == Some(text.as_str()) {
            return Ok(old);
        }
        let tmp = self.dir.join(format!(".{rsc}.res.tmp"));
        write_atomically(&tmp, &text).map_err(|e| obj_err(format!("Cannot write the DRBD configuration of '{rsc}'."), &e, None))?;
        if let Err(e) = self.runner.run(&self.adm.validate(&tmp, rsc, &d.host)).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(exec_err(format!("drbdadm refused the generated configuration of '{rsc}'; it was not installed."), &e));
        }
        if let Some(o) = &old {
            let _ = write_atomically(&self.dir.join(".backup").join(format!("{rsc}.res")), o);
        }
        std::fs::rename(&tmp, &path).map_err(|e| obj_err(format!("Cannot install the DRBD configuration of '{rsc}'."), &e, None))?;
        Ok(old)
    }

    fn restore(&self, rsc: &str, old: Option<String>) {
        let path = self.res_path(rsc);
        let r = match old {
            Some(text) => write_atomically(&path, &text),
            None => std::fs::remove_file(&path),
        };
        if let Err(e) = r {
            tracing::warn!(rsc, "cannot restore the previous DRBD configuration: {e}");
        }
    }

    /// Whether a volume is attached right now (kernel mode, per events2).
    fn attached(&self, rsc: &str, nr: u32) -> bool {
        self.events
            .lock()
            .resource(rsc)
            .and_then(|r| r.volumes.iter().find(|v| v.number == nr))
            .is_some_and(|v| !matches!(v.disk.as_str(), "Diskless" | "DUnknown" | "Detaching" | "Failed"))
    }

    /// Marker files in the config dir: `fresh` = metadata of every local
    /// volume was created by this satellite and the initial sync has not
    /// been started; `initialized` = it was (never force again).
    fn marker(&self, rsc: &str, what: &str) -> PathBuf {
        self.dir.join(format!(".{rsc}.{what}"))
    }

    /// Creates metadata where there is none; returns the volumes whose
    /// metadata was created now.
    async fn metadata(&self, rsc: &str, d: &DrbdDesired, disks: &BTreeMap<u32, String>) -> Result<BTreeSet<u32>, ObjectError> {
        let mut fresh = BTreeSet::new();
        for v in &d.volumes {
            let Some(dev) = disks.get(&v.number) else { continue };
            if self.mode == DrbdMode::Kernel && self.attached(rsc, v.number) {
                continue;
            }
            match self.runner.run(&self.adm.get_gi(v.minor, dev, d.node_id)).await {
                Ok(_) => {}
                // Exit 1/255 without any complaint is a device without
                // metadata; anything else (unclean activity log, a device
                // that cannot be opened) must never be mistaken for blank.
                Err(ExecError::NonZero { code: 1 | 255, stderr, .. })
                    if stderr.trim().is_empty() || stderr.contains("No valid meta data found") =>
                {
                    self.runner
                        .run(&self.adm.create_md(rsc, v.number, d.peer_slots, &d.host))
                        .await
                        .map_err(|e| exec_err(format!("Failed to create DRBD metadata for volume {} of '{rsc}'.", v.number), &e))?;
                    fresh.insert(v.number);
                }
                Err(e) => return Err(exec_err(format!("Cannot read the DRBD metadata of volume {} of '{rsc}'.", v.number), &e)),
            }
        }
        Ok(fresh)
    }

    /// Stamps fresh metadata with the volume's day-0 generation id, as
    /// LINSTOR does, so that no initial sync is needed where none is:
    /// - on the replica chosen for the initial sync, while the volume is
    ///   not initialized: a random current id, day 0 as the bitmap base for
    ///   every peer, UpToDate (the others sync from it by bitmap);
    /// - elsewhere, where the backing device reads zeros until written
    ///   (thin, ZFS; not under LUKS) and `DrbdOptions/ForceInitialSyncPermanent`
    ///   is not true: day 0 as the current id, UpToDate (nothing to sync);
    /// - otherwise nothing: the metadata stays "just created" and receives
    ///   a full sync; so also on a replica that got its disk by toggle-disk
    ///   (`joining`), whatever its backing, unless it is the chosen replica
    ///   of a volume not initialized yet (there is no data to join).
    ///
    /// Returns whether the volume was stamped.
    async fn stamp_day0(&self, d: &DrbdDesired, v: &DrbdVolumeDesired, dev: &str, zeroed: bool) -> Result<bool, ExecError> {
        let Some(day0) = &v.day0_gi else { return Ok(false) };
        if d.joining && (v.initialized || !d.initial_sync) {
            // A disk added by toggle-disk joins data its peers wrote while
            // it was diskless (they kept no bitmap for it): "just created"
            // metadata, a full sync from an UpToDate peer. Only a volume
            // nobody made UpToDate yet, with this replica chosen to do it,
            // has no data to join.
            return Ok(false);
        }
        let forced = d.options.get(FORCE_INITIAL_SYNC).is_some_and(|x| x.eq_ignore_ascii_case("true"));
        if v.initial_sync.unwrap_or(d.initial_sync) && !v.initialized {
            let mine = format!("{}:{day0}:::1:1", random_gi());
            let others = format!(":{day0}::::");
            for id in 0..=MAX_NODE_ID {
                self.runner.run(&self.adm.set_gi(v.minor, dev, id, if id == d.node_id { &mine } else { &others })).await?;
            }
        } else if zeroed && !forced {
            // LINSTOR writes day 0 as the current id through every node id
            // too; the current id is one per device, once is enough.
            self.runner.run(&self.adm.set_gi(v.minor, dev, d.node_id, &format!("{day0}::::1:1"))).await?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// In kernel mode, decisions need the kernel's current state: until
    /// the first events2 dump is read, the work is retried later.
    fn require_state(&self, rsc: &str) -> Result<(), ObjectError> {
        if self.mode == DrbdMode::Kernel && !self.events.lock().initialized {
            return Err(ObjectError {
                message: format!("The DRBD state of '{rsc}' is not known yet; the change is retried."),
                cause: Some("drbdsetup events2 has not delivered the current state (satellite starting or events2 restarting).".into()),
                details: None,
            });
        }
        Ok(())
    }

    /// Makes the resource as desired. `disks` are the local backing
    /// devices (empty for a diskless resource); `net_kib` the usable size
    /// per volume.
    pub async fn ensure(
        &self,
        rsc: &str,
        d: &DrbdDesired,
        disks: &BTreeMap<u32, String>,
        net_kib: &BTreeMap<u32, i64>,
        zeroed: &BTreeSet<u32>,
    ) -> Result<DrbdObserved, ObjectError> {
        self.require_state(rsc)?;
        let old = self.write_res(rsc, d, disks).await?;
        self.written.lock().insert(rsc.to_string(), disks.clone());
        let fresh = self.metadata(rsc, d, disks).await?;
        for v in d.volumes.iter().filter(|v| fresh.contains(&v.number)) {
            let Some(dev) = disks.get(&v.number) else { continue };
            if let Err(e) = self.stamp_day0(d, v, dev, zeroed.contains(&v.number)).await {
                // Metadata that is neither fresh nor stamped must not stay:
                // wiped, the next attempt starts over.
                let _ = self.runner.run(&self.adm.wipe_md(rsc, v.number, &d.host)).await;
                return Err(exec_err(format!("Failed to set the day-0 generation id of volume {} of '{rsc}'.", v.number), &e));
            }
        }
        // Volumes from before day-0 ids: the chosen replica forces the
        // initial sync once every local volume got fresh metadata.
        let legacy = d.volumes.iter().all(|v| v.day0_gi.is_none());
        let all_fresh = !disks.is_empty() && d.volumes.iter().filter(|v| disks.contains_key(&v.number)).all(|v| fresh.contains(&v.number));
        if legacy && all_fresh && !self.marker(rsc, "initialized").exists() {
            // Remembered across failures and restarts until the sync starts.
            write_atomically(&self.marker(rsc, "fresh"), "")
                .map_err(|e| obj_err(format!("Cannot record the new metadata of '{rsc}'."), &e, None))?;
        }
        let fresh = self.marker(rsc, "fresh").exists();
        // Peers the kernel knows that are no longer configured: adjust
        // deletes their connections, then their bitmap slots are freed.
        let gone: Vec<u8> = match self.mode {
            DrbdMode::Kernel if !d.diskless => self
                .events
                .lock()
                .resource(rsc)
                .map(|r| r.connections.iter().map(|c| c.peer_node_id).filter(|id| !d.peers.iter().any(|p| p.node_id == *id)).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        // A disk given to a replica its peers still know as intentionally
        // diskless, or a peer made diskless here while its disk is still
        // attached there, is refused until the other satellites applied
        // the same change (moments later): tried again each second for up
        // to 30 s.
        let mut attempt = 1;
        loop {
            let adjust = self.adm.adjust(rsc, &d.host, self.mode == DrbdMode::ConfigOnly);
            let adjust = if attempt < ADJUST_ATTEMPTS { adjust.quiet() } else { adjust };
            match self.runner.run(&adjust).await {
                Ok(_) => break,
                Err(ExecError::NonZero { ref stderr, .. }) if attempt < ADJUST_ATTEMPTS && adjust_may_pass_later(stderr) => {
                    tracing::debug!(rsc, attempt, "a peer has not applied the same change yet; adjusting again");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    self.restore(rsc, old);
                    return Err(exec_err(format!("drbdadm adjust of '{rsc}' failed; the previous configuration was restored."), &e));
                }
            }
        }
        let mut freed = BTreeSet::new();
        for id in gone {
            // Best effort, as in LINSTOR: a slot that cannot be freed now
            // stays as it is (logged).
            match self.runner.run(&self.adm.forget_peer(rsc, id)).await {
                Ok(_) => {
                    freed.insert(id);
                }
                Err(e) => tracing::warn!(rsc, peer_node_id = id, "drbdsetup forget-peer failed: {e}"),
            }
        }
        self.forget_deleted_peers(rsc, d, &freed).await;
        if self.mode == DrbdMode::Kernel {
            let peer_up_to_date = self
                .events
                .lock()
                .resource(rsc)
                .is_some_and(|r| r.volumes.iter().any(|v| v.peers.iter().any(|p| p.peer_disk == "UpToDate")));
            if d.initial_sync && fresh && !d.diskless && !peer_up_to_date {
                // The brand-new data here becomes the sync source.
                self.runner
                    .run(&self.adm.primary_force(rsc, &d.host))
                    .await
                    .map_err(|e| exec_err(format!("Failed to start the initial sync of '{rsc}'."), &e))?;
                self.runner
                    .run(&self.adm.secondary(rsc, &d.host))
                    .await
                    .map_err(|e| exec_err(format!("Failed to demote '{rsc}' after starting its initial sync."), &e))?;
            }
            if fresh && (d.initial_sync || peer_up_to_date) {
                // Started here, or the data came from a peer: never again.
                let _ = write_atomically(&self.marker(rsc, "initialized"), "");
                let _ = std::fs::remove_file(self.marker(rsc, "fresh"));
            }
            let grow: Vec<(u32, i64)> = d
                .volumes
                .iter()
                .filter(|v| disks.contains_key(&v.number))
                .filter_map(|v| match (self.size_kib(rsc, v.number), net_kib.get(&v.number)) {
                    (Some(h), Some(w)) if h < *w => Some((v.number, *w)),
                    _ => None,
                })
                .collect();
            for (nr, want) in grow {
                self.resize(rsc, nr, &d.host, want).await?;
            }
        }
        Ok(self.observed(rsc, d))
    }

    /// Frees the bitmap slots of the deleted peers the controller names
    /// (`forget_peers`) and records those done, so that `observed` reports
    /// them. As LINSTOR's `DrbdLayer`, a failed `forget-peer` counts as
    /// done when the resource is up and has no connection to that node id
    /// (nothing is left to forget); while the resource is down (deactivated,
    /// not brought up yet) it is tried again with the next apply. A
    /// diskless replica has no bitmaps, a config-only node never ran the
    /// resource: nothing to free there.
    async fn forget_deleted_peers(&self, rsc: &str, d: &DrbdDesired, freed: &BTreeSet<u8>) {
        let mut done = BTreeSet::new();
        for &id in &d.forget_peers {
            // Configured again: a new peer's now, not to be forgotten.
            if d.peers.iter().any(|p| p.node_id == id) {
                continue;
            }
            let forgotten = match self.mode {
                DrbdMode::ConfigOnly => true,
                DrbdMode::Kernel if d.diskless || freed.contains(&id) => true,
                DrbdMode::Kernel => match self.runner.run(&self.adm.forget_peer(rsc, id).quiet()).await {
                    Ok(_) => true,
                    Err(e) => {
                        let nothing_left =
                            self.events.lock().resource(rsc).is_some_and(|r| !r.connections.iter().any(|c| c.peer_node_id == id));
                        if !nothing_left {
                            tracing::warn!(rsc, peer_node_id = id, "drbdsetup forget-peer failed; tried again later: {e}");
                        }
                        nothing_left
                    }
                },
            };
            if forgotten {
                done.insert(id);
            }
        }
        let mut all = self.forgotten.lock();
        let mine = all.entry(rsc.to_string()).or_default();
        mine.extend(done);
        mine.retain(|id| d.forget_peers.contains(id));
    }

    /// `drbdadm resize`: DRBD grows to the smallest backing device of the
    /// connected peers, which grow theirs at the same moment on their own
    /// satellites. So a resize can succeed and leave the device as it was
    /// (a peer has not grown yet), and DRBD refuses while a resync runs or
    /// another node's state change is under way: both are tried again each
    /// second for up to 30 s (any other refusal is reported at once), until
    /// the kernel reports the size - grown here or by a peer's resize.
    async fn resize(&self, rsc: &str, nr: u32, host: &str, want_kib: i64) -> Result<(), ObjectError> {
        const ATTEMPTS: u32 = 30;
        for attempt in 1..=ATTEMPTS {
            if self.size_kib(rsc, nr).is_some_and(|h| h >= want_kib) {
                return Ok(());
            }
            let cmd = self.adm.resize(rsc, nr, host);
            // Refusals before the last attempt are expected: no warning.
            let cmd = if attempt < ATTEMPTS { cmd.quiet() } else { cmd };
            match self.runner.run(&cmd).await {
                Ok(_) => {}
                Err(ExecError::NonZero { ref stderr, .. }) if attempt < ATTEMPTS && resize_may_pass_later(stderr) => {
                    tracing::debug!(rsc, volume = nr, attempt, "drbdadm resize refused for now; trying again");
                }
                Err(e) => return Err(exec_err(format!("Failed to grow DRBD volume {nr} of '{rsc}'."), &e)),
            }
            // events2 reports a new size within moments.
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if self.size_kib(rsc, nr).is_some_and(|h| h >= want_kib) {
                    return Ok(());
                }
            }
        }
        Err(ObjectError {
            message: format!("DRBD volume {nr} of '{rsc}' did not grow to {want_kib} KiB; the resize is retried."),
            cause: Some(format!(
                "DRBD grows to the smallest backing device of the connected peers; the device has {} KiB.",
                self.size_kib(rsc, nr).map_or_else(|| "an unknown size of".into(), |k| k.to_string())
            )),
            details: None,
        })
    }

    /// The DRBD device's size, KiB: from sysfs (`/sys/block/drbd<minor>/size`,
    /// sectors), which a resize changes at once; events2 reports a new size
    /// only with the device's next statistics, so it is the fallback.
    fn size_kib(&self, rsc: &str, nr: u32) -> Option<i64> {
        let ev = self.events.lock().resource(rsc).and_then(|r| r.volumes.iter().find(|v| v.number == nr)).cloned()?;
        self.sysfs_kib(ev.minor).or(ev.size_kib)
    }

    fn sysfs_kib(&self, minor: u32) -> Option<i64> {
        let text = std::fs::read_to_string(self.sysfs.as_ref()?.join(format!("block/drbd{minor}/size"))).ok()?;
        text.trim().parse::<i64>().ok().map(|sectors| sectors / 2)
    }

    /// Suspends or resumes the resource's I/O as desired (a snapshot of
    /// every node is being taken while suspended). The kernel's
    /// `suspended:` state decides whether a command is needed; a resource
    /// that is not up has no I/O to hold.
    pub async fn set_io_suspended(&self, rsc: &str, host: &str, suspend: bool) -> Result<(), ObjectError> {
        if self.mode != DrbdMode::Kernel {
            return Ok(());
        }
        let by_user = match self.events.lock().resource(rsc) {
            None => return Ok(()),
            Some(r) => r.suspended.as_deref().is_some_and(|s| s.split(',').any(|w| w == "user")),
        };
        if suspend && !by_user {
            self.runner
                .run(&self.adm.suspend_io(rsc, host))
                .await
                .map_err(|e| exec_err(format!("Failed to suspend I/O of '{rsc}' for a snapshot."), &e))?;
            self.events.lock().set_suspended_by_user(rsc, true);
        } else if !suspend && by_user {
            self.runner
                .run(&self.adm.resume_io(rsc, host))
                .await
                .map_err(|e| exec_err(format!("Failed to resume I/O of '{rsc}' after a snapshot."), &e))?;
            self.events.lock().set_suspended_by_user(rsc, false);
        }
        Ok(())
    }

    /// Takes the resource down (deactivation), keeping its configuration
    /// and metadata; nothing to do when it is not up.
    pub async fn down(&self, rsc: &str) -> Result<(), ObjectError> {
        self.require_state(rsc)?;
        if self.mode == DrbdMode::Kernel && self.events.lock().resource(rsc).is_some() {
            self.runner.run(&self.adm.down(rsc)).await.map_err(|e| exec_err(format!("Failed to take '{rsc}' down."), &e))?;
        }
        Ok(())
    }

    /// Takes the resource down, wipes the metadata this process wrote the
    /// configuration for, and removes the `.res` file. The storage layer
    /// removes the backing devices afterwards.
    pub async fn remove(&self, rsc: &str, host: &str) -> Result<(), ObjectError> {
        self.require_state(rsc)?;
        if self.mode == DrbdMode::Kernel && self.events.lock().resource(rsc).is_some() {
            self.runner.run(&self.adm.down(rsc)).await.map_err(|e| exec_err(format!("Failed to take '{rsc}' down."), &e))?;
        }
        let disks = self.written.lock().remove(rsc).unwrap_or_default();
        self.forgotten.lock().remove(rsc);
        if self.res_path(rsc).exists() {
            for nr in disks.keys() {
                if let Err(e) = self.runner.run(&self.adm.wipe_md(rsc, *nr, host)).await {
                    // The storage layer wipes the device anyway.
                    tracing::warn!(rsc, volume = nr, "wipe-md failed: {e}");
                }
            }
        }
        for p in [
            self.res_path(rsc),
            self.dir.join(".backup").join(format!("{rsc}.res")),
            self.marker(rsc, "fresh"),
            self.marker(rsc, "initialized"),
        ] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(obj_err(format!("Cannot remove {}.", p.display()), &e, None)),
            }
        }
        Ok(())
    }

    /// Names of resources with a `.res` file here (for clean-up after a
    /// full apply).
    pub fn configured(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        dir.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".res")).map(String::from))
            .filter(|n| !n.starts_with('.'))
            .collect()
    }
}

/// DRBD's refusals of a resize that pass by themselves: a resync running,
/// another node's state change, an interrupted wait (drbd-utils' texts
/// for ERR_RESIZE_RESYNC, SS_INTERRUPTED, SS_CONCURRENT_ST_CHG, ERR_INTR).
/// How often `drbdadm adjust` is tried while a peer refuses the attach.
const ADJUST_ATTEMPTS: u32 = 30;

/// A refusal that passes once the peers applied the same change on their
/// own satellites: an `attach` of a replica they still have as
/// intentionally diskless, or `--bitmap=no` for a peer becoming diskless
/// whose disk is still attached there (the kernel refuses "when both
/// sides have a disk" until the peer detached; seen in CI's toggle-disk
/// step).
fn adjust_may_pass_later(stderr: &str) -> bool {
    stderr.contains("marked as intentional diskless on a peer") || stderr.contains("Can not drop the bitmap when both sides have a disk")
}

fn resize_may_pass_later(stderr: &str) -> bool {
    ["Resize not allowed during resync", "Interrupted state change", "Concurrent state changes", "Interrupted by Signal"]
        .iter()
        .any(|t| stderr.contains(t))
}

/// Writes a file (mode 0600) via a temporary file, fsync and rename.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("cairn-tmp");
    {
        // The .res files hold the resource's shared secret: root's alone.
        let mut f = cairn_storage::create_private_file(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use cairn_exec::FakeRunner;
    use cairn_proto::{DrbdPeer, DrbdVolumeDesired};

    use super::*;

    fn desired(initial_sync: bool) -> DrbdDesired {
        DrbdDesired {
            node_id: 0,
            port: 7000,
            peer_slots: 7,
            secret: "s3cr3t".into(),
            address: "127.0.0.1".into(),
            host: "alpha".into(),
            diskless: false,
            volumes: vec![DrbdVolumeDesired { number: 0, minor: 1000, day0_gi: None, initialized: false, initial_sync: None }],
            options: Default::default(),
            peers: vec![DrbdPeer {
                host: "bravo".into(),
                node_id: 1,
                address: "127.0.0.2".into(),
                port: 7000,
                diskless: false,
                paths: vec![],
                options: BTreeMap::new(),
            }],
            initial_sync,
            joining: false,
            suspend_io: false,
            forget_peers: vec![],
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        dir: PathBuf,
        fake: Arc<FakeRunner>,
        layer: DrbdLayer,
    }

    fn fixture(mode: DrbdMode) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("drbd.d");
        let fake = Arc::new(FakeRunner::new());
        let layer =
            DrbdLayer::new(fake.clone(), dir.clone(), mode, Duration::from_secs(5)).unwrap().with_sysfs(Some(tmp.path().join("sys")));
        // The kernel's (empty) state has been read.
        layer.feed_events("exists -\n");
        Fixture { _dir: tmp, dir, fake, layer }
    }

    fn s(p: &Path) -> String {
        p.display().to_string()
    }

    fn disks() -> BTreeMap<u32, String> {
        [(0, "/dev/loop7".to_string())].into()
    }

    fn net() -> BTreeMap<u32, i64> {
        [(0, 1_048_576)].into()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn create_runs_linstors_sequence_command_by_command() {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect_failure(&["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"], 1, "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "--max-peers", "7", "--", "--force", "create-md", "web/0"], "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "primary", "--force", "web"], "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "secondary", "web"], "");
        let o = rt().block_on(f.layer.ensure("web", &desired(true), &disks(), &net(), &BTreeSet::new())).unwrap();
        assert!(f.fake.is_done(), "calls: {:?}", f.fake.calls());
        assert!(o.kernel);
        let text = std::fs::read_to_string(f.dir.join("web.res")).unwrap();
        assert!(text.contains("disk        /dev/loop7;"), "{text}");
        assert!(!f.dir.join(".web.res.tmp").exists());
        let conf_text = std::fs::read_to_string(f.dir.join(CONF_FILE)).unwrap();
        assert!(conf_text.contains(&format!("include \"{}/*.res\";", f.dir.display())), "{conf_text}");
        // Every drbdadm call knows which `on` section is this node.
        assert!(f.fake.calls().len() == 6);
        // The .res file holds the shared secret; the directory is private.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode(&f.dir.join("web.res")), mode(&f.dir.join(CONF_FILE)), mode(&f.dir)), (0o600, 0o600, 0o700));
    }

    #[test]
    fn an_attach_a_peer_refuses_as_diskless_is_tried_again() {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        let adjust = ["drbdadm", "-c", &conf, "-vvv", "adjust", "web"];
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect(
                &["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"],
                "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:1:0:0:0:0:0:0:0\n",
            )
            .expect_failure(
                &adjust,
                1,
                "State change was refused by peer node\nProbably this node is marked as intentional diskless on a peer\n",
            )
            .expect(&adjust, "");
        rt().block_on(f.layer.ensure("web", &desired(false), &disks(), &net(), &BTreeSet::new())).unwrap();
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
        // A peer made diskless here whose disk is still attached there
        // (drbd-utils' output captured in CI's VM tier).
        f.fake
            .expect(
                &["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"],
                "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:1:0:0:0:0:0:0:0\n",
            )
            .expect_failure(
                &adjust,
                1,
                "Only in config file bitmap: no\nweb: Failure: (162) Invalid configuration request\nadditional info from kernel:\n\
                 Can not drop the bitmap when both sides have a disk\n\
                 Command 'drbdsetup peer-device-options web 2 0 --set-defaults --bitmap=no' terminated with exit code 10\n",
            )
            .expect(&adjust, "");
        rt().block_on(f.layer.ensure("web", &desired(false), &disks(), &net(), &BTreeSet::new())).unwrap();
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
        // Any other refusal is reported at once (the file is unchanged: no
        // validation again).
        f.fake
            .expect(
                &["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"],
                "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:1:0:0:0:0:0:0:0\n",
            )
            .expect_failure(&adjust, 10, "no such device\n");
        assert!(rt().block_on(f.layer.ensure("web", &desired(false), &disks(), &net(), &BTreeSet::new())).is_err());
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
    }

    #[test]
    fn io_is_suspended_and_resumed_once_each_and_only_when_up() {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        // Not up: no I/O to hold, no command.
        rt().block_on(f.layer.set_io_suspended("web", "alpha", true)).unwrap();
        assert!(f.fake.calls().is_empty());
        f.layer.feed_events("exists resource name:web role:Secondary suspended:no\n");
        f.fake.expect(&["drbdadm", "-c", &conf, "-vvv", "suspend-io", "web"], "");
        rt().block_on(f.layer.set_io_suspended("web", "alpha", true)).unwrap();
        rt().block_on(f.layer.set_io_suspended("web", "alpha", true)).unwrap();
        assert!(f.fake.is_done(), "once: {:?}", f.fake.calls());
        // Suspended by a user (as events2 says) is resumed; suspended for
        // quorum alone is not the snapshot's to lift.
        f.layer.feed_events("change resource name:web suspended:user\n");
        f.fake.expect(&["drbdadm", "-c", &conf, "-vvv", "resume-io", "web"], "");
        rt().block_on(f.layer.set_io_suspended("web", "alpha", false)).unwrap();
        rt().block_on(f.layer.set_io_suspended("web", "alpha", false)).unwrap();
        f.layer.feed_events("change resource name:web suspended:quorum\n");
        rt().block_on(f.layer.set_io_suspended("web", "alpha", false)).unwrap();
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
        // A refusal is an error of the resource.
        f.fake.expect_failure(&["drbdadm", "-c", &conf, "-vvv", "suspend-io", "web"], 10, "no");
        let e = rt().block_on(f.layer.set_io_suspended("web", "alpha", true)).unwrap_err();
        assert!(e.message.contains("suspend I/O"), "{e:?}");
        // Config-only: nothing runs.
        let c = fixture(DrbdMode::ConfigOnly);
        c.layer.feed_events("exists resource name:web role:Secondary suspended:no\n");
        rt().block_on(c.layer.set_io_suspended("web", "alpha", true)).unwrap();
        assert!(c.fake.calls().is_empty());
    }

    #[test]
    fn existing_metadata_and_a_non_chosen_node_mean_no_create_md_and_no_promotion() {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect(
                &["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"],
                "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:1:0:0:0:0:0:0:0\n",
            )
            .expect(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], "");
        rt().block_on(f.layer.ensure("web", &desired(true), &disks(), &net(), &BTreeSet::new())).unwrap();
        assert!(f.fake.is_done(), "calls: {:?}", f.fake.calls());
    }

    #[test]
    fn an_attached_volume_that_grew_is_resized_and_an_unchanged_file_is_not_rewritten() {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        f.fake.expect(&["drbdadm", "-c", &tmp, "dump", "web"], "").expect(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], "");
        f.layer.feed_events(
            "exists resource name:web role:Secondary suspended:no may_promote:yes promotion_score:10101\n\
             exists device name:web volume:0 minor:1000 disk:UpToDate client:no quorum:yes size:1048576\nexists -\n",
        );
        rt().block_on(f.layer.ensure("web", &desired(false), &disks(), &net(), &BTreeSet::new())).unwrap();
        assert!(f.fake.is_done(), "attached: no metadata check; same size: no resize; {:?}", f.fake.calls());
        // The volume definition grew to 2 GiB; the storage layer already
        // grew. DRBD first refuses (a resync runs), then resizes but the
        // device stays as it was (a peer has not grown yet), so it tries
        // again, until sysfs shows the new size (a peer's resize).
        let resize = ["drbdadm", "-c", &conf, "-vvv", "resize", "web/0"];
        f.fake
            .expect(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], "")
            .expect_failure(&resize, 10, "web: State change failed: (-130) Resize not allowed during resync.")
            .expect(&resize, "")
            .expect(&resize, "");
        let resizes = || f.fake.calls().iter().filter(|c| c.ends_with(&["resize".to_string(), "web/0".to_string()])).count();
        let o = rt()
            .block_on(async {
                let grown_elsewhere = async {
                    while resizes() < 3 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    // The kernel has the new size at once (events2 says
                    // so only with the next statistics).
                    let sys = f.dir.parent().unwrap().join("sys/block/drbd1000");
                    std::fs::create_dir_all(&sys).unwrap();
                    std::fs::write(sys.join("size"), "4194304\n").unwrap();
                };
                let (d, disks, want, zeroed) = (desired(false), disks(), BTreeMap::from([(0, 2_097_152)]), BTreeSet::new());
                let (o, ()) = tokio::join!(f.layer.ensure("web", &d, &disks, &want, &zeroed), grown_elsewhere);
                o
            })
            .unwrap();
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
        // Any other refusal is reported at once, not tried again.
        f.fake.expect(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], "").expect_failure(&resize, 10, "Meta device too small.");
        let e = rt().block_on(f.layer.ensure("web", &desired(false), &disks(), &[(0, 4_194_304)].into(), &BTreeSet::new())).unwrap_err();
        assert!(e.message.contains("Failed to grow"), "{e:?}");
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
        assert_eq!(o.role, "Secondary");
        assert_eq!(o.may_promote, Some(true));
    }

    #[test]
    fn a_failed_adjust_restores_the_previous_file() {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        std::fs::write(f.dir.join("web.res"), "# the old one\n").unwrap();
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect(&["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"], "x")
            .expect_failure(
                &["drbdadm", "-c", &conf, "-vvv", "adjust", "web"],
                10,
                "Command 'drbdsetup new-resource web 0' terminated with exit code 20",
            );
        let e = rt().block_on(f.layer.ensure("web", &desired(false), &disks(), &net(), &BTreeSet::new())).unwrap_err();
        assert!(e.message.contains("adjust"), "{e:?}");
        assert!(e.details.unwrap_or_default().contains("exit code 20"));
        assert_eq!(std::fs::read_to_string(f.dir.join("web.res")).unwrap(), "# the old one\n");
    }

    #[test]
    fn metadata_that_cannot_be_read_is_never_mistaken_for_blank() {
        let f = fixture(DrbdMode::Kernel);
        let tmp = s(&f.dir.join(".web.res.tmp"));
        f.fake.expect(&["drbdadm", "-c", &tmp, "dump", "web"], "").expect_failure(
            &["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"],
            255,
            "Found unclean activity log; need to run apply-al",
        );
        let e = rt().block_on(f.layer.ensure("web", &desired(true), &disks(), &net(), &BTreeSet::new())).unwrap_err();
        assert!(e.message.contains("Cannot read the DRBD metadata"), "{e:?}");
        assert!(f.fake.is_done(), "no create-md: {:?}", f.fake.calls());
    }

    #[test]
    fn a_failed_first_bring_up_still_starts_the_initial_sync_on_retry_and_only_once() {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        let get_gi = ["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"];
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect_failure(&get_gi, 1, "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "--max-peers", "7", "--", "--force", "create-md", "web/0"], "")
            .expect_failure(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], 10, "timeout");
        assert!(rt().block_on(f.layer.ensure("web", &desired(true), &disks(), &net(), &BTreeSet::new())).is_err());
        // The retry finds metadata (created above) and still forces once.
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect(&get_gi, "0000000000000004:0:0:0\n")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "primary", "--force", "web"], "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "secondary", "web"], "");
        rt().block_on(f.layer.ensure("web", &desired(true), &disks(), &net(), &BTreeSet::new())).unwrap();
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
        // Later passes (even with metadata created anew) never force again.
        f.fake.expect(&get_gi, "").expect(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], "");
        rt().block_on(f.layer.ensure("web", &desired(true), &disks(), &net(), &BTreeSet::new())).unwrap();
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
    }

    const DAY0: &str = "51C2E7A9B3D0F148";

    fn with_day0(initial_sync: bool, initialized: bool) -> DrbdDesired {
        let mut d = desired(initial_sync);
        d.volumes[0].day0_gi = Some(DAY0.into());
        d.volumes[0].initialized = initialized;
        d
    }

    /// Runs a first bring-up on fresh metadata; returns the GI strings
    /// written, by node id, and every call.
    fn first_bring_up(d: &DrbdDesired, zeroed: bool) -> (BTreeMap<u8, String>, Vec<Vec<String>>) {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect_failure(&["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"], 1, "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "--max-peers", "7", "--", "--force", "create-md", "web/0"], "")
            .answer(&["drbdmeta", "--force", "--node-id"], "")
            .answer(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], "");
        let zeroed = if zeroed { BTreeSet::from([0]) } else { BTreeSet::new() };
        rt().block_on(f.layer.ensure("web", d, &disks(), &net(), &zeroed)).unwrap();
        let calls = f.fake.calls();
        let mut gis = BTreeMap::new();
        for c in &calls {
            if c.get(..3) == Some(&["drbdmeta".to_string(), "--force".into(), "--node-id".into()][..]) {
                assert_eq!(c[4..], ["1000", "v09", "/dev/loop7", "internal", "set-gi", &c[9]], "{c:?}");
                assert!(gis.insert(c[3].parse::<u8>().unwrap(), c[9].clone()).is_none(), "one set-gi per node id: {calls:?}");
            }
        }
        (gis, calls)
    }

    #[test]
    fn the_chosen_replica_stamps_fresh_metadata_up_to_date_with_day0_as_every_peers_base() {
        let (gis, calls) = first_bring_up(&with_day0(true, false), false);
        assert_eq!(gis.len(), 32, "every node id 0..=31: {calls:?}");
        let (cur, rest) = gis[&0].split_once(':').unwrap();
        assert_eq!(rest, format!("{DAY0}:::1:1"));
        let cur = u64::from_str_radix(cur, 16).unwrap();
        assert!(cur & 1 == 0 && cur != 0 && cur != 4 && format!("{cur:X}") != DAY0, "{cur:X}");
        assert!(gis.iter().filter(|(id, _)| **id != 0).all(|(_, g)| *g == format!(":{DAY0}::::")), "{gis:?}");
        // UpToDate by its metadata: no primary --force.
        assert!(!calls.iter().any(|c| c.contains(&"primary".to_string())), "{calls:?}");
        // A second volume's random id differs (same process, next call).
        let (again, _) = first_bring_up(&with_day0(true, false), false);
        assert_ne!(again[&0], gis[&0]);
    }

    #[test]
    fn other_replicas_on_zeroed_devices_start_up_to_date_at_day0_and_thick_ones_stay_fresh() {
        let (gis, calls) = first_bring_up(&with_day0(false, false), true);
        assert_eq!(gis, BTreeMap::from([(0, format!("{DAY0}::::1:1"))]), "{calls:?}");
        // Thick: left "just created", it receives a full sync.
        let (gis, calls) = first_bring_up(&with_day0(false, false), false);
        assert!(gis.is_empty(), "{calls:?}");
        assert!(!calls.iter().any(|c| c.contains(&"primary".to_string())), "{calls:?}");
        // Once initialized, the chosen replica is like any other.
        let (gis, _) = first_bring_up(&with_day0(true, true), true);
        assert_eq!(gis[&0], format!("{DAY0}::::1:1"));
        let (gis, _) = first_bring_up(&with_day0(true, true), false);
        assert!(gis.is_empty());
        // ForceInitialSyncPermanent: no shortcut on zeroed devices either.
        let mut forced = with_day0(false, false);
        forced.options.insert(FORCE_INITIAL_SYNC.into(), "True".into());
        let (gis, _) = first_bring_up(&forced, true);
        assert!(gis.is_empty());
    }

    #[test]
    fn a_disk_added_by_toggle_disk_is_never_stamped_and_receives_a_full_sync() {
        // Neither as any replica on a zeroed device, nor as the chosen one
        // once the volume was initialized.
        for (initial_sync, initialized) in [(false, true), (false, false), (true, true)] {
            let mut d = with_day0(initial_sync, initialized);
            d.joining = true;
            let (gis, calls) = first_bring_up(&d, true);
            assert!(gis.is_empty(), "{calls:?}");
            assert!(calls.iter().any(|c| c.contains(&"create-md".to_string())), "{calls:?}");
        }
        // Chosen for a volume nobody made UpToDate yet: there is no data
        // to join, the stamp is what makes it UpToDate.
        let mut d = with_day0(true, false);
        d.joining = true;
        let (gis, calls) = first_bring_up(&d, false);
        assert_eq!(gis.len(), 32, "{calls:?}");
    }

    #[test]
    fn a_peer_that_left_has_its_bitmap_slot_freed_after_adjust_and_reported_when_asked_for() {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        // The kernel still has bravo (node id 1) and charlie (2); only
        // bravo is configured now.
        f.layer.feed_events(
            "exists resource name:web role:Secondary suspended:no\n\
             exists connection name:web peer-node-id:1 conn-name:bravo connection:Connected role:Secondary\n\
             exists connection name:web peer-node-id:2 conn-name:charlie connection:Connected role:Secondary\n\
             exists device name:web volume:0 minor:1000 disk:UpToDate client:no quorum:yes size:1048576\nexists -\n",
        );
        // The controller waits for 2 and 3 (deleted earlier) to be
        // forgotten; 1 is bravo's again: never forgotten here.
        let mut d = desired(false);
        d.forget_peers = vec![1, 2, 3];
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], "")
            .expect(&["drbdsetup", "forget-peer", "web", "2"], "")
            // No slot for 3: refused, and nothing is left to forget.
            .expect_failure(&["drbdsetup", "forget-peer", "web", "3"], 10, "peer node id 3 unknown");
        let o = rt().block_on(f.layer.ensure("web", &d, &disks(), &net(), &BTreeSet::new())).unwrap();
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
        assert_eq!(o.forgotten, [2, 3]);
        // Reported as long as the controller asks, then no more.
        assert_eq!(f.layer.observed("web", &d).forgotten, [2, 3]);
        d.forget_peers = vec![3];
        assert_eq!(f.layer.observed("web", &d).forgotten, [3]);
    }

    #[test]
    fn a_peer_is_not_reported_forgotten_while_the_resource_is_down() {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        let mut d = desired(false);
        d.forget_peers = vec![2];
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect_failure(&["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"], 1, "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "--max-peers", "7", "--", "--force", "create-md", "web/0"], "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], "")
            .expect_failure(&["drbdsetup", "forget-peer", "web", "2"], 10, "resource unknown");
        let o = rt().block_on(f.layer.ensure("web", &d, &disks(), &net(), &BTreeSet::new())).unwrap();
        assert!(o.forgotten.is_empty(), "{o:?}");
    }

    #[test]
    fn a_bitmap_exchange_stuck_for_a_minute_has_its_connection_cycled_once_per_minute() {
        let f = fixture(DrbdMode::Kernel);
        f.layer.feed_events(
            "exists resource name:web role:Primary suspended:no\n\
             exists connection name:web peer-node-id:1 conn-name:bravo connection:Connected role:Secondary\n\
             exists connection name:web peer-node-id:2 conn-name:charlie connection:Connected role:Secondary\n\
             exists device name:web volume:0 minor:1000 disk:UpToDate\n\
             exists device name:web volume:1 minor:1001 disk:Outdated\n\
             exists peer-device name:web peer-node-id:1 conn-name:bravo volume:0 replication:Established peer-disk:UpToDate\n\
             exists peer-device name:web peer-node-id:1 conn-name:bravo volume:1 replication:WFBitMapT peer-disk:UpToDate\n\
             exists peer-device name:web peer-node-id:2 conn-name:charlie volume:1 replication:WFBitMapS peer-disk:Outdated\n",
        );
        let t0 = std::time::Instant::now();
        // Seen now: the clock starts; the sending side (WFBitMapS) is left
        // to the peer, which sees WFBitMapT, for longer.
        assert!(f.layer.stalled_connections(t0).is_empty());
        assert!(f.layer.stalled_connections(t0 + Duration::from_secs(59)).is_empty());
        f.fake.expect(&["drbdsetup", "disconnect", "web", "1", "--force"], "").expect(&["drbdsetup", "connect", "web", "1"], "");
        rt().block_on(f.layer.unstick(t0 + BITMAP_STALL));
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
        // Still stuck right after: not again within the minute.
        assert!(f.layer.stalled_connections(t0 + BITMAP_STALL + Duration::from_secs(30)).is_empty());
        assert_eq!(f.layer.stalled_connections(t0 + 2 * BITMAP_STALL), vec![("web".to_string(), 1)]);
        // Once the exchange is done, its clock is forgotten (charlie's too).
        f.layer.feed_events(
            "change peer-device name:web peer-node-id:1 conn-name:bravo volume:1 replication:Established peer-disk:UpToDate\n\
             change peer-device name:web peer-node-id:2 conn-name:charlie volume:1 replication:Established peer-disk:UpToDate\n",
        );
        assert!(f.layer.stalled_connections(t0 + 4 * BITMAP_STALL).is_empty());
        f.layer
            .feed_events("change peer-device name:web peer-node-id:1 conn-name:bravo volume:1 replication:WFBitMapT peer-disk:UpToDate\n");
        assert!(f.layer.stalled_connections(t0 + 4 * BITMAP_STALL + Duration::from_secs(1)).is_empty());
        assert_eq!(f.layer.stalled_connections(t0 + 5 * BITMAP_STALL + Duration::from_secs(1)), vec![("web".to_string(), 1)]);
    }

    #[test]
    fn a_disk_left_negotiating_has_its_connections_cycled_after_half_a_minute() {
        // d3 in the VMs (2026-11-28, toggle-disk back to diskful on an
        // idle machine): the new disk attached, both peers did their side
        // of the handshake and sent their bitmaps, and d3 stayed here, its
        // attach waiting for the negotiation (`drbdsetup status` then).
        let f = fixture(DrbdMode::Kernel);
        f.layer.feed_events(
            "exists resource name:tgd role:Secondary suspended:no\n\
             exists connection name:tgd peer-node-id:0 conn-name:d1 connection:Connected role:Secondary\n\
             exists connection name:tgd peer-node-id:1 conn-name:d2 connection:Connected role:Secondary\n\
             exists device name:tgd volume:0 minor:1001 disk:Negotiating\n\
             exists peer-device name:tgd peer-node-id:0 conn-name:d1 volume:0 replication:Established peer-disk:UpToDate\n\
             exists peer-device name:tgd peer-node-id:1 conn-name:d2 volume:0 replication:Established peer-disk:UpToDate\n",
        );
        let t0 = std::time::Instant::now();
        assert!(f.layer.stalled_connections(t0).is_empty());
        assert!(f.layer.stalled_connections(t0 + NEGOTIATION_STALL - Duration::from_secs(1)).is_empty());
        f.fake
            .expect(&["drbdsetup", "disconnect", "tgd", "0", "--force"], "")
            .expect(&["drbdsetup", "connect", "tgd", "0"], "")
            .expect(&["drbdsetup", "disconnect", "tgd", "1", "--force"], "")
            .expect(&["drbdsetup", "connect", "tgd", "1"], "");
        rt().block_on(f.layer.unstick(t0 + NEGOTIATION_STALL));
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
        // Not again right after; a disk that got through forgets the clock.
        assert!(f.layer.stalled_connections(t0 + NEGOTIATION_STALL + Duration::from_secs(5)).is_empty());
        f.layer.feed_events("change device name:tgd volume:0 minor:1001 disk:Inconsistent\n");
        assert!(f.layer.stalled_connections(t0 + 10 * NEGOTIATION_STALL).is_empty());
        // A disk negotiating with nobody connected is left alone.
        f.layer.feed_events(
            "change device name:tgd volume:0 minor:1001 disk:Negotiating\n\
             change connection name:tgd peer-node-id:0 conn-name:d1 connection:Connecting role:Unknown\n\
             change connection name:tgd peer-node-id:1 conn-name:d2 connection:Connecting role:Unknown\n",
        );
        assert!(f.layer.stalled_connections(t0 + 11 * NEGOTIATION_STALL).is_empty());
        assert!(f.layer.stalled_connections(t0 + 20 * NEGOTIATION_STALL).is_empty());
    }

    #[test]
    fn a_peer_that_never_asks_for_the_bitmap_has_its_connection_cycled_by_the_sender() {
        // The state d1's kernel log showed while d3 attached a new disk
        // under load (evacuation bench): the handshake chose d3 as the
        // target, d1 sent its bitmap and stayed in WFBitMapS; d3 never
        // reached WFBitMapT. (Events lines written for the test.)
        let f = fixture(DrbdMode::Kernel);
        f.layer.feed_events(
            "exists resource name:ev1 role:Secondary suspended:no\n\
             exists connection name:ev1 peer-node-id:1 conn-name:d2 connection:Connected role:Secondary\n\
             exists connection name:ev1 peer-node-id:2 conn-name:d3 connection:Connected role:Secondary\n\
             exists device name:ev1 volume:0 minor:1001 disk:UpToDate\n\
             exists peer-device name:ev1 peer-node-id:1 conn-name:d2 volume:0 replication:Established peer-disk:UpToDate\n\
             exists peer-device name:ev1 peer-node-id:2 conn-name:d3 volume:0 replication:WFBitMapS peer-disk:Negotiating\n",
        );
        let t0 = std::time::Instant::now();
        assert!(f.layer.stalled_connections(t0).is_empty());
        // Past the receiver's limit the sender still waits for the peer to act.
        assert!(f.layer.stalled_connections(t0 + 2 * BITMAP_STALL).is_empty());
        f.fake.expect(&["drbdsetup", "disconnect", "ev1", "2", "--force"], "").expect(&["drbdsetup", "connect", "ev1", "2"], "");
        rt().block_on(f.layer.unstick(t0 + BITMAP_STALL_SENDER));
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
        assert!(f.layer.stalled_connections(t0 + BITMAP_STALL_SENDER + Duration::from_secs(1)).is_empty());
        // A replication that moves on forgets the clock.
        f.layer.feed_events(
            "change peer-device name:ev1 peer-node-id:2 conn-name:d3 volume:0 replication:SyncSource peer-disk:Inconsistent\n",
        );
        assert!(f.layer.stalled_connections(t0 + 4 * BITMAP_STALL_SENDER).is_empty());
    }

    #[test]
    fn a_failed_set_gi_wipes_the_metadata_so_the_retry_starts_over() {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect_failure(&["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"], 1, "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "--max-peers", "7", "--", "--force", "create-md", "web/0"], "")
            .expect_failure(
                &["drbdmeta", "--force", "--node-id", "0", "1000", "v09", "/dev/loop7", "internal", "set-gi", &format!("{DAY0}::::1:1")],
                20,
                "Exclusive open failed",
            )
            .expect(&["drbdadm", "-c", &conf, "-vvv", "--", "--force", "wipe-md", "web/0"], "");
        let e = rt().block_on(f.layer.ensure("web", &with_day0(false, false), &disks(), &net(), &BTreeSet::from([0]))).unwrap_err();
        assert!(e.message.contains("day-0"), "{e:?}");
        assert!(f.fake.is_done(), "no adjust: {:?}", f.fake.calls());
    }

    #[test]
    fn nothing_is_decided_before_the_kernel_state_is_known() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRunner::new());
        let layer = DrbdLayer::new(fake.clone(), tmp.path().join("d"), DrbdMode::Kernel, Duration::from_secs(5)).unwrap();
        let e = rt().block_on(layer.remove("web", "alpha")).unwrap_err();
        assert!(e.message.contains("not known yet"), "{e:?}");
        assert!(rt().block_on(layer.ensure("web", &desired(false), &disks(), &net(), &BTreeSet::new())).is_err());
        assert!(fake.calls().is_empty(), "no command ran: {:?}", fake.calls());
    }

    #[test]
    fn a_file_the_parser_refuses_is_never_installed() {
        let f = fixture(DrbdMode::Kernel);
        let tmp = s(&f.dir.join(".web.res.tmp"));
        f.fake.expect_failure(&["drbdadm", "-c", &tmp, "dump", "web"], 10, "web.res:16: Parse error: 'TK_INTEGER' expected");
        let e = rt().block_on(f.layer.ensure("web", &desired(false), &disks(), &net(), &BTreeSet::new())).unwrap_err();
        assert!(e.message.contains("not installed"), "{e:?}");
        assert!(!f.dir.join("web.res").exists());
        assert!(!f.dir.join(".web.res.tmp").exists());
        assert!(f.fake.is_done());
    }

    #[test]
    fn delete_takes_down_wipes_metadata_and_removes_the_file() {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect(&["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"], "x")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], "");
        rt().block_on(f.layer.ensure("web", &desired(false), &disks(), &net(), &BTreeSet::new())).unwrap();
        f.layer.feed_events("exists resource name:web role:Secondary\nexists -\n");
        f.fake.expect(&["drbdsetup", "down", "web"], "").expect(&["drbdadm", "-c", &conf, "-vvv", "--", "--force", "wipe-md", "web/0"], "");
        rt().block_on(f.layer.remove("web", "alpha")).unwrap();
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
        assert!(!f.dir.join("web.res").exists());
        assert!(f.layer.configured().is_empty());
    }

    #[test]
    fn deactivation_takes_down_but_keeps_file_and_metadata() {
        let f = fixture(DrbdMode::Kernel);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect(&["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"], "x")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "adjust", "web"], "");
        rt().block_on(f.layer.ensure("web", &desired(false), &disks(), &net(), &BTreeSet::new())).unwrap();
        f.layer.feed_events("exists resource name:web role:Secondary\nexists -\n");
        f.fake.expect(&["drbdsetup", "down", "web"], "");
        rt().block_on(f.layer.down("web")).unwrap();
        assert!(f.fake.is_done(), "{:?}", f.fake.calls());
        assert!(f.dir.join("web.res").exists(), "the configuration stays for the reactivation");
        // Once DRBD reported it gone, a second deactivation runs nothing.
        f.layer.feed_events("destroy resource name:web\n");
        let before = f.fake.calls().len();
        rt().block_on(f.layer.down("web")).unwrap();
        assert_eq!(f.fake.calls().len(), before);
    }

    #[test]
    fn a_failed_down_keeps_everything() {
        let f = fixture(DrbdMode::Kernel);
        std::fs::write(f.dir.join("web.res"), "x").unwrap();
        f.layer.feed_events("exists resource name:web role:Primary\nexists -\n");
        f.fake.expect_failure(&["drbdsetup", "down", "web"], 11, "web: State change failed: (-12) Device is held open by someone");
        let e = rt().block_on(f.layer.remove("web", "alpha")).unwrap_err();
        assert!(e.details.unwrap_or_default().contains("held open"));
        assert!(f.dir.join("web.res").exists());
    }

    #[test]
    fn config_only_mode_plans_but_never_touches_the_kernel() {
        let f = fixture(DrbdMode::ConfigOnly);
        let conf = s(&f.dir.join(CONF_FILE));
        let tmp = s(&f.dir.join(".web.res.tmp"));
        f.fake
            .expect(&["drbdadm", "-c", &tmp, "dump", "web"], "")
            .expect_failure(&["drbdmeta", "--force", "1000", "v09", "/dev/loop7", "internal", "get-gi", "--node-id", "0"], 255, "")
            .expect(&["drbdadm", "-c", &conf, "-vvv", "--max-peers", "7", "--", "--force", "create-md", "web/0"], "")
            .expect(&["drbdadm", "-c", &conf, "-d", "adjust", "web"], "drbdsetup new-resource web 0\n");
        // Deleted peers: never run here, nothing to free, reported at once.
        let mut d = desired(true);
        d.forget_peers = vec![2];
        let o = rt().block_on(f.layer.ensure("web", &d, &disks(), &net(), &BTreeSet::new())).unwrap();
        assert!(f.fake.is_done(), "no primary --force without a kernel: {:?}", f.fake.calls());
        assert!(!o.kernel);
        assert_eq!(o.forgotten, [2]);
        assert_eq!(o.volumes[0].disk, "Unknown");
        f.fake.expect(&["drbdadm", "-c", &conf, "-vvv", "--", "--force", "wipe-md", "web/0"], "");
        rt().block_on(f.layer.remove("web", "alpha")).unwrap();
        assert!(f.fake.is_done(), "no drbdsetup down: {:?}", f.fake.calls());
    }

    #[test]
    fn probing_reports_why_drbd_cannot_run() {
        let no_module = include_str!("../../cairn-storage/testdata/drbdadm-version-no-module.txt");
        let fake = FakeRunner::new();
        fake.expect(&["drbdadm", "--version"], no_module).expect(&["drbdmeta"], "");
        let e = rt().block_on(probe(&fake, false)).unwrap_err();
        assert!(e[0].contains("kernel module not loaded"), "{e:?}");
        let fake = FakeRunner::new();
        fake.expect(&["drbdadm", "--version"], no_module).expect(&["drbdmeta"], "");
        assert_eq!(rt().block_on(probe(&fake, true)), Ok(DrbdMode::ConfigOnly));
        let fake = FakeRunner::new();
        fake.expect(&["drbdadm", "--version"], "DRBD_KERNEL_VERSION_CODE=0x090205\nDRBDADM_VERSION_CODE=0x091c00\n")
            .expect(&["drbdmeta"], "");
        assert_eq!(rt().block_on(probe(&fake, false)), Ok(DrbdMode::Kernel));
    }
}
