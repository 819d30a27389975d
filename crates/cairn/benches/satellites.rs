//! Satellite benchmark: time from the create call to ready loop devices on
//! three satellites, against the raw `truncate` + `losetup` commands alone;
//! satellite RSS. Needs root (loop devices). Run with
//! `cargo bench -p cairn --bench satellites`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_api::resource::{Resource, ResourceCreate};
use cairn_client::Client;

mod common;

const SIZE_KIB: i64 = 64 * 1024;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
        / 1024.0
}

fn spawn(args: &[&str], dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cairn")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn place(c: &Client, name: &str, nodes: &[&str]) {
    let rs: Vec<ResourceCreate> = nodes
        .iter()
        .map(|n| ResourceCreate {
            resource: Resource { node_name: n.to_string(), ..Default::default() },
            // Loop devices alone: DRBD is the default stack, and these
            // satellites have no DRBD module.
            layer_list: Some(vec!["STORAGE".into()]),
            ..Default::default()
        })
        .collect();
    let replies = c.create_resources(name, &rs).expect("create resources");
    assert!(replies.iter().all(|r| !r.is_error()), "{replies:?}");
}

fn raw_commands(dir: &Path, n: usize) -> Duration {
    let t = Instant::now();
    let mut devs = Vec::new();
    for i in 0..n {
        let f = dir.join(format!("raw_{i:05}.img"));
        assert!(Command::new("truncate").arg("--size").arg((SIZE_KIB * 1024).to_string()).arg(&f).status().expect("truncate").success());
        let out = Command::new("losetup").args(["--find", "--show"]).arg(&f).output().expect("losetup");
        devs.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let took = t.elapsed();
    for d in devs {
        let _ = Command::new("losetup").arg("--detach").arg(d).status();
    }
    took
}

fn main() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let url = format!("http://127.0.0.1:{port}");
    let ctrl_dir = root.path().join("ctrl");
    let mut ctrl = spawn(&["controller", "--rest-bind", &format!("127.0.0.1:{port}")], &ctrl_dir);
    common::wait_http(&url);
    let c = Client::new(&url);
    let nodes = ["b1", "b2", "b3"];
    let mut sats = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        // Never the addresses `cairn up` uses: 127.0.10.x, a free port.
        let ip = format!("127.0.10.{}", i + 1);
        let sport = std::net::TcpListener::bind((ip.as_str(), 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["satellite", "--node-name", n, "--listen", &format!("{ip}:{sport}"), "--data-dir"])
            .arg(root.path().join(n))
            .arg("--cluster-secret-file")
            .arg(ctrl_dir.join("cluster-secret"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn satellite");
        let t = Instant::now();
        while std::net::TcpStream::connect((ip.as_str(), sport)).is_err() {
            if t.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("satellite did not listen");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        sats.push(child);
        common::register(&c, n, &ip, sport, &root.path().join(n).join("pool"));
    }
    common::wait_online(&c);
    let mut rows: Vec<(String, String)> = Vec::new();
    rows.push(("satellite RSS, idle".into(), format!("{:.1} MiB", rss_mib(sats[0].id()))));

    let mut one = Vec::new();
    let mut three = Vec::new();
    for i in 0..20 {
        let a = format!("one{i}");
        common::define(&c, &a, SIZE_KIB);
        let s = Instant::now();
        place(&c, &a, &nodes[..1]);
        one.push(s.elapsed());
        let b = format!("three{i}");
        common::define(&c, &b, SIZE_KIB);
        let s = Instant::now();
        place(&c, &b, &nodes);
        three.push(s.elapsed());
    }
    rows.push((
        "create 1 resource (1 replica), call to ready device, 20 runs".into(),
        format!("p50 {} p99 {}", ms(pct(&mut one, 0.5)), ms(pct(&mut one, 0.99))),
    ));
    rows.push((
        "create 1 resource with 3 replicas (one call, 3 satellites), 20 runs".into(),
        format!("p50 {} p99 {}", ms(pct(&mut three, 0.5)), ms(pct(&mut three, 0.99))),
    ));

    let names: Vec<String> = (0..50).map(|i| format!("conc{i}")).collect();
    for n in &names {
        common::define(&c, n, SIZE_KIB);
    }
    let t = Instant::now();
    let handles: Vec<_> = names
        .iter()
        .map(|n| {
            let (url, n) = (url.clone(), n.clone());
            std::thread::spawn(move || {
                let s = Instant::now();
                place(&Client::new(&url), &n, &["b1", "b2", "b3"]);
                s.elapsed()
            })
        })
        .collect();
    let mut lat: Vec<Duration> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
    let wall = t.elapsed();
    rows.push((
        "50 concurrent creates, 3 replicas each (150 devices on 3 satellites)".into(),
        format!("all ready after {}; per call p50 {} p99 {}", ms(wall), ms(pct(&mut lat, 0.5)), ms(pct(&mut lat, 0.99))),
    ));
    rows.push(("satellite RSS with 60+ devices".into(), format!("{:.1} MiB", rss_mib(sats[0].id()))));

    // 100 concurrent spawns from a resource group with 2 replicas.
    c.post("/v1/resource-groups", &serde_json::json!({"name": "bench", "select_filter": {"place_count": 2, "layer_stack": ["STORAGE"]}}))
        .expect("rg");
    let t = Instant::now();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let s = Instant::now();
                let body = serde_json::json!({"resource_definition_name": format!("spawn{i}"), "volume_sizes": [SIZE_KIB]});
                let replies = Client::new(&url).post("/v1/resource-groups/bench/spawn", &body).expect("spawn");
                assert!(replies.iter().all(|r| !r.is_error()), "{replies:?}");
                s.elapsed()
            })
        })
        .collect();
    let mut lat: Vec<Duration> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
    let wall = t.elapsed();
    rows.push((
        "100 concurrent spawns (2 replicas each, 200 devices on 3 satellites)".into(),
        format!(
            "{:.1} s, {:.0} volumes/s; per spawn p50 {} p99 {}",
            wall.as_secs_f64(),
            100.0 / wall.as_secs_f64(),
            ms(pct(&mut lat, 0.5)),
            ms(pct(&mut lat, 0.99))
        ),
    ));

    let raw_dir = root.path().join("raw");
    std::fs::create_dir_all(&raw_dir).expect("raw dir");
    rows.push(("raw truncate + losetup --find --show, 1 device (the floor)".into(), ms(raw_commands(&raw_dir, 1))));
    rows.push(("raw truncate + losetup --find --show, 50 devices one after another".into(), ms(raw_commands(&raw_dir, 50))));

    // Clean up every device through Cairn itself.
    let rds: Vec<String> = c.rsc_dfns().expect("rds").into_iter().map(|d| d.name).collect();
    for rd in rds {
        c.delete(&format!("/v1/resource-definitions/{rd}")).expect("delete");
    }
    for mut s in sats {
        let _ = s.kill();
        let _ = s.wait();
    }
    let _ = ctrl.kill();
    let _ = ctrl.wait();
    println!("| measurement | result |\n| --- | --- |");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}
