//! Nodes and their network interfaces.

use serde::{Deserialize, Serialize};

use crate::{Props, lenient};

/// `Node`: request body of `POST /v1/nodes` and element of `GET /v1/nodes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Node {
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(rename = "type", deserialize_with = "lenient::string")]
    pub node_type: String,
    #[serde(deserialize_with = "lenient::string_list")]
    pub flags: Vec<String>,
    #[serde(deserialize_with = "lenient::props")]
    pub props: Props,
    pub net_interfaces: Vec<NetInterface>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub connection_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub storage_providers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub resource_layers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported_providers: Option<std::collections::BTreeMap<String, Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported_layers: Option<std::collections::BTreeMap<String, Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub eviction_timestamp: Option<i64>,
    /// `LINUX` or `WINDOWS` (REST API 1.28); known once the satellite
    /// has connected.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub platform: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub os_variant: Option<String>,
}

/// `NetInterface`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetInterface {
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub satellite_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub satellite_encryption_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub is_active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub uuid: Option<String>,
}

/// `NodeModify`: `PUT /v1/nodes/{node}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeModify {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub node_type: Option<String>,
    #[serde(flatten)]
    pub props: crate::PropsModify,
}
