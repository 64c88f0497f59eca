//! The drain: once the active master changes, what is still attached to the demoted
//! master (in-flight requests, tunnels, TCP forwards) is closed after `drain_timeout`,
//! so agents reconnect, through us, to the new active master.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::control::routing::{Master, Snapshot};

/// Watches the snapshots; on every change of the active master, closes the idle pool
/// of the demoted master at once, and everything else attached to it after
/// `drain_timeout`, unless it has become active again by then.
pub async fn run(mut snapshots: watch::Receiver<Arc<Snapshot>>, drain_timeout: Duration) {
    // By identity, not position: a reload may reorder the pool.
    let mut active = snapshots.borrow_and_update().active_master().cloned();
    while snapshots.changed().await.is_ok() {
        let now_active = snapshots.borrow_and_update().active_master().cloned();
        if same(&now_active, &active) {
            continue;
        }
        if let Some(demoted) = active.take() {
            drain(demoted, snapshots.clone(), drain_timeout);
        }
        active = now_active;
    }
}

fn same(a: &Option<Arc<Master>>, b: &Option<Arc<Master>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Closes the demoted master's idle pool now, and the rest after `drain_timeout`
/// unless it is active again by then.
fn drain(master: Arc<Master>, watcher: watch::Receiver<Arc<Snapshot>>, drain_timeout: Duration) {
    let idle = master.upstream.clear_idle();
    tracing::info!(master = %master.name, idle_closed = idle,
        drain_timeout = %humantime::format_duration(drain_timeout), "draining the demoted master");
    tokio::spawn(async move {
        tokio::time::sleep(drain_timeout).await;
        let active_again = watcher
            .borrow()
            .active_master()
            .is_some_and(|active| Arc::ptr_eq(active, &master));
        if active_again {
            return; // its connections are legitimate again
        }
        let closed = master.upstream.attachments().close_all();
        tracing::info!(master = %master.name, http = closed.http, tunnels = closed.tunnels,
            tcp = closed.tcp, "drain timeout passed: closed connections still attached to the demoted master");
    });
}
