//! The one-screen summary `check` prints: listeners, masters in order of preference,
//! and the timings that matter, each in words.

use std::time::Duration;

use super::{failback_meaning, fmt_duration, Config, TcpConfig};

/// See [`Config::summary`].
pub(super) fn render(config: &Config) -> String {
    let mut lines = vec![format!(
        "listen:    proxy {}, admin {}",
        config.proxy.listen, config.admin.listen
    )];
    master_lines(config, &mut lines);
    pool_lines(config, &mut lines);
    upstream_tls_lines(config, &mut lines);
    tcp_lines(&config.tcp, &mut lines);
    health_lines(config, &mut lines);
    proxy_lines(config, &mut lines);
    cluster_lines(config, &mut lines);
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// The masters in order of preference, and their connection caps.
fn master_lines(config: &Config, lines: &mut Vec<String>) {
    let width = config
        .backends
        .iter()
        .map(|b| b.name.len())
        .max()
        .unwrap_or(0);
    for (i, b) in config.backends.iter().enumerate() {
        let label = if i == 0 { "masters:" } else { "" };
        let preferred = if i == 0 { "  (preferred)" } else { "" };
        lines.push(format!(
            "{label:<10} {}. {:<width$}  {}{preferred}",
            i + 1,
            b.name,
            b.url
        ));
    }
    lines.push(backend_limits(config));
}

/// `[pool]` in active-active mode (nothing in the default mode).
fn pool_lines(config: &Config, lines: &mut Vec<String>) {
    let pool = &config.pool;
    if !pool.active_active() {
        return;
    }
    lines.push("pool:      active-active: every healthy, enabled master takes traffic".to_owned());
    lines.push("           ONLY for replicated controllers (CloudBees CI HA)".to_owned());
    lines.push(format!(
        "           new sessions: least load (builds+queue+agents, every {})",
        fmt_duration(pool.load_interval)
    ));
    lines.push(format!(
        "           a session sticks to its replica by the cookie {}",
        pool.cookie_name
    ));
}

/// How a master is found down, what happens then, and failback.
fn health_lines(config: &Config, lines: &mut Vec<String>) {
    let h = &config.health;
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
    // After a failed check the next comes one timeout later: the first failure can
    // take up to one interval to come, then fall timed-out checks follow.
    let detect = h
        .timeout
        .checked_mul(h.fall)
        .and_then(|checks| checks.checked_add(h.interval))
        .map_or_else(|| "a very long time".to_string(), fmt_duration);
    lines.push(format!(
        "           a hung master is confirmed within ~{detect} ({} x fall {} + {});",
        fmt_duration(h.timeout),
        h.fall,
        fmt_duration(h.interval)
    ));
    lines.push("           a refused connection on live traffic fails over at once".to_string());
    lines.push(format!(
        "failback:  {} ({})",
        config.failover.failback.as_str(),
        failback_meaning(config.failover.failback)
    ));
    let drain = config.failover.drain_timeout;
    lines.push(if drain.is_zero() {
        "           on a switch, connections to the demoted master close at once".to_string()
    } else {
        format!(
            "           on a switch, connections to the demoted master close after {}",
            fmt_duration(drain)
        )
    });
}

/// The client listener's timeouts and limits.
fn proxy_lines(config: &Config, lines: &mut Vec<String>) {
    let p = &config.proxy;
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
    lines.push(format!(
        "           idle limits: WebSocket tunnels {}, streamed responses {}",
        fmt_optional(p.tunnel_idle_timeout),
        fmt_optional(p.response_idle_timeout)
    ));
    lines.push(format!(
        "           clients: at most {} connections, served by {}",
        p.max_connections,
        match p.workers {
            Some(1) => "1 thread".to_owned(),
            Some(n) => format!("{n} threads"),
            None => "one thread per CPU core".to_owned(),
        },
    ));
    lines.push(format!(
        "           HTTP/2: {} streams per connection; admin API: {} connections",
        p.http2_max_streams,
        super::ADMIN_MAX_CONNECTIONS
    ));
}

/// `[cluster]`, when set: this instance, its pool and etcd.
fn cluster_lines(config: &Config, lines: &mut Vec<String>) {
    let Some(cluster) = &config.cluster else {
        return;
    };
    lines.push(format!(
        "cluster:   instance {} in pool {}, {} etcd member{}, lease {}",
        cluster.instance,
        cluster.key_prefix,
        cluster.etcd.len(),
        if cluster.etcd.len() == 1 { "" } else { "s" },
        fmt_duration(cluster.lease_ttl)
    ));
    lines.push(
        "           the pool's leader picks the active master; traffic moves once every live instance follows".to_owned(),
    );
}

/// `[upstream_tls]`, when any master is `https://`: how its certificate is checked.
fn upstream_tls_lines(config: &Config, lines: &mut Vec<String>) {
    let tls = &config.upstream_tls;
    let https: Vec<&super::BackendConfig> = config.backends.iter().filter(|b| b.tls).collect();
    if https.is_empty() {
        return;
    }
    if tls.insecure_skip_verify {
        lines.push(
            "TLS:       WARNING: upstream_tls.insecure_skip_verify = true: the masters' certificates are NOT verified (any certificate is accepted)".to_owned(),
        );
    } else {
        let roots = tls.ca_file.as_ref().map_or_else(
            || "the system's CA roots".to_owned(),
            |file| format!("the CAs in {}", file.display()),
        );
        let names: Vec<String> = https
            .iter()
            .map(|b| format!("{} as {}", b.name, b.tls_name(tls)))
            .collect();
        lines.push(format!("TLS:       masters verified against {roots}"));
        lines.push(format!("{:<10} names: {}", "", names.join(", ")));
    }
    if let Some(client) = &tls.client_cert {
        lines.push(format!(
            "{:<10} client certificate {}",
            "",
            client.cert_file.display()
        ));
    }
}

/// The connection caps of the masters: one line when they all share them.
fn backend_limits(config: &Config) -> String {
    let limits = |b: &super::BackendConfig| {
        format!(
            "at most {} connections, {} connecting at once",
            b.max_connections, b.max_connects
        )
    };
    let first = config.backends.first().map(limits).unwrap_or_default();
    if config.backends.iter().all(|b| limits(b) == first) {
        return format!("{:<10} each master: {first}", "");
    }
    let each: Vec<String> = config
        .backends
        .iter()
        .map(|b| format!("{}: {}/{}", b.name, b.max_connections, b.max_connects))
        .collect();
    format!(
        "{:<10} connections/connecting at once: {}",
        "",
        each.join(", ")
    )
}

/// One line per `[[tcp]]`, plus one for what agents are told when that is set.
fn tcp_lines(tcp: &[TcpConfig], lines: &mut Vec<String>) {
    let width = tcp.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for (i, t) in tcp.iter().enumerate() {
        let label = if i == 0 { "tcp:" } else { "" };
        let idle = match t.idle_timeout {
            Some(idle) => format!(", idle {}", fmt_duration(idle)),
            None => String::new(),
        };
        lines.push(format!(
            "{label:<10} {:<width$}  {} -> active master:{}{idle}, max {}",
            t.name, t.listen, t.backend_port, t.max_connections
        ));
        if t.advertise_host.is_some() || t.advertise_port.is_some() {
            let host = t.advertise_host.as_deref().unwrap_or("<client's Host>");
            let port = t.advertise_port.unwrap_or(t.listen.port());
            lines.push(format!(
                "{:<10} {:<width$}  agents are told to dial {host}:{port}",
                "", ""
            ));
        }
    }
}

/// A timeout that may be disabled.
fn fmt_optional(timeout: Option<Duration>) -> String {
    timeout.map_or_else(|| "off".to_string(), fmt_duration)
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn summary_detection_time_survives_overflow() {
        let text = r#"
[proxy]
listen = "0.0.0.0:8080"
[admin]
listen = "127.0.0.1:8404"
[health]
interval = "500000000000000000s"
timeout = "400000000000000000s"
fall = 4000000000
[[backend]]
name = "a"
url = "http://a"
"#;
        let config = Config::parse(text, "t").unwrap_or_else(|e| panic!("{e}"));
        assert!(config.summary().contains("within ~a very long time"));
    }
}
