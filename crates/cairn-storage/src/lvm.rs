//! LVM and LVM_THIN pools, with LINSTOR's command lines: every call carries
//! a device filter built from the pool's physical volumes, sizes are KiB
//! with the `k` suffix, volumes are named `<rsc>_<NNNNN>`.
//!
//! Cairn adds one thing: each logical volume carries the tag
//! `cairn_vid_<id>` (the volume's identity), so a resource deleted while its
//! satellite was away and created again under the same name never adopts
//! the old data.

use std::sync::Arc;
use std::time::Duration;

use cairn_exec::{Cmd, CommandRunner};
use cairn_proto::VolumeObserved;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};

use crate::{Kib, StorageError, safe_name, split_volume_name, volume_number};

pub mod backup;

/// A volume may come out this many extents larger than asked (LVM rounds
/// up to whole extents) before it counts as a different size.
pub const EXTENT_TOLERANCE: i64 = 3;

/// Tag of the snapshot LVs Cairn makes.
pub const SNAP_TAG: &str = "cairn_snap";
/// Tag of a thick clone whose copy (`dd` from the source's snapshot) has
/// not completed: it is copied again.
pub const COPY_PENDING_TAG: &str = "cairn_clone_copy";
/// Tag of the temporary thick snapshot a clone copies from.
pub const CLONE_SRC_TAG: &str = "cairn_clone_src";
/// `dd`'s block size for thick clones (LINSTOR's default).
pub const CLONE_DD_BLOCKSIZE: &str = "64K";
/// A full copy takes as long as the data: an hour before it is killed.
const COPY_TIMEOUT: Duration = Duration::from_secs(3600);

/// Tag of a cloned LV whose copied DRBD superblock is not zeroed yet.
pub const MD_PENDING_TAG: &str = "cairn_clone_md";

/// `dd` zeroing the DRBD superblock at the end of a device of `len`
/// bytes (see [`crate::file::drbd_superblock_range`]), so DRBD makes
/// fresh metadata on a copy.
pub fn zero_drbd_superblock(dev: &str, len: u64) -> Cmd {
    let (start, n) = crate::file::drbd_superblock_range(len);
    Cmd::new("dd").args([
        "if=/dev/zero".to_string(),
        format!("of={dev}"),
        "bs=512".to_string(),
        format!("seek={}", start / 512),
        format!("count={}", n / 512),
        "oflag=direct".to_string(),
        "conv=notrunc".to_string(),
    ])
}

/// An LVM pool: a volume group, or a thin pool in one (`vg/pool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvmPool {
    pub name: String,
    pub vg: String,
    pub thin_pool: Option<String>,
}

pub(crate) fn lvm_name_ok(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('-') && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-+".contains(c))
}

impl LvmPool {
    /// `backing` is `StorDriver/StorPoolName`: `vg` for LVM, `vg/thinpool`
    /// for LVM_THIN.
    pub fn new(name: &str, backing: &str, thin: bool) -> Result<LvmPool, StorageError> {
        let (vg, pool) = match (thin, backing.split_once('/')) {
            (true, Some((vg, pool))) => (vg, Some(pool.to_string())),
            (false, None) => (backing, None),
            _ => {
                return Err(StorageError::BadBacking(format!(
                    "'{backing}' is not {}",
                    if thin { "a thin pool as <volume group>/<thin pool>" } else { "a volume group name" }
                )));
            }
        };
        if !lvm_name_ok(vg) || pool.as_deref().is_some_and(|p| !lvm_name_ok(p)) {
            return Err(StorageError::BadBacking(format!("'{backing}' is not a valid LVM name")));
        }
        Ok(LvmPool { name: name.to_string(), vg: vg.to_string(), thin_pool: pool })
    }
}

/// One logical volume as `lvs` shows it: decoded from one row of its JSON
/// report (`LVS_FIELDS`, `--units k --nosuffix`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Lv {
    #[serde(rename = "lv_name")]
    pub name: String,
    /// Empty for a thin pool.
    #[serde(rename = "lv_path")]
    pub path: String,
    #[serde(rename = "lv_size", deserialize_with = "kib")]
    pub size_kib: i64,
    #[serde(rename = "vg_name")]
    pub vg: String,
    /// The thin pool of a thin volume, else empty.
    pub pool_lv: String,
    /// None where LVM shows none (thick, inactive).
    #[serde(deserialize_with = "percent")]
    pub data_percent: Option<f64>,
    #[serde(rename = "lv_attr")]
    pub attr: String,
    /// `lv_tags` is one comma-separated string.
    #[serde(rename = "lv_tags", deserialize_with = "tag_list")]
    pub tags: Vec<String>,
}

impl Lv {
    pub fn is_active(&self) -> bool {
        self.attr.chars().nth(4) == Some('a')
    }

    /// What the volume takes from its pool: a thin volume its data
    /// percentage of its size, a thick one all of it.
    pub fn allocated_kib(&self) -> i64 {
        match (self.pool_lv.is_empty(), self.data_percent) {
            (false, Some(p)) => (self.size_kib as f64 * p / 100.0).round() as i64,
            _ => self.size_kib,
        }
    }
}

/// What `lvs`, `vgs` and `pvs` print with `--reportformat json`:
/// `{"report":[{"lv":[{...}, ...]}]}` (`"vg"`, `"pv"`), every value a
/// string (lvm2 2.03), an empty one where a field has no value.
#[derive(Deserialize)]
struct Report<S> {
    report: Vec<S>,
}

#[derive(Deserialize)]
struct LvSection {
    lv: Vec<Lv>,
}

#[derive(Deserialize)]
struct VgSection {
    vg: Vec<VgRow>,
}

#[derive(Deserialize)]
struct PvSection {
    pv: Vec<PvRow>,
}

/// A row of `vgs`; with LV fields asked for, one row per LV of the group
/// (and none for a group without LVs).
#[derive(Deserialize)]
struct VgRow {
    vg_name: String,
    #[serde(deserialize_with = "kib")]
    vg_extent_size: i64,
    #[serde(deserialize_with = "kib")]
    vg_size: i64,
    #[serde(deserialize_with = "kib")]
    vg_free: i64,
    #[serde(default)]
    lv_name: String,
    #[serde(default, deserialize_with = "opt_kib")]
    lv_size: Option<i64>,
    #[serde(default, deserialize_with = "percent")]
    data_percent: Option<f64>,
}

#[derive(Deserialize)]
struct PvRow {
    pv_name: String,
}

/// The sections of a JSON report; anything else is `StorageError::Output`.
fn report<S: DeserializeOwned>(program: &'static str, out: &str) -> Result<Vec<S>, StorageError> {
    serde_json::from_str::<Report<S>>(out).map(|r| r.report).map_err(|e| StorageError::Output { program, detail: e.to_string() })
}

/// A size as LVM reports it with `--units k --nosuffix` ("12288.00"), in
/// whole KiB; an empty value is None.
fn opt_kib<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let s = String::deserialize(d)?;
    match s.trim() {
        "" => Ok(None),
        v => v.parse::<f64>().map(|f| Some(f.round() as i64)).map_err(|_| de::Error::custom(format!("'{v}' is not a size in KiB"))),
    }
}

fn kib<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    opt_kib(d)?.ok_or_else(|| de::Error::custom("a size in KiB is empty"))
}

/// A percentage ("20.00"); empty or not a number is None.
fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(String::deserialize(d)?.trim().parse().ok())
}

fn tag_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(String::deserialize(d)?.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect())
}

/// Decodes `lvs -o LVS_FIELDS --units k --nosuffix --reportformat json`.
pub fn parse_lvs(out: &str) -> Result<Vec<Lv>, StorageError> {
    Ok(report::<LvSection>("lvs", out)?.into_iter().flat_map(|s| s.lv).collect())
}

/// Decodes `pvs -o pv_name --reportformat json`: the PVs' paths.
pub fn parse_pvs(out: &str) -> Result<Vec<String>, StorageError> {
    Ok(report::<PvSection>("pvs", out)?.into_iter().flat_map(|s| s.pv).map(|p| p.pv_name).filter(|p| !p.is_empty()).collect())
}

/// Capacity of a pool in KiB: (total, free, extent size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LvmCapacity {
    pub total_kib: i64,
    pub free_kib: i64,
    pub extent_kib: i64,
}

