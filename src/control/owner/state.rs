//! The owner's state, and how each event changes it: the election (pure rules), the
//! per-master statuses, readiness (pure), the transition history. After every event
//! the owner publishes [`OwnerState::snapshot`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;

mod pool;
mod snapshot;

use super::effects::{self, Promoter};
use super::publish::{Announcement, Routed};
use super::{Control, ControlError, Event, OwnerSettings, Reply};
use crate::config::{HookEvent, Standby};
use crate::control::election::{Election, Health, Observation, Outcome, Policy, Transition};
use crate::control::health::ProbeReport;
use crate::control::promotion::{PromotionReport, Step};
use crate::control::readiness::{self, Action, Readiness, Verdict};
use crate::control::routing::{
    Cause, Master, MasterStatus, StepRecord, TransitionRecord, TRANSITION_HISTORY,
};

/// Everything the owner task writes; nothing else writes it.
pub(super) struct OwnerState {
    election: Election,
    /// Per-master detail that is not election state (timings, last error), file order.
    statuses: Vec<MasterStatus>,
    /// Which master is ready for traffic: promotions, the restart hold, standbys, alarms.
    readiness: Readiness,
    /// The promoter task readiness asked for, while it runs.
    promoter: Option<Promoter>,
    /// The generation of the last snapshot published, and what its request path acted
    /// on: see [`Snapshot::generation`].
    generation: u64,
    routed: Routed,
    /// Transitions recorded since start.
    transition_count: u64,
    active_since: SystemTime,
    failovers: u64,
    transitions: Arc<VecDeque<TransitionRecord>>,
    started_at: SystemTime,
    settings: OwnerSettings,
    /// For the reports of the tasks the owner starts (promoters, quiet-down questions).
    own_events: mpsc::Sender<Event>,
    /// Cluster mode: the pool as the member last told it (see `pool`).
    cluster: Option<crate::control::cluster::member::ClusterState>,
    /// Cluster mode: the master the last recorded transition moved traffic to.
    cluster_routed: Option<String>,
    /// Active-active mode: each replica's load as last read, by master name.
    loads: std::collections::HashMap<String, crate::control::replicas::LoadReading>,
    /// "active master changed" lines not yet logged: written by `record`, emitted by
    /// `announce` once the snapshot with that change is published, so that whoever
    /// reads the log line (operators, tests) finds the proxy already routing that way.
    announcements: Vec<Announcement>,
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

impl OwnerState {
    /// The state at start. `remembered`: the master active before the proxy restarted.
    pub(super) fn new(
        masters: &[Arc<Master>],
        policy: Policy,
        settings: OwnerSettings,
        remembered: Option<&str>,
        own_events: mpsc::Sender<Event>,
    ) -> OwnerState {
        let now = SystemTime::now();
        let mut election = new_election(masters, policy);
        election.set_min_active(settings.min_active_time);
        if let Some(index) = remembered.and_then(|name| masters.iter().position(|m| m.name == name))
        {
            tracing::info!(master = %masters[index].name, "remembered as active before the restart: keeping it if healthy");
            election.remember(index);
        }
        OwnerState {
            statuses: masters.iter().map(fresh_status).collect(),
            election,
            readiness: Readiness::new(settings.readiness()),
            promoter: None,
            generation: 0,
            routed: Routed::default(),
            transition_count: 0,
            active_since: now,
            failovers: 0,
            transitions: Arc::new(VecDeque::new()),
            started_at: now,
            settings,
            own_events,
            cluster: None,
            cluster_routed: None,
            loads: Default::default(),
            announcements: Vec::new(),
        }
    }

    /// The election's clock: time since the owner started (the rules read no clock).
    pub(super) fn advance(&mut self, since_start: std::time::Duration) {
        self.election.advance(since_start);
    }

    pub(super) fn handle(&mut self, event: Event) -> Reply {
        let now = SystemTime::now();
        match event {
            Event::Probe(report) => {
                self.probe(report, now);
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
                let actions = self.readiness.progress(&target, progress, now);
                self.execute(actions, now);
                Reply::None
            }
            Event::QuietState { master, quieting } => {
                self.readiness.quiet_state(&master, quieting);
                Reply::None
            }
            Event::Cluster { state, published } => {
                self.follow_pool(state, now);
                Reply::Published(published)
            }
            Event::Load(report) => {
                self.record_load(report);
                Reply::None
            }
        }
    }

