//! The DRBD commands Cairn runs, as argv (the command lines LINSTOR's
//! satellite uses), and the parsing of their output.
//!
//! Every `drbdadm` call names Cairn's own configuration (`-c`), which
//! includes the generated `.res` files, and tells drbdadm which `on`
//! section is this node (`__DRBD_NODE__`): the satellite rendered the file
//! and knows its own host name in it, even when `uname -n` differs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_exec::Cmd;

/// Builds DRBD command lines for one configuration file.
#[derive(Debug, Clone)]
pub struct Adm {
    /// The top-level configuration Cairn writes (global + include).
    pub conf: PathBuf,
    pub timeout: Duration,
}

impl Adm {
    pub fn new(conf: PathBuf, timeout: Duration) -> Adm {
        Adm { conf, timeout }
    }

    fn drbdadm(&self, host: &str) -> Cmd {
        Cmd::new("drbdadm").arg("-c").arg(self.conf.as_os_str()).env("__DRBD_NODE__", host).timeout(self.timeout)
    }

    /// `drbdadm -c FILE dump RSC`: the real parser checks one file.
    pub fn validate(&self, file: &Path, rsc: &str, host: &str) -> Cmd {
        Cmd::new("drbdadm").arg("-c").arg(file.as_os_str()).args(["dump", rsc]).env("__DRBD_NODE__", host).timeout(self.timeout)
    }

    /// `drbdmeta --force MINOR v09 DEV internal get-gi --node-id ID`:
    /// exit 0 = valid metadata, 1 or 255 = none.
    pub fn get_gi(&self, minor: u32, dev: &str, node_id: u8) -> Cmd {
        Cmd::new("drbdmeta")
            .arg("--force")
            .arg(minor.to_string())
            .args(["v09", dev, "internal", "get-gi", "--node-id"])
            .arg(node_id.to_string())
            .timeout(self.timeout)
            .quiet()
    }

    /// `drbdmeta --force --node-id ID MINOR v09 DEV internal set-gi GI`:
    /// writes generation ids into (not yet attached) metadata; `--force`
    /// because the resource may already be configured.
    pub fn set_gi(&self, minor: u32, dev: &str, node_id: u8, gi: &str) -> Cmd {
        Cmd::new("drbdmeta")
            .args(["--force", "--node-id"])
            .arg(node_id.to_string())
            .arg(minor.to_string())
            .args(["v09", dev, "internal", "set-gi", gi])
            .timeout(self.timeout)
            .quiet()
    }

    /// `drbdadm -vvv --max-peers N -- --force create-md RSC/VOL`.
    pub fn create_md(&self, rsc: &str, vol: u32, peer_slots: u8, host: &str) -> Cmd {
        self.drbdadm(host)
            .args(["-vvv", "--max-peers"])
            .arg(peer_slots.to_string())
            .args(["--", "--force", "create-md"])
            .arg(format!("{rsc}/{vol}"))
    }

    /// `drbdadm -vvv adjust RSC`; with `dry_run`, `-d` prints the kernel
    /// commands instead of running them.
    pub fn adjust(&self, rsc: &str, host: &str, dry_run: bool) -> Cmd {
        self.drbdadm(host).arg(if dry_run { "-d" } else { "-vvv" }).args(["adjust", rsc])
    }

    /// `drbdadm -vvv primary --force RSC`: makes fresh data the source of
    /// the initial sync.
    pub fn primary_force(&self, rsc: &str, host: &str) -> Cmd {
        self.drbdadm(host).args(["-vvv", "primary", "--force", rsc])
    }

    /// `drbdadm -vvv secondary RSC`.
    pub fn secondary(&self, rsc: &str, host: &str) -> Cmd {
        self.drbdadm(host).args(["-vvv", "secondary", rsc])
    }

    /// `drbdadm -vvv resize RSC/VOL`: grows the device to its backing size.
    pub fn resize(&self, rsc: &str, vol: u32, host: &str) -> Cmd {
        self.drbdadm(host).args(["-vvv", "resize"]).arg(format!("{rsc}/{vol}"))
    }

    /// `drbdadm -vvv suspend-io RSC`: new I/O waits until `resume-io`
    /// (around a snapshot of every node, as LINSTOR takes them).
    pub fn suspend_io(&self, rsc: &str, host: &str) -> Cmd {
        self.drbdadm(host).args(["-vvv", "suspend-io", rsc])
    }

