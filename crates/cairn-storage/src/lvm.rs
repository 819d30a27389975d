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

use crate::{StorageError, safe_name, split_volume_name, volume_number};

/// A volume may come out this many extents larger than asked (LVM rounds
/// up to whole extents) before it counts as a different size.
pub const EXTENT_TOLERANCE: i64 = 3;

/// Tag of the snapshot LVs Cairn makes.
pub const SNAP_TAG: &str = "cairn_snap";

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

/// One logical volume as `lvs` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lv {
    pub name: String,
    pub path: String,
    pub size_kib: i64,
    pub vg: String,
    pub pool_lv: String,
    pub data_percent: Option<f64>,
    pub attr: String,
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

fn kib(v: &str) -> Option<i64> {
    v.trim().parse::<f64>().ok().map(|f| f.round() as i64)
}

/// Parses `lvs -o lv_name,lv_path,lv_size,vg_name,pool_lv,data_percent,
/// lv_attr,metadata_percent,chunk_size,stripes,lv_tags --separator ';'`.
pub fn parse_lvs(out: &str) -> Result<Vec<Lv>, StorageError> {
    let mut lvs = Vec::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(';').collect();
        if f.len() < 11 {
            return Err(StorageError::Output { program: "lvs", detail: format!("expected 11 fields: {line}") });
        }
        let size_kib = kib(f[2]).ok_or_else(|| StorageError::Output { program: "lvs", detail: format!("bad size: {line}") })?;
        lvs.push(Lv {
            name: f[0].to_string(),
            path: f[1].to_string(),
            size_kib,
            vg: f[3].to_string(),
            pool_lv: f[4].to_string(),
            data_percent: f[5].trim().parse().ok(),
            attr: f[6].to_string(),
            tags: f[10].split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect(),
        });
    }
    Ok(lvs)
}

/// Capacity of a pool in KiB: (total, free, extent size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LvmCapacity {
    pub total_kib: i64,
    pub free_kib: i64,
    pub extent_kib: i64,
}

