//! The config file contract: the shipped example parses, and every mistake a user
//! can make is reported as `file:line: key: message` with the right line and key.

use std::net::SocketAddr;
use std::time::Duration;

use jenkins_ha_proxy::config::{self, Config, ConfigError, Failback, TcpConfig};

const FILE: &str = "test.toml";

/// A complete, valid config; each error test changes one thing in it.
const BASE: &str = r#"[proxy]
listen = "0.0.0.0:8080"
connect_timeout = "2s"

[admin]
listen = "127.0.0.1:8404"

[health]
path = "/login"
interval = "2s"
timeout = "1s"
rise = 2
fall = 3

[failover]
failback = "never"

[[backend]]
name = "master-a"
url = "http://10.0.0.11:8080"

[[backend]]
name = "master-b"
url = "http://10.0.0.12:8080"
"#;

/// BASE with `from` (which must occur exactly once) replaced by `to`.
fn with(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "{from:?} must occur once in BASE"
    );
    BASE.replacen(from, to, 1)
}

fn parse(text: &str) -> Config {
    Config::parse(text, FILE).unwrap_or_else(|e| panic!("expected a valid config, got: {e}"))
}

/// 1-based number of the only line of `text` containing `marker`.
fn line_with(text: &str, marker: &str) -> usize {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(marker))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "{marker:?} must be on exactly one line");
    lines[0]
}

/// 1-based number of the only line of `text` equal to `line`.
fn line_exactly(text: &str, line: &str) -> usize {
    let found: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == line)
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(found.len(), 1, "{line:?} must be exactly one line");
    found[0]
}

/// Asserts that `text` is rejected at `key`, on the line containing `marker`
/// (line 0 when `marker` is None), with a message containing `says`.
fn rejects(text: &str, key: &str, marker: Option<&str>, says: &str) -> String {
    let want_line = marker.map_or(0, |m| line_with(text, m));
    let err = Config::parse(text, FILE).expect_err("config should be rejected");
    let shown = err.to_string();
    match &err {
        ConfigError::Invalid {
            file,
            line,
            key: got_key,
            message,
        } => {
            assert_eq!(file, FILE, "{shown}");
            assert_eq!(*line, want_line, "wrong line in: {shown}");
            assert_eq!(got_key, key, "wrong key in: {shown}");
            assert!(
                message.contains(says),
                "message should say {says:?}: {shown}"
            );
        }
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
    let prefix = format!("{FILE}:{want_line}: {key}: ");
    assert!(
        shown.starts_with(&prefix),
        "{shown:?} should start with {prefix:?}"
    );
    shown
}

// ----- accepted configs -----

#[test]
fn shipped_example_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/jenkins-ha-proxy.toml");
    let text = std::fs::read_to_string(path).expect("shipped example is readable");
    let config = Config::parse(&text, path).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(
        config.proxy.listen,
        "0.0.0.0:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        config.admin.listen,
        "127.0.0.1:8404".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        config.proxy.connect_timeout,
        config::DEFAULT_CONNECT_TIMEOUT
    );
    assert_eq!(
        config.proxy.pool_idle_timeout,
        config::DEFAULT_POOL_IDLE_TIMEOUT
    );
    assert_eq!(
        config.proxy.header_read_timeout,
        config::DEFAULT_HEADER_READ_TIMEOUT
    );
    assert_eq!(
        config.proxy.shutdown_timeout,
        config::DEFAULT_SHUTDOWN_TIMEOUT
    );
    assert_eq!(config.proxy.retry_after, config::DEFAULT_RETRY_AFTER);
    assert_eq!(config.health.path, config::DEFAULT_HEALTH_PATH);
    assert_eq!(config.health.interval, config::DEFAULT_HEALTH_INTERVAL);
    assert_eq!(config.health.timeout, config::DEFAULT_HEALTH_TIMEOUT);
    assert_eq!(config.health.rise, config::DEFAULT_RISE);
    assert_eq!(config.health.fall, config::DEFAULT_FALL);
    assert_eq!(config.failover.failback, Failback::Never);

    let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["master-a", "master-b"]);
    let urls: Vec<&str> = config.backends.iter().map(|b| b.url.as_str()).collect();
    assert_eq!(urls, ["http://10.0.0.11:8080", "http://10.0.0.12:8080"]);
    assert_eq!(config.backends[1].host, "10.0.0.12");
    assert_eq!(config.backends[1].port, 8080);

    assert_eq!(
        config.proxy.tunnel_idle_timeout,
        Some(config::DEFAULT_TUNNEL_IDLE_TIMEOUT)
    );
    assert_eq!(config.proxy.response_idle_timeout, None);
    assert_eq!(config.failover.drain_timeout, config::DEFAULT_DRAIN_TIMEOUT);
    assert!(
        config.tcp.is_empty(),
        "the [[tcp]] block ships commented out"
    );
}

/// The example's commented-out `[[tcp]]` block: lines starting with `#` directly
/// followed by something other than a space are config lines, not explanations.
#[test]
fn shipped_example_tcp_block_parses_when_uncommented() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/jenkins-ha-proxy.toml");
    let text = std::fs::read_to_string(path).expect("shipped example is readable");
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with(' ') => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(
        uncommented, text,
        "the example has a commented [[tcp]] block"
    );
    let config = Config::parse(&uncommented, path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.upstream_tls,
        config::UpstreamTlsConfig {
            ca_file: Some("/etc/jenkins-ha-proxy/masters-ca.pem".into()),
            server_name: Some("jenkins.example.com".to_string()),
            client_cert: Some(config::ClientCertFiles {
                cert_file: "/etc/jenkins-ha-proxy/client.pem".into(),
                key_file: "/etc/jenkins-ha-proxy/client.key".into(),
            }),
            insecure_skip_verify: false,
        },
        "the example's commented [upstream_tls] block"
    );
    assert_eq!(
        config.tcp,
        [TcpConfig {
            name: "agents".to_string(),
            listen: "0.0.0.0:50000".parse().unwrap(),
            backend_port: 50000,
            advertise_host: Some("ci.example.com".to_string()),
            advertise_port: Some(50000),
            idle_timeout: Some(config::DEFAULT_TCP_IDLE_TIMEOUT),
            max_connections: config::DEFAULT_TCP_MAX_CONNECTIONS,
        }]
    );
}

#[test]
fn optional_tables_and_keys_take_the_documented_defaults() {
    let text = r#"
[proxy]
listen = "[::]:80"
[admin]
listen = "[::1]:8404"
[[backend]]
name = "only"
url = "http://jenkins.example"
"#;
    let config = parse(text);
    assert_eq!(
        config.proxy.listen,
        "[::]:80".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        config.proxy.connect_timeout,
        config::DEFAULT_CONNECT_TIMEOUT
    );
    assert_eq!(config.proxy.retry_after, config::DEFAULT_RETRY_AFTER);
    assert_eq!(config.health.path, "/login");
    assert_eq!(config.health.interval, Duration::from_secs(2));
    assert_eq!(config.health.timeout, Duration::from_secs(1));
    assert_eq!((config.health.rise, config.health.fall), (2, 3));
    assert_eq!(config.failover.failback, config::DEFAULT_FAILBACK);
    assert_eq!(config.backends[0].url, "http://jenkins.example:80");
    assert_eq!(config.backends[0].port, 80);
    assert_eq!(
        config.proxy.tunnel_idle_timeout,
        Some(Duration::from_secs(300))
    );
    assert_eq!(config.proxy.response_idle_timeout, None);
    assert_eq!(config.failover.drain_timeout, Duration::from_secs(10));
    assert!(config.tcp.is_empty());
}

