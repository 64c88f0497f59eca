//! The request path: streaming both ways, headers, byte-for-byte targets, HTTP/2.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jenkins_ha_proxy::config::Failback;
use jenkins_ha_proxy::sample::SampleMaster;
use support::{config_for, health, send, wait_until, TestDaemon};
use tokio::net::TcpStream;

async fn one_master() -> (SampleMaster, TestDaemon) {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a");
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a], health(100, 2, 3), Failback::Never),
        "master-a",
    )
    .await;
    (a, daemon)
}

#[tokio::test]
async fn slow_chunked_response_streams_chunk_by_chunk() {
    let (_a, daemon) = one_master().await;
    let stream = TcpStream::connect(daemon.proxy).await.expect("connect");
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    // The master sends "chunk 0" at once, then waits 3 s before the next one.
    let request = Request::get("/slow?chunks=2&delay_ms=3000")
        .header("host", "proxy")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let started = Instant::now();
    let response = sender.send_request(request).await.expect("response head");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = loop {
        let frame = body.frame().await.expect("a frame").expect("frame ok");
        if let Ok(data) = frame.into_data() {
            break data;
        }
    };
    let waited = started.elapsed();
    assert_eq!(&first[..], b"chunk 0\n");
    assert!(
        waited < Duration::from_millis(2500),
        "first chunk took {waited:?}: the proxy held it back until the master sent more"
    );
}

#[tokio::test]
async fn request_body_is_streamed_upstream_as_it_arrives() {
    let (a, daemon) = one_master().await;
    let stream = TcpStream::connect(daemon.proxy).await.expect("connect");
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let (chunks, body) = support::channel_body();
    let request = Request::post("/upload")
        .header("host", "proxy")
        .body(body)
        .expect("request");
    let response = tokio::spawn(async move { sender.send_request(request).await });

    let part = vec![b'x'; 256 * 1024];
    chunks
        .send(Bytes::from(part.clone()))
        .await
        .expect("send part 1");
    // The master must see the first part before we send the rest.
    wait_until("master received the first part", || async {
        a.upload_bytes() >= part.len() as u64
    })
    .await;
    chunks
        .send(Bytes::from(part.clone()))
        .await
        .expect("send part 2");
    drop(chunks);
    let response = response.await.expect("task").expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&text),
        format!("received {} bytes\n", 2 * part.len())
    );
}

#[tokio::test]
async fn headers_are_forwarded_as_jenkins_needs_them() {
    let (a, daemon) = one_master().await;
    let target = "/job/folder%2Fname/api/json?tree=jobs%5Bname%5D&x=a+b";
    let request = Request::get(target)
        .header("host", "ci.example.com:8080")
        .header("connection", "keep-alive, X-Hop")
        .header("x-hop", "private")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("origin", "http://ci.example.com:8080")
        .header("x-forwarded-for", "198.51.100.9")
        .header("cookie", "JSESSIONID=abc")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(daemon.proxy, request).await.expect("reply");
    assert_eq!(reply.status, StatusCode::OK);
    let seen = a
        .requests()
        .into_iter()
        .find(|r| r.target.starts_with("/job/"))
        .expect("the master saw the request");
    assert_eq!(
        seen.target, target,
        "the target goes upstream byte for byte"
    );
    assert_eq!(seen.header("host"), Some("ci.example.com:8080"));
    assert_eq!(seen.header("origin"), Some("http://ci.example.com:8080"));
    assert_eq!(seen.header("cookie"), Some("JSESSIONID=abc"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("198.51.100.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("ci.example.com:8080"));
    assert_eq!(seen.header("x-forwarded-port"), Some("8080"));
    for hop in ["x-hop", "keep-alive", "proxy-authorization"] {
        assert_eq!(seen.header(hop), None, "{hop} must not be forwarded");
    }
    assert_ne!(seen.header("connection"), Some("keep-alive, X-Hop"));
}

#[tokio::test]
async fn http2_cleartext_clients_are_served() {
    let (a, daemon) = one_master().await;
    let stream = TcpStream::connect(daemon.proxy).await.expect("connect");
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    let request = Request::get(format!("http://{}/view/all/", daemon.proxy))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let seen = a
        .requests()
        .into_iter()
        .find(|r| r.target == "/view/all/")
        .expect("the master saw the request");
    assert_eq!(seen.version, "HTTP/1.1");
    assert_eq!(seen.header("host"), Some(daemon.proxy.to_string().as_str()));
}

#[tokio::test]
async fn connect_and_absolute_form_are_refused() {
    let (a, daemon) = one_master().await;
    let request = Request::get(format!("http://{}/", a.addr()))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(daemon.proxy, request).await.expect("reply");
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.traffic_count(), 0);
}
