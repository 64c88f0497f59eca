//! The mixed client load, each kind checking what it gets back: plain GETs (open loop,
//! on pooled keep-alive connections and each on a new connection), streaming
//! downloads (`/bytes` and `/slow`, byte count or text checked), WebSocket sessions
//! and TCP sessions through the `[[tcp]]` listener (every echo checked). Every
//! request or session becomes a [`Record`]: when, on which master, and the cause if
//! it failed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, HOST};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::master::slow_body;
use crate::plan::{Plan, Rng};

type Pooled = Client<HttpConnector, Empty<Bytes>>;

/// A plain GET without an answer after this failed ("timeout"): far above a hang
/// detection, so only a request that is really stuck counts.
const PLAIN_DEADLINE: Duration = Duration::from_secs(10);
/// One step of a session (handshake, greeting, one echo) and a whole download.
const STEP_DEADLINE: Duration = Duration::from_secs(10);
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(30);
/// Sessions send a message this often, for 10 to 60 messages.
const MESSAGE_EVERY: Duration = Duration::from_millis(100);
const SLOW_CHUNKS: u64 = 20;
const SLOW_DELAY_MS: u64 = 50;
/// The pooled client drops idle connections well before the proxy's 30 s
/// header-read timeout would close them under a request.
const CLIENT_POOL_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    PlainKeepAlive,
    PlainFresh,
    Stream,
    WebSocket,
    Tcp,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::PlainKeepAlive,
        Kind::PlainFresh,
        Kind::Stream,
        Kind::WebSocket,
        Kind::Tcp,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::PlainKeepAlive => "plain GET, keep-alive",
            Kind::PlainFresh => "plain GET, new connection",
            Kind::Stream => "streaming download",
            Kind::WebSocket => "WebSocket session",
            Kind::Tcp => "TCP session ([[tcp]])",
        }
    }

    pub fn is_plain(self) -> bool {
        matches!(self, Kind::PlainKeepAlive | Kind::PlainFresh)
    }
}

/// One request or session; times from the start of the run.
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: Kind,
    pub start: Duration,
    pub end: Duration,
    /// The master that answered (`X-Master`, the TCP greeting), if one did.
    pub master: Option<String>,
    /// Bytes downloaded, or messages echoed.
    pub units: u64,
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub cause: &'static str,
    pub detail: String,
}

fn fail(cause: &'static str, detail: impl Into<String>) -> Failure {
    Failure {
        cause,
        detail: detail.into(),
    }
}

/// Everything the load tasks share.
pub struct Load {
    pub proxy: SocketAddr,
    pub tcp: SocketAddr,
    pub origin: Instant,
    pub records: Mutex<Vec<Record>>,
    pub stop: CancellationToken,
    keep_alive_rate: u32,
    fresh_rate: u32,
    max_download: u64,
}

