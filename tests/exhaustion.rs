//! Hostile clients, round two: no client may move traffic or exhaust the daemon.
//! HTTP/2 floods against a master with Jenkins' short accept queue, streams and
//! connections per master capped, HTTP/2 clients that ignore PING, header limits
//! over HTTP/2, and the admin listener's own limits. Each test is a defect an attack
//! run found (issue 12), reproduced as it was measured.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper::{Request, Response};
use jenkins_ha_proxy::config::{Config, Failback};
use jenkins_ha_proxy::sample::SampleMaster;
use support::h2::Http2Client;
use support::{config_for, get, health, TestDaemon, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A master that listens with Jetty's accept queue (Java's default backlog, 50) and
/// answers every request but its health path after `delay`, counting how many
/// connections that carried traffic (not only health checks) it has open at once.
struct SlowMaster {
    addr: SocketAddr,
    /// The most traffic connections seen open at once.
    peak: Arc<AtomicUsize>,
}

/// Jenkins' Jetty listens with Java's default backlog.
const JETTY_BACKLOG: u32 = 50;
/// Time the master takes to accept each connection.
const ACCEPT_PACE: Duration = Duration::from_millis(1);

impl SlowMaster {
    async fn start(delay: Duration) -> SlowMaster {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket.listen(JETTY_BACKLOG).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let (open, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let highest = Arc::clone(&peak);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // A busy acceptor thread, as Jetty's under load: a burst of new
                // connections fills the queue and SYNs are dropped.
                tokio::time::sleep(ACCEPT_PACE).await;
                let (open, highest) = (Arc::clone(&open), Arc::clone(&highest));
                // Counted from its first request that is not a health check.
                let traffic = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let seen = Arc::clone(&traffic);
                let counted = Arc::clone(&open);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<_>| {
                        let (open, highest, seen) =
                            (Arc::clone(&open), Arc::clone(&highest), Arc::clone(&seen));
                        async move {
                            if request.uri().path() != "/login" {
                                if !seen.swap(true, Ordering::SeqCst) {
                                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                                    highest.fetch_max(now, Ordering::SeqCst);
                                }
                                tokio::time::sleep(delay).await;
                            }
                            let mut response = Response::new(Full::new(Bytes::from_static(
                                b"hello from the slow master\n",
                            )));
                            response.headers_mut().insert(
                                "x-master",
                                hyper::header::HeaderValue::from_static("slow"),
                            );
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                    if traffic.load(Ordering::SeqCst) {
                        counted.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        SlowMaster { addr, peak }
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// The slow master as master-a (preferred), a sample master-b, the daemon with
/// master-a active; `adjust` changes the config first.
async fn slow_pair(
    delay: Duration,
    adjust: impl FnOnce(&mut Config),
) -> (SlowMaster, SampleMaster, TestDaemon) {
    let a = SlowMaster::start(delay).await;
    let b = SampleMaster::start("master-b", "127.0.0.3:0".parse().expect("addr"))
        .await
        .expect("master-b");
    let mut config = config_for(&[], health(200, 1, 3), Failback::Never);
    config.backends = support::backends(&[("master-a", a.addr), ("master-b", b.addr())]);
    adjust(&mut config);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    (a, b, daemon)
}

/// `count` GETs at once on one h2c connection; the status and body of each. One
/// request goes first, so the client knows the proxy's stream limit before the
/// burst (streams opened before the SETTINGS arrive may be refused, as RFC 9113 lets
/// a server do; real clients then retry them).
async fn h2_burst(proxy: SocketAddr, count: usize, marker: String) -> Vec<(u16, String)> {
    let mut client = Http2Client::connect(proxy).await;
    let (status, body) = client.get(proxy, "/login").await;
    assert_eq!(status, 200, "{body}");
    let requests = (0..count).map(|i| {
        let mut sender = client.sender.clone();
        let request = Request::get(format!("http://{proxy}/{marker}-{i}"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        async move {
            use http_body_util::BodyExt;
            let response = sender.send_request(request).await.expect("an h2 response");
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    });
    tokio::time::timeout(DEADLINE, futures_util::future::join_all(requests))
        .await
        .expect("every stream answered within the deadline")
}

/// The election did not move: master-a active since the first election.
async fn assert_no_failover(daemon: &TestDaemon) {
    let state = daemon.status().await;
    assert_eq!(state["active"], "master-a", "{state:#}");
    assert_eq!(state["failovers"], 0, "{state:#}");
    assert_eq!(
        state["transitions"].as_array().map(Vec::len),
        Some(1),
        "only the first election, no master marked down: {state:#}"
    );
}

/// Defect 1: ten h2c connections each asking for 200 slow pages at once made the
/// proxy open 2000 connections to a master whose accept queue holds 50; the SYNs it
/// dropped timed out and the proxy reported the healthy master down (and would have
/// fenced it). Now connects in flight per master are capped below its queue, a
/// timed-out connect never demotes a master, and every request is served by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_flood_of_slow_requests_never_fails_over_a_healthy_master() {
    let (a, _b, daemon) = slow_pair(Duration::from_millis(200), |_| {}).await;
    let started = Instant::now();
    let bursts = (0..10).map(|client| h2_burst(daemon.proxy, 200, format!("flood-{client}")));
    let replies: Vec<(u16, String)> = futures_util::future::join_all(bursts)
        .await
        .into_iter()
        .flatten()
        .collect();
    eprintln!(
        "2000 streams served in {:?}; the master saw at most {} connections at once",
        started.elapsed(),
        a.peak()
    );
    assert_eq!(replies.len(), 2000);
    for (status, body) in &replies {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body, "hello from the slow master\n");
    }
    assert_no_failover(&daemon).await;
    assert!(
        a.peak() <= jenkins_ha_proxy::config::DEFAULT_BACKEND_MAX_CONNECTIONS,
        "{} connections to one master",
        a.peak()
    );
    daemon.shutdown().await;
}

/// Defect 4: each HTTP/2 stream took a connection to the master of its own, 200 per
/// client connection, so five clients exhausted the descriptors. Now one client
/// connection has at most `proxy.http2_max_streams` streams, and the proxy at most
/// `[[backend]] max_connections` connections to a master: requests beyond wait for
/// one to come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_and_connections_to_a_master_are_capped() {
    let (a, _b, daemon) = slow_pair(Duration::from_millis(150), |config| {
        config.proxy.http2_max_streams = 10;
        config.backends[0].max_connections = 20;
        config.backends[0].max_connects = 4;
    })
    .await;
    // One client asking for 50 streams at once: 10 run at a time.
    for (status, body) in h2_burst(daemon.proxy, 50, "streams".into()).await {
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        a.peak() <= 10,
        "one h2 connection had {} streams open",
        a.peak()
    );
    // Five clients, 50 streams running at once: 20 connections at most.
    let bursts = (0..5).map(|client| h2_burst(daemon.proxy, 10, format!("conns-{client}")));
    for (status, body) in futures_util::future::join_all(bursts)
        .await
        .into_iter()
        .flatten()
    {
        assert_eq!(status, 200, "{body}");
    }
    assert!(a.peak() <= 20, "{} connections to master-a", a.peak());
    let state = daemon.status().await;
    let open = state["backends"][0]["open_connections"]
        .as_u64()
        .expect("count");
    assert!(open <= 20, "{state:#}");
    assert_no_failover(&daemon).await;
    daemon.shutdown().await;
}

/// When every connection a master may have stays busy past `failover.hold_timeout`,
/// a request gets 503 with Retry-After, and the master is not blamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_finds_every_master_connection_busy_gets_503_after_the_hold_timeout() {
    let (a, _b, daemon) = slow_pair(Duration::from_millis(1500), |config| {
        config.backends[0].max_connections = 2;
        config.failover.hold_timeout = Duration::from_millis(200);
    })
    .await;
    let replies = futures_util::future::join_all((0..6).map(|i| {
        let proxy = daemon.proxy;
        async move { get(proxy, &format!("/busy-{i}")).await.expect("a reply") }
    }))
    .await;
    let served = replies.iter().filter(|r| r.status == 200).count();
    let busy: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        served,
        2,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(busy.len(), 4);
    for reply in busy {
        assert!(
            reply.text().contains("master-a is busy"),
            "{}",
            reply.text()
        );
        assert!(reply.headers.contains_key("retry-after"));
    }
    assert!(a.peak() <= 2);
    assert_no_failover(&daemon).await;
    daemon.shutdown().await;
}

/// `proxy.header_read_timeout` in the idle tests below.
const IDLE: Duration = Duration::from_millis(500);
/// Slack for a loaded CI machine on top of a timeout that should have fired.
const SLACK: Duration = Duration::from_millis(1500);

/// HTTP/2 by hand: what a client that never answers a PING sends and reads.
mod raw_h2 {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const SETTINGS: u8 = 4;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const END_STREAM: u8 = 1;
    pub const END_HEADERS: u8 = 4;
    pub const ACK: u8 = 1;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len())
            .expect("small frame")
            .to_be_bytes();
        let mut frame = vec![length[1], length[2], length[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// `GET path` on `stream` as one HEADERS frame (HPACK without Huffman coding).
    pub fn get(stream: u32, authority: &str, path: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http (static table)
        literal(&mut block, 4, path); // :path
        literal(&mut block, 1, authority); // :authority
        frame(HEADERS, END_STREAM | END_HEADERS, stream, &block)
    }

    /// A literal field without indexing whose name is static-table entry `name`.
    fn literal(block: &mut Vec<u8>, name: u8, value: &str) {
        assert!(name < 15 && value.len() < 127, "short forms only");
        block.push(name);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
}

/// One frame's type and flags; None when the connection closed.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4]))
}

/// Defect 3: an idle HTTP/2 connection is asked to close with a GOAWAY and a PING;
/// hyper then waits for the PING's acknowledgement. A client that never sends it kept
/// the connection (a descriptor and a `max_connections` slot) for ever. Now it is
/// closed one timeout later whether or not the client answers.
#[tokio::test]
async fn an_http2_client_that_ignores_the_goaway_ping_is_closed_after_one_more_timeout() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a");
    let mut config = config_for(&[&a], health(200, 1, 3), Failback::Never);
    config.proxy.header_read_timeout = IDLE;
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    let mut stream = TcpStream::connect(daemon.proxy).await.expect("connect");
    let mut hello = raw_h2::PREFACE.to_vec();
    hello.extend(raw_h2::frame(raw_h2::SETTINGS, 0, 0, &[]));
    hello.extend(raw_h2::get(1, "proxy", "/h2-then-silent"));
    stream.write_all(&hello).await.expect("send");
    // Well behaved until the response has arrived: its settings acknowledged.
    let started = Instant::now();
    let mut answered = false;
    let mut goaway = None;
    let ended = tokio::time::timeout(4 * IDLE + SLACK, async {
        while let Some((kind, flags)) = read_frame(&mut stream).await {
            match kind {
                raw_h2::SETTINGS if flags & raw_h2::ACK == 0 => {
                    let ack = raw_h2::frame(raw_h2::SETTINGS, raw_h2::ACK, 0, &[]);
                    stream.write_all(&ack).await.expect("settings ack");
                }
                raw_h2::DATA if flags & raw_h2::END_STREAM != 0 => answered = true,
                raw_h2::GOAWAY => goaway = Some(started.elapsed()),
                // Never acknowledged.
                raw_h2::PING => {}
                _ => {}
            }
        }
    })
    .await;
    assert!(answered, "the request was served");
    assert!(goaway.is_some(), "the idle connection was asked to close");
    assert!(
        ended.is_ok(),
        "a client that ignores the PING still had its connection after {:?}",
        started.elapsed()
    );
    daemon.shutdown().await;
}

/// Defect 11: `proxy.max_headers` and `proxy.max_header_bytes` held for HTTP/1 only;
/// over HTTP/2, 300 header fields or a header list past the limit reached the master.
#[tokio::test]
async fn http2_requests_obey_the_header_limits() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a");
    let mut config = config_for(&[&a], health(200, 1, 3), Failback::Never);
    config.proxy.max_header_bytes = 8192;
    config.proxy.max_headers = 100;
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    let proxy = daemon.proxy;
    let mut client = Http2Client::connect(proxy).await;
    let mut many = Request::get(format!("http://{proxy}/h2-many-headers"));
    for i in 0..300 {
        many = many.header(format!("x-many-{i}"), "v");
    }
    let (status, _, body) = client.send(many.body(Empty::new()).expect("request")).await;
    assert_eq!(status, 431, "{body}");
    // A header list of 10 KiB, over the 8 KiB limit.
    let big = Request::get(format!("http://{proxy}/h2-big-header"))
        .header("x-big", "b".repeat(10 * 1024))
        .body(Empty::new())
        .expect("request");
    let mut client = Http2Client::connect(proxy).await;
    let refused = tokio::time::timeout(DEADLINE, client.sender.send_request(big))
        .await
        .expect("an answer in time");
    // The server answers 431 (h2 may also reset the stream, or the client refuse to send).
    if let Ok(response) = refused {
        assert_eq!(response.status(), 431);
    }
    let reached: Vec<_> = a
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/h2-"))
        .collect();
    assert!(reached.is_empty(), "reached the master: {reached:?}");
    // Within the limits, HTTP/2 requests are served.
    let mut client = Http2Client::connect(proxy).await;
    assert_eq!(client.get(proxy, "/h2-fine").await.0, 200);
    daemon.shutdown().await;
}

/// Defect 5: the admin listener had no header timeout and no connection cap: 300
/// silent or half-sent connections stayed open, and 1100 of them took the
/// descriptors the proxy needed. Now it closes those past 64 at once and the rest
/// after `proxy.header_read_timeout`, and `/status` answers again.
#[tokio::test]
async fn the_admin_listener_caps_its_connections_and_cuts_silent_ones() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a");
    let mut config = config_for(&[&a], health(200, 1, 3), Failback::Never);
    config.proxy.header_read_timeout = IDLE;
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    let cap = jenkins_ha_proxy::config::ADMIN_MAX_CONNECTIONS;
    let opened = Instant::now();
    let mut held = Vec::new();
    for i in 0..150 {
        let mut stream = TcpStream::connect(daemon.admin).await.expect("connect");
        if i % 2 == 1 {
            stream
                .write_all(b"GET /status HTTP/1.1\r\nHost: admin\r\n")
                .await
                .expect("half a request");
        }
        held.push(stream);
    }
    // Those past the cap are closed at once; all of them within one timeout.
    let watches = held.into_iter().map(|mut stream| async move {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(IDLE + SLACK, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "an admin connection was still open after {:?}",
            opened.elapsed()
        );
        opened.elapsed()
    });
    let closed_at = futures_util::future::join_all(watches).await;
    let at_once = closed_at.iter().filter(|at| **at < IDLE / 2).count();
    assert!(
        at_once >= 150 - cap,
        "only {at_once} of the {} connections past the cap were closed at once",
        150 - cap
    );
    assert_eq!(daemon.active().await.as_deref(), Some("master-a"));
    daemon.shutdown().await;
}
