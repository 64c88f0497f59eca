//! Readiness: traffic reaches only a master that is ready for it on a shared home.
//!
//! A pure state machine, as the election is: each event (a completed check, the
//! election's choice, a promotion's progress, what a hot standby says about its
//! quiet-down) changes the state and returns the [`Action`]s the owner task carries
//! out (promoter tasks, hooks, Jenkins REST calls, log lines). No I/O, no clock: the
//! time is passed in.
//!
//! What it decides:
//! - Which master is cleared for traffic (`ready`): the election's active master, once
//!   its promotion has completed where one is needed (fence the master that had
//!   traffic, reload a hot standby or start a cold one, wait until it answers healthy).
//!   The first election needs none (that master is serving already), unless it must
//!   start a stopped cold standby.
//! - The restart hold: a serving master whose checks say Jenkins is starting keeps its
//!   traffic, held, for `starting_grace`, before the election hears of those checks.
//! - Hot standbys are kept in quiet-down; a cold standby answering, or a hot one out of
//!   quiet-down, while another master serves raises a two-masters-up alarm.

mod actions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{HookEvent, Standby};
use crate::control::election::Health;
use crate::control::promotion::{Progress, PromotionSettings, Step};
use crate::control::routing::{Master, MasterStatus, PromotionView};
pub use actions::{Action, Check, Notice, Verdict};

/// What readiness needs from the configuration.
#[derive(Debug, Clone)]
pub struct ReadinessSettings {
    pub promotion: Arc<PromotionSettings>,
    /// `failover.starting_grace`.
    pub starting_grace: Duration,
}

/// A promotion under way: traffic is held until it completes.
#[derive(Debug)]
struct Promotion {
    target: Arc<Master>,
    started: SystemTime,
    /// Set while `require_fence` holds the promotion (fencing failed; retried).
    waiting_on_fence: Option<String>,
}

/// The readiness state. Written only by the owner task, through the transitions below.
#[derive(Debug)]
pub struct Readiness {
    settings: ReadinessSettings,
    /// The master cleared for traffic. Traffic goes only here.
    ready: Option<Arc<Master>>,
    /// Whether any master was ever ready: the first election needs no promotion.
    ever_ready: bool,
    /// The master that had traffic last and may still run: fenced before the next
    /// promotion.
    last_served: Option<Arc<Master>>,
    promotion: Option<Promotion>,
    /// Hot standbys put into quiet-down (by name).
    quieted: Vec<String>,
    /// Hot standbys seen out of quiet-down while not serving (by name).
    unquiet: Vec<String>,
    /// Current alarms, for /status.
    alarms: Vec<String>,
    /// Last `X-Jenkins-Session` seen per master name: a change means a JVM restart.
    sessions: HashMap<String, String>,
    /// The serving master that says it is starting, and since when, while
    /// `starting_grace` holds traffic for it.
    restarting: Option<(Arc<Master>, SystemTime)>,
}

fn same(a: Option<&Arc<Master>>, b: &Arc<Master>) -> bool {
    a.is_some_and(|a| Arc::ptr_eq(a, b))
}

impl Readiness {
    pub fn new(settings: ReadinessSettings) -> Readiness {
        Readiness {
            settings,
            ready: None,
            ever_ready: false,
            last_served: None,
            promotion: None,
            quieted: Vec::new(),
            unquiet: Vec::new(),
            alarms: Vec::new(),
            sessions: HashMap::new(),
            restarting: None,
        }
    }

    /// A reload's settings; they apply from the next event on.
    pub fn set_settings(&mut self, settings: ReadinessSettings) {
        self.settings = settings;
    }

    /// Whether traffic may go to `master`: it is ready, and not restarting within
    /// `starting_grace`.
    pub fn routes_to(&self, master: &Arc<Master>) -> bool {
        same(self.ready.as_ref(), master) && !same(self.restarting.as_ref().map(|(m, _)| m), master)
    }

    /// What held traffic waits for, if anything: a promotion, or a restarting master.
    pub fn hold(&self) -> Option<PromotionView> {
        if let Some(promotion) = &self.promotion {
            return Some(PromotionView {
                to: promotion.target.name.clone(),
                waiting_for: format!("{} to be made ready", promotion.target.name),
                since: promotion.started,
                waiting_on_fence: promotion.waiting_on_fence.clone(),
            });
        }
        self.restarting
            .as_ref()
            .map(|(master, since)| PromotionView {
                to: master.name.clone(),
                waiting_for: format!(
                    "{} to finish restarting (failover.starting_grace)",
                    master.name
                ),
                since: *since,
                waiting_on_fence: None,
            })
    }

