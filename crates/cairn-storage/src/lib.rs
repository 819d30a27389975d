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
pub mod zfs;

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
}

impl StorageError {
    /// Details for the user: the command line and the tool's stderr.
    pub fn details(&self) -> Option<String> {
        match self {
            StorageError::Exec(e) => Some(match e.stderr() {
                Some(stderr) => format!("command: {}\nstderr: {stderr}", e.command_line()),
                None => format!("command: {}", e.command_line()),
            }),
            _ => None,
        }
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
    fn volume_names_have_exactly_five_digits() {
        assert_eq!(split_volume_name("web_00003"), Some(("web", 3)));
        assert_eq!(split_volume_name("my_db_00012"), Some(("my_db", 12)));
        for bad in ["web_0003", "web_000003", "web_+0003", "web_0000a", "web00003", "web_00000_s1"] {
            assert_eq!(split_volume_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_that_could_escape_or_become_options_are_refused() {
        for bad in ["../etc", "a/b", "-rf", "ab-", "", "a b", "x\0y", "ä"] {
            assert!(safe_name(bad).is_err(), "{bad:?}");
        }
        assert!(safe_name("pvc-1_a").is_ok());
    }
}
