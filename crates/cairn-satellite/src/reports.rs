//! The satellite's error reports: one JSON file per report
//! (`<data dir>/error-reports/ErrorReport-<id>.json`), the newest
//! [`KEEP`] kept. A report is written when an object's error (a failed
//! command while applying: its command line, exit code and stderr) first
//! appears in what the satellite answers, or changes; the same error seen
//! again on the next apply or observation is not reported twice. The
//! controller lists and deletes them over [`cairn_proto::PATH_ERROR_REPORTS`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_proto::error_report::{self, FailedCommand, MODULE_SATELLITE, Problem};
use cairn_proto::{ErrorReport, ErrorReportFilter, ObjectError, Observed};
use parking_lot::Mutex;

/// How many reports a satellite keeps; older ones are removed.
pub const KEEP: usize = 1000;
const PREFIX: &str = "ErrorReport-";
const SUFFIX: &str = ".json";

pub struct Reports {
    dir: PathBuf,
    node: String,
    instance: String,
    next: AtomicU64,
    keep: usize,
    /// The error last reported per object (`resource:NAME`, `pool:NAME`).
    seen: Mutex<BTreeMap<String, String>>,
}

impl Reports {
    /// Opens (creating) the report directory under `data_dir`.
    pub fn open(data_dir: &Path, node: &str, start_secs: i64) -> std::io::Result<Reports> {
        let dir = data_dir.join("error-reports");
        cairn_storage::create_private_dir(&dir)?;
        Ok(Reports {
            dir,
            node: node.to_string(),
            instance: error_report::instance_id(start_secs, Some(node)),
            next: AtomicU64::new(0),
            keep: KEEP,
            seen: Mutex::new(BTreeMap::new()),
        })
    }

    #[cfg(test)]
    fn keeping(mut self, keep: usize) -> Reports {
        self.keep = keep;
        self
    }

