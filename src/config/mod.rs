//! Configuration: the TOML schema (raw serde types, unknown keys rejected) and the
//! validated [`Config`] the rest of the daemon runs on.
//!
//! Every error a user can cause names the file, the line and the key, and says what
//! to do. Defaults are the `DEFAULT_*` consts below; the README and
//! `config/jenkins-ha-proxy.toml` document the same values.
//!
//! One job per file:
//! - this file: the validated types, defaults, [`ConfigError`] and the entry points;
//! - `raw`: the serde schema, exactly what the file may contain;
//! - `errors`: toml/serde errors turned into `file:line: key: message`;
//! - `validate`: raw -> [`Config`], every check naming the offending line
//!   (`validate/backend`: the `[[backend]]` masters, `validate/tcp`: the `[[tcp]]`
//!   listeners);
//! - `summary`: the one-screen text `check` prints;
//! - `pool`, `tls`: the validated `[pool]` and TLS tables.

mod errors;
mod pool;
mod raw;
mod summary;
mod tls;
mod validate;

pub use pool::{
    PoolConfig, PoolMode, ACTIVE_ACTIVE_WARNING, DEFAULT_COOKIE_NAME, DEFAULT_LOAD_INTERVAL,
    MIN_LOAD_INTERVAL,
};
pub use tls::{ClientCertFiles, ServerTlsConfig, SniCertificate, TlsVersion, UpstreamTlsConfig};
pub use validate::etcd_endpoint;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use errors::Source;
use raw::RawConfig;

pub const DEFAULT_HEALTH_PATH: &str = "/login";
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Below Jenkins' (Jetty's) ~5 s idle keep-alive close, so we never reuse a
/// connection the master is about to drop.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Relative to the working directory (the systemd unit sets /var/lib/jenkins-ha-proxy).
pub const DEFAULT_STATE_FILE: &str = "state.json";
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// `[cluster] key_prefix` when it is left out.
pub const DEFAULT_KEY_PREFIX: &str = "/jenkins-ha-proxy/default";
/// `[cluster] lease_ttl` when it is left out.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// Admin API connections served at once: enough for people and scripts, never enough
/// to take the descriptors the proxy needs.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Concurrent streams one HTTP/2 client connection may open (each needs a connection to
/// the master while it runs).
pub const DEFAULT_HTTP2_MAX_STREAMS: usize = 100;
/// HTTP connections to one master (busy or idle), as HAProxy's server `maxconn`.
pub const DEFAULT_BACKEND_MAX_CONNECTIONS: usize = 512;
/// Connects in progress to one master at once: below Jenkins' accept queue (Jetty
/// listens with Java's default backlog of 50), so a burst is never met with dropped SYNs.
pub const DEFAULT_BACKEND_MAX_CONNECTS: usize = 32;
/// Forwards one `[[tcp]]` listener carries at once.
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 2_000;
/// Three times the TCP agents' 5-minute ping: a live agent is never cut, a vanished one
/// gives its descriptors back.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_MIN_ACTIVE_TIME: Duration = Duration::from_secs(30);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_PROMOTE_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
pub const DEFAULT_FAILBACK: Failback = Failback::Never;
/// Well above Jenkins' 30 s WebSocket ping, so a live agent connection never looks
/// idle; a half-open one (the peer vanished) is closed within this.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Time a demoted master keeps its open connections (tunnels, TCP forwards, streams)
/// after the active master changes.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The validated configuration. Built only by [`Config::parse`] / [`Config::load`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub health: HealthConfig,
    pub failover: FailoverConfig,
    /// In file order: the order of preference for the election.
    pub backends: Vec<BackendConfig>,
    /// `[jenkins]`: credentials for the REST calls of hot promotion.
    pub jenkins: JenkinsConfig,
    /// `[[hooks]]`: commands run on events, in file order.
    pub hooks: Vec<HookConfig>,
    /// `[[tcp]]` listeners in file order (may be empty).
    pub tcp: Vec<TcpConfig>,
    /// `[cluster]`: several proxy instances agreeing through etcd; None: standalone.
    pub cluster: Option<ClusterConfig>,
    /// `[upstream_tls]`: how `https://` masters are verified (all of them alike).
    pub upstream_tls: UpstreamTlsConfig,
    /// `[pool]`: one master at a time (the default), or all of them (active-active).
    pub pool: PoolConfig,
}