impl Load {
    pub fn new(plan: &Plan, proxy: SocketAddr, tcp: SocketAddr, origin: Instant) -> Load {
        Load {
            proxy,
            tcp,
            origin,
            records: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
            keep_alive_rate: plan.keep_alive_rate,
            fresh_rate: plan.fresh_rate,
            max_download: plan.max_download,
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn record(&self, kind: Kind, start: Duration, outcome: Outcome) {
        let record = Record {
            kind,
            start,
            end: self.now(),
            master: outcome.master,
            units: outcome.units,
            failure: outcome.failure,
        };
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }

    /// The records so far, leaving an empty list behind.
    pub fn take_records(&self) -> Vec<Record> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[derive(Debug, Default)]
struct Outcome {
    master: Option<String>,
    units: u64,
    failure: Option<Failure>,
}

impl Outcome {
    fn failed(master: Option<String>, units: u64, failure: Failure) -> Outcome {
        Outcome {
            master,
            units,
            failure: Some(failure),
        }
    }
}

/// Runs every worker until `load.stop` is cancelled; sessions under way finish.
pub async fn run(load: Arc<Load>, plan: Plan) {
    let mut workers = JoinSet::new();
    let pooled: Pooled = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(CLIENT_POOL_IDLE)
        // Count every failure: no silent resend of a request on a closed connection.
        .retry_canceled_requests(false)
        .build_http();
    workers.spawn(plain_schedule(Arc::clone(&load), Some(pooled)));
    workers.spawn(plain_schedule(Arc::clone(&load), None));
    for id in 0..plan.streamers {
        let rng = Rng::new(plan.seed ^ (0x100 + id as u64));
        workers.spawn(streamer(Arc::clone(&load), rng));
    }
    for id in 0..plan.websockets {
        let rng = Rng::new(plan.seed ^ (0x200 + id as u64));
        workers.spawn(websocket_worker(Arc::clone(&load), rng));
    }
    for id in 0..plan.tcp_sessions {
        let rng = Rng::new(plan.seed ^ (0x300 + id as u64));
        workers.spawn(tcp_worker(Arc::clone(&load), rng));
    }
    while workers.join_next().await.is_some() {}
}

/// Open loop: a request starts on every tick, answered or not; pooled when a client
/// is given, else each on a new connection.
async fn plain_schedule(load: Arc<Load>, pooled: Option<Pooled>) {
    let rate = if pooled.is_some() {
        load.keep_alive_rate
    } else {
        load.fresh_rate
    };
    if rate == 0 {
        return;
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requests = JoinSet::new();
    loop {
        tokio::select! {
            () = load.stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let load = Arc::clone(&load);
        let pooled = pooled.clone();
        requests.spawn(async move {
            let start = load.now();
            let kind = match pooled {
                Some(_) => Kind::PlainKeepAlive,
                None => Kind::PlainFresh,
            };
            let outcome = match timeout(PLAIN_DEADLINE, plain(&load, pooled.as_ref())).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::failed(None, 0, fail("timeout", "no complete answer in 10 s")),
            };
            load.record(kind, start, outcome);
        });
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
}

async fn plain(load: &Load, pooled: Option<&Pooled>) -> Outcome {
    let response = match pooled {
        Some(client) => {
            let uri = format!("http://{}/", load.proxy);
            match uri.parse() {
                Ok(uri) => client.get(uri).await.map_err(|e| {
                    let cause = if e.is_connect() {
                        "connect error"
                    } else {
                        request_cause(&e)
                    };
                    fail(cause, innermost(&e))
                }),
                Err(e) => Err(fail("bench error", format!("uri {uri}: {e}"))),
            }
        }
        None => fresh_get(load.proxy, "/").await,
    };
    let response = match response {
        Ok(response) => response,
        Err(failure) => return Outcome::failed(None, 0, failure),
    };
    let master = x_master(&response);
    let status = response.status().as_u16();
    let body = response.into_body().collect().await;
    let body = match body {
        Ok(body) => body.to_bytes(),
        Err(e) => return Outcome::failed(master, 0, fail("cut mid-body", innermost(&e))),
    };
    if status != 200 {
        let detail = String::from_utf8_lossy(&body).trim().to_owned();
        return Outcome::failed(master, 0, fail(status_cause(status), detail));
    }
    let expected = format!("hello from {}\n", master.as_deref().unwrap_or("?"));
    if body != expected.as_bytes() {
        let detail = format!("{:?}", String::from_utf8_lossy(&body));
        return Outcome::failed(master, 0, fail("wrong body", detail));
    }
    Outcome {
        master,
        units: 1,
        failure: None,
    }
}

/// `GET path` on a new connection with `Connection: close`.
async fn fresh_get(
    addr: SocketAddr,
    path: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| fail("connect error", e.to_string()))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail("request error", innermost(&e)))?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail("bench error", e.to_string()))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| fail(request_cause(&e), innermost(&e)))
}

/// Downloads one after another, each on a new connection: `/bytes` of a random size
/// (byte count checked) or `/slow` (every chunk checked).
async fn streamer(load: Arc<Load>, mut rng: Rng) {
    while !load.stop.is_cancelled() {
        let start = load.now();
        let slow = rng.below(2) == 0;
        let (path, expected) = if slow {
            let path = format!("/slow?chunks={SLOW_CHUNKS}&delay_ms={SLOW_DELAY_MS}");
            (path, Expected::Text(slow_body(SLOW_CHUNKS)))
        } else {
            let n = 1 + rng.below(load.max_download);
            (format!("/bytes?n={n}"), Expected::Length(n))
        };
        let outcome = match timeout(DOWNLOAD_DEADLINE, download(&load, &path, &expected)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failed(None, 0, fail("timeout", "download took over 30 s")),
        };
        load.record(Kind::Stream, start, outcome);
    }
}

enum Expected {
    Length(u64),
    Text(String),
}

async fn download(load: &Load, path: &str, expected: &Expected) -> Outcome {
    let response = match fresh_get(load.proxy, path).await {
        Ok(response) => response,
        Err(failure) => return Outcome::failed(None, 0, failure),
    };
    let master = x_master(&response);
    let status = response.status().as_u16();
    if status != 200 {
        return Outcome::failed(master, 0, fail(status_cause(status), path.to_owned()));
    }
    let mut body = response.into_body();
    let mut received: u64 = 0;
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                let detail = format!("{path}: after {received} bytes: {}", innermost(&e));
                return Outcome::failed(master, received, fail("cut mid-body", detail));
            }
        };
        if let Some(data) = frame.data_ref() {
            received += data.len() as u64;
            if matches!(expected, Expected::Text(_)) {
                text.extend_from_slice(data);
            }
        }
    }
    let complete = match expected {
        Expected::Length(n) => received == *n,
        Expected::Text(want) => text == want.as_bytes(),
    };
    if !complete {
        let detail = format!("{path}: {received} bytes");
        return Outcome::failed(master, received, fail("short or wrong body", detail));
    }
    Outcome {
        master,
        units: received,
        failure: None,
    }
}

