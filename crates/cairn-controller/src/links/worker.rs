//! The worker of one node's link: connect (hello), full apply, then the
//! queued deltas in order, a heartbeat observation when idle (answered
//! "unchanged" while the satellite observes what the view holds), and the
//! retry of whatever the satellite did not acknowledge.
//!
//! Who retries what, when:
//! * the connection (hello, full apply, any failed call): reconnect after
//!   the reconnect back-off; every (re)connect sends the full state, and
//!   so does a satellite whose `instance` changed (it restarted);
//! * objects the satellite answered with an error (or an observation
//!   shows failing): only those, as a delta with their current desired
//!   version, after the retry back-off; the back-off grows while retries
//!   keep failing and starts over once nothing is failing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_proto::{Apply, Hello, Observation, ObserveSince, Observed, PATH_APPLY, PATH_HELLO, PATH_OBSERVE};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dispatch::{merge, only_of};
use super::transport::{self, CallError};
use super::{APPLY_TIMEOUT, Backoff, ConnStatus, Host, Job, Link, LinkError, SHORT_TIMEOUT};

/// How a session with the satellite ended.
struct End {
    status: ConnStatus,
    why: LinkError,
    /// Wait for the reconnect back-off before trying again.
    pause: bool,
    /// The hello of a satellite that is another node.
    hello: Option<Hello>,
}

impl End {
    fn pause(status: ConnStatus, why: LinkError) -> End {
        End { status, why, pause: true, hello: None }
    }

    fn now(why: LinkError) -> End {
        End { status: ConnStatus::Offline, why, pause: false, hello: None }
    }
}

/// The worker of one node's link, until the node is removed.
pub(super) async fn run(host: Arc<Host>, link: Arc<Link>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut reconnect = host.timing.reconnect;
    while !link.stopped.load(Ordering::SeqCst) {
        let end = session(&host, &link, &mut rx, &mut reconnect).await;
        went_offline(&link, &mut rx, end.status, &end.why);
        if end.hello.is_some() {
            set_status(&link, end.status, end.hello);
        }
        if end.pause {
            pause(&link, reconnect.failed()).await;
        }
    }
    drain(&mut rx, &LinkError::Removed);
}

/// One connection: hello, full apply, then deltas and heartbeats until
/// something breaks.
async fn session(host: &Host, link: &Link, rx: &mut mpsc::UnboundedReceiver<Job>, reconnect: &mut Backoff) -> End {
    let t = &*host.transport;
    let Some((name, target)) = host.target(&link.node_key) else {
        return End::pause(ConnStatus::Offline, LinkError::NoInterface);
    };
    if target.ssl && !t.tls() {
        if !link.warned_tls.swap(true, Ordering::SeqCst) {
            tracing::error!(node = %name, "the node's interface uses SSL but the controller has no satellite TLS certificate configured");
        }
        return End::pause(ConnStatus::Offline, CallError::NoTls.into());
    }
    let hello: Hello = match transport::get(t, target, PATH_HELLO, SHORT_TIMEOUT).await {
        Ok(h) => h,
        Err(e) => {
            let status = match e {
                CallError::Status { status: 401, .. } => ConnStatus::AuthenticationError,
                CallError::Status { status: 409, .. } => ConnStatus::VersionMismatch,
                _ => ConnStatus::Offline,
            };
            return End::pause(status, e.into());
        }
    };
    if !hello.node_name.eq_ignore_ascii_case(&name) {
        tracing::warn!(node = %name, satellite = %hello.node_name, addr = %target.addr, "the satellite at this address is another node");
        let status = ConnStatus::HostnameMismatch;
        return End { hello: Some(hello), ..End::pause(status, LinkError::NotOnline(status)) };
    }
    set_status(link, ConnStatus::Connected, Some(hello.clone()));
    if let Err(e) = full_sync(host, link, target, rx).await {
        tracing::warn!(node = %name, "full apply failed: {e}");
        return End::pause(ConnStatus::Offline, e);
    }
    reconnect.reset();
    let mut flight = InFlight::default();
    let end = serve(host, link, rx, &hello, target, &mut flight).await;
    // Requests still in flight are given up with the session.
    for (_, (_, jobs)) in std::mem::take(&mut flight.pending) {
        answer_all(jobs, &end.why);
    }
    end
}

