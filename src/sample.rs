//! A sample Jenkins-like master: a small HTTP/1.1 server whose behaviour tests can
//! switch at run time. Used by the `demo` command, integration tests and benches.
//!
//! Endpoints (any method unless noted):
//! - [`SAMPLE_HEALTH_PATH`] (`/login`): 200 `ok`, or 503 while unhealthy.
//! - `/slow?chunks=N&delay_ms=M`: N chunks `chunk i\n`, M ms apart, chunked encoding.
//! - `/upload` (POST/PUT): counts body bytes as frames arrive, then `received <n> bytes\n`.
//! - `/echo` (POST/PUT): streams the request body back as it arrives (full duplex).
//! - `/bytes?n=N`: N bytes with a content-length, generated 64 KiB at a time.
//! - `/headers`: the request headers as `name: value\n` lines.
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

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub mod server;

use server::{Handler, Restartable, Scope};
use tokio::time::{sleep, Sleep};
use tokio_util::sync::CancellationToken;

/// The path the proxy probes; Jenkins answers `/login` even before it is fully up.
pub const SAMPLE_HEALTH_PATH: &str = "/login";

/// What Jenkins answers on every path while it starts up (and the health path while unhealthy).
const STARTING_BODY: &str = "Jenkins is getting ready to work";

/// Oldest records are dropped beyond this, so long benches do not grow memory.
const MAX_RECORDED: usize = 10_000;
const DEFAULT_SLOW_CHUNKS: u64 = 5;
const DEFAULT_SLOW_DELAY_MS: u64 = 100;
const DEFAULT_BYTES: u64 = 1024;
const BYTES_CHUNK: usize = 64 * 1024;

/// `/bytes` bodies are slices of this, so even huge responses allocate nothing.
static FILLER: [u8; BYTES_CHUNK] = [b'x'; BYTES_CHUNK];

type ResBody = BoxBody<Bytes, hyper::Error>;
const TEXT: &str = "text/plain; charset=utf-8";
const BINARY: &str = "application/octet-stream";

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

/// The REST endpoints the sample master implements, by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RestAction {
    QuietDown,
    CancelQuietDown,
    Reload,
}

impl RestAction {
    fn from_path(path: &str) -> Option<RestAction> {
        match path {
            "/quietDown" => Some(RestAction::QuietDown),
            "/cancelQuietDown" => Some(RestAction::CancelQuietDown),
            "/reload" => Some(RestAction::Reload),
            _ => None,
        }
    }

    fn path(self) -> &'static str {
        match self {
            RestAction::QuietDown => "/quietDown",
            RestAction::CancelQuietDown => "/cancelQuietDown",
            RestAction::Reload => "/reload",
        }
    }
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
        });
        let served = Arc::clone(&shared);
        let handler: Handler = Arc::new(move |stream, scope: Scope| {
            Box::pin(serve_connection(stream, Arc::clone(&served), scope.cancel))
        });
        let server = Restartable::start(name, addr, handler)?;
        *lock(&shared.session) = new_session(server.addr().port(), None);
        let inner = Inner { shared, server };
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

    /// "http://ip:port"
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.server.addr())
    }

    /// Health endpoint answers 200 (true) or 503 "Jenkins is getting ready to work" (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.inner.shared.healthy.store(healthy, Ordering::SeqCst);
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
    /// path and the REST paths (`/quietDown`, `/cancelQuietDown`, `/reload`), including
    /// those answered 503 while starting.
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

/// Serves one connection; on cancel the connection future and its socket are dropped.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle(shared.clone(), req));
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {}
        result = conn => {
            if let Err(error) = result {
                tracing::debug!(%error, "sample master connection ended with an error");
            }
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    shared.record(&req);
    let rest = match *req.method() {
        Method::POST => RestAction::from_path(req.uri().path()),
        _ => None,
    };
    let authorization = req.headers().get(AUTHORIZATION).map(lossy);
    let mut res = if shared.is_starting() {
        text(StatusCode::SERVICE_UNAVAILABLE, STARTING_BODY)
    } else if let Some(action) = rest {
        rest_call(&shared, action)
    } else {
        route(&shared, req).await
    };
    if let Some(action) = rest {
        shared.log_rest_call(action, authorization, res.status());
    }
    let session = lock(&shared.session).clone();
    let headers = res.headers_mut();
    headers.insert("x-master", shared.master_header.clone());
    headers.insert("x-jenkins", HeaderValue::from_static("2.sample"));
    headers.insert("x-jenkins-session", session);
    Ok(res)
}

/// Applies a REST call (the master is not starting) and answers like Jenkins.
fn rest_call(shared: &Arc<Shared>, action: RestAction) -> Response<ResBody> {
    match action {
        RestAction::QuietDown => shared.quiet.store(true, Ordering::SeqCst),
        RestAction::CancelQuietDown => shared.quiet.store(false, Ordering::SeqCst),
        RestAction::Reload => shared.start_reload(),
    }
    let mut res = text(StatusCode::FOUND, "");
    res.headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/"));
    res
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Response<ResBody> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let accepts_body = matches!(*req.method(), Method::POST | Method::PUT);
    match req.uri().path() {
        SAMPLE_HEALTH_PATH => health(shared),
        "/slow" => slow(&query),
        "/upload" if accepts_body => upload(shared, req.into_body()).await,
        // The request body becomes the response body: each frame goes back as it arrives.
        "/echo" if accepts_body => respond(StatusCode::OK, BINARY, req.into_body().boxed()),
        "/upload" | "/echo" => method_not_allowed(),
        "/bytes" => bytes(&query),
        "/headers" => headers(&req),
        "/tcpSlaveAgentListener/" => agent_listener(shared),
        // Enough of Jenkins' JSON API for the proxy to see the quiet-down state.
        "/api/json" => text(
            StatusCode::OK,
            format!(
                "{{\"quietingDown\":{}}}",
                shared.quiet.load(Ordering::SeqCst)
            ),
        ),
        path if RestAction::from_path(path).is_some() => post_required(),
        _ => text(StatusCode::OK, format!("hello from {}\n", shared.name)),
    }
}

