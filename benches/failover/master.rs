//! Sample masters in their own processes, so a fault is a real one: SIGKILL (the
//! kernel resets every connection), SIGSTOP (connections stay open, nothing answers).
//!
//! The child is this bench binary run as `--serve-master NAME ADDR`: the library's
//! `SampleMaster` on ADDR, whose health path is switched by lines on stdin (`sick`,
//! `well`): the control channel stays out of the proxy's path. It exits when its
//! stdin closes.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use jenkins_ha_proxy::sample::SampleMaster;

use crate::common::child;
use crate::common::master::MasterChild;
use crate::common::sys::Signal;

pub const ARG: &str = "--serve-master";

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
    process: MasterChild,
}

impl MasterProcess {
    /// Starts the master on a free port of `ip` and waits until it answers.
    pub fn start(name: &'static str, ip: [u8; 4], dir: &Path) -> Result<MasterProcess, String> {
        let mut master = MasterProcess {
            name,
            addr: child::free_port(ip)?,
            process: MasterChild::new(name, dir, 0),
        };
        master.spawn()?;
        Ok(master)
    }

    /// Starts the process again on the same address (after `kill`).
    pub fn spawn(&mut self) -> Result<(), String> {
        let args = [ARG.to_owned(), self.name.to_owned(), self.addr.to_string()];
        self.process.spawn(&args, self.addr)
    }

    /// SIGKILL, like a crashed JVM: the kernel resets its connections.
    pub fn kill(&mut self) -> Result<(), String> {
        self.process.kill()
    }

    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        self.process.signal(signal)
    }

    /// Health path answers 503 (`false`) or 200 (`true`).
    pub fn set_healthy(&mut self, healthy: bool) -> Result<(), String> {
        self.process.set_healthy(healthy)
    }
}
