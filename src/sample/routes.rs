//! What the sample master answers: one task per connection, and a handler per path.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep, Sleep};
use tokio_util::sync::CancellationToken;

use super::{lock, query_u64, Shared, SAMPLE_HEALTH_PATH, STARTING_BODY};

const DEFAULT_SLOW_CHUNKS: u64 = 5;
const DEFAULT_SLOW_DELAY_MS: u64 = 100;
const DEFAULT_BYTES: u64 = 1024;
const BYTES_CHUNK: usize = 64 * 1024;

/// `/bytes` bodies are slices of this, so even huge responses allocate nothing.
static FILLER: [u8; BYTES_CHUNK] = [b'x'; BYTES_CHUNK];

type ResBody = BoxBody<Bytes, hyper::Error>;
const TEXT: &str = "text/plain; charset=utf-8";
const BINARY: &str = "application/octet-stream";
const JSON: &str = "application/json;charset=utf-8";

/// The REST endpoints the sample master implements, by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RestAction {
    QuietDown,
    CancelQuietDown,
    Reload,
}

impl RestAction {
    pub(super) fn from_path(path: &str) -> Option<RestAction> {
        match path {
            "/quietDown" => Some(RestAction::QuietDown),
            "/cancelQuietDown" => Some(RestAction::CancelQuietDown),
            "/reload" => Some(RestAction::Reload),
            _ => None,
        }
    }

    pub(super) fn path(self) -> &'static str {
        match self {
            RestAction::QuietDown => "/quietDown",
            RestAction::CancelQuietDown => "/cancelQuietDown",
            RestAction::Reload => "/reload",
        }
    }
}

/// Serves one connection, plain or TLS (any IO); on cancel the connection future and
/// its socket are dropped.
pub(super) async fn serve_connection<IO>(stream: IO, shared: Arc<Shared>, cancel: CancellationToken)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
        "/sleep" => {
            sleep(Duration::from_millis(query_u64(&query, "ms").unwrap_or(0))).await;
            text(StatusCode::OK, format!("hello from {}\n", shared.name))
        }
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
        "/computer/api/json" => json(shared.load.computers_json()),
        "/queue/api/json" => json(shared.load.queue_json()),
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

/// A JSON API answer, or 500 while the load is not readable.
fn json(body: Option<String>) -> Response<ResBody> {
    match body {
        Some(body) => respond(StatusCode::OK, JSON, never_fails(Full::new(body.into()))),
        None => text(StatusCode::INTERNAL_SERVER_ERROR, "load not readable\n"),
    }
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
