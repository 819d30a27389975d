//! A real PostgreSQL server for the store tests: `initdb` and `pg_ctl` in
//! a temporary directory, as the `postgres` system user when the tests run
//! as root (PostgreSQL refuses root), listening on 127.0.30.1 at a port
//! picked free (its Unix socket in the same directory), stopped and
//! removed when the handle is dropped.
//!
//! Binaries are found in `CAIRN_PG_BIN`, then on `PATH`, then in Debian's
//! `/usr/lib/postgresql/<newest>/bin`. Where there are none, [`PgServer::start`]
//! says so in one line on the terminal (not the captured test output) and
//! returns `None`: the test is skipped with its reason, never silently.
//! `scripts/test.sh` installs Debian's `postgresql`, so CI runs them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The loopback address the test servers listen on.
const ADDRESS: &str = "127.0.30.1";

pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// `Some(user)` when the server runs as another user than the tests.
    run_as: Option<String>,
    pub port: u16,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn find_bin() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("CAIRN_PG_BIN").map(PathBuf::from) {
        return has(&d).then_some(d);
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(d) = std::env::split_paths(&path).find(|d| has(d))
    {
        // Symbolic links on PATH: the directory of the real programs.
        return std::fs::canonicalize(d.join("initdb")).ok().and_then(|p| p.parent().map(Path::to_path_buf)).or(Some(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

fn skip(why: &str) -> Option<PgServer> {
    // Straight to the terminal: libtest captures print!/eprint! of tests
    // that pass, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED (PostgreSQL store tests): {why}");
    None
}

fn uid_gid(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

impl PgServer {
    /// A new, empty server with the superuser `cairn` (trust
    /// authentication on its own loopback address), or `None` with the
    /// reason said.
    pub fn start() -> Option<PgServer> {
        let Some(bin) = find_bin() else {
            return skip("no initdb/pg_ctl found (CAIRN_PG_BIN, PATH, /usr/lib/postgresql/*/bin); install Debian's postgresql");
        };
        let root = Command::new("id").arg("-u").output().ok().is_some_and(|o| o.stdout.trim_ascii() == b"0");
        let run_as = if root {
            if uid_gid("postgres").is_none() {
                return skip("running as root and there is no 'postgres' user to run the server as (Debian's postgresql makes it)");
            }
            Some("postgres".to_string())
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("cairn-pg-").tempdir().expect("make a temporary directory");
        if let Some(user) = &run_as {
            let (uid, gid) = uid_gid(user).expect("the user was there a moment ago");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("give the server's directory to its user");
        }
        let port = std::net::TcpListener::bind((ADDRESS, 0)).and_then(|l| l.local_addr()).expect("pick a free port").port();
        let server = PgServer { bin, dir, run_as, port };
        let data = server.data_dir();
        server.run("initdb", &["-D", &data, "-U", "cairn", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"]);
        let opts = format!(
            "-c listen_addresses={ADDRESS} -c port={port} -c unix_socket_directories={} -c fsync=off -c max_connections=40",
            server.dir.path().display()
        );
        let log = server.dir.path().join("server.log").display().to_string();
        server.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start"]);
        Some(server)
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs one of the server's programs as its user; panics with its
    /// output when it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!("{program} {args:?} failed: {}{}\n{log}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
    }

    /// One of the server's programs, as the server's user, in its
    /// directory (that user may not enter the tests' working directory).
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// The URL of database `name`, created empty on first use.
    pub fn url(&self, name: &str) -> String {
        let admin = format!("postgres://cairn@{ADDRESS}:{}/postgres", self.port);
        let store = crate::PgStore::open(&admin).expect("connect to the test server");
        store.execute(&format!("CREATE DATABASE \"{name}\"")).expect("create a database");
        format!("postgres://cairn@{ADDRESS}:{}/{name}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.command("pg_ctl").args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
    }
}
