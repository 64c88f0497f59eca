//! `[cluster]` -> [`ClusterConfig`]: etcd endpoints, this instance's name, the pool's
//! key prefix, the lease.

use std::time::Duration;

use toml::Spanned;

use super::{check_name, positive_duration};
use crate::config::errors::Source;
use crate::config::raw::{RawCluster, RawConfig};
use crate::config::{ClusterConfig, ConfigError, DEFAULT_KEY_PREFIX, DEFAULT_LEASE_TTL};

/// Shortest lease: etcd's own minimum is about 2 s with its default election timeout.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
const ETCD_EXAMPLE: &str =
    "etcd = [\"http://10.0.0.5:2379\", \"http://10.0.0.6:2379\", \"http://10.0.0.7:2379\"]";

pub(super) fn cluster(
    src: &Source<'_>,
    raw: &RawConfig,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(table) = &raw.cluster else {
        return Ok(None);
    };
    let cluster = table.get_ref();
    let etcd = etcd_urls(src, table)?;
    let instance = match &cluster.instance {
        Some(name) => {
            check_name(name.get_ref(), "proxy-1")
                .map_err(|message| src.error(name.span(), "cluster.instance", message))?;
            name.get_ref().clone()
        }
        None => host_name().ok_or_else(|| {
            src.error(
                table.span(),
                "cluster.instance",
                "the host name cannot be read or is not a usable name (letters, digits, '.', '_', '-'); set instance = \"proxy-1\", unique in the pool",
            )
        })?,
    };
    let key_prefix = match &cluster.key_prefix {
        None => DEFAULT_KEY_PREFIX.to_owned(),
        Some(prefix) => {
            let text = prefix.get_ref().trim_end_matches('/');
            if !text.starts_with('/') || text.len() < 2 || text.contains(char::is_whitespace) {
                return Err(src.error(
                    prefix.span(),
                    "cluster.key_prefix",
                    "must be a path such as \"/jenkins-ha-proxy/prod\" (starts with '/', no spaces); one pool per prefix",
                ));
            }
            text.to_owned()
        }
    };
    let lease_ttl = positive_duration(
        src,
        "cluster.lease_ttl",
        &cluster.lease_ttl,
        DEFAULT_LEASE_TTL,
    )?;
    if lease_ttl < MIN_LEASE_TTL || lease_ttl > Duration::from_secs(600) {
        let span = cluster.lease_ttl.as_ref().map_or(0..0, Spanned::span);
        return Err(src.error(
            span,
            "cluster.lease_ttl",
            "must be between 2s and 10m; it is how long a frozen or cut-off instance can delay a switch, and how long an instance keeps routing without etcd",
        ));
    }
    refuse_what_cluster_mode_cannot_do(src, raw)?;
    Ok(Some(ClusterConfig {
        etcd,
        instance,
        key_prefix,
        lease_ttl,
    }))
}

/// `cluster.etcd`: at least one `http://host:port` URL.
fn etcd_urls(src: &Source<'_>, table: &Spanned<RawCluster>) -> Result<Vec<String>, ConfigError> {
    let Some(etcd) = &table.get_ref().etcd else {
        return Err(src.error(
            table.span(),
            "cluster.etcd",
            format!(
                "missing required key; list the etcd members' client URLs, e.g. {ETCD_EXAMPLE}"
            ),
        ));
    };
    if etcd.get_ref().is_empty() {
        return Err(src.error(
            etcd.span(),
            "cluster.etcd",
            format!("is empty; list the etcd members' client URLs, e.g. {ETCD_EXAMPLE}"),
        ));
    }
    if let Some(url) = etcd
        .get_ref()
        .iter()
        .find(|url| etcd_endpoint(url).is_none())
    {
        return Err(src.error(
            etcd.span(),
            "cluster.etcd",
            format!("{url:?} is not an http://host:port URL (https is not supported yet); e.g. {ETCD_EXAMPLE}"),
        ));
    }
    Ok(etcd.get_ref().clone())
}

/// `http://host:port` (a trailing `/` allowed) -> `host:port`: the only form of etcd
/// URL accepted, here and by the etcd client (no https yet, no path, no user).
pub fn etcd_endpoint(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let uri: hyper::Uri = format!("http://{authority}/").parse().ok()?;
    let host = uri.host().filter(|host| !host.is_empty())?;
    let port = uri.port_u16()?;
    // An IPv6 host comes with its brackets, as an authority needs them.
    (!authority.contains('/') && !authority.contains('@')).then(|| format!("{host}:{port}"))
}

/// Promotion with standbys and fencing before traffic moves runs in one process
/// today; in a pool it would have to run on the leader. Refused rather than ignored.
fn refuse_what_cluster_mode_cannot_do(
    src: &Source<'_>,
    raw: &RawConfig,
) -> Result<(), ConfigError> {
    for (index, backend) in raw.backend.iter().enumerate() {
        if let Some(standby) = &backend.get_ref().standby {
            if standby.get_ref() != "none" {
                return Err(src.error(
                    standby.span(),
                    format!("backend[{index}].standby"),
                    "hot and cold standbys are not supported with [cluster] yet: remove standby (the default, \"none\"), or remove [cluster]",
                ));
            }
        }
    }
    if let Some(fence) = &raw.failover.require_fence {
        if *fence.get_ref() {
            return Err(src.error(
                fence.span(),
                "failover.require_fence",
                "is not supported with [cluster] yet (the pool never sends to two masters at once without it; fence_command still runs on the leader after a switch): remove it, or remove [cluster]",
            ));
        }
    }
    Ok(())
}

/// The host name, if it is a usable instance name.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    check_name(name, "proxy-1").ok().map(|()| name.to_owned())
}
