//! The PostgreSQL store: the same one table of JSON documents as the
//! SQLite store, on a server that several controllers can reach.
//!
//! The [`Store`] trait is synchronous (the controller calls it from
//! `spawn_blocking`, the `cairn db` commands from plain threads), the
//! driver is async: the store owns a small tokio runtime of its own (one
//! worker thread, which also drives the connections) and blocks on it.
//! Connections come from a deadpool pool of at most [`POOL_SIZE`]; a
//! connection the server closed (PostgreSQL restarted, a network cut) is
//! found when it is taken from the pool and replaced by a new one.
//!
//! A commit is one transaction of at most two statements whatever the size
//! of the batch: the batch is reduced to the last change of every key
//! first (what applying it in order leaves), then one `INSERT … SELECT FROM
//! unnest(…) ON CONFLICT DO UPDATE` writes the puts and one `DELETE … IN
//! (unnest(…))` the deletes. PostgreSQL's default `synchronous_commit = on`
//! makes the commit durable before the call returns.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use cairn_domain::{Change, Object};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::{Store, StoreError, decode, encode};

/// Connections kept: the committer needs one, a load or an export a
/// second; more would only hold server slots.
pub const POOL_SIZE: usize = 4;

/// How long a caller waits for a connection (the server unreachable).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Schema migrations, applied in order; the table `cairn_schema` records
/// how many ran. Never edit a released entry: append a new one. The
/// `COLLATE "C"` keeps keys compared and ordered byte by byte, as SQLite
/// does, whatever the database's locale.
const MIGRATIONS: &[&str] = &[
    // 1: one table of JSON documents keyed by kind and upper-case name.
    r#"CREATE TABLE objects (
        kind TEXT COLLATE "C" NOT NULL,
        key  TEXT COLLATE "C" NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    );"#,
    // 2: the leader lease of active/standby controllers (one row): who
    // holds it, its epoch (bumped on every change of holder) and until
    // when, in the server's clock.
    r#"CREATE TABLE cairn_lease (
        one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        holder TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    INSERT INTO cairn_lease (holder, epoch, expires_at) VALUES ('', 0, '-infinity');"#,
];

/// The advisory lock that serialises migrations of controllers starting
/// at the same time on one database ("cairn" in ASCII).
const MIGRATION_LOCK: i64 = 0x0063_6169_726e;

/// PostgreSQL-backed [`Store`].
pub struct PgStore {
    shown: String,
    pool: Pool,
    /// Always `Some` until dropped; taken in `drop` to shut down without
    /// blocking (the store may be dropped on an async thread).
    rt: Option<tokio::runtime::Runtime>,
    /// The lease this store's commits are fenced by: (holder, epoch).
    /// When set, a commit writes only if that lease is still current and
    /// unexpired, checked in the commit's own transaction.
    fence: std::sync::Mutex<Option<(String, i64)>>,
}

/// Session settings of a fenced commit: a transaction whose controller
/// stopped in the middle (SIGSTOP) holds the lease row; the server ends it
/// after this long so a standby can take the lease.
const FENCED_TX_SETTINGS: &str = "SET LOCAL idle_in_transaction_session_timeout = 2000; SET LOCAL lock_timeout = 2000";

/// The reason of a driver error: the server's message and code when the
/// server sent one, else the driver's chain of causes.
fn reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; {d}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

fn pg(operation: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::Pg { operation, reason: reason(&e) }
}

fn pool_error(e: PoolError) -> StoreError {
    let reason = match &e {
        PoolError::Backend(b) => reason(b),
        PoolError::Timeout(_) => format!("no connection to the server within {} s", CONNECT_TIMEOUT.as_secs()),
        other => other.to_string(),
    };
    StoreError::Pg { operation: "connect", reason }
}

impl PgStore {
    /// Connects to the database `url` names (`postgres://user:password@host:port/db`,
    /// or the key=value form) and migrates it.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let bad = |reason: String| StoreError::Url { url: redact(url), reason };
        let (plain_url, tls) = crate::pg_tls::split(url);
        let tls_config = crate::pg_tls::client_config(&tls).map_err(bad)?;
        let mut config: tokio_postgres::Config = plain_url.parse().map_err(|e: tokio_postgres::Error| bad(reason(&e)))?;
        if config.get_hosts().is_empty() {
            return Err(bad("it names no host".into()));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("cairn-controller");
        }
        let shown = describe(&config);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cairn-pg")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io { operation: "start the PostgreSQL client's runtime", source })?;
        let recycling = ManagerConfig { recycling_method: RecyclingMethod::Verified };
        let manager = match tls_config {
            Some(c) => Manager::from_config(config, tokio_postgres_rustls::MakeRustlsConnect::new(c), recycling),
            None => Manager::from_config(config, NoTls, recycling),
        };
        let pool = {
            // Building the pool needs the runtime entered (its timers).
            let _entered = rt.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(CONNECT_TIMEOUT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(|e| bad(e.to_string()))?
        };
        let store = PgStore { shown, pool, rt: Some(rt), fence: std::sync::Mutex::new(None) };
        store.block_on(migrate(&store.pool))?;
        Ok(store)
    }

