//! Connections to one master: a TCP connect with a deadline, the HTTP/1.1 handshake,
//! and a small pool of idle keep-alive connections.
//!
//! Why our own pool rather than hyper-util's legacy client: the request path must know
//! whether a connection could be *established* before it hands over the request body,
//! so that a refused connect can be retried on the next master with the body intact.
//! Here connecting and sending are two steps, and `try_send_request` gives the request
//! back when it was never written.
//!
//! - this file: [`Upstream`], one master's connections, and opening an HTTP connection.
//! - `connect`: a TCP connect (and TLS handshake) with a deadline, kept out of the
//!   descriptor reserve.
//! - `stream`: [`MasterStream`], a connection to a master, plain or TLS.
//! - `pool`: the idle connections per proxy worker, and the per-master caps.
//! - `attachments`: what is open to each master, and the switch that closes it all.
//! - `tunnel`: the byte pipe of upgraded connections and TCP forwards.

pub mod attachments;
pub mod tunnel;

mod connect;
mod flavor;
mod h1;
mod pool;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;

use attachments::Attachments;
pub use connect::{authority, open_stream, ConnectError};
use connect::{open_master, open_traffic_stream};
use flavor::{Flavor, Opening, Pooled};
pub use h1::{write_request_head, RawBody, RawConnection, RawError};
use pool::{current_worker, Permits, Pool, Waiting};
pub use pool::{set_worker, RawHome, Returner};
pub use stream::MasterStream;

use crate::tls::MasterTls;

/// Body of a request sent to a master: the client's body streamed as is, or empty (for
/// a retried request that never had one).
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// How the connections to one master are made and kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// `proxy.connect_timeout`.
    pub connect_timeout: Duration,
    /// `proxy.pool_idle_timeout`.
    pub idle_timeout: Duration,
    /// `[[backend]] max_connections`.
    pub max_connections: usize,
    /// `[[backend]] max_connects`.
    pub max_connects: usize,
    /// Proxy worker threads: one idle-pool shard each.
    pub workers: usize,
    /// An `https://` master: how to open TLS to it. None: plain HTTP.
    pub tls: Option<MasterTls>,
}

#[cfg(test)]
impl UpstreamSettings {
    /// Small limits for unit tests that need a master but never connect to it.
    pub fn for_tests() -> UpstreamSettings {
        UpstreamSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            max_connections: 8,
            max_connects: 2,
            tls: None,
            workers: 1,
        }
    }
}

/// A connect under way in a task of its own: what it comes to.
type Opened<F> = tokio::sync::oneshot::Receiver<Result<F, ConnectError>>;

/// What a connect started by `connect_or_reuse` came to; pending while none was started.
async fn opened<T>(
    opening: Option<&mut tokio::sync::oneshot::Receiver<T>>,
) -> Result<T, tokio::sync::oneshot::error::RecvError> {
    match opening {
        Some(opening) => opening.await,
        None => std::future::pending().await,
    }
}

/// A hyper connection ready to carry one request.
pub struct Connection {
    pub sender: SendRequest<UpstreamBody>,
    /// Taken from the idle pool rather than freshly opened: a failure on it says
    /// little about the master (it may simply have closed an idle connection).
    pub reused: bool,
}

/// A connection of our own HTTP/1 client (`h1`) ready to carry one body-less request.
pub struct RawLease {
    pub connection: RawConnection,
    /// Where it goes back when the response is read.
    pub home: RawHome,
    /// As [`Connection::reused`].
    pub reused: bool,
}

