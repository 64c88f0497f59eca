//! Issue #17, end to end: `pool.mode = "active-active"` in front of three sample
//! replicas (127.0.0.2-4) whose Jenkins load each test sets at run time, and the real
//! daemon in-process on ephemeral ports. Placement by least load, affinity by cookie,
//! CLI session and tunnel, the in-flight count of a burst, a killed replica, disable.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use jenkins_ha_proxy::config::{Config, Failback, PoolConfig, PoolMode};
use jenkins_ha_proxy::sample::SampleMaster;
use support::tcp_master::{
    agents_forward, read_greeting, tcp_closed_within, tcp_exchange, TcpMaster,
};
use support::ws_master::{ws_connect, WsMaster};
use support::{backends, config_for, get, health, send, wait_until, Load, Reply, TestDaemon};
use tokio::net::TcpStream;

const COOKIE: &str = "JHP_REPLICA";

async fn replicas() -> [SampleMaster; 3] {
    let start = |name: &'static str, ip: &'static str| async move {
        SampleMaster::start(name, format!("{ip}:0").parse().expect("addr"))
            .await
            .expect(name)
    };
    [
        start("master-a", "127.0.0.2").await,
        start("master-b", "127.0.0.3").await,
        start("master-c", "127.0.0.4").await,
    ]
}

/// Active-active over `masters`, loads read every `load_interval`.
fn active_active(masters: &[&SampleMaster], load_interval: Duration) -> Config {
    let mut config = config_for(masters, health(100, 1, 2), Failback::Never);
    config.pool = PoolConfig {
        mode: PoolMode::ActiveActive,
        load_interval,
        ..PoolConfig::default()
    };
    config
}

/// Sets each replica's load: (builds, queued, agents).
/// Three replicas with loads 5, 1 and 3, behind a daemon in active-active mode that
/// reads them every `load_interval`, once it has read them.
async fn pool_of_5_1_3(load_interval: Duration) -> ([SampleMaster; 3], TestDaemon) {
    let replicas = replicas().await;
    set_loads(&replicas, [(5, 0, 0), (1, 0, 0), (3, 0, 0)]);
    let config = active_active(&replicas.iter().collect::<Vec<_>>(), load_interval);
    let daemon = TestDaemon::start(config).await;
    wait_loads(&daemon, [5, 1, 3]).await;
    (replicas, daemon)
}

fn set_loads(replicas: &[SampleMaster], loads: [(u64, u64, u64); 3]) {
    for (replica, (builds, queued, agents)) in replicas.iter().zip(loads) {
        replica.load().set(builds, queued, agents);
    }
}

/// Waits until `/status` shows every replica up, taking traffic, with these total loads.
async fn wait_loads(daemon: &TestDaemon, totals: [u64; 3]) {
    wait_until(&format!("loads {totals:?} in /status"), || async {
        let status = daemon.status().await;
        let backends = status["backends"].as_array().cloned().unwrap_or_default();
        backends.len() == 3
            && backends.iter().zip(totals).all(|(backend, total)| {
                backend["active"] == true && backend["load"]["total"].as_u64() == Some(total)
            })
    })
    .await;
}

/// `GET path` with `Cookie: <cookie>` (when given) on a fresh connection.
async fn get_with(proxy: SocketAddr, path: &str, cookie: Option<&str>) -> Reply {
    let mut request = Request::get(path).header("host", proxy.to_string());
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let request = request.body(Full::new(Bytes::new())).expect("request");
    let reply = send(proxy, request).await.expect("reply through the proxy");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply
}

/// The proxy's cookie set by `reply`, as `NAME=VALUE`, with the attributes checked.
fn set_cookie(reply: &Reply) -> Option<String> {
    let header = reply.headers.get("set-cookie")?.to_str().expect("ascii");
    let (pair, attributes) = header.split_once("; ").expect("attributes");
    assert!(pair.starts_with(&format!("{COOKIE}=")), "{header}");
    assert_eq!(attributes, "Path=/; HttpOnly; SameSite=Lax", "{header}");
    let value = &pair[COOKIE.len() + 1..];
    assert_eq!(value.len(), 16, "an opaque token: {header}");
    assert!(!value.contains("127.0.0"), "not the URL: {header}");
    Some(pair.to_owned())
}

async fn admin_post(admin: SocketAddr, path: &str) -> Reply {
    let request = Request::post(path)
        .header("host", admin.to_string())
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(admin, request).await.expect("admin reply")
}

