//! Configuration: the TOML schema (raw serde types, unknown keys rejected) and the
//! validated [`Config`] the rest of the daemon runs on.
//!
//! Every error a user can cause names the file, the line and the key, and says what
//! to do. Defaults are the `DEFAULT_*` consts below; the README and
//! `config/jenkins-ha-proxy.toml` document the same values.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

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
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
pub const DEFAULT_FAILBACK: Failback = Failback::Never;

/// The validated configuration. Built only by [`Config::parse`] / [`Config::load`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub health: HealthConfig,
    pub failover: FailoverConfig,
    /// In file order: the order of preference for the election.
    pub backends: Vec<BackendConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// `proxy.listen`: where clients (browsers, agents, CLI) connect.
    pub listen: SocketAddr,
    /// `proxy.connect_timeout`: deadline for opening a TCP connection to a master.
    pub connect_timeout: Duration,
    /// `proxy.pool_idle_timeout`: idle upstream connections older than this are not reused.
    pub pool_idle_timeout: Duration,
    /// `proxy.header_read_timeout`: a client must send its request head within this.
    pub header_read_timeout: Duration,
    /// `proxy.shutdown_timeout`: grace period for in-flight requests on SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// `proxy.retry_after`: value of the Retry-After header on 503 (whole seconds, rounded up).
    pub retry_after: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// `admin.listen`: where `/status` is served.
    pub listen: SocketAddr,
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Unique, non-empty; used in logs, /status and metrics.
    pub name: String,
    /// Normalised `http://host:port` (no path, no trailing slash).
    pub url: String,
    /// Host as written (a name, an IPv4 address, or an IPv6 address without brackets).
    pub host: String,
    pub port: u16,
}

