//! Validation: raw -> [`Config`]. Each check names the offending value's line.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::errors::Source;
use super::raw::{Field, RawAdmin, RawConfig, RawFailover, RawHealth, RawProxy};
use super::{
    failback_meaning, fmt_duration, AdminConfig, Config, ConfigError, Failback, FailoverConfig,
    HealthConfig, ProxyConfig, DEFAULT_COMMAND_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_FAILBACK,
    DEFAULT_FALL, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_PATH, DEFAULT_HEALTH_TIMEOUT,
    DEFAULT_HOLD_TIMEOUT, DEFAULT_PROMOTE_TIMEOUT, DEFAULT_RISE, DEFAULT_STATE_FILE,
};
use std::path::PathBuf;

mod backend;
mod cluster;
mod pool;
mod promotion;
mod proxy;
mod server_tls;
mod tcp;
mod upstream_tls;
mod values;

pub use cluster::etcd_endpoint;
use values::{bounded, check_name, duration, is_off, optional_duration, positive_duration};

pub(super) fn validate(src: &Source<'_>, raw: &RawConfig) -> Result<Config, ConfigError> {
    let proxy = required_table(src, "proxy", raw.proxy.as_ref(), PROXY_LISTEN_EXAMPLE)?;
    let admin = required_table(src, "admin", raw.admin.as_ref(), ADMIN_LISTEN_EXAMPLE)?;
    let proxy_listen = listen_addr(
        src,
        "proxy.listen",
        proxy.span(),
        &proxy.get_ref().listen,
        PROXY_LISTEN_EXAMPLE,
    )?;
    let admin_listen = listen_addr(
        src,
        "admin.listen",
        admin.span(),
        &admin.get_ref().listen,
        ADMIN_LISTEN_EXAMPLE,
    )?;
    let (proxy_addr, admin_addr) = (proxy_listen.addr, admin_listen.addr);
    let (tcp, tcp_listens) = tcp::listeners(src, &raw.tcp)?;
    let proxy_config = proxy::proxy_config(src, proxy.get_ref(), proxy_addr)?;
    let mut listeners = vec![proxy_listen, admin_listen];
    listeners.extend(redirect_listener(proxy.get_ref(), &proxy_config));
    listeners.extend(tcp_listens);
    check_listener_clashes(src, &listeners)?;
    Ok(Config {
        proxy: proxy_config,
        admin: AdminConfig {
            listen: admin_addr,
            token_file: token_file(src, admin.get_ref(), admin_addr)?,
            tls: match &admin.get_ref().tls {
                Some(tls) => Some(server_tls::admin_tls(src, tls)?),
                None => None,
            },
        },
        health: health_config(src, &raw.health)?,
        failover: failover_config(src, &raw.failover)?,
        backends: backend::backends(src, &raw.backend)?,
        jenkins: promotion::jenkins(src, &raw.jenkins)?,
        hooks: promotion::hooks(src, &raw.hooks)?,
        tcp,
        cluster: cluster::cluster(src, raw)?,
        upstream_tls: upstream_tls::upstream_tls(src, &raw.upstream_tls)?,
        pool: pool::pool(src, raw)?,
    })
}

/// `[failover]`: every key has a default.
fn failover_config(src: &Source<'_>, raw: &RawFailover) -> Result<FailoverConfig, ConfigError> {
    Ok(FailoverConfig {
        failback: failback(src, raw.failback.as_ref())?,
        // Zero is allowed: close what is left on the demoted master at once.
        drain_timeout: duration(
            src,
            "failover.drain_timeout",
            &raw.drain_timeout,
            DEFAULT_DRAIN_TIMEOUT,
        )?,
        state_file: state_file(src, &raw.state_file)?,
        require_fence: raw.require_fence.as_ref().is_some_and(|f| *f.get_ref()),
        hold_timeout: duration(
            src,
            "failover.hold_timeout",
            &raw.hold_timeout,
            DEFAULT_HOLD_TIMEOUT,
        )?,
        promote_timeout: positive_duration(
            src,
            "failover.promote_timeout",
            &raw.promote_timeout,
            DEFAULT_PROMOTE_TIMEOUT,
        )?,
        starting_grace: duration(
            src,
            "failover.starting_grace",
            &raw.starting_grace,
            Duration::ZERO,
        )?,
        command_timeout: positive_duration(
            src,
            "failover.command_timeout",
            &raw.command_timeout,
            DEFAULT_COMMAND_TIMEOUT,
        )?,
        min_active_time: duration(
            src,
            "failover.min_active_time",
            &raw.min_active_time,
            super::DEFAULT_MIN_ACTIVE_TIME,
        )?,
    })
}

const PROXY_LISTEN_EXAMPLE: &str = "0.0.0.0:8080";
const ADMIN_LISTEN_EXAMPLE: &str = "127.0.0.1:8404";

