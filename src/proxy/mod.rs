//! The client-facing listener: HTTP/1.1 and cleartext HTTP/2 (hyper-util's auto
//! server), one task per connection, an idle timeout for both protocols, graceful
//! shutdown.
//!
//! Client connections are served by `workers` threads, each with its own
//! single-threaded tokio runtime and its own accept loop on the shared listener: a
//! connection, its requests, and the upstream connections they open stay on one
//! thread, so a request costs no cross-thread wakeup or work stealing (on a shared
//! multi-threaded runtime these cost about a quarter of the proxy's user CPU).
//! Every accept loop is woken by each new connection and whichever is free first
//! takes it, which spreads connections over the workers well enough; steering them
//! by load (a busier worker accepting a little later) halved the throughput without
//! keep-alive.

pub mod access;
pub mod body;
pub mod forward;
pub mod framing;
pub mod headers;
pub mod jnlp;
pub mod session;
pub mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tracing::Instrument;

pub use forward::{ProxyBody, ProxyContext, ProxySettings};

/// Settings of the client-facing server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub header_read_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    /// Threads serving client connections (one single-threaded runtime each); 0: on the
    /// caller's runtime instead.
    pub workers: usize,
    /// `proxy.http2_max_streams`: concurrent streams per HTTP/2 connection.
    pub http2_max_streams: usize,
}

/// Serves `listener` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish for up to `shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let forward = move |request, peer| {
        let ctx = Arc::clone(&ctx);
        // Boxed once here: the request's future is ~4 KiB, and hyper and the service
        // wrapper would otherwise each move it by value (memcpy was 5% of CPU).
        Box::pin(async move { forward::forward(&ctx, request, peer).await })
    };
    serve_with(listener, settings, forward, shutdown).await;
}

/// [`serve`] with the per-request handler as a parameter (tests give one that fails).
/// Each connection is its own task: a panic while serving one (a bug) ends that
/// connection only; its slot in `max_connections` is released as the task unwinds.
pub async fn serve_with<H, F>(
    listener: TcpListener,
    settings: ServerSettings,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, forward::Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    // Shared by every worker: max_connections is one limit for the whole proxy.
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    if settings.workers == 0 {
        return serve_on(listener, settings, handler, slots, shutdown).await;
    }
    let runtimes = match worker_runtimes(&listener, settings.workers) {
        Ok(runtimes) => runtimes,
        Err(error) => {
            tracing::warn!(%error, "cannot start the proxy's worker threads; serving on the main runtime");
            return serve_on(listener, settings, handler, slots, shutdown).await;
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    // No runtime ends before every worker has stopped serving: what one worker spawned
    // must not vanish under a request another is still finishing. Cancelled by this
    // task once every worker has sent `served`.
    let all_served = tokio_util::sync::CancellationToken::new();
    let (mut served, mut finished) = (Vec::new(), Vec::new());
    // A worker whose accept loop ends before shutdown (a panic, a bug) stops them all,
    // so that this function returns and the daemon exits for a restart, as it does
    // when a single accept loop dies. Each worker holds a sender that reports on drop.
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel::<usize>();
    for (index, (runtime, listener)) in runtimes.into_iter().enumerate() {
        let (served_tx, served_rx) = tokio::sync::oneshot::channel::<()>();
        let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
        served.push(served_rx);
        finished.push(finished_rx);
        let (handler, settings, slots, stop) = (
            handler.clone(),
            settings.clone(),
            Arc::clone(&slots),
            stop.clone(),
        );
        let all_served = all_served.clone();
        let ended = WorkerEnded {
            index,
            report: ended_tx.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("proxy-worker-{index}"))
            .spawn(move || {
                let _ended = ended; // reports even when this thread unwinds
                crate::upstream::set_worker(index);
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let stopped = stop.cancelled_owned();
                            serve_on(listener, settings, handler, slots, stopped).await
                        }
                        Err(error) => {
                            tracing::error!(%error, "proxy worker cannot use the listener")
                        }
                    }
                    let _ = served_tx.send(());
                    all_served.cancelled().await;
                });
                // Dropping the runtime here ends what is left on it (tunnels, idle
                // upstream connections), as the end of the process did before.
                drop(runtime);
                let _ = done.send(());
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start a proxy worker thread");
        }
    }
    // The workers hold their own descriptors; this one, if kept, would wake the main
    // runtime for every new connection.
    drop(listener);
    drop(ended_tx);
    tokio::select! {
        () = shutdown => {}
        Some(index) = ended.recv() => {
            tracing::error!(worker = index, "a proxy worker's accept loop stopped unexpectedly; stopping the others");
        }
    }
    stop.cancel();
    // Err: that worker is gone (it panicked, or never started); nothing to wait for.
    for worker in served {
        let _ = worker.await;
    }
    all_served.cancel();
    for worker in finished {
        let _ = worker.await;
    }
}

/// Tells `serve_with` that a worker thread is done (or unwinding), when dropped.
struct WorkerEnded {
    index: usize,
    report: tokio::sync::mpsc::UnboundedSender<usize>,
}

impl Drop for WorkerEnded {
    fn drop(&mut self) {
        let _ = self.report.send(self.index);
    }
}

/// A single-threaded runtime and a listener (a duplicate of the proxy's socket) for
/// each of `workers` accept loops.
fn worker_runtimes(
    listener: &TcpListener,
    workers: usize,
) -> std::io::Result<Vec<(tokio::runtime::Runtime, std::net::TcpListener)>> {
    use std::os::fd::AsFd;
    (0..workers)
        .map(|_| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // Same open socket (and its non-blocking mode), registered with this
            // worker's runtime only.
            let socket = listener.as_fd().try_clone_to_owned()?;
            Ok((runtime, std::net::TcpListener::from(socket)))
        })
        .collect()
}

