//! A resource's wire form (`ResourceWithVolumes`), serialised straight
//! from the domain objects and what satellites reported, without building
//! the owned `cairn_api::resource` structs first.
//!
//! A full `GET /v1/view/resources` writes every resource of the cluster;
//! building and dropping the owned structs (a `String` for every name, path
//! and flag) was about half of that list's time (issue 16). [`ResourceJson`]
//! borrows everything and writes the same members in the same order as
//! [`Resource::to_api`] does, so the bytes are those clients already parse;
//! a unit test compares the two.

use std::fmt;

use cairn_api::rc::ApiCallRc;
use cairn_proto::{DrbdConnectionObserved, DrbdObserved, DrbdVolumeObserved};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

use crate::resource::{Resource, Volume, VolumeObserved};

/// What a satellite reported about one volume, borrowed (the borrowing
/// twin of [`crate::resource::VolumeObserved`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct VolumeSeen<'a> {
    pub device_path: Option<&'a str>,
    pub allocated_size_kib: Option<i64>,
    pub usable_size_kib: Option<i64>,
    pub disk_state: Option<&'a str>,
    /// The opened LUKS device, when the stack has LUKS.
    pub luks_device_path: Option<&'a str>,
    /// The sealed LUKS key does not open with the master key.
    pub luks_corrupted_key: bool,
}

impl VolumeSeen<'_> {
    /// The owned form [`Resource::to_api`] takes.
    pub fn to_owned(&self) -> VolumeObserved {
        VolumeObserved {
            device_path: self.device_path.map(str::to_string),
            allocated_size_kib: self.allocated_size_kib,
            usable_size_kib: self.usable_size_kib,
            disk_state: self.disk_state.map(str::to_string),
            luks_device_path: self.luks_device_path.map(str::to_string),
            luks_corrupted_key: self.luks_corrupted_key,
        }
    }
}

/// One volume with what was reported of it and its DRBD minor.
struct Vol<'a> {
    v: &'a Volume,
    seen: VolumeSeen<'a>,
    minor: Option<u32>,
    drbd: Option<&'a DrbdVolumeObserved>,
}

/// A resource as `GET /v1/view/resources` shows it (see the module).
pub struct ResourceJson<'a> {
    r: &'a Resource,
    vols: Vec<Vol<'a>>,
    has_drbd: bool,
    drbd: Option<&'a DrbdObserved>,
    in_use: Option<bool>,
    report: Option<&'a ApiCallRc>,
}

impl<'a> ResourceJson<'a> {
    /// The same inputs as [`Resource::to_api`], borrowed; `report` is what
    /// the satellite could not do, shown with every volume.
    pub fn new(
        r: &'a Resource,
        observed: impl Fn(u32) -> Option<VolumeSeen<'a>>,
        minor: impl Fn(u32) -> Option<u32>,
        in_use: Option<bool>,
        drbd: Option<&'a DrbdObserved>,
        report: Option<&'a ApiCallRc>,
    ) -> ResourceJson<'a> {
        let has_drbd = r.has_drbd();
        let drbd = drbd.filter(|_| has_drbd);
        let vols = r
            .volumes
            .values()
            .map(|v| {
                let nr = v.volume_number;
                let dv = drbd.and_then(|d| d.volumes.iter().find(|x| x.number == nr));
                Vol { v, seen: observed(nr).unwrap_or_default(), minor: minor(nr), drbd: dv }
            })
            .collect();
        ResourceJson { r, vols, has_drbd, drbd, in_use, report }
    }
}

/// Writes `"/dev/drbd<minor>"` without a `String`.
struct DrbdDevice(u32);

impl Serialize for DrbdDevice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("/dev/drbd{}", self.0))
    }
}

/// A JSON array of the items `f` yields.
struct Seq<F>(F);

impl<I: Serialize, It: Iterator<Item = I>, F: Fn() -> It> Serialize for Seq<F> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