/// How many apply requests one node may have in flight at once.
const MAX_IN_FLIGHT: usize = 16;

/// Apply requests sent and not answered yet, by generation (each request
/// has its own), and how far answers were taken into the view.
#[derive(Default)]
struct InFlight {
    tasks: tokio::task::JoinSet<(u64, Result<Observed, CallError>)>,
    pending: std::collections::BTreeMap<u64, (Apply, Vec<Job>)>,
    /// The generation of the answer each resource's view entry came from,
    /// while requests are in flight (emptied when none is).
    absorbed: std::collections::BTreeMap<String, u64>,
}

impl InFlight {
    /// The part of an answer that is not older than what the view holds
    /// for each resource: answers can arrive out of order.
    fn newer_only(&mut self, o: &Observed) -> Observed {
        let g = o.generation;
        let absorbed = &mut self.absorbed;
        let mut fresh = |name: &str| {
            let newer = absorbed.get(name).is_none_or(|seen| g >= *seen);
            if newer {
                absorbed.insert(name.to_string(), g);
            }
            newer
        };
        Observed {
            generation: g,
            instance: o.instance.clone(),
            resources: o.resources.iter().filter(|r| fresh(&r.name)).cloned().collect(),
            removed: o.removed.iter().filter(|r| fresh(&r.name)).cloned().collect(),
            pools: o.pools.clone(),
        }
    }
}

/// An observation request as it was sent.
struct Asked {
    /// The digest it was sent with.
    since: Option<String>,
    sent: Instant,
    /// How many apply answers had been absorbed when it went out.
    absorbed: u64,
    /// How long it allowed the satellite to hold it.
    hold: Duration,
}

impl Asked {
    fn none() -> Asked {
        Asked { since: None, sent: Instant::now(), absorbed: 0, hold: Duration::ZERO }
    }
}

