//! Snapshots of resource definitions, restore and rollback.

use serde::{Deserialize, Serialize};

use crate::{Props, lenient};

/// `SnapshotVolumeDefinition`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotVolumeDefinition {
    pub volume_number: i64,
    pub size_kib: i64,
}

/// `SnapshotVolumeNode`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotVolumeNode {
    pub uuid: String,
    pub vlm_nr: i64,
    pub props: Props,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// `SnapshotNode`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotNode {
    pub snapshot_name: String,
    pub node_name: String,
    pub create_timestamp: i64,
    pub flags: Vec<String>,
    pub uuid: String,
    pub snapshot_volumes: Vec<SnapshotVolumeNode>,
}

/// `Snapshot` (request and reply).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub resource_name: String,
    #[serde(deserialize_with = "lenient::string_list")]
    pub nodes: Vec<String>,
    #[serde(deserialize_with = "lenient::props")]
    pub props: Props,
    #[serde(deserialize_with = "lenient::string_list")]
    pub flags: Vec<String>,
    pub volume_definitions: Vec<SnapshotVolumeDefinition>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub uuid: Option<String>,
    pub snapshots: Vec<SnapshotNode>,
}

/// `CreateMultiSnapshotRequest`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateMultiSnapshotRequest {
    pub snapshots: Vec<Snapshot>,
}

/// `SnapshotRollback`: the body of `POST …/snapshot-rollback/{snap}`
/// (optional). `zfs_rollback_strategy` overrides the
/// `StorDriver/Zfs/RollbackStrategy` property for this call; LINSTOR reads
/// it without regard to case and takes any other value as "dynamic".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotRollback {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zfs_rollback_strategy: Option<String>,
}

/// `SnapshotRestore`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotRestore {
    #[serde(deserialize_with = "lenient::string")]
    pub to_resource: String,
    #[serde(deserialize_with = "lenient::string_list")]
    pub nodes: Vec<String>,
    pub stor_pool_rename: std::collections::BTreeMap<String, String>,
}
