//! `ApiCallRc`: LINSTOR's reply entry, and the `ret_code` bit layout.
//!
//! A `ret_code` is a Java `long`: type bits 62–63 (error, warning, info), the
//! operation in bits 24–25, the object in bits 18–22 and the code in bits
//! 0–14. Errors and warnings are therefore negative numbers on the wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

const fn bits(v: u64) -> i64 {
    v as i64
}

pub const MASK_ERROR: i64 = bits(0xC000_0000_0000_0000);
pub const MASK_WARN: i64 = bits(0x8000_0000_0000_0000);
pub const MASK_INFO: i64 = bits(0x4000_0000_0000_0000);
pub const MASK_BITS_TYPE: i64 = bits(0xC000_0000_0000_0000);
pub const MASK_BITS_OP: i64 = 0x0300_0000;
pub const MASK_BITS_OBJ: i64 = 0x007C_0000;
pub const MASK_BITS_CODE: i64 = 0x7FFF;

pub const MASK_CRT: i64 = 0x0100_0000;
pub const MASK_MOD: i64 = 0x0200_0000;
pub const MASK_DEL: i64 = 0x0300_0000;

pub const MASK_SCHEDULE: i64 = 0x54_0000;
pub const MASK_EXT_FILES: i64 = 0x50_0000;
pub const MASK_PHYSICAL_DEVICE: i64 = 0x4C_0000;
pub const MASK_VLM_GRP: i64 = 0x48_0000;
pub const MASK_RSC_GRP: i64 = 0x44_0000;
pub const MASK_KVS: i64 = 0x40_0000;
pub const MASK_NODE: i64 = 0x3C_0000;
pub const MASK_RSC_DFN: i64 = 0x38_0000;
pub const MASK_RSC: i64 = 0x34_0000;
pub const MASK_VLM_DFN: i64 = 0x30_0000;
pub const MASK_VLM: i64 = 0x2C_0000;
pub const MASK_NODE_CONN: i64 = 0x28_0000;
pub const MASK_RSC_CONN: i64 = 0x24_0000;
pub const MASK_VLM_CONN: i64 = 0x20_0000;
pub const MASK_NET_IF: i64 = 0x1C_0000;
pub const MASK_STOR_POOL_DFN: i64 = 0x18_0000;
pub const MASK_STOR_POOL: i64 = 0x14_0000;
pub const MASK_CTRL_CONF: i64 = 0x10_0000;
pub const MASK_SNAPSHOT: i64 = 0x0C_0000;
pub const MASK_BACKUP: i64 = 0x08_0000;
pub const MASK_REMOTE: i64 = 0x04_0000;

// Success codes.
pub const CREATED: i64 = 1;
pub const DELETED: i64 = 2;
pub const MODIFIED: i64 = 3;
pub const PASSPHRASE_ACCEPTED: i64 = 4;

// Failure codes (the value part; combine with MASK_ERROR).
pub const FAIL_SQL: i64 = 100;
pub const FAIL_INVLD_NODE_NAME: i64 = 200;
pub const FAIL_INVLD_NODE_TYPE: i64 = 201;
pub const FAIL_INVLD_RSC_NAME: i64 = 202;
pub const FAIL_INVLD_RSC_PORT: i64 = 203;
pub const FAIL_INVLD_NODE_ID: i64 = 204;
pub const FAIL_INVLD_VLM_NR: i64 = 205;
pub const FAIL_INVLD_VLM_SIZE: i64 = 206;
pub const FAIL_INVLD_MINOR_NR: i64 = 207;
pub const FAIL_INVLD_STOR_POOL_NAME: i64 = 208;
pub const FAIL_INVLD_NET_NAME: i64 = 209;
pub const FAIL_INVLD_NET_ADDR: i64 = 210;
pub const FAIL_INVLD_NET_PORT: i64 = 211;
pub const FAIL_INVLD_NET_TYPE: i64 = 212;
pub const FAIL_INVLD_PROP: i64 = 213;
pub const FAIL_INVLD_TRANSPORT_TYPE: i64 = 214;
pub const FAIL_INVLD_TCP_PORT: i64 = 215;
pub const FAIL_INVLD_CRYPT_PASSPHRASE: i64 = 216;
pub const FAIL_INVLD_ENCRYPT_TYPE: i64 = 217;
pub const FAIL_INVLD_SNAPSHOT_NAME: i64 = 218;
pub const FAIL_INVLD_PLACE_COUNT: i64 = 219;
pub const FAIL_INVLD_FREE_SPACE_MGR_NAME: i64 = 220;
pub const FAIL_INVLD_STOR_DRIVER: i64 = 221;
pub const FAIL_INVLD_KVS_NAME: i64 = 223;
pub const FAIL_INVLD_LAYER_KIND: i64 = 224;
pub const FAIL_INVLD_BACKUP_CONFIG: i64 = 238;
pub const FAIL_INVLD_REMOTE_NAME: i64 = 239;
pub const FAIL_INVLD_SCHEDULE_NAME: i64 = 241;
pub const FAIL_INVLD_LAYER_STACK: i64 = 225;
pub const FAIL_INVLD_EXT_NAME: i64 = 226;
pub const FAIL_INVLD_PROVIDER: i64 = 227;
pub const FAIL_INVLD_VLM_SIZES: i64 = 228;
pub const FAIL_INVLD_CONF: i64 = 230;
pub const FAIL_INVLD_REQUEST: i64 = 234;
pub const FAIL_INVLD_DB_EXPORT_FILE: i64 = 242;
pub const FAIL_NODE_HAS_USED_RSC: i64 = 233;
pub const FAIL_INVLD_EXT_FILE_NAME: i64 = 235;
pub const FAIL_INVLD_EXT_FILE: i64 = 236;
pub const FAIL_INVLD_RSC_GRP_NAME: i64 = 237;
pub const FAIL_INVLD_RSC_STATE: i64 = 243;

