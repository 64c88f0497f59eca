//! Connections to one master: a TCP connect with a deadline, the HTTP/1.1 handshake,
//! and a small pool of idle keep-alive connections.
//!
//! Why our own pool rather than hyper-util's legacy client: the request path must know
//! whether a connection could be *established* before it hands over the request body,
//! so that a refused connect can be retried on the next master with the body intact.
//! Here connecting and sending are two steps, and `try_send_request` gives the request
//! back when it was never written.

pub mod attachments;
pub mod tunnel;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::sys::fd_limit::Claim;
use attachments::{Attachments, Kind};

/// Body of a request sent to a master: the client's body streamed as is, or empty (for
/// a retried request that never had one).
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// Idle connections kept per master and proxy worker thread. Beyond this, released
/// connections are closed.
const MAX_IDLE_PER_MASTER: usize = 256;

thread_local! {
    /// The proxy worker this thread is: set by each proxy worker thread at its start
    /// (`set_worker`), read by `take_idle` and `returner`. Other threads (a shared
    /// multi-threaded runtime) are all worker 0.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes this thread's requests use the idle connections of proxy worker `index`:
/// those its own runtime drives.
pub fn set_worker(index: usize) {
    WORKER.with(|shard| shard.set(index));
}

fn current_worker() -> usize {
    WORKER.with(std::cell::Cell::get)
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {authority} timed out after {}", humantime::format_duration(*.timeout))]
    Timeout {
        authority: String,
        timeout: Duration,
    },
    #[error("connect to {authority}: {source}")]
    Io {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP handshake with {authority}: {source}")]
    Handshake {
        authority: String,
        #[source]
        source: hyper::Error,
    },
    /// Every connection the master may have (`[[backend]] max_connections`) stayed
    /// busy while the request waited.
    #[error("all {limit} connections to {authority} stayed busy for {} ([[backend]] max_connections)",
        humantime::format_duration(*.waited))]
    Saturated {
        authority: String,
        limit: usize,
        waited: Duration,
    },
}

impl ConnectError {
    /// The connect failed for want of descriptors, buffers or ports on our side
    /// ([`crate::sys::fd_limit::is_local_exhaustion`]): it says nothing about the master.
    pub fn is_local(&self) -> bool {
        match self {
            ConnectError::Io { source, .. } => crate::sys::fd_limit::is_local_exhaustion(source),
            ConnectError::Timeout { .. }
            | ConnectError::Handshake { .. }
            | ConnectError::Saturated { .. } => false,
        }
    }

    /// The master did not answer the connect in time: it may be down, or only slow
    /// (a full accept queue drops SYNs). Never proof that it is down.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnectError::Timeout { .. })
    }

    /// Our own cap on connections to the master held the request back.
    pub fn is_saturated(&self) -> bool {
        matches!(self, ConnectError::Saturated { .. })
    }
}

/// What a connection to a master holds while it is being opened.
struct Permits {
    /// Held by the connection's task for as long as it lives: one of the master's
    /// `max_connections`.
    connection: OwnedSemaphorePermit,
    /// Held until the connect and handshake are done: one of `max_connects`.
    connect: OwnedSemaphorePermit,
}

/// The caps on connections to one master, shared by every proxy worker.
struct Limits {
    /// `[[backend]] max_connections` permits: one per open HTTP connection, busy or idle.
    connections: Arc<Semaphore>,
    /// `[[backend]] max_connects` permits: one per connect in progress.
    connects: Arc<Semaphore>,
    /// Requests waiting for a `connections` permit. Written by `Upstream::permits`;
    /// read by `Returner::give_back`, which then closes a connection nobody on its
    /// own worker waits for, so that its permit goes to them.
    waiting: AtomicUsize,
}

/// Counts a waiter for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn on(counter: &'a AtomicUsize) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::AcqRel);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

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
}

/// Opens a TCP connection to `authority` (`host:port`) within `timeout`, with Nagle off.
pub async fn open_stream(authority: &str, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(authority))
        .await
        .map_err(|_| ConnectError::Timeout {
            authority: authority.to_owned(),
            timeout,
        })?
        .map_err(|source| ConnectError::Io {
            authority: authority.to_owned(),
            source,
        })?;
    // Small writes (headers, WebSocket frames) must not wait for an ACK.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// [`open_stream`] for traffic: a descriptor in the reserve the admin API and the
/// health checks need (see [`crate::sys::fd_limit::in_reserve`]) is given back at once.
async fn open_traffic_stream(
    authority: &str,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let stream = open_stream(authority, timeout).await?;
    if crate::sys::fd_limit::in_reserve(&stream, Claim::Upstream) {
        return Err(ConnectError::Io {
            authority: authority.to_owned(),
            source: crate::sys::fd_limit::reserve_error(),
        });
    }
    Ok(stream)
}

