//! The LUKS layer: `cryptsetup` with LINSTOR's command lines. The volume's
//! passphrase always goes to stdin, never into an argument.

use std::sync::Arc;
use std::time::Duration;

use cairn_exec::{Cmd, CommandRunner, ExecError};
use cairn_proto::{LuksDesired, Secret};

use crate::{StorageError, safe_name, volume_number};

/// Room for the LUKS2 header in front of the data (LINSTOR's accounting).
pub const LUKS2_HEADER_KIB: i64 = 16 * 1024;

/// `Linstor-Crypt-<rsc>_<NNNNN>`, as LINSTOR names the mapping.
pub fn mapper_name(rsc: &str, nr: u32) -> Result<String, StorageError> {
    Ok(format!("Linstor-Crypt-{}_{nr:05}", safe_name(rsc)?))
}

/// `offset` and `size` (512-byte sectors) from `cryptsetup status`.
pub fn parse_status(out: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name).map(str::trim))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("offset:")?, field("size:")?))
}

/// The key derivation options among `StorDriver/LuksFormatOptions`' words
/// (`--pbkdf X`, `--pbkdf-memory=N`, ...), with their values.
fn pbkdf_options(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut take_value = false;
    for w in words {
        if take_value && !w.starts_with("--") {
            out.push(w.clone());
            take_value = false;
        } else if w.starts_with("--pbkdf") || w == "--iter-time" || w.starts_with("--iter-time=") {
            take_value = !w.contains('=');
            out.push(w.clone());
        } else {
            take_value = false;
        }
    }
    out
}

pub struct Luks {
    runner: Arc<dyn CommandRunner>,
    timeout: Duration,
    /// Mappings whose device was seen to open with the key they hold now
    /// (by mapping name): a volume with previous keys is tested once per
    /// key, not at every apply (each test derives the key, ~1 s).
    current: std::sync::Mutex<std::collections::HashMap<String, Secret>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    #[error("the volume's LUKS passphrase is not available: the controller's master passphrase was not entered since it started")]
    NoKey,
    /// The controller kept the key back (the reason is its own).
    #[error("{0}")]
    Withheld(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0} is not a LUKS device but holds data ({1}); refusing to format it")]
    HoldsData(String, String),
    #[error("neither the volume's LUKS passphrase nor any of its {1} previous ones opens {0}")]
    NoMatchingKey(String, usize),
}

impl From<ExecError> for LuksError {
    fn from(e: ExecError) -> Self {
        LuksError::Storage(StorageError::Exec(e))
    }
}

impl Luks {
    pub fn new(runner: Arc<dyn CommandRunner>, timeout: Duration) -> Luks {
        Luks { runner, timeout, current: Default::default() }
    }

    fn cryptsetup(&self) -> Cmd {
        Cmd::new("cryptsetup").timeout(self.timeout)
    }

