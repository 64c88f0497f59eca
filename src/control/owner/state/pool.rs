//! The owner in cluster mode: traffic follows the pool's pointer, as this instance's
//! member tells it; this instance's own election only makes its view.

use std::sync::Arc;
use std::time::SystemTime;

use super::OwnerState;
use crate::control::cluster::member::ClusterState;
use crate::control::election::Transition;
use crate::control::routing::{Cause, ClusterView, InstanceView, Snapshot};

impl OwnerState {
    /// Cluster mode: traffic follows the pool's pointer once it is open here; each
    /// change of the master it opens to is a transition, with the leader's reason.
    pub(super) fn follow_pool(&mut self, state: ClusterState, now: SystemTime) {
        if state.open && state.master != self.cluster_routed {
            let index = |name: &Option<String>| {
                name.as_deref()
                    .and_then(|name| self.statuses.iter().position(|s| s.master.name == name))
            };
            let transition = Transition {
                from: index(&self.cluster_routed),
                to: index(&state.master),
                reason: format!("{} (cluster epoch {})", state.reason, state.epoch),
            };
            let cause = Cause::from_label(&state.cause).unwrap_or(Cause::HealthCheck);
            self.cluster_routed.clone_from(&state.master);
            self.record(transition, cause, now);
        }
        self.cluster = Some(state);
    }

    /// Cluster mode: traffic goes where the pool's pointer says, once open here, and
    /// only until this instance's view runs out. Before the member's first word,
    /// requests are held (it is joining the pool).
    pub(super) fn pool_snapshot(&self) -> Snapshot {
        let Some(state) = &self.cluster else {
            let mut snapshot = self.snapshot_with(None);
            snapshot.cluster = Some(Arc::new(ClusterView {
                instance: String::new(),
                leader: None,
                epoch: 0,
                open: false,
                etcd_connected: false,
                confirmed_at: None,
                instances: Vec::new(),
                disabled: Vec::new(),
            }));
            snapshot.valid_until = Some(std::time::Instant::now());
            return snapshot;
        };
        let active = state
            .open
            .then(|| {
                let name = state.master.as_deref()?;
                self.statuses.iter().position(|s| s.master.name == name)
            })
            .flatten();
        let mut snapshot = self.snapshot_with(active);
        snapshot.cluster = Some(Arc::new(ClusterView {
            instance: state.instance.clone(),
            leader: state.leader.clone(),
            epoch: state.epoch,
            open: state.open,
            etcd_connected: state.etcd_connected,
            confirmed_at: state.confirmed_at,
            instances: state
                .instances
                .iter()
                .map(|i| InstanceView {
                    name: i.name.clone(),
                    acked: i.acked,
                    seen: i.seen.clone(),
                })
                .collect(),
            disabled: state.disabled.clone(),
        }));
        // Never acted on past it; none at all before the first confirmation.
        snapshot.valid_until = Some(state.valid_until.unwrap_or_else(std::time::Instant::now));
        snapshot
    }
}