impl BackendConfig {
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
        validate(&src, &raw)
    }

    /// A one-screen, human-readable summary (what `check` prints); every line,
    /// the last included, ends with a newline.
    pub fn summary(&self) -> String {
        let (p, h) = (&self.proxy, &self.health);
        let mut lines = vec![format!(
            "listen:    proxy {}, admin {}",
            p.listen, self.admin.listen
        )];
        let width = self
            .backends
            .iter()
            .map(|b| b.name.len())
            .max()
            .unwrap_or(0);
        for (i, b) in self.backends.iter().enumerate() {
            let label = if i == 0 { "masters:" } else { "" };
            let preferred = if i == 0 { "  (preferred)" } else { "" };
            lines.push(format!(
                "{label:<10} {}. {:<width$}  {}{preferred}",
                i + 1,
                b.name,
                b.url
            ));
        }
        lines.push(format!(
            "health:    GET {} every {}, timeout {}",
            h.path,
            fmt_duration(h.interval),
            fmt_duration(h.timeout)
        ));
        lines.push(format!(
            "           up after {} good probes in a row, down after {} failed ones",
            h.rise, h.fall
        ));
        // Worst case is a little more (plus one timeout), hence the "~".
        let detect = h
            .interval
            .checked_mul(h.fall)
            .map_or_else(|| "a very long time".to_string(), fmt_duration);
        lines.push(format!(
            "           a dead active master is detected within ~{detect} (fall {} x interval {})",
            h.fall,
            fmt_duration(h.interval)
        ));
        lines.push(format!(
            "failback:  {} ({})",
            self.failover.failback.as_str(),
            failback_meaning(self.failover.failback)
        ));
        lines.push(format!(
            "proxy:     connect timeout {}, pool idle {}, header read {}, shutdown {}",
            fmt_duration(p.connect_timeout),
            fmt_duration(p.pool_idle_timeout),
            fmt_duration(p.header_read_timeout),
            fmt_duration(p.shutdown_timeout),
        ));
        lines.push(format!(
            "           no healthy master: 503 with Retry-After {}",
            fmt_duration(p.retry_after)
        ));
        lines.iter().map(|line| format!("{line}\n")).collect()
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

// ---------------------------------------------------------------------------
// Raw schema: exactly what the file may contain. Every level denies unknown keys so
// a typo is an error, not a silently ignored setting. Values are `Spanned` so
// validation can name their line; required keys are `Option` so a missing one gets
// our own message instead of serde's bare "missing field".
// ---------------------------------------------------------------------------

type Field<T> = Option<Spanned<T>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawConfig {
    proxy: Field<RawProxy>,
    admin: Field<RawAdmin>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    failover: RawFailover,
    #[serde(default)]
    backend: Vec<Spanned<RawBackend>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [proxy] table")]
struct RawProxy {
    listen: Field<String>,
    connect_timeout: Field<String>,
    pool_idle_timeout: Field<String>,
    header_read_timeout: Field<String>,
    shutdown_timeout: Field<String>,
    retry_after: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [admin] table")]
struct RawAdmin {
    listen: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [health] table")]
struct RawHealth {
    path: Field<String>,
    interval: Field<String>,
    timeout: Field<String>,
    // Signed so that `rise = -1` gets our "at least 1" message, not a serde one.
    rise: Field<i64>,
    fall: Field<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [failover] table")]
struct RawFailover {
    failback: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[backend]] table")]
struct RawBackend {
    name: Field<String>,
    url: Field<String>,
}

/// Keys whose values are humantime strings (used for a hint on type errors).
const DURATION_KEYS: &[&str] = &[
    "connect_timeout",
    "pool_idle_timeout",
    "header_read_timeout",
    "shutdown_timeout",
    "retry_after",
    "interval",
    "timeout",
];

const URL_EXAMPLE: &str = "e.g. \"http://10.0.0.11:8080\"";

// ---------------------------------------------------------------------------
// Errors: the source text travels with the file name so any span becomes a line.
// ---------------------------------------------------------------------------

struct Source<'a> {
    text: &'a str,
    file: &'a str,
}

impl Source<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error_at_line(self.line(&span), key, message)
    }

    fn error_at_line(
        &self,
        line: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Turns a toml/serde error (syntax, unknown key, wrong type) into our format:
    /// the dotted key it concerns, its line, and what to do.
    fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let offset = err.span().map(|span| span.start);
        let line = offset.map_or(0, |offset| line_of(self.text, offset));
        // toml's error does not expose the key path, so re-parse into a spanned tree
        // and look the offset up there. After a syntax error the tree is partial and
        // its spans unreliable: then only trust a key written on the error line.
        let (root, syntax_errors) = DeTable::parse_recoverable(self.text);
        let entries = entries(root.get_ref());
        if syntax_errors.is_empty() {
            let path = offset.and_then(|offset| innermost_at(&entries, offset));
            let (key, message) = describe_serde_error(path, err.message());
            self.error_at_line(line, key, message)
        } else {
            let key = offset
                .and_then(|offset| key_on_line(&entries, self.text, offset))
                .unwrap_or_else(|| line_key(self.text, line));
            let message = syntax_message(&key, err.message());
            self.error_at_line(line, key, message)
        }
    }
}

/// 1-based line of a byte offset (offsets past the end land on the last line).
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    // Bytes, not chars: `offset` may fall inside a multi-byte character.
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A key (or array element) of the parsed document with its spans and dotted path
/// (`health.interval`, `backend[1].url`).
struct Entry {
    key: Range<usize>,
    value: Range<usize>,
    path: String,
}

/// Every key of the document, parents before children.
fn entries(root: &DeTable<'_>) -> Vec<Entry> {
    let mut out = Vec::new();
    collect_table(root, "", &mut out);
    out
}

fn collect_table(table: &DeTable<'_>, prefix: &str, out: &mut Vec<Entry>) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        out.push(Entry {
            key: key.span(),
            value: value.span(),
            path: path.clone(),
        });
        collect_value(value.get_ref(), &path, out);
    }
}

