//! REST API tokens, as LINSTOR's token authentication has them
//! (`CtrlAuthHandler`): the controller stores only a token's SHA-256 hash;
//! the raw token is shown once, in the reply that created it. A revoked
//! token stays stored (with `deleted_at`) so its id is never reused.
//!
//! Token authentication is in force when the controller property
//! `Auth/TokenAuthenticationEnabled` is true and at least one token is
//! valid (active, not revoked, not expired), as LINSTOR's
//! `AuthenticationFilter` decides.

use cairn_api::ApiCallRc;
#[cfg(test)]
use cairn_api::rc;
use cairn_api::rc::{CREATED, DELETED, FAIL_INVLD_CONF, FAIL_NOT_FOUND_NODE, MODIFIED, WARN_NO_EFFECT, WARN_NOT_FOUND};
use serde::{Deserialize, Serialize};

use crate::{Cluster, Ctx, Object, OpError, Outcome};

/// The controller property that turns token authentication on
/// (`NAMESPC_AUTH` / `KEY_TOKEN_AUTH_ENABLED`).
pub const PROP_TOKEN_AUTH_ENABLED: &str = "Auth/TokenAuthenticationEnabled";

/// One stored token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthToken {
    pub id: u32,
    /// Lower-case hex SHA-256 of the raw token.
    pub token_hash: String,
    pub description: String,
    pub is_active: bool,
    pub created_at_ms: i64,
    #[serde(default)]
    pub deleted_at_ms: Option<i64>,
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// The one client address the token is accepted from.
    #[serde(default)]
    pub ip_filter: Option<String>,
    /// False for the tokens LINSTOR makes for its satellites.
    pub is_user_token: bool,
}

impl AuthToken {
    /// Why the token cannot be used at `now_ms`, or None if it can
    /// (LINSTOR's `getTokenValidationError`).
    pub fn unusable(&self, now_ms: i64) -> Option<&'static str> {
        if self.deleted_at_ms.is_some() {
            Some("Token has been revoked.")
        } else if !self.is_active {
            Some("Token is disabled.")
        } else if self.expires_at_ms.is_some_and(|e| e < now_ms) {
            Some("Token has expired.")
        } else {
            None
        }
    }

    /// Whether a client at `peer` may use the token: a token with an IP
    /// filter only from that address, and never from an unknown one.
    pub fn admits(&self, peer: Option<std::net::IpAddr>) -> bool {
        match self.ip_filter.as_deref().filter(|f| !f.is_empty()) {
            None => true,
            Some(f) => match (f.parse::<std::net::IpAddr>(), peer) {
                (Ok(allowed), Some(p)) => allowed.to_canonical() == p.to_canonical(),
                _ => false,
            },
        }
    }
}

/// An IP filter must be one IPv4 or IPv6 address (LINSTOR's
/// `isInetAddress`); empty means none.
fn check_ip_filter(ip_filter: Option<&str>) -> Result<(), OpError> {
    match ip_filter.filter(|f| !f.is_empty()) {
        Some(f) if f.parse::<std::net::IpAddr>().is_err() => {
            Err(OpError::new(0, FAIL_INVLD_CONF, format!("Invalid IP filter: {f}"))
                .cause("The IP filter must be a valid IPv4 or IPv6 address"))
        }
        _ => Ok(()),
    }
}

fn not_found(id: u32) -> OpError {
    OpError::new(0, FAIL_NOT_FOUND_NODE, "Auth token not found").cause(format!("The specified auth token {id} does not exist"))
}

impl Cluster {
    /// Whether requests must carry a valid token.
    pub fn token_auth_enabled(&self, now_ms: i64) -> bool {
        crate::clone::truthy(self.ctrl_props.get(PROP_TOKEN_AUTH_ENABLED))
            && self.auth_tokens.values().any(|t| t.unusable(now_ms).is_none())
    }

    /// The stored token with this hash.
    pub fn auth_token_by_hash(&self, hash: &str) -> Option<&AuthToken> {
        self.auth_tokens.values().find(|t| t.token_hash == hash)
    }

    fn new_auth_token(&self, ctx: &Ctx, hash: &str, description: &str, expires_at_ms: Option<i64>, ip_filter: Option<&str>) -> AuthToken {
        AuthToken {
            id: self.auth_tokens.keys().next_back().map_or(1, |k| k.saturating_add(1)),
            token_hash: hash.to_string(),
            description: description.to_string(),
            is_active: true,
            created_at_ms: ctx.now_ms,
            deleted_at_ms: None,
            expires_at_ms,
            ip_filter: ip_filter.filter(|f| !f.is_empty()).map(str::to_string),
            is_user_token: true,
        }
    }