#[test]
fn values_are_read_and_urls_normalised() {
    let text = with("failback = \"never\"", "failback = \"auto\"")
        .replace("interval = \"2s\"", "interval = \"1m\"")
        .replace("timeout = \"1s\"", "timeout = \"500ms\"")
        .replace("http://10.0.0.11:8080", "HTTP://[2001:db8::1]:8080/");
    let config = parse(&text);
    assert_eq!(config.failover.failback, Failback::Auto);
    assert_eq!(config.health.interval, Duration::from_secs(60));
    assert_eq!(config.health.timeout, Duration::from_millis(500));
    let a = &config.backends[0];
    assert_eq!(a.url, "http://[2001:db8::1]:8080");
    assert_eq!(a.host, "2001:db8::1");
    assert_eq!(a.authority(), "[2001:db8::1]:8080");
}

#[test]
fn listeners_on_different_ports_or_addresses_do_not_clash() {
    let other_ip = with("listen = \"0.0.0.0:8080\"", "listen = \"10.0.0.1:8080\"")
        .replace("127.0.0.1:8404", "127.0.0.1:8080");
    assert_eq!(parse(&other_ip).admin.listen.port(), 8080);
    // Port 0 means "any free port": two of them never collide.
    let ephemeral = with("0.0.0.0:8080", "127.0.0.1:0").replace("127.0.0.1:8404", "127.0.0.1:0");
    assert_eq!(parse(&ephemeral).proxy.listen.port(), 0);
}

#[test]
fn summary_lists_listeners_masters_in_order_and_timings() {
    let summary = parse(BASE).summary();
    assert!(
        summary.contains("proxy 0.0.0.0:8080, admin 127.0.0.1:8404"),
        "{summary}"
    );
    let a = summary.find("1. master-a").expect("first master listed");
    let b = summary.find("2. master-b").expect("second master listed");
    assert!(a < b, "{summary}");
    assert_eq!(summary.matches("(preferred)").count(), 1, "{summary}");
    let preferred_line = summary.lines().find(|l| l.contains("(preferred)")).unwrap();
    assert!(
        preferred_line.contains("master-a  http://10.0.0.11:8080"),
        "{summary}"
    );
    assert!(
        summary.contains("GET /login every 2s, timeout 1s"),
        "{summary}"
    );
    assert!(
        summary.contains("up after 2 good probes in a row, down after 3 failed ones"),
        "{summary}"
    );
    assert!(
        summary.contains("confirmed within ~5s (1s x fall 3 + 2s)"),
        "{summary}"
    );
    assert!(summary.contains("failback:  never"), "{summary}");
    assert!(
        summary.contains("connect timeout 2s, pool idle 3s, header read 30s, shutdown 10s"),
        "{summary}"
    );
    assert!(summary.contains("Retry-After 5s"), "{summary}");
    assert!(
        summary.contains("clients: at most 20000 connections, served by one thread per CPU core"),
        "{summary}"
    );
    assert!(
        summary.contains("idle limits: WebSocket tunnels 5m, streamed responses off"),
        "{summary}"
    );
    assert!(
        summary.contains("connections to the demoted master close after 10s"),
        "{summary}"
    );
    assert!(!summary.contains("tcp:"), "no [[tcp]], no line: {summary}");
    assert!(summary.ends_with('\n'), "ends with a newline: {summary:?}");
    assert!(summary.lines().count() <= 24, "one screen: {summary}");
    assert!(
        summary.lines().all(|l| l.len() <= 80),
        "fits 80 columns: {summary}"
    );
}

/// BASE plus one `[[tcp]]` listener with every key set; the tcp tests change one
/// thing in it.
const TCP: &str = r#"
[[tcp]]
name = "agents"
listen = "0.0.0.0:50000"
backend_port = 50000
advertise_host = "ci.example.com"
advertise_port = 50001
idle_timeout = "10m"
"#;

fn tcp_base() -> String {
    format!("{BASE}{TCP}")
}

/// `tcp_base()` with `from` (which must occur exactly once) replaced by `to`.
fn with_tcp(from: &str, to: &str) -> String {
    let base = tcp_base();
    assert_eq!(
        base.matches(from).count(),
        1,
        "{from:?} must occur once in tcp_base()"
    );
    base.replacen(from, to, 1)
}

#[test]
fn tcp_listeners_are_read_in_file_order() {
    let second = "\n[[tcp]]\nname = \"cli\"\nlisten = \"127.0.0.1:50001\"\nbackend_port = 50001\n";
    let config = parse(&format!("{}{second}", tcp_base()));
    assert_eq!(
        config.tcp,
        [
            TcpConfig {
                name: "agents".to_string(),
                listen: "0.0.0.0:50000".parse().unwrap(),
                backend_port: 50000,
                advertise_host: Some("ci.example.com".to_string()),
                advertise_port: Some(50001),
                idle_timeout: Some(Duration::from_secs(600)),
                max_connections: config::DEFAULT_TCP_MAX_CONNECTIONS,
            },
            TcpConfig {
                name: "cli".to_string(),
                listen: "127.0.0.1:50001".parse().unwrap(),
                backend_port: 50001,
                advertise_host: None,
                advertise_port: None,
                idle_timeout: Some(config::DEFAULT_TCP_IDLE_TIMEOUT),
                max_connections: config::DEFAULT_TCP_MAX_CONNECTIONS,
            },
        ]
    );
}

#[test]
fn advertise_host_may_be_a_bare_ip() {
    let text = with_tcp("\"ci.example.com\"", "\"2001:db8::1\"");
    assert_eq!(
        parse(&text).tcp[0].advertise_host.as_deref(),
        Some("2001:db8::1")
    );
}

#[test]
fn disable_able_timeouts_accept_off_and_zero() {
    let timeouts = |tunnel: &str, response: &str, idle: &str| {
        let text = with_tcp(
            "connect_timeout = \"2s\"",
            &format!(
                "connect_timeout = \"2s\"\ntunnel_idle_timeout = \"{tunnel}\"\nresponse_idle_timeout = \"{response}\""
            ),
        )
        .replace("\nidle_timeout = \"10m\"", &format!("\nidle_timeout = \"{idle}\""));
        let config = parse(&text);
        (
            config.proxy.tunnel_idle_timeout,
            config.proxy.response_idle_timeout,
            config.tcp[0].idle_timeout,
        )
    };
    assert_eq!(timeouts("off", "off", "off"), (None, None, None));
    assert_eq!(timeouts("0s", "0ms", "0s"), (None, None, None));
    assert_eq!(timeouts("OFF", " off ", "Off"), (None, None, None));
    let (min, ten) = (Duration::from_secs(60), Duration::from_secs(600));
    assert_eq!(
        timeouts("1m", "10m", "1m"),
        (Some(min), Some(ten), Some(min))
    );
}

