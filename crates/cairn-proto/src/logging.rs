//! The process's log levels, changeable at run time (controller:
//! `PUT /v1/controller/config`, satellite: `PUT /v1/nodes/{n}/config`
//! through [`crate::PATH_CONFIG`]). The binary installs the control when it
//! sets up logging; without one (a daemon embedded in tests, or a filter
//! from `RUST_LOG`) the levels are not Cairn's to change and requests to
//! change them are refused.

use std::sync::OnceLock;

/// LINSTOR's log levels, in its spelling.
pub const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// A level in LINSTOR's spelling (any case), or None.
pub fn parse_level(s: &str) -> Option<&'static str> {
    LEVELS.iter().copied().find(|l| l.eq_ignore_ascii_case(s.trim()))
}

/// Changes the filter of the process's log output.
pub trait LogControl: Send + Sync {
    /// The current levels: (libraries, Cairn's own crates).
    fn levels(&self) -> (String, String);
    /// Sets either level (None: keeps it); levels are from [`LEVELS`].
    fn set(&self, libraries: Option<&str>, cairn: Option<&str>) -> Result<(), String>;
}

static CONTROL: OnceLock<Box<dyn LogControl>> = OnceLock::new();

/// Installs the process's log control; the first one stays.
pub fn install(control: Box<dyn LogControl>) {
    let _ = CONTROL.set(control);
}

pub fn control() -> Option<&'static dyn LogControl> {
    CONTROL.get().map(|b| b.as_ref())
}

/// The filter directives for the two levels: `libraries` for everything,
/// `cairn` for Cairn's crates.
pub fn directives(libraries: &str, cairn: &str) -> String {
    let crates = ["cairn", "cairn_api", "cairn_client", "cairn_controller", "cairn_domain", "cairn_exec", "cairn_proto", "cairn_satellite"];
    let mut out = libraries.to_ascii_lowercase();
    for c in crates.iter().chain(["cairn_storage", "cairn_store"].iter()) {
        out.push_str(&format!(",{c}={}", cairn.to_ascii_lowercase()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_in_any_case_and_make_directives() {
        assert_eq!(parse_level("debug"), Some("DEBUG"));
        assert_eq!(parse_level(" Trace "), Some("TRACE"));
        assert_eq!(parse_level("verbose"), None);
        let d = directives("WARN", "DEBUG");
        assert!(d.starts_with("warn,"), "{d}");
        assert!(d.contains(",cairn_controller=debug"), "{d}");
        assert!(d.contains(",cairn_store=debug"), "{d}");
    }
}