/// Deltas and heartbeats of a connected session. Deltas go out as they
/// come, several at once (up to [`MAX_IN_FLIGHT`]): the satellite works on
/// each resource under its own lock against its newest desired state and
/// ignores a request older than the one that last set a resource, so a
/// slow resource never holds up changes to the others.
///
/// The heartbeat is one observation request at a time, beside the deltas,
/// never in their way: it asks the satellite to hold its answer while the
/// state is the one the view holds ([`Timing::hold`]), so an idle node
/// costs one exchange per hold instead of one per heartbeat, and a change
/// comes back as soon as the satellite sees it. A satellite that answers
/// at once (older ones do) is asked at the heartbeat's pace, as before.
/// A node that vanishes while a request is held is noticed by TCP
/// keepalive (the transport's), not by waiting for the hold to end.
async fn serve(
    host: &Host,
    link: &Link,
    rx: &mut mpsc::UnboundedReceiver<Job>,
    hello: &Hello,
    target: transport::Target,
    flight: &mut InFlight,
) -> End {
    let mut retry = host.timing.retry;
    let mut retry_at = link.ledger.lock().has_failed().then(|| Instant::now() + retry.delay());
    // When the next observation request may go out.
    let mut observe_at = Instant::now() + host.timing.heartbeat;
    // The observation request out, if one is (at most one at a time).
    let mut observing: tokio::task::JoinSet<Result<Observation, CallError>> = tokio::task::JoinSet::new();
    // What the request out was sent with.
    let mut asked = Asked::none();
    // Whether this satellite holds requests: unknown until an "unchanged"
    // answer to a request with a hold shows it (one held for at least half
    // a heartbeat) or not (one answered at once).
    let mut holds: Option<bool> = None;
    // Apply answers absorbed into the view so far.
    let mut absorbed = 0u64;
    // Observations in a row that timed out.
    let mut missed = 0u32;
    // While the DRBD state moves (connecting, syncing, roles changing)
    // from one observation to the next, the next comes four times as
    // soon from a satellite that does not hold requests, so what users
    // wait for shows within half a second.
    let mut observed_once = false;
    // The digest of the last observation, while the view holds it as it
    // came (no apply answer absorbed since): the satellite answers
    // "unchanged" to it, and an idle heartbeat decodes and absorbs nothing.
    let mut held: Option<String> = None;
    loop {
        if link.stopped.load(Ordering::SeqCst) {
            return End::now(LinkError::Removed);
        }
        tokio::select! {
            job = rx.recv(), if flight.tasks.len() < MAX_IN_FLIGHT => {
                let Some(job) = job else { return End::now(LinkError::Removed) };
                // Everything queued behind it goes in the same request:
                // the satellite works on the resources in parallel.
                let mut jobs = vec![job];
                while let Ok(more) = rx.try_recv() {
                    jobs.push(more);
                }
                let apply = merge(jobs.iter().map(|j| &j.apply));
                let (transport, body) = (host.transport.clone(), apply.clone());
                let generation = apply.generation;
                flight.tasks.spawn(async move {
                    (generation, transport::post::<_, Observed>(&*transport, target, PATH_APPLY, &body, APPLY_TIMEOUT).await)
                });
                flight.pending.insert(generation, (apply, jobs));
            }
            Some(done) = flight.tasks.join_next(), if !flight.tasks.is_empty() => {
                let (generation, answer) = match done {
                    Ok(d) => d,
                    Err(e) => return End::now(LinkError::Call(CallError::Request(format!("an apply task failed: {e}")))),
                };
                let Some((apply, jobs)) = flight.pending.remove(&generation) else { continue };
                let retried = jobs.iter().any(|j| j.done.is_none());
                let o = match answer {
                    Ok(o) if o.instance == hello.instance => o,
                    other => {
                        let why = match other {
                            Ok(_) => LinkError::Restarted,
                            Err(e) => LinkError::Call(e),
                        };
                        answer_all(jobs, &why);
                        return End::now(why);
                    }
                };
                link.view_mut().absorb(flight.newer_only(&o), false);
                if flight.pending.is_empty() {
                    // No older answer can come any more, and every later
                    // request has a newer generation than those recorded.
                    flight.absorbed.clear();
                }
                absorbed += 1;
                held = None;
                let failed = {
                    let mut ledger = link.ledger.lock();
                    ledger.answered(&apply, &o);
                    ledger.has_failed()
                };
                schedule(&mut retry, &mut retry_at, failed, retried);
                for j in jobs {
                    if let Some(done) = j.done {
                        let _ = done.send(Ok(only_of(&o, &j.apply)));
                    }
                }
            }
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                retry_at = None;
                if let Err(e) = queue_retry(host, link).await {
                    return End::now(e);
                }
            }
            _ = tokio::time::sleep_until(observe_at), if observing.is_empty() => {
                // After a request that was not answered, the next must be
                // answered at once: a hung satellite is lost within one
                // hold and two short timeouts. A satellite seen not to hold
                // (older ones) is not given a hold's time to answer either.
                let hold = if missed == 0 && holds != Some(false) { host.timing.hold } else { Duration::ZERO };
                let since = ObserveSince { since: held.clone(), wait_ms: Some(hold.as_millis().try_into().unwrap_or(u64::MAX)) };
                asked = Asked { since: since.since.clone(), sent: Instant::now(), absorbed, hold };
                let (transport, timeout) = (host.transport.clone(), hold + SHORT_TIMEOUT);
                observing.spawn(async move { transport::post::<_, Observation>(&*transport, target, PATH_OBSERVE, &since, timeout).await });
            }
            Some(done) = observing.join_next(), if !observing.is_empty() => {
                let answer = match done {
                    Ok(a) => a,
                    Err(e) => return End::now(LinkError::Call(CallError::Request(format!("an observation task failed: {e}")))),
                };
                let Asked { since, sent, absorbed: absorbed_then, hold: asked_hold } = std::mem::replace(&mut asked, Asked::none());
                // The heartbeat's pace, from when this request went out:
                // a held request has used it up already.
                observe_at = sent + host.timing.heartbeat;
                match answer {
                    // One late observation (a satellite busy with slow
                    // commands on a loaded host) is not a lost node: the
                    // view stays as it was; a second one in a row ends the
                    // session.
                    Err(e @ CallError::Timeout { .. }) if missed == 0 => {
                        missed += 1;
                        tracing::warn!(node = %link.node_key, "observation not answered ({e}); trying once more before the node counts as lost");
                    }
                    // An apply answer came in while this was out: the
                    // observation may be older than what the view holds
                    // now. It proves the node alive, and the next one, at
                    // the heartbeat's pace (the apply answers took in what
                    // they touched), brings the current state. A restart
                    // is still noticed at once, below.
                    Ok(Observation { observed, .. })
                        if absorbed != absorbed_then && observed.as_ref().is_none_or(|o| o.instance == hello.instance) =>
                    {
                        missed = 0;
                    }
                    // Nothing new: the view, the ledger and the pace stay
                    // as the same observation left them.
                    Ok(Observation { observed: None, digest }) if since.as_deref() == Some(digest.as_str()) => {
                        missed = 0;
                        observed_once = true;
                        // Held for a while: this satellite holds requests.
                        if !asked_hold.is_zero() {
                            holds = Some(sent.elapsed() >= host.timing.heartbeat / 2);
                        }
                    }
                    Ok(Observation { observed: None, .. }) => {
                        let e = CallError::BadReply("'unchanged' answered to an observation request of another state".into());
                        return End::now(LinkError::Lost(e));
                    }
                    Ok(Observation { observed: Some(o), digest }) if o.instance == hello.instance => {
                        missed = 0;
                        // A satellite that holds requests is asked again
                        // soon, so the next change shows as it happens (not
                        // sooner than a quarter heartbeat after this request,
                        // so a state that keeps moving costs no more than the
                        // heartbeat did while DRBD moved).
                        if holds == Some(true) || (observed_once && link.view().drbd_differs(&o)) {
                            observe_at = sent + host.timing.heartbeat / 4;
                        }
                        observed_once = true;
                        if link.ledger.lock().observed(&o) {
                            retry_at.get_or_insert(Instant::now() + retry.delay());
                        }
                        link.view_mut().absorb(o, true);
                        held = Some(digest);
                    }
                    Ok(_) => {
                        tracing::info!(node = %link.node_key, "satellite restarted; sending its full state again");
                        return End::now(LinkError::Restarted);
                    }
                    Err(e) => return End::now(LinkError::Lost(e)),
                }
            }
            _ = link.wake.notified() => {}
        }
    }
}