    /// `POST /v1/controller/auth/token`: a new user token for the raw
    /// token whose hash is `hash`; the reply shows `raw` once.
    pub fn create_auth_token(
        &self,
        ctx: &Ctx,
        raw: &str,
        hash: &str,
        description: &str,
        expires_at: Option<&str>,
        ip_filter: Option<&str>,
    ) -> Result<Outcome, OpError> {
        let expires_at_ms = match expires_at.filter(|e| !e.is_empty()) {
            None => None,
            Some(e) => Some(cairn_api::time::day_start_ms(e).ok_or_else(|| {
                OpError::new(0, FAIL_INVLD_CONF, format!("Invalid expiration date format: {e}"))
                    .cause("The expiration date must start with a valid date (e.g., 2025-12-31)")
            })?),
        };
        check_ip_filter(ip_filter)?;
        let token = self.new_auth_token(ctx, hash, description, expires_at_ms, ip_filter);
        let mut out = Outcome::default();
        out.reply(ApiCallRc::success(0, CREATED, format!("Auth token created successfully: {raw}")).with_ref("token", raw));
        out.put(Object::AuthToken(token));
        Ok(out)
    }

    /// `POST /v1/controller/auth/initialize-token-auth`: the first token
    /// and the property that turns token authentication on. Once it is on,
    /// nothing changes (`WARN_NO_EFFECT`); `only_satellites` renews the
    /// satellites' tokens, and Cairn's satellites have none (they never
    /// call the REST API).
    pub fn init_token_auth(&self, ctx: &Ctx, raw: &str, hash: &str, description: &str, only_satellites: bool) -> Result<Outcome, OpError> {
        let mut out = Outcome::default();
        if crate::clone::truthy(self.ctrl_props.get(PROP_TOKEN_AUTH_ENABLED)) {
            out.reply(if only_satellites {
                ApiCallRc::success(0, MODIFIED, "Satellite tokens re-initialized successfully")
                    .with_details("Cairn's satellites do not call the REST API and hold no tokens.")
            } else {
                ApiCallRc::warning(0, WARN_NO_EFFECT, "Token authentication is already enabled")
            });
            return Ok(out);
        }
        let token = self.new_auth_token(ctx, hash, description, None, None);
        let mut props = self.ctrl_props.clone();
        props.insert(PROP_TOKEN_AUTH_ENABLED.to_string(), "true".to_string());
        out.put(Object::AuthToken(token));
        out.put(Object::CtrlProps(props));
        out.reply(
            ApiCallRc::success(0, CREATED, format!("Token authentication initialized successfully. Init token {raw}"))
                .with_ref("token", raw),
        );
        Ok(out)
    }

    /// `PUT /v1/controller/auth/token/{id}`: what is given is changed.
    pub fn modify_auth_token(
        &self,
        id: u32,
        description: Option<&str>,
        ip_filter: Option<&str>,
        is_active: Option<bool>,
    ) -> Result<Outcome, OpError> {
        let mut token = self.auth_tokens.get(&id).filter(|t| t.deleted_at_ms.is_none()).cloned().ok_or_else(|| not_found(id))?;
        check_ip_filter(ip_filter)?;
        if let Some(d) = description {
            token.description = d.to_string();
        }
        if let Some(f) = ip_filter {
            token.ip_filter = Some(f.to_string()).filter(|f| !f.is_empty());
        }
        if let Some(a) = is_active {
            token.is_active = a;
        }
        let mut out = Outcome::default();
        out.put(Object::AuthToken(token));
        out.reply(ApiCallRc::success(0, MODIFIED, "Auth token modified successfully"));
        Ok(out)
    }

