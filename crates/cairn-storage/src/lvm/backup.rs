//! What backups need of LVM_THIN: a snapshot's device to read (activated
//! for the read, as LINSTOR's LvmThinProvider does before it ships), the
//! byte ranges that differ between two snapshots (from the thin pool's
//! metadata with `thin_delta`), and a thin volume to restore a snapshot
//! into.

use std::collections::BTreeMap;

use quick_xml::events::Event;
use serde::Deserialize;

use super::{Lvm, LvmPool, SNAP_TAG, lv_name, report};
use crate::{StorageError, safe_name};

/// Tag of a thin volume a restore is writing: it becomes a snapshot
/// (tag [`SNAP_TAG`], read-only) only when complete.
pub const RECEIVING_TAG: &str = "cairn_receiving";

#[derive(Deserialize)]
struct ThinIdSection {
    lv: Vec<ThinIdRow>,
}

#[derive(Deserialize)]
struct ThinIdRow {
    lv_name: String,
    thin_id: String,
}

/// Decodes `lvs -o lv_name,thin_id --reportformat json`: LV -> thin id
/// (the device id inside the thin pool's metadata).
pub fn parse_thin_ids(out: &str) -> Result<BTreeMap<String, u64>, StorageError> {
    let mut ids = BTreeMap::new();
    for row in report::<ThinIdSection>("lvs", out)?.into_iter().flat_map(|s| s.lv) {
        let id = row.thin_id.trim().parse::<u64>().map_err(|_| StorageError::Output {
            program: "lvs",
            detail: format!("'{}' is not the thin id of {}", row.thin_id, row.lv_name),
        })?;
        ids.insert(row.lv_name, id);
    }
    Ok(ids)
}

/// Decodes `thin_delta -m` (thin-provisioning-tools): the byte ranges
/// `(offset, length)` where the second device differs from the first
/// (`different`, `left_only`, `right_only`; `same` is left out), merged
/// where they touch. Blocks are the pool's data blocks
/// (`data_block_size`, 512-byte sectors).
pub fn parse_thin_delta(xml: &str) -> Result<Vec<(u64, u64)>, StorageError> {
    let bad = |detail: String| StorageError::Output { program: "thin_delta", detail };
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut block: Option<u64> = None;
    let mut diff = false;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    loop {
        let event = reader.read_event().map_err(|e| bad(format!("not XML: {e}")))?;
        let (e, empty) = match event {
            Event::Eof => break,
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            _ => continue,
        };
        let attr = |name: &str| -> Result<Option<u64>, StorageError> {
            let Some(a) = e.try_get_attribute(name).map_err(|x| bad(format!("bad attribute: {x}")))? else { return Ok(None) };
            let v = a.unescape_value().map_err(|x| bad(format!("bad attribute {name}: {x}")))?;
            v.trim().parse::<u64>().map(Some).map_err(|_| bad(format!("{name}=\"{v}\" is not a number")))
        };
        match e.local_name().as_ref() {
            b"superblock" => {
                let sectors = attr("data_block_size")?.filter(|s| *s > 0).ok_or_else(|| bad("no data_block_size".into()))?;
                block = Some(sectors * 512);
            }
            b"diff" => diff = !empty,
            b"different" | b"left_only" | b"right_only" => {
                let Some(block) = block else { return Err(bad("a range before the superblock".into())) };
                let (Some(begin), Some(length)) = (attr("begin")?, attr("length")?) else {
                    return Err(bad("a range without begin or length".into()));
                };
                let (off, len) = (begin * block, length * block);
                match ranges.last_mut() {
                    Some((o, l)) if *o + *l == off => *l += len,
                    _ => ranges.push((off, len)),
                }
            }
            b"same" => {}
            other => return Err(bad(format!("unexpected element <{}>", String::from_utf8_lossy(other)))),
        }
    }
    if block.is_none() || !diff && !ranges.is_empty() {
        return Err(bad("no superblock or diff".into()));
    }
    Ok(ranges)
}

/// The device-mapper name of `vg/lv` (each '-' doubled, then joined by '-').
fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// The LV of snapshot `snap` of volume `nr` of `rsc`.
fn snap_lv(rsc: &str, nr: u32, snap: &str) -> Result<String, StorageError> {
    Ok(format!("{}_{}", lv_name(rsc, nr)?, safe_name(snap)?))
}

