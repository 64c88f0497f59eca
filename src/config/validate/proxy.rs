//! `[proxy]`: the client listener's timeouts and limits.

use std::net::SocketAddr;
use std::time::Duration;

use super::super::errors::Source;
use super::super::raw::{Field, RawProxy};
use super::super::{
    ConfigError, ProxyConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_HTTP2_MAX_STREAMS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_HEADER_BYTES, DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RETRY_AFTER, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_TUNNEL_IDLE_TIMEOUT,
};
use super::server_tls::server_tls;
use super::values::{bounded, duration, optional_duration, positive_duration};

/// `proxy.workers` at most: more threads than this only add context switches.
const MAX_WORKERS: usize = 1024;

/// The `[proxy]` table, keys checked in the order of [`ProxyConfig`]'s fields.
pub(in super::super) fn proxy_config(
    src: &Source<'_>,
    raw: &RawProxy,
    listen: SocketAddr,
) -> Result<ProxyConfig, ConfigError> {
    let timeouts = timeouts(src, raw)?;
    Ok(ProxyConfig {
        listen,
        connect_timeout: timeouts.connect,
        pool_idle_timeout: timeouts.pool_idle,
        header_read_timeout: timeouts.header_read,
        shutdown_timeout: timeouts.shutdown,
        retry_after: timeouts.retry_after,
        tunnel_idle_timeout: timeouts.tunnel_idle,
        response_idle_timeout: timeouts.response_idle,
        access_log: raw.access_log.as_ref().is_some_and(|on| *on.get_ref()),
        max_header_bytes: bounded(
            src,
            "proxy.max_header_bytes",
            &raw.max_header_bytes,
            DEFAULT_MAX_HEADER_BYTES,
            8192,
            16 << 20,
        )?,
        max_headers: bounded(
            src,
            "proxy.max_headers",
            &raw.max_headers,
            DEFAULT_MAX_HEADERS,
            8,
            10_000,
        )?,
        max_connections: bounded(
            src,
            "proxy.max_connections",
            &raw.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            1,
            1_000_000,
        )?,
        workers: workers(src, &raw.workers)?,
        request_timeout: optional_duration(
            src,
            "proxy.request_timeout",
            &raw.request_timeout,
            Some(DEFAULT_REQUEST_TIMEOUT),
        )?,
        http2_max_streams: bounded(
            src,
            "proxy.http2_max_streams",
            &raw.http2_max_streams,
            DEFAULT_HTTP2_MAX_STREAMS,
            1,
            10_000,
        )?,
        tls: match &raw.tls {
            Some(tls) => Some(server_tls(src, tls)?),
            None => None,
        },
    })
}

/// The `[proxy]` timeouts before `access_log`, in field order.
struct Timeouts {
    connect: Duration,
    pool_idle: Duration,
    header_read: Duration,
    shutdown: Duration,
    retry_after: Duration,
    tunnel_idle: Option<Duration>,
    response_idle: Option<Duration>,
}

fn timeouts(src: &Source<'_>, raw: &RawProxy) -> Result<Timeouts, ConfigError> {
    Ok(Timeouts {
        connect: positive_duration(
            src,
            "proxy.connect_timeout",
            &raw.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        )?,
        pool_idle: duration(
            src,
            "proxy.pool_idle_timeout",
            &raw.pool_idle_timeout,
            DEFAULT_POOL_IDLE_TIMEOUT,
        )?,
        // Zero would time out every client before it could send a request.
        header_read: positive_duration(
            src,
            "proxy.header_read_timeout",
            &raw.header_read_timeout,
            DEFAULT_HEADER_READ_TIMEOUT,
        )?,
        shutdown: duration(
            src,
            "proxy.shutdown_timeout",
            &raw.shutdown_timeout,
            DEFAULT_SHUTDOWN_TIMEOUT,
        )?,
        retry_after: duration(
            src,
            "proxy.retry_after",
            &raw.retry_after,
            DEFAULT_RETRY_AFTER,
        )?,
        tunnel_idle: optional_duration(
            src,
            "proxy.tunnel_idle_timeout",
            &raw.tunnel_idle_timeout,
            Some(DEFAULT_TUNNEL_IDLE_TIMEOUT),
        )?,
        response_idle: optional_duration(
            src,
            "proxy.response_idle_timeout",
            &raw.response_idle_timeout,
            None,
        )?,
    })
}

/// `proxy.workers`: absent means one per CPU core (decided at start-up).
fn workers(src: &Source<'_>, field: &Field<i64>) -> Result<Option<usize>, ConfigError> {
    let Some(field) = field else {
        return Ok(None);
    };
    match usize::try_from(*field.get_ref()) {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(Some(n)),
        _ => Err(src.error(
            field.span(),
            "proxy.workers",
            format!("must be between 1 and {MAX_WORKERS}; leave it out for one per CPU core"),
        )),
    }
}