/// What Jenkins answers inbound agents looking for its TCP port.
fn agent_listener(shared: &Shared) -> Response<ResBody> {
    let mut res = text(StatusCode::OK, "Jenkins\n");
    let port = HeaderValue::from(shared.agent_port.load(Ordering::SeqCst));
    let headers = res.headers_mut();
    headers.insert("x-jenkins-jnlp-port", port.clone());
    headers.insert("x-hudson-jnlp-port", port.clone());
    headers.insert("x-jenkins-cli-port", port);
    headers.insert(
        "x-jenkins-agent-protocols",
        HeaderValue::from_static("JNLP4-connect, Ping"),
    );
    if let Ok(host) = HeaderValue::from_str(&format!("{}.internal", shared.name)) {
        headers.insert("x-jenkins-jnlp-host", host);
    }
    res
}

fn health(shared: &Shared) -> Response<ResBody> {
    if shared.healthy.load(Ordering::SeqCst) {
        text(StatusCode::OK, "ok")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, STARTING_BODY)
    }
}

fn slow(query: &str) -> Response<ResBody> {
    let delay_ms = query_u64(query, "delay_ms").unwrap_or(DEFAULT_SLOW_DELAY_MS);
    let body = SlowBody {
        next: 0,
        chunks: query_u64(query, "chunks").unwrap_or(DEFAULT_SLOW_CHUNKS),
        delay: Duration::from_millis(delay_ms),
        sleep: None,
    };
    respond(StatusCode::OK, TEXT, never_fails(body))
}

/// Reads frame by frame so upload_bytes() moves while the body is still arriving.
async fn upload(shared: &Shared, mut body: Incoming) -> Response<ResBody> {
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            let msg = format!("upload interrupted after {received} bytes\n");
            return text(StatusCode::BAD_REQUEST, msg);
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            received += len;
            shared.upload_bytes.fetch_add(len, Ordering::SeqCst);
        }
    }
    text(StatusCode::OK, format!("received {received} bytes\n"))
}

fn bytes(query: &str) -> Response<ResBody> {
    let n = query_u64(query, "n").unwrap_or(DEFAULT_BYTES);
    let body = never_fails(BytesBody { remaining: n });
    let mut res = respond(StatusCode::OK, BINARY, body);
    res.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(n));
    res
}

fn headers(req: &Request<Incoming>) -> Response<ResBody> {
    let lines: String = header_pairs(req)
        .map(|(name, value)| format!("{name}: {value}\n"))
        .collect();
    text(StatusCode::OK, lines)
}

fn method_not_allowed() -> Response<ResBody> {
    let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "use POST or PUT\n");
    let allow = HeaderValue::from_static("POST, PUT");
    res.headers_mut().insert(ALLOW, allow);
    res
}

/// Jenkins answers 405 to a GET on a `@RequirePOST` action.
fn post_required() -> Response<ResBody> {
    let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
    res.headers_mut()
        .insert(ALLOW, HeaderValue::from_static("POST"));
    res
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResBody> {
    respond(status, TEXT, never_fails(Full::new(body.into())))
}

fn respond(status: StatusCode, content_type: &'static str, body: ResBody) -> Response<ResBody> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let content_type = HeaderValue::from_static(content_type);
    res.headers_mut().insert(CONTENT_TYPE, content_type);
    res
}

fn never_fails<B>(body: B) -> ResBody
where
    B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
{
    body.map_err(|never| match never {}).boxed()
}

/// Header names (already lowercase in hyper) with values decoded lossily.
fn header_pairs<B>(req: &Request<B>) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
    let headers = req.headers().iter();
    headers.map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes())))
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
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
        if path != SAMPLE_HEALTH_PATH && RestAction::from_path(path).is_none() {
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

/// `/slow` body: a chunk, then a sleep before the next. A body rather than a
/// producer task, so nothing outlives the connection when stop() drops it.
struct SlowBody {
    next: u64,
    chunks: u64,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Body for SlowBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.next >= self.chunks {
            return Poll::Ready(None);
        }
        if let Some(sleep) = self.sleep.as_mut() {
            ready!(sleep.as_mut().poll(cx));
        }
        let chunk = Bytes::from(format!("chunk {}\n", self.next));
        self.next += 1;
        // tokio's sleep() saturates huge delays instead of overflowing.
        self.sleep = Some(Box::pin(sleep(self.delay)));
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.chunks
    }
}

/// `/bytes` body: `remaining` filler bytes, at most 64 KiB per frame.
struct BytesBody {
    remaining: u64,
}

impl Body for BytesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(BYTES_CHUNK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
