//! The controller's error reporter: numbers reports as LINSTOR does and
//! commits them with the cluster's objects (kind `error_report`).

use std::sync::atomic::{AtomicU64, Ordering};

use cairn_proto::ErrorReport;
use cairn_proto::error_report::{self, MODULE_CONTROLLER, Problem};

/// The controller's node name in its reports (LINSTOR's example reply).
pub const CONTROLLER_NODE: &str = "Controller";

/// Ids for this process: `<start time>-00000-<sequence>`.
pub struct Reporter {
    instance: String,
    next: AtomicU64,
}

impl Reporter {
    pub fn new(start_ms: i64) -> Reporter {
        Reporter { instance: error_report::instance_id(start_ms / 1000, None), next: AtomicU64::new(0) }
    }

    /// A new report of `p`, numbered, at `now_ms`.
    pub fn make(&self, now_ms: i64, p: &Problem) -> ErrorReport {
        let id = error_report::report_id(&self.instance, self.next.fetch_add(1, Ordering::SeqCst));
        error_report::render(&id, CONTROLLER_NODE, MODULE_CONTROLLER, &version(), now_ms, p)
    }
}

/// This build, as a report's `Version:`.
pub fn version() -> String {
    crate::build_info::describe(&crate::build_info::controller_version())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_reports_in_sequence() {
        let r = Reporter::new(0x5B9A_15B7 * 1000);
        let p = Problem { exception: "StoreError".into(), message: "database is locked".into(), ..Problem::default() };
        assert_eq!(r.make(1, &p).id, "5B9A15B7-00000-000000");
        let second = r.make(2, &p);
        assert_eq!(second.id, "5B9A15B7-00000-000001");
        assert_eq!(second.filename, "ErrorReport-5B9A15B7-00000-000001.log");
        assert_eq!(second.node_name, "Controller");
        assert!(second.text.as_deref().is_some_and(|t| t.contains("Module:") && t.contains("CONTROLLER")));
    }
}