/// Decodes `vgs -o vg_name,vg_extent_size,vg_size,vg_free[,lv_name,lv_size,
/// data_percent] --units k --nosuffix --reportformat json`; with
/// `thin_pool`, the pool's size and its unused part.
pub fn parse_vgs(out: &str, vg: &str, thin_pool: Option<&str>) -> Result<LvmCapacity, StorageError> {
    let bad = |detail: String| StorageError::Output { program: "vgs", detail };
    for row in report::<VgSection>("vgs", out)?.into_iter().flat_map(|s| s.vg).filter(|r| r.vg_name == vg) {
        match thin_pool {
            None => return Ok(LvmCapacity { total_kib: row.vg_size, free_kib: row.vg_free, extent_kib: row.vg_extent_size }),
            Some(pool) if row.lv_name == pool => {
                let size = row.lv_size.ok_or_else(|| bad(format!("thin pool {vg}/{pool} has no size")))?;
                let used = row.data_percent.unwrap_or(0.0);
                let free = (size as f64 * (100.0 - used) / 100.0).floor() as i64;
                return Ok(LvmCapacity { total_kib: size, free_kib: free.max(0), extent_kib: row.vg_extent_size });
            }
            Some(_) => {}
        }
    }
    Err(bad(match thin_pool {
        Some(p) => format!("thin pool {vg}/{p} not found"),
        None => format!("volume group {vg} not found"),
    }))
}

/// `devices { filter=['a|/dev/vda|','r|.*|'] }` from the pool's PVs.
pub fn device_filter(pvs: &[String]) -> String {
    let accept: Vec<String> = pvs.iter().map(|p| format!("'a|{p}|'")).collect();
    format!("devices {{ filter=[{}{}'r|.*|'] }}", accept.join(","), if accept.is_empty() { "" } else { "," })
}

/// The name of a volume: `<rsc>_<NNNNN>`.
pub fn lv_name(rsc: &str, nr: u32) -> Result<String, StorageError> {
    Ok(format!("{}_{nr:05}", safe_name(rsc)?))
}

/// The identity tag of a volume.
pub fn id_tag(id: &str) -> String {
    format!("cairn_vid_{}", id.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>())
}

/// What a just-created volume looks like until `lvs` says more.
fn planned(pool: &LvmPool, name: &str, size_kib: i64, tag: &str) -> Lv {
    Lv {
        name: name.to_string(),
        path: format!("/dev/{}/{name}", pool.vg),
        size_kib,
        vg: pool.vg.clone(),
        pool_lv: pool.thin_pool.clone().unwrap_or_default(),
        data_percent: None,
        attr: String::new(),
        tags: vec![tag.to_string()],
    }
}

/// Runs LVM commands for pools.
#[derive(Clone)]
pub struct Lvm {
    runner: Arc<dyn CommandRunner>,
    timeout: Duration,
    /// Each volume group's physical volumes as last listed, and when.
    pvs_seen: Arc<parking_lot::Mutex<PvsSeen>>,
}

/// Volume group -> when its physical volumes were listed, and them.
type PvsSeen = std::collections::HashMap<String, (std::time::Instant, Vec<String>)>;

/// How long a listing of a volume group's physical volumes is used for
/// the device filter. Every LVM command takes the volume group's lock,
/// and under load each costs a good fraction of a second; the PVs of a
/// volume group change only when an operator adds or removes a disk.
const PVS_FRESH: Duration = Duration::from_secs(10);

const LVS_FIELDS: &str = "lv_name,lv_path,lv_size,vg_name,pool_lv,data_percent,lv_attr,metadata_percent,chunk_size,stripes,lv_tags";

impl Lvm {
    pub fn new(runner: Arc<dyn CommandRunner>, timeout: Duration) -> Lvm {
        Lvm { runner, timeout, pvs_seen: Default::default() }
    }

    fn cmd(&self, program: &str) -> Cmd {
        Cmd::new(program).timeout(self.timeout)
    }

    async fn run(&self, c: Cmd) -> Result<String, StorageError> {
        Ok(self.runner.run(&c).await?.stdout)
    }

    /// The volume group's physical volumes (never DRBD devices). LINSTOR
    /// asks `pvdisplay --columns`, which ignores `--reportformat`.
    pub async fn pvs(&self, vg: &str) -> Result<Vec<String>, StorageError> {
        let out = self
            .run(self.cmd("pvs").args([
                "--config",
                "devices { filter=[\"r|^/dev/drbd.*|\"] }",
                "-o",
                "pv_name",
                "-S",
                &format!("vg_name={vg}"),
                "--reportformat",
                "json",
            ]))
            .await?;
        parse_pvs(&out)
    }

    /// The device filter of the pool's volume group, from a listing of
    /// its physical volumes at most [`PVS_FRESH`] old.
    async fn filter(&self, pool: &LvmPool) -> Result<String, StorageError> {
        if let Some((at, pvs)) = self.pvs_seen.lock().get(&pool.vg)
            && at.elapsed() < PVS_FRESH
        {
            return Ok(device_filter(pvs));
        }
        let pvs = self.pvs(&pool.vg).await?;
        let filter = device_filter(&pvs);
        // A volume group not there (yet) is asked for again next time.
        if !pvs.is_empty() {
            self.pvs_seen.lock().insert(pool.vg.clone(), (std::time::Instant::now(), pvs));
        }
        Ok(filter)
    }

    /// The logical volumes of the pool's volume group.
    pub async fn lvs(&self, pool: &LvmPool, filter: &str) -> Result<Vec<Lv>, StorageError> {
        let out = self
            .run(self.cmd("lvs").args([
                "--config",
                filter,
                "-o",
                LVS_FIELDS,
                "--units",
                "k",
                "--nosuffix",
                "--reportformat",
                "json",
                &pool.vg,
            ]))
            .await?;
        parse_lvs(&out)
    }

    /// Volumes of this pool (in the thin pool for LVM_THIN).
    pub async fn volumes(&self, pool: &LvmPool) -> Result<Vec<Lv>, StorageError> {
        let f = self.filter(pool).await?;
        let lvs = self.lvs(pool, &f).await?;
        Ok(lvs.into_iter().filter(|l| pool.thin_pool.as_deref().is_none_or(|p| l.pool_lv == p) && !l.attr.starts_with('t')).collect())
    }

    pub async fn capacity(&self, pool: &LvmPool) -> Result<LvmCapacity, StorageError> {
        let f = self.filter(pool).await?;
        let fields = if pool.thin_pool.is_some() {
            "vg_name,vg_extent_size,vg_size,vg_free,lv_name,lv_size,data_percent"
        } else {
            "vg_name,vg_extent_size,vg_size,vg_free"
        };
        let out = self
            .run(self.cmd("vgs").args(["--config", &f, "-o", fields, "--units", "k", "--nosuffix", "--reportformat", "json", &pool.vg]))
            .await?;
        parse_vgs(&out, &pool.vg, pool.thin_pool.as_deref())
    }

