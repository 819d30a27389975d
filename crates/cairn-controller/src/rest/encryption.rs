//! The master passphrase: create (POST), change (PUT), enter after a
//! restart (PATCH with a bare JSON string), status (GET).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use cairn_api::rc::{self, ApiCallRc};
use cairn_domain::OpError;
use serde::Deserialize;

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::crypto::{CryptoError, MasterKey, PROP_MASTER_KEY};
use crate::state::AppState;

const OP: i64 = rc::MASK_CTRL_CONF;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/encryption/passphrase", get(status).post(create).put(change).patch(enter))
}

/// `PassPhraseCreate`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PassPhrase {
    new_passphrase: Option<String>,
    old_passphrase: Option<String>,
}

fn fail(code: i64, msg: &str, correction: &str) -> ApiError {
    ApiError::Op(OpError::new(OP, code, msg.to_string()).correction(correction.to_string()))
}

fn crypto_fail(e: CryptoError) -> ApiError {
    match e {
        CryptoError::WrongPassphrase => {
            fail(rc::FAIL_INVLD_CRYPT_PASSPHRASE, "The passphrase is wrong.", "Enter the master passphrase that was set.")
        }
        other => ApiError::Internal(other.to_string()),
    }
}

pub(crate) fn is_set(s: &AppState) -> bool {
    s.read().ctrl_props.contains_key(PROP_MASTER_KEY)
}

pub(crate) fn stored(s: &AppState) -> impl Fn(&str) -> Option<String> + '_ {
    move |k: &str| s.read().ctrl_props.get(k).cloned()
}

async fn status(State(s): State<AppState>) -> Response {
    let status = match (is_set(&s), s.links().master().is_some()) {
        (false, _) => "unset",
        (true, false) => "locked",
        (true, true) => "unlocked",
    };
    ok(&serde_json::json!([{ "status": status }]))
}

async fn save(s: &AppState, success: u16, props: Vec<(String, String)>, create: bool) -> Result<Reply, ApiError> {
    s.mutate(success, |c, _| c.set_crypt_props(&props, create)).await
}

async fn create(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: PassPhrase = input::required(&body)?;
    let Some(new) = req.new_passphrase.filter(|p| !p.is_empty()) else {
        return Err(fail(rc::FAIL_INVLD_CRYPT_PASSPHRASE, "A new_passphrase is needed.", "Give a non-empty new_passphrase."));
    };
    let (key, props) = MasterKey::create(&new).map_err(crypto_fail)?;
    let mut reply = save(&s, 201, props, true).await?;
    s.links().set_master(key);
    reply.entries.insert(0, ApiCallRc::success(OP | rc::MASK_CRT, rc::CREATED, "Crypt passphrase created."));
    Ok(reply)
}

async fn change(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: PassPhrase = input::required(&body)?;
    let (Some(old), Some(new)) = (req.old_passphrase, req.new_passphrase.filter(|p| !p.is_empty())) else {
        return Err(fail(rc::FAIL_INVLD_CRYPT_PASSPHRASE, "Both old_passphrase and new_passphrase are needed.", "Give both."));
    };
    if !is_set(&s) {
        return Err(fail(rc::FAIL_NOT_FOUND_CRYPT_KEY, "No master passphrase is set.", "Create one with POST first."));
    }
    let key = MasterKey::unlock(&old, &stored(&s)).map_err(crypto_fail)?;
    let props = key.rewrap(&new).map_err(crypto_fail)?;
    let mut reply = save(&s, 200, props, false).await?;
    s.links().set_master(key);
    reply.entries.insert(0, ApiCallRc::success(OP | rc::MASK_MOD, rc::MODIFIED, "Crypt passphrase updated."));
    Ok(reply)
}

async fn enter(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let passphrase: String = input::required(&body)?;
    if !is_set(&s) {
        return Err(fail(rc::FAIL_NOT_FOUND_CRYPT_KEY, "No master passphrase is set.", "Create one with POST first."));
    }
    let key = MasterKey::unlock(&passphrase, &stored(&s)).map_err(crypto_fail)?;
    let first = s.links().master().is_none();
    s.links().set_master(key);
    let mut entries = vec![ApiCallRc::success(OP, rc::PASSPHRASE_ACCEPTED, "Passphrase accepted.")];
    if first {
        // Encrypted volumes can be opened now.
        entries.extend(s.redispatch_all().await);
    }
    Ok(Reply::new(rc::status_for(&entries, 200), entries))
}