pub const FAIL_NOT_FOUND_NODE: i64 = 300;
pub const FAIL_NOT_FOUND_RSC_DFN: i64 = 301;
pub const FAIL_NOT_FOUND_RSC: i64 = 302;
pub const FAIL_NOT_FOUND_VLM_DFN: i64 = 303;
pub const FAIL_NOT_FOUND_VLM: i64 = 304;
pub const FAIL_NOT_FOUND_NET_IF: i64 = 305;
pub const FAIL_NOT_FOUND_NODE_CONN: i64 = 306;
pub const FAIL_NOT_FOUND_RSC_CONN: i64 = 307;
pub const FAIL_NOT_FOUND_STOR_POOL_DFN: i64 = 309;
pub const FAIL_NOT_FOUND_STOR_POOL: i64 = 310;
pub const FAIL_NOT_FOUND_DFLT_STOR_POOL: i64 = 311;
pub const FAIL_NOT_FOUND_CRYPT_KEY: i64 = 312;
pub const FAIL_NOT_FOUND_SNAPSHOT_DFN: i64 = 313;
pub const FAIL_NOT_FOUND_SNAPSHOT: i64 = 315;
pub const FAIL_NOT_FOUND_KVS: i64 = 316;
pub const FAIL_NOT_FOUND_RSC_GRP: i64 = 317;
pub const FAIL_NOT_FOUND_VLM_GRP: i64 = 318;
pub const FAIL_NOT_FOUND_EXT_FILE: i64 = 320;
pub const FAIL_NOT_FOUND_REMOTE: i64 = 321;
pub const FAIL_NOT_FOUND_SCHEDULE: i64 = 323;
pub const FAIL_NOT_FOUND_BACKUP: i64 = 322;

pub const FAIL_EXISTS_NODE: i64 = 500;
pub const FAIL_EXISTS_RSC_DFN: i64 = 501;
pub const FAIL_EXISTS_RSC: i64 = 502;
pub const FAIL_EXISTS_VLM_DFN: i64 = 503;
pub const FAIL_EXISTS_NET_IF: i64 = 505;
pub const FAIL_EXISTS_STOR_POOL_DFN: i64 = 509;
pub const FAIL_EXISTS_STOR_POOL: i64 = 510;
pub const FAIL_EXISTS_EXT_NAME: i64 = 517;
pub const FAIL_EXISTS_CRYPT_PASSPHRASE: i64 = 512;
pub const FAIL_EXISTS_SNAPSHOT_DFN: i64 = 514;
pub const FAIL_EXISTS_SNAPSHOT: i64 = 516;
pub const FAIL_EXISTS_RSC_GRP: i64 = 522;
pub const FAIL_EXISTS_VLM_GRP: i64 = 523;
pub const FAIL_EXISTS_REMOTE: i64 = 527;
pub const FAIL_EXISTS_SCHEDULE: i64 = 528;

