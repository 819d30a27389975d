//! Property keys and the override/delete/delete-namespace modification that
//! every object kind shares.

use cairn_api::PropsModify;
use cairn_api::rc::{self, ApiCallRc};

use crate::Props;
use crate::error::OpError;
use crate::whitelist::{self, PropsObj};

/// Longest property key LINSTOR accepts (a path of namespaces and a key).
pub const MAX_KEY_LEN: usize = 256;
/// Longest property value Cairn accepts.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Checks the shape of one property key and value: a `/`-separated path
/// without empty, `.` or `..` elements, blanks or control characters, at
/// most [`MAX_KEY_LEN`] characters. Refused as LINSTOR refuses a key its
/// property container cannot hold ("Invalid key: …").
pub fn check(key: &str, value: &str, op_obj: i64) -> Result<(), OpError> {
    let fail = |why: String| {
        OpError::new(op_obj, rc::FAIL_INVLD_PROP, format!("Invalid key: {key}"))
            .cause(format!("The key '{key}' is invalid."))
            .details(why)
            .correction("Property keys are '/'-separated paths of printable characters without spaces, e.g. 'Aux/site'.")
    };
    if key.is_empty() {
        return Err(fail("The key is empty.".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(fail(format!("The key is longer than {MAX_KEY_LEN} characters.")));
    }
    if key.split('/').any(str::is_empty) {
        return Err(fail("The key has an empty path element.".into()));
    }
    if key.split('/').any(|e| e == "." || e == "..") {
        return Err(fail("The key has a '.' or '..' path element.".into()));
    }
    if let Some(c) = key.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(fail(format!("The key contains the character {c:?}.")));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(OpError::new(op_obj, rc::FAIL_INVLD_PROP, format!("Invalid value of the key '{key}'"))
            .cause(format!("The value is longer than {MAX_VALUE_LEN} bytes.")));
    }
    Ok(())
}

/// Checks the shape of every entry of a property map (properties Cairn
/// builds itself; those of a request go through [`checked`]).
pub fn check_all(props: &Props, op_obj: i64) -> Result<(), OpError> {
    props.iter().try_for_each(|(k, v)| check(k, v, op_obj))
}

/// The properties a create request carries, checked for shape and against
/// LINSTOR's whitelist of `obj`, with their values normalized as LINSTOR
/// stores them.
pub fn checked(obj: PropsObj, props: &Props, op_obj: i64) -> Result<Props, OpError> {
    props
        .iter()
        .map(|(k, v)| {
            check(k, v, op_obj)?;
            Ok((k.clone(), whitelist::check_set(obj, k, v, op_obj)?))
        })
        .collect()
}

/// Applies a request's modification to the properties of an `obj`:
/// deletions first (keys, then whole namespaces), then overrides, as
/// LINSTOR does. Every key set or deleted is checked against the
/// whitelist of `obj` (a namespace: each key in it), values are
/// normalized.
/// A leading '/' (an absolute path, as python-linstor's `KV` writes keys)
/// is dropped, so `/snap/a` and `snap/a` name the same property.
pub fn apply(obj: PropsObj, props: &Props, m: &PropsModify, op_obj: i64) -> Result<Props, OpError> {
    let abs = |k: &str| k.strip_prefix('/').unwrap_or(k).to_string();
    let overrides: Props = m.override_props.iter().map(|(k, v)| (abs(k), v.clone())).collect();
    let overrides = checked(obj, &overrides, op_obj)?;
    let mut out = props.clone();
    for k in &m.delete_props {
        let k = abs(k);
        whitelist::check_delete(obj, &k, op_obj)?;
        out.remove(&k);
    }
    for ns in &m.delete_namespaces {
        let prefix = format!("{}/", abs(ns).trim_end_matches('/'));
        for k in out.keys().filter(|k| k.starts_with(&prefix)) {
            whitelist::check_delete(obj, k, op_obj)?;
        }
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
        let out = apply(PropsObj::Kvs, &p, &m, 0).unwrap();
        assert_eq!(out, props(&[("Aux/a", "9"), ("New", "n")]));
    }

    #[test]
    fn modify_checks_sets_and_deletes_against_the_whitelist() {
        let p = props(&[("Aux/ns/x", "2"), ("Other", "4"), ("DrbdOptions/Net/protocol", "A")]);
        let set = |k: &str, v: &str| PropsModify { override_props: props(&[(k, v)]), ..Default::default() };
        let out = apply(PropsObj::RscDfn, &p, &set("DrbdOptions/Net/allow-two-primaries", "Yes"), 0).unwrap();
        assert_eq!(out.get("DrbdOptions/Net/allow-two-primaries").map(String::as_str), Some("yes"));
        assert!(apply(PropsObj::RscDfn, &p, &set("New", "n"), 0).is_err());
        assert!(apply(PropsObj::RscDfn, &p, &set("DrbdOptions/Net/protocol", "X"), 0).is_err());
        // Deleting a key LINSTOR does not know is refused too, with its message.
        let del = |k: &str| PropsModify { delete_props: vec![k.into()], ..Default::default() };
        let e = apply(PropsObj::RscDfn, &p, &del("Other"), 0).unwrap_err();
        assert_eq!((e.rc.message.as_str(), e.rc.cause.as_deref()), ("Invalid property key", Some("The key 'Other' is not whitelisted.")));
        assert!(!apply(PropsObj::RscDfn, &p, &del("DrbdOptions/Net/protocol"), 0).unwrap().contains_key("DrbdOptions/Net/protocol"));
        // A namespace: every key in it.
        let ns = |n: &str| PropsModify { delete_namespaces: vec![n.into()], ..Default::default() };
        assert!(!apply(PropsObj::RscDfn, &p, &ns("Aux/ns"), 0).unwrap().contains_key("Aux/ns/x"));
        let q = props(&[("Odd/x", "1")]);
        assert!(apply(PropsObj::RscDfn, &q, &ns("Odd"), 0).is_err());
        // Nothing is checked for a key-value store.
        assert!(apply(PropsObj::Kvs, &p, &del("Other"), 0).is_ok());
    }

    #[test]
    fn absolute_keys_name_the_same_property() {
        let m = PropsModify { override_props: props(&[("/snap/a", "1")]), ..Default::default() };
        let out = apply(PropsObj::Kvs, &Props::new(), &m, 0).unwrap();
        assert_eq!(out, props(&[("snap/a", "1")]));
        let m = PropsModify { delete_props: vec!["/snap/a".into()], ..Default::default() };
        assert!(apply(PropsObj::Kvs, &out, &m, 0).unwrap().is_empty());
    }

    #[test]
    fn bad_keys_are_rejected() {
        assert!(check("", "v", 0).is_err());
        assert!(check("/Aux", "v", 0).is_err());
        assert!(check("Aux//x", "v", 0).is_err());
        assert!(check("Aux/./x", "v", 0).is_err());
        assert!(check("Aux/..", "v", 0).is_err());
        assert!(check("../Aux", "v", 0).is_err());
        assert!(check("Aux/x.y", "v", 0).is_ok());
        assert!(check("Aux/a b", "v", 0).is_err());
        assert!(check(&"k".repeat(257), "v", 0).is_err());
        assert!(check("Aux/ok", &"v".repeat(MAX_VALUE_LEN + 1), 0).is_err());
        let e = check("Aux/a b", "v", 0).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_INVLD_PROP);
        assert_eq!((e.rc.message.as_str(), e.rc.cause.as_deref()), ("Invalid key: Aux/a b", Some("The key 'Aux/a b' is invalid.")));
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
