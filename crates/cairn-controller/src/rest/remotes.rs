//! `/v1/remotes`: S3 and LINSTOR remotes (LINSTOR's `Remotes` resource and
//! `CtrlRemoteApiCallHandler`). EBS remotes are refused as unsupported
//! (rest/unsupported.rs); their list is always empty.
//!
//! The combined list is an object (`{}` when empty: LINSTOR leaves empty
//! lists out), the per-kind lists are arrays. linstor-csi's
//! CreateSnapshot reads `GET /v1/remotes` as an existence check.
//!
//! Secrets are sealed with the master key before they reach the domain;
//! without an entered master passphrase, creating a remote is refused
//! with LINSTOR's error. An S3 remote is checked before it is stored, as
//! LINSTOR lists the bucket then: a wrong key or a missing bucket refuses
//! the creation (or modification) with a cause that says which.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, put};
use cairn_api::rc;
use cairn_api::remote::{EbsRemote, LinstorRemote, RemoteList, S3Remote};
use cairn_domain::remote::{Remote, RemoteTarget};
use cairn_domain::{Cluster, Ctx, Object, OpError, Outcome};
use cairn_s3::{Bucket, S3Config, S3Error};

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::crypto::MasterKey;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/remotes", get(list).delete(remove))
        .route("/v1/remotes/s3", get(list_s3).post(create_s3))
        .route("/v1/remotes/s3/{remote}", put(modify_s3))
        .route("/v1/remotes/linstor", get(list_linstor).post(create_linstor))
        .route("/v1/remotes/linstor/{remote}", put(modify_linstor))
        .route("/v1/remotes/ebs", get(list_ebs))
}

fn s3_list(c: &Cluster) -> Vec<S3Remote> {
    c.remotes.values().filter_map(Remote::to_s3_api).collect()
}

fn linstor_list(c: &Cluster) -> Vec<LinstorRemote> {
    c.remotes.values().filter_map(Remote::to_linstor_api).collect()
}

async fn list(State(s): State<AppState>) -> Response {
    let c = s.read();
    ok(&RemoteList { s3_remotes: s3_list(&c), linstor_remotes: linstor_list(&c), ebs_remotes: Vec::new() })
}

async fn list_s3(State(s): State<AppState>) -> Response {
    ok(&s3_list(&s.read()))
}

async fn list_linstor(State(s): State<AppState>) -> Response {
    ok(&linstor_list(&s.read()))
}

async fn list_ebs() -> Response {
    ok(&Vec::<EbsRemote>::new())
}

const OP: i64 = rc::MASK_MOD | rc::MASK_REMOTE;

/// LINSTOR's refusal while the master passphrase is not entered.
fn no_master_key() -> OpError {
    OpError::new(OP, rc::FAIL_NOT_FOUND_CRYPT_KEY, "Unable to create encrypt key without having a master key")
        .cause("The masterkey was not initialized yet")
        .correction("Create or enter the master passphrase")
}

/// LINSTOR's `EncryptionHelper.encrypt`: the master key seals, and without
/// one nothing can be stored.
fn sealer(master: Option<MasterKey>) -> impl FnMut(&str) -> Result<String, OpError> {
    move |plain: &str| match &master {
        None => Err(no_master_key()),
        Some(k) => k.seal(plain).map_err(|e| {
            OpError::new(rc::MASK_MOD | rc::MASK_BACKUP, rc::FAIL_UNKNOWN_ERROR, "Encrypting the access key or secret key failed.")
                .cause(e.to_string())
        }),
    }
}

/// The remote an outcome stores.
fn stored(out: &Outcome) -> Option<&Remote> {
    out.changes.iter().find_map(|c| match c {
        cairn_domain::Change::Put(Object::Remote(r)) => Some(r),
        _ => None,
    })
}

/// Lists the bucket of an S3 remote as it would be stored: endpoint, keys
/// and bucket must work together (LINSTOR's `listObjects("")` on create
/// and modify). The refusal keeps LINSTOR's code and message; its cause
/// says what S3 answered.
async fn check_s3(r: &Remote, master: &MasterKey) -> Result<(), ApiError> {
    let RemoteTarget::S3 { endpoint, bucket, region, access_key, secret_key, use_path_style } = &r.target else {
        return Ok(());
    };
    let open = |sealed: &str| master.open(sealed).map_err(|e| ApiError::Internal(format!("cannot open a sealed remote key: {e}")));
    let cfg = S3Config {
        endpoint: endpoint.clone(),
        bucket: bucket.clone(),
        region: region.clone(),
        access_key: open(access_key)?,
        secret_key: open(secret_key)?,
        path_style: *use_path_style,
    };
    let result = match Bucket::open(&cfg) {
        Ok(b) => b.check().await,
        Err(e) => Err(e),
    };
    let Err(e) = result else { return Ok(()) };
    let correction = match &e {
        S3Error::Credentials { .. } => "Check the access key and secret key.",
        S3Error::NoBucket { .. } => "Create the bucket first, or name one that exists.",
        S3Error::Endpoint { .. } => "Give the endpoint as host[:port], optionally with http:// or https://.",
        _ => "Check the endpoint, the region and that the S3 server is running.",
    };
    tracing::warn!(remote = %r.name, "S3 remote check failed: {e}");
    Err(OpError::new(
        rc::MASK_MOD | rc::MASK_BACKUP,
        rc::FAIL_UNKNOWN_ERROR,
        "The remote could not be reached with the given parameters and therefore wasn't created.\n\
         Please check for spelling errors and that you have the correct access-key and secret-key.",
    )
    .cause(e.to_string())
    .correction(correction)
    .into())
}

/// Validates against the cluster as it is now, checks the remote the
/// request would store, then runs the request for real (validated again
/// under the writer lock).
async fn checked_mutate(
    s: &AppState,
    op: impl Fn(&Cluster, &mut dyn FnMut(&str) -> Result<String, OpError>, &mut Ctx) -> Result<Outcome, OpError>,
) -> Result<Reply, ApiError> {
    let master = s.links().master();
    let dry = op(&s.read(), &mut sealer(master.clone()), &mut Ctx::deterministic())?;
    // An S3 remote's keys are needed to check it, even when the request
    // changes no key.
    match (stored(&dry), &master) {
        (Some(r), Some(k)) => check_s3(r, k).await?,
        (Some(Remote { target: RemoteTarget::S3 { .. }, .. }), None) => return Err(no_master_key().into()),
        _ => {}
    }
    s.mutate(200, |c, ctx| op(c, &mut sealer(master.clone()), ctx)).await
}

async fn create_s3(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: S3Remote = input::required(&body)?;
    checked_mutate(&s, |c, seal, ctx| c.create_s3_remote(&req, seal, ctx)).await
}

async fn modify_s3(State(s): State<AppState>, Path(remote): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: S3Remote = input::body(&body)?;
    checked_mutate(&s, |c, seal, _| c.modify_s3_remote(&remote, &req, seal)).await
}

async fn create_linstor(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: LinstorRemote = input::required(&body)?;
    checked_mutate(&s, |c, seal, ctx| c.create_linstor_remote(&req, seal, ctx)).await
}

async fn modify_linstor(State(s): State<AppState>, Path(remote): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: LinstorRemote = input::body(&body)?;
    checked_mutate(&s, |c, seal, _| c.modify_linstor_remote(&remote, &req, seal)).await
}

/// `DELETE /v1/remotes?remote_name=…`.
async fn remove(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Reply, ApiError> {
    let name = input::query(q).get("remote_name").unwrap_or_default().to_string();
    s.mutate(200, |c, _| c.delete_remote(&name)).await
}
