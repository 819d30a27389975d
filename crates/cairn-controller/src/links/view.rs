//! What the controller observes of a node's satellite: the connection,
//! its hello, and the state of its resources and pools as last reported.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_domain::name::key;
use cairn_proto::{Hello, Observed, PoolObserved, ResourceObserved};

/// `connection_status` values (python-linstor's enum names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnStatus {
    #[default]
    Offline,
    Connected,
    Online,
    VersionMismatch,
    AuthenticationError,
    HostnameMismatch,
}

impl ConnStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnStatus::Offline => "OFFLINE",
            ConnStatus::Connected => "CONNECTED",
            ConnStatus::Online => "ONLINE",
            ConnStatus::VersionMismatch => "VERSION_MISMATCH",
            ConnStatus::AuthenticationError => "AUTHENTICATION_ERROR",
            ConnStatus::HostnameMismatch => "HOSTNAME_MISMATCH",
        }
    }
}

/// The observed state of one node.
#[derive(Debug, Default)]
pub(crate) struct View {
    pub status: ConnStatus,
    /// The last full apply succeeded: what the view holds is current.
    pub synced: bool,
    pub hello: Option<Hello>,
    /// by upper-case resource name; shared, so a REST reply takes a
    /// resource's observed state without copying it
    pub resources: BTreeMap<String, Arc<ResourceObserved>>,
    /// by upper-case pool name
    pub pools: BTreeMap<String, PoolObserved>,
    /// Answers taken in (tests: an unchanged observation is not).
    #[cfg(test)]
    pub absorbed: usize,
}

impl View {
    /// Takes in an answer; `full`: it covers every resource (a full apply
    /// or an observation), so what it lacks is gone.
    /// The answer is moved in, not copied: at 1,000 nodes the
    /// heartbeats' observations are most of an idle controller's work.
    pub fn absorb(&mut self, o: Observed, full: bool) {
        #[cfg(test)]
        {
            self.absorbed += 1;
        }
        if full {
            self.resources.clear();
        }
        for r in o.resources {
            self.resources.insert(key(&r.name), Arc::new(r));
        }
        for r in &o.removed {
            if r.error.is_none() {
                self.resources.remove(&key(&r.name));
            }
        }
        // Apply answers carry the pools only when the request set them;
        // observations and full applies always do.
        if full || !o.pools.is_empty() {
            self.pools = o.pools.into_iter().map(|p| (key(&p.name), p)).collect();
        }
    }

    /// Whether an observation shows another DRBD state than the view
    /// holds (a resource's DRBD part differs, or resources came or went).
    pub fn drbd_differs(&self, o: &Observed) -> bool {
        o.resources.len() != self.resources.len()
            || o.resources.iter().any(|r| self.resources.get(&key(&r.name)).is_none_or(|seen| seen.drbd != r.drbd))
    }

    /// Connected and in sync: what the view holds can be shown.
    pub fn current(&self) -> bool {
        self.status == ConnStatus::Online && self.synced
    }

    /// The may-promote value of every resource reported, by name, while
    /// the view is current (else none: nothing is known).
    pub fn may_promote(&self) -> crate::events::PromoteView {
        if !self.current() {
            return crate::events::PromoteView::new();
        }
        self.resources.values().map(|r| (r.name.clone(), r.drbd.as_ref().and_then(|d| d.may_promote))).collect()
    }

    /// Nothing observed is trusted any more.
    /// Whether [`View::forget`] would change nothing.
    pub fn forgotten(&self) -> bool {
        !self.synced && self.resources.is_empty() && self.pools.is_empty()
    }

    pub fn forget(&mut self) {
        self.synced = false;
        self.resources.clear();
        self.pools.clear();
    }
}
