//! A sample Jenkins-like master: a small HTTP/1.1 server whose behaviour tests can
//! switch at run time. Used by the `demo` command, integration tests and benches.
//!
//! Endpoints (any method unless noted):
//! - [`SAMPLE_HEALTH_PATH`] (`/login`): 200 `ok`, or 503 while unhealthy.
//! - `/slow?chunks=N&delay_ms=M`: N chunks `chunk i\n`, M ms apart, chunked encoding.
//! - `/sleep?ms=M`: the `hello` answer below, after M ms (a slow page).
//! - `/upload` (POST/PUT): counts body bytes as frames arrive, then `received <n> bytes\n`.
//! - `/echo` (POST/PUT): streams the request body back as it arrives (full duplex).
//! - `/bytes?n=N`: N bytes with a content-length, generated 64 KiB at a time.
//! - `/headers`: the request headers as `name: value\n` lines.
//! - `/computer/api/json`, `/queue/api/json`: a load set at run time ([`SampleLoad`]).
//! - anything else: 200 `hello from <name>\n`.
//!
//! Jenkins REST calls, POST only (other methods get 405), each logged in
//! [`SampleMaster::rest_calls`] with its `Authorization` header, and answered
//! `302 Location: /` like Jenkins:
//! - `/quietDown`, `/cancelQuietDown`: turn quiet-down ([`SampleMaster::is_quiet`]) on, off.
//! - `/reload`: answers at once and, like Jenkins reloading from disk, is "starting"
//!   for [`SampleMaster::set_reload_duration`] (default 0: not at all) from then on.
//!
//! "Starting" mode ([`SampleMaster::set_starting`], [`SampleMaster::restart_jvm`]):
//! every path, the health path and the REST calls included, answers 503
//! `Jenkins is getting ready to work`, as Jenkins does while it starts up. A REST
//! call answered 503 is still logged (with that status) but has no effect.
//!
//! Every response carries `X-Master: <name>`, `X-Jenkins: 2.sample` and
//! `X-Jenkins-Session: <session>`, a hex id made when the master starts and renewed
//! by [`SampleMaster::restart_jvm`], as Jenkins renews it on every JVM start.

mod load;
mod routes;
pub mod server;

pub use load::SampleLoad;

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::fmt;

use std::hash::{BuildHasher, Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use tokio::time::sleep;

use routes::{serve_connection, RestAction};
use server::{Handler, Restartable, Scope};

/// The path the proxy probes; Jenkins answers `/login` even before it is fully up.
pub const SAMPLE_HEALTH_PATH: &str = "/login";

/// What Jenkins answers on every path while it starts up (and the health path while unhealthy).
const STARTING_BODY: &str = "Jenkins is getting ready to work";

/// Oldest records are dropped beyond this, so long benches do not grow memory.
const MAX_RECORDED: usize = 10_000;

/// One request as the master saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query exactly as received (`%2F` stays `%2F`).
    pub target: String,
    /// Names are lowercase; values are lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// e.g. `HTTP/1.1`.
    pub version: String,
    /// When it arrived (tests compare the masters' records in time).
    pub at: std::time::Instant,
}

/// One Jenkins REST call (`POST /quietDown`, `/cancelQuietDown`, `/reload`) as received.
#[derive(Clone, Debug)]
pub struct RestCall {
    /// e.g. `/quietDown` (the path only, without a query).
    pub path: String,
    /// The `Authorization` header exactly as received, if any.
    pub authorization: Option<String>,
    /// When the call arrived.
    pub at: std::time::Instant,
    /// What the master answered: 302 when it took effect, 503 while starting.
    pub status: u16,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running (or stopped) sample master. Clones share the same server; it shuts
/// down when stop() is called or the last clone is dropped.
#[derive(Clone)]
pub struct SampleMaster {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// The listener and its connections; stopped and restarted on the same address.
    server: Restartable,
    /// Serves HTTPS.
    tls: bool,
}

/// Each connection: plain, or the TLS handshake first (a failed one is only logged,
/// as a client that refused our certificate).
fn handler(shared: Arc<Shared>, tls: Option<Arc<rustls::ServerConfig>>) -> Handler {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    Arc::new(move |stream, scope: Scope| {
        let shared = Arc::clone(&shared);
        let acceptor = acceptor.clone();
        let _ = stream.set_nodelay(true);
        Box::pin(async move {
            let Some(acceptor) = acceptor else {
                return serve_connection(stream, shared, scope.cancel).await;
            };
            let accepted = tokio::select! {
                biased;
                () = scope.cancel.cancelled() => return,
                accepted = acceptor.accept(stream) => accepted,
            };
            match accepted {
                Ok(tls) => serve_connection(tls, shared, scope.cancel).await,
                Err(error) => tracing::debug!(%error, "sample master TLS handshake failed"),
            }
        })
    })
}

/// State the connection handlers write and the test-facing methods read.
struct Shared {
    name: String,
    master_header: HeaderValue,
    healthy: AtomicBool,
    requests: Mutex<VecDeque<RecordedRequest>>,
    traffic: AtomicUsize,
    upload_bytes: AtomicU64,
    /// The TCP agent port advertised on `/tcpSlaveAgentListener/`.
    agent_port: AtomicU16,
    /// `X-Jenkins-Session`; replaced by restart_jvm().
    session: Mutex<HeaderValue>,
    /// Written by set_starting(), restart_jvm() and `/reload` (and its timer).
    starting: Mutex<Starting>,
    /// Quiet-down, written by the REST calls.
    quiet: AtomicBool,
    /// How long `/reload` keeps the master starting.
    reload_duration: Mutex<Duration>,
    /// REST calls received, oldest first (capped like `requests`).
    rest_calls: Mutex<VecDeque<RestCall>>,
    load: SampleLoad,
}

/// Starting mode; `epoch` counts changes, so a `/reload` timer ends only its own.
#[derive(Default)]
struct Starting {
    on: bool,
    epoch: u64,
}

impl SampleMaster {
    /// Binds `addr` (port 0 allowed, e.g. "127.0.0.2:0") and serves until stop()/drop.
    pub async fn start(name: &str, addr: SocketAddr) -> io::Result<SampleMaster> {
        SampleMaster::start_with(name, addr, None).await
    }

