//! Keeps the two requests of one Jenkins CLI call on one master.
//!
//! The CLI's HTTP mode opens a download request and then an upload request that share
//! a `Session` header; Jenkins pairs them in memory, so both must reach the same
//! master. If the active master changed between them, the second request is refused at
//! once with a clear error (sending it to the old master would break the one-active
//! invariant; sending it to the new one would hang the CLI).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries older than this are forgotten (a CLI call whose second side never came).
const SESSION_TTL: Duration = Duration::from_secs(600);
/// Pruning starts past this many open sessions.
const PRUNE_ABOVE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// First request of the session: remembered on this master.
    First,
    /// Second request, same master as the first: go ahead.
    Paired,
    /// Second request, but the first went to this other master.
    Moved { first_master: String },
}

/// Open CLI sessions: session id -> the master its first request went to (by name).
#[derive(Debug, Default)]
pub struct CliSessions {
    open: Mutex<HashMap<String, (String, Instant)>>,
}

impl CliSessions {
    /// Records or checks `session` against the master that will receive the request.
    pub fn check(&self, session: &str, master: &str) -> Check {
        let mut open = match self.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((first_master, _)) = open.remove(session) {
            return if first_master == master {
                Check::Paired
            } else {
                Check::Moved { first_master }
            };
        }
        if open.len() >= PRUNE_ABOVE {
            open.retain(|_, (_, at)| at.elapsed() < SESSION_TTL);
        }
        open.insert(session.to_owned(), (master.to_owned(), Instant::now()));
        Check::First
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_on_the_same_master_and_refuses_a_move() {
        let sessions = CliSessions::default();
        assert_eq!(sessions.check("s1", "a"), Check::First);
        assert_eq!(sessions.check("s1", "a"), Check::Paired);
        assert_eq!(sessions.check("s2", "a"), Check::First);
        let moved = Check::Moved {
            first_master: "a".into(),
        };
        assert_eq!(sessions.check("s2", "b"), moved);
        // Paired or refused sessions are forgotten: the id starts afresh.
        assert_eq!(sessions.check("s2", "b"), Check::First);
    }
}
