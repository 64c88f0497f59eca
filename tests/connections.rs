//! Connection handling: stale pooled connections, graceful shutdown.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hyper::StatusCode;
use jenkins_ha_proxy::config::Failback;
use jenkins_ha_proxy::sample::SampleMaster;
use support::{config_for, get, health, TestDaemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A master that answers the first request of each connection with keep-alive, and
/// drops the connection on the second without answering: the race a proxy hits when
/// Jenkins closes an idle keep-alive connection just as a request is sent on it.
struct ClosingMaster {
    addr: SocketAddr,
    dropped_unanswered: Arc<AtomicUsize>,
}

impl ClosingMaster {
    async fn start() -> ClosingMaster {
        let listener = TcpListener::bind("127.0.0.2:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let dropped_unanswered = Arc::new(AtomicUsize::new(0));
        let dropped = dropped_unanswered.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_once(stream, dropped.clone()));
            }
        });
        ClosingMaster {
            addr,
            dropped_unanswered,
        }
    }
}

async fn serve_once(mut stream: TcpStream, dropped: Arc<AtomicUsize>) {
    if read_head(&mut stream).await.is_none() {
        return;
    }
    let body = "hello from closing-master\n";
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-master: closing-master\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    if read_head(&mut stream).await.is_some() {
        dropped.fetch_add(1, Ordering::SeqCst);
    }
    // Dropping the stream closes it with the second request unanswered.
}

/// Reads one request head (these tests send no bodies to it).
async fn read_head(stream: &mut TcpStream) -> Option<()> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Some(())
}

#[tokio::test]
async fn a_stale_pooled_connection_is_retried_fresh_without_failing_over() {
    let closing = ClosingMaster::start().await;
    let standby = SampleMaster::start("master-b", "127.0.0.3:0".parse().expect("addr"))
        .await
        .expect("standby");
    let mut config = config_for(&[&standby], health(100, 2, 3), Failback::Never);
    let mut first = config.backends[0].clone();
    first.name = "closing-master".into();
    first.url = format!("http://{}", closing.addr);
    first.host = closing.addr.ip().to_string();
    first.port = closing.addr.port();
    config.backends.insert(0, first);
    let daemon = TestDaemon::start_with_active(config, "closing-master").await;

    // One client connection, so the proxy reuses its pooled upstream connection.
    for round in 0..5 {
        let reply = get(daemon.proxy, "/").await.expect("reply");
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "round {round}: {}",
            reply.text()
        );
        assert_eq!(reply.master(), Some("closing-master"));
    }
    assert!(
        closing.dropped_unanswered.load(Ordering::SeqCst) >= 1,
        "the test must have hit a stale pooled connection"
    );
    let status = daemon.status().await;
    assert_eq!(status["active"], "closing-master");
    assert_eq!(status["failovers"], 0);
    assert_eq!(standby.traffic_count(), 0);
    daemon.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a");
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a], health(100, 2, 3), Failback::Never),
        "master-a",
    )
    .await;
    let proxy = daemon.proxy;
    // 3 chunks, 300 ms apart: still running when shutdown starts.
    let slow = tokio::spawn(async move { get(proxy, "/slow?chunks=3&delay_ms=300").await });
    support::wait_until("the slow request reached the master", || async {
        a.requests().iter().any(|r| r.target.starts_with("/slow"))
    })
    .await;
    daemon.shutdown().await;
    let reply = slow
        .await
        .expect("task")
        .expect("the in-flight request completes");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "chunk 0\nchunk 1\nchunk 2\n");
    assert!(
        TcpStream::connect(proxy).await.is_err(),
        "the listener is closed after shutdown"
    );
}

/// A master that reads each request head and hangs up without answering; health
/// checks (`GET /login`) are answered 200. Returns its address and how many
/// requests it dropped.
async fn hanging_up_master() -> (SocketAddr, Arc<AtomicUsize>) {
    dropping_master(false).await
}

/// [`hanging_up_master`]; with `dies`, health checks answer 503 from the first
/// dropped request on.
async fn dropping_master(dies: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.2:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dropped = Arc::new(AtomicUsize::new(0));
    let counter = dropped.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if buf[..n].starts_with(b"GET /login") {
                    let answer: &[u8] = if dies && counter.load(Ordering::SeqCst) > 0 {
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    };
                    let _ = stream.write_all(answer).await;
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, dropped)
}

#[tokio::test]
async fn a_post_that_fails_mid_request_gets_502_and_is_never_replayed() {
    let (addr, seen) = hanging_up_master().await;
    let mut config = config_for(&[], health(100, 2, 3), Failback::Never);
    config.backends = support::backends(&[("master-a", addr)]);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    let request = hyper::Request::post("/job/x/build")
        .header("host", "proxy")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"json={}",
        )))
        .expect("request");
    let reply = support::send(daemon.proxy, request).await.expect("reply");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert!(reply.text().contains("master-a"), "{}", reply.text());
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "a POST is sent once, never replayed"
    );
    // A GET that breaks the same way is replayed once, then fails too.
    let reply = get(daemon.proxy, "/api/json").await.expect("reply");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(seen.load(Ordering::SeqCst), 3, "the GET was tried twice");
    assert_eq!(
        daemon.status().await["active"],
        "master-a",
        "not a connect failure: no failover"
    );
    daemon.shutdown().await;
}