/// Connections to one master. Shared by all requests to it (inside `routing::Master`).
pub struct Upstream {
    /// Host of the master as configured (name or IP; IPv6 without brackets).
    host: String,
    /// `host:port` of the master's HTTP port.
    authority: String,
    settings: UpstreamSettings,
    pool: Arc<Pool>,
    /// Everything open to this master, for /status and the drain.
    attachments: Arc<Attachments>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    pub fn new(host: &str, port: u16, settings: UpstreamSettings) -> Upstream {
        let pool = Arc::new(Pool::new(&settings));
        Pool::spawn_reaper(&pool);
        Upstream {
            host: host.to_owned(),
            authority: authority(host, port),
            settings,
            pool,
            attachments: Arc::new(Attachments::default()),
        }
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Same address and connection settings: a reload can keep this pool.
    pub fn same_settings(&self, other: &Upstream) -> bool {
        self.authority == other.authority && self.settings == other.settings
    }

    pub fn attachments(&self) -> &Arc<Attachments> {
        &self.attachments
    }

    /// An `https://` master's TLS settings.
    pub fn tls(&self) -> Option<&MasterTls> {
        self.settings.tls.as_ref()
    }

    /// A connection for a health check or a REST call: TLS for an `https://` master,
    /// within `timeout`, and allowed into the descriptor reserve (kept for these).
    pub async fn open_control(&self, timeout: Duration) -> Result<MasterStream, ConnectError> {
        open_master(&self.authority, self.settings.tls.as_ref(), timeout, false).await
    }

    /// Opens a raw TCP connection to `port` on the master's host (`[[tcp]]` forwards:
    /// the agent port is not HTTPS, whatever the master's URL).
    pub async fn open_port(&self, port: u16) -> Result<TcpStream, ConnectError> {
        open_traffic_stream(&authority(&self.host, port), self.settings.connect_timeout).await
    }

    /// An idle pooled connection if one is ready; else a new one, or a connection
    /// another request gives back before the new one is up, whichever comes first.
    /// When the master's connection caps hold it back for `wait`, `Saturated`.
    pub async fn connection(&self, wait: Duration) -> Result<Connection, ConnectError> {
        let (sender, reused) = self.lease(wait).await?;
        Ok(Connection { sender, reused })
    }

    /// Always a new connection, within the master's caps (waiting up to `wait`).
    pub async fn connect(&self, wait: Duration) -> Result<Connection, ConnectError> {
        let sender = self.fresh(wait).await?;
        Ok(Connection {
            sender,
            reused: false,
        })
    }

    /// As [`Upstream::connection`] (or [`Upstream::connect`] when `fresh_only`), for
    /// our own HTTP/1 client.
    pub async fn raw_connection(
        &self,
        wait: Duration,
        fresh_only: bool,
    ) -> Result<RawLease, ConnectError> {
        let (connection, reused) = if fresh_only {
            (Box::pin(self.fresh(wait)).await?, false)
        } else {
            self.lease(wait).await?
        };
        Ok(RawLease {
            connection,
            home: RawHome::new(&self.pool, current_worker()),
            reused,
        })
    }

    /// An idle connection of kind `F`, else a new one (see `connect_or_reuse`); and
    /// whether it was reused.
    async fn lease<F: Flavor>(&self, wait: Duration) -> Result<(F, bool), ConnectError> {
        if let Some(connection) = self.reuse_idle().await {
            return Ok((connection, true));
        }
        // Boxed: connecting is the rare path, and its future (resolve, connect, HTTP
        // handshake) would make every request's future kilobytes larger, copied by value
        // several times per request.
        let connection = Box::pin(self.connect_or_reuse(wait)).await?;
        Ok(connection)
    }

    /// A new connection of kind `F`, within the master's caps (waiting up to `wait`).
    async fn fresh<F: Flavor>(&self, wait: Duration) -> Result<F, ConnectError> {
        let permits = tokio::time::timeout(wait, self.pool.permits())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| self.saturated(wait))?;
        F::open(self.opening(permits)).await
    }

