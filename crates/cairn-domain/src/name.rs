//! LINSTOR's naming rules.
//!
//! Names are case-insensitive keys that keep the spelling they were created
//! with: lookups use [`key`] (upper case), replies echo the display name.

use cairn_api::rc;

use crate::error::OpError;

/// What kind of name is being checked; decides the length limits and the
/// `FAIL_INVLD_*` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Node,
    ResourceDefinition,
    ResourceGroup,
    StoragePool,
    NetInterface,
    KeyValueStore,
    Snapshot,
    /// A remote (LINSTOR checks it as a host name).
    Remote,
    /// A backup schedule.
    Schedule,
}

impl NameKind {
    fn label(self) -> &'static str {
        match self {
            NameKind::Node => "node name",
            NameKind::ResourceDefinition => "resource name",
            NameKind::ResourceGroup => "resource group name",
            NameKind::StoragePool => "storage pool name",
            NameKind::NetInterface => "net interface name",
            NameKind::KeyValueStore => "key-value store name",
            NameKind::Snapshot => "snapshot name",
            NameKind::Remote => "remote name",
            NameKind::Schedule => "schedule name",
        }
    }

    fn limits(self) -> (usize, usize) {
        match self {
            NameKind::Node => (2, 255),
            NameKind::StoragePool => (3, 48),
            NameKind::NetInterface => (3, 32),
            NameKind::KeyValueStore => (1, 48),
            NameKind::Remote => (1, 255),
            NameKind::Schedule => (2, 48),
            NameKind::ResourceDefinition | NameKind::ResourceGroup | NameKind::Snapshot => (2, 48),
        }
    }

    fn code(self) -> i64 {
        match self {
            NameKind::Node => rc::FAIL_INVLD_NODE_NAME,
            NameKind::ResourceDefinition => rc::FAIL_INVLD_RSC_NAME,
            NameKind::ResourceGroup => rc::FAIL_INVLD_RSC_GRP_NAME,
            NameKind::StoragePool => rc::FAIL_INVLD_STOR_POOL_NAME,
            NameKind::NetInterface => rc::FAIL_INVLD_NET_NAME,
            NameKind::KeyValueStore => rc::FAIL_INVLD_KVS_NAME,
            NameKind::Snapshot => rc::FAIL_INVLD_SNAPSHOT_NAME,
            NameKind::Remote => rc::FAIL_INVLD_REMOTE_NAME,
            NameKind::Schedule => rc::FAIL_INVLD_SCHEDULE_NAME,
        }
    }

    /// Names that would collide with a REST route under the same parent
    /// (`/v1/nodes/properties/info`, `/v1/resource-groups/adjustall`, ...).
    fn reserved(self) -> &'static [&'static str] {
        match self {
            NameKind::Node => &["PROPERTIES", "EBS", "EXEC"],
            NameKind::ResourceGroup => &["PROPERTIES", "ADJUSTALL"],
            NameKind::ResourceDefinition | NameKind::StoragePool => &["PROPERTIES"],
            _ => &[],
        }
    }
}

/// The lookup key of a name: its upper-case form.
pub fn key(name: &str) -> String {
    name.to_ascii_uppercase()
}

/// Checks a name against LINSTOR's rules. `op_obj` is the operation and
/// object mask of the request, so the error carries LINSTOR's full ret_code.
pub fn check(kind: NameKind, name: &str, op_obj: i64) -> Result<(), OpError> {
    let label = kind.label();
    let fail = |cause: String| {
        OpError::new(op_obj, kind.code(), format!("The specified {label} '{name}' is invalid.")).cause(cause).correction(correction(kind))
    };
    let (min, max) = kind.limits();
    let len = name.chars().count();
    if len < min || len > max {
        return Err(fail(format!("The {label} must be {min} to {max} characters long, it has {len}.")));
    }
    if matches!(kind, NameKind::Node | NameKind::Remote) {
        check_hostname(label, name).map_err(fail)?;
    } else {
        if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
            return Err(fail(format!("The {label} contains the character '{c}', which is not allowed.")));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(fail(format!("The {label} must not start or end with '-'.")));
        }
        if !name.chars().any(|c| c.is_ascii_alphabetic()) {
            return Err(fail(format!("The {label} must contain at least one letter.")));
        }
    }
    if kind.reserved().contains(&key(name).as_str()) {
        return Err(fail(format!("'{name}' is reserved: it would collide with a REST API path.")));
    }
    Ok(())
}

fn correction(kind: NameKind) -> &'static str {
    match kind {
        NameKind::Node | NameKind::Remote => {
            "Use a valid host name: letters, digits, '-' and '.', labels of at most 63 characters, at least one letter."
        }
        _ => "Use letters, digits, '_' and inner '-' only, with at least one letter.",
    }
}

