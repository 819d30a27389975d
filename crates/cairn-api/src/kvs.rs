//! Key-value stores.

use serde::{Deserialize, Serialize};

use crate::Props;

/// `KeyValueStore`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyValueStore {
    pub name: String,
    pub props: Props,
}
