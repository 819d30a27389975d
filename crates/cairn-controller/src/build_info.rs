//! What this build is, as `build.rs` found it: LINSTOR's
//! `ControllerVersion` fields, for the REST reply and for `cairn --version`.

use cairn_api::controller::{ControllerVersion, REST_API_VERSION};

/// The commit built, or `unknown` (a source tarball).
pub const GIT_HASH: &str = env!("CAIRN_GIT_HASH");
const BUILD_EPOCH: &str = env!("CAIRN_BUILD_EPOCH");

/// This build's `GET /v1/controller/version` reply.
pub fn controller_version() -> ControllerVersion {
    let secs: i64 = BUILD_EPOCH.parse().unwrap_or(0);
    ControllerVersion {
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_hash: GIT_HASH.to_string(),
        build_time: cairn_api::time::iso8601_utc(secs.saturating_mul(1000)),
        rest_api_version: REST_API_VERSION.to_string(),
    }
}

/// `0.1.0 (git abc1234, built 2026-11-25)`, of this build or of a
/// controller's reply.
pub fn describe(v: &ControllerVersion) -> String {
    let hex = v.git_hash.len() >= 7 && v.git_hash.bytes().all(|b| b.is_ascii_hexdigit());
    let commit = if hex { v.git_hash.get(..7).unwrap_or(&v.git_hash) } else { &v.git_hash };
    let date = v.build_time.split('T').next().unwrap_or(&v.build_time);
    format!("{} (git {commit}, built {date})", v.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_commit_and_a_day() {
        let v = ControllerVersion {
            version: "1.2.3".into(),
            git_hash: "0123456789abcdef0123456789abcdef01234567".into(),
            build_time: "2026-11-25T21:55:47.000+00:00".into(),
            rest_api_version: REST_API_VERSION.into(),
        };
        assert_eq!(describe(&v), "1.2.3 (git 0123456, built 2026-11-25)");
        let tarball = ControllerVersion { git_hash: "unknown".into(), ..v };
        assert_eq!(describe(&tarball), "1.2.3 (git unknown, built 2026-11-25)");
    }

    #[test]
    fn this_build_has_a_commit_or_says_unknown() {
        let v = controller_version();
        assert!(v.git_hash == "unknown" || (v.git_hash.len() == 40 && v.git_hash.bytes().all(|b| b.is_ascii_hexdigit())), "{}", v.git_hash);
        assert!(v.build_time.len() > 10 && !v.build_time.starts_with("1970"), "{}", v.build_time);
    }
}
