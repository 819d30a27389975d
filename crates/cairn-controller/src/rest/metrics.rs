//! `GET /metrics`: LINSTOR's Prometheus exposition (text format 0.0.4),
//! with the metric names, label names and values of LINSTOR's
//! `PrometheusBuilder`, built from the cluster snapshot and what the
//! satellites report, plus a histogram of REST request durations
//! ([`observe`], LINSTOR's `linstor_restapi_request_duration_seconds`).
//!
//! Query switches as LINSTOR's: `resource=false` leaves out the resource
//! and volume families, `storage_pools=false` the pool families,
//! `error_reports=false` the error report count (each on unless the
//! value is something other than `true`, as JAX-RS reads a boolean).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use cairn_api::node::Node;
use cairn_api::resource::ResourceWithVolumes;
use cairn_api::storage_pool::StoragePool;
use cairn_domain::name::key;
use parking_lot::Mutex;

use super::input;
use crate::state::AppState;

/// Bucket bounds of the request histogram, LINSTOR's `DEFAULT_BUCKETS`
/// (a wide spread: listings take milliseconds, creations seconds); the
/// `+Inf` bucket is implied.
const BUCKETS: [f64; 19] =
    [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 25.0, 50.0];

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One label's observations.
#[derive(Default, Clone)]
struct Histogram {
    /// Observations at or below each bound of [`BUCKETS`] (not cumulative).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// What the REST service counts about itself: request durations by API
/// call and the scrapes of `/metrics`. One per served router.
#[derive(Default)]
pub struct Recorder {
    requests: Mutex<BTreeMap<String, Histogram>>,
    scrapes: AtomicU64,
}

impl Recorder {
    fn record(&self, apicall: &str, secs: f64) {
        let mut r = self.requests.lock();
        match r.get_mut(apicall) {
            Some(h) => h.observe(secs),
            None => {
                let mut h = Histogram::default();
                h.observe(secs);
                r.insert(apicall.to_string(), h);
            }
        }
    }
}

/// The `/metrics` route and the layer that times every routed request.
/// `router` is the API's router with all its routes; the histogram sees
/// the requests a route serves (404s and other unrouted answers have no
/// API call to name).
pub fn install(router: Router<AppState>) -> Router<AppState> {
    let recorder = Arc::new(Recorder::default());
    router
        .route("/metrics", axum::routing::get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(recorder.clone(), observe))
        .layer(Extension(recorder))
}

/// Times a request through its handler (the reply's head; a streamed body
/// may still be on its way) under its API call: the method and route
/// template, e.g. `GET /v1/nodes/{node}`.
async fn observe(State(recorder): State<Arc<Recorder>>, req: Request, next: Next) -> Response {
    let apicall = match req.extensions().get::<MatchedPath>() {
        Some(p) => format!("{} {}", req.method(), p.as_str()),
        None => format!("{} {}", req.method(), req.uri().path()),
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    recorder.record(&apicall, start.elapsed().as_secs_f64());
    resp
}

/// A query switch: on when absent, else on only for `true` (any case).
fn switch(q: &cairn_api::query::Query, name: &str) -> bool {
    q.get(name).is_none_or(|v| v.eq_ignore_ascii_case("true"))
}

/// How long a scrape waits for each satellite's error reports.
const SCRAPE_SATELLITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

async fn metrics(State(s): State<AppState>, Extension(recorder): Extension<Arc<Recorder>>, RawQuery(q): RawQuery) -> Response {
    let start = Instant::now();
    let q = input::query(q);
    let scrapes = recorder.scrapes.fetch_add(1, Ordering::Relaxed) + 1;
    let mut snapshot = Snapshot::take(&s, switch(&q, "resource"), switch(&q, "storage_pools"));
    if switch(&q, "error_reports") {
        // A scrape must answer within Prometheus' default 10 s: a satellite
        // slower than SCRAPE_SATELLITE_TIMEOUT is left out of this count.
        let scope = super::reports::Scope::of(&s, &[]);
        let all = super::reports::collect_within(&s, &scope, &Default::default(), SCRAPE_SATELLITE_TIMEOUT).await;
        let mut per_node: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in &all {
            *per_node.entry((r.node_name.clone(), r.module.clone())).or_default() += 1;
        }
        snapshot.error_reports = Some((all.len() as u64, per_node));
    }
    let mut text = Text::default();
    snapshot.write(&mut text);
    text.family("linstor_scrape_requests_count", "counter", "");
    text.sample(&[], scrapes as f64);
    text.family("linstor_scrape_duration_seconds", "gauge", "");
    text.sample(&[], start.elapsed().as_secs_f64());
    write_requests(&mut text, &recorder.requests.lock().clone());
    write_process(&mut text);
    let mut resp = text.out.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// Proto `ConnectionStatus` numbers (LINSTOR's `linstor_node_state`
/// values), in order.
const CONNECTION_STATUS: [&str; 13] = [
    "OFFLINE",
    "CONNECTED",
    "ONLINE",
    "VERSION_MISMATCH",
    "FULL_SYNC_FAILED",
    "AUTHENTICATION_ERROR",
    "UNKNOWN",
    "HOSTNAME_MISMATCH",
    "OTHER_CONTROLLER",
    "AUTHENTICATED",
    "NO_STLT_CONN",
    "MISSING_EXT_TOOLS",
    "DUPLICATE_UNAME",
];
const UNKNOWN_STATUS: usize = 6;

/// Volume disk states and their numbers, as LINSTOR's `VolumeStates`
/// (anything else is `DUnknown`, -1).
const VOLUME_STATES: [(&str, f64); 10] = [
    ("UpToDate", 1.0),
    ("Created", 2.0),
    ("Attached", 3.0),
    ("Diskless", 4.0),
    ("Inconsistent", 5.0),
    ("Failed", 6.0),
    ("To: Creating", 7.0),
    ("To: Attachable", 8.0),
    ("To: Attaching", 9.0),
    ("Diskless(Detached)", 90.0),
];
const DUNKNOWN: f64 = -1.0;

/// A volume definition's size and where it belongs.
struct VlmDfn {
    rd: String,
    rg: String,
    nr: u32,
    size_kib: i64,
}

/// Error reports per (node, module).
type ReportCounts = BTreeMap<(String, String), u64>;

/// Everything one scrape reports, in the REST API's wire forms (so the
/// values are what `linstor n l`, `sp l` and `r l` show at that moment).
struct Snapshot {
    nodes: Vec<Node>,
    /// Resource definition name and resource group, in the cluster's order.
    rsc_dfns: Vec<(String, String)>,
    vlm_dfns: Vec<VlmDfn>,
    resources: Option<Vec<ResourceWithVolumes>>,
    pools: Option<Vec<StoragePool>>,
    /// Error reports known: the total, and per (node, module), as
    /// LINSTOR's `hostname` and `module` labels.
    error_reports: Option<(u64, ReportCounts)>,
}

impl Snapshot {
    fn take(s: &AppState, with_resources: bool, with_pools: bool) -> Snapshot {
        let c = s.read();
        let nodes = c.nodes.iter().map(|(k, n)| super::nodes::wire(s, k, n)).collect();
        let rsc_dfns = c.rsc_dfns.values().map(|d| (d.name.clone(), d.resource_group.clone())).collect();
        let vlm_dfns = c
            .vlm_dfns
            .iter()
            .filter_map(|((rd, nr), v)| {
                let d = c.rsc_dfns.get(rd)?;
                Some(VlmDfn { rd: d.name.clone(), rg: d.resource_group.clone(), nr: *nr, size_kib: v.size_kib })
            })
            .collect();
        let resources = with_resources.then(|| {
            let links = s.links().snapshot();
            c.resources.iter().map(|(k, r)| super::resources::wire_of(s, &links, &c, k, r)).collect()
        });
        let pools = with_pools.then(|| c.stor_pools.iter().map(|((n, _), p)| super::storage_pools::api_pool(s, n, p)).collect());
        Snapshot { nodes, rsc_dfns, vlm_dfns, resources, pools, error_reports: None }
    }

    fn write(&self, t: &mut Text) {
        let v = crate::build_info::controller_version();
        t.family("linstor_info", "gauge", "");
        t.sample(&[("version", &v.version), ("buildtime", &v.build_time), ("gitid", &v.git_hash)], 1.0);

        let help: Vec<String> = CONNECTION_STATUS.iter().enumerate().map(|(i, s)| format!("{i}=\"{s}\"")).collect();
        t.family("linstor_node_state", "gauge", &help.join(", "));
        for n in &self.nodes {
            let status = n.connection_status.as_deref().and_then(|s| CONNECTION_STATUS.iter().position(|c| *c == s));
            t.sample(&node_labels(n).as_refs(), status.unwrap_or(UNKNOWN_STATUS) as f64);
        }

        t.family("linstor_resource_definition_count", "gauge", "");
        t.sample(&[], self.rsc_dfns.len() as f64);
        if let Some(rs) = &self.resources {
            let mut per_rd: BTreeMap<String, usize> = BTreeMap::new();
            for r in rs {
                *per_rd.entry(key(&r.resource.name)).or_default() += 1;
            }
            t.family("linstor_resource_definition_resource_count", "gauge", "");
            for (name, rg) in &self.rsc_dfns {
                let n = per_rd.get(&key(name)).copied().unwrap_or(0);
                t.sample(&[("name", name), ("resource_group", rg)], n as f64);
            }
        }
        t.family("linstor_volume_definition_size_bytes", "gauge", "");
        for vd in &self.vlm_dfns {
            let nr = vd.nr.to_string();
            t.sample(&[("name", &vd.rd), ("volume_number", &nr), ("resource_group", &vd.rg)], kib_bytes(Some(vd.size_kib)));
        }

        if let Some(rs) = &self.resources {
            write_resources(t, rs);
        }
        if let Some(pools) = &self.pools {
            write_pools(t, pools);
        }
        if let Some((n, per_node)) = &self.error_reports {
            t.family("linstor_error_reports_count", "gauge", "");
            t.sample(&[], *n as f64);
            for ((host, module), c) in per_node {
                t.sample(&[("hostname", host), ("module", module)], *c as f64);
            }
        }
    }
}

fn write_resources(t: &mut Text, rs: &[ResourceWithVolumes]) {
    t.family("linstor_resource_state", "gauge", "-1=\"unknown state\", 0=\"secondary\", 1=\"primary\"");
    for r in rs {
        let state = match r.resource.state.as_ref().and_then(|s| s.in_use) {
            Some(true) => 1.0,
            Some(false) => 0.0,
            None => -1.0,
        };
        t.sample(&[("name", &r.resource.name), ("node", &r.resource.node_name)], state);
    }
    let help: Vec<String> = VOLUME_STATES.iter().map(|(n, v)| format!("{v}=\"{n}\"")).chain(["-1=\"DUnknown\"".to_string()]).collect();
    t.family("linstor_volume_state", "gauge", &help.join(", "));
    for (r, v) in volumes(rs) {
        let diskless = r.resource.flags.iter().any(|f| f == "DRBD_DISKLESS");
        let disk = match v.state.disk_state.as_deref() {
            Some("Diskless") if !diskless => Some("Diskless(Detached)"),
            other => other,
        };
        let value = disk.and_then(|d| VOLUME_STATES.iter().find(|(n, _)| n.eq_ignore_ascii_case(d))).map_or(DUNKNOWN, |(_, v)| *v);
        t.sample(&volume_labels(r, v).as_refs(), value);
    }
    t.family("linstor_volume_allocated_size_bytes", "gauge", "");
    for (r, v) in volumes(rs) {
        t.sample(&volume_labels(r, v).as_refs(), kib_bytes(v.allocated_size_kib));
    }
}

fn volumes(rs: &[ResourceWithVolumes]) -> impl Iterator<Item = (&ResourceWithVolumes, &cairn_api::resource::Volume)> {
    rs.iter().flat_map(|r| r.volumes.iter().map(move |v| (r, v)))
}

fn write_pools(t: &mut Text, pools: &[StoragePool]) {
    // A diskless pool has no capacity: 0, as LINSTOR; unknown is NaN.
    let bytes = |p: &StoragePool, kib: Option<i64>| if p.provider_kind == "DISKLESS" { 0.0 } else { kib_bytes(kib) };
    t.family("linstor_storage_pool_capacity_free_bytes", "gauge", "");
    for p in pools {
        t.sample(&pool_labels(p).as_refs(), bytes(p, p.free_capacity));
    }
    t.family("linstor_storage_pool_capacity_total_bytes", "gauge", "");
    for p in pools {
        t.sample(&pool_labels(p).as_refs(), bytes(p, p.total_capacity));
    }
    t.family("linstor_storage_pool_error_count", "gauge", "");
    for p in pools {
        t.sample(&pool_labels(p).as_refs(), p.reports.iter().filter(|r| r.is_error()).count() as f64);
    }
}

fn write_requests(t: &mut Text, requests: &BTreeMap<String, Histogram>) {
    if requests.is_empty() {
        return;
    }
    let name = "linstor_restapi_request_duration_seconds";
    t.family(name, "histogram", "LINSTOR REST API Request duration in seconds");
    for (apicall, h) in requests {
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            t.raw_sample(&format!("{name}_bucket"), &[("apicall", apicall), ("le", &number(*bound))], cumulative as f64);
        }
        t.raw_sample(&format!("{name}_bucket"), &[("apicall", apicall), ("le", "+Inf")], h.count as f64);
        t.raw_sample(&format!("{name}_count"), &[("apicall", apicall)], h.count as f64);
        t.raw_sample(&format!("{name}_sum"), &[("apicall", apicall)], h.sum);
    }
}

/// Clock ticks per second of `/proc`'s CPU times: the kernel's USER_HZ,
/// 100 on every Linux ABI (Prometheus' Go `procfs` assumes the same).
const USER_HZ: f64 = 100.0;

/// The standard `process_*` metrics (LINSTOR's Java client exports them
/// with its JVM metrics), read from `/proc/self`; each one is left out
/// where it cannot be read.
fn write_process(t: &mut Text) {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // The fields after the command name, which may itself hold spaces.
    let fields: Vec<String> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        t.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        t.sample(&[], (utime + stime) / USER_HZ);
    }
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<f64>().ok())));
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        t.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
        t.sample(&[], boot + start / USER_HZ);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        t.family("process_open_fds", "gauge", "Number of open file descriptors.");
        t.sample(&[], fds.count() as f64);
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse::<f64>().ok()))
    });
    if let Some(n) = max_fds {
        t.family("process_max_fds", "gauge", "Maximum number of open file descriptors.");
        t.sample(&[], n);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    };
    for (name, key, help) in [
        ("process_virtual_memory_bytes", "VmSize:", "Virtual memory size in bytes."),
        ("process_resident_memory_bytes", "VmRSS:", "Resident memory size in bytes."),
    ] {
        if let Some(k) = kib(key) {
            t.family(name, "gauge", help);
            t.sample(&[], k * 1024.0);
        }
    }
}

