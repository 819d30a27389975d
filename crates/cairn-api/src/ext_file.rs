//! External files (`/v1/files`): files LINSTOR keeps and satellites write
//! where a resource definition deploys them.

use serde::{Deserialize, Serialize};

use crate::lenient;

/// `ExternalFile`: `content` is base64; the list leaves it out unless
/// `?content=true`, a single file carries it. `alt_suffixes` is always
/// there in replies (an empty list when none), as LINSTOR's
/// `Json.apiToExternalFile` fills it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExternalFile {
    #[serde(deserialize_with = "lenient::string")]
    pub path: String,
    #[serde(deserialize_with = "lenient::opt_string", skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(deserialize_with = "lenient::opt_string_list", skip_serializing_if = "Option::is_none")]
    pub alt_suffixes: Option<Vec<String>>,
}

/// `ExtFileCheckResult`: whether the node's satellite allows the file's
/// directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtFileCheckResult {
    pub allowed: bool,
}

/// `ExtFileStatusResult`: where the file is on the node (empty when it is
/// not there) and whether its content is what the controller holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtFileStatusResult {
    pub actual_path: String,
    pub content_match: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_needs_only_what_it_sets_and_a_reply_keeps_alt_suffixes() {
        let f: ExternalFile = serde_json::from_str(r#"{"path":"/etc/x","content":"aGk="}"#).unwrap();
        assert_eq!((f.path.as_str(), f.content.as_deref(), f.alt_suffixes), ("/etc/x", Some("aGk="), None));
        let reply = ExternalFile { path: "/etc/x".into(), content: None, alt_suffixes: Some(vec![]) };
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"{"path":"/etc/x","alt_suffixes":[]}"#);
    }
}
