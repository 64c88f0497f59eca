//! The owner task: the only writer of election state.
//!
//! Probes, the request path, the admin API and reloads send it [`Event`]s; it applies
//! them with the pure rules in [`crate::control::election`], logs every change, and publishes a
//! new immutable [`Snapshot`] on the watch channel.
//!
//! Events name masters by their `Arc<Master>`, not by position: a reload can reorder
//! the pool, and a report from before it must not land on another master.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

mod readiness;

use crate::config::{HookConfig, HookEvent, Standby};
use crate::control::election::{
    Election, Health, Observation, Outcome, Policy, Refusal, Transition,
};
use crate::control::health::ProbeReport;
use crate::control::promotion::{PromotionReport, PromotionSettings};
use crate::control::routing::{
    Cause, Master, MasterStatus, PromotionView, RoutingHandle, Snapshot, TransitionRecord,
    TRANSITION_HISTORY,
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
    let now = SystemTime::now();
    let mut election = new_election(&masters, policy);
    election.set_min_active(settings.min_active_time);
    if let Some(index) = remembered.and_then(|name| masters.iter().position(|m| m.name == name)) {
        tracing::info!(master = %masters[index].name, "remembered as active before the restart: keeping it if healthy");
        election.remember(index);
    }
    let (events, inbox) = mpsc::channel(EVENT_QUEUE);
    let state = OwnerState {
        statuses: masters.iter().map(fresh_status).collect(),
        election,
        generation: 0,
        active_since: now,
        failovers: 0,
        transitions: Arc::new(VecDeque::new()),
        started_at: now,
        settings,
        own_events: events.clone(),
        ready: None,
        ever_ready: false,
        last_served: None,
        promotion: None,
        quieted: Vec::new(),
        unquiet: Vec::new(),
        alarms: Vec::new(),
        sessions: std::collections::HashMap::new(),
        restarting: None,
        announcements: Vec::new(),
    };
    let (publisher, receiver) = watch::channel(Arc::new(state.snapshot()));
    let task = tokio::spawn(run(state, inbox, publisher));
    (OwnerHandle { events }, RoutingHandle::new(receiver), task)
}

/// An election over `masters`, cold standbys marked.
fn new_election(masters: &[Arc<Master>], policy: Policy) -> Election {
    let mut election = Election::new(masters.iter().map(|m| m.name.clone()), policy);
    for (index, master) in masters.iter().enumerate() {
        if master.standby == Standby::Cold {
            election.mark_cold(index);
        }
    }
    election
}

fn fresh_status(master: &Arc<Master>) -> MasterStatus {
    MasterStatus {
        master: Arc::clone(master),
        health: Health::Unknown,
        disabled: false,
        starting: false,
        last_check: None,
        last_error: None,
        latency: None,
        consecutive_passed: 0,
        consecutive_failed: 0,
    }
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
    settings: OwnerSettings,
    /// For the promoter tasks' reports.
    own_events: mpsc::Sender<Event>,
    /// The master cleared for traffic: the election's active master once its
    /// promotion (if any) has completed. Traffic goes only here.
    ready: Option<Arc<Master>>,
    /// Whether any master was ever ready: the first election needs no promotion (that
    /// master is already serving).
    ever_ready: bool,
    /// The master that had traffic last and may still run: fenced before the next
    /// promotion.
    last_served: Option<Arc<Master>>,
    promotion: Option<InFlight>,
    /// Hot standbys already put into quiet-down (by name).
    quieted: Vec<String>,
    /// Hot standbys seen out of quiet-down while not serving (by name): an alarm.
    unquiet: Vec<String>,
    /// Current alarms (two masters up), for /status.
    alarms: Vec<String>,
    /// Last `X-Jenkins-Session` seen per master name: a change means a JVM restart.
    sessions: std::collections::HashMap<String, String>,
    /// The serving master that says it is starting, and since when, while
    /// `starting_grace` holds traffic for it instead of failing over.
    restarting: Option<(Arc<Master>, SystemTime)>,
    /// "active master changed" lines not yet logged: written by `record`, emitted by
    /// `run` once the snapshot with that change is published, so that whoever reads
    /// the log line (operators, tests) finds the proxy already routing that way.
    announcements: Vec<Announcement>,
}

/// A change of the active master, to be logged after it is published.
struct Announcement {
    from: String,
    to: Option<String>,
    cause: Cause,
    reason: String,
}

impl Announcement {
    fn log(&self) {
        let (from, cause) = (self.from.as_str(), self.cause.as_str());
        match &self.to {
            Some(to) => {
                tracing::info!(from, to = %to, cause, "active master changed: {}", self.reason)
            }
            None => tracing::warn!(from, cause, "no active master: {}", self.reason),
        }
    }
}