    fn probe(&mut self, report: ProbeReport, now: SystemTime) {
        let Some(index) = self.index_of(&report.master) else {
            return; // a probe of a master a reload removed
        };
        self.statuses[index].last_check = Some(report.at);
        self.statuses[index].latency = Some(report.latency);
        let check = readiness::Check {
            master: &report.master,
            passed: report.passed(),
            starting: report.starting(),
            session: report.session(),
        };
        let (verdict, actions) = self.readiness.checked(check, now);
        if verdict != Verdict::Expected {
            self.statuses[index].starting = report.starting();
        }
        self.execute(actions, now);
        if verdict == Verdict::Counts {
            let observation = match &report.outcome {
                Ok(_) => Observation::CheckPassed,
                Err(error) if report.refused_on_request() => Observation::TrafficConnectFailed {
                    error: format!("checked at another proxy instance's request: {error}"),
                },
                Err(error) => Observation::CheckFailed {
                    error: error.to_string(),
                },
            };
            self.observe(index, &observation, now);
        }
    }

    /// Brings traffic in line with the election (after every event): see
    /// [`Readiness::reconcile`].
    pub(super) fn reconcile(&mut self) {
        if self.settings.cluster {
            return; // the pool decides where traffic goes; standbys are "none"
        }
        let now = SystemTime::now();
        let elected = self
            .election
            .active()
            .map(|i| Arc::clone(&self.statuses[i].master));
        let actions = self
            .readiness
            .reconcile(elected.as_ref(), &self.statuses, now);
        self.execute(actions, now);
    }

    /// Carries out what readiness decided.
    fn execute(&mut self, actions: Vec<Action>, now: SystemTime) {
        for action in actions {
            match action {
                Action::Hooks {
                    event,
                    master,
                    reason,
                } => effects::run_hooks(&self.settings.hooks, event, &master, reason),
                Action::Promote { from, to } => {
                    let reason = self
                        .transitions
                        .back()
                        .map_or_else(String::new, |t| t.reason.clone());
                    let settings = Arc::clone(&self.settings.promotion);
                    let events = self.own_events.clone();
                    self.promoter = Some(effects::promote(from, to, reason, settings, events));
                }
                Action::StopPromoter => self.promoter = None,
                Action::QuietDown(master) => {
                    effects::quiet_down(master, Arc::clone(&self.settings.promotion))
                }
                Action::AskQuietState(master) => effects::ask_quiet_state(
                    master,
                    Arc::clone(&self.settings.promotion),
                    self.own_events.clone(),
                ),
                Action::RecordStep { to, step } => self.add_step(&to.name, step, now),
                Action::PromotionFailed { master, error } => {
                    if let Some(index) = self.index_of(&master) {
                        self.observe(index, &Observation::PromotionFailed { error }, now);
                    }
                }
                Action::Log(notice) => notice.log(),
            }
        }
    }

    /// Appends a step to the newest transition towards `name`.
    fn add_step(&mut self, name: &str, step: Step, now: SystemTime) {
        let transitions = Arc::make_mut(&mut self.transitions);
        if let Some(record) = transitions
            .iter_mut()
            .rev()
            .find(|t| t.to.as_deref() == Some(name))
        {
            record.steps.push(StepRecord {
                at: now,
                step: step.step,
                ok: step.ok,
                took: step.took,
                detail: step.detail,
            });
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
            Control::Switchover { .. } if self.settings.active_active => {
                return Err(ControlError::ActiveActive)
            }
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
                self.readiness.set_settings(settings.readiness());
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
            let hooks = &self.settings.hooks;
            match change.to {
                Health::Down => {
                    effects::run_hooks(hooks, HookEvent::MasterDown, &master, &change.reason)
                }
                Health::Up => {
                    effects::run_hooks(hooks, HookEvent::MasterUp, &master, &change.reason)
                }
                Health::Unknown => {}
            }
        }
        if let Some(transition) = transition {
            if self.settings.cluster {
                // Only this instance's view: the pool's leader moves traffic.
                tracing::debug!("own view: {}", transition.reason);
                return;
            }
            let cause = self.cause(&transition, observation);
            self.record(transition, cause, now);
        }
    }

    /// Keeps a change of the active master in the history, to be logged once published.
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
            effects::run_hooks(
                &self.settings.hooks,
                HookEvent::NoMaster,
                &master,
                &record.reason,
            );
        }
        // A failover is any demotion of an active master: replaced or lost.
        if record.from.is_some() {
            self.failovers += 1;
        }
        self.transition_count += 1;
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
            (None, Some(_)) if self.transition_count == 0 => Cause::Initial,
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

    /// Logs the changes of the active master recorded since the last call.
    pub(super) fn announce(&mut self) {
        for announcement in self.announcements.drain(..) {
            announcement.log();
        }
    }
}
