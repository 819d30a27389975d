//! The state of DRBD resources, followed from `drbdsetup events2`.
//!
//! Every line is `[<timestamp>] <action> <object> key:value …` where the
//! action is `exists`, `create`, `change`, `destroy`, `call` or
//! `response`, and the object `resource`, `connection`, `device`,
//! `peer-device`, `path` or `helper`. `exists -` ends the initial dump.
//! A `change` line carries only the keys that changed; unknown keys and
//! objects are ignored so newer DRBD versions do not break the parser.

use std::collections::BTreeMap;

use cairn_proto::{DrbdConnectionObserved, DrbdObserved, DrbdPeerVolumeObserved, DrbdVolumeObserved};

/// What the stream said so far, per resource name.
#[derive(Debug, Default, Clone)]
pub struct Events2 {
    resources: BTreeMap<String, DrbdObserved>,
    /// The initial `exists` dump is complete.
    pub initialized: bool,
}

const ACTIONS: &[&str] = &["exists", "create", "change", "destroy", "call", "response"];

/// One `drbdsetup events2` line: its action, object and `key:value`
/// fields (an optional leading `--timestamps` stamp skipped); None for a
/// line without an action and an object.
pub(crate) fn event_line(line: &str) -> Option<(&str, &str, BTreeMap<&str, &str>)> {
    let mut words = line.split_whitespace().peekable();
    if words.peek().is_some_and(|w| !ACTIONS.contains(w)) {
        words.next();
    }
    let action = words.next()?;
    let object = words.next()?;
    Some((action, object, words.filter_map(|w| w.split_once(':')).collect()))
}

