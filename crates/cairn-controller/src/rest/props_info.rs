//! `…/properties/info`: the properties LINSTOR documents for each object
//! kind (its whitelist), as `PropsInfo` maps: the rules
//! `cairn_domain::whitelist` checks every property change against.

use std::collections::BTreeMap;

use axum::Router;
use axum::response::Response;
use axum::routing::get;
use cairn_api::PropsInfo;
use cairn_domain::whitelist::{self, Table};

use super::error::ApiError;
use super::reply::ok;
use crate::state::AppState;

fn table() -> Result<&'static Table, ApiError> {
    whitelist::table().map_err(ApiError::Internal)
}

/// The properties of the given LINSTOR object kinds (`CTRL`, `RSC_DFN`,
/// ...), merged.
pub fn props_of(kinds: &[&str]) -> Result<BTreeMap<String, PropsInfo>, ApiError> {
    let t = table()?;
    Ok(kinds.iter().filter_map(|k| t.get(*k)).flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone()))).collect())
}

/// Each route and the object kinds it lists, as LINSTOR's REST classes
/// (resource groups and volume groups list the definitions' properties).
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/controller/properties/info", &["CTRL"]),
    ("/v1/nodes/properties/info", &["NODE"]),
    ("/v1/nodes/{node}/storage-pools/properties/info", &["STOR_POOL"]),
    ("/v1/storage-pool-definitions/properties/info", &["STOR_POOL_DFN"]),
    ("/v1/resource-definitions/properties/info", &["RSC_DFN"]),
    ("/v1/resource-groups/properties/info", &["RSC_DFN"]),
    ("/v1/resource-definitions/{resource}/volume-definitions/properties/info", &["VLM_DFN"]),
    ("/v1/resource-groups/{resource_group}/volume-groups/properties/info", &["VLM_DFN"]),
    ("/v1/resource-definitions/{resource}/resources/properties/info", &["RSC"]),
    ("/v1/resource-definitions/{resource}/resources/{node}/volumes/properties/info", &["VLM"]),
    ("/v1/resource-definitions/{resource}/resource-connections/properties/info", &["RSC_CONN"]),
    (
        "/v1/resource-definitions/{resource}/drbd-proxy/properties/info",
        &["DRBD_PROXY", "DRBD_PROXY_LZMA", "DRBD_PROXY_ZLIB", "DRBD_PROXY_ZSTD"],
    ),
];

pub fn routes() -> Router<AppState> {
    let r = ROUTES.iter().fold(Router::new(), |r, (path, kinds)| {
        let kinds: &'static [&'static str] = kinds;
        r.route(path, get(move || async move { props_of(kinds).map(|m| ok(&m)) }))
    });
    r.route("/v1/controller/properties/info/all", get(all))
}

/// Every kind, keyed by LINSTOR's object name.
async fn all() -> Result<Response, ApiError> {
    Ok(ok(table()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_linstors_kinds_and_shapes() {
        let t = table().unwrap();
        for kind in ["CTRL", "NODE", "NODE_CONN", "RSC", "RSC_DFN", "RSC_CONN", "STOR_POOL", "STOR_POOL_DFN", "VLM", "VLM_DFN"] {
            assert!(t.get(kind).is_some_and(|m| !m.is_empty()), "{kind}");
        }
        for (_, kinds) in ROUTES {
            assert!(!props_of(kinds).unwrap().is_empty());
        }
        let rd = props_of(&["RSC_DFN"]).unwrap();
        let quorum = &rd["DrbdOptions/Resource/quorum"];
        assert_eq!(quorum.prop_type, "numeric_or_symbol");
        assert_eq!(quorum.value.as_deref(), Some("(1 - 32) or (?:off|majority|all)"));
        let slots = &rd["PeerSlotsNewResource"];
        assert_eq!((slots.prop_type.as_str(), slots.value.as_deref()), ("range", Some("(1 - 31)")));
        assert!(slots.info.as_deref().is_some_and(|i| i.contains("peer slots")));
        // Long and string properties have no value pattern, as in LINSTOR.
        assert!(rd.values().filter(|p| p.prop_type == "string" || p.prop_type == "long").all(|p| p.value.is_none()));
        assert!(props_of(&["RSC_CONN"]).unwrap().contains_key("DrbdOptions/Net/protocol"));
    }
}
