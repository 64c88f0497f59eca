//! The owner task: the only writer of election state.
//!
//! Probes, the request path, the admin API and reloads send it [`Event`]s; it applies
//! them with the pure rules in [`crate::control::election`], logs every change, and publishes a
//! new immutable [`Snapshot`] on the watch channel.
//!
//! Events name masters by their `Arc<Master>`, not by position: a reload can reorder
//! the pool, and a report from before it must not land on another master.

mod effects;
mod publish;
mod state;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::HookConfig;
use crate::control::cluster::member::ClusterState;
use crate::control::election::{Policy, Refusal};
use crate::control::health::ProbeReport;
use crate::control::load::LoadReport;
use crate::control::promotion::{PromotionReport, PromotionSettings};
use crate::control::readiness::ReadinessSettings;
use crate::control::routing::{Master, RoutingHandle, Snapshot};
use state::OwnerState;

/// Room for a burst of reports (every in-flight request failing at once).
const EVENT_QUEUE: usize = 4096;

/// What the owner is told.
#[derive(Debug)]
pub enum Event {
    /// A heartbeat check completed.
    Probe(ProbeReport),
    /// A connection to `master` for a client request could not be established. The
    /// owner answers with the snapshot that reflects it, so the request can go on to
    /// the new active master at once.
    TrafficConnectFailed {
        master: Arc<Master>,
        error: String,
        reply: oneshot::Sender<Arc<Snapshot>>,
    },
    /// What a hot standby said about its quiet-down state.
    QuietState { master: Arc<Master>, quieting: bool },
    /// Progress of a promotion, from its promoter task.
    Promotion(PromotionReport),
    /// An operator's command (admin API, reload).
    Control {
        command: Control,
        reply: oneshot::Sender<Result<Arc<Snapshot>, ControlError>>,
    },
    /// Cluster mode: the pool as this instance's member sees it; the route comes
    /// from it. `published` is answered once the snapshot reflects it.
    Cluster {
        state: ClusterState,
        published: oneshot::Sender<()>,
    },
    /// Active-active mode: a load poller read a replica's load (or could not).
    Load(LoadReport),
}

impl From<LoadReport> for Event {
    fn from(report: LoadReport) -> Event {
        Event::Load(report)
    }
}

impl From<ProbeReport> for Event {
    fn from(report: ProbeReport) -> Event {
        Event::Probe(report)
    }
}

impl From<PromotionReport> for Event {
    fn from(report: PromotionReport) -> Event {
        Event::Promotion(report)
    }
}

/// Operator commands.
#[derive(Debug)]
pub enum Control {
    /// Planned switchover to the named master.
    Switchover { to: String },
    /// Take a master out of the election for maintenance, or put it back.
    SetDisabled { master: String, disabled: bool },
    /// A new pool (file order) and policy from a reloaded configuration.
    Reload {
        masters: Vec<Arc<Master>>,
        policy: Policy,
        settings: OwnerSettings,
    },
}

/// What the owner needs besides the election policy.
#[derive(Debug, Clone)]
pub struct OwnerSettings {
    pub promotion: Arc<PromotionSettings>,
    pub hooks: Vec<HookConfig>,
    /// `failover.starting_grace`.
    pub starting_grace: std::time::Duration,
    /// `failover.min_active_time`.
    pub min_active_time: std::time::Duration,
    /// Cluster mode: traffic follows the pool's pointer ([`Event::Cluster`]); this
    /// instance's own election only makes its view.
    pub cluster: bool,
    /// `pool.mode = "active-active"`: every healthy, enabled master takes traffic; the
    /// snapshot carries them all (`Snapshot::replicas`) and switchovers are refused.
    pub active_active: bool,
}

impl OwnerSettings {
    fn readiness(&self) -> ReadinessSettings {
        ReadinessSettings {
            promotion: Arc::clone(&self.promotion),
            starting_grace: self.starting_grace,
        }
    }
}

/// Why a command was not carried out. Display is what the admin API answers.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no master named {name:?}; the pool has: {known}")]
    UnknownMaster { name: String, known: String },
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("the daemon is stopping")]
    Stopped,
    #[error("a switchover has no meaning in active-active mode: every healthy, enabled replica takes traffic; use `disable NAME` to take one out of placement")]
    ActiveActive,
}

/// The sending side, for probes, the request path and the admin API.
#[derive(Debug, Clone)]
pub struct OwnerHandle {
    events: mpsc::Sender<Event>,
}

impl OwnerHandle {
    pub fn events(&self) -> mpsc::Sender<Event> {
        self.events.clone()
    }