    /// The schema version this build writes.
    pub fn schema_version() -> i64 {
        MIGRATIONS.len() as i64
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            // Only `drop` takes the runtime.
            None => unreachable!("the PostgreSQL store's runtime is gone before the store"),
        }
    }

    /// Takes the leader lease for `holder` when it is free (expired or
    /// released): its new epoch, or `None` while another holds it. The
    /// epoch is at least the server's time in milliseconds, so it grows
    /// across databases too (a cluster moved to a new database keeps
    /// fencing leaders of the old one). The
    /// lease lasts `lease` from now in the server's clock. Gives up after
    /// `timeout` (an unreachable server) with an error.
    pub fn lease_acquire(&self, holder: &str, lease: Duration, timeout: Duration) -> Result<Option<i64>, StoreError> {
        let secs = lease.as_secs_f64();
        self.block_on(with_timeout(timeout, "take the leader lease", async {
            let c = self.pool.get().await.map_err(pool_error)?;
            let row = c
                .query_opt(
                    "UPDATE cairn_lease SET holder = $1, expires_at = clock_timestamp() + make_interval(secs => $2),
                       epoch = GREATEST(epoch + 1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                     WHERE expires_at <= clock_timestamp() RETURNING epoch",
                    &[&holder, &secs],
                )
                .await
                .map_err(pg("take the leader lease"))?;
            row.map(|r| r.try_get::<_, i64>(0)).transpose().map_err(pg("read the lease epoch"))
        }))
    }

    /// Extends the lease `holder` holds at `epoch` to `lease` from now:
    /// false when it is no longer theirs or has expired (never extended
    /// then: a lease that ran out may have passed to another).
    pub fn lease_renew(&self, holder: &str, epoch: i64, lease: Duration, timeout: Duration) -> Result<bool, StoreError> {
        let secs = lease.as_secs_f64();
        self.block_on(with_timeout(timeout, "renew the leader lease", async {
            let c = self.pool.get().await.map_err(pool_error)?;
            let n = c
                .execute(
                    "UPDATE cairn_lease SET expires_at = clock_timestamp() + make_interval(secs => $3)
                     WHERE holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()",
                    &[&holder, &epoch, &secs],
                )
                .await
                .map_err(pg("renew the leader lease"))?;
            Ok(n == 1)
        }))
    }

    /// Gives the lease up at once (a clean stop): a standby need not wait
    /// for it to run out.
    pub fn lease_release(&self, holder: &str, epoch: i64, timeout: Duration) -> Result<(), StoreError> {
        self.block_on(with_timeout(timeout, "release the leader lease", async {
            let c = self.pool.get().await.map_err(pool_error)?;
            c.execute("UPDATE cairn_lease SET expires_at = '-infinity' WHERE holder = $1 AND epoch = $2", &[&holder, &epoch])
                .await
                .map_err(pg("release the leader lease"))?;
            Ok(())
        }))
    }

    /// From now on every commit checks, in its transaction, that `holder`
    /// still holds the lease at `epoch` and that it has not expired; it
    /// fails with [`StoreError::Fenced`] otherwise and writes nothing.
    pub fn fence_commits(&self, holder: &str, epoch: i64) {
        if let Ok(mut f) = self.fence.lock() {
            *f = Some((holder.to_string(), epoch));
        }
    }

    /// Runs SQL outside the store's API (tests: a trigger, a corrupt row).
    #[cfg(test)]
    pub(crate) fn execute(&self, sql: &str) -> Result<(), StoreError> {
        self.block_on(async {
            let c = self.pool.get().await.map_err(pool_error)?;
            c.batch_execute(sql).await.map_err(pg("execute"))
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The URL as logs and `GET /v1/controller/config` show it: user, hosts,
/// ports and database, never the password.
fn describe(c: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match c.get_ports().get(i).or(c.get_ports().first()) {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        })
        .collect();
    let user = c.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    format!("postgresql://{user}{}/{}", hosts.join(","), c.get_dbname().unwrap_or(""))
}

/// A URL as error messages show it: the password between `:` and `@` of a
/// `scheme://user:password@host` URL, and a `password=` value, replaced.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            out.replace_range(scheme_end + 3 + colon + 1..scheme_end + 3 + at, "***");
        }
    }
    if let Some(i) = out.find("password=") {
        let start = i + "password=".len();
        let end = out[start..].find([' ', '&']).map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "***");
    }
    out
}

/// `f`, or a [`StoreError::Pg`] saying it took longer than `limit`.
async fn with_timeout<T>(
    limit: Duration,
    operation: &'static str,
    f: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(StoreError::Pg { operation, reason: format!("no answer within {} ms", limit.as_millis()) }))
}

