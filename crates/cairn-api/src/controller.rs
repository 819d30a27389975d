//! Controller-level objects.

use serde::{Deserialize, Serialize};

/// `ControllerVersion`: `GET /v1/controller/version`. `rest_api_version`
/// must match `^1(\.\d+)*$`: python-linstor parses it as a tuple of ints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerVersion {
    pub version: String,
    pub git_hash: String,
    pub build_time: String,
    pub rest_api_version: String,
}

/// The REST API version Cairn advertises. python-linstor gates features on
/// it; 1.28 needs the unified toggle-disk body, auth tokens and DB export.
pub const REST_API_VERSION: &str = "1.27.0";
