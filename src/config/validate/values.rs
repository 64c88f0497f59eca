//! The value rules every table shares: durations, bounded numbers, names.

use std::time::Duration;

use toml::Spanned;

use super::super::errors::Source;
use super::super::raw::Field;
use super::super::{fmt_duration, ConfigError};

/// An optional duration: humantime syntax ("500ms", "2s", "1m"); zero allowed,
/// "off" refused (these settings cannot be disabled).
pub(super) fn duration(
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
pub(super) fn optional_duration(
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

pub(super) fn is_off(text: &str) -> bool {
    text.trim().eq_ignore_ascii_case("off")
}

/// humantime syntax; `also` is appended to the advice on error.
pub(super) fn parse_duration(
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
pub(super) fn positive_duration(
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

/// An optional whole number within `min..=max`.
pub(super) fn bounded(
    src: &Source<'_>,
    key: &str,
    field: &Field<i64>,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let Some(field) = field else {
        return Ok(default);
    };
    match usize::try_from(*field.get_ref()) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(src.error(
            field.span(),
            key,
            format!("must be between {min} and {max}; the default is {default}"),
        )),
    }
}

/// Names go into logs and metric labels: keep them to a safe alphabet. `example`
/// is a good name for the kind of thing named.
pub(super) fn check_name(name: &str, example: &str) -> Result<(), String> {
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
