//! Resource groups, their auto-select filter, and volume groups.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Props, lenient};

/// `AutoSelectFilter`. Every field is optional so that a modify call can
/// merge only what it carries (the CLI's `set-property` sends `{}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoSelectFilter {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub place_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub additional_place_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub node_name_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub storage_pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub storage_pool_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub storage_pool_diskless_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub not_place_with_rsc: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub not_place_with_rsc_regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub replicas_on_same: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub replicas_on_different: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_int_map")]
    pub x_replicas_on_different_map: Option<BTreeMap<String, i64>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub layer_stack: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub provider_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub diskless_on_remaining: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub diskless_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f64")]
    pub overprovision: Option<f64>,
}

fn opt_int_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, i64>>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    lenient::int_map(v).map(Some).map_err(serde::de::Error::custom)
}

/// `ResourceGroup`: body of `POST /v1/resource-groups` and list element.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceGroup {
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub description: Option<String>,
    #[serde(deserialize_with = "lenient::props")]
    pub props: Props,
    pub select_filter: AutoSelectFilter,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub peer_slots: Option<i64>,
}

/// `ResourceGroupModify`: `PUT /v1/resource-groups/{rg}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceGroupModify {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub description: Option<String>,
    #[serde(flatten)]
    pub props: crate::PropsModify,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub select_filter: Option<AutoSelectFilter>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub peer_slots: Option<i64>,
}

/// `VolumeGroup`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeGroup {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub volume_number: Option<i64>,
    #[serde(deserialize_with = "lenient::props")]
    pub props: Props,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub uuid: Option<String>,
    #[serde(deserialize_with = "lenient::string_list")]
    pub flags: Vec<String>,
}

/// `VolumeGroupModify`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeGroupModify {
    #[serde(flatten)]
    pub props: crate::PropsModify,
    #[serde(deserialize_with = "lenient::string_list")]
    pub flags: Vec<String>,
}