#[test]
fn drain_timeout_may_be_zero() {
    let text = with(
        "failback = \"never\"",
        "failback = \"never\"\ndrain_timeout = \"0s\"",
    );
    let config = parse(&text);
    assert_eq!(config.failover.drain_timeout, Duration::ZERO);
    assert!(
        config
            .summary()
            .contains("connections to the demoted master close at once"),
        "{}",
        config.summary()
    );
    let text = with(
        "failback = \"never\"",
        "failback = \"never\"\ndrain_timeout = \"1m 30s\"",
    );
    assert_eq!(parse(&text).failover.drain_timeout, Duration::from_secs(90));
}

#[test]
fn tcp_listeners_that_do_not_clash() {
    // Same port as the proxy, both on specific, different addresses: no clash.
    let text = with_tcp("0.0.0.0:8080", "10.0.0.1:8080").replace("0.0.0.0:50000", "10.0.0.2:8080");
    assert_eq!(parse(&text).tcp[0].listen.port(), 8080);
    // Port 0 never clashes, whatever the address.
    let text = with("0.0.0.0:8080", "0.0.0.0:0").replace("127.0.0.1:8404", "127.0.0.1:0");
    let text = format!("{text}{TCP}{}", TCP.replace("agents", "cli"))
        .replace("0.0.0.0:50000", "0.0.0.0:0");
    let config = parse(&text);
    assert_eq!(config.tcp.len(), 2);
}

