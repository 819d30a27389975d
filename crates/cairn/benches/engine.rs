//! Engine benchmark: the four targets of issue 12 (docs/BENCHMARKS.md,
//! "Engine: issue 12 targets"), measured on one machine against any cairn
//! binary, so the same program gives the figures before and after a
//! redesign:
//!
//! (a) create call to ready device, against `truncate` + `losetup --find --show`;
//! (b) 1,000 volumes in batches of 100 on one node: the tenth batch against the first;
//! (c) 300 volumes deleted at once, against `losetup --detach` + `rm`, one after another;
//! (d) 20 creates on a node where one resource's `losetup` hangs, against 20 without it.
//!
//! Needs root (loop devices). Run with `cargo bench -p cairn --bench engine`;
//! `CAIRN_BIN=/path/to/cairn` measures another binary (only LINSTOR's REST
//! API and the `controller`/`satellite` flags of commit f27e040 are used);
//! `CAIRN_BENCH_RUNS` (default 3) sets the repetitions.
//!
//! Everything lives in a temporary directory; the controller and the two
//! satellites listen on 127.0.10.21-23 (never `cairn up`'s addresses) on free
//! ports. A guard kills the processes, detaches every loop device whose
//! file lies in that directory and removes it, also when the bench panics.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use cairn_api::resource::{Resource, ResourceCreate};
use cairn_client::Client;

mod common;

const SIZE_KIB: i64 = 64 * 1024;
const CONTROLLER_IP: &str = "127.0.10.21";
/// The node of (a), (b) and (c): a plain satellite.
const NODE: (&str, &str) = ("e1", "127.0.10.22");
/// The node of (d): its `losetup` is the hanging wrapper.
const HUNG_NODE: (&str, &str) = ("e2", "127.0.10.23");
/// The satellites' time limit per command: long enough that a hang shows.
const COMMAND_TIMEOUT_SECS: u64 = 60;

fn cairn_bin() -> PathBuf {
    std::env::var_os("CAIRN_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cairn")))
}

