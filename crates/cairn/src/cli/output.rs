//! Printing replies and choosing exit codes as the upstream client does:
//! 0 ok (warnings too), 10 if any reply is an error, 20 when no controller
//! answered, 1 for a problem found on this side. With `-m` everything
//! printed is JSON: the controller's replies (exit 0, as upstream), or a
//! reply list of one error entry for a problem found on this side (exit 1
//! or 20 all the same: there was no reply to read a code from).

use std::io::Write;

use cairn_api::{ApiCallRc, rc};
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

/// Prints the controller's replies as JSON (`-m`): exit 0, as upstream.
pub fn replies_json(rcs: &[ApiCallRc]) -> i32 {
    println!("{}", serde_json::to_string_pretty(rcs).unwrap_or_default());
    EXIT_OK
}

/// A problem found on this side, not a controller's reply (a bad size, no
/// controller reachable, an unexpected answer): `Error: message[: cause]`
/// on stderr, or with `-m` a one-entry reply list on stdout in the
/// controller's shape. Returns `exit` either way.
pub fn problem(machine: bool, rc: &ApiCallRc, exit: i32) -> i32 {
    if machine {
        println!("{}", serde_json::to_string_pretty(std::slice::from_ref(rc)).unwrap_or_default());
    } else {
        match &rc.cause {
            Some(cause) => eprintln!("Error: {}: {cause}", rc.message),
            None => eprintln!("Error: {}", rc.message),
        }
    }
    exit
}

/// Prints a client error and returns its exit code.
pub fn error(e: &ClientError, machine: bool, color: bool) -> i32 {
    match e {
        ClientError::Api { replies: rcs, .. } if !rcs.is_empty() => {
            if machine {
                replies_json(rcs)
            } else {
                replies(rcs, color)
            }
        }
        ClientError::Transport { .. } => problem(machine, &ApiCallRc::error(0, rc::FAIL_UNKNOWN_ERROR, e.to_string()), EXIT_CONNECTION),
        _ => problem(machine, &ApiCallRc::error(0, rc::FAIL_UNKNOWN_ERROR, e.to_string()), EXIT_CLIENT),
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
