//! The admin listener: `GET /status` (JSON, the public contract scripts rely on), and
//! the routes of the other admin endpoints. Reads render the latest snapshot; the
//! mutating calls (`POST`, see [`control`]) go to the owner task as commands, except
//! `POST /reload`, which goes to the daemon (it owns the config file). [`metrics`]:
//! the Prometheus metrics the request path, the reloads and the snapshots feed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::ADMIN_MAX_CONNECTIONS;
use crate::control::cluster::member::Command as PoolCommand;
use crate::control::owner::Control;
use crate::control::owner::OwnerHandle;
use crate::control::routing::RoutingHandle;

mod certificates;
mod control;
pub mod metrics;
mod page;
pub mod status;

pub use control::{ReloadRequest, Token};
pub use status::{Status, TlsStatus};

/// What the admin endpoints use.
pub struct AdminContext {
    pub routing: RoutingHandle,
    pub owner: OwnerHandle,
    pub metrics: Arc<metrics::Metrics>,
    /// Written by reloads; read by every mutating call.
    pub token: std::sync::RwLock<Token>,
    /// To the daemon, which owns the config file.
    pub reloads: tokio::sync::mpsc::Sender<ReloadRequest>,
    /// Cluster mode: switchover and maintenance act on the whole pool, through this
    /// instance's member; None standalone (they go to the owner).
    pub pool: Option<tokio::sync::mpsc::Sender<PoolCommand>>,
    /// `[proxy.tls]` and `[admin.tls]`: the certificates served, for `/status` and
    /// metrics.
    pub certificates: crate::tls::ListenerCertificates,
}

impl AdminContext {
    pub fn replace_token(&self, token: Token) {
        match self.token.write() {
            Ok(mut current) => *current = token,
            Err(poisoned) => *poisoned.into_inner() = token,
        }
    }

    fn token(&self) -> Token {
        match self.token.read() {
            Ok(token) => token.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Serves the admin API until `shutdown` completes. A client must send each request
/// head within `header_read_timeout` (also the keep-alive idle limit), and at most
/// [`ADMIN_MAX_CONNECTIONS`] connections are served at once (more are closed when
/// accepted): the admin port can never take the descriptors the proxy needs. The
/// proxy, in turn, leaves the admin API a reserve of descriptors
/// (`crate::sys::fd_limit::in_reserve`), so `/status` answers while clients take theirs.
///
/// With `tls` (`[admin.tls]`), each connection first completes a TLS handshake within
/// `header_read_timeout`.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<AdminContext>,
    tls: Option<Arc<crate::tls::ServerTlsHandle>>,
    header_read_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    let mut accept_errors = crate::sys::fd_limit::AcceptErrors::new("admin");
    let mut refusals = crate::sys::fd_limit::Refusals::default();
    let mut builder = http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_errors.failed(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Reap finished connections: the set's length is the count of open ones.
        while connections.try_join_next().is_some() {}
        if connections.len() >= ADMIN_MAX_CONNECTIONS {
            refusals.log(|| {
                tracing::warn!(
                    limit = ADMIN_MAX_CONNECTIONS,
                    "admin connection limit reached: closing new admin connections"
                )
            });
            continue; // dropping the stream closes it
        }
        let ctx = Arc::clone(&ctx);
        let service = service_fn(move |request| {
            let ctx = Arc::clone(&ctx);
            async move {
                let response = match request.method() {
                    &Method::POST => mutate(&ctx, &request).await,
                    _ => route(&ctx, &request),
                };
                Ok::<_, Infallible>(response)
            }
        });
        let builder = builder.clone();
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        connections.spawn(async move {
            let Some(acceptor) = acceptor else {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                return;
            };
            match tokio::time::timeout(header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Ok(Err(error)) => tracing::debug!(%error, "admin TLS handshake failed"),
                Err(_) => tracing::debug!("no admin TLS handshake within header_read_timeout"),
            }
        });
    }
    connections.abort_all();
}

fn route<B>(ctx: &AdminContext, request: &Request<B>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/status") => {
            let mut status = Status::of(&ctx.routing.current());
            let served = ctx.certificates.served();
            status.tls = (!served.is_empty()).then(|| TlsStatus::of(&served));
            match serde_json::to_vec_pretty(&status) {
                Ok(json) => respond(StatusCode::OK, "application/json", json),
                Err(error) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    format!("cannot render status: {error}\n").into_bytes(),
                ),
            }
        }
        (&Method::GET | &Method::HEAD, "/metrics") => respond(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            ctx.metrics
                .render(
                    &ctx.routing.current(),
                    certificates::CertificateGauges::of(ctx.certificates.served()),
                )
                .into_bytes(),
        ),
        (&Method::GET | &Method::HEAD, "/") => page::response(),
        (&Method::GET | &Method::HEAD, "/ready") => ready(ctx),
        (_, "/status" | "/metrics" | "/" | "/ready") => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            b"use GET\n".to_vec(),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            b"not found: try GET /status\n".to_vec(),
        ),
    }
}

