//! The proxies under test: jenkins-ha-proxy (the release binary Cargo builds for
//! benches), HAProxy and nginx, each started as a child process with a generated
//! config in front of a primary and a backup upstream. Everything on loopback.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::child::{free_port, wait_for_http, Child, Stop};
use super::sys::nofile_limit;

/// Built by `cargo bench` (bench profile = release settings) before the benches run.
pub const OUR_BINARY: &str = env!("CARGO_BIN_EXE_jenkins-ha-proxy");
const READY_PATIENCE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// jenkins-ha-proxy.
    Ours,
    /// HAProxy as in the classic Jenkins HA guide: `backup`, `option httpchk GET
    /// /login`, `inter 2s fall 3 rise 2` (the check timeout is then `inter`).
    HaproxyClassic,
    /// HAProxy with our check timings, `option redispatch` and `retries 3`.
    HaproxyTuned,
    /// nginx: `upstream` with a `backup` server and upstream keep-alive (passive
    /// checks only: open-source nginx has no active health checks).
    Nginx,
    /// jenkins-ha-proxy in cluster mode: two instances agreeing through one etcd
    /// (Debian's etcd-server), the load split between them (failover bench only).
    OursCluster,
}

impl ProxyKind {
    pub fn label(self) -> &'static str {
        match self {
            ProxyKind::Ours => "jenkins-ha-proxy",
            ProxyKind::HaproxyClassic => "HAProxy (classic guide)",
            ProxyKind::HaproxyTuned => "HAProxy (our timings + redispatch)",
            ProxyKind::Nginx => "nginx (backup)",
            ProxyKind::OursCluster => "jenkins-ha-proxy cluster (2 instances, etcd)",
        }
    }

    /// Ours, standalone or in cluster mode (the peers are the others).
    pub fn is_ours(self) -> bool {
        matches!(self, ProxyKind::Ours | ProxyKind::OursCluster)
    }

    fn program(self) -> &'static str {
        match self {
            ProxyKind::Ours => OUR_BINARY,
            ProxyKind::HaproxyClassic | ProxyKind::HaproxyTuned => "haproxy",
            ProxyKind::Nginx => "nginx",
            // What the cluster needs besides our binary.
            ProxyKind::OursCluster => "etcd",
        }
    }

    /// Ours is always there (Cargo built it); peers (and etcd) must be on PATH.
    pub fn installed(self) -> bool {
        self == ProxyKind::Ours || on_path(self.program())
    }

    /// `haproxy -v` / `nginx -v` first line, for the report.
    pub fn version(self) -> Option<String> {
        let flag = match self {
            ProxyKind::Ours | ProxyKind::OursCluster => {
                return Some(format!("jenkins-ha-proxy {}", env!("CARGO_PKG_VERSION")))
            }
            ProxyKind::HaproxyClassic | ProxyKind::HaproxyTuned => "-v",
            ProxyKind::Nginx => "-v",
        };
        let out = Command::new(self.program()).arg(flag).output().ok()?;
        // nginx prints its version on stderr.
        let text = [out.stdout, out.stderr].concat();
        String::from_utf8_lossy(&text)
            .lines()
            .next()
            .map(str::to_owned)
    }
}

pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Health-check timings, as in our `[health]` table.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl Checks {
    /// Our defaults (`health.*` in the README), also the classic guide's inter/rise/fall.
    pub const DEFAULT: Checks = Checks {
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        rise: 2,
        fall: 3,
    };
}

/// What a proxy is put in front of, and how.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    pub kind: ProxyKind,
    pub listen: SocketAddr,
    pub primary: SocketAddr,
    pub backup: SocketAddr,
    /// Our worker threads, HAProxy's nbthread, nginx's worker_processes.
    pub workers: usize,
    pub checks: Checks,
}

/// A proxy running as a child process; stopped on drop.
pub struct RunningProxy {
    pub kind: ProxyKind,
    pub listen: SocketAddr,
    pub child: Child,
}