    /// Writes a report of `p`; its id, or None when it could not be written.
    pub fn record(&self, p: &Problem) -> Option<String> {
        let id = error_report::report_id(&self.instance, self.next.fetch_add(1, Ordering::SeqCst));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let r = error_report::render(&id, &self.node, MODULE_SATELLITE, env!("CARGO_PKG_VERSION"), now, p);
        let path = self.dir.join(format!("{PREFIX}{id}{SUFFIX}"));
        let written = serde_json::to_vec_pretty(&r).map_err(std::io::Error::other).and_then(|b| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, b)?;
            std::fs::rename(&tmp, &path)
        });
        if let Err(e) = written {
            tracing::error!(report = %id, "cannot write the error report {}: {e}", path.display());
            return None;
        }
        tracing::warn!(report = %id, "{}", r.exception_message.as_deref().unwrap_or(""));
        self.prune();
        Some(id)
    }

    /// Reports each object error of `o` that is new or changed since the
    /// last one seen for that object; forgets objects without error.
    pub fn note(&self, o: &Observed) {
        for p in self.fresh(o) {
            self.record(&p);
        }
    }

    /// [`Reports::note`] with the files written off the async workers (an
    /// observation or apply answer never waits for the disk).
    pub fn note_in_background(self: &std::sync::Arc<Self>, o: &Observed) {
        let problems = self.fresh(o);
        if problems.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            for p in &problems {
                me.record(p);
            }
        });
    }

    /// The problems of `o` not reported yet (in memory only).
    fn fresh(&self, o: &Observed) -> Vec<Problem> {
        let mut current: Vec<(String, &ObjectError)> = Vec::new();
        for r in o.resources.iter().chain(&o.removed) {
            if let Some(e) = &r.error {
                current.push((format!("resource:{}", r.name), e));
            }
            for (snap, e) in &r.snapshot_errors {
                current.push((format!("snapshot:{}/{snap}", r.name), e));
            }
        }
        for p in &o.pools {
            if let Some(e) = &p.error {
                current.push((format!("pool:{}", p.name), e));
            }
        }
        let mut seen = self.seen.lock();
        for r in o.resources.iter().chain(&o.removed) {
            if r.error.is_none() {
                seen.remove(&format!("resource:{}", r.name));
            }
            // Snapshot errors this resource no longer has are forgotten, so
            // they are reported again should they come back.
            let prefix = format!("snapshot:{}/", r.name);
            seen.retain(|k, _| k.strip_prefix(&prefix).is_none_or(|snap| r.snapshot_errors.contains_key(snap)));
        }
        for p in o.pools.iter().filter(|p| p.error.is_none()) {
            seen.remove(&format!("pool:{}", p.name));
        }
        current
            .into_iter()
            .filter(|(k, e)| {
                let text = format!("{}|{:?}|{:?}", e.message, e.cause, e.details);
                seen.insert(k.clone(), text.clone()).as_deref() != Some(text.as_str())
            })
            .map(|(object, e)| problem_of(&object, e))
            .collect()
    }

    /// Every report, read from the directory (unreadable files skipped).
    fn all(&self) -> Vec<(PathBuf, ErrorReport)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut v: Vec<(PathBuf, ErrorReport)> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX)))
            .filter_map(|p| {
                let r = std::fs::read(&p).ok().and_then(|b| serde_json::from_slice::<ErrorReport>(&b).ok())?;
                Some((p, r))
            })
            .collect();
        v.sort_by(|a, b| b.1.error_time.cmp(&a.1.error_time).then_with(|| b.1.id.cmp(&a.1.id)));
        v
    }

    /// The reports `f` matches, newest first.
    pub fn list(&self, f: &ErrorReportFilter) -> Vec<ErrorReport> {
        self.all().into_iter().filter(|(_, r)| f.matches(r)).map(|(_, r)| f.shown(&r)).collect()
    }

    /// Deletes the reports `f` matches; their ids.
    pub fn delete(&self, f: &ErrorReportFilter) -> Vec<String> {
        let mut ids = Vec::new();
        for (path, r) in self.all().into_iter().filter(|(_, r)| f.matches(r)) {
            match std::fs::remove_file(&path) {
                Ok(()) => ids.push(r.id),
                Err(e) => tracing::warn!("cannot delete the error report {}: {e}", path.display()),
            }
        }
        ids
    }

    fn prune(&self) {
        // Counting names is cheap; reading every report only when some go.
        let count = std::fs::read_dir(&self.dir).map_or(0, |d| {
            d.flatten().filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))).count()
        });
        if count <= self.keep {
            return;
        }
        for (path, _) in self.all().into_iter().skip(self.keep) {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("cannot remove the old error report {}: {e}", path.display());
            }
        }
    }
}

