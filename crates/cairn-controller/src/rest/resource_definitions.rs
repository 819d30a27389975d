//! `/v1/resource-definitions` and volume definitions.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, put};
use cairn_api::query::NameFilter;
use cairn_api::rc;
use cairn_api::resource_definition::{
    ResourceDefinitionCreate, ResourceDefinitionModify, VolumeDefinition, VolumeDefinitionCreate, VolumeDefinitionModify,
};
use cairn_domain::name::key;
use cairn_domain::{Cluster, OpError};

use super::error::ApiError;
use super::input;
use super::reply::{Encoding, Items, Reply, ok, stream_array};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/resource-definitions", get(list).post(create))
        .route("/v1/resource-definitions/{rd}", get(get_one).put(modify).delete(remove))
        .route("/v1/resource-definitions/{rd}/volume-definitions", get(list_vds).post(create_vd))
        .route("/v1/resource-definitions/{rd}/volume-definitions/{nr}", get(get_vd).put(modify_vd).delete(delete_vd))
        .route("/v1/resource-definitions/{rd}/volume-definitions/{nr}/encryption-passphrase", put(modify_vd_passphrase))
}

fn vds(c: &Cluster, rd_key: &str) -> Vec<VolumeDefinition> {
    c.vlm_dfns_of(rd_key).map(|v| v.to_api()).collect()
}

async fn list(State(s): State<AppState>, enc: Encoding, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    let names = NameFilter::new(&q.all("resource_definitions"));
    let groups = NameFilter::new(&q.all("resource_groups"));
    let props = q.props_filter();
    let with_vds = input::param(q.flag("with_volume_definitions"))?;
    let page = input::param(q.page())?;
    let c = s.read();
    Ok(stream_array(enc, move |w| {
        let picked =
            c.rsc_dfns.iter().filter(|(_, d)| names.matches(&d.name) && groups.matches(&d.resource_group) && props.matches(&d.props));
        for (k, d) in page.window(picked) {
            w.item(&d.to_api(with_vds.then(|| vds(&c, k)), c.rd_uses_drbd(d)))?;
        }
        Ok(())
    }))
}

async fn get_one(State(s): State<AppState>, Path(rd): Path<String>) -> Result<Response, ApiError> {
    let c = s.read();
    let d = c.rsc_dfn(&rd, rc::MASK_RSC_DFN)?;
    Ok(ok(&d.to_api(Some(vds(&c, &key(&d.name))), c.rd_uses_drbd(d))))
}

async fn create(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ResourceDefinitionCreate = input::required(&body)?;
    s.mutate(201, |c, ctx| c.create_rsc_dfn(&req, ctx)).await
}

async fn modify(State(s): State<AppState>, Path(rd): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ResourceDefinitionModify = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_rsc_dfn(&rd, &req)).await
}

async fn remove(State(s): State<AppState>, Path(rd): Path<String>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.delete_rsc_dfn(&rd)).await
}

async fn list_vds(State(s): State<AppState>, Path(rd): Path<String>) -> Result<Response, ApiError> {
    let c = s.read();
    let d = c.rsc_dfn(&rd, rc::MASK_VLM_DFN)?;
    Ok(ok(&vds(&c, &key(&d.name))))
}

async fn get_vd(State(s): State<AppState>, Path((rd, nr)): Path<(String, String)>) -> Result<Response, ApiError> {
    let nr = input::vlm_nr(&nr)?;
    Ok(ok(&s.read().vlm_dfn(&rd, nr, rc::MASK_VLM_DFN)?.to_api()))
}

/// Volume definition creation answers 200 upstream, unlike most creations.
async fn create_vd(State(s): State<AppState>, Path(rd): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let mut req: VolumeDefinitionCreate = input::required(&body)?;
    // LINSTOR keeps a user's passphrase sealed in Encryption/Passphrase.
    if let Some(p) = req.passphrase.take() {
        const OP: i64 = rc::MASK_CRT | rc::MASK_VLM_DFN;
        s.read().rsc_dfn(&rd, OP)?;
        req.passphrase = Some(seal_passphrase(&s, OP, &p)?);
    }
    s.mutate(200, |c, ctx| c.create_vlm_dfn(&rd, &req, ctx)).await
}

async fn modify_vd(State(s): State<AppState>, Path((rd, nr)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let nr = input::vlm_nr(&nr)?;
    let req: VolumeDefinitionModify = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_vlm_dfn(&rd, nr, &req)).await
}

async fn delete_vd(State(s): State<AppState>, Path((rd, nr)): Path<(String, String)>) -> Result<Reply, ApiError> {
    let nr = input::vlm_nr(&nr)?;
    s.mutate(200, |c, _| c.delete_vlm_dfn(&rd, nr)).await
}

/// `VolumeDefinitionModifyPassphrase`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct ModifyPassphrase {
    new_passphrase: Option<String>,
}

/// `PUT …/volume-definitions/{nr}/encryption-passphrase`: the user's LUKS
/// passphrase for every encrypted volume of the definition, sealed with
/// the master key here (the domain never sees it in the clear).
async fn modify_vd_passphrase(State(s): State<AppState>, Path((rd, nr)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    const OP: i64 = rc::MASK_MOD | rc::MASK_VLM_DFN;
    let nr = input::vlm_nr(&nr)?;
    let req: ModifyPassphrase = input::required(&body)?;
    s.read().vlm_dfn(&rd, nr, OP)?;
    let sealed = seal_passphrase(&s, OP, &req.new_passphrase.unwrap_or_default())?;
    s.mutate(200, |c, _| c.modify_vlm_dfn_passphrase(&rd, nr, &sealed)).await
}

/// A user's volume passphrase sealed with the master key: refused when
/// empty, or while the controller has no master key (LINSTOR's
/// `FAIL_NOT_FOUND_CRYPT_KEY`).
fn seal_passphrase(s: &AppState, op: i64, passphrase: &str) -> Result<String, ApiError> {
    if passphrase.is_empty() {
        return Err(ApiError::Op(
            OpError::new(op, rc::FAIL_INVLD_CRYPT_PASSPHRASE, "A non-empty passphrase is needed.")
                .correction("Give a non-empty passphrase."),
        ));
    }
    let Some(master) = s.links().master() else {
        return Err(ApiError::Op(
            OpError::new(op, rc::FAIL_NOT_FOUND_CRYPT_KEY, "Unable to create encrypt key without having a master key")
                .cause("The master passphrase was not created, or not entered since the controller started.")
                .correction("Create or enter the master passphrase (`linstor encryption create-passphrase` / `enter-passphrase`)."),
        ));
    };
    master.seal(passphrase).map_err(|e| ApiError::Internal(format!("cannot seal the passphrase: {e}")))
}