#[test]
fn summary_lists_tcp_listeners_and_what_agents_are_told() {
    let second = "\n[[tcp]]\nname = \"cli\"\nlisten = \"127.0.0.1:50001\"\nbackend_port = 50001\n";
    let summary = parse(&format!("{}{second}", tcp_base())).summary();
    assert!(
        summary.contains(
            "tcp:       agents  0.0.0.0:50000 -> active master:50000, idle 10m, max 2000\n"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("agents are told to dial ci.example.com:50001\n"),
        "{summary}"
    );
    assert!(
        summary.contains(
            "           cli     127.0.0.1:50001 -> active master:50001, idle 15m, max 2000\n"
        ),
        "{summary}"
    );
    assert_eq!(
        summary.matches("agents are told").count(),
        1,
        "only where advertise_* is set: {summary}"
    );
    assert!(summary.lines().count() <= 24, "one screen: {summary}");
    assert!(
        summary.lines().all(|l| l.len() <= 80),
        "fits 80 columns: {summary}"
    );
}

// ----- TOML-level errors: syntax, unknown keys, wrong types -----

#[test]
fn unknown_top_level_key() {
    // At the very top: after a [table] header it would belong to that table.
    let text = format!("log_level = \"debug\"\n{BASE}");
    rejects(
        &text,
        "log_level",
        Some("log_level"),
        "valid top-level keys: proxy, admin",
    );
}

#[test]
fn misspelt_table_name() {
    let text = with("[failover]", "[failovr]");
    rejects(
        &text,
        "failovr",
        Some("[failovr]"),
        "did you mean `failover`?",
    );
}

#[test]
fn unknown_key_in_health_names_table_and_suggests() {
    let text = with("interval = \"2s\"", "intervall = \"2s\"");
    let shown = rejects(
        &text,
        "health.intervall",
        Some("intervall"),
        "did you mean `interval`?",
    );
    assert!(
        shown.contains("valid keys in [health]: path, interval, timeout, rise, fall"),
        "{shown}"
    );
}

#[test]
fn unknown_key_in_second_backend() {
    let text = with(
        "url = \"http://10.0.0.12:8080\"",
        "uri = \"http://10.0.0.12:8080\"",
    );
    rejects(
        &text,
        "backend[1].uri",
        Some("uri ="),
        "valid keys in [[backend]]: name, url",
    );
}

#[test]
fn wrong_type_for_a_count() {
    let text = with("rise = 2", "rise = \"2\"");
    rejects(
        &text,
        "health.rise",
        Some("rise"),
        "invalid type: string \"2\", expected a whole number",
    );
}

#[test]
fn duration_written_as_a_number() {
    let text = with("connect_timeout = \"2s\"", "connect_timeout = 2");
    rejects(
        &text,
        "proxy.connect_timeout",
        Some("connect_timeout"),
        "durations are quoted strings",
    );
}

#[test]
fn single_bracket_backend() {
    let text = r#"[proxy]
listen = "0.0.0.0:8080"
[admin]
listen = "127.0.0.1:8404"
[backend]
name = "master-a"
"#;
    rejects(
        text,
        "backend",
        Some("[backend]"),
        "[[backend]] table (double brackets)",
    );
}

#[test]
fn toml_syntax_error() {
    let text = with("timeout = \"1s\"", "timeout = \"1s");
    rejects(&text, "health.timeout", Some("1s"), "TOML syntax error");
}

#[test]
fn table_defined_twice() {
    let text = format!("{BASE}\n[admin] # again\nlisten = \"127.0.0.1:9000\"\n");
    rejects(
        &text,
        "admin",
        Some("# again"),
        "`admin` is defined more than once",
    );
}

// ----- [proxy] and [admin] -----

#[test]
fn missing_proxy_table() {
    let text = with(
        "[proxy]\nlisten = \"0.0.0.0:8080\"\nconnect_timeout = \"2s\"\n",
        "",
    );
    rejects(&text, "proxy", None, "missing [proxy] table");
}

#[test]
fn missing_admin_table() {
    let text = with("[admin]\nlisten = \"127.0.0.1:8404\"\n", "");
    rejects(&text, "admin", None, "missing [admin] table");
}

#[test]
fn missing_proxy_listen_points_at_the_table() {
    let text = with("listen = \"0.0.0.0:8080\"\n", "");
    rejects(
        &text,
        "proxy.listen",
        Some("[proxy]"),
        "missing required key; add listen = ",
    );
}

#[test]
fn missing_admin_listen_points_at_the_table() {
    let text = with("listen = \"127.0.0.1:8404\"\n", "");
    rejects(
        &text,
        "admin.listen",
        Some("[admin]"),
        "missing required key",
    );
}

#[test]
fn listen_must_be_ip_and_port() {
    let text = with("0.0.0.0:8080", "localhost:8080");
    rejects(&text, "proxy.listen", Some("localhost"), "use IP:port");
    let text = with("127.0.0.1:8404", "127.0.0.1");
    rejects(&text, "admin.listen", Some("\"127.0.0.1\""), "use IP:port");
}

#[test]
fn proxy_and_admin_on_the_same_address_clash() {
    let text = with("127.0.0.1:8404\"", "0.0.0.0:8080\" # admin");
    let shown = rejects(&text, "admin.listen", Some("# admin"), "proxy.listen");
    assert!(
        shown.contains("(line 2)"),
        "names the proxy.listen line: {shown}"
    );
}

#[test]
fn wildcard_proxy_clashes_with_admin_on_the_same_port() {
    let text = with("127.0.0.1:8404", "127.0.0.1:8080");
    rejects(
        &text,
        "admin.listen",
        Some("127.0.0.1:8080"),
        "clashes with proxy.listen 0.0.0.0:8080",
    );
}

#[test]
fn wildcard_admin_clashes_with_proxy_on_the_same_port() {
    let text = with("0.0.0.0:8080", "10.1.2.3:8404").replace("127.0.0.1:8404\"", "[::]:8404\"");
    rejects(
        &text,
        "admin.listen",
        Some("[::]:8404"),
        "both would bind port 8404",
    );
}

#[test]
fn zero_connect_timeout() {
    let text = with("connect_timeout = \"2s\"", "connect_timeout = \"0s\"");
    rejects(
        &text,
        "proxy.connect_timeout",
        Some("connect_timeout"),
        "must be greater than zero",
    );
}

#[test]
fn bad_duration_string() {
    let text = with(
        "connect_timeout = \"2s\"",
        "connect_timeout = \"2s\"\nretry_after = \"5 parsecs\"",
    );
    rejects(
        &text,
        "proxy.retry_after",
        Some("parsecs"),
        "e.g. \"2s\", \"500ms\" or \"1m\"",
    );
}

// ----- [health] -----

#[test]
fn health_timeout_not_shorter_than_interval() {
    let text = with("timeout = \"1s\"", "timeout = \"3s\"");
    rejects(
        &text,
        "health.timeout",
        Some("3s"),
        "health.timeout (3s) must be shorter than health.interval (2s)",
    );
    // Equal is not shorter either.
    let text = with("interval = \"2s\"", "interval = \"1s\"");
    rejects(
        &text,
        "health.timeout",
        Some("timeout = \"1s"),
        "health.timeout (1s) must be shorter than health.interval (1s)",
    );
}

#[test]
fn short_interval_with_default_timeout_blames_the_interval() {
    let text = with("timeout = \"1s\"\n", "").replace("interval = \"2s\"", "interval = \"500ms\"");
    rejects(
        &text,
        "health.interval",
        Some("500ms"),
        "must be shorter than health.interval",
    );
}

#[test]
fn zero_interval() {
    let text = with("interval = \"2s\"", "interval = \"0ms\"");
    rejects(
        &text,
        "health.interval",
        Some("interval"),
        "must be greater than zero",
    );
}

#[test]
fn zero_timeout() {
    let text = with("timeout = \"1s\"", "timeout = \"0s\"");
    rejects(
        &text,
        "health.timeout",
        Some("0s"),
        "must be greater than zero",
    );
}

#[test]
fn zero_rise() {
    let text = with("rise = 2", "rise = 0");
    rejects(&text, "health.rise", Some("rise"), "must be at least 1");
}

#[test]
fn zero_or_negative_fall() {
    rejects(
        &with("fall = 3", "fall = 0"),
        "health.fall",
        Some("fall"),
        "must be at least 1",
    );
    rejects(
        &with("fall = 3", "fall = -2"),
        "health.fall",
        Some("fall"),
        "got -2",
    );
}

#[test]
fn health_path_must_start_with_slash() {
    let text = with("path = \"/login\"", "path = \"login\"");
    rejects(&text, "health.path", Some("path"), "starting with '/'");
}

// ----- [failover] -----

#[test]
fn unknown_failback_policy() {
    let text = with("failback = \"never\"", "failback = \"always\"");
    rejects(
        &text,
        "failover.failback",
        Some("always"),
        "allowed values: \"never\"",
    );
}

// ----- [[backend]] -----

#[test]
fn zero_backends() {
    let text = &BASE[..BASE.find("[[backend]]").unwrap()];
    rejects(
        text,
        "backend",
        None,
        "add at least one [[backend]] with name and url",
    );
}

#[test]
fn duplicate_backend_name_points_at_the_second() {
    let text = with("name = \"master-b\"", "name = \"master-a\" # again");
    let first = line_with(BASE, "master-a");
    let shown = rejects(&text, "backend[1].name", Some("# again"), "duplicate name");
    assert!(
        shown.contains(&format!("on line {first}")),
        "names the first one's line: {shown}"
    );
}

#[test]
fn empty_backend_name() {
    let text = with("name = \"master-b\"", "name = \"\"");
    rejects(
        &text,
        "backend[1].name",
        Some("name = \"\""),
        "must not be empty",
    );
}

#[test]
fn backend_name_with_unsafe_characters() {
    let text = with("name = \"master-a\"", "name = \"master a\"");
    rejects(
        &text,
        "backend[0].name",
        Some("master a"),
        "use only letters, digits, '.', '_' and '-'",
    );
}

#[test]
fn backend_without_url_points_at_its_header() {
    let text = with("url = \"http://10.0.0.12:8080\"\n", "");
    let text = text.replacen("[[backend]]", "[[backend]] # a", 1).replacen(
        "[[backend]]\n",
        "[[backend]] # b\n",
        1,
    );
    rejects(&text, "backend[1].url", Some("# b"), "missing required key");
}

/// Asserts that `url` as the second backend's url is rejected, saying `says`.
fn rejects_url(url: &str, says: &str) -> String {
    let text = with("http://10.0.0.12:8080", url);
    rejects(&text, "backend[1].url", Some(url), says)
}

#[test]
fn backend_url_must_parse() {
    rejects_url("http://jenkins b", "not a valid URL");
}

#[test]
fn backend_url_https_is_accepted_with_port_443_by_default() {
    let text = with("http://10.0.0.12:8080", "HTTPS://ci-b.example.com");
    let config = Config::parse(&text, "test.toml").expect("valid");
    let backend = &config.backends[1];
    assert!(backend.tls);
    assert_eq!(backend.url, "https://ci-b.example.com:443");
    assert_eq!(backend.port, 443);
    assert!(!config.backends[0].tls);
}

#[test]
fn backend_url_needs_http_scheme() {
    rejects_url("10.0.0.12:8080", "missing scheme");
    rejects_url("ftp://10.0.0.12", "only http and https are supported");
}

#[test]
fn backend_url_needs_a_host() {
    rejects_url("http://:8080", "missing host");
}

#[test]
fn backend_url_port_must_be_valid() {
    rejects_url("http://10.0.0.12:65536", "invalid port");
    rejects_url("http://10.0.0.12:0", "port 0");
}

#[test]
fn backend_url_must_not_have_a_path() {
    rejects_url(
        "http://10.0.0.12:8080/jenkins",
        "set Jenkins' --prefix on both masters",
    );
}

#[test]
fn backend_url_must_not_have_a_query_or_fragment() {
    rejects_url("http://10.0.0.12:8080/?a=b", "query");
    rejects_url("http://10.0.0.12:8080#top", "fragment");
}

#[test]
fn backend_url_must_not_have_credentials_and_the_error_does_not_echo_them() {
    let shown = rejects_url("http://admin:s3cret@10.0.0.12:8080", "user:password@");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn duplicate_backend_endpoint_even_when_spelt_differently() {
    let text = with("http://10.0.0.12:8080", "HTTP://10.0.0.11:8080/");
    let shown = rejects(
        &text,
        "backend[1].url",
        Some("HTTP://"),
        "already used by backend[0]",
    );
    assert!(
        shown.contains(&format!("(line {})", line_with(BASE, "10.0.0.11"))),
        "{shown}"
    );
}

#[test]
fn duplicate_backend_endpoint_with_default_port_and_ipv6_spelling() {
    let text = with("http://10.0.0.11:8080", "http://[::1]")
        .replace("http://10.0.0.12:8080", "http://[0:0::1]:80");
    rejects(
        &text,
        "backend[1].url",
        Some("[0:0::1]"),
        "already used by backend[0]",
    );
}

// ----- new timeouts -----

#[test]
fn tunnel_idle_timeout_bad_duration_mentions_off() {
    let text = with(
        "connect_timeout = \"2s\"",
        "connect_timeout = \"2s\"\ntunnel_idle_timeout = \"5 minutes please\"",
    );
    rejects(
        &text,
        "proxy.tunnel_idle_timeout",
        Some("please"),
        "write a number with a unit, e.g. \"2s\", \"500ms\" or \"1m\" (or \"off\" to disable)",
    );
}

#[test]
fn response_idle_timeout_as_a_number() {
    let text = with(
        "connect_timeout = \"2s\"",
        "connect_timeout = \"2s\"\nresponse_idle_timeout = 600",
    );
    rejects(
        &text,
        "proxy.response_idle_timeout",
        Some("response_idle_timeout"),
        "durations are quoted strings with a unit, e.g. \"2s\", \"500ms\" or \"1m\" (or \"off\" to disable)",
    );
}

#[test]
fn misspelt_tunnel_idle_timeout() {
    let text = with(
        "connect_timeout = \"2s\"",
        "connect_timeout = \"2s\"\ntunnel_idle_timout = \"5m\"",
    );
    rejects(
        &text,
        "proxy.tunnel_idle_timout",
        Some("tunnel_idle_timout"),
        "did you mean `tunnel_idle_timeout`?",
    );
}

#[test]
fn drain_timeout_cannot_be_turned_off() {
    let text = with(
        "failback = \"never\"",
        "failback = \"never\"\ndrain_timeout = \"off\"",
    );
    rejects(
        &text,
        "failover.drain_timeout",
        Some("drain_timeout"),
        "cannot be turned off; write a duration with a unit, e.g. \"10s\"",
    );
}

#[test]
fn drain_timeout_bad_duration() {
    let text = with(
        "failback = \"never\"",
        "failback = \"never\"\ndrain_timeout = \"10 secs later\"",
    );
    let shown = rejects(
        &text,
        "failover.drain_timeout",
        Some("drain_timeout"),
        "invalid duration",
    );
    assert!(!shown.contains("\"off\""), "drain cannot be off: {shown}");
}

#[test]
fn connect_timeout_cannot_be_turned_off() {
    let text = with("connect_timeout = \"2s\"", "connect_timeout = \"off\"");
    rejects(
        &text,
        "proxy.connect_timeout",
        Some("connect_timeout"),
        "cannot be turned off",
    );
}

// ----- [[tcp]] -----

#[test]
fn unknown_key_in_tcp_names_table_and_suggests() {
    let text = with_tcp("advertise_host =", "advertize_host =");
    let shown = rejects(
        &text,
        "tcp[0].advertize_host",
        Some("advertize_host"),
        "did you mean `advertise_host`?",
    );
    assert!(
        shown.contains(
            "valid keys in [[tcp]]: name, listen, backend_port, advertise_host, advertise_port, idle_timeout"
        ),
        "{shown}"
    );
}

#[test]
fn single_bracket_tcp() {
    let text = format!("{BASE}\n[tcp]\nname = \"agents\"\n");
    rejects(
        &text,
        "tcp",
        Some("[tcp]"),
        "write each listener as its own [[tcp]] table (double brackets)",
    );
}

#[test]
fn tcp_missing_required_keys_point_at_the_header() {
    let marked = |text: String| text.replace("\n[[tcp]]\n", "\n[[tcp]] # here\n");
    for (line, key) in [
        ("name = \"agents\"\n", "tcp[0].name"),
        ("listen = \"0.0.0.0:50000\"\n", "tcp[0].listen"),
        ("backend_port = 50000\n", "tcp[0].backend_port"),
    ] {
        rejects(
            &marked(with_tcp(line, "")),
            key,
            Some("# here"),
            "missing required key; every [[tcp]] needs name (e.g. \"agents\"), listen (e.g. \"0.0.0.0:50000\") and backend_port (e.g. 50000)",
        );
    }
}

#[test]
fn tcp_name_must_be_valid() {
    rejects(
        &with_tcp("name = \"agents\"", "name = \"\""),
        "tcp[0].name",
        Some("name = \"\""),
        "must not be empty; use a short label such as \"agents\"",
    );
    rejects(
        &with_tcp("name = \"agents\"", "name = \"inbound agents\""),
        "tcp[0].name",
        Some("inbound agents"),
        "use only letters, digits, '.', '_' and '-'",
    );
}

#[test]
fn duplicate_tcp_name_points_at_the_second() {
    let second =
        "\n[[tcp]]\nname = \"agents\" # again\nlisten = \"0.0.0.0:50001\"\nbackend_port = 50001\n";
    let text = format!("{}{second}", tcp_base());
    let first = line_exactly(&text, "name = \"agents\"");
    let shown = rejects(
        &text,
        "tcp[1].name",
        Some("# again"),
        "duplicate name \"agents\" (first used by tcp[0]",
    );
    assert!(
        shown.contains(&format!("on line {first})")),
        "names the first one's line: {shown}"
    );
}

#[test]
fn tcp_listen_must_be_ip_and_port() {
    let text = with_tcp("0.0.0.0:50000", "agents.example.com:50000");
    rejects(
        &text,
        "tcp[0].listen",
        Some("agents.example.com"),
        "use IP:port, e.g. \"0.0.0.0:50000\"",
    );
}

#[test]
fn tcp_backend_port_zero() {
    rejects(
        &with_tcp("backend_port = 50000", "backend_port = 0"),
        "tcp[0].backend_port",
        Some("backend_port"),
        "port 0 cannot be connected to; use the fixed TCP port of the masters' inbound agent listener",
    );
}

#[test]
fn tcp_backend_port_out_of_range() {
    for bad in ["65536", "-1"] {
        rejects(
            &with_tcp("backend_port = 50000", &format!("backend_port = {bad}")),
            "tcp[0].backend_port",
            Some("backend_port"),
            &format!("{bad} is not a port number; use a number from 1 to 65535"),
        );
    }
}

#[test]
fn tcp_backend_port_as_a_string() {
    rejects(
        &with_tcp("backend_port = 50000", "backend_port = \"50000\""),
        "tcp[0].backend_port",
        Some("backend_port"),
        "expected a whole number",
    );
}

#[test]
fn tcp_advertise_port_zero_or_out_of_range() {
    rejects(
        &with_tcp("advertise_port = 50001", "advertise_port = 0"),
        "tcp[0].advertise_port",
        Some("advertise_port"),
        "leave advertise_port out to advertise the listener's own port",
    );
    rejects(
        &with_tcp("advertise_port = 50001", "advertise_port = 70000"),
        "tcp[0].advertise_port",
        Some("advertise_port"),
        "use a number from 1 to 65535",
    );
}

/// Asserts that `host` as advertise_host is rejected, saying `says`.
fn rejects_advertise_host(host: &str, says: &str) {
    let text = with_tcp(
        "advertise_host = \"ci.example.com\"",
        &format!("advertise_host = \"{host}\""),
    );
    rejects(&text, "tcp[0].advertise_host", Some("advertise_host"), says);
}

#[test]
fn tcp_advertise_host_must_not_be_empty() {
    rejects_advertise_host("", "must not be empty; leave advertise_host out");
}

#[test]
fn tcp_advertise_host_without_scheme_port_or_path() {
    rejects_advertise_host("https://ci.example.com", "has a scheme");
    rejects_advertise_host(
        "ci.example.com:50000",
        "has a port; write only the host here and the port as advertise_port = 50000",
    );
    rejects_advertise_host("ci.example.com/jenkins", "without a path");
    rejects_advertise_host("[2001:db8::1]", "without brackets");
    rejects_advertise_host("ci example", "contains ' '");
}

#[test]
fn tcp_idle_timeout_bad_duration() {
    rejects(
        &with_tcp("idle_timeout = \"10m\"", "idle_timeout = \"never\""),
        "tcp[0].idle_timeout",
        Some("idle_timeout"),
        "(or \"off\" to disable)",
    );
}

#[test]
fn tcp_listen_clashes_with_wildcard_proxy() {
    let text = with_tcp("0.0.0.0:50000", "127.0.0.1:8080");
    let shown = rejects(
        &text,
        "tcp[0].listen",
        Some("127.0.0.1:8080"),
        "127.0.0.1:8080 clashes with proxy.listen 0.0.0.0:8080 (line 2): both would bind port 8080; give tcp[0].listen its own port",
    );
    assert!(!shown.contains("e.g."), "{shown}");
}

#[test]
fn wildcard_tcp_listen_clashes_with_admin() {
    let text = with_tcp("0.0.0.0:50000", "[::]:8404");
    rejects(
        &text,
        "tcp[0].listen",
        Some("[::]:8404"),
        &format!(
            "clashes with admin.listen 127.0.0.1:8404 (line {})",
            line_with(BASE, "127.0.0.1:8404")
        ),
    );
}

#[test]
fn two_tcp_listeners_on_the_same_address_clash() {
    let second =
        "\n[[tcp]]\nname = \"cli\"\nlisten = \"0.0.0.0:50000\" # again\nbackend_port = 50001\n";
    let text = format!("{}{second}", tcp_base());
    let first = line_exactly(&text, "listen = \"0.0.0.0:50000\"");
    rejects(
        &text,
        "tcp[1].listen",
        Some("# again"),
        &format!("clashes with tcp[0].listen 0.0.0.0:50000 (line {first})"),
    );
}

#[test]
fn workers_default_to_one_per_core_and_take_a_count() {
    assert_eq!(parse(BASE).proxy.workers, None, "absent: one per CPU core");
    let text = with(
        "connect_timeout = \"2s\"",
        "connect_timeout = \"2s\"\nworkers = 3",
    );
    let config = parse(&text);
    assert_eq!(config.proxy.workers, Some(3));
    let summary = config.summary();
    assert!(summary.contains("served by 3 threads"), "{summary}");
}

#[test]
fn workers_out_of_range() {
    for bad in ["0", "-2", "5000"] {
        let text = with(
            "connect_timeout = \"2s\"",
            &format!("connect_timeout = \"2s\"\nworkers = {bad}"),
        );
        rejects(
            &text,
            "proxy.workers",
            Some("workers ="),
            "between 1 and 1024; leave it out for one per CPU core",
        );
    }
}

#[test]
fn client_limits_out_of_range_name_their_bounds_and_default() {
    for (key, bad, says) in [
        (
            "max_header_bytes",
            "100",
            "between 8192 and 16777216; the default is 65536",
        ),
        (
            "max_headers",
            "0",
            "between 8 and 10000; the default is 100",
        ),
        (
            "max_connections",
            "0",
            "between 1 and 1000000; the default is 20000",
        ),
    ] {
        let text = with(
            "connect_timeout = \"2s\"",
            &format!("connect_timeout = \"2s\"\n{key} = {bad}"),
        );
        rejects(
            &text,
            &format!("proxy.{key}"),
            Some(&format!("{key} =")),
            says,
        );
    }
}

// ----- [cluster] -----

const CLUSTER: &str = "\n[cluster]\netcd = [\"http://127.0.0.1:2379\", \"http://10.0.0.6:2379\"]\ninstance = \"proxy-1\"\nkey_prefix = \"/jha/prod/\"\nlease_ttl = \"4s\"\n";

#[test]
fn a_cluster_section_is_read_with_its_defaults() {
    let config = parse(&format!("{BASE}{CLUSTER}"));
    let cluster = config.cluster.expect("cluster");
    assert_eq!(
        cluster.etcd,
        ["http://127.0.0.1:2379", "http://10.0.0.6:2379"]
    );
    assert_eq!(cluster.instance, "proxy-1");
    assert_eq!(cluster.key_prefix, "/jha/prod", "trailing '/' dropped");
    assert_eq!(cluster.lease_ttl, Duration::from_secs(4));
    let minimal = parse(&format!(
        "{BASE}\n[cluster]\netcd = [\"http://e:2379\"]\ninstance = \"p\"\n"
    ));
    let cluster = minimal.cluster.clone().expect("cluster");
    assert_eq!(cluster.key_prefix, config::DEFAULT_KEY_PREFIX);
    assert_eq!(cluster.lease_ttl, config::DEFAULT_LEASE_TTL);
    assert!(minimal.summary().contains(
        "cluster:   instance p in pool /jenkins-ha-proxy/default, 1 etcd member, lease 10s\n"
    ));
    assert!(
        parse(BASE).cluster.is_none(),
        "standalone without the section"
    );
}

#[test]
fn cluster_mistakes_name_the_key() {
    let text = format!("{BASE}\n[cluster]\ninstance = \"p\"\n");
    rejects(
        &text,
        "cluster.etcd",
        Some("[cluster]"),
        "list the etcd members",
    );
    let text = format!(
        "{BASE}{}",
        CLUSTER.replace("http://10.0.0.6:2379", "https://10.0.0.6:2379")
    );
    rejects(
        &text,
        "cluster.etcd",
        Some("etcd ="),
        "not an http://host:port URL",
    );
    let text = format!("{BASE}{}", CLUSTER.replace("proxy-1", "proxy 1"));
    rejects(&text, "cluster.instance", Some("instance ="), "' '");
    let text = format!("{BASE}{}", CLUSTER.replace("/jha/prod/", "jha"));
    rejects(
        &text,
        "cluster.key_prefix",
        Some("key_prefix ="),
        "starts with '/'",
    );
    let text = format!("{BASE}{}", CLUSTER.replace("4s", "1s"));
    rejects(
        &text,
        "cluster.lease_ttl",
        Some("lease_ttl ="),
        "between 2s and 10m",
    );
    let text = format!("{BASE}{}", CLUSTER.replace("instance", "instanse"));
    rejects(&text, "cluster.instanse", Some("instanse ="), "unknown");
    let text = format!(
        "{}{CLUSTER}",
        with(
            "name = \"master-b\"",
            "name = \"master-b\"\nstandby = \"hot\""
        )
    );
    rejects(
        &text,
        "backend[1].standby",
        Some("standby ="),
        "not supported with [cluster]",
    );
}

#[test]
fn shipped_example_cluster_block_parses_when_uncommented() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/jenkins-ha-proxy.toml");
    let text = std::fs::read_to_string(path).expect("shipped example is readable");
    let block = text
        .split("#[cluster]")
        .nth(1)
        .expect("the example has a commented [cluster] block");
    let uncommented: String = std::iter::once("[cluster]\n".to_owned())
        .chain(
            block
                .lines()
                .filter_map(|line| line.strip_prefix('#'))
                .map(|line| format!("{line}\n")),
        )
        .collect();
    let config = parse(&format!("{BASE}{uncommented}"));
    let cluster = config.cluster.expect("cluster");
    assert_eq!(cluster.instance, "proxy-1");
    assert_eq!(cluster.etcd.len(), 3);
    assert_eq!(cluster.key_prefix, "/jenkins-ha-proxy/prod");
    assert_eq!(cluster.lease_ttl, config::DEFAULT_LEASE_TTL);
}

// ----- masters on HTTPS -----

const HTTPS_BASE: &str =
    "[proxy]\nlisten = \"0.0.0.0:8080\"\n[admin]\nlisten = \"127.0.0.1:8404\"\n";

#[test]
fn https_backends_take_tls_server_name_and_upstream_tls() {
    let text = format!(
        "{HTTPS_BASE}[upstream_tls]\nca_file = \"/etc/ca.pem\"\nserver_name = \"ci.example.com\"\n\
         [[backend]]\nname = \"a\"\nurl = \"https://10.0.0.11\"\n\
         [[backend]]\nname = \"b\"\nurl = \"https://10.0.0.12:8443\"\ntls_server_name = \"ci-b.example.com\"\n\
         [[backend]]\nname = \"c\"\nurl = \"https://ci-c.example.com\"\n"
    );
    let config = Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    let tls = &config.upstream_tls;
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/ca.pem"))
    );
    assert!(!tls.insecure_skip_verify);
    let names: Vec<&str> = config.backends.iter().map(|b| b.tls_name(tls)).collect();
    assert_eq!(
        names,
        ["ci.example.com", "ci-b.example.com", "ci-c.example.com"]
    );
    assert_eq!(config.backends[0].url, "https://10.0.0.11:443");
    assert!(config
        .summary()
        .contains("masters verified against the CAs in /etc/ca.pem"));
}