/// `[proxy]` and `[admin]` must be present (no line to point at when they are not).
fn required_table<'r, T>(
    src: &Source<'_>,
    table: &str,
    raw: Option<&'r Spanned<T>>,
    listen_example: &str,
) -> Result<&'r Spanned<T>, ConfigError> {
    raw.ok_or_else(|| {
        let message = format!("missing [{table}] table; add it with listen = \"{listen_example}\"");
        src.error_at_line(0, table, message)
    })
}

/// A listening address and the key it came from, for the clash check.
struct Listener {
    /// Dotted key, e.g. `proxy.listen` or `tcp[0].listen`.
    key: String,
    addr: SocketAddr,
    span: Range<usize>,
}

/// A required `listen` (of `[proxy]`, `[admin]` or a `[[tcp]]`); a missing one
/// points at the table header.
fn listen_addr(
    src: &Source<'_>,
    key: &str,
    header: Range<usize>,
    field: &Field<String>,
    example: &str,
) -> Result<Listener, ConfigError> {
    let Some(field) = field else {
        let message = format!("missing required key; add listen = \"{example}\"");
        return Err(src.error(header, key, message));
    };
    match field.get_ref().parse::<SocketAddr>() {
        Ok(addr) => Ok(Listener {
            key: key.to_string(),
            addr,
            span: field.span(),
        }),
        Err(_) => {
            let message = format!(
                "invalid address {:?}: use IP:port, e.g. \"{example}\" or \"[::1]:8080\" \
                 (host names are not resolved)",
                field.get_ref()
            );
            Err(src.error(field.span(), key, message))
        }
    }
}

/// `proxy.tls.http_redirect_listen`, for the clash check.
fn redirect_listener(raw: &RawProxy, proxy: &ProxyConfig) -> Option<Listener> {
    let addr = proxy.tls.as_ref()?.http_redirect_listen?;
    let span = raw
        .tls
        .as_ref()?
        .get_ref()
        .http_redirect_listen
        .as_ref()?
        .span();
    Some(Listener {
        key: "proxy.tls.http_redirect_listen".to_owned(),
        addr,
        span,
    })
}

/// Every listener against those before it (proxy, admin, then `[[tcp]]` in file
/// order); a clash blames the later key and names the earlier one with its line.
fn check_listener_clashes(src: &Source<'_>, listeners: &[Listener]) -> Result<(), ConfigError> {
    for (i, later) in listeners.iter().enumerate() {
        let Some(earlier) = listeners[..i]
            .iter()
            .find(|earlier| clash(earlier.addr, later.addr))
        else {
            continue;
        };
        let advice = if later.key == "admin.listen" {
            format!("give admin.listen its own port, e.g. \"{ADMIN_LISTEN_EXAMPLE}\"")
        } else {
            format!("give {} its own port", later.key)
        };
        return Err(src.error(
            later.span.clone(),
            later.key.as_str(),
            format!(
                "{} clashes with {} {} (line {}): both would bind port {}; {advice}",
                later.addr,
                earlier.key,
                earlier.addr,
                src.line(&earlier.span),
                later.addr.port()
            ),
        ));
    }
    Ok(())
}

/// Two listeners on one port clash when their IPs are equal or either is the
/// wildcard (0.0.0.0 / ::, which also takes the port on every other address).
/// Port 0 asks the OS for a free port, so it never clashes.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    let same_ip = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
    a.port() != 0 && a.port() == b.port() && same_ip
}

fn health_config(src: &Source<'_>, raw: &RawHealth) -> Result<HealthConfig, ConfigError> {
    let interval = positive_duration(
        src,
        "health.interval",
        &raw.interval,
        DEFAULT_HEALTH_INTERVAL,
    )?;
    let timeout = positive_duration(src, "health.timeout", &raw.timeout, DEFAULT_HEALTH_TIMEOUT)?;
    if timeout >= interval {
        // Blame whichever of the two the user wrote; timeout first, the usual culprit.
        let (key, span) = match (&raw.timeout, &raw.interval) {
            (None, Some(interval)) => ("health.interval", Some(interval.span())),
            (timeout, _) => ("health.timeout", timeout.as_ref().map(Spanned::span)),
        };
        return Err(src.error_at_line(
            span.map_or(0, |span| src.line(&span)),
            key,
            format!(
                "health.timeout ({}) must be shorter than health.interval ({}): a probe has to finish before the next one starts",
                fmt_duration(timeout),
                fmt_duration(interval)
            ),
        ));
    }
    Ok(HealthConfig {
        path: health_path(src, raw.path.as_ref())?,
        interval,
        timeout,
        rise: probe_count(
            src,
            "health.rise",
            &raw.rise,
            DEFAULT_RISE,
            "successful probes before a master counts as up",
        )?,
        fall: probe_count(
            src,
            "health.fall",
            &raw.fall,
            DEFAULT_FALL,
            "failed probes before a master counts as down",
        )?,
        expect_header: expect_header(src, &raw.expect_header)?,
        expect_body: raw
            .expect_body
            .as_ref()
            .map(|b| b.get_ref().clone())
            .filter(|b| !b.is_empty()),
    })
}