fn collect_value(value: &DeValue<'_>, path: &str, out: &mut Vec<Entry>) {
    match value {
        DeValue::Table(table) => collect_table(table, path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                // An element of `[[backend]]` is spanned by its header.
                let path = format!("{path}[{i}]");
                out.push(Entry {
                    key: item.span(),
                    value: item.span(),
                    path: path.clone(),
                });
                collect_value(item.get_ref(), &path, out);
            }
        }
        _ => {}
    }
}

/// Path of the innermost entry whose key or value span contains `offset`.
fn innermost_at(entries: &[Entry], offset: usize) -> Option<String> {
    // Inclusive end: some errors point just past a value (an empty span there).
    let contains = |span: &Range<usize>| span.start <= offset && offset <= span.end;
    let mut best: Option<(usize, &Entry)> = None;
    for entry in entries {
        for span in [&entry.key, &entry.value] {
            // `<=`: on a tie the later entry is the deeper one (backend[0] over backend).
            if contains(span) && best.map_or(true, |(len, _)| span.len() <= len) {
                best = Some((span.len(), entry));
            }
        }
    }
    best.map(|(_, entry)| entry.path.clone())
}

/// Path of the last key written on the line of `offset`, at or before it.
fn key_on_line(entries: &[Entry], text: &str, offset: usize) -> Option<String> {
    let line = line_of(text, offset);
    entries
        .iter()
        .filter(|e| e.key.start <= offset && line_of(text, e.key.start) == line)
        .max_by_key(|e| e.key.start)
        .map(|e| e.path.clone())
}

/// Our message for an error serde raised while mapping the document onto the raw
/// types; `path` is where it points (for "missing field", the table).
fn describe_serde_error(path: Option<String>, message: &str) -> (String, String) {
    let names = backticked(message);
    match names.split_first() {
        Some((unknown, expected)) if message.starts_with("unknown field") => {
            let key = path.unwrap_or_else(|| unknown.to_string());
            let hint = unknown_key_hint(&key, unknown, expected);
            (key, format!("unknown key `{unknown}`; {hint}"))
        }
        Some((missing, _)) if message.starts_with("missing field") => {
            let key =
                path.map_or_else(|| missing.to_string(), |table| format!("{table}.{missing}"));
            (key, "missing required key".to_string())
        }
        _ => {
            let key = path.unwrap_or_else(|| "(file)".to_string());
            // Counts are i64 only to catch negatives ourselves; don't leak the type.
            let message = message.replace("expected i64", "expected a whole number");
            let hint = type_hint(&key, &message);
            (key, format!("{message}{hint}"))
        }
    }
}

fn syntax_message(key: &str, message: &str) -> String {
    if message == "duplicate key" {
        let name = key.rsplit('.').next().unwrap_or(key);
        format!("TOML syntax error: duplicate key: `{name}` is defined more than once")
    } else {
        format!("TOML syntax error: {message}")
    }
}

/// The `names` serde quotes in backticks, in order: for "unknown field `a`, expected
/// one of `b`, `c`" that is [a, b, c].
fn backticked(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// "did you mean" plus the keys valid where the unknown one was found.
fn unknown_key_hint(key: &str, unknown: &str, expected: &[&str]) -> String {
    let suggestion = expected
        .iter()
        .map(|name| (edit_distance(unknown, name), name))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, name)| format!("did you mean `{name}`? "))
        .unwrap_or_default();
    if expected.is_empty() {
        return format!("{suggestion}no keys are allowed here");
    }
    // The table the key sits in, as written in the file: [health], [[backend]].
    let place = match key.rsplit_once('.') {
        None => "valid top-level keys".to_string(),
        Some((parent, _)) => match parent.strip_suffix(']').and_then(|p| p.rsplit_once('[')) {
            Some((array, _)) => format!("valid keys in [[{array}]]"),
            None => format!("valid keys in [{parent}]"),
        },
    };
    format!("{suggestion}{place}: {}", expected.join(", "))
}

