//! One controller of the real binary, started once and shared by every
//! test of the REST tier (envelope, nodes, resource groups, placement),
//! and three satellites for the placement tests, started once too.
//!
//! They live on 127.0.10.20-23 with ports picked free, never on what
//! `cairn up` uses (127.0.0.1:3370 and :3366), nor on the python tier's
//! 127.0.10.1-3. Statics are never dropped, so each process runs under a
//! small `sh` watchdog that reads the test process's end of a pipe: when
//! the test binary exits (or is killed), the pipe closes, the watchdog
//! stops its process, detaches the loop devices of the volume files in its
//! directory and removes that directory.
//!
//! Tests share the cluster and run in parallel: each uses names of its own
//! (`it-<test>-...`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cairn_api::ApiCallRc;
use cairn_api::node::{NetInterface, Node};
use cairn_api::storage_pool::StoragePool;
use cairn_client::{Client, ClientError, RawResponse};

const CONTROLLER_IP: &str = "127.0.10.20";
pub const SATELLITE_IPS: [&str; 3] = ["127.0.10.21", "127.0.10.22", "127.0.10.23"];
/// The storage pool the placement tests place into (FILE_THIN on every
/// satellite); no other node has it.
pub const POOL: &str = "itpool";

const WATCHDOG: &str = r#"dir=$1; shift
"$@" >>"$dir/log" 2>&1 </dev/null &
pid=$!
while read -r _; do :; done
kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
find "$dir" -name '*.img' 2>/dev/null | while read -r f; do
  losetup -nO NAME -j "$f" 2>/dev/null | while read -r dev; do losetup -d "$dev"; done
done
rm -rf "$dir""#;

/// A `cairn` process under its watchdog; lives as long as the test binary.
pub struct Daemon {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    _watchdog: Child,
    _lifeline: ChildStdin,
}

impl Daemon {
    fn start(addr: SocketAddr, args: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new().prefix("cairn-it-").tempdir().expect("tempdir").keep();
        let mut watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "watchdog"])
            .arg(&dir)
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let lifeline = watchdog.stdin.take().expect("watchdog stdin");
        Daemon { dir, addr, _watchdog: watchdog, _lifeline: lifeline }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

pub fn free_port_on(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port on a 127.0.10.x address")
}

fn wait_until(what: &str, log: impl Fn() -> String, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} timed out; log:\n{}", log());
}

/// The shared controller.
pub fn controller() -> &'static Daemon {
    static CONTROLLER: OnceLock<Daemon> = OnceLock::new();
    CONTROLLER.get_or_init(|| {
        let addr = SocketAddr::new(CONTROLLER_IP.parse().expect("an IP"), free_port_on(CONTROLLER_IP));
        let d = Daemon::start(addr, &["controller", "--rest-bind", &addr.to_string()]);
        let c = Client::new(&format!("http://{addr}"));
        wait_until("controller start", || d.log(), || c.raw("GET", "/health", None).is_ok_and(|r| r.status == 200));
        // No DRBD 9 module on test hosts: plain volumes, as `cairn up` does there.
        let props = serde_json::json!({"override_props": {"Cairn/DefaultLayerStack": "STORAGE"}});
        c.post("/v1/controller/properties", &props).expect("set the default layer stack");
        d
    })
}

pub fn client() -> Client {
    Client::new(&format!("http://{}", controller().addr))
}

/// A satellite of the shared controller: node name, process, pool directory.
pub struct Satellite {
    pub name: String,
    pub daemon: Daemon,
    pub pool_dir: PathBuf,
}