#[test]
fn upstream_tls_mistakes_name_file_line_and_key() {
    let backend = "[[backend]]\nname = \"a\"\nurl = \"https://10.0.0.11\"\n";
    let cases = [
        (
            format!("{HTTPS_BASE}[upstream_tls]\ncert_file = \"/c.pem\"\n{backend}"),
            "test.toml:5: upstream_tls.key_file: missing",
        ),
        (
            format!("{HTTPS_BASE}[upstream_tls]\nca_file = \"\"\n{backend}"),
            "test.toml:6: upstream_tls.ca_file: is empty",
        ),
        (
            format!("{HTTPS_BASE}[upstream_tls]\nserver_name = \"not a name\"\n{backend}"),
            "test.toml:6: upstream_tls.server_name: \"not a name\" is neither",
        ),
        (
            format!("{HTTPS_BASE}[upstream_tls]\nverify = false\n{backend}"),
            "upstream_tls",
        ),
        (
            format!("{HTTPS_BASE}[[backend]]\nname = \"a\"\nurl = \"http://10.0.0.11\"\ntls_server_name = \"x.example\"\n"),
            "test.toml:8: backend[0].tls_server_name: only applies to an https:// url",
        ),
    ];
    for (text, expected) in cases {
        let error = Config::parse(&text, "test.toml")
            .expect_err(&text)
            .to_string();
        assert!(error.contains(expected), "{error}\nexpected: {expected}");
    }
}

