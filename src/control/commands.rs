//! Runs operator commands (fence, start, hooks): argv without a shell, with `{name}`,
//! `{url}`, `{host}`, `{reason}` and `{epoch}` (cluster mode) substituted, bounded by a timeout, output logged.

use std::process::Stdio;
use std::time::Duration;

/// Values substituted into a command's arguments.
#[derive(Debug, Clone, Default)]
pub struct Vars<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub host: &'a str,
    pub reason: &'a str,
    /// The cluster pointer's epoch the command is about; empty in standalone mode.
    pub epoch: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {}", humantime::format_duration(*.timeout))]
    Timeout { program: String, timeout: Duration },
    #[error("{program} failed ({status}): {output}")]
    Failed {
        program: String,
        status: String,
        output: String,
    },
}

/// `{name}` etc. replaced in every argument.
pub fn substitute(argv: &[String], vars: &Vars<'_>) -> Vec<String> {
    argv.iter()
        .map(|arg| {
            arg.replace("{name}", vars.name)
                .replace("{url}", vars.url)
                .replace("{host}", vars.host)
                .replace("{reason}", vars.reason)
                .replace("{epoch}", vars.epoch)
        })
        .collect()
}

/// Runs `argv` (after substitution) and waits up to `timeout`; a non-zero exit is an
/// error carrying the output. The process is killed on timeout.
pub async fn run(
    argv: &[String],
    vars: &Vars<'_>,
    timeout: Duration,
) -> Result<String, CommandError> {
    let argv = substitute(argv, vars);
    let Some((program, args)) = argv.split_first() else {
        return Err(CommandError::Spawn {
            program: String::new(),
            source: std::io::Error::other("empty command"),
        });
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => {
            return Err(CommandError::Spawn {
                program: program.clone(),
                source,
            })
        }
        Err(_) => {
            return Err(CommandError::Timeout {
                program: program.clone(),
                timeout,
            })
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .trim()
    .chars()
    .take(2000)
    .collect::<String>();
    tracing::info!(command = ?argv, status = %output.status, output = %text, "command finished");
    if output.status.success() {
        Ok(text)
    } else {
        Err(CommandError::Failed {
            program: program.clone(),
            status: output.status.to_string(),
            output: text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn substitutes_placeholders_without_a_shell() {
        let vars = Vars {
            name: "master-a",
            url: "http://10.0.0.11:8080",
            host: "10.0.0.11",
            reason: "a; rm -rf /",
            epoch: "42",
        };
        let out = substitute(
            &argv(&["fence", "{host}", "--name={name}", "{reason}", "{epoch}"]),
            &vars,
        );
        assert_eq!(
            out,
            argv(&["fence", "10.0.0.11", "--name=master-a", "a; rm -rf /", "42"])
        );
    }

    #[tokio::test]
    async fn runs_fails_and_times_out() {
        let vars = Vars::default();
        let ok = run(
            &argv(&["sh", "-c", "echo fenced"]),
            &vars,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(ok.expect("runs"), "fenced");
        let failed = run(
            &argv(&["sh", "-c", "echo nope >&2; exit 3"]),
            &vars,
            Duration::from_secs(5),
        )
        .await;
        assert!(matches!(failed, Err(CommandError::Failed { ref output, .. }) if output == "nope"));
        let slow = run(&argv(&["sleep", "5"]), &vars, Duration::from_millis(100)).await;
        assert!(matches!(slow, Err(CommandError::Timeout { .. })));
        let missing = run(
            &argv(&["/nonexistent/fence"]),
            &vars,
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(missing, Err(CommandError::Spawn { .. })));
    }
}
