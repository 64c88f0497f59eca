//! `proxy.tls.http_redirect_listen`: a clear-text listener that sends every request
//! to the same URL over https (308 keeps the method and body), so that bookmarks and
//! agents configured with http:// keep working once TLS is on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, HOST, LOCATION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::sys::fd_limit::{self, AcceptErrors, Claim, Refusals};

/// Each connection gets one answer, so this bounds the sockets the listener holds.
const MAX_CONNECTIONS: usize = 256;
/// A request head must arrive within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown`; `https_port` is the proxy listener's port.
pub async fn redirect_to_https(
    listener: TcpListener,
    https_port: u16,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut refusals = Refusals::default();
    let mut accept_errors = AcceptErrors::new("proxy.tls.http_redirect_listen");
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_errors.failed(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        if fd_limit::in_reserve(&stream, Claim::Client) {
            refusals.log(|| fd_limit::log_reserve_reached("proxy.tls.http_redirect_listen"));
            continue;
        }
        let service = service_fn(move |request: Request<Incoming>| async move {
            Ok::<_, std::convert::Infallible>(redirect(&request, https_port))
        });
        tokio::spawn(async move {
            let _slot = slot;
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(HEAD_TIMEOUT, connection).await;
        });
    }
}

/// 308 to `https://host[:https_port]/path?query`; 400 without a usable Host.
fn redirect(request: &Request<Incoming>, https_port: u16) -> Response<Full<Bytes>> {
    let target = request
        .headers()
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| {
            location(
                host,
                request.uri().path_and_query().map_or("/", |p| p.as_str()),
                https_port,
            )
        })
        .and_then(|location| HeaderValue::from_str(&location).ok());
    let mut response = Response::new(Full::new(Bytes::new()));
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    match target {
        Some(location) => {
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            response.headers_mut().insert(LOCATION, location);
        }
        None => {
            *response.status_mut() = StatusCode::BAD_REQUEST;
            *response.body_mut() = Full::new(Bytes::from_static(
                b"a Host header is needed to redirect to https\n",
            ));
        }
    }
    response
}

/// The https URL for `host` (its port, if any, replaced) and `path`.
fn location(host: &str, path: &str, https_port: u16) -> Option<String> {
    let name = match host.rfind(']') {
        Some(end) => host.get(..=end)?,
        None => host.split(':').next()?,
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'@')
    {
        return None;
    }
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    Some(format!("https://{name}{port}{path}"))
}

#[cfg(test)]
mod tests {
    use super::location;

    #[test]
    fn locations() {
        assert_eq!(
            location("ci.example.com", "/job/a?x=1", 443).as_deref(),
            Some("https://ci.example.com/job/a?x=1")
        );
        assert_eq!(
            location("ci.example.com:80", "/", 8443).as_deref(),
            Some("https://ci.example.com:8443/")
        );
        assert_eq!(
            location("[::1]:80", "/", 443).as_deref(),
            Some("https://[::1]/")
        );
        assert_eq!(location("", "/", 443), None);
        assert_eq!(location("evil.com/x", "/", 443), None);
        assert_eq!(location("user@evil.com", "/", 443), None);
    }
}