#[test]
fn insecure_skip_verify_is_loud_in_the_summary() {
    let text = format!(
        "{HTTPS_BASE}[upstream_tls]\ninsecure_skip_verify = true\n\
         [[backend]]\nname = \"a\"\nurl = \"https://10.0.0.11\"\n"
    );
    let config = Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(config.upstream_tls.insecure_skip_verify);
    assert!(config
        .summary()
        .contains("WARNING: upstream_tls.insecure_skip_verify = true"));
}

// ----- HTTPS on the listeners -----

#[test]
fn proxy_and_admin_tls_tables() {
    let backend = "[[backend]]\nname = \"a\"\nurl = \"http://10.0.0.11:8080\"\n";
    let text = format!(
        "[proxy]\nlisten = \"0.0.0.0:443\"\n[proxy.tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n\
         min_version = \"1.3\"\nhttp_redirect_listen = \"0.0.0.0:80\"\n\
         [[proxy.tls.sni]]\nserver_names = [\"CI.example.org\", \"*.example.org\"]\n\
         cert_file = \"/o.pem\"\nkey_file = \"/o.key\"\n\
         [admin]\nlisten = \"127.0.0.1:8404\"\n[admin.tls]\ncert_file = \"/a.pem\"\nkey_file = \"/a.key\"\n{backend}"
    );
    let config = Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    let tls = config.proxy.tls.expect("proxy.tls");
    assert_eq!(tls.min_version, config::TlsVersion::Tls13);
    assert_eq!(tls.sni[0].server_names, ["ci.example.org", "*.example.org"]);
    assert_eq!(
        tls.http_redirect_listen,
        Some("0.0.0.0:80".parse().expect("addr"))
    );
    let admin = config.admin.tls.expect("admin.tls");
    assert_eq!(admin.cert_file, std::path::Path::new("/a.pem"));
    assert_eq!(admin.min_version, config::TlsVersion::Tls12);
}