/// When to retry after an answer: not at all once nothing failed; after a
/// longer pause when a retry itself failed; else when already planned,
/// or after the current pause.
fn schedule(retry: &mut Backoff, retry_at: &mut Option<Instant>, failed: bool, retried: bool) {
    if !failed {
        retry.reset();
        *retry_at = None;
    } else if retried {
        retry.bump();
        *retry_at = Some(Instant::now() + retry.delay());
    } else if retry_at.is_none() {
        *retry_at = Some(Instant::now() + retry.delay());
    }
}

/// Sends the node's whole desired state. The snapshot is taken under the
/// order lock (committed state; the committer dispatches under it), so
/// every later change is queued as a delta behind it; jobs
/// queued before it are answered with its result, which covers them.
async fn full_sync(host: &Host, link: &Link, target: transport::Target, rx: &mut mpsc::UnboundedReceiver<Job>) -> Result<(), LinkError> {
    let (apply, superseded) = {
        let _order = host.order.lock().await;
        if link.stopped.load(Ordering::SeqCst) {
            return Err(LinkError::Removed);
        }
        let (pools, rscs) = host.desired(&host.read(), &link.node_key);
        let generation = link.ledger.lock().full(&pools, &rscs);
        // From now on changes to this node are queued to us.
        set_status(link, ConnStatus::Online, None);
        let mut superseded = Vec::new();
        while let Ok(job) = rx.try_recv() {
            superseded.push(job);
        }
        (Apply { generation, full: true, pools_set: true, pools, resources: rscs, removed: Vec::new() }, superseded)
    };
    match transport::post::<_, Observed>(&*host.transport, target, PATH_APPLY, &apply, APPLY_TIMEOUT).await {
        Ok(o) => {
            {
                let mut v = link.view_mut();
                v.absorb(o.clone(), true);
                v.synced = true;
            }
            link.ledger.lock().answered(&apply, &o);
            for job in superseded {
                if let Some(done) = job.done {
                    let _ = done.send(Ok(only_of(&o, &job.apply)));
                }
            }
            Ok(())
        }
        Err(e) => {
            let why = LinkError::FullApply(e);
            answer_all(superseded, &why);
            Err(why)
        }
    }
}

