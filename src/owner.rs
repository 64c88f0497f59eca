//! The owner task: the only writer of election state.
//!
//! Probes and the request path send it [`Event`]s; it applies them with the pure rules
//! in [`crate::election`], logs every change, and publishes a new immutable
//! [`Snapshot`] on the watch channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::election::{Election, Health, Observation, Outcome, Policy, Transition};
use crate::health::ProbeReport;
use crate::routing::{
    Master, MasterStatus, RoutingHandle, Snapshot, TransitionRecord, TRANSITION_HISTORY,
};

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
        master: usize,
        error: String,
        reply: oneshot::Sender<Arc<Snapshot>>,
    },
}

/// The sending side, for probes and the request path.
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
        master: usize,
        error: String,
    ) -> Option<Arc<Snapshot>> {
        let (reply, answer) = oneshot::channel();
        let event = Event::TrafficConnectFailed {
            master,
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
        master: &Master,
        error: String,
        attempt: usize,
    ) -> Option<Arc<Snapshot>> {
        tracing::warn!(master = %master.name, %error, "cannot connect to the active master; reporting it down");
        let snapshot = self.report_connect_failure(master.index, error).await?;
        (attempt < snapshot.masters.len() || snapshot.active.is_none()).then_some(snapshot)
    }
}

/// Starts the owner task for `masters` (file order). Returns the handle to send it
/// events, the read handle over its snapshots, and the task (which ends when every
/// `OwnerHandle` and event sender is dropped).
pub fn start(
    masters: Vec<Arc<Master>>,
    policy: Policy,
) -> (OwnerHandle, RoutingHandle, JoinHandle<()>) {
    let now = SystemTime::now();
    let election = Election::new(masters.iter().map(|m| m.name.clone()), policy);
    let state = OwnerState {
        statuses: masters
            .iter()
            .map(|master| MasterStatus {
                master: Arc::clone(master),
                health: Health::Unknown,
                last_check: None,
                last_error: None,
                latency: None,
                consecutive_passed: 0,
                consecutive_failed: 0,
            })
            .collect(),
        election,
        generation: 0,
        active_since: now,
        failovers: 0,
        transitions: Arc::new(VecDeque::new()),
        started_at: now,
    };
    let (publisher, receiver) = watch::channel(Arc::new(state.snapshot()));
    let (events, inbox) = mpsc::channel(EVENT_QUEUE);
    let task = tokio::spawn(run(state, inbox, publisher));
    (OwnerHandle { events }, RoutingHandle::new(receiver), task)
}

struct OwnerState {
    election: Election,
    /// Per-master detail that is not election state (timings, last error), file order.
    statuses: Vec<MasterStatus>,
    generation: u64,
    active_since: SystemTime,
    failovers: u64,
    transitions: Arc<VecDeque<TransitionRecord>>,
    started_at: SystemTime,
}

async fn run(
    mut state: OwnerState,
    mut inbox: mpsc::Receiver<Event>,
    publisher: watch::Sender<Arc<Snapshot>>,
) {
    while let Some(event) = inbox.recv().await {
        let reply = state.handle(event);
        let snapshot = Arc::new(state.snapshot());
        publisher.send_replace(Arc::clone(&snapshot));
        if let Some(reply) = reply {
            let _ = reply.send(snapshot); // the request may have gone away: fine
        }
    }
}

impl OwnerState {
    /// Applies one event; returns the reply channel to answer, if the event has one.
    fn handle(&mut self, event: Event) -> Option<oneshot::Sender<Arc<Snapshot>>> {
        let now = SystemTime::now();
        match event {
            Event::Probe(report) => {
                let observation = match &report.result {
                    Ok(()) => Observation::CheckPassed,
                    Err(error) => Observation::CheckFailed {
                        error: error.clone(),
                    },
                };
                if let Some(status) = self.statuses.get_mut(report.master) {
                    status.last_check = Some(report.at);
                    status.latency = Some(report.latency);
                }
                self.apply(report.master, &observation, now);
                None
            }
            Event::TrafficConnectFailed {
                master,
                error,
                reply,
            } => {
                self.apply(master, &Observation::TrafficConnectFailed { error }, now);
                Some(reply)
            }
        }
    }

    fn apply(&mut self, master: usize, observation: &Observation, now: SystemTime) {
        let Outcome {
            health_change,
            transition,
        } = self.election.apply(master, observation);
        self.sync_statuses();
        if let Some(change) = health_change {
            tracing::info!(master = %self.statuses[change.master].master.name,
                from = change.from.as_str(), to = change.to.as_str(), "{}", change.reason);
        }
        let Some(transition) = transition else {
            return;
        };
        let name = |index: Option<usize>| index.map(|i| self.statuses[i].master.name.clone());
        let record = TransitionRecord {
            at: now,
            from: name(transition.from),
            to: name(transition.to),
            cause: self.cause(&transition, observation),
            reason: transition.reason,
        };
        let from = record.from.as_deref().unwrap_or("none");
        match &record.to {
            Some(to) => tracing::info!(from, to = %to, "active master changed: {}", record.reason),
            None => tracing::warn!(from, "no active master: {}", record.reason),
        }
        if transition.from.is_some() {
            self.failovers += 1;
        }
        self.generation += 1;
        self.active_since = now;
        let transitions = Arc::make_mut(&mut self.transitions);
        if transitions.len() == TRANSITION_HISTORY {
            transitions.pop_front();
        }
        transitions.push_back(record);
    }

    /// The label of a transition, for metrics and scripts.
    fn cause(&self, transition: &Transition, observation: &Observation) -> &'static str {
        match (transition.from, transition.to) {
            (_, None) => "no_master",
            (None, Some(_)) if self.generation == 0 => "initial",
            (None, Some(_)) => "recovered",
            (Some(from), Some(_)) if self.election.masters()[from].health == Health::Up => {
                "failback"
            }
            (Some(_), Some(_)) => match observation {
                Observation::TrafficConnectFailed { .. } => "connect_failed",
                _ => "health_check",
            },
        }
    }

    /// Copies the election's per-master view into the statuses.
    fn sync_statuses(&mut self) {
        for (status, state) in self.statuses.iter_mut().zip(self.election.masters()) {
            status.health = state.health;
            status.last_error.clone_from(&state.last_error);
            status.consecutive_passed = state.consecutive_passed;
            status.consecutive_failed = state.consecutive_failed;
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            generation: self.generation,
            active: self.election.active(),
            active_since: self.active_since,
            failovers: self.failovers,
            masters: self.statuses.clone(),
            transitions: Arc::clone(&self.transitions),
            started_at: self.started_at,
        }
    }
}
