//! Issue #2 behaviour, end to end: real sample masters on 127.0.0.2 / 127.0.0.3 and
//! the real daemon in-process on ephemeral ports.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use jenkins_ha_proxy::config::Failback;
use jenkins_ha_proxy::sample::SampleMaster;
use support::{config_for, get, health, wait_until, TestDaemon};

async fn two_masters() -> (SampleMaster, SampleMaster) {
    let a = SampleMaster::start("master-a", addr("127.0.0.2"))
        .await
        .expect("master-a");
    let b = SampleMaster::start("master-b", addr("127.0.0.3"))
        .await
        .expect("master-b");
    (a, b)
}

fn addr(ip: &str) -> SocketAddr {
    format!("{ip}:0").parse().expect("addr")
}

async fn served_by(daemon: &TestDaemon) -> String {
    let reply = get(daemon.proxy, "/job/x/")
        .await
        .expect("request through the proxy");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.master().expect("X-Master header").to_owned()
}

#[tokio::test]
async fn requests_reach_the_first_master_and_status_shows_it() {
    let (a, b) = two_masters().await;
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a, &b], health(100, 2, 3), Failback::Never),
        "master-a",
    )
    .await;
    // Let master-b's first check land too.
    wait_until("both masters checked", || async {
        daemon.status().await["backends"][1]["last_check"].is_string()
    })
    .await;
    assert_eq!(served_by(&daemon).await, "master-a");
    assert_eq!(b.traffic_count(), 0, "the standby receives no traffic");

    let status = daemon.status().await;
    assert_eq!(status["active"], "master-a");
    assert_eq!(status["failovers"], 0);
    assert!(status["active_since"]
        .as_str()
        .is_some_and(|s| s.ends_with('Z')));
    let backends = status["backends"].as_array().expect("backends array");
    assert_eq!(backends.len(), 2);
    for (backend, (name, active)) in backends
        .iter()
        .zip([("master-a", true), ("master-b", false)])
    {
        assert_eq!(backend["name"], name);
        assert_eq!(backend["healthy"], true);
        assert_eq!(backend["active"], active);
        assert!(backend["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.")));
        assert!(backend["last_check"].is_string());
        assert!(backend["last_error"].is_null());
        assert!(backend["latency_ms"].as_f64().is_some());
    }
    let transitions = status["transitions"].as_array().expect("transitions");
    assert_eq!(transitions.len(), 1);
    assert_eq!(transitions[0]["to"], "master-a");
    assert!(transitions[0]["from"].is_null());
    daemon.shutdown().await;
}

#[tokio::test]
async fn killing_the_active_master_loses_no_request() {
    let (a, b) = two_masters().await;
    let interval_ms = 100;
    let fall = 3;
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a, &b], health(interval_ms, 2, fall), Failback::Never),
        "master-a",
    )
    .await;
    wait_until("master-b healthy", || async {
        daemon.status().await["backends"][1]["healthy"] == true
    })
    .await;

    // Clients hammer the proxy (fresh connections) while master-a dies.
    let running = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(AtomicUsize::new(0));
    let from_b = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (running, failures, from_b, proxy) = (
            running.clone(),
            failures.clone(),
            from_b.clone(),
            daemon.proxy,
        );
        clients.push(tokio::spawn(async move {
            let mut sent = 0;
            while running.load(Ordering::Relaxed) {
                sent += 1;
                match get(proxy, "/").await {
                    Ok(reply) if reply.status == StatusCode::OK => {
                        if reply.master() == Some("master-b") {
                            from_b.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    other => {
                        eprintln!("failed request: {:?}", other.map(|r| (r.status, r.text())));
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            sent
        }));
    }
    wait_until("traffic flowing to master-a", || async {
        a.traffic_count() > 20
    })
    .await;
    let killed = Instant::now();
    a.stop().await;
    wait_until("a response from master-b", || async {
        from_b.load(Ordering::Relaxed) > 0
    })
    .await;
    let switch = killed.elapsed();
    wait_until("more responses from master-b", || async {
        from_b.load(Ordering::Relaxed) > 20
    })
    .await;
    running.store(false, Ordering::Relaxed);
    let mut sent = 0;
    for client in clients {
        sent += client.await.expect("client task");
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no request may fail ({sent} sent)"
    );
    let bound = Duration::from_millis(interval_ms * u64::from(fall));
    assert!(switch < bound, "switch took {switch:?}, bound {bound:?}");

    let status = daemon.status().await;
    assert_eq!(status["active"], "master-b");
    assert_eq!(status["failovers"], 1);
    assert_eq!(status["backends"][0]["healthy"], false);
    assert_eq!(status["backends"][0]["active"], false);
    assert_eq!(status["backends"][1]["active"], true);
    assert!(status["backends"][0]["last_error"].is_string());
    let latest = &status["transitions"][0];
    assert_eq!(
        (&latest["from"], &latest["to"]),
        (&"master-a".into(), &"master-b".into())
    );
    assert!(
        latest["reason"]
            .as_str()
            .is_some_and(|r| r.contains("master-a down")),
        "{latest}"
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn health_503_fails_over_after_fall_checks() {
    let (a, b) = two_masters().await;
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a, &b], health(50, 2, 3), Failback::Never),
        "master-a",
    )
    .await;
    a.set_healthy(false);
    daemon.wait_active(Some("master-b")).await;
    let status = daemon.status().await;
    let reason = status["transitions"][0]["reason"]
        .as_str()
        .expect("reason")
        .to_owned();
    assert!(
        reason.starts_with(
            "master-a down after 3 failed checks: Jenkins is starting (503: getting ready to work)"
        ),
        "{reason}"
    );
    assert_eq!(
        status["backends"][0]["consecutive_failed"]
            .as_u64()
            .map(|n| n >= 3),
        Some(true)
    );
    assert_eq!(served_by(&daemon).await, "master-b");
    daemon.shutdown().await;
}

#[tokio::test]
async fn failback_never_keeps_the_standby_active() {
    let (a, b) = two_masters().await;
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a, &b], health(50, 2, 3), Failback::Never),
        "master-a",
    )
    .await;
    a.set_healthy(false);
    daemon.wait_active(Some("master-b")).await;
    a.set_healthy(true);
    wait_until("master-a healthy again", || async {
        daemon.status().await["backends"][0]["healthy"] == true
    })
    .await;
    // Several more check rounds pass: nothing moves.
    let checks_then = a.requests().len();
    wait_until("more checks of master-a", || async {
        a.requests().len() >= checks_then + 4
    })
    .await;
    assert_eq!(daemon.active().await.as_deref(), Some("master-b"));
    assert_eq!(served_by(&daemon).await, "master-b");
    assert_eq!(daemon.status().await["failovers"], 1);
    daemon.shutdown().await;
}

