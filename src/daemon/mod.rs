//! The daemon: [`run`] takes already-bound listeners and a shutdown future (so tests
//! run the real daemon in-process on ephemeral ports), starts every part, and runs the
//! select loop until shutdown. Reloads (SIGHUP, `POST /reload`) go through this loop:
//! the daemon owns the config file, and hands the owner task its part of a reload.
//!
//! - `listeners`: binding the sockets, before `run`.
//! - `settings`: the config mapped to each part's runtime settings, and the masters.
//! - `reload`: re-reading the config file, all or nothing.
//! - `signals`: SIGTERM and SIGINT stop the daemon, SIGHUP reloads it.
//! - `checks`: the tasks that watch each master for the owner (probes, load pollers).

mod checks;
mod cluster;
mod listeners;
mod reload;
mod settings;
mod signals;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub use listeners::{BindError, Listeners};
pub(crate) use settings::{jenkins_credentials, upstream_tls};
pub(crate) use signals::shutdown_signal;

use crate::admin::metrics::Metrics;
use crate::admin::{self, AdminContext, ReloadRequest, Token};
use crate::config::{Config, TcpConfig};
use crate::control::election::Health;
use crate::control::owner::{self, OwnerHandle};
use crate::control::routing::{Master, RoutingHandle, Snapshot};
use crate::control::{drain, state_file};
use crate::proxy::{self, ProxyContext};
use crate::sys::systemd;
use crate::tcp::{self, TcpContext, TcpForward};
use crate::tls::{CertificateError, ListenerCertificates};
use listeners::bound;
use settings::{
    build_masters, down_confirmation, owner_settings, policy, proxy_settings, proxy_workers,
    server_settings,
};
use signals::Hangups;

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
        mode = config.pool.mode.as_str(),
        "jenkins-ha-proxy starting");
    let tls = upstream_tls(&config).map_err(|error| Fatal::Settings(error.to_string()))?;
    let (reload_requests, mut reloads) = mpsc::channel(8);
    let Listeners {
        proxy,
        admin,
        tcp,
        redirect,
    } = listeners;
    let certificates = ListenerCertificates::load(&config).map_err(Fatal::Tls)?;
    certificates.log();
    let mut daemon = Daemon::start(config, source, &tcp, reload_requests, tls, certificates)?;
    let stopping = CancellationToken::new();
    // The bound port (the configured one may be 0), for the redirect to https.
    let proxy_port = proxy.local_addr().ok().map(|addr| addr.port());
    let mut proxy_task = tokio::spawn(proxy::serve(
        proxy,
        Arc::clone(&daemon.proxy_ctx),
        server_settings(
            &daemon.config,
            daemon.proxy_workers,
            daemon.certificates.proxy.clone(),
        ),
        stopping.clone().cancelled_owned(),
    ));
    daemon.serve_admin_and_tcp(admin, tcp);
    if let Some(redirect) = redirect {
        let https_port = proxy_port.unwrap_or(daemon.config.proxy.listen.port());
        daemon.background.spawn(proxy::redirect_to_https(
            redirect,
            https_port,
            daemon.stop.clone().cancelled_owned(),
        ));
    }

    let mut hangups = Hangups::listen(daemon.source.is_some());
    let owner_stopped = snapshots_end(daemon.routing.subscribe());
    tokio::pin!(shutdown, owner_stopped);
    let fatal = loop {
        tokio::select! {
            () = &mut shutdown => break None,
            () = &mut owner_stopped => break Some(Fatal::OwnerStopped),
            _ = &mut proxy_task => break Some(Fatal::ProxyStopped),
            ended = pool_ended(&mut daemon.pool) => break Some(ended),
            Some(request) = reloads.recv() => {
                let outcome = daemon.reload().await;
                let _ = request.reply.send(outcome.map(|r| r.to_string()).map_err(|e| e.to_string()));
            }
            Some(()) = hangups.next() => {
                let _ = daemon.reload().await;
            }
        }
    };
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
    /// `[proxy.tls]` or `[admin.tls]` names a certificate that cannot be served.
    #[error(transparent)]
    Tls(CertificateError),
    #[error("the proxy listener's accept loop stopped unexpectedly (a bug: see the panic logged before); exiting so that the service manager restarts the daemon")]
    ProxyStopped,
    /// The settings cannot be used (an `[upstream_tls]` file, most often); `check`
    /// says the same before a start.
    #[error("cannot start: {0}")]
    Settings(String),
    /// Cluster mode: this instance cannot take part in its pool.
    #[error("cannot join the cluster pool: {0}")]
    Cluster(String),
}

/// Cluster mode: completes when the member task ends on its own (it cannot join, or
/// it panicked); never in standalone mode.
async fn pool_ended(pool: &mut Option<cluster::Pool>) -> Fatal {
    let Some(running) = pool else {
        return std::future::pending().await;
    };
    let why = match (&mut running.task).await {
        Ok(Err(error)) => error.to_string(),
        Ok(Ok(())) => "the member task ended".to_owned(),
        Err(error) => format!("the member task failed: {error}"),
    };
    *pool = None;
    Fatal::Cluster(why)
}

