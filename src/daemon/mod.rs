//! Wires the daemon together: masters, owner, probes, drain, state file, and the
//! proxy, TCP and admin listeners; applies reloads. [`run`] takes already-bound
//! listeners and a shutdown future, so tests run the real daemon in-process on
//! ephemeral ports.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::header::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::admin::metrics::Metrics;
use crate::admin::{self, AdminContext, ReloadRequest, Token};
use crate::config::{Config, TcpConfig};
use crate::control::election::Policy;
use crate::control::jenkins::Credentials;
use crate::control::owner::{Control, OwnerHandle, OwnerSettings};
use crate::control::promotion::PromotionSettings;
use crate::control::routing::{Master, RoutingHandle};
use crate::control::{drain, health, owner, state_file};
use crate::proxy::jnlp::Advertised;
use crate::proxy::{self, ProxyContext, ProxySettings, ServerSettings};
use crate::sys::systemd;
use crate::tcp::{self, TcpContext, TcpForward};
use crate::upstream::{Upstream, UpstreamSettings};

/// The daemon's bound sockets.
#[derive(Debug)]
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
    /// One per `[[tcp]]` entry, in file order.
    pub tcp: Vec<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({key}): {source}. Is another process using this port? Change {key} or stop that process")]
pub struct BindError {
    pub key: String,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

impl Listeners {
    /// Binds `proxy.listen`, `admin.listen` and every `tcp[i].listen`.
    pub async fn bind(config: &Config) -> Result<Listeners, BindError> {
        let mut tcp = Vec::with_capacity(config.tcp.len());
        for (index, entry) in config.tcp.iter().enumerate() {
            tcp.push(bind(format!("tcp[{index}].listen"), entry.listen).await?);
        }
        Ok(Listeners {
            proxy: bind("proxy.listen".into(), config.proxy.listen).await?,
            admin: bind("admin.listen".into(), config.admin.listen).await?,
            tcp,
        })
    }
}

/// Connections the kernel queues for a listener before we accept them (capped by
/// `net.core.somaxconn`). A burst beyond the queue is not refused but delayed by
/// seconds (the kernel drops the handshake's last ACK and retransmits), so this is
/// larger than tokio's default of 1024: after a failover or a restart, every agent
/// and browser reconnects at once.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(key: String, addr: SocketAddr) -> Result<TcpListener, BindError> {
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As std and tokio do for listeners: a restart may bind while old
        // connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| BindError { key, addr, source })
}

/// Threads serving client connections: `proxy.workers`, by default one per CPU core
/// the process may use (as HAProxy's nbthread or nginx's `worker_processes auto`).
fn proxy_workers(config: &Config) -> usize {
    config.proxy.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}

/// Runs the daemon until `shutdown` completes, then drains in-flight requests for up
/// to `proxy.shutdown_timeout`, closes tunnels and TCP forwards, and returns.
/// `source` is the config file reloads read (SIGHUP, `POST /reload`); None: reloads
/// are refused.
///
/// Returns an error when a task the daemon cannot serve safely without stops on its own
/// (a bug, after its panic was logged): the owner task, which alone moves traffic off
/// a failed master, or the proxy's accept loop. Exiting then lets the service manager
/// restart the daemon rather than leave traffic pinned to a master nobody watches.
pub async fn run(
    config: Config,
    source: Option<PathBuf>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Fatal> {
    tracing::info!(proxy = %bound(&listeners.proxy), admin = %bound(&listeners.admin),
        tcp = ?listeners.tcp.iter().map(bound).collect::<Vec<_>>(),
        masters = config.backends.len(), workers = proxy_workers(&config),
        "jenkins-ha-proxy starting");
    let (reload_requests, mut reloads) = mpsc::channel(8);
    let (mut daemon, proxy_listener, admin_listener, tcp_listeners) =
        Daemon::start(config, source, listeners, reload_requests);
    let stopping = CancellationToken::new();
    let mut proxy_task = tokio::spawn(proxy::serve(
        proxy_listener,
        Arc::clone(&daemon.proxy_ctx),
        daemon.server_settings(),
        stopping.clone().cancelled_owned(),
    ));
    daemon.background.spawn(admin::serve(
        admin_listener,
        Arc::clone(&daemon.admin_ctx),
        daemon.config.proxy.header_read_timeout,
        daemon.stop.clone().cancelled_owned(),
    ));
    for (entry, listener) in daemon.config.tcp.clone().iter().zip(tcp_listeners) {
        let confirmation = down_confirmation(&daemon.config.health);
        daemon.spawn_tcp(entry, Arc::new(listener), confirmation);
    }
    daemon
        .background
        .spawn(ready_after_first_election(daemon.routing.clone()));
    daemon.background.spawn(systemd::watchdog());

    let mut hangups = hangup_signal(daemon.source.is_some());
    let owner_stopped = snapshots_end(daemon.routing.subscribe());
    tokio::pin!(shutdown, owner_stopped);
    let mut fatal = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut owner_stopped => {
                fatal = Some(Fatal::OwnerStopped);
                break;
            }
            _ = &mut proxy_task => {
                fatal = Some(Fatal::ProxyStopped);
                break;
            }
            Some(request) = reloads.recv() => {
                let outcome = daemon.reload().await;
                let _ = request.reply.send(outcome);
            }
            Some(()) = next_hangup(&mut hangups) => {
                let _ = daemon.reload().await;
            }
        }
    }
    match &fatal {
        None => tracing::info!("shutdown requested"),
        Some(error) => tracing::error!("{error}"),
    }
    systemd::stopping();
    stopping.cancel();
    if !proxy_task.is_finished() {
        let _ = proxy_task.await;
    }
    daemon.stop().await;
    tracing::info!("jenkins-ha-proxy stopped");
    fatal.map_or(Ok(()), Err)
}