    /// Reports a failed connect on live traffic; returns the snapshot published after
    /// the owner applied it (None if the owner has stopped).
    pub async fn report_connect_failure(
        &self,
        master: &Arc<Master>,
        error: String,
    ) -> Option<Arc<Snapshot>> {
        let (reply, answer) = oneshot::channel();
        let event = Event::TrafficConnectFailed {
            master: Arc::clone(master),
            error,
            reply,
        };
        self.events.send(event).await.ok()?;
        answer.await.ok()
    }

    /// For a connection that could not be made to `master` (the `attempt`-th failure of
    /// one client connection): reports it, and returns the snapshot to try next, or None
    /// when the client should get an error (owner gone, or every master tried). A
    /// snapshot with no active master is returned too: the caller answers "unavailable".
    pub async fn failed_connect(
        &self,
        master: &Arc<Master>,
        error: String,
        attempt: usize,
    ) -> Option<Arc<Snapshot>> {
        tracing::warn!(master = %master.name, %error, "cannot connect to the active master; reporting it down");
        let snapshot = self.report_connect_failure(master, error).await?;
        (attempt < snapshot.masters.len() || snapshot.active.is_none()).then_some(snapshot)
    }

    /// Sends an operator command and waits for its outcome.
    pub async fn control(&self, command: Control) -> Result<Arc<Snapshot>, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(Event::Control { command, reply })
            .await
            .map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }
}

/// Starts the owner task for `masters` (file order). `remembered` is the master that
/// was active before the proxy restarted (from the state file). Returns the handle to
/// send it events, the read handle over its snapshots, and the task.
pub fn start(
    masters: Vec<Arc<Master>>,
    policy: Policy,
    settings: OwnerSettings,
    remembered: Option<&str>,
) -> (OwnerHandle, RoutingHandle, JoinHandle<()>) {
    let (events, inbox) = mpsc::channel(EVENT_QUEUE);
    let state = OwnerState::new(&masters, policy, settings, remembered, events.clone());
    let (publisher, receiver) = watch::channel(Arc::new(state.snapshot()));
    let task = tokio::spawn(run(state, inbox, publisher));
    (OwnerHandle { events }, RoutingHandle::new(receiver), task)
}