    /// `DELETE /v1/controller/auth/token/{id}`: revoked, kept stored.
    pub fn revoke_auth_token(&self, ctx: &Ctx, id: u32) -> Result<Outcome, OpError> {
        let mut out = Outcome::default();
        let Some(mut token) = self.auth_tokens.get(&id).filter(|t| t.deleted_at_ms.is_none()).cloned() else {
            out.reply(
                ApiCallRc::warning(0, WARN_NOT_FOUND, "Auth token not found or already revoked")
                    .with_cause("The specified auth token does not exist or was already revoked"),
            );
            return Ok(out);
        };
        token.deleted_at_ms = Some(ctx.now_ms);
        token.is_active = false;
        out.put(Object::AuthToken(token));
        out.reply(ApiCallRc::success(0, DELETED, "Auth token revoked successfully"));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_A: &str = "aa";
    const HASH_B: &str = "bb";

    fn with(c: &Cluster, out: Outcome) -> Cluster {
        let mut c = c.clone();
        c.apply(out.changes);
        c
    }

    #[test]
    fn init_turns_token_auth_on_once() {
        let ctx = Ctx::deterministic();
        let c = Cluster::default();
        assert!(!c.token_auth_enabled(ctx.now_ms));
        let out = c.init_token_auth(&ctx, "rawA", HASH_A, "admin", false).unwrap();
        assert_eq!(out.replies[0].ret_code, CREATED);
        assert_eq!(out.replies[0].obj_refs.get("token").map(String::as_str), Some("rawA"));
        let c = with(&c, out);
        assert!(c.token_auth_enabled(ctx.now_ms));
        assert_eq!(c.auth_token_by_hash(HASH_A).map(|t| t.id), Some(1));
        let again = c.init_token_auth(&ctx, "rawB", HASH_B, "x", false).unwrap();
        assert!(again.changes.is_empty());
        assert_eq!(again.replies[0].ret_code, rc::MASK_WARN | WARN_NO_EFFECT);
    }

    #[test]
    fn tokens_get_fresh_ids_and_revoked_ones_disable_auth_when_last() {
        let ctx = Ctx::deterministic();
        let c = Cluster::default();
        let c = with(&c, c.init_token_auth(&ctx, "rawA", HASH_A, "admin", false).unwrap());
        let c = with(&c, c.create_auth_token(&ctx, "rawB", HASH_B, "ci", None, None).unwrap());
        assert_eq!(c.auth_token_by_hash(HASH_B).map(|t| t.id), Some(2));
        let c = with(&c, c.revoke_auth_token(&ctx, 1).unwrap());
        assert_eq!(c.auth_token_by_hash(HASH_A).and_then(|t| t.unusable(ctx.now_ms)), Some("Token has been revoked."));
        assert!(c.token_auth_enabled(ctx.now_ms), "token 2 is still valid");
        let c = with(&c, c.modify_auth_token(2, None, None, Some(false)).unwrap());
        assert!(!c.token_auth_enabled(ctx.now_ms), "no valid token left: LINSTOR lets requests through");
        let again = c.revoke_auth_token(&ctx, 1).unwrap();
        assert_eq!(again.replies[0].ret_code, rc::MASK_WARN | WARN_NOT_FOUND);
        assert_eq!(c.modify_auth_token(1, Some("x"), None, None).unwrap_err().rc.ret_code, rc::MASK_ERROR | FAIL_NOT_FOUND_NODE);
        let c = with(&c, c.create_auth_token(&ctx, "rawC", "cc", "next", None, None).unwrap());
        assert_eq!(c.auth_token_by_hash("cc").map(|t| t.id), Some(3), "ids are never reused");
    }

    #[test]
    fn expiry_and_ip_filter_are_checked() {
        let ctx = Ctx::deterministic();
        let c = Cluster::default();
        let bad = c.create_auth_token(&ctx, "r", HASH_A, "d", Some("soon"), None).unwrap_err();
        assert_eq!(bad.rc.ret_code, rc::MASK_ERROR | FAIL_INVLD_CONF);
        let bad = c.create_auth_token(&ctx, "r", HASH_A, "d", None, Some("10.0.0.0/8")).unwrap_err();
        assert_eq!(bad.rc.message, "Invalid IP filter: 10.0.0.0/8");
        let c = with(&c, c.create_auth_token(&ctx, "r", HASH_A, "d", Some("1970-01-01T12:00"), Some("10.1.2.3")).unwrap());
        let t = c.auth_token_by_hash(HASH_A).unwrap();
        assert_eq!(t.expires_at_ms, Some(0));
        assert_eq!(t.unusable(ctx.now_ms), Some("Token has expired."));
        assert!(t.admits(Some("10.1.2.3".parse().unwrap())));
        assert!(t.admits(Some("::ffff:10.1.2.3".parse().unwrap())));
        assert!(!t.admits(Some("10.1.2.4".parse().unwrap())));
        assert!(!t.admits(None));
    }
}