/// Parses `vgs -o vg_name,vg_extent_size,vg_size,vg_free[,lv_name,lv_size,
/// data_percent]`; with `thin_pool`, the pool's size and its unused part.
pub fn parse_vgs(out: &str, vg: &str, thin_pool: Option<&str>) -> Result<LvmCapacity, StorageError> {
    let bad = |detail: String| StorageError::Output { program: "vgs", detail };
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(';').collect();
        if f.first() != Some(&vg) {
            continue;
        }
        let extent_kib = f.get(1).and_then(|v| kib(v)).ok_or_else(|| bad(format!("bad extent size: {line}")))?;
        match thin_pool {
            None => {
                let total = f.get(2).and_then(|v| kib(v)).ok_or_else(|| bad(format!("bad size: {line}")))?;
                let free = f.get(3).and_then(|v| kib(v)).ok_or_else(|| bad(format!("bad free: {line}")))?;
                return Ok(LvmCapacity { total_kib: total, free_kib: free, extent_kib });
            }
            Some(pool) if f.get(4) == Some(&pool) => {
                let size = f.get(5).and_then(|v| kib(v)).ok_or_else(|| bad(format!("bad pool size: {line}")))?;
                let used: f64 = f.get(6).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0);
                let free = (size as f64 * (100.0 - used) / 100.0).floor() as i64;
                return Ok(LvmCapacity { total_kib: size, free_kib: free.max(0), extent_kib });
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
}

const LVS_FIELDS: &str = "lv_name,lv_path,lv_size,vg_name,pool_lv,data_percent,lv_attr,metadata_percent,chunk_size,stripes,lv_tags";

impl Lvm {
    pub fn new(runner: Arc<dyn CommandRunner>, timeout: Duration) -> Lvm {
        Lvm { runner, timeout }
    }

    fn cmd(&self, program: &str) -> Cmd {
        Cmd::new(program).timeout(self.timeout)
    }

    async fn run(&self, c: Cmd) -> Result<String, StorageError> {
        Ok(self.runner.run(&c).await?.stdout)
    }

    /// The volume group's physical volumes.
    pub async fn pvs(&self, vg: &str) -> Result<Vec<String>, StorageError> {
        let out = self
            .run(self.cmd("pvdisplay").args([
                "--config",
                "devices { filter=[\"r|^/dev/drbd.*|\"] }",
                "--columns",
                "-o",
                "pv_name",
                "-S",
                &format!("vg_name={vg}"),
                "--noheadings",
                "--nosuffix",
            ]))
            .await?;
        Ok(out.split_whitespace().map(String::from).collect())
    }

    async fn filter(&self, pool: &LvmPool) -> Result<String, StorageError> {
        Ok(device_filter(&self.pvs(&pool.vg).await?))
    }

    /// The logical volumes of the pool's volume group.
    pub async fn lvs(&self, pool: &LvmPool, filter: &str) -> Result<Vec<Lv>, StorageError> {
        let out = self
            .run(self.cmd("lvs").args([
                "--config",
                filter,
                "-o",
                LVS_FIELDS,
                "--separator",
                ";",
                "--noheadings",
                "--units",
                "k",
                "--nosuffix",
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
            .run(self.cmd("vgs").args([
                "--config",
                &f,
                "-o",
                fields,
                "--separator",
                ";",
                "--units",
                "k",
                "--noheadings",
                "--nosuffix",
                &pool.vg,
            ]))
            .await?;
        parse_vgs(&out, &pool.vg, pool.thin_pool.as_deref())
    }

    /// Makes volume `nr` of `rsc` exist with at least `size_kib`; grows it
    /// when smaller; an LV of an earlier incarnation (other id) is removed
    /// first. A missing volume with a `source` (`<lv>` of a snapshot in the
    /// same volume group) starts as a thin copy of it.
    pub async fn ensure(&self, pool: &LvmPool, rsc: &str, nr: u32, id: &str, size_kib: i64) -> Result<VolumeObserved, StorageError> {
        self.ensure_from(pool, rsc, nr, id, size_kib, None).await
    }

    pub async fn ensure_from(
        &self,
        pool: &LvmPool,
        rsc: &str,
        nr: u32,
        id: &str,
        size_kib: i64,
        source: Option<&str>,
    ) -> Result<VolumeObserved, StorageError> {
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
                let src = source.unwrap_or_default();
                self.clone_of(pool, &f, src, &name, &[&tag]).await?;
                if let Some(lv) = self.lvs(pool, &f).await?.into_iter().find(|l| l.name == name)
                    && lv.size_kib < size_kib
                {
                    self.run(self.cmd("lvresize").args([
                        "--config",
                        &f,
                        "--size",
                        &format!("{size_kib}k"),
                        &format!("{}/{name}", pool.vg),
                        "-f",
                    ]))
                    .await?;
                }
                planned(pool, &name, size_kib, &tag)
            }
            None => {
                let size = format!("{size_kib}k");
                let c = match &pool.thin_pool {
                    Some(tp) => self.cmd("lvcreate").args([
                        "--config",
                        &f,
                        "--virtualsize",
                        &size,
                        &pool.vg,
                        "--thinpool",
                        tp,
                        "--name",
                        &name,
                        "--addtag",
                        &tag,
                    ]),
                    None => self.cmd("lvcreate").args(["--config", &f, "--size", &size, &pool.vg, "-n", &name, "-y", "--addtag", &tag]),
                };
                self.run(c).await?;
                planned(pool, &name, size_kib, &tag)
            }
        };
        // Read back what LVM made (extent rounding).
        let now = self.lvs(pool, &f).await?.into_iter().find(|l| l.name == name).unwrap_or(lv);
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

    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/testdata/lvm/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn lvs_output_from_a_real_vm_parses() {
        let thick = parse_lvs(&fixture("lvs-thick.txt")).unwrap();
        assert_eq!(thick.len(), 2);
        assert_eq!((thick[0].name.as_str(), thick[0].size_kib), ("odd_00000", 12288), "10000k rounded up to 3 extents");
        assert_eq!(thick[1].path, "/dev/vg0/web_00000");
        assert!(thick[1].is_active());
        let thin = parse_lvs(&fixture("lvs-thin.txt")).unwrap();
        let db = thin.iter().find(|l| l.name == "db_00000").unwrap();
        assert_eq!((db.pool_lv.as_str(), db.data_percent, db.size_kib), ("thin", Some(20.0), 102_400));
        let pool = thin.iter().find(|l| l.name == "thin").unwrap();
        assert!(pool.attr.starts_with('t') && pool.path.is_empty());
        assert!(parse_lvs("a;b;c\n").is_err());
        assert!(parse_lvs("").unwrap().is_empty());
    }

    #[test]
    fn vgs_output_gives_thick_and_thin_capacity() {
        let c = parse_vgs(&fixture("vgs-thick.txt"), "vg0", None).unwrap();
        assert_eq!(c, LvmCapacity { total_kib: 2_093_056, free_kib: 2_015_232, extent_kib: 4096 });
        let t = parse_vgs(&fixture("vgs-thin.txt"), "vgt", Some("thin")).unwrap();
        assert_eq!(t.total_kib, 2_084_864);
        assert_eq!(t.free_kib, (2_084_864.0 * (100.0 - 0.98) / 100.0_f64).floor() as i64);
        assert!(parse_vgs(&fixture("vgs-thin.txt"), "vgt", Some("nope")).is_err());
        assert!(parse_vgs(&fixture("vgs-thick.txt"), "other", None).is_err());
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

    fn pvdisplay(f: &FakeRunner, vg: &str, out: &str) {
        f.expect(
            &[
                "pvdisplay",
                "--config",
                "devices { filter=[\"r|^/dev/drbd.*|\"] }",
                "--columns",
                "-o",
                "pv_name",
                "-S",
                &format!("vg_name={vg}"),
                "--noheadings",
                "--nosuffix",
            ],
            out,
        );
    }

    const F: &str = "devices { filter=['a|/dev/vda|','r|.*|'] }";

    fn lvs_cmd(vg: &str) -> Vec<String> {
        ["lvs", "--config", F, "-o", LVS_FIELDS, "--separator", ";", "--noheadings", "--units", "k", "--nosuffix", vg]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// A fake runner, LVM on it, a pool in vg0 and vg0's `lvs` command.
    fn on_vg0(name: &str, backing: &str, thin: bool) -> (Arc<FakeRunner>, Lvm, LvmPool, Vec<String>) {
        let f = Arc::new(FakeRunner::new());
        let lvm = Lvm::new(f.clone(), Duration::from_secs(5));
        (f, lvm, LvmPool::new(name, backing, thin).unwrap(), lvs_cmd("vg0"))
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn create_grow_and_delete_use_linstors_command_lines() {
        let (f, lvm, pool, lvs) = on_vg0("lvm", "vg0", false);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        pvdisplay(&f, "vg0", "  /dev/vda  \n");
        f.expect(&l, "")
            .expect(&["lvcreate", "--config", F, "--size", "65536k", "vg0", "-n", "web_00000", "-y", "--addtag", "cairn_vid_abc123"], "")
            .expect(&l, "  web_00000;/dev/vg0/web_00000;65536.00;vg0;;;-wi-a-----;;0;1;cairn_vid_abc123\n");
        let o = rt().block_on(lvm.ensure(&pool, "web", 0, "abc123", 65536)).unwrap();
        assert_eq!(o.device_path.as_deref(), Some("/dev/vg0/web_00000"));
        assert_eq!((o.usable_kib, o.allocated_kib), (Some(65536), Some(65536)));
        assert!(f.is_done(), "{:?}", f.calls());
        // Grow.
        pvdisplay(&f, "vg0", "  /dev/vda  \n");
        f.expect(&l, "  web_00000;/dev/vg0/web_00000;65536.00;vg0;;;-wi-a-----;;0;1;cairn_vid_abc123\n")
            .expect(&["lvresize", "--config", F, "--size", "70000k", "vg0/web_00000", "-f"], "")
            .expect(&l, "  web_00000;/dev/vg0/web_00000;73728.00;vg0;;;-wi-a-----;;0;1;cairn_vid_abc123\n");
        let o = rt().block_on(lvm.ensure(&pool, "web", 0, "abc123", 70000)).unwrap();
        assert_eq!(o.usable_kib, Some(73728), "rounded to whole extents");
        assert!(f.is_done(), "{:?}", f.calls());
        // Delete: quick wipe, then lvremove.
        pvdisplay(&f, "vg0", "  /dev/vda  \n");
        f.expect(&l, "  web_00000;/dev/vg0/web_00000;73728.00;vg0;;;-wi-a-----;;0;1;cairn_vid_abc123\n  webx_00000;/dev/vg0/webx_00000;4096.00;vg0;;;-wi-a-----;;0;1;\n")
            .expect(&["wipefs", "-a", "-f", "/dev/vg0/web_00000"], "")
            .expect(&["lvremove", "--config", F, "-f", "vg0/web_00000"], "");
        rt().block_on(lvm.remove(&pool, "web")).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn thin_volumes_and_an_earlier_incarnation() {
        let (f, lvm, pool, lvs) = on_vg0("thin", "vg0/thin", true);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        pvdisplay(&f, "vg0", "  /dev/vda\n");
        f.expect(&l, "  db_00000;/dev/vg0/db_00000;102400.00;vg0;thin;20.00;Vwi-a-tz--;;0;0;cairn_vid_old\n")
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
            .expect(&l, "  db_00000;/dev/vg0/db_00000;102400.00;vg0;thin;0.00;Vwi-a-tz--;;0;0;cairn_vid_new\n");
        let o = rt().block_on(lvm.ensure(&pool, "db", 0, "new", 102_400)).unwrap();
        assert_eq!(o.allocated_kib, Some(0), "a new thin volume allocates nothing");
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn allocated_sizes_come_from_one_lvs_of_the_thin_pool() {
        let (f, lvm, pool, lvs) = on_vg0("thin", "vg0/thin", true);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        pvdisplay(&f, "vg0", "  /dev/vda\n");
        f.expect(
            &l,
            "  thin;/dev/vg0/thin;1048576.00;vg0;;3.10;twi-aotz--;1.20;64.00k;1;\n\
             \x20 db_00000;/dev/vg0/db_00000;102400.00;vg0;thin;25.00;Vwi-a-tz--;;0;0;cairn_vid_a\n\
             \x20 db_00000_s1;/dev/vg0/db_00000_s1;102400.00;vg0;thin;12.50;Vri---tz-k;;0;0;cairn_snap\n\
             \x20 web_00001;/dev/vg0/web_00001;4096.00;vg0;thin;0.00;Vwi-a-tz--;;0;0;cairn_vid_b\n",
        );
        let a = rt().block_on(lvm.allocated(&pool)).unwrap();
        assert_eq!(a, [(("db".to_string(), 0), 25_600), (("web".to_string(), 1), 0)].into());
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
        let (f, lvm, pool, lvs) = on_vg0("thin", "vg0/thin", true);
        let l: Vec<&str> = lvs.iter().map(String::as_str).collect();
        let listing = "  db_00000;/dev/vg0/db_00000;4096.00;vg0;thin;1.00;Vwi-a-tz--;;0;0;cairn_vid_v1\n  db_00000_s1;/dev/vg0/db_00000_s1;4096.00;vg0;thin;1.00;Vri---tz-k;;0;0;cairn_snap\n  db_00000_fake;/dev/vg0/db_00000_fake;4096.00;vg0;thin;1.00;Vwi-a-tz--;;0;0;\n";
        pvdisplay(&f, "vg0", "  /dev/vda\n");
        f.expect(&l, listing);
        assert!(rt().block_on(lvm.needs_rollback(&pool, "db", 0, "s1", "r1")).unwrap());
        pvdisplay(&f, "vg0", "  /dev/vda\n");
        f.expect(&l, listing);
        let snaps = rt().block_on(lvm.snapshots(&pool, "db")).unwrap();
        assert_eq!(snaps.keys().collect::<Vec<_>>(), ["s1"], "an untagged look-alike is no snapshot");
        pvdisplay(&f, "vg0", "  /dev/vda\n");
        f.expect(&["lvrename", "--config", F, "vg0", "db_00000", "db_00000-rollback-r1"], "")
            .expect(&clone_cmd("cairn_rb_r1"), "")
            .expect(&["lvchange", "--config", F, "-ay", "-K", "vg0/db_00000"], "")
            .expect(&["lvremove", "--config", F, "-f", "vg0/db_00000-rollback-r1"], "");
        rt().block_on(lvm.rollback(&pool, "db", 0, "v1", "s1", "r1")).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // A failed copy puts the volume back.
        pvdisplay(&f, "vg0", "  /dev/vda\n");
        f.expect(&["lvrename", "--config", F, "vg0", "db_00000", "db_00000-rollback-r2"], "")
            .expect_failure(&clone_cmd("cairn_rb_r2"), 5, "no space")
            .expect(&["lvrename", "--config", F, "vg0", "db_00000-rollback-r2", "db_00000"], "");
        assert!(rt().block_on(lvm.rollback(&pool, "db", 0, "v1", "s1", "r2")).is_err());
        assert!(f.is_done(), "{:?}", f.calls());
    }
}
