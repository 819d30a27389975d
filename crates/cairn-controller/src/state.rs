//! Shared controller state: the in-memory cluster, the store, and the one
//! place where mutations are committed.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_domain::{Cluster, Ctx, OpError, Outcome, time};
use cairn_store::{Store, StoreError};

use crate::rest::error::ApiError;
use crate::rest::reply::Reply;

/// Cheap to clone; every handler gets one.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: RwLock<Cluster>,
    store: Arc<dyn Store>,
    /// Serialises writers: validate, commit, apply happen as one step.
    writer: tokio::sync::Mutex<()>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn new_ctx() -> Ctx {
    Ctx::new(now_ms(), || uuid::Uuid::new_v4().to_string())
}

impl AppState {
    /// Loads the cluster from the store and commits the default objects
    /// (`DfltRscGrp`, default pool definitions) if they are missing.
    pub async fn load(store: Arc<dyn Store>) -> Result<AppState, StoreError> {
        let s = store.clone();
        let cluster = tokio::task::spawn_blocking(move || -> Result<Cluster, StoreError> {
            let mut cluster = Cluster::from_objects(s.load()?);
            let seed = cluster.seed(&mut || uuid::Uuid::new_v4().to_string());
            s.commit(&seed)?;
            cluster.apply(seed);
            Ok(cluster)
        })
        .await
        .map_err(|e| StoreError::Encode {
            kind: "cluster".into(),
            key: "load".into(),
            reason: e.to_string(),
        })??;
        tracing::info!(store = %store.describe(), nodes = cluster.nodes.len(), resource_definitions = cluster.rsc_dfns.len(), resources = cluster.resources.len(), "cluster loaded");
        Ok(AppState {
            inner: Arc::new(Inner {
                cluster: RwLock::new(cluster),
                store,
                writer: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Read access to the cluster. Hold it only while building a reply.
    pub fn read(&self) -> RwLockReadGuard<'_, Cluster> {
        self.inner.cluster.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one mutation: compute the outcome against the current cluster,
    /// commit it durably, then apply it in memory. Nothing is applied if the
    /// commit fails. Replies carry `created_at`.
    pub async fn mutate(
        &self,
        success: u16,
        op: impl FnOnce(&Cluster, &mut Ctx) -> Result<Outcome, OpError>,
    ) -> Result<Reply, ApiError> {
        let _writer = self.inner.writer.lock().await;
        let mut ctx = new_ctx();
        let outcome = op(&self.read(), &mut ctx)?;
        let Outcome {
            changes,
            mut replies,
        } = outcome;
        let store = self.inner.store.clone();
        let changes = tokio::task::spawn_blocking(move || store.commit(&changes).map(|()| changes))
            .await
            .map_err(|e| ApiError::Internal(format!("commit task failed: {e}")))??;
        self.inner
            .cluster
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(changes);
        let stamp = time::iso8601_utc(ctx.now_ms);
        for r in &mut replies {
            r.created_at = Some(stamp.clone());
        }
        Ok(Reply::new(
            cairn_api::rc::status_for(&replies, success),
            replies,
        ))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}
