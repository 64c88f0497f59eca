//! The configuration mapped to the runtime settings of each part (owner, proxy,
//! client listener, TCP forwards), and to the pool of masters.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;

use crate::config::{Config, HealthConfig, TcpConfig};
use crate::control::election::Policy;
use crate::control::jenkins::Credentials;
use crate::control::owner::OwnerSettings;
use crate::control::promotion::PromotionSettings;
use crate::control::routing::Master;
use crate::proxy::{Advertised, ProxySettings, ServerSettings};
use crate::sys::small_file::SecretError;
use crate::tls::{ClientTlsError, ServerTlsHandle, UpstreamTls};
use crate::upstream::{Upstream, UpstreamSettings};

/// Threads serving client connections: `proxy.workers`, by default one per CPU core
/// the process may use (as HAProxy's nbthread or nginx's `worker_processes auto`).
pub(super) fn proxy_workers(config: &Config) -> usize {
    config.proxy.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}

/// The client listener's settings: read once, when it starts.
pub(super) fn server_settings(
    config: &Config,
    workers: usize,
    tls: Option<Arc<ServerTlsHandle>>,
) -> ServerSettings {
    let proxy = &config.proxy;
    ServerSettings {
        header_read_timeout: proxy.header_read_timeout,
        shutdown_timeout: proxy.shutdown_timeout,
        max_header_bytes: proxy.max_header_bytes,
        max_headers: proxy.max_headers,
        max_connections: proxy.max_connections,
        workers,
        http2_max_streams: proxy.http2_max_streams,
        tls,
    }
}

