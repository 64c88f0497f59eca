//! The bench's handle on one sample master process (failover and soak benches): start
//! and restart it as this bench binary with a serving argument, SIGKILL it, signal it,
//! and switch its health path through its stdin. The serving side is each bench's own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use super::child::{self, Child, Stop};
use super::sys::Signal;

/// How long a (re)started master may take to answer its health path.
const READY_PATIENCE: Duration = Duration::from_secs(10);

pub struct MasterChild {
    pub name: String,
    dir: PathBuf,
    starts: usize,
    /// Logs kept per master: start n writes `<name>.<n % logs_kept>.log`.
    logs_kept: usize,
    child: Option<Child>,
}

impl MasterChild {
    /// A handle, nothing started yet; `logs_kept` 0: one log per start.
    pub fn new(name: &str, dir: &Path, logs_kept: usize) -> MasterChild {
        MasterChild {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            starts: 0,
            logs_kept,
            child: None,
        }
    }

    /// Starts (again) `this bench binary <args>` and waits until `http` answers `/login`.
    pub fn spawn(&mut self, args: &[String], http: SocketAddr) -> Result<(), String> {
        self.starts += 1;
        let n = match self.logs_kept {
            0 => self.starts,
            kept => self.starts % kept,
        };
        let log = self.dir.join(format!("{}.{n}.log", self.name));
        let mut child = Child::spawn(&self.name, child::self_command(args)?, &log, Stop::Kill)?;
        child::wait_for_http(&mut child, http, "/login", READY_PATIENCE, |_| true)?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, like a crashed JVM: the kernel resets its connections.
    pub fn kill(&mut self) -> Result<(), String> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| format!("{} is not running", self.name))?;
        child
            .kill_now()
            .map_err(|e| format!("killing {}: {e}", self.name))
    }

    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| format!("{} is not running", self.name))?;
        child
            .signal(signal)
            .map_err(|e| format!("sending {signal:?} to {}: {e}", self.name))
    }

    /// Health path answers 503 (`false`) or 200 (`true`).
    pub fn set_healthy(&mut self, healthy: bool) -> Result<(), String> {
        let name = self.name.clone();
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| format!("{name} is not running"))?;
        child
            .send_line(if healthy { "well" } else { "sick" })
            .map_err(|e| format!("switching the health of {name}: {e}"))
    }

    /// Some(status) if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.exited()
    }
}

impl Drop for MasterChild {
    fn drop(&mut self) {
        // A frozen master must be thawed for a clean exit; SIGKILL works either way.
        if let Some(child) = &self.child {
            let _ = child.signal(Signal::Cont);
        }
    }
}
