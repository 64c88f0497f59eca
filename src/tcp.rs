//! Raw TCP listeners that follow the active master: the inbound agent port (50000) and
//! anything else a master serves on another port. Each accepted connection goes to
//! `<host of the active master>:<backend_port>` (active-active mode: of the least
//! loaded replica, where it stays for its lifetime); a failed connect reports the
//! master down, as on the HTTP path, and tries the new active master.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::control::owner::OwnerHandle;
use crate::control::placement::Affinity;
use crate::control::routing::{Master, Placed, RoutingHandle};
use crate::upstream::attachments::Kind;
use crate::upstream::tunnel::{self, End};

/// What one TCP listener's forwards share.
pub struct TcpContext {
    pub routing: RoutingHandle,
    pub owner: OwnerHandle,
    /// Closes a forward that has been silent this long; None: never.
    pub idle_timeout: Option<Duration>,
    /// `[[tcp]] max_connections`: forwards at once; more are closed when accepted.
    pub max_connections: usize,
    /// How long the health checks take at most to demote a master that stopped
    /// answering; connects that time out are tried again for this long.
    pub down_confirmation: Duration,
}

/// One `[[tcp]]` listener.
#[derive(Debug, Clone)]
pub struct TcpForward {
    pub name: String,
    pub backend_port: u16,
}

/// Accepts on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: Arc<TcpListener>,
    forward: TcpForward,
    ctx: Arc<TcpContext>,
    shutdown: CancellationToken,
) {
    let forward = Arc::new(forward);
    let mut accept_errors =
        crate::sys::fd_limit::AcceptErrors::new(format!("tcp {}", forward.name));
    let slots = Arc::new(tokio::sync::Semaphore::new(ctx.max_connections.max(1)));
    let mut refusals = crate::sys::fd_limit::Refusals::default();
    loop {
        let (client, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_errors.failed(&error).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refusals.log(|| {
                tracing::warn!(listener = %forward.name, limit = ctx.max_connections,
                client = %peer, "[[tcp]] max_connections reached: closing new connections")
            });
            continue; // dropping the client closes it
        };
        if crate::sys::fd_limit::in_reserve(&client, crate::sys::fd_limit::Claim::Client) {
            refusals.log(|| crate::sys::fd_limit::log_reserve_reached(&forward.name));
            continue;
        }
        let _ = client.set_nodelay(true);
        let span = tracing::debug_span!("tcp", listener = %forward.name, client = %peer);
        let (forward, ctx) = (Arc::clone(&forward), Arc::clone(&ctx));
        tokio::spawn(
            async move {
                let _slot = slot; // held while the forward lives
                handle(client, forward, ctx).await;
            }
            .instrument(span),
        );
    }
}

async fn handle(client: TcpStream, forward: Arc<TcpForward>, ctx: Arc<TcpContext>) {
    let Some((master, upstream)) = connect_active(&forward, &ctx).await else {
        return; // dropping the client closes it: no master can take it now
    };
    let _ = upstream.set_nodelay(true);
    let attachment = master.upstream.attachments().attach(Kind::Tcp);
    let (end, sent, received) = tunnel::pipe(client, upstream, ctx.idle_timeout, &attachment).await;
    match end {
        End::Closed => tracing::debug!(master = %master.name, sent, received, "TCP forward closed"),
        End::Idle => tracing::info!(master = %master.name, "TCP forward closed: idle timeout"),
        End::Drained => tracing::debug!(master = %master.name, "TCP forward closed by drain"),
    }
}

/// Connects to the active master's `backend_port`, failing over like the HTTP path.
async fn connect_active(
    forward: &TcpForward,
    ctx: &TcpContext,
) -> Option<(Arc<Master>, TcpStream)> {
    let mut snapshot = ctx.routing.current();
    let mut attempt = 0;
    // As on the HTTP path: a timed-out connect never demotes a master by itself.
    let mut give_up_at: Option<std::time::Instant> = None;
    loop {
        // Active-active: a new agent connection goes to the least loaded replica.
        let Some(master) = snapshot.place(Affinity::None).map(Placed::recorded) else {
            tracing::warn!(listener = %forward.name, "no healthy master: closing the TCP connection");
            return None;
        };
        match master.upstream.open_port(forward.backend_port).await {
            Ok(stream) => return Some((master, stream)),
            Err(error) if error.is_local() => {
                // Out of descriptors here: not the master's fault, so not reported.
                crate::sys::fd_limit::log_exhaustion(
                    "a TCP connection was closed: cannot connect to the master",
                    &error,
                );
                return None;
            }
            Err(error) if error.is_timeout() => {
                let now = std::time::Instant::now();
                let give_up = *give_up_at.get_or_insert(now + ctx.down_confirmation);
                let current = ctx.routing.current();
                if current.routes_to(&master) && now >= give_up {
                    tracing::warn!(listener = %forward.name, master = %master.name, %error,
                        "connects to the active master keep timing out: closing the TCP connection");
                    return None;
                }
                snapshot = current;
            }
            Err(error) => {
                attempt += 1;
                snapshot = ctx
                    .owner
                    .failed_connect(&master, error.to_string(), attempt)
                    .await?;
            }
        }
    }
}
