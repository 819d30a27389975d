//! DRBD metrics in the Prometheus text format, under the names, types,
//! labels and help texts of drbd-reactor's Prometheus plugin
//! (`src/plugin/prometheus.rs`, with `enums = true`), so dashboards and
//! alerts written for drbd-reactor read a Cairn satellite as they are.
//!
//! The input is `drbdsetup events2 --now --statistics all`: one `exists`
//! line per resource, connection, device and peer device, with the
//! counters. Units are converted as drbd-reactor does: KiB counters and
//! sizes to bytes, in-flight sectors (512 bytes) to bytes.

use std::collections::BTreeMap;
use std::fmt::Write;

/// drbd-reactor's `Role::iterator()`.
const ROLES: [&str; 3] = ["Unknown", "Primary", "Secondary"];
/// drbd-reactor's `ConnectionState::iterator()`.
const CONNECTION_STATES: [&str; 10] = [
    "StandAlone",
    "Disconnecting",
    "Unconnected",
    "Timeout",
    "BrokenPipe",
    "NetworkFailure",
    "ProtocolError",
    "TearDown",
    "Connecting",
    "Connected",
];
/// drbd-reactor's `DiskState::iterator()`.
const DISK_STATES: [&str; 10] =
    ["Diskless", "Attaching", "Detaching", "Failed", "Negotiating", "Inconsistent", "Outdated", "DUnknown", "Consistent", "UpToDate"];

/// A resource as the statistics snapshot shows it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Resource {
    pub role: String,
    pub suspended: bool,
    pub may_promote: bool,
    pub promotion_score: i64,
    pub force_io_failures: bool,
    /// By peer node id.
    pub connections: BTreeMap<u32, Connection>,
    /// By volume number.
    pub devices: BTreeMap<u32, Device>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Connection {
    pub conn_name: String,
    pub connection: String,
    pub congested: bool,
    /// 512-byte sectors.
    pub ap_in_flight: u64,
    pub rs_in_flight: u64,
    /// By volume number.
    pub peer_devices: BTreeMap<u32, PeerDevice>,
}

/// KiB counters of one volume towards one peer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PeerDevice {
    pub out_of_sync: u64,
    pub sent: u64,
    pub received: u64,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Device {
    pub minor: u32,
    pub disk: String,
    pub client: bool,
    pub quorum: bool,
    pub open: bool,
    /// KiB.
    pub size: u64,
    pub read: u64,
    pub written: u64,
    pub al_writes: u64,
    pub bm_writes: u64,
    pub upper_pending: u64,
    pub lower_pending: u64,
    pub al_suspended: bool,
}

/// drbd-reactor's reading of an events2 "bool": anything but `no` and
/// `false` is true (`suspended:user` is suspended).
fn truth(v: &str) -> bool {
    !(v == "no" || v == "false")
}

fn num<T: std::str::FromStr + Copy>(v: &str, old: T) -> T {
    v.parse().unwrap_or(old)
}

