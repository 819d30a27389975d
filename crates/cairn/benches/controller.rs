//! Controller benchmark: memory, create rate, list latency and restart time
//! at scale. Run with `cargo bench -p cairn --bench controller`; sizes come
//! from CAIRN_BENCH_NODES (default 1000), CAIRN_BENCH_RDS (10000),
//! CAIRN_BENCH_REPLICAS (3) and CAIRN_BENCH_THREADS (8); CAIRN_BIN names
//! another binary to measure (an A/B). With CAIRN_BENCH_SIM=1 every node is
//! a simulated satellite (`cairn sim-satellites` on 127.88.0.1, ports from
//! 20000) that answers the controller, so creates wait for their applies,
//! and the idle controller's CPU and concurrent spawns are measured too.
//! CAIRN_BENCH_DB_URL=postgres://… runs the controller on that (empty)
//! PostgreSQL database instead of SQLite. CAIRN_BENCH_CONTENDED (200) is
//! the number of creates measured quiet and while two clients list;
//! CAIRN_BENCH_LISTER_NICE gives those two clients a nice value (they
//! share the machine's cores with the controller, unlike real clients);
//! with CAIRN_BENCH_LISTER_GZIP=1 they ask for gzip, as python-linstor
//! does.
//! Prints a Markdown table for docs/BENCHMARKS.md.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_api::node::{NetInterface, Node};
use cairn_api::resource::{Resource, ResourceCreate};
use cairn_api::resource_definition::{ResourceDefinition, ResourceDefinitionCreate, VolumeDefinition, VolumeDefinitionCreate};
use cairn_api::storage_pool::StoragePool;
use cairn_client::Client;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Lists every resource as python-linstor asks for it (`Accept-Encoding:
/// gzip`), reading the compressed reply without decoding it (a client on
/// another machine would decode it there).
/// Returns the bytes read, headers included; panics unless the answer is
/// a 200 with a gzip body.
fn list_gzip(base: &str) -> usize {
    use std::io::{Read, Write};
    let addr = base.strip_prefix("http://").expect("an http:// base");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let req = format!("GET /v1/view/resources HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut head = Vec::new();
    let mut sink = [0u8; 64 * 1024];
    let mut total = 0;
    let mut last = Vec::new();
    loop {
        let n = s.read(&mut sink).expect("read the list");
        if n == 0 {
            break;
        }
        if head.len() < 4096 {
            head.extend_from_slice(&sink[..n.min(4096)]);
        }
        // The last bytes, to see the chunked body's end.
        last.extend_from_slice(&sink[..n]);
        last.drain(..last.len().saturating_sub(5));
        total += n;
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200") && head.contains("content-encoding: gzip"), "{}", head.lines().next().unwrap_or_default());
    // An aborted reply ends without the last (empty) chunk.
    assert_eq!(last, b"0\r\n\r\n", "the list's body was cut short");
    total
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// How many sockets the process holds open (its links to satellites,
/// pooled or in use, and the REST connections).
fn sockets(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).filter(|t| t.to_string_lossy().starts_with("socket:")).count()
}

#[expect(clippy::zombie_processes, reason = "the child is returned; the caller waits for it")]
fn start(dir: &std::path::Path, port: u16) -> (Child, Duration) {
    let t = Instant::now();
    // `CAIRN_BIN=/path/to/cairn` measures another build (an A/B).
    let bin = std::env::var_os("CAIRN_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_cairn").into());
    let mut cmd = Command::new(bin);
    cmd.args(["controller", "--rest-bind", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(dir);
    // `CAIRN_BENCH_DB_URL=postgres://…` measures the PostgreSQL store (an
    // empty database) instead of SQLite in the data directory.
    if let Ok(url) = std::env::var("CAIRN_BENCH_DB_URL") {
        cmd.args(["--db-url", &url]);
    }
    let mut child = cmd.env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("spawn controller");
    let client = Client::new(&format!("http://127.0.0.1:{port}"));
    loop {
        if client.raw("GET", "/health", None).is_ok_and(|r| r.status == 200) {
            return (child, t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("controller did not start");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

const SIM_IP: &str = "127.88.0.1";
const SIM_BASE_PORT: u16 = 20000;

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn start_sim(dir: &std::path::Path, nodes: usize) -> Child {
    let bin = std::env::var_os("CAIRN_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_cairn").into());
    Command::new(bin)
        .args(["sim-satellites", "--count", &nodes.to_string(), "--ip", SIM_IP, "--base-port", &SIM_BASE_PORT.to_string()])
        .arg("--cluster-secret-file")
        .arg(dir.join("cluster-secret"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn simulated satellites")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `work(i)` for i in 0..n on `threads` threads; returns wall time and
/// per-call latencies.
fn parallel(n: usize, threads: usize, work: impl Fn(usize) + Sync + Send + 'static) -> (Duration, Vec<Duration>) {
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let t = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (work, next, lat) = (work.clone(), next.clone(), lat.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let s = Instant::now();
                    work(i);
                    mine.push(s.elapsed());
                }
                lat.lock().expect("lock").extend(mine);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("bench thread");
    }
    let mut lat = Arc::try_unwrap(lat).map(|m| m.into_inner().expect("lock")).unwrap_or_default();
    lat.sort();
    (t.elapsed(), lat)
}

fn timed_gets(client: &Client, path: &str, n: usize) -> (Vec<Duration>, usize) {
    let mut lat = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = client.raw("GET", path, None).expect("GET");
        lat.push(t.elapsed());
        assert_eq!(r.status, 200, "{path}");
        bytes = r.body.len();
    }
    lat.sort();
    (lat, bytes)
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let nodes = env_or("CAIRN_BENCH_NODES", 1000);
    let rds = env_or("CAIRN_BENCH_RDS", 10_000);
    let replicas = env_or("CAIRN_BENCH_REPLICAS", 3).min(nodes);
    let threads = env_or("CAIRN_BENCH_THREADS", 8);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let base = format!("http://127.0.0.1:{port}");
    let mut rows: Vec<(String, String)> = Vec::new();

    let (mut child, _) = start(dir.path(), port);
    std::thread::sleep(Duration::from_millis(500));
    rows.push(("controller RSS, idle, empty database".into(), format!("{:.1} MiB", rss_mib(child.id()))));
    let sim = std::env::var("CAIRN_BENCH_SIM").is_ok_and(|v| v == "1");
    let mut sims = sim.then(|| start_sim(dir.path(), nodes));

    let b = base.clone();
    let (wall, lat) = parallel(nodes, threads, move |i| {
        let c = Client::new(&b);
        let name = format!("node-{i:05}");
        c.create_node(&Node {
            name: name.clone(),
            node_type: "SATELLITE".into(),
            net_interfaces: vec![NetInterface {
                name: "default".into(),
                // Loopback only: the controller tries to reach every node.
                address: if sim {
                    SIM_IP.to_string()
                } else {
                    format!("127.{}.{}.{}", 1 + (i + 1) / 65536, ((i + 1) / 256) % 256, (i + 1) % 256)
                },
                satellite_port: Some(if sim { i64::from(SIM_BASE_PORT) + i as i64 } else { 3366 }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .expect("create node");
        let mut props = BTreeMap::new();
        props.insert("StorDriver/StorPoolName".to_string(), "/var/lib/cairn/pool".to_string());
        c.create_stor_pool(
            &name,
            &StoragePool { storage_pool_name: "DfltStorPool".into(), provider_kind: "FILE_THIN".into(), props, ..Default::default() },
        )
        .expect("create pool");
    });
    rows.push((
        format!("create {nodes} nodes + {nodes} storage pools ({threads} client threads)"),
        format!(
            "{:.1} s, {:.0} nodes/s, p50 {} p99 {} per node",
            wall.as_secs_f64(),
            nodes as f64 / wall.as_secs_f64(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        ),
    ));

    if sim {
        let c = Client::new(&base);
        let t = Instant::now();
        loop {
            let r = c.raw("GET", "/v1/nodes", None).expect("list nodes");
            let online = String::from_utf8_lossy(&r.body).matches("\"connection_status\":\"ONLINE\"").count();
            if online == nodes {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(300), "only {online} of {nodes} simulated satellites online");
            std::thread::sleep(Duration::from_millis(200));
        }
        rows.push((
            format!("{nodes} simulated satellites ONLINE after the nodes were created"),
            format!("{:.1} s", t.elapsed().as_secs_f64()),
        ));
        rows.push((
            format!("controller RSS with {nodes} satellites online, no resources"),
            format!("{:.1} MiB, {} sockets", rss_mib(child.id()), sockets(child.id())),
        ));
    }
    let b = base.clone();
    let (wall, lat) = parallel(rds, threads, move |i| {
        let c = Client::new(&b);
        let name = format!("rsc-{i:06}");
        c.create_rsc_dfn(&ResourceDefinitionCreate {
            resource_definition: ResourceDefinition { name: name.clone(), ..Default::default() },
            ..Default::default()
        })
        .expect("create rd");
        c.create_vlm_dfn(
            &name,
            &VolumeDefinitionCreate {
                volume_definition: VolumeDefinition { size_kib: Some(1 << 20), ..Default::default() },
                ..Default::default()
            },
        )
        .expect("create vd");
        let rs: Vec<ResourceCreate> = (0..replicas)
            .map(|r| ResourceCreate {
                resource: Resource { node_name: format!("node-{:05}", (i * replicas + r) % nodes), ..Default::default() },
                ..Default::default()
            })
            .collect();
        c.create_resources(&name, &rs).expect("create resources");
    });
    let calls = rds * 3;
    rows.push((
        format!("create {rds} resource definitions, each: RD + VD + {replicas} resources (3 calls)"),
        format!(
            "{:.1} s, {:.0} calls/s, {:.0} resources/s; p50 {} p99 {} per definition",
            wall.as_secs_f64(),
            calls as f64 / wall.as_secs_f64(),
            (rds * replicas) as f64 / wall.as_secs_f64(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        ),
    ));
    rows.push((
        format!("controller RSS with {nodes} nodes, {rds} RDs, {} resources", rds * replicas),
        format!("{:.1} MiB, {} sockets", rss_mib(child.id()), sockets(child.id())),
    ));

    let client = Client::new(&base);
    let (lat, bytes) = timed_gets(&client, "/v1/view/resources", 20);
    rows.push((
        format!("GET /v1/view/resources, all {} resources ({:.1} MiB JSON), 20 calls", rds * replicas, bytes as f64 / 1048576.0),
        format!("p50 {} p99 {}", ms(percentile(&lat, 0.5)), ms(percentile(&lat, 0.99))),
    ));
    let (lat, _) = timed_gets(&client, "/v1/view/resources?resources=rsc-000042", 500);
    rows.push((
        "GET /v1/view/resources?resources=<one>, 500 calls".into(),
        format!("p50 {} p99 {}", ms(percentile(&lat, 0.5)), ms(percentile(&lat, 0.99))),
    ));
    let (lat, _) = timed_gets(&client, "/v1/view/resources?nodes=node-00007&limit=0&offset=0", 500);
    rows.push((
        "GET /v1/view/resources?nodes=<one>, 500 calls".into(),
        format!("p50 {} p99 {}", ms(percentile(&lat, 0.5)), ms(percentile(&lat, 0.99))),
    ));
    let (lat, bytes) = timed_gets(&client, "/v1/resource-definitions?with_volume_definitions=true", 20);
    rows.push((
        format!("GET /v1/resource-definitions?with_volume_definitions=true ({:.1} MiB), 20 calls", bytes as f64 / 1048576.0),
        format!("p50 {} p99 {}", ms(percentile(&lat, 0.5)), ms(percentile(&lat, 0.99))),
    ));
    rows.push(("controller RSS after the list calls".into(), format!("{:.1} MiB", rss_mib(child.id()))));
    let (mut lat, mut bytes) = (Vec::new(), 0);
    for _ in 0..20 {
        let t = Instant::now();
        bytes = list_gzip(&base);
        lat.push(t.elapsed());
    }
    lat.sort();
    rows.push((
        format!("GET /v1/view/resources with gzip ({:.1} MiB), 20 calls", bytes as f64 / 1048576.0),
        format!("p50 {} p99 {}", ms(percentile(&lat, 0.5)), ms(percentile(&lat, 0.99))),
    ));
    if sim {
        // Idle: only heartbeats and observations of the simulated nodes.
        let secs = env_or("CAIRN_BENCH_IDLE_SECS", 30);
        let before = cpu_time(child.id());
        std::thread::sleep(Duration::from_secs(secs as u64));
        let used = cpu_time(child.id()) - before;
        rows.push((
            format!("controller CPU, idle for {secs} s with {nodes} simulated satellites and {} resources", rds * replicas),
            format!("{:.2} % of one core", used.as_secs_f64() * 100.0 / secs as f64),
        ));
        // Concurrent spawns through a resource group placing 3 replicas.
        let c = Client::new(&base);
        let body = serde_json::json!({"name": "bench", "select_filter": {"place_count": 3}});
        let r = c.raw("POST", "/v1/resource-groups", Some(body.to_string().as_bytes())).expect("create rg");
        assert!(r.status < 300, "create rg: {}", String::from_utf8_lossy(&r.body));
        let spawns = env_or("CAIRN_BENCH_SPAWNS", 100);
        let b = base.clone();
        let (wall, lat) = parallel(spawns, spawns, move |i| {
            let c = Client::new(&b);
            let body = serde_json::json!({"resource_definition_name": format!("spawn-{i:05}"), "volume_sizes": [1 << 20]});
            let r = c.raw("POST", "/v1/resource-groups/bench/spawn", Some(body.to_string().as_bytes())).expect("spawn");
            assert!(r.status < 300, "spawn: {}", String::from_utf8_lossy(&r.body));
        });
        rows.push((
            format!("{spawns} concurrent spawns, 3 replicas each, on {nodes} simulated satellites"),
            format!(
                "{:.1} s, {:.0} resources/s; p50 {} p99 {} per spawn",
                wall.as_secs_f64(),
                (spawns * 3) as f64 / wall.as_secs_f64(),
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99))
            ),
        ));
    }

    // Writers and health checks while clients list: first quiet, then with
    // two clients listing every resource back to back.
    let creates = env_or("CAIRN_BENCH_CONTENDED", 200);
    let contended = |listers: usize, tag: &str| -> (Vec<Duration>, Vec<Duration>) {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles: Vec<_> = (0..listers)
            .map(|_| {
                let (b, stop) = (base.clone(), stop.clone());
                std::thread::spawn(move || {
                    if let Some(n) = std::env::var("CAIRN_BENCH_LISTER_NICE").ok().and_then(|v| v.parse().ok()) {
                        let _ = rustix::process::setpriority_process(None, n);
                    }
                    let c = Client::new(&b);
                    let gzip = std::env::var("CAIRN_BENCH_LISTER_GZIP").is_ok_and(|v| v == "1");
                    while !stop.load(Ordering::Relaxed) {
                        if gzip {
                            let _ = list_gzip(&b);
                        } else {
                            let r = c.raw("GET", "/v1/view/resources", None).expect("list");
                            assert_eq!(r.status, 200, "list");
                        }
                    }
                })
            })
            .collect();
        // Let the listers get going.
        std::thread::sleep(Duration::from_millis(if listers > 0 { 500 } else { 0 }));
        let c = Client::new(&base);
        let (mut create, mut health) = (Vec::new(), Vec::new());
        for i in 0..creates {
            let t = Instant::now();
            c.create_rsc_dfn(&ResourceDefinitionCreate {
                resource_definition: ResourceDefinition { name: format!("{tag}-{i:05}"), ..Default::default() },
                ..Default::default()
            })
            .expect("create rd");
            create.push(t.elapsed());
            let t = Instant::now();
            let r = c.raw("GET", "/health", None).expect("health");
            health.push(t.elapsed());
            assert_eq!(r.status, 200);
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().expect("a listing client failed");
        }
        create.sort();
        health.sort();
        (create, health)
    };
    let (quiet, quiet_health) = contended(0, "quiet");
    let (busy, busy_health) = contended(2, "busy");
    let pct = |v: &[Duration]| format!("p50 {} p99 {}", ms(percentile(v, 0.5)), ms(percentile(v, 0.99)));
    rows.push((format!("RD create, {creates} calls, quiet"), pct(&quiet)));
    rows.push((format!("RD create, {creates} calls, while 2 clients list all resources"), pct(&busy)));
    rows.push(("GET /health after each create, quiet".into(), pct(&quiet_health)));
    rows.push(("GET /health after each create, while 2 clients list".into(), pct(&busy_health)));

    let db = std::fs::metadata(dir.path().join("cairn.db")).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(dir.path().join("cairn.db-wal")).map(|m| m.len()).unwrap_or(0);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let (mut child, took) = start(dir.path(), port);
    let which = match std::env::var("CAIRN_BENCH_DB_URL") {
        Ok(_) => "PostgreSQL".to_string(),
        Err(_) => format!("{:.1} MiB", db as f64 / 1048576.0),
    };
    rows.push((format!("restart (start to healthy) with that database ({which})"), ms(took)));
    std::thread::sleep(Duration::from_millis(500));
    rows.push(("controller RSS after restart, idle".into(), format!("{:.1} MiB", rss_mib(child.id()))));
    let _ = child.kill();
    let _ = child.wait();
    if let Some(mut sims) = sims.take() {
        let _ = sims.kill();
        let _ = sims.wait();
    }

    println!("| measurement | result |\n| --- | --- |");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}