fn runs() -> usize {
    std::env::var("CAIRN_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(3)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}

/// Loop devices the kernel has (bound or free): they persist after a
/// detach, and part (b) makes about 1,000.
fn loop_devices() -> usize {
    std::fs::read_dir("/sys/block")
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("loop")).count())
        .unwrap_or(0)
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// `command -v losetup`, resolved before the wrapper's PATH is set.
fn real_losetup() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("losetup"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/losetup"))
}

/// Loop devices whose backing file lies under `root`: (device, file).
fn loops_under(root: &Path) -> Vec<(String, String)> {
    let Ok(out) = Command::new("losetup").args(["--json", "--list"]).output() else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let prefix = root.display().to_string();
    v["loopdevices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["name"].as_str()?.to_string(), d["back-file"].as_str()?.to_string())))
        .filter(|(_, f)| f.starts_with(&prefix))
        .collect()
}

/// The processes and files of one bench run; dropping it leaves nothing behind.
struct Bench {
    root: tempfile::TempDir,
    url: String,
    /// The controller first, then the satellites.
    procs: Vec<Child>,
    wrapper: PathBuf,
}

impl Bench {
    fn armed(&self) -> PathBuf {
        self.wrapper.join("armed")
    }

    fn sleepers(&self) -> PathBuf {
        self.wrapper.join("sleepers")
    }

    fn arm(&self) {
        std::fs::write(self.armed(), b"").expect("arm the losetup wrapper");
    }

    /// Lets the wrapper pass everything through again and kills the
    /// `sleep`s it started (each exec'ed in place of a `losetup`).
    fn disarm(&self) {
        let _ = std::fs::remove_file(self.armed());
        let pids = std::fs::read_to_string(self.sleepers()).unwrap_or_default();
        for pid in pids.split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.starts_with(b"sleep\0") {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = std::fs::remove_file(self.sleepers());
    }

    fn pool_dir(&self, node: &str) -> PathBuf {
        self.root.path().join(node).join("pool")
    }

    /// Volume files left in a node's pool and loop devices left on the
    /// bench's files, for the leak check after each part.
    fn leftovers(&self) -> (usize, usize) {
        let files = [NODE.0, HUNG_NODE.0]
            .iter()
            .filter_map(|n| std::fs::read_dir(self.pool_dir(n)).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".img"))
            .count();
        (files, loops_under(self.root.path()).len())
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.disarm();
        for p in self.procs.iter_mut().rev() {
            let _ = p.kill();
            let _ = p.wait();
        }
        for (dev, _) in loops_under(self.root.path()) {
            let _ = Command::new("losetup").arg("--detach").arg(&dev).status();
        }
        // The temporary directory (pools, raw files, databases) goes with `root`.
    }
}

fn start() -> Bench {
    let root = tempfile::Builder::new().prefix("cairn-engine-bench").tempdir().expect("tempdir");
    let wrapper = root.path().join("wrapper");
    std::fs::create_dir_all(&wrapper).expect("wrapper dir");
    let mut b = Bench { url: String::new(), procs: Vec::new(), wrapper, root };
    // `losetup` for node e2: sleeps instead of running when armed and its
    // arguments name a volume file of a resource called hung<N>.
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in\n  */[Hh][Uu][Nn][Gg][0-9]*_*)\n    if [ -e '{armed}' ]; then\n      echo $$ >> '{sleepers}'\n      exec sleep 600\n    fi ;;\nesac\nexec '{real}' \"$@\"\n",
        armed = b.armed().display(),
        sleepers = b.sleepers().display(),
        real = real_losetup().display()
    );
    let path = b.wrapper.join("losetup");
    std::fs::write(&path, script).expect("write losetup wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod wrapper");

    let port = free_port(CONTROLLER_IP);
    b.url = format!("http://{CONTROLLER_IP}:{port}");
    let ctrl_dir = b.root.path().join("ctrl");
    b.procs.push(
        Command::new(cairn_bin())
            .args(["controller", "--rest-bind", &format!("{CONTROLLER_IP}:{port}"), "--data-dir"])
            .arg(&ctrl_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn controller"),
    );
    common::wait_http(&b.url);
    let c = Client::new(&b.url);
    let system_path = std::env::var("PATH").unwrap_or_default();
    for (name, ip) in [NODE, HUNG_NODE] {
        let sport = free_port(ip);
        let mut cmd = Command::new(cairn_bin());
        cmd.args(["satellite", "--node-name", name, "--listen", &format!("{ip}:{sport}"), "--data-dir"])
            .arg(b.root.path().join(name))
            .arg("--cluster-secret-file")
            .arg(ctrl_dir.join("cluster-secret"))
            .args(["--command-timeout", &COMMAND_TIMEOUT_SECS.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if name == HUNG_NODE.0 {
            cmd.env("PATH", format!("{}:{system_path}", b.wrapper.display()));
        }
        b.procs.push(cmd.spawn().expect("spawn satellite"));
        let t = Instant::now();
        while std::net::TcpStream::connect((ip, sport)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(30), "satellite {name} did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        common::register(&c, name, ip, sport, &b.pool_dir(name));
    }
    common::wait_online(&c);
    b
}

fn define(c: &Client, name: &str) {
    common::define(c, name, SIZE_KIB);
}

/// Creates `name` on `node` (storage layer only: no DRBD); the call returns
/// when the device is ready. `Err` with the messages when it did not work.
fn place(c: &Client, name: &str, node: &str) -> Result<(), String> {
    let rc = ResourceCreate {
        resource: Resource { node_name: node.into(), ..Default::default() },
        layer_list: Some(vec!["STORAGE".into()]),
        ..Default::default()
    };
    match c.create_resources(name, &[rc]) {
        Ok(replies) if replies.iter().all(|r| !r.is_error()) => Ok(()),
        Ok(replies) => Err(replies.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("; ")),
        Err(e) => Err(e.to_string()),
    }
}

fn delete(c: &Client, name: &str) {
    let replies = c.delete(&format!("/v1/resource-definitions/{name}")).expect("delete");
    assert!(replies.iter().all(|r| !r.is_error()), "{replies:?}");
}

/// Runs `f` for every name on `threads` threads (names dealt round-robin).
fn par<F: Fn(&str) + Sync>(names: &[String], threads: usize, f: F) {
    std::thread::scope(|s| {
        for t in 0..threads.min(names.len()) {
            let f = &f;
            s.spawn(move || names.iter().skip(t).step_by(threads).for_each(|n| f(n)));
        }
    });
}

/// One thread per name, all released at once; the time until every call returned.
fn burst<T: Send, F: Fn(&str) -> T + Sync>(names: &[String], f: F) -> (Duration, Vec<T>) {
    let go = Barrier::new(names.len() + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let (f, go) = (&f, &go);
                s.spawn(move || {
                    go.wait();
                    f(n)
                })
            })
            .collect();
        go.wait();
        let t = Instant::now();
        let out: Vec<T> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
        (t.elapsed(), out)
    })
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Raw floor: `truncate` + `losetup --find --show` for one file; the device.
fn raw_attach(file: &Path) -> String {
    run(Command::new("truncate").arg("--size").arg((SIZE_KIB * 1024).to_string()).arg(file));
    run(Command::new("losetup").args(["--find", "--show"]).arg(file))
}

fn raw_remove(dev: &str, file: &Path) {
    run(Command::new("losetup").arg("--detach").arg(dev));
    run(Command::new("rm").arg(file));
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn list(v: &[f64], digits: usize) -> String {
    v.iter().map(|x| format!("{x:.digits$}")).collect::<Vec<_>>().join(", ")
}

/// Milliseconds over the runs: median, minimum, each run.
fn times(v: &[f64], digits: usize) -> String {
    format!("median {:.digits$} ms, min {:.digits$} ms (runs: {})", median(v), min(v), list(v, 1))
}

fn ratios(v: &[f64]) -> String {
    format!("median {:.2}x (runs: {})", median(v), list(v, 2))
}

struct Table(Vec<[String; 3]>);

/// One of the four measurements.
type Part = fn(&Bench, &mut Table);

impl Table {
    fn row(&mut self, what: &str, result: String, goal: String) {
        println!("  {what}: {result} [{goal}]");
        self.0.push([what.to_string(), result, goal]);
    }
}

fn check_clean(b: &Bench, part: &str, t: &mut Table) {
    let (files, loops) = b.leftovers();
    if files + loops > 0 {
        t.row(&format!("LEFT BEHIND after {part}"), format!("{files} volume files, {loops} loop devices"), "should be 0".into());
    }
}

/// (a) create call to ready device, one after another, against the raw commands.
fn part_a(b: &Bench, t: &mut Table) {
    let c = Client::new(&b.url);
    let raw_dir = b.root.path().join("raw-a");
    std::fs::create_dir_all(&raw_dir).expect("raw dir");
    let (mut cairn, mut raw, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs() {
        let ns = names(&format!("a{r}x"), 20);
        let mut lat = Vec::new();
        for n in &ns {
            define(&c, n);
            let s = Instant::now();
            place(&c, n, NODE.0).expect("create");
            lat.push(ms(s.elapsed()));
        }
        let mut floor = Vec::new();
        for i in 0..20 {
            let f = raw_dir.join(format!("raw{r}_{i}.img"));
            let s = Instant::now();
            let dev = raw_attach(&f);
            floor.push(ms(s.elapsed()));
            raw_remove(&dev, &f);
        }
        par(&ns, 4, |n| delete(&c, n));
        cairn.push(median(&lat));
        raw.push(median(&floor));
        ratio.push(median(&lat) / median(&floor));
    }
    t.row(
        "(a) create 1 resource (1 volume, 64 MiB, FILE_THIN) to ready device, 20 calls one after another; median per run",
        times(&cairn, 1),
        String::new(),
    );
    t.row("(a) raw truncate + losetup --find --show, 20 one after another; median per run", times(&raw, 1), String::new());
    t.row("(a) ratio create / raw", ratios(&ratio), "goal <= 1.5x".into());
    check_clean(b, "(a)", t);
}

/// (b) 1,000 volumes on one node in ten bursts of 100 concurrent create calls.
fn part_b(b: &Bench, t: &mut Table) {
    let c = Client::new(&b.url);
    let (mut first, mut tenth, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let mut all_batches = Vec::new();
    for r in 0..runs() {
        let mut per_volume = Vec::new();
        let mut every = Vec::new();
        for k in 0..10 {
            let ns = names(&format!("b{r}x{k}x"), 100);
            par(&ns, 8, |n| define(&c, n));
            let (wall, res) = burst(&ns, |n| place(&c, n, NODE.0));
            res.into_iter().collect::<Result<Vec<()>, String>>().expect("create");
            per_volume.push(ms(wall) / 100.0);
            every.extend(ns);
        }
        par(&every, 16, |n| delete(&c, n));
        first.push(per_volume[0]);
        tenth.push(per_volume[9]);
        ratio.push(per_volume[9] / per_volume[0]);
        all_batches.push(per_volume);
    }
    t.row("(b) 1,000 volumes on one node, 10 bursts of 100 concurrent create calls: batch 1, per volume", times(&first, 2), String::new());
    t.row("(b) batch 10 (900 volumes already there), per volume", times(&tenth, 2), String::new());
    t.row("(b) ratio batch 10 / batch 1", ratios(&ratio), "goal <= 1.2x".into());
    for (r, per_volume) in all_batches.iter().enumerate() {
        t.row(&format!("(b) run {} per-volume ms, batches 1-10", r + 1), list(per_volume, 1), String::new());
    }
    check_clean(b, "(b)", t);
}

/// (c) 300 volumes deleted at once (300 concurrent DELETE calls), against
/// the raw detach + unlink one after another.
fn part_c(b: &Bench, t: &mut Table) {
    let c = Client::new(&b.url);
    let raw_dir = b.root.path().join("raw-c");
    std::fs::create_dir_all(&raw_dir).expect("raw dir");
    let (mut cairn, mut raw, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs() {
        let ns = names(&format!("c{r}x"), 300);
        par(&ns, 8, |n| define(&c, n));
        for chunk in ns.chunks(100) {
            let (_, res) = burst(chunk, |n| place(&c, n, NODE.0));
            res.into_iter().collect::<Result<Vec<()>, String>>().expect("create");
        }
        let (wall, _) = burst(&ns, |n| delete(&c, n));
        let files: Vec<PathBuf> = (0..300).map(|i| raw_dir.join(format!("raw{r}_{i}.img"))).collect();
        let devs: Vec<String> = files.iter().map(|f| raw_attach(f)).collect();
        let s = Instant::now();
        for (d, f) in devs.iter().zip(&files) {
            raw_remove(d, f);
        }
        let floor = s.elapsed();
        cairn.push(ms(wall));
        raw.push(ms(floor));
        ratio.push(wall.as_secs_f64() / floor.as_secs_f64());
    }
    t.row(
        "(c) delete 300 resources (1 volume each, one node) with 300 concurrent DELETE calls, until all returned",
        times(&cairn, 0),
        String::new(),
    );
    t.row("(c) raw losetup --detach + rm of 300 attached files, one after another", times(&raw, 0), String::new());
    t.row("(c) ratio delete / raw", ratios(&ratio), "goal <= 2x".into());
    check_clean(b, "(c)", t);
}

/// (d) 20 concurrent creates on node e2, without and with a hung `losetup`
/// for one other resource on the same node.
fn part_d(b: &Bench, t: &mut Table) {
    let c = Client::new(&b.url);
    let (mut normal, mut hung, mut hung_call) = (Vec::new(), Vec::new(), Vec::new());
    let mut failures = 0;
    for r in 0..runs() {
        let ns = names(&format!("d{r}n"), 20);
        par(&ns, 8, |n| define(&c, n));
        let (wall, res) = burst(&ns, |n| place(&c, n, HUNG_NODE.0));
        res.into_iter().collect::<Result<Vec<()>, String>>().expect("create");
        normal.push(ms(wall));
        par(&ns, 8, |n| delete(&c, n));

        let victim = format!("hung{r}");
        let ns = names(&format!("d{r}h"), 20);
        define(&c, &victim);
        par(&ns, 8, |n| define(&c, n));
        b.arm();
        let (wall, res, victim_took, victim_res) = std::thread::scope(|s| {
            let v = s.spawn(|| {
                let t = Instant::now();
                let res = place(&c, &victim, HUNG_NODE.0);
                (t.elapsed(), res)
            });
            std::thread::sleep(Duration::from_millis(500));
            let (wall, res) = burst(&ns, |n| place(&c, n, HUNG_NODE.0));
            // The 20 are back (or timed out with it): end the hang.
            b.disarm();
            let (victim_took, victim_res) = v.join().expect("victim thread");
            (wall, res, victim_took, victim_res)
        });
        failures += res.iter().filter(|r| r.is_err()).count();
        if let Some(Err(e)) = res.iter().find(|r| r.is_err()) {
            println!("  (d) run {}: a create of the 20 failed: {e}", r + 1);
        }
        hung.push(ms(wall));
        hung_call.push(format!("{:.1} s {}", victim_took.as_secs_f64(), if victim_res.is_ok() { "ok" } else { "failed" }));
        delete(&c, &victim);
        par(&ns, 8, |n| delete(&c, n));
    }
    t.row("(d) 20 concurrent creates on one node, until all 20 returned", times(&normal, 0), String::new());
    t.row(
        "(d) the same 20 while another resource's losetup hangs on that node (sent 0.5 s earlier)",
        format!("{}; {failures} of the creates failed", times(&hung, 0)),
        "goal: about the time without the hang".into(),
    );
    t.row(
        "(d) the hung resource's own create call (ended by killing its losetup after the 20 returned)",
        hung_call.join("; "),
        format!("satellite command timeout {COMMAND_TIMEOUT_SECS} s"),
    );
    check_clean(b, "(d)", t);
}

fn main() {
    let load_before = loadavg();
    let bin = cairn_bin();
    let loops_before = loop_devices();
    println!("engine bench: {} ({} runs), load {load_before}, {loops_before} loop devices in the kernel", bin.display(), runs());
    let b = start();
    let mut t = Table(Vec::new());
    let parts: [(&str, Part); 4] = [("a", part_a), ("c", part_c), ("d", part_d), ("b", part_b)];
    let only = std::env::var("CAIRN_BENCH_PARTS").unwrap_or_default();
    for (name, part) in parts {
        if only.is_empty() || only.contains(name) {
            let s = Instant::now();
            part(&b, &mut t);
            println!("  part ({name}) took {:.1} s, load {}", s.elapsed().as_secs_f64(), loadavg());
        }
    }
    drop(b);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nbinary {}\nload average before {load_before}, after {}\nloop devices in the kernel before {loops_before}, after {}\n",
        bin.display(),
        loadavg(),
        loop_devices()
    );
    let _ = writeln!(out, "| measurement | result | goal |\n| --- | --- | --- |");
    for [what, result, goal] in t.0 {
        let _ = writeln!(out, "| {what} | {result} | {goal} |");
    }
}
