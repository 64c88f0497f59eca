//! Raw schema: exactly what the file may contain. Every level denies unknown keys so
//! a typo is an error, not a silently ignored setting. Values are `Spanned` so
//! validation can name their line; required keys are `Option` so a missing one gets
//! our own message instead of serde's bare "missing field".

use serde::Deserialize;
use toml::Spanned;

pub(super) type Field<T> = Option<Spanned<T>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawConfig {
    pub(super) proxy: Field<RawProxy>,
    pub(super) admin: Field<RawAdmin>,
    #[serde(default)]
    pub(super) health: RawHealth,
    #[serde(default)]
    pub(super) failover: RawFailover,
    #[serde(default)]
    pub(super) backend: Vec<Spanned<RawBackend>>,
    #[serde(default)]
    pub(super) tcp: Vec<Spanned<RawTcp>>,
    #[serde(default)]
    pub(super) jenkins: RawJenkins,
    #[serde(default)]
    pub(super) hooks: Vec<Spanned<RawHook>>,
    pub(super) cluster: Field<RawCluster>,
    pub(super) upstream_tls: Field<RawUpstreamTls>,
    pub(super) pool: Field<RawPool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [pool] table")]
pub(super) struct RawPool {
    pub(super) mode: Field<String>,
    pub(super) load_interval: Field<String>,
    pub(super) cookie_name: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [upstream_tls] table")]
pub(super) struct RawUpstreamTls {
    pub(super) ca_file: Field<String>,
    pub(super) server_name: Field<String>,
    pub(super) cert_file: Field<String>,
    pub(super) key_file: Field<String>,
    pub(super) insecure_skip_verify: Field<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [cluster] table")]
pub(super) struct RawCluster {
    pub(super) etcd: Field<Vec<String>>,
    pub(super) instance: Field<String>,
    pub(super) key_prefix: Field<String>,
    pub(super) lease_ttl: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [jenkins] table")]
pub(super) struct RawJenkins {
    pub(super) user: Field<String>,
    pub(super) api_token_file: Field<String>,
    pub(super) call_timeout: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[hooks]] table")]
pub(super) struct RawHook {
    pub(super) on: Field<String>,
    pub(super) command: Field<Vec<String>>,
    pub(super) timeout: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [proxy] table")]
pub(super) struct RawProxy {
    pub(super) listen: Field<String>,
    pub(super) connect_timeout: Field<String>,
    pub(super) pool_idle_timeout: Field<String>,
    pub(super) header_read_timeout: Field<String>,
    pub(super) shutdown_timeout: Field<String>,
    pub(super) retry_after: Field<String>,
    pub(super) tunnel_idle_timeout: Field<String>,
    pub(super) response_idle_timeout: Field<String>,
    pub(super) access_log: Field<bool>,
    pub(super) request_timeout: Field<String>,
    pub(super) max_header_bytes: Field<i64>,
    pub(super) max_headers: Field<i64>,
    pub(super) max_connections: Field<i64>,
    pub(super) workers: Field<i64>,
    pub(super) http2_max_streams: Field<i64>,
    pub(super) tls: Field<RawServerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [proxy.tls] or [admin.tls] table")]
pub(super) struct RawServerTls {
    pub(super) cert_file: Field<String>,
    pub(super) key_file: Field<String>,
    pub(super) min_version: Field<String>,
    #[serde(default)]
    pub(super) sni: Vec<Spanned<RawSniCertificate>>,
    pub(super) http_redirect_listen: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[proxy.tls.sni]] table")]
pub(super) struct RawSniCertificate {
    pub(super) server_names: Field<Vec<String>>,
    pub(super) cert_file: Field<String>,
    pub(super) key_file: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [admin] table")]
pub(super) struct RawAdmin {
    pub(super) listen: Field<String>,
    pub(super) token_file: Field<String>,
    pub(super) tls: Field<RawServerTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [health] table")]
pub(super) struct RawHealth {
    pub(super) path: Field<String>,
    pub(super) interval: Field<String>,
    pub(super) timeout: Field<String>,
    // Signed so that `rise = -1` gets our "at least 1" message, not a serde one.
    pub(super) rise: Field<i64>,
    pub(super) fall: Field<i64>,
    pub(super) expect_header: Field<String>,
    pub(super) expect_body: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [failover] table")]
pub(super) struct RawFailover {
    pub(super) failback: Field<String>,
    pub(super) drain_timeout: Field<String>,
    pub(super) state_file: Field<String>,
    pub(super) require_fence: Field<bool>,
    pub(super) hold_timeout: Field<String>,
    pub(super) promote_timeout: Field<String>,
    pub(super) starting_grace: Field<String>,
    pub(super) command_timeout: Field<String>,
    pub(super) min_active_time: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[backend]] table")]
pub(super) struct RawBackend {
    pub(super) name: Field<String>,
    pub(super) url: Field<String>,
    pub(super) standby: Field<String>,
    pub(super) start_command: Field<Vec<String>>,
    pub(super) fence_command: Field<Vec<String>>,
    pub(super) max_connections: Field<i64>,
    pub(super) max_connects: Field<i64>,
    pub(super) tls_server_name: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[tcp]] table")]
pub(super) struct RawTcp {
    pub(super) name: Field<String>,
    pub(super) listen: Field<String>,
    // Ports are signed and wide so that 0, -1 and 70000 get our messages.
    pub(super) backend_port: Field<i64>,
    pub(super) advertise_host: Field<String>,
    pub(super) advertise_port: Field<i64>,
    pub(super) idle_timeout: Field<String>,
    pub(super) max_connections: Field<i64>,
}

/// Keys whose values are humantime strings (used for a hint on type errors).
pub(super) const DURATION_KEYS: &[&str] = &[
    "connect_timeout",
    "pool_idle_timeout",
    "header_read_timeout",
    "shutdown_timeout",
    "retry_after",
    "tunnel_idle_timeout",
    "response_idle_timeout",
    "interval",
    "timeout",
    "drain_timeout",
    "idle_timeout",
    "request_timeout",
    "hold_timeout",
    "promote_timeout",
    "starting_grace",
    "command_timeout",
    "min_active_time",
    "call_timeout",
    "lease_ttl",
    "load_interval",
];

/// The duration keys that "off" (or zero) disables.
pub(super) const OFF_KEYS: &[&str] = &[
    "request_timeout",
    "tunnel_idle_timeout",
    "response_idle_timeout",
    "idle_timeout",
];

/// Arrays of tables, with what one element describes (for a hint when a file
/// writes `[tcp]` instead of `[[tcp]]`).
pub(super) const TABLE_ARRAYS: &[(&str, &str)] = &[("backend", "master"), ("tcp", "listener")];
