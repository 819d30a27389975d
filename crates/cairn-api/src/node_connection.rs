//! Node connections (properties on a pair of nodes).

use serde::{Deserialize, Serialize};

use crate::Props;

/// `NodeConnection`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConnection {
    pub node_a: String,
    pub node_b: String,
    pub props: Props,
}

/// `ResourceConnection`: properties on the connection between the
/// replicas of one resource on two nodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceConnection {
    pub node_a: String,
    pub node_b: String,
    pub props: Props,
    pub flags: Vec<String>,
}