/// Why the daemon stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("the election owner task stopped unexpectedly (a bug: see the panic logged before); exiting so that the service manager restarts the daemon")]
    OwnerStopped,
    #[error("the proxy listener's accept loop stopped unexpectedly (a bug: see the panic logged before); exiting so that the service manager restarts the daemon")]
    ProxyStopped,
}

/// Completes when the owner task has dropped its snapshot sender, i.e. has ended.
async fn snapshots_end(
    mut snapshots: tokio::sync::watch::Receiver<Arc<crate::control::routing::Snapshot>>,
) {
    while snapshots.changed().await.is_ok() {}
}

/// Everything the running daemon owns besides the listeners' accept loops.
struct Daemon {
    config: Config,
    /// Threads serving clients, fixed at start (a reload cannot change it): the number
    /// of idle-pool shards each master gets.
    proxy_workers: usize,
    source: Option<PathBuf>,
    masters: Vec<Arc<Master>>,
    owner: OwnerHandle,
    routing: RoutingHandle,
    owner_task: tokio::task::JoinHandle<()>,
    proxy_ctx: Arc<ProxyContext>,
    admin_ctx: Arc<AdminContext>,
    metrics: Arc<Metrics>,
    probes: JoinSet<()>,
    drain: AbortHandle,
    state_writer: Option<AbortHandle>,
    tcp: Vec<TcpTask>,
    background: JoinSet<()>,
    /// Stops the admin listener and the TCP listeners.
    stop: CancellationToken,
}

/// A running `[[tcp]]` listener. The socket is shared so that a reload that changes
/// an entry's settings but not its address keeps the port open throughout.
struct TcpTask {
    entry: TcpConfig,
    listener: Arc<TcpListener>,
    stop: CancellationToken,
}

impl Daemon {
    fn start(
        config: Config,
        source: Option<PathBuf>,
        listeners: Listeners,
        reload_requests: mpsc::Sender<ReloadRequest>,
    ) -> (Daemon, TcpListener, TcpListener, Vec<TcpListener>) {
        let workers = proxy_workers(&config);
        let masters = build_masters(&config, &[], workers);
        let remembered = config
            .failover
            .state_file
            .as_deref()
            .and_then(state_file::load);
        let (owner, routing, owner_task) = owner::start(
            masters.clone(),
            policy(&config),
            owner_settings(&config),
            remembered.as_deref(),
        );
        let probes = health::spawn_probes(&masters, &config.health, owner.events());
        let mut background = JoinSet::new();
        let drain = background.spawn(drain::run(
            routing.subscribe(),
            config.failover.drain_timeout,
        ));
        let state_writer = config
            .failover
            .state_file
            .clone()
            .map(|path| background.spawn(state_file::follow(path, routing.subscribe())));
        let metrics = Arc::new(Metrics::new());
        background.spawn(Arc::clone(&metrics).follow(routing.subscribe()));
        let admin_ctx = Arc::new(AdminContext {
            routing: routing.clone(),
            owner: owner.clone(),
            metrics: Arc::clone(&metrics),
            token: std::sync::RwLock::new(Token::from_config(config.admin.token_file.as_deref())),
            reloads: reload_requests,
        });
        let proxy_ctx = Arc::new(ProxyContext {
            routing: routing.clone(),
            owner: owner.clone(),
            settings: std::sync::RwLock::new(Arc::new(proxy_settings(&config, &listeners.tcp))),
            cli_sessions: Default::default(),
            metrics: Arc::clone(&metrics),
        });
        let daemon = Daemon {
            config,
            proxy_workers: workers,
            source,
            masters,
            owner,
            routing,
            owner_task,
            proxy_ctx,
            admin_ctx,
            metrics,
            probes,
            drain,
            state_writer,
            tcp: Vec::new(),
            background,
            stop: CancellationToken::new(),
        };
        (daemon, listeners.proxy, listeners.admin, listeners.tcp)
    }

