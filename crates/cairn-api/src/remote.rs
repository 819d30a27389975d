//! Remotes (`/v1/remotes`): the shapes of LINSTOR's `RemoteList`,
//! `S3Remote`, `LinstorRemote` and `EbsRemote`.
//!
//! LINSTOR serialises these with `@JsonInclude(NON_EMPTY)`: empty lists and
//! unset fields are left out, so the combined list of a cluster without
//! remotes is `{}` (not the array the OpenAPI document claims).

use serde::{Deserialize, Serialize};

/// `GET /v1/remotes`: one object with a list per remote kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoteList {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub s3_remotes: Vec<S3Remote>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub linstor_remotes: Vec<LinstorRemote>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ebs_remotes: Vec<EbsRemote>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Remote {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_path_style: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinstorRemote {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EbsRemote {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_is_an_empty_object_as_linstor_writes_it() {
        assert_eq!(serde_json::to_string(&RemoteList::default()).unwrap(), "{}");
        let one = RemoteList { s3_remotes: vec![S3Remote { remote_name: Some("s3a".into()), ..Default::default() }], ..Default::default() };
        assert_eq!(serde_json::to_string(&one).unwrap(), r#"{"s3_remotes":[{"remote_name":"s3a"}]}"#);
    }
}
