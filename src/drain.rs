//! What is attached to each master (upstream HTTP connections, upgraded tunnels, TCP
//! forwards), and the drain that closes it all once a master is demoted.
//!
//! Every connection to a master holds an [`Attachment`]: it counts it in the master's
//! gauges and carries the master's current close token. When the active master
//! changes, [`run`] waits `drain_timeout` (in-flight work may finish) and then closes
//! everything still attached to the demoted master, so agents reconnect, through us,
//! to the new active master.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::routing::{Master, Snapshot};

/// The kinds of connection counted per master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HTTP/1.1 connection to the master (busy or idle in the pool).
    Http,
    /// An upgraded connection (WebSocket, CLI over WebSocket, any `Upgrade`).
    Tunnel,
    /// A raw TCP forward from a `[[tcp]]` listener.
    Tcp,
}

/// Open connections of one master by kind, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub http: usize,
    pub tunnels: usize,
    pub tcp: usize,
}

/// Per-master gauges and close switch. Written by connection tasks (attach/detach) and
/// by the drain (close_all); read by /status.
#[derive(Debug, Default)]
pub struct Attachments {
    http: AtomicUsize,
    tunnels: AtomicUsize,
    tcp: AtomicUsize,
    /// Cancelled and replaced by `close_all`, so connections opened afterwards are
    /// not affected by an earlier drain.
    token: Mutex<CancellationToken>,
}

impl Attachments {
    /// Registers a new connection of `kind`; dropping the attachment unregisters it.
    pub fn attach(self: &Arc<Self>, kind: Kind) -> Attachment {
        self.counter(kind).fetch_add(1, Ordering::Relaxed);
        Attachment {
            owner: Arc::clone(self),
            kind,
            token: self.current_token(),
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            http: self.http.load(Ordering::Relaxed),
            tunnels: self.tunnels.load(Ordering::Relaxed),
            tcp: self.tcp.load(Ordering::Relaxed),
        }
    }

    /// Closes every connection attached so far; returns how many there were.
    pub fn close_all(&self) -> Counts {
        let counts = self.counts();
        let mut token = match self.token.lock() {
            Ok(token) => token,
            Err(poisoned) => poisoned.into_inner(),
        };
        token.cancel();
        *token = CancellationToken::new();
        counts
    }

    fn current_token(&self) -> CancellationToken {
        match self.token.lock() {
            Ok(token) => token.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn counter(&self, kind: Kind) -> &AtomicUsize {
        match kind {
            Kind::Http => &self.http,
            Kind::Tunnel => &self.tunnels,
            Kind::Tcp => &self.tcp,
        }
    }
}

/// One live connection to a master. Held by the task that drives the connection.
#[derive(Debug)]
pub struct Attachment {
    owner: Arc<Attachments>,
    kind: Kind,
    token: CancellationToken,
}

impl Attachment {
    /// Completes when the master is drained (or the daemon stops): the holder must
    /// then close its connection.
    pub async fn closed(&self) {
        self.token.cancelled().await;
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.owner
            .counter(self.kind)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

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
