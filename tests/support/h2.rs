//! An h2c (HTTP/2 over cleartext, prior knowledge) client of the proxy, on hyper.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::net::TcpStream;

use super::DEADLINE;

/// An h2c connection to the proxy with its driver task; `ended` resolves when the
/// proxy closes it.
pub struct Http2Client {
    pub sender: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    pub ended: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl Http2Client {
    pub async fn connect(proxy: SocketAddr) -> Http2Client {
        let stream = TcpStream::connect(proxy).await.expect("connect");
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("h2 handshake");
        Http2Client {
            sender,
            ended: tokio::spawn(connection),
        }
    }

    /// GET `path` on this connection: status and whole body.
    pub async fn get(&mut self, proxy: SocketAddr, path: &str) -> (u16, String) {
        let request = hyper::Request::get(format!("http://{proxy}{path}"))
            .body(Empty::new())
            .expect("request");
        let (status, _, body) = self.send(request).await;
        (status, body)
    }

    /// Sends `request` on this connection: status, headers and whole body.
    pub async fn send(
        &mut self,
        request: hyper::Request<Empty<Bytes>>,
    ) -> (u16, hyper::HeaderMap, String) {
        let response = tokio::time::timeout(DEADLINE, self.sender.send_request(request))
            .await
            .expect("an answer in time")
            .expect("a response on the h2 connection");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("whole body");
        (
            status,
            headers,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        )
    }

    /// Waits for the proxy to close the connection; how long that took.
    pub async fn closed_within(self, limit: Duration) -> Duration {
        let started = Instant::now();
        let ended = tokio::time::timeout(limit, self.ended).await;
        assert!(
            ended.is_ok(),
            "the idle h2c connection was still open after {limit:?}"
        );
        started.elapsed()
    }
}