    pub fn alarms(&self) -> &[String] {
        &self.alarms
    }

    /// A health check completed.
    pub fn checked(&mut self, check: Check<'_>, now: SystemTime) -> (Verdict, Vec<Action>) {
        let promoting = self.promotion.as_ref().map(|p| &p.target);
        if same(promoting, check.master) && !check.passed {
            return (Verdict::Expected, Vec::new());
        }
        let mut actions = Vec::new();
        self.note_session(&check, &mut actions);
        let serving = same(self.ready.as_ref(), check.master);
        let quieted = self.quieted.contains(&check.master.name);
        if check.passed && check.master.standby == Standby::Hot && !serving && quieted {
            // Still quiet? A JVM restart or an operator may have ended it.
            actions.push(Action::AskQuietState(Arc::clone(check.master)));
        }
        let verdict = self.restart_hold(&check, now, &mut actions);
        (verdict, actions)
    }

    /// A new `X-Jenkins-Session` means the JVM restarted: a hot standby then left
    /// quiet-down and must be put back.
    fn note_session(&mut self, check: &Check<'_>, actions: &mut Vec<Action>) {
        let Some(session) = check.session else {
            return;
        };
        let name = &check.master.name;
        let previous = self.sessions.insert(name.clone(), session.to_owned());
        if previous.is_some_and(|previous| previous != session) {
            actions.push(Action::Log(Notice::Restarted(Arc::clone(check.master))));
            self.quieted.retain(|q| q != name);
        }
    }

    /// While the serving master says it is starting, `starting_grace` holds its traffic
    /// instead of failing over.
    fn restart_hold(
        &mut self,
        check: &Check<'_>,
        now: SystemTime,
        actions: &mut Vec<Action>,
    ) -> Verdict {
        let master = check.master;
        let serving = same(self.ready.as_ref(), master);
        let grace = self.settings.starting_grace;
        let held_since = match &self.restarting {
            Some((held, since)) if Arc::ptr_eq(held, master) => Some(*since),
            _ => None,
        };
        if !check.starting || !serving || grace.is_zero() {
            if held_since.is_some() {
                self.restarting = None;
            }
            return Verdict::Counts;
        }
        let since = held_since.unwrap_or_else(|| {
            actions.push(Action::Log(Notice::HoldingForRestart {
                master: Arc::clone(master),
                grace,
            }));
            self.restarting = Some((Arc::clone(master), now));
            now
        });
        if now.duration_since(since).unwrap_or_default() < grace {
            return Verdict::Held;
        }
        actions.push(Action::Log(Notice::GraceRanOut(Arc::clone(master))));
        self.restarting = None;
        Verdict::Counts
    }

    /// A report from the promoter of `target` (a stale one is ignored).
    pub fn progress(
        &mut self,
        target: &Arc<Master>,
        progress: Progress,
        now: SystemTime,
    ) -> Vec<Action> {
        if !same(self.promotion.as_ref().map(|p| &p.target), target) {
            return Vec::new();
        }
        let master = Arc::clone(target);
        match progress {
            Progress::Step(step) => vec![
                Action::Log(Notice::Step {
                    master: Arc::clone(&master),
                    step: step.clone(),
                }),
                Action::RecordStep { to: master, step },
            ],
            Progress::WaitingOnFence(why) => {
                if let Some(promotion) = self.promotion.as_mut() {
                    promotion.waiting_on_fence = Some(why.clone());
                }
                vec![Action::Log(Notice::WaitingOnFence { master, why })]
            }
            Progress::Done(Ok(())) => {
                let took = self
                    .promotion
                    .take()
                    .and_then(|p| now.duration_since(p.started).ok())
                    .unwrap_or_default();
                let step = Step {
                    step: "traffic moved".into(),
                    ok: true,
                    took,
                    detail: format!("{} receives traffic", master.name),
                };
                let mut actions = vec![
                    Action::StopPromoter,
                    Action::RecordStep {
                        to: Arc::clone(&master),
                        step,
                    },
                    Action::Log(Notice::PromotionComplete {
                        master: Arc::clone(&master),
                        took,
                    }),
                ];
                self.make_ready(master, &mut actions);
                actions
            }
            Progress::Done(Err(error)) => {
                self.promotion = None;
                vec![
                    Action::StopPromoter,
                    Action::PromotionFailed {
                        master,
                        error: error.to_string(),
                    },
                ]
            }
        }
    }

