//! LINSTOR REST API v1 wire types, as the OpenAPI document
//! (`linstor-rest-v1-openapi.yaml`) names them, plus `ApiCallRc` and its
//! `ret_code` masks. No IO lives here: the controller, the client, the CLI and
//! the tests all share these structs so they cannot drift apart.
//!
//! Request structs deserialize leniently (wire rule W7): numbers may arrive as
//! strings, property values as numbers, `null` means "unset", unknown fields
//! are ignored. Response structs omit what is unknown rather than sending
//! `null`.

pub mod controller;
pub mod ext_file;
pub mod kvs;
pub mod lenient;
pub mod node;
pub mod node_connection;
pub mod physical;
pub mod placement;
pub mod query;
pub mod rc;
pub mod remote;
pub mod resource;
pub mod resource_definition;
pub mod resource_group;
pub mod schedule;
pub mod snapshot;
pub mod storage_pool;
pub mod time;

pub use rc::ApiCallRc;

/// Property map as it travels on the wire: string keys, string values.
pub type Props = std::collections::BTreeMap<String, String>;

/// The body of every "modify properties" call (`GenericPropsModify` and its
/// siblings `NodeModify`, `StoragePoolDefinitionModify`, ...).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PropsModify {
    #[serde(deserialize_with = "lenient::props", skip_serializing_if = "Props::is_empty")]
    pub override_props: Props,
    #[serde(deserialize_with = "lenient::string_list", skip_serializing_if = "Vec::is_empty")]
    pub delete_props: Vec<String>,
    #[serde(deserialize_with = "lenient::string_list", skip_serializing_if = "Vec::is_empty")]
    pub delete_namespaces: Vec<String>,
}

/// One whitelisted property as `…/properties/info` describes it
/// (`PropsInfo`): its type (`regex`, `range`, `boolean`, ...), the pattern
/// or range a value must match, its default, unit and description.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PropsInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    pub prop_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dflt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// A layer kind name as LINSTOR spells it.
pub const LAYER_KINDS: &[&str] = &["DRBD", "LUKS", "STORAGE", "NVME", "WRITECACHE", "CACHE", "BCACHE"];
