//! A Jenkins-like master that accepts WebSockets (as `/wsagents/` and `/cli/ws` do),
//! and a small WebSocket client, for tests that check the proxy tunnels upgrades.
//!
//! Server behaviour (every response carries `X-Master: <name>`):
//! - any request with `Connection: upgrade` and `Upgrade: websocket`: the RFC 6455
//!   handshake (101), then an echo session: Text `m` is answered with Text `<name>: m`,
//!   Binary is echoed as is, Ping gets a Pong, Close is answered with Close.
//! - `GET /login`: 200 `ok` (the proxy's health check).
//! - anything else: 200 `hello from <name>\n`.
#![allow(dead_code)] // each test binary uses a different part

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jenkins_ha_proxy::sample::server::{Handler, Restartable, Scope};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Every client-side wait (connect, handshake, receive, close) gives up after this.
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);
const HEALTH_PATH: &str = "/login";
const WS_VERSION: &str = "13";

type ResBody = Full<Bytes>;

/// A running (or stopped) WebSocket-capable master. Clones share the same server;
/// it shuts down when stop() is called or the last clone is dropped.
#[derive(Clone)]
pub struct WsMaster {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// The listener, its connections and sessions; stopped and restarted in place.
    server: Restartable,
}

/// Written by the connection handlers, read by the test-facing methods.
struct Shared {
    name: String,
    master_header: HeaderValue,
    open: AtomicUsize,
    total: AtomicUsize,
    last_upgrade_headers: Mutex<Option<Vec<(String, String)>>>,
}

/// What every connection handler needs: the shared state and the run it belongs to.
#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl WsMaster {
    /// Binds `addr` (port 0 allowed, e.g. "127.0.0.2:0") and serves until stop()/drop.
    pub async fn start(name: &str, addr: SocketAddr) -> io::Result<WsMaster> {
        WsMaster::start_with(name, addr, None).await
    }

    /// As start(), serving HTTPS (and WebSockets over it) with `tls`.
    pub async fn start_tls(
        name: &str,
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
    ) -> io::Result<WsMaster> {
        WsMaster::start_with(name, addr, Some(tls)).await
    }

    async fn start_with(
        name: &str,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<WsMaster> {
        let master_header = HeaderValue::from_str(name).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "name is not a valid header value",
            )
        })?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            master_header,
            open: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            last_upgrade_headers: Mutex::new(None),
        });
        let served = Arc::clone(&shared);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let handler: Handler = Arc::new(move |stream: TcpStream, scope: Scope| {
            let ctx = Ctx {
                shared: Arc::clone(&served),
                cancel: scope.cancel,
                tracker: scope.tracker,
            };
            let acceptor = acceptor.clone();
            let _ = stream.set_nodelay(true);
            Box::pin(async move {
                match acceptor {
                    None => serve_connection(stream, ctx).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => serve_connection(tls, ctx).await,
                        Err(error) => tracing::debug!(%error, "ws master TLS handshake failed"),
                    },
                }
            })
        });
        let server = Restartable::start(name, addr, handler)?;
        let inner = Inner { shared, server };
        Ok(WsMaster {
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

    /// WebSocket sessions open now: counted from the moment the 101 is decided
    /// until the session ends (close handshake, EOF, error or stop()).
    pub fn open_websockets(&self) -> usize {
        self.inner.shared.open.load(Ordering::SeqCst)
    }

    /// WebSocket handshakes accepted since start (not reset by stop/restart).
    pub fn total_websockets(&self) -> usize {
        self.inner.shared.total.load(Ordering::SeqCst)
    }

    /// Headers of the last upgrade request as received (lowercase names, values
    /// decoded lossily, repeated headers as separate entries, in arrival order).
    pub fn last_upgrade_headers(&self) -> Option<Vec<(String, String)>> {
        lock(&self.inner.shared.last_upgrade_headers).clone()
    }

    /// Closes the listener and every connection, WebSockets included, at once and
    /// without a close frame, like a killed process. Returns once the listener is
    /// closed, so a connect right after is refused.
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
}

impl std::fmt::Debug for WsMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsMaster")
            .field("name", &self.name())
            .field("addr", &self.addr())
            .field("running", &self.is_running())
            .field("open_websockets", &self.open_websockets())
            .finish()
    }
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves one HTTP/1.1 connection until it ends, is upgraded, or the run is cancelled.
async fn serve_connection<IO>(stream: IO, ctx: Ctx)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let cancel = ctx.cancel.clone();
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, req)) }
    });
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {}
        result = conn => {
            if let Err(error) = result {
                tracing::debug!(%error, "ws master connection ended with an error");
            }
        }
    }
}

fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<ResBody> {
    let shared = &ctx.shared;
    let mut res = if is_websocket_upgrade(req.headers()) {
        upgrade(ctx, req)
    } else if req.uri().path() == HEALTH_PATH {
        text(StatusCode::OK, "ok")
    } else {
        text(StatusCode::OK, format!("hello from {}\n", shared.name))
    };
    res.headers_mut()
        .insert("x-master", shared.master_header.clone());
    res
}

/// `Connection` lists the `upgrade` token and `Upgrade` lists `websocket` (any case).
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    header_has_token(headers, CONNECTION.as_str(), "upgrade")
        && header_has_token(headers, UPGRADE.as_str(), "websocket")
}

fn header_has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The server half of the RFC 6455 handshake; the session runs in a tracked task
/// once hyper has written the 101 and handed over the connection.
fn upgrade(ctx: &Ctx, mut req: Request<Incoming>) -> Response<ResBody> {
    let shared = &ctx.shared;
    *lock(&shared.last_upgrade_headers) = Some(header_pairs(req.headers()));
    let headers = req.headers();
    let Some(key) = headers.get("sec-websocket-key") else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let version = headers.get("sec-websocket-version");
    if version.map(HeaderValue::as_bytes) != Some(WS_VERSION.as_bytes()) {
        let mut res = text(StatusCode::UPGRADE_REQUIRED, "use WebSocket version 13\n");
        let supported = HeaderValue::from_static(WS_VERSION);
        res.headers_mut().insert("sec-websocket-version", supported);
        return res;
    }
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "bad accept key\n");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Counted before the 101 goes out, so a client that has its 101 sees it counted.
    let session = SessionGuard::new(shared.clone());
    let cancel = ctx.cancel.clone();
    ctx.tracker.spawn(async move {
        tokio::select! {
            biased;
            // Dropping the socket without a close frame, like a killed process.
            _ = cancel.cancelled() => {}
            _ = echo_session(on_upgrade, &session) => {}
        }
    });
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert("sec-websocket-accept", accept);
    res
}

/// Echoes until the peer closes, the connection fails or ends.
async fn echo_session(on_upgrade: OnUpgrade, session: &SessionGuard) {
    let name = &session.shared.name;
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(master = %name, %error, "upgrade failed");
            return;
        }
    };
    let io = TokioIo::new(upgraded);
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    // tungstenite answers Ping and Close by itself while the stream is polled;
    // after the close handshake the stream ends (None).
    while let Some(message) = ws.next().await {
        let reply = match message {
            Ok(Message::Text(text)) => Message::text(format!("{name}: {}", text.as_str())),
            Ok(Message::Binary(data)) => Message::Binary(data),
            Ok(_) => continue,
            Err(error) => {
                tracing::debug!(master = %name, %error, "websocket read failed");
                return;
            }
        };
        if let Err(error) = ws.send(reply).await {
            tracing::debug!(master = %name, %error, "websocket write failed");
            return;
        }
    }
}

/// Keeps `open` counting a session for as long as it lives, whichever way it ends.
struct SessionGuard {
    shared: Arc<Shared>,
}

impl SessionGuard {
    fn new(shared: Arc<Shared>) -> SessionGuard {
        shared.total.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        SessionGuard { shared }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), value)
        })
        .collect()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResBody> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    let content_type = HeaderValue::from_static("text/plain; charset=utf-8");
    res.headers_mut().insert(CONTENT_TYPE, content_type);
    res
}

/// A WebSocket client session, e.g. through the proxy. Every wait has a deadline.
pub struct WsClient {
    /// `X-Master` of the 101 response: which master accepted the session.
    pub master: Option<String>,
    /// All headers of the 101 response (lowercase names, lossy values).
    pub response_headers: Vec<(String, String)>,
    stream: WebSocketStream<Box<dyn ClientIo>>,
}

/// Any byte stream a WebSocket client can run over: TCP, or TLS over TCP.
pub trait ClientIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ClientIo for T {}

