//! The client-facing listener: HTTP/1.1 and cleartext HTTP/2 (hyper-util's auto
//! server), one task per connection, graceful shutdown.
//!
//! Client connections are served by `workers` threads, each with its own
//! single-threaded tokio runtime and its own accept loop on the shared listener: a
//! connection, its requests, and the upstream connections they open stay on one
//! thread, so a request costs no cross-thread wakeup or work stealing (on a shared
//! multi-threaded runtime these cost about a quarter of the proxy's user CPU).

pub mod access;
pub mod body;
pub mod forward;
pub mod headers;
pub mod jnlp;
pub mod session;
pub mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
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
    /// Threads serving client connections (one single-threaded runtime each); 0 or 1:
    /// on the caller's runtime.
    pub workers: usize,
}

/// Serves `listener` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish for up to `shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    // Shared by every worker: max_connections is one limit for the whole proxy.
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    if settings.workers <= 1 {
        return serve_on(listener, ctx, settings, slots, None, shutdown).await;
    }
    let runtimes = match worker_runtimes(&listener, settings.workers) {
        Ok(runtimes) => runtimes,
        Err(error) => {
            tracing::warn!(%error, "cannot start the proxy's worker threads; serving on the main runtime");
            return serve_on(listener, ctx, settings, slots, None, shutdown).await;
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let loads: Arc<[AtomicUsize]> = (0..runtimes.len()).map(|_| AtomicUsize::new(0)).collect();
    // No runtime ends before every worker has stopped serving: what one worker spawned
    // must not vanish under a request another is still finishing. Cancelled by this
    // task once every worker has sent `served`.
    let all_served = tokio_util::sync::CancellationToken::new();
    let (mut served, mut finished) = (Vec::new(), Vec::new());
    for (index, (runtime, listener)) in runtimes.into_iter().enumerate() {
        let (served_tx, served_rx) = tokio::sync::oneshot::channel::<()>();
        let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
        served.push(served_rx);
        finished.push(finished_rx);
        let (ctx, settings, slots, stop) = (
            Arc::clone(&ctx),
            settings.clone(),
            Arc::clone(&slots),
            stop.clone(),
        );
        let all_served = all_served.clone();
        let balance = Balance {
            loads: Arc::clone(&loads),
            me: index,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("proxy-worker-{index}"))
            .spawn(move || {
                crate::upstream::set_worker(index);
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let stopped = stop.cancelled_owned();
                            serve_on(listener, ctx, settings, slots, Some(balance), stopped).await
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
    shutdown.await;
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

/// Open client connections per worker, so that the workers share them evenly: all
/// accept loops are woken by each new connection, and a busier worker lets the others
/// take it (without this, a burst of connects lands mostly on one worker).
struct Balance {
    /// Element `i`: written (+1 on accept, -1 when a connection ends) by worker `i`
    /// only, read by every worker before it accepts.
    loads: Arc<[AtomicUsize]>,
    me: usize,
}

/// How much longer a busier worker waits before it accepts a connection itself.
const BUSIER_WORKER_DELAY: Duration = Duration::from_millis(1);

impl Balance {
    /// This worker holds clearly more connections than the least busy one.
    fn busier(&self) -> bool {
        let mine = self.loads[self.me].load(Ordering::Relaxed);
        let least = self
            .loads
            .iter()
            .map(|load| load.load(Ordering::Relaxed))
            .min()
            .unwrap_or(mine);
        // The slack keeps a burst of connects from paying the delay on every accept.
        mine > least + 8 + least / 8
    }

    fn track(&self) -> Tracked {
        self.loads[self.me].fetch_add(1, Ordering::Relaxed);
        Tracked {
            loads: Arc::clone(&self.loads),
            me: self.me,
        }
    }
}

/// One open connection counted in its worker's load.
struct Tracked {
    loads: Arc<[AtomicUsize]>,
    me: usize,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.loads[self.me].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `listener` on the current runtime (see [`serve`]).
async fn serve_on(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    settings: ServerSettings,
    slots: Arc<tokio::sync::Semaphore>,
    balance: Option<Balance>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .max_headers(settings.max_headers);
    let graceful = GracefulShutdown::new();
    let mut last_refusal_log: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let busier = balance.as_ref().is_some_and(Balance::busier);
        let accept = async {
            if busier {
                tokio::time::sleep(BUSIER_WORKER_DELAY).await;
            }
            listener.accept().await
        };
        let (stream, client) = tokio::select! {
            accepted = accept => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed on the proxy listener");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Closing at once is cheaper for everyone than queueing the socket.
            let quiet_for_a_second = match last_refusal_log {
                Some(at) => at.elapsed() > Duration::from_secs(1),
                None => true,
            };
            if quiet_for_a_second {
                tracing::warn!(limit = settings.max_connections, %client,
                    "proxy.max_connections reached: closing new client connections");
                last_refusal_log = Some(std::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(_) => continue, // the client is already gone
        };
        let peer = forward::Peer { client, local };
        let ctx = Arc::clone(&ctx);
        // Set by the first request: until then the connection may not even have said
        // which protocol it speaks, and hyper's header timeout has not started.
        let spoke = Arc::new(AtomicBool::new(false));
        let first_request = Arc::clone(&spoke);
        let service = service_fn(move |request| {
            let ctx = Arc::clone(&ctx);
            first_request.store(true, Ordering::Relaxed);
            async move { Ok::<_, Infallible>(forward::forward(&ctx, request, peer).await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let load = balance.as_ref().map(Balance::track);
        let span = tracing::debug_span!("client", %client);
        let silence_limit = settings.header_read_timeout;
        tokio::spawn(
            async move {
                let _slot = slot; // held while the connection lives
                let _load = load;
                let silent = async {
                    tokio::time::sleep(silence_limit).await;
                    if spoke.load(Ordering::Relaxed) {
                        std::future::pending::<()>().await;
                    }
                };
                // Biased: polled on every wakeup of the connection; no random pick.
                tokio::select! {
                    biased;
                    ended = connection => if let Err(error) = ended {
                        tracing::debug!(%error, "client connection ended with an error");
                    },
                    // Slowloris before the first request (or a trickled HTTP/2 preface).
                    () = silent => tracing::debug!("no request within header_read_timeout: closing"),
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        open,
        "proxy listener closed; waiting for in-flight requests"
    );
    if tokio::time::timeout(settings.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests still running after {}; closing them",
            humantime::format_duration(settings.shutdown_timeout)
        );
    }
}