/// A master dying under a request, like a SIGKILLed JVM in the moment its listen
/// socket still accepts: requests are dropped unanswered, and from the first one on
/// its health checks fail too.
async fn dying_master() -> (SocketAddr, Arc<AtomicUsize>) {
    dropping_master(true).await
}

/// The replay of a GET whose connection broke can land on the same dying master and
/// break again (seen in the soak at about one SIGKILL in fifteen). It then waits for
/// the health checks to demote that master and goes to the next one: no 502.
#[tokio::test]
async fn a_get_whose_replay_also_breaks_follows_the_failover_instead_of_failing() {
    let (addr, dropped) = dying_master().await;
    let b = SampleMaster::start("master-b", "127.0.0.3:0".parse().expect("addr"))
        .await
        .expect("master-b");
    let mut config = config_for(&[], health(50, 1, 2), Failback::Never);
    config.backends = support::backends(&[("master-a", addr), ("master-b", b.addr())]);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    let reply = get(daemon.proxy, "/api/json").await.expect("reply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.master(), Some("master-b"));
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "sent to master-a, replayed there once, then to master-b"
    );
    assert_eq!(daemon.active().await.as_deref(), Some("master-b"));
    let state = daemon.status().await;
    let cause = &state["transitions"][0]["cause"];
    assert_eq!(
        cause, "health_check",
        "demoted by its checks, not by the client: {state:#}"
    );
    daemon.shutdown().await;
}

