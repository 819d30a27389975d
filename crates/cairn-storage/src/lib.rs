//! Storage providers. Each turns "volume N of resource R, S KiB, in pool P"
//! into a block device with real tools, through `cairn-exec`.
//!
//! Today: FILE (fallocate) and FILE_THIN (truncate) pools, a file per
//! volume in the pool directory attached as a loop device, and DISKLESS.

pub mod drbd;
pub mod file;
pub mod luks;
pub mod lvm;
pub mod parse;
pub mod physical;
pub mod provider;
pub mod zfs;
pub mod zfs_send;

use cairn_exec::ExecError;

/// Errors of a storage operation.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("unexpected output of {program}: {detail}")]
    Output { program: &'static str, detail: String },
    #[error("refusing unsafe name '{0}': only letters, digits, '_' and inner '-' can become file names")]
    UnsafeName(String),
    #[error("the pool directory '{0}' must be an absolute path without '..'")]
    BadPoolDir(String),
    #[error("unusable storage pool backing: {0}")]
    BadBacking(String),
    #[error("invalid volume size {0} KiB")]
    BadSize(i64),
    #[error("{0}")]
    Missing(String),
}

impl StorageError {
    /// Details for the user: the command line and the tool's stderr.
    pub fn details(&self) -> Option<String> {
        match self {
            StorageError::Exec(e) => Some(e.details()),
            _ => None,
        }
    }
}

/// A volume size in KiB: positive, and small enough that its bytes fit a
/// `u64` and an `i64`. Checked once when a request is read; providers take
/// only this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kib(u64);

impl Kib {
    pub fn new(kib: i64) -> Result<Kib, StorageError> {
        u64::try_from(kib)
            .ok()
            .filter(|k| *k > 0 && k.checked_mul(1024).is_some_and(|b| i64::try_from(b).is_ok()))
            .map(Kib)
            .ok_or(StorageError::BadSize(kib))
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn bytes(self) -> u64 {
        self.0 * 1024
    }

    /// The size as the wire and the size reports have it.
    pub fn as_i64(self) -> i64 {
        // Fits: checked in `new`.
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl std::fmt::Display for Kib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A resource or snapshot name that passed [`safe_name`]: it can become
/// part of a file, LV or dataset name. Checked once when a request is
/// read; providers take only this.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    pub fn new(name: &str) -> Result<Name, StorageError> {
        safe_name(name).map(|n| Name(n.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that a resource name can safely become part of a file name: the
/// controller validates names already; this is the satellite's own guard.
pub fn safe_name(name: &str) -> Result<&str, StorageError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok { Ok(name) } else { Err(StorageError::UnsafeName(name.to_string())) }
}

/// Creates a directory and its missing parents with mode 0700 (only root
/// reads volume data and configuration). Directories that exist keep
/// their mode: they were made by someone else, for their own reasons.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Opens `path` for writing with mode 0600, truncating it; a file that
/// was there with a wider mode is narrowed to 0600 first.
pub fn create_private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// The volume number of a name's `<NNNNN>` part: exactly five digits.
pub fn volume_number(digits: &str) -> Option<u32> {
    (digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// `<rsc>_<NNNNN>` (LINSTOR's volume naming) -> resource and number.
pub fn split_volume_name(name: &str) -> Option<(&str, u32)> {
    let (rsc, nr) = name.rsplit_once('_')?;
    Some((rsc, volume_number(nr)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_directories_are_0700_and_private_files_0600() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a").join("b");
        create_private_dir(&deep).unwrap();
        assert_eq!((mode(&t.path().join("a")), mode(&deep)), (0o700, 0o700));
        // An existing directory keeps its mode.
        std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&deep).unwrap();
        assert_eq!(mode(&deep), 0o755);
        let f = deep.join("x.res");
        std::fs::write(&f, b"old").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create_private_file(&f).unwrap());
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"");
        drop(create_private_file(&deep.join("new")).unwrap());
        assert_eq!(mode(&deep.join("new")), 0o600);
    }

    #[test]
    fn volume_names_have_exactly_five_digits() {
        assert_eq!(split_volume_name("web_00003"), Some(("web", 3)));
        assert_eq!(split_volume_name("my_db_00012"), Some(("my_db", 12)));
        for bad in ["web_0003", "web_000003", "web_+0003", "web_0000a", "web00003", "web_00000_s1"] {
            assert_eq!(split_volume_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_are_positive_and_their_bytes_fit() {
        assert_eq!(Kib::new(1024).map(Kib::bytes).ok(), Some(1 << 20));
        for bad in [0, -1, i64::MAX, i64::MAX / 1024 + 1] {
            assert!(Kib::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Kib::new(i64::MAX / 1024).map(Kib::as_i64).ok(), Some(i64::MAX / 1024));
        assert!(Name::new("../x").is_err());
        assert_eq!(Name::new("pvc-1").map(|n| n.len()).ok(), Some(5));
    }

    #[test]
    fn names_that_could_escape_or_become_options_are_refused() {
        for bad in ["../etc", "a/b", "-rf", "ab-", "", "a b", "x\0y", "ä"] {
            assert!(safe_name(bad).is_err(), "{bad:?}");
        }
        assert!(safe_name("pvc-1_a").is_ok());
    }
}
