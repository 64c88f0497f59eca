//! The election rules: a pure state machine with no I/O and no clock.
//!
//! [`Election::apply`] takes one observation about one master and returns what changed.
//! The owner task is its only caller; tests drive it exhaustively.
//!
//! Rules:
//! - A master starts `Unknown`. Its first check decides `Up` or `Down` at once, so
//!   start-up is not delayed by `rise x interval`.
//! - After that, `rise` consecutive passed checks make a down master `Up`, and `fall`
//!   consecutive failed checks make an up master `Down`.
//! - A connection to the active master that fails on live traffic marks it `Down` at
//!   once: a request is waiting, and a refused connect is conclusive.
//! - With no active master, the first `Up` master in file order is elected, but only
//!   once every master before it has been checked: at start we must not elect
//!   master-b merely because master-a's first probe answered later.
//! - An `Up` active master stays active (failback "never"), unless failback is "auto"
//!   and an earlier master in file order is `Up`.
//! - A disabled master (maintenance) is never elected, and loses the active role.
//! - A planned switchover makes an `Up`, enabled master active at once, and *pins* the
//!   choice: failback "auto" does not undo it. So does the master remembered from
//!   before a restart of the proxy, which wins the first election if it is `Up` (a
//!   proxy restart must not be an unplanned switch on a shared home). The pin ends at
//!   the next failover.
//! - The active master is always `Up` and enabled, or there is none.

mod master;

use std::time::Duration;

use crate::config::Failback;
pub use master::{Health, MasterState, Observation};

/// The thresholds and the failback policy the rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub rise: u32,
    pub fall: u32,
    pub failback: Failback,
}

/// Why a planned switchover was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is not healthy ({1}): refusing to send traffic to it")]
    NotHealthy(String, &'static str),
    #[error("{0} is disabled: enable it first")]
    Disabled(String),
}

/// A change of the active master, with the reason a person can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<usize>,
    pub to: Option<usize>,
    pub reason: String,
}

/// A change of one master's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    pub master: usize,
    pub from: Health,
    pub to: Health,
    pub reason: String,
}

/// What one observation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub health_change: Option<HealthChange>,
    pub transition: Option<Transition>,
}

/// The election state: health per master (file order) and the active pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    masters: Vec<MasterState>,
    active: Option<usize>,
    policy: Policy,
    /// Set by a switchover or a remembered master: failback "auto" leaves it alone.
    pinned: bool,
    /// The master active before the proxy restarted, until the first election.
    remembered: Option<usize>,
    /// The caller's clock (time since start), passed in: the rules read no clock.
    now: Duration,
    /// When the active master (or none) took over, on the same clock.
    active_since: Duration,
    /// Failback waits until the active master has been active this long (flapping).
    min_active: Duration,
}