/// Serves `listener` on the current runtime (see [`serve`]).
async fn serve_on<H, F>(
    listener: TcpListener,
    settings: ServerSettings,
    handler: H,
    slots: Arc<tokio::sync::Semaphore>,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, forward::Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .max_headers(settings.max_headers);
    // The same limits for HTTP/2: each stream needs a connection to the master while
    // it runs, and a header list is held in memory whole. (The header count is
    // checked per request: h2 has no such setting.)
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(u32::try_from(settings.http2_max_streams).unwrap_or(u32::MAX))
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    let max_headers = settings.max_headers;
    // Changed at shutdown: every connection finishes what it is doing, then closes.
    // Each connection task holds a receiver until it ends, so the receivers are also
    // the count of open connections. (A watch channel, as in hyper-util's
    // GracefulShutdown: cheaper per connection than a CancellationToken.)
    let (closing, closing_rx) = tokio::sync::watch::channel(());
    let mut refusals = crate::sys::fd_limit::Refusals::default();
    let mut accept_errors = crate::sys::fd_limit::AcceptErrors::new("proxy");
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
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Closing at once is cheaper for everyone than queueing the socket.
            refusals.log(|| {
                tracing::warn!(limit = settings.max_connections, %client,
                "proxy.max_connections reached: closing new client connections")
            });
            drop(stream);
            continue;
        };
        if crate::sys::fd_limit::in_reserve(&stream, crate::sys::fd_limit::Claim::Client) {
            refusals.log(|| crate::sys::fd_limit::log_reserve_reached("proxy"));
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(_) => continue, // the client is already gone
        };
        let peer = forward::Peer { client, local };
        let handler = handler.clone();
        // Written by the framing guard (refusals) and the service (the request count);
        // read by the service and by the idle timer in `drive`.
        let findings = Arc::new(framing::Findings::default());
        let counted = Arc::clone(&findings);
        let service = service_fn(move |request: Request<Incoming>| {
            let refused = match counted.next_request() {
                Some(refusal) => Some(refuse_framing(refusal, peer)),
                None => too_many_headers(&request, max_headers),
            };
            let response = match refused {
                None => Ok(handler(request, peer)),
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
        let stream = framing::FramingGuard::new(
            stream,
            framing::Scanner::new(settings.max_header_bytes, settings.max_headers),
            Arc::clone(&findings),
        );
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let span = tracing::debug_span!("client", %client);
        let (idle_limit, closing) = (settings.header_read_timeout, closing_rx.clone());
        tokio::spawn(
            async move {
                let _slot = slot; // held while the connection lives, given back on unwind
                drive(connection, &findings, idle_limit, closing).await;
            }
            .instrument(span),
        );
    }
    drop(listener);
    drop(closing_rx);
    tracing::info!(
        open = closing.receiver_count(),
        "proxy listener closed; waiting for in-flight requests"
    );
    closing.send_replace(());
    if tokio::time::timeout(settings.shutdown_timeout, closing.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests still running after {}; closing them",
            humantime::format_duration(settings.shutdown_timeout)
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
    mut closing: tokio::sync::watch::Receiver<()>,
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
    (request.version() == hyper::Version::HTTP_2 && request.headers().len() > max_headers).then(
        || {
            tracing::debug!(
                headers = request.headers().len(),
                "refused an HTTP/2 request with too many header fields"
            );
            forward::plain(
                hyper::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "jenkins-ha-proxy: too many header fields (proxy.max_headers)\n",
            )
        },
    )
}

/// 400 for a request whose length is stated two ways, and the connection closed: the
/// client's next bytes cannot be trusted to start a request.
fn refuse_framing(refusal: framing::Refusal, peer: forward::Peer) -> Response<ProxyBody> {
    tracing::debug!(client = %peer.client, ?refusal, "refused a request whose length is stated two ways");
    let mut response = forward::plain(hyper::StatusCode::BAD_REQUEST, refusal.explanation());
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_util::sync::CancellationToken;

    /// Answers 200, except for `/panic`, where the handler panics as a bug would.
    async fn panics_on_request(request: Request<Incoming>) -> Response<ProxyBody> {
        if request.uri().path() == "/panic" {
            panic!("injected panic while serving {}", request.uri());
        }
        forward::plain(hyper::StatusCode::OK, "served\n")
    }

    /// Sends one request and reads until the server closes (`Connection: close`).
    async fn exchange(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_while_serving_one_connection_ends_only_that_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let settings = ServerSettings {
            header_read_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(1),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            // One slot: a connection whose task panicked must give it back, or no
            // later connection is ever served.
            max_connections: 1,
            // Two worker threads, as on a 2-core machine.
            workers: 2,
            http2_max_streams: 100,
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_with(
            listener,
            settings,
            |request, _peer| panics_on_request(request),
            stop.clone().cancelled_owned(),
        ));
        for round in 0..3 {
            // The panicking request gets no response: its connection is just closed.
            let reply = exchange(addr, "/panic").await.unwrap_or_default();
            assert!(!reply.contains("200 OK"), "round {round}: {reply}");
            // The next connection is served once the panicked task has unwound.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let reply = exchange(addr, "/fine").await.unwrap_or_default();
                if reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("served\n") {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: no connection served after a panic; last reply {reply:?}"
                );
                tokio::task::yield_now().await;
            }
        }
        assert!(
            !server.is_finished(),
            "the accept loop must outlive the panics"
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops when asked")
            .expect("the accept loop itself did not panic");
    }
}
