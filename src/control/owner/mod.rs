//! The owner task: the only writer of election state.
//!
//! Probes, the request path, the admin API and reloads send it [`Event`]s; it applies
//! them with the pure rules in [`crate::control::election`], logs every change, and publishes a
//! new immutable [`Snapshot`] on the watch channel.
//!
//! Events name masters by their `Arc<Master>`, not by position: a reload can reorder
//! the pool, and a report from before it must not land on another master.

mod effects;
mod state;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::HookConfig;
use crate::control::election::{Policy, Refusal};
use crate::control::health::ProbeReport;
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
        let snapshot = Arc::new(state.snapshot());
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
}
