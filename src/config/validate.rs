//! Validation: raw -> [`Config`]. Each check names the offending value's line.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::errors::Source;
use super::raw::{Field, RawBackend, RawConfig, RawHealth, RawProxy};
use super::{
    failback_meaning, fmt_duration, AdminConfig, BackendConfig, Config, ConfigError, Failback,
    FailoverConfig, HealthConfig, ProxyConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_FAILBACK, DEFAULT_FALL, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_HEALTH_INTERVAL,
    DEFAULT_HEALTH_PATH, DEFAULT_HEALTH_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_RETRY_AFTER,
    DEFAULT_RISE, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_TUNNEL_IDLE_TIMEOUT,
};

mod tcp;

const URL_EXAMPLE: &str = "e.g. \"http://10.0.0.11:8080\"";

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
    let mut listeners = vec![proxy_listen, admin_listen];
    listeners.extend(tcp_listens);
    check_listener_clashes(src, &listeners)?;
    Ok(Config {
        proxy: proxy_config(src, proxy.get_ref(), proxy_addr)?,
        admin: AdminConfig { listen: admin_addr },
        health: health_config(src, &raw.health)?,
        failover: FailoverConfig {
            failback: failback(src, raw.failover.failback.as_ref())?,
            // Zero is allowed: close what is left on the demoted master at once.
            drain_timeout: duration(
                src,
                "failover.drain_timeout",
                &raw.failover.drain_timeout,
                DEFAULT_DRAIN_TIMEOUT,
            )?,
        },
        backends: backends(src, &raw.backend)?,
        tcp,
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

fn proxy_config(
    src: &Source<'_>,
    raw: &RawProxy,
    listen: SocketAddr,
) -> Result<ProxyConfig, ConfigError> {
    Ok(ProxyConfig {
        listen,
        connect_timeout: positive_duration(
            src,
            "proxy.connect_timeout",
            &raw.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        )?,
        pool_idle_timeout: duration(
            src,
            "proxy.pool_idle_timeout",
            &raw.pool_idle_timeout,
            DEFAULT_POOL_IDLE_TIMEOUT,
        )?,
        // Zero would time out every client before it could send a request.
        header_read_timeout: positive_duration(
            src,
            "proxy.header_read_timeout",
            &raw.header_read_timeout,
            DEFAULT_HEADER_READ_TIMEOUT,
        )?,
        shutdown_timeout: duration(
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
        tunnel_idle_timeout: optional_duration(
            src,
            "proxy.tunnel_idle_timeout",
            &raw.tunnel_idle_timeout,
            Some(DEFAULT_TUNNEL_IDLE_TIMEOUT),
        )?,
        response_idle_timeout: optional_duration(
            src,
            "proxy.response_idle_timeout",
            &raw.response_idle_timeout,
            None,
        )?,
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

/// An optional duration: humantime syntax ("500ms", "2s", "1m"); zero allowed,
/// "off" refused (these settings cannot be disabled).
fn duration(
    src: &Source<'_>,
    key: &str,
    field: &Field<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(field) = field else {
        return Ok(default);
    };
    if is_off(field.get_ref()) {
        let message = format!(
            "cannot be turned off; write a duration with a unit, e.g. \"{}\"",
            fmt_duration(default)
        );
        return Err(src.error(field.span(), key, message));
    }
    parse_duration(src, key, field, "")
}

/// A timeout that can be disabled: "off" or zero gives None; absent gives `default`.
fn optional_duration(
    src: &Source<'_>,
    key: &str,
    field: &Field<String>,
    default: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    let Some(field) = field else {
        return Ok(default);
    };
    if is_off(field.get_ref()) {
        return Ok(None);
    }
    let value = parse_duration(src, key, field, " (or \"off\" to disable)")?;
    Ok(Some(value).filter(|value| !value.is_zero()))
}

fn is_off(text: &str) -> bool {
    text.trim().eq_ignore_ascii_case("off")
}

/// humantime syntax; `also` is appended to the advice on error.
fn parse_duration(
    src: &Source<'_>,
    key: &str,
    field: &Spanned<String>,
    also: &str,
) -> Result<Duration, ConfigError> {
    humantime::parse_duration(field.get_ref()).map_err(|e| {
        src.error(
            field.span(),
            key,
            format!(
                "invalid duration {:?} ({e}); write a number with a unit, e.g. \"2s\", \"500ms\" or \"1m\"{also}",
                field.get_ref()
            ),
        )
    })
}

/// Like [`duration`], for deadlines where zero would make every attempt fail.
fn positive_duration(
    src: &Source<'_>,
    key: &str,
    field: &Field<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let value = duration(src, key, field, default)?;
    match field {
        Some(field) if value.is_zero() => Err(src.error(
            field.span(),
            key,
            format!(
                "must be greater than zero, e.g. \"{}\"",
                fmt_duration(default)
            ),
        )),
        _ => Ok(value),
    }
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

fn backends(
    src: &Source<'_>,
    raw: &[Spanned<RawBackend>],
) -> Result<Vec<BackendConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(src.error_at_line(
            0,
            "backend",
            "no masters configured; add at least one [[backend]] with name and url, \
             e.g. name = \"master-a\" and url = \"http://10.0.0.11:8080\"",
        ));
    }
    // First occurrence of each name / endpoint: (index, line), to point back at it.
    let mut names: HashMap<String, (usize, usize)> = HashMap::new();
    let mut endpoints: HashMap<(String, u16), (usize, usize)> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, table) in raw.iter().enumerate() {
        let (backend, name_span, url_span) = backend(src, i, table)?;
        if let Some((first, line)) = names.get(&backend.name) {
            return Err(src.error(
                name_span,
                format!("backend[{i}].name"),
                format!(
                    "duplicate name {:?} (first used by backend[{first}] on line {line}); give each master a unique name",
                    backend.name
                ),
            ));
        }
        if let Some((first, line)) = endpoints.get(&endpoint_key(&backend)) {
            return Err(src.error(
                url_span,
                format!("backend[{i}].url"),
                format!(
                    "{} is already used by backend[{first}] (line {line}); each [[backend]] must be a different master (host:port)",
                    backend.url
                ),
            ));
        }
        names.insert(backend.name.clone(), (i, src.line(&name_span)));
        endpoints.insert(endpoint_key(&backend), (i, src.line(&url_span)));
        out.push(backend);
    }
    Ok(out)
}

/// One `[[backend]]`, plus the spans of its name and url for the duplicate checks.
fn backend(
    src: &Source<'_>,
    index: usize,
    table: &Spanned<RawBackend>,
) -> Result<(BackendConfig, Range<usize>, Range<usize>), ConfigError> {
    let key = |field: &str| format!("backend[{index}].{field}");
    let missing = |field: &str| {
        src.error(
            table.span(),
            key(field),
            "missing required key; every [[backend]] needs name (e.g. \"master-a\") and url (e.g. \"http://10.0.0.11:8080\")",
        )
    };
    let raw = table.get_ref();
    let name = raw.name.as_ref().ok_or_else(|| missing("name"))?;
    check_name(name.get_ref(), "master-a")
        .map_err(|message| src.error(name.span(), key("name"), message))?;
    let url = raw.url.as_ref().ok_or_else(|| missing("url"))?;
    let (host, port) = parse_backend_url(url.get_ref())
        .map_err(|message| src.error(url.span(), key("url"), message))?;
    let mut backend = BackendConfig {
        name: name.get_ref().clone(),
        url: String::new(),
        host,
        port,
    };
    backend.url = format!("http://{}", backend.authority());
    Ok((backend, name.span(), url.span()))
}

/// Names go into logs and metric labels: keep them to a safe alphabet. `example`
/// is a good name for the kind of thing named.
fn check_name(name: &str, example: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!(
            "must not be empty; use a short label such as \"{example}\""
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    match name.chars().find(|&c| !allowed(c)) {
        Some(bad) => Err(format!(
            "{name:?} contains {bad:?}; use only letters, digits, '.', '_' and '-' (names appear in logs and metrics)"
        )),
        None => Ok(()),
    }
}

/// `http://host[:port][/]` -> (host without brackets, port). The message on error
/// never repeats the URL: it might carry a password.
fn parse_backend_url(text: &str) -> Result<(String, u16), String> {
    // The URI parser silently drops a fragment; refuse it rather than ignore it.
    if text.contains('#') {
        return Err(format!(
            "must not contain a fragment ('#'); write http://host:port, {URL_EXAMPLE}"
        ));
    }
    let uri: hyper::Uri = text
        .parse()
        .map_err(|e| format!("not a valid URL ({e}); write http://host:port, {URL_EXAMPLE}"))?;
    check_scheme(uri.scheme_str())?;
    let authority = uri.authority().map_or("", |a| a.as_str());
    if authority.contains('@') {
        return Err("must not contain user:password@; remove it (clients' own credentials are forwarded unchanged)".to_string());
    }
    let host = uri.host().unwrap_or("");
    if host.is_empty() {
        return Err(format!(
            "missing host; write http://host:port, {URL_EXAMPLE}"
        ));
    }
    // `port_u16()` is None both for "no port" and for an unparsable one ("h:", "h:99999").
    let port = match uri.port_u16() {
        Some(0) => {
            return Err("port 0 cannot be connected to; use the master's HTTP port".to_string())
        }
        Some(port) => port,
        None if authority.len() > host.len() => {
            return Err(format!(
                "invalid port in {authority:?}; use a number from 1 to 65535"
            ))
        }
        None => 80,
    };
    if uri.path() != "/" {
        return Err(format!(
            "must not have a path ({:?}): the request path is forwarded unchanged; set Jenkins' --prefix on both masters and use it in requests instead",
            uri.path()
        ));
    }
    if uri.query().is_some() {
        return Err(format!(
            "must not have a query string; write http://host:port, {URL_EXAMPLE}"
        ));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok((bare.to_string(), port))
}

fn check_scheme(scheme: Option<&str>) -> Result<(), String> {
    let problem = match scheme {
        Some("http") => return Ok(()),
        Some("https") => {
            "https upstreams are not supported; reach the masters over plain http".to_string()
        }
        Some(other) => format!("unsupported scheme {other:?}; only http is supported"),
        None => "missing scheme; write http://host:port".to_string(),
    };
    Err(format!("{problem}, {URL_EXAMPLE}"))
}

/// What makes two backends the same master: the IP in canonical form (so `[::1]`
/// equals `[0::1]`) or the host name ignoring case, and the port.
fn endpoint_key(backend: &BackendConfig) -> (String, u16) {
    let host = match backend.host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => backend.host.to_ascii_lowercase(),
    };
    (host, backend.port)
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

    #[test]
    fn parse_backend_url_accepts_plain_http_and_defaults_the_port() {
        let ok = |url: &str| parse_backend_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(ok("http://10.0.0.11:8080"), ("10.0.0.11".to_string(), 8080));
        assert_eq!(ok("http://jenkins-a/"), ("jenkins-a".to_string(), 80));
        assert_eq!(ok("HTTP://Jenkins-A:81"), ("Jenkins-A".to_string(), 81));
        assert_eq!(ok("http://[fe80::1]:8080"), ("fe80::1".to_string(), 8080));
    }

    #[test]
    fn parse_backend_url_rejects_everything_else() {
        let err = |url: &str| parse_backend_url(url).expect_err(url);
        assert!(err("https://a").contains("https upstreams are not supported"));
        assert!(err("a:8080").contains("missing scheme"));
        assert!(err("http://a:").contains("invalid port"));
        assert!(err("http://a:70000").contains("invalid port"));
        assert!(err("http://a/x").contains("--prefix"));
        assert!(err("http://a?x").contains("query"));
        assert!(err("http://a#x").contains("fragment"));
        assert!(!err("http://u:hunter2@a").contains("hunter2"));
        assert!(!err("http://u:hunter2@a b").contains("hunter2"));
    }

    #[test]
    fn endpoint_key_canonicalises_ips_and_case() {
        let backend = |host: &str| BackendConfig {
            name: "n".to_string(),
            url: String::new(),
            host: host.to_string(),
            port: 80,
        };
        assert_eq!(
            endpoint_key(&backend("::1")),
            endpoint_key(&backend("0:0::1"))
        );
        assert_eq!(
            endpoint_key(&backend("Jenkins")),
            endpoint_key(&backend("jenkins"))
        );
        assert_ne!(endpoint_key(&backend("a")), endpoint_key(&backend("b")));
    }
}
