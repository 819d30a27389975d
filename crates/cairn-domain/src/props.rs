//! Property keys and the override/delete/delete-namespace modification that
//! every object kind shares.

use cairn_api::PropsModify;
use cairn_api::rc::{self, ApiCallRc};

use crate::Props;
use crate::error::OpError;

/// Longest property key LINSTOR accepts (a path of namespaces and a key).
pub const MAX_KEY_LEN: usize = 256;
/// Longest property value Cairn accepts.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Checks one property key and value.
pub fn check(key: &str, value: &str, op_obj: i64) -> Result<(), OpError> {
    let fail = |cause: String| {
        OpError::new(op_obj, rc::FAIL_INVLD_PROP, format!("The property '{key}' is invalid."))
            .cause(cause)
            .correction("Property keys are '/'-separated paths of printable characters without spaces, e.g. 'Aux/site'.")
    };
    if key.is_empty() {
        return Err(fail("The key is empty.".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(fail(format!("The key is longer than {MAX_KEY_LEN} characters.")));
    }
    if key.starts_with('/') || key.ends_with('/') || key.contains("//") {
        return Err(fail("The key has an empty path element.".into()));
    }
    if let Some(c) = key.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(fail(format!("The key contains the character {c:?}.")));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(fail(format!("The value is longer than {MAX_VALUE_LEN} bytes.")));
    }
    Ok(())
}

/// Checks every entry of a property map.
pub fn check_all(props: &Props, op_obj: i64) -> Result<(), OpError> {
    props.iter().try_for_each(|(k, v)| check(k, v, op_obj))
}

/// Applies a modification to `props`: deletions first (keys, then whole
/// namespaces), then overrides, as LINSTOR does.
/// A leading '/' (an absolute path, as python-linstor's `KV` writes keys)
/// is dropped, so `/snap/a` and `snap/a` name the same property.
pub fn apply(props: &Props, m: &PropsModify, op_obj: i64) -> Result<Props, OpError> {
    let abs = |k: &str| k.strip_prefix('/').unwrap_or(k).to_string();
    let overrides: Props = m.override_props.iter().map(|(k, v)| (abs(k), v.clone())).collect();
    check_all(&overrides, op_obj)?;
    let mut out = props.clone();
    for k in &m.delete_props {
        out.remove(&abs(k));
    }
    for ns in &m.delete_namespaces {
        let prefix = format!("{}/", abs(ns).trim_end_matches('/'));
        out.retain(|k, _| !k.starts_with(&prefix));
    }
    out.extend(overrides);
    Ok(out)
}

/// The entry LINSTOR's `CtrlPropsHelper.fillProperties` adds when a request
/// sets properties: "Successfully set property key(s): a,b", coded as a
/// creation of the object kind (`obj_mask`, e.g. `MASK_NODE`). None when
/// the request sets nothing (deletions alone add no entry).
pub fn set_entry(obj_mask: i64, m: &PropsModify) -> Option<ApiCallRc> {
    created_entry(obj_mask, &m.override_props)
}

/// The same entry for the properties a create request carries.
pub fn created_entry(obj_mask: i64, props: &Props) -> Option<ApiCallRc> {
    if props.is_empty() {
        return None;
    }
    let keys: Vec<&str> = props.keys().map(String::as_str).collect();
    Some(ApiCallRc::new(
        (obj_mask & rc::MASK_BITS_OBJ) | rc::MASK_CRT | rc::CREATED,
        format!("Successfully set property key(s): {}", keys.join(",")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> Props {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn modify_deletes_then_overrides() {
        let p = props(&[("Aux/a", "1"), ("Aux/ns/x", "2"), ("Aux/ns/y", "3"), ("Other", "4")]);
        let m = PropsModify {
            override_props: props(&[("Aux/a", "9"), ("New", "n")]),
            delete_props: vec!["Other".into(), "Missing".into()],
            delete_namespaces: vec!["Aux/ns".into()],
        };
        let out = apply(&p, &m, 0).unwrap();
        assert_eq!(out, props(&[("Aux/a", "9"), ("New", "n")]));
    }

    #[test]
    fn absolute_keys_name_the_same_property() {
        let m = PropsModify { override_props: props(&[("/snap/a", "1")]), ..Default::default() };
        let out = apply(&Props::new(), &m, 0).unwrap();
        assert_eq!(out, props(&[("snap/a", "1")]));
        let m = PropsModify { delete_props: vec!["/snap/a".into()], ..Default::default() };
        assert!(apply(&out, &m, 0).unwrap().is_empty());
    }

    #[test]
    fn bad_keys_are_rejected() {
        assert!(check("", "v", 0).is_err());
        assert!(check("/Aux", "v", 0).is_err());
        assert!(check("Aux//x", "v", 0).is_err());
        assert!(check("Aux/a b", "v", 0).is_err());
        assert!(check(&"k".repeat(257), "v", 0).is_err());
        assert!(check("Aux/ok", &"v".repeat(MAX_VALUE_LEN + 1), 0).is_err());
        let e = check("Aux/a b", "v", 0).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_INVLD_PROP);
        assert!(check("Aux/pm/vmid", "100", 0).is_ok());
    }

    #[test]
    fn set_entry_names_the_keys_as_linstor_does() {
        let m = PropsModify { override_props: props(&[("Aux/b", "2"), ("Aux/a", "1")]), ..Default::default() };
        let e = set_entry(rc::MASK_NODE, &m).unwrap();
        assert_eq!(e.message, "Successfully set property key(s): Aux/a,Aux/b");
        assert_eq!(e.ret_code, rc::MASK_NODE | rc::MASK_CRT | rc::CREATED);
        // The operation bits of a caller's mask do not leak in.
        let e = set_entry(rc::MASK_MOD | rc::MASK_RSC_DFN, &m).unwrap();
        assert_eq!(e.ret_code, rc::MASK_RSC_DFN | rc::MASK_CRT | rc::CREATED);
        let only_deletes = PropsModify { delete_props: vec!["Aux/a".into()], ..Default::default() };
        assert!(set_entry(rc::MASK_NODE, &only_deletes).is_none());
        // Creates: the same entry for the properties they carry, none without.
        let e = created_entry(rc::MASK_CRT | rc::MASK_STOR_POOL, &props(&[("StorDriver/FileDir", "/p")])).unwrap();
        assert_eq!(
            (e.message.as_str(), e.ret_code),
            ("Successfully set property key(s): StorDriver/FileDir", rc::MASK_STOR_POOL | rc::MASK_CRT | rc::CREATED)
        );
        assert!(created_entry(rc::MASK_NODE, &Props::new()).is_none());
    }
}
