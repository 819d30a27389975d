//! The LUKS layer: `cryptsetup` with LINSTOR's command lines. The volume's
//! passphrase always goes to stdin, never into an argument.

use std::sync::Arc;
use std::time::Duration;

use cairn_exec::{Cmd, CommandRunner, ExecError};
use cairn_proto::LuksDesired;

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

pub struct Luks {
    runner: Arc<dyn CommandRunner>,
    timeout: Duration,
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
}

impl From<ExecError> for LuksError {
    fn from(e: ExecError) -> Self {
        LuksError::Storage(StorageError::Exec(e))
    }
}

impl Luks {
    pub fn new(runner: Arc<dyn CommandRunner>, timeout: Duration) -> Luks {
        Luks { runner, timeout }
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
                let c = self.cryptsetup().arg("open").args(&d.open_options).args(["--tries", "1", dev, &name]).stdin(stdin);
                self.runner.run(&c).await?;
            }
            Some(status) => {
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

    /// Closes the mapping of one volume, if open.
    pub async fn close(&self, rsc: &str, nr: u32) -> Result<(), LuksError> {
        let name = mapper_name(rsc, nr)?;
        if self.status(&name).await?.is_some() {
            self.runner.run(&self.cryptsetup().args(["close", &name])).await?;
        }
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
