//! Readiness: what the owner does so that traffic only reaches a master that is ready
//! for it on a shared home. Promotion (fence, reload or start, wait until healthy),
//! hot standbys kept in quiet-down, the two-masters-up alarm, hooks, and holding
//! traffic for a restarting master within `starting_grace`.

use std::sync::Arc;
use std::time::SystemTime;

use super::{InFlight, OwnerState};
use crate::config::{HookEvent, Standby};
use crate::control::commands::{self, Vars};
use crate::control::election::{Health, Observation};
use crate::control::health::ProbeReport;
use crate::control::promotion::{self, Progress, Step};
use crate::control::routing::{Master, StepRecord};

impl OwnerState {
    /// A new `X-Jenkins-Session` means the JVM restarted: a hot standby then left
    /// quiet-down and must be put back (and the restart is logged).
    pub(super) fn note_session(&mut self, report: &ProbeReport) {
        let Some(session) = report.session() else {
            return;
        };
        let name = &report.master.name;
        let previous = self.sessions.insert(name.clone(), session.to_owned());
        if previous.is_some_and(|previous| previous != session) {
            tracing::warn!(master = %name, "Jenkins restarted (new X-Jenkins-Session)");
            self.quieted.retain(|q| q != name);
        }
    }

    /// While the serving master says it is starting, `starting_grace` holds traffic
    /// for it (requests wait) instead of failing over; true while that holds.
    pub(super) fn within_starting_grace(&mut self, report: &ProbeReport, now: SystemTime) -> bool {
        let serving = self
            .ready
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, &report.master));
        if !report.starting() || !serving || self.settings.starting_grace.is_zero() {
            if self
                .restarting
                .as_ref()
                .is_some_and(|(m, _)| Arc::ptr_eq(m, &report.master))
            {
                self.restarting = None;
            }
            return false;
        }
        let since = match &self.restarting {
            Some((master, since)) if Arc::ptr_eq(master, &report.master) => *since,
            _ => {
                tracing::warn!(master = %report.master.name, grace = ?self.settings.starting_grace,
                    "the active master is restarting: holding traffic for it");
                self.restarting = Some((Arc::clone(&report.master), now));
                now
            }
        };
        let waited = now.duration_since(since).unwrap_or_default();
        if waited < self.settings.starting_grace {
            return true;
        }
        tracing::warn!(master = %report.master.name, "starting_grace ran out: failing over");
        self.restarting = None;
        false
    }

    /// A report from the promoter of `target` (stale reports are ignored).
    pub(super) fn progress(&mut self, target: &Arc<Master>, progress: Progress, now: SystemTime) {
        let current = self
            .promotion
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(&p.target, target));
        if !current {
            return;
        }
        match progress {
            Progress::Step(step) => {
                let level_ok = step.ok;
                if level_ok {
                    tracing::info!(master = %target.name, step = %step.step, took = ?step.took, "promotion step: {}", step.detail);
                } else {
                    tracing::warn!(master = %target.name, step = %step.step, took = ?step.took, "promotion step failed: {}", step.detail);
                }
                self.add_step(&target.name, step, now);
            }
            Progress::WaitingOnFence(why) => {
                tracing::error!(master = %target.name, "promotion waits on fencing: {why}");
                if let Some(promotion) = self.promotion.as_mut() {
                    promotion.waiting_on_fence = Some(why);
                }
            }
            Progress::Done(Ok(())) => {
                let took = self
                    .promotion
                    .take()
                    .and_then(|p| now.duration_since(p.started).ok())
                    .unwrap_or_default();
                self.add_step(
                    &target.name,
                    Step {
                        step: "traffic moved".into(),
                        ok: true,
                        took,
                        detail: format!("{} receives traffic", target.name),
                    },
                    now,
                );
                tracing::info!(master = %target.name, ?took, "promotion complete: traffic moves");
                self.make_ready(Arc::clone(target));
            }
            Progress::Done(Err(error)) => {
                self.promotion = None;
                if let Some(index) = self.index_of(target) {
                    let error = error.to_string();
                    self.observe(index, &Observation::PromotionFailed { error }, now);
                }
            }
        }
    }

    /// Appends a step to the newest transition towards `name`.
    pub(super) fn add_step(&mut self, name: &str, step: Step, now: SystemTime) {
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

    pub(super) fn make_ready(&mut self, master: Arc<Master>) {
        self.quieted.retain(|name| name != &master.name);
        self.run_hooks(HookEvent::Promote, &master, "promoted");
        self.ready = Some(master);
        self.ever_ready = true;
        self.last_served = None;
    }

    /// Brings traffic in line with the election: the ready master is the election's
    /// active one, after a promotion where one is needed. Also keeps hot standbys in
    /// quiet-down and raises the two-masters-up alarm.
    pub(super) fn reconcile(&mut self) {
        let target = self
            .election
            .active()
            .map(|i| Arc::clone(&self.statuses[i].master));
        let steady = match (&target, &self.ready) {
            (Some(target), Some(ready)) => Arc::ptr_eq(target, ready),
            _ => false,
        };
        let in_progress = match (&target, &self.promotion) {
            (Some(target), Some(promotion)) => Arc::ptr_eq(target, &promotion.target),
            _ => false,
        };
        if !steady && !in_progress {
            self.promotion = None;
            if let Some(previous) = self.ready.take() {
                self.run_hooks(HookEvent::Demote, &previous, "demoted");
                self.last_served = Some(previous);
            }
            if let Some(target) = target {
                self.begin(target);
            }
        }
        self.keep_standbys_quiet();
        self.check_two_up();
    }

    /// Starts making `target` ready, or makes it ready at once when nothing is needed.
    pub(super) fn begin(&mut self, target: Arc<Master>) {
        // A stopped cold standby must be started even as the first master ever.
        let stopped = self
            .index_of(&target)
            .is_some_and(|i| self.statuses[i].health != Health::Up);
        let needed = (self.ever_ready
            && self
                .settings
                .promotion
                .needed(self.last_served.as_ref(), &target))
            || (target.standby == Standby::Cold && stopped);
        if !needed {
            self.make_ready(target);
            return;
        }
        let reason = self
            .transitions
            .back()
            .map_or_else(String::new, |t| t.reason.clone());
        tracing::info!(master = %target.name, "promotion starts: traffic is held until it is ready");
        let task = tokio::spawn(promotion::run(
            self.last_served.clone(),
            Arc::clone(&target),
            reason,
            Arc::clone(&self.settings.promotion),
            self.own_events.clone(),
        ));
        self.promotion = Some(InFlight {
            target,
            task,
            started: SystemTime::now(),
            waiting_on_fence: None,
        });
    }

    /// A hot standby that is up and not serving is put into quiet-down once, so it
    /// starts no builds of its own on the shared home.
    pub(super) fn keep_standbys_quiet(&mut self) {
        let serving = |m: &Arc<Master>| {
            self.ready.as_ref().is_some_and(|r| Arc::ptr_eq(r, m))
                || self
                    .promotion
                    .as_ref()
                    .is_some_and(|p| Arc::ptr_eq(&p.target, m))
        };
        let mut calls = Vec::new();
        for status in &self.statuses {
            let master = &status.master;
            let name = &master.name;
            if status.health != Health::Up {
                self.quieted.retain(|q| q != name);
                continue;
            }
            if master.standby == Standby::Hot && !serving(master) && !self.quieted.contains(name) {
                calls.push(Arc::clone(master));
            }
        }
        for master in calls {
            self.quieted.push(master.name.clone());
            let settings = Arc::clone(&self.settings.promotion);
            tokio::spawn(async move {
                let outcome = crate::control::jenkins::post(
                    master.upstream.authority(),
                    "/quietDown",
                    settings.credentials.as_ref(),
                    settings.call_timeout,
                )
                .await;
                if let Err(error) = outcome {
                    tracing::error!(master = %master.name, %error, "cannot put the hot standby into quiet-down");
                }
            });
        }
    }

    /// A cold standby answering health checks while another master serves means two
    /// JVMs may run on one home: alarm at once.
    pub(super) fn check_two_up(&mut self) {
        let Some(ready) = &self.ready else {
            self.alarms.clear();
            return;
        };
        let cold = self.statuses.iter().filter(|s| {
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
            tracing::error!("{alarm}");
        }
        self.alarms = alarms;
    }

    pub(super) fn run_hooks(&self, event: HookEvent, master: &Arc<Master>, reason: &str) {
        for hook in self.settings.hooks.iter().filter(|h| h.on == event) {
            let hook = hook.clone();
            let master = Arc::clone(master);
            let reason = reason.to_owned();
            tokio::spawn(async move {
                let vars = Vars {
                    name: &master.name,
                    url: &master.url,
                    host: &master.host,
                    reason: &reason,
                };
                if let Err(error) = commands::run(&hook.command, &vars, hook.timeout).await {
                    tracing::warn!(hook = hook.on.as_str(), %error, "hook failed");
                }
            });
        }
    }
}

impl OwnerState {
    /// After a passed check of a hot standby we put into quiet-down: is it still
    /// quiet? (A JVM restarted or an operator cancelled it: it would start builds.)
    pub(super) fn ask_quiet_state(&self, master: &Arc<Master>) {
        let serving = self.ready.as_ref().is_some_and(|r| Arc::ptr_eq(r, master));
        if master.standby != Standby::Hot || serving || !self.quieted.contains(&master.name) {
            return;
        }
        let master = Arc::clone(master);
        let settings = Arc::clone(&self.settings.promotion);
        let events = self.own_events.clone();
        tokio::spawn(async move {
            let quieting = crate::control::jenkins::quieting_down(
                master.upstream.authority(),
                settings.credentials.as_ref(),
                settings.call_timeout,
            )
            .await;
            if let Some(quieting) = quieting {
                let _ = events
                    .send(super::Event::QuietState { master, quieting })
                    .await;
            }
        });
    }

    /// A hot standby out of quiet-down while another master serves: alarm at once,
    /// and put it back into quiet-down.
    pub(super) fn quiet_state(&mut self, master: &Arc<Master>, quieting: bool) {
        let serving = self.ready.as_ref().is_some_and(|r| Arc::ptr_eq(r, master));
        let name = &master.name;
        if quieting || serving {
            self.unquiet.retain(|n| n != name);
            return;
        }
        if !self.unquiet.contains(name) {
            self.unquiet.push(name.clone());
        }
        self.quieted.retain(|n| n != name); // reconcile sends quietDown again
    }
}
