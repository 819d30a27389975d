//! `/v1/controller/auth/...`: LINSTOR's token authentication
//! (`ControllerAuth`). The raw token appears once, in the reply that
//! creates it (message and `obj_refs.token`); the cluster keeps its hash.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{post, put};
use cairn_api::controller::{AuthToken, AuthTokenListResponse, CreateAuthToken, InitAuthTokenRequest, ModifyAuthToken};
use cairn_api::{ApiCallRc, rc};
use cairn_domain::time::iso8601_utc;

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::auth::{new_token, token_hash};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/controller/auth/initialize-token-auth", post(initialize))
        .route("/v1/controller/auth/token", post(create).get(list))
        .route("/v1/controller/auth/token/{authtokenid}", put(modify).delete(revoke))
}

/// A fresh raw token and its hash.
fn fresh() -> Result<(String, String), ApiError> {
    let raw = new_token().map_err(|_| {
        ApiError::Status(500, "The system's random source failed; no token was made.".into(), rc::MASK_ERROR | rc::FAIL_UNKNOWN_ERROR)
    })?;
    let hash = token_hash(&raw);
    Ok((raw, hash))
}

fn token_id(s: &str) -> Result<u32, ApiError> {
    s.trim().parse().map_err(|_| ApiError::parse(format!("'{s}' is not an auth token id.")))
}

/// Turns token authentication on with a first token. LINSTOR also turns
/// on its self-signed "auto HTTPS" unless `no_https`; Cairn makes no
/// certificate of its own and says so when HTTPS is not configured.
async fn initialize(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: InitAuthTokenRequest = input::body(&body)?;
    let (raw, hash) = fresh()?;
    let https = s.settings().is_some_and(|c| c.https_bind().is_some());
    s.mutate(201, |c, ctx| {
        let mut out = c.init_token_auth(ctx, &raw, &hash, &req.description, req.only_satellites)?;
        if !https && !req.no_https && !out.changes.is_empty() {
            out.reply(
                ApiCallRc::warning(0, rc::WARN_NO_EFFECT, "HTTPS is not configured: tokens travel in clear over plain HTTP")
                    .with_cause("Cairn makes no self-signed certificate (LINSTOR's AutoHTTPS)")
                    .with_correction("Start the controller with --rest-tls-cert and --rest-tls-key."),
            );
        }
        Ok(out)
    })
    .await
}

async fn create(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: CreateAuthToken = input::body(&body)?;
    let (raw, hash) = fresh()?;
    s.mutate(201, |c, ctx| c.create_auth_token(ctx, &raw, &hash, &req.description, req.expires_at.as_deref(), req.ip_filter.as_deref()))
        .await
}

/// The tokens not revoked, without their secrets.
async fn list(State(s): State<AppState>) -> Response {
    let c = s.read();
    let list: Vec<AuthToken> = c
        .auth_tokens
        .values()
        .filter(|t| t.deleted_at_ms.is_none())
        .map(|t| AuthToken {
            id: t.id,
            description: t.description.clone(),
            is_active: t.is_active,
            created_at: iso8601_utc(t.created_at_ms),
            deleted_at: t.deleted_at_ms.map(iso8601_utc),
            ip_filter: t.ip_filter.clone(),
            expires_at: t.expires_at_ms.map(iso8601_utc),
            is_user_token: t.is_user_token,
        })
        .collect();
    ok(&AuthTokenListResponse { count: list.len(), list })
}

async fn modify(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let id = token_id(&id)?;
    let req: ModifyAuthToken = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_auth_token(id, req.description.as_deref(), req.ip_filter.as_deref(), req.is_active)).await
}

async fn revoke(State(s): State<AppState>, Path(id): Path<String>) -> Result<Reply, ApiError> {
    let id = token_id(&id)?;
    s.mutate(200, |c, ctx| c.revoke_auth_token(ctx, id)).await
}
