//! Keeps the two requests of one Jenkins CLI call on one master.
//!
//! The CLI's HTTP mode opens a download request and then an upload request that share
//! a `Session` header; Jenkins pairs them in memory, so both must reach the same
//! master. If the active master changed between them, the second request is refused at
//! once with a clear error (sending it to the old master would break the one-active
//! invariant; sending it to the new one would hang the CLI).
//!
//! Any client can send any `Session` header, so what is remembered is bounded: ids
//! longer than [`MAX_ID_BYTES`] are not tracked (the CLI sends a UUID), at most
//! [`MAX_OPEN`] sessions are kept (the oldest is forgotten first), each for at most
//! [`SESSION_TTL`]. A forgotten session's second request is simply forwarded.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries older than this are forgotten (a CLI call whose second side never came).
const SESSION_TTL: Duration = Duration::from_secs(600);
/// Most open sessions remembered at once; a new one past this forgets the oldest.
/// With ids of at most `MAX_ID_BYTES`, this holds the map to about a megabyte.
pub const MAX_OPEN: usize = 4096;
/// Longest `Session` value tracked. The Jenkins CLI sends a UUID (36 bytes); a longer
/// value is forwarded unchanged but not paired.
pub const MAX_ID_BYTES: usize = 128;
/// A map that emptied (or shrank to a quarter) gives back its memory past this capacity.
const KEEP_CAPACITY: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// First request of the session: remembered on this master.
    First,
    /// Second request, same master as the first: go ahead.
    Paired,
    /// Second request, but the first went to this other master.
    Moved { first_master: String },
    /// The id is longer than [`MAX_ID_BYTES`]: not remembered, go ahead.
    Untracked,
}

/// Open CLI sessions: session id -> the master its first request went to (by name).
#[derive(Debug, Default)]
pub struct CliSessions {
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    /// Session id -> (first master, key in `by_age`).
    by_id: HashMap<Arc<str>, (String, u64)>,
    /// Insertion order (a counter, so keys never collide) -> (when, session id):
    /// the oldest entry is the first, found without a scan.
    by_age: BTreeMap<u64, (Instant, Arc<str>)>,
    next: u64,
}

impl CliSessions {
    /// Records or checks `session` against the master that will receive the request.
    pub fn check(&self, session: &str, master: &str) -> Check {
        self.check_at(session, master, Instant::now())
    }

    fn check_at(&self, session: &str, master: &str, now: Instant) -> Check {
        if session.len() > MAX_ID_BYTES {
            return Check::Untracked;
        }
        let mut open = match self.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(first_master) = open.remove(session) {
            return if first_master == master {
                Check::Paired
            } else {
                Check::Moved { first_master }
            };
        }
        open.expire(now);
        while open.by_id.len() >= MAX_OPEN {
            if !open.forget_oldest() {
                break;
            }
        }
        open.insert(session, master, now);
        Check::First
    }

