//! LINSTOR's server-sent event streams (`/v1/events/drbd/promotion`,
//! `/v1/events/nodes`): one tokio broadcast channel per stream, fed by the
//! satellite links (may-promote changes) and the node handlers (node
//! create, modify, delete).
//!
//! An event is formatted once, as the bytes every subscriber writes
//! (`event: NAME\ndata: JSON\n\n`, as Jersey's `OutboundEvent` writes it
//! for LINSTOR), so publishing costs one `send` however many clients
//! listen, and never waits for any of them. A client that falls more than
//! [`CAPACITY`] events behind has its stream ended (see
//! docs/ARCHITECTURE.md, "Event streams"): it reconnects and, with
//! `Last-Event-ID: current`, gets the current state again, instead of
//! silently holding a view with holes in it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde::Serialize;
use tokio::sync::broadcast;

/// Events a subscriber may be behind before its stream is ended.
pub const CAPACITY: usize = 1024;
/// How often an idle stream gets a comment line. LINSTOR (Jersey) sends
/// none; a comment is invisible to SSE clients and lets the controller
/// notice clients that vanished without closing their connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Promotion,
    Nodes,
}

/// The event hub: cheap to share, publishing never blocks.
pub struct Events {
    promotion: broadcast::Sender<Bytes>,
    nodes: broadcast::Sender<Bytes>,
    /// Open event streams (response bodies not dropped yet).
    open: Arc<AtomicUsize>,
}

impl Default for Events {
    fn default() -> Events {
        Events { promotion: broadcast::channel(CAPACITY).0, nodes: broadcast::channel(CAPACITY).0, open: Arc::new(AtomicUsize::new(0)) }
    }
}

/// `EventMayPromoteChange` of LINSTOR's API (field order as Jackson writes
/// LINSTOR's class; `may_promote` is null when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MayPromoteChange {
    pub resource_name: String,
    pub node_name: String,
    pub may_promote: Option<bool>,
}

/// One SSE frame as LINSTOR writes it.
pub fn frame(name: &str, data: &impl Serialize) -> Option<Bytes> {
    match serde_json::to_string(data) {
        Ok(json) => Some(Bytes::from(format!("event: {name}\ndata: {json}\n\n"))),
        Err(e) => {
            tracing::error!("cannot encode a {name} event: {e}");
            None
        }
    }
}

impl Events {
    fn sender(&self, s: Stream) -> &broadcast::Sender<Bytes> {
        match s {
            Stream::Promotion => &self.promotion,
            Stream::Nodes => &self.nodes,
        }
    }

    /// Sends an event to every subscriber of the stream (none: dropped).
    pub fn publish(&self, s: Stream, name: &str, data: &impl Serialize) {
        if self.sender(s).receiver_count() == 0 {
            return;
        }
        if let Some(f) = frame(name, data) {
            let _ = self.sender(s).send(f);
        }
    }

    pub fn may_promote(&self, c: MayPromoteChange) {
        self.publish(Stream::Promotion, "may-promote-change", &c);
    }

    /// Event streams whose response body is still alive.
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Subscribers of a stream's channel.
    pub fn subscribers(&self, s: Stream) -> usize {
        self.sender(s).receiver_count()
    }

    /// A response body: the frames `first` makes (the current state), then
    /// every event published from now on. The channel is subscribed before
    /// `first` runs, so no change falls between the two.
    pub fn body(&self, s: Stream, first: impl FnOnce() -> Vec<Bytes>) -> Body {
        let rx = self.sender(s).subscribe();
        let first = first();
        self.open.fetch_add(1, Ordering::SeqCst);
        let open = Open(self.open.clone());
        let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let state = Subscriber { first: first.into_iter().collect(), rx, keep_alive, _open: open };
        Body::from_stream(futures_util::StreamExt::fuse(futures_util::stream::unfold(state, next_frame)))
    }
}

/// Counts an open stream until the body is dropped (the client went, or
/// the stream ended).
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Subscriber {
    first: std::collections::VecDeque<Bytes>,
    rx: broadcast::Receiver<Bytes>,
    keep_alive: tokio::time::Interval,
    _open: Open,
}

async fn next_frame(mut st: Subscriber) -> Option<(Result<Bytes, Infallible>, Subscriber)> {
    if let Some(f) = st.first.pop_front() {
        return Some((Ok(f), st));
    }
    tokio::select! {
        got = st.rx.recv() => match got {
            Ok(f) => {
                st.keep_alive.reset();
                Some((Ok(f), st))
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "an event stream client fell behind; ending its stream");
                None
            }
            Err(broadcast::error::RecvError::Closed) => None,
        },
        _ = st.keep_alive.tick() => Some((Ok(Bytes::from_static(b":\n\n")), st)),
    }
}

/// The may-promote value a resource shows: null when unknown (no DRBD, not
/// reported, node not connected).
pub type PromoteView = BTreeMap<String, Option<bool>>;

/// The changes between two views of one node's resources, as LINSTOR
/// emits them: one event per resource whose value differs, carrying the
/// new value (null for a resource that is gone or no longer reported).
pub fn promotion_changes(node_name: &str, before: &PromoteView, after: &PromoteView) -> Vec<MayPromoteChange> {
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter_map(|rsc| {
            let old = before.get(rsc).copied().flatten();
            let new = after.get(rsc).copied().flatten();
            (old != new).then(|| MayPromoteChange { resource_name: rsc.clone(), node_name: node_name.to_string(), may_promote: new })
        })
        .collect()
}