/// Opens `ws://<proxy><path>` (path starts with '/'), with `Origin` if given.
pub async fn ws_connect(
    proxy: SocketAddr,
    path: &str,
    origin: Option<&str>,
) -> Result<WsClient, String> {
    let tcp = within("connect", TcpStream::connect(proxy))
        .await?
        .map_err(|e| format!("connect {proxy}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    ws_handshake(Box::new(tcp), &format!("ws://{proxy}{path}"), origin).await
}

/// The WebSocket handshake for `url` over `stream` (already connected, and for
/// `wss://` already past its TLS handshake).
pub async fn ws_handshake(
    stream: Box<dyn ClientIo>,
    url: &str,
    origin: Option<&str>,
) -> Result<WsClient, String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("request for {url}: {e}"))?;
    if let Some(origin) = origin {
        let value = HeaderValue::from_str(origin).map_err(|e| format!("origin {origin}: {e}"))?;
        request.headers_mut().insert("origin", value);
    }
    let (stream, response) = within(
        "handshake",
        tokio_tungstenite::client_async(request, stream),
    )
    .await?
    .map_err(|e| format!("websocket handshake with {url}: {e}"))?;
    let master = response
        .headers()
        .get("x-master")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Ok(WsClient {
        master,
        response_headers: header_pairs(response.headers()),
        stream,
    })
}

impl WsClient {
    pub async fn send_text(&mut self, s: &str) -> Result<(), String> {
        self.send(Message::text(s)).await
    }

    pub async fn send_binary(&mut self, data: &[u8]) -> Result<(), String> {
        self.send(Message::binary(data.to_vec())).await
    }

    /// The next Text message, skipping Ping/Pong; Err on close, EOF, error, a
    /// Binary message, or no message within the deadline.
    pub async fn recv_text(&mut self) -> Result<String, String> {
        match self.recv().await? {
            Message::Text(text) => Ok(text.as_str().to_owned()),
            other => Err(format!("expected a text message, got {other:?}")),
        }
    }

    /// The next Binary message, skipping Ping/Pong; Err as for recv_text().
    pub async fn recv_binary(&mut self) -> Result<Vec<u8>, String> {
        match self.recv().await? {
            Message::Binary(data) => Ok(data.to_vec()),
            other => Err(format!("expected a binary message, got {other:?}")),
        }
    }

    /// Sends a Ping and waits for the Pong with the same payload (at most 125 bytes);
    /// data messages arriving meanwhile are an error.
    pub async fn ping(&mut self, payload: &[u8]) -> Result<(), String> {
        self.send(Message::Ping(Bytes::copy_from_slice(payload)))
            .await?;
        let deadline = Instant::now() + CLIENT_DEADLINE;
        loop {
            match self.next_before(deadline).await? {
                Message::Pong(data) if data.as_ref() == payload => return Ok(()),
                Message::Pong(_) | Message::Ping(_) => {}
                other => return Err(format!("expected a pong, got {other:?}")),
            }
        }
    }

    /// True if the server closes (Close frame), or the connection fails or reaches
    /// EOF within `d`; messages arriving meanwhile are read and discarded.
    pub async fn is_closed_within(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Starts the close handshake and waits (with the deadline) for the server's
    /// Close or EOF; Err if the connection was already gone or the wait timed out.
    pub async fn close(&mut self) -> Result<(), String> {
        within("close", self.stream.close(None))
            .await?
            .map_err(|e| format!("close: {e}"))?;
        if self.is_closed_within(CLIENT_DEADLINE).await {
            Ok(())
        } else {
            Err(format!(
                "no close from the server within {CLIENT_DEADLINE:?}"
            ))
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), String> {
        within("send", self.stream.send(message))
            .await?
            .map_err(|e| format!("send: {e}"))
    }

    /// The next Text or Binary message within the deadline.
    async fn recv(&mut self) -> Result<Message, String> {
        let deadline = Instant::now() + CLIENT_DEADLINE;
        loop {
            match self.next_before(deadline).await? {
                Message::Ping(_) | Message::Pong(_) => {}
                message => return Ok(message),
            }
        }
    }

    /// The next message of any kind but Close; Close, EOF and errors are Err.
    async fn next_before(&mut self, deadline: Instant) -> Result<Message, String> {
        match tokio::time::timeout_at(deadline, self.stream.next()).await {
            Err(_) => Err(format!("no message within {CLIENT_DEADLINE:?}")),
            Ok(None) => Err("connection closed".to_owned()),
            Ok(Some(Err(e))) => Err(format!("receive: {e}")),
            Ok(Some(Ok(Message::Close(frame)))) => Err(format!("closed by server: {frame:?}")),
            Ok(Some(Ok(message))) => Ok(message),
        }
    }
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

/// `future`, or Err naming `what` after the client deadline.
async fn within<F: std::future::Future>(what: &str, future: F) -> Result<F::Output, String> {
    timeout(CLIENT_DEADLINE, future)
        .await
        .map_err(|_| format!("{what} timed out after {CLIENT_DEADLINE:?}"))
}