    fn server_settings(&self) -> ServerSettings {
        ServerSettings {
            header_read_timeout: self.config.proxy.header_read_timeout,
            shutdown_timeout: self.config.proxy.shutdown_timeout,
            max_header_bytes: self.config.proxy.max_header_bytes,
            max_headers: self.config.proxy.max_headers,
            max_connections: self.config.proxy.max_connections,
            workers: self.proxy_workers,
            http2_max_streams: self.config.proxy.http2_max_streams,
        }
    }

    /// `down_confirmation`: see [`down_confirmation`], of the config `entry` is from.
    fn spawn_tcp(
        &mut self,
        entry: &TcpConfig,
        listener: Arc<TcpListener>,
        down_confirmation: std::time::Duration,
    ) {
        let forward = TcpForward {
            name: entry.name.clone(),
            backend_port: entry.backend_port,
        };
        let ctx = Arc::new(TcpContext {
            routing: self.routing.clone(),
            owner: self.owner.clone(),
            idle_timeout: entry.idle_timeout,
            max_connections: entry.max_connections,
            down_confirmation,
        });
        let stop = self.stop.child_token();
        self.background.spawn(tcp::serve(
            Arc::clone(&listener),
            forward,
            ctx,
            stop.clone(),
        ));
        self.tcp.push(TcpTask {
            entry: entry.clone(),
            listener,
            stop,
        });
    }

    /// Re-reads the config file and applies it; on any error the running
    /// configuration stays untouched. Returns a one-line summary or the error.
    async fn reload(&mut self) -> Result<String, String> {
        let Some(path) = self.source.clone() else {
            return Err("this daemon was started without a config file: nothing to reload".into());
        };
        systemd::reloading();
        let outcome = self.try_reload(&path).await;
        systemd::ready("serving");
        self.metrics.reload(outcome.is_ok());
        match &outcome {
            Ok(summary) => {
                tracing::info!(path = %path.display(), "configuration reloaded: {summary}")
            }
            Err(error) => {
                tracing::error!(path = %path.display(), "reload rejected, the running configuration is unchanged: {error}")
            }
        }
        outcome
    }

