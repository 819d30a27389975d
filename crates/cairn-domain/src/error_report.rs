//! The controller's error reports as stored objects (LINSTOR's
//! `StdErrorReporter`, `CtrlErrorListApiCallHandler`): kept with the
//! cluster's objects, never sent to a satellite. Making a report's text is
//! cairn-proto's ([`cairn_proto::error_report::render`]); this is what
//! adding and deleting them does.

use cairn_api::rc::{self, ApiCallRc};
use cairn_proto::{ErrorReport, ErrorReportFilter};

use crate::cluster::{Cluster, ObjKey, Object, Outcome};

impl Cluster {
    /// Stores one report.
    pub fn add_error_report(&self, report: ErrorReport) -> Outcome {
        let mut out = Outcome::default();
        out.put(Object::ErrorReport(report));
        out
    }

    /// The controller's reports that match, newest first.
    pub fn error_reports_matching(&self, f: &ErrorReportFilter) -> Vec<&ErrorReport> {
        let mut v: Vec<&ErrorReport> = self.error_reports.values().filter(|r| f.matches(r)).collect();
        v.sort_by(|a, b| b.error_time.cmp(&a.error_time).then_with(|| b.id.cmp(&a.id)));
        v
    }

    /// Deletes the controller's reports that match: LINSTOR's answer is one
    /// `Deleted N error-report(s)` entry, none when nothing matched (the
    /// caller adds `No error reports deleted.` when the whole answer,
    /// satellites' included, is empty).
    pub fn delete_error_reports(&self, f: &ErrorReportFilter) -> Outcome {
        let mut out = Outcome::default();
        let ids: Vec<String> = self.error_reports_matching(f).iter().map(|r| r.id.to_ascii_uppercase()).collect();
        if !ids.is_empty() {
            out.reply(ApiCallRc::new(rc::DELETED, format!("Deleted {} error-report(s)", ids.len())));
        }
        for id in ids {
            out.delete(ObjKey::ErrorReport(id));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::error_report::{Problem, render};

    fn report(id: &str, at: i64) -> ErrorReport {
        render(id, "ctrl", "CONTROLLER", "1", at, &Problem { exception: "StoreError".into(), message: "m".into(), ..Problem::default() })
    }

    #[test]
    fn delete_by_time_range_keeps_the_rest() {
        let mut c = Cluster::default();
        for (id, at) in [("A-00000-000001", 10), ("A-00000-000002", 20), ("A-00000-000003", 30)] {
            c.apply(c.add_error_report(report(id, at)).changes);
        }
        assert_eq!(c.error_reports_matching(&ErrorReportFilter::default()).first().map(|r| r.error_time), Some(30));
        let out = c.delete_error_reports(&ErrorReportFilter { since: Some(15), to: Some(25), ..Default::default() });
        assert_eq!(out.replies.len(), 1);
        assert_eq!(out.replies[0].message, "Deleted 1 error-report(s)");
        c.apply(out.changes);
        assert_eq!(c.error_reports.keys().cloned().collect::<Vec<_>>(), ["A-00000-000001", "A-00000-000003"]);
        let none = c.delete_error_reports(&ErrorReportFilter { ids: vec!["nope".into()], ..Default::default() });
        assert!(none.replies.is_empty() && none.changes.is_empty());
    }
}
