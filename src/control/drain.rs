//! The drain: once the active master changes, what is still attached to the demoted
//! master (in-flight requests, tunnels, TCP forwards) is closed after `drain_timeout`,
//! so agents reconnect, through us, to the new active master. In active-active mode
//! the same holds for every replica that stops taking traffic (down or disabled).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::control::routing::{Master, Snapshot};

/// Watches the snapshots; whenever a master stops taking traffic (the active master
/// is demoted; a replica goes down or is disabled), closes its idle pool at once, and
/// everything else attached to it after `drain_timeout`, unless it takes traffic
/// again by then.
pub async fn run(mut snapshots: watch::Receiver<Arc<Snapshot>>, drain_timeout: Duration) {
    // By identity, not position: a reload may reorder the pool.
    let mut routed = snapshots.borrow_and_update().routed();
    while snapshots.changed().await.is_ok() {
        let now_routed = snapshots.borrow_and_update().routed();
        for demoted in &routed {
            if !now_routed.iter().any(|m| Arc::ptr_eq(m, demoted)) {
                drain(Arc::clone(demoted), snapshots.clone(), drain_timeout);
            }
        }
        routed = now_routed;
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
        let active_again = watcher.borrow().routes_to(&master);
        if active_again {
            return; // its connections are legitimate again
        }
        let closed = master.upstream.attachments().close_all();
        tracing::info!(master = %master.name, http = closed.http, tunnels = closed.tunnels,
            tcp = closed.tcp, "drain timeout passed: closed connections still attached to the demoted master");
    });
}