/// Three satellites (`it-sat1..3`) with a FILE_THIN pool [`POOL`] each, all
/// ONLINE; `None` without root (loop devices need it).
pub fn satellites() -> Option<&'static [Satellite]> {
    static SATELLITES: OnceLock<Option<Vec<Satellite>>> = OnceLock::new();
    SATELLITES
        .get_or_init(|| {
            let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
            if !is_root {
                return None;
            }
            let ctrl = controller();
            let secret = ctrl.dir.join("cluster-secret");
            let client = client();
            let sats: Vec<Satellite> = SATELLITE_IPS
                .iter()
                .enumerate()
                .map(|(i, ip)| {
                    let name = format!("it-sat{}", i + 1);
                    let addr = SocketAddr::new(ip.parse().expect("an IP"), free_port_on(ip));
                    let secret = secret.to_str().expect("utf-8 path");
                    let daemon = Daemon::start(
                        addr,
                        &["satellite", "--node-name", &name, "--listen", &addr.to_string(), "--cluster-secret-file", secret],
                    );
                    wait_until(&format!("{name} listening"), || daemon.log(), || TcpStream::connect(addr).is_ok());
                    let node = Node {
                        name: name.clone(),
                        node_type: "SATELLITE".into(),
                        net_interfaces: vec![NetInterface {
                            name: "default".into(),
                            address: ip.to_string(),
                            satellite_port: Some(i64::from(addr.port())),
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    client.create_node(&node).unwrap_or_else(|e| panic!("create {name}: {e}"));
                    let pool_dir = daemon.dir.join("pool");
                    let pool = StoragePool {
                        storage_pool_name: POOL.into(),
                        provider_kind: "FILE_THIN".into(),
                        props: [("StorDriver/StorPoolName".to_string(), pool_dir.to_string_lossy().into_owned())].into(),
                        ..Default::default()
                    };
                    client.create_stor_pool(&name, &pool).unwrap_or_else(|e| panic!("create the pool of {name}: {e}"));
                    Satellite { name, daemon, pool_dir }
                })
                .collect();
            let logs = || sats.iter().map(|s| format!("== {}\n{}", s.name, s.daemon.log())).collect::<String>();
            wait_until("satellites online", logs, || {
                client.nodes().is_ok_and(|nodes| {
                    sats.iter().all(|s| nodes.iter().any(|n| n.name == s.name && n.connection_status.as_deref() == Some("ONLINE")))
                })
            });
            Some(sats)
        })
        .as_deref()
}

/// The reply list of a raw answer; panics when the body is not one.
pub fn replies(r: &RawResponse) -> Vec<ApiCallRc> {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("status {}: body is not an ApiCallRc list ({e}): {}", r.status, String::from_utf8_lossy(&r.body)))
}

/// A successful reply list: no error entry, and at least one entry with
/// exactly `ret_code`.
#[track_caller]
pub fn assert_success(result: Result<Vec<ApiCallRc>, ClientError>, ret_code: i64) -> Vec<ApiCallRc> {
    let rcs = result.unwrap_or_else(|e| panic!("expected success {ret_code:#x}: {e}"));
    assert!(!rcs.iter().any(ApiCallRc::is_error), "{rcs:?}");
    assert!(rcs.iter().any(|r| r.ret_code == ret_code), "no entry {ret_code:#x} in {rcs:?}");
    rcs
}

/// A refused request: the HTTP status and LINSTOR's full ret_code of the
/// first entry.
#[track_caller]
pub fn assert_refused(result: Result<Vec<ApiCallRc>, ClientError>, status: u16, ret_code: i64) -> ApiCallRc {
    match result {
        Err(ClientError::Api { status: got, replies, .. }) => {
            assert_eq!(got, status, "{replies:?}");
            let first = replies.first().unwrap_or_else(|| panic!("an empty reply list with {got}"));
            assert_eq!(first.ret_code, ret_code, "want {ret_code:#x}, got {:#x}: {first:?}", first.ret_code);
            assert!(!first.message.is_empty());
            first.clone()
        }
        other => panic!("expected {status} with {ret_code:#x}, got {other:?}"),
    }
}

/// Waits (up to 10 s) until no file in `dir` starts with `prefix`.
pub fn wait_gone(dir: &Path, prefix: &str) -> Vec<String> {
    let list = || -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(prefix)).collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !list().is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    list()
}