    /// `drbdadm -vvv resume-io RSC`.
    pub fn resume_io(&self, rsc: &str, host: &str) -> Cmd {
        self.drbdadm(host).args(["-vvv", "resume-io", rsc])
    }

    /// `drbdsetup down RSC`.
    pub fn down(&self, rsc: &str) -> Cmd {
        Cmd::new("drbdsetup").args(["down", rsc]).timeout(self.timeout)
    }

    /// `drbdsetup forget-peer RSC NODE_ID`: frees the bitmap slot of a peer
    /// that was removed (its connection deleted), so that a replica created
    /// later under the same node id is synced from day 0, never from an old
    /// bitmap.
    pub fn forget_peer(&self, rsc: &str, node_id: u8) -> Cmd {
        Cmd::new("drbdsetup").args(["forget-peer", rsc]).arg(node_id.to_string()).timeout(self.timeout)
    }

    /// `drbdsetup disconnect RSC NODE_ID --force`: the connection goes
    /// StandAlone at once, its configuration stays. Forced, because the
    /// graceful form is a state change the peer must agree to, sent over
    /// the very connection that is stuck: in the VMs, with d3's data
    /// connections dead and its pings still answered, it retried every
    /// 30 s for as long as it was let.
    pub fn disconnect(&self, rsc: &str, node_id: u8) -> Cmd {
        Cmd::new("drbdsetup").args(["disconnect", rsc]).arg(node_id.to_string()).arg("--force").timeout(self.timeout)
    }

    /// `drbdsetup connect RSC NODE_ID`: a StandAlone connection tries again.
    pub fn connect(&self, rsc: &str, node_id: u8) -> Cmd {
        Cmd::new("drbdsetup").args(["connect", rsc]).arg(node_id.to_string()).timeout(self.timeout)
    }

    /// `drbdadm -vvv -- --force wipe-md RSC/VOL` (after `down`).
    pub fn wipe_md(&self, rsc: &str, vol: u32, host: &str) -> Cmd {
        self.drbdadm(host).args(["-vvv", "--", "--force", "wipe-md"]).arg(format!("{rsc}/{vol}"))
    }

    /// `drbdsetup events2 --statistics all`: the current state as `exists`
    /// lines, then a stream of changes. With `now`, only the current state
    /// (give it a time limit).
    pub fn events2(now: bool) -> Cmd {
        let c = Cmd::new("drbdsetup").arg("events2");
        let c = if now { c.arg("--now") } else { c };
        c.args(["--statistics", "all"])
    }
}

/// Versions from `drbdadm --version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrbdVersions {
    /// drbd-utils, e.g. (9, 22, 0).
    pub utils: Option<(u8, u8, u8)>,
    /// The loaded kernel module; None when no module is loaded.
    pub kernel: Option<(u8, u8, u8)>,
}

fn version_code(v: &str) -> Option<(u8, u8, u8)> {
    let n = u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok().filter(|n| *n != 0)?;
    Some(((n >> 16) as u8, (n >> 8) as u8, n as u8))
}

/// Parses `drbdadm --version` (`KEY=value` lines).
pub fn parse_versions(stdout: &str) -> DrbdVersions {
    let mut out = DrbdVersions::default();
    for line in stdout.lines() {
        match line.split_once('=') {
            Some(("DRBDADM_VERSION_CODE", v)) => out.utils = version_code(v),
            Some(("DRBD_KERNEL_VERSION_CODE", v)) => out.kernel = version_code(v),
            _ => {}
        }
    }
    out
}

impl DrbdVersions {
    /// Why the DRBD layer cannot run here (empty: it can).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.utils {
            None => out.push("drbd-utils: drbdadm --version did not report a version".to_string()),
            Some((maj, _, _)) if maj < 9 => out.push(format!("drbd-utils 9 needed, found {}", dotted(self.utils))),
            _ => {}
        }
        match self.kernel {
            None => out.push("DRBD 9 kernel module not loaded (drbdadm --version reports DRBD_KERNEL_VERSION_CODE=0x000000)".to_string()),
            Some((maj, _, _)) if maj < 9 => {
                out.push(format!("DRBD 9 kernel module needed, the loaded module is {}", dotted(self.kernel)));
            }
            _ => {}
        }
        out
    }
}

