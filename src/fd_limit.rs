//! The process's open-file limit: raised at start-up, checked against
//! `proxy.max_connections`, and told apart from master failures when it is hit.
//!
//! Running out of descriptors (EMFILE) or of kernel socket memory is our problem,
//! not the master's: a probe or a connect that fails that way says nothing about the
//! master, so it must never make one look down. Otherwise a client flood could push
//! every master "down" and leave no master active at all.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::io::Errno;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors kept for everything but client connections: listeners, probes, the
/// runtime, logs, the state file, admin calls.
const RESERVE: u64 = 64;

/// Raises the soft RLIMIT_NOFILE to the hard limit (a shell's default soft limit is
/// often 1024 while the hard one is far higher) and returns the soft limit now in force.
/// None if the limit cannot be read (then nothing is changed).
pub fn raise_soft_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current?;
    let Some(hard) = limit.maximum else {
        return Some(soft); // soft is finite but hard unlimited: leave it as it is
    };
    if soft >= hard {
        return Some(soft);
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => Some(hard),
        Err(error) => {
            tracing::debug!(%error, soft, hard, "could not raise the soft open-file limit");
            Some(soft)
        }
    }
}

/// Client connections that fit in `open_files` descriptors: each proxied connection
/// may hold two (the client's and the master's).
pub fn connections_within(open_files: u64) -> u64 {
    open_files.saturating_sub(RESERVE) / 2
}

/// Raises the limit and warns when `max_connections` cannot be reached within it.
pub fn prepare(max_connections: usize) {
    let Some(open_files) = raise_soft_limit() else {
        return;
    };
    let fit = connections_within(open_files);
    if max_connections as u64 > fit {
        tracing::warn!(
            open_files,
            max_connections,
            "the open-file limit ({open_files}) allows about {fit} client connections, \
             fewer than proxy.max_connections ({max_connections}): past that, new \
             connections wait unaccepted; raise LimitNOFILE (systemd) or ulimit -n, or \
             lower proxy.max_connections"
        );
    } else {
        tracing::info!(open_files, "open-file limit");
    }
}

/// True when `error` means this process (or the host) ran out of descriptors, socket
/// buffers or local ports: nothing the remote end did.
pub fn is_local_exhaustion(error: &io::Error) -> bool {
    let Some(code) = error.raw_os_error() else {
        return false;
    };
    [
        Errno::MFILE,
        Errno::NFILE,
        Errno::NOBUFS,
        Errno::NOMEM,
        Errno::ADDRNOTAVAIL,
    ]
    .iter()
    .any(|errno| errno.raw_os_error() == code)
}

/// Unix second of the last [`log_exhaustion`] line; written and read by whichever task
/// hits the limit.
static LAST_EXHAUSTION_LOG: AtomicU64 = AtomicU64::new(0);

/// Logs, at most once a second for the whole process, that `what` failed because this
/// process is out of resources: at the limit every request would say it again.
pub fn log_exhaustion(what: &str, error: &dyn std::fmt::Display) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    if LAST_EXHAUSTION_LOG.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(%error, "{what}: this process is out of file descriptors or socket \
            memory; the master is not marked down for it");
    }
}

/// What an accept loop does when `accept` fails: typically EMFILE, and then the
/// failing connection stays in the kernel's backlog, so an immediate retry would spin.
/// Logs at most once a second per listener, naming the limit, then backs off briefly.
#[derive(Debug)]
pub struct AcceptErrors {
    /// Which listener, for the log line (`proxy`, `admin`, a `[[tcp]]` name).
    listener: String,
    last_logged: Option<Instant>,
    suppressed: u64,
}

/// Pause after a failed accept: short, since descriptors free up as connections end.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

impl AcceptErrors {
    pub fn new(listener: impl Into<String>) -> AcceptErrors {
        AcceptErrors {
            listener: listener.into(),
            last_logged: None,
            suppressed: 0,
        }
    }

    /// Logs `error` (rate-limited) and waits before the next accept.
    pub async fn failed(&mut self, error: &io::Error) {
        let due = self
            .last_logged
            .map_or(true, |at| at.elapsed() >= Duration::from_secs(1));
        if due {
            let listener = self.listener.as_str();
            let suppressed = std::mem::take(&mut self.suppressed);
            if error.raw_os_error() == Some(Errno::MFILE.raw_os_error()) {
                let open_files = getrlimit(Resource::Nofile).current;
                tracing::error!(listener, %error, ?open_files, suppressed,
                    "accept failed: the process is at its open-file limit; new connections \
                     wait in the listen backlog until descriptors free up; raise LimitNOFILE \
                     (systemd) or ulimit -n, or lower proxy.max_connections");
            } else {
                tracing::warn!(listener, %error, suppressed, "accept failed; retrying");
            }
            self.last_logged = Some(Instant::now());
        } else {
            self.suppressed += 1;
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_or_ports_is_local() {
        for errno in [
            Errno::MFILE,
            Errno::NFILE,
            Errno::NOBUFS,
            Errno::ADDRNOTAVAIL,
        ] {
            let error = io::Error::from_raw_os_error(errno.raw_os_error());
            assert!(is_local_exhaustion(&error), "{error}");
        }
    }

    #[test]
    fn a_refused_or_reset_connection_is_the_remote_end() {
        for errno in [
            Errno::CONNREFUSED,
            Errno::CONNRESET,
            Errno::HOSTUNREACH,
            Errno::TIMEDOUT,
        ] {
            let error = io::Error::from_raw_os_error(errno.raw_os_error());
            assert!(!is_local_exhaustion(&error), "{error}");
        }
        let synthetic = io::Error::other("no os error");
        assert!(!is_local_exhaustion(&synthetic));
    }

    #[test]
    fn each_connection_counts_two_descriptors_after_the_reserve() {
        assert_eq!(connections_within(1024), (1024 - RESERVE) / 2);
        assert_eq!(connections_within(10), 0);
    }
}
