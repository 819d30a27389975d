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
/// it (at 1.28: auth tokens, database export, DRBD clients, the unified
/// toggle-disk body), so it is raised only when all a version adds is
/// served.
pub const REST_API_VERSION: &str = "1.28.0";

/// `ControllerConfigConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigDir {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// `ControllerConfigDebug`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigDebug {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_enabled: Option<bool>,
}

/// `ControllerConfigLog` (and `SatelliteConfigLog`, which lacks the
/// `_global` levels). Levels are `ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`:
/// `level` for the libraries, `level_linstor` for Cairn itself; `_global`
/// asks for the satellites too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigLog {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub print_stack_trace: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level_global: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level_linstor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level_linstor_global: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest_access_log_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest_access_mode: Option<String>,
}

/// `ControllerConfigDb`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigDb {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_check_disabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<serde_json::Value>,
}

/// `ControllerConfigHttp` / `ControllerConfigHttps`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigHttp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

/// `ControllerConfig`: `GET/PUT /v1/controller/config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControllerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigDir>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<ConfigDebug>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<ConfigLog>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<ConfigDb>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<ConfigHttp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https: Option<ConfigHttp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ldap: Option<serde_json::Value>,
}

/// `SatelliteConfigNet`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SatelliteConfigNet {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub com_type: Option<String>,
}

/// `SatelliteConfig`: `GET/PUT /v1/nodes/{node}/config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SatelliteConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigDir>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<ConfigDebug>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<ConfigLog>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stlt_override_node_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_spdk: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ebs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub special_satellite: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_keep_res_pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<SatelliteConfigNet>,
}

/// `NodeStats`, `ResourceStats`, ...: `GET /v1/stats/*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub count: i64,
}

/// `InitAuthTokenRequest`: `POST /v1/controller/auth/initialize-token-auth`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InitAuthTokenRequest {
    pub description: String,
    pub only_satellites: bool,
    pub no_https: bool,
}

/// `CreateAuthToken`: `POST /v1/controller/auth/token`. `expires_at` is
/// read by its first ten characters, a `YYYY-MM-DD` date (UTC midnight).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateAuthToken {
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_filter: Option<String>,
}

/// `ModifyAuthToken`: `PUT /v1/controller/auth/token/{authtokenid}`;
/// what is absent stays.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModifyAuthToken {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
}

/// `AuthToken`, an entry of the token list (never the token itself). Times
/// are ISO-8601 with an offset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthToken {
    pub id: u32,
    pub description: String,
    pub is_active: bool,
    pub created_at: String,
    pub deleted_at: Option<String>,
    pub ip_filter: Option<String>,
    pub expires_at: Option<String>,
    pub is_user_token: bool,
}

/// `AuthTokenListResponse`: `GET /v1/controller/auth/token`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthTokenListResponse {
    pub list: Vec<AuthToken>,
    pub count: usize,
}