/// The resources of an `events2 --now --statistics` dump (a following
/// stream's `change` and `destroy` lines are applied too). Lines that are
/// not understood are skipped.
pub fn parse_snapshot(text: &str) -> BTreeMap<String, Resource> {
    let mut out: BTreeMap<String, Resource> = BTreeMap::new();
    for line in text.lines() {
        let Some((action, object, kv)) = super::events::event_line(line) else { continue };
        if !matches!(action, "exists" | "create" | "change" | "destroy") {
            continue;
        }
        let Some(name) = kv.get("name") else { continue };
        let volume = kv.get("volume").and_then(|v| v.parse::<u32>().ok());
        let peer = kv.get("peer-node-id").and_then(|v| v.parse::<u32>().ok());
        if action == "destroy" {
            match (object, out.get_mut(*name)) {
                ("resource", _) => {
                    out.remove(*name);
                }
                ("connection", Some(r)) => {
                    peer.map(|p| r.connections.remove(&p));
                }
                ("device", Some(r)) => {
                    volume.map(|v| r.devices.remove(&v));
                }
                ("peer-device", Some(r)) => {
                    if let (Some(p), Some(v)) = (peer, volume)
                        && let Some(c) = r.connections.get_mut(&p)
                    {
                        c.peer_devices.remove(&v);
                    }
                }
                _ => {}
            }
            continue;
        }
        let r = out.entry(name.to_string()).or_insert_with(|| Resource { role: "Unknown".into(), ..Default::default() });
        match object {
            "resource" => {
                for (k, v) in &kv {
                    match *k {
                        "role" => r.role = v.to_string(),
                        "suspended" => r.suspended = truth(v),
                        "may_promote" => r.may_promote = truth(v),
                        "promotion_score" => r.promotion_score = num(v, r.promotion_score),
                        "force-io-failures" => r.force_io_failures = truth(v),
                        _ => {}
                    }
                }
            }
            "connection" => {
                let Some(p) = peer else { continue };
                let c = r.connections.entry(p).or_default();
                for (k, v) in &kv {
                    match *k {
                        "conn-name" => c.conn_name = v.to_string(),
                        "connection" => c.connection = v.to_string(),
                        "congested" => c.congested = truth(v),
                        "ap-in-flight" => c.ap_in_flight = num(v, c.ap_in_flight),
                        "rs-in-flight" => c.rs_in_flight = num(v, c.rs_in_flight),
                        _ => {}
                    }
                }
            }
            "peer-device" => {
                let (Some(p), Some(vol)) = (peer, volume) else { continue };
                let c = r.connections.entry(p).or_default();
                if c.conn_name.is_empty()
                    && let Some(n) = kv.get("conn-name")
                {
                    c.conn_name = n.to_string();
                }
                let pd = c.peer_devices.entry(vol).or_default();
                for (k, v) in &kv {
                    match *k {
                        "out-of-sync" => pd.out_of_sync = num(v, pd.out_of_sync),
                        "sent" => pd.sent = num(v, pd.sent),
                        "received" => pd.received = num(v, pd.received),
                        _ => {}
                    }
                }
            }
            "device" => {
                let Some(vol) = volume else { continue };
                let d = r.devices.entry(vol).or_default();
                for (k, v) in &kv {
                    match *k {
                        "minor" => d.minor = num(v, d.minor),
                        "disk" => d.disk = v.to_string(),
                        "client" => d.client = truth(v),
                        "quorum" => d.quorum = truth(v),
                        "open" => d.open = truth(v),
                        "size" => d.size = num(v, d.size),
                        "read" => d.read = num(v, d.read),
                        "written" => d.written = num(v, d.written),
                        "al-writes" => d.al_writes = num(v, d.al_writes),
                        "bm-writes" => d.bm_writes = num(v, d.bm_writes),
                        "upper-pending" => d.upper_pending = num(v, d.upper_pending),
                        "lower-pending" => d.lower_pending = num(v, d.lower_pending),
                        "al-suspended" => d.al_suspended = truth(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Metric families in the order they are first written, each with its
/// `# TYPE` and `# HELP` lines once, then its samples.
#[derive(Default)]
struct Families {
    order: Vec<&'static str>,
    text: BTreeMap<&'static str, String>,
}

impl Families {
    fn family(&mut self, name: &'static str, kind: &str, help: &str) -> &mut String {
        if !self.text.contains_key(name) {
            self.order.push(name);
        }
        self.text.entry(name).or_insert_with(|| format!("# TYPE {name} {kind}\n# HELP {name} {help}\n"))
    }

    fn sample(&mut self, name: &'static str, kind: &str, help: &str, labels: &str, value: impl std::fmt::Display) {
        let f = self.family(name, kind, help);
        let _ = if labels.is_empty() { writeln!(f, "{name} {value}") } else { writeln!(f, "{name}{{{labels}}} {value}") };
    }

    fn gauge(&mut self, name: &'static str, help: &str, labels: &str, value: impl std::fmt::Display) {
        self.sample(name, "gauge", help, labels, value);
    }

    fn counter(&mut self, name: &'static str, help: &str, labels: &str, value: impl std::fmt::Display) {
        self.sample(name, "counter", help, labels, value);
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for name in self.order {
            if let Some(t) = self.text.get(name) {
                out.push_str(t);
            }
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The exposition (text format 0.0.4) of `resources`.
pub fn render(resources: &BTreeMap<String, Resource>) -> String {
    let mut m = Families::default();
    m.gauge("drbd_resource_resources", "Number of resources", "", resources.len());
    for (name, r) in resources {
        let name = esc(name);
        let rl = format!("name=\"{name}\"");
        for role in ROLES {
            let labels = format!("{rl},drbd_resource_role=\"{role}\"");
            m.gauge("drbd_resource_role", "DRBD role of the resource", &labels, u8::from(r.role == role));
        }
        m.gauge("drbd_resource_suspended", "Boolean whether the resource is suspended", &rl, u8::from(r.suspended));
        m.gauge("drbd_resource_maypromote", "Boolean whether the resource may be promoted to Primary", &rl, u8::from(r.may_promote));
        m.gauge("drbd_resource_promotionscore", "The promotion score (higher is better) for the resource", &rl, r.promotion_score);
        m.gauge(
            "drbd_resource_forceiofailures",
            "Boolean whether the resource is configured (could be temporarily) to force IO failures (e.g., during secondary --force)",
            &rl,
            u8::from(r.force_io_failures),
        );
        for (peer, c) in &r.connections {
            let common = format!("{rl},conn_name=\"{}\",peer_node_id=\"{peer}\"", esc(&c.conn_name));
            for state in CONNECTION_STATES {
                let labels = format!("{common},drbd_connection_state=\"{state}\"");
                m.gauge("drbd_connection_state", "DRBD connection state", &labels, u8::from(c.connection == state));
            }
            for (vol, pd) in &c.peer_devices {
                let labels = format!("{common},volume=\"{vol}\"");
                m.gauge(
                    "drbd_peerdevice_outofsync_bytes",
                    "Number of bytes currently out of sync with this peer, according to the bitmap that DRBD has for it",
                    &labels,
                    pd.out_of_sync.saturating_mul(1024),
                );
                m.counter(
                    "drbd_peerdevice_sent_bytes",
                    "Number of bytes currently sent to this peer",
                    &labels,
                    pd.sent.saturating_mul(1024),
                );
                m.counter(
                    "drbd_peerdevice_received_bytes",
                    "Number of bytes currently received from this peer",
                    &labels,
                    pd.received.saturating_mul(1024),
                );
            }
            m.gauge(
                "drbd_connection_congested",
                "Boolean whether the TCP send buffer of the data connection is more than 80% filled",
                &common,
                u8::from(c.congested),
            );
            m.gauge(
                "drbd_connection_apinflight_bytes",
                "Number of application requests in flight (not completed)",
                &common,
                c.ap_in_flight.saturating_mul(512),
            );
            m.gauge("drbd_connection_rsinflight_bytes", "Number of resync requests in flight", &common, c.rs_in_flight.saturating_mul(512));
        }
        for (vol, d) in &r.devices {
            let common = format!("{rl},volume=\"{vol}\",minor=\"{}\"", d.minor);
            for state in DISK_STATES {
                let labels = format!("{common},drbd_device_state=\"{state}\"");
                m.gauge("drbd_device_state", "DRBD device state", &labels, u8::from(d.disk == state));
            }
            m.gauge(
                "drbd_device_client",
                "Boolean whether this device is a client (i.e., intentional diskless)",
                &common,
                u8::from(d.client),
            );
            m.gauge(
                "drbd_device_unintentionaldiskless",
                "Boolean whether the devices is unintentional diskless",
                &common,
                u8::from(!d.client && d.disk == "Diskless"),
            );
            m.gauge("drbd_device_quorum", "Boolean if this device has DRBD quorum", &common, u8::from(d.quorum));
            m.gauge("drbd_device_open", "Boolean if this device is opened", &common, u8::from(d.open));
            m.gauge("drbd_device_size_bytes", "Device size in bytes", &common, d.size.saturating_mul(1024));
            m.counter("drbd_device_read_bytes_total", "Net data read from local hard disk", &common, d.read.saturating_mul(1024));
            m.counter("drbd_device_written_bytes_total", "Net data written on local disk", &common, d.written.saturating_mul(1024));
            m.counter("drbd_device_alwrites_total", "Number of updates of the activity log area of the meta data", &common, d.al_writes);
            m.counter("drbd_device_bmwrites_total", "Number of updates of the bitmap area of the meta data", &common, d.bm_writes);
            m.gauge(
                "drbd_device_upperpending",
                "Number of block I/O requests forwarded to DRBD, but not yet answered by DRBD.",
                &common,
                d.upper_pending,
            );
            m.gauge(
                "drbd_device_lowerpending",
                "Number of open requests to the local I/O sub-system issued by DRBD",
                &common,
                d.lower_pending,
            );
            m.gauge("drbd_device_alsuspended", "Boolean whether the Activity-Log is suspended", &common, u8::from(d.al_suspended));
        }
    }
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/testdata/events2/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A minimal reader of the text format: every sample as (name,
    /// sorted labels, value), and each family's TYPE and HELP.
    struct Parsed {
        samples: Vec<(String, BTreeMap<String, String>, f64)>,
        types: BTreeMap<String, String>,
        helps: BTreeMap<String, String>,
    }

    fn parse_exposition(text: &str) -> Parsed {
        let mut p = Parsed { samples: vec![], types: BTreeMap::new(), helps: BTreeMap::new() };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (n, t) = rest.split_once(' ').unwrap();
                assert!(p.types.insert(n.into(), t.into()).is_none(), "TYPE twice for {n}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (n, h) = rest.split_once(' ').unwrap();
                assert!(p.helps.insert(n.into(), h.into()).is_none(), "HELP twice for {n}");
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => {
                    let l = l.strip_suffix('}').unwrap();
                    let labels = l
                        .split(',')
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap();
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (n.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            assert!(p.types.contains_key(&name), "{name} sampled before its TYPE");
            p.samples.push((name, labels, value));
        }
        p
    }

    impl Parsed {
        fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            let found: Vec<f64> = self
                .samples
                .iter()
                .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
                .map(|s| s.2)
                .collect();
            assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
            found[0]
        }
    }

    #[test]
    fn a_written_primary_shows_its_states_and_counters_in_bytes() {
        // Real: alpha after 32 MiB were written on it (DRBD 9.2.19).
        let rs = parse_snapshot(&fixture("metrics-pair-written.alpha.events2"));
        let p = parse_exposition(&render(&rs));
        assert_eq!(p.value("drbd_resource_resources", &[]), 1.0);
        assert_eq!(p.value("drbd_resource_role", &[("name", "r0"), ("drbd_resource_role", "Primary")]), 1.0);
        assert_eq!(p.value("drbd_resource_role", &[("name", "r0"), ("drbd_resource_role", "Secondary")]), 0.0);
        assert_eq!(p.value("drbd_resource_promotionscore", &[("name", "r0")]), 10102.0);
        assert_eq!(p.value("drbd_resource_maypromote", &[("name", "r0")]), 0.0);
        let conn = [("name", "r0"), ("conn_name", "beta"), ("peer_node_id", "1")];
        let state = |s| p.value("drbd_connection_state", &[conn[0], conn[1], conn[2], ("drbd_connection_state", s)]);
        assert_eq!(state("Connected"), 1.0);
        assert_eq!(CONNECTION_STATES.iter().map(|s| state(s)).sum::<f64>(), 1.0);
        let dev = [("name", "r0"), ("volume", "0"), ("minor", "0")];
        let disk = |s| p.value("drbd_device_state", &[dev[0], dev[1], dev[2], ("drbd_device_state", s)]);
        assert_eq!(disk("UpToDate"), 1.0);
        assert_eq!(DISK_STATES.iter().map(|s| disk(s)).sum::<f64>(), 1.0);
        // written:32772 KiB, read:262100, size:262100, al-writes:9, bm-writes:13.
        assert_eq!(p.value("drbd_device_written_bytes_total", &dev), 32772.0 * 1024.0);
        assert_eq!(p.value("drbd_device_read_bytes_total", &dev), 262100.0 * 1024.0);
        assert_eq!(p.value("drbd_device_size_bytes", &dev), 262100.0 * 1024.0);
        assert_eq!(p.value("drbd_device_alwrites_total", &dev), 9.0);
        assert_eq!(p.value("drbd_device_bmwrites_total", &dev), 13.0);
        assert_eq!(p.value("drbd_device_quorum", &dev), 1.0);
        assert_eq!(p.value("drbd_device_unintentionaldiskless", &dev), 0.0);
        let pd = [conn[0], conn[1], conn[2], ("volume", "0")];
        assert_eq!(p.value("drbd_peerdevice_sent_bytes", &pd), 294872.0 * 1024.0);
        assert_eq!(p.value("drbd_peerdevice_outofsync_bytes", &pd), 0.0);
        assert_eq!(p.types["drbd_device_written_bytes_total"], "counter");
        assert_eq!(p.types["drbd_connection_state"], "gauge");
        assert_eq!(p.helps["drbd_device_written_bytes_total"], "Net data written on local disk");
    }

    #[test]
    fn a_lost_peer_and_lost_quorum_show() {
        // Real: alpha of the trio alone, primary, quorum lost.
        let rs = parse_snapshot(&fixture("metrics-trio-no-quorum.alpha.events2"));
        let p = parse_exposition(&render(&rs));
        let dev = [("name", "r0"), ("volume", "0"), ("minor", "0")];
        assert_eq!(p.value("drbd_device_quorum", &dev), 0.0);
        let connected: f64 = p
            .samples
            .iter()
            .filter(|(n, l, _)| n == "drbd_connection_state" && l["drbd_connection_state"] == "Connected")
            .map(|s| s.2)
            .sum();
        assert_eq!(connected, 0.0);
        let conns = p.samples.iter().filter(|(n, _, _)| n == "drbd_connection_congested").count();
        assert_eq!(conns, 2, "one per peer");
        let gamma = [("name", "r0"), ("conn_name", "gamma"), ("peer_node_id", "2"), ("volume", "0")];
        assert_eq!(p.value("drbd_peerdevice_outofsync_bytes", &gamma), 4096.0 * 1024.0);
        let beta = [("name", "r0"), ("conn_name", "beta"), ("peer_node_id", "1"), ("drbd_connection_state", "Connecting")];
        assert_eq!(p.value("drbd_connection_state", &beta), 1.0);
    }

    #[test]
    fn no_resources_is_a_count_of_zero_and_destroy_removes() {
        assert_eq!(
            render(&BTreeMap::new()),
            "# TYPE drbd_resource_resources gauge\n# HELP drbd_resource_resources Number of resources\ndrbd_resource_resources 0\n"
        );
        let mut text = fixture("metrics-pair-written.alpha.events2");
        text.push_str(
            "change device name:r0 volume:0 written:40000 disk:Outdated\ndestroy connection name:r0 peer-node-id:1 conn-name:beta\n",
        );
        let rs = parse_snapshot(&text);
        assert_eq!(rs["r0"].devices[&0].written, 40000);
        assert_eq!(rs["r0"].devices[&0].disk, "Outdated");
        assert!(rs["r0"].connections.is_empty());
        assert!(parse_snapshot("destroy resource name:r0\n").is_empty());
    }

    #[test]
    fn label_values_are_escaped() {
        let mut rs = BTreeMap::new();
        rs.insert("a\"b\\c".to_string(), Resource::default());
        assert!(render(&rs).contains("drbd_resource_suspended{name=\"a\\\"b\\\\c\"} 0\n"));
    }
}