/// Completes when the owner task has dropped its snapshot sender, i.e. has ended.
async fn snapshots_end(mut snapshots: tokio::sync::watch::Receiver<Arc<Snapshot>>) {
    while snapshots.changed().await.is_ok() {}
}

/// Everything the running daemon owns besides the proxy's accept loop. Written only
/// by `run`'s loop (start, reloads, stop).
struct Daemon {
    config: Config,
    /// `[upstream_tls]` as built at start (or at the first reload that needed it):
    /// restart-only, so reloads keep it and the masters' pools with it.
    upstream_tls: Option<crate::tls::UpstreamTls>,
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
    /// Cluster mode: this instance's member of the pool.
    pool: Option<cluster::Pool>,
    /// Stops the admin listener and the TCP listeners.
    stop: CancellationToken,
    /// `[proxy.tls]`: the listener's certificates; reloads swap them.
    certificates: ListenerCertificates,
}

/// A running `[[tcp]]` listener. The socket is shared so that a reload that changes
/// an entry's settings but not its address keeps the port open throughout.
struct TcpTask {
    entry: TcpConfig,
    listener: Arc<TcpListener>,
    stop: CancellationToken,
}

impl Daemon {
    /// Starts the owner, the probes, the snapshot followers (drain, state file,
    /// metrics) and the contexts the listeners serve with. `tcp`: the bound `[[tcp]]`
    /// listeners, for the ports agents are told.
    fn start(
        config: Config,
        source: Option<PathBuf>,
        tcp: &[TcpListener],
        reload_requests: mpsc::Sender<ReloadRequest>,
        upstream_tls: Option<crate::tls::UpstreamTls>,
        certificates: ListenerCertificates,
    ) -> Result<Daemon, Fatal> {
        let workers = proxy_workers(&config);
        let masters = build_masters(&config, &[], workers, upstream_tls.as_ref())
            .map_err(|error| Fatal::Settings(error.to_string()))?;
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
        let probes = checks::spawn(&masters, &config, owner.events());
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
        let pool = config.cluster.as_ref().map(|cluster| {
            cluster::Pool::start(&config, cluster, &routing, &owner, &mut background)
        });
        let admin_ctx = Arc::new(AdminContext {
            routing: routing.clone(),
            owner: owner.clone(),
            metrics: Arc::clone(&metrics),
            token: std::sync::RwLock::new(Token::from_config(config.admin.token_file.as_deref())),
            reloads: reload_requests,
            pool: pool.as_ref().map(|pool| pool.commands.clone()),
            certificates: certificates.clone(),
        });
        let bound_port = |index: usize| {
            let listener: Option<&TcpListener> = tcp.get(index);
            listener.and_then(|l| l.local_addr().ok()).map(|a| a.port())
        };
        let proxy_ctx = Arc::new(ProxyContext {
            routing: routing.clone(),
            owner: owner.clone(),
            settings: std::sync::RwLock::new(Arc::new(proxy_settings(&config, bound_port))),
            cli_sessions: Default::default(),
            metrics: Arc::clone(&metrics),
        });
        Ok(Daemon {
            config,
            upstream_tls,
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
            pool,
            stop: CancellationToken::new(),
            certificates,
        })
    }

    /// Starts the admin listener, the `[[tcp]]` listeners, and the systemd readiness
    /// and watchdog tasks.
    fn serve_admin_and_tcp(&mut self, admin: TcpListener, tcp: Vec<TcpListener>) {
        self.background.spawn(admin::serve(
            admin,
            Arc::clone(&self.admin_ctx),
            self.certificates.admin.clone(),
            self.config.proxy.header_read_timeout,
            self.stop.clone().cancelled_owned(),
        ));
        let confirmation = down_confirmation(&self.config.health);
        for (entry, listener) in self.config.tcp.clone().iter().zip(tcp) {
            self.spawn_tcp(entry, Arc::new(listener), confirmation);
        }
        self.background
            .spawn(ready_after_first_election(self.routing.clone()));
        self.background.spawn(systemd::watchdog());
    }

    /// `down_confirmation`: see [`down_confirmation`], of the config `entry` is from.
    fn spawn_tcp(
        &mut self,
        entry: &TcpConfig,
        listener: Arc<TcpListener>,
        down_confirmation: Duration,
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

    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(pool) = self.pool.take() {
            pool.leave().await;
        }
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

/// Tells systemd we are ready once every master has had its first check (the first
/// election is then done).
async fn ready_after_first_election(routing: RoutingHandle) {
    let mut snapshots = routing.subscribe();
    loop {
        let checked = snapshots
            .borrow_and_update()
            .masters
            .iter()
            .all(|m| m.health != Health::Unknown);
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
