//! Physical storage: unused disks of nodes, and pools made on them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Props, lenient};

/// `PhysicalStorageDevice`: one disk inside a [`PhysicalStorage`] group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhysicalStorageDevice {
    pub device: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
}

/// `PhysicalStorage`: disks of one size and kind, per node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhysicalStorage {
    pub size: i64,
    pub rotational: bool,
    pub nodes: BTreeMap<String, Vec<PhysicalStorageDevice>>,
}

/// `PhysicalStorageNode`: one disk of one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhysicalStorageNode {
    pub size: i64,
    pub rotational: bool,
    #[serde(flatten)]
    pub device: PhysicalStorageDevice,
}

/// `PhysicalStorageStoragePoolCreate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhysicalStorageStoragePoolCreate {
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(deserialize_with = "lenient::props")]
    pub props: Props,
}

/// `PhysicalStorageCreate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhysicalStorageCreate {
    #[serde(deserialize_with = "lenient::string")]
    pub provider_kind: String,
    #[serde(deserialize_with = "lenient::string_list")]
    pub device_paths: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub raid_level: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub pool_name: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub vdo_enable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub sed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_storage_pool: Option<PhysicalStorageStoragePoolCreate>,
    #[serde(deserialize_with = "lenient::string_list")]
    pub pv_create_arguments: Vec<String>,
    #[serde(deserialize_with = "lenient::string_list")]
    pub vg_create_arguments: Vec<String>,
    #[serde(deserialize_with = "lenient::string_list")]
    pub lv_create_arguments: Vec<String>,
}