/// The owner task: one event at a time, then readiness catches up with the election,
/// and the new snapshot is published before anyone is answered or anything logged.
async fn run(
    mut state: OwnerState,
    mut inbox: mpsc::Receiver<Event>,
    publisher: watch::Sender<Arc<Snapshot>>,
) {
    let clock = std::time::Instant::now();
    while let Some(event) = inbox.recv().await {
        state.advance(clock.elapsed());
        let reply = state.handle(event);
        state.reconcile();
        let snapshot = Arc::new(state.publish());
        publisher.send_replace(Arc::clone(&snapshot));
        state.announce();
        match reply {
            Reply::None => {}
            Reply::Snapshot(reply) => {
                let _ = reply.send(snapshot); // the request may have gone away: fine
            }
            Reply::Control(reply, outcome) => {
                let _ = reply.send(outcome.map(|()| snapshot));
            }
            Reply::Published(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// Whom to answer once the new snapshot is published.
enum Reply {
    None,
    Snapshot(oneshot::Sender<Arc<Snapshot>>),
    Control(
        oneshot::Sender<Result<Arc<Snapshot>, ControlError>>,
        Result<(), ControlError>,
    ),
    Published(oneshot::Sender<()>),
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::config::{Failback, HealthConfig, Standby};
    use crate::control::health::{CheckInfo, ProbeError};
    use crate::upstream::{Upstream, UpstreamSettings};

    fn master(name: &str, fence_command: Option<Vec<String>>) -> Arc<Master> {
        Arc::new(Master {
            name: name.to_owned(),
            url: format!("http://{name}:8080"),
            host: name.to_owned(),
            standby: Standby::None,
            start_command: None,
            fence_command,
            upstream: Upstream::new(name, 8080, UpstreamSettings::for_tests()),
            check_now: tokio::sync::Notify::new(),
            counters: Default::default(),
        })
    }

    fn settings() -> OwnerSettings {
        OwnerSettings {
            promotion: Arc::new(PromotionSettings {
                require_fence: false,
                promote_timeout: Duration::from_secs(5),
                command_timeout: Duration::from_secs(5),
                call_timeout: Duration::from_secs(1),
                credentials: None,
                health: HealthConfig {
                    path: "/login".into(),
                    interval: Duration::from_secs(2),
                    timeout: Duration::from_secs(1),
                    rise: 1,
                    fall: 1,
                    expect_header: None,
                    expect_body: None,
                },
            }),
            hooks: Vec::new(),
            starting_grace: Duration::ZERO,
            min_active_time: Duration::ZERO,
            cluster: false,
            active_active: false,
        }
    }

    fn checked(master: &Arc<Master>, passed: bool) -> Event {
        Event::Probe(ProbeReport {
            master: Arc::clone(master),
            at: SystemTime::now(),
            latency: Duration::ZERO,
            outcome: if passed {
                Ok(CheckInfo::default())
            } else {
                Err(ProbeError::Timeout(Duration::from_secs(1)))
            },
            urgent: false,
        })
    }

    /// Waits for the first snapshot that satisfies `done`.
    async fn until(routing: &RoutingHandle, done: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
        let mut snapshots = routing.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let snapshot = Arc::clone(&snapshots.borrow_and_update());
                if done(&snapshot) {
                    return snapshot;
                }
                snapshots.changed().await.expect("the owner runs");
            }
        });
        waited.await.expect("in time")
    }

    fn active(snapshot: &Snapshot) -> Option<&str> {
        snapshot.active_master().map(|m| m.name.as_str())
    }

    #[tokio::test]
    async fn the_generation_moves_whenever_traffic_moves_a_completed_promotion_included() {
        // master-a has a fence command, so traffic reaches master-b only after a
        // promotion (fence master-a, then master-b is ready).
        let a = master("master-a", Some(vec!["true".to_owned()]));
        let b = master("master-b", None);
        let policy = Policy {
            rise: 1,
            fall: 1,
            failback: Failback::Never,
        };
        let pool = vec![Arc::clone(&a), Arc::clone(&b)];
        let (owner, routing, _task) = start(pool, policy, settings(), None);
        assert_eq!(routing.current().generation, 0);
        let events = owner.events();
        for event in [checked(&a, true), checked(&b, true)] {
            events.send(event).await.expect("the owner runs");
        }
        let first = until(&routing, |s| active(s) == Some("master-a")).await;
        assert_eq!((first.generation, first.transition_count), (1, 1));

        events
            .send(checked(&a, false))
            .await
            .expect("the owner runs");
        // Held for master-b (one generation), then master-b gets traffic (another).
        let moved = until(&routing, |s| active(s) == Some("master-b")).await;
        assert_eq!((moved.generation, moved.transition_count), (3, 2));
        assert!(moved.promotion.is_none());

        // A check that changes nothing the request path acts on moves nothing.
        events
            .send(checked(&b, true))
            .await
            .expect("the owner runs");
        let after = until(&routing, |s| {
            s.masters[1].last_check != moved.masters[1].last_check
        })
        .await;
        assert_eq!(after.generation, 3);
    }

    #[tokio::test]
    async fn active_active_publishes_every_replica_and_their_loads() {
        use crate::control::load::LoadReport;
        use crate::control::replicas::{Load, LoadReading};
        let (a, b) = (master("master-a", None), master("master-b", None));
        let policy = Policy {
            rise: 1,
            fall: 1,
            failback: Failback::Never,
        };
        let mut settings = settings();
        settings.active_active = true;
        let pool = vec![Arc::clone(&a), Arc::clone(&b)];
        let (owner, routing, _task) = start(pool, policy, settings, None);
        let events = owner.events();
        for event in [checked(&a, true), checked(&b, true)] {
            events.send(event).await.expect("the owner runs");
        }
        let both = until(&routing, |s| s.routed().len() == 2).await;
        assert!(both.routes_to(&a) && both.routes_to(&b));
        let replicas = both.replicas.as_ref().expect("active-active");
        assert_eq!(replicas.entries[0].load, LoadReading::NotRead);
        assert_ne!(replicas.entries[0].token, replicas.entries[1].token);

        // A load changes nothing the request path acts on: same generation.
        let load = Load {
            builds: 2,
            queued: 1,
            agents: 3,
        };
        let reading = LoadReading::Read {
            load,
            at: SystemTime::now(),
        };
        let report = LoadReport {
            master: Arc::clone(&b),
            reading,
        };
        events
            .send(Event::Load(report))
            .await
            .expect("the owner runs");
        let loaded = until(&routing, |s| {
            s.replicas
                .as_ref()
                .is_some_and(|r| r.entries[1].load.load() == Some(load))
        })
        .await;
        assert_eq!(loaded.generation, both.generation);

        // Disabled: out of placement at once, and the generation moves.
        let disable = Control::SetDisabled {
            master: "master-b".into(),
            disabled: true,
        };
        let disabled = owner.control(disable).await.expect("disabled");
        assert!(!disabled.routes_to(&b) && disabled.routes_to(&a));
        assert_eq!(disabled.generation, both.generation + 1);
        let switchover = owner
            .control(Control::Switchover {
                to: "master-a".into(),
            })
            .await;
        assert!(matches!(switchover, Err(ControlError::ActiveActive)));
        // Down: out of placement too.
        events
            .send(checked(&a, false))
            .await
            .expect("the owner runs");
        let none = until(&routing, |s| s.routed().is_empty()).await;
        assert!(!none.can_route());
    }
}