    /// As [`SampleMaster::start`], serving HTTPS with `tls` (its certificate, and
    /// its ALPN if any); [`SampleMaster::url`] is then `https://`.
    pub async fn start_tls(
        name: &str,
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
    ) -> io::Result<SampleMaster> {
        SampleMaster::start_with(name, addr, Some(tls)).await
    }

    async fn start_with(
        name: &str,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<SampleMaster> {
        let master_header = HeaderValue::from_str(name).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "name is not a valid header value",
            )
        })?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            master_header,
            healthy: AtomicBool::new(true),
            requests: Mutex::new(VecDeque::new()),
            traffic: AtomicUsize::new(0),
            upload_bytes: AtomicU64::new(0),
            agent_port: AtomicU16::new(50000),
            session: Mutex::new(new_session(addr.port(), None)),
            starting: Mutex::new(Starting::default()),
            quiet: AtomicBool::new(false),
            reload_duration: Mutex::new(Duration::ZERO),
            rest_calls: Mutex::new(VecDeque::new()),
            load: SampleLoad::default(),
        });
        let handler = handler(Arc::clone(&shared), tls.clone());
        let server = Restartable::start(name, addr, handler)?;
        *lock(&shared.session) = new_session(server.addr().port(), None);
        let inner = Inner {
            shared,
            server,
            tls: tls.is_some(),
        };
        Ok(SampleMaster {
            inner: Arc::new(inner),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The bound address, with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.inner.server.addr()
    }

    /// "http://ip:port", or "https://ip:port" when started with [`SampleMaster::start_tls`].
    pub fn url(&self) -> String {
        let scheme = if self.inner.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.inner.server.addr())
    }

    /// Health endpoint answers 200 (true) or 503 "Jenkins is getting ready to work" (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.inner.shared.healthy.store(healthy, Ordering::SeqCst);
    }

    /// The load its JSON API reports (running builds, queued items, online agents).
    pub fn load(&self) -> &SampleLoad {
        &self.inner.shared.load
    }

    /// The agent port `/tcpSlaveAgentListener/` advertises (default 50000).
    pub fn set_agent_port(&self, port: u16) {
        self.inner.shared.agent_port.store(port, Ordering::SeqCst);
    }

    /// Closes the listener and every open connection at once, like a killed process.
    /// Returns once the listener is closed, so a connect right after is refused.
    pub async fn stop(&self) {
        self.inner.server.stop().await;
    }

    /// Binds the same address again and serves. A no-op if already running.
    pub async fn restart(&self) -> io::Result<()> {
        self.inner.server.restart().await
    }

    pub fn is_running(&self) -> bool {
        self.inner.server.is_running()
    }

    /// Like a restart of the Jenkins JVM: stop(), then a new session id and starting
    /// mode on and quiet-down off (Jenkins keeps it in memory only), then serve again
    /// on the same port. Starting mode stays on until `set_starting(false)`.
    /// If the port cannot be bound again (see restart()), the master stays stopped,
    /// `is_running()` is false and the error is logged.
    pub async fn restart_jvm(&self) {
        self.stop().await;
        let shared = &self.inner.shared;
        shared.quiet.store(false, Ordering::SeqCst);
        {
            let mut session = lock(&shared.session);
            *session = new_session(self.inner.server.addr().port(), Some(&session));
        }
        shared.set_starting(true);
        if let Err(error) = self.restart().await {
            tracing::error!(master = %shared.name, %error, "sample master could not restart");
        }
    }

    /// The current `X-Jenkins-Session` value.
    pub fn session(&self) -> String {
        let session = lock(&self.inner.shared.session);
        String::from_utf8_lossy(session.as_bytes()).into_owned()
    }

    /// While on, every path answers 503 `Jenkins is getting ready to work`.
    /// Also cancels the end of a `/reload` in progress.
    pub fn set_starting(&self, starting: bool) {
        self.inner.shared.set_starting(starting);
    }

    pub fn is_starting(&self) -> bool {
        self.inner.shared.is_starting()
    }

    /// How long `POST /reload` keeps the master starting (default 0: not at all).
    pub fn set_reload_duration(&self, duration: Duration) {
        *lock(&self.inner.shared.reload_duration) = duration;
    }

    /// Whether quiet-down is on (`POST /quietDown` received and not cancelled).
    pub fn is_quiet(&self) -> bool {
        self.inner.shared.quiet.load(Ordering::SeqCst)
    }

    /// The REST calls received so far, oldest first, including those answered 503.
    pub fn rest_calls(&self) -> Vec<RestCall> {
        lock(&self.inner.shared.rest_calls)
            .iter()
            .cloned()
            .collect()
    }

    /// Requests served so far (all paths, including health checks), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.shared.requests).iter().cloned().collect()
    }

    /// Count of client traffic (not capped): requests to paths other than the health
    /// path, the REST paths (`/quietDown`, `/cancelQuietDown`, `/reload`) and the load
    /// API (`/computer/api/json`, `/queue/api/json`), including those answered 503.
    pub fn traffic_count(&self) -> usize {
        // Acquire pairs with the Release in record(): a counted request is also in requests().
        self.inner.shared.traffic.load(Ordering::Acquire)
    }

    /// Bytes of request body received so far on /upload, updated per frame.
    pub fn upload_bytes(&self) -> u64 {
        self.inner.shared.upload_bytes.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for SampleMaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SampleMaster")
            .field("name", &self.name())
            .field("addr", &self.addr())
            .field("running", &self.is_running())
            .finish()
    }
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A session id in hex, from the clock, the port and a per-process random seed;
/// never equal to `previous`.
fn new_session(port: u16, previous: Option<&HeaderValue>) -> HeaderValue {
    let seed = RandomState::new();
    let mut attempt: u32 = 0;
    loop {
        let mut hasher = seed.build_hasher();
        SystemTime::now().hash(&mut hasher);
        port.hash(&mut hasher);
        attempt.hash(&mut hasher);
        // Eight hex digits, like Jenkins' own session ids.
        let id = format!("{:08x}", hasher.finish() as u32);
        if previous.map_or(true, |previous| previous.as_bytes() != id.as_bytes()) {
            return HeaderValue::from_str(&id).expect("hex digits are a valid header value");
        }
        attempt = attempt.wrapping_add(1);
    }
}

