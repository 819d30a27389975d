//! `/v1/remotes` lists. Cairn keeps no remotes (creating them answers 501),
//! so the lists are empty, shaped as LINSTOR's `Remotes` resource answers:
//! the combined list is an object (`{}` when empty, LINSTOR leaves empty
//! lists out), the per-kind lists are arrays. linstor-csi's CreateSnapshot
//! reads `GET /v1/remotes` as an existence check.

use axum::Router;
use axum::response::Response;
use axum::routing::get;
use cairn_api::remote::{EbsRemote, LinstorRemote, RemoteList, S3Remote};

use super::reply::ok;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/remotes", get(list))
        .route("/v1/remotes/s3", get(list_s3))
        .route("/v1/remotes/linstor", get(list_linstor))
        .route("/v1/remotes/ebs", get(list_ebs))
}

async fn list() -> Response {
    ok(&RemoteList::default())
}

async fn list_s3() -> Response {
    ok(&Vec::<S3Remote>::new())
}

async fn list_linstor() -> Response {
    ok(&Vec::<LinstorRemote>::new())
}

async fn list_ebs() -> Response {
    ok(&Vec::<EbsRemote>::new())
}