/// Sorted by name with the last of equal names kept, as collecting into a
/// `BTreeMap` does.
fn by_name<'x, T>(items: impl Iterator<Item = (&'x str, T)>) -> Vec<(&'x str, T)> {
    let mut v: Vec<(&str, T)> = items.collect();
    // Stable: equal names keep their order, and the last one wins below.
    v.sort_by(|a, b| a.0.cmp(b.0));
    let mut out: Vec<(&str, T)> = Vec::with_capacity(v.len());
    for item in v {
        match out.last_mut() {
            Some(last) if last.0 == item.0 => *last = item,
            _ => out.push(item),
        }
    }
    out
}

/// Map entries in the order given.
struct Entries<'x, T>(Vec<(&'x str, T)>);

impl<T: Serialize> Serialize for Entries<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl Serialize for ResourceJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.r;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &r.resource_definition)?;
        m.serialize_entry("node_name", &r.node)?;
        m.serialize_entry("props", &r.props)?;
        m.serialize_entry("flags", &r.flags)?;
        m.serialize_entry("layer_object", &Layer { rj: self, depth: 0 })?;
        // See `Resource::to_api`: DRBD knows whether the device is open.
        let in_use = match self.drbd {
            Some(d) if d.kernel => Some(d.role == "Primary"),
            _ => self.in_use,
        };
        m.serialize_entry("state", &ResourceState(in_use))?;
        m.serialize_entry("uuid", &r.uuid)?;
        m.serialize_entry("create_timestamp", &r.create_timestamp)?;
        m.serialize_entry("volumes", &Seq(|| self.vols.iter().map(|v| VolumeJson { rj: self, v })))?;
        m.end()
    }
}

struct ResourceState(Option<bool>);

impl Serialize for ResourceState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(u) = self.0 {
            m.serialize_entry("in_use", &u)?;
        }
        m.end()
    }
}

/// One node of the layer tree, `depth` into the stack.
struct Layer<'r, 'a> {
    rj: &'r ResourceJson<'a>,
    depth: usize,
}

impl Serialize for Layer<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let rj = self.rj;
        let kind = rj.r.layer_stack.get(self.depth).map_or("STORAGE", String::as_str);
        let mut m = s.serialize_map(None)?;
        if kind == "STORAGE" {
            m.serialize_entry("children", &[(); 0])?;
        } else {
            m.serialize_entry("children", &[Layer { rj, depth: self.depth + 1 }])?;
        }
        m.serialize_entry("resource_name_suffix", "")?;
        m.serialize_entry("type", kind)?;
        match kind {
            "STORAGE" => {
                m.serialize_entry("storage", &LayerVolumes { key: "storage_volumes", rj, item: StorageVolume })?;
            }
            "DRBD" => m.serialize_entry("drbd", &DrbdResource(rj))?,
            "LUKS" => m.serialize_entry("luks", &LayerVolumes { key: "luks_volumes", rj, item: LuksVolume })?,
            _ => {}
        }
        m.end()
    }
}

/// `{"<key>": [...]}`: the volumes of a STORAGE or LUKS layer object,
/// each as `item` writes it.
struct LayerVolumes<'r, 'a, T> {
    key: &'static str,
    rj: &'r ResourceJson<'a>,
    item: fn(&'r Vol<'a>) -> T,
}

impl<'r, 'a, T: Serialize> Serialize for LayerVolumes<'r, 'a, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry(self.key, &Seq(|| self.rj.vols.iter().map(self.item)))?;
        m.end()
    }
}

struct StorageVolume<'v, 'a>(&'v Vol<'a>);

impl Serialize for StorageVolume<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = &self.0.seen;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("volume_number", &i64::from(self.0.v.volume_number))?;
        opt(&mut m, "device_path", o.device_path)?;
        opt(&mut m, "allocated_size_kib", o.allocated_size_kib)?;
        opt(&mut m, "usable_size_kib", o.usable_size_kib)?;
        opt(&mut m, "disk_state", o.disk_state)?;
        m.end()
    }
}

struct LuksVolume<'v, 'a>(&'v Vol<'a>);