    /// The master the first request of `session` went to, while it is remembered
    /// (active-active mode sends the second one there).
    pub fn first_master(&self, session: &str) -> Option<String> {
        let open = match self.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        };
        open.by_id.get(session).map(|(master, _)| master.clone())
    }

    /// Forgets `session` (its first request is being sent to another master instead).
    pub fn forget(&self, session: &str) {
        let mut open = match self.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        };
        open.remove(session);
    }

    /// Sessions remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        match self.open.lock() {
            Ok(open) => open.by_id.len(),
            Err(poisoned) => poisoned.into_inner().by_id.len(),
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Open {
    fn insert(&mut self, session: &str, master: &str, now: Instant) {
        let id: Arc<str> = Arc::from(session);
        let order = self.next;
        self.next += 1;
        self.by_age.insert(order, (now, Arc::clone(&id)));
        self.by_id.insert(id, (master.to_owned(), order));
    }

    /// Forgets `session`; returns the master its first request went to.
    fn remove(&mut self, session: &str) -> Option<String> {
        let (master, order) = self.by_id.remove(session)?;
        self.by_age.remove(&order);
        self.shrink();
        Some(master)
    }

    /// Forgets the oldest session; false when there is none.
    fn forget_oldest(&mut self) -> bool {
        let Some((_, (_, id))) = self.by_age.pop_first() else {
            return false;
        };
        self.by_id.remove(&id);
        self.shrink();
        true
    }

    /// Forgets sessions older than the TTL: they are the first ones in `by_age`.
    fn expire(&mut self, now: Instant) {
        while let Some((_, (at, _))) = self.by_age.first_key_value() {
            if now.saturating_duration_since(*at) < SESSION_TTL {
                break;
            }
            self.forget_oldest();
        }
    }

    /// Gives memory back after a burst: a hash map never shrinks by itself. Only at a
    /// quarter full, so that a map near a threshold does not rehash on every request.
    fn shrink(&mut self) {
        let capacity = self.by_id.capacity();
        if capacity > KEEP_CAPACITY && self.by_id.len() * 4 <= capacity {
            self.by_id.shrink_to(self.by_id.len() * 2);
        }
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
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn a_long_id_is_not_tracked() {
        let sessions = CliSessions::default();
        let uuid = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b";
        assert_eq!(sessions.check(uuid, "a"), Check::First);
        let longest = "x".repeat(MAX_ID_BYTES);
        assert_eq!(sessions.check(&longest, "a"), Check::First);
        let long = "x".repeat(MAX_ID_BYTES + 1);
        assert_eq!(sessions.check(&long, "a"), Check::Untracked);
        assert_eq!(sessions.check(&long, "b"), Check::Untracked);
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn past_the_cap_the_oldest_is_forgotten_first() {
        let sessions = CliSessions::default();
        let now = Instant::now();
        for i in 0..MAX_OPEN {
            assert_eq!(sessions.check_at(&format!("s{i}"), "a", now), Check::First);
        }
        assert_eq!(sessions.len(), MAX_OPEN);
        // s1 is paired (and forgotten) out of order: s0 stays the oldest.
        assert_eq!(sessions.check_at("s1", "a", now), Check::Paired);
        assert_eq!(sessions.check_at("new-1", "a", now), Check::First);
        assert_eq!(sessions.len(), MAX_OPEN, "room was made by the pairing");
        assert_eq!(sessions.check_at("new-2", "a", now), Check::First);
        assert_eq!(sessions.len(), MAX_OPEN, "the cap holds");
        // s0 was forgotten for new-2: its second request counts as a first one.
        assert_eq!(sessions.check_at("s0", "b", now), Check::First);
        // s2 (then the oldest) was forgotten for s0, and s3 for s2; s4 is remembered.
        assert_eq!(sessions.check_at("s2", "b", now), Check::First);
        assert_eq!(
            sessions.check_at("s4", "b", now),
            Check::Moved {
                first_master: "a".into()
            }
        );
        assert_eq!(sessions.check_at("new-1", "a", now), Check::Paired);
    }

    #[test]
    fn expired_sessions_are_forgotten() {
        let sessions = CliSessions::default();
        let start = Instant::now();
        assert_eq!(sessions.check_at("old", "a", start), Check::First);
        let later = start + SESSION_TTL / 2;
        assert_eq!(sessions.check_at("young", "a", later), Check::First);
        // One insertion removes every expired entry, and only those.
        let expired = start + SESSION_TTL;
        assert_eq!(sessions.check_at("third", "a", expired), Check::First);
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions.check_at("old", "b", expired), Check::First);
        assert_eq!(
            sessions.check_at("young", "b", expired),
            Check::Moved {
                first_master: "a".into()
            }
        );
    }

    #[test]
    fn an_emptied_map_gives_its_memory_back() {
        let sessions = CliSessions::default();
        let now = Instant::now();
        for i in 0..MAX_OPEN {
            sessions.check_at(&format!("s{i}"), "a", now);
        }
        for i in 0..MAX_OPEN {
            assert_eq!(sessions.check_at(&format!("s{i}"), "a", now), Check::Paired);
        }
        assert!(sessions.is_empty());
        let open = sessions.open.lock().expect("lock");
        assert!(
            open.by_id.capacity() <= KEEP_CAPACITY,
            "capacity {} after emptying",
            open.by_id.capacity()
        );
        assert!(open.by_age.is_empty());
    }
}
