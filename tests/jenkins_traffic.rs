//! Issue #3: everything Jenkins sends through a proxy follows the active master, and
//! nothing stays behind on a demoted one.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use jenkins_ha_proxy::config::{Failback, TcpConfig};
use jenkins_ha_proxy::sample::SampleMaster;
use support::tcp_master::{
    agents_forward, read_greeting, tcp_closed_within, tcp_exchange, TcpMaster,
};
use support::ws_master::{ws_connect, WsMaster};
use support::{config_for, get, health, send, wait_until, TestDaemon, DEADLINE};
use tokio::net::TcpStream;

fn at(ip: &str) -> SocketAddr {
    format!("{ip}:0").parse().expect("addr")
}

async fn backend_count(daemon: &TestDaemon, index: usize, field: &str) -> u64 {
    daemon.status().await["backends"][index][field]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// Two WebSocket-capable masters; master-b (first in file order) starts stopped, so
/// master-a is active; with failback "auto", restarting master-b demotes master-a
/// while it is still alive: exactly the case the drain exists for.
async fn ws_pair(drain: Duration) -> (WsMaster, WsMaster, TestDaemon) {
    let a = WsMaster::start("master-a", at("127.0.0.2"))
        .await
        .expect("master-a");
    let b = WsMaster::start("master-b", at("127.0.0.3"))
        .await
        .expect("master-b");
    b.stop().await;
    let mut config = config_for(&[], health(50, 2, 2), Failback::Auto);
    config.backends = support::backends(&[("master-b", b.addr()), ("master-a", a.addr())]);
    config.failover.drain_timeout = drain;
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    (a, b, daemon)
}

#[tokio::test]
async fn websocket_echo_then_drained_after_failover_and_reconnects_to_the_new_master() {
    let drain = Duration::from_millis(600);
    let (a, b, daemon) = ws_pair(drain).await;
    let mut ws = ws_connect(daemon.proxy, "/wsagents/", Some("http://ci.example.com"))
        .await
        .expect("websocket through the proxy");
    assert_eq!(ws.master.as_deref(), Some("master-a"));
    for i in 0..200 {
        ws.send_text(&format!("m{i}")).await.expect("send");
        assert_eq!(
            ws.recv_text().await.expect("echo"),
            format!("master-a: m{i}")
        );
    }
    let seen = a.last_upgrade_headers().expect("upgrade request seen");
    let header = |name: &str| seen.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(header("origin").as_deref(), Some("http://ci.example.com"));
    assert!(header("sec-websocket-key").is_some());
    wait_until("/status counts the tunnel", || async {
        backend_count(&daemon, 1, "tunnels").await == 1
    })
    .await;

    b.restart().await.expect("restart master-b");
    daemon.wait_active(Some("master-b")).await;
    let switched = Instant::now();
    // Still usable right after the switch: the drain waits `drain_timeout`.
    ws.send_text("after switch")
        .await
        .expect("send after switch");
    assert_eq!(
        ws.recv_text().await.expect("echo"),
        "master-a: after switch"
    );
    assert!(
        ws.is_closed_within(DEADLINE).await,
        "the drain closes the tunnel"
    );
    let closed_after = switched.elapsed();
    assert!(
        closed_after + Duration::from_millis(150) >= drain,
        "closed {closed_after:?} after the switch, before drain_timeout {drain:?}"
    );
    wait_until("tunnel count back to 0", || async {
        backend_count(&daemon, 1, "tunnels").await == 0
    })
    .await;
    wait_until("master-a sees its websocket closed", || async {
        a.open_websockets() == 0
    })
    .await;

    let mut again = ws_connect(daemon.proxy, "/wsagents/", None)
        .await
        .expect("reconnect");
    assert_eq!(again.master.as_deref(), Some("master-b"));
    again.send_text("hello").await.expect("send");
    assert_eq!(again.recv_text().await.expect("echo"), "master-b: hello");
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_quiet_tunnel_is_closed_by_tunnel_idle_timeout_but_a_busy_one_is_not() {
    let a = WsMaster::start("master-a", at("127.0.0.2"))
        .await
        .expect("master-a");
    let mut config = config_for(&[], health(100, 2, 3), Failback::Never);
    config.backends = support::backends(&[("master-a", a.addr())]);
    config.proxy.tunnel_idle_timeout = Some(Duration::from_millis(400));
    let daemon = TestDaemon::start_with_active(config, "master-a").await;

    let mut busy = ws_connect(daemon.proxy, "/wsagents/", None)
        .await
        .expect("busy");
    let mut quiet = ws_connect(daemon.proxy, "/wsagents/", None)
        .await
        .expect("quiet");
    let started = Instant::now();
    // Traffic every 100 ms for three idle periods keeps the busy tunnel open.
    while started.elapsed() < Duration::from_millis(1200) {
        busy.send_text("ping")
            .await
            .expect("busy tunnel still open");
        assert_eq!(busy.recv_text().await.expect("echo"), "master-a: ping");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        quiet.is_closed_within(DEADLINE).await,
        "the quiet tunnel is closed"
    );
    busy.send_text("still here")
        .await
        .expect("busy tunnel open");
    assert_eq!(
        busy.recv_text().await.expect("echo"),
        "master-a: still here"
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn full_duplex_upload_and_download_interleave() {
    let a = SampleMaster::start("master-a", at("127.0.0.2"))
        .await
        .expect("master-a");
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a], health(100, 2, 3), Failback::Never),
        "master-a",
    )
    .await;
    let stream = TcpStream::connect(daemon.proxy).await.expect("connect");
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let (chunks, body) = support::channel_body();
    let request = Request::post("/echo")
        .header("host", "proxy")
        .body(body)
        .expect("request");
    let response = sender
        .send_request(request)
        .await
        .expect("response head before the upload ends");
    assert_eq!(response.status(), StatusCode::OK);
    let mut download = response.into_body();
    // Each upload chunk is answered on the download stream before the next is sent.
    for i in 0..50 {
        let chunk = Bytes::from(format!("chunk {i};"));
        chunks.send(chunk.clone()).await.expect("upload chunk");
        let mut echoed = Vec::new();
        while echoed.len() < chunk.len() {
            let frame = tokio::time::timeout(DEADLINE, download.frame())
                .await
                .expect("echo within the deadline")
                .expect("a frame")
                .expect("frame ok");
            if let Ok(data) = frame.into_data() {
                echoed.extend_from_slice(&data);
            }
        }
        assert_eq!(echoed, chunk);
    }
    drop(chunks);
    assert!(download.frame().await.is_none_or(|f| f.is_ok()));
    daemon.shutdown().await;
}

#[tokio::test]
async fn response_idle_timeout_ends_a_silent_response() {
    let a = SampleMaster::start("master-a", at("127.0.0.2"))
        .await
        .expect("master-a");
    let mut config = config_for(&[&a], health(100, 2, 3), Failback::Never);
    config.proxy.response_idle_timeout = Some(Duration::from_millis(300));
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    let started = Instant::now();
    // 2 chunks 5 s apart: the proxy gives up on the silence long before.
    let outcome = get(daemon.proxy, "/slow?chunks=2&delay_ms=5000").await;
    assert!(
        outcome.is_err(),
        "the response must end in an error, got {:?}",
        outcome.map(|r| r.text())
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    // A response that keeps flowing is not affected.
    let reply = get(daemon.proxy, "/slow?chunks=5&delay_ms=100")
        .await
        .expect("flowing response");
    assert_eq!(reply.text().lines().count(), 5);
    daemon.shutdown().await;
}

#[tokio::test]
async fn jnlp_headers_are_rewritten_to_the_proxy() {
    let a = SampleMaster::start("master-a", at("127.0.0.2"))
        .await
        .expect("master-a");
    a.set_agent_port(50000);
    let mut config = config_for(&[&a], health(100, 2, 3), Failback::Never);
    config.tcp = vec![agents_forward(50000)];
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    let agent_port = daemon.tcp[0].port();
    let request = Request::get("/tcpSlaveAgentListener/")
        .header("host", "ci.example.com:8080")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(daemon.proxy, request).await.expect("reply");
    assert_eq!(reply.status, StatusCode::OK);
    let header = |name: &str| {
        reply
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let expected_port = agent_port.to_string();
    assert_eq!(
        header("x-jenkins-jnlp-port").as_deref(),
        Some(expected_port.as_str())
    );
    assert_eq!(
        header("x-hudson-jnlp-port").as_deref(),
        Some(expected_port.as_str())
    );
    assert_eq!(
        header("x-jenkins-cli-port").as_deref(),
        Some(expected_port.as_str())
    );
    assert_eq!(
        header("x-jenkins-jnlp-host").as_deref(),
        Some("ci.example.com")
    );
    assert_eq!(
        header("x-jenkins-agent-protocols").as_deref(),
        Some("JNLP4-connect, Ping")
    );
    daemon.shutdown().await;
}

/// HTTP masters on 127.0.0.2 and 127.0.0.3, and TCP echo masters on the same hosts and
/// the same port: like two Jenkins hosts that both serve agents on one port.
async fn tcp_pair(
    drain: Duration,
) -> (SampleMaster, SampleMaster, TcpMaster, TcpMaster, TestDaemon) {
    let a = SampleMaster::start("master-a", at("127.0.0.2"))
        .await
        .expect("master-a");
    let b = SampleMaster::start("master-b", at("127.0.0.3"))
        .await
        .expect("master-b");
    let (tcp_a, tcp_b) = same_port_pair().await;
    let mut config = config_for(&[&a, &b], health(50, 2, 2), Failback::Never);
    config.failover.drain_timeout = drain;
    config.tcp = vec![agents_forward(tcp_a.addr().port())];
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    (a, b, tcp_a, tcp_b, daemon)
}

/// Binds a TCP master on 127.0.0.2 and another on 127.0.0.3 with the same port.
async fn same_port_pair() -> (TcpMaster, TcpMaster) {
    for _ in 0..20 {
        let first = TcpMaster::start("tcp-a", at("127.0.0.2"))
            .await
            .expect("tcp-a");
        let port = first.addr().port();
        let second = format!("127.0.0.3:{port}").parse().expect("addr");
        if let Ok(second) = TcpMaster::start("tcp-b", second).await {
            return (first, second);
        }
        first.stop().await;
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

#[tokio::test]
async fn tcp_listener_follows_the_active_master_and_drains_old_connections() {
    let drain = Duration::from_millis(500);
    let (a, _b, tcp_a, tcp_b, daemon) = tcp_pair(drain).await;
    let listener = daemon.tcp[0];
    let mut old = TcpStream::connect(listener).await.expect("connect");
    assert_eq!(read_greeting(&mut old).await.expect("greeting"), "tcp-a");
    assert_eq!(
        tcp_exchange(&mut old, b"hello agent").await.expect("echo"),
        b"hello agent"
    );
    wait_until("/status counts the forward", || async {
        backend_count(&daemon, 0, "tcp_connections").await == 1
    })
    .await;

    a.set_healthy(false);
    daemon.wait_active(Some("master-b")).await;
    let mut new = TcpStream::connect(listener).await.expect("connect");
    assert_eq!(read_greeting(&mut new).await.expect("greeting"), "tcp-b");
    assert_eq!(tcp_exchange(&mut new, b"x").await.expect("echo"), b"x");
    // The old forward still works until the drain, then is closed.
    assert_eq!(
        tcp_exchange(&mut old, b"still").await.expect("echo"),
        b"still"
    );
    assert!(tcp_closed_within(&mut old, DEADLINE).await, "drained");
    wait_until("tcp-a sees the close", || async {
        tcp_a.open_connections() == 0
    })
    .await;
    assert_eq!(tcp_b.open_connections(), 1);
    daemon.shutdown().await;
}

#[tokio::test]
async fn tcp_connect_failure_moves_to_the_next_master() {
    let (_a, _b, tcp_a, _tcp_b, daemon) = tcp_pair(Duration::from_secs(10)).await;
    tcp_a.stop().await;
    let mut stream = TcpStream::connect(daemon.tcp[0]).await.expect("connect");
    assert_eq!(read_greeting(&mut stream).await.expect("greeting"), "tcp-b");
    assert_eq!(daemon.active().await.as_deref(), Some("master-b"));
    daemon.shutdown().await;
}

/// A slow request (`target`) is in flight on master-a when master-a is demoted
/// (its health fails); returns both masters, the daemon, and how the request ended.
async fn slow_request_across_a_failover(
    drain: Duration,
    target: &'static str,
) -> (
    [SampleMaster; 2],
    TestDaemon,
    Result<support::Reply, String>,
) {
    let a = SampleMaster::start("master-a", at("127.0.0.2"))
        .await
        .expect("master-a");
    let b = SampleMaster::start("master-b", at("127.0.0.3"))
        .await
        .expect("master-b");
    let mut config = config_for(&[&a, &b], health(50, 2, 2), Failback::Never);
    config.failover.drain_timeout = drain;
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    let proxy = daemon.proxy;
    let slow = tokio::spawn(async move { get(proxy, target).await });
    wait_until("the slow request reached master-a", || async {
        a.requests().iter().any(|r| r.target.starts_with("/slow"))
    })
    .await;
    a.set_healthy(false);
    daemon.wait_active(Some("master-b")).await;
    let outcome = tokio::time::timeout(DEADLINE, slow)
        .await
        .expect("the request ends")
        .expect("task");
    ([a, b], daemon, outcome)
}

#[tokio::test]
async fn in_flight_request_on_the_demoted_master_finishes_within_the_drain() {
    // 5 chunks, 150 ms apart: it outlives the failover but not the drain timeout.
    let (_masters, daemon, outcome) =
        slow_request_across_a_failover(Duration::from_secs(3), "/slow?chunks=5&delay_ms=150").await;
    let reply = outcome.expect("the in-flight request completes");
    assert_eq!(reply.master(), Some("master-a"));
    assert_eq!(reply.text().lines().count(), 5);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_request_outliving_the_drain_is_cut() {
    let (_masters, daemon, outcome) =
        slow_request_across_a_failover(Duration::from_millis(200), "/slow?chunks=3&delay_ms=3000")
            .await;
    assert!(
        outcome.is_err(),
        "the drain must cut it: {:?}",
        outcome.map(|r| r.text())
    );
    wait_until("no connection left on master-a", || async {
        backend_count(&daemon, 0, "open_connections").await == 0
    })
    .await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn cli_session_split_by_a_failover_fails_fast_and_never_reaches_another_master() {
    let a = SampleMaster::start("master-a", at("127.0.0.2"))
        .await
        .expect("master-a");
    let b = SampleMaster::start("master-b", at("127.0.0.3"))
        .await
        .expect("master-b");
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a, &b], health(50, 2, 2), Failback::Never),
        "master-a",
    )
    .await;
    let cli = |side: &str, session: &str| {
        Request::post("/cli?remoting=false")
            .header("host", "proxy")
            .header("session", session)
            .header("side", side)
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    // A whole call on one master pairs fine.
    assert_eq!(
        send(daemon.proxy, cli("download", "s-1"))
            .await
            .expect("reply")
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(daemon.proxy, cli("upload", "s-1"))
            .await
            .expect("reply")
            .status,
        StatusCode::OK
    );
    // A call split by a failover: the second side is refused, and master-b never sees it.
    assert_eq!(
        send(daemon.proxy, cli("download", "s-2"))
            .await
            .expect("reply")
            .status,
        StatusCode::OK
    );
    a.set_healthy(false);
    daemon.wait_active(Some("master-b")).await;
    let reply = send(daemon.proxy, cli("upload", "s-2"))
        .await
        .expect("reply");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.text().contains("started on master-a"),
        "{}",
        reply.text()
    );
    assert!(!b
        .requests()
        .iter()
        .any(|r| r.header("session") == Some("s-2")));
    daemon.shutdown().await;
}

#[tokio::test]
async fn large_upload_and_download_stream_through() {
    let a = SampleMaster::start("master-a", at("127.0.0.2"))
        .await
        .expect("master-a");
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a], health(100, 2, 3), Failback::Never),
        "master-a",
    )
    .await;
    const SIZE: u64 = 64 << 20;
    let stream = TcpStream::connect(daemon.proxy).await.expect("connect");
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let response = sender
        .send_request(
            Request::get(format!("/bytes?n={SIZE}"))
                .header("host", "proxy")
                .body(support::channel_body().1)
                .expect("request"),
        )
        .await
        .expect("response");
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame
            .expect("frame")
            .into_data()
            .map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, SIZE);

    let (chunks, upload) = support::channel_body();
    let request = Request::post("/upload")
        .header("host", "proxy")
        .body(upload)
        .expect("request");
    let pending = tokio::spawn(async move { sender.send_request(request).await });
    let block = Bytes::from(vec![b'u'; 256 << 10]);
    for _ in 0..(SIZE / block.len() as u64) {
        chunks.send(block.clone()).await.expect("upload chunk");
    }
    drop(chunks);
    let response = pending.await.expect("task").expect("response");
    let text = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&text),
        format!("received {SIZE} bytes\n")
    );
    daemon.shutdown().await;
}