impl Lvm {
    fn thin_pool<'a>(&self, pool: &'a LvmPool) -> Result<&'a str, StorageError> {
        pool.thin_pool.as_deref().ok_or_else(|| StorageError::BadBacking(format!("pool '{}' is not a thin pool", pool.name)))
    }

    /// Activates the snapshot LV for reading (`lvchange -ay -K`: Cairn's
    /// snapshots skip activation) and answers its device and size in bytes.
    pub async fn snapshot_open(&self, pool: &LvmPool, rsc: &str, nr: u32, snap: &str) -> Result<(String, u64), StorageError> {
        let name = snap_lv(rsc, nr, snap)?;
        let f = self.filter(pool).await?;
        if !self.lvs(pool, &f).await?.iter().any(|l| l.name == name && l.tags.iter().any(|t| t == SNAP_TAG)) {
            return Err(StorageError::Missing(format!("snapshot '{snap}' of volume {nr} of '{rsc}' is not in pool '{}'", pool.name)));
        }
        self.run(self.cmd("lvchange").args(["--config", &f, "-ay", "-K", &format!("{}/{name}", pool.vg)])).await?;
        let dev = format!("/dev/{}/{name}", pool.vg);
        let bytes = self.run(self.cmd("blockdev").args(["--getsize64", &dev])).await?;
        let size =
            bytes.trim().parse::<u64>().map_err(|e| StorageError::Output { program: "blockdev", detail: format!("{e}: {bytes:?}") })?;
        Ok((dev, size))
    }

    /// Deactivates the snapshot LV again after a backup read it.
    pub async fn snapshot_close(&self, pool: &LvmPool, rsc: &str, nr: u32, snap: &str) -> Result<(), StorageError> {
        let name = snap_lv(rsc, nr, snap)?;
        let f = self.filter(pool).await?;
        self.run(self.cmd("lvchange").args(["--config", &f, "-an", &format!("{}/{name}", pool.vg)])).await?;
        Ok(())
    }

    /// The byte ranges where snapshot `snap` differs from snapshot `base`
    /// (both of volume `nr` of `rsc`), from the thin pool's metadata: a
    /// metadata snapshot is reserved, `thin_delta` reads it, and it is
    /// released whatever happened.
    pub async fn snapshot_changes(
        &self,
        pool: &LvmPool,
        rsc: &str,
        nr: u32,
        base: &str,
        snap: &str,
    ) -> Result<Vec<(u64, u64)>, StorageError> {
        let tp = self.thin_pool(pool)?;
        let (a, b) = (snap_lv(rsc, nr, base)?, snap_lv(rsc, nr, snap)?);
        let f = self.filter(pool).await?;
        let out = self
            .run(self.cmd("lvs").args([
                "--config",
                &f,
                "-o",
                "lv_name,thin_id",
                "--reportformat",
                "json",
                &format!("{}/{a}", pool.vg),
                &format!("{}/{b}", pool.vg),
            ]))
            .await?;
        let ids = parse_thin_ids(&out)?;
        let id = |lv: &str| ids.get(lv).copied().ok_or_else(|| StorageError::Missing(format!("no thin id for {}/{lv}", pool.vg)));
        let (ia, ib) = (id(&a)?, id(&b)?);
        let dm = dm_name(&pool.vg, tp);
        let message = |what: &str| self.cmd("dmsetup").args(["message", &format!("{dm}-tpool"), "0", what]);
        if let Err(e) = self.run(message("reserve_metadata_snap")).await {
            // One left reserved (a satellite that died in between) is
            // released, then reserved anew.
            tracing::warn!(pool = %pool.name, "reserving a metadata snapshot failed ({e}); releasing a stale one");
            self.run(message("release_metadata_snap")).await?;
            self.run(message("reserve_metadata_snap")).await?;
        }
        let delta = self
            .run(self.cmd("thin_delta").args([
                "-m".to_string(),
                "--snap1".to_string(),
                ia.to_string(),
                "--snap2".to_string(),
                ib.to_string(),
                format!("/dev/mapper/{dm}_tmeta"),
            ]))
            .await;
        let released = self.run(message("release_metadata_snap")).await;
        let xml = delta?;
        released?;
        parse_thin_delta(&xml)
    }

    /// A new thin volume of `size` bytes to restore snapshot `snap` of
    /// volume `nr` of `rsc` into, tagged as being received; one left by a
    /// failed restore is removed first. Answers its device.
    pub async fn receive_create(&self, pool: &LvmPool, rsc: &str, nr: u32, snap: &str, size: u64) -> Result<String, StorageError> {
        let tp = self.thin_pool(pool)?;
        let name = snap_lv(rsc, nr, snap)?;
        let f = self.filter(pool).await?;
        if let Some(old) = self.lvs(pool, &f).await?.into_iter().find(|l| l.name == name) {
            if !old.tags.iter().any(|t| t == RECEIVING_TAG) {
                return Err(StorageError::BadBacking(format!("{}/{name} exists already", pool.vg)));
            }
            self.run(self.cmd("lvremove").args(["--config", &f, "-f", &format!("{}/{name}", pool.vg)])).await?;
        }
        let kib = size.div_ceil(1024);
        self.run(self.thin_create(&f, &pool.vg, tp, &format!("{kib}k"), &name, RECEIVING_TAG)).await?;
        Ok(format!("/dev/{}/{name}", pool.vg))
    }

    /// Whether snapshot `snap` of volume `nr` of `rsc` can be received
    /// here (a shipment from another cluster): no such LV yet (one left
    /// tagged as receiving goes when the receive starts), and for an
    /// incremental the base snapshot exists.
    pub async fn receive_check(&self, pool: &LvmPool, rsc: &str, nr: u32, snap: &str, base: Option<&str>) -> Result<(), StorageError> {
        self.thin_pool(pool)?;
        let name = snap_lv(rsc, nr, snap)?;
        let f = self.filter(pool).await?;
        let lvs = self.lvs(pool, &f).await?;
        if lvs.iter().any(|l| l.name == name && !l.tags.iter().any(|t| t == RECEIVING_TAG)) {
            return Err(StorageError::BadBacking(format!("{}/{name} exists already", pool.vg)));
        }
        if let Some(b) = base {
            let from = snap_lv(rsc, nr, b)?;
            if !lvs.iter().any(|l| l.name == from && l.tags.iter().any(|t| t == SNAP_TAG)) {
                return Err(StorageError::Missing(format!("the base snapshot {}/{from} is not in pool '{}'", pool.vg, pool.name)));
            }
        }
        Ok(())
    }

    /// A thin volume to receive snapshot `snap` of volume `nr` of `rsc`
    /// into, tagged as being received: for an incremental a writable thin
    /// snapshot of the base snapshot (the blocks that did not change stay
    /// shared; grown to `size` bytes when the volume grew since), else a
    /// new one of `size` bytes. One left by a failed
    /// receive is removed first. Answers its device, active.
    pub async fn receive_create_on(
        &self,
        pool: &LvmPool,
        rsc: &str,
        nr: u32,
        snap: &str,
        base: Option<&str>,
        size: u64,
    ) -> Result<String, StorageError> {
        let Some(base) = base else { return self.receive_create(pool, rsc, nr, snap, size).await };
        self.receive_abandon(pool, rsc, nr, snap).await?;
        let name = snap_lv(rsc, nr, snap)?;
        let f = self.filter(pool).await?;
        self.clone_of(pool, &f, &snap_lv(rsc, nr, base)?, &name, &[RECEIVING_TAG]).await?;
        // A volume that grew since its base arrives with its new size:
        // the copy of the base grows to it before the chunks are written
        // (the part past the base's end reads as zeros until written).
        let kib = i64::try_from(size.div_ceil(1024)).map_err(|_| StorageError::BadBacking(format!("a volume of {size} bytes")))?;
        self.grow_copy(pool, &f, &name, kib).await?;
        Ok(format!("/dev/{}/{name}", pool.vg))
    }

    /// Deactivates a received volume: it waits, tagged as receiving, until
    /// [`Lvm::adopt_received`] makes it the snapshot.
    pub async fn receive_park(&self, pool: &LvmPool, rsc: &str, nr: u32, snap: &str) -> Result<(), StorageError> {
        let name = format!("{}/{}", pool.vg, snap_lv(rsc, nr, snap)?);
        let f = self.filter(pool).await?;
        self.run(self.cmd("lvchange").args(["--config", &f, "-an", &name])).await?;
        Ok(())
    }

    /// A volume received from another cluster becomes snapshot `snap`
    /// once the controller registered it (it is desired): true when there
    /// was one.
    pub async fn adopt_received(&self, pool: &LvmPool, rsc: &str, nr: u32, snap: &str) -> Result<bool, StorageError> {
        let name = snap_lv(rsc, nr, snap)?;
        let f = self.filter(pool).await?;
        if !self.lvs(pool, &f).await?.iter().any(|l| l.name == name && l.tags.iter().any(|t| t == RECEIVING_TAG)) {
            return Ok(false);
        }
        self.receive_done(pool, rsc, nr, snap).await?;
        self.receive_park(pool, rsc, nr, snap).await?;
        Ok(true)
    }

    /// Makes the received volume a snapshot as [`Lvm::create_snapshot`]
    /// makes them: read-only, skipped at activation, tagged.
    pub async fn receive_done(&self, pool: &LvmPool, rsc: &str, nr: u32, snap: &str) -> Result<(), StorageError> {
        let name = format!("{}/{}", pool.vg, snap_lv(rsc, nr, snap)?);
        let f = self.filter(pool).await?;
        self.run(self.cmd("lvchange").args(["--config", &f, "-pr", &name])).await?;
        self.run(self.cmd("lvchange").args(["--config", &f, "--setactivationskip", "y", &name])).await?;
        self.run(self.cmd("lvchange").args(["--config", &f, "--addtag", SNAP_TAG, "--deltag", RECEIVING_TAG, &name])).await?;
        Ok(())
    }

    /// Removes a volume a restore did not complete (only one tagged so).
    pub async fn receive_abandon(&self, pool: &LvmPool, rsc: &str, nr: u32, snap: &str) -> Result<(), StorageError> {
        let name = snap_lv(rsc, nr, snap)?;
        let f = self.filter(pool).await?;
        if self.lvs(pool, &f).await?.iter().any(|l| l.name == name && l.tags.iter().any(|t| t == RECEIVING_TAG)) {
            self.run(self.cmd("lvremove").args(["--config", &f, "-f", &format!("{}/{name}", pool.vg)])).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured in the test VM by tests/vm/capture_thin_delta.py.
    const THIN_IDS: &str = include_str!("../../testdata/lvm/lvs-thin-id.json");
    const DELTA: &str = include_str!("../../testdata/lvm/thin-delta.xml");
    const DELTA_SAME: &str = include_str!("../../testdata/lvm/thin-delta-same.xml");

    #[test]
    fn thin_ids_come_from_the_lvs_report() {
        let ids = parse_thin_ids(THIN_IDS).expect("parses");
        assert_eq!(ids.keys().collect::<Vec<_>>(), ["db_00000_s1", "db_00000_s2"]);
        assert_ne!(ids["db_00000_s1"], ids["db_00000_s2"]);
        assert!(parse_thin_ids(r#"{"report":[{"lv":[{"lv_name":"x","thin_id":""}]}]}"#).is_err());
        assert!(parse_thin_ids("no json").is_err());
    }

    #[test]
    fn thin_delta_gives_the_changed_byte_ranges() {
        const MIB: u64 = 1 << 20;
        let ranges = parse_thin_delta(DELTA).expect("parses");
        // The capture overwrote 1 MiB at 2 MiB, discarded 1 MiB at 6 MiB,
        // wrote 1 MiB at 20 MiB and 64 KiB at 40 MiB.
        let covers = |off: u64, len: u64| ranges.iter().any(|(o, l)| *o <= off && off + len <= o + l);
        for (off, len) in [(2 * MIB, MIB), (6 * MIB, MIB), (20 * MIB, MIB), (40 * MIB, 64 << 10)] {
            assert!(covers(off, len), "{off}+{len} not in {ranges:?}");
        }
        let total: u64 = ranges.iter().map(|(_, l)| l).sum();
        assert!(total <= 4 * MIB, "only what changed: {ranges:?}");
        // Nothing else: 1 MiB at 0 was written before s1 only.
        assert!(!covers(0, 4096) && !covers(4 * MIB, 4096), "{ranges:?}");
        assert_eq!(parse_thin_delta(DELTA_SAME).expect("parses"), vec![]);
    }

    #[test]
    fn thin_delta_output_that_is_not_a_delta_is_an_output_error() {
        for bad in [
            "",
            "garbage",
            "<superblock><diff><different begin=\"1\" length=\"2\"/></diff></superblock>",
            "<superblock data_block_size=\"128\"><diff><different begin=\"x\" length=\"2\"/></diff></superblock>",
            "<superblock data_block_size=\"128\"><diff><other/></diff></superblock>",
        ] {
            assert!(matches!(parse_thin_delta(bad), Err(StorageError::Output { program: "thin_delta", .. })), "{bad}");
        }
        let ok = "<superblock data_block_size=\"128\"><diff left=\"1\" right=\"2\">\
                  <different begin=\"1\" length=\"2\"/><right_only begin=\"3\" length=\"1\"/><same begin=\"4\" length=\"9\"/>\
                  <left_only begin=\"20\" length=\"1\"/></diff></superblock>";
        assert_eq!(parse_thin_delta(ok).expect("parses"), vec![(65536, 3 * 65536), (20 * 65536, 65536)]);
    }

    #[test]
    fn device_mapper_names_double_the_dashes() {
        assert_eq!(dm_name("linstor_thin", "thin"), "linstor_thin-thin");
        assert_eq!(dm_name("my-vg", "a-pool"), "my--vg-a--pool");
    }
}
