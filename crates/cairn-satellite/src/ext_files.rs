//! External files (LINSTOR's `StltExternalFileHandler`): the files the
//! definitions of this node's resources deploy, written atomically (a
//! temporary file in the same directory, 0600, renamed over the target)
//! into directories the administrator allowed, and removed once no
//! resource here wants them.
//!
//! Like LINSTOR's satellite this keeps no state of its own: after a restart
//! the full apply says again which files are wanted; a file whose last
//! resource went while the satellite was down stays.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cairn_proto::{ExtFileDesired, ExtFileStatus, ObjectError, ext_file_allowed as allowed, ext_file_normalized as normalized};

/// The external files of one satellite.
pub struct ExtFiles {
    /// Allowed directories, as configured.
    allowed: Vec<String>,
    /// Test seam: every path is taken below this directory (several
    /// satellites share one host in the tests).
    root: Option<PathBuf>,
    state: parking_lot::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The files each resource asked for, by path.
    by_rsc: BTreeMap<String, BTreeMap<String, ExtFileDesired>>,
}

impl State {
    fn wanted_by_others(&self, rsc: &str, path: &str) -> bool {
        self.by_rsc.iter().any(|(r, files)| r != rsc && files.contains_key(path))
    }
}

fn error(message: String, cause: Option<String>) -> ObjectError {
    ObjectError { message, cause, details: None }
}

impl ExtFiles {
    pub fn new(allowed: Vec<String>, root: Option<PathBuf>) -> ExtFiles {
        ExtFiles { allowed, root, state: parking_lot::Mutex::new(State::default()) }
    }

    pub fn allowed_dirs(&self) -> &[String] {
        &self.allowed
    }

    fn on_disk(&self, path: &str) -> PathBuf {
        match &self.root {
            Some(root) => root.join(path.trim_start_matches('/')),
            None => PathBuf::from(path),
        }
    }

    /// LINSTOR's check: the file's directory is one of the allowed ones.
    fn check_allowed(&self, path: &str) -> Result<(), ObjectError> {
        let ok = path.starts_with('/') && !path.split('/').any(|e| e == ".." || e == ".") && allowed(path, &self.allowed);
        if ok {
            Ok(())
        } else {
            Err(error(
                format!(
                    "The path {} does not have a whitelisted parent. Allowed parent directories: [{}]",
                    normalized(path),
                    self.allowed.join(", ")
                ),
                Some("Allow the directory with the satellite's --allow-ext-files (LS_ALLOW_EXT_FILES).".into()),
            ))
        }
    }

    /// The file on disk: the path itself or the one alternative that
    /// exists (`path + suffix`); several existing are an error.
    fn actual(&self, f: &ExtFileDesired) -> Result<PathBuf, ObjectError> {
        let canonical = self.on_disk(&f.path);
        let mut existing: Vec<PathBuf> = Vec::new();
        if canonical.exists() {
            existing.push(canonical.clone());
        }
        for sfx in &f.alt_suffixes {
            let mut alt = canonical.clone().into_os_string();
            alt.push(sfx);
            let alt = PathBuf::from(alt);
            if alt.exists() {
                existing.push(alt);
            }
        }
        match existing.len() {
            0 => Ok(canonical),
            1 => Ok(existing.remove(0)),
            _ => Err(error(
                format!(
                    "Multiple alternatives of the file exist: [{}]",
                    existing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                ),
                None,
            )),
        }
    }