#[tokio::test]
async fn failback_auto_returns_to_the_first_master_after_rise_checks() {
    let (a, b) = two_masters().await;
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a, &b], health(50, 3, 2), Failback::Auto),
        "master-a",
    )
    .await;
    a.set_healthy(false);
    daemon.wait_active(Some("master-b")).await;
    a.set_healthy(true);
    daemon.wait_active(Some("master-a")).await;
    let status = daemon.status().await;
    let reason = status["transitions"][0]["reason"]
        .as_str()
        .expect("reason")
        .to_owned();
    assert!(
        reason.starts_with("failback: master-a up after 3 passed checks"),
        "{reason}"
    );
    assert_eq!(status["failovers"], 2);
    assert_eq!(served_by(&daemon).await, "master-a");
    daemon.shutdown().await;
}

#[tokio::test]
async fn no_healthy_master_answers_503_then_recovers() {
    let (a, b) = two_masters().await;
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a, &b], health(50, 2, 2), Failback::Never),
        "master-a",
    )
    .await;
    a.set_healthy(false);
    b.set_healthy(false);
    daemon.wait_active(None).await;
    let reply = get(daemon.proxy, "/").await.expect("reply");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"2"[..])
    );
    assert!(
        reply.text().contains("no healthy Jenkins master"),
        "{}",
        reply.text()
    );
    let traffic_before = a.traffic_count() + b.traffic_count();

    b.set_healthy(true);
    daemon.wait_active(Some("master-b")).await;
    assert_eq!(served_by(&daemon).await, "master-b");
    assert_eq!(a.traffic_count() + b.traffic_count(), traffic_before + 1);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_master_down_at_start_is_skipped() {
    let (a, b) = two_masters().await;
    a.stop().await;
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a, &b], health(50, 2, 3), Failback::Never),
        "master-b",
    )
    .await;
    assert_eq!(served_by(&daemon).await, "master-b");
    assert_eq!(
        daemon.status().await["failovers"],
        0,
        "the first election is not a failover"
    );
    daemon.shutdown().await;
}

/// Something that is not Jenkins answers 200 on the health path (a default web page).
async fn impostor() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf).await;
                let page = "<h1>Welcome to nginx!</h1>";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn health_that_lies_is_not_taken_for_jenkins() {
    let fake = impostor().await;
    let b = SampleMaster::start("master-b", addr("127.0.0.3"))
        .await
        .expect("master-b");
    for (header, body, why) in [
        (Some("X-Jenkins"), None, "no X-Jenkins header"),
        (None, Some("ok"), "does not contain \"ok\""),
    ] {
        let mut config = config_for(&[&b], health(50, 2, 2), Failback::Never);
        config
            .backends
            .insert(0, support::backends(&[("impostor", fake)]).remove(0));
        config.health.expect_header = header.map(str::to_owned);
        config.health.expect_body = body.map(str::to_owned);
        let daemon = TestDaemon::start_with_active(config, "master-b").await;
        let status = daemon.status().await;
        assert_eq!(status["backends"][0]["healthy"], false);
        let error = status["backends"][0]["last_error"]
            .as_str()
            .expect("error")
            .to_owned();
        assert!(error.contains(why), "{error}");
        assert_eq!(served_by(&daemon).await, "master-b");
        daemon.shutdown().await;
    }
}
