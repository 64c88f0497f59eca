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

use std::path::Path;

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
    let request = send(
        admin,
        args.cacert.as_deref(),
        Method::POST,
        path,
        token.as_deref(),
    );
    let (status, body) = tokio::time::timeout(TIMEOUT, request)
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

pub(super) async fn fetch(admin: &str, cacert: Option<&Path>) -> anyhow::Result<Bytes> {
    let (status, body) = send(admin, cacert, Method::GET, "/status", None).await?;
    if !status.is_success() {
        bail!("HTTP {status}");
    }
    Ok(body)
}

/// One request to the admin API (http://, or https:// verified with `cacert` or the
/// system's roots); the body is read with a size limit.
async fn send(
    admin: &str,
    cacert: Option<&Path>,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let uri: Uri = admin
        .parse()
        .with_context(|| format!("--admin {admin:?} is not a URL like http://127.0.0.1:8404"))?;
    let tls = match uri.scheme_str() {
        None | Some("http") => false,
        Some("https") => true,
        Some(_) => bail!("--admin {admin:?}: use http:// or https://"),
    };
    let Some(authority) = uri.authority() else {
        bail!("--admin {admin:?} has no host: use a URL like http://127.0.0.1:8404");
    };
    let default_port = if tls { 443 } else { 80 };
    let host_port = match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:{default_port}", authority.host()),
    };
    let stream = open_stream(&host_port, TIMEOUT).await?;
    let mut sender = if tls {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let stream = tls_connect(stream, host, cacert).await?;
        handshake(stream).await?
    } else {
        handshake(stream).await?
    };
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

/// An HTTP/1.1 client connection over `stream`, its driver spawned.
async fn handshake<S>(stream: S) -> anyhow::Result<http1::SendRequest<Empty<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// TLS to an `[admin.tls]` listener at `host`, verified with `cacert` (or the system's
/// roots).
async fn tls_connect(
    stream: tokio::net::TcpStream,
    host: &str,
    cacert: Option<&Path>,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let settings = crate::config::UpstreamTlsConfig {
        ca_file: cacert.map(Path::to_path_buf),
        ..Default::default()
    };
    let tls = crate::tls::UpstreamTls::load(&settings)
        .map_err(|error| anyhow::anyhow!("--cacert: {error}"))?;
    let Some(connector) = tls.for_master(host) else {
        bail!("--admin: {host:?} is neither a host name nor an IP address");
    };
    connector.connect(stream).await.map_err(|error| {
        anyhow::anyhow!("TLS with the admin API at {host}: {error} (give its CA with --cacert)")
    })
}