impl Serialize for LuksVolume<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = &self.0.seen;
        let mut m = s.serialize_map(None)?;
        opt(&mut m, "allocated_size_kib", o.allocated_size_kib)?;
        opt(&mut m, "backing_device", o.device_path)?;
        m.serialize_entry("corrupted_key", &o.luks_corrupted_key)?;
        opt(&mut m, "device_path", o.luks_device_path)?;
        opt(&mut m, "disk_state", o.disk_state)?;
        m.serialize_entry("opened", &o.luks_device_path.is_some())?;
        // LUKS2's header takes 16 MiB of the backing device.
        opt(&mut m, "usable_size_kib", o.usable_size_kib.map(|s| (s - 16 * 1024).max(0)))?;
        m.serialize_entry("volume_number", &i64::from(self.0.v.volume_number))?;
        m.end()
    }
}

/// A DRBD volume as the layer tree and a volume's layer data show it.
struct DrbdVolume<'r, 'v, 'a> {
    rj: &'r ResourceJson<'a>,
    v: &'v Vol<'a>,
    minor: u32,
}

impl Serialize for DrbdVolume<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = &self.v.seen;
        let backing = o.device_path.filter(|_| !self.rj.r.is_diskless());
        let mut m = s.serialize_map(None)?;
        opt(&mut m, "allocated_size_kib", o.allocated_size_kib)?;
        opt(&mut m, "backing_device", backing)?;
        m.serialize_entry("device_path", &DrbdDevice(self.minor))?;
        opt(&mut m, "disk_state", self.v.drbd.map(|d| d.disk.as_str()))?;
        m.serialize_entry("drbd_volume_definition", &DrbdVolumeDefinition(self.minor, self.v.v.volume_number))?;
        opt(&mut m, "meta_disk", backing.map(|_| "internal"))?;
        opt(&mut m, "usable_size_kib", self.v.drbd.and_then(|d| d.size_kib))?;
        m.end()
    }
}

struct DrbdVolumeDefinition(u32, u32);

impl Serialize for DrbdVolumeDefinition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("minor_number", &i64::from(self.0))?;
        m.serialize_entry("volume_number", &i64::from(self.1))?;
        m.end()
    }
}

struct DrbdResource<'r, 'a>(&'r ResourceJson<'a>);

impl Serialize for DrbdResource<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let rj = self.0;
        let r = rj.r;
        let numbers = r.drbd;
        let mut m = s.serialize_map(None)?;
        opt(&mut m, "al_size", numbers.map(|_| 32i64))?;
        opt(&mut m, "al_stripes", numbers.map(|_| 1i64))?;
        let connections = by_name(rj.drbd.into_iter().flat_map(|d| d.connections.iter()).map(|c| (c.peer.as_str(), c)));
        m.serialize_entry("connections", &Entries(connections.into_iter().map(|(k, c)| (k, Connection(r, c))).collect()))?;
        m.serialize_entry("drbd_volumes", &Seq(|| rj.vols.iter().filter_map(|v| v.minor.map(|minor| DrbdVolume { rj, v, minor }))))?;
        let flags = [(r.is_diskless(), "DISKLESS"), (r.flags.contains("TIE_BREAKER"), "TIE_BREAKER"), (r.is_drbd_client(), "CLIENT")];
        m.serialize_entry("flags", &Seq(|| flags.iter().filter(|(on, _)| *on).map(|(_, f)| *f)))?;
        opt(&mut m, "may_promote", rj.drbd.and_then(|d| d.may_promote))?;
        opt(&mut m, "node_id", numbers.map(|d| i64::from(d.node_id)))?;
        opt(&mut m, "promotion_score", rj.drbd.and_then(|d| d.promotion_score))?;
        opt(&mut m, "tcp_ports", numbers.map(|d| [i64::from(d.tcp_port)]))?;
        m.end()
    }
}

/// One peer in `DrbdResource.connections`.
struct Connection<'a>(&'a Resource, &'a DrbdConnectionObserved);

impl Serialize for Connection<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (r, c) = (self.0, self.1);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("connected", &(c.connection == "Connected"))?;
        if c.split_brain {
            m.serialize_entry("message", &SplitBrain(&r.resource_definition, c))?;
        } else {
            m.serialize_entry("message", &c.connection)?;
        }
        m.end()
    }
}

