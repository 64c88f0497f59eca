//! What goes out with each snapshot the owner publishes: its generation, which moves
//! when what the request path acts on changes, and the log lines of changes of the
//! active master, written once the snapshot that has them is out.

use std::sync::Arc;

use crate::control::routing::{Cause, Master, Snapshot};

/// A change of the active master, to be logged after it is published.
pub(super) struct Announcement {
    pub from: String,
    pub to: Option<String>,
    pub cause: Cause,
    pub reason: String,
}

impl Announcement {
    pub fn log(&self) {
        let (from, cause) = (self.from.as_str(), self.cause.as_str());
        match &self.to {
            Some(to) => {
                tracing::info!(from, to = %to, cause, "active master changed: {}", self.reason)
            }
            None => tracing::warn!(from, cause, "no active master: {}", self.reason),
        }
    }
}

/// What the request path acts on in a snapshot.
#[derive(Default)]
pub(super) struct Routed {
    /// The master that receives traffic.
    active: Option<Arc<Master>>,
    /// The master held traffic waits for (a promotion, a restart).
    held_for: Option<String>,
    /// Active-active mode: the replicas that take traffic (empty otherwise).
    replicas: Vec<Arc<Master>>,
}

impl Routed {
    pub fn of(snapshot: &Snapshot) -> Routed {
        Routed {
            active: snapshot.active_master().cloned(),
            held_for: snapshot.promotion.as_ref().map(|p| p.to.clone()),
            replicas: match snapshot.replicas {
                Some(_) => snapshot.routed(),
                None => Vec::new(),
            },
        }
    }
}

impl PartialEq for Routed {
    fn eq(&self, other: &Routed) -> bool {
        let same_active = match (&self.active, &other.active) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let same_replicas = self.replicas.len() == other.replicas.len()
            && (self.replicas.iter().zip(&other.replicas)).all(|(a, b)| Arc::ptr_eq(a, b));
        same_active && self.held_for == other.held_for && same_replicas
    }
}
