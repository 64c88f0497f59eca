//! Property tests: the election rules under random event sequences, and the config
//! loader under random and mutated input.
//!
//! The election properties are the rules of the module doc of `election.rs`, checked
//! from the outside after every step of random sequences of check results, failed
//! client connections, switchovers, disables/enables, reloads (a new pool and policy)
//! and restarts of the proxy (a fresh election that remembers the active master). A
//! small model (streaks of results per master, the master remembered across a
//! restart) says what the doc promises. Each group of properties is its own test, so
//! one broken rule does not hide another.

use std::collections::HashMap;

use jenkins_ha_proxy::config::{Config, Failback};
use jenkins_ha_proxy::election::{Election, Health, MasterState, Observation, Policy, Transition};
use proptest::prelude::*;
use proptest::sample::subsequence;
use proptest::test_runner::Config as ProptestConfig;

/// Every name a pool can hold; a pool is a non-empty subset of these, in any order.
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const ELECTION_CASES: u32 = 384;
const MAX_STEPS: usize = 200;

/// Random cases only: failures are reported with their minimal input, not saved
/// into the source tree.
fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// A health check of master `index` (possibly out of range: ignored).
    Check(usize, bool),
    /// A client request could not connect to master `index`.
    TrafficFailed(usize),
    Switchover(usize),
    SetDisabled(usize, bool),
    /// `reload`: a new pool (names, order) and policy, state kept by name.
    Reload(Vec<String>, Policy),
    /// The proxy restarts: a fresh election that remembers the active master.
    Restart,
}

fn policy() -> impl Strategy<Value = Policy> {
    (1u32..=4, 1u32..=4, prop::bool::ANY).prop_map(|(rise, fall, auto)| Policy {
        rise,
        fall,
        failback: if auto {
            Failback::Auto
        } else {
            Failback::Never
        },
    })
}

fn pool() -> impl Strategy<Value = Vec<String>> {
    subsequence(NAMES.to_vec(), 1..=NAMES.len())
        .prop_shuffle()
        .prop_map(|names| names.into_iter().map(str::to_owned).collect())
}

fn step() -> impl Strategy<Value = Step> {
    // Mostly in range; index 4 is out of range for every pool (and 1..=3 for
    // smaller pools): such observations must be ignored.
    let index = prop_oneof![9 => 0usize..4, 1 => Just(4usize)];
    prop_oneof![
        12 => (index.clone(), prop::bool::weighted(0.6)).prop_map(|(m, ok)| Step::Check(m, ok)),
        3 => index.clone().prop_map(Step::TrafficFailed),
        2 => index.clone().prop_map(Step::Switchover),
        2 => (index, prop::bool::ANY).prop_map(|(m, d)| Step::SetDisabled(m, d)),
        1 => (pool(), policy()).prop_map(|(names, policy)| Step::Reload(names, policy)),
        2 => Just(Step::Restart),
    ]
}

fn steps() -> impl Strategy<Value = (Vec<String>, Policy, Vec<Step>)> {
    (
        pool(),
        policy(),
        prop::collection::vec(step(), 1..MAX_STEPS),
    )
}

/// The groups of properties, one test each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rules {
    /// At most one active master, electable (up and enabled); a pin needs one.
    OneElectableActive,
    /// The active master changes only with a Transition carrying a reason.
    NoSwitchWithoutReason,
    /// First check decides; then `rise`/`fall`; a failed client connection at once.
    HealthThresholds,
    /// "never": an electable active master stays; "auto" (unpinned): the first one.
    FailbackPolicy,
    /// With no usable active master, the first electable master in order takes over
    /// once the masters before it are checked; nothing usable is left idle otherwise.
    FailoverOrder,
    /// The master active before a restart wins the first election if up, pinned.
    RememberedMaster,
    /// Switchover, disable/enable and reload do what the doc says.
    Operations,
}

/// Per master name: what the model saw since the master joined the pool.
#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    passed: u32,
    failed: u32,
    /// The last observation was a failed connection for a client request.
    traffic_failed: bool,
}

/// What the rules promise, tracked independently of the implementation.
struct Model {
    rules: Rules,
    election: Election,
    streaks: HashMap<String, Streak>,
    /// The master remembered across a restart, until the first election after it.
    remembered: Option<String>,
}

fn active_name(election: &Election) -> Option<String> {
    election
        .active()
        .map(|index| election.masters()[index].name.clone())
}

