//! Shared by the integration tests: an in-process daemon on ephemeral loopback ports,
//! a small HTTP client, and waiting on conditions with a deadline (never fixed sleeps).
#![allow(dead_code)] // each test binary uses a different part

pub mod certs;
pub mod child;
pub mod cluster;
pub mod etcd;
pub mod exposition;
pub mod h2;
pub mod tcp_master;
pub mod ws_master;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use jenkins_ha_proxy::config::{
    self, AdminConfig, BackendConfig, Config, Failback, FailoverConfig, HealthConfig, ProxyConfig,
};
use jenkins_ha_proxy::daemon::{self, Listeners};
use jenkins_ha_proxy::sample::SampleMaster;
use tokio::sync::oneshot;

/// Generous: a loaded 2-core CI machine can be slow, and a passing test returns early.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `condition` every 10 ms until it is true; panics with `what` after `DEADLINE`.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
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

/// Waits until the daemon whose admin API is at `admin` names `expected` as the active
/// master in `/status`. Requests go by what the daemon has published, so a test sends
/// them after this, never on a log line.
pub async fn wait_active_at(admin: SocketAddr, expected: &str) {
    wait_until(&format!("{expected} active in /status"), || async {
        get(admin, "/status")
            .await
            .ok()
            .and_then(|reply| serde_json::from_slice::<serde_json::Value>(&reply.body).ok())
            .is_some_and(|status| status["active"] == expected)
    })
    .await;
}

/// Test timings: short, so the suite is fast; timeout well under interval.
pub fn health(interval_ms: u64, rise: u32, fall: u32) -> HealthConfig {
    HealthConfig {
        path: "/login".into(),
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(interval_ms * 4 / 5),
        rise,
        fall,
        expect_header: None,
        expect_body: None,
    }
}

/// `[[backend]]` entries for masters of any kind, by name and address.
pub fn backends(masters: &[(&str, SocketAddr)]) -> Vec<BackendConfig> {
    masters
        .iter()
        .map(|(name, addr)| BackendConfig {
            name: (*name).to_owned(),
            url: format!("http://{addr}"),
            tls: false,
            tls_server_name: None,
            host: addr.ip().to_string(),
            port: addr.port(),
            standby: config::Standby::None,
            start_command: None,
            fence_command: None,
            max_connections: config::DEFAULT_BACKEND_MAX_CONNECTIONS,
            max_connects: config::DEFAULT_BACKEND_MAX_CONNECTS,
        })
        .collect()
}

pub fn config_for(masters: &[&SampleMaster], health: HealthConfig, failback: Failback) -> Config {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    Config {
        proxy: ProxyConfig {
            listen: loopback,
            connect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(3),
            header_read_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(2),
            tunnel_idle_timeout: Some(config::DEFAULT_TUNNEL_IDLE_TIMEOUT),
            response_idle_timeout: None,
            access_log: false,
            request_timeout: Some(Duration::from_secs(30)),
            max_header_bytes: config::DEFAULT_MAX_HEADER_BYTES,
            max_headers: config::DEFAULT_MAX_HEADERS,
            max_connections: config::DEFAULT_MAX_CONNECTIONS,
            workers: None,
            http2_max_streams: config::DEFAULT_HTTP2_MAX_STREAMS,
            tls: None,
        },
        admin: AdminConfig {
            listen: loopback,
            token_file: None,
            tls: None,
        },
        health,
        failover: FailoverConfig {
            failback,
            drain_timeout: config::DEFAULT_DRAIN_TIMEOUT,
            // Tests must not write state into the working directory.
            state_file: None,
            require_fence: false,
            hold_timeout: config::DEFAULT_HOLD_TIMEOUT,
            promote_timeout: Duration::from_secs(10),
            starting_grace: Duration::ZERO,
            command_timeout: Duration::from_secs(5),
            // Tests that fail back want it at once.
            min_active_time: Duration::ZERO,
        },
        backends: backends(
            &masters
                .iter()
                .map(|m| (m.name(), m.addr()))
                .collect::<Vec<_>>(),
        ),
        jenkins: config::JenkinsConfig {
            call_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        hooks: Vec::new(),
        tcp: Vec::new(),
        cluster: None,
        upstream_tls: Default::default(),
        pool: Default::default(),
    }
}

/// The real daemon, in-process, on ephemeral ports.
pub struct TestDaemon {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The `[[tcp]]` listeners, in config order.
    pub tcp: Vec<SocketAddr>,
    /// `proxy.tls.http_redirect_listen`, when configured.
    pub redirect: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), jenkins_ha_proxy::daemon::Fatal>>,
}

