//! The WebSocket and TCP test peers on their own, without the proxy: if these fail,
//! the proxy tests that use them cannot be trusted.

#[path = "support/tcp_master.rs"]
mod tcp_master;
#[path = "support/ws_master.rs"]
mod ws_master;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tcp_master::{read_greeting, tcp_closed_within, tcp_exchange, TcpMaster};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use ws_master::{ws_connect, WsMaster};

const DEADLINE: Duration = Duration::from_secs(10);

fn host2() -> SocketAddr {
    ([127, 0, 0, 2], 0).into()
}

fn host3() -> SocketAddr {
    ([127, 0, 0, 3], 0).into()
}

/// Polls `condition` every 10 ms until it is true; panics with `what` after `DEADLINE`.
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// GET on a fresh connection: (status, X-Master, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, Option<String>, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    let request = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let master = response
        .headers()
        .get("x-master")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = response.into_body().collect().await.expect("body");
    let body = String::from_utf8(body.to_bytes().to_vec()).expect("utf-8");
    (status, master, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn ws_master_answers_health_and_plain_requests() {
    let master = WsMaster::start("alpha", host2()).await.expect("start");
    assert_eq!(master.url(), format!("http://{}", master.addr()));
    let (status, who, body) = http_get(master.addr(), "/login").await;
    assert_eq!(
        (status, who.as_deref(), body.as_str()),
        (200, Some("alpha"), "ok")
    );
    let (status, who, body) = http_get(master.addr(), "/job/x/").await;
    assert_eq!(status, 200);
    assert_eq!(who.as_deref(), Some("alpha"));
    assert_eq!(body, "hello from alpha\n");
    assert_eq!(master.total_websockets(), 0);
    assert!(master.last_upgrade_headers().is_none());
}

#[tokio::test]
async fn ws_echo_of_100_messages_both_ways() {
    let master = WsMaster::start("alpha", host2()).await.expect("start");
    let mut client = ws_connect(master.addr(), "/wsagents/", None)
        .await
        .expect("connect");
    assert_eq!(client.master.as_deref(), Some("alpha"));
    // One at a time.
    for i in 0..100 {
        client.send_text(&format!("msg {i}")).await.expect("send");
        let reply = client.recv_text().await.expect("reply");
        assert_eq!(reply, format!("alpha: msg {i}"));
    }
    // All out, then all back, in order.
    for i in 0..100 {
        client.send_text(&format!("burst {i}")).await.expect("send");
    }
    for i in 0..100 {
        let reply = client.recv_text().await.expect("reply");
        assert_eq!(reply, format!("alpha: burst {i}"));
    }
    let data: Vec<u8> = (0..=255).collect();
    client.send_binary(&data).await.expect("send binary");
    assert_eq!(client.recv_binary().await.expect("binary back"), data);
    client.ping(b"are you there").await.expect("pong");
    client.close().await.expect("close handshake");
}

#[tokio::test]
async fn ws_handshake_headers_arrive_and_are_recorded() {
    let master = WsMaster::start("beta", host3()).await.expect("start");
    let origin = "https://jenkins.example.com";
    let client = ws_connect(master.addr(), "/cli/ws", Some(origin))
        .await
        .expect("connect");
    let seen = master.last_upgrade_headers().expect("upgrade recorded");
    assert_eq!(header(&seen, "origin"), Some(origin));
    assert_eq!(header(&seen, "sec-websocket-version"), Some("13"));
    assert_eq!(header(&seen, "upgrade"), Some("websocket"));
    let key = header(&seen, "sec-websocket-key").expect("key sent");
    let accept = header(&client.response_headers, "sec-websocket-accept");
    assert_eq!(accept, Some(derive_accept_key(key.as_bytes()).as_str()));
    assert_eq!(header(&client.response_headers, "x-master"), Some("beta"));
}

#[tokio::test]
async fn open_websockets_counts_sessions_until_the_client_closes() {
    let master = WsMaster::start("alpha", host2()).await.expect("start");
    assert_eq!(master.open_websockets(), 0);
    let mut client = ws_connect(master.addr(), "/wsagents/", None)
        .await
        .expect("connect");
    wait_until("one open websocket", || async {
        master.open_websockets() == 1
    })
    .await;
    assert_eq!(master.total_websockets(), 1);
    client.close().await.expect("close handshake");
    wait_until("no open websocket", || async {
        master.open_websockets() == 0
    })
    .await;
    assert_eq!(master.total_websockets(), 1);
}

#[tokio::test]
async fn ws_stop_closes_open_sessions_and_refuses_new_ones() {
    let master = WsMaster::start("alpha", host2()).await.expect("start");
    let mut client = ws_connect(master.addr(), "/wsagents/", None)
        .await
        .expect("connect");
    client.send_text("hi").await.expect("send");
    assert_eq!(client.recv_text().await.expect("reply"), "alpha: hi");
    master.stop().await;
    assert!(!master.is_running());
    assert!(
        client.is_closed_within(DEADLINE).await,
        "stop() closes the open websocket"
    );
    assert_eq!(master.open_websockets(), 0);
    assert!(TcpStream::connect(master.addr()).await.is_err());
    assert!(ws_connect(master.addr(), "/wsagents/", None).await.is_err());

    master.restart().await.expect("restart");
    let mut client = ws_connect(master.addr(), "/wsagents/", None)
        .await
        .expect("connect after restart");
    client.send_text("again").await.expect("send");
    assert_eq!(client.recv_text().await.expect("reply"), "alpha: again");
    assert_eq!(master.total_websockets(), 2);
}

#[tokio::test]
async fn idle_websocket_stays_open() {
    let master = WsMaster::start("alpha", host2()).await.expect("start");
    let mut client = ws_connect(master.addr(), "/wsagents/", None)
        .await
        .expect("connect");
    assert!(!client.is_closed_within(Duration::from_millis(200)).await);
    client.send_text("still here").await.expect("send");
    assert_eq!(
        client.recv_text().await.expect("reply"),
        "alpha: still here"
    );
}

#[tokio::test]
async fn tcp_greeting_and_echo() {
    let a = TcpMaster::start("alpha", host2())
        .await
        .expect("start alpha");
    let b = TcpMaster::start("beta", host3()).await.expect("start beta");
    for (master, name) in [(&a, "alpha"), (&b, "beta")] {
        let mut stream = TcpStream::connect(master.addr()).await.expect("connect");
        assert_eq!(read_greeting(&mut stream).await.expect("greeting"), name);
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        for msg in [&b"hello"[..], b"\n\0binary\xff", &big] {
            assert_eq!(tcp_exchange(&mut stream, msg).await.expect("echo"), msg);
        }
        assert_eq!(master.open_connections(), 1);
        assert_eq!(master.total_connections(), 1);
        drop(stream);
        wait_until("connection ends after client close", || async {
            master.open_connections() == 0
        })
        .await;
    }
}

#[tokio::test]
async fn tcp_stop_closes_connections_and_restart_serves_again() {
    let master = TcpMaster::start("alpha", host2()).await.expect("start");
    let addr = master.addr();
    let mut first = TcpStream::connect(addr).await.expect("connect");
    let mut second = TcpStream::connect(addr).await.expect("connect");
    for stream in [&mut first, &mut second] {
        assert_eq!(read_greeting(stream).await.expect("greeting"), "alpha");
        assert_eq!(tcp_exchange(stream, b"ping").await.expect("echo"), b"ping");
    }
    assert_eq!(master.open_connections(), 2);

    master.stop().await;
    assert_eq!(master.open_connections(), 0);
    assert!(
        tcp_closed_within(&mut first, DEADLINE).await,
        "first closed"
    );
    assert!(
        tcp_closed_within(&mut second, DEADLINE).await,
        "second closed"
    );
    assert!(TcpStream::connect(addr).await.is_err(), "stopped: refused");

    master.restart().await.expect("restart");
    assert_eq!(master.addr(), addr);
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect after restart");
    assert_eq!(read_greeting(&mut stream).await.expect("greeting"), "alpha");
    assert_eq!(
        tcp_exchange(&mut stream, b"back").await.expect("echo"),
        b"back"
    );
    assert_eq!(master.total_connections(), 3);
}

#[tokio::test]
async fn ws_and_tcp_masters_share_one_host() {
    let http = WsMaster::start("alpha", host2()).await.expect("ws master");
    let agents = TcpMaster::start("alpha", SocketAddr::new(http.addr().ip(), 0))
        .await
        .expect("tcp master");
    assert_eq!(http.addr().ip(), agents.addr().ip());
    assert_ne!(http.addr().port(), agents.addr().port());
    let mut client = ws_connect(http.addr(), "/wsagents/", None)
        .await
        .expect("ws");
    let mut stream = TcpStream::connect(agents.addr()).await.expect("tcp");
    assert_eq!(read_greeting(&mut stream).await.expect("greeting"), "alpha");
    client.send_text("x").await.expect("send");
    assert_eq!(client.recv_text().await.expect("reply"), "alpha: x");
    assert_eq!(tcp_exchange(&mut stream, b"y").await.expect("echo"), b"y");
}
