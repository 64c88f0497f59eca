//! The admin HTTP client of the commands that talk to a running daemon (`status`,
//! `switchover`, `disable`, `enable`, `reload`): one request per call, with a deadline
//! and a size limit on the answer.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::AdminArgs;
use crate::upstream::open_stream;

/// Every admin call is answered within this.
pub(super) const TIMEOUT: Duration = Duration::from_secs(5);
/// /status is small; anything bigger is not ours.
const MAX_STATUS_BYTES: usize = 4 << 20;

/// A mutating admin call (`POST path`); prints the daemon's answer, fails on refusal.
pub async fn call(args: &AdminArgs, path: &str) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --token-file {}", file.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let admin = args.admin.as_str();
    let (status, body) =
        tokio::time::timeout(TIMEOUT, send(admin, Method::POST, path, token.as_deref()))
            .await
            .unwrap_or_else(|_| bail!("no answer within {}", humantime::format_duration(TIMEOUT)))
            .with_context(|| {
                format!("cannot reach the admin API at {admin}: is the daemon running?")
            })?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let message = answer.get("message").and_then(Value::as_str).map_or_else(
        || String::from_utf8_lossy(&body).trim().to_owned(),
        str::to_owned,
    );
    let active = answer
        .get("active")
        .and_then(Value::as_str)
        .unwrap_or("none");
    if !status.is_success() {
        bail!("{status}: {message}");
    }
    println!("{message}; active master: {active}");
    Ok(())
}

pub(super) async fn fetch(admin: &str) -> anyhow::Result<Bytes> {
    let (status, body) = send(admin, Method::GET, "/status", None).await?;
    if !status.is_success() {
        bail!("HTTP {status}");
    }
    Ok(body)
}

/// One request to the admin API; the body is read with a size limit.
async fn send(
    admin: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let uri: Uri = admin
        .parse()
        .with_context(|| format!("--admin {admin:?} is not a URL like http://127.0.0.1:8404"))?;
    if uri.scheme_str().is_some_and(|s| s != "http") {
        bail!("--admin {admin:?}: only http:// is supported");
    }
    let Some(authority) = uri.authority() else {
        bail!("--admin {admin:?} has no host: use a URL like http://127.0.0.1:8404");
    };
    let host_port = match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:80", authority.host()),
    };
    let stream = open_stream(&host_port, TIMEOUT).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority.as_str());
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new())?)
        .await?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_STATUS_BYTES)
        .collect()
        .await
        .map_err(|error| anyhow::anyhow!("reading the body: {error}"))?;
    Ok((status, body.to_bytes()))
}