fn check_hostname(label_of: &str, name: &str) -> Result<(), String> {
    if !name.chars().any(|c| c.is_ascii_alphabetic()) {
        return Err(format!("A {label_of} must contain at least one letter."));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("A {label_of} must not contain empty labels ('..', or a leading or trailing '.')."));
        }
        if label.len() > 63 {
            return Err(format!("The label '{label}' is longer than 63 characters."));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(format!("The {label_of} contains the character '{c}', which is not allowed in a host name."));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("The label '{label}' must not start or end with '-'."));
        }
    }
    Ok(())
}

/// Derives a valid resource name from an arbitrary external name (UTF-8):
/// characters outside `[A-Za-z0-9_-]` become `_`, a leading digit-only or
/// dash prefix is guarded with `rsc_`, and the result is cut to 48
/// characters. `taken` says whether a candidate is in use; a numeric suffix
/// makes it unique.
pub fn from_external(external: &str, taken: impl Fn(&str) -> bool) -> Option<String> {
    let mut base: String = external.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    base = base.trim_matches('-').to_string();
    if !base.chars().any(|c| c.is_ascii_alphabetic()) || base.len() < 2 {
        base = format!("rsc_{base}");
    }
    base.truncate(48);
    let base = base.trim_end_matches('-').to_string();
    if check(NameKind::ResourceDefinition, &base, 0).is_ok() && !taken(&base) {
        return Some(base);
    }
    for n in 1..10_000u32 {
        let suffix = format!("_{n}");
        let mut cand = base.clone();
        cand.truncate(48 - suffix.len());
        let cand = format!("{}{suffix}", cand.trim_end_matches('-'));
        if check(NameKind::ResourceDefinition, &cand, 0).is_ok() && !taken(&cand) {
            return Some(cand);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(kind: NameKind, n: &str) -> bool {
        check(kind, n, 0).is_ok()
    }

    #[test]
    fn resource_names_follow_linstor_rules() {
        assert!(ok(NameKind::ResourceDefinition, "pvc-1234_abc"));
        assert!(ok(NameKind::ResourceDefinition, "ab"));
        assert!(!ok(NameKind::ResourceDefinition, "a"));
        assert!(!ok(NameKind::ResourceDefinition, &"a".repeat(49)));
        assert!(ok(NameKind::ResourceDefinition, &"a".repeat(48)));
        assert!(!ok(NameKind::ResourceDefinition, "-abc"));
        assert!(!ok(NameKind::ResourceDefinition, "abc-"));
        assert!(!ok(NameKind::ResourceDefinition, "12345"));
        assert!(!ok(NameKind::ResourceDefinition, "a b"));
        assert!(!ok(NameKind::ResourceDefinition, "a/b"));
        assert!(!ok(NameKind::ResourceDefinition, "ä-rsc"));
        assert!(!ok(NameKind::ResourceDefinition, "properties"));
    }

    #[test]
    fn storage_pool_names_need_three_characters() {
        assert!(!ok(NameKind::StoragePool, "sp"));
        assert!(ok(NameKind::StoragePool, "sp1"));
    }

    #[test]
    fn node_names_follow_hostname_rules() {
        assert!(ok(NameKind::Node, "node-1.example.com"));
        assert!(ok(NameKind::Node, "alpha"));
        assert!(!ok(NameKind::Node, "a"));
        assert!(!ok(NameKind::Node, "node..x"));
        assert!(!ok(NameKind::Node, ".node"));
        assert!(!ok(NameKind::Node, "-node"));
        assert!(!ok(NameKind::Node, "node x"));
        assert!(!ok(NameKind::Node, "1234"));
        assert!(!ok(NameKind::Node, &format!("{}.x", "a".repeat(64))));
        assert!(!ok(NameKind::Node, "EBS"));
    }

    #[test]
    fn invalid_name_error_carries_code_cause_and_correction() {
        let e = check(NameKind::ResourceDefinition, "bad name", rc::MASK_CRT | rc::MASK_RSC_DFN).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_INVLD_RSC_NAME);
        assert!(e.rc.is_error());
        assert!(e.rc.cause.as_deref().unwrap_or("").contains("' '"));
        assert!(e.rc.correction.is_some());
    }

    #[test]
    fn external_names_become_valid_unique_names() {
        assert_eq!(from_external("my volume/1", |_| false).as_deref(), Some("my_volume_1"));
        assert_eq!(from_external("123", |_| false).as_deref(), Some("rsc_123"));
        assert_eq!(from_external("Ä", |_| false).as_deref(), Some("rsc__"));
        assert_eq!(from_external("vol", |n| n == "vol").as_deref(), Some("vol_1"));
        let long = "x".repeat(100);
        let taken = "x".repeat(48);
        let n = from_external(&long, |n| n == taken).unwrap();
        assert!(n.len() <= 48 && n.ends_with("_1"), "{n}");
    }
}
