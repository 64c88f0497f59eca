//! The admin listener: `GET /status` (JSON, the public contract scripts rely on).
//! Read-only: it renders the latest snapshot and never touches election state.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::config::Failback;
use crate::routing::{RoutingHandle, Snapshot};

/// What the admin endpoints read.
pub struct AdminContext {
    pub routing: RoutingHandle,
    pub failback: Failback,
}

/// The `/status` document. Field names are a public contract: add, never rename.
#[derive(Debug, Serialize)]
pub struct Status {
    pub active: Option<String>,
    pub active_since: String,
    pub failovers: u64,
    pub generation: u64,
    pub failback: &'static str,
    pub started_at: String,
    pub backends: Vec<BackendStatus>,
    /// Newest first.
    pub transitions: Vec<TransitionStatus>,
}

#[derive(Debug, Serialize)]
pub struct BackendStatus {
    pub name: String,
    pub url: String,
    pub healthy: bool,
    pub active: bool,
    /// "unknown" (not checked yet), "up" or "down".
    pub state: &'static str,
    pub last_check: Option<String>,
    pub last_error: Option<String>,
    pub latency_ms: Option<f64>,
    pub consecutive_passed: u32,
    pub consecutive_failed: u32,
    /// Open HTTP connections to this master (busy or idle in the pool).
    pub open_connections: usize,
    /// Open upgraded connections (WebSocket agents, CLI).
    pub tunnels: usize,
    /// Open forwards from `[[tcp]]` listeners.
    pub tcp_connections: usize,
}

#[derive(Debug, Serialize)]
pub struct TransitionStatus {
    pub at: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

impl Status {
    pub fn of(snapshot: &Snapshot, failback: Failback) -> Status {
        Status {
            active: snapshot.active_master().map(|m| m.name.clone()),
            active_since: rfc3339(snapshot.active_since),
            failovers: snapshot.failovers,
            generation: snapshot.generation,
            failback: failback.as_str(),
            started_at: rfc3339(snapshot.started_at),
            backends: snapshot
                .masters
                .iter()
                .enumerate()
                .map(|(index, status)| {
                    let open = status.master.upstream.attachments().counts();
                    BackendStatus {
                        name: status.master.name.clone(),
                        url: status.master.url.clone(),
                        healthy: status.health == crate::election::Health::Up,
                        active: snapshot.active == Some(index),
                        state: status.health.as_str(),
                        last_check: status.last_check.map(rfc3339),
                        last_error: status.last_error.clone(),
                        latency_ms: status.latency.map(|l| l.as_secs_f64() * 1000.0),
                        consecutive_passed: status.consecutive_passed,
                        consecutive_failed: status.consecutive_failed,
                        open_connections: open.http,
                        tunnels: open.tunnels,
                        tcp_connections: open.tcp,
                    }
                })
                .collect(),
            transitions: snapshot
                .transitions
                .iter()
                .rev()
                .map(|t| TransitionStatus {
                    at: rfc3339(t.at),
                    from: t.from.clone(),
                    to: t.to.clone(),
                    reason: t.reason.clone(),
                })
                .collect(),
        }
    }
}

/// Serves the admin API until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<AdminContext>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed on the admin listener");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let ctx = Arc::clone(&ctx);
        let service = service_fn(move |request| {
            let ctx = Arc::clone(&ctx);
            async move { Ok::<_, Infallible>(route(&ctx, &request)) }
        });
        connections.spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

fn route<B>(ctx: &AdminContext, request: &Request<B>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/status") => {
            let status = Status::of(&ctx.routing.current(), ctx.failback);
            match serde_json::to_vec_pretty(&status) {
                Ok(json) => respond(StatusCode::OK, "application/json", json),
                Err(error) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    format!("cannot render status: {error}\n").into_bytes(),
                ),
            }
        }
        (&Method::GET | &Method::HEAD, "/") => respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            b"jenkins-ha-proxy admin: GET /status for the pool as JSON\n".to_vec(),
        ),
        (_, "/status" | "/") => respond(
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

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