/// Defect 6 (issue 12): `[[tcp]]` listeners had no cap, so 520 idle forwards took
/// the process to its open-file limit and HTTP requests got 503. Now a listener
/// carries at most its `max_connections` forwards; more are closed at once, and a
/// forward that ends frees its place.
#[tokio::test]
async fn a_tcp_listener_carries_at_most_its_max_connections() {
    let a = SampleMaster::start("master-a", at("127.0.0.2"))
        .await
        .expect("master-a");
    let tcp_a = TcpMaster::start("tcp-a", at("127.0.0.2"))
        .await
        .expect("tcp-a");
    let mut config = config_for(&[&a], health(100, 1, 3), Failback::Never);
    config.tcp = vec![TcpConfig {
        max_connections: 3,
        ..agents_forward(tcp_a.addr().port())
    }];
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    let listener = daemon.tcp[0];
    let mut forwards = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(listener).await.expect("connect");
        assert_eq!(read_greeting(&mut stream).await.expect("greeting"), "tcp-a");
        forwards.push(stream);
    }
    // The fourth and fifth are closed at once; nothing reaches the master for them.
    for _ in 0..2 {
        let mut extra = TcpStream::connect(listener).await.expect("connect");
        assert!(
            tcp_closed_within(&mut extra, DEADLINE).await,
            "over the cap"
        );
    }
    assert_eq!(tcp_a.total_connections(), 3);
    // One ends: its place is free again.
    drop(forwards.pop());
    wait_until("the ended forward to be counted out", || async {
        backend_count(&daemon, 0, "tcp_connections").await == 2
    })
    .await;
    let mut again = TcpStream::connect(listener).await.expect("connect");
    assert_eq!(read_greeting(&mut again).await.expect("greeting"), "tcp-a");
    assert_eq!(
        tcp_exchange(&mut again, b"ping").await.expect("echo"),
        b"ping"
    );
    // HTTP is served throughout.
    let reply = get(daemon.proxy, "/beside-tcp").await.expect("GET");
    assert_eq!(reply.status, StatusCode::OK);
    daemon.shutdown().await;
}

