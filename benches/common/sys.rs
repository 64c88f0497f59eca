//! The few system calls the benches need and std does not offer: signals other than
//! SIGKILL, the open-file limit, the clock tick, and "die with the parent".
//! Each unsafe block is one libc call with plain integer arguments.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Signals the benches send to their children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
    Stop,
    Cont,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
        }
    }
}

/// kill(2) on one process.
pub fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal.number()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises RLIMIT_NOFILE of this process (and so of every child spawned after) to
/// `wanted`, or as far as allowed. Returns the soft limit now in force.
pub fn raise_nofile(wanted: u64) -> io::Result<u64> {
    let (soft, hard) = nofile()?;
    if soft >= wanted {
        return Ok(soft);
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE (root); else stop at the hard limit.
    if set_nofile(wanted, wanted.max(hard)).is_err() {
        set_nofile(wanted.min(hard), hard)?;
    }
    Ok(nofile()?.0)
}

/// The soft RLIMIT_NOFILE in force (what children inherit).
pub fn nofile_limit() -> u64 {
    nofile().map_or(1024, |(soft, _)| soft)
}

fn nofile() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct, which we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

fn set_nofile(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit struct, which we own.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Clock ticks per second, the unit of utime/stime in /proc/<pid>/stat.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer and returns one.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// The child gets `signal` when the bench dies, even by SIGKILL: no orphan servers
/// keep ports busy after an aborted run.
pub fn die_with_parent(command: &mut Command, signal: Signal) {
    let number = signal.number();
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, number as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
