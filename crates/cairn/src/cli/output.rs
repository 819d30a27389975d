//! Printing replies and choosing exit codes as the upstream client does:
//! 0 ok (warnings too), 10 if any reply is an error, 20 when no controller
//! answered.

use std::io::Write;

use cairn_api::ApiCallRc;
use cairn_client::ClientError;

pub const EXIT_OK: i32 = 0;
pub const EXIT_API_ERROR: i32 = 10;
pub const EXIT_CONNECTION: i32 = 20;
pub const EXIT_CLIENT: i32 = 1;

/// Writes one reply entry the way LINSTOR's client does.
pub fn format_rc(rc: &ApiCallRc, color: bool) -> String {
    let (label, code) = if rc.is_error() {
        ("ERROR", "31")
    } else if rc.is_warning() {
        ("WARNING", "33")
    } else if rc.is_info() {
        ("INFO", "36")
    } else {
        ("SUCCESS", "32")
    };
    let label = if color { format!("\u{1b}[{code}m{label}:\u{1b}[0m") } else { format!("{label}:") };
    let mut out = String::new();
    let section = |out: &mut String, title: &str, text: &str| {
        out.push_str(title);
        out.push_str(":\n");
        for line in text.lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    };
    out.push_str(&label);
    out.push('\n');
    section(&mut out, "Description", &rc.message);
    if let Some(c) = &rc.cause {
        section(&mut out, "Cause", c);
    }
    if let Some(c) = &rc.correction {
        section(&mut out, "Correction", c);
    }
    if let Some(d) = &rc.details {
        section(&mut out, "Details", d);
    }
    out
}

/// Prints replies (errors to stderr) and returns the exit code.
pub fn replies(rcs: &[ApiCallRc], color: bool) -> i32 {
    let mut code = EXIT_OK;
    for rc in rcs {
        let text = format_rc(rc, color);
        if rc.is_error() {
            code = EXIT_API_ERROR;
            let _ = std::io::stderr().write_all(text.as_bytes());
        } else {
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
    }
    code
}

/// Prints a client error and returns its exit code.
pub fn error(e: &ClientError, color: bool) -> i32 {
    match e {
        ClientError::Api { replies: rcs, .. } if !rcs.is_empty() => replies(rcs, color),
        ClientError::Transport { .. } => {
            eprintln!("Error: {e}");
            EXIT_CONNECTION
        }
        _ => {
            eprintln!("Error: {e}");
            EXIT_CLIENT
        }
    }
}

#[cfg(test)]
mod tests {
    use cairn_api::rc;

    use super::*;

    #[test]
    fn errors_show_every_section() {
        let e = ApiCallRc::error(rc::MASK_CRT | rc::MASK_NODE, rc::FAIL_INVLD_NODE_NAME, "The specified node name 'a b' is invalid.")
            .with_cause("It contains ' '.")
            .with_correction("Use letters.");
        let golden = "ERROR:\nDescription:\n    The specified node name 'a b' is invalid.\nCause:\n    It contains ' '.\nCorrection:\n    Use letters.\n";
        assert_eq!(format_rc(&e, false), golden);
        let ok = ApiCallRc::success(rc::MASK_CRT | rc::MASK_NODE, rc::CREATED, "New node 'a' registered.").with_details("UUID x\nline 2");
        assert_eq!(format_rc(&ok, false), "SUCCESS:\nDescription:\n    New node 'a' registered.\nDetails:\n    UUID x\n    line 2\n");
    }
}
