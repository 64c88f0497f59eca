//! The real binary as a child process, for tests that need a process of its own:
//! its own open-file limit, its own descriptor count, its own memory.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

use super::{wait_until, DEADLINE};

pub struct ChildDaemon {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub pid: u32,
    /// Every stderr line so far; written by the reader task, read by the test.
    log: Arc<Mutex<Vec<String>>>,
    child: Child,
}

impl ChildDaemon {
    /// `jenkins-ha-proxy run --config <config>`, under `ulimit -n <open_files>` when
    /// given. Returns once both listeners are bound (read off the start-up log line).
    pub async fn start(config: &Path, open_files: Option<u64>) -> ChildDaemon {
        let binary = env!("CARGO_BIN_EXE_jenkins-ha-proxy");
        let mut command = match open_files {
            // `exec` keeps the pid: /proc/<pid> is the daemon's, not the shell's.
            Some(limit) => {
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(r#"ulimit -n "$1" && exec "$0" run --config "$2""#)
                    .arg(binary)
                    .arg(limit.to_string())
                    .arg(config);
                command
            }
            None => {
                let mut command = Command::new(binary);
                command.args(["run", "--config"]).arg(config);
                command
            }
        };
        let mut child = command
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the daemon");
        let pid = child.id().expect("pid");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let writer = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                writer.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let mut daemon = ChildDaemon {
            proxy: "0.0.0.0:0".parse().expect("addr"),
            admin: "0.0.0.0:0".parse().expect("addr"),
            pid,
            log,
            child,
        };
        let deadline = std::time::Instant::now() + DEADLINE;
        let starting = loop {
            if let Some(line) = daemon
                .log()
                .into_iter()
                .find(|l| l.contains("jenkins-ha-proxy starting"))
            {
                break line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon did not start; its log:\n{}",
                daemon.log().join("\n")
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        daemon.proxy = field(&starting, "proxy=");
        daemon.admin = field(&starting, "admin=");
        daemon
    }

    /// Sends `signal` to the daemon (SIGSTOP freezes it, SIGCONT wakes it, SIGKILL
    /// ends it without a word).
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid as i32).expect("a real pid");
        rustix::process::kill_process(pid, signal).expect("signal the daemon");
    }

    /// Waits until every thread of the daemon is stopped (after SIGSTOP): the signal
    /// is delivered asynchronously, and a loaded machine may let the daemon run on a
    /// few milliseconds after `kill` returns.
    #[allow(dead_code)] // not every test binary freezes a daemon
    pub async fn wait_stopped(&self) {
        let tasks = format!("/proc/{}/task", self.pid);
        wait_until("every thread of the daemon stopped", || async {
            let Ok(entries) = std::fs::read_dir(&tasks) else {
                return false;
            };
            entries.flatten().all(|task| {
                std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                    // The state follows the command name in parentheses.
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                })
            })
        })
        .await;
    }

    /// Waits up to `within` for the daemon to exit on its own; its exit code.
    pub async fn exit_code(&mut self, within: std::time::Duration) -> Option<i32> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .ok()?
            .ok()?;
        status.code()
    }

    /// The stderr lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for a log line containing `text` and returns it.
    pub async fn wait_log(&self, text: &str) -> String {
        wait_until(&format!("a daemon log line with {text:?}"), || async {
            self.log().iter().any(|line| line.contains(text))
        })
        .await;
        self.log()
            .into_iter()
            .find(|line| line.contains(text))
            .unwrap_or_default()
    }

    /// A `/proc/<pid>/status` field in KiB, e.g. `"VmRSS:"` or `"VmHWM:"` (the peak).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_else(|error| panic!("read /proc/{}/status: {error}", self.pid));
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} not in /proc/{}/status", self.pid))
    }

    /// Descriptors the daemon has open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|dir| dir.count())
            .unwrap_or_else(|error| panic!("read /proc/{}/fd: {error}", self.pid))
    }
}

/// `key=addr` out of a text log line.
fn field(line: &str, key: &str) -> SocketAddr {
    line.split(key)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no {key} address in {line:?} (deadline {DEADLINE:?})"))
}
