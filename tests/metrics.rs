//! `GET /metrics` on the admin listener of the real daemon: the exposition parses as
//! OpenMetrics text, and it changes as traffic flows and as masters fail.

mod support;

use hyper::StatusCode;
use jenkins_ha_proxy::config::Failback;
use jenkins_ha_proxy::sample::SampleMaster;
use support::exposition::Exposition;
use support::{config_for, get, health, wait_until, TestDaemon};

async fn scrape(daemon: &TestDaemon) -> Exposition {
    let reply = get(daemon.admin, "/metrics").await.expect("GET /metrics");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = reply.text();
    Exposition::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

const REQUESTS: &str = "jenkins_ha_proxy_requests_total";
const FAILOVERS: &str = "jenkins_ha_proxy_failovers_total";

fn master(name: &str) -> [(&str, &str); 1] {
    [("master", name)]
}

#[tokio::test]
async fn metrics_follow_traffic_and_failovers() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a");
    let b = SampleMaster::start("master-b", "127.0.0.3:0".parse().expect("addr"))
        .await
        .expect("master-b");
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a, &b], health(100, 1, 2), Failback::Never),
        "master-a",
    )
    .await;

    let start = scrape(&daemon).await;
    let active = "jenkins_ha_proxy_active_master";
    assert_eq!(start.value(active, &master("master-a")), Some(1.0));
    assert_eq!(start.value(active, &master("master-b")), Some(0.0));
    assert_eq!(
        start.value(
            "jenkins_ha_proxy_transitions_total",
            &[("cause", "initial")]
        ),
        Some(1.0)
    );
    assert_eq!(start.sum(FAILOVERS, &[]), 0.0);
    assert_eq!(start.types[FAILOVERS.trim_end_matches("_total")], "counter");
    assert_eq!(
        start.types["jenkins_ha_proxy_request_duration_seconds"],
        "histogram"
    );
    for kind in ["http", "tunnel", "tcp"] {
        let labels = [("master", "master-b"), ("kind", kind)];
        assert_eq!(
            start.value("jenkins_ha_proxy_open_connections", &labels),
            Some(0.0),
            "{kind} connections to the standby"
        );
    }

    // Traffic: every request is counted by the master that answered and its class.
    let ok = [("master", "master-a"), ("class", "2xx")];
    let served_before = start.sum(REQUESTS, &ok);
    for _ in 0..5 {
        let reply = get(daemon.proxy, "/job/x/")
            .await
            .expect("through the proxy");
        assert_eq!(reply.status, StatusCode::OK);
    }
    let after_traffic = scrape(&daemon).await;
    assert_eq!(after_traffic.sum(REQUESTS, &ok), served_before + 5.0);
    let count = "jenkins_ha_proxy_request_duration_seconds_count";
    assert!(after_traffic.sum(count, &[]) >= start.sum(count, &[]) + 5.0);
    wait_until("a health check latency for each master", || async {
        let now = scrape(&daemon).await;
        ["master-a", "master-b"].iter().all(|name| {
            now.value(
                "jenkins_ha_proxy_health_check_latency_seconds",
                &master(name),
            )
            .is_some_and(|seconds| seconds > 0.0)
        })
    })
    .await;

    // A failover: counted once, by cause, and the gauges follow.
    a.set_healthy(false);
    daemon.wait_active(Some("master-b")).await;
    let after = scrape(&daemon).await;
    assert_eq!(
        after.value(FAILOVERS, &[("cause", "health_check")]),
        Some(1.0)
    );
    assert_eq!(after.sum(FAILOVERS, &[]), 1.0);
    assert_eq!(after.value(active, &master("master-a")), Some(0.0));
    assert_eq!(after.value(active, &master("master-b")), Some(1.0));
    let healthy = "jenkins_ha_proxy_master_healthy";
    assert_eq!(after.value(healthy, &master("master-a")), Some(0.0));
    // The sample master's 503 says "getting ready to work": the state is "starting",
    // as in /status, and every other state of master-a is 0.
    let state = |state| {
        after.value(
            "jenkins_ha_proxy_master_state",
            &[("master", "master-a"), ("state", state)],
        )
    };
    assert_eq!(state("starting"), Some(1.0));
    for other in ["unknown", "up", "down"] {
        assert_eq!(state(other), Some(0.0), "{other}");
    }

    let reply = get(daemon.proxy, "/job/x/")
        .await
        .expect("through the proxy");
    assert_eq!(reply.master(), Some("master-b"));
    let last = scrape(&daemon).await;
    let ok_b = [("master", "master-b"), ("class", "2xx")];
    assert_eq!(last.sum(REQUESTS, &ok_b), 1.0);
    assert_eq!(
        last.sum(FAILOVERS, &[]),
        1.0,
        "scraping counts nothing twice"
    );
    daemon.shutdown().await;
}