    /// Makes the files of resource `rsc` what it asks for now (none when
    /// it goes): writes those whose content differs, removes those it no
    /// longer asks for and no other resource wants.
    pub fn handle(&self, rsc: &str, files: &[ExtFileDesired]) -> Result<(), ObjectError> {
        let mut st = self.state.lock();
        let before = st.by_rsc.remove(rsc).unwrap_or_default();
        let now: BTreeMap<String, ExtFileDesired> = files.iter().map(|f| (f.path.clone(), f.clone())).collect();
        if !now.is_empty() {
            st.by_rsc.insert(rsc.to_string(), now.clone());
        }
        let mut first_error = None;
        for (path, f) in &before {
            if !now.contains_key(path)
                && !st.wanted_by_others(rsc, path)
                && let Err(e) = self.remove(f)
            {
                first_error.get_or_insert(e);
            }
        }
        for f in now.values() {
            if let Err(e) = self.check_allowed(&f.path).and_then(|()| self.write(f)) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn write(&self, f: &ExtFileDesired) -> Result<(), ObjectError> {
        let content = B64
            .decode(&f.content)
            .map_err(|e| error(format!("The content of external file {} is not base64.", f.path), Some(e.to_string())))?;
        let target = self.actual(f)?;
        if std::fs::read(&target).is_ok_and(|old| old == content) {
            return Ok(());
        }
        let dir = target.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| error(format!("Failed to create temporary file in directory: {}", dir.display()), Some(e.to_string())))
            .and_then(|mut file| {
                file.write_all(&content)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| error(format!("Failed to write content in temporary file: {}", tmp.display()), Some(e.to_string())))
            })
            .and_then(|()| {
                std::fs::rename(&tmp, &target).map_err(|e| {
                    error(
                        format!("Failed to atomically move temporary file ({}) to its destination ({})", tmp.display(), target.display()),
                        Some(e.to_string()),
                    )
                })
            });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        } else {
            tracing::info!(path = %target.display(), "external file written");
        }
        written
    }

    fn remove(&self, f: &ExtFileDesired) -> Result<(), ObjectError> {
        let canonical = self.on_disk(&f.path);
        let mut paths = vec![canonical.clone()];
        for sfx in &f.alt_suffixes {
            let mut alt = canonical.clone().into_os_string();
            alt.push(sfx);
            paths.push(PathBuf::from(alt));
        }
        for p in paths {
            match std::fs::remove_file(&p) {
                Ok(()) => tracing::info!(path = %p.display(), "external file deleted"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(error(format!("Failed to remove external file {}", f.path), Some(e.to_string()))),
            }
        }
        Ok(())
    }

    /// Where the file is and whether its content is the given one.
    pub fn status(&self, f: &ExtFileDesired) -> ExtFileStatus {
        let target = match self.actual(f) {
            Ok(t) => t,
            Err(e) => return ExtFileStatus { error: Some(e.message), ..Default::default() },
        };
        match std::fs::read(&target) {
            Ok(on_disk) => ExtFileStatus {
                actual_path: target.display().to_string(),
                content_match: B64.decode(&f.content).is_ok_and(|c| c == on_disk),
                error: None,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ExtFileStatus::default(),
            Err(e) => {
                ExtFileStatus { error: Some(format!("Failed to read external file: {}: {e}", target.display())), ..Default::default() }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn file(path: &str, content: &[u8]) -> ExtFileDesired {
        ExtFileDesired { path: path.into(), content: B64.encode(content), alt_suffixes: vec![".disabled".into()] }
    }

    #[test]
    fn files_are_written_privately_shared_between_resources_and_removed_with_the_last() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("etc/app")).unwrap();
        let x = ExtFiles::new(vec!["/etc/app/".into()], Some(root.clone()));
        let on_disk = root.join("etc/app/a.conf");
        x.handle("r1", &[file("/etc/app/a.conf", b"one")]).unwrap();
        assert_eq!(std::fs::read(&on_disk).unwrap(), b"one");
        assert_eq!(std::fs::metadata(&on_disk).unwrap().permissions().mode() & 0o777, 0o600);
        x.handle("r2", &[file("/etc/app/a.conf", b"one")]).unwrap();
        // Changed content is written again; no temporary file stays.
        x.handle("r1", &[file("/etc/app/a.conf", b"two")]).unwrap();
        assert_eq!(std::fs::read(&on_disk).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(root.join("etc/app")).unwrap().count(), 1);
        let st = x.status(&file("/etc/app/a.conf", b"two"));
        assert_eq!((st.actual_path, st.content_match), (on_disk.display().to_string(), true));
        assert!(!x.status(&file("/etc/app/a.conf", b"one")).content_match);
        // r2 still wants it when r1 goes; it goes with r2.
        x.handle("r1", &[]).unwrap();
        assert!(on_disk.exists());
        x.handle("r2", &[]).unwrap();
        assert!(!on_disk.exists());
        assert_eq!(x.status(&file("/etc/app/a.conf", b"two")), ExtFileStatus::default());
    }

    #[test]
    fn an_existing_alternative_is_updated_and_directories_not_allowed_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("etc/app/sub")).unwrap();
        let x = ExtFiles::new(vec!["/etc/app".into()], Some(root.clone()));
        std::fs::write(root.join("etc/app/a.conf.disabled"), b"old").unwrap();
        x.handle("r1", &[file("/etc/app/a.conf", b"new")]).unwrap();
        assert_eq!(std::fs::read(root.join("etc/app/a.conf.disabled")).unwrap(), b"new");
        assert!(!root.join("etc/app/a.conf").exists());
        let e = x.handle("r1", &[file("/etc/app/sub/b.conf", b"x")]).unwrap_err();
        assert_eq!(e.message, "The path /etc/app/sub/b.conf does not have a whitelisted parent. Allowed parent directories: [/etc/app]");
        assert!(!root.join("etc/app/sub/b.conf").exists());
        // Undeploying the first file removed its alternative too.
        assert!(!root.join("etc/app/a.conf.disabled").exists());
    }
}