    /// `cryptsetup status NAME`: the output when the mapping is active.
    async fn status(&self, name: &str) -> Result<Option<String>, LuksError> {
        match self.runner.run(&self.cryptsetup().args(["status", name])).await {
            Ok(o) => Ok(Some(o.stdout)),
            // 4: no such device.
            Err(ExecError::NonZero { code: 4 | 1, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Formats (only a device without a LUKS header), opens and, after the
    /// backing device grew, resizes. Returns the mapped device.
    pub async fn ensure(&self, dev: &str, rsc: &str, nr: u32, d: &LuksDesired) -> Result<String, LuksError> {
        let name = mapper_name(rsc, nr)?;
        let key = match (&d.key, &d.withheld) {
            (Some(k), _) => k,
            (None, Some(why)) => return Err(LuksError::Withheld(why.clone())),
            (None, None) => return Err(LuksError::NoKey),
        };
        let stdin = format!("{}\n", key.0);
        match self.status(&name).await? {
            None => {
                let is_luks = match self.runner.run(&self.cryptsetup().args(["isLuks", dev])).await {
                    Ok(_) => true,
                    Err(ExecError::NonZero { code: 1, .. }) => false,
                    Err(e) => return Err(e.into()),
                };
                if !is_luks {
                    // isLuks also says 1 for damaged headers and I/O errors:
                    // format only a device that carries no signature at all.
                    match self
                        .runner
                        .run(&Cmd::new("blkid").args(["-p", "-o", "value", "-s", "TYPE", dev]).timeout(self.timeout).quiet())
                        .await
                    {
                        Err(ExecError::NonZero { code: 2, .. }) => {}
                        Ok(o) => return Err(LuksError::HoldsData(dev.to_string(), o.stdout.trim().to_string())),
                        Err(e) => return Err(e.into()),
                    }
                    let mut c = self.cryptsetup().args(["-q", "luksFormat"]).args(&d.format_options);
                    if !d.format_options.iter().any(|o| o.starts_with("--pbkdf")) {
                        c = c.args(["--pbkdf-memory", "262144"]);
                    }
                    self.runner.run(&c.arg(dev).stdin(stdin.clone())).await?;
                }
                let c = self.cryptsetup().arg("open").args(&d.open_options).args(["--tries", "1", dev, &name]).stdin(stdin.clone());
                match self.runner.run(&c).await {
                    Ok(_) => {}
                    // 2: no key slot takes this passphrase.
                    Err(ExecError::NonZero { code: 2, .. }) if !d.previous_keys.is_empty() => {
                        self.change_key(dev, key, &d.previous_keys, &d.format_options).await?;
                        self.runner.run(&c).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
                self.remember(&name, key);
            }
            Some(status) => {
                if !d.previous_keys.is_empty() && !self.is_current(&name, key) {
                    let test = self.cryptsetup().args(["open", "--test-passphrase", "--tries", "1", dev]).stdin(stdin.clone());
                    match self.runner.run(&test).await {
                        Ok(_) => {}
                        Err(ExecError::NonZero { code: 2, .. }) => self.change_key(dev, key, &d.previous_keys, &d.format_options).await?,
                        Err(e) => return Err(e.into()),
                    }
                    self.remember(&name, key);
                }
                // Grown below us? The mapping covers offset + size sectors.
                let bytes = self.runner.run(&Cmd::new("blockdev").args(["--getsize64", dev]).timeout(self.timeout)).await?;
                let dev_sectors = bytes.stdout.trim().parse::<u64>().map(|b| b / 512).ok();
                if let (Some((offset, size)), Some(total)) = (parse_status(&status), dev_sectors)
                    && offset + size < total
                {
                    self.runner.run(&self.cryptsetup().args(["resize", &name]).stdin(stdin)).await?;
                }
            }
        }
        Ok(format!("/dev/mapper/{name}"))
    }

    fn is_current(&self, name: &str, key: &Secret) -> bool {
        self.current.lock().is_ok_and(|m| m.get(name) == Some(key))
    }

    fn remember(&self, name: &str, key: &Secret) {
        if let Ok(mut m) = self.current.lock() {
            m.insert(name.to_string(), key.clone());
        }
    }

    fn forget(&self, name: &str) {
        if let Ok(mut m) = self.current.lock() {
            m.remove(name);
        }
    }

    /// `cryptsetup luksChangeKey`: replaces the key slot of whichever of
    /// `previous` (newest first) opens `dev` with `key`; the volume key,
    /// and so the data, stays. The same key derivation options as a new
    /// format (`StorDriver/LuksFormatOptions`' `--pbkdf…`, else LINSTOR's
    /// `--pbkdf-memory 262144`).
    async fn change_key(&self, dev: &str, key: &Secret, previous: &[Secret], format_options: &[String]) -> Result<(), LuksError> {
        let pbkdf = pbkdf_options(format_options);
        for old in previous {
            let mut c = self.cryptsetup().arg("luksChangeKey").args(&pbkdf);
            if pbkdf.is_empty() {
                c = c.args(["--pbkdf-memory", "262144"]);
            }
            let c = c.args(["--tries", "1", dev]).stdin(format!("{}\n{}\n", old.0, key.0));
            match self.runner.run(&c).await {
                Ok(_) => {
                    tracing::info!(device = dev, "LUKS passphrase changed");
                    return Ok(());
                }
                Err(ExecError::NonZero { code: 2, .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LuksError::NoMatchingKey(dev.to_string(), previous.len()))
    }

    /// Closes the mapping of one volume, if open.
    pub async fn close(&self, rsc: &str, nr: u32) -> Result<(), LuksError> {
        let name = mapper_name(rsc, nr)?;
        if self.status(&name).await?.is_some() {
            self.runner.run(&self.cryptsetup().args(["close", &name])).await?;
        }
        self.forget(&name);
        Ok(())
    }

    /// Closes every mapping of `rsc` (before its storage goes).
    pub async fn close_all(&self, rsc: &str) -> Result<(), LuksError> {
        self.close_all_except(rsc, &[]).await
    }

    /// Closes the mappings of `rsc` whose volume number is not in `keep`.
    pub async fn close_all_except(&self, rsc: &str, keep: &[u32]) -> Result<(), LuksError> {
        let prefix = format!("Linstor-Crypt-{}_", safe_name(rsc)?);
        let Ok(dir) = std::fs::read_dir("/dev/mapper") else { return Ok(()) };
        for e in dir.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.strip_prefix(&prefix).and_then(volume_number).is_some_and(|nr| !keep.contains(&nr)) {
                self.runner.run(&self.cryptsetup().args(["close", &n])).await?;
                self.forget(&n);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cairn_exec::FakeRunner;
    use cairn_proto::Secret;

    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn desired(opts: &[&str]) -> LuksDesired {
        LuksDesired {
            key: Some(Secret("k3y".into())),
            format_options: opts.iter().map(|s| s.to_string()).collect(),
            open_options: vec![],
            withheld: None,
            previous_keys: vec![],
        }
    }

    #[test]
    fn a_new_volume_is_formatted_then_opened_with_the_key_on_stdin() {
        let f = Arc::new(FakeRunner::new());
        let l = Luks::new(f.clone(), Duration::from_secs(5));
        f.expect_failure(&["cryptsetup", "status", "Linstor-Crypt-sec_00000"], 4, "")
            .expect_failure(&["cryptsetup", "isLuks", "/dev/vg0/sec_00000"], 1, "")
            .expect_failure(&["blkid", "-p", "-o", "value", "-s", "TYPE", "/dev/vg0/sec_00000"], 2, "")
            .expect(&["cryptsetup", "-q", "luksFormat", "--pbkdf-memory", "262144", "/dev/vg0/sec_00000"], "")
            .expect(&["cryptsetup", "open", "--tries", "1", "/dev/vg0/sec_00000", "Linstor-Crypt-sec_00000"], "");
        let dev = rt().block_on(l.ensure("/dev/vg0/sec_00000", "sec", 0, &desired(&[]))).unwrap();
        assert_eq!(dev, "/dev/mapper/Linstor-Crypt-sec_00000");
        assert!(f.is_done(), "{:?}", f.calls());
        // User options replace LINSTOR's default pbkdf memory; an existing
        // header is never formatted again.
        f.expect_failure(&["cryptsetup", "status", "Linstor-Crypt-sec_00000"], 4, "")
            .expect(&["cryptsetup", "isLuks", "/dev/vg0/sec_00000"], "")
            .expect(&["cryptsetup", "open", "--tries", "1", "/dev/vg0/sec_00000", "Linstor-Crypt-sec_00000"], "");
        rt().block_on(l.ensure("/dev/vg0/sec_00000", "sec", 0, &desired(&["--pbkdf", "pbkdf2"]))).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn an_open_mapping_is_resized_only_when_the_device_grew() {
        let status =
            "/dev/mapper/Linstor-Crypt-sec_00000 is active.\n  type:    LUKS2\n  offset:  32768 sectors\n  size:    98304 sectors\n";
        let f = Arc::new(FakeRunner::new());
        let l = Luks::new(f.clone(), Duration::from_secs(5));
        f.expect(&["cryptsetup", "status", "Linstor-Crypt-sec_00000"], status)
            .expect(&["blockdev", "--getsize64", "/dev/vg0/sec_00000"], "67108864\n");
        rt().block_on(l.ensure("/dev/vg0/sec_00000", "sec", 0, &desired(&[]))).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        f.expect(&["cryptsetup", "status", "Linstor-Crypt-sec_00000"], status)
            .expect(&["blockdev", "--getsize64", "/dev/vg0/sec_00000"], "134217728\n")
            .expect(&["cryptsetup", "resize", "Linstor-Crypt-sec_00000"], "");
        rt().block_on(l.ensure("/dev/vg0/sec_00000", "sec", 0, &desired(&[]))).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        assert_eq!(parse_status(status), Some((32768, 98304)));
    }

    #[test]
    fn a_device_with_data_is_never_formatted() {
        let f = Arc::new(FakeRunner::new());
        let l = Luks::new(f.clone(), Duration::from_secs(5));
        f.expect_failure(&["cryptsetup", "status", "Linstor-Crypt-sec_00000"], 4, "")
            .expect_failure(&["cryptsetup", "isLuks", "/dev/vg0/sec_00000"], 1, "")
            .expect(&["blkid", "-p", "-o", "value", "-s", "TYPE", "/dev/vg0/sec_00000"], "ext4\n");
        let e = rt().block_on(l.ensure("/dev/vg0/sec_00000", "sec", 0, &desired(&[]))).unwrap_err();
        assert!(e.to_string().contains("holds data (ext4)"), "{e}");
        assert!(f.is_done(), "no luksFormat: {:?}", f.calls());
    }

    #[test]
    fn a_closed_device_the_key_does_not_open_gets_its_key_changed_from_a_previous_one() {
        const DEV: &str = "/dev/vg0/sec_00000";
        let f = Arc::new(FakeRunner::new());
        let l = Luks::new(f.clone(), Duration::from_secs(5));
        let open = ["cryptsetup", "open", "--tries", "1", DEV, "Linstor-Crypt-sec_00000"];
        let change = ["cryptsetup", "luksChangeKey", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--tries", "1", DEV];
        f.expect_failure(&["cryptsetup", "status", "Linstor-Crypt-sec_00000"], 4, "")
            .expect(&["cryptsetup", "isLuks", DEV], "")
            .expect_failure(&open, 2, "No key available with this passphrase.")
            // Newest first: the first previous key is not the device's.
            .expect_failure(&change, 2, "No key available with this passphrase.")
            .expect(&change, "")
            .expect(&open, "");
        let mut d = desired(&["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--cipher", "aes-xts-plain64"]);
        d.previous_keys = vec![Secret("newer".into()), Secret("older".into())];
        rt().block_on(l.ensure(DEV, "sec", 0, &d)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // Open now with the key it was seen to open with: no test again.
        let status = "/dev/mapper/Linstor-Crypt-sec_00000 is active.\n  offset:  32768 sectors\n  size:    98304 sectors\n";
        f.expect(&["cryptsetup", "status", "Linstor-Crypt-sec_00000"], status).expect(&["blockdev", "--getsize64", DEV], "67108864\n");
        rt().block_on(l.ensure(DEV, "sec", 0, &d)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // No previous key opens it either: the volume's error says so.
        let f = Arc::new(FakeRunner::new());
        let l = Luks::new(f.clone(), Duration::from_secs(5));
        f.expect_failure(&["cryptsetup", "status", "Linstor-Crypt-sec_00000"], 4, "")
            .expect(&["cryptsetup", "isLuks", DEV], "")
            .expect_failure(&open, 2, "")
            .expect_failure(&change, 2, "")
            .expect_failure(&change, 2, "");
        let e = rt().block_on(l.ensure(DEV, "sec", 0, &d)).unwrap_err();
        assert!(matches!(e, LuksError::NoMatchingKey(_, 2)), "{e}");
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn an_open_device_is_tested_once_and_changed_under_the_mapping() {
        const DEV: &str = "/dev/vg0/sec_00000";
        let status = "/dev/mapper/Linstor-Crypt-sec_00000 is active.\n  offset:  32768 sectors\n  size:    98304 sectors\n";
        let f = Arc::new(FakeRunner::new());
        let l = Luks::new(f.clone(), Duration::from_secs(5));
        let mut d = desired(&[]);
        d.previous_keys = vec![Secret("old".into())];
        f.expect(&["cryptsetup", "status", "Linstor-Crypt-sec_00000"], status)
            .expect_failure(&["cryptsetup", "open", "--test-passphrase", "--tries", "1", DEV], 2, "")
            .expect(&["cryptsetup", "luksChangeKey", "--pbkdf-memory", "262144", "--tries", "1", DEV], "")
            .expect(&["blockdev", "--getsize64", DEV], "67108864\n");
        rt().block_on(l.ensure(DEV, "sec", 0, &d)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        f.expect(&["cryptsetup", "status", "Linstor-Crypt-sec_00000"], status).expect(&["blockdev", "--getsize64", DEV], "67108864\n");
        rt().block_on(l.ensure(DEV, "sec", 0, &d)).unwrap();
        assert!(f.is_done(), "tested once: {:?}", f.calls());
        // Another key: tested again (it opens: nothing to change).
        d.key = Some(Secret("k4y".into()));
        f.expect(&["cryptsetup", "status", "Linstor-Crypt-sec_00000"], status)
            .expect(&["cryptsetup", "open", "--test-passphrase", "--tries", "1", DEV], "")
            .expect(&["blockdev", "--getsize64", DEV], "67108864\n");
        rt().block_on(l.ensure(DEV, "sec", 0, &d)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        assert_eq!(
            pbkdf_options(&["--pbkdf-memory=1024".into(), "--iter-time".into(), "10".into(), "--cipher".into(), "x".into()]),
            ["--pbkdf-memory=1024", "--iter-time", "10"]
        );
    }

    #[test]
    fn without_the_key_nothing_runs() {
        let f = Arc::new(FakeRunner::new());
        let l = Luks::new(f.clone(), Duration::from_secs(5));
        let e = rt().block_on(l.ensure("/dev/x", "sec", 0, &LuksDesired::default())).unwrap_err();
        assert!(matches!(e, LuksError::NoKey));
        let withheld = LuksDesired { withheld: Some("kept back".into()), ..LuksDesired::default() };
        let e = rt().block_on(l.ensure("/dev/x", "sec", 0, &withheld)).unwrap_err();
        assert!(matches!(&e, LuksError::Withheld(w) if w == "kept back"), "{e}");
        assert!(f.calls().is_empty());
    }
}
