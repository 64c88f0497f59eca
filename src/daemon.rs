//! Wires the daemon together: masters, owner, probes, proxy and admin listeners.
//! [`run`] takes already-bound listeners and a shutdown future, so tests run the real
//! daemon in-process on ephemeral ports.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::HeaderValue;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminContext};
use crate::config::Config;
use crate::election::Policy;
use crate::proxy::{self, ProxyContext, ServerSettings};
use crate::routing::Master;
use crate::upstream::Upstream;
use crate::{health, owner};

/// The daemon's bound sockets.
#[derive(Debug)]
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({key}): {source}. Is another process using this port? Change {key} or stop that process")]
pub struct BindError {
    pub key: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

impl Listeners {
    /// Binds `proxy.listen` and `admin.listen`.
    pub async fn bind(config: &Config) -> Result<Listeners, BindError> {
        Ok(Listeners {
            proxy: bind("proxy.listen", config.proxy.listen).await?,
            admin: bind("admin.listen", config.admin.listen).await?,
        })
    }
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { key, addr, source })
}

/// Runs the daemon until `shutdown` completes, then drains in-flight requests for up
/// to `proxy.shutdown_timeout` and returns.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let masters: Vec<Arc<Master>> = config
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
        .collect();
    let policy = Policy {
        rise: config.health.rise,
        fall: config.health.fall,
        failback: config.failover.failback,
    };
    let (owner, routing, owner_task) = owner::start(masters.clone(), policy);
    let mut probes = health::spawn_probes(&masters, &config.health, owner.events());

    let stop = CancellationToken::new();
    let admin_ctx = Arc::new(AdminContext {
        routing: routing.clone(),
        failback: config.failover.failback,
    });
    let admin_task = tokio::spawn(admin::serve(
        listeners.admin,
        admin_ctx,
        stop.clone().cancelled_owned(),
    ));
    let proxy_ctx = Arc::new(ProxyContext {
        routing,
        owner,
        retry_after: retry_after_value(config.proxy.retry_after),
        tunnel_idle_timeout: None,
        response_idle_timeout: None,
        advertised: Vec::new(),
        cli_sessions: Default::default(),
    });
    let settings = ServerSettings {
        header_read_timeout: config.proxy.header_read_timeout,
        shutdown_timeout: config.proxy.shutdown_timeout,
    };
    tracing::info!(proxy = %config.proxy.listen, admin = %config.admin.listen,
        masters = masters.len(), "jenkins-ha-proxy started");
    proxy::serve(listeners.proxy, proxy_ctx, settings, async {
        shutdown.await;
        tracing::info!("shutdown requested");
    })
    .await;
    stop.cancel();
    probes.abort_all();
    while probes.join_next().await.is_some() {}
    let _ = admin_task.await;
    // Connections still open after the grace period hold event senders, so the owner
    // would not end by itself.
    owner_task.abort();
    tracing::info!("jenkins-ha-proxy stopped");
}

/// Whole seconds, rounded up, at least 1.
fn retry_after_value(retry_after: std::time::Duration) -> HeaderValue {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}