/// `[cluster]`: this instance's place in a pool of proxies that agree on one active
/// master through etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `etcd`: the members' client URLs, `http://host:port` each (at least one).
    pub etcd: Vec<String>,
    /// `instance`: this proxy's name, unique in the pool. Default: the host name.
    pub instance: String,
    /// `key_prefix`: the pool's keys in etcd; one pool per prefix. Default
    /// [`DEFAULT_KEY_PREFIX`].
    pub key_prefix: String,
    /// `lease_ttl`: how long an instance's registration outlives its last renewal,
    /// and the longest time it acts on a view it cannot confirm. Default
    /// [`DEFAULT_LEASE_TTL`].
    pub lease_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// `proxy.listen`: where clients (browsers, agents, CLI) connect.
    pub listen: SocketAddr,
    /// `proxy.connect_timeout`: deadline for opening a TCP connection to a master.
    pub connect_timeout: Duration,
    /// `proxy.pool_idle_timeout`: idle upstream connections older than this are not
    /// reused, and a reaper closes them.
    pub pool_idle_timeout: Duration,
    /// `proxy.header_read_timeout`: a client must send its request head within this
    /// (also the HTTP/1 keep-alive idle timeout: hyper restarts it between requests).
    pub header_read_timeout: Duration,
    /// `proxy.shutdown_timeout`: grace period for in-flight requests on SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// `proxy.retry_after`: value of the Retry-After header on 503 (whole seconds, rounded up).
    pub retry_after: Duration,
    /// `proxy.tunnel_idle_timeout`: closes an upgraded connection (WebSocket) silent
    /// this long. Default [`DEFAULT_TUNNEL_IDLE_TIMEOUT`] = 5 min (must exceed
    /// Jenkins' 30 s WebSocket ping). "0s" or "off" disables (None).
    pub tunnel_idle_timeout: Option<Duration>,
    /// `proxy.response_idle_timeout`: ends a streamed response when the master sends
    /// nothing this long. Default: none (key absent => None); "0s"/"off" => None.
    pub response_idle_timeout: Option<Duration>,
    /// `proxy.access_log`: one info line per request under the log target
    /// `jenkins_ha_proxy::access` (time, client, method, path, status, bytes, duration,
    /// master). Default false.
    pub access_log: bool,
    /// `proxy.request_timeout`: how long a request waits for the master's response
    /// head (not the body: streams are never cut by it), then 504. Default
    /// [`DEFAULT_REQUEST_TIMEOUT`]; "off" disables it.
    pub request_timeout: Option<Duration>,
    /// `proxy.max_header_bytes`: largest request head accepted (431 beyond). Default
    /// [`DEFAULT_MAX_HEADER_BYTES`]; at least 8192.
    pub max_header_bytes: usize,
    /// `proxy.max_headers`: most header fields in a request. Default [`DEFAULT_MAX_HEADERS`].
    pub max_headers: usize,
    /// `proxy.max_connections`: client connections served at once; more are closed
    /// at once (and logged) rather than exhausting file descriptors.
    pub max_connections: usize,
    /// `proxy.workers`: threads serving client connections. Default (None): one per
    /// CPU core the process may use. Applies at start-up.
    pub workers: Option<usize>,
    /// `proxy.http2_max_streams`: concurrent streams per HTTP/2 client connection.
    /// Default [`DEFAULT_HTTP2_MAX_STREAMS`].
    pub http2_max_streams: usize,
    /// `[proxy.tls]`: HTTPS on `listen`; None: clear text (HTTP/1.1 and h2c).
    pub tls: Option<ServerTlsConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// `admin.listen`: where `/status` is served.
    pub listen: SocketAddr,
    /// `admin.token_file`: a file holding the bearer token that mutating admin calls
    /// (switchover, disable/enable, reload) must present. None: no token required,
    /// which validation allows only on a loopback `listen`.
    pub token_file: Option<PathBuf>,
    /// `[admin.tls]`: HTTPS on `listen` (one certificate, HTTP/1.1); None: clear text.
    pub tls: Option<ServerTlsConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// `health.path`: request target of the probe, origin-form (starts with `/`).
    pub path: String,
    pub interval: Duration,
    /// Always strictly less than `interval` (validated).
    pub timeout: Duration,
    /// Consecutive successes for a down master to become healthy (>= 1).
    pub rise: u32,
    /// Consecutive failures for a healthy master to become unhealthy (>= 1).
    pub fall: u32,
    /// `health.expect_header`: a response header that must be present (e.g.
    /// `X-Jenkins`), so a port answered by something else is not taken for Jenkins.
    pub expect_header: Option<String>,
    /// `health.expect_body`: a substring the response body must contain.
    pub expect_body: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failback {
    /// Stay on the master that took over, even after an earlier one recovers.
    Never,
    /// Return to the first healthy master in file order once it has risen.
    Auto,
}

