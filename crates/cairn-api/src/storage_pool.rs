//! Storage pools and storage pool definitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ApiCallRc, Props, lenient};

/// `StoragePool`: body of `POST /v1/nodes/{node}/storage-pools`, element of
/// `GET /v1/view/storage-pools`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoragePool {
    #[serde(deserialize_with = "lenient::string")]
    pub storage_pool_name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub node_name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub provider_kind: String,
    #[serde(deserialize_with = "lenient::props")]
    pub props: Props,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_traits: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub free_capacity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub total_capacity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub free_space_mgr_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub uuid: Option<String>,

    pub reports: Vec<ApiCallRc>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub supports_snapshots: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub shared_space: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub external_locking: Option<bool>,
}

/// `StoragePoolDefinition`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoragePoolDefinition {
    #[serde(deserialize_with = "lenient::string")]
    pub storage_pool_name: String,
    #[serde(deserialize_with = "lenient::props")]
    pub props: Props,
}