    async fn try_reload(&mut self, path: &std::path::Path) -> Result<String, String> {
        let new = Config::load(path).map_err(|error| error.to_string())?;
        // As `run` and `check` do: an unusable token file would lock the admin API
        // (this very call included) until a SIGHUP, so the reload is refused instead.
        let token = Token::load(new.admin.token_file.as_deref())?;
        for (key, old, now) in [
            ("proxy.listen", self.config.proxy.listen, new.proxy.listen),
            ("admin.listen", self.config.admin.listen, new.admin.listen),
        ] {
            if old != now {
                return Err(format!(
                    "{key} changed ({old} -> {now}): restart the daemon to move it"
                ));
            }
        }
        // Open what the new TCP entries need first: a port that is taken rejects the
        // whole reload before anything changed. Same address: reuse the open socket.
        let mut sockets = Vec::with_capacity(new.tcp.len());
        for (index, entry) in new.tcp.iter().enumerate() {
            let open = self.tcp.iter().find(|t| t.entry.listen == entry.listen);
            let socket = match open {
                Some(task) => Arc::clone(&task.listener),
                None => Arc::new(
                    bind(format!("tcp[{index}].listen"), entry.listen)
                        .await
                        .map_err(|error| error.to_string())?,
                ),
            };
            sockets.push(socket);
        }

        let masters = build_masters(&new, &self.masters, self.proxy_workers);
        self.owner
            .control(Control::Reload {
                masters: masters.clone(),
                policy: policy(&new),
                settings: owner_settings(&new),
            })
            .await
            .map_err(|error| error.to_string())?;
        self.probes.abort_all();
        self.probes = health::spawn_probes(&masters, &new.health, self.owner.events());
        self.masters = masters;
        if new.failover.drain_timeout != self.config.failover.drain_timeout {
            self.drain.abort();
            self.drain = self.background.spawn(drain::run(
                self.routing.subscribe(),
                new.failover.drain_timeout,
            ));
        }
        if new.failover.state_file != self.config.failover.state_file {
            if let Some(writer) = self.state_writer.take() {
                writer.abort();
            }
            self.state_writer = new.failover.state_file.clone().map(|path| {
                self.background
                    .spawn(state_file::follow(path, self.routing.subscribe()))
            });
        }
        let unchanged = self
            .tcp
            .iter()
            .filter(|t| new.tcp.contains(&t.entry))
            .count();
        for task in self.tcp.drain(..) {
            task.stop.cancel();
        }
        for (entry, socket) in new.tcp.iter().zip(sockets) {
            self.spawn_tcp(entry, socket, down_confirmation(&new.health));
        }
        let ports: Vec<Option<u16>> = self
            .tcp
            .iter()
            .map(|t| t.listener.local_addr().ok().map(|a| a.port()))
            .collect();
        self.proxy_ctx.replace_settings(ProxySettings {
            advertised: advertised_for(&new.tcp, |index| ports.get(index).copied().flatten()),
            ..proxy_settings(&new, &[])
        });
        self.admin_ctx.replace_token(token);
        let (old_proxy, new_proxy) = (&self.config.proxy, &new.proxy);
        let restart_only = [
            (
                "proxy.header_read_timeout",
                old_proxy.header_read_timeout != new_proxy.header_read_timeout,
            ),
            (
                "proxy.shutdown_timeout",
                old_proxy.shutdown_timeout != new_proxy.shutdown_timeout,
            ),
            (
                "proxy.max_header_bytes",
                old_proxy.max_header_bytes != new_proxy.max_header_bytes,
            ),
            (
                "proxy.max_headers",
                old_proxy.max_headers != new_proxy.max_headers,
            ),
            (
                "proxy.max_connections",
                old_proxy.max_connections != new_proxy.max_connections,
            ),
            ("proxy.workers", old_proxy.workers != new_proxy.workers),
            (
                "proxy.http2_max_streams",
                old_proxy.http2_max_streams != new_proxy.http2_max_streams,
            ),
        ];
        let changed: Vec<&str> = restart_only
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| *key)
            .collect();
        if !changed.is_empty() {
            // The client listener's settings are fixed when it starts.
            tracing::warn!(keys = %changed.join(", "),
                "the new values of these keys apply after a restart; the running ones stay");
        }
        let summary = format!(
            "{} masters, {} TCP listeners ({} unchanged)",
            self.masters.len(),
            new.tcp.len(),
            unchanged
        );
        self.config = new;
        Ok(summary)
    }

    async fn stop(mut self) {
        self.stop.cancel();
        // Tunnels and TCP forwards are not tracked by the HTTP graceful shutdown.
        for master in &self.masters {
            master.upstream.attachments().close_all();
        }
        self.probes.abort_all();
        self.background.abort_all();
        while self.probes.join_next().await.is_some() {}
        while self.background.join_next().await.is_some() {}
        // Connections still open after the grace period hold event senders, so the
        // owner would not end by itself.
        self.owner_task.abort();
    }
}

/// The credentials of `jenkins.user` / `jenkins.api_token_file`, if set. An unusable
/// file does not stop the daemon (REST calls then go without auth and fail): the
/// error says so, for the log of `run` and reloads and the warning of `check`.
pub fn jenkins_credentials(config: &Config) -> Result<Option<Credentials>, String> {
    match (&config.jenkins.user, &config.jenkins.api_token_file) {
        (Some(user), Some(file)) => Credentials::load(user, file).map(Some).map_err(|error| {
            format!("{error}; hot promotion REST calls will fail until it is fixed")
        }),
        _ => Ok(None),
    }
}

/// Promotion settings and hooks; Jenkins credentials are read from their file here.
fn owner_settings(config: &Config) -> OwnerSettings {
    let jenkins = &config.jenkins;
    let credentials = jenkins_credentials(config).unwrap_or_else(|error| {
        tracing::error!("{error}");
        None
    });
    OwnerSettings {
        promotion: Arc::new(PromotionSettings {
            require_fence: config.failover.require_fence,
            promote_timeout: config.failover.promote_timeout,
            command_timeout: config.failover.command_timeout,
            call_timeout: jenkins.call_timeout,
            credentials,
            health: config.health.clone(),
        }),
        hooks: config.hooks.clone(),
        starting_grace: config.failover.starting_grace,
        min_active_time: config.failover.min_active_time,
    }
}

