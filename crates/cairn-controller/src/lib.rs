//! The Cairn controller: owns the cluster's desired state in a database and
//! serves LINSTOR's REST API v1 over it.
//!
//! Request flow for a mutation: the REST handler parses the body leniently,
//! [`state::AppState::mutate`] takes the writer lock, lets the pure domain
//! compute the changes against the committed cluster plus the changes
//! queued before, and queues them; the committer commits what is queued in
//! one transaction and only then applies it to the in-memory cluster that
//! every read is served from.

pub mod auth;
pub mod backup_keys;
pub mod build_info;
pub mod config;
pub mod crypto;
pub mod events;
pub mod leader;
pub mod links;
pub mod reporter;
pub mod rest;
pub mod scheduler;
pub mod shared;
mod spec_routes;
pub mod state;

use std::fs::File;
use std::future::Future;
use std::sync::Arc;

use cairn_store::Store;
use tokio::net::TcpListener;

pub use cairn_proto::logging;
pub use config::ControllerConfig;
pub use state::AppState;

/// Errors that stop the controller from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("another controller is already using the data directory {0}")]
    Locked(String),
    #[error("cannot lock the data directory {path}: {source}")]
    Lock { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] cairn_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("the REST server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot read or create the cluster secret {path}: {source}")]
    Secret { path: String, source: std::io::Error },
    #[error("TLS setup failed for {path}: {reason}")]
    Tls { path: String, reason: String },
    #[error(transparent)]
    Users(#[from] auth::UsersError),
    #[error("lost the leader lease; stopped so that another controller leads (start again to stand by)")]
    LostLeadership,
    #[error("{0}")]
    Startup(String),
    #[error("a start-up task panicked: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A controller that is ready to serve: data directory locked, database
/// loaded, REST listener bound.
pub struct Controller {
    state: AppState,
    listener: TcpListener,
    /// The HTTPS listener, when HTTPS is on.
    secure: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    /// The users HTTP Basic is checked against, when a users file is given.
    users: Option<Arc<auth::Users>>,
    /// The leader lease, on PostgreSQL.
    leader: Option<leader::Leadership>,
    _lock: File,
}

impl From<cairn_proto::tls::TlsError> for ControllerError {
    fn from(e: cairn_proto::tls::TlsError) -> ControllerError {
        ControllerError::Tls { path: e.path, reason: e.reason }
    }
}

impl Controller {
    /// Locks the data directory, opens and loads the database, seeds the
    /// default objects and binds the REST listener.
    pub async fn start(config: &ControllerConfig) -> Result<Controller, ControllerError> {
        let dir = config.data_dir.clone();
        // Private to the user the controller runs as: the database holds
        // the cluster's secrets (DRBD shared secrets, sealed LUKS keys).
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(|source| ControllerError::DataDir { path: dir.display().to_string(), source })?;
        #[cfg(unix)]
        {
            // A directory that existed before is the operator's: never
            // changed, but a wide one is pointed out (the files in it are
            // private anyway).
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(&dir)
                && m.permissions().mode() & 0o077 != 0
            {
                tracing::info!(dir = %dir.display(), mode = format!("{:o}", m.permissions().mode() & 0o777), "the data directory is open to other users; 0700 would keep it private");
            }
        }
        let lock_path = dir.join("controller.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode_0600()
            .open(&lock_path)
            .map_err(|source| ControllerError::Lock { path: lock_path.display().to_string(), source })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ControllerError::Locked(dir.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(ControllerError::Lock { path: lock_path.display().to_string(), source });
            }
        }
        let users = match &config.rest_users_file {
            Some(path) => {
                let users = auth::Users::open(path)?;
                tracing::info!(path = %path.display(), "REST clients must sign in (HTTP Basic) as a user of the users file");
                Some(Arc::new(users))
            }
            None => None,
        };
        let db = config.db_location()?;
        let secret = cluster_secret(&config.secret_path())?;
        let mut transport = links::HttpTransport::new(secret, links::client_tls(config)?);
        // On PostgreSQL any number of controllers share the database: this
        // one stands by until it holds the leader lease, and only then
        // loads the cluster and listens (see `leader`).
        let (store, leader): (Arc<dyn Store>, _) = match db {
            cairn_store::Location::Postgres(url) => {
                let pg = Arc::new(tokio::task::spawn_blocking(move || cairn_store::PgStore::open(&url)).await??);
                let holder = format!("{} pid {} {}", config.rest_bind, std::process::id(), uuid::Uuid::new_v4().simple());
                let leadership = leader::Leadership::acquire(pg.clone(), holder).await;
                transport = transport.with_fence(leadership.fence());
                (pg, Some(leadership))
            }
            db => (tokio::task::spawn_blocking(move || db.open()).await??, None),
        };
        let state = AppState::load(store, Arc::new(transport), links::Timing::default()).await?;
        if let Some(l) = &leader {
            state.set_fence(l.fence());
        }
        state.set_settings(config.clone());
        state.set_remote_tls(rest::ship::remote_tls_config(config.remote_tls_ca.as_deref())?);
        state.links().allow_plain_luks_keys(config.allow_plain_luks_keys);
        if config.allow_plain_luks_keys {
            tracing::warn!(
                "LUKS volume keys go to satellites on PLAIN links too (--allow-plain-luks-keys): anyone on the path can read them"
            );
        }
        // The cluster's id, made once (LINSTOR's Cluster/LocalID).
        if !state.read().ctrl_props.contains_key(cairn_domain::kvs::CLUSTER_ID_PROP) {
            let id = uuid::Uuid::new_v4().to_string();
            let made = state
                .mutate(200, |c, _| Ok(c.init_cluster_id(&id).unwrap_or_default()))
                .await
                .map_err(|e| ControllerError::Startup(format!("cannot record the cluster id: {e}")))?;
            tracing::debug!(entries = made.entries.len(), "cluster id {id} recorded");
        }
        // LINSTOR's way to start unlocked: MASTER_PASSPHRASE.
        if let Some(p) = std::env::var("MASTER_PASSPHRASE").ok().filter(|p| !p.is_empty()) {
            let get = |k: &str| state.read().ctrl_props.get(k).cloned();
            if get(crypto::PROP_MASTER_KEY).is_some() {
                match crypto::MasterKey::unlock(&p, &get) {
                    Ok(key) => {
                        state.links().set_master(key);
                        tracing::info!("master passphrase from MASTER_PASSPHRASE accepted");
                    }
                    Err(e) => tracing::error!("MASTER_PASSPHRASE: {e}; encrypted volumes stay closed until the passphrase is entered"),
                }
            }
        }
        let listener = TcpListener::bind(config.rest_bind)
            .await
            .map_err(|source| ControllerError::Bind { addr: config.rest_bind.to_string(), source })?;
        let secure = match (config.https_bind(), &config.rest_tls_cert, &config.rest_tls_key) {
            (Some(addr), Some(cert), Some(key)) => {
                let tls = cairn_proto::tls::server_config(cert, key, config.rest_tls_client_ca.as_deref())?;
                let tcp = TcpListener::bind(addr).await.map_err(|source| ControllerError::Bind { addr: addr.to_string(), source })?;
                Some((tcp, tokio_rustls::TlsAcceptor::from(tls)))
            }
            _ => None,
        };
        // Clones a previous run left CLONING are followed again.
        rest::clone::resume(&state);
        Ok(Controller { state, listener, secure, users, leader, _lock: lock })
    }

    /// The address the REST listener is bound to.
    pub fn rest_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The address the HTTPS listener is bound to, when HTTPS is on.
    pub fn rest_secure_addr(&self) -> Option<std::io::Result<std::net::SocketAddr>> {
        self.secure.as_ref().map(|(l, _)| l.local_addr())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves REST until `shutdown` completes or, on PostgreSQL, the
    /// leader lease is lost ([`ControllerError::LostLeadership`]). A clean
    /// stop gives the lease up for a standby.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ControllerError> {
        let Some(leadership) = self.leader.take() else { return self.serve_rest(shutdown).await };
        let (lost, lost_too) = (leadership.lost(), leadership.lost());
        let rest = self.serve_rest(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = lost => {}
            }
        });
        // Requests still running when the lease is lost (an event stream,
        // a slow satellite) get a moment, not the lease's successor's time.
        let served = tokio::select! {
            r = rest => r,
            _ = async move {
                lost_too.await;
                tokio::time::sleep(leader::LEASE).await;
            } => Ok(()),
        };
        if leadership.is_lost() {
            return Err(ControllerError::LostLeadership);
        }
        leadership.release().await;
        served
    }

    /// Serves REST until `shutdown` completes: the plain listener, and the
    /// HTTPS one when HTTPS is on (the plain one then redirects `/v1`
    /// requests to it).
    async fn serve_rest(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ControllerError> {
        use axum::ServiceExt;
        scheduler::spawn(&self.state, scheduler::Clock::from_env());
        let Some((tcp, acceptor)) = self.secure else {
            let app = rest::app(self.state.clone(), None, self.users);
            return axum::serve(rest::http::plain(self.listener), app.into_make_service_with_connect_info::<rest::http::PeerAddr>())
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(ControllerError::Serve);
        };
        let port = tcp.local_addr().map_err(ControllerError::Serve)?.port();
        let tls = rest::http::JsonErrorListener(cairn_proto::tls::TlsListener::new(tcp, acceptor).map_err(ControllerError::Serve)?);
        // One shutdown signal for both servers.
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let secure = axum::serve(
            tls,
            rest::app(self.state.clone(), None, self.users.clone()).into_make_service_with_connect_info::<rest::http::PeerAddr>(),
        )
        .with_graceful_shutdown(stopped(rx.clone()))
        .into_future();
        let plain = axum::serve(
            rest::http::plain(self.listener),
            rest::app(self.state.clone(), Some(port), self.users).into_make_service_with_connect_info::<rest::http::PeerAddr>(),
        )
        .with_graceful_shutdown(stopped(rx))
        .into_future();
        let signal = async move {
            shutdown.await;
            let _ = tx.send(true);
        };
        let (_, a, b) = tokio::join!(signal, secure, plain);
        a.and(b).map_err(ControllerError::Serve)
    }
}

/// Reads the cluster secret satellites must present, creating a random one
/// (readable by root only) on first start.
fn cluster_secret(path: &std::path::Path) -> Result<String, ControllerError> {
    let err = |source| ControllerError::Secret { path: path.display().to_string(), source };
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let mut f = File::options().write(true).create_new(true).mode_0600().open(path).map_err(err)?;
    std::io::Write::write_all(&mut f, secret.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    tracing::info!(path = %path.display(), "created the cluster secret; give it to every satellite (--cluster-secret-file)");
    Ok(secret)
}

/// `mode(0o600)` where the platform has Unix permissions.
trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600);
        self
    }
}