impl TestDaemon {
    pub async fn start(config: Config) -> TestDaemon {
        TestDaemon::start_with_source(config, None).await
    }

    /// Starts the daemon as `run --config FILE` does: reloads re-read `source`.
    pub async fn start_from_file(source: &std::path::Path) -> TestDaemon {
        let config = Config::load(source).expect("valid config file");
        TestDaemon::start_with_source(config, Some(source.to_path_buf())).await
    }

    async fn start_with_source(config: Config, source: Option<std::path::PathBuf>) -> TestDaemon {
        let listeners = Listeners::bind(&config).await.expect("bind listeners");
        let proxy = listeners.proxy.local_addr().expect("proxy addr");
        let admin = listeners.admin.local_addr().expect("admin addr");
        let tcp = listeners
            .tcp
            .iter()
            .map(|l| l.local_addr().expect("tcp addr"))
            .collect();
        let redirect = listeners
            .redirect
            .as_ref()
            .map(|l| l.local_addr().expect("redirect addr"));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(daemon::run(config, source, listeners, async move {
            let _ = stopped.await;
        }));
        TestDaemon {
            proxy,
            admin,
            tcp,
            redirect,
            stop: Some(stop),
            task,
        }
    }

    /// Starts the daemon and waits until `expected` is the active master.
    pub async fn start_with_active(config: Config, expected: &str) -> TestDaemon {
        let daemon = TestDaemon::start(config).await;
        daemon.wait_active(Some(expected)).await;
        daemon
    }

    pub async fn status(&self) -> serde_json::Value {
        let response = get(self.admin, "/status").await.expect("GET /status");
        assert_eq!(response.status, StatusCode::OK);
        serde_json::from_slice(&response.body).expect("/status is JSON")
    }

    pub async fn active(&self) -> Option<String> {
        self.status().await["active"].as_str().map(str::to_owned)
    }

    pub async fn wait_active(&self, expected: Option<&str>) {
        wait_until(&format!("active master to be {expected:?}"), || async {
            self.active().await.as_deref() == expected
        })
        .await;
    }

    /// Asks the daemon to stop and waits for it (the shutdown grace applies).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, &mut self.task)
            .await
            .expect("daemon stops within the deadline")
            .expect("daemon task did not panic")
            .expect("daemon stopped because it was asked to");
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn master(&self) -> Option<&str> {
        self.headers.get("x-master").and_then(|v| v.to_str().ok())
    }
}

/// One request on a fresh connection (like curl), body read to the end.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Result<Reply, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub async fn get(addr: SocketAddr, path: &str) -> Result<Reply, String> {
    let request = Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    send(addr, request).await
}

/// A request body fed chunk by chunk from the test: send on the sender, drop it to end.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    (sender, ChannelBody(receiver))
}

pub struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(hyper::body::Frame::data(data))))
    }
}

/// Clients that send `GET path` on fresh connections until stopped, counting what
/// was sent and what failed (anything but 200). Failures are printed as they happen.
pub struct Load {
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
    failures: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(proxy: SocketAddr, clients: usize, path: &'static str) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let running = Arc::new(AtomicBool::new(true));
        let failures = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (running, failures, sent) = (running.clone(), failures.clone(), sent.clone());
                tokio::spawn(async move {
                    while running.load(Ordering::Relaxed) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        match get(proxy, path).await {
                            Ok(reply) if reply.status == StatusCode::OK => {}
                            other => {
                                eprintln!("failed: {:?}", other.map(|r| (r.status, r.text())));
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            running,
            failures,
            sent,
            tasks,
        }
    }

    /// Stops the clients; returns (sent, failed).
    pub async fn stop(self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        self.running.store(false, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("client task");
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}
