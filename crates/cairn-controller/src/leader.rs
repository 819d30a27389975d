//! Active/standby controllers on one PostgreSQL database: the leader lease
//! and the fence built on it.
//!
//! The lease is one row in the database (`cairn_lease`: holder, epoch,
//! expiry in the server's clock). A controller starting on PostgreSQL
//! waits, as a standby, until the lease is free (expired or released),
//! takes it with a new epoch, and only then loads the cluster and listens
//! on the REST port. The leader renews the lease every [`RENEW_EVERY`] for
//! [`LEASE`] more.
//!
//! The [`Fence`] is the leader's own view of its lease: valid until the
//! start of its last successful renewal plus [`LEASE`] minus [`MARGIN`],
//! measured on the monotonic clock, which keeps running while the process
//! is stopped. Every write (`AppState::mutate`) and every message to a
//! satellite checks it first, so a leader that could not renew in time
//! (the database unreachable, or the process paused by SIGSTOP) has stopped
//! writing and talking before the database lets another controller take
//! the lease. Two more fences hold even if a message was already on its
//! way: every commit checks the lease in its own transaction
//! (`PgStore::fence_commits`), and every message to a satellite carries the
//! epoch, which satellites refuse once they have seen a newer one.
//!
//! A leader that lost its lease stops: [`Leadership::lost`] completes, the
//! controller stops serving and the process exits with an error, to start
//! again as a standby (systemd's `Restart=`, a Kubernetes restart).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_store::PgStore;

/// How long a lease lasts after each renewal (in the database's clock).
pub const LEASE: Duration = Duration::from_secs(3);
/// How often the leader renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How much sooner than the database the leader itself considers its lease
/// gone: room for clocks running at slightly different rates and for a
/// message already sent.
pub const MARGIN: Duration = Duration::from_millis(500);
/// How often a standby, and a leader whose renewal failed, tries again.
pub const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Why a leader refuses to write or to send.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "this controller is not the leader any more: its lease (epoch {epoch}) could not be renewed in time; another controller takes over"
)]
pub struct NotLeader {
    pub epoch: u64,
}

/// The leader's view of its lease (see the module comment).
#[derive(Debug)]
pub struct Fence {
    epoch: u64,
    base: Instant,
    /// Milliseconds after `base` until which the lease is valid; 0 once
    /// it is given up or lost.
    until_ms: AtomicU64,
}

impl Fence {
    fn new(epoch: u64, renewed_at: Instant) -> Fence {
        let f = Fence { epoch, base: renewed_at, until_ms: AtomicU64::new(0) };
        f.extend(renewed_at);
        f
    }

    /// The epoch of this controller's lease.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Ok while the lease is surely still this controller's.
    pub fn check(&self) -> Result<(), NotLeader> {
        let now = self.base.elapsed().as_millis() as u64;
        if now < self.until_ms.load(Ordering::SeqCst) { Ok(()) } else { Err(NotLeader { epoch: self.epoch }) }
    }

    /// A renewal that started at `renewed_at` succeeded.
    fn extend(&self, renewed_at: Instant) {
        let until = renewed_at.saturating_duration_since(self.base) + LEASE - MARGIN;
        // Never beyond what a later renewal already gave; never reopened
        // once closed.
        let _ = self.until_ms.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
            (cur != 0 || renewed_at == self.base).then_some(cur.max(until.as_millis() as u64))
        });
    }

    fn close(&self) {
        self.until_ms.store(0, Ordering::SeqCst);
    }
}

/// This controller's leadership: the lease it holds and the task renewing it.
pub struct Leadership {
    store: Arc<PgStore>,
    holder: String,
    fence: Arc<Fence>,
    lost: tokio::sync::watch::Receiver<bool>,
}