    /// What a hot standby said about its quiet-down state. Out of it while another
    /// master serves: alarm (at the next reconcile), and quiet-down again.
    pub fn quiet_state(&mut self, master: &Arc<Master>, quieting: bool) {
        let name = &master.name;
        if quieting || same(self.ready.as_ref(), master) {
            self.unquiet.retain(|n| n != name);
            return;
        }
        if !self.unquiet.contains(name) {
            self.unquiet.push(name.clone());
        }
        self.quieted.retain(|n| n != name); // reconcile sends quietDown again
    }

    /// Brings traffic in line with `elected`, the election's active master: it is made
    /// ready (after a promotion where one is needed). Also keeps hot standbys in
    /// quiet-down and raises two-masters-up alarms. `masters`: the pool, file order.
    pub fn reconcile(
        &mut self,
        elected: Option<&Arc<Master>>,
        masters: &[MasterStatus],
        now: SystemTime,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let steady = elected.is_some_and(|e| same(self.ready.as_ref(), e));
        let in_progress =
            elected.is_some_and(|e| same(self.promotion.as_ref().map(|p| &p.target), e));
        if !steady && !in_progress {
            if self.promotion.take().is_some() {
                actions.push(Action::StopPromoter);
            }
            if let Some(previous) = self.ready.take() {
                actions.push(Action::Hooks {
                    event: HookEvent::Demote,
                    master: Arc::clone(&previous),
                    reason: "demoted",
                });
                self.last_served = Some(previous);
            }
            if let Some(target) = elected {
                self.begin(Arc::clone(target), masters, now, &mut actions);
            }
        }
        self.keep_standbys_quiet(masters, &mut actions);
        self.check_two_up(masters, &mut actions);
        actions
    }

    /// Starts making `target` ready, or makes it ready at once when nothing is needed.
    fn begin(
        &mut self,
        target: Arc<Master>,
        masters: &[MasterStatus],
        now: SystemTime,
        actions: &mut Vec<Action>,
    ) {
        // A stopped cold standby must be started even as the first master ever.
        let stopped = masters
            .iter()
            .any(|s| Arc::ptr_eq(&s.master, &target) && s.health != Health::Up);
        let needed = (self.ever_ready
            && self
                .settings
                .promotion
                .needed(self.last_served.as_ref(), &target))
            || (target.standby == Standby::Cold && stopped);
        if !needed {
            self.make_ready(target, actions);
            return;
        }
        actions.push(Action::Log(Notice::PromotionStarts(Arc::clone(&target))));
        actions.push(Action::Promote {
            from: self.last_served.clone(),
            to: Arc::clone(&target),
        });
        self.promotion = Some(Promotion {
            target,
            started: now,
            waiting_on_fence: None,
        });
    }

    fn make_ready(&mut self, master: Arc<Master>, actions: &mut Vec<Action>) {
        self.quieted.retain(|name| name != &master.name);
        actions.push(Action::Hooks {
            event: HookEvent::Promote,
            master: Arc::clone(&master),
            reason: "promoted",
        });
        self.ready = Some(master);
        self.ever_ready = true;
        self.last_served = None;
    }

    /// A hot standby that is up and not serving is put into quiet-down once, so it
    /// starts no builds of its own on the shared home.
    fn keep_standbys_quiet(&mut self, masters: &[MasterStatus], actions: &mut Vec<Action>) {
        for status in masters {
            let master = &status.master;
            if status.health != Health::Up {
                self.quieted.retain(|q| q != &master.name);
                continue;
            }
            let serving = same(self.ready.as_ref(), master)
                || same(self.promotion.as_ref().map(|p| &p.target), master);
            if master.standby == Standby::Hot && !serving && !self.quieted.contains(&master.name) {
                self.quieted.push(master.name.clone());
                actions.push(Action::QuietDown(Arc::clone(master)));
            }
        }
    }

