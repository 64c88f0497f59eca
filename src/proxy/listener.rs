//! One accept loop on the current runtime, and the life of each client connection it
//! serves: the `max_connections` slot and the descriptor reserve, the framing guard,
//! HTTP/1 and HTTP/2 limits, the idle timer, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::balance::{Counted, Handed, Seat};
use super::{body, framing, h1, responses, Peer, ProxyBody, ServerSettings};
use crate::sys::fd_limit::{self, AcceptErrors, Claim, Refusals};
use crate::upstream::UpstreamBody;

/// Serves `listener` on the current runtime until `shutdown` completes, then lets
/// the open connections finish for up to `shutdown_timeout`.
/// `seat`: this worker's place among several (connections are spread evenly over
/// them, see `super::balance`); None when one accept loop serves all.
pub(super) async fn serve_on<H, F>(
    listener: TcpListener,
    settings: ServerSettings,
    handler: H,
    slots: Arc<Semaphore>,
    mut seat: Option<Seat>,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<UpstreamBody>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let builder = Arc::new(connection_builder(&settings));
    // Changed at shutdown: every connection finishes what it is doing, then closes.
    // Each connection task holds a receiver until it ends, so the receivers are also
    // the count of open connections. (A watch channel, as in hyper-util's
    // GracefulShutdown: cheaper per connection than a CancellationToken.)
    let (closing, closing_rx) = watch::channel(());
    let mut refusals = Refusals::default();
    let mut accept_errors = AcceptErrors::new("proxy");
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_errors.failed(&error).await;
                    continue;
                }
            },
            Some(handed) = recv_handed(&mut seat) => {
                let Ok(stream) = TcpStream::from_std(handed.stream) else {
                    continue; // the client is gone, or the runtime refused it
                };
                let held = Held::new(handed.slot, Some(handed.counted));
                let connection = Connection { stream, peer: handed.peer, held, closing: closing_rx.clone() };
                connection.spawn(&builder, handler.clone(), &settings);
                continue;
            }
            () = &mut shutdown => break,
        };
        let Some((slot, peer)) = admit(&stream, client, &slots, &settings, &mut refusals) else {
            continue; // dropping the stream closes it
        };
        let Some(held) = place(stream, peer, slot, seat.as_ref()) else {
            continue; // handed to another worker
        };
        let (stream, held) = held;
        let connection = Connection {
            stream,
            peer,
            held,
            closing: closing_rx.clone(),
        };
        connection.spawn(&builder, handler.clone(), &settings);
    }
    drop(listener);
    drop(closing_rx);
    finish(closing, settings.shutdown_timeout).await;
}

/// The HTTP/1 and HTTP/2 limits of `settings`.
fn connection_builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes);
    // hyper's own default is ours: left unset, its header slots are an uninitialised
    // array on the stack; set, they are filled in for every request (4% of the
    // request path's instructions).
    if settings.max_headers != crate::config::DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(settings.max_headers);
    }
    // The same limits for HTTP/2: each stream needs a connection to the master while
    // it runs, and a header list is held in memory whole. (The header count is
    // checked per request: h2 has no such setting.)
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(u32::try_from(settings.http2_max_streams).unwrap_or(u32::MAX))
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// A slot in `max_connections` for a new client connection, unless the limit or the
/// descriptor reserve is reached (then it is closed at once: cheaper for everyone
/// than queueing the socket).
fn admit(
    stream: &TcpStream,
    client: std::net::SocketAddr,
    slots: &Arc<Semaphore>,
    settings: &ServerSettings,
    refusals: &mut Refusals,
) -> Option<(OwnedSemaphorePermit, Peer)> {
    let Ok(slot) = Arc::clone(slots).try_acquire_owned() else {
        refusals.log(|| {
            tracing::warn!(limit = settings.max_connections, %client,
                "proxy.max_connections reached: closing new client connections")
        });
        return None;
    };
    if fd_limit::in_reserve(stream, Claim::Client) {
        refusals.log(|| fd_limit::log_reserve_reached("proxy"));
        return None;
    }
    let _ = stream.set_nodelay(true);
    // Err: the client is already gone.
    let local = stream.local_addr().ok()?;
    let tls = settings.tls.is_some();
    Some((slot, Peer { client, local, tls }))
}

/// The next connection another worker handed to this one (never, without a seat).
async fn recv_handed(seat: &mut Option<Seat>) -> Option<Handed> {
    match seat {
        Some(seat) => seat.inbox.recv().await,
        None => std::future::pending().await,
    }
}

