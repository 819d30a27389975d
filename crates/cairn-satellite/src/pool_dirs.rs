//! Where FILE and FILE_THIN pools may keep their volumes: inside the
//! satellite's data directory or a directory the operator allowed
//! (`--allow-pool-dirs`), never in a system directory. The controller's
//! API lets anyone name any directory; the satellite, which runs as root,
//! decides.

use std::path::{Component, Path, PathBuf};

/// System directories no pool may be in (nor in anything below them);
/// `/` itself is refused too.
pub const FORBIDDEN: [&str; 6] = ["/dev", "/proc", "/sys", "/boot", "/etc", "/usr"];

/// The places a satellite allows pool directories in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDirs {
    /// None: anywhere but the system directories (unit tests of the
    /// applier only; a running satellite always has a list).
    allowed: Option<Vec<PathBuf>>,
}

/// Why a pool directory is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub cause: String,
}

impl PoolDirs {
    /// The data directory and the operator's list.
    pub fn new(data_dir: &Path, extra: &[PathBuf]) -> PoolDirs {
        PoolDirs { allowed: Some(std::iter::once(data_dir.to_path_buf()).chain(extra.iter().cloned()).collect()) }
    }

    /// Anywhere but the system directories.
    pub fn unrestricted() -> PoolDirs {
        PoolDirs { allowed: None }
    }

    /// Checks a pool directory as configured on the controller, after
    /// resolving symlinks and `..`.
    pub fn check(&self, dir: &str) -> Result<(), Refusal> {
        let path = Path::new(dir);
        if !path.is_absolute() {
            return Err(Refusal { message: format!("The pool directory '{dir}' is not an absolute path."), cause: String::new() });
        }
        let real = resolve(path);
        let missing = if real.exists() { "" } else { " (it does not exist)" };
        let shown = if real == path { String::new() } else { format!(", which resolves to {}", real.display()) };
        if real.parent().is_none() {
            return Err(Refusal {
                message: format!("The pool directory '{dir}' is not allowed: it is the root directory."),
                cause: format!("'{dir}'{shown} is /."),
            });
        }
        if let Some(sys) = FORBIDDEN.iter().map(Path::new).find(|sys| real.starts_with(sys)) {
            return Err(Refusal {
                message: format!("The pool directory '{dir}' is not allowed: it is in the system directory {}.", sys.display()),
                cause: format!("'{dir}'{shown}{missing} is inside {}, where no pool may be.", sys.display()),
            });
        }
        let Some(allowed) = &self.allowed else { return Ok(()) };
        if allowed.iter().any(|a| real.starts_with(resolve(a))) {
            return Ok(());
        }
        let list = allowed.iter().map(|a| a.display().to_string()).collect::<Vec<_>>().join(", ");
        Err(Refusal {
            message: format!("The pool directory '{dir}' is outside the directories this satellite allows."),
            cause: format!(
                "'{dir}'{shown}{missing} is not inside {list}. Start the satellite with --allow-pool-dirs (CAIRN_ALLOW_POOL_DIRS, allow_pool_dirs) naming it or a parent."
            ),
        })
    }
}

/// The real location of `path`: its longest existing ancestor with
/// symlinks resolved, then the rest of the path (which does not exist yet)
/// with `.` and `..` applied.
pub fn resolve(path: &Path) -> PathBuf {
    let mut base = path;
    let mut rest: Vec<Component> = Vec::new();
    let mut real = loop {
        if let Ok(r) = std::fs::canonicalize(base) {
            break r;
        }
        match (base.parent(), base.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                base = parent;
            }
            _ => break PathBuf::from("/"),
        }
    };
    for c in rest.into_iter().rev() {
        match c {
            Component::Normal(n) => real.push(n),
            Component::ParentDir => {
                real.pop();
            }
            _ => {}
        }
    }
    real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_directories_and_root_are_refused_however_they_are_named() {
        let any = PoolDirs::unrestricted();
        for bad in ["/", "/dev", "/proc/self", "/sys/x", "/boot", "/etc/cairn", "/usr/lib/pool", "/tmp/../etc", "/var/../../dev/shm"] {
            assert!(any.check(bad).is_err(), "{bad}");
        }
        assert!(any.check("relative/pool").is_err());
        assert!(any.check("/srv/pool").is_ok());
        assert!(any.check("/devices").is_ok(), "only /dev and below, not every name starting so");
    }

    #[test]
    fn symlinks_are_followed_before_deciding() {
        let d = tempfile::tempdir().expect("tempdir");
        let data = d.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        std::os::unix::fs::symlink("/etc", data.join("sneaky")).expect("symlink");
        let dirs = PoolDirs::new(&data, &[]);
        let err = dirs.check(data.join("sneaky/pool").to_str().expect("utf-8")).expect_err("through a link into /etc");
        assert!(err.message.contains("system directory /etc"), "{err:?}");
        assert!(err.cause.contains("resolves to /etc/pool"), "{err:?}");
        assert!(err.cause.contains("does not exist"), "{err:?}");
        // A link out of the data directory to a place it does not allow.
        std::os::unix::fs::symlink(d.path(), data.join("out")).expect("symlink");
        let err = dirs.check(data.join("out/elsewhere").to_str().expect("utf-8")).expect_err("outside");
        assert!(err.message.contains("outside the directories this satellite allows"), "{err:?}");
        assert!(dirs.check(data.join("pool").to_str().expect("utf-8")).is_ok(), "inside the data directory, not made yet");
        assert!(dirs.check(data.join("a/../pool").to_str().expect("utf-8")).is_ok());
    }

    #[test]
    fn the_allow_list_extends_the_data_directory() {
        let d = tempfile::tempdir().expect("tempdir");
        let (data, extra) = (d.path().join("data"), d.path().join("pools"));
        let p = extra.join("fast").display().to_string();
        assert!(PoolDirs::new(&data, &[]).check(&p).is_err());
        assert!(PoolDirs::new(&data, std::slice::from_ref(&extra)).check(&p).is_ok());
        assert!(
            PoolDirs::new(&data, std::slice::from_ref(&extra)).check(&format!("{}2/x", extra.display())).is_err(),
            "pools2 is not pools"
        );
    }
}
