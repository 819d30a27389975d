//! Starts and stops `cairn controller` processes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_client::Client;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// One controller process; killed on drop.
pub struct ControllerProc {
    pub data_dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl ControllerProc {
    pub fn start(data_dir: &Path) -> ControllerProc {
        let mut c = ControllerProc { data_dir: data_dir.to_path_buf(), port: free_port(), child: None };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.data_dir.join("controller.log")).expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["controller", "--rest-bind", &format!("127.0.0.1:{}", self.port), "--data-dir"])
            .arg(&self.data_dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cairn controller");
        self.child = Some(child);
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if client.raw("GET", "/health", None).is_ok_and(|r| r.status == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "controller did not become healthy; log:\n{}",
            std::fs::read_to_string(self.data_dir.join("controller.log")).unwrap_or_default()
        );
    }

    pub fn client(&self) -> Client {
        Client::new(&format!("http://127.0.0.1:{}", self.port))
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill controller");
            c.wait().expect("reap controller");
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        self.kill();
    }
}
