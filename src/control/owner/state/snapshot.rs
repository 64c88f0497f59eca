//! What the owner publishes after each event: the snapshot, its generation, and in
//! active-active mode every replica with its load (as the load pollers last read it).

use std::sync::Arc;

use super::OwnerState;
use crate::control::election::Health;
use crate::control::load::LoadReport;
use crate::control::owner::publish::Routed;
use crate::control::placement::token;
use crate::control::replicas::{LoadReading, Replica, Replicas};
use crate::control::routing::Snapshot;

impl OwnerState {
    /// The snapshot to publish after an event: its generation moves on when what the
    /// request path acts on has changed.
    pub(in crate::control::owner) fn publish(&mut self) -> Snapshot {
        let mut snapshot = self.snapshot();
        let routed = Routed::of(&snapshot);
        if routed != self.routed {
            self.generation += 1;
            self.routed = routed;
        }
        snapshot.generation = self.generation;
        snapshot
    }

    pub(in crate::control::owner) fn snapshot(&self) -> Snapshot {
        if self.settings.cluster {
            return self.pool_snapshot();
        }
        // Traffic goes only to a master readiness routes to: promoted, not restarting.
        let active = self
            .election
            .active()
            .filter(|&index| self.readiness.routes_to(&self.statuses[index].master));
        self.snapshot_with(active)
    }

    pub(super) fn snapshot_with(&self, active: Option<usize>) -> Snapshot {
        Snapshot {
            generation: self.generation,
            transition_count: self.transition_count,
            active,
            promotion: self.readiness.hold(),
            alarms: self.readiness.alarms().to_vec(),
            active_since: self.active_since,
            failovers: self.failovers,
            masters: self.statuses.clone(),
            transitions: Arc::clone(&self.transitions),
            started_at: self.started_at,
            failback: self.election.policy().failback,
            cluster: None,
            valid_until: None,
            replicas: self.replicas(),
        }
    }

    /// Active-active mode: a load poller's report (one of a master a reload removed is
    /// ignored).
    pub(super) fn record_load(&mut self, report: LoadReport) {
        if self.index_of(&report.master).is_some() {
            self.loads
                .insert(report.master.name.clone(), report.reading);
        }
    }

    /// Active-active mode: every replica, file order. Routable: healthy and enabled.
    fn replicas(&self) -> Option<Arc<Replicas>> {
        if !self.settings.active_active {
            return None;
        }
        let entries = self.statuses.iter().map(|status| Replica {
            routable: status.health == Health::Up && !status.disabled,
            token: token(&status.master.name, &status.master.url),
            load: (self.loads.get(&status.master.name))
                .cloned()
                .unwrap_or(LoadReading::NotRead),
        });
        Some(Arc::new(Replicas {
            entries: entries.collect(),
        }))
    }
}