pub const FAIL_MISSING_PROPS: i64 = 600;
pub const FAIL_MISSING_NETCOM: i64 = 603;
pub const FAIL_POOL_EXHAUSTED_VLM_NR: i64 = 800;
pub const FAIL_UNDECIDABLE_AUTOPLACMENT: i64 = 985;
pub const FAIL_INSUFFICIENT_REPLICA_COUNT: i64 = 991;
pub const FAIL_INSUFFICIENT_PEER_SLOTS: i64 = 993;
pub const FAIL_NOT_ENOUGH_NODES: i64 = 996;
pub const FAIL_STLT_DOES_NOT_SUPPORT_LAYER: i64 = 988;
pub const FAIL_SNAPSHOTS_NOT_SUPPORTED: i64 = 994;
pub const FAIL_NOT_CONNECTED: i64 = 995;
pub const FAIL_IN_USE: i64 = 997;
pub const FAIL_NOT_ENOUGH_FREE_SPACE: i64 = 980;
pub const FAIL_NOT_ALL_UPTODATE: i64 = 974;
pub const FAIL_BACKUP_UNKNOWN_CLUSTER: i64 = 976;
pub const FAIL_DEPENDEND_BACKUP: i64 = 977;
pub const FAIL_UNKNOWN_ERROR: i64 = 998;
pub const FAIL_IMPL_ERROR: i64 = 999;

// Warnings (combine with MASK_WARN).
pub const WARN_NOT_CONNECTED: i64 = 1002;
pub const WARN_DEL_UNSET_PROP: i64 = 1005;
pub const WARN_STLT_NOT_UPDATED: i64 = 1003;
pub const WARN_RSC_ALREADY_DEPLOYED: i64 = 1006;
pub const WARN_RSC_ALREADY_DISKLESS: i64 = 1008;
pub const WARN_NOT_ENOUGH_NODES_FOR_TIE_BREAKER: i64 = 1013;
pub const WARN_NODE_EVICTED: i64 = 1017;
pub const WARN_NOT_EVACUATING: i64 = 1020;
pub const WARN_NOT_FOUND: i64 = 3000;
pub const WARN_NO_EFFECT: i64 = 3001;

// Access: a command refused to the caller, and REST sign-in (LINSTOR's
// `FAIL_SIGN_IN*` carry no operation or object bits).
pub const FAIL_ACC_DENIED_COMMAND: i64 = 412;
pub const FAIL_SIGN_IN: i64 = 10000;
pub const FAIL_SIGN_IN_MISSING_CREDENTIALS: i64 = 10001;

// Infos (combine with MASK_INFO).
pub const INFO_PROP_SET: i64 = 10002;
pub const INFO_TIE_BREAKER_CREATED: i64 = 10003;
pub const INFO_TIE_BREAKER_DELETING: i64 = 10004;
pub const INFO_TIE_BREAKER_TAKEOVER: i64 = 10006;
pub const INFO_NOOP: i64 = 10007;
pub const INFO_RSC_ALREADY_EXISTS: i64 = 10008;

// Whole-entry specials.
pub const UNKNOWN_API_CALL: i64 = bits(0x0FFF_FFFF_FFFF_FFFF) | MASK_ERROR;
pub const API_CALL_AUTH_REQ: i64 = bits(0x0FFF_FFFF_FFFF_FFFE) | MASK_ERROR;
pub const API_CALL_PARSE_ERROR: i64 = bits(0x0FFF_FFFF_FFFF_FFFD) | MASK_ERROR;

/// One entry of a reply list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiCallRc {
    pub ret_code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_report_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub obj_refs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

impl ApiCallRc {
    pub fn new(ret_code: i64, message: impl Into<String>) -> Self {
        ApiCallRc {
            ret_code,
            message: message.into(),
            cause: None,
            correction: None,
            details: None,
            error_report_ids: Vec::new(),
            obj_refs: BTreeMap::new(),
            created_at: None,
        }
    }

    /// An error entry: `MASK_ERROR | op | obj | code`.
    pub fn error(op_obj: i64, code: i64, message: impl Into<String>) -> Self {
        Self::new(MASK_ERROR | op_obj | code, message)
    }

    /// A success entry: `op | obj | code`.
    pub fn success(op_obj: i64, code: i64, message: impl Into<String>) -> Self {
        Self::new(op_obj | code, message)
    }

    pub fn warning(op_obj: i64, code: i64, message: impl Into<String>) -> Self {
        Self::new(MASK_WARN | op_obj | code, message)
    }

    pub fn info(op_obj: i64, code: i64, message: impl Into<String>) -> Self {
        Self::new(MASK_INFO | op_obj | code, message)
    }