fn health_path(src: &Source<'_>, field: Option<&Spanned<String>>) -> Result<String, ConfigError> {
    let Some(field) = field else {
        return Ok(DEFAULT_HEALTH_PATH.to_string());
    };
    let path = field.get_ref();
    let message = if !path.starts_with('/') {
        format!("{path:?} must be a request path starting with '/', e.g. \"/login\"")
    } else {
        match path.parse::<hyper::Uri>() {
            Ok(_) => return Ok(path.clone()),
            Err(e) => format!("{path:?} is not a valid request path ({e}); percent-encode spaces and special characters"),
        }
    };
    Err(src.error(field.span(), "health.path", message))
}

fn probe_count(
    src: &Source<'_>,
    key: &str,
    field: &Field<i64>,
    default: u32,
    meaning: &str,
) -> Result<u32, ConfigError> {
    let Some(field) = field else {
        return Ok(default);
    };
    let n = *field.get_ref();
    if n < 1 {
        let message = format!("must be at least 1 (the number of consecutive {meaning}), got {n}");
        return Err(src.error(field.span(), key, message));
    }
    u32::try_from(n).map_err(|_| {
        let message = format!("{n} is too large; use a small count such as {default}");
        src.error(field.span(), key, message)
    })
}

fn failback(src: &Source<'_>, field: Option<&Spanned<String>>) -> Result<Failback, ConfigError> {
    let Some(field) = field else {
        return Ok(DEFAULT_FAILBACK);
    };
    match field.get_ref().as_str() {
        "never" => Ok(Failback::Never),
        "auto" => Ok(Failback::Auto),
        other => Err(src.error(
            field.span(),
            "failover.failback",
            format!(
                "unknown policy {other:?}; allowed values: \"never\" ({}) or \"auto\" ({})",
                failback_meaning(Failback::Never),
                failback_meaning(Failback::Auto)
            ),
        )),
    }
}

/// `health.expect_header`: a valid header name.
fn expect_header(src: &Source<'_>, field: &Field<String>) -> Result<Option<String>, ConfigError> {
    let Some(name) = field else {
        return Ok(None);
    };
    match hyper::header::HeaderName::from_bytes(name.get_ref().as_bytes()) {
        Ok(_) => Ok(Some(name.get_ref().clone())),
        Err(_) => Err(src.error(
            name.span(),
            "health.expect_header",
            format!(
                "{:?} is not a header name; e.g. \"X-Jenkins\"",
                name.get_ref()
            ),
        )),
    }
}

/// `admin.token_file`: a non-empty path. Without one, the admin API (which can move
/// traffic) must not be reachable from other hosts.
fn token_file(
    src: &Source<'_>,
    admin: &RawAdmin,
    listen: SocketAddr,
) -> Result<Option<PathBuf>, ConfigError> {
    match &admin.token_file {
        Some(path) if path.get_ref().trim().is_empty() => Err(src.error(
            path.span(),
            "admin.token_file",
            "is empty: give the path of a file holding the admin token, or remove the key",
        )),
        Some(path) => Ok(Some(PathBuf::from(path.get_ref()))),
        None if !listen.ip().is_loopback() => {
            let span = admin.listen.as_ref().map_or(0..0, |l| l.span());
            Err(src.error(
                span,
                "admin.listen",
                format!(
                    "{listen} is reachable from other hosts, and the admin API can move traffic: \
                     set admin.token_file to a file holding a secret token, or listen on 127.0.0.1"
                ),
            ))
        }
        None => Ok(None),
    }
}

/// `failover.state_file`: a path, or "off"; absent gives the default.
fn state_file(src: &Source<'_>, field: &Field<String>) -> Result<Option<PathBuf>, ConfigError> {
    match field {
        None => Ok(Some(PathBuf::from(DEFAULT_STATE_FILE))),
        Some(path) if is_off(path.get_ref()) => Ok(None),
        Some(path) if path.get_ref().trim().is_empty() => Err(src.error(
            path.span(),
            "failover.state_file",
            "is empty: give a file path (e.g. \"/var/lib/jenkins-ha-proxy/state.json\") or \"off\"",
        )),
        Some(path) => Ok(Some(PathBuf::from(path.get_ref()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_name_allows_a_safe_alphabet_only() {
        assert_eq!(check_name("master-a.dc1_2", "x"), Ok(()));
        assert!(check_name("", "agents")
            .unwrap_err()
            .contains("must not be empty; use a short label such as \"agents\""));
        assert!(check_name("a/b", "x").unwrap_err().contains("'/'"));
        assert!(check_name("mäster", "x").unwrap_err().contains("'ä'"));
    }
}