/// A mutating call: authorised, then handed to the owner (or the daemon, for reload).
async fn mutate<B>(ctx: &AdminContext, request: &Request<B>) -> Response<Full<Bytes>> {
    let Some(call) = control::parse(request.uri().path(), request.uri().query()) else {
        return text(StatusCode::NOT_FOUND, "not found: POST /switchover?to=NAME, /backends/NAME/disable, /backends/NAME/enable, /reload\n");
    };
    if let Err((status, message)) = ctx.token().check(request.headers()) {
        tracing::warn!(path = request.uri().path(), "admin call refused: {message}");
        return outcome(status, false, message, ctx);
    }
    let call = match call {
        Ok(call) => call,
        Err(message) => return outcome(StatusCode::BAD_REQUEST, false, message, ctx),
    };
    tracing::info!(?call, "admin call");
    let Some(command) = call.into_control() else {
        return reload(ctx).await;
    };
    if let Some(pool) = &ctx.pool {
        return pool_command(ctx, pool, command).await;
    }
    match ctx.owner.control(command).await {
        Ok(_) => outcome(StatusCode::OK, true, "done".into(), ctx),
        Err(error) => outcome(control::status_of(&error), false, error.to_string(), ctx),
    }
}

/// `GET /ready`: 200 while this instance sends traffic to a master (active-active:
/// to at least one replica), 503 otherwise
/// (no healthy master; in cluster mode also while a switch opens or this instance
/// cannot confirm its view with etcd). For keepalived and load balancers.
fn ready(ctx: &AdminContext) -> Response<Full<Bytes>> {
    let snapshot = ctx.routing.current();
    if snapshot.replicas.is_some() && snapshot.can_route() {
        let names: Vec<String> = snapshot.routed().iter().map(|m| m.name.clone()).collect();
        let ready = format!("ready: replicas taking traffic: {}\n", names.join(", "));
        return text(StatusCode::OK, &ready);
    }
    match snapshot.routable_master() {
        Some(master) => text(
            StatusCode::OK,
            &format!("ready: routing to {}\n", master.name),
        ),
        None => {
            let why = match &snapshot.cluster {
                Some(cluster) if !cluster.etcd_connected || snapshot.expired() => {
                    "this instance cannot confirm its view with etcd"
                }
                Some(cluster) if !cluster.open => {
                    "waiting for every proxy instance to follow the pool's pointer"
                }
                _ => "no healthy master",
            };
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {why}\n"),
            )
        }
    }
}

/// How long a switchover asked in cluster mode is waited for before the call answers
/// that it is under way.
const POOL_SWITCH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Cluster mode: the command goes to the pool through this instance's member; a
/// switchover is answered once this instance routes to the new master.
async fn pool_command(
    ctx: &AdminContext,
    pool: &tokio::sync::mpsc::Sender<PoolCommand>,
    command: Control,
) -> Response<Full<Bytes>> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let (command, target) = match command {
        Control::Switchover { to } => (
            PoolCommand::Switchover {
                to: to.clone(),
                reply,
            },
            Some(to),
        ),
        Control::SetDisabled { master, disabled } => (
            PoolCommand::SetDisabled {
                master,
                disabled,
                reply,
            },
            None,
        ),
        Control::Reload { .. } => return reload(ctx).await,
    };
    let stopping = || {
        outcome(
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            "the daemon is stopping".into(),
            ctx,
        )
    };
    if pool.send(command).await.is_err() {
        return stopping();
    }
    match answer.await {
        Err(_) => stopping(),
        Ok(Err(message)) => {
            let status = if message.starts_with("no master named") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::CONFLICT
            };
            outcome(status, false, message, ctx)
        }
        Ok(Ok(())) => {
            let Some(to) = target else {
                return outcome(
                    StatusCode::OK,
                    true,
                    "done (for the whole pool)".into(),
                    ctx,
                );
            };
            let mut snapshots = ctx.routing.subscribe();
            let switched = tokio::time::timeout(
                POOL_SWITCH_WAIT,
                snapshots.wait_for(|s| s.active_master().is_some_and(|m| m.name == to)),
            )
            .await;
            match switched {
                Ok(Ok(_)) => outcome(StatusCode::OK, true, "done (for the whole pool)".into(), ctx),
                _ => outcome(
                    StatusCode::ACCEPTED,
                    true,
                    format!("asked: the pool's leader moves traffic to {to} once every instance follows"),
                    ctx,
                ),
            }
        }
    }
}

async fn reload(ctx: &AdminContext) -> Response<Full<Bytes>> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    if ctx.reloads.send(ReloadRequest { reply }).await.is_err() {
        return outcome(
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            "the daemon is stopping".into(),
            ctx,
        );
    }
    match answer.await {
        Ok(Ok(summary)) => outcome(StatusCode::OK, true, summary, ctx),
        Ok(Err(error)) => outcome(StatusCode::BAD_REQUEST, false, error, ctx),
        Err(_) => outcome(
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            "the daemon is stopping".into(),
            ctx,
        ),
    }
}

fn outcome(
    status: StatusCode,
    ok: bool,
    message: String,
    ctx: &AdminContext,
) -> Response<Full<Bytes>> {
    let answer = control::Outcome {
        ok,
        message,
        active: ctx
            .routing
            .current()
            .active_master()
            .map(|m| m.name.clone()),
    };
    match serde_json::to_vec_pretty(&answer) {
        Ok(json) => respond(status, "application/json", json),
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{error}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
