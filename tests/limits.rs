//! The process's own limits, on the real binary in a process of its own: ten thousand
//! idle client connections, what happens at the open-file limit (EMFILE), and the
//! number of threads serving clients.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jenkins_ha_proxy::sample::SampleMaster;
use support::child::ChildDaemon;
use support::{get, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: accepting 10,000 connections in a debug build keeps both cores busy, and
/// a slow probe must not pass for a dead master here.
const HEALTH_TIMEOUT: &str = "500ms";

/// "Served quickly": a loopback request that waits behind nothing takes milliseconds.
const QUICKLY: Duration = Duration::from_secs(1);

fn config_file(name: &str, master: &SampleMaster, proxy_extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jha-limits-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("proxy.toml");
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n{proxy_extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [failover]\nstate_file = \"off\"\n\
         [health]\ninterval = \"600ms\"\ntimeout = \"{HEALTH_TIMEOUT}\"\nrise = 1\nfall = 3\n\
         [[backend]]\nname = \"{}\"\nurl = \"{}\"\n",
        master.name(),
        master.url()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

async fn master() -> SampleMaster {
    SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a")
}

/// One request on `stream` (kept open); returns the status code and the body.
async fn request_on(stream: &mut TcpStream, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: proxy\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(support::DEADLINE, stream.read(&mut buf))
            .await
            .expect("a response within the deadline")
            .expect("read");
        assert!(n > 0, "connection closed after {received:?}");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("a content-length");
        if body.len() >= length {
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .expect("a status code");
            return (status, body.to_owned());
        }
    }
}

async fn status(admin: SocketAddr) -> serde_json::Value {
    let reply = get(admin, "/status").await.expect("GET /status");
    serde_json::from_slice(&reply.body).expect("/status is JSON")
}

/// The idle connections of the issue, all held by this test process (the daemon, in
/// its own process, holds the other end of each).
const IDLE_CONNECTIONS: usize = 10_000;
/// Descriptors the daemon opens and closes on its own (health checks, pooled
/// master connections): its count may be off by this many either way.
const FD_NOISE: usize = 16;
/// Descriptors this process needs besides them (the master, the test harness).
const TEST_RESERVE: u64 = 512;

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (the daemon inherits
/// it), and fails with what to do if that cannot hold `needed` descriptors.
fn raise_open_file_limit(needed: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    assert!(
        hard >= needed,
        "this test needs {needed} open files, but the hard RLIMIT_NOFILE is {hard}: \
         raise it (ulimit -Hn, or LimitNOFILE for the CI service)"
    );
    if limit.current.is_some_and(|soft| soft < needed) {
        let raised = Rlimit {
            current: Some(needed.min(hard)),
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised).expect("raise the soft RLIMIT_NOFILE");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_stop_a_normal_request() {
    raise_open_file_limit(IDLE_CONNECTIONS as u64 + TEST_RESERVE);
    let master = master().await;
    // Idle connections must outlive the test, not be cut by the header timeout.
    let config = config_file("idle", &master, "header_read_timeout = \"5m\"");
    let daemon = ChildDaemon::start(&config, None).await;
    wait_until("master-a active", || async {
        status(daemon.admin).await["active"] == "master-a"
    })
    .await;
    let before = daemon.open_fds();
    let traffic_before = master.traffic_count();

    // In batches the listen backlog can hold: a burst beyond it is not refused but
    // delayed by the kernel's handshake retransmits (seconds), which is not what
    // this test is about.
    let connecting = Instant::now();
    let deadline = connecting + Duration::from_secs(60);
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for batch in (0..IDLE_CONNECTIONS).collect::<Vec<_>>().chunks(2000) {
        for i in batch {
            match TcpStream::connect(daemon.proxy).await {
                Ok(stream) => idle.push(stream),
                Err(error) => panic!("idle connection {i} of {IDLE_CONNECTIONS} failed: {error}"),
            }
        }
        while daemon.open_fds() + FD_NOISE < before + idle.len() {
            assert!(
                Instant::now() < deadline,
                "the daemon accepted only {} of {} idle connections; its log:\n{}",
                daemon.open_fds().saturating_sub(before),
                idle.len(),
                daemon.log().join("\n")
            );
            // Not too often: listing 10,000 descriptors in /proc holds up the
            // daemon's own accept calls.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "10,000 idle connections open after {:?}",
        connecting.elapsed()
    );
    // Half of them have sent a partial request head, half nothing at all.
    for stream in idle.iter_mut().step_by(2) {
        stream
            .write_all(b"GET /idle HTTP/1.1\r\nHost: proxy\r\n")
            .await
            .expect("partial head");
    }

    // A normal client next to them: a keep-alive connection, three requests, each
    // answered at once by the master.
    let mut stream = TcpStream::connect(daemon.proxy).await.expect("connect");
    for round in 0..3 {
        let started = Instant::now();
        let (code, body) = request_on(&mut stream, &format!("/normal-{round}")).await;
        let took = started.elapsed();
        assert_eq!(code, 200, "{body}");
        assert_eq!(body, "hello from master-a\n");
        assert!(
            took < QUICKLY,
            "request {round} took {took:?} next to 10,000 idle connections"
        );
    }
    // And a new connection per request, as browsers and scripts also do.
    let started = Instant::now();
    let reply = get(daemon.proxy, "/normal-fresh").await.expect("GET");
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() < QUICKLY, "took {:?}", started.elapsed());
    // The admin API answers too, and nothing moved.
    let state = status(daemon.admin).await;
    assert_eq!(state["active"], "master-a", "{state:#}");
    assert_eq!(state["failovers"], 0, "{state:#}");
    // The partial heads never became requests at the master.
    assert_eq!(master.traffic_count(), traffic_before + 4);

    drop(idle);
    wait_until("the daemon to close the idle connections", || async {
        daemon.open_fds() < before + 100
    })
    .await;
}

/// A limit low enough to reach with a few hundred connections. Of it, the daemon
/// keeps an eighth (32) from client connections, and a quarter of that (8) from its
/// connections to masters too: those are for the admin API and the health checks.
const TIGHT_OPEN_FILES: u64 = 256;
/// Descriptors numbered from here on are refused to client connections...
const CLIENT_CEILING: usize = 224;
/// ... and from here on to connections to masters.
const UPSTREAM_CEILING: usize = 248;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_open_file_limit_clients_leave_descriptors_for_masters_and_the_admin_api() {
    raise_open_file_limit(2 * TIGHT_OPEN_FILES + TEST_RESERVE);
    let master = master().await;
    let config = config_file(
        "emfile",
        &master,
        "header_read_timeout = \"5m\"\npool_idle_timeout = \"100ms\"",
    );
    let daemon = ChildDaemon::start(&config, Some(TIGHT_OPEN_FILES)).await;
    daemon
        .wait_log("allows about 0 client connections, fewer than proxy.max_connections")
        .await;
    wait_until("master-a active", || async {
        status(daemon.admin).await["active"] == "master-a"
    })
    .await;

    // The first connection is served while descriptors are left; it will ask for a
    // page again later (by then its master connection has been closed by the pool's
    // idle timeout, so a new one is needed).
    let mut first = TcpStream::connect(daemon.proxy).await.expect("connect");
    let (code, body) = request_on(&mut first, "/before").await;
    assert_eq!(code, 200, "{body}");
    // Then more clients than the limit: those past the clients' share are closed at
    // once, and the daemon says why.
    let mut flood = Vec::new();
    for _ in 0..TIGHT_OPEN_FILES {
        flood.push(TcpStream::connect(daemon.proxy).await.expect("connect"));
    }
    daemon.wait_log("near the open-file limit").await;
    wait_until("the clients' share of descriptors to be taken", || async {
        daemon.open_fds() >= CLIENT_CEILING
    })
    .await;
    // The admin API answers, and a request needing a new connection to the master is
    // served: clients cannot take what those need.
    assert_eq!(status(daemon.admin).await["active"], "master-a");
    let (code, body) = request_on(&mut first, "/while-clients-took-theirs").await;
    assert_eq!(code, 200, "{body}");

    // Idle admin connections take what is left below the masters' reserve (one more
    // than that, in case a health check's socket was counted): now a new connection
    // to the master is refused (503, naming why), and the admin API still answers
    // from the last descriptors.
    wait_until("the pooled master connection to expire", || async {
        status(daemon.admin).await["backends"][0]["open_connections"] == 0
    })
    .await;
    let mut admin_idle = Vec::new();
    while daemon.open_fds() <= UPSTREAM_CEILING {
        // An answer on the connection shows the daemon accepted it (counting
        // descriptors would not: a health check's socket comes and goes meanwhile).
        let mut admin = TcpStream::connect(daemon.admin)
            .await
            .expect("admin connect");
        let (code, body) = request_on(&mut admin, "/status").await;
        assert_eq!(code, 200, "{body}");
        admin_idle.push(admin);
    }
    let (code, body) = request_on(&mut first, "/while-out-of-files").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("out of file descriptors"), "{body}");
    assert_eq!(status(daemon.admin).await["active"], "master-a");

    // Free the descriptors: the daemon serves new clients again, and never blamed
    // master-a (its health checks ran throughout).
    drop(flood);
    drop(admin_idle);
    drop(first);
    wait_until("a request served again", || async {
        get(daemon.proxy, "/after")
            .await
            .is_ok_and(|reply| reply.status == 200 && reply.text() == "hello from master-a\n")
    })
    .await;
    let state = status(daemon.admin).await;
    assert_eq!(state["active"], "master-a", "{state:#}");
    assert_eq!(state["failovers"], 0, "{state:#}");
    let transitions = state["transitions"].as_array().expect("transitions");
    assert_eq!(
        transitions.len(),
        1,
        "only the first election, no master marked down: {state:#}"
    );
    let log = daemon.log().join("\n");
    assert!(!log.contains("master-a down"), "{log}");
    assert!(!log.contains("a health check could not run"), "{log}");
}

/// Names of the daemon's threads that serve client connections.
fn proxy_worker_threads(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|error| panic!("read /proc/{pid}/task: {error}"));
    let mut names: Vec<String> = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("proxy-worker-"))
        .collect();
    names.sort();
    names
}

/// `proxy.workers` sets how many threads serve clients; without it, one per core.
#[tokio::test]
async fn proxy_workers_sets_the_threads_that_serve_clients() {
    let master = master().await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (name, extra, expected) in [
        ("three", "workers = 3", 3),
        // One is a thread of its own too, not the runtime the health checks share.
        ("one", "workers = 1", 1),
        ("auto", "", cores),
    ] {
        let config = config_file(&format!("workers-{name}"), &master, extra);
        let daemon = ChildDaemon::start(&config, None).await;
        daemon.wait_log(&format!("workers={expected}")).await;
        wait_until("master-a active", || async {
            status(daemon.admin).await["active"] == "master-a"
        })
        .await;
        let served = get(daemon.proxy, &format!("/workers-{name}"))
            .await
            .expect("a request through the proxy");
        assert_eq!(served.status, 200, "{name}: {}", served.text());
        let want: Vec<String> = (0..expected).map(|i| format!("proxy-worker-{i}")).collect();
        assert_eq!(proxy_worker_threads(daemon.pid), want, "{name}");
        if name == "three" {
            // A reload cannot change it: the log says so, and the threads stay.
            let again = config_file("workers-three", &master, "workers = 1");
            assert_eq!(again, config);
            let request = hyper::Request::post("/reload")
                .header("host", daemon.admin.to_string())
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request");
            let reply = support::send(daemon.admin, request).await.expect("reload");
            assert_eq!(reply.status, 200, "{}", reply.text());
            let line = daemon.wait_log("apply after a restart").await;
            assert!(line.contains("proxy.workers"), "{line}");
            assert_eq!(proxy_worker_threads(daemon.pid), want, "after the reload");
        }
    }
}