    pub fn with_cause(mut self, cause: impl Into<String>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub fn with_correction(mut self, correction: impl Into<String>) -> Self {
        self.correction = Some(correction.into());
        self
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn with_ref(mut self, key: &str, value: impl Into<String>) -> Self {
        self.obj_refs.insert(key.to_string(), value.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.ret_code & MASK_BITS_TYPE == MASK_ERROR
    }

    pub fn is_warning(&self) -> bool {
        self.ret_code & MASK_BITS_TYPE == MASK_WARN
    }

    pub fn is_info(&self) -> bool {
        self.ret_code & MASK_BITS_TYPE == MASK_INFO
    }

    /// The code part (low 15 bits).
    pub fn code(&self) -> i64 {
        self.ret_code & MASK_BITS_CODE
    }

    /// The HTTP status LINSTOR gives a reply list containing this entry as
    /// its first error; `None` when the entry is not an error.
    pub fn error_status(&self) -> Option<u16> {
        if !self.is_error() {
            return None;
        }
        if self.ret_code == API_CALL_PARSE_ERROR {
            return Some(400);
        }
        if self.ret_code == UNKNOWN_API_CALL {
            return Some(404);
        }
        Some(match self.code() {
            300..=399 => 404,
            400..=499 => 403,
            _ => 500,
        })
    }
}

/// The HTTP status of a reply list: the first error decides, otherwise the
/// call's success status (200, or 201 for creations).
pub fn status_for(replies: &[ApiCallRc], success: u16) -> u16 {
    replies.iter().find_map(ApiCallRc::error_status).unwrap_or(success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exists_rsc_dfn_create_matches_linstor_value() {
        let rc = ApiCallRc::error(MASK_CRT | MASK_RSC_DFN, FAIL_EXISTS_RSC_DFN, "x");
        assert_eq!(rc.ret_code, -4611686018406940171);
        assert!(rc.is_error());
        assert!(!rc.is_warning());
    }

    #[test]
    fn node_created_matches_linstor_value() {
        assert_eq!(ApiCallRc::success(MASK_CRT | MASK_NODE, CREATED, "x").ret_code, 20709377);
    }

    #[test]
    fn node_not_found_on_delete_matches_linstor_value() {
        let rc = ApiCallRc::error(MASK_DEL | MASK_NODE, FAIL_NOT_FOUND_NODE, "x");
        assert_eq!(rc.ret_code, -4611686018373123796);
        assert_eq!(rc.error_status(), Some(404));
    }

    #[test]
    fn warning_not_connected_on_resource_matches_linstor_value() {
        let rc = ApiCallRc::warning(MASK_RSC, WARN_NOT_CONNECTED, "x");
        assert_eq!(rc.ret_code, -9223372036851366934);
        assert!(rc.is_warning());
        assert!(!rc.is_error());
        assert_eq!(rc.error_status(), None);
    }

    #[test]
    fn golinstor_style_mask_match_ignores_object_and_operation_bits() {
        let rc = ApiCallRc::error(MASK_DEL | MASK_RSC, FAIL_IN_USE, "x");
        let go_mask = MASK_ERROR | FAIL_IN_USE;
        assert_eq!((rc.ret_code as u64) & ((MASK_ERROR | MASK_BITS_CODE) as u64), go_mask as u64);
    }

    #[test]
    fn status_mapping_follows_upstream() {
        let ok = ApiCallRc::success(MASK_CRT | MASK_NODE, CREATED, "ok");
        let warn = ApiCallRc::warning(MASK_NODE, WARN_NOT_CONNECTED, "w");
        let exists = ApiCallRc::error(MASK_CRT | MASK_NODE, FAIL_EXISTS_NODE, "e");
        let missing = ApiCallRc::error(MASK_CRT | MASK_NODE, FAIL_NOT_FOUND_NODE, "m");
        let denied = ApiCallRc::error(MASK_NODE, 400, "d");
        let parse = ApiCallRc::new(API_CALL_PARSE_ERROR, "p");
        assert_eq!(status_for(std::slice::from_ref(&ok), 201), 201);
        assert_eq!(status_for(&[ok.clone(), warn], 201), 201);
        assert_eq!(status_for(&[ok.clone(), exists.clone()], 201), 500);
        assert_eq!(status_for(&[missing], 200), 404);
        assert_eq!(status_for(&[denied], 200), 403);
        assert_eq!(status_for(&[parse], 200), 400);
        assert_eq!(status_for(&[], 200), 200);
    }

    #[test]
    fn serializes_without_empty_optionals() {
        let rc = ApiCallRc::success(MASK_CRT | MASK_NODE, CREATED, "m").with_ref("Node", "a");
        let v = serde_json::to_value(&rc).unwrap();
        assert_eq!(v["ret_code"], 20709377);
        assert_eq!(v["obj_refs"]["Node"], "a");
        assert!(v.get("cause").is_none());
        assert!(v.get("error_report_ids").is_none());
    }
}