/// A CLI call whose first request finds the active master dead (connection refused)
/// is sent on to the new active master: that is where the session starts, so its
/// second request pairs there. (The request path checked the session again on the
/// retry, and refused the first request as "moved".)
#[tokio::test]
async fn a_cli_call_whose_first_request_fails_over_pairs_on_the_new_master() {
    let a = SampleMaster::start("master-a", at("127.0.0.2"))
        .await
        .expect("master-a");
    let b = SampleMaster::start("master-b", at("127.0.0.3"))
        .await
        .expect("master-b");
    // Checks rare enough that the refused connect, not a check, finds master-a dead.
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a, &b], health(1_000, 1, 3), Failback::Never),
        "master-a",
    )
    .await;
    let cli = |side: &str| {
        Request::post("/cli?remoting=false")
            .header("host", "proxy")
            .header("session", "s-moved")
            .header("side", side)
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    a.stop().await;
    for side in ["download", "upload"] {
        let reply = send(daemon.proxy, cli(side)).await.expect("reply");
        assert_eq!(reply.status, StatusCode::OK, "{side}: {}", reply.text());
        assert_eq!(reply.master(), Some("master-b"), "{side}");
    }
    assert_eq!(daemon.active().await.as_deref(), Some("master-b"));
    daemon.shutdown().await;
}
