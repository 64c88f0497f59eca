//! The few Jenkins REST calls promotion needs (`quietDown`, `cancelQuietDown`,
//! `reload`), and the JSON API reads of active-active mode's load pollers, with HTTP
//! basic auth from an API token (no crumb needed).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::sys::small_file::SecretError;
use crate::upstream::Upstream;

/// Credentials for REST calls; Debug never shows the token.
#[derive(Clone)]
pub struct Credentials {
    header: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

impl Credentials {
    /// `user` and the API token read from `token_file`.
    pub fn load(user: &str, token_file: &Path) -> Result<Credentials, SecretError> {
        let token = crate::sys::small_file::read_secret("jenkins.api_token_file", token_file)?;
        Ok(Credentials {
            header: format!("Basic {}", base64(format!("{user}:{token}").as_bytes())),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{path} on {authority}: {message}")]
    Failed {
        path: String,
        authority: String,
        message: String,
    },
}

/// `POST path` on the master (over TLS for an `https://` one); 2xx and 3xx (Jenkins
/// redirects after these calls) count as success.
pub async fn post(
    upstream: &Upstream,
    path: &str,
    credentials: Option<&Credentials>,
    timeout: Duration,
) -> Result<StatusCode, CallError> {
    let call = async {
        let (response, _connection) =
            request(upstream, Method::POST, path, credentials, timeout).await?;
        Ok(response.status())
    };
    let status = within(upstream, path, timeout, call).await?;
    tracing::info!(authority = upstream.authority(), path, %status, "Jenkins REST call");
    if status.is_success() || status.is_redirection() {
        Ok(status)
    } else {
        Err(failed(upstream, path, format!("HTTP {status}")))
    }
}

/// Largest JSON answer [`get_json`] reads (a `/computer/api/json` of thousands of
/// agents stays well below it).
const JSON_LIMIT: usize = 4 * 1024 * 1024;

/// `GET path` on the master (over TLS for an `https://` one), its 200 answer parsed
/// as JSON; anything else (no answer within `timeout`, another status, not JSON)
/// is an error that says what happened.
pub async fn get_json(
    upstream: &Upstream,
    path: &str,
    credentials: Option<&Credentials>,
    timeout: Duration,
) -> Result<serde_json::Value, CallError> {
    use http_body_util::BodyExt;
    let call = async {
        let (response, _connection) =
            request(upstream, Method::GET, path, credentials, timeout).await?;
        if response.status() != StatusCode::OK {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = http_body_util::Limited::new(response.into_body(), JSON_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
    };
    within(upstream, path, timeout, call).await
}

/// Whether the master is in quiet-down (`GET /api/json?tree=quietingDown`); None
/// when it cannot be told (no answer, not JSON).
pub async fn quieting_down(
    upstream: &Upstream,
    credentials: Option<&Credentials>,
    timeout: Duration,
) -> Option<bool> {
    let json = get_json(
        upstream,
        "/api/json?tree=quietingDown",
        credentials,
        timeout,
    )
    .await
    .ok()?;
    json.get("quietingDown")?.as_bool()
}

/// One request without a body on a connection of its own to the master (TLS for an
/// `https://` one), with our User-Agent and the credentials: the response head, and
/// the connection, driven until the returned guard is dropped (its body read).
async fn request(
    upstream: &Upstream,
    method: Method,
    path: &str,
    credentials: Option<&Credentials>,
    timeout: Duration,
) -> Result<(Response<Incoming>, Connection), String> {
    let stream = upstream
        .open_control(timeout)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let connection = Connection(tokio::spawn(connection));
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, upstream.authority())
        .header(hyper::header::USER_AGENT, "jenkins-ha-proxy");
    if let Some(credentials) = credentials {
        request = request.header(hyper::header::AUTHORIZATION, credentials.header.as_str());
    }
    let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok((response, connection))
}

/// The task driving a REST call's connection: stopped (the socket closed) when dropped.
struct Connection(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `call` bounded by `timeout`; its failure, or the timeout, as a [`CallError`].
async fn within<T>(
    upstream: &Upstream,
    path: &str,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, CallError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| {
            let waited = humantime::format_duration(timeout);
            failed(upstream, path, format!("no answer within {waited}"))
        })?
        .map_err(|message| failed(upstream, path, message))
}

fn failed(upstream: &Upstream, path: &str, message: String) -> CallError {
    CallError::Failed {
        path: path.to_owned(),
        authority: upstream.authority().to_owned(),
        message,
    }
}

/// Standard base64 (RFC 4648) with padding: all basic auth needs.
fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("admin:11aa", "YWRtaW46MTFhYQ=="),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
    }
}
