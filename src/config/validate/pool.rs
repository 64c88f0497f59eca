//! `[pool]` -> [`PoolConfig`]: the mode, and in active-active mode the load interval,
//! the affinity cookie, and what active-active cannot be combined with.

use toml::Spanned;

use super::positive_duration;
use crate::config::errors::Source;
use crate::config::raw::{RawConfig, RawPool};
use crate::config::{
    fmt_duration, ConfigError, PoolConfig, PoolMode, DEFAULT_COOKIE_NAME, DEFAULT_LOAD_INTERVAL,
    MIN_LOAD_INTERVAL,
};

pub(super) fn pool(src: &Source<'_>, raw: &RawConfig) -> Result<PoolConfig, ConfigError> {
    let Some(table) = &raw.pool else {
        return Ok(PoolConfig::default());
    };
    let pool = table.get_ref();
    let mode = mode(src, pool)?;
    let load_interval = positive_duration(
        src,
        "pool.load_interval",
        &pool.load_interval,
        DEFAULT_LOAD_INTERVAL,
    )?;
    if load_interval < MIN_LOAD_INTERVAL {
        let span = pool.load_interval.as_ref().map_or(0..0, Spanned::span);
        return Err(src.error(
            span,
            "pool.load_interval",
            format!(
                "must be at least {}: each read is two REST calls to every replica; the default is {}",
                fmt_duration(MIN_LOAD_INTERVAL),
                fmt_duration(DEFAULT_LOAD_INTERVAL)
            ),
        ));
    }
    let cookie_name = match &pool.cookie_name {
        None => DEFAULT_COOKIE_NAME.to_owned(),
        Some(name) if is_token(name.get_ref()) => name.get_ref().clone(),
        Some(name) => {
            return Err(src.error(
                name.span(),
                "pool.cookie_name",
                format!(
                    "{:?} is not a cookie name: use letters, digits and '_' or '-', e.g. \"{DEFAULT_COOKIE_NAME}\"",
                    name.get_ref()
                ),
            ))
        }
    };
    if mode == PoolMode::ActiveActive {
        refuse_what_active_active_cannot_do(src, raw, table)?;
    }
    Ok(PoolConfig {
        mode,
        load_interval,
        cookie_name,
    })
}

fn mode(src: &Source<'_>, pool: &RawPool) -> Result<PoolMode, ConfigError> {
    let Some(mode) = &pool.mode else {
        return Ok(PoolMode::ActivePassive);
    };
    match mode.get_ref().as_str() {
        "active-passive" => Ok(PoolMode::ActivePassive),
        "active-active" => Ok(PoolMode::ActiveActive),
        other => Err(src.error(
            mode.span(),
            "pool.mode",
            format!(
                "unknown mode {other:?}; use \"active-passive\" (one master at a time: Jenkins masters on one shared JENKINS_HOME) or \"active-active\" (every healthy master at once: only replicated controllers, CloudBees CI High Availability)"
            ),
        )),
    }
}

/// RFC 6265 `cookie-name` (an RFC 7230 token), kept to a plain alphabet.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Active-active replicas coordinate among themselves: nothing is fenced, started or
/// kept in quiet-down, and a pool of proxies would have nothing to agree on beyond
/// health, which cluster mode does not do yet. Refused rather than ignored.
fn refuse_what_active_active_cannot_do(
    src: &Source<'_>,
    raw: &RawConfig,
    table: &Spanned<RawPool>,
) -> Result<(), ConfigError> {
    let mode_span = table
        .get_ref()
        .mode
        .as_ref()
        .map_or(table.span(), Spanned::span);
    if raw.cluster.is_some() {
        return Err(src.error(
            mode_span,
            "pool.mode",
            "\"active-active\" cannot be combined with [cluster] yet: run each proxy instance standalone (the replicas need no agreement among proxies beyond health), or remove pool.mode",
        ));
    }
    if let Some(fence) = raw.failover.require_fence.as_ref().filter(|f| *f.get_ref()) {
        return Err(src.error(
            fence.span(),
            "failover.require_fence",
            "has no meaning with pool.mode = \"active-active\" (no master is ever fenced): remove it",
        ));
    }
    for (index, backend) in raw.backend.iter().enumerate() {
        let backend = backend.get_ref();
        let refused = [
            (
                "standby",
                (backend.standby.as_ref())
                    .filter(|standby| standby.get_ref() != "none")
                    .map(Spanned::span),
            ),
            (
                "start_command",
                backend.start_command.as_ref().map(Spanned::span),
            ),
            (
                "fence_command",
                backend.fence_command.as_ref().map(Spanned::span),
            ),
        ];
        if let Some((key, Some(span))) = refused.into_iter().find(|(_, span)| span.is_some()) {
            return Err(src.error(
                span,
                format!("backend[{index}].{key}"),
                "has no meaning with pool.mode = \"active-active\": every replica serves at once, so none is kept standby, started or fenced; remove it",
            ));
        }
    }
    Ok(())
}