    fn opening(&self, permits: Permits) -> Opening<'_> {
        Opening {
            authority: &self.authority,
            tls: self.settings.tls.as_ref(),
            connect_timeout: self.settings.connect_timeout,
            attachments: &self.attachments,
            connection: permits.connection,
            connect: permits.connect,
        }
    }

    fn saturated(&self, waited: Duration) -> ConnectError {
        ConnectError::Saturated {
            authority: self.authority.clone(),
            limit: self.settings.max_connections,
            waited,
        }
    }

    /// An idle connection of kind `F` of this worker's pool, ready for a request.
    async fn reuse_idle<F: Flavor>(&self) -> Option<F> {
        while let Some(mut connection) = self.pool.take_idle::<F>(current_worker()) {
            if connection.ready().await {
                return Some(connection);
            }
        }
        None
    }

    /// Waits for the permits to open a connection, then opens it in a task of its own;
    /// meanwhile, and until it is up, takes any connection another request gives back
    /// to this worker's pool instead.
    ///
    /// Why: a burst of requests finding no idle connection (right after start-up or a
    /// failover) would open a connection per request at once. A master with a short
    /// accept queue (Jenkins' Jetty listens with Java's default backlog of 50) drops
    /// the SYNs it cannot queue, and those connects wait for a retransmit: a second,
    /// then three more. `max_connects` keeps the connects in flight below that queue,
    /// and `max_connections` bounds what one master can cost in descriptors (an HTTP/2
    /// client may ask for a hundred streams at once). Meanwhile the connections that
    /// are up finish their first responses within milliseconds, so a waiting request
    /// takes one of those. A connect that loses the race is not wasted: it joins the
    /// pool once up. If it fails after its request was served on another connection,
    /// the failure is only logged; the health checks judge the master.
    async fn connect_or_reuse<F: Flavor>(&self, wait: Duration) -> Result<(F, bool), ConnectError> {
        let shard = self.pool.own_shard();
        let _waiting = Waiting::on(&shard.waiting);
        let permits = self.pool.permits();
        tokio::pin!(permits);
        let mut opening: Option<Opened<F>> = None;
        let expiry = tokio::time::sleep(wait);
        tokio::pin!(expiry);
        loop {
            // Listening before looking: a connection given back in between still wakes us.
            let returned = shard.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(connection) = self.reuse_idle().await {
                return Ok((connection, true));
            }
            tokio::select! {
                biased;
                result = opened(opening.as_mut()) => return match result {
                    Ok(result) => result.map(|connection| (connection, false)),
                    // The task ended without an answer (only a panic does): connect here.
                    Err(_) => self.fresh(wait).await.map(|connection| (connection, false)),
                },
                () = returned => {}
                permits = &mut permits, if opening.is_none() => match permits {
                    Some(permits) => opening = Some(self.spawn_open(permits)),
                    None => return Err(self.saturated(wait)),
                },
                () = &mut expiry => return Err(self.saturated(wait)),
            }
        }
    }

    /// Opens a connection in a task of its own on this worker's runtime (like the
    /// connection task it spawns). If nobody waits for it any more when it is up, it
    /// joins the pool; if it fails then, the failure is only logged.
    fn spawn_open<F: Flavor>(&self, permits: Permits) -> Opened<F> {
        let (deliver, opened) = tokio::sync::oneshot::channel();
        let (authority, timeout) = (self.authority.clone(), self.settings.connect_timeout);
        let tls = self.settings.tls.clone();
        let attachments = Arc::clone(&self.attachments);
        let (pool, worker) = (Arc::clone(&self.pool), current_worker());
        tokio::spawn(async move {
            let opening = Opening {
                authority: &authority,
                tls: tls.as_ref(),
                connect_timeout: timeout,
                attachments: &attachments,
                connection: permits.connection,
                connect: permits.connect,
            };
            let result = F::open(opening).await;
            match deliver.send(result) {
                Ok(()) => {}
                Err(Ok(connection)) => {
                    Pool::returner(&pool, connection.into_pooled(), worker).give_back();
                }
                Err(Err(error)) => {
                    tracing::debug!(%error, "a connect no request waits for any more failed")
                }
            }
        });
        opened
    }

    /// A handle that puts `sender` back into the pool once its response has been
    /// read to the end (see [`Returner`]). A connection the master closes (or that was
    /// upgraded) is dropped instead.
    pub fn returner(&self, sender: SendRequest<UpstreamBody>) -> Returner {
        Pool::returner(&self.pool, Pooled::Hyper(sender), current_worker())
    }

    /// Closes every idle connection (their connection tasks end when dropped).
    pub fn clear_idle(&self) -> usize {
        self.pool.clear_idle()
    }
}
