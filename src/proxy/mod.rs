//! The client-facing proxy: HTTP/1.1 and cleartext HTTP/2, one task per connection, an
//! idle timeout for both protocols, graceful shutdown; and each request's way to the
//! active master and back. Each connection starts on our own HTTP/1.1 server (`h1`),
//! which serves the common request (a GET, HEAD or OPTIONS without a body or upgrade)
//! and hands the connection to hyper-util's auto server (HTTP/1 and h2c, with the
//! framing guard) at the first request that is anything else.
//!
//! - `workers`: the threads serving clients, each with its own runtime and accept loop;
//!   `balance`: connections spread evenly over them.
//! - `listener`: one accept loop, and each client connection's life (limits, our own
//!   server then hyper's, framing guard, idle timer).
//! - `h1`: our own HTTP/1.1 server for the common request.
//! - `forward`: one request, from refusal rules and head rewriting to the access log.
//! - `send` and `retry`: sending it through the pool, and what to do when that fails
//!   (`retry` is the pure decision, tested exhaustively).
//! - `affinity`: active-active mode: which replica a request goes to, and the cookie
//!   that keeps a session there.
//! - `exchange`: what a request keeps while it is sent (the copy it may be resent as,
//!   its upgrade, its CLI session).
//! - `responses`: every answer the proxy makes itself (400, 431, 502, 503, 504).
//! - `headers`, `framing`, `upgrade`, `jnlp`, `session`, `body`, `access`: the rules
//!   each of those applies.

mod access;
mod affinity;
mod balance;
mod body;
mod demotion;
mod exchange;
mod forward;
mod framing;
mod h1;
mod headers;
mod jnlp;
mod listener;
mod redirect;
mod responses;
mod retry;
mod send;
mod session;
mod upgrade;
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::HeaderValue;
use tokio::net::TcpListener;

use crate::admin::metrics::Metrics;
use crate::control::owner::OwnerHandle;
use crate::control::routing::RoutingHandle;
use crate::tls::ServerTlsHandle;
use body::Streamed;
pub use jnlp::Advertised;
pub use redirect::redirect_to_https;
use session::CliSessions;

/// Body of a response to the client: the master's, streamed, or one of ours.
pub type ProxyBody = Either<Streamed, Full<Bytes>>;

/// What every request of the proxy listener shares.
pub struct ProxyContext {
    pub routing: RoutingHandle,
    pub owner: OwnerHandle,
    /// Written by reloads, read once per request (an uncontended read lock).
    pub settings: std::sync::RwLock<Arc<ProxySettings>>,
    pub cli_sessions: CliSessions,
    pub metrics: Arc<Metrics>,
}

/// The request path's settings that a reload can change.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// `Retry-After` value on 503, in whole seconds.
    pub retry_after: HeaderValue,
    /// `proxy.tunnel_idle_timeout`: closes silent upgraded connections.
    pub tunnel_idle_timeout: Option<Duration>,
    /// `proxy.response_idle_timeout`: ends a response the master stopped sending.
    pub response_idle_timeout: Option<Duration>,
    /// The `[[tcp]]` listeners, for the JNLP header rewrite.
    pub advertised: Vec<Advertised>,
    /// `proxy.access_log`.
    pub access_log: bool,
    /// `failover.hold_timeout`: how long a request waits for a promotion in progress.
    pub hold_timeout: Duration,
    /// `proxy.request_timeout`: how long to wait for a response head.
    pub request_timeout: Option<Duration>,
    /// How long the health checks take at most to demote a master that stopped
    /// answering: `health.timeout` x `fall` + `interval`. A replayed request that
    /// broke again waits this long for a demotion before it gets 502.
    pub down_confirmation: Duration,
    /// Active-active mode: the name of the cookie that keeps a session on its replica
    /// (`pool.cookie_name`); None in active-passive mode.
    pub affinity_cookie: Option<Arc<str>>,
}

impl ProxyContext {
    pub fn settings(&self) -> Arc<ProxySettings> {
        match self.settings.read() {
            Ok(settings) => Arc::clone(&settings),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace_settings(&self, settings: ProxySettings) {
        let settings = Arc::new(settings);
        match self.settings.write() {
            Ok(mut current) => *current = settings,
            Err(poisoned) => *poisoned.into_inner() = settings,
        }
    }
}

/// Where a request came from (per client connection).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub client: SocketAddr,
    pub local: SocketAddr,
    /// The client came over TLS (`[proxy.tls]`): `X-Forwarded-Proto: https`.
    pub tls: bool,
}

/// Settings of the client-facing server, fixed when it starts.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub header_read_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    /// Threads serving client connections (one single-threaded runtime each); 0: on the
    /// caller's runtime instead.
    pub workers: usize,
    /// `proxy.http2_max_streams`: concurrent streams per HTTP/2 connection.
    pub http2_max_streams: usize,
    /// `[proxy.tls]`: the certificates of the listener, swapped by reloads; None: clear text.
    pub tls: Option<Arc<ServerTlsHandle>>,
}

/// Serves `listener` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish for up to `shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let forward = move |request, peer| {
        // Boxed once here: the request's future is ~4 KiB, and hyper and the service
        // wrapper would otherwise each move it by value (memcpy was 5% of CPU).
        Box::pin(forward::forward(Arc::clone(&ctx), request, peer))
    };
    workers::serve_with(listener, settings, forward, shutdown).await;
}