/// Levenshtein distance, for typo suggestions on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            row.push(substitute.min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

/// Extra advice for the two type mistakes people make most.
fn type_hint(key: &str, message: &str) -> &'static str {
    let field = key.rsplit('.').next().unwrap_or(key);
    if DURATION_KEYS.contains(&field) && message.contains("expected a string") {
        "; durations are quoted strings with a unit, e.g. \"2s\", \"500ms\" or \"1m\""
    } else if key == "backend" {
        "; write each master as its own [[backend]] table (double brackets)"
    } else {
        ""
    }
}

/// For errors the parser could not tie to a key: what starts the offending line.
fn line_key(text: &str, line: usize) -> String {
    let content = match line {
        0 => "",
        n => text.lines().nth(n - 1).unwrap_or(""),
    };
    let head = content.split('=').next().unwrap_or("").trim();
    if head.is_empty() {
        "(file)".to_string()
    } else {
        head.to_string()
    }
}

// ---------------------------------------------------------------------------
// Validation: raw -> Config. Each check names the offending value's line.
// ---------------------------------------------------------------------------

fn validate(src: &Source<'_>, raw: &RawConfig) -> Result<Config, ConfigError> {
    let proxy = required_table(src, "proxy", raw.proxy.as_ref(), PROXY_LISTEN_EXAMPLE)?;
    let admin = required_table(src, "admin", raw.admin.as_ref(), ADMIN_LISTEN_EXAMPLE)?;
    let proxy_listen = listen_addr(
        src,
        "proxy",
        proxy.span(),
        &proxy.get_ref().listen,
        PROXY_LISTEN_EXAMPLE,
    )?;
    let admin_listen = listen_addr(
        src,
        "admin",
        admin.span(),
        &admin.get_ref().listen,
        ADMIN_LISTEN_EXAMPLE,
    )?;
    check_listener_clash(src, &proxy_listen, &admin_listen)?;
    Ok(Config {
        proxy: proxy_config(src, proxy.get_ref(), *proxy_listen.get_ref())?,
        admin: AdminConfig {
            listen: *admin_listen.get_ref(),
        },
        health: health_config(src, &raw.health)?,
        failover: FailoverConfig {
            failback: failback(src, raw.failover.failback.as_ref())?,
        },
        backends: backends(src, &raw.backend)?,
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

/// The required `listen` of `[proxy]` or `[admin]`; a missing one points at the
/// table header.
fn listen_addr(
    src: &Source<'_>,
    table: &str,
    header: Range<usize>,
    field: &Field<String>,
    example: &str,
) -> Result<Spanned<SocketAddr>, ConfigError> {
    let key = format!("{table}.listen");
    let Some(field) = field else {
        let message = format!("missing required key; add listen = \"{example}\"");
        return Err(src.error(header, key, message));
    };
    field
        .get_ref()
        .parse::<SocketAddr>()
        .map(|addr| Spanned::new(field.span(), addr))
        .map_err(|_| {
            let message = format!(
                "invalid address {:?}: use IP:port, e.g. \"{example}\" or \"[::1]:8080\" \
                 (host names are not resolved)",
                field.get_ref()
            );
            src.error(field.span(), key, message)
        })
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
    })
}

/// Two listeners on one port clash when their IPs are equal or either is the
/// wildcard (0.0.0.0 / ::, which also takes the port on every other address).
/// Port 0 asks the OS for a free port, so it never clashes.
fn check_listener_clash(
    src: &Source<'_>,
    proxy: &Spanned<SocketAddr>,
    admin: &Spanned<SocketAddr>,
) -> Result<(), ConfigError> {
    let (p, a) = (proxy.get_ref(), admin.get_ref());
    let same_ip = p.ip() == a.ip() || p.ip().is_unspecified() || a.ip().is_unspecified();
    if p.port() == 0 || p.port() != a.port() || !same_ip {
        return Ok(());
    }
    Err(src.error(
        admin.span(),
        "admin.listen",
        format!(
            "{a} clashes with proxy.listen {p} (line {}): both would bind port {}; give admin.listen its own port, e.g. \"127.0.0.1:8404\"",
            src.line(&proxy.span()),
            a.port()
        ),
    ))
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

/// An optional duration: humantime syntax ("500ms", "2s", "1m"); zero allowed.
fn duration(
    src: &Source<'_>,
    key: &str,
    field: &Field<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(field) = field else {
        return Ok(default);
    };
    humantime::parse_duration(field.get_ref()).map_err(|e| {
        src.error(
            field.span(),
            key,
            format!(
                "invalid duration {:?} ({e}); write a number with a unit, e.g. \"2s\", \"500ms\" or \"1m\"",
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
    check_name(name.get_ref()).map_err(|message| src.error(name.span(), key("name"), message))?;
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

/// Names go into logs and metric labels: keep them to a safe alphabet.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty; use a short label such as \"master-a\"".to_string());
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

    /// Entries of `text`, which must be valid TOML.
    fn entries_of(text: &str) -> Vec<Entry> {
        let root = DeTable::parse(text).expect("valid TOML");
        entries(root.get_ref())
    }

    #[test]
    fn line_of_counts_newlines_before_the_offset() {
        let text = "a = 1\nb = 2\r\nc = 3";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 5), 1, "the newline itself is on its line");
        assert_eq!(line_of(text, 6), 2);
        assert_eq!(line_of(text, text.find('c').unwrap()), 3);
        assert_eq!(line_of(text, 10_000), 3, "past the end: last line");
        assert_eq!(line_of("", 0), 1);
    }

    #[test]
    fn line_of_accepts_an_offset_inside_a_multibyte_character() {
        let text = "é\né";
        assert_eq!(line_of(text, 1), 1);
        assert_eq!(line_of(text, 4), 2);
    }

    #[test]
    fn innermost_at_finds_keys_values_and_array_elements() {
        let text = "[health]\nrise = 2\n[[backend]]\nname = \"a\"\n[[backend]]\nurl = \"b\"\n";
        let entries = entries_of(text);
        let at = |needle: &str| innermost_at(&entries, text.find(needle).unwrap());
        assert_eq!(at("rise").as_deref(), Some("health.rise"));
        assert_eq!(at("2\n").as_deref(), Some("health.rise"));
        assert_eq!(at("[health]").as_deref(), Some("health"));
        assert_eq!(at("\"b\"").as_deref(), Some("backend[1].url"));
        // The first header spans both `backend` (the array) and `backend[0]`.
        assert_eq!(at("[[backend]]").as_deref(), Some("backend[0]"));
        let second_header = text.rfind("[[backend]]").unwrap();
        assert_eq!(
            innermost_at(&entries, second_header).as_deref(),
            Some("backend[1]")
        );
    }

    #[test]
    fn key_on_line_ignores_keys_on_other_lines() {
        let text = "[proxy]\nlisten = \"a\n[failover]\nfailback = \"x\"\n";
        let (root, errors) = DeTable::parse_recoverable(text);
        assert!(!errors.is_empty(), "the text has a syntax error");
        let entries = entries(root.get_ref());
        let offset = text.find("\"a").unwrap() + 2;
        assert_eq!(
            key_on_line(&entries, text, offset).as_deref(),
            Some("proxy.listen")
        );
        assert_eq!(key_on_line(&entries, text, 1).as_deref(), Some("proxy"));
        assert_eq!(key_on_line(&[], text, offset), None);
    }

    #[test]
    fn backticked_returns_the_quoted_names_in_order() {
        let message = "unknown field `intervall`, expected one of `path`, `interval`";
        assert_eq!(backticked(message), ["intervall", "path", "interval"]);
        assert!(backticked("no names here").is_empty());
    }

    #[test]
    fn describe_serde_error_names_the_key_and_suggests() {
        let (key, message) = describe_serde_error(
            Some("health.intervall".to_string()),
            "unknown field `intervall`, expected `interval` or `rise`",
        );
        assert_eq!(key, "health.intervall");
        assert_eq!(
            message,
            "unknown key `intervall`; did you mean `interval`? valid keys in [health]: interval, rise"
        );

        let (key, _) = describe_serde_error(None, "unknown field `x`, expected `a`");
        assert_eq!(key, "x", "without a path the field itself is the key");

        let (key, message) =
            describe_serde_error(Some("backend[2]".to_string()), "missing field `url`");
        assert_eq!(
            (key.as_str(), message.as_str()),
            ("backend[2].url", "missing required key")
        );

        let (key, message) = describe_serde_error(
            Some("health.fall".to_string()),
            "invalid type: string \"3\", expected i64",
        );
        assert_eq!(key, "health.fall");
        assert_eq!(
            message,
            "invalid type: string \"3\", expected a whole number"
        );
    }

    #[test]
    fn unknown_key_hint_names_the_table_as_written() {
        assert_eq!(
            unknown_key_hint("backend[1].urll", "urll", &["name", "url"]),
            "did you mean `url`? valid keys in [[backend]]: name, url"
        );
        assert_eq!(
            unknown_key_hint("zzz", "zzz", &["proxy", "admin"]),
            "valid top-level keys: proxy, admin"
        );
        assert_eq!(
            unknown_key_hint("a.b", "b", &[]),
            "no keys are allowed here"
        );
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("interval", "interval"), 0);
        assert_eq!(edit_distance("intervall", "interval"), 1);
        assert_eq!(edit_distance("helth", "health"), 1);
        assert_eq!(edit_distance("rsie", "rise"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn type_hint_only_for_durations_and_backend() {
        let wrong = "invalid type: integer `2`, expected a string";
        assert!(type_hint("health.interval", wrong).contains("\"2s\""));
        assert!(type_hint("proxy.retry_after", wrong).contains("\"2s\""));
        assert_eq!(type_hint("backend[0].url", wrong), "");
        assert!(
            type_hint("backend", "invalid type: map, expected a sequence").contains("[[backend]]")
        );
    }

    #[test]
    fn line_key_takes_the_text_before_the_equals_sign() {
        let text = "[health\nrise = 2\n";
        assert_eq!(line_key(text, 1), "[health");
        assert_eq!(line_key(text, 2), "rise");
        assert_eq!(line_key(text, 0), "(file)");
        assert_eq!(line_key(text, 99), "(file)");
    }

    #[test]
    fn check_name_allows_a_safe_alphabet_only() {
        assert_eq!(check_name("master-a.dc1_2"), Ok(()));
        assert!(check_name("").unwrap_err().contains("must not be empty"));
        assert!(check_name("a/b").unwrap_err().contains("'/'"));
        assert!(check_name("mäster").unwrap_err().contains("'ä'"));
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

    #[test]
    fn errors_display_as_file_line_key_message() {
        let src = Source {
            text: "x = 1\ny = 2\n",
            file: "f.toml",
        };
        let err = src.error(6..7, "y", "bad");
        assert_eq!(err.to_string(), "f.toml:2: y: bad");
    }

    #[test]
    fn summary_detection_time_survives_overflow() {
        let text = r#"
[proxy]
listen = "0.0.0.0:8080"
[admin]
listen = "127.0.0.1:8404"
[health]
interval = "500000000000000000s"
timeout = "1s"
fall = 4000000000
[[backend]]
name = "a"
url = "http://a"
"#;
        let config = Config::parse(text, "t").unwrap_or_else(|e| panic!("{e}"));
        assert!(config.summary().contains("within ~a very long time"));
    }
}