/// WebSocket sessions one after another: 10 to 60 text messages, each echo checked,
/// then the close handshake.
async fn websocket_worker(load: Arc<Load>, mut rng: Rng) {
    while !load.stop.is_cancelled() {
        let start = load.now();
        let messages = 10 + rng.below(51);
        let tag = rng.next_u64();
        let outcome = websocket_session(&load, messages, tag).await;
        load.record(Kind::WebSocket, start, outcome);
    }
}

async fn websocket_session(load: &Load, messages: u64, tag: u64) -> Outcome {
    let url = format!("ws://{}/wsagents/soak", load.proxy);
    let tcp = match timeout(STEP_DEADLINE, TcpStream::connect(load.proxy)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Outcome::failed(None, 0, fail("connect error", e.to_string())),
        Err(_) => return Outcome::failed(None, 0, fail("timeout", "connect")),
    };
    let _ = tcp.set_nodelay(true);
    let handshake = timeout(STEP_DEADLINE, tokio_tungstenite::client_async(&url, tcp)).await;
    let (mut ws, response) = match handshake {
        Ok(Ok(done)) => done,
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let master = x_master(&response);
            return Outcome::failed(master, 0, fail(status_cause(status), "handshake"));
        }
        Ok(Err(e)) => return Outcome::failed(None, 0, fail("handshake failed", e.to_string())),
        Err(_) => return Outcome::failed(None, 0, fail("timeout", "handshake")),
    };
    let master = x_master(&response);
    let mut echoed = 0;
    for i in 0..messages {
        let sent = format!("soak {tag:016x} message {i}");
        let exchange = async {
            ws.send(Message::text(sent.clone()))
                .await
                .map_err(|e| fail("closed mid-session", format!("send: {e}")))?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(back))) if back.as_str() == sent => return Ok(()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(frame))) => {
                        return Err(fail("closed mid-session", format!("close {frame:?}")))
                    }
                    Some(Ok(other)) => {
                        return Err(fail("wrong echo", format!("{other:?} for {sent:?}")))
                    }
                    Some(Err(e)) => return Err(fail("closed mid-session", e.to_string())),
                    None => return Err(fail("closed mid-session", "EOF")),
                }
            }
        };
        match timeout(STEP_DEADLINE, exchange).await {
            Ok(Ok(())) => echoed += 1,
            Ok(Err(failure)) => return Outcome::failed(master, echoed, failure),
            Err(_) => {
                let detail = format!("no echo in 10 s after {echoed}");
                return Outcome::failed(master, echoed, fail("timeout", detail));
            }
        }
        tokio::time::sleep(MESSAGE_EVERY).await;
    }
    let close = async {
        ws.close(None).await?;
        // The server's Close, then EOF: the stream ends.
        while ws.next().await.transpose()?.is_some() {}
        Ok::<_, tungstenite::Error>(())
    };
    match timeout(STEP_DEADLINE, close).await {
        Ok(Ok(())) => Outcome {
            master,
            units: echoed,
            failure: None,
        },
        Ok(Err(e)) => Outcome::failed(master, echoed, fail("closed mid-session", e.to_string())),
        Err(_) => Outcome::failed(master, echoed, fail("timeout", "close handshake")),
    }
}

