//! The few system calls the benches need and std does not offer: signals other than
//! SIGKILL, the open-file limit, the clock tick, and "die with the parent", through
//! rustix's safe wrappers. One unsafe block is left: std's `pre_exec` hook is unsafe
//! itself (its closure runs in the child between fork and exec).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::{Pid, Resource, Rlimit};

/// Signals the benches send to their children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
    Stop,
    Cont,
}

impl Signal {
    fn number(self) -> rustix::process::Signal {
        match self {
            Signal::Term => rustix::process::Signal::TERM,
            Signal::Kill => rustix::process::Signal::KILL,
            Signal::Stop => rustix::process::Signal::STOP,
            Signal::Cont => rustix::process::Signal::CONT,
        }
    }
}

/// kill(2) on one process.
pub fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    Ok(rustix::process::kill_process(pid, signal.number())?)
}

/// Raises RLIMIT_NOFILE of this process (and so of every child spawned after) to
/// `wanted`, or as far as allowed. Returns the soft limit now in force.
pub fn raise_nofile(wanted: u64) -> io::Result<u64> {
    let (soft, hard) = nofile();
    if soft >= wanted {
        return Ok(soft);
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE (root); else stop at the hard limit.
    if set_nofile(wanted, wanted.max(hard)).is_err() {
        set_nofile(wanted.min(hard), hard)?;
    }
    Ok(nofile().0)
}

/// The soft RLIMIT_NOFILE in force (what children inherit).
pub fn nofile_limit() -> u64 {
    nofile().0
}

/// (soft, hard); unlimited is `u64::MAX`, as RLIM_INFINITY.
fn nofile() -> (u64, u64) {
    let limit = rustix::process::getrlimit(Resource::Nofile);
    (
        limit.current.unwrap_or(u64::MAX),
        limit.maximum.unwrap_or(u64::MAX),
    )
}

fn set_nofile(soft: u64, hard: u64) -> io::Result<()> {
    let finite = |value: u64| (value != u64::MAX).then_some(value);
    let limit = Rlimit {
        current: finite(soft),
        maximum: finite(hard),
    };
    Ok(rustix::process::setrlimit(Resource::Nofile, limit)?)
}

/// Clock ticks per second, the unit of utime/stime in /proc/<pid>/stat.
pub fn clock_ticks_per_second() -> u64 {
    Some(rustix::param::clock_ticks_per_second())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// The child gets `signal` when the bench dies, even by SIGKILL: no orphan servers
/// keep ports busy after an aborted run.
pub fn die_with_parent(command: &mut Command, signal: Signal) {
    let signal = signal.number();
    // SAFETY: the closure runs between fork and exec, where only async-signal-safe
    // calls are allowed: it makes one system call, prctl(PR_SET_PDEATHSIG), and
    // allocates nothing (an error is a raw OS error code).
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(signal))?;
            Ok(())
        });
    }
}
