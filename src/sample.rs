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
//! Every response carries `X-Master: <name>` and `X-Jenkins: 2.sample`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{sleep, Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The path the proxy probes; Jenkins answers `/login` even before it is fully up.
pub const SAMPLE_HEALTH_PATH: &str = "/login";

/// Oldest records are dropped beyond this, so long benches do not grow memory.
const MAX_RECORDED: usize = 10_000;
const DEFAULT_SLOW_CHUNKS: u64 = 5;
const DEFAULT_SLOW_DELAY_MS: u64 = 100;
const DEFAULT_BYTES: u64 = 1024;
const BYTES_CHUNK: usize = 64 * 1024;
/// How long restart() keeps retrying a bind that fails with "address in use".
const REBIND_PATIENCE: Duration = Duration::from_secs(5);
const REBIND_RETRY: Duration = Duration::from_millis(20);
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

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
    /// The bound address (real port), reused by restart().
    addr: SocketAddr,
    /// The current run; written by start/stop/restart, None while stopped.
    run: Mutex<Option<Run>>,
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
}

/// One accept loop and its connections; cancelling the token ends them all.
struct Run {
    cancel: CancellationToken,
    tracker: TaskTracker,
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
        let listener = bind(addr)?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            master_header,
            healthy: AtomicBool::new(true),
            requests: Mutex::new(VecDeque::new()),
            traffic: AtomicUsize::new(0),
            upload_bytes: AtomicU64::new(0),
            agent_port: AtomicU16::new(50000),
        });
        let inner = Inner {
            addr: listener.local_addr()?,
            run: Mutex::new(Some(Run::spawn(listener, shared.clone()))),
            shared,
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
        self.inner.addr
    }

    /// "http://ip:port"
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
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
        let run = lock(&self.inner.run).take();
        if let Some(run) = run {
            run.cancel.cancel();
            run.tracker.close();
            run.tracker.wait().await;
        }
    }

    /// Binds the same address again and serves. A no-op if already running.
    pub async fn restart(&self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let listener = bind_with_retry(self.inner.addr).await?;
        let mut run = lock(&self.inner.run);
        // A concurrent restart may have won; then our listener is simply dropped.
        if run.is_none() {
            *run = Some(Run::spawn(listener, self.inner.shared.clone()));
        }
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        lock(&self.inner.run).is_some()
    }

    /// Requests served so far (all paths, including health checks), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.shared.requests).iter().cloned().collect()
    }

    /// Count of requests to paths other than the health path (not capped).
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

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: end the accept loop and all connections.
        if let Some(run) = lock(&self.run).take() {
            run.cancel.cancel();
        }
    }
}

impl Run {
    fn spawn(listener: TcpListener, shared: Arc<Shared>) -> Run {
        let run = Run {
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        let accept = accept_loop(listener, shared, run.cancel.clone(), run.tracker.clone());
        run.tracker.spawn(accept);
        run
    }
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// SO_REUSEADDR lets a restart bind while old connections sit in TIME_WAIT.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn bind_with_retry(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + REBIND_PATIENCE;
    loop {
        match bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                sleep(REBIND_RETRY).await;
            }
            result => return result,
        }
    }
}

/// Accepts until cancelled; returning drops (closes) the listener.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tracker.spawn(serve_connection(stream, shared.clone(), cancel.clone()));
            }
            Err(error) => {
                // e.g. out of file descriptors: back off instead of spinning.
                tracing::debug!(master = %shared.name, %error, "accept failed");
                sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
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
    let mut res = route(&shared, req).await;
    let headers = res.headers_mut();
    headers.insert("x-master", shared.master_header.clone());
    headers.insert("x-jenkins", HeaderValue::from_static("2.sample"));
    Ok(res)
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
        let body = "Jenkins is getting ready to work";
        text(StatusCode::SERVICE_UNAVAILABLE, body)
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

/// `key`'s value in a query string as a number; None when absent or malformed.
fn query_u64(query: &str, key: &str) -> Option<u64> {
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
        };
        {
            let mut requests = lock(&self.requests);
            if requests.len() >= MAX_RECORDED {
                requests.pop_front();
            }
            requests.push_back(recorded);
        }
        if uri.path() != SAMPLE_HEALTH_PATH {
            // Release: whoever sees the new count also sees the record above.
            self.traffic.fetch_add(1, Ordering::Release);
        }
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
