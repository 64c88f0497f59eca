//! Child processes (upstreams, sample masters, proxies) that never outlive the bench:
//! stopped on drop, and killed by the kernel if the bench itself dies.
//!
//! Spawn children from the main thread only: the "die with the parent" signal fires
//! when the *thread* that spawned the child exits.

use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::http;
use super::sys::{die_with_parent, send_signal, Signal};

/// How a child is asked to stop on drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL at once (our own servers: nothing to clean up).
    Kill,
    /// SIGTERM, then SIGKILL after a grace period (nginx stops its workers on TERM).
    Term,
}

const TERM_GRACE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(20);

pub struct Child {
    name: String,
    inner: std::process::Child,
    stop: Stop,
}

impl Child {
    /// Starts `command` with stdout and stderr appended to `log`. Set stdin on the
    /// command beforehand if the child reads commands; it is null otherwise.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        stop: Stop,
    ) -> Result<Child, String> {
        let out = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("duplicating the log file handle: {e}"))?;
        command.stdout(out).stderr(err);
        die_with_parent(
            &mut command,
            if stop == Stop::Term {
                Signal::Term
            } else {
                Signal::Kill
            },
        );
        let inner = command
            .spawn()
            .map_err(|e| format!("starting {name} ({command:?}): {e}"))?;
        Ok(Child {
            name: name.to_owned(),
            inner,
            stop,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        send_signal(self.pid(), signal)
    }

    /// Writes one line to the child's stdin (the child must have been started with a
    /// piped stdin).
    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        let stdin = self
            .inner
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("child has no piped stdin"))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()
    }

    /// SIGKILL and reap, like a crashed process.
    pub fn kill_now(&mut self) -> io::Result<()> {
        self.inner.kill()?;
        self.inner.wait().map(drop)
    }

    /// Some(status) if the child has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.inner.try_wait().ok().flatten()
    }

    fn terminate(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if self.stop == Stop::Term && self.signal(Signal::Term).is_ok() {
            let deadline = Instant::now() + TERM_GRACE;
            while Instant::now() < deadline {
                if self.exited().is_some() {
                    return;
                }
                thread::sleep(POLL);
            }
        }
        // A stopped (SIGSTOP) process still dies of SIGKILL.
        let _ = self.inner.kill();
        let _ = self.inner.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A port free right now on `ip` (bind port 0, read it, release it). Another process
/// could take it before the child binds; on loopback in a bench that does not happen
/// in practice, and the readiness check would catch it.
pub fn free_port(ip: [u8; 4]) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(SocketAddr::from((ip, 0)))
        .map_err(|e| format!("binding a free port on {ip:?}: {e}"))?;
    listener
        .local_addr()
        .map_err(|e| format!("reading the bound address: {e}"))
}

/// Waits until `addr` accepts a TCP connection, or fails after `patience`.
pub fn wait_for_port(
    child: &mut Child,
    addr: SocketAddr,
    patience: Duration,
) -> Result<(), String> {
    wait_for(
        child,
        patience,
        &format!("{addr} to accept connections"),
        || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
    )
}

/// Waits until `GET path` on `addr` answers 200 and `accept` likes the reply.
pub fn wait_for_http(
    child: &mut Child,
    addr: SocketAddr,
    path: &str,
    patience: Duration,
    accept: impl Fn(&http::Reply) -> bool,
) -> Result<(), String> {
    let what = format!("GET http://{addr}{path} to answer 200");
    wait_for(child, patience, &what, || {
        http::get(addr, path, Duration::from_millis(500))
            .is_ok_and(|reply| reply.status == 200 && accept(&reply))
    })
}

fn wait_for(
    child: &mut Child,
    patience: Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(status) = child.exited() {
            return Err(format!(
                "{} exited ({status}) while waiting for {what}",
                child.name()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{}: gave up after {patience:?} waiting for {what}",
                child.name()
            ));
        }
        thread::sleep(POLL);
    }
}

/// This bench binary run again as a helper (`--serve-…` modes), with a piped stdin:
/// helpers exit when their stdin closes, i.e. when the bench goes away.
pub fn self_command(args: &[String]) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the bench binary: {e}"))?;
    let mut command = Command::new(exe);
    command.args(args).stdin(Stdio::piped());
    Ok(command)
}