struct SplitBrain<'a>(&'a str, &'a DrbdConnectionObserved);

impl Serialize for SplitBrain<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for SplitBrain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::resource::split_brain_message(f, self.1, self.0)
    }
}

struct VolumeJson<'r, 'v, 'a> {
    rj: &'r ResourceJson<'a>,
    v: &'v Vol<'a>,
}

impl Serialize for VolumeJson<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (rj, vol) = (self.rj, self.v);
        let (v, o) = (vol.v, &vol.seen);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("volume_number", &i64::from(v.volume_number))?;
        m.serialize_entry("storage_pool_name", &v.storage_pool)?;
        m.serialize_entry("provider_kind", v.provider_kind.as_str())?;
        let luks_on_top = rj.r.layer_stack.first().is_some_and(|l| l == "LUKS");
        let (disk_state, drbd_minor) = match (rj.has_drbd, vol.minor) {
            (true, Some(minor)) => (vol.drbd.map(|d| d.disk.as_str()).or(o.disk_state), Some(minor)),
            _ => (o.disk_state, None),
        };
        match drbd_minor {
            Some(minor) => m.serialize_entry("device_path", &DrbdDevice(minor))?,
            None => opt(&mut m, "device_path", if luks_on_top { o.luks_device_path } else { o.device_path })?,
        }
        opt(&mut m, "allocated_size_kib", o.allocated_size_kib)?;
        opt(&mut m, "usable_size_kib", o.usable_size_kib)?;
        m.serialize_entry("props", &v.props)?;
        m.serialize_entry("flags", &v.flags)?;
        m.serialize_entry("state", &VolumeState { disk_state, drbd: vol.drbd })?;
        m.serialize_entry("layer_data_list", &Seq(|| rj.r.layer_stack.iter().map(|l| VolumeLayer { rj, v: vol, kind: l })))?;
        m.serialize_entry("uuid", &v.uuid)?;
        m.serialize_entry("reports", &Reports(rj.report))?;
        m.end()
    }
}

struct Reports<'a>(Option<&'a ApiCallRc>);

impl Serialize for Reports<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(None)?;
        if let Some(r) = self.0 {
            q.serialize_element(r)?;
        }
        q.end()
    }
}

struct VolumeState<'a> {
    disk_state: Option<&'a str>,
    drbd: Option<&'a DrbdVolumeObserved>,
}

impl Serialize for VolumeState<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        opt(&mut m, "disk_state", self.disk_state)?;
        if let Some(d) = self.drbd.filter(|d| !d.peers.is_empty()) {
            let peers = by_name(d.peers.iter().map(|p| (p.peer.as_str(), p)));
            let states = peers.into_iter().map(|(k, p)| (k, ReplicationState(&p.replication, p.done))).collect();
            m.serialize_entry("replication_states", &Entries(states))?;
        }
        m.end()
    }
}

struct ReplicationState<'a>(&'a str, Option<f64>);

impl Serialize for ReplicationState<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("replication_state", self.0)?;
        opt(&mut m, "done_percentage", self.1)?;
        m.end()
    }
}

/// `{type, data}` in a volume's `layer_data_list`.
struct VolumeLayer<'r, 'v, 'a> {
    rj: &'r ResourceJson<'a>,
    v: &'v Vol<'a>,
    kind: &'a str,
}

impl Serialize for VolumeLayer<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", self.kind)?;
        match self.kind {
            "STORAGE" => m.serialize_entry("data", &StorageVolume(self.v))?,
            "LUKS" => m.serialize_entry("data", &LuksVolume(self.v))?,
            "DRBD" => {
                if let Some(minor) = self.v.minor {
                    m.serialize_entry("data", &DrbdVolume { rj: self.rj, v: self.v, minor })?;
                }
            }
            _ => {}
        }
        m.end()
    }
}