    /// A cold standby answering health checks, or a hot one out of quiet-down, while
    /// another master serves means two JVMs may run on one home: alarm at once.
    fn check_two_up(&mut self, masters: &[MasterStatus], actions: &mut Vec<Action>) {
        let Some(ready) = &self.ready else {
            self.alarms.clear();
            return;
        };
        let cold = masters.iter().filter(|s| {
            s.master.standby == Standby::Cold
                && s.health == Health::Up
                && !Arc::ptr_eq(&s.master, ready)
        });
        let mut alarms: Vec<String> = cold
            .map(|s| {
                format!(
                    "two masters up: {} (cold standby) answers while {} is active; stop it or fence it",
                    s.master.name, ready.name
                )
            })
            .collect();
        alarms.extend(
            self.unquiet
                .iter()
                .filter(|n| **n != ready.name)
                .map(|name| {
                    format!(
                "two masters up: {name} (hot standby) is out of quiet-down while {} is active; \
                 putting it back into quiet-down",
                ready.name
            )
                }),
        );
        for alarm in alarms.iter().filter(|a| !self.alarms.contains(a)) {
            actions.push(Action::Log(Notice::Alarm(alarm.clone())));
        }
        self.alarms = alarms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthConfig;
    use crate::control::promotion::PromotionError;
    use crate::upstream::{Upstream, UpstreamSettings};

    fn master(name: &str, standby: Standby, fence: bool) -> Arc<Master> {
        Arc::new(Master {
            name: name.to_owned(),
            url: format!("http://{name}:8080"),
            host: name.to_owned(),
            standby,
            start_command: (standby == Standby::Cold).then(|| vec!["start".to_owned()]),
            fence_command: fence.then(|| vec!["fence".to_owned()]),
            upstream: Upstream::new(name, 8080, UpstreamSettings::for_tests()),
            check_now: tokio::sync::Notify::new(),
            counters: Default::default(),
        })
    }

    fn settings(require_fence: bool, starting_grace: Duration) -> ReadinessSettings {
        ReadinessSettings {
            promotion: Arc::new(PromotionSettings {
                require_fence,
                promote_timeout: Duration::from_secs(120),
                command_timeout: Duration::from_secs(30),
                call_timeout: Duration::from_secs(10),
                credentials: None,
                health: HealthConfig {
                    path: "/login".into(),
                    interval: Duration::from_secs(2),
                    timeout: Duration::from_secs(1),
                    rise: 2,
                    fall: 3,
                    expect_header: None,
                    expect_body: None,
                },
            }),
            starting_grace,
        }
    }

    fn status(master: &Arc<Master>, health: Health) -> MasterStatus {
        MasterStatus {
            master: Arc::clone(master),
            health,
            disabled: false,
            starting: false,
            last_check: None,
            last_error: None,
            latency: None,
            consecutive_passed: 0,
            consecutive_failed: 0,
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + seconds)
    }

    fn check<'a>(master: &'a Arc<Master>, passed: bool, starting: bool) -> Check<'a> {
        Check {
            master,
            passed,
            starting,
            session: None,
        }
    }

    /// The actions, named, with the master they are about.
    fn names(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|action| match action {
                Action::Hooks { event, master, .. } => {
                    format!("hooks {} {}", event.as_str(), master.name)
                }
                Action::Promote { from, to } => format!(
                    "promote {} from {}",
                    to.name,
                    from.as_ref().map_or("none", |f| f.name.as_str())
                ),
                Action::StopPromoter => "stop promoter".into(),
                Action::QuietDown(m) => format!("quiet down {}", m.name),
                Action::AskQuietState(m) => format!("ask quiet state {}", m.name),
                Action::RecordStep { to, step } => format!("step {} {}", to.name, step.step),
                Action::PromotionFailed { master, .. } => {
                    format!("promotion failed {}", master.name)
                }
                Action::Log(notice) => format!("log {}", notice_name(notice)),
            })
            .collect()
    }

    fn notice_name(notice: &Notice) -> &'static str {
        match notice {
            Notice::Restarted(_) => "restarted",
            Notice::HoldingForRestart { .. } => "holding for restart",
            Notice::GraceRanOut(_) => "grace ran out",
            Notice::PromotionStarts(_) => "promotion starts",
            Notice::Step { .. } => "step",
            Notice::WaitingOnFence { .. } => "waiting on fence",
            Notice::PromotionComplete { .. } => "promotion complete",
            Notice::Alarm(_) => "alarm",
        }
    }

    /// master-a (plain) is elected first and ready; master-b is a `standby`.
    fn serving(standby: Standby, fence_a: bool) -> (Readiness, Arc<Master>, Arc<Master>) {
        let a = master("master-a", Standby::None, fence_a);
        let b = master("master-b", standby, false);
        let mut readiness = Readiness::new(settings(false, Duration::ZERO));
        let pool = [status(&a, Health::Up), status(&b, Health::Up)];
        readiness.reconcile(Some(&a), &pool, at(0));
        assert!(readiness.routes_to(&a));
        (readiness, a, b)
    }

    #[test]
    fn the_first_election_needs_no_promotion() {
        let a = master("master-a", Standby::Hot, true);
        let mut readiness = Readiness::new(settings(true, Duration::ZERO));
        let actions = readiness.reconcile(Some(&a), &[status(&a, Health::Up)], at(0));
        assert_eq!(names(&actions), ["hooks promote master-a"]);
        assert!(readiness.routes_to(&a));
        assert!(readiness.hold().is_none());
    }

    #[test]
    fn a_stopped_cold_standby_is_started_even_as_the_first_master() {
        let a = master("master-a", Standby::Cold, false);
        let mut readiness = Readiness::new(settings(false, Duration::ZERO));
        let actions = readiness.reconcile(Some(&a), &[status(&a, Health::Down)], at(0));
        assert_eq!(
            names(&actions),
            ["log promotion starts", "promote master-a from none"]
        );
        assert!(!readiness.routes_to(&a));
        let hold = readiness.hold().expect("traffic held");
        assert_eq!(hold.to, "master-a");
        assert_eq!(hold.waiting_for, "master-a to be made ready");
    }

    #[test]
    fn a_plain_failover_moves_traffic_at_once() {
        let (mut readiness, a, b) = serving(Standby::None, false);
        let pool = [status(&a, Health::Down), status(&b, Health::Up)];
        let actions = readiness.reconcile(Some(&b), &pool, at(1));
        assert_eq!(
            names(&actions),
            ["hooks demote master-a", "hooks promote master-b"]
        );
        assert!(readiness.routes_to(&b) && !readiness.routes_to(&a));
    }

    #[test]
    fn a_hot_standby_is_promoted_before_it_gets_traffic() {
        let (mut readiness, a, b) = serving(Standby::Hot, false);
        let pool = [status(&a, Health::Down), status(&b, Health::Up)];
        let actions = readiness.reconcile(Some(&b), &pool, at(1));
        assert_eq!(
            names(&actions),
            [
                "hooks demote master-a",
                "log promotion starts",
                "promote master-b from master-a"
            ]
        );
        assert!(!readiness.routes_to(&b), "held until ready");
        assert_eq!(readiness.hold().map(|h| h.since), Some(at(1)));
        // Steady while it runs: nothing new is started.
        assert!(names(&readiness.reconcile(Some(&b), &pool, at(2))).is_empty());

        let step = Step {
            step: "POST /reload on master-b".into(),
            ok: true,
            took: Duration::from_secs(1),
            detail: "302".into(),
        };
        let actions = readiness.progress(&b, Progress::Step(step), at(2));
        assert_eq!(
            names(&actions),
            ["log step", "step master-b POST /reload on master-b"]
        );
        let actions = readiness.progress(&b, Progress::Done(Ok(())), at(4));
        assert_eq!(
            names(&actions),
            [
                "stop promoter",
                "step master-b traffic moved",
                "log promotion complete",
                "hooks promote master-b"
            ]
        );
        let Some(Action::Log(Notice::PromotionComplete { took, .. })) = actions.get(2) else {
            panic!("{actions:?}");
        };
        assert_eq!(*took, Duration::from_secs(3));
        assert!(readiness.routes_to(&b));
        assert!(readiness.hold().is_none());
    }

    #[test]
    fn the_old_master_is_fenced_when_it_has_a_fence_command_or_fencing_is_required() {
        // master-a has a fence command: even a plain master-b waits for the fence.
        let (mut readiness, a, b) = serving(Standby::None, true);
        let pool = [status(&a, Health::Down), status(&b, Health::Up)];
        let actions = readiness.reconcile(Some(&b), &pool, at(1));
        assert!(names(&actions).contains(&"promote master-b from master-a".to_owned()));
        // require_fence without a fence command: the promoter says it waits.
        let (mut readiness, a, b) = serving(Standby::None, false);
        readiness.set_settings(settings(true, Duration::ZERO));
        let pool = [status(&a, Health::Down), status(&b, Health::Up)];
        readiness.reconcile(Some(&b), &pool, at(1));
        let why = "failover.require_fence is set but master-a has no fence_command: add one";
        let actions = readiness.progress(&b, Progress::WaitingOnFence(why.into()), at(2));
        assert_eq!(names(&actions), ["log waiting on fence"]);
        let hold = readiness.hold().expect("held");
        assert_eq!(hold.waiting_on_fence.as_deref(), Some(why));
    }

    #[test]
    fn a_failed_promotion_is_told_to_the_election() {
        let (mut readiness, a, b) = serving(Standby::Hot, false);
        readiness.reconcile(
            Some(&b),
            &[status(&a, Health::Down), status(&b, Health::Up)],
            at(1),
        );
        let failed = PromotionError::NoStartCommand("master-b".into());
        let actions = readiness.progress(&b, Progress::Done(Err(failed)), at(2));
        assert_eq!(
            names(&actions),
            ["stop promoter", "promotion failed master-b"]
        );
        let Some(Action::PromotionFailed { error, .. }) = actions.get(1) else {
            panic!("{actions:?}");
        };
        assert_eq!(error, "master-b is a cold standby without start_command");
        assert!(readiness.hold().is_none() && !readiness.routes_to(&b));
    }

    #[test]
    fn a_superseded_promotion_is_stopped_and_its_late_reports_ignored() {
        let (mut readiness, a, b) = serving(Standby::Hot, false);
        let c = master("master-c", Standby::Hot, false);
        let pool = [
            status(&a, Health::Down),
            status(&b, Health::Up),
            status(&c, Health::Up),
        ];
        readiness.reconcile(Some(&b), &pool, at(1));
        let actions = readiness.reconcile(Some(&c), &pool, at(2));
        assert_eq!(
            names(&actions),
            [
                "stop promoter",
                "log promotion starts",
                "promote master-c from master-a"
            ]
        );
        assert!(names(&readiness.progress(&b, Progress::Done(Ok(())), at(3))).is_empty());
        assert!(!readiness.routes_to(&b));
    }

    #[test]
    fn checks_of_the_master_being_promoted_that_fail_are_expected() {
        let (mut readiness, a, b) = serving(Standby::Hot, false);
        readiness.reconcile(
            Some(&b),
            &[status(&a, Health::Down), status(&b, Health::Up)],
            at(1),
        );
        assert_eq!(
            readiness.checked(check(&b, false, true), at(2)).0,
            Verdict::Expected
        );
        assert_eq!(
            readiness.checked(check(&b, true, false), at(2)).0,
            Verdict::Counts
        );
        assert_eq!(
            readiness.checked(check(&a, false, false), at(2)).0,
            Verdict::Counts
        );
    }

    #[test]
    fn a_restarting_active_master_is_held_for_starting_grace_then_counted() {
        let (mut readiness, a, _) = serving(Standby::None, false);
        readiness.set_settings(settings(false, Duration::from_secs(60)));
        let (verdict, actions) = readiness.checked(check(&a, false, true), at(10));
        assert_eq!(verdict, Verdict::Held);
        assert_eq!(names(&actions), ["log holding for restart"]);
        assert!(!readiness.routes_to(&a), "its requests wait");
        let hold = readiness.hold().expect("held");
        assert_eq!(
            hold.waiting_for,
            "master-a to finish restarting (failover.starting_grace)"
        );
        assert_eq!(hold.since, at(10));
        let (verdict, actions) = readiness.checked(check(&a, false, true), at(69));
        assert_eq!((verdict, actions.len()), (Verdict::Held, 0));
        let (verdict, actions) = readiness.checked(check(&a, false, true), at(70));
        assert_eq!(verdict, Verdict::Counts);
        assert_eq!(names(&actions), ["log grace ran out"]);
        assert!(readiness.hold().is_none());
    }

    #[test]
    fn a_restart_hold_ends_when_the_master_answers_again() {
        let (mut readiness, a, _) = serving(Standby::None, false);
        readiness.set_settings(settings(false, Duration::from_secs(60)));
        readiness.checked(check(&a, false, true), at(10));
        let (verdict, _) = readiness.checked(check(&a, true, false), at(20));
        assert_eq!(verdict, Verdict::Counts);
        assert!(readiness.routes_to(&a) && readiness.hold().is_none());
    }

    #[test]
    fn without_grace_or_for_a_master_not_serving_a_restart_counts_at_once() {
        let (mut readiness, a, b) = serving(Standby::None, false);
        assert_eq!(
            readiness.checked(check(&a, false, true), at(1)).0,
            Verdict::Counts
        );
        readiness.set_settings(settings(false, Duration::from_secs(60)));
        assert_eq!(
            readiness.checked(check(&b, false, true), at(1)).0,
            Verdict::Counts
        );
        assert!(readiness.routes_to(&a));
    }

    #[test]
    fn hot_standbys_are_kept_in_quiet_down() {
        let (mut readiness, a, b) = serving(Standby::Hot, false);
        let up = [status(&a, Health::Up), status(&b, Health::Up)];
        // serving() already put master-b into quiet-down: not again.
        assert!(names(&readiness.reconcile(Some(&a), &up, at(1))).is_empty());
        // A passed check of a quieted standby asks whether it still is.
        let (_, actions) = readiness.checked(check(&b, true, false), at(2));
        assert_eq!(names(&actions), ["ask quiet state master-b"]);
        // It is not: an alarm, and quiet-down again.
        readiness.quiet_state(&b, false);
        let actions = readiness.reconcile(Some(&a), &up, at(3));
        assert_eq!(names(&actions), ["quiet down master-b", "log alarm"]);
        assert_eq!(readiness.alarms().len(), 1);
        assert!(readiness.alarms()[0].contains("master-b (hot standby) is out of quiet-down"));
        // Quiet again: the alarm clears, and is not logged twice meanwhile.
        assert!(names(&readiness.reconcile(Some(&a), &up, at(4))).is_empty());
        readiness.quiet_state(&b, true);
        readiness.reconcile(Some(&a), &up, at(5));
        assert!(readiness.alarms().is_empty());
        // Down, then up again: put into quiet-down anew.
        let down = [status(&a, Health::Up), status(&b, Health::Down)];
        readiness.reconcile(Some(&a), &down, at(6));
        assert_eq!(
            names(&readiness.reconcile(Some(&a), &up, at(7))),
            ["quiet down master-b"]
        );
    }

    #[test]
    fn a_new_jenkins_session_means_a_restart_out_of_quiet_down() {
        let (mut readiness, a, b) = serving(Standby::Hot, false);
        let up = [status(&a, Health::Up), status(&b, Health::Up)];
        let mut first = check(&b, true, false);
        first.session = Some("s1");
        readiness.checked(first, at(1));
        let mut again = check(&b, true, false);
        again.session = Some("s2");
        let (_, actions) = readiness.checked(again, at(2));
        assert_eq!(names(&actions), ["log restarted"]);
        assert_eq!(
            names(&readiness.reconcile(Some(&a), &up, at(3))),
            ["quiet down master-b"]
        );
    }

    #[test]
    fn a_cold_standby_answering_while_another_serves_raises_an_alarm() {
        let (mut readiness, a, b) = serving(Standby::Cold, false);
        let up = [status(&a, Health::Up), status(&b, Health::Up)];
        assert_eq!(readiness.alarms().len(), 1, "serving() saw it up");
        assert!(readiness.alarms()[0].starts_with("two masters up: master-b (cold standby)"));
        assert!(names(&readiness.reconcile(Some(&a), &up, at(1))).is_empty());
        let down = [status(&a, Health::Up), status(&b, Health::Down)];
        readiness.reconcile(Some(&a), &down, at(2));
        assert!(readiness.alarms().is_empty());
        // No master serving: no alarm to raise.
        readiness.reconcile(None, &up, at(3));
        assert!(readiness.alarms().is_empty());
    }
}