/// A promotion under way.
struct InFlight {
    target: Arc<Master>,
    task: JoinHandle<()>,
    started: SystemTime,
    waiting_on_fence: Option<String>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.task.abort(); // superseded or finished: never two promoters at once
    }
}

async fn run(
    mut state: OwnerState,
    mut inbox: mpsc::Receiver<Event>,
    publisher: watch::Sender<Arc<Snapshot>>,
) {
    let clock = std::time::Instant::now();
    while let Some(event) = inbox.recv().await {
        state.election.advance(clock.elapsed());
        let reply = state.handle(event);
        state.reconcile();
        let snapshot = Arc::new(state.snapshot());
        publisher.send_replace(Arc::clone(&snapshot));
        for announcement in state.announcements.drain(..) {
            announcement.log();
        }
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

impl OwnerState {
    fn handle(&mut self, event: Event) -> Reply {
        let now = SystemTime::now();
        match event {
            Event::Probe(report) => {
                let Some(index) = self.index_of(&report.master) else {
                    return Reply::None; // a probe of a master a reload removed
                };
                let observation = match &report.outcome {
                    Ok(_) => Observation::CheckPassed,
                    Err(error) => Observation::CheckFailed {
                        error: error.to_string(),
                    },
                };
                self.statuses[index].last_check = Some(report.at);
                self.statuses[index].latency = Some(report.latency);
                // A master being promoted answers 503 while it reloads or starts: that
                // is expected, and the promoter bounds it with promote_timeout.
                let promoting = self
                    .promotion
                    .as_ref()
                    .is_some_and(|p| Arc::ptr_eq(&p.target, &report.master));
                if promoting && !report.passed() {
                    return Reply::None;
                }
                self.statuses[index].starting = report.starting();
                self.note_session(&report);
                if report.passed() {
                    self.ask_quiet_state(&report.master);
                }
                if self.within_starting_grace(&report, now) {
                    return Reply::None;
                }
                self.observe(index, &observation, now);
                Reply::None
            }
            Event::TrafficConnectFailed {
                master,
                error,
                reply,
            } => {
                if let Some(index) = self.index_of(&master) {
                    self.observe(index, &Observation::TrafficConnectFailed { error }, now);
                }
                Reply::Snapshot(reply)
            }
            Event::Control { command, reply } => {
                let outcome = self.command(command, now);
                Reply::Control(reply, outcome)
            }
            Event::Promotion(PromotionReport { target, progress }) => {
                self.progress(&target, progress, now);
                Reply::None
            }
            Event::QuietState { master, quieting } => {
                self.quiet_state(&master, quieting);
                Reply::None
            }
        }
    }

    fn index_of(&self, master: &Arc<Master>) -> Option<usize> {
        self.statuses
            .iter()
            .position(|status| Arc::ptr_eq(&status.master, master))
    }

    fn index_by_name(&self, name: &str) -> Result<usize, ControlError> {
        self.statuses
            .iter()
            .position(|status| status.master.name == name)
            .ok_or_else(|| ControlError::UnknownMaster {
                name: name.to_owned(),
                known: self
                    .statuses
                    .iter()
                    .map(|s| s.master.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn command(&mut self, command: Control, now: SystemTime) -> Result<(), ControlError> {
        match command {
            Control::Switchover { to } => {
                let index = self.index_by_name(&to)?;
                let transition = self.election.switchover(index)?;
                self.sync_statuses();
                if let Some(transition) = transition {
                    self.record(transition, Cause::Switchover, now);
                }
            }
            Control::SetDisabled { master, disabled } => {
                let index = self.index_by_name(&master)?;
                tracing::info!(master = %master, disabled, "maintenance flag changed");
                let transition = self.election.set_disabled(index, disabled);
                self.sync_statuses();
                if let Some(transition) = transition {
                    self.record(transition, Cause::Maintenance, now);
                }
            }
            Control::Reload {
                masters,
                policy,
                settings,
            } => {
                self.settings = settings;
                self.reload(masters, policy, now);
            }
        }
        Ok(())
    }

    /// Swaps in a new pool: state is kept by name, the active master stays active if
    /// it is still in the pool.
    fn reload(&mut self, masters: Vec<Arc<Master>>, policy: Policy, now: SystemTime) {
        let mut fresh = new_election(&masters, policy);
        fresh.set_min_active(self.settings.min_active_time);
        let (election, transition) = fresh.reconfigured_from(&self.election);
        self.statuses = masters
            .iter()
            .map(
                |master| match self.statuses.iter().find(|s| s.master.name == master.name) {
                    Some(old) => MasterStatus {
                        master: Arc::clone(master),
                        ..old.clone()
                    },
                    None => fresh_status(master),
                },
            )
            .collect();
        self.election = election;
        self.sync_statuses();
        if let Some(transition) = transition {
            // The previous active master may have been removed: name it from the record.
            self.record(transition, Cause::Reload, now);
        }
    }

    fn observe(&mut self, master: usize, observation: &Observation, now: SystemTime) {
        let Outcome {
            health_change,
            transition,
        } = self.election.apply(master, observation);
        self.sync_statuses();
        if let Some(change) = health_change {
            let master = Arc::clone(&self.statuses[change.master].master);
            tracing::info!(master = %master.name,
                from = change.from.as_str(), to = change.to.as_str(), "{}", change.reason);
            match change.to {
                Health::Down => self.run_hooks(HookEvent::MasterDown, &master, &change.reason),
                Health::Up => self.run_hooks(HookEvent::MasterUp, &master, &change.reason),
                Health::Unknown => {}
            }
        }
        if let Some(transition) = transition {
            let cause = self.cause(&transition, observation);
            self.record(transition, cause, now);
        }
    }

    /// Logs a change of the active master and keeps it in the history.
    fn record(&mut self, transition: Transition, cause: Cause, now: SystemTime) {
        let name = |index: Option<usize>| index.map(|i| self.statuses[i].master.name.clone());
        let from = self.transitions_from(&transition);
        let record = TransitionRecord {
            at: now,
            from: from.or_else(|| name(transition.from)),
            to: name(transition.to),
            cause,
            reason: transition.reason,
            steps: Vec::new(),
        };
        self.announcements.push(Announcement {
            from: record.from.clone().unwrap_or_else(|| "none".to_owned()),
            to: record.to.clone(),
            cause,
            reason: record.reason.clone(),
        });
        if let (None, Some(index)) = (&record.to, transition.from) {
            let master = Arc::clone(&self.statuses[index].master);
            self.run_hooks(HookEvent::NoMaster, &master, &record.reason);
        }
        // A failover is any demotion of an active master: replaced or lost.
        if record.from.is_some() {
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

    /// For a reload that removed the active master, `transition.from` is None (it is
    /// not in the new pool): the previous record names it.
    fn transitions_from(&self, transition: &Transition) -> Option<String> {
        if transition.from.is_some() {
            return None;
        }
        self.transitions.back().and_then(|last| last.to.clone())
    }

    /// The label of a transition, for metrics and scripts.
    fn cause(&self, transition: &Transition, observation: &Observation) -> Cause {
        match (transition.from, transition.to) {
            (_, None) => Cause::NoMaster,
            (None, Some(_)) if self.generation == 0 => Cause::Initial,
            (None, Some(_)) => Cause::Recovered,
            (Some(from), Some(_)) if self.election.masters()[from].electable() => Cause::Failback,
            (Some(_), Some(_)) => match observation {
                Observation::TrafficConnectFailed { .. } => Cause::ConnectFailed,
                Observation::PromotionFailed { .. } => Cause::PromotionFailed,
                _ => Cause::HealthCheck,
            },
        }
    }

    /// Copies the election's per-master view into the statuses.
    fn sync_statuses(&mut self) {
        for (status, state) in self.statuses.iter_mut().zip(self.election.masters()) {
            status.health = state.health;
            status.disabled = state.disabled;
            status.last_error.clone_from(&state.last_error);
            status.consecutive_passed = state.consecutive_passed;
            status.consecutive_failed = state.consecutive_failed;
        }
    }

    fn snapshot(&self) -> Snapshot {
        // Traffic goes only to the ready master (promotion done), and not while it
        // restarts within starting_grace.
        let active = self.election.active().filter(|&index| {
            let master = &self.statuses[index].master;
            self.ready
                .as_ref()
                .is_some_and(|ready| Arc::ptr_eq(ready, master))
                && !self
                    .restarting
                    .as_ref()
                    .is_some_and(|(m, _)| Arc::ptr_eq(m, master))
        });
        let restart_hold = self
            .restarting
            .as_ref()
            .map(|(master, since)| PromotionView {
                to: master.name.clone(),
                waiting_for: format!(
                    "{} to finish restarting (failover.starting_grace)",
                    master.name
                ),
                since: *since,
                waiting_on_fence: None,
            });
        Snapshot {
            generation: self.generation,
            active,
            promotion: self
                .promotion
                .as_ref()
                .map(|p| PromotionView {
                    to: p.target.name.clone(),
                    waiting_for: format!("{} to be made ready", p.target.name),
                    since: p.started,
                    waiting_on_fence: p.waiting_on_fence.clone(),
                })
                .or(restart_hold),
            alarms: self.alarms.clone(),
            active_since: self.active_since,
            failovers: self.failovers,
            masters: self.statuses.clone(),
            transitions: Arc::clone(&self.transitions),
            started_at: self.started_at,
            failback: self.election.policy().failback,
        }
    }
}
