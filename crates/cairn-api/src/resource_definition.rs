//! Resource definitions and volume definitions.

use serde::{Deserialize, Serialize};

use crate::{Props, lenient};

/// `ResourceDefinitionLayer` / `VolumeDefinitionLayer`: `{type, data}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LayerData {
    #[serde(rename = "type", deserialize_with = "lenient::string")]
    pub layer_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// `ResourceDefinition`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefinition {
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub external_name: Option<String>,
    #[serde(deserialize_with = "lenient::props")]
    pub props: Props,
    #[serde(deserialize_with = "lenient::string_list")]
    pub flags: Vec<String>,
    pub layer_data: Vec<LayerData>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub resource_group_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_definitions: Option<Vec<VolumeDefinition>>,
}

/// `ResourceDefinitionCreate`: `POST /v1/resource-definitions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefinitionCreate {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub drbd_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub drbd_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub drbd_peer_slots: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub drbd_transport_type: Option<String>,
    pub resource_definition: ResourceDefinition,
}

/// `ResourceDefinitionModify`: `PUT /v1/resource-definitions/{rd}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefinitionModify {
    #[serde(flatten)]
    pub props: crate::PropsModify,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub drbd_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub drbd_peer_slots: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub layer_stack: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub resource_group: Option<String>,
}

/// `VolumeDefinition`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeDefinition {
    /// Always serialized, including 0 (wire rule W11).
    #[serde(deserialize_with = "lenient::opt_i64")]
    pub volume_number: Option<i64>,
    #[serde(deserialize_with = "lenient::opt_i64")]
    pub size_kib: Option<i64>,
    #[serde(deserialize_with = "lenient::props")]
    pub props: Props,
    #[serde(deserialize_with = "lenient::string_list")]
    pub flags: Vec<String>,
    pub layer_data: Vec<LayerData>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub uuid: Option<String>,
}

/// `VolumeDefinitionCreate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeDefinitionCreate {
    pub volume_definition: VolumeDefinition,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub drbd_minor_number: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub passphrase: Option<String>,
}

/// `VolumeDefinitionModify`: a missing `size_kib` means "unchanged".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeDefinitionModify {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub size_kib: Option<i64>,
    #[serde(flatten)]
    pub props: crate::PropsModify,
    #[serde(deserialize_with = "lenient::string_list")]
    pub flags: Vec<String>,
}