/// `key`'s value in a query string as a number; None when absent or malformed.
/// (The benches' own sample servers use it too.)
pub fn query_u64(query: &str, key: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

impl Shared {
    fn record(&self, req: &Request<Incoming>) {
        let uri = req.uri();
        let recorded = RecordedRequest {
            method: req.method().to_string(),
            target: uri
                .path_and_query()
                .map_or_else(|| uri.to_string(), |pq| pq.as_str().to_owned()),
            headers: req
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            version: format!("{:?}", req.version()),
            at: std::time::Instant::now(),
        };
        {
            let mut requests = lock(&self.requests);
            if requests.len() >= MAX_RECORDED {
                requests.pop_front();
            }
            requests.push_back(recorded);
        }
        let path = uri.path();
        let own = path == SAMPLE_HEALTH_PATH || load::is_api(path);
        if !own && RestAction::from_path(path).is_none() {
            // Release: whoever sees the new count also sees the record above.
            self.traffic.fetch_add(1, Ordering::Release);
        }
    }

    fn is_starting(&self) -> bool {
        lock(&self.starting).on
    }

    fn set_starting(&self, on: bool) {
        let mut starting = lock(&self.starting);
        starting.on = on;
        starting.epoch += 1;
    }

    /// `/reload`: starting from now for reload_duration, then not, unless starting
    /// mode was changed meanwhile. Set before the answer, so any request sent after
    /// the answer sees it.
    fn start_reload(self: &Arc<Self>) {
        let duration = *lock(&self.reload_duration);
        if duration.is_zero() {
            return;
        }
        let epoch = {
            let mut starting = lock(&self.starting);
            starting.on = true;
            starting.epoch += 1;
            starting.epoch
        };
        // Weak: a pending reload does not keep a dropped master's state alive.
        let shared: Weak<Shared> = Arc::downgrade(self);
        tokio::spawn(async move {
            sleep(duration).await;
            if let Some(shared) = shared.upgrade() {
                let mut starting = lock(&shared.starting);
                if starting.epoch == epoch {
                    starting.on = false;
                    starting.epoch += 1;
                }
            }
        });
    }

    fn log_rest_call(&self, action: RestAction, authorization: Option<String>, status: StatusCode) {
        let call = RestCall {
            path: action.path().to_owned(),
            authorization,
            at: std::time::Instant::now(),
            status: status.as_u16(),
        };
        let mut calls = lock(&self.rest_calls);
        if calls.len() >= MAX_RECORDED {
            calls.pop_front();
        }
        calls.push_back(call);
    }
}