/// Serves a connection this worker accepted here, or hands it to a less busy worker
/// (then None).
fn place(
    stream: TcpStream,
    peer: Peer,
    slot: OwnedSemaphorePermit,
    seat: Option<&Seat>,
) -> Option<(TcpStream, Held)> {
    let Some(seat) = seat else {
        return Some((stream, Held::new(slot, None)));
    };
    let target = seat.balance.place(seat.index);
    if target == seat.index {
        let counted = seat.balance.count(seat.index);
        return Some((stream, Held::new(slot, Some(counted))));
    }
    // Err: the client is gone already.
    let stream = stream.into_std().ok()?;
    // Counted at once, so that the next placement sees it.
    let counted = seat.balance.count(target);
    let handed = Handed {
        stream,
        peer,
        slot,
        counted,
    };
    // Err: that worker is gone (its loop ended); serve it here after all.
    let handed = seat.balance.hand(target, handed).err()?;
    let stream = TcpStream::from_std(handed.stream).ok()?;
    let counted = seat.balance.count(seat.index);
    Some((stream, Held::new(handed.slot, Some(counted))))
}

/// What a connection holds while it lives: its slot in `max_connections` and its
/// count on its worker, both given back on unwind.
struct Held {
    _slot: OwnedSemaphorePermit,
    _counted: Option<Counted>,
}

impl Held {
    fn new(slot: OwnedSemaphorePermit, counted: Option<Counted>) -> Held {
        Held {
            _slot: slot,
            _counted: counted,
        }
    }
}

/// An accepted client connection, before its task starts.
struct Connection {
    stream: TcpStream,
    peer: Peer,
    held: Held,
    closing: watch::Receiver<()>,
}

impl Connection {
    /// Serves the connection in a task of its own: a panic (a bug) ends it alone.
    /// Our own HTTP/1 server (`super::h1`) takes it first; hyper's takes over from the
    /// first request that is not a common one, or at once for h2 by ALPN.
    fn spawn<H, F>(
        self,
        builder: &Arc<auto::Builder<TokioExecutor>>,
        handler: H,
        settings: &ServerSettings,
    ) where
        H: Fn(Request<UpstreamBody>, Peer) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let Connection {
            stream,
            peer,
            held,
            closing,
        } = self;
        let limits = h1::Limits {
            header_read_timeout: settings.header_read_timeout,
            max_header_bytes: settings.max_header_bytes,
            max_headers: settings.max_headers,
        };
        let hyper_side = HyperSide {
            builder: Arc::clone(builder),
            limits,
        };
        let span = tracing::debug_span!("client", client = %peer.client);
        let Some(tls) = &settings.tls else {
            let serving = serve_client(stream, peer, handler, hyper_side, closing);
            tokio::spawn(
                async move {
                    let _held = held;
                    serving.await;
                }
                .instrument(span),
            );
            return;
        };
        // The handshake runs in the connection's task, under the same deadline as a
        // request head: a silent or slow client holds its slot and nothing else.
        let acceptor = tls.acceptor();
        let idle_limit = settings.header_read_timeout;
        tokio::spawn(
            async move {
                let _held = held;
                let Some(stream) = handshake(acceptor, stream, idle_limit).await else {
                    return;
                };
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let serving = hyper_side.serve(stream, Bytes::new(), peer, handler, closing);
                    Box::pin(serving).await;
                } else {
                    serve_client(stream, peer, handler, hyper_side, closing).await;
                }
            }
            .instrument(span),
        );
    }
}

/// One client connection over HTTP/1: our own server, then hyper's if it hands over.
async fn serve_client<S, H, F>(
    stream: S,
    peer: Peer,
    handler: H,
    hyper_side: HyperSide,
    mut closing: watch::Receiver<()>,
) where
    S: h1::ClientStream + Send + 'static,
    H: Fn(Request<UpstreamBody>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let limits = hyper_side.limits;
    match h1::serve(stream, peer, &handler, limits, &mut closing).await {
        h1::Ended::Closed => {}
        // Boxed: the common connection never needs hyper's state in its task.
        h1::Ended::HandOff { stream, read } => {
            Box::pin(hyper_side.serve(stream, read, peer, handler, closing)).await;
        }
    }
}

/// hyper's server for a connection: HTTP/2, and HTTP/1 requests other than the common
/// ones, with the framing guard.
struct HyperSide {
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: h1::Limits,
}