fn pool_names(election: &Election) -> Vec<String> {
    election.masters().iter().map(|m| m.name.clone()).collect()
}

fn first_electable(election: &Election) -> Option<usize> {
    election.masters().iter().position(MasterState::electable)
}

fn index_of(election: &Election, name: &str) -> Option<usize> {
    election.masters().iter().position(|m| m.name == name)
}

/// Up, enabled, and by name in `election`.
fn electable(election: &Election, name: &str) -> bool {
    index_of(election, name).is_some_and(|i| election.masters()[i].electable())
}

/// Enabled and never checked: the election must wait for its first check.
fn unchecked(master: &MasterState) -> bool {
    master.health == Health::Unknown && !master.disabled
}

fn run_rules(
    rules: Rules,
    names: &[String],
    policy: Policy,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let mut model = Model {
        rules,
        election: Election::new(names.iter().cloned(), policy),
        streaks: HashMap::new(),
        remembered: None,
    };
    for (i, step) in steps.iter().enumerate() {
        let before = model.election.clone();
        model.step(step).map_err(|e| {
            TestCaseError::fail(format!(
                "step {i} {step:?}: {e}\nbefore: {before:?}\nafter: {:?}",
                model.election
            ))
        })?;
    }
    Ok(())
}

impl Model {
    fn on(&self, rules: Rules) -> bool {
        self.rules == rules
    }

