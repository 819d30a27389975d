//! Resources (a resource definition placed on a node) and their volumes.

use serde::{Deserialize, Serialize};

use crate::{ApiCallRc, Props, lenient};

/// `ResourceState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use: Option<bool>,
}

/// `StorageVolume` inside a STORAGE layer object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageVolume {
    pub volume_number: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_size_kib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_size_kib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_state: Option<String>,
}

/// `StorageResource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageResource {
    pub storage_volumes: Vec<StorageVolume>,
}

/// `ResourceLayer`: one node of the resource's layer tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceLayer {
    pub children: Vec<ResourceLayer>,
    pub resource_name_suffix: String,
    #[serde(rename = "type")]
    pub layer_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageResource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub luks: Option<serde_json::Value>,
}

/// `VolumeState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_state: Option<String>,
    /// Per peer node: DRBD replication state and resync progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_states: Option<std::collections::BTreeMap<String, ReplicationState>>,
}

/// `ReplicationState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicationState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_percentage: Option<f64>,
}

/// `VolumeLayer`: `{type, data}` in `volumes[].layer_data_list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeLayer {
    #[serde(rename = "type")]
    pub layer_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// `Volume`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Volume {
    /// Always present, including 0 (wire rule W11).
    pub volume_number: i64,
    pub storage_pool_name: String,
    pub provider_kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_size_kib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_size_kib: Option<i64>,
    pub props: Props,
    pub flags: Vec<String>,
    pub state: VolumeState,
    pub layer_data_list: Vec<VolumeLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub reports: Vec<ApiCallRc>,
}

/// `Resource` (also the `resource` member of `ResourceCreate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resource {
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub node_name: String,
    #[serde(deserialize_with = "lenient::props")]
    pub props: Props,
    #[serde(deserialize_with = "lenient::string_list")]
    pub flags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_object: Option<ResourceLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<ResourceState>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_timestamp: Option<i64>,
}

/// `ResourceWithVolumes`: element of `GET /v1/view/resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceWithVolumes {
    #[serde(flatten)]
    pub resource: Resource,
    pub volumes: Vec<Volume>,
}

/// `ResourceCreate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceCreate {
    pub resource: Resource,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub layer_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub drbd_node_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub drbd_tcp_port_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub drbd_tcp_ports: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub drbd_client: Option<bool>,
}

/// `ResourceModify`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceModify {
    #[serde(flatten)]
    pub props: crate::PropsModify,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub drbd_tiebreaker: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub drbd_client: Option<bool>,
}

/// `ToggleDiskRequest`: `PUT …/resources/{node}/toggle-disk`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToggleDiskRequest {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub storage_pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub migrate_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub layer_list: Option<Vec<String>>,
}

/// `ToggleDiskDiskful`: the optional body of `…/toggle-disk/diskful[/{pool}]`
/// and `…/migrate-disk/...`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToggleDiskDiskful {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub layer_list: Option<Vec<String>>,
}
