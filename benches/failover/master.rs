//! Sample masters in their own processes, so a fault is a real one: SIGKILL (the
//! kernel resets every connection), SIGSTOP (connections stay open, nothing answers).
//!
//! The child is this bench binary run as `--serve-master NAME ADDR`: the library's
//! `SampleMaster` on ADDR, whose health path is switched by lines on stdin (`sick`,
//! `well`): the control channel stays out of the proxy's path. It exits when its
//! stdin closes.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use jenkins_ha_proxy::sample::SampleMaster;

use crate::common::child::{self, Child, Stop};
use crate::common::sys::Signal;

pub const ARG: &str = "--serve-master";
const READY_PATIENCE: Duration = Duration::from_secs(10);

/// `--serve-master NAME ADDR`: serves until stdin closes.
pub fn main(args: &[String]) -> ExitCode {
    let (Some(name), Some(addr)) = (args.first(), args.get(1).and_then(|a| a.parse().ok())) else {
        eprintln!("usage: {ARG} NAME ADDR");
        return ExitCode::FAILURE;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("building the sample master's runtime");
    let master = match runtime.block_on(SampleMaster::start(name, addr)) {
        Ok(master) => master,
        Err(error) => {
            eprintln!("sample master {name}: cannot serve on {addr}: {error}");
            return ExitCode::FAILURE;
        }
    };
    obey_stdin(&master);
    ExitCode::SUCCESS
}

/// Applies `sick` / `well` lines until stdin closes (the bench is gone).
fn obey_stdin(master: &SampleMaster) {
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("sick") => master.set_healthy(false),
            Ok("well") => master.set_healthy(true),
            Ok(other) => eprintln!("sample master: unknown command {other:?}"),
            Err(_) => return,
        }
    }
}

/// The bench's handle on one sample master process.
pub struct MasterProcess {
    pub name: &'static str,
    pub addr: SocketAddr,
    dir: PathBuf,
    starts: usize,
    child: Option<Child>,
}

impl MasterProcess {
    /// Starts the master on a free port of `ip` and waits until it answers.
    pub fn start(name: &'static str, ip: [u8; 4], dir: &Path) -> Result<MasterProcess, String> {
        let mut master = MasterProcess {
            name,
            addr: child::free_port(ip)?,
            dir: dir.to_path_buf(),
            starts: 0,
            child: None,
        };
        master.spawn()?;
        Ok(master)
    }

    /// Starts the process again on the same address (after `kill`).
    pub fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let args = [ARG.to_owned(), self.name.to_owned(), self.addr.to_string()];
        let log = self.dir.join(format!("{}.{}.log", self.name, self.starts));
        let mut child = Child::spawn(self.name, child::self_command(&args)?, &log, Stop::Kill)?;
        child::wait_for_http(&mut child, self.addr, "/login", READY_PATIENCE, |_| true)?;
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
        let name = self.name;
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| format!("{name} is not running"))?;
        child
            .send_line(if healthy { "well" } else { "sick" })
            .map_err(|e| format!("switching the health of {name}: {e}"))
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        // A frozen master must be thawed for a clean exit; SIGKILL works either way.
        if let Some(child) = &self.child {
            let _ = child.signal(Signal::Cont);
        }
    }
}
