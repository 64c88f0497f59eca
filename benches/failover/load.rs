//! The client load: open loop (requests start on schedule whether or not earlier ones
//! have answered, as browsers and agents do), part on pooled keep-alive connections,
//! part each on a new connection. Every request is recorded with its timing, status
//! and the master that answered (`X-Master`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, HOST};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Pooled = Client<HttpConnector, Empty<Bytes>>;

#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub addr: SocketAddr,
    /// A second proxy (cluster mode's other instance): requests alternate between the
    /// two, as clients behind one address spread over two proxies.
    pub second: Option<SocketAddr>,
    /// Requests/s sent over pooled keep-alive connections.
    pub keep_alive_rate: u32,
    /// Requests/s each sent on a new connection (`Connection: close`).
    pub fresh_rate: u32,
    pub duration: Duration,
    /// A request without an answer after this counts as failed ("timeout").
    pub request_timeout: Duration,
}

/// Which master answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    A,
    B,
    /// No X-Master header: the proxy answered itself (e.g. its own 502/503).
    Proxy,
}

/// One request, times relative to the start of the load.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub sent: Duration,
    pub done: Duration,
    pub fresh: bool,
    pub result: Result<(u16, Answered), String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self.result, Ok((200, _)))
    }

    pub fn from(&self) -> Option<Answered> {
        self.result.as_ref().ok().map(|(_, from)| *from)
    }

    pub fn latency(&self) -> Duration {
        self.done.saturating_sub(self.sent)
    }
}

/// Runs the load from `start` until `start + duration`, then waits for the answers
/// (each bounded by `request_timeout`).
pub async fn run(load: Load, start: Instant) -> Vec<Outcome> {
    let pooled = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        // Count every failure: no silent resend of a request on a closed connection.
        .retry_canceled_requests(false)
        .build_http();
    let keep_alive = tokio::spawn(schedule(load, start, Some(pooled)));
    let fresh = tokio::spawn(schedule(load, start, None));
    let mut outcomes = keep_alive.await.unwrap_or_default();
    outcomes.extend(fresh.await.unwrap_or_default());
    outcomes.sort_by_key(|o| o.sent);
    outcomes
}

/// Sends at a fixed rate until the end of the load: pooled when a client is given,
/// else on new connections.
async fn schedule(load: Load, start: Instant, pooled: Option<Pooled>) -> Vec<Outcome> {
    let rate = if pooled.is_some() {
        load.keep_alive_rate
    } else {
        load.fresh_rate
    };
    let mut requests = JoinSet::new();
    if rate > 0 {
        let mut ticks = tokio::time::interval_at(start, Duration::from_secs(1) / rate);
        let end = start + load.duration;
        let mut turn = 0usize;
        while ticks.tick().await < end {
            let addr = match load.second {
                Some(second) if turn % 2 == 1 => second,
                _ => load.addr,
            };
            turn += 1;
            requests.spawn(one(load, addr, start, pooled.clone()));
        }
    }
    let mut outcomes = Vec::with_capacity(requests.len());
    while let Some(outcome) = requests.join_next().await {
        if let Ok(outcome) = outcome {
            outcomes.push(outcome);
        }
    }
    outcomes
}

async fn one(load: Load, addr: SocketAddr, start: Instant, pooled: Option<Pooled>) -> Outcome {
    let sent = start.elapsed();
    let fresh = pooled.is_none();
    let attempt = async {
        match pooled {
            Some(client) => via_pool(&client, addr).await,
            None => via_new_connection(addr).await,
        }
    };
    let result = match tokio::time::timeout(load.request_timeout, attempt).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(describe(&*error)),
        Err(_) => Err("timeout".to_owned()),
    };
    Outcome {
        sent,
        done: start.elapsed(),
        fresh,
        result,
    }
}

async fn via_pool(client: &Pooled, addr: SocketAddr) -> Result<(u16, Answered), BoxError> {
    let uri = format!("http://{addr}/");
    let response = client.get(uri.parse()?).await?;
    read(response).await
}

async fn via_new_connection(addr: SocketAddr) -> Result<(u16, Answered), BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get("/")
        .header(HOST, addr.to_string())
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    read(sender.send_request(request).await?).await
}

/// Status and `X-Master`, once the whole body has arrived.
async fn read(
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<(u16, Answered), BoxError> {
    let status = response.status().as_u16();
    let from = match response.headers().get("x-master").map(|v| v.as_bytes()) {
        Some(b"master-a") => Answered::A,
        Some(b"master-b") => Answered::B,
        _ => Answered::Proxy,
    };
    response.into_body().collect().await?;
    Ok((status, from))
}

/// The innermost cause, short: "connection reset", "connection closed before message completed".
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    text.split(" (os error").next().unwrap_or(&text).to_owned()
}
