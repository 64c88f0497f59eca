//! The client-facing listener: HTTP/1.1 and cleartext HTTP/2 (hyper-util's auto
//! server), one task per connection, graceful shutdown.

pub mod access;
pub mod body;
pub mod forward;
pub mod headers;
pub mod jnlp;
pub mod session;
pub mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

/// Serves `listener` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish for up to `shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    settings: ServerSettings,
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
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let mut last_refusal_log: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
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
        let span = tracing::debug_span!("client", %client);
        let silence_limit = settings.header_read_timeout;
        tokio::spawn(
            async move {
                let _slot = slot; // held while the connection lives
                let silent = async {
                    tokio::time::sleep(silence_limit).await;
                    if spoke.load(Ordering::Relaxed) {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
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