/// A new HTTP/1 connection to `authority`, its connection task spawned on this
/// runtime and counted in `attachments` (which can close it: a drain). The task holds
/// the connection's permit until the connection ends.
async fn open(
    authority: &str,
    connect_timeout: Duration,
    attachments: &Arc<Attachments>,
    permits: Permits,
) -> Result<SendRequest<UpstreamBody>, ConnectError> {
    let stream = open_traffic_stream(authority, connect_timeout).await?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake {
            authority: authority.to_owned(),
            source,
        })?;
    let Permits {
        connection: held,
        connect,
    } = permits;
    drop(connect); // connected: the next connect may start
    let authority = authority.to_owned();
    let attachment = attachments.attach(Kind::Http);
    tokio::spawn(async move {
        let _held = held;
        // Upgrades stay possible: a 101 hands the socket to the tunnel.
        // Biased: polled on every wakeup of the connection; no random pick.
        tokio::select! {
            biased;
            ended = connection.with_upgrades() => if let Err(error) = ended {
                tracing::debug!(%authority, %error, "upstream connection ended with an error");
            },
            // Drained: dropping the connection closes the socket, and any
            // response still streaming from it ends with an error.
            () = attachment.closed() => {}
        }
    });
    Ok(sender)
}

/// How long a just-returned connection may take to become ready for the next request.
const READY_WAIT: Duration = Duration::from_millis(50);

async fn ready_soon(sender: &mut SendRequest<UpstreamBody>) -> bool {
    matches!(
        tokio::time::timeout(READY_WAIT, sender.ready()).await,
        Ok(Ok(()))
    )
}

/// Idle keep-alive connections of one master, most recently used last, in one shard
/// per proxy worker thread: a connection's task runs on the runtime of the worker
/// that opened it, and only that worker's requests use it (no cross-thread wakeups,
/// and no connection outlives the runtime that drives it).
struct Pool {
    shards: Box<[Shard]>,
    idle_timeout: Duration,
    limits: Limits,
}

/// One proxy worker's idle connections to one master.
struct Shard {
    /// Written by `Returner::give_back` (when a response ends) and `take_idle`, read
    /// by `take_idle`; each held only for a push, a pop or a prune, never across an
    /// await. A worker uses its own shard (uncontended).
    idle: Mutex<Vec<IdleConnection>>,
    /// Notified by `give_back` for each connection it adds; awaited by requests that
    /// wait for a connection while their own is still being opened.
    returned: tokio::sync::Notify,
    /// Requests of this worker waiting in `connect_or_reuse`. Written by them; read by
    /// `give_back` (a connection someone here waits for is kept, not closed).
    waiting: AtomicUsize,
}

impl Pool {
    /// One shard per proxy worker: a shard's `returned` must wake only requests of
    /// the worker whose connections it holds.
    fn new(settings: &UpstreamSettings) -> Pool {
        let shards = settings.workers.max(1);
        Pool {
            shards: (0..shards)
                .map(|_| Shard {
                    idle: Mutex::new(Vec::new()),
                    returned: tokio::sync::Notify::new(),
                    waiting: AtomicUsize::new(0),
                })
                .collect(),
            idle_timeout: settings.idle_timeout,
            limits: Limits {
                connections: Arc::new(Semaphore::new(settings.max_connections.max(1))),
                connects: Arc::new(Semaphore::new(settings.max_connects.max(1))),
                waiting: AtomicUsize::new(0),
            },
        }
    }

    /// Closes the idle connection that has waited longest, in any worker's shard: its
    /// permit comes back once its task has seen it go. Returns whether there was one.
    fn close_oldest_idle(&self) -> bool {
        let oldest = (0..self.shards.len())
            .filter_map(|shard| {
                let idle = self.lock(shard);
                idle.first().map(|c| (c.idle_since, shard))
            })
            .min();
        let Some((_, shard)) = oldest else {
            return false;
        };
        let closed = {
            let mut idle = self.lock(shard);
            (!idle.is_empty()).then(|| idle.remove(0))
        };
        closed.is_some() // dropped here, outside the lock
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Vec<IdleConnection>> {
        match self.shards[shard].idle.lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn own_shard(&self) -> usize {
        current_worker() % self.shards.len()
    }

    /// Closes idle connections older than `idle_timeout` in every shard. Returning or
    /// taking a connection prunes its own shard too, but a shard nobody uses any more
    /// (a quiet worker, a standby master) would keep its sockets open until the master
    /// closes them. Dropping a sender from this thread is fine: the connection's task,
    /// on its own worker, sees it and ends.
    fn close_expired(&self) {
        let now = Instant::now();
        for shard in 0..self.shards.len() {
            let expired: Vec<IdleConnection> = {
                let mut idle = self.lock(shard);
                let count = idle
                    .iter()
                    .take_while(|c| now.duration_since(c.idle_since) >= self.idle_timeout)
                    .count();
                idle.drain(..count).collect()
            };
            drop(expired); // outside the lock
        }
    }

    /// Runs `close_expired` every `idle_timeout` for as long as the pool exists (the
    /// task holds it weakly). Without a runtime (a pool built outside one) there is no
    /// reaper; use still prunes.
    fn spawn_reaper(pool: &Arc<Pool>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::downgrade(pool);
        let Some(period) = pool.upgrade().map(|p| p.idle_timeout.max(MIN_REAP_PERIOD)) else {
            return;
        };
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.close_expired();
            }
        });
    }
}