impl RunningProxy {
    /// The process whose tree is measured (nginx: the master; workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// Writes the config into `dir`, starts the proxy, and waits until `GET /` through it
/// answers 200.
pub fn start(spec: &ProxySpec, dir: &Path) -> Result<RunningProxy, String> {
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let (command, stop) = match spec.kind {
        ProxyKind::Ours => ours(spec, dir, "")?,
        ProxyKind::OursCluster => {
            return Err("a cluster is started by the failover bench (cluster.rs)".into())
        }
        ProxyKind::HaproxyClassic | ProxyKind::HaproxyTuned => haproxy(spec, dir)?,
        ProxyKind::Nginx => nginx(spec, dir)?,
    };
    let mut child = Child::spawn(spec.kind.label(), command, &dir.join("proxy.log"), stop)?;
    wait_for_http(&mut child, spec.listen, "/", READY_PATIENCE, |_| true)?;
    Ok(RunningProxy {
        kind: spec.kind,
        listen: spec.listen,
        child,
    })
}

fn write(path: PathBuf, text: &str) -> Result<PathBuf, String> {
    fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

/// Our config for `spec` with `extra` at the end (e.g. a `[cluster]` table), and the
/// command that runs it.
pub fn ours(spec: &ProxySpec, dir: &Path, extra: &str) -> Result<(Command, Stop), String> {
    let admin = free_port([127, 0, 0, 1])?;
    ours_with_admin(spec, admin, dir, extra)
}

/// [`ours`] with the admin listener at `admin`.
pub fn ours_with_admin(
    spec: &ProxySpec,
    admin: SocketAddr,
    dir: &Path,
    extra: &str,
) -> Result<(Command, Stop), String> {
    let checks = spec.checks;
    let text = format!(
        r#"[proxy]
listen = "{listen}"
[admin]
listen = "{admin}"
[failover]
# Every run starts fresh: no master remembered from an earlier run.
state_file = "off"
[health]
path = "/login"
interval = "{interval}ms"
timeout = "{timeout}ms"
rise = {rise}
fall = {fall}
[[backend]]
name = "master-a"
url = "http://{primary}"
[[backend]]
name = "master-b"
url = "http://{backup}"
{extra}
"#,
        listen = spec.listen,
        interval = checks.interval.as_millis(),
        timeout = checks.timeout.as_millis(),
        rise = checks.rise,
        fall = checks.fall,
        primary = spec.primary,
        backup = spec.backup,
    );
    let config = write(dir.join("jenkins-ha-proxy.toml"), &text)?;
    let mut command = Command::new(OUR_BINARY);
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        // Runtime::new() reads this: the same worker count as HAProxy's nbthread.
        .env("TOKIO_WORKER_THREADS", spec.workers.to_string())
        .env("RUST_LOG", "info");
    Ok((command, Stop::Term))
}

fn haproxy(spec: &ProxySpec, dir: &Path) -> Result<(Command, Stop), String> {
    let config = write(dir.join("haproxy.cfg"), &haproxy_config(spec))?;
    let mut command = Command::new("haproxy");
    // -db: stay in the foreground, one process (threads: nbthread).
    command.arg("-db").arg("-f").arg(config);
    Ok((command, Stop::Term))
}

/// HAProxy refuses to start unless it can have 2 descriptors per connection (plus a
/// few): its `maxconn` must fit the RLIMIT_NOFILE it inherits.
pub fn haproxy_maxconn() -> u64 {
    (nofile_limit().saturating_sub(40) / 2).min(60_000)
}

pub fn haproxy_config(spec: &ProxySpec) -> String {
    let mut text = format!(
        "global\n    nbthread {workers}\n    maxconn {maxconn}\n\n\
         defaults\n    mode http\n    maxconn {maxconn}\n    option forwardfor\n\
         \x20   timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
         \x20   timeout http-request 30s\n    timeout http-keep-alive 60s\n\n\
         frontend jenkins_front\n    bind {listen}\n\
         \x20   http-request set-header X-Forwarded-Proto http\n\
         \x20   http-request set-header X-Forwarded-Host %[req.hdr(host)]\n\
         \x20   http-request set-header X-Forwarded-Port %[dst_port]\n\
         \x20   default_backend jenkins\n\n\
         backend jenkins\n    option httpchk GET /login\n",
        workers = spec.workers,
        listen = spec.listen,
        maxconn = haproxy_maxconn(),
    );
    let c = spec.checks;
    let check = format!(
        "check inter {}ms fall {} rise {}",
        c.interval.as_millis(),
        c.fall,
        c.rise
    );
    if spec.kind == ProxyKind::HaproxyTuned {
        let _ = writeln!(
            text,
            "    option redispatch\n    retries 3\n    timeout check {}ms",
            c.timeout.as_millis()
        );
    }
    let _ = writeln!(text, "    server master-a {} {check}", spec.primary);
    let _ = writeln!(text, "    server master-b {} {check} backup", spec.backup);
    text
}

fn nginx(spec: &ProxySpec, dir: &Path) -> Result<(Command, Stop), String> {
    let temp = dir.join("temp");
    fs::create_dir_all(&temp).map_err(|e| format!("creating {}: {e}", temp.display()))?;
    let config = write(dir.join("nginx.conf"), &nginx_config(spec, dir))?;
    let mut command = Command::new("nginx");
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(config)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-g")
        .arg("daemon off;");
    Ok((command, Stop::Term))
}

pub fn nginx_config(spec: &ProxySpec, dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"user root;
worker_processes {workers};
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    client_body_temp_path {d}/temp/client;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    upstream jenkins {{
        server {primary};
        server {backup} backup;
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen} backlog=4096;
        location / {{
            proxy_pass http://jenkins;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Port $server_port;
        }}
    }}
}}
"#,
        workers = spec.workers,
        primary = spec.primary,
        backup = spec.backup,
        listen = spec.listen,
    )
}