fn dotted(v: Option<(u8, u8, u8)>) -> String {
    v.map(|(a, b, c)| format!("{a}.{b}.{c}")).unwrap_or_else(|| "none".into())
}

/// Parses the kernel commands of `drbdadm -d adjust` (one per line).
pub fn dry_run_commands(stdout: &str) -> Vec<String> {
    stdout.lines().map(str::trim).filter(|l| l.starts_with("drbdsetup ") || l.starts_with("drbdmeta ")).map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn adm() -> Adm {
        Adm::new(PathBuf::from("/var/lib/cairn.d/cairn.conf"), Duration::from_secs(60))
    }

    #[test]
    fn command_lines_are_linstors() {
        let a = adm();
        let c = "/var/lib/cairn.d/cairn.conf";
        assert_eq!(
            a.create_md("web", 0, 7, "alpha").argv(),
            ["drbdadm", "-c", c, "-vvv", "--max-peers", "7", "--", "--force", "create-md", "web/0"]
        );
        assert_eq!(a.adjust("web", "alpha", false).argv(), ["drbdadm", "-c", c, "-vvv", "adjust", "web"]);
        assert_eq!(a.adjust("web", "alpha", true).argv(), ["drbdadm", "-c", c, "-d", "adjust", "web"]);
        assert_eq!(a.primary_force("web", "alpha").argv(), ["drbdadm", "-c", c, "-vvv", "primary", "--force", "web"]);
        assert_eq!(a.secondary("web", "alpha").argv(), ["drbdadm", "-c", c, "-vvv", "secondary", "web"]);
        assert_eq!(a.resize("web", 1, "alpha").argv(), ["drbdadm", "-c", c, "-vvv", "resize", "web/1"]);
        assert_eq!(a.down("web").argv(), ["drbdsetup", "down", "web"]);
        assert_eq!(a.wipe_md("web", 0, "alpha").argv(), ["drbdadm", "-c", c, "-vvv", "--", "--force", "wipe-md", "web/0"]);
        assert_eq!(
            a.get_gi(1000, "/dev/loop0", 2).argv(),
            ["drbdmeta", "--force", "1000", "v09", "/dev/loop0", "internal", "get-gi", "--node-id", "2"]
        );
        assert_eq!(Adm::events2(false).argv(), ["drbdsetup", "events2", "--statistics", "all"]);
        assert_eq!(Adm::events2(true).argv(), ["drbdsetup", "events2", "--now", "--statistics", "all"]);
        assert_eq!(a.adjust("web", "alpha", false).get_env(), [("__DRBD_NODE__".to_string(), "alpha".to_string())]);
    }

    #[test]
    fn versions_from_a_host_without_the_module() {
        let v = parse_versions(&fixture("drbdadm-version-no-module.txt"));
        assert_eq!(v, DrbdVersions { utils: Some((9, 22, 0)), kernel: None });
        let p = v.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("kernel module not loaded"), "{p:?}");
    }

    #[test]
    fn versions_with_drbd_9_and_with_8_4() {
        let v = parse_versions("DRBD_KERNEL_VERSION_CODE=0x090205\nDRBDADM_VERSION_CODE=0x091c00\n");
        assert_eq!(v, DrbdVersions { utils: Some((9, 28, 0)), kernel: Some((9, 2, 5)) });
        assert!(v.problems().is_empty());
        let old = parse_versions("DRBD_KERNEL_VERSION_CODE=0x08040b\nDRBDADM_VERSION_CODE=0x091600\n");
        assert!(old.problems()[0].contains("8.4.11"), "{:?}", old.problems());
        assert!(!parse_versions("").problems().is_empty());
    }

    #[test]
    fn dry_run_lists_the_kernel_commands() {
        let cmds = dry_run_commands(&fixture("drbdadm-dry-run-adjust.txt"));
        assert_eq!(cmds.first().map(String::as_str), Some("drbdsetup new-resource web 0"));
        assert!(cmds.iter().any(|c| c == "drbdsetup attach 1000 /dev/loop0 /dev/loop0 internal"), "{cmds:?}");
        assert_eq!(cmds.last().map(String::as_str), Some("drbdsetup connect web 1"));
        assert_eq!(cmds.len(), 7);
    }
}
