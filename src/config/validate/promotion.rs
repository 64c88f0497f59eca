//! Safe promotion: per-backend `standby`, `start_command`, `fence_command`; the
//! `[jenkins]` credentials; `[[hooks]]`.

use std::path::PathBuf;

use toml::Spanned;

use super::super::errors::Source;
use super::super::raw::{Field, RawBackend, RawHook, RawJenkins};
use super::super::{
    BackendConfig, ConfigError, HookConfig, HookEvent, JenkinsConfig, Standby,
    DEFAULT_CALL_TIMEOUT, DEFAULT_HOOK_TIMEOUT,
};
use super::positive_duration;

/// Adds `standby`, `start_command` and `fence_command` to a validated backend.
pub(super) fn backend_promotion(
    src: &Source<'_>,
    index: usize,
    raw: &RawBackend,
    backend: &mut BackendConfig,
) -> Result<(), ConfigError> {
    let key = |field: &str| format!("backend[{index}].{field}");
    backend.standby = match &raw.standby {
        None => Standby::None,
        Some(value) => match value.get_ref().as_str() {
            "none" => Standby::None,
            "hot" => Standby::Hot,
            "cold" => Standby::Cold,
            other => {
                return Err(src.error(
                    value.span(),
                    key("standby"),
                    format!(
                        "{other:?} is not a standby mode; use \"hot\" (the JVM runs, kept in quiet-down), \
                         \"cold\" (the JVM is stopped; needs start_command) or \"none\""
                    ),
                ))
            }
        },
    };
    backend.start_command = command(src, &key("start_command"), &raw.start_command)?;
    backend.fence_command = command(src, &key("fence_command"), &raw.fence_command)?;
    if backend.standby == Standby::Cold && backend.start_command.is_none() {
        let span = raw.standby.as_ref().map_or(0..0, Spanned::span);
        return Err(src.error(
            span,
            key("standby"),
            "a cold standby needs start_command, e.g. [\"ssh\", \"{host}\", \"systemctl start jenkins\"]",
        ));
    }
    Ok(())
}

/// An optional argv: a non-empty array whose first element names a program.
fn command(
    src: &Source<'_>,
    key: &str,
    field: &Field<Vec<String>>,
) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(argv) = field else {
        return Ok(None);
    };
    match argv.get_ref().first() {
        Some(program) if !program.trim().is_empty() => Ok(Some(argv.get_ref().clone())),
        _ => Err(src.error(
            argv.span(),
            key,
            "must be a command as an array, program first, e.g. [\"/usr/local/bin/fence\", \"{host}\"] (no shell is used)",
        )),
    }
}

pub(super) fn jenkins(src: &Source<'_>, raw: &RawJenkins) -> Result<JenkinsConfig, ConfigError> {
    let user = raw.user.as_ref().map(|u| u.get_ref().clone());
    let api_token_file = raw
        .api_token_file
        .as_ref()
        .map(|p| PathBuf::from(p.get_ref()));
    if let (Some(user), None) = (&raw.user, &raw.api_token_file) {
        return Err(src.error(
            user.span(),
            "jenkins.api_token_file",
            "jenkins.user is set but api_token_file is not: give the file holding that user's API token",
        ));
    }
    if let (None, Some(file)) = (&raw.user, &raw.api_token_file) {
        return Err(src.error(
            file.span(),
            "jenkins.user",
            "jenkins.api_token_file is set but user is not: name the Jenkins user the token belongs to",
        ));
    }
    Ok(JenkinsConfig {
        user,
        api_token_file,
        call_timeout: positive_duration(
            src,
            "jenkins.call_timeout",
            &raw.call_timeout,
            DEFAULT_CALL_TIMEOUT,
        )?,
    })
}

pub(super) fn hooks(
    src: &Source<'_>,
    raw: &[Spanned<RawHook>],
) -> Result<Vec<HookConfig>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(index, table)| {
            let key = |field: &str| format!("hooks[{index}].{field}");
            let hook = table.get_ref();
            let on = hook.on.as_ref().ok_or_else(|| {
                src.error(table.span(), key("on"), "missing: say when the hook runs, e.g. on = \"promote\"")
            })?;
            let event = HookEvent::ALL
                .into_iter()
                .find(|event| event.as_str() == on.get_ref())
                .ok_or_else(|| {
                    let known: Vec<&str> = HookEvent::ALL.iter().map(|e| e.as_str()).collect();
                    src.error(
                        on.span(),
                        key("on"),
                        format!("{:?} is not an event; use one of: {}", on.get_ref(), known.join(", ")),
                    )
                })?;
            let command = command(src, &key("command"), &hook.command)?.ok_or_else(|| {
                src.error(
                    table.span(),
                    key("command"),
                    "missing: the command to run, as an array, e.g. [\"/usr/local/bin/notify\", \"{name}\", \"{reason}\"]",
                )
            })?;
            Ok(HookConfig {
                on: event,
                command,
                timeout: positive_duration(src, &key("timeout"), &hook.timeout, DEFAULT_HOOK_TIMEOUT)?,
            })
        })
        .collect()
}