/// Queues the retry of what failed, computed under the order lock like
/// any delta, behind the deltas already queued.
async fn queue_retry(host: &Host, link: &Link) -> Result<(), LinkError> {
    let _order = host.order.lock().await;
    if link.stopped.load(Ordering::SeqCst) {
        return Err(LinkError::Removed);
    }
    let (pools, rscs) = host.desired(&host.read(), &link.node_key);
    if let Some(apply) = link.ledger.lock().retry(pools, rscs) {
        let names: Vec<&str> = apply.resources.iter().map(|r| r.name.as_str()).chain(apply.removed.iter().map(String::as_str)).collect();
        tracing::info!(node = %link.node_key, resources = ?names, pools = apply.pools_set, "retrying what the satellite did not acknowledge");
        // The receiver is this worker: it cannot be gone.
        let _ = link.tx.send(Job { apply, done: None });
    }
    Ok(())
}

fn set_status(link: &Link, status: ConnStatus, hello: Option<Hello>) {
    // Only this link's worker writes its view: what it reads here stays.
    // Nothing changes, nothing counts as a change (an offline node retried
    // every 30 s would keep the follow-ups scanning).
    if hello.is_none() && link.view().status == status {
        return;
    }
    let mut v = link.view_mut();
    if v.status != status {
        tracing::info!(node = %link.node_key, from = v.status.as_str(), to = status.as_str(), "satellite connection");
    }
    v.status = status;
    if hello.is_some() {
        v.hello = hello;
    }
}

fn answer_all(jobs: Vec<Job>, why: &LinkError) {
    for job in jobs {
        if let Some(done) = job.done {
            let _ = done.send(Err(why.clone()));
        }
    }
}

/// Fails every queued job: the node is not connected.
fn drain(rx: &mut mpsc::UnboundedReceiver<Job>, why: &LinkError) {
    let mut jobs = Vec::new();
    while let Ok(job) = rx.try_recv() {
        jobs.push(job);
    }
    answer_all(jobs, why);
}

/// Marks the link down: nothing observed is trusted any more, and queued
/// jobs are answered (their changes go out with the next full apply).
fn went_offline(link: &Link, rx: &mut mpsc::UnboundedReceiver<Job>, status: ConnStatus, why: &LinkError) {
    if !link.view().forgotten() {
        link.view_mut().forget();
    }
    set_status(link, status, None);
    drain(rx, why);
}

/// Waits before the next connection attempt, or until the node is removed.
async fn pause(link: &Link, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = link.wake.notified() => {}
    }
}
