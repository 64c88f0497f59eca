//! Active-active mode (`pool.mode = "active-active"`): what a snapshot carries of each
//! replica (takes traffic or not, its cookie token, its load as last read), and what
//! the proxy counts per replica itself (requests in flight, placements by reason).
//!
//! The loads come from the load pollers (`crate::control::load`) through the owner,
//! the only writer of snapshots; the counts are atomics on each master, written by
//! the request path and the `[[tcp]]` listeners, read by placement, `/status` and the
//! metrics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use crate::control::placement::Reason;

/// A replica's load as Jenkins reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Busy executors: running builds.
    pub builds: u64,
    /// Items in the build queue.
    pub queued: u64,
    /// Online agents (computers other than the built-in node).
    pub agents: u64,
}

impl Load {
    /// Builds + queued items + online agents.
    pub fn total(&self) -> u64 {
        self.builds
            .saturating_add(self.queued)
            .saturating_add(self.agents)
    }
}

/// The outcome of the last attempt to read a replica's load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadReading {
    /// Not read yet (since start, or since the replica joined the pool).
    NotRead,
    Read {
        load: Load,
        at: SystemTime,
    },
    /// The last read failed: the replica is placed after those whose load is known.
    Failed {
        error: String,
        at: SystemTime,
    },
}

impl LoadReading {
    pub fn load(&self) -> Option<Load> {
        match self {
            LoadReading::Read { load, .. } => Some(*load),
            _ => None,
        }
    }

    /// Why there is no load to place by, if there is none.
    pub fn error(&self) -> Option<&str> {
        match self {
            LoadReading::NotRead => Some("not read yet"),
            LoadReading::Read { .. } => None,
            LoadReading::Failed { error, .. } => Some(error),
        }
    }

    /// When it was last read (or failed to be).
    pub fn at(&self) -> Option<SystemTime> {
        match self {
            LoadReading::NotRead => None,
            LoadReading::Read { at, .. } | LoadReading::Failed { at, .. } => Some(*at),
        }
    }
}

/// One replica in a snapshot (file order, as the snapshot's masters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Healthy and enabled: it takes traffic.
    pub routable: bool,
    /// The value of the affinity cookie that names it (`placement::token`).
    pub token: u64,
    pub load: LoadReading,
}

/// Active-active mode's part of a snapshot: one entry per master, file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicas {
    pub entries: Vec<Replica>,
}

/// What the proxy counts per replica. Lives on the master, so it survives snapshots
/// (and reloads that keep the master).
#[derive(Debug, Default)]
pub struct ReplicaCounters {
    /// Requests placed on it that wait for its response head.
    in_flight: AtomicUsize,
    /// Placements since start, by [`Reason::index`].
    placements: [AtomicU64; 4],
}

impl ReplicaCounters {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn placed(&self, reason: Reason) {
        self.placements[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn placements(&self, reason: Reason) -> u64 {
        self.placements[reason.index()].load(Ordering::Relaxed)
    }

    /// Placements that started a new session here (least load, or replaced).
    pub fn sessions(&self) -> u64 {
        Reason::ALL
            .into_iter()
            .filter(|reason| reason.new_session())
            .map(|reason| self.placements(reason))
            .sum()
    }

    pub(crate) fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_in_flight_and_sessions() {
        let counters = ReplicaCounters::default();
        counters.enter();
        counters.enter();
        counters.leave();
        assert_eq!(counters.in_flight(), 1);
        for reason in [
            Reason::Cookie,
            Reason::LeastLoad,
            Reason::Replaced,
            Reason::LeastLoad,
        ] {
            counters.placed(reason);
        }
        assert_eq!(counters.placements(Reason::LeastLoad), 2);
        assert_eq!(counters.sessions(), 3);
        let load = Load {
            builds: 2,
            queued: 1,
            agents: 4,
        };
        assert_eq!(load.total(), 7);
        assert_eq!(LoadReading::NotRead.error(), Some("not read yet"));
    }
}
