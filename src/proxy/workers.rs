//! The threads that serve clients. Each has its own single-threaded tokio runtime
//! and its own accept loop on the shared listening socket: a connection, its requests,
//! and the upstream connections they open stay on one thread, so a request costs no
//! cross-thread wakeup or work stealing (on a shared multi-threaded runtime these cost
//! about a quarter of the proxy's user CPU). Every accept loop is woken by each new
//! connection and whichever is free first takes it; a worker that then serves clearly
//! more connections than another hands the new one over (`super::balance`), since a
//! burst of keep-alive connections otherwise stays lopsided for its whole life.
//! (Steering by delay, a busier worker accepting a little later, halved the throughput
//! without keep-alive.)

use std::future::Future;
use std::sync::Arc;

use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use super::balance::{Balance, Seat};
use super::listener::serve_on;
use super::{Peer, ProxyBody, ServerSettings};
use crate::upstream::UpstreamBody;

/// [`super::serve`] with the per-request handler as a parameter (tests give one that
/// fails). Each connection is its own task: a panic while serving one (a bug) ends
/// that connection only; its slot in `max_connections` is released as the task unwinds.
pub async fn serve_with<H, F>(
    listener: TcpListener,
    settings: ServerSettings,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<UpstreamBody>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    // Shared by every worker: max_connections is one limit for the whole proxy.
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    if settings.workers == 0 {
        return serve_on(listener, settings, handler, slots, None, shutdown).await;
    }
    let runtimes = match worker_runtimes(&listener, settings.workers) {
        Ok(runtimes) => runtimes,
        Err(error) => {
            tracing::warn!(%error, "cannot start the proxy's worker threads; serving on the main runtime");
            return serve_on(listener, settings, handler, slots, None, shutdown).await;
        }
    };
    // A worker whose accept loop ends before shutdown (a panic, a bug) stops them all,
    // so that this function returns and the daemon exits for a restart, as it does
    // when a single accept loop dies. Each worker holds a sender that reports on drop.
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<usize>();
    let shared = Shared {
        handler,
        settings,
        slots,
        stop: CancellationToken::new(),
        all_served: CancellationToken::new(),
    };
    let seats = Balance::seats(runtimes.len());
    let workers: Vec<Worker> = runtimes
        .into_iter()
        .zip(seats)
        .enumerate()
        .map(|(index, ((runtime, listener), seat))| {
            let ended = WorkerEnded {
                index,
                report: ended_tx.clone(),
            };
            spawn_worker(seat, runtime, listener, shared.clone(), ended)
        })
        .collect();
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
    shared.stop.cancel();
    // Err: that worker is gone (it panicked, or never started); nothing to wait for.
    let (served, finished): (Vec<_>, Vec<_>) =
        workers.into_iter().map(|w| (w.served, w.finished)).unzip();
    for worker in served {
        let _ = worker.await;
    }
    shared.all_served.cancel();
    for worker in finished {
        let _ = worker.await;
    }
}

/// What every worker gets a copy of.
#[derive(Clone)]
struct Shared<H> {
    handler: H,
    settings: ServerSettings,
    slots: Arc<Semaphore>,
    /// Cancelled at shutdown: every worker stops accepting.
    stop: CancellationToken,
    /// No runtime ends before every worker has stopped serving: what one worker spawned
    /// must not vanish under a request another is still finishing. Cancelled once every
    /// worker has sent `served`.
    all_served: CancellationToken,
}

/// A worker thread's two signals: it has stopped serving; its runtime is gone.
struct Worker {
    served: oneshot::Receiver<()>,
    finished: oneshot::Receiver<()>,
}

/// Starts the worker of `seat` on a thread of its own, serving `listener` on `runtime`.
fn spawn_worker<H, F>(
    seat: Seat,
    runtime: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    shared: Shared<H>,
    ended: WorkerEnded,
) -> Worker
where
    H: Fn(Request<UpstreamBody>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let index = seat.index;
    let (served_tx, served) = oneshot::channel::<()>();
    let (done, finished) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name(format!("proxy-worker-{index}"))
        .spawn(move || {
            let _ended = ended; // reports even when this thread unwinds
            crate::upstream::set_worker(index);
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        let stopped = shared.stop.cancelled_owned();
                        serve_on(
                            listener,
                            shared.settings,
                            shared.handler,
                            shared.slots,
                            Some(seat),
                            stopped,
                        )
                        .await
                    }
                    Err(error) => {
                        tracing::error!(%error, "proxy worker cannot use the listener")
                    }
                }
                let _ = served_tx.send(());
                shared.all_served.cancelled().await;
            });
            // Dropping the runtime here ends what is left on it (tunnels, idle
            // upstream connections), as the end of the process did before.
            drop(runtime);
            let _ = done.send(());
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start a proxy worker thread");
    }
    Worker { served, finished }
}

/// Tells `serve_with` that a worker thread is done (or unwinding), when dropped.
struct WorkerEnded {
    index: usize,
    report: mpsc::UnboundedSender<usize>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_util::sync::CancellationToken;

    /// Answers 200, except for `/panic`, where the handler panics as a bug would.
    async fn panics_on_request(request: Request<UpstreamBody>) -> Response<ProxyBody> {
        if request.uri().path() == "/panic" {
            panic!("injected panic while serving {}", request.uri());
        }
        crate::proxy::responses::plain(hyper::StatusCode::OK, "served\n")
    }

    /// Answers with the name of the worker thread that serves the request.
    async fn names_the_worker(_request: Request<UpstreamBody>) -> Response<ProxyBody> {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        crate::proxy::responses::plain(hyper::StatusCode::OK, &name)
    }

    fn settings(max_connections: usize) -> ServerSettings {
        ServerSettings {
            header_read_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(1),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_connections,
            // Two worker threads, as on a 2-core machine.
            workers: 2,
            http2_max_streams: 100,
            tls: None,
        }
    }

    /// A burst of keep-alive connections, opened all at once and held, ends up spread
    /// over both workers (within the balance's margin), each served where it was placed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_connections_is_spread_over_the_workers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_with(
            listener,
            settings(1000),
            |request, _peer| names_the_worker(request),
            stop.clone().cancelled_owned(),
        ));
        let mut streams = Vec::new();
        for _ in 0..64 {
            streams.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let mut served = std::collections::BTreeMap::<String, usize>::new();
        for stream in &mut streams {
            let request = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
            stream.write_all(request.as_bytes()).await.expect("send");
            let mut reply = vec![0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut reply))
                .await
                .expect("an answer in time")
                .expect("read");
            let reply = String::from_utf8_lossy(&reply[..read]).into_owned();
            let worker = reply
                .rsplit("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .to_owned();
            assert!(worker.starts_with("proxy-worker-"), "{reply}");
            *served.entry(worker).or_default() += 1;
        }
        let counts: Vec<usize> = served.values().copied().collect();
        assert_eq!(counts.len(), 2, "both workers serve: {served:?}");
        let (min, max) = (counts[0].min(counts[1]), counts[0].max(counts[1]));
        assert!(max - min <= (min / 8).max(2) + 1, "spread: {served:?}");
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
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
        // One slot: a connection whose task panicked must give it back, or no later
        // connection is ever served.
        let settings = settings(1);
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
