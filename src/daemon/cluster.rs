//! Cluster mode as the daemon starts it: the member task, and the tasks that connect
//! it to the rest: this instance's view goes out (from the owner's snapshots), the
//! pool's route comes in (to the owner, the only writer of the snapshot) and so do
//! "check this master now" requests (to that master's probe).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterConfig, Config};
use crate::control::cluster::member::{
    self, Command, JoinError, LeaderCommands, LocalView, MemberSettings, Update,
};
use crate::control::cluster::pool::RecordedBackend;
use crate::control::owner::{Event, OwnerHandle};
use crate::control::routing::{RoutingHandle, Snapshot};

/// The running member.
pub(super) struct Pool {
    /// Switchover and maintenance for the whole pool (the admin API's).
    pub commands: mpsc::Sender<Command>,
    /// Ends with an error only when this instance cannot join (another backend list).
    pub task: JoinHandle<Result<(), JoinError>>,
    /// Asks the member to leave the pool (it gives its lease back).
    stop: CancellationToken,
}

impl Pool {
    /// Starts the member for `cluster`; the followers go into `background`.
    pub fn start(
        config: &Config,
        cluster: &ClusterConfig,
        routing: &RoutingHandle,
        owner: &OwnerHandle,
        background: &mut JoinSet<()>,
    ) -> Pool {
        let (views_tx, views) = watch::channel(local_view(&routing.current()));
        background.spawn(follow_view(routing.subscribe(), views_tx));
        let (updates_tx, updates) = mpsc::channel(64);
        background.spawn(apply_updates(updates, owner.events(), routing.clone()));
        let (commands, commands_rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = tokio::spawn(member::run(
            member_settings(config, cluster),
            views,
            commands_rx,
            updates_tx,
            stop.clone(),
        ));
        Pool {
            commands,
            task,
            stop,
        }
    }

    /// Leaves the pool: the lease goes back, so the others need not wait for it to
    /// expire. Bounded: etcd may be away.
    pub async fn leave(self) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

fn member_settings(config: &Config, cluster: &ClusterConfig) -> MemberSettings {
    MemberSettings {
        etcd: cluster.etcd.clone(),
        instance: cluster.instance.clone(),
        key_prefix: cluster.key_prefix.clone(),
        lease_ttl: cluster.lease_ttl,
        backends: config
            .backends
            .iter()
            .map(|b| RecordedBackend {
                name: b.name.clone(),
                url: b.url.clone(),
            })
            .collect(),
        failback: config.failover.failback,
        min_active: config.failover.min_active_time,
        commands: LeaderCommands {
            masters: config
                .backends
                .iter()
                .map(|b| {
                    (
                        b.name.clone(),
                        b.url.clone(),
                        b.host.clone(),
                        b.fence_command.clone(),
                    )
                })
                .collect(),
            hooks: config.hooks.clone(),
            timeout: config.failover.command_timeout,
        },
    }
}

/// This instance's own verdict on each master (its election's health).
fn local_view(snapshot: &Snapshot) -> LocalView {
    snapshot
        .masters
        .iter()
        .map(|status| (status.master.name.clone(), status.health))
        .collect()
}

/// Keeps the member's view in line with the owner's snapshots.
async fn follow_view(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    views: watch::Sender<LocalView>,
) {
    loop {
        let view = local_view(&snapshots.borrow_and_update());
        views.send_if_modified(|current| {
            let changed = *current != view;
            if changed {
                *current = view;
            }
            changed
        });
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

/// The member's updates: the route to the owner (answered once published), "check
/// now" to the probe of that master.
async fn apply_updates(
    mut updates: mpsc::Receiver<Update>,
    owner: mpsc::Sender<Event>,
    routing: RoutingHandle,
) {
    while let Some(update) = updates.recv().await {
        match update {
            Update::State { state, published } => {
                let (reply, answer) = oneshot::channel();
                if owner
                    .send(Event::Cluster {
                        state,
                        published: reply,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                if answer.await.is_ok() {
                    let _ = published.send(());
                }
            }
            Update::CheckNow { master } => {
                let snapshot = routing.current();
                if let Some(status) = snapshot.masters.iter().find(|s| s.master.name == master) {
                    tracing::debug!(%master, "checking at once, at another instance's request");
                    status.master.check_now.notify_one();
                }
            }
        }
    }
}
