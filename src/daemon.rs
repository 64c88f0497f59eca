//! Wires the daemon together: masters, owner, probes, drain, and the proxy, TCP and
//! admin listeners. [`run`] takes already-bound listeners and a shutdown future, so
//! tests run the real daemon in-process on ephemeral ports.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::HeaderValue;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminContext};
use crate::config::Config;
use crate::election::Policy;
use crate::metrics::Metrics;
use crate::proxy::jnlp::Advertised;
use crate::proxy::{self, ProxyContext, ServerSettings};
use crate::routing::Master;
use crate::tcp::{self, TcpContext, TcpForward};
use crate::upstream::Upstream;
use crate::{drain, health, owner};

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

async fn bind(key: String, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { key, addr, source })
}

/// Runs the daemon until `shutdown` completes, then drains in-flight requests for up
/// to `proxy.shutdown_timeout`, closes tunnels and TCP forwards, and returns.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    tracing::info!(proxy = %bound(&listeners.proxy), admin = %bound(&listeners.admin),
        tcp = ?listeners.tcp.iter().map(bound).collect::<Vec<_>>(),
        masters = config.backends.len(), "jenkins-ha-proxy starting");
    let masters = masters(&config);
    let policy = Policy {
        rise: config.health.rise,
        fall: config.health.fall,
        failback: config.failover.failback,
    };
    let (owner, routing, owner_task) = owner::start(masters.clone(), policy);
    let mut probes = health::spawn_probes(&masters, &config.health, owner.events());
    let mut background = JoinSet::new();
    background.spawn(drain::run(
        routing.subscribe(),
        config.failover.drain_timeout,
    ));

    let metrics = Arc::new(Metrics::new());
    background.spawn(Arc::clone(&metrics).follow(routing.subscribe()));

    let stop = CancellationToken::new();
    let admin_ctx = Arc::new(AdminContext {
        routing: routing.clone(),
        failback: config.failover.failback,
        metrics: Arc::clone(&metrics),
    });
    background.spawn(admin::serve(
        listeners.admin,
        admin_ctx,
        stop.clone().cancelled_owned(),
    ));
    // Before the listeners move into their tasks: port 0 means "the port we got".
    let advertised = advertised(&config, &listeners.tcp);
    for (entry, listener) in config.tcp.iter().zip(listeners.tcp) {
        let forward = TcpForward {
            name: entry.name.clone(),
            backend_port: entry.backend_port,
        };
        let ctx = Arc::new(TcpContext {
            routing: routing.clone(),
            owner: owner.clone(),
            idle_timeout: entry.idle_timeout,
        });
        background.spawn(tcp::serve(listener, forward, ctx, stop.clone()));
    }

    let proxy_ctx = Arc::new(ProxyContext {
        routing,
        owner,
        retry_after: retry_after_value(config.proxy.retry_after),
        tunnel_idle_timeout: config.proxy.tunnel_idle_timeout,
        response_idle_timeout: config.proxy.response_idle_timeout,
        advertised,
        cli_sessions: Default::default(),
        metrics,
    });
    let settings = ServerSettings {
        header_read_timeout: config.proxy.header_read_timeout,
        shutdown_timeout: config.proxy.shutdown_timeout,
    };
    proxy::serve(listeners.proxy, proxy_ctx, settings, async {
        shutdown.await;
        tracing::info!("shutdown requested");
    })
    .await;
    stop.cancel();
    // Tunnels and TCP forwards are not tracked by the HTTP graceful shutdown.
    for master in &masters {
        master.upstream.attachments().close_all();
    }
    probes.abort_all();
    background.abort_all();
    while probes.join_next().await.is_some() {}
    while background.join_next().await.is_some() {}
    // Connections still open after the grace period hold event senders, so the owner
    // would not end by itself.
    owner_task.abort();
    tracing::info!("jenkins-ha-proxy stopped");
}

fn masters(config: &Config) -> Vec<Arc<Master>> {
    config
        .backends
        .iter()
        .enumerate()
        .map(|(index, backend)| {
            Arc::new(Master {
                index,
                name: backend.name.clone(),
                url: backend.url.clone(),
                upstream: Upstream::new(
                    &backend.host,
                    backend.port,
                    config.proxy.connect_timeout,
                    config.proxy.pool_idle_timeout,
                ),
            })
        })
        .collect()
}

/// How each `[[tcp]]` listener is advertised to agents (JNLP header rewrite).
fn advertised(config: &Config, listeners: &[TcpListener]) -> Vec<Advertised> {
    config
        .tcp
        .iter()
        .zip(listeners)
        .map(|(entry, listener)| {
            let bound_port = listener
                .local_addr()
                .map_or(entry.listen.port(), |a| a.port());
            Advertised {
                backend_port: entry.backend_port,
                port: entry.advertise_port.unwrap_or(bound_port),
                host: entry.advertise_host.clone(),
            }
        })
        .collect()
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