#[test]
fn listener_tls_mistakes_name_file_line_and_key() {
    let backend = "[[backend]]\nname = \"a\"\nurl = \"http://10.0.0.11:8080\"\n";
    let proxy = "[proxy]\nlisten = \"0.0.0.0:8443\"\n";
    let admin = "[admin]\nlisten = \"127.0.0.1:8404\"\n";
    let cases = [
        (
            format!("{proxy}[proxy.tls]\ncert_file = \"/c.pem\"\n{admin}{backend}"),
            "test.toml:3: proxy.tls.key_file: missing required key",
        ),
        (
            format!("{proxy}[proxy.tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k\"\nmin_version = \"1.1\"\n{admin}{backend}"),
            "test.toml:6: proxy.tls.min_version: \"1.1\" is not a TLS version",
        ),
        (
            format!("{proxy}[proxy.tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k\"\nhttp_redirect_listen = \"127.0.0.1:8404\"\n{admin}{backend}"),
            "test.toml:6: proxy.tls.http_redirect_listen: 127.0.0.1:8404 clashes with admin.listen",
        ),
        (
            format!("{proxy}[proxy.tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k\"\n[[proxy.tls.sni]]\nserver_names = [\"a b\"]\ncert_file = \"/o\"\nkey_file = \"/o\"\n{admin}{backend}"),
            "proxy.tls.sni.server_names: \"a b\" is not a server name",
        ),
        (
            format!("{proxy}{admin}[admin.tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k\"\nhttp_redirect_listen = \"0.0.0.0:80\"\n{backend}"),
            "admin.tls.http_redirect_listen: is for [proxy.tls] only",
        ),
        (
            format!("{proxy}{admin}[admin.tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k\"\n[[admin.tls.sni]]\nserver_names = [\"x.org\"]\ncert_file = \"/o\"\nkey_file = \"/o\"\n{backend}"),
            "admin.tls.sni: the admin API serves one certificate",
        ),
        (
            format!("{proxy}[proxy.tls]\ncert = \"/c.pem\"\n{admin}{backend}"),
            "proxy.tls",
        ),
    ];
    for (text, expected) in cases {
        let error = Config::parse(&text, "test.toml")
            .expect_err(&text)
            .to_string();
        assert!(error.contains(expected), "{error}\nexpected: {expected}");
    }
}