impl Leadership {
    /// Waits, as a standby, until this controller takes the lease, then
    /// fences the store's commits by it and starts renewing it. Errors of
    /// the database while waiting are logged and retried: a standby waits
    /// for the database as it waits for the leader.
    pub async fn acquire(store: Arc<PgStore>, holder: String) -> Leadership {
        let mut waiting_logged = false;
        let mut last_error = String::new();
        loop {
            let start = Instant::now();
            let (s, h) = (store.clone(), holder.clone());
            let taken = tokio::task::spawn_blocking(move || s.lease_acquire(&h, LEASE, RENEW_EVERY)).await;
            match taken {
                Ok(Ok(Some(epoch))) => {
                    let epoch = epoch.max(0) as u64;
                    store.fence_commits(&holder, epoch as i64);
                    let fence = Arc::new(Fence::new(epoch, start));
                    let (tx, lost) = tokio::sync::watch::channel(false);
                    tokio::spawn(renew(store.clone(), holder.clone(), fence.clone(), tx));
                    tracing::info!(epoch, holder = %holder, "this controller is the leader");
                    return Leadership { store, holder, fence, lost };
                }
                Ok(Ok(None)) => {
                    if !waiting_logged {
                        tracing::info!(holder = %holder, "standby: another controller holds the leader lease; waiting for it");
                        waiting_logged = true;
                    }
                }
                Ok(Err(e)) => {
                    let e = e.to_string();
                    if e != last_error {
                        tracing::warn!("standby: cannot take the leader lease: {e}");
                        last_error = e;
                    }
                }
                Err(e) => tracing::warn!("standby: the lease task failed: {e}"),
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    pub fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// Completes when the lease is lost.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.lost.clone();
        async move {
            let _ = rx.wait_for(|l| *l).await;
        }
    }

    /// Whether the lease was lost (as opposed to given up).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// A clean stop: stops writing and sending, then gives the lease up so
    /// a standby takes over at once.
    pub async fn release(self) {
        self.fence.close();
        let Leadership { store, holder, fence, .. } = self;
        let epoch = fence.epoch as i64;
        match tokio::task::spawn_blocking(move || store.lease_release(&holder, epoch, RENEW_EVERY)).await {
            Ok(Ok(())) => tracing::info!(epoch, "gave the leader lease up"),
            Ok(Err(e)) => tracing::warn!("cannot give the leader lease up (it runs out by itself): {e}"),
            Err(e) => tracing::warn!("the lease task failed: {e}"),
        }
    }
}

/// Renews the lease until it is lost or given up.
async fn renew(store: Arc<PgStore>, holder: String, fence: Arc<Fence>, lost: tokio::sync::watch::Sender<bool>) {
    let mut wait = RENEW_EVERY;
    loop {
        tokio::time::sleep(wait).await;
        let start = Instant::now();
        if fence.until_ms.load(Ordering::SeqCst) == 0 {
            return; // given up
        }
        let why = match fence.check() {
            Err(_) => "it could not be renewed in time".to_string(),
            Ok(()) => {
                let (s, h, epoch) = (store.clone(), holder.clone(), fence.epoch as i64);
                match tokio::task::spawn_blocking(move || s.lease_renew(&h, epoch, LEASE, RENEW_EVERY)).await {
                    Ok(Ok(true)) => {
                        fence.extend(start);
                        wait = RENEW_EVERY;
                        continue;
                    }
                    Ok(Ok(false)) => "it expired or passed to another controller".to_string(),
                    Ok(Err(e)) if fence.check().is_ok() => {
                        tracing::warn!(epoch, "cannot renew the leader lease, retrying: {e}");
                        wait = RETRY_EVERY;
                        continue;
                    }
                    Ok(Err(e)) => format!("it could not be renewed in time: {e}"),
                    Err(e) => format!("the renewal task failed: {e}"),
                }
            }
        };
        fence.close();
        tracing::error!(epoch = fence.epoch, "lost the leader lease ({why}): no more writes or messages to satellites; stopping");
        let _ = lost.send(true);
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_holds_for_the_lease_less_the_margin_and_never_reopens() {
        let t0 = Instant::now();
        let f = Fence::new(7, t0);
        assert!(f.check().is_ok());
        assert_eq!(f.until_ms.load(Ordering::SeqCst), (LEASE - MARGIN).as_millis() as u64);
        f.extend(t0 + Duration::from_secs(1));
        assert_eq!(f.until_ms.load(Ordering::SeqCst), (LEASE - MARGIN + Duration::from_secs(1)).as_millis() as u64);
        // A slow renewal that started earlier does not shorten it.
        f.extend(t0);
        assert_eq!(f.until_ms.load(Ordering::SeqCst), (LEASE - MARGIN + Duration::from_secs(1)).as_millis() as u64);
        f.close();
        let e = f.check().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("epoch 7"), "{e}");
        f.extend(t0 + Duration::from_secs(2));
        assert!(f.check().is_err(), "a closed fence stays closed");
    }

    #[test]
    fn a_fence_whose_renewal_is_late_refuses() {
        let past = Instant::now() - LEASE;
        let f = Fence::new(1, past);
        assert!(f.check().is_err(), "renewed a whole lease ago: not the leader any more");
    }
}
