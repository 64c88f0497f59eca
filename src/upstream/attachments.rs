//! What is attached to each master: upstream HTTP connections, upgraded tunnels and
//! TCP forwards, counted per master, with a switch that closes them all.
//!
//! Every connection to a master holds an [`Attachment`]: it counts it in the master's
//! gauges and carries the master's current close token. The drain
//! (`crate::control::drain`) pulls the switch once a master is demoted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

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

    /// Whether the master was drained since this connection was attached.
    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    /// [`Attachment::closed`] as a future that owns what it waits on.
    pub fn closing(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.owner
            .counter(self.kind)
            .fetch_sub(1, Ordering::Relaxed);
    }
}