    /// Runs one step and checks the properties of `self.rules`.
    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let before = self.election.clone();
        let transition = match step {
            Step::Check(m, ok) => self.observe(*m, *ok, false)?,
            Step::TrafficFailed(m) => self.observe(*m, false, true)?,
            Step::Switchover(m) => self.switchover(*m)?,
            Step::SetDisabled(m, disabled) => self.set_disabled(*m, *disabled)?,
            Step::Reload(names, policy) => self.reload(names, *policy)?,
            Step::Restart => None,
        };
        if let Step::Restart = step {
            self.restart();
        } else {
            if self.on(Rules::NoSwitchWithoutReason) {
                self.check_transition(&before, step, transition.as_ref())?;
            }
            if self.on(Rules::FailbackPolicy) {
                self.check_failback(&before, step)?;
            }
            if self.on(Rules::FailoverOrder) {
                self.check_failover(&before, step)?;
            }
            if self.on(Rules::RememberedMaster) {
                self.check_remembered(&before)?;
            }
        }
        if self.election.active().is_some() {
            // The first election after a restart has happened.
            self.remembered = None;
        }
        self.check_invariants()
    }

    fn observe(
        &mut self,
        master: usize,
        passed: bool,
        traffic: bool,
    ) -> Result<Option<Transition>, TestCaseError> {
        let error = "connection refused".to_owned();
        let observation = match (passed, traffic) {
            (true, _) => Observation::CheckPassed,
            (false, false) => Observation::CheckFailed { error },
            (false, true) => Observation::TrafficConnectFailed { error },
        };
        let before = self.election.clone();
        let outcome = self.election.apply(master, &observation);
        let Some(name) = before.masters().get(master).map(|m| m.name.clone()) else {
            prop_assert_eq!(&self.election, &before, "out-of-range index changed state");
            prop_assert!(outcome.transition.is_none() && outcome.health_change.is_none());
            return Ok(None);
        };
        let streak = self.streaks.entry(name.clone()).or_default();
        streak.traffic_failed = traffic;
        if passed {
            streak.passed += 1;
            streak.failed = 0;
        } else {
            streak.passed = 0;
            streak.failed += 1;
        }
        let streak = *streak;
        if !self.on(Rules::HealthThresholds) {
            return Ok(outcome.transition);
        }
        let policy = self.election.policy();
        let was = before.masters()[master].health;
        let is = self.election.masters()[master].health;
        // Only the observed master's health changes, and the outcome reports it.
        for (b, a) in before.masters().iter().zip(self.election.masters()) {
            if b.name != name {
                prop_assert_eq!(b.health, a.health, "{} changed too", b.name);
            }
        }
        match &outcome.health_change {
            Some(change) => {
                prop_assert_eq!((change.master, change.from, change.to), (master, was, is));
                prop_assert!(change.from != change.to && !change.reason.is_empty());
            }
            None => prop_assert_eq!(was, is, "health changed without a HealthChange"),
        }
        prop_assert!(
            is != Health::Unknown,
            "{} still unknown after a check",
            name
        );
        if streak.passed >= policy.rise {
            prop_assert_eq!(is, Health::Up, "{} passed {} in a row", name, streak.passed);
        }
        if streak.failed >= policy.fall || streak.traffic_failed {
            prop_assert_eq!(
                is,
                Health::Down,
                "{} failed {} in a row",
                name,
                streak.failed
            );
        }
        match (was, is) {
            (Health::Down, Health::Up) => prop_assert!(streak.passed >= policy.rise),
            (Health::Up, Health::Down) => {
                prop_assert!(streak.failed >= policy.fall || streak.traffic_failed)
            }
            _ => {}
        }
        Ok(outcome.transition)
    }

    fn switchover(&mut self, to: usize) -> Result<Option<Transition>, TestCaseError> {
        let before = self.election.clone();
        let result = self.election.switchover(to);
        if result.is_ok() && before.masters().get(to).is_some() {
            // A planned switchover is a deliberate choice: it replaces the master
            // remembered from before a restart.
            self.remembered = None;
        }
        if !self.on(Rules::Operations) {
            return Ok(result.unwrap_or(None));
        }
        let Some(target) = before.masters().get(to) else {
            prop_assert_eq!(&self.election, &before, "out-of-range index changed state");
            return Ok(None);
        };
        match result {
            Err(refusal) => {
                prop_assert!(
                    !target.electable(),
                    "refused an electable master: {}",
                    refusal
                );
                prop_assert_eq!(
                    &self.election,
                    &before,
                    "a refused switchover changed state"
                );
                Ok(None)
            }
            Ok(transition) => {
                prop_assert!(
                    target.electable(),
                    "switched to a master that is not electable"
                );
                prop_assert_eq!(self.election.active(), Some(to));
                prop_assert!(self.election.pinned(), "a switchover pins its choice");
                Ok(transition)
            }
        }
    }

    fn set_disabled(
        &mut self,
        master: usize,
        disabled: bool,
    ) -> Result<Option<Transition>, TestCaseError> {
        let before = self.election.clone();
        let transition = self.election.set_disabled(master, disabled);
        if self.on(Rules::Operations) {
            match self.election.masters().get(master) {
                Some(state) => {
                    prop_assert_eq!(state.disabled, disabled);
                    prop_assert_eq!(state.health, before.masters()[master].health);
                    if disabled {
                        prop_assert_ne!(self.election.active(), Some(master), "disabled, active");
                    }
                }
                None => prop_assert_eq!(&self.election, &before, "out-of-range index"),
            }
        }
        Ok(transition)
    }

    fn reload(
        &mut self,
        names: &[String],
        policy: Policy,
    ) -> Result<Option<Transition>, TestCaseError> {
        let previous = self.election.clone();
        let (election, transition) =
            Election::new(names.iter().cloned(), policy).reconfigured_from(&previous);
        self.election = election;
        self.streaks.retain(|name, _| names.contains(name));
        // A master leaving the pool is no longer remembered.
        self.remembered = self.remembered.take().filter(|name| names.contains(name));
        if !self.on(Rules::Operations) {
            return Ok(transition);
        }
        prop_assert_eq!(&pool_names(&self.election), names);
        prop_assert_eq!(self.election.policy(), policy);
        // State is kept by name; masters new to the pool start unknown.
        for master in self.election.masters() {
            match previous.masters().iter().find(|m| m.name == master.name) {
                Some(old) => {
                    prop_assert_eq!(old.health, master.health);
                    prop_assert_eq!(old.disabled, master.disabled);
                }
                None => prop_assert!(unchecked(master), "new {:?}", master),
            }
        }
        // The active master stays active if it is still in the pool and electable
        // (unless failback "auto", unpinned, prefers an earlier one).
        let kept = active_name(&previous).filter(|name| electable(&self.election, name));
        if let Some(kept) = kept {
            let kept = index_of(&self.election, &kept);
            let stays = policy.failback == Failback::Never || previous.pinned();
            let expected = if stays {
                kept
            } else {
                first_electable(&self.election)
            };
            prop_assert_eq!(self.election.active(), expected);
        }
        Ok(transition)
    }

    fn restart(&mut self) {
        let previous = active_name(&self.election);
        let mut election = Election::new(pool_names(&self.election), self.election.policy());
        if let Some(index) = previous.as_deref().and_then(|n| index_of(&election, n)) {
            election.remember(index);
        }
        self.election = election;
        self.streaks.clear();
        self.remembered = previous;
    }

    /// No switch without a reason, and no Transition without a switch.
    fn check_transition(
        &self,
        before: &Election,
        step: &Step,
        transition: Option<&Transition>,
    ) -> Result<(), TestCaseError> {
        let after = &self.election;
        let (was, is) = (active_name(before), active_name(after));
        let Some(t) = transition else {
            prop_assert_eq!(was, is, "the active master changed without a transition");
            return Ok(());
        };
        prop_assert!(was != is, "a transition without a change: {:?}", t);
        prop_assert!(!t.reason.trim().is_empty(), "{:?}: empty reason", step);
        prop_assert_eq!(t.to, after.active());
        // `from` is an index in the pool after the step (a reload may move it).
        let from = t.from.map(|i| after.masters()[i].name.clone());
        prop_assert_eq!(from, was.filter(|name| index_of(after, name).is_some()));
        Ok(())
    }

    /// An electable active master is replaced only by a planned switchover, or with
    /// failback "auto" (unpinned) by an earlier master in order.
    fn check_failback(&self, before: &Election, step: &Step) -> Result<(), TestCaseError> {
        let after = &self.election;
        if let (Failback::Auto, false, Some(_)) =
            (after.policy().failback, after.pinned(), after.active())
        {
            prop_assert_eq!(
                after.active(),
                first_electable(after),
                "auto: not the first"
            );
        }
        if matches!(step, Step::Switchover(_)) {
            return Ok(());
        }
        let Some(was) = active_name(before).filter(|name| electable(after, name)) else {
            return Ok(());
        };
        let is = active_name(after);
        if is.as_deref() == Some(was.as_str()) {
            return Ok(());
        }
        let failback = after.policy().failback;
        prop_assert!(
            failback == Failback::Auto && !before.pinned(),
            "electable {} replaced by {:?} (failback {:?}, pinned {})",
            was,
            is,
            failback,
            before.pinned()
        );
        let earlier = index_of(after, &was);
        prop_assert!(
            after.active() < earlier,
            "failback to a later master {:?}",
            is
        );
        Ok(())
    }

    /// When the active master is lost (or there was none), the next one is the
    /// remembered master on the first election after a restart, otherwise the first
    /// electable master in order, and only once every master before it is checked.
    fn check_failover(&self, before: &Election, step: &Step) -> Result<(), TestCaseError> {
        let after = &self.election;
        if matches!(step, Step::Switchover(_)) {
            return Ok(());
        }
        if active_name(before).is_some_and(|name| electable(after, &name)) {
            return Ok(()); // not a failover: the failback rules apply
        }
        let Some(active) = after.active() else {
            return Ok(());
        };
        if let Some(remembered) = self.remembered.as_deref() {
            if electable(after, remembered) {
                return Ok(()); // RememberedMaster checks this one
            }
        }
        prop_assert_eq!(
            Some(active),
            first_electable(after),
            "not the first electable"
        );
        let masters = after.masters();
        prop_assert!(
            !masters[..active].iter().any(unchecked),
            "elected before an earlier master was checked"
        );
        Ok(())
    }

    /// The master remembered before a restart wins the first election if it is up,
    /// and that choice is pinned; while it is unchecked, nothing else is elected.
    fn check_remembered(&self, before: &Election) -> Result<(), TestCaseError> {
        let after = &self.election;
        let Some(remembered) = self.remembered.as_deref() else {
            return Ok(());
        };
        let Some(index) = index_of(after, remembered) else {
            return Ok(());
        };
        if before.active().is_some() {
            return Ok(());
        }
        let state = &after.masters()[index];
        match after.active() {
            Some(active) if state.electable() => {
                prop_assert_eq!(active, index, "remembered {} up, not elected", remembered);
                prop_assert!(after.pinned(), "the remembered master is not pinned");
            }
            Some(_) => prop_assert!(
                !unchecked(state),
                "elected before {} was checked",
                remembered
            ),
            None => {}
        }
        Ok(())
    }

    /// Checked after every step of every rule group.
    fn check_invariants(&self) -> Result<(), TestCaseError> {
        let e = &self.election;
        let masters = e.masters();
        if self.on(Rules::OneElectableActive) {
            if let Some(active) = e.active() {
                prop_assert!(active < masters.len());
                prop_assert!(
                    masters[active].electable(),
                    "active is {:?}",
                    masters[active]
                );
            }
            prop_assert!(
                !e.pinned() || e.active().is_some(),
                "pinned without an active master"
            );
        }
        // Nothing electable is left idle unless the election must wait for a first
        // check: of an earlier master, or of the remembered one.
        if self.on(Rules::FailoverOrder) && e.active().is_none() {
            if let Some(up) = first_electable(e) {
                let earlier = masters[..up].iter().any(unchecked);
                let remembered = self
                    .remembered
                    .as_deref()
                    .and_then(|name| masters.iter().find(|m| m.name == name))
                    .is_some_and(unchecked);
                prop_assert!(
                    earlier || remembered,
                    "{} is electable, yet nothing is active",
                    masters[up].name
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(cases(ELECTION_CASES))]

    #[test]
    fn election_has_at_most_one_active_master_and_it_is_electable((names, policy, steps) in steps()) {
        run_rules(Rules::OneElectableActive, &names, policy, &steps)?;
    }

    #[test]
    fn election_never_switches_without_a_reason((names, policy, steps) in steps()) {
        run_rules(Rules::NoSwitchWithoutReason, &names, policy, &steps)?;
    }

    #[test]
    fn election_health_follows_first_check_rise_and_fall((names, policy, steps) in steps()) {
        run_rules(Rules::HealthThresholds, &names, policy, &steps)?;
    }

    #[test]
    fn election_respects_the_failback_policy((names, policy, steps) in steps()) {
        run_rules(Rules::FailbackPolicy, &names, policy, &steps)?;
    }

    #[test]
    fn election_fails_over_to_the_first_healthy_master((names, policy, steps) in steps()) {
        run_rules(Rules::FailoverOrder, &names, policy, &steps)?;
    }

    #[test]
    fn election_remembered_master_wins_the_first_election((names, policy, steps) in steps()) {
        run_rules(Rules::RememberedMaster, &names, policy, &steps)?;
    }

    #[test]
    fn election_operations_do_what_they_say((names, policy, steps) in steps()) {
        run_rules(Rules::Operations, &names, policy, &steps)?;
    }
}

// Minimal cases the properties above found, kept as plain tests so they fail every
// run, not only when the random search hits them.

fn policy_never() -> Policy {
    Policy {
        rise: 1,
        fall: 1,
        failback: Failback::Never,
    }
}

const UP: Observation = Observation::CheckPassed;

fn refused() -> Observation {
    Observation::TrafficConnectFailed {
        error: "connection refused".into(),
    }
}

#[test]
fn a_reload_that_removes_the_active_master_says_why_traffic_stopped() {
    let mut old = Election::new(["a", "b"], policy_never());
    old.apply(0, &UP);
    assert_eq!(old.active(), Some(0));
    // "c" is new (unchecked), so nothing can be active after the reload.
    let (new, transition) = Election::new(["c"], policy_never()).reconfigured_from(&old);
    assert_eq!(new.active(), None);
    let transition = transition.expect("a was active and is gone: a transition with a reason");
    assert!(!transition.reason.is_empty());
}

#[test]
fn after_a_restart_and_a_switchover_failover_goes_to_the_first_healthy_master() {
    let mut election = Election::new(["a", "b", "c"], policy_never());
    election.remember(2); // c was active before the restart
    election.apply(0, &UP);
    election.switchover(0).expect("a is up");
    election.apply(1, &UP);
    election.apply(2, &UP);
    let transition = election.apply(0, &refused()).transition.expect("a failed");
    // README: "The first healthy master in file order becomes active".
    assert_eq!(transition.to, Some(1), "{transition:?}");
}

#[test]
fn a_reload_before_the_first_election_keeps_the_remembered_master() {
    let mut old = Election::new(["a", "b"], policy_never());
    old.remember(1); // b was active before the restart
    old.apply(0, &UP);
    assert_eq!(old.active(), None, "waits for b's first check");
    let (mut new, _) = Election::new(["a", "b"], policy_never()).reconfigured_from(&old);
    assert_eq!(new.active(), None, "a reload must not drop the wait for b");
    new.apply(1, &UP);
    assert_eq!(new.active(), Some(1));
    assert!(new.pinned());
}

// ---- Config loader fuzz ----------------------------------------------------------

const EXAMPLE: &str = include_str!("../config/jenkins-ha-proxy.toml");

/// Values a mutated line may take: valid, wrong type, wrong unit, huge, empty, odd.
const TOKENS: &[&str] = &[
    "\"\"",
    "\"0s\"",
    "\"-1s\"",
    "\"1000000000000h\"",
    "\"18446744073709551616ms\"",
    "\"2 s\"",
    "\"off\"",
    "\"never\"",
    "\"auto\"",
    "\"sometimes\"",
    "0",
    "-1",
    "4294967296",
    "99999999999999999999999",
    "1.5",
    "true",
    "[]",
    "{}",
    "[[",
    "\"http://\"",
    "\"http://[::1\"",
    "\"http://h:99999\"",
    "\"https://h:8080/x\"",
    "\"0.0.0.0:8080\"",
    "\"127.0.0.1:8404\"",
    "\"[::1]:0\"",
    "\"999.1.1.1:80\"",
    "\"é\"",
    "\"\\u0000\"",
    "'''",
    "\"a\\\"b\"",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    /// Replaces the value of a `key = value` line (or the whole line) with a token.
    SetValue(usize, usize),
    /// Inserts a copied line somewhere else (keys move between tables).
    Move(usize, usize),
    Uncomment(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let line = 0usize..1000;
    prop_oneof![
        1 => line.clone().prop_map(Mutation::Delete),
        1 => line.clone().prop_map(Mutation::Duplicate),
        1 => (line.clone(), line.clone()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        3 => (line.clone(), 0..TOKENS.len()).prop_map(|(l, t)| Mutation::SetValue(l, t)),
        1 => (line.clone(), line.clone()).prop_map(|(a, b)| Mutation::Move(a, b)),
        1 => line.prop_map(Mutation::Uncomment),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for mutation in mutations {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match *mutation {
            Mutation::Delete(l) => {
                lines.remove(l % n);
            }
            Mutation::Duplicate(l) => {
                let line = lines[l % n].clone();
                lines.insert(l % n, line);
            }
            Mutation::Swap(a, b) => lines.swap(a % n, b % n),
            Mutation::SetValue(l, t) => {
                let line = &mut lines[l % n];
                *line = match line.split_once('=') {
                    Some((key, _)) => format!("{key}= {}", TOKENS[t]),
                    None => TOKENS[t].to_owned(),
                };
            }
            Mutation::Move(a, b) => {
                let line = lines.remove(a % n);
                lines.insert(b % n, line);
            }
            Mutation::Uncomment(l) => {
                let line = &mut lines[l % n];
                *line = line.trim_start_matches('#').to_owned();
            }
        }
    }
    lines.join("\n")
}

/// Never panics; an error is one line naming the file.
fn check_parse(text: &str) -> Result<(), TestCaseError> {
    let result = std::panic::catch_unwind(|| Config::parse(text, "fuzz.toml"));
    let Ok(result) = result else {
        return Err(TestCaseError::fail(format!(
            "Config::parse panicked on:\n{text}"
        )));
    };
    if let Err(error) = result {
        let message = error.to_string();
        prop_assert!(
            !message.contains('\n'),
            "not one line: {:?}\ninput:\n{}",
            message,
            text
        );
        prop_assert!(
            message.contains("fuzz.toml:"),
            "no file named: {:?}\ninput:\n{}",
            message,
            text
        );
    }
    Ok(())
}

#[test]
fn the_example_config_is_valid() {
    // The mutations below start from a valid file: otherwise they test little.
    Config::parse(EXAMPLE, "fuzz.toml").expect("the shipped example parses");
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn config_parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        check_parse(&text)?;
    }

    #[test]
    fn config_parse_never_panics_on_toml_like_text(
        text in "(\\[{1,2}[a-z]{0,8}\\]{1,2}\n|[a-z_]{1,12} ?= ?(\"[^\"\n]{0,20}\"|[0-9-]{1,22}|true|\\[\\])\n|#[^\n]{0,10}\n){0,20}"
    ) {
        check_parse(&text)?;
    }

    #[test]
    fn config_parse_never_panics_on_a_mutated_example(
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        check_parse(&mutate(EXAMPLE, &mutations))?;
    }
}