fn flag(v: &str) -> Option<bool> {
    match v {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

impl Events2 {
    pub fn new() -> Events2 {
        Events2::default()
    }

    /// Forgets everything (the stream restarted).
    pub fn reset(&mut self) {
        self.resources.clear();
        self.initialized = false;
    }

    pub fn resource(&self, name: &str) -> Option<&DrbdObserved> {
        self.resources.get(name)
    }

    /// Records what a `suspend-io`/`resume-io` just did, before the event
    /// stream reports it: the `user` reason is added or removed.
    pub fn set_suspended_by_user(&mut self, name: &str, on: bool) {
        let Some(r) = self.resources.get_mut(name) else { return };
        let mut why: Vec<String> = r
            .suspended
            .as_deref()
            .unwrap_or("no")
            .split(',')
            .filter(|w| *w != "no" && *w != "user" && !w.is_empty())
            .map(String::from)
            .collect();
        if on {
            why.insert(0, "user".into());
        }
        r.suspended = Some(if why.is_empty() { "no".into() } else { why.join(",") });
    }

    pub fn resources(&self) -> impl Iterator<Item = (&String, &DrbdObserved)> {
        self.resources.iter()
    }

    /// Applies one line; returns the name of the resource it touched.
    pub fn feed(&mut self, line: &str) -> Option<String> {
        let (action, object, kv) = event_line(line)?;
        if object == "-" {
            if action == "exists" {
                self.initialized = true;
            }
            return None;
        }
        let name = kv.get("name")?.to_string();
        match (action, object) {
            ("call", "helper") if kv.get("helper") == Some(&"split-brain") => {
                if let (Some(r), Some(peer)) = (self.resources.get_mut(&name), kv.get("conn-name"))
                    && let Some(c) = r.connections.iter_mut().find(|c| c.peer == *peer)
                {
                    c.split_brain = true;
                }
            }
            ("call" | "response", _) | (_, "path") => {}
            ("destroy", "resource") => {
                self.resources.remove(&name);
            }
            ("destroy", "connection") => {
                if let (Some(r), Some(peer)) = (self.resources.get_mut(&name), kv.get("conn-name")) {
                    r.connections.retain(|c| c.peer != *peer);
                    for v in &mut r.volumes {
                        v.peers.retain(|p| p.peer != *peer);
                    }
                }
            }
            ("destroy", "device") => {
                if let (Some(r), Some(nr)) = (self.resources.get_mut(&name), kv.get("volume").and_then(|v| v.parse::<u32>().ok())) {
                    r.volumes.retain(|v| v.number != nr);
                }
            }
            ("destroy", "peer-device") => {
                let nr = kv.get("volume").and_then(|v| v.parse::<u32>().ok());
                if let (Some(r), Some(nr), Some(peer)) = (self.resources.get_mut(&name), nr, kv.get("conn-name"))
                    && let Some(v) = r.volumes.iter_mut().find(|v| v.number == nr)
                {
                    v.peers.retain(|p| p.peer != *peer);
                }
            }
            (_, "resource") => {
                let r = self.entry(&name);
                for (k, v) in &kv {
                    match *k {
                        "role" => r.role = v.to_string(),
                        "may_promote" => r.may_promote = flag(v),
                        "promotion_score" => r.promotion_score = v.parse().ok(),
                        "suspended" => r.suspended = Some(v.to_string()),
                        _ => {}
                    }
                }
            }
            (_, "connection") => {
                let Some(peer) = kv.get("conn-name") else { return Some(name) };
                let r = self.entry(&name);
                let c = match r.connections.iter().position(|c| c.peer == *peer) {
                    Some(i) => &mut r.connections[i],
                    None => {
                        r.connections.push(DrbdConnectionObserved { peer: peer.to_string(), ..Default::default() });
                        r.connections.sort_by(|a, b| a.peer.cmp(&b.peer));
                        let i = r.connections.iter().position(|c| c.peer == *peer).unwrap_or_default();
                        &mut r.connections[i]
                    }
                };
                for (k, v) in &kv {
                    match *k {
                        "peer-node-id" => c.peer_node_id = v.parse().unwrap_or(c.peer_node_id),
                        "connection" => {
                            c.connection = v.to_string();
                            // Resolved by hand once it connects again.
                            if *v == "Connected" {
                                c.split_brain = false;
                            }
                        }
                        "role" => c.peer_role = Some(v.to_string()),
                        _ => {}
                    }
                }
            }
            (_, "device") => {
                let Some(nr) = kv.get("volume").and_then(|v| v.parse::<u32>().ok()) else { return Some(name) };
                let v = Self::volume(self.entry(&name), nr);
                for (k, val) in &kv {
                    match *k {
                        "minor" => v.minor = val.parse().unwrap_or(v.minor),
                        "disk" => v.disk = val.to_string(),
                        "quorum" => v.quorum = flag(val),
                        "size" => v.size_kib = val.parse().ok(),
                        _ => {}
                    }
                }
            }
            (_, "peer-device") => {
                let (Some(nr), Some(peer)) = (kv.get("volume").and_then(|v| v.parse::<u32>().ok()), kv.get("conn-name")) else {
                    return Some(name);
                };
                let v = Self::volume(self.entry(&name), nr);
                let p = match v.peers.iter().position(|p| p.peer == *peer) {
                    Some(i) => &mut v.peers[i],
                    None => {
                        v.peers.push(DrbdPeerVolumeObserved { peer: peer.to_string(), ..Default::default() });
                        v.peers.sort_by(|a, b| a.peer.cmp(&b.peer));
                        let i = v.peers.iter().position(|p| p.peer == *peer).unwrap_or_default();
                        &mut v.peers[i]
                    }
                };
                for (k, val) in &kv {
                    match *k {
                        "replication" => {
                            p.replication = val.to_string();
                            // Progress only means something while syncing.
                            if !val.starts_with("Sync") {
                                p.done = None;
                            }
                        }
                        "peer-disk" => p.peer_disk = val.to_string(),
                        "done" => p.done = val.parse().ok(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        Some(name)
    }

    fn entry(&mut self, name: &str) -> &mut DrbdObserved {
        self.resources.entry(name.to_string()).or_insert_with(|| DrbdObserved {
            kernel: true,
            role: "Unknown".into(),
            ..Default::default()
        })
    }

    fn volume(r: &mut DrbdObserved, nr: u32) -> &mut DrbdVolumeObserved {
        if !r.volumes.iter().any(|v| v.number == nr) {
            r.volumes.push(DrbdVolumeObserved { number: nr, disk: "DUnknown".into(), ..Default::default() });
            r.volumes.sort_by_key(|v| v.number);
        }
        let i = r.volumes.iter().position(|v| v.number == nr).unwrap_or_default();
        &mut r.volumes[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(fixture: &str) -> (Events2, Vec<Events2>) {
        let path = format!("{}/testdata/events2/{fixture}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut e = Events2::new();
        let mut steps = Vec::new();
        for line in text.lines() {
            e.feed(line);
            steps.push(e.clone());
        }
        (e, steps)
    }

    fn peer<'a>(r: &'a DrbdObserved, vol: u32, peer: &str) -> &'a DrbdPeerVolumeObserved {
        r.volumes.iter().find(|v| v.number == vol).and_then(|v| v.peers.iter().find(|p| p.peer == peer)).expect("peer volume")
    }

    #[test]
    fn initial_dump_then_resync_to_up_to_date() {
        let (e, steps) = replay("resync.txt");
        // Right after `exists -`: inconsistent, not yet syncing.
        let first = &steps[5];
        assert!(first.initialized);
        let r = first.resource("web").expect("web");
        assert_eq!((r.role.as_str(), r.may_promote, r.promotion_score), ("Secondary", Some(false), Some(0)));
        assert_eq!(r.volumes[0].disk, "Inconsistent");
        assert_eq!(r.volumes[0].minor, 1000);
        assert_eq!(r.volumes[0].size_kib, Some(1_048_576));
        assert_eq!(r.connections[0].connection, "Connected");
        assert_eq!(r.connections[0].peer_node_id, 1);
        // Mid-sync: SyncSource with progress.
        let mid = steps[12].resource("web").expect("web");
        assert_eq!(mid.role, "Primary");
        assert_eq!(peer(mid, 0, "bravo").replication, "SyncSource");
        assert_eq!(peer(mid, 0, "bravo").done, Some(49.90));
        // The end: both UpToDate, progress gone, promotable again.
        let r = e.resource("web").expect("web");
        assert_eq!(r.role, "Secondary");
        assert_eq!(r.may_promote, Some(true));
        assert_eq!(r.volumes[0].disk, "UpToDate");
        let p = peer(r, 0, "bravo");
        assert_eq!((p.replication.as_str(), p.peer_disk.as_str(), p.done), ("Established", "UpToDate", None));
    }

    #[test]
    fn disconnect_with_timestamps() {
        let (e, _) = replay("disconnect.txt");
        let r = e.resource("db").expect("db");
        assert_eq!(r.role, "Primary", "in use while a peer is away");
        let bravo = r.connections.iter().find(|c| c.peer == "bravo").expect("bravo");
        assert_eq!((bravo.connection.as_str(), bravo.peer_role.as_deref()), ("Connecting", Some("Unknown")));
        let charlie = r.connections.iter().find(|c| c.peer == "charlie").expect("charlie");
        assert_eq!(charlie.connection, "Connected");
        assert_eq!(peer(r, 0, "bravo").replication, "Off");
        assert_eq!(peer(r, 0, "bravo").peer_disk, "DUnknown");
        assert_eq!(peer(r, 0, "charlie").peer_disk, "Diskless");
        assert_eq!(r.volumes[0].disk, "UpToDate");
    }

    #[test]
    fn split_brain_leaves_the_connection_standalone() {
        let (e, steps) = replay("split-brain.txt");
        let connected = steps[6].resource("vm1").expect("vm1");
        assert_eq!(connected.connections[0].connection, "Connected");
        let r = e.resource("vm1").expect("vm1");
        assert_eq!(r.connections[0].connection, "StandAlone");
        assert!(r.connections[0].split_brain, "the helper call marks the connection");
        assert!(!steps[6].resource("vm1").expect("vm1").connections[0].split_brain);
        assert_eq!(r.connections[0].peer_node_id, 0);
        assert_eq!(peer(r, 0, "alpha").replication, "Off");
        assert_eq!(r.volumes[0].disk, "UpToDate", "local data stays");
    }

    #[test]
    fn quorum_loss_suspends_and_forbids_promotion() {
        let (e, steps) = replay("quorum-loss.txt");
        let before = steps[9].resource("pg").expect("pg");
        assert_eq!(before.volumes.len(), 2);
        assert!(before.volumes.iter().all(|v| v.quorum == Some(true)));
        assert_eq!(before.may_promote, Some(true));
        let r = e.resource("pg").expect("pg");
        assert!(r.volumes.iter().all(|v| v.quorum == Some(false)), "{r:?}");
        assert_eq!(r.suspended.as_deref(), Some("quorum"));
        assert_eq!((r.may_promote, r.promotion_score), (Some(false), Some(1)));
        assert_eq!(r.connections.len(), 1, "the destroyed connection is gone");
        assert_eq!(r.connections[0].connection, "BrokenPipe");
        assert!(r.volumes.iter().all(|v| v.peers.iter().all(|p| p.peer != "charlie")));
    }

    #[test]
    fn a_users_suspension_is_recorded_beside_others() {
        let (mut e, _) = replay("quorum-loss.txt");
        e.set_suspended_by_user("pg", true);
        assert_eq!(e.resource("pg").and_then(|r| r.suspended.as_deref()), Some("user,quorum"));
        e.set_suspended_by_user("pg", true);
        assert_eq!(e.resource("pg").and_then(|r| r.suspended.as_deref()), Some("user,quorum"), "once");
        e.set_suspended_by_user("pg", false);
        assert_eq!(e.resource("pg").and_then(|r| r.suspended.as_deref()), Some("quorum"));
        e.set_suspended_by_user("nope", true);
        assert!(e.resource("nope").is_none(), "nothing made up for a resource that is not up");
    }

    #[test]
    fn down_destroys_only_that_resource() {
        let (e, steps) = replay("down.txt");
        assert!(steps[6].resource("web").is_some());
        assert!(e.resource("web").is_none());
        let other = e.resource("other").expect("other");
        assert_eq!(other.volumes[0].disk, "Diskless");
    }

    /// Real output of the three-VM tier (see testdata/events2/README.md).
    #[test]
    fn a_killed_peer_quorum_loss_and_resync_as_captured_in_the_vm_tier() {
        let (e, steps) = replay("vm-kill-quorum-resync.d1.events2");
        let conn = |s: &Events2, peer: &str| {
            s.resource("ha").and_then(|r| r.connections.iter().find(|c| c.peer == peer)).map(|c| c.connection.clone())
        };
        let dump = steps.iter().find(|s| s.initialized).expect("the initial dump ends");
        let r = dump.resource("ha").expect("ha");
        assert_eq!((r.volumes[0].disk.as_str(), r.volumes[0].quorum, r.volumes[0].size_kib), ("UpToDate", Some(true), Some(36820)));
        assert_eq!((conn(dump, "d2").as_deref(), conn(dump, "d3").as_deref()), (Some("Connected"), Some("Connected")));
        // d3's VM is killed: its connection fails, d2's stays.
        let gone = steps.iter().position(|s| conn(s, "d3").as_deref() == Some("NetworkFailure")).expect("d3 lost");
        assert_eq!(conn(&steps[gone], "d2").as_deref(), Some("Connected"));
        assert_eq!(steps[gone].resource("ha").map(|r| r.volumes[0].quorum), Some(Some(true)), "two of three keep quorum");
        // d3 returns and d1 resyncs it: SyncSource with progress, device vs peer-device kept apart.
        let replication = |s: &Events2, p: &str| {
            s.resource("ha")
                .and_then(|r| r.volumes.first())
                .and_then(|v| v.peers.iter().find(|x| x.peer == p))
                .map(|x| x.replication.clone())
        };
        let sync = steps.iter().position(|s| replication(s, "d3").as_deref() == Some("SyncSource")).expect("resync");
        assert!(sync > gone);
        let r = steps[sync].resource("ha").expect("ha");
        assert_eq!((peer(r, 0, "d3").peer_disk.as_str(), peer(r, 0, "d3").done), ("Inconsistent", Some(0.0)));
        assert_eq!(r.volumes[0].disk, "UpToDate", "a peer-device's peer-disk never lands on the device");
        // Both peers lost: no quorum; then back.
        let quorum = |s: &Events2| s.resource("ha").and_then(|r| r.volumes.first()).and_then(|v| v.quorum);
        let lost = steps.iter().position(|s| quorum(s) == Some(false)).expect("quorum lost");
        assert!(lost > sync);
        let back = steps.iter().skip(lost).position(|s| quorum(s) == Some(true));
        assert!(back.is_some(), "quorum regained");
        // The end: everything connected and UpToDate, no progress left.
        let r = e.resource("ha").expect("ha");
        assert_eq!((conn(&e, "d2").as_deref(), conn(&e, "d3").as_deref()), (Some("Connected"), Some("Connected")));
        for p in ["d2", "d3"] {
            let p = peer(r, 0, p);
            assert_eq!((p.replication.as_str(), p.peer_disk.as_str(), p.done), ("Established", "UpToDate", None));
        }
        assert_eq!((r.volumes[0].disk.as_str(), r.volumes[0].quorum), ("UpToDate", Some(true)));
    }

    #[test]
    fn garbage_and_unknown_lines_are_ignored() {
        let mut e = Events2::new();
        for l in
            ["", "   ", "exists", "frobnicate resource name:x", "change widget name:x a:b", "change resource role:Primary", "\u{0}\u{1}"]
        {
            e.feed(l);
        }
        assert!(e.resource("x").is_none_or(|r| r.role == "Unknown"));
        e.feed("change device name:x volume:zero disk:UpToDate");
        assert!(e.resource("x").is_none_or(|r| r.volumes.is_empty()));
    }
}