impl Failback {
    pub fn as_str(self) -> &'static str {
        match self {
            Failback::Never => "never",
            Failback::Auto => "auto",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailoverConfig {
    pub failback: Failback,
    /// `failover.drain_timeout`: after the active master changes, connections still
    /// attached to the demoted master are closed once this has passed. Default
    /// [`DEFAULT_DRAIN_TIMEOUT`] = 10 s. "0s" allowed (close at once).
    pub drain_timeout: Duration,
    /// `failover.state_file`: where the active master is remembered across restarts of
    /// the proxy. Default [`DEFAULT_STATE_FILE`], relative to the working directory;
    /// "off" disables (None).
    pub state_file: Option<PathBuf>,
    /// `failover.require_fence`: no promotion until fencing the old master succeeded.
    pub require_fence: bool,
    /// `failover.hold_timeout`: client requests wait this long for a promotion in
    /// progress, then get 503. Default [`DEFAULT_HOLD_TIMEOUT`].
    pub hold_timeout: Duration,
    /// `failover.promote_timeout`: how long a promoted master may take to answer
    /// healthy (reload or start). Default [`DEFAULT_PROMOTE_TIMEOUT`].
    pub promote_timeout: Duration,
    /// `failover.starting_grace`: how long a restarting active master (Jenkins
    /// "starting") is waited for before failing over. Default zero.
    pub starting_grace: Duration,
    /// `failover.command_timeout`: deadline of fence and start commands.
    pub command_timeout: Duration,
    /// `failover.min_active_time`: a failback waits until the active master has been
    /// active this long, so a flapping master cannot cause a storm of switches.
    /// Default [`DEFAULT_MIN_ACTIVE_TIME`].
    pub min_active_time: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Unique, non-empty; used in logs, /status and metrics.
    pub name: String,
    /// Normalised `http://host:port` or `https://host:port` (no path, no trailing
    /// slash; the default port, 80 or 443, written out).
    pub url: String,
    /// The URL's scheme is `https`: requests, health checks and REST calls go over
    /// TLS, verified as `[upstream_tls]` says. `[[tcp]]` forwards stay plain TCP.
    pub tls: bool,
    /// `tls_server_name`: the name verified in this master's certificate and sent as
    /// SNI, overriding `[upstream_tls] server_name` and the URL's host (masters
    /// addressed by IP usually have different names). Only with an `https` URL.
    pub tls_server_name: Option<String>,
    /// Host as written (a name, an IPv4 address, or an IPv6 address without brackets).
    pub host: String,
    pub port: u16,
    /// `standby`: how this master is made ready before it gets traffic.
    pub standby: Standby,
    /// `start_command`: starts the master's JVM (cold standby), argv without a shell.
    pub start_command: Option<Vec<String>>,
    /// `fence_command`: stops this master for good before another is promoted.
    pub fence_command: Option<Vec<String>>,
    /// `max_connections`: HTTP connections to this master at once, busy or idle
    /// (tunnels and TCP forwards are not counted: the client limits bound those).
    /// Default [`DEFAULT_BACKEND_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// `max_connects`: connects in progress to this master at once, at most
    /// `max_connections`. Default [`DEFAULT_BACKEND_MAX_CONNECTS`].
    pub max_connects: usize,
}

/// How a standby master is kept and made ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standby {
    /// No preparation: traffic moves as soon as the master is elected.
    None,
    /// The JVM runs; kept in quiet-down while standby; on promotion: reload, cancel
    /// quiet-down, wait until healthy.
    Hot,
    /// The JVM is stopped; on promotion: `start_command`, wait until healthy.
    Cold,
}

impl Standby {
    pub fn as_str(self) -> &'static str {
        match self {
            Standby::None => "none",
            Standby::Hot => "hot",
            Standby::Cold => "cold",
        }
    }
}