/// A master that answers everything with 200 until frozen; then it reads requests
/// and never answers, like a SIGSTOPped JVM whose kernel still accepts connections.
async fn freezable_master() -> (
    SocketAddr,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.2:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stuck = Arc::new(AtomicUsize::new(0));
    let (flag, count) = (frozen.clone(), stuck.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (flag, count) = (flag.clone(), count.clone());
            tokio::spawn(async move {
                loop {
                    if read_head(&mut stream).await.is_none() {
                        return;
                    }
                    if flag.load(Ordering::SeqCst) {
                        count.fetch_add(1, Ordering::SeqCst);
                        // Hold the connection, answer nothing.
                        std::future::pending::<()>().await;
                    }
                    let body = "hello from frozen-a\n";
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-master: frozen-a\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, frozen, stuck)
}

#[tokio::test]
async fn requests_waiting_on_a_frozen_master_are_rescued_or_get_504() {
    let (addr, frozen, stuck) = freezable_master().await;
    let standby = SampleMaster::start("master-b", "127.0.0.3:0".parse().expect("addr"))
        .await
        .expect("standby");
    let mut config = config_for(&[&standby], health(50, 2, 2), Failback::Never);
    config
        .backends
        .insert(0, support::backends(&[("frozen-a", addr)]).remove(0));
    config.proxy.request_timeout = Some(std::time::Duration::from_millis(1500));
    config.failover.drain_timeout = std::time::Duration::from_secs(20);
    let daemon = TestDaemon::start_with_active(config, "frozen-a").await;
    assert_eq!(
        get(daemon.proxy, "/").await.expect("reply").master(),
        Some("frozen-a")
    );

    frozen.store(true, Ordering::SeqCst);
    let proxy = daemon.proxy;
    let waiting_get = tokio::spawn(async move { get(proxy, "/job/x/api/json").await });
    let waiting_post = tokio::spawn(async move {
        let request = hyper::Request::post("/job/x/build")
            .header("host", "proxy")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
            .expect("request");
        support::send(proxy, request).await
    });
    support::wait_until("both requests are stuck on the frozen master", || async {
        stuck.load(Ordering::SeqCst) >= 2
    })
    .await;
    let started = std::time::Instant::now();
    let reply = waiting_get
        .await
        .expect("task")
        .expect("the GET is answered");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.master(),
        Some("master-b"),
        "rescued to the new active master"
    );
    let reply = waiting_post
        .await
        .expect("task")
        .expect("the POST is answered");
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        standby.traffic_count(),
        1,
        "the POST is never replayed elsewhere"
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn connections_over_max_connections_are_closed_and_the_rest_served() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a");
    let mut config = config_for(&[&a], health(100, 2, 3), Failback::Never);
    config.proxy.max_connections = 5;
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    // Five clients hold their connections open (one request each, kept alive).
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(daemon.proxy).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n")
            .await
            .expect("write");
        let mut buf = vec![0u8; 1024];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        held.push(stream);
    }
    // The sixth is closed without an answer.
    let mut extra = TcpStream::connect(daemon.proxy)
        .await
        .expect("the kernel accepts");
    let _ = extra
        .write_all(b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n")
        .await;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(support::DEADLINE, extra.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "over the limit: closed, got {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // One client leaves: a new one is served again.
    drop(held.pop());
    support::wait_until("a freed slot serves a new client", || async {
        get(daemon.proxy, "/")
            .await
            .is_ok_and(|r| r.status == StatusCode::OK)
    })
    .await;
    daemon.shutdown().await;
}

/// Idle upstream connections are closed once `proxy.pool_idle_timeout` has passed,
/// even when no further request comes to prune the pool (each worker has its own).
#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_pool_idle_timeout() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a");
    let mut config = config_for(&[&a], health(100, 1, 3), Failback::Never);
    config.proxy.pool_idle_timeout = std::time::Duration::from_millis(200);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    // Several connections at once, so that more than one stays pooled.
    let replies = futures_util::future::join_all((0..8).map(|_| get(daemon.proxy, "/"))).await;
    assert!(replies
        .iter()
        .all(|r| r.as_ref().is_ok_and(|r| r.status == 200)));
    support::wait_until("the idle upstream connections to be closed", || async {
        daemon.status().await["backends"][0]["open_connections"] == 0
    })
    .await;
    daemon.shutdown().await;
}

/// A master whose accept loop can be paused. Its listen backlog is 1: while paused
/// the kernel queues two connections and drops every further SYN, which the client
/// sends again only after a second, the way a busy Jenkins (whose Jetty listens with
/// Java's default backlog of 50) treats a burst of new connections.
struct GatedMaster {
    addr: SocketAddr,
    accepting: tokio::sync::watch::Sender<bool>,
}

impl GatedMaster {
    async fn start() -> GatedMaster {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket.listen(1).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let (accepting, mut open) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            loop {
                if open.wait_for(|open| *open).await.is_err() {
                    return;
                }
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_request| async {
                        let mut response = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"hello from gated-master\n"),
                        ));
                        response
                            .headers_mut()
                            .insert("x-master", hyper::header::HeaderValue::from_static("gated"));
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        GatedMaster { addr, accepting }
    }
}

/// Right after a start-up or a failover the proxy has no idle connection to the
/// active master, so a burst of requests opens a connection each. The master queues
/// only a few and drops the other SYNs: those connects would take a retransmit (1 s,
/// the test's whole connect timeout, so also a false "master down"). Instead each
/// waiting request takes a connection another request gives back: the burst is served
/// at once by the connections that got through, and nobody blames the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_a_master_with_a_full_accept_queue_is_served_by_the_connections_that_got_through(
) {
    let master = GatedMaster::start().await;
    let b = SampleMaster::start("master-b", "127.0.0.3:0".parse().expect("addr"))
        .await
        .expect("master-b");
    // Checks rare enough that the pause below costs at most one of them.
    let mut config = config_for(&[], health(2_000, 1, 3), Failback::Never);
    config.backends = support::backends(&[("master-a", master.addr), ("master-b", b.addr())]);
    // One worker, so one pool: what got through serves every waiting request.
    config.proxy.workers = Some(1);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    master.accepting.send_replace(false);
    let started = std::time::Instant::now();
    let burst: Vec<_> = (0..24)
        .map(|i| {
            let proxy = daemon.proxy;
            tokio::spawn(async move { get(proxy, &format!("/burst-{i}")).await })
        })
        .collect();
    // Let every request reach the proxy and its connect hit the full queue.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    master.accepting.send_replace(true);
    for request in burst {
        let reply = request
            .await
            .expect("request task")
            .expect("reply to a burst request");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.master(), Some("gated"), "{}", reply.text());
    }
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(900),
        "the burst took {took:?}: requests waited for SYN retransmits"
    );
    let state = daemon.status().await;
    assert_eq!(state["active"], "master-a", "{state:#}");
    assert_eq!(state["failovers"], 0, "no failover: {state:#}");
    assert_eq!(
        state["transitions"].as_array().map(Vec::len),
        Some(1),
        "only the first election, no master marked down: {state:#}"
    );
    daemon.shutdown().await;
}

/// A master that stops accepting (a frozen JVM: the kernel queues a few connections,
/// then drops SYNs) holds a new connect until `connect_timeout`. When its health
/// checks demote it meanwhile, the request gives the connect up and goes to the new
/// active master at once, rather than wait out the connect (seconds after the switch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_under_way_is_given_up_when_its_master_is_demoted() {
    let master = GatedMaster::start().await;
    let b = SampleMaster::start("master-b", "127.0.0.3:0".parse().expect("addr"))
        .await
        .expect("master-b");
    let mut config = config_for(&[], health(200, 1, 2), Failback::Never);
    config.backends = support::backends(&[("master-a", master.addr), ("master-b", b.addr())]);
    config.proxy.connect_timeout = std::time::Duration::from_secs(8);
    config.proxy.workers = Some(1);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    master.accepting.send_replace(false);
    // Fill its accept queue: from now on its SYNs are dropped.
    let mut queued = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            TcpStream::connect(master.addr),
        )
        .await
        {
            queued.push(stream);
        }
    }
    let started = std::time::Instant::now();
    let reply = get(daemon.proxy, "/while-connecting")
        .await
        .expect("a reply");
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.master(), Some("master-b"), "{}", reply.text());
    assert!(
        took < std::time::Duration::from_secs(4),
        "served after {took:?}: the connect was waited out (connect_timeout 8 s)"
    );
    daemon.shutdown().await;
}