/// `EventNode` of LINSTOR's API.
#[derive(Serialize)]
pub struct NodeEvent<'a, N: Serialize> {
    pub node: &'a N,
}

/// `EventNodeModified` of LINSTOR's API.
#[derive(Serialize)]
pub struct NodeModified<'a, N: Serialize> {
    pub old_node: &'a N,
    pub new_node: &'a N,
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// A real `drbdsetup events2` stream (see the fixture's README).
    const PAIR_STREAM: &str = include_str!("../../cairn-storage/testdata/events2/pair-stream.alpha.events2");

    /// The resource lines of a real `drbdsetup events2` stream, fed to the
    /// satellite's parser one by one, each state taken as an observation:
    /// the events are the may-promote edges of the stream, the last one
    /// null when the resource is destroyed (LINSTOR: the event stream of
    /// the resource closes, may_promote becomes unknown).
    #[test]
    fn a_captured_events2_stream_gives_linstors_may_promote_events() {
        let mut parser = cairn_storage::drbd::events::Events2::new();
        let mut view = PromoteView::new();
        let mut got = Vec::new();
        for line in PAIR_STREAM.lines() {
            parser.feed(line);
            let now: PromoteView = parser.resources().map(|(n, d)| (n.clone(), d.may_promote)).collect();
            got.extend(promotion_changes("alpha", &view, &now));
            view = now;
        }
        let values: Vec<Option<bool>> = got.iter().map(|c| c.may_promote).collect();
        // create (no), demoted (yes), peer promoted (no), peer demoted
        // (yes), down (no), destroyed (unknown).
        assert_eq!(values, vec![Some(false), Some(true), Some(false), Some(true), Some(false), None]);
        assert!(got.iter().all(|c| c.resource_name == "r0" && c.node_name == "alpha"));
        let json = serde_json::to_string(&got[1]).unwrap_or_default();
        assert_eq!(json, r#"{"resource_name":"r0","node_name":"alpha","may_promote":true}"#);
        let null = serde_json::to_string(&got[5]).unwrap_or_default();
        assert_eq!(null, r#"{"resource_name":"r0","node_name":"alpha","may_promote":null}"#);
    }

    #[test]
    fn unchanged_values_give_no_event_and_a_lost_view_nulls_what_was_known() {
        let before = PromoteView::from([("a".to_string(), Some(true)), ("b".to_string(), None)]);
        assert!(promotion_changes("n", &before, &before.clone()).is_empty());
        // b: reported without a value, then not at all: still unknown.
        let lost = promotion_changes("n", &before, &PromoteView::new());
        assert_eq!(lost, vec![MayPromoteChange { resource_name: "a".into(), node_name: "n".into(), may_promote: None }]);
    }

    fn text(b: &Bytes) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[tokio::test]
    async fn a_stream_gets_its_first_frames_then_events_and_counts_while_open() {
        let ev = Events::default();
        ev.publish(Stream::Nodes, "node-create", &"before anyone listens");
        let first = frame("may-promote-change", &1).into_iter().collect::<Vec<_>>();
        let body = ev.body(Stream::Promotion, || first);
        let nodes = ev.body(Stream::Nodes, Vec::new);
        assert_eq!((ev.open_streams(), ev.subscribers(Stream::Promotion), ev.subscribers(Stream::Nodes)), (2, 1, 1));
        ev.may_promote(MayPromoteChange { resource_name: "r".into(), node_name: "n".into(), may_promote: Some(true) });
        let mut s = body.into_data_stream();
        let a = s.next().await.and_then(Result::ok).unwrap_or_default();
        let b = s.next().await.and_then(Result::ok).unwrap_or_default();
        assert_eq!(text(&a), "event: may-promote-change\ndata: 1\n\n");
        assert_eq!(text(&b), "event: may-promote-change\ndata: {\"resource_name\":\"r\",\"node_name\":\"n\",\"may_promote\":true}\n\n");
        drop(s);
        drop(nodes);
        assert_eq!((ev.open_streams(), ev.subscribers(Stream::Promotion), ev.subscribers(Stream::Nodes)), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_has_its_stream_ended_and_others_keep_theirs() {
        let ev = Events::default();
        let slow = ev.body(Stream::Nodes, Vec::new);
        let fast = ev.body(Stream::Nodes, Vec::new);
        let mut fast = fast.into_data_stream();
        for i in 0..CAPACITY + 1 {
            ev.publish(Stream::Nodes, "node-modified", &i);
            // The fast one keeps up.
            assert!(fast.next().await.is_some_and(|f| f.is_ok()));
        }
        let mut slow = slow.into_data_stream();
        assert!(slow.next().await.is_none(), "the stream of a client that lagged ends");
        ev.publish(Stream::Nodes, "node-modified", &"after");
        let f = fast.next().await.and_then(Result::ok).unwrap_or_default();
        assert_eq!(text(&f), "event: node-modified\ndata: \"after\"\n\n");
        drop(slow);
        assert_eq!(ev.open_streams(), 1);
    }
}
