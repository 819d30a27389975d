//! Placement requests and size queries: autoplace, spawn, make-available,
//! query-size-info, query-max-volume-size.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resource_group::AutoSelectFilter;
use crate::{ApiCallRc, Props, lenient};

/// `AutoPlaceRequest`: `POST /v1/resource-definitions/{rd}/autoplace`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoPlaceRequest {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub diskless_on_remaining: Option<bool>,
    pub select_filter: AutoSelectFilter,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub layer_list: Option<Vec<String>>,
}

/// `ResourceGroupSpawn`: `POST /v1/resource-groups/{rg}/spawn`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceGroupSpawn {
    #[serde(deserialize_with = "lenient::string")]
    pub resource_definition_name: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub resource_definition_external_name: Option<String>,
    #[serde(deserialize_with = "int_list")]
    pub volume_sizes: Vec<i64>,
    pub select_filter: AutoSelectFilter,
    #[serde(deserialize_with = "lenient::bool_or_false")]
    pub partial: bool,
    #[serde(deserialize_with = "lenient::bool_or_false")]
    pub definitions_only: bool,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub peer_slots: Option<i64>,
    #[serde(deserialize_with = "lenient::props", skip_serializing_if = "Props::is_empty")]
    pub resource_definition_props: Props,
}

fn int_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    let strings = lenient::string_list(d)?;
    strings
        .iter()
        .map(|s| s.trim().parse::<i64>().map_err(|_| serde::de::Error::custom(format!("expected an integer size, got \"{s}\""))))
        .collect()
}

/// `ResourceMakeAvailable`: `POST …/resources/{node}/make-available`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceMakeAvailable {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub layer_list: Option<Vec<String>>,
    #[serde(deserialize_with = "lenient::bool_or_false")]
    pub diskful: bool,
}

/// `QuerySizeInfoRequest` / `QueryAllSizeInfoRequest`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuerySizeInfoRequest {
    pub select_filter: AutoSelectFilter,
}

/// `QuerySizeInfoSpawnResult`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuerySizeInfoSpawnResult {
    pub node_name: String,
    pub stor_pool_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stor_pool_oversubscription_ratio: Option<f64>,
}

/// `QuerySizeInfoResponseSpaceInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpaceInfo {
    pub max_vlm_size_in_kib: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_size_in_kib: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_in_kib: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_oversubscription_ratio: Option<f64>,
    #[serde(default)]
    pub next_spawn_result: Vec<QuerySizeInfoSpawnResult>,
}

/// `QuerySizeInfoResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuerySizeInfoResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_info: Option<SpaceInfo>,
    #[serde(default)]
    pub reports: Vec<ApiCallRc>,
}

/// `QueryAllSizeInfoResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryAllSizeInfoResponse {
    pub result: BTreeMap<String, QuerySizeInfoResponse>,
    #[serde(default)]
    pub reports: Vec<ApiCallRc>,
}

/// `Candidate` of `MaxVolumeSizes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub storage_pool: String,
    pub max_volume_size_kib: i64,
    pub node_names: Vec<String>,
    pub all_thin: bool,
}

/// `MaxVolumeSizes`: `OPTIONS /v1/query-max-volume-size`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MaxVolumeSizes {
    pub candidates: Vec<Candidate>,
    pub default_max_oversubscription_ratio: f64,
}

/// `ResourceGroupAdjust`: `POST /v1/resource-groups/{rg}/adjust` and
/// `…/adjustall`; the filter goes over each group's own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceGroupAdjust {
    pub select_filter: AutoSelectFilter,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub copy_all_snaps: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snap_names: Vec<String>,
}