/// `[jenkins]`: how the daemon authenticates its REST calls to masters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JenkinsConfig {
    pub user: Option<String>,
    /// File holding the user's API token (HTTP basic auth: no crumb needed).
    pub api_token_file: Option<PathBuf>,
    /// Deadline of one REST call. Default [`DEFAULT_CALL_TIMEOUT`].
    pub call_timeout: Duration,
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    Promote,
    Demote,
    MasterDown,
    MasterUp,
    NoMaster,
}

impl HookEvent {
    pub const ALL: [HookEvent; 5] = [
        HookEvent::Promote,
        HookEvent::Demote,
        HookEvent::MasterDown,
        HookEvent::MasterUp,
        HookEvent::NoMaster,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Promote => "promote",
            HookEvent::Demote => "demote",
            HookEvent::MasterDown => "master_down",
            HookEvent::MasterUp => "master_up",
            HookEvent::NoMaster => "no_master",
        }
    }
}

/// `[[hooks]]`: a command run (no shell, with a timeout) when `on` happens.
#[derive(Debug, Clone, PartialEq)]
pub struct HookConfig {
    pub on: HookEvent,
    /// argv; `{name}`, `{url}`, `{host}`, `{reason}` are substituted.
    pub command: Vec<String>,
    pub timeout: Duration,
}

impl BackendConfig {
    /// The name this master's certificate must carry (and the SNI sent):
    /// `tls_server_name`, else `[upstream_tls] server_name` when the URL's host is an
    /// IP address, else the URL's host.
    pub fn tls_name<'a>(&'a self, upstream: &'a UpstreamTlsConfig) -> &'a str {
        if let Some(name) = &self.tls_server_name {
            return name;
        }
        match (&upstream.server_name, self.host.parse::<std::net::IpAddr>()) {
            (Some(name), Ok(_)) => name,
            _ => &self.host,
        }
    }

    /// `host:port` as used to connect and as the Host header of health probes
    /// (IPv6 hosts in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One `[[tcp]]` listener: raw TCP (the inbound agent port) forwarded to whichever
/// master is active.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpConfig {
    /// Unique among `[[tcp]]`; same alphabet as backend names (logs, metrics).
    pub name: String,
    /// `IP:port` the proxy listens on; never clashes with another listener (validated).
    pub listen: SocketAddr,
    /// 1..=65535: connects to `<host of the active master>:backend_port`.
    pub backend_port: u16,
    /// What agents are told to dial (X-Jenkins-JNLP-Host): a bare host name or IP
    /// (no scheme, port or path); None => the client's Host.
    pub advertise_host: Option<String>,
    /// 1..=65535 when set; None => the listener's port.
    pub advertise_port: Option<u16>,
    /// `idle_timeout`: closes a forward silent this long; default
    /// [`DEFAULT_TCP_IDLE_TIMEOUT`] (agents' own pings are 5 min apart), "0s"/"off" => None.
    pub idle_timeout: Option<Duration>,
    /// `max_connections`: forwards carried at once; more are closed at once.
    /// Default [`DEFAULT_TCP_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

/// A configuration that could not be used. Display gives one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `file:line: key: message`; `line` is 1-based, 0 when no line applies.
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `file` is used in error messages only.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let src = Source { text, file };
        let raw: RawConfig = toml::from_str(text).map_err(|err| src.toml_error(&err))?;
        validate::validate(&src, &raw)
    }

    /// A one-screen, human-readable summary (what `check` prints); every line,
    /// the last included, ends with a newline.
    pub fn summary(&self) -> String {
        summary::render(self)
    }
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn failback_meaning(policy: Failback) -> &'static str {
    match policy {
        Failback::Never => "keep the master that took over when an earlier one recovers",
        Failback::Auto => "go back to the earliest healthy master in file order",
    }
}
