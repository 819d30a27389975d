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

/// `ResourceDefinitionCloneRequest`: `POST /v1/resource-definitions/{rd}/clone`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefinitionCloneRequest {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub external_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub use_zfs_clone: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub layer_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub volume_passphrases: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub resource_group: Option<String>,
    #[serde(skip_serializing_if = "Props::is_empty", deserialize_with = "lenient::props")]
    pub override_props: Props,
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "lenient::string_list")]
    pub delete_props: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "lenient::string_list")]
    pub delete_namespaces: Vec<String>,
}

/// `ResourceDefinitionCloneStarted`: the answer to a clone request, also
/// when it failed (then `messages` holds the error, as LINSTOR answers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefinitionCloneStarted {
    #[serde(deserialize_with = "lenient::string")]
    pub location: String,
    #[serde(deserialize_with = "lenient::string")]
    pub source_name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub clone_name: String,
    pub messages: Vec<crate::ApiCallRc>,
}

/// The states of `ResourceDefinitionCloneStatus.status`.
pub const CLONE_CLONING: &str = "CLONING";
pub const CLONE_COMPLETE: &str = "COMPLETE";
pub const CLONE_FAILED: &str = "FAILED";

/// `ResourceDefinitionCloneStatus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefinitionCloneStatus {
    #[serde(deserialize_with = "lenient::string")]
    pub status: String,
}

/// `ResourceDefinitionSyncStatus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefinitionSyncStatus {
    #[serde(deserialize_with = "lenient::bool_or_false")]
    pub synced_on_all: bool,
}
