//! Every answer of the shared controller is a JSON list of ApiCallRc
//! entries with LINSTOR's ret_code, including the ones the HTTP layer
//! gives before any handler runs (unknown path, wrong method, unparsable
//! body or query).

use cairn_api::ApiCallRc;
use cairn_api::rc::{self, MASK_BITS_OBJ, MASK_BITS_OP};

use crate::shared::{client, replies};

/// method, path, body, HTTP status, ret_code of the first entry.
type Case = (&'static str, &'static str, Option<&'static [u8]>, u16, i64);

const CASES: &[Case] = &[
    ("GET", "/v1/no-such-thing", None, 404, rc::UNKNOWN_API_CALL),
    ("DELETE", "/v1/nodes/it-env-missing/no/such/path", None, 404, rc::UNKNOWN_API_CALL),
    // A path of the API with a method it does not have.
    ("PATCH", "/v1/nodes", Some(b"{}"), 405, rc::MASK_ERROR | rc::FAIL_UNKNOWN_ERROR),
    ("DELETE", "/v1/resource-groups", None, 405, rc::MASK_ERROR | rc::FAIL_UNKNOWN_ERROR),
    // In LINSTOR's API, for a feature Cairn deliberately lacks (EBS).
    ("POST", "/v1/nodes/ebs", Some(b"{}"), 501, rc::MASK_ERROR | rc::FAIL_INVLD_REQUEST),
    // Bodies and queries that do not parse.
    ("POST", "/v1/nodes", Some(b"{not json"), 400, rc::API_CALL_PARSE_ERROR),
    ("POST", "/v1/resource-groups", Some(br#"{"name":"it-env-x","select_filter":{"place_count":"two"}}"#), 400, rc::API_CALL_PARSE_ERROR),
    ("GET", "/v1/nodes?limit=many", None, 400, rc::API_CALL_PARSE_ERROR),
    // Refusals of the domain carry the object and operation bits, and their
    // status follows from the code as in LINSTOR (300s: 404).
    ("GET", "/v1/nodes/it-env-missing", None, 404, rc::MASK_ERROR | rc::MASK_NODE | rc::FAIL_NOT_FOUND_NODE),
    (
        "DELETE",
        "/v1/resource-groups/it-env-missing",
        None,
        404,
        rc::MASK_ERROR | rc::MASK_DEL | rc::MASK_RSC_GRP | rc::FAIL_NOT_FOUND_RSC_GRP,
    ),
];

#[test]
fn every_error_is_an_apicallrc_list_with_linstors_ret_code() {
    let c = client();
    for &(method, path, body, status, ret_code) in CASES {
        let r = c.raw(method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let what = format!("{method} {path}: {} {}", r.status, String::from_utf8_lossy(&r.body));
        assert_eq!(r.status, status, "{what}");
        assert_eq!(r.content_type.as_deref(), Some("application/json"), "{what}");
        let rcs = replies(&r);
        assert_eq!(rcs.len(), 1, "{what}");
        assert!(rcs[0].is_error() && rcs[0].ret_code < 0, "{what}");
        assert_eq!(rcs[0].ret_code, ret_code, "{what}: want {ret_code:#x}, got {:#x}", rcs[0].ret_code);
        assert!(!rcs[0].message.is_empty(), "{what}");
    }
}

#[test]
fn parse_errors_say_why_and_how_to_fix_it() {
    let r = client().raw("POST", "/v1/nodes", Some(b"{not json")).expect("POST");
    let rc = &replies(&r)[0];
    assert!(rc.cause.as_deref().is_some_and(|c| !c.is_empty()), "{rc:?}");
    assert!(rc.correction.as_deref().is_some_and(|c| c.contains("JSON")), "{rc:?}");
    // A not-found names the object and says what to do.
    let r = client().raw("GET", "/v1/nodes/it-env-missing", None).expect("GET");
    let rc = &replies(&r)[0];
    assert!(rc.message.contains("it-env-missing") && rc.correction.is_some(), "{rc:?}");
}

#[test]
fn successes_are_lists_too_with_positive_codes() {
    let c = client();
    // No Content-Type, numbers as strings: LINSTOR's clients send both.
    let r = c.raw("POST", "/v1/resource-groups", Some(br#"{"name":"it-env-rg","select_filter":{"place_count":"2"}}"#)).expect("POST");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let rcs: Vec<ApiCallRc> = replies(&r);
    assert_eq!(rcs[0].ret_code, rc::MASK_CRT | rc::MASK_RSC_GRP | rc::CREATED, "{rcs:?}");
    assert_eq!(rcs[0].ret_code & MASK_BITS_OP, rc::MASK_CRT);
    assert_eq!(rcs[0].ret_code & MASK_BITS_OBJ, rc::MASK_RSC_GRP);
    // An empty body means "change nothing", and is still answered with a list.
    let r = c.raw("PUT", "/v1/resource-groups/it-env-rg", Some(b"")).expect("PUT");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(replies(&r).iter().all(|e| e.ret_code > 0));
    let r = c.raw("DELETE", "/v1/resource-groups/it-env-rg", None).expect("DELETE");
    assert_eq!(r.status, 200);
    assert_eq!(replies(&r)[0].ret_code, rc::MASK_DEL | rc::MASK_RSC_GRP | rc::DELETED);
}
