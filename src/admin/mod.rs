//! The admin listener: `GET /status` (JSON, the public contract scripts rely on), and
//! the routes of the other admin endpoints.
//! Read-only: it renders the latest snapshot and never touches election state.

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

use crate::config::Failback;
use crate::routing::RoutingHandle;

pub mod status;

pub use status::Status;

/// What the admin endpoints read.
pub struct AdminContext {
    pub routing: RoutingHandle,
    pub failback: Failback,
    pub metrics: Arc<crate::metrics::Metrics>,
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