fn policy(config: &Config) -> Policy {
    Policy {
        rise: config.health.rise,
        fall: config.health.fall,
        failback: config.failover.failback,
    }
}

/// The masters of `config`, reusing those of `previous` that did not change (same
/// name, URL and connection settings), so their pools and open connections live on.
/// `workers`: the proxy's worker threads, one pool shard each.
fn build_masters(config: &Config, previous: &[Arc<Master>], workers: usize) -> Vec<Arc<Master>> {
    config
        .backends
        .iter()
        .map(|backend| {
            let fresh = Upstream::new(
                &backend.host,
                backend.port,
                UpstreamSettings {
                    connect_timeout: config.proxy.connect_timeout,
                    idle_timeout: config.proxy.pool_idle_timeout,
                    max_connections: backend.max_connections,
                    max_connects: backend.max_connects,
                    workers,
                },
            );
            let reusable = previous.iter().find(|m| {
                m.name == backend.name
                    && m.url == backend.url
                    && m.standby == backend.standby
                    && m.start_command == backend.start_command
                    && m.fence_command == backend.fence_command
                    && m.upstream.same_settings(&fresh)
            });
            match reusable {
                Some(master) => Arc::clone(master),
                None => Arc::new(Master {
                    name: backend.name.clone(),
                    url: backend.url.clone(),
                    host: backend.host.clone(),
                    standby: backend.standby,
                    start_command: backend.start_command.clone(),
                    fence_command: backend.fence_command.clone(),
                    upstream: fresh,
                }),
            }
        })
        .collect()
}

fn proxy_settings(config: &Config, tcp_listeners: &[TcpListener]) -> ProxySettings {
    ProxySettings {
        retry_after: retry_after_value(config.proxy.retry_after),
        tunnel_idle_timeout: config.proxy.tunnel_idle_timeout,
        response_idle_timeout: config.proxy.response_idle_timeout,
        access_log: config.proxy.access_log,
        hold_timeout: config.failover.hold_timeout,
        request_timeout: config.proxy.request_timeout,
        down_confirmation: down_confirmation(&config.health),
        // Port 0 in the config means "the port we got".
        advertised: advertised_for(&config.tcp, |index| {
            tcp_listeners
                .get(index)
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.port())
        }),
    }
}

/// How long the health checks take at most to demote a master that stopped answering:
/// `health.timeout` x `fall` + `interval`.
fn down_confirmation(health: &crate::config::HealthConfig) -> std::time::Duration {
    health.timeout * health.fall + health.interval
}

/// How each `[[tcp]]` listener is advertised to agents (JNLP header rewrite).
fn advertised_for(
    entries: &[TcpConfig],
    bound_port: impl Fn(usize) -> Option<u16>,
) -> Vec<Advertised> {
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| Advertised {
            backend_port: entry.backend_port,
            port: entry
                .advertise_port
                .or_else(|| bound_port(index))
                .unwrap_or(entry.listen.port()),
            host: entry.advertise_host.clone(),
        })
        .collect()
}

/// Tells systemd we are ready once every master has had its first check (the first
/// election is then done).
async fn ready_after_first_election(routing: RoutingHandle) {
    let mut snapshots = routing.subscribe();
    loop {
        let checked = snapshots
            .borrow_and_update()
            .masters
            .iter()
            .all(|m| m.health != crate::control::election::Health::Unknown);
        if checked {
            let active = routing.current().active_master().map(|m| m.name.clone());
            systemd::ready(&format!(
                "active master: {}",
                active.as_deref().unwrap_or("none")
            ));
            return;
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

fn hangup_signal(enabled: bool) -> Option<tokio::signal::unix::Signal> {
    if !enabled {
        return None;
    }
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; reload through the admin API instead");
            None
        }
    }
}

async fn next_hangup(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// The address a listener is bound to (the real port when configured with port 0).
fn bound(listener: &TcpListener) -> String {
    listener.local_addr().map_or_else(
        |error| format!("unknown ({error})"),
        |addr| addr.to_string(),
    )
}

/// Whole seconds, rounded up, at least 1.
fn retry_after_value(retry_after: std::time::Duration) -> HeaderValue {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}