async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg("begin migration"))?;
    // Controllers starting together migrate one after the other.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg("lock the schema"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS cairn_schema (
            one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
            version BIGINT NOT NULL
        );
        INSERT INTO cairn_schema (version) VALUES (0) ON CONFLICT DO NOTHING;",
    )
    .await
    .map_err(pg("create the schema version table"))?;
    let found: i64 = tx.query_one("SELECT version FROM cairn_schema", &[]).await.map_err(pg("read schema version"))?.get(0);
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(StoreError::TooNew { found, supported });
    }
    for sql in MIGRATIONS.iter().skip(found.max(0) as usize) {
        tx.batch_execute(sql).await.map_err(pg("migrate schema"))?;
    }
    if found != supported {
        tx.execute("UPDATE cairn_schema SET version = $1", &[&supported]).await.map_err(pg("record schema version"))?;
    }
    tx.commit().await.map_err(pg("commit migration"))
}

/// A batch reduced to the last change of every key: (kind, key) -> the
/// document to put, or `None` to delete.
type Reduced = HashMap<(&'static str, String), Option<String>>;

fn reduce(changes: &[Change]) -> Result<Reduced, StoreError> {
    let mut last = HashMap::with_capacity(changes.len());
    for c in changes {
        match c {
            Change::Put(o) => {
                let (kind, key, data) = encode(o)?;
                last.insert((kind, key), Some(data));
            }
            Change::Delete(k) => {
                last.insert((k.kind().as_str(), k.key_string()), None);
            }
        }
    }
    Ok(last)
}

impl Store for PgStore {
    fn load(&self) -> Result<Vec<Object>, StoreError> {
        let rows = self.block_on(async {
            let c = self.pool.get().await.map_err(pool_error)?;
            c.query("SELECT kind, key, data FROM objects ORDER BY kind, key", &[]).await.map_err(pg("load objects"))
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (kind, key, data): (String, String, String) = (
                row.try_get(0).map_err(pg("read object row"))?,
                row.try_get(1).map_err(pg("read object row"))?,
                row.try_get(2).map_err(pg("read object row"))?,
            );
            out.push(decode(&kind, &key, &data)?);
        }
        Ok(out)
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        // Encoded before the transaction: a document that cannot be
        // encoded fails the batch without a round trip.
        let last = reduce(changes)?;
        let (mut put_kind, mut put_key, mut put_data) = (Vec::new(), Vec::new(), Vec::new());
        let (mut del_kind, mut del_key) = (Vec::new(), Vec::new());
        for ((kind, key), data) in last {
            match data {
                Some(d) => {
                    put_kind.push(kind);
                    put_key.push(key);
                    put_data.push(d);
                }
                None => {
                    del_kind.push(kind);
                    del_key.push(key);
                }
            }
        }
        let fence = self.fence.lock().ok().and_then(|f| f.clone());
        self.block_on(async {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg("begin transaction"))?;
            if let Some((holder, epoch)) = &fence {
                // The lease row stays locked (shared) until the commit: a
                // standby cannot take the lease between this check and it.
                tx.batch_execute(FENCED_TX_SETTINGS).await.map_err(pg("set up a fenced commit"))?;
                let current = tx
                    .query_opt(
                        "SELECT epoch FROM cairn_lease WHERE holder = $1 AND epoch = $2 AND expires_at > clock_timestamp() FOR SHARE",
                        &[holder, epoch],
                    )
                    .await
                    .map_err(pg("check the leader lease"))?;
                if current.is_none() {
                    return Err(StoreError::Fenced { epoch: *epoch });
                }
            }
            if !put_key.is_empty() {
                tx.execute(
                    "INSERT INTO objects (kind, key, data) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                     ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data",
                    &[&put_kind, &put_key, &put_data],
                )
                .await
                .map_err(pg("write objects"))?;
            }
            if !del_key.is_empty() {
                tx.execute(
                    "DELETE FROM objects WHERE (kind, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                    &[&del_kind, &del_key],
                )
                .await
                .map_err(pg("delete objects"))?;
            }
            tx.commit().await.map_err(pg("commit transaction"))
        })
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("postgres://cairn:s3cret@db.example:5432/cairn"), "postgres://cairn:***@db.example:5432/cairn");
        assert_eq!(redact("postgresql://cairn@db/cairn"), "postgresql://cairn@db/cairn");
        assert_eq!(redact("host=db user=cairn password=s3cret dbname=c"), "host=db user=cairn password=*** dbname=c");
        assert_eq!(redact("postgres://db/c?password=s3cret&sslmode=disable"), "postgres://db/c?password=***&sslmode=disable");
        let c: tokio_postgres::Config = "postgres://cairn:s3cret@db.example:5433/cairn".parse().unwrap();
        assert_eq!(describe(&c), "postgresql://cairn@db.example:5433/cairn");
    }

    #[test]
    fn bad_urls_are_refused_before_connecting() {
        for url in ["postgres://cairn:pw@db:notaport/c", "postgres:///c"] {
            let e = PgStore::open(url).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.starts_with("invalid database URL"), "{url}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
    }
}