    /// A thick clone, as LINSTOR makes it: a thick snapshot of the source
    /// LV (the copy sees one point in time while the source is written),
    /// a new LV tagged as pending, `dd` from the snapshot into it, then the
    /// tag and the snapshot go. An LV still tagged pending is copied again;
    /// with `fresh_drbd_md` the copy's DRBD superblock is zeroed afterwards
    /// (see [`Lvm::ensure_from`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn ensure_thick_clone(
        &self,
        pool: &LvmPool,
        rsc: &str,
        nr: u32,
        id: &str,
        size: Kib,
        src_lv: &str,
        fresh_drbd_md: bool,
    ) -> Result<VolumeObserved, StorageError> {
        let name = lv_name(rsc, nr)?;
        safe_name(src_lv)?;
        let tag = id_tag(id);
        let f = self.filter(pool).await?;
        let lvs = self.lvs(pool, &f).await?;
        let existing = lvs.iter().find(|l| l.name == name);
        if let Some(old) = existing.filter(|l| !l.tags.contains(&tag)) {
            tracing::warn!(lv = %old.name, "removing a logical volume of an earlier resource of the same name");
            self.remove_lv(pool, &f, old).await?;
        }
        let existing = existing.filter(|l| l.tags.contains(&tag));
        if existing.is_none_or(|l| l.tags.iter().any(|t| t == COPY_PENDING_TAG)) {
            let snap = format!("{name}_clonesrc");
            if !lvs.iter().any(|l| l.name == snap) {
                let src = lvs
                    .iter()
                    .find(|l| l.name == src_lv)
                    .ok_or_else(|| StorageError::BadBacking(format!("the clone source {}/{src_lv} does not exist", pool.vg)))?;
                self.run(self.cmd("lvcreate").args([
                    "--config",
                    &f,
                    "--size",
                    &format!("{}k", src.size_kib),
                    "--snapshot",
                    "--setactivationskip",
                    "y",
                    "--ignoreactivationskip",
                    "--activate",
                    "y",
                    "--name",
                    &snap,
                    "--addtag",
                    CLONE_SRC_TAG,
                    &format!("{}/{src_lv}", pool.vg),
                ]))
                .await?;
            }
            if existing.is_none() {
                // Never smaller than the data to copy (a source with DRBD
                // metadata into a clone without).
                let from_kib = lvs.iter().find(|l| l.name == src_lv || l.name == snap).map_or(0, |l| l.size_kib);
                let kib = size.as_i64().max(from_kib);
                let mut c = self.cmd("lvcreate").args(["--config", &f, "--size", &format!("{kib}k"), &pool.vg, "-n", &name, "-y"]);
                for t in [tag.as_str(), COPY_PENDING_TAG].into_iter().chain(fresh_drbd_md.then_some(MD_PENDING_TAG)) {
                    c = c.args(["--addtag", t]);
                }
                self.run(c).await?;
            }
            self.run(
                Cmd::new("dd")
                    .args([
                        format!("if=/dev/{}/{snap}", pool.vg),
                        format!("of=/dev/{}/{name}", pool.vg),
                        format!("bs={CLONE_DD_BLOCKSIZE}"),
                        "conv=nocreat".to_string(),
                        "oflag=direct".to_string(),
                    ])
                    .timeout(COPY_TIMEOUT),
            )
            .await?;
            self.run(self.cmd("lvchange").args(["--config", &f, "--deltag", COPY_PENDING_TAG, &format!("{}/{name}", pool.vg)])).await?;
            self.run(self.cmd("lvremove").args(["--config", &f, "-f", &format!("{}/{snap}", pool.vg)])).await?;
        }
        self.ensure_from(pool, rsc, nr, id, size, None).await
    }

    /// Makes volume `nr` of `rsc` exist with at least `size`; grows it
    /// when smaller; an LV of an earlier incarnation (other id) is removed
    /// first. A missing volume with a `source` (`<lv>` of a snapshot, or of
    /// another volume for a clone, in the same volume group) starts as a
    /// thin copy of it; with its flag set the copy's DRBD superblock is
    /// zeroed (marked by a tag until done), so DRBD makes fresh metadata.
    pub async fn ensure(&self, pool: &LvmPool, rsc: &str, nr: u32, id: &str, size: Kib) -> Result<VolumeObserved, StorageError> {
        self.ensure_from(pool, rsc, nr, id, size, None).await
    }

    pub async fn ensure_from(
        &self,
        pool: &LvmPool,
        rsc: &str,
        nr: u32,
        id: &str,
        size: Kib,
        source: Option<(&str, bool)>,
    ) -> Result<VolumeObserved, StorageError> {
        let size_kib = size.as_i64();
        let name = lv_name(rsc, nr)?;
        let tag = id_tag(id);
        let f = self.filter(pool).await?;
        let existing = self.lvs(pool, &f).await?.into_iter().find(|l| l.name == name);
        if let Some(old) = existing.as_ref().filter(|l| !l.tags.contains(&tag)) {
            tracing::warn!(lv = %old.name, "removing a logical volume of an earlier resource of the same name");
            self.remove_lv(pool, &f, old).await?;
        }
        let lv = match existing.filter(|l| l.tags.contains(&tag)) {
            Some(lv) => {
                if lv.size_kib < size_kib {
                    self.run(self.cmd("lvresize").args([
                        "--config",
                        &f,
                        "--size",
                        &format!("{size_kib}k"),
                        &format!("{}/{name}", pool.vg),
                        "-f",
                    ]))
                    .await?;
                } else if lv.size_kib > size_kib {
                    // LVM rounds up to whole extents; more than LINSTOR's
                    // tolerance means the volume is bigger than asked
                    // (shrinking is never done).
                    let extent = self.capacity(pool).await.map(|c| c.extent_kib).unwrap_or(4096);
                    if lv.size_kib - size_kib >= EXTENT_TOLERANCE * extent {
                        tracing::warn!(lv = %name, have_kib = lv.size_kib, want_kib = size_kib, "volume is larger than asked beyond the extent tolerance");
                    }
                }
                if !lv.is_active() {
                    self.run(self.cmd("lvchange").args(["-ay", "-K", &format!("{}/{name}", pool.vg)])).await?;
                }
                lv
            }
            None if source.is_some() && pool.thin_pool.is_some() => {
                let (src, fresh_drbd_md) = source.unwrap_or_default();
                // A copy that gets fresh DRBD metadata is marked until its
                // old superblock is gone, so a retry finishes the job.
                let tags: &[&str] = if fresh_drbd_md { &[&tag, MD_PENDING_TAG] } else { &[&tag] };
                self.clone_of(pool, &f, src, &name, tags).await?;
                self.grow_copy(pool, &f, &name, size_kib).await?;
                planned(pool, &name, size_kib, &tag)
            }
            None => {
                let size = format!("{size_kib}k");
                let c = match &pool.thin_pool {
                    Some(tp) => self.thin_create(&f, &pool.vg, tp, &size, &name, &tag),
                    None => self.cmd("lvcreate").args(["--config", &f, "--size", &size, &pool.vg, "-n", &name, "-y", "--addtag", &tag]),
                };
                self.run(c).await?;
                // What LVM made (it rounds up to whole extents), from the
                // device: no second listing under the volume group's lock.
                let dev = format!("/dev/{}/{name}", pool.vg);
                let bytes = self.run(self.cmd("blockdev").args(["--getsize64", &dev])).await?;
                let usable = bytes
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| StorageError::Output { program: "blockdev", detail: format!("{e}: {bytes:?}") })?
                    / 1024;
                let usable = i64::try_from(usable).unwrap_or(i64::MAX);
                return Ok(VolumeObserved {
                    number: nr,
                    device_path: Some(dev),
                    // A new thin volume holds no data yet; a thick one all its space.
                    allocated_kib: Some(if pool.thin_pool.is_some() { 0 } else { usable }),
                    usable_kib: Some(usable),
                    disk_state: "UpToDate".into(),
                    luks_device_path: None,
                });
            }
        };
        // Read back what LVM made (extent rounding).
        let now = self.lvs(pool, &f).await?.into_iter().find(|l| l.name == name).unwrap_or(lv);
        if now.tags.iter().any(|t| t == MD_PENDING_TAG) {
            let dev = format!("/dev/{}/{name}", pool.vg);
            self.run(zero_drbd_superblock(&dev, now.size_kib.max(0) as u64 * 1024)).await?;
            self.run(self.cmd("lvchange").args(["--config", &f, "--deltag", MD_PENDING_TAG, &format!("{}/{name}", pool.vg)])).await?;
        }
        let allocated = now.allocated_kib();
        Ok(VolumeObserved {
            number: nr,
            device_path: Some(now.path.clone()).filter(|p| !p.is_empty()).or(Some(format!("/dev/{}/{name}", pool.vg))),
            allocated_kib: Some(allocated),
            usable_kib: Some(now.size_kib),
            disk_state: "UpToDate".into(),
            luks_device_path: None,
        })
    }

    /// `lvcreate` of thin volume `vg/name` in thin pool `tp`, tagged.
    fn thin_create(&self, f: &str, vg: &str, tp: &str, size: &str, name: &str, tag: &str) -> Cmd {
        self.cmd("lvcreate").args(["--config", f, "--virtualsize", size, vg, "--thinpool", tp, "--name", name, "--addtag", tag])
    }

    async fn remove_lv(&self, pool: &LvmPool, filter: &str, lv: &Lv) -> Result<(), StorageError> {
        let dev = if lv.path.is_empty() { format!("/dev/{}/{}", pool.vg, lv.name) } else { lv.path.clone() };
        if lv.is_active() {
            // Quick wipe: signatures go before the space is reused.
            self.run(self.cmd("wipefs").args(["-a", "-f", &dev])).await?;
        }
        self.run(self.cmd("lvremove").args(["--config", filter, "-f", &format!("{}/{}", pool.vg, lv.name)])).await?;
        Ok(())
    }

    /// A writable, active thin LV `name` as a copy of thin LV `src`.
    /// Grows the thin copy `name` to `size_kib` when it is smaller (a
    /// copy starts with its source's size).
    async fn grow_copy(&self, pool: &LvmPool, f: &str, name: &str, size_kib: i64) -> Result<(), StorageError> {
        if let Some(lv) = self.lvs(pool, f).await?.into_iter().find(|l| l.name == name)
            && lv.size_kib < size_kib
        {
            let lv = format!("{}/{name}", pool.vg);
            self.run(self.cmd("lvresize").args(["--config", f, "--size", &format!("{size_kib}k"), &lv, "-f"])).await?;
        }
        Ok(())
    }

    async fn clone_of(&self, pool: &LvmPool, f: &str, src: &str, name: &str, tags: &[&str]) -> Result<(), StorageError> {
        let mut c =
            self.cmd("lvcreate").args(["--config", f, "--snapshot", "--setactivationskip", "n", "--permission", "rw", "--name", name]);
        for t in tags {
            c = c.args(["--addtag", t]);
        }
        self.run(c.arg(format!("{}/{src}", pool.vg))).await?;
        self.run(self.cmd("lvchange").args(["--config", f, "-ay", "-K", &format!("{}/{name}", pool.vg)])).await?;
        Ok(())
    }

    /// The snapshots of `rsc` in the pool: snapshot name -> volume numbers.
    /// Only LVs Cairn made as snapshots count (tag `cairn_snap`), never a
    /// volume of another resource whose name happens to look alike.
    pub async fn snapshots(&self, pool: &LvmPool, rsc: &str) -> Result<std::collections::BTreeMap<String, Vec<u32>>, StorageError> {
        let prefix = format!("{}_", safe_name(rsc)?);
        let f = self.filter(pool).await?;
        let mut out: std::collections::BTreeMap<String, Vec<u32>> = std::collections::BTreeMap::new();
        for lv in self.lvs(pool, &f).await? {
            if !lv.tags.iter().any(|t| t == SNAP_TAG) {
                continue;
            }
            let Some(rest) = lv.name.strip_prefix(&prefix) else { continue };
            let (Some(nr), Some(snap)) = (rest.get(..5).and_then(volume_number), rest.get(6..)) else { continue };
            if rest.as_bytes().get(5) == Some(&b'_') && !snap.is_empty() {
                out.entry(snap.to_string()).or_default().push(nr);
            }
        }
        Ok(out)
    }

    /// A read-only thin snapshot `<rsc>_<NNNNN>_<snap>` of volume `nr`.
    pub async fn create_snapshot(&self, pool: &LvmPool, rsc: &str, nr: u32, snap: &str) -> Result<(), StorageError> {
        let lv = lv_name(rsc, nr)?;
        let f = self.filter(pool).await?;
        self.run(self.cmd("lvcreate").args([
            "--config",
            &f,
            "--snapshot",
            "--setactivationskip",
            "y",
            "--ignoreactivationskip",
            "--activate",
            "y",
            "--addtag",
            SNAP_TAG,
            "--name",
            &format!("{lv}_{}", safe_name(snap)?),
            &format!("{}/{lv}", pool.vg),
            "-pr",
        ]))
        .await?;
        Ok(())
    }

    pub async fn delete_snapshot(&self, pool: &LvmPool, rsc: &str, nr: u32, snap: &str) -> Result<(), StorageError> {
        let name = format!("{}_{}", lv_name(rsc, nr)?, safe_name(snap)?);
        let f = self.filter(pool).await?;
        // Only what carries the snapshot tag is ever removed here.
        if self.lvs(pool, &f).await?.iter().any(|l| l.name == name && l.tags.iter().any(|t| t == SNAP_TAG)) {
            self.run(self.cmd("lvremove").args(["--config", &f, "-f", &format!("{}/{name}", pool.vg)])).await?;
        }
        Ok(())
    }

    /// Whether volume `nr` of `rsc` still has to be rolled back (`id`):
    /// it exists, is not marked with the id, and the snapshot has it.
    pub async fn needs_rollback(&self, pool: &LvmPool, rsc: &str, nr: u32, snap: &str, id: &str) -> Result<bool, StorageError> {
        let name = lv_name(rsc, nr)?;
        let snap_lv = format!("{name}_{}", safe_name(snap)?);
        let f = self.filter(pool).await?;
        let tag = format!("cairn_rb_{id}");
        let lvs = self.lvs(pool, &f).await?;
        Ok(lvs.iter().any(|l| l.name == name && !l.tags.contains(&tag))
            && lvs.iter().any(|l| l.name == snap_lv && l.tags.iter().any(|t| t == SNAP_TAG)))
    }

    /// Replaces volume `nr` by a copy of its snapshot (thin LVs share the
    /// data, so this is the cheap rollback), marked with the rollback id.
    /// The old volume is renamed aside first and only removed once the copy
    /// exists; a failed copy renames it back.
    pub async fn rollback(&self, pool: &LvmPool, rsc: &str, nr: u32, vid: &str, snap: &str, id: &str) -> Result<(), StorageError> {
        let name = lv_name(rsc, nr)?;
        let f = self.filter(pool).await?;
        let snap_lv = format!("{name}_{}", safe_name(snap)?);
        let aside = format!("{name}-rollback-{}", safe_name(id)?);
        self.run(self.cmd("lvrename").args(["--config", &f, &pool.vg, &name, &aside])).await?;
        let rb = format!("cairn_rb_{id}");
        if let Err(e) = self.clone_of(pool, &f, &snap_lv, &name, &[&id_tag(vid), &rb]).await {
            let _ = self.run(self.cmd("lvrename").args(["--config", &f, &pool.vg, &aside, &name])).await;
            return Err(e);
        }
        self.run(self.cmd("lvremove").args(["--config", &f, "-f", &format!("{}/{aside}", pool.vg)])).await?;
        Ok(())
    }

    /// Removes volumes of `rsc` whose number is not in `keep`.
    pub async fn remove_others(&self, pool: &LvmPool, rsc: &str, keep: &[u32]) -> Result<(), StorageError> {
        let prefix = format!("{}_", safe_name(rsc)?);
        let f = self.filter(pool).await?;
        for lv in self.lvs(pool, &f).await? {
            // The snapshot a thick clone copies from goes with the clone.
            let copy_src = lv.name.strip_prefix(&prefix).and_then(|r| r.strip_suffix("_clonesrc")).and_then(volume_number);
            if let Some(nr) = copy_src
                && !keep.contains(&nr)
                && lv.tags.iter().any(|t| t == CLONE_SRC_TAG)
            {
                self.run(self.cmd("lvremove").args(["--config", &f, "-f", &format!("{}/{}", pool.vg, lv.name)])).await?;
                continue;
            }
            let nr = lv.name.strip_prefix(&prefix).and_then(volume_number);
            if let Some(nr) = nr
                && !keep.contains(&nr)
                && pool.thin_pool.as_deref().is_none_or(|p| lv.pool_lv == p)
                && !lv.attr.starts_with('t')
            {
                self.remove_lv(pool, &f, &lv).await?;
            }
        }
        Ok(())
    }

    /// Removes every volume of `rsc` from the pool.
    pub async fn remove(&self, pool: &LvmPool, rsc: &str) -> Result<(), StorageError> {
        self.remove_others(pool, rsc, &[]).await
    }

    /// What each volume of the pool takes from it now, KiB, by resource
    /// and volume number (one `lvs`; thin volumes grow as they are
    /// written).
    pub async fn allocated(&self, pool: &LvmPool) -> Result<std::collections::BTreeMap<(String, u32), i64>, StorageError> {
        Ok(self
            .volumes(pool)
            .await?
            .iter()
            .filter_map(|l| split_volume_name(&l.name).map(|(rsc, nr)| ((rsc.to_string(), nr), l.allocated_kib())))
            .collect())
    }

    /// Names of resources with volumes in the pool.
    pub async fn resources(&self, pool: &LvmPool) -> Result<Vec<String>, StorageError> {
        Ok(self
            .volumes(pool)
            .await?
            .into_iter()
            .filter(|l| l.tags.iter().any(|t| t.starts_with("cairn_vid_")))
            .filter_map(|l| split_volume_name(&l.name).map(|(r, _)| r.to_string()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use cairn_exec::FakeRunner;
    use serde_json::json;

    use super::*;

    // Captured in the test VM by tests/vm/capture_lvm.py (testdata/lvm/README.md).
    const LVS_THICK: &str = include_str!("../testdata/lvm/lvs-thick.json");
    const LVS_THIN: &str = include_str!("../testdata/lvm/lvs-thin.json");
    const LVS_MISSING_VG: &str = include_str!("../testdata/lvm/lvs-missing-vg.json");
    const VGS_THICK: &str = include_str!("../testdata/lvm/vgs-thick.json");
    const VGS_THIN: &str = include_str!("../testdata/lvm/vgs-thin.json");
    const VGS_THIN_NO_LVS: &str = include_str!("../testdata/lvm/vgs-thin-no-lvs.json");
    const VGS_MISSING_VG: &str = include_str!("../testdata/lvm/vgs-missing-vg.json");
    const PVS: &str = include_str!("../testdata/lvm/pvs.json");
    const PVS_MISSING_VG: &str = include_str!("../testdata/lvm/pvs-missing-vg.json");

    fn is_output_error(r: Result<impl std::fmt::Debug, StorageError>, of: &str) -> bool {
        matches!(r, Err(StorageError::Output { program, .. }) if program == of)
    }

    #[test]
    fn lvs_report_from_a_real_vm_decodes() {
        let thick = parse_lvs(LVS_THICK).unwrap();
        assert_eq!(thick.len(), 2);
        assert_eq!((thick[0].name.as_str(), thick[0].size_kib), ("odd_00000", 12288), "10000k rounded up to 3 extents");
        assert!(!thick[0].is_active());
        assert_eq!(thick[1].path, "/dev/vg0/web_00000");
        assert_eq!((thick[1].data_percent, thick[1].pool_lv.as_str()), (None, ""));
        assert!(thick[1].is_active());
        assert_eq!(thick[1].tags, ["cairn_vid_a1"]);
        assert_eq!(thick[1].allocated_kib(), 65536);

        let thin = parse_lvs(LVS_THIN).unwrap();
        let lv = |name: &str| thin.iter().find(|l| l.name == name).unwrap_or_else(|| panic!("{name}"));
        let db = lv("db_00000");
        assert_eq!((db.vg.as_str(), db.pool_lv.as_str(), db.data_percent, db.size_kib), ("vgt", "thin", Some(20.0), 102_400));
        assert_eq!(db.tags, ["cairn_rb_r1", "cairn_vid_c3"], "a rollback copy carries two tags");
        assert_eq!(db.allocated_kib(), 20_480);
        assert!(lv("db_00000_s1").is_active() && lv("db_00000_s1").tags == [SNAP_TAG]);
        let s2 = lv("db_00000_s2");
        assert!(!s2.is_active());
        assert_eq!(s2.data_percent, None, "an inactive thin volume shows no data percentage");
        let pool = lv("thin");
        assert!(pool.attr.starts_with('t') && pool.path.is_empty() && pool.tags.is_empty());
        assert_eq!(lv("web_00001").allocated_kib(), 0);
    }

    #[test]
    fn bad_lvs_output_is_an_output_error() {
        // What a missing volume group prints on stdout (exit 5, see
        // lvs-missing-vg.stderr): an empty report.
        assert!(parse_lvs(LVS_MISSING_VG).unwrap().is_empty());
        assert!(is_output_error(parse_lvs(""), "lvs"), "no JSON at all");
        assert!(is_output_error(parse_lvs("a;b;c\n"), "lvs"));
        assert!(is_output_error(parse_lvs(VGS_THICK), "lvs"), "a report of another kind");
        let one = |size: &str| {
            json!({"report": [{"lv": [{"lv_name": "a", "lv_path": "/dev/vg0/a", "lv_size": size, "vg_name": "vg0", "pool_lv": "",
                "data_percent": "", "lv_attr": "-wi-a-----", "lv_tags": ""}]}]})
            .to_string()
        };
        assert_eq!(parse_lvs(&one("4096.00")).unwrap()[0].size_kib, 4096);
        for bad in ["", "4096.00k", "many"] {
            let e = parse_lvs(&one(bad)).unwrap_err();
            assert!(e.to_string().contains("unexpected output of lvs") && e.to_string().contains("KiB"), "{bad}: {e}");
        }
        let missing_field = json!({"report": [{"lv": [{"lv_name": "a"}]}]}).to_string();
        assert!(is_output_error(parse_lvs(&missing_field), "lvs"));
    }

    #[test]
    fn vgs_report_gives_thick_and_thin_capacity() {
        let c = parse_vgs(VGS_THICK, "vg0", None).unwrap();
        assert_eq!(c, LvmCapacity { total_kib: 2_093_056, free_kib: 2_015_232, extent_kib: 4096 });
        let t = parse_vgs(VGS_THIN, "vgt", Some("thin")).unwrap();
        assert_eq!(t.total_kib, 2_084_864);
        assert_eq!(t.free_kib, (2_084_864.0 * (100.0 - 0.98) / 100.0_f64).floor() as i64);
        assert_eq!(t.extent_kib, 4096);
        let e = parse_vgs(VGS_THIN, "vgt", Some("nope")).unwrap_err();
        assert!(e.to_string().contains("thin pool vgt/nope not found"), "{e}");
        assert!(is_output_error(parse_vgs(VGS_THICK, "other", None), "vgs"));
        // With LV fields, a volume group without LVs has no row at all.
        let e = parse_vgs(VGS_THIN_NO_LVS, "vgt", Some("thin")).unwrap_err();
        assert!(e.to_string().contains("thin pool vgt/thin not found"), "{e}");
        let e = parse_vgs(VGS_MISSING_VG, "nope", None).unwrap_err();
        assert!(e.to_string().contains("volume group nope not found"), "{e}");
        assert!(is_output_error(parse_vgs("", "vg0", None), "vgs"));
        assert!(is_output_error(parse_vgs(LVS_THICK, "vg0", None), "vgs"));
        let bad = json!({"report": [{"vg": [{"vg_name": "vg0", "vg_extent_size": "4096.00", "vg_size": "x", "vg_free": "0"}]}]});
        assert!(is_output_error(parse_vgs(&bad.to_string(), "vg0", None), "vgs"));
    }

    #[test]
    fn pvs_report_gives_the_disks_of_a_volume_group() {
        let pvs = parse_pvs(PVS).unwrap();
        assert_eq!(pvs, ["/dev/vda"]);
        assert_eq!(device_filter(&pvs), "devices { filter=['a|/dev/vda|','r|.*|'] }");
        assert!(parse_pvs(PVS_MISSING_VG).unwrap().is_empty());
        assert_eq!(device_filter(&[]), "devices { filter=['r|.*|'] }");
        assert!(is_output_error(parse_pvs("  /dev/vda  \n"), "pvs"), "the text report is not taken");
    }

    #[test]
    fn backing_names_are_checked() {
        assert_eq!(LvmPool::new("p", "vg0", false).unwrap().vg, "vg0");
        let t = LvmPool::new("p", "vg0/thin", true).unwrap();
        assert_eq!((t.vg.as_str(), t.thin_pool.as_deref()), ("vg0", Some("thin")));
        for (b, thin) in [("vg0/thin", false), ("vg0", true), ("-rf", false), ("vg 0", false), ("vg0/../x", true)] {
            assert!(LvmPool::new("p", b, thin).is_err(), "{b}");
        }
    }

    /// Expects the `pvs` of `vg`, answering with the report `out`.
    fn pvs(f: &FakeRunner, vg: &str, out: &str) {
        f.expect(
            &[
                "pvs",
                "--config",
                "devices { filter=[\"r|^/dev/drbd.*|\"] }",
                "-o",
                "pv_name",
                "-S",
                &format!("vg_name={vg}"),
                "--reportformat",
                "json",
            ],
            out,
        );
    }

    const F: &str = "devices { filter=['a|/dev/vda|','r|.*|'] }";

    fn lvs_cmd(filter: &str, vg: &str) -> Vec<String> {
        ["lvs", "--config", filter, "-o", LVS_FIELDS, "--units", "k", "--nosuffix", "--reportformat", "json", vg]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// An `lvs` report of vg0 as LVM prints it: (name, size, thin pool,
    /// data percent, attributes, tags) per volume.
    fn lvs_out(rows: &[(&str, &str, &str, &str, &str, &str)]) -> String {
        let lv: Vec<serde_json::Value> = rows
            .iter()
            .map(|&(name, size, pool, pct, attr, tags)| {
                let path = if attr.starts_with('t') { String::new() } else { format!("/dev/vg0/{name}") };
                json!({"lv_name": name, "lv_path": path, "lv_size": size, "vg_name": "vg0", "pool_lv": pool, "data_percent": pct,
                    "lv_attr": attr, "metadata_percent": "", "chunk_size": "0", "stripes": if pool.is_empty() { "1" } else { "0" },
                    "lv_tags": tags})
            })
            .collect();
        json!({"report": [{"lv": lv}]}).to_string()
    }

    /// A fake runner, LVM on it, a pool and its volume group's `lvs`
    /// command (the group's PV is /dev/vda, as in `PVS`).
    fn on_pool(name: &str, backing: &str, thin: bool) -> (Arc<FakeRunner>, Lvm, LvmPool, Vec<String>) {
        let f = Arc::new(FakeRunner::new());
        let lvm = Lvm::new(f.clone(), Duration::from_secs(5));
        let pool = LvmPool::new(name, backing, thin).unwrap();
        let lvs = lvs_cmd(F, &pool.vg);
        (f, lvm, pool, lvs)
    }

    fn vgs_cmd<'a>(fields: &'a str, vg: &'a str) -> [&'a str; 11] {
        ["vgs", "--config", F, "-o", fields, "--units", "k", "--nosuffix", "--reportformat", "json", vg]
    }

    /// `lvcreate` of a writable, active thin snapshot `name` of `src`
    /// with `tags`, as a clone or a received incremental makes it.
    fn thin_snapshot_cmd(name: &str, tags: &[&str], src: &str) -> Vec<String> {
        let mut c: Vec<String> =
            ["lvcreate", "--config", F, "--snapshot", "--setactivationskip", "n", "--permission", "rw", "--name", name]
                .iter()
                .map(|s| s.to_string())
                .collect();
        for t in tags {
            c.extend(["--addtag".to_string(), t.to_string()]);
        }
        c.push(src.to_string());
        c
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn thin_delta_runs_on_a_reserved_metadata_snapshot_that_is_always_released() {
        const IDS: &str = include_str!("../testdata/lvm/lvs-thin-id.json");
        const DELTA: &str = include_str!("../testdata/lvm/thin-delta.xml");
        let (f, lvm, pool, _) = on_pool("thin", "vgt/thin", true);
        let ids = ["lvs", "--config", F, "-o", "lv_name,thin_id", "--reportformat", "json", "vgt/db_00000_s1", "vgt/db_00000_s2"];
        let reserve = ["dmsetup", "message", "vgt-thin-tpool", "0", "reserve_metadata_snap"];
        let release = ["dmsetup", "message", "vgt-thin-tpool", "0", "release_metadata_snap"];
        let delta = ["thin_delta", "-m", "--snap1", "2", "--snap2", "3", "/dev/mapper/vgt-thin_tmeta"];
        pvs(&f, "vgt", PVS);
        f.expect(&ids, IDS).expect(&reserve, "").expect(&delta, DELTA).expect(&release, "");
        let ranges = rt().block_on(lvm.snapshot_changes(&pool, "db", 0, "s1", "s2")).unwrap();
        assert_eq!(ranges.first(), Some(&(2 << 20, 1 << 20)), "{ranges:?}");
        assert!(f.is_done(), "{:?}", f.calls());
        // thin_delta fails: the metadata snapshot is released all the same.
        f.expect(&ids, IDS).expect(&reserve, "").expect_failure(&delta, 1, "bad metadata").expect(&release, "");
        assert!(rt().block_on(lvm.snapshot_changes(&pool, "db", 0, "s1", "s2")).is_err());
        assert!(f.is_done(), "{:?}", f.calls());
        // One left reserved by a satellite that died: released, reserved anew.
        f.expect(&ids, IDS)
            .expect_failure(&reserve, 1, "device-mapper: message ioctl on vgt-thin-tpool failed: Device or resource busy")
            .expect(&release, "")
            .expect(&reserve, "")
            .expect(&delta, DELTA)
            .expect(&release, "");
        assert!(rt().block_on(lvm.snapshot_changes(&pool, "db", 0, "s1", "s2")).is_ok());
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn a_shipment_lands_in_a_receiving_thin_snapshot_of_its_base_that_becomes_the_snapshot_once_registered() {
        let (f, lvm, pool, lvs) = on_pool("thin", "vg0/thin", true);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        let base = ("db_00000_s1", "4096.00", "thin", "1.00", "Vri---tz-k", "cairn_snap");
        let got = ("db_00000_s2", "4096.00", "thin", "1.00", "Vwi---tz-k", "cairn_receiving");
        pvs(&f, "vg0", PVS);
        // The base must be there, the snapshot not yet.
        f.expect(&l, &lvs_out(&[base]));
        rt().block_on(lvm.receive_check(&pool, "db", 0, "s2", Some("s1"))).unwrap();
        f.expect(&l, &lvs_out(&[]));
        assert!(rt().block_on(lvm.receive_check(&pool, "db", 0, "s2", Some("s1"))).is_err());
        f.expect(&l, &lvs_out(&[base]));
        assert!(rt().block_on(lvm.receive_check(&pool, "db", 0, "s1", None)).is_err());
        // An incremental: a writable thin snapshot of the base, tagged.
        let snap = thin_snapshot_cmd("db_00000_s2", &["cairn_receiving"], "vg0/db_00000_s1");
        f.expect(&l, &lvs_out(&[base]))
            .expect(&snap.iter().map(String::as_str).collect::<Vec<_>>(), "")
            .expect(&["lvchange", "--config", F, "-ay", "-K", "vg0/db_00000_s2"], "")
            .expect(&l, &lvs_out(&[base, got]));
        let dev = rt().block_on(lvm.receive_create_on(&pool, "db", 0, "s2", Some("s1"), 4 << 20)).unwrap();
        assert_eq!(dev, "/dev/vg0/db_00000_s2");
        assert!(f.is_done(), "{:?}", f.calls());
        // The volume grew since the base: the copy grows to the stream's
        // size before anything is written into it.
        f.expect(&l, &lvs_out(&[base, got]))
            .expect(&["lvremove", "--config", F, "-f", "vg0/db_00000_s2"], "")
            .expect(&snap.iter().map(String::as_str).collect::<Vec<_>>(), "")
            .expect(&["lvchange", "--config", F, "-ay", "-K", "vg0/db_00000_s2"], "")
            .expect(&l, &lvs_out(&[base, got]))
            .expect(&["lvresize", "--config", F, "--size", "8192k", "vg0/db_00000_s2", "-f"], "");
        rt().block_on(lvm.receive_create_on(&pool, "db", 0, "s2", Some("s1"), 8 << 20)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // Registered: it becomes a snapshot as Cairn takes them, inactive.
        f.expect(&l, &lvs_out(&[base, got]))
            .expect(&["lvchange", "--config", F, "-pr", "vg0/db_00000_s2"], "")
            .expect(&["lvchange", "--config", F, "--setactivationskip", "y", "vg0/db_00000_s2"], "")
            .expect(&["lvchange", "--config", F, "--addtag", "cairn_snap", "--deltag", "cairn_receiving", "vg0/db_00000_s2"], "")
            .expect(&["lvchange", "--config", F, "-an", "vg0/db_00000_s2"], "");
        assert!(rt().block_on(lvm.adopt_received(&pool, "db", 0, "s2")).unwrap());
        assert!(f.is_done(), "{:?}", f.calls());
        // Nothing waits under that name: nothing is adopted.
        f.expect(&l, &lvs_out(&[base]));
        assert!(!rt().block_on(lvm.adopt_received(&pool, "db", 0, "s2")).unwrap());
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn create_grow_and_delete_use_linstors_command_lines() {
        let (f, lvm, pool, lvs) = on_pool("lvm", "vg0", false);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        let web = |size| lvs_out(&[("web_00000", size, "", "", "-wi-a-----", "cairn_vid_abc123")]);
        pvs(&f, "vg0", PVS);
        f.expect(&l, &lvs_out(&[]))
            .expect(&["lvcreate", "--config", F, "--size", "65536k", "vg0", "-n", "web_00000", "-y", "--addtag", "cairn_vid_abc123"], "")
            // The size LVM made is read from the device, not listed again.
            .expect(&["blockdev", "--getsize64", "/dev/vg0/web_00000"], "67108864\n");
        let o = rt().block_on(lvm.ensure(&pool, "web", 0, "abc123", Kib::new(65536).unwrap())).unwrap();
        assert_eq!(o.device_path.as_deref(), Some("/dev/vg0/web_00000"));
        assert_eq!((o.usable_kib, o.allocated_kib), (Some(65536), Some(65536)));
        assert!(f.is_done(), "{:?}", f.calls());
        // Grow (the physical volumes listed above are still fresh).
        f.expect(&l, &web("65536.00"))
            .expect(&["lvresize", "--config", F, "--size", "70000k", "vg0/web_00000", "-f"], "")
            .expect(&l, &web("73728.00"));
        let o = rt().block_on(lvm.ensure(&pool, "web", 0, "abc123", Kib::new(70000).unwrap())).unwrap();
        assert_eq!(o.usable_kib, Some(73728), "rounded to whole extents");
        assert!(f.is_done(), "{:?}", f.calls());
        // Delete: quick wipe, then lvremove.
        f.expect(
            &l,
            &lvs_out(&[
                ("web_00000", "73728.00", "", "", "-wi-a-----", "cairn_vid_abc123"),
                ("webx_00000", "4096.00", "", "", "-wi-a-----", ""),
            ]),
        )
        .expect(&["wipefs", "-a", "-f", "/dev/vg0/web_00000"], "")
        .expect(&["lvremove", "--config", F, "-f", "vg0/web_00000"], "");
        rt().block_on(lvm.remove(&pool, "web")).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn an_inactive_volume_is_activated_and_bad_output_fails_ensure() {
        let (f, lvm, pool, lvs) = on_pool("lvm", "vg0", false);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        let odd = lvs_out(&[("odd_00000", "12288.00", "", "", "-wi-------", "cairn_vid_b2")]);
        pvs(&f, "vg0", PVS);
        f.expect(&l, &odd).expect(&["lvchange", "-ay", "-K", "vg0/odd_00000"], "").expect(&l, &odd);
        let o = rt().block_on(lvm.ensure(&pool, "odd", 0, "b2", Kib::new(12288).unwrap())).unwrap();
        assert_eq!(o.usable_kib, Some(12288));
        assert!(f.is_done(), "{:?}", f.calls());
        // Output that is no report stops ensure before it changes anything.
        f.expect(&l, "  odd_00000;/dev/vg0/odd_00000;12288.00;vg0;;;-wi-------;;0;1;cairn_vid_b2\n");
        assert!(is_output_error(rt().block_on(lvm.ensure(&pool, "odd", 0, "b2", Kib::new(12288).unwrap())), "lvs"));
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn thin_volumes_and_an_earlier_incarnation() {
        let (f, lvm, pool, lvs) = on_pool("thin", "vg0/thin", true);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        pvs(&f, "vg0", PVS);
        f.expect(&l, &lvs_out(&[("db_00000", "102400.00", "thin", "20.00", "Vwi-a-tz--", "cairn_vid_old")]))
            .expect(&["wipefs", "-a", "-f", "/dev/vg0/db_00000"], "")
            .expect(&["lvremove", "--config", F, "-f", "vg0/db_00000"], "")
            .expect(
                &[
                    "lvcreate",
                    "--config",
                    F,
                    "--virtualsize",
                    "102400k",
                    "vg0",
                    "--thinpool",
                    "thin",
                    "--name",
                    "db_00000",
                    "--addtag",
                    "cairn_vid_new",
                ],
                "",
            )
            .expect(&["blockdev", "--getsize64", "/dev/vg0/db_00000"], "104857600\n");
        let o = rt().block_on(lvm.ensure(&pool, "db", 0, "new", Kib::new(102_400).unwrap())).unwrap();
        assert_eq!((o.usable_kib, o.allocated_kib), (Some(102_400), Some(0)), "a new thin volume allocates nothing");
        assert!(f.is_done(), "{:?}", f.calls());
        // Output that is no size fails the create (the volume is there;
        // the next apply finds it and reads it back with `lvs`).
        let (f, lvm, pool, lvs) = on_pool("thin", "vg0/thin", true);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        pvs(&f, "vg0", PVS);
        f.expect(&l, &lvs_out(&[]))
            .expect(
                &[
                    "lvcreate",
                    "--config",
                    F,
                    "--virtualsize",
                    "4096k",
                    "vg0",
                    "--thinpool",
                    "thin",
                    "--name",
                    "x_00000",
                    "--addtag",
                    "cairn_vid_a",
                ],
                "",
            )
            .expect(&["blockdev", "--getsize64", "/dev/vg0/x_00000"], "blockdev: cannot open\n");
        assert!(is_output_error(rt().block_on(lvm.ensure(&pool, "x", 0, "a", Kib::new(4096).unwrap())), "blockdev"));
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn capacity_asks_vgs_for_the_thin_pool() {
        let (f, lvm, pool, _) = on_pool("thin", "vgt/thin", true);
        pvs(&f, "vgt", PVS);
        f.expect(&vgs_cmd("vg_name,vg_extent_size,vg_size,vg_free,lv_name,lv_size,data_percent", "vgt"), VGS_THIN);
        let c = rt().block_on(lvm.capacity(&pool)).unwrap();
        assert_eq!((c.total_kib, c.extent_kib), (2_084_864, 4096));
        assert!(f.is_done(), "{:?}", f.calls());
        let thick = LvmPool::new("lvm", "vg0", false).unwrap();
        pvs(&f, "vg0", PVS);
        f.expect(&vgs_cmd("vg_name,vg_extent_size,vg_size,vg_free", "vg0"), VGS_THICK);
        assert_eq!(rt().block_on(lvm.capacity(&thick)).unwrap().free_kib, 2_015_232);
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn the_captured_thin_pool_gives_volumes_snapshots_and_rollbacks() {
        let (f, lvm, pool, lvs) = on_pool("thin", "vgt/thin", true);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        pvs(&f, "vgt", PVS);
        f.expect(&l, LVS_THIN);
        let a = rt().block_on(lvm.allocated(&pool)).unwrap();
        assert_eq!(a, [(("db".to_string(), 0), 20_480), (("web".to_string(), 1), 0)].into(), "snapshots and the pool are no volumes");
        f.expect(&l, LVS_THIN);
        let snaps = rt().block_on(lvm.snapshots(&pool, "db")).unwrap();
        assert_eq!(snaps, [("s1".to_string(), vec![0]), ("s2".to_string(), vec![0])].into());
        for (id, needed) in [("r1", false), ("r2", true)] {
            f.expect(&l, LVS_THIN);
            assert_eq!(rt().block_on(lvm.needs_rollback(&pool, "db", 0, "s1", id)).unwrap(), needed, "{id}");
        }
        assert!(f.is_done(), "{:?}", f.calls());
    }

    /// The copy of snapshot s1 that replaces volume db_00000, tagged `rb`.
    fn clone_cmd(rb: &str) -> Vec<&str> {
        vec![
            "lvcreate",
            "--config",
            F,
            "--snapshot",
            "--setactivationskip",
            "n",
            "--permission",
            "rw",
            "--name",
            "db_00000",
            "--addtag",
            "cairn_vid_v1",
            "--addtag",
            rb,
            "vg0/db_00000_s1",
        ]
    }

    #[test]
    fn rollback_renames_aside_clones_then_removes() {
        let (f, lvm, pool, lvs) = on_pool("thin", "vg0/thin", true);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        let listing = lvs_out(&[
            ("db_00000", "4096.00", "thin", "1.00", "Vwi-a-tz--", "cairn_vid_v1"),
            ("db_00000_s1", "4096.00", "thin", "1.00", "Vri---tz-k", "cairn_snap"),
            ("db_00000_fake", "4096.00", "thin", "1.00", "Vwi-a-tz--", ""),
        ]);
        pvs(&f, "vg0", PVS);
        f.expect(&l, &listing);
        assert!(rt().block_on(lvm.needs_rollback(&pool, "db", 0, "s1", "r1")).unwrap());
        f.expect(&l, &listing);
        let snaps = rt().block_on(lvm.snapshots(&pool, "db")).unwrap();
        assert_eq!(snaps.keys().collect::<Vec<_>>(), ["s1"], "an untagged look-alike is no snapshot");
        f.expect(&["lvrename", "--config", F, "vg0", "db_00000", "db_00000-rollback-r1"], "")
            .expect(&clone_cmd("cairn_rb_r1"), "")
            .expect(&["lvchange", "--config", F, "-ay", "-K", "vg0/db_00000"], "")
            .expect(&["lvremove", "--config", F, "-f", "vg0/db_00000-rollback-r1"], "");
        rt().block_on(lvm.rollback(&pool, "db", 0, "v1", "s1", "r1")).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // A failed copy puts the volume back.
        f.expect(&["lvrename", "--config", F, "vg0", "db_00000", "db_00000-rollback-r2"], "")
            .expect_failure(&clone_cmd("cairn_rb_r2"), 5, "no space")
            .expect(&["lvrename", "--config", F, "vg0", "db_00000-rollback-r2", "db_00000"], "");
        assert!(rt().block_on(lvm.rollback(&pool, "db", 0, "v1", "s1", "r2")).is_err());
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn a_thin_clone_snapshots_the_source_and_zeroes_the_copied_drbd_superblock_once() {
        let (f, lvm, pool, lvs) = on_pool("thin", "vg0/thin", true);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        let src = ("web_00000", "4096.00", "thin", "10.00", "Vwi-a-tz--", "cairn_vid_a1");
        let pending = ("cl_00000", "4096.00", "thin", "10.00", "Vwi-a-tz--", "cairn_vid_c9,cairn_clone_md");
        pvs(&f, "vg0", PVS);
        let snap = thin_snapshot_cmd("cl_00000", &["cairn_vid_c9", MD_PENDING_TAG], "vg0/web_00000");
        f.expect(&l, &lvs_out(&[src]))
            .expect(&snap.iter().map(String::as_str).collect::<Vec<_>>(), "")
            .expect(&["lvchange", "--config", F, "-ay", "-K", "vg0/cl_00000"], "")
            .expect(&l, &lvs_out(&[src, pending]))
            .expect(&l, &lvs_out(&[src, pending]))
            .expect(&["dd", "if=/dev/zero", "of=/dev/vg0/cl_00000", "bs=512", "seek=8184", "count=8", "oflag=direct", "conv=notrunc"], "")
            .expect(&["lvchange", "--config", F, "--deltag", MD_PENDING_TAG, "vg0/cl_00000"], "");
        let size = Kib::new(4096).unwrap();
        let o = rt().block_on(lvm.ensure_from(&pool, "cl", 0, "c9", size, Some(("web_00000", true)))).unwrap();
        assert_eq!(o.device_path.as_deref(), Some("/dev/vg0/cl_00000"));
        assert!(f.is_done(), "{:?}", f.calls());
        // Done once: the tag is gone, the next pass touches nothing.
        let done = ("cl_00000", "4096.00", "thin", "10.00", "Vwi-a-tz--", "cairn_vid_c9");
        f.expect(&l, &lvs_out(&[src, done])).expect(&l, &lvs_out(&[src, done]));
        rt().block_on(lvm.ensure_from(&pool, "cl", 0, "c9", size, Some(("web_00000", true)))).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // A copy that was left half-done (killed before dd) is finished.
        f.expect(&l, &lvs_out(&[src, pending]))
            .expect(&l, &lvs_out(&[src, pending]))
            .expect(&["dd", "if=/dev/zero", "of=/dev/vg0/cl_00000", "bs=512", "seek=8184", "count=8", "oflag=direct", "conv=notrunc"], "")
            .expect(&["lvchange", "--config", F, "--deltag", MD_PENDING_TAG, "vg0/cl_00000"], "");
        rt().block_on(lvm.ensure_from(&pool, "cl", 0, "c9", size, Some(("web_00000", true)))).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn a_thick_clone_copies_from_a_snapshot_with_dd_and_cleans_up() {
        let (f, lvm, pool, lvs) = on_pool("lvm", "vg0", false);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        let src = ("web_00000", "8192.00", "", "", "-wi-a-----", "cairn_vid_a1");
        let copying = ("cl_00000", "8192.00", "", "", "-wi-a-----", "cairn_vid_c9,cairn_clone_copy");
        let done = ("cl_00000", "8192.00", "", "", "-wi-a-----", "cairn_vid_c9");
        let snap = ("cl_00000_clonesrc", "8192.00", "", "", "swi-a-s---", "cairn_clone_src");
        let dd = ["dd", "if=/dev/vg0/cl_00000_clonesrc", "of=/dev/vg0/cl_00000", "bs=64K", "conv=nocreat", "oflag=direct"];
        let tail = |f: &FakeRunner| {
            f.expect(&dd, "")
                .expect(&["lvchange", "--config", F, "--deltag", COPY_PENDING_TAG, "vg0/cl_00000"], "")
                .expect(&["lvremove", "--config", F, "-f", "vg0/cl_00000_clonesrc"], "");
        };
        pvs(&f, "vg0", PVS);
        f.expect(&l, &lvs_out(&[src])).expect(
            &[
                "lvcreate",
                "--config",
                F,
                "--size",
                "8192k",
                "--snapshot",
                "--setactivationskip",
                "y",
                "--ignoreactivationskip",
                "--activate",
                "y",
                "--name",
                "cl_00000_clonesrc",
                "--addtag",
                CLONE_SRC_TAG,
                "vg0/web_00000",
            ],
            "",
        );
        f.expect(
            &[
                "lvcreate",
                "--config",
                F,
                "--size",
                "8192k",
                "vg0",
                "-n",
                "cl_00000",
                "-y",
                "--addtag",
                "cairn_vid_c9",
                "--addtag",
                COPY_PENDING_TAG,
            ],
            "",
        );
        tail(&f);
        // Then the usual ensure: found, right size, read back.
        f.expect(&l, &lvs_out(&[src, done])).expect(&l, &lvs_out(&[src, done]));
        let size = Kib::new(8192).unwrap();
        rt().block_on(lvm.ensure_thick_clone(&pool, "cl", 0, "c9", size, "web_00000", false)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // Interrupted after the LV was made: the snapshot stays, dd again.
        f.expect(&l, &lvs_out(&[src, copying, snap]));
        tail(&f);
        f.expect(&l, &lvs_out(&[src, done])).expect(&l, &lvs_out(&[src, done]));
        rt().block_on(lvm.ensure_thick_clone(&pool, "cl", 0, "c9", size, "web_00000", false)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // A finished copy is never copied again, even if the source is gone.
        f.expect(&l, &lvs_out(&[done]));
        f.expect(&l, &lvs_out(&[done])).expect(&l, &lvs_out(&[done]));
        rt().block_on(lvm.ensure_thick_clone(&pool, "cl", 0, "c9", size, "web_00000", false)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // A missing source is an error before anything is made.
        f.expect(&l, &lvs_out(&[]));
        assert!(rt().block_on(lvm.ensure_thick_clone(&pool, "cl", 0, "c9", size, "web_00000", false)).is_err());
        assert!(f.is_done(), "{:?}", f.calls());
        // A clone removed while copying takes its source snapshot along;
        // the source stays.
        f.expect(&l, &lvs_out(&[src, copying, snap]))
            .expect(&["wipefs", "-a", "-f", "/dev/vg0/cl_00000"], "")
            .expect(&["lvremove", "--config", F, "-f", "vg0/cl_00000"], "")
            .expect(&["lvremove", "--config", F, "-f", "vg0/cl_00000_clonesrc"], "");
        rt().block_on(lvm.remove_others(&pool, "cl", &[])).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
    }
}