impl Election {
    /// All masters `Unknown`, none active.
    pub fn new<I, S>(names: I, policy: Policy) -> Election
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let masters = names
            .into_iter()
            .map(|name| MasterState {
                name: name.into(),
                health: Health::Unknown,
                consecutive_passed: 0,
                consecutive_failed: 0,
                last_error: None,
                disabled: false,
                cold: false,
                promotion_failed: false,
            })
            .collect();
        Election {
            masters,
            active: None,
            policy,
            pinned: false,
            remembered: None,
            now: Duration::ZERO,
            active_since: Duration::ZERO,
            min_active: Duration::ZERO,
        }
    }

    /// `failover.min_active_time`: a failback (moving away from a healthy active
    /// master) waits until it has been active this long, so a flapping master causes
    /// at most one such switch per period. Failing over from a master that is down
    /// never waits.
    pub fn set_min_active(&mut self, min_active: Duration) {
        self.min_active = min_active;
    }

    /// Moves the clock the rules see (time since start, never backwards).
    pub fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    /// Marks a master as a cold standby (see [`MasterState::cold`]).
    pub fn mark_cold(&mut self, master: usize) {
        if let Some(state) = self.masters.get_mut(master) {
            state.cold = true;
        }
    }

    /// Prefers `master` in the first election (the master active before a restart).
    pub fn remember(&mut self, master: usize) {
        if master < self.masters.len() && self.active.is_none() {
            self.remembered = Some(master);
        }
    }

    /// Carries per-master state (health, counters, disabled) over from `previous` by
    /// name, for a reload; the active master stays active if it is still in the pool
    /// and electable. Masters new to the pool start `Unknown`.
    pub fn reconfigured_from(mut self, previous: &Election) -> (Election, Option<Transition>) {
        for master in &mut self.masters {
            if let Some(old) = previous.masters.iter().find(|m| m.name == master.name) {
                // Standby mode comes from the new configuration, the rest carries over.
                let cold = master.cold;
                *master = old.clone();
                master.cold = cold;
            }
        }
        let find = |name: &str| self.masters.iter().position(|m| m.name == name);
        let previous_active = previous.active.map(|i| previous.masters[i].name.as_str());
        self.active = previous_active.and_then(find);
        // Before the first election after a restart, keep waiting for the remembered one.
        self.remembered = previous
            .remembered
            .and_then(|i| find(&previous.masters[i].name));
        self.pinned = previous.pinned && self.active.is_some();
        (self.now, self.active_since) = (previous.now, previous.active_since);
        let from = self.active;
        let removed = previous_active.filter(|_| from.is_none());
        let cause = match removed {
            Some(name) => format!("configuration reloaded: {name} is no longer in the pool"),
            None => "configuration reloaded".to_owned(),
        };
        let mut transition = self.elect_with(from, &cause);
        if transition.is_none() && removed.is_some() {
            // The active master is gone and nobody could replace it: still a change.
            transition = Some(Transition {
                from: None,
                to: None,
                reason: format!("{cause}; no healthy master: answering 503"),
            });
        }
        (self, transition)
    }

    /// A planned switchover to `to`: refused unless it is `Up` and enabled.
    pub fn switchover(&mut self, to: usize) -> Result<Option<Transition>, Refusal> {
        let Some(target) = self.masters.get(to) else {
            return Ok(None);
        };
        if target.disabled {
            return Err(Refusal::Disabled(target.name.clone()));
        }
        // A stopped cold standby is fine: it is started before traffic moves.
        if !target.electable() {
            return Err(Refusal::NotHealthy(
                target.name.clone(),
                target.health.as_str(),
            ));
        }
        // A deliberate choice replaces the one remembered from before a restart.
        self.remembered = None;
        if self.active == Some(to) {
            self.pinned = true;
            return Ok(None);
        }
        let from = self.active;
        self.active = Some(to);
        self.active_since = self.now;
        self.pinned = true;
        let reason = match from {
            Some(from) => format!(
                "planned switchover: {} is now active (was {})",
                self.masters[to].name, self.masters[from].name
            ),
            None => format!(
                "planned switchover: {} is now active",
                self.masters[to].name
            ),
        };
        Ok(Some(Transition {
            from,
            to: Some(to),
            reason,
        }))
    }

    /// Takes a master out of the election (maintenance) or puts it back.
    pub fn set_disabled(&mut self, master: usize, disabled: bool) -> Option<Transition> {
        let state = self.masters.get_mut(master)?;
        if state.disabled == disabled {
            return None;
        }
        state.disabled = disabled;
        let what = if disabled {
            "disabled for maintenance"
        } else {
            "enabled again"
        };
        let cause = format!("{} {what}", state.name);
        self.elect_with(self.active, &cause)
    }

    pub fn active(&self) -> Option<usize> {
        self.active
    }

    pub fn masters(&self) -> &[MasterState] {
        &self.masters
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Applies one observation about `master` (an index in file order; out-of-range
    /// indices are ignored) and re-runs the election.
    pub fn apply(&mut self, master: usize, observation: &Observation) -> Outcome {
        let Some(health_change) = self.observe(master, observation) else {
            return Outcome::default();
        };
        // A failed promotion of a master already down changes no health, but explains
        // the election that follows.
        let cause = health_change
            .as_ref()
            .map_or("election", |c| c.reason.as_str())
            .to_owned();
        let health_change = health_change.filter(|change| change.from != change.to);
        let transition = self.elect_with(self.active, &cause);
        Outcome {
            health_change,
            transition,
        }
    }

    /// Updates counters and health; returns None for an unknown master index, and
    /// Some(change) where `change` may be a no-op (from == to).
    fn observe(
        &mut self,
        master: usize,
        observation: &Observation,
    ) -> Option<Option<HealthChange>> {
        let policy = self.policy;
        let state = self.masters.get_mut(master)?;
        let before = state.health;
        let reason = match observation {
            Observation::CheckPassed => state.check_passed(policy.rise),
            Observation::CheckFailed { error } => state.check_failed(policy.fall, error),
            Observation::TrafficConnectFailed { error } => {
                state.down_at_once(policy.fall, error, false)
            }
            Observation::PromotionFailed { error } => state.down_at_once(policy.fall, error, true),
        };
        Some(reason.map(|reason| HealthChange {
            master,
            from: before,
            to: state.health,
            reason,
        }))
    }

    /// Re-runs the election from `from`, the active master before the change that
    /// prompted it; `cause_text` explains that change in the reason.
    fn elect_with(&mut self, from: Option<usize>, cause_text: &str) -> Option<Transition> {
        let to = self.choose();
        if to == from {
            return None;
        }
        self.active = to;
        self.active_since = self.now;
        if to.is_some() {
            // Keeping the master from before a restart is a deliberate choice: pin it.
            self.pinned = to == self.remembered;
            self.remembered = None;
        }
        let lost_pin = from.is_some_and(|f| !self.masters[f].electable());
        if lost_pin || to.is_none() {
            self.pinned = false;
        }
        let name = |index: usize| self.masters[index].name.as_str();
        let reason = match (from, to) {
            (_, None) => format!("{cause_text}; no healthy master: answering 503"),
            (Some(from), Some(to)) if self.masters[from].electable() => format!(
                "failback: {cause_text}; {} is now active (was {})",
                name(to),
                name(from)
            ),
            (_, Some(to)) => format!("{cause_text}; {} is now active", name(to)),
        };
        Some(Transition { from, to, reason })
    }

    /// The master that should be active now, by the rules in the module doc.
    fn choose(&self) -> Option<usize> {
        if let Some(active) = self.active {
            if self.masters[active].electable() {
                let settled = self.now.saturating_sub(self.active_since) >= self.min_active;
                return match self.policy.failback {
                    Failback::Auto if !self.pinned && settled => self.first_up(),
                    _ => Some(active),
                };
            }
        }
        if let Some(remembered) = self.remembered {
            match (&self.masters[remembered], self.masters[remembered].health) {
                (m, _) if m.electable() => return Some(remembered),
                (m, Health::Unknown) if !m.disabled => return None, // its first check decides
                _ => {}
            }
        }
        // No usable active master: the first electable master, unless an earlier one
        // is still unchecked (then wait for its first check; it comes within one timeout).
        for (index, master) in self.masters.iter().enumerate() {
            match master.health {
                _ if master.disabled => {}
                _ if master.electable() => return Some(index),
                Health::Unknown => return None,
                Health::Up | Health::Down => {}
            }
        }
        None
    }

    /// The first electable master in file order.
    fn first_up(&self) -> Option<usize> {
        self.masters.iter().position(MasterState::electable)
    }

    /// Whether a planned switchover or a remembered master holds off failback.
    pub fn pinned(&self) -> bool {
        self.pinned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: Observation = Observation::CheckPassed;

    fn fail() -> Observation {
        Observation::CheckFailed {
            error: "connection refused".into(),
        }
    }

    fn refused() -> Observation {
        Observation::TrafficConnectFailed {
            error: "connection refused".into(),
        }
    }

    fn policy(failback: Failback) -> Policy {
        Policy {
            rise: 2,
            fall: 3,
            failback,
        }
    }

    fn two(failback: Failback) -> Election {
        Election::new(["master-a", "master-b"], policy(failback))
    }

    /// Both masters pass their first check: master-a is elected.
    fn started(failback: Failback) -> Election {
        let mut election = two(failback);
        election.apply(0, &PASS);
        election.apply(1, &PASS);
        assert_eq!(election.active(), Some(0));
        election
    }

    #[test]
    fn first_check_decides_and_first_master_in_order_is_elected() {
        let mut election = two(Failback::Never);
        let outcome = election.apply(0, &PASS);
        assert_eq!(election.masters()[0].health, Health::Up);
        let transition = outcome.transition.expect("master-a elected");
        assert_eq!((transition.from, transition.to), (None, Some(0)));
        assert_eq!(
            transition.reason,
            "master-a up: first check passed; master-a is now active"
        );
    }

    #[test]
    fn a_later_master_waits_for_earlier_masters_first_check() {
        let mut election = two(Failback::Never);
        assert_eq!(election.apply(1, &PASS).transition, None);
        assert_eq!(election.active(), None, "master-a not checked yet");
        let transition = election.apply(0, &fail()).transition.expect("elected");
        assert_eq!(transition.to, Some(1));
        assert_eq!(
            transition.reason,
            "master-a down: first check failed: connection refused; master-b is now active"
        );
    }

    #[test]
    fn active_fails_over_after_fall_checks_with_reason() {
        let mut election = started(Failback::Never);
        assert_eq!(election.apply(0, &fail()).transition, None);
        assert_eq!(election.apply(0, &fail()).transition, None);
        let outcome = election.apply(0, &fail());
        let transition = outcome.transition.expect("failover");
        assert_eq!((transition.from, transition.to), (Some(0), Some(1)));
        assert_eq!(
            transition.reason,
            "master-a down after 3 failed checks: connection refused; master-b is now active"
        );
        let change = outcome.health_change.expect("health change");
        assert_eq!((change.from, change.to), (Health::Up, Health::Down));
    }

    #[test]
    fn a_passed_check_resets_the_failure_count() {
        let mut election = started(Failback::Never);
        election.apply(0, &fail());
        election.apply(0, &fail());
        election.apply(0, &PASS);
        election.apply(0, &fail());
        election.apply(0, &fail());
        assert_eq!(election.active(), Some(0));
        assert!(election.apply(0, &fail()).transition.is_some());
    }

    #[test]
    fn traffic_connect_failure_demotes_at_once() {
        let mut election = started(Failback::Never);
        let transition = election.apply(0, &refused()).transition.expect("failover");
        assert_eq!(transition.to, Some(1));
        assert!(transition.reason.starts_with(
            "master-a down: connection for a client request failed: connection refused"
        ));
        // It must rise again like any down master.
        election.apply(0, &PASS);
        assert_eq!(election.masters()[0].health, Health::Down);
        assert!(
            election.masters()[0].last_error.is_some(),
            "still down: keep why"
        );
        election.apply(0, &PASS);
        assert_eq!(election.masters()[0].health, Health::Up);
        assert_eq!(election.masters()[0].last_error, None);
    }

    #[test]
    fn failback_never_stays_on_the_standby() {
        let mut election = started(Failback::Never);
        election.apply(0, &refused());
        election.apply(0, &PASS);
        let outcome = election.apply(0, &PASS);
        assert_eq!(outcome.health_change.map(|c| c.to), Some(Health::Up));
        assert_eq!(outcome.transition, None);
        assert_eq!(election.active(), Some(1));
    }

    #[test]
    fn failback_auto_returns_after_rise_checks() {
        let mut election = started(Failback::Auto);
        election.apply(0, &refused());
        assert_eq!(election.apply(0, &PASS).transition, None);
        let transition = election.apply(0, &PASS).transition.expect("failback");
        assert_eq!((transition.from, transition.to), (Some(1), Some(0)));
        assert_eq!(
            transition.reason,
            "failback: master-a up after 2 passed checks; master-a is now active (was master-b)"
        );
    }

    #[test]
    fn no_healthy_master_then_recovery() {
        let mut election = started(Failback::Never);
        election.apply(1, &refused());
        assert_eq!(election.active(), Some(0));
        let transition = election.apply(0, &refused()).transition.expect("lost");
        assert_eq!((transition.from, transition.to), (Some(0), None));
        assert!(transition
            .reason
            .ends_with("no healthy master: answering 503"));
        election.apply(1, &PASS);
        let transition = election.apply(1, &PASS).transition.expect("recovered");
        assert_eq!((transition.from, transition.to), (None, Some(1)));
    }

    #[test]
    fn unknown_master_index_is_ignored() {
        let mut election = started(Failback::Never);
        let before = election.clone();
        assert_eq!(election.apply(7, &fail()), Outcome::default());
        assert_eq!(election, before);
    }

    /// The rules restated plainly, to check `choose` against (no remembered master).
    fn expected_active(
        election: &Election,
        previous: Option<usize>,
        pinned: bool,
    ) -> Option<usize> {
        let masters = election.masters();
        let first_electable = masters.iter().position(MasterState::electable);
        match previous {
            Some(active) if masters[active].electable() => match election.policy().failback {
                Failback::Auto if !pinned => first_electable,
                _ => Some(active),
            },
            _ => first_electable.filter(|&up| {
                masters[..up]
                    .iter()
                    .all(|m| m.disabled || m.health != Health::Unknown)
            }),
        }
    }

    /// One step of the exhaustive walk.
    #[derive(Debug, Clone)]
    enum Step {
        Observe(usize, Observation),
        Switchover(usize),
        Disable(usize),
        Enable(usize),
    }

    fn run_step(election: &mut Election, step: &Step) -> Option<Transition> {
        match step {
            Step::Observe(master, observation) => election.apply(*master, observation).transition,
            Step::Switchover(master) => election.switchover(*master).unwrap_or(None),
            Step::Disable(master) => election.set_disabled(*master, true),
            Step::Enable(master) => election.set_disabled(*master, false),
        }
    }

    /// Every sequence of up to four steps over three masters (checks, traffic
    /// failures, switchovers, disables, enables), both failback policies, small
    /// rise/fall: the invariants hold after every step.
    #[test]
    fn exhaustive_sequences_keep_the_invariants() {
        let steps: Vec<Step> = (0..3)
            .flat_map(|m| {
                [
                    Step::Observe(m, PASS),
                    Step::Observe(m, fail()),
                    Step::Observe(m, refused()),
                    Step::Observe(
                        m,
                        Observation::PromotionFailed {
                            error: "start failed".into(),
                        },
                    ),
                    Step::Switchover(m),
                    Step::Disable(m),
                    Step::Enable(m),
                ]
            })
            .collect();
        let mut count = 0u64;
        for failback in [Failback::Never, Failback::Auto] {
            for (rise, fall) in [(1, 1), (2, 3)] {
                let policy = Policy {
                    rise,
                    fall,
                    failback,
                };
                let mut start = Election::new(["a", "b", "c"], policy);
                // The last master is a cold standby: a candidate while stopped.
                start.mark_cold(2);
                walk(&start, &steps, 4, &mut count);
            }
        }
        assert!(count > 100_000, "explored {count} steps");
    }

    fn walk(state: &Election, steps: &[Step], depth: u32, count: &mut u64) {
        if depth == 0 {
            return;
        }
        for step in steps {
            let mut next = state.clone();
            let transition = run_step(&mut next, step);
            *count += 1;
            check_step(state, &next, step, transition.as_ref());
            walk(&next, steps, depth - 1, count);
        }
    }

    fn check_step(
        before: &Election,
        after: &Election,
        step: &Step,
        transition: Option<&Transition>,
    ) {
        // At most one active, and it can take traffic.
        if let Some(active) = after.active() {
            assert!(after.masters()[active].electable(), "{after:?}");
        }
        // A pin needs an active master.
        assert!(!after.pinned() || after.active().is_some(), "{after:?}");
        // The active master is what the plain rules say.
        let expected = match step {
            Step::Switchover(target) if before.masters()[*target].electable() => Some(*target),
            Step::Switchover(_) => before.active(),
            _ => expected_active(after, before.active(), before.pinned()),
        };
        assert_eq!(
            after.active(),
            expected,
            "{step:?}: before {before:?} after {after:?}"
        );
        // A change of active master always comes with a reason, and only then.
        match transition {
            Some(t) => {
                assert_eq!((t.from, t.to), (before.active(), after.active()));
                assert!(!t.reason.is_empty());
            }
            None => assert_eq!(before.active(), after.active(), "{step:?}"),
        }
        let Step::Observe(master, observation) = step else {
            return;
        };
        // Only the observed master's health changes, and only as the thresholds allow.
        for (index, (b, a)) in before.masters().iter().zip(after.masters()).enumerate() {
            if index != *master {
                assert_eq!(b, a);
                continue;
            }
            let policy = after.policy();
            match (b.health, a.health, observation) {
                (x, y, _) if x == y => {}
                (Health::Unknown, Health::Up, Observation::CheckPassed) => {}
                (Health::Unknown, Health::Down, _) => {}
                (Health::Down, Health::Up, Observation::CheckPassed) => {
                    assert!(a.consecutive_passed >= policy.rise)
                }
                (Health::Up, Health::Down, Observation::CheckFailed { .. }) => {
                    assert!(a.consecutive_failed >= policy.fall)
                }
                (Health::Up, Health::Down, Observation::TrafficConnectFailed { .. }) => {}
                (Health::Up, Health::Down, Observation::PromotionFailed { .. }) => {}
                other => panic!("illegal health change {other:?}"),
            }
        }
    }

    #[test]
    fn switchover_is_refused_to_an_unhealthy_or_disabled_master() {
        let mut election = started(Failback::Never);
        election.apply(1, &refused());
        assert_eq!(
            election.switchover(1),
            Err(Refusal::NotHealthy("master-b".into(), "down"))
        );
        election.apply(1, &PASS);
        election.apply(1, &PASS);
        election.set_disabled(1, true);
        assert_eq!(
            election.switchover(1),
            Err(Refusal::Disabled("master-b".into()))
        );
        assert_eq!(election.active(), Some(0));
    }

    #[test]
    fn switchover_pins_against_auto_failback_until_the_next_failover() {
        let mut election = started(Failback::Auto);
        let transition = election.switchover(1).expect("accepted").expect("moved");
        assert_eq!(
            transition.reason,
            "planned switchover: master-b is now active (was master-a)"
        );
        election.apply(0, &PASS);
        assert_eq!(election.active(), Some(1), "auto failback must not undo it");
        election.apply(1, &refused());
        assert_eq!(election.active(), Some(0));
        assert!(!election.pinned());
    }

    #[test]
    fn disabling_the_active_master_moves_traffic_and_enabling_does_not_with_failback_never() {
        let mut election = started(Failback::Never);
        let transition = election.set_disabled(0, true).expect("moved");
        assert_eq!(
            transition.reason,
            "master-a disabled for maintenance; master-b is now active"
        );
        assert_eq!(election.set_disabled(0, false), None);
        assert_eq!(election.active(), Some(1));
    }

    #[test]
    fn the_remembered_master_wins_the_first_election_if_healthy() {
        let mut election = two(Failback::Auto);
        election.remember(1);
        election.apply(0, &PASS);
        assert_eq!(election.active(), None, "waits for master-b's first check");
        election.apply(1, &PASS);
        assert_eq!(election.active(), Some(1));
        election.apply(0, &PASS);
        assert_eq!(
            election.active(),
            Some(1),
            "pinned: no failback after a restart"
        );

        let mut election = two(Failback::Never);
        election.remember(1);
        election.apply(1, &fail());
        election.apply(0, &PASS);
        assert_eq!(
            election.active(),
            Some(0),
            "a down remembered master is not waited for"
        );
    }

    #[test]
    fn a_stopped_cold_standby_is_a_candidate_until_its_promotion_fails() {
        let mut election = two(Failback::Never);
        election.mark_cold(1);
        election.apply(0, &PASS);
        election.apply(1, &fail());
        assert_eq!(election.active(), Some(0));
        election.apply(0, &refused());
        assert_eq!(
            election.active(),
            Some(1),
            "the cold standby is chosen: it can be started"
        );
        let outcome = election.apply(
            1,
            &Observation::PromotionFailed {
                error: "start_command failed".into(),
            },
        );
        assert_eq!(election.active(), None);
        assert!(outcome
            .transition
            .expect("lost")
            .reason
            .contains("promotion failed"));
        election.apply(1, &PASS);
        election.apply(1, &PASS);
        assert_eq!(election.active(), Some(1), "it answers now: up");
    }

    #[test]
    fn min_active_time_limits_failback_of_a_flapping_master() {
        let mut election = started(Failback::Auto);
        election.set_min_active(Duration::from_secs(30));
        election.advance(Duration::from_secs(1));
        election.apply(0, &refused());
        assert_eq!(
            election.active(),
            Some(1),
            "a master that is down is left at once"
        );
        // master-a flaps back up at once: failback waits for min_active_time.
        election.advance(Duration::from_secs(2));
        election.apply(0, &PASS);
        election.apply(0, &PASS);
        assert_eq!(election.active(), Some(1));
        election.advance(Duration::from_secs(30));
        election.apply(0, &PASS);
        assert_eq!(election.active(), Some(1), "29 s active: still waiting");
        election.advance(Duration::from_secs(31));
        let transition = election.apply(0, &PASS).transition.expect("failback");
        assert_eq!(transition.to, Some(0));
    }

    #[test]
    fn reconfiguration_keeps_state_by_name_and_the_active_master() {
        let mut old = Election::new(["a", "b"], policy(Failback::Never));
        old.apply(0, &PASS);
        old.apply(1, &PASS);
        old.switchover(1).expect("switchover");
        let (new, transition) =
            Election::new(["c", "b", "a"], policy(Failback::Never)).reconfigured_from(&old);
        assert_eq!(transition, None);
        assert_eq!(new.active(), Some(1), "b stays active");
        assert_eq!(new.masters()[0].health, Health::Unknown, "c is new");
        assert_eq!(new.masters()[2].health, Health::Up, "a keeps its health");
        let (new, transition) =
            Election::new(["a"], policy(Failback::Never)).reconfigured_from(&old);
        let transition = transition.expect("b removed: a takes over");
        assert_eq!(transition.to, Some(0));
        assert_eq!(new.active(), Some(0));
        assert!(transition.reason.starts_with("configuration reloaded"));
    }
}