#[tokio::test]
async fn new_sessions_go_to_the_least_loaded_replica_and_stick_by_cookie() {
    let replicas = replicas().await;
    set_loads(&replicas, [(3, 1, 1), (1, 0, 0), (1, 1, 1)]);
    let dir = std::env::temp_dir().join(format!("jha-aa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join("jenkins-token");
    std::fs::write(&token_file, "11aa\n").expect("token file");
    let mut config = active_active(
        &replicas.iter().collect::<Vec<_>>(),
        Duration::from_millis(100),
    );
    config.jenkins.user = Some("admin".into());
    config.jenkins.api_token_file = Some(token_file);
    let daemon = TestDaemon::start(config).await;
    wait_loads(&daemon, [5, 1, 3]).await;

    // A new session goes to the replica with load 1, and gets its cookie.
    let first = get_with(daemon.proxy, "/", None).await;
    assert_eq!(first.master(), Some("master-b"));
    let cookie = set_cookie(&first).expect("a cookie for the new session");
    for _ in 0..5 {
        assert_eq!(
            get_with(daemon.proxy, "/", None).await.master(),
            Some("master-b")
        );
    }
    // The loads were read with the [jenkins] credentials.
    let load_call = (replicas[1].requests().into_iter())
        .find(|r| r.target.starts_with("/computer/api/json"))
        .expect("the load was read");
    assert_eq!(
        load_call.header("authorization"),
        Some("Basic YWRtaW46MTFhYQ==")
    );

    // master-b is now the busiest: new sessions go elsewhere, this one stays.
    replicas[1].load().set(20, 0, 0);
    wait_loads(&daemon, [5, 20, 3]).await;
    let again = get_with(daemon.proxy, "/job/x/", Some(&format!("a=1; {cookie}"))).await;
    assert_eq!(
        again.master(),
        Some("master-b"),
        "the cookie holds whatever the loads"
    );
    assert_eq!(set_cookie(&again), None, "the cookie is not set again");
    let fresh = get_with(daemon.proxy, "/", None).await;
    assert_eq!(fresh.master(), Some("master-c"));
    // A cookie that names no replica is replaced.
    let stale = get_with(
        daemon.proxy,
        "/",
        Some(&format!("{COOKIE}=0123456789abcdef")),
    )
    .await;
    assert_eq!(stale.master(), Some("master-c"));
    let replaced = set_cookie(&stale).expect("a new cookie");
    assert_eq!(replaced, set_cookie(&fresh).expect("master-c's cookie"));

    let status = daemon.status().await;
    assert_eq!(status["mode"], "active-active");
    let b = &status["backends"][1];
    assert_eq!(b["load"]["builds"], 20);
    assert_eq!(
        (b["load"]["queued"].as_u64(), b["load"]["agents"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(b["load_error"].is_null());
    assert_eq!(b["sessions"], 6);
    assert_eq!(b["placements"]["cookie"], 1);
    assert_eq!(b["requests_in_flight"], 0);
    assert_eq!(status["backends"][2]["placements"]["replaced"], 1);
    assert_eq!(status["backends"][2]["sessions"], 2);

    let text = get(daemon.admin, "/metrics").await.expect("metrics").text();
    let metrics = support::exposition::Exposition::parse(&text)
        .unwrap_or_else(|error| panic!("{error}\n{text}"));
    for (name, labels, value) in [
        (
            "jenkins_ha_proxy_replica_load",
            [("master", "master-b"), ("part", "total")],
            20.0,
        ),
        (
            "jenkins_ha_proxy_replica_load",
            [("master", "master-a"), ("part", "builds")],
            3.0,
        ),
        (
            "jenkins_ha_proxy_placements_total",
            [("master", "master-b"), ("reason", "least_load")],
            6.0,
        ),
        (
            "jenkins_ha_proxy_placements_total",
            [("master", "master-c"), ("reason", "replaced")],
            1.0,
        ),
    ] {
        assert_eq!(
            metrics.value(name, &labels),
            Some(value),
            "{name} {labels:?} in:\n{text}"
        );
    }
    for (name, value) in [
        ("jenkins_ha_proxy_active_master", 1.0),
        ("jenkins_ha_proxy_replica_load_readable", 1.0),
        ("jenkins_ha_proxy_requests_in_flight", 0.0),
    ] {
        assert_eq!(
            metrics.value(name, &[("master", "master-c")]),
            Some(value),
            "{name}"
        );
    }
    // Nothing to switch over to: every replica takes traffic.
    let refused = admin_post(daemon.admin, "/switchover?to=master-a").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_burst_between_two_load_reads_spreads_by_requests_in_flight() {
    // One read at start, the next an hour later: the burst sees only the first.
    let (_replicas, daemon) = pool_of_5_1_3(Duration::from_secs(3600)).await;

    let served: Vec<_> = (0..300)
        .map(|_| {
            let proxy = daemon.proxy;
            tokio::spawn(async move { get_with(proxy, "/sleep?ms=300", None).await })
        })
        .collect();
    let mut by_replica: HashMap<String, usize> = HashMap::new();
    for reply in served {
        let reply = reply.await.expect("client task");
        *by_replica
            .entry(reply.master().expect("X-Master").to_owned())
            .or_default() += 1;
    }
    assert_eq!(by_replica.values().sum::<usize>(), 300);
    assert!(
        by_replica.len() >= 2 && by_replica.values().all(|&n| n < 300),
        "spread over the replicas: {by_replica:?}"
    );
    let status = daemon.status().await;
    for backend in status["backends"].as_array().expect("backends") {
        assert_eq!(backend["requests_in_flight"], 0, "{backend}");
    }
    daemon.shutdown().await;
}

#[tokio::test]
async fn killing_the_replica_a_session_is_pinned_to_loses_no_get() {
    let (replicas, daemon) = pool_of_5_1_3(Duration::from_millis(100)).await;
    let first = get_with(daemon.proxy, "/", None).await;
    assert_eq!(first.master(), Some("master-b"));
    let cookie = set_cookie(&first).expect("cookie");

    let load = Load::start(daemon.proxy, 4, "/");
    let session_failures = Arc::new(AtomicUsize::new(0));
    let session = {
        let (proxy, cookie, failures) = (daemon.proxy, cookie.clone(), session_failures.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_millis(300);
            while Instant::now() < deadline {
                let request = Request::get("/")
                    .header("host", proxy.to_string())
                    .header("cookie", cookie.as_str())
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                match send(proxy, request).await {
                    Ok(reply) if reply.status == StatusCode::OK => {}
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    replicas[1].stop().await;
    // The session's next request: answered by another replica, with a new cookie.
    let moved = get_with(daemon.proxy, "/", Some(&cookie)).await;
    let now_on = moved.master().expect("X-Master").to_owned();
    assert_ne!(now_on, "master-b", "placed anew on another replica");
    let new_cookie = set_cookie(&moved).expect("the cookie is replaced");
    assert_ne!(new_cookie, cookie);
    for _ in 0..3 {
        let reply = get_with(daemon.proxy, "/", Some(&new_cookie)).await;
        assert_eq!(
            reply.master(),
            Some(now_on.as_str()),
            "the new cookie holds"
        );
    }
    session.await.expect("session task");
    let (sent, failed) = load.stop().await;
    assert!(sent > 0);
    assert_eq!(
        (failed, session_failures.load(Ordering::SeqCst)),
        (0, 0),
        "no failed GET"
    );
    let status = daemon.status().await;
    assert_eq!(status["backends"][1]["active"], false);
    assert_eq!(status["backends"][1]["state"], "down");
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_cli_session_pair_stays_on_its_replica() {
    let (replicas, daemon) = pool_of_5_1_3(Duration::from_millis(100)).await;
    let cli = |side: &'static str| {
        Request::post("/cli?remoting=false")
            .header("host", daemon.proxy.to_string())
            .header("session", "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b")
            .header("side", side)
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let download = send(daemon.proxy, cli("download")).await.expect("download");
    assert_eq!(download.master(), Some("master-b"));
    // master-b becomes the busiest: the upload still goes there, without a cookie.
    replicas[1].load().set(50, 0, 0);
    wait_loads(&daemon, [5, 50, 3]).await;
    let upload = send(daemon.proxy, cli("upload")).await.expect("upload");
    assert_eq!(upload.status, StatusCode::OK, "{}", upload.text());
    assert_eq!(upload.master(), Some("master-b"), "the pair stays together");
    assert_eq!(
        get_with(daemon.proxy, "/", None).await.master(),
        Some("master-c")
    );
    let status = daemon.status().await;
    assert_eq!(status["backends"][1]["placements"]["session"], 1);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_websocket_stays_on_its_replica_and_disable_drains_it() {
    let start = |name: &'static str, ip: &'static str| async move {
        WsMaster::start(name, format!("{ip}:0").parse().expect("addr"))
            .await
            .expect(name)
    };
    let (a, b) = (
        start("ws-a", "127.0.0.2").await,
        start("ws-b", "127.0.0.3").await,
    );
    let mut config = active_active(&[], Duration::from_millis(100));
    config.backends = backends(&[("ws-a", a.addr()), ("ws-b", b.addr())]);
    let drain_timeout = Duration::from_millis(800);
    config.failover.drain_timeout = drain_timeout;
    let daemon = TestDaemon::start(config).await;
    wait_until("both replicas take traffic", || async {
        let status = daemon.status().await;
        (0..2).all(|i| status["backends"][i]["active"] == true)
    })
    .await;
    // These masters have no JSON API: no load to read, so both are placed alike
    // (file order), and /status says why.
    let status = daemon.status().await;
    assert!(status["backends"][0]["load"].is_null());
    assert!(
        status["backends"][0]["load_error"].is_string(),
        "{status:#}"
    );

    let mut agent = ws_connect(daemon.proxy, "/wsagents/", None)
        .await
        .expect("ws");
    assert_eq!(agent.master.as_deref(), Some("ws-a"));
    agent.send_text("hi").await.expect("send");
    assert_eq!(agent.recv_text().await.expect("echo"), "ws-a: hi");

    let disabled_at = Instant::now();
    let reply = admin_post(daemon.admin, "/backends/ws-a/disable").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // Out of placement at once; the open tunnel stays on its replica meanwhile.
    let mut other = ws_connect(daemon.proxy, "/wsagents/", None)
        .await
        .expect("ws");
    assert_eq!(other.master.as_deref(), Some("ws-b"));
    agent.send_text("still").await.expect("send");
    assert_eq!(agent.recv_text().await.expect("echo"), "ws-a: still");
    assert!(agent.is_closed_within(support::DEADLINE).await, "drained");
    let closed_after = disabled_at.elapsed();
    assert!(
        closed_after >= drain_timeout - Duration::from_millis(50),
        "{closed_after:?}"
    );
    other.send_text("on").await.expect("send");
    assert_eq!(other.recv_text().await.expect("echo"), "ws-b: on");
    wait_until("ws-a's tunnel count back to 0", || async {
        daemon.status().await["backends"][0]["tunnels"] == 0
    })
    .await;

    let reply = admin_post(daemon.admin, "/backends/ws-a/enable").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(daemon.status().await["backends"][0]["active"], true);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_replica_whose_load_cannot_be_read_is_placed_last_not_excluded() {
    let replicas = replicas().await;
    set_loads(&replicas, [(0, 0, 0), (7, 0, 0), (9, 0, 0)]);
    replicas[0].load().set_readable(false);
    let config = active_active(
        &replicas.iter().collect::<Vec<_>>(),
        Duration::from_millis(100),
    );
    let daemon = TestDaemon::start(config).await;
    wait_until("master-a's load unreadable, the others read", || async {
        let status = daemon.status().await;
        status["backends"][0]["load_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500"))
            && status["backends"][2]["load"]["total"] == 9
    })
    .await;
    assert!(daemon.status().await["backends"][0]["load"].is_null());
    assert_eq!(
        get_with(daemon.proxy, "/", None).await.master(),
        Some("master-b")
    );
    for name in ["master-b", "master-c"] {
        let reply = admin_post(daemon.admin, &format!("/backends/{name}/disable")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    assert_eq!(
        get_with(daemon.proxy, "/", None).await.master(),
        Some("master-a")
    );
    let ready = get(daemon.admin, "/ready").await.expect("ready");
    assert_eq!(ready.status, StatusCode::OK);
    assert!(ready.text().contains("master-a"), "{}", ready.text());
    daemon.shutdown().await;
}

/// TCP echo masters on 127.0.0.2 and 127.0.0.3 with the same port, like two replicas'
/// inbound agent ports.
async fn agent_ports() -> (TcpMaster, TcpMaster) {
    for _ in 0..20 {
        let first = TcpMaster::start("tcp-a", "127.0.0.2:0".parse().expect("addr"))
            .await
            .expect("tcp-a");
        let second = format!("127.0.0.3:{}", first.addr().port());
        if let Ok(second) = TcpMaster::start("tcp-b", second.parse().expect("addr")).await {
            return (first, second);
        }
        first.stop().await;
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

#[tokio::test]
async fn a_tcp_agent_connection_goes_to_the_least_loaded_replica_and_stays() {
    let replicas = replicas().await;
    let (tcp_a, tcp_b) = agent_ports().await;
    replicas[0].load().set(5, 0, 0);
    replicas[1].load().set(1, 0, 0);
    let mut config = active_active(&[&replicas[0], &replicas[1]], Duration::from_millis(100));
    config.failover.drain_timeout = Duration::from_millis(300);
    config.tcp = vec![agents_forward(tcp_a.addr().port())];
    let daemon = TestDaemon::start(config).await;
    let loads_read = |a: u64, b: u64| {
        let daemon = &daemon;
        async move {
            wait_until(&format!("loads {a}, {b}"), || async {
                let status = daemon.status().await;
                status["backends"][0]["load"]["total"] == a
                    && status["backends"][1]["load"]["total"] == b
                    && status["backends"][1]["active"] == true
            })
            .await;
        }
    };
    loads_read(5, 1).await;
    let mut agent = TcpStream::connect(daemon.tcp[0]).await.expect("connect");
    assert_eq!(read_greeting(&mut agent).await.expect("greeting"), "tcp-b");

    replicas[1].load().set(50, 0, 0);
    loads_read(5, 50).await;
    let mut second = TcpStream::connect(daemon.tcp[0]).await.expect("connect");
    assert_eq!(read_greeting(&mut second).await.expect("greeting"), "tcp-a");
    assert_eq!(
        tcp_exchange(&mut agent, b"ping").await.expect("echo"),
        b"ping"
    );
    assert_eq!(
        tcp_b.open_connections(),
        1,
        "the first agent stays on its replica"
    );
    assert_eq!(
        daemon.status().await["backends"][1]["placements"]["least_load"],
        1
    );

    // Disabled: its forward is closed after the drain; the agent reconnects elsewhere.
    let reply = admin_post(daemon.admin, "/backends/master-b/disable").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        tcp_closed_within(&mut agent, support::DEADLINE).await,
        "drained"
    );
    assert_eq!(tcp_exchange(&mut second, b"x").await.expect("echo"), b"x");
    daemon.shutdown().await;
}

/// An active-active config file over `replicas`, with `pool` as the `[pool]` table.
fn write_config(path: &std::path::Path, replicas: &[SampleMaster], pool: &str) {
    let mut text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [failover]\nstate_file = \"off\"\n[health]\ninterval = \"100ms\"\ntimeout = \"80ms\"\n\
         [pool]\n{pool}\n"
    );
    for replica in replicas {
        text += &format!(
            "[[backend]]\nname = \"{}\"\nurl = \"{}\"\n",
            replica.name(),
            replica.url()
        );
    }
    std::fs::write(path, text).expect("write config");
}

#[tokio::test]
async fn a_reload_applies_the_cookie_name_but_never_switches_modes() {
    let replicas = replicas().await;
    set_loads(&replicas, [(5, 0, 0), (1, 0, 0), (3, 0, 0)]);
    let dir = std::env::temp_dir().join(format!("jha-aa-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("proxy.toml");
    let pool = "mode = \"active-active\"\nload_interval = \"100ms\"";
    write_config(&path, &replicas, pool);
    let daemon = TestDaemon::start_from_file(&path).await;
    wait_loads(&daemon, [5, 1, 3]).await;

    write_config(
        &path,
        &replicas,
        &format!("{pool}\ncookie_name = \"CI_REPLICA\""),
    );
    let reply = admin_post(daemon.admin, "/reload").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let placed = get_with(daemon.proxy, "/", None).await;
    assert_eq!(placed.master(), Some("master-b"));
    let cookie = placed.headers.get("set-cookie").expect("a cookie");
    assert!(
        cookie.to_str().is_ok_and(|c| c.starts_with("CI_REPLICA=")),
        "{cookie:?}"
    );

    write_config(&path, &replicas, "mode = \"active-passive\"");
    let reply = admin_post(daemon.admin, "/reload").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert!(
        reply.text().contains("pool.mode changed"),
        "{}",
        reply.text()
    );
    assert_eq!(daemon.status().await["mode"], "active-active");
    daemon.shutdown().await;
}