/// The reaper never runs more often than this, whatever `pool_idle_timeout` says.
const MIN_REAP_PERIOD: Duration = Duration::from_millis(100);

/// Puts a connection back into its master's pool when the response on it has been
/// read to the end: synchronously, so the next request finds it, rather than opening
/// a new connection while a background task waits for this one.
pub struct Returner {
    sender: SendRequest<UpstreamBody>,
    pool: Arc<Pool>,
    /// The worker that took or opened the connection: its runtime drives it.
    worker: usize,
}

impl Returner {
    pub fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        let shard = self.worker % self.pool.shards.len();
        if self.pool.limits.waiting.load(Ordering::Acquire) > 0
            && self.pool.shards[shard].waiting.load(Ordering::Acquire) == 0
        {
            // Requests of other workers wait for one of the master's permits, and
            // nobody here needs this connection: closing it frees its permit for them.
            return;
        }
        let mut idle = self.pool.lock(shard);
        // The oldest are first: drop those that expired, so idle sockets do not pile
        // up (closed ones are skipped when taken).
        let now = Instant::now();
        let timeout = self.pool.idle_timeout;
        let expired = idle
            .iter()
            .take_while(|c| now.duration_since(c.idle_since) >= timeout)
            .count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE_PER_MASTER {
            idle.push(IdleConnection {
                sender: self.sender,
                idle_since: now,
                worker: self.worker,
            });
            drop(idle);
            // Wakes one request waiting for a connection (see `connect_or_reuse`); with
            // none waiting, only sets a flag.
            self.pool.shards[shard].returned.notify_one();
        }
    }
}

/// A connect under way in a task of its own: what it comes to.
type Opening = tokio::sync::oneshot::Receiver<Result<SendRequest<UpstreamBody>, ConnectError>>;

/// What a connect started by `connect_or_reuse` came to; pending while none was started.
async fn opened<T>(
    opening: Option<&mut tokio::sync::oneshot::Receiver<T>>,
) -> Result<T, tokio::sync::oneshot::error::RecvError> {
    match opening {
        Some(opening) => opening.await,
        None => std::future::pending().await,
    }
}

/// `host:port`, with IPv6 hosts in brackets.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A connection ready to carry one request.
pub struct Connection {
    pub sender: SendRequest<UpstreamBody>,
    /// Taken from the idle pool rather than freshly opened: a failure on it says
    /// little about the master (it may simply have closed an idle connection).
    pub reused: bool,
}

struct IdleConnection {
    sender: SendRequest<UpstreamBody>,
    idle_since: Instant,
    /// The proxy worker whose runtime drives the connection (see `set_worker`).
    worker: usize,
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

    /// `[[backend]] max_connections`.
    pub fn max_connections(&self) -> usize {
        self.settings.max_connections
    }

    pub fn attachments(&self) -> &Arc<Attachments> {
        &self.attachments
    }

    /// Opens a raw TCP connection to `port` on the master's host (`[[tcp]]` forwards).
    pub async fn open_port(&self, port: u16) -> Result<TcpStream, ConnectError> {
        open_traffic_stream(&authority(&self.host, port), self.settings.connect_timeout).await
    }

    /// An idle pooled connection if one is ready; else a new one, or a connection
    /// another request gives back before the new one is up, whichever comes first.
    /// When the master's connection caps hold it back for `wait`, `Saturated`.
    pub async fn connection(&self, wait: Duration) -> Result<Connection, ConnectError> {
        if let Some(connection) = self.reuse_idle().await {
            return Ok(connection);
        }
        // Boxed: connecting is the rare path, and its future (resolve, connect, HTTP
        // handshake) would make every request's future kilobytes larger, copied by value
        // several times per request.
        Box::pin(self.connect_or_reuse(wait)).await
    }