/// TCP sessions one after another through the `[[tcp]]` listener: the master's
/// greeting, then 10 to 60 lines, each echo checked, then a clean close.
async fn tcp_worker(load: Arc<Load>, mut rng: Rng) {
    while !load.stop.is_cancelled() {
        let start = load.now();
        let messages = 10 + rng.below(51);
        let tag = rng.next_u64();
        let outcome = tcp_session(&load, messages, tag).await;
        load.record(Kind::Tcp, start, outcome);
    }
}

async fn tcp_session(load: &Load, messages: u64, tag: u64) -> Outcome {
    let mut stream = match timeout(STEP_DEADLINE, TcpStream::connect(load.tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Outcome::failed(None, 0, fail("connect error", e.to_string())),
        Err(_) => return Outcome::failed(None, 0, fail("timeout", "connect")),
    };
    let _ = stream.set_nodelay(true);
    let master = match timeout(STEP_DEADLINE, read_line(&mut stream)).await {
        Ok(Ok(name)) => Some(name),
        Ok(Err(detail)) => return Outcome::failed(None, 0, fail("closed before greeting", detail)),
        Err(_) => return Outcome::failed(None, 0, fail("timeout", "no greeting in 10 s")),
    };
    let mut echoed = 0;
    for i in 0..messages {
        let sent = format!("soak {tag:016x} line {i}\n");
        let exchange = async {
            stream.write_all(sent.as_bytes()).await?;
            let mut back = vec![0; sent.len()];
            stream.read_exact(&mut back).await?;
            Ok::<_, std::io::Error>(back)
        };
        match timeout(STEP_DEADLINE, exchange).await {
            Ok(Ok(back)) if back == sent.as_bytes() => echoed += 1,
            Ok(Ok(back)) => {
                let detail = format!("{:?} for {sent:?}", String::from_utf8_lossy(&back));
                return Outcome::failed(master, echoed, fail("wrong echo", detail));
            }
            Ok(Err(e)) => {
                return Outcome::failed(master, echoed, fail("cut mid-session", e.to_string()))
            }
            Err(_) => return Outcome::failed(master, echoed, fail("timeout", "no echo in 10 s")),
        }
        tokio::time::sleep(MESSAGE_EVERY).await;
    }
    // A clean end: our FIN, the echo's FIN back.
    let close = async {
        stream.shutdown().await?;
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await?;
        Ok::<_, std::io::Error>(rest)
    };
    match timeout(STEP_DEADLINE, close).await {
        Ok(Ok(rest)) if rest.is_empty() => Outcome {
            master,
            units: echoed,
            failure: None,
        },
        Ok(Ok(rest)) => {
            let detail = format!("{} unexpected bytes at close", rest.len());
            Outcome::failed(master, echoed, fail("wrong echo", detail))
        }
        Ok(Err(e)) => Outcome::failed(master, echoed, fail("cut mid-session", e.to_string())),
        Err(_) => Outcome::failed(master, echoed, fail("timeout", "no EOF after ours")),
    }
}

/// The greeting line, byte by byte so that nothing after it is consumed.
async fn read_line(stream: &mut TcpStream) -> Result<String, String> {
    let mut line = Vec::new();
    loop {
        match stream.read_u8().await {
            Ok(b'\n') => return Ok(String::from_utf8_lossy(&line).into_owned()),
            Ok(byte) if line.len() < 256 => line.push(byte),
            Ok(_) => return Err("greeting longer than 256 bytes".to_owned()),
            Err(e) => return Err(format!("after {} bytes: {e}", line.len())),
        }
    }
}

fn x_master<B>(response: &hyper::Response<B>) -> Option<String> {
    response
        .headers()
        .get("x-master")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn status_cause(status: u16) -> &'static str {
    match status {
        502 => "HTTP 502",
        503 => "HTTP 503",
        504 => "HTTP 504",
        _ => "HTTP other status",
    }
}

/// hyper's own words for a request that got no response head.
fn request_cause(error: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(hyper_error) = error.downcast_ref::<hyper::Error>() {
            if hyper_error.is_incomplete_message() {
                return "closed before response";
            }
            if hyper_error.is_canceled() {
                return "canceled";
            }
        }
        cause = error.source();
    }
    "request error"
}

/// The innermost cause, short: "connection reset by peer".
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    text.split(" (os error").next().unwrap_or(&text).to_owned()
}
