//! Error reports, as LINSTOR keeps them (`StdErrorReporter`,
//! `BaseErrorReporter`): one record per unexpected failure, with LINSTOR's
//! report id and the fields of the REST `ErrorReport` object.
//!
//! The id is `<instance>-<sequence>`: the instance is `%08X-%05X` of the
//! process's start time (seconds since the epoch) and a 20-bit hash of the
//! node name (0 on the controller), the sequence a six-digit counter of the
//! process (`5B9A15B7-00000-000012`). LINSTOR hashes the node name with
//! Guava's farm hash; Cairn uses FNV-1a, so a satellite's middle part
//! differs from LINSTOR's for the same name (nothing reads it back).
//!
//! The controller keeps its reports in its store, a satellite in files
//! under its data directory; the controller fetches a satellite's with
//! [`crate::PATH_ERROR_REPORTS`] and deletes them with
//! [`crate::PATH_ERROR_REPORTS_DELETE`].

use serde::{Deserialize, Serialize};

/// `Module:` of a controller's report.
pub const MODULE_CONTROLLER: &str = "CONTROLLER";
/// `Module:` of a satellite's report.
pub const MODULE_SATELLITE: &str = "SATELLITE";

/// The longest excerpt of a command's output a report keeps.
pub const OUTPUT_EXCERPT: usize = 4096;

/// One report; the JSON is LINSTOR's REST `ErrorReport` plus the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// `5B9A15B7-00000-000012`.
    pub id: String,
    pub node_name: String,
    /// Milliseconds since the epoch.
    pub error_time: i64,
    /// `ErrorReport-<id>.log`.
    pub filename: String,
    /// The whole report text (absent in lists without content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub module: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_line: Option<i32>,
}

/// Which reports a list or a delete means (LINSTOR's `ErrorReportDelete`
/// and the list's query); every field that is set must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorReportFilter {
    /// Reports at or after this time (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Reports at or before this time (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
    /// Exactly these ids (any, when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether listed reports carry their text.
    #[serde(default)]
    pub with_content: bool,
}

impl ErrorReportFilter {
    pub fn matches(&self, r: &ErrorReport) -> bool {
        self.since.is_none_or(|s| r.error_time >= s)
            && self.to.is_none_or(|t| r.error_time <= t)
            && (self.ids.is_empty() || self.ids.iter().any(|i| i.eq_ignore_ascii_case(&r.id)))
            && self.exception.as_ref().is_none_or(|e| r.exception.as_deref() == Some(e.as_str()))
            && self.version.as_ref().is_none_or(|v| r.version.as_deref() == Some(v.as_str()))
    }

    /// `r` as a list answers it: without text unless asked for.
    pub fn shown(&self, r: &ErrorReport) -> ErrorReport {
        let mut r = r.clone();
        if !self.with_content {
            r.text = None;
        }
        r
    }
}

/// The answer to a delete: the ids that were deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorReportsDeleted {
    pub ids: Vec<String>,
}

/// The instance part of the ids of a process started at `start_secs`
/// on `node` (`None`: the controller).
pub fn instance_id(start_secs: i64, node: Option<&str>) -> String {
    let hash = node.map_or(0, |n| fnv1a(n.as_bytes()) & 0xF_FFFF);
    format!("{:08X}-{hash:05X}", start_secs.max(0) as u64 & 0xFFFF_FFFF)
}