/// The keys whose new values a reload cannot apply (the client listener reads them
/// once, at start; see [`server_settings`]) and that differ between `old` and `new`.
/// Destructured without `..`: a new field does not compile until its key is named here.
pub(super) fn restart_only_changes(
    old: &ServerSettings,
    new: &ServerSettings,
) -> Vec<&'static str> {
    let ServerSettings {
        header_read_timeout,
        shutdown_timeout,
        max_header_bytes,
        max_headers,
        max_connections,
        workers,
        http2_max_streams,
        // Certificates are swapped by reloads; turning TLS on or off is compared by
        // `restart_only_tls_changes`.
        tls: _,
    } = old;
    [
        (
            "proxy.header_read_timeout",
            *header_read_timeout != new.header_read_timeout,
        ),
        (
            "proxy.shutdown_timeout",
            *shutdown_timeout != new.shutdown_timeout,
        ),
        (
            "proxy.max_header_bytes",
            *max_header_bytes != new.max_header_bytes,
        ),
        ("proxy.max_headers", *max_headers != new.max_headers),
        (
            "proxy.max_connections",
            *max_connections != new.max_connections,
        ),
        ("proxy.workers", *workers != new.workers),
        (
            "proxy.http2_max_streams",
            *http2_max_streams != new.http2_max_streams,
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// The `[proxy.tls]` and `[admin.tls]` keys a reload cannot apply: TLS turned on or
/// off, and the redirect listener (the certificates themselves are reloaded).
pub(super) fn restart_only_tls_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.admin.tls.is_some() != new.admin.tls.is_some() {
        changed.push("admin.tls");
    }
    let (old, new) = (old.proxy.tls.as_ref(), new.proxy.tls.as_ref());
    if old.is_some() != new.is_some() {
        changed.push("proxy.tls");
    } else if old.and_then(|t| t.http_redirect_listen) != new.and_then(|t| t.http_redirect_listen) {
        changed.push("proxy.tls.http_redirect_listen");
    }
    changed
}

/// `jenkins.api_token_file` could not be read: the daemon runs, but hot promotion's
/// REST calls go without auth and fail.
#[derive(Debug, thiserror::Error)]
#[error("{0}; hot promotion REST calls (and active-active load reads) will fail until it is fixed")]
pub struct CredentialsError(#[from] SecretError);

/// The credentials of `jenkins.user` / `jenkins.api_token_file`, if set. An unusable
/// file does not stop the daemon: the error says so, for the log of `run` and reloads
/// and the warning of `check`.
pub fn jenkins_credentials(config: &Config) -> Result<Option<Credentials>, CredentialsError> {
    match (&config.jenkins.user, &config.jenkins.api_token_file) {
        (Some(user), Some(file)) => Ok(Some(Credentials::load(user, file)?)),
        _ => Ok(None),
    }
}

/// Promotion settings and hooks; Jenkins credentials are read from their file here.
pub(super) fn owner_settings(config: &Config) -> OwnerSettings {
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
        cluster: config.cluster.is_some(),
        active_active: config.pool.active_active(),
    }
}

pub(super) fn policy(config: &Config) -> Policy {
    Policy {
        rise: config.health.rise,
        fall: config.health.fall,
        failback: config.failover.failback,
    }
}

/// `[upstream_tls]` read and built (its PEM files, or the system's roots), when a
/// master of `config` is `https://`; None when none is (nothing is read then).
pub fn upstream_tls(config: &Config) -> Result<Option<UpstreamTls>, ClientTlsError> {
    if !config.backends.iter().any(|b| b.tls) {
        return Ok(None);
    }
    let tls = UpstreamTls::load(&config.upstream_tls)?;
    if tls.insecure {
        tracing::warn!("upstream_tls.insecure_skip_verify = true: the masters' TLS certificates are NOT verified; anyone on the path to them can pose as a master");
    }
    Ok(Some(tls))
}

/// An `https://` master without the TLS settings to reach it: a bug of the caller
/// (see [`upstream_tls`]), refused rather than sending its traffic in clear text.
#[derive(Debug, thiserror::Error)]
#[error("{0}: an https:// master, but no [upstream_tls] settings were built for it")]
pub struct NoTlsFor(String);

/// The masters of `config`, reusing those of `previous` that did not change (same
/// name, URL and connection settings), so their pools and open connections live on.
/// `workers`: the proxy's worker threads, one pool shard each. `tls`: from
/// [`upstream_tls`], for the `https://` masters.
pub(super) fn build_masters(
    config: &Config,
    previous: &[Arc<Master>],
    workers: usize,
    tls: Option<&UpstreamTls>,
) -> Result<Vec<Arc<Master>>, NoTlsFor> {
    config
        .backends
        .iter()
        .map(|backend| {
            let master_tls = match backend.tls {
                false => None,
                true => Some(
                    tls.and_then(|tls| tls.for_master(backend.tls_name(&config.upstream_tls)))
                        .ok_or_else(|| NoTlsFor(backend.name.clone()))?,
                ),
            };
            let fresh = Upstream::new(
                &backend.host,
                backend.port,
                UpstreamSettings {
                    connect_timeout: config.proxy.connect_timeout,
                    idle_timeout: config.proxy.pool_idle_timeout,
                    max_connections: backend.max_connections,
                    max_connects: backend.max_connects,
                    workers,
                    tls: master_tls,
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
            Ok(match reusable {
                Some(master) => Arc::clone(master),
                None => Arc::new(Master {
                    name: backend.name.clone(),
                    url: backend.url.clone(),
                    host: backend.host.clone(),
                    standby: backend.standby,
                    start_command: backend.start_command.clone(),
                    fence_command: backend.fence_command.clone(),
                    upstream: fresh,
                    check_now: tokio::sync::Notify::new(),
                    counters: Default::default(),
                }),
            })
        })
        .collect()
}

/// The request path's settings. `bound_port(i)`: the port the `[[tcp]]` listener `i`
/// got (port 0 in the config means "the port we got").
pub(super) fn proxy_settings(
    config: &Config,
    bound_port: impl Fn(usize) -> Option<u16>,
) -> ProxySettings {
    ProxySettings {
        retry_after: retry_after_value(config.proxy.retry_after),
        tunnel_idle_timeout: config.proxy.tunnel_idle_timeout,
        response_idle_timeout: config.proxy.response_idle_timeout,
        access_log: config.proxy.access_log,
        hold_timeout: config.failover.hold_timeout,
        request_timeout: config.proxy.request_timeout,
        down_confirmation: down_confirmation(&config.health),
        advertised: advertised_for(&config.tcp, bound_port),
        affinity_cookie: (config.pool.active_active())
            .then(|| Arc::from(config.pool.cookie_name.as_str())),
    }
}

/// How long the health checks take at most to demote a master that stopped answering:
/// `health.timeout` x `fall` + `interval`.
pub(super) fn down_confirmation(health: &HealthConfig) -> Duration {
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

/// Whole seconds, rounded up, at least 1.
fn retry_after_value(retry_after: Duration) -> HeaderValue {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}