// ----- [pool] -----

const ACTIVE_ACTIVE: &str =
    "\n[pool]\nmode = \"active-active\"\nload_interval = \"500ms\"\ncookie_name = \"CI_REPLICA\"\n";

#[test]
fn the_pool_is_active_passive_unless_set_and_reads_its_keys() {
    let config = parse(BASE);
    assert_eq!(config.pool, config::PoolConfig::default());
    assert_eq!(config.pool.mode, config::PoolMode::ActivePassive);
    assert_eq!(config.pool.load_interval, config::DEFAULT_LOAD_INTERVAL);
    assert_eq!(config.pool.load_interval, Duration::from_secs(5));
    assert_eq!(config.pool.cookie_name, "JHP_REPLICA");
    assert!(
        !config.summary().contains("pool:"),
        "nothing new in the default summary"
    );
    let explicit = parse(&format!("{BASE}\n[pool]\nmode = \"active-passive\"\n"));
    assert_eq!(explicit.pool, config::PoolConfig::default());

    let config = parse(&format!("{BASE}{ACTIVE_ACTIVE}"));
    assert!(config.pool.active_active());
    assert_eq!(config.pool.load_interval, Duration::from_millis(500));
    assert_eq!(config.pool.cookie_name, "CI_REPLICA");
    let summary = config.summary();
    for line in [
        "pool:      active-active: every healthy, enabled master takes traffic",
        "ONLY for replicated controllers (CloudBees CI HA)",
        "new sessions: least load (builds+queue+agents, every 500ms)",
        "a session sticks to its replica by the cookie CI_REPLICA",
    ] {
        assert!(summary.contains(line), "{line:?} in:\n{summary}");
    }
    assert!(summary.lines().all(|l| l.len() <= 80), "{summary}");
    let defaults = parse(&format!("{BASE}\n[pool]\nmode = \"active-active\"\n"));
    assert_eq!(defaults.pool.load_interval, config::DEFAULT_LOAD_INTERVAL);
    assert_eq!(defaults.pool.cookie_name, config::DEFAULT_COOKIE_NAME);
    // `standby = "none"` says what active-active does anyway.
    let none = with(
        "name = \"master-b\"",
        "name = \"master-b\"\nstandby = \"none\"",
    );
    parse(&format!("{none}{ACTIVE_ACTIVE}"));
}

#[test]
fn pool_mistakes_name_the_key() {
    let text = format!(
        "{BASE}{}",
        ACTIVE_ACTIVE.replace("active-active", "active/active")
    );
    rejects(
        &text,
        "pool.mode",
        Some("mode ="),
        "unknown mode \"active/active\"",
    );
    let text = format!("{BASE}{}", ACTIVE_ACTIVE.replace("500ms", "50ms"));
    rejects(
        &text,
        "pool.load_interval",
        Some("load_interval ="),
        "at least 100ms",
    );
    let text = format!("{BASE}{}", ACTIVE_ACTIVE.replace("500ms", "0s"));
    rejects(
        &text,
        "pool.load_interval",
        Some("load_interval ="),
        "greater than zero",
    );
    let text = format!("{BASE}{}", ACTIVE_ACTIVE.replace("500ms", "fast"));
    rejects(
        &text,
        "pool.load_interval",
        Some("load_interval ="),
        "invalid duration",
    );
    let text = format!(
        "{BASE}{}",
        ACTIVE_ACTIVE.replace("CI_REPLICA", "CI REPLICA;")
    );
    rejects(
        &text,
        "pool.cookie_name",
        Some("cookie_name ="),
        "not a cookie name",
    );
    let text = format!("{BASE}{}", ACTIVE_ACTIVE.replace("cookie_name", "cookie"));
    rejects(&text, "pool.cookie", Some("cookie ="), "unknown");
}

#[test]
fn active_active_refuses_what_only_active_passive_does() {
    let aa = |base: &str| format!("{base}{ACTIVE_ACTIVE}");
    rejects(
        &format!("{}{CLUSTER}", aa(BASE)),
        "pool.mode",
        Some("mode ="),
        "cannot be combined with [cluster]",
    );
    for (key, line) in [
        ("standby", "standby = \"hot\""),
        (
            "fence_command",
            "fence_command = [\"/bin/fence\", \"{name}\"]",
        ),
        (
            "start_command",
            "start_command = [\"/bin/start\", \"{name}\"]",
        ),
    ] {
        let text = aa(&with(
            "name = \"master-b\"",
            &format!("name = \"master-b\"\n{line}"),
        ));
        rejects(
            &text,
            &format!("backend[1].{key}"),
            Some(line),
            "no meaning with pool.mode = \"active-active\"",
        );
    }
    let text = aa(&with(
        "failback = \"never\"",
        "failback = \"never\"\nrequire_fence = true",
    ));
    rejects(
        &text,
        "failover.require_fence",
        Some("require_fence ="),
        "no master is ever fenced",
    );
}