/// A report id: the instance part and the sequence number.
pub fn report_id(instance: &str, seq: u64) -> String {
    format!("{instance}-{seq:06}")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// What went wrong, for [`render`].
#[derive(Debug, Clone, Default)]
pub struct Problem {
    /// The kind of failure (`StoreError`, `CommandFailed`, …).
    pub exception: String,
    pub message: String,
    pub cause: Option<String>,
    pub details: Option<String>,
    /// Where it was noticed: file, function, line.
    pub origin: Option<(String, String, i32)>,
    /// The failed command, if one failed: argv, exit code, output excerpt.
    pub command: Option<FailedCommand>,
    pub peer: Option<String>,
}

/// A command that failed.
#[derive(Debug, Clone, Default)]
pub struct FailedCommand {
    pub argv: String,
    pub exit_code: Option<i32>,
    pub output: String,
}

/// Builds a report: the text in LINSTOR's layout (header, `Reported
/// error:` section, origin or the failed command, `END OF ERROR REPORT.`).
/// `text_redact` is applied to every free-text part (messages, output).
pub fn render(id: &str, node: &str, module: &str, version: &str, now_ms: i64, p: &Problem) -> ErrorReport {
    use std::fmt::Write;
    let field = |t: &mut String, k: &str, v: &str| {
        let _ = writeln!(t, "{k:<32}    {v}");
    };
    let message = redact(&p.message);
    let cause = p.cause.as_deref().map(redact);
    let details = p.details.as_deref().map(redact);
    let mut t = format!("ERROR REPORT {id}\n\n{}\n\n", "=".repeat(60));
    field(&mut t, "Application:", "Cairn (LINSTOR REST API v1)");
    field(&mut t, "Module:", module);
    field(&mut t, "Version:", version);
    field(&mut t, "Error time:", &crate::error_report::iso_time(now_ms));
    field(&mut t, "Node:", node);
    if let Some(peer) = &p.peer {
        field(&mut t, "Peer:", peer);
    }
    let _ = write!(t, "\n{}\n\nReported error:\n===============\n\n", "=".repeat(60));
    field(&mut t, "Category:", "Error");
    field(&mut t, "Class name:", &p.exception);
    field(&mut t, "Error message:", &message);
    if let Some(c) = &cause {
        let _ = write!(t, "\nCause:\n{c}\n");
    }
    if let Some(d) = &details {
        let _ = write!(t, "\nAdditional information:\n{d}\n");
    }
    if let Some(c) = &p.command {
        let _ = write!(t, "\nFailed command:\n");
        field(&mut t, "Command:", &redact(&c.argv));
        field(&mut t, "Exit code:", &c.exit_code.map_or("none (did not run to the end)".into(), |c| c.to_string()));
        let out = excerpt(&redact(&c.output));
        let _ = write!(t, "Output:\n{out}\n");
    }
    match &p.origin {
        Some((file, method, line)) => {
            let _ = write!(t, "\nCall backtrace:\n\n    {method:<40} {file}:{line}\n");
        }
        None if p.command.is_none() => t.push_str("\nNo call backtrace is available.\n"),
        None => {}
    }
    t.push_str("\nEND OF ERROR REPORT.\n");
    ErrorReport {
        id: id.to_string(),
        node_name: node.to_string(),
        error_time: now_ms,
        filename: format!("ErrorReport-{id}.log"),
        text: Some(t),
        module: module.to_string(),
        version: Some(version.to_string()),
        peer: p.peer.clone(),
        exception: Some(p.exception.clone()),
        exception_message: Some(message),
        origin_file: p.origin.as_ref().map(|o| o.0.clone()),
        origin_method: p.origin.as_ref().map(|o| o.1.clone()),
        origin_line: p.origin.as_ref().map(|o| o.2),
    }
}

/// At most [`OUTPUT_EXCERPT`] bytes of `s`, cut at a character boundary.
fn excerpt(s: &str) -> String {
    if s.len() <= OUTPUT_EXCERPT {
        return s.to_string();
    }
    let mut end = OUTPUT_EXCERPT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[… {} more bytes cut]", &s[..end], s.len() - end)
}

/// `yyyy-MM-dd HH:mm:ss` (UTC) of a time in ms, without a date library.
pub fn iso_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Words after which a value is secret: the value is replaced.
const SECRET_WORDS: [&str; 10] =
    ["authorization", "bearer", "password", "passphrase", "secret", "shared-secret", "token", "access-key", "secret-key", "--key"];

/// Masks what follows a secret-looking word (`password=…`, `Bearer …`,
/// `shared-secret "…"`) in free text, so no report carries a secret a
/// message or a command line happened to hold.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        out.push_str(&redact_line(line));
    }
    out
}

fn redact_line(line: &str) -> String {
    let lower = line.to_ascii_lowercase();
    let Some(at) = SECRET_WORDS.iter().filter_map(|w| lower.find(w).map(|i| i + w.len())).min() else {
        return line.to_string();
    };
    let rest = &line[at..];
    // Keep separators (`=`, `:`, quotes, blanks), mask the value after them.
    let value_at = rest.find(|c: char| !matches!(c, '=' | ':' | ' ' | '"' | '\'' | '\t')).unwrap_or(rest.len());
    let tail_end = line.ends_with('\n');
    let mut s = format!("{}{}<redacted>", &line[..at], &rest[..value_at]);
    if tail_end {
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_linstors_shape() {
        assert_eq!(instance_id(0x5B9A_15B7, None), "5B9A15B7-00000");
        let sat = instance_id(0x5B9A_15B7, Some("alpha"));
        assert_eq!(sat.len(), 14);
        assert_ne!(&sat[9..], "00000");
        assert_eq!(report_id("5B9A15B7-00000", 12), "5B9A15B7-00000-000012");
    }

    #[test]
    fn secrets_are_masked() {
        assert_eq!(redact("Authorization: Bearer abc123\nok"), "Authorization: <redacted>\nok");
        assert_eq!(redact("shared-secret \"s3cr3t\";"), "shared-secret \"<redacted>");
        assert_eq!(redact("nothing here"), "nothing here");
    }

    #[test]
    fn render_carries_command_and_filter_matches() {
        let p = Problem {
            exception: "CommandFailed".into(),
            message: "Volume creation failed".into(),
            command: Some(FailedCommand { argv: "truncate -s 1M /x".into(), exit_code: Some(1), output: "denied".into() }),
            ..Problem::default()
        };
        let r = render("A-00000-000001", "n1", MODULE_SATELLITE, "1.0", 86_400_000, &p);
        let text = r.text.clone().unwrap_or_default();
        assert!(text.contains("truncate -s 1M /x") && text.contains("denied") && text.contains("1970-01-02 00:00:00"), "{text}");
        let f = ErrorReportFilter { since: Some(1), to: Some(86_400_000), ..Default::default() };
        assert!(f.matches(&r));
        assert!(!ErrorReportFilter { since: Some(86_400_001), ..Default::default() }.matches(&r));
        assert!(f.shown(&r).text.is_none());
    }
}
