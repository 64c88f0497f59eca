//! Prometheus metrics (`GET /metrics` on the admin listener).
//!
//! Written by the request path (`observe_request`), the reload path (`reload`) and the
//! snapshot follower (`follow`, which turns published snapshots into gauges and
//! counts transitions by cause); read by the admin listener (`render`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::routing::Snapshot;

/// All metrics of one daemon.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {}
    }

    /// One proxied request: the master that answered (`"none"` when none could),
    /// its status code, and the time to the response head.
    pub fn observe_request(&self, master: &str, status: u16, duration: Duration) {
        let _ = (master, status, duration);
    }

    /// A configuration reload was attempted.
    pub fn reload(&self, succeeded: bool) {
        let _ = succeeded;
    }

    /// The Prometheus text exposition of everything, with per-master gauges read from
    /// `snapshot` (active, health, check latency, open connections and tunnels).
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let _ = snapshot;
        String::new()
    }

    /// Follows published snapshots and counts new transitions by cause.
    pub async fn follow(self: Arc<Self>, mut snapshots: watch::Receiver<Arc<Snapshot>>) {
        while snapshots.changed().await.is_ok() {}
    }
}