/// A report of an object's error: a failed command when the details name
/// one (`command: …`, `exit code: …`, `stderr: …`).
fn problem_of(object: &str, e: &ObjectError) -> Problem {
    let details = e.details.as_deref().unwrap_or("");
    let mut command: Option<FailedCommand> = None;
    let mut rest = Vec::new();
    for line in details.lines() {
        if let Some(argv) = line.strip_prefix("command: ") {
            command = Some(FailedCommand { argv: argv.to_string(), ..FailedCommand::default() });
        } else if let (Some(c), Some(code)) = (command.as_mut(), line.strip_prefix("exit code: ")) {
            c.exit_code = code.trim().parse().ok();
        } else if let (Some(c), Some(out)) = (command.as_mut(), line.strip_prefix("stderr: ")) {
            c.output = out.to_string();
        } else if let Some(c) = command.as_mut().filter(|c| !c.output.is_empty()) {
            c.output.push('\n');
            c.output.push_str(line);
        } else {
            rest.push(line);
        }
    }
    Problem {
        exception: if command.is_some() { "CommandFailed".into() } else { "SatelliteError".into() },
        message: format!("{} ({object})", e.message),
        cause: e.cause.clone(),
        details: Some(rest.join("\n")).filter(|d| !d.trim().is_empty()),
        command,
        ..Problem::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::{PoolObserved, ResourceObserved};

    fn failing(name: &str, stderr: &str) -> ResourceObserved {
        ResourceObserved {
            name: name.into(),
            volumes: Vec::new(),
            error: Some(ObjectError {
                message: "Volume creation failed".into(),
                cause: Some("truncate failed with exit code 1".into()),
                details: Some(format!("command: truncate -s 1024K /pool/x\nexit code: 1\nstderr: {stderr}")),
            }),
            drbd: None,
            snapshots: Vec::new(),
            snapshot_errors: BTreeMap::new(),
        }
    }

    #[test]
    fn a_new_error_is_reported_once_and_a_changed_one_again() {
        let dir = tempfile::tempdir().unwrap();
        let reports = Reports::open(dir.path(), "alpha", 0x5B9A_15B7).unwrap();
        let o = Observed { resources: vec![failing("r1", "Permission denied")], ..Observed::default() };
        reports.note(&o);
        reports.note(&o);
        let all = reports.list(&ErrorReportFilter { with_content: true, ..Default::default() });
        assert_eq!(all.len(), 1, "the same error seen twice is one report");
        let r = &all[0];
        assert_eq!(r.node_name, "alpha");
        assert_eq!(r.module, "SATELLITE");
        assert!(r.id.starts_with("5B9A15B7-") && r.id.ends_with("-000000"), "{}", r.id);
        let text = r.text.as_deref().unwrap_or("");
        assert!(text.contains("truncate -s 1024K /pool/x") && text.contains("Permission denied") && text.contains("Exit code:"), "{text}");
        assert!(all[0].text.is_some() && reports.list(&ErrorReportFilter::default())[0].text.is_none());
        reports.note(&Observed { resources: vec![failing("r1", "No space left")], ..Observed::default() });
        assert_eq!(reports.list(&ErrorReportFilter::default()).len(), 2, "a changed error is reported");
        let pool_ok = Observed { pools: vec![PoolObserved { name: "p".into(), ..PoolObserved::default() }], ..Observed::default() };
        reports.note(&pool_ok);
        assert_eq!(reports.delete(&ErrorReportFilter { ids: vec![r.id.to_lowercase()], ..Default::default() }), vec![r.id.clone()]);
        assert_eq!(reports.list(&ErrorReportFilter::default()).len(), 1);
    }

    #[test]
    fn only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let reports = Reports::open(dir.path(), "alpha", 1).unwrap().keeping(3);
        for n in 0..5 {
            reports.record(&Problem { exception: "X".into(), message: format!("m{n}"), ..Problem::default() });
        }
        let left: Vec<String> = reports.list(&ErrorReportFilter::default()).into_iter().map(|r| r.id).collect();
        assert_eq!(left.len(), 3);
        assert!(left.iter().all(|id| !id.ends_with("-000000") && !id.ends_with("-000001")), "{left:?}");
    }

    #[test]
    fn a_snapshot_error_that_went_and_came_back_is_reported_again() {
        let dir = tempfile::tempdir().unwrap();
        let reports = Reports::open(dir.path(), "alpha", 2).unwrap();
        let mut r = failing("r1", "x");
        r.error = None;
        let e = ObjectError { message: "snapshot failed".into(), cause: None, details: None };
        r.snapshot_errors.insert("s1".into(), e);
        let with = Observed { resources: vec![r.clone()], ..Observed::default() };
        r.snapshot_errors.clear();
        let without = Observed { resources: vec![r], ..Observed::default() };
        reports.note(&with);
        reports.note(&with);
        assert_eq!(reports.list(&ErrorReportFilter::default()).len(), 1);
        reports.note(&without);
        reports.note(&with);
        assert_eq!(reports.list(&ErrorReportFilter::default()).len(), 2);
    }
}