/// An optional member: absent when None, as `skip_serializing_if` does.
fn opt<M: SerializeMap, T: Serialize>(m: &mut M, k: &'static str, v: Option<T>) -> Result<(), M::Error> {
    match v {
        Some(v) => m.serialize_entry(k, &v),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::layer_data_as_before::{drbd_seen, minor, observed, resource};
    use cairn_proto::DrbdPeerVolumeObserved;

    fn seen(o: &VolumeObserved) -> VolumeSeen<'_> {
        VolumeSeen {
            device_path: o.device_path.as_deref(),
            allocated_size_kib: o.allocated_size_kib,
            usable_size_kib: o.usable_size_kib,
            disk_state: o.disk_state.as_deref(),
            luks_device_path: o.luks_device_path.as_deref(),
            luks_corrupted_key: o.luks_corrupted_key,
        }
    }

    /// The bytes [`ResourceJson`] writes are those of `to_api`'s structs
    /// (with `report` pushed to every volume, as the controller does).
    fn same(r: &Resource, drbd: Option<&DrbdObserved>, in_use: Option<bool>, report: Option<&ApiCallRc>) -> serde_json::Result<()> {
        let mut old = r.to_api(&observed, &minor, in_use, drbd);
        for v in &mut old.volumes {
            v.reports.extend(report.cloned());
        }
        let reported: Vec<Option<VolumeObserved>> = (0..3).map(observed).collect();
        let new = ResourceJson::new(r, |nr| reported.get(nr as usize).and_then(Option::as_ref).map(seen), minor, in_use, drbd, report);
        let (old, new) = (serde_json::to_string(&old)?, serde_json::to_string(&new)?);
        assert_eq!(new, old);
        Ok(())
    }

    #[test]
    fn writes_the_bytes_of_the_wire_structs() -> serde_json::Result<()> {
        let drbd = drbd_seen();
        let mut r = resource("n2", &[], false);
        r.props.insert("Aux/a\"b\\c".into(), "line\nnext é".into());
        r.flags.insert("INACTIVE".into());
        if let Some((_, v)) = r.volumes.iter_mut().next() {
            v.props.insert("Key".into(), "value".into());
            v.flags.insert("RESIZE".into());
        }
        let report = ApiCallRc::error(cairn_api::rc::MASK_VLM, cairn_api::rc::FAIL_UNKNOWN_ERROR, "lvcreate failed".to_string())
            .with_cause("no space".to_string())
            .with_details("vg full".to_string());
        for in_use in [None, Some(false)] {
            same(&r, Some(&drbd), in_use, None)?;
            same(&r, None, in_use, Some(&report))?;
        }
        // Not in the kernel: `in_use` is the satellite's.
        let mut config_only = drbd.clone();
        config_only.kernel = false;
        same(&r, Some(&config_only), Some(false), None)?;
        // Peers twice and out of order: sorted, the last one kept.
        let mut twice = drbd.clone();
        twice.connections.extend(drbd.connections.iter().cloned().map(|mut c| {
            c.connection = "Connecting".into();
            c
        }));
        if let Some(v) = twice.volumes.first_mut() {
            v.peers.push(DrbdPeerVolumeObserved {
                peer: "n1".into(),
                replication: "Established".into(),
                peer_disk: "UpToDate".into(),
                done: None,
            });
        }
        same(&r, Some(&twice), Some(false), None)?;
        same(&resource("n4", &["DISKLESS", "DRBD_DISKLESS", "TIE_BREAKER"], false), Some(&drbd), Some(false), None)?;
        same(&resource("n5", &["DISKLESS", "DRBD_DISKLESS"], true), Some(&drbd), Some(false), Some(&report))?;
        let mut no_numbers = resource("n6", &[], false);
        no_numbers.drbd = None;
        same(&no_numbers, Some(&drbd), None, None)?;
        // Without DRBD: LUKS on top, STORAGE alone, an unknown layer.
        for stack in [&["LUKS", "STORAGE"][..], &["STORAGE"], &["NVME", "STORAGE"], &["CACHE", "LUKS", "STORAGE"]] {
            let mut r = resource("n7", &[], false);
            r.layer_stack = stack.iter().map(|l| l.to_string()).collect();
            r.drbd = None;
            same(&r, Some(&drbd), Some(false), None)?;
            same(&r, None, None, Some(&report))?;
        }
        Ok(())
    }
}
