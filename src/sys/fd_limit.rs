//! The process's open-file limit: raised at start-up, checked against
//! `proxy.max_connections`, and told apart from master failures when it is hit.
//!
//! Running out of descriptors (EMFILE) or of kernel socket memory is our problem,
//! not the master's: a probe or a connect that fails that way says nothing about the
//! master, so it must never make one look down. Otherwise a client flood could push
//! every master "down" and leave no master active at all.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::io::Errno;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors kept for everything but client connections: listeners, probes, the
/// runtime, logs, the state file, admin calls (with a large enough limit; an eighth
/// of a small one).
const RESERVE: u64 = 128;

/// The soft open-file limit in force, set by [`prepare`] at start-up; 0 while unknown
/// (the daemon run in-process by tests), and then no descriptor is refused.
static OPEN_FILES: AtomicU64 = AtomicU64::new(0);

/// What a new descriptor is for, from the most to the least expendable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A client connection (proxy listener, `[[tcp]]` listener).
    Client,
    /// A connection to a master for traffic.
    Upstream,
}

/// The descriptors above which `claim` gets none, with `open_files` the limit.
fn ceiling(open_files: u64, claim: Claim) -> u64 {
    let reserve = RESERVE.min(open_files / 8);
    match claim {
        Claim::Client => open_files - reserve,
        // Clients leave room for the master connections they need; those leave the
        // last quarter of the reserve to the admin API and the health checks.
        Claim::Upstream => open_files - reserve / 4,
    }
}

/// True when `socket` took one of the descriptors kept for what comes after `claim`:
/// the caller closes it (a client connection is refused, a request gets 503), so that
/// clients can never take the descriptors `/status` and the health checks need.
///
/// Linux hands out the lowest free descriptor, so a socket numbered n means the n
/// below it are all in use: comparing the number costs no system call.
pub fn in_reserve(socket: &impl AsRawFd, claim: Claim) -> bool {
    let open_files = OPEN_FILES.load(Ordering::Relaxed);
    let Ok(number) = u64::try_from(socket.as_raw_fd()) else {
        return false;
    };
    open_files > 0 && number >= ceiling(open_files, claim)
}

/// Logs that `listener` closed a new client connection because only the reserve of
/// descriptors is left (see [`in_reserve`]).
pub fn log_reserve_reached(listener: &str) {
    let open_files = OPEN_FILES.load(Ordering::Relaxed);
    tracing::error!(
        listener,
        open_files,
        "near the open-file limit: closing new client connections, keeping the last \
         descriptors for the admin API and the health checks; raise LimitNOFILE (systemd) \
         or ulimit -n, or lower the max_connections limits"
    );
}

/// Rate-limits the log line of an accept loop that closes connections it cannot
/// serve: at every connection it would say it again.
#[derive(Debug, Default)]
pub struct Refusals {
    last_logged: Option<Instant>,
}

impl Refusals {
    /// Runs `log` unless it ran less than a second ago.
    pub fn log(&mut self, log: impl FnOnce()) {
        if self
            .last_logged
            .map_or(true, |at| at.elapsed() >= Duration::from_secs(1))
        {
            log();
            self.last_logged = Some(Instant::now());
        }
    }
}

/// The error a refused master connection reports: as if the limit had been reached,
/// which it nearly was (so it is local, never the master's fault).
pub fn reserve_error() -> io::Error {
    io::Error::from_raw_os_error(Errno::MFILE.raw_os_error())
}

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

/// What the configured limits may hold open at once, in descriptors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    /// `proxy.max_connections`: each may hold a tunnel to a master too.
    pub clients: u64,
    /// The sum of every `[[backend]] max_connections`.
    pub masters: u64,
    /// The sum of every `[[tcp]] max_connections`: two descriptors each.
    pub forwards: u64,
}

/// Client connections that fit in `open_files` descriptors beside the reserve, the
/// connections to the masters and the TCP forwards: each client connection may hold
/// two (its own and a tunnel's).
pub fn connections_within(open_files: u64, budget: &Budget) -> u64 {
    ceiling(open_files, Claim::Client)
        .saturating_sub(budget.masters)
        .saturating_sub(budget.forwards.saturating_mul(2))
        / 2
}

/// Raises the limit, remembers it for [`in_reserve`], and warns when the configured
/// limits cannot all be reached within it.
pub fn prepare(budget: &Budget) {
    let Some(open_files) = raise_soft_limit() else {
        return;
    };
    OPEN_FILES.store(open_files, Ordering::Relaxed);
    let fit = connections_within(open_files, budget);
    let max_connections = budget.clients;
    if max_connections > fit {
        tracing::warn!(
            open_files,
            max_connections,
            "the open-file limit ({open_files}) allows about {fit} client connections, \
             fewer than proxy.max_connections ({max_connections}) beside the masters' \
             max_connections ({}) and the TCP forwards ({}): past that, new client \
             connections are closed at once; raise LimitNOFILE (systemd) or ulimit -n, or \
             lower these limits",
            budget.masters,
            budget.forwards
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
    fn each_connection_counts_two_descriptors_after_the_reserve_and_the_masters() {
        let none = Budget::default();
        assert_eq!(connections_within(4096, &none), (4096 - RESERVE) / 2);
        // A small limit keeps an eighth of itself.
        assert_eq!(connections_within(1024, &none), (1024 - 128) / 2);
        assert_eq!(connections_within(48, &none), (48 - 6) / 2);
        let busy = Budget {
            clients: 100,
            masters: 1024,
            forwards: 100,
        };
        assert_eq!(
            connections_within(4096, &busy),
            (4096 - RESERVE - 1024 - 200) / 2
        );
        assert_eq!(connections_within(1024, &busy), 0);
    }

    #[test]
    fn clients_leave_room_for_masters_which_leave_room_for_the_admin_api() {
        for open_files in [48, 1024, 65536] {
            let client = ceiling(open_files, Claim::Client);
            let upstream = ceiling(open_files, Claim::Upstream);
            assert!(client < upstream, "{open_files}: {client} {upstream}");
            assert!(upstream < open_files, "{open_files}: {upstream}");
        }
        assert_eq!(ceiling(65536, Claim::Client), 65536 - 128);
        assert_eq!(ceiling(65536, Claim::Upstream), 65536 - 32);
    }
}