    /// Always a new connection, within the master's caps (waiting up to `wait`).
    pub async fn connect(&self, wait: Duration) -> Result<Connection, ConnectError> {
        let permits = tokio::time::timeout(wait, self.permits())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| self.saturated(wait))?;
        let sender = open(
            &self.authority,
            self.settings.connect_timeout,
            &self.attachments,
            permits,
        )
        .await?;
        Ok(Connection {
            sender,
            reused: false,
        })
    }

    fn saturated(&self, waited: Duration) -> ConnectError {
        ConnectError::Saturated {
            authority: self.authority.clone(),
            limit: self.settings.max_connections,
            waited,
        }
    }

    /// A permit for one more connection to the master and one for connecting. With
    /// every connection taken, the idle one that waited longest (on any worker) is
    /// closed to free its permit, and this waits in line for one. None: never (the
    /// semaphores are not closed).
    async fn permits(&self) -> Option<Permits> {
        let limits = &self.pool.limits;
        let connection = match Arc::clone(&limits.connections).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let _waiting = Waiting::on(&limits.waiting);
                self.pool.close_oldest_idle();
                Arc::clone(&limits.connections).acquire_owned().await.ok()?
            }
        };
        let connect = Arc::clone(&limits.connects).acquire_owned().await.ok()?;
        Some(Permits {
            connection,
            connect,
        })
    }

    /// An idle connection of this worker's pool that is ready for a request.
    async fn reuse_idle(&self) -> Option<Connection> {
        while let Some(mut sender) = self.take_idle() {
            // Returned the moment its last response ended: ready within a poll of its
            // connection task, or closing (the master said so).
            if sender.is_ready() || ready_soon(&mut sender).await {
                return Some(Connection {
                    sender,
                    reused: true,
                });
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
    async fn connect_or_reuse(&self, wait: Duration) -> Result<Connection, ConnectError> {
        let shard = &self.pool.shards[self.pool.own_shard()];
        let _waiting = Waiting::on(&shard.waiting);
        let permits = self.permits();
        tokio::pin!(permits);
        let mut opening: Option<Opening> = None;
        let expiry = tokio::time::sleep(wait);
        tokio::pin!(expiry);
        loop {
            // Listening before looking: a connection given back in between still wakes us.
            let returned = shard.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(connection) = self.reuse_idle().await {
                return Ok(connection);
            }
            tokio::select! {
                biased;
                result = opened(opening.as_mut()) => return match result {
                    Ok(result) => result.map(|sender| Connection { sender, reused: false }),
                    // The task ended without an answer (only a panic does): connect here.
                    Err(_) => self.connect(wait).await,
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
    fn spawn_open(&self, permits: Permits) -> Opening {
        let (deliver, opened) = tokio::sync::oneshot::channel();
        let (authority, timeout) = (self.authority.clone(), self.settings.connect_timeout);
        let attachments = Arc::clone(&self.attachments);
        let (pool, worker) = (Arc::clone(&self.pool), current_worker());
        tokio::spawn(async move {
            let result = open(&authority, timeout, &attachments, permits).await;
            match deliver.send(result) {
                Ok(()) => {}
                Err(Ok(sender)) => Returner {
                    sender,
                    pool,
                    worker,
                }
                .give_back(),
                Err(Err(error)) => {
                    tracing::debug!(%error, "a connect no request waits for any more failed")
                }
            }
        });
        opened
    }

    /// Hands a connection back once its response has been read to the end. A
    /// connection the master closes (or that was upgraded) is dropped instead.
    /// A handle that puts `sender` back into the pool once its response has been
    /// read to the end (see [`Returner`]).
    pub fn returner(&self, sender: SendRequest<UpstreamBody>) -> Returner {
        Returner {
            sender,
            pool: Arc::clone(&self.pool),
            worker: current_worker(),
        }
    }

    /// Closes every idle connection (their connection tasks end when dropped).
    pub fn clear_idle(&self) -> usize {
        (0..self.pool.shards.len())
            .map(|shard| {
                let mut idle = self.pool.lock(shard);
                let count = idle.len();
                idle.clear();
                count
            })
            .sum()
    }

    fn take_idle(&self) -> Option<SendRequest<UpstreamBody>> {
        let worker = current_worker();
        let mut idle = self.pool.lock(self.pool.own_shard());
        // Most recently used first: the likeliest to be alive; older ones expire.
        while let Some(at) = idle.iter().rposition(|c| c.worker == worker) {
            let candidate = idle.remove(at);
            if candidate.idle_since.elapsed() < self.pool.idle_timeout
                && !candidate.sender.is_closed()
            {
                return Some(candidate.sender);
            }
        }
        None
    }
}