/// KiB as bytes; NaN while unknown (LINSTOR's value for a missing size).
fn kib_bytes(kib: Option<i64>) -> f64 {
    kib.map_or(f64::NAN, |k| k as f64 * 1024.0)
}

/// Owned label pairs.
struct Labels(Vec<(&'static str, String)>);

impl Labels {
    fn as_refs(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// `node`, `nodetype`, and the satellite connection's `address`,
/// `port` and `encryption` when the node has an active one.
fn node_labels(n: &Node) -> Labels {
    let mut l = Vec::new();
    let active = n.net_interfaces.iter().find(|i| i.is_active == Some(true) && i.satellite_port.is_some());
    if let Some(i) = active {
        l.push(("address", i.address.clone()));
        l.push(("encryption", i.satellite_encryption_type.clone().unwrap_or_else(|| "PLAIN".into())));
        l.push(("port", i.satellite_port.map(|p| p.to_string()).unwrap_or_default()));
    }
    l.push(("node", n.name.clone()));
    l.push(("nodetype", n.node_type.clone()));
    Labels(l)
}

fn volume_labels(r: &ResourceWithVolumes, v: &cairn_api::resource::Volume) -> Labels {
    Labels(vec![
        ("resource", r.resource.name.clone()),
        ("node", r.resource.node_name.clone()),
        ("volume", v.volume_number.to_string()),
        ("device_path", v.device_path.clone().unwrap_or_default()),
        ("storage_pool", if v.storage_pool_name.is_empty() { "_unknown".into() } else { v.storage_pool_name.clone() }),
    ])
}

/// `backing_pool` is the pool's `StorDriver/StorPoolName` for the kinds
/// that have one (LINSTOR's `getBackingPoolName`), empty otherwise.
fn pool_labels(p: &StoragePool) -> Labels {
    let backed = matches!(p.provider_kind.as_str(), "LVM" | "LVM_THIN" | "ZFS" | "ZFS_THIN" | "FILE" | "FILE_THIN");
    let backing = if backed { p.props.get("StorDriver/StorPoolName").cloned().unwrap_or_default() } else { String::new() };
    Labels(vec![
        ("storage_pool", p.storage_pool_name.clone()),
        ("node", p.node_name.clone()),
        ("driver", p.provider_kind.clone()),
        ("backing_pool", backing),
    ])
}

/// A number as the text format writes it (Go's `ParseFloat` reads it).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// The exposition being written: families, each with its samples.
#[derive(Default)]
struct Text {
    out: String,
    family: String,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.family = name.to_string();
        if !help.is_empty() {
            let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
        }
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let name = std::mem::take(&mut self.family);
        self.raw_sample(&name, labels, value);
        self.family = name;
    }

    fn raw_sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_text() {
        let mut requests = BTreeMap::new();
        let mut h = Histogram::default();
        h.observe(0.0005);
        h.observe(0.003);
        h.observe(100.0);
        requests.insert("GET /v1/nodes".to_string(), h);
        let mut t = Text::default();
        write_requests(&mut t, &requests);
        let line = |le: &str| {
            let prefix = format!("linstor_restapi_request_duration_seconds_bucket{{apicall=\"GET /v1/nodes\",le=\"{le}\"}} ");
            t.out.lines().find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
        };
        assert_eq!(line("0.001").as_deref(), Some("1"));
        assert_eq!(line("0.0025").as_deref(), Some("1"));
        assert_eq!(line("0.005").as_deref(), Some("2"));
        assert_eq!(line("50").as_deref(), Some("2"));
        assert_eq!(line("+Inf").as_deref(), Some("3"));
        assert!(t.out.contains("linstor_restapi_request_duration_seconds_count{apicall=\"GET /v1/nodes\"} 3\n"), "{}", t.out);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut t = Text::default();
        t.family("x", "gauge", "");
        t.sample(&[("a", "q\"b\\n\nz")], f64::NAN);
        assert_eq!(t.out, "# TYPE x gauge\nx{a=\"q\\\"b\\\\n\\nz\"} NaN\n");
    }
}
