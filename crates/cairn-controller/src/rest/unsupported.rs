//! Routes of LINSTOR's API for features Cairn deliberately lacks. They are
//! never registered as routes: a request for one reaches the router's
//! fallback like any route Cairn does not serve (so no literal segment such
//! as `/v1/nodes/ebs` competes with `/v1/nodes/{node}`), and is answered
//! here with an error that names the feature and says Cairn does not
//! support it, instead of the "not implemented yet" of the other routes.
//!
//! The answer is HTTP 501 with `MASK_ERROR | FAIL_INVLD_REQUEST`: the
//! status says the server does not support the functionality (LINSTOR's
//! own mapping of code 234 would give 500, a server failure, which this is
//! not), the code is LINSTOR's for a request it cannot serve as asked.

use axum::http::Method;
use cairn_api::ApiCallRc;
use cairn_api::rc;

/// A feature Cairn does not implement, and the spec routes that are its.
pub struct Unsupported {
    pub feature: &'static str,
    pub why: &'static str,
    pub instead: &'static str,
    pub routes: &'static [(&'static str, &'static str)],
}

pub const UNSUPPORTED: &[Unsupported] = &[
    Unsupported {
        feature: "EBS (Amazon Elastic Block Store)",
        why: "Cairn deliberately does not implement EBS target nodes, EBS remotes or EBS storage pools.",
        instead: "Use storage pools on local disks (LVM, LVM_THIN, ZFS, ZFS_THIN, FILE, FILE_THIN) of satellite nodes.",
        routes: &[("POST", "/v1/nodes/ebs"), ("POST", "/v1/remotes/ebs"), ("PUT", "/v1/remotes/ebs/{remoteName}")],
    },
    Unsupported {
        feature: "DRBD Proxy",
        why: "Cairn deliberately does not implement DRBD Proxy (LINBIT's proprietary buffering proxy for long-distance replication).",
        instead: "Replicate over DRBD's own connections; tune them with DrbdOptions/Net/* on the resource connection.",
        routes: &[
            ("PUT", "/v1/resource-definitions/{resource}/drbd-proxy"),
            ("POST", "/v1/resource-definitions/{resource}/drbd-proxy/enable/{node_a}/{node_b}"),
            ("POST", "/v1/resource-definitions/{resource}/drbd-proxy/disable/{node_a}/{node_b}"),
        ],
    },
    Unsupported {
        feature: "drbd-reactor control (drbd-reactorctl)",
        why: "Cairn deliberately does not run drbd-reactorctl on satellites.",
        instead: "Run drbd-reactorctl on the node itself.",
        routes: &[
            ("POST", "/v1/nodes/exec/drbd-reactorctl/status"),
            ("POST", "/v1/nodes/exec/drbd-reactorctl/evict"),
            ("POST", "/v1/nodes/exec/drbd-reactorctl/disable"),
            ("POST", "/v1/nodes/exec/drbd-reactorctl/enable"),
            ("POST", "/v1/nodes/exec/drbd-reactorctl/restart"),
        ],
    },
];

/// The ret_code of every refusal here.
pub const RET_CODE: i64 = rc::MASK_ERROR | rc::FAIL_INVLD_REQUEST;

/// The feature a request is for, if Cairn deliberately lacks it.
pub fn feature_of(method: &Method, path: &str) -> Option<&'static Unsupported> {
    UNSUPPORTED.iter().find(|u| u.routes.iter().any(|(m, t)| *m == method.as_str() && super::template_matches(t, path)))
}

/// The refusal's entry.
pub fn entry(u: &Unsupported) -> ApiCallRc {
    ApiCallRc::error(0, rc::FAIL_INVLD_REQUEST, format!("{} is not supported by Cairn.", u.feature))
        .with_cause(u.why)
        .with_correction(u.instead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec_routes::SPEC_ROUTES;

    #[test]
    fn every_refused_route_is_one_of_linstors_and_named_once() {
        let mut seen = std::collections::BTreeSet::new();
        for u in UNSUPPORTED {
            for r in u.routes {
                assert!(SPEC_ROUTES.contains(r), "{r:?} is not in LINSTOR's API");
                assert!(seen.insert(*r), "{r:?} twice");
            }
        }
        let post = Method::POST;
        assert_eq!(feature_of(&post, "/v1/nodes/ebs").map(|u| u.feature), Some("EBS (Amazon Elastic Block Store)"));
        assert!(feature_of(&post, "/v1/resource-definitions/r1/drbd-proxy/enable/a/b").is_some());
        assert!(feature_of(&Method::GET, "/v1/nodes/ebs").is_none(), "a node called ebs is looked up as usual");
        assert!(feature_of(&post, "/v1/remotes/s3").is_none());
        let e = entry(&UNSUPPORTED[1]);
        assert_eq!(e.ret_code, RET_CODE);
        assert_eq!(e.message, "DRBD Proxy is not supported by Cairn.");
    }
}