impl HyperSide {
    async fn serve<S, H, F>(
        self,
        stream: S,
        already_read: Bytes,
        peer: Peer,
        handler: H,
        closing: watch::Receiver<()>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<UpstreamBody>, Peer) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let max_headers = self.limits.max_headers;
        // Written by the framing guard (refusals) and the service (the request count);
        // read by the service and by the idle timer in `drive`.
        let findings = Arc::new(framing::Findings::default());
        let counted = Arc::clone(&findings);
        let service = service_fn(move |request: Request<Incoming>| {
            let refused = match counted.next_request() {
                Some(refusal) => Some(responses::framing_refused(refusal, peer)),
                None => too_many_headers(&request, max_headers),
            };
            let response = match refused {
                None => Ok(handler(request.map(Either::Left), peer)),
                Some(refusal) => Err(refusal),
            };
            let counted = Arc::clone(&counted);
            async move {
                let response = match response {
                    Ok(response) => response.await,
                    Err(refusal) => refusal,
                };
                Ok::<_, Infallible>(response.map(|body| body::Tracked::new(body, &counted)))
            }
        });
        let scanner = framing::Scanner::new(self.limits.max_header_bytes, max_headers);
        let guarded = Arc::clone(&findings);
        let stream = framing::FramingGuard::new(stream, already_read, scanner, guarded);
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        drive(
            connection,
            &findings,
            self.limits.header_read_timeout,
            closing,
        )
        .await;
    }
}

/// The server side of a TLS handshake, within `limit`; None (logged) when it fails.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    limit: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("no TLS handshake within header_read_timeout: closing");
            None
        }
    }
}

/// After the accept loop: asks every open connection to finish and close, and waits
/// for them up to `shutdown_timeout`.
async fn finish(closing: watch::Sender<()>, shutdown_timeout: Duration) {
    tracing::info!(
        open = closing.receiver_count(),
        "proxy listener closed; waiting for in-flight requests"
    );
    closing.send_replace(());
    if tokio::time::timeout(shutdown_timeout, closing.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests still running after {}; closing them",
            humantime::format_duration(shutdown_timeout)
        );
    }
}

/// Serves one client connection until it ends.
///
/// The connection is asked to finish what it is doing and close (`graceful_shutdown`:
/// HTTP/1 after the response in progress, HTTP/2 with a GOAWAY that lets open streams
/// complete) when the proxy shuts down, or when a whole `idle_limit`
/// (`proxy.header_read_timeout`) passes without a new request and with no response
/// still going. hyper has no idle timeout for HTTP/2, so without this an idle h2c
/// connection would hold its `max_connections` slot for ever; HTTP/1 idle connections
/// hyper closes itself after one `idle_limit`. A connection that has sent no request
/// at all by then (a slowloris, or a trickled HTTP/2 preface, before hyper's own
/// header timer starts) is dropped. So is one still open one more `idle_limit` after
/// an idle close began: an HTTP/2 client that never acknowledges the GOAWAY's PING
/// would otherwise keep it open.
async fn drive<C>(
    connection: C,
    findings: &framing::Findings,
    idle_limit: Duration,
    mut closing: watch::Receiver<()>,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(connection);
    let idle = tokio::time::sleep(idle_limit);
    tokio::pin!(idle);
    let mut requests_before = 0;
    let mut phase = Phase::Serving;
    loop {
        // Biased: the connection is polled first on every wakeup; no random pick.
        tokio::select! {
            biased;
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "client connection ended with an error");
                }
                return;
            }
            // Err: the accept loop is gone without a word; close as well.
            _ = closing.changed(), if phase != Phase::ShuttingDown => {
                connection.as_mut().graceful_shutdown();
                phase = Phase::ShuttingDown;
            }
            () = idle.as_mut(), if phase != Phase::ShuttingDown => {
                let requests = findings.requests();
                let quiet = requests == requests_before && findings.open_responses() == 0;
                match phase {
                    _ if requests == 0 => {
                        tracing::debug!("no request within header_read_timeout: closing");
                        return;
                    }
                    Phase::ClosingIdle => {
                        tracing::debug!("an idle close did not finish within header_read_timeout: closing");
                        return;
                    }
                    Phase::Serving if quiet => {
                        tracing::debug!("no new request for header_read_timeout: closing when idle");
                        connection.as_mut().graceful_shutdown();
                        phase = Phase::ClosingIdle;
                    }
                    _ => requests_before = requests,
                }
                idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
            }
        }
    }
}

/// Where a client connection is in its life, for [`drive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Idle for a whole timeout: asked to close; dropped if still open one more later.
    ClosingIdle,
    /// The proxy is stopping: asked to close; `shutdown_timeout` bounds the rest.
    ShuttingDown,
}

/// 431 for an HTTP/2 request with more header fields than `proxy.max_headers` (hyper
/// counts them for HTTP/1 only).
fn too_many_headers(
    request: &Request<Incoming>,
    max_headers: usize,
) -> Option<Response<ProxyBody>> {
    let count = request.headers().len();
    (request.version() == hyper::Version::HTTP_2 && count > max_headers)
        .then(|| responses::too_many_headers(count))
}
