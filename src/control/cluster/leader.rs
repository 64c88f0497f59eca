//! The leader's decisions: the usual election rules ([`crate::control::election`]) applied to
//! what the live instances see together, and the pointer to write when its choice
//! changes. Pure: the member task reads etcd, calls [`Leadership::step`], and writes
//! what it returns.

use std::time::Duration;

use super::pool::{combined, Mirror, Pointer};
use crate::config::Failback;
use crate::control::election::{Election, Health, Observation, Policy, Transition};

/// The election of one leadership term.
#[derive(Debug)]
pub struct Leadership {
    election: Election,
    /// This instance's name, written into the pointer.
    me: String,
    /// The switchover requests up to this revision are done with.
    applied_switchover: i64,
    /// Set when the first pointer of the pool is still to be written.
    first: bool,
}

/// A pointer to write: the master and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub pointer: Pointer,
    /// The master the pointer moves away from, if any (fenced, `demote` hook).
    pub from: Option<String>,
}

impl Leadership {
    /// A new term over `masters` (file order). The master the pointer names now stays
    /// active while the live instances see it up: a change of leader never moves
    /// traffic by itself.
    pub fn new(
        me: &str,
        masters: &[String],
        failback: Failback,
        min_active: Duration,
        mirror: &Mirror,
    ) -> Leadership {
        // Each instance's view already counts rise and fall: one verdict is enough.
        let policy = Policy {
            rise: 1,
            fall: 1,
            failback,
        };
        let mut election = Election::new(masters.iter().cloned(), policy);
        election.set_min_active(min_active);
        let current = mirror
            .pointer
            .as_ref()
            .and_then(|(p, _)| p.master.as_deref());
        if let Some(index) = current.and_then(|name| masters.iter().position(|m| m == name)) {
            election.remember(index);
        }
        Leadership {
            election,
            me: me.to_owned(),
            // Requests older than the pointer were asked of an earlier leader.
            applied_switchover: mirror.epoch(),
            first: mirror.pointer.is_none(),
        }
    }

    /// Applies what changed in `mirror` (views, maintenance, switchover requests) at
    /// `now` (time since the term began); returns the pointer to write, if any.
    pub fn step(&mut self, mirror: &Mirror, now: Duration) -> Option<Decision> {
        self.election.advance(now);
        let mut last: Option<(Transition, &'static str)> = None;
        let names: Vec<String> = self
            .election
            .masters()
            .iter()
            .map(|m| m.name.clone())
            .collect();
        for (index, name) in names.iter().enumerate() {
            let disabled = mirror.disabled.contains(name);
            if let Some(transition) = self.election.set_disabled(index, disabled) {
                last = Some((transition, "maintenance"));
            }
        }
        for (index, name) in names.iter().enumerate() {
            let seen = combined(mirror, name);
            let observation = match (seen.health, self.election.masters()[index].health) {
                (Some(Health::Down), now) if now != Health::Down => Observation::CheckFailed {
                    error: format!(
                        "seen down by {} of {} instances ({})",
                        seen.down_on.len(),
                        seen.live,
                        seen.down_on.join(", ")
                    ),
                },
                (Some(Health::Up), now) if now != Health::Up => Observation::CheckPassed,
                _ => continue,
            };
            if let Some(transition) = self.election.apply(index, &observation).transition {
                last = Some((transition, "health_check"));
            }
        }
        if let Some((request, revision)) = &mirror.switchover {
            if *revision > self.applied_switchover {
                self.applied_switchover = *revision;
                match names.iter().position(|n| *n == request.to) {
                    Some(index) => match self.election.switchover(index) {
                        Ok(Some(transition)) => last = Some((transition, "switchover")),
                        Ok(None) => {}
                        Err(refusal) => {
                            tracing::warn!(by = %request.by, "switchover refused: {refusal}")
                        }
                    },
                    None => tracing::warn!(to = %request.to, "switchover to an unknown master"),
                }
            }
        }
        self.decide(mirror, last)
    }

    fn decide(
        &mut self,
        mirror: &Mirror,
        last: Option<(Transition, &'static str)>,
    ) -> Option<Decision> {
        let chosen = self
            .election
            .active()
            .map(|index| self.election.masters()[index].name.clone());
        let current = mirror.pointer.as_ref().map(|(p, _)| p.master.clone());
        if current.as_ref() == Some(&chosen) {
            self.first = false;
            return None;
        }
        let decided = chosen.is_some()
            || self
                .election
                .masters()
                .iter()
                .all(|m| m.health != Health::Unknown || m.disabled);
        if !decided {
            return None; // the first election waits for every master's first verdict
        }
        let from = current.flatten();
        let (reason, cause) = match last {
            Some((transition, cause)) => {
                let cause = cause_of(&transition, cause);
                (transition.reason, cause)
            }
            None => (
                format!(
                    "leader {} keeps the pool's choice: {}",
                    self.me,
                    chosen.as_deref().unwrap_or("no master")
                ),
                "initial",
            ),
        };
        let cause = if self.first && chosen.is_some() {
            "initial"
        } else if chosen.is_none() {
            "no_master"
        } else {
            cause
        };
        self.first = false;
        Some(Decision {
            pointer: Pointer {
                master: chosen,
                cause: cause.to_owned(),
                reason,
                leader: self.me.clone(),
            },
            from,
        })
    }
}

/// The `/status` cause label of a transition the election made for `why`.
fn cause_of(transition: &Transition, why: &'static str) -> &'static str {
    match (transition.from, transition.to, why) {
        (_, None, _) => "no_master",
        (None, Some(_), "health_check") => "recovered",
        (Some(_), Some(_), "health_check") if transition.reason.starts_with("failback") => {
            "failback"
        }
        _ => why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::cluster::pool::{InstanceRecord, SwitchoverRequest};

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    /// Instances and what each sees of a and b.
    fn views(seen: &[(&str, &str, &str)]) -> Mirror {
        let mut mirror = Mirror::default();
        for (instance, a, b) in seen {
            let view = [("a", *a), ("b", *b)]
                .iter()
                .map(|(m, h)| ((*m).to_owned(), (*h).to_owned()))
                .collect();
            mirror.instances.insert(
                (*instance).to_owned(),
                InstanceRecord {
                    acked: 0,
                    view,
                    seen: String::new(),
                },
            );
        }
        mirror
    }

    fn written(mirror: &mut Mirror, decision: Option<Decision>, epoch: i64) -> Option<String> {
        let decision = decision.expect("a pointer to write");
        let master = decision.pointer.master.clone();
        mirror.pointer = Some((decision.pointer, epoch));
        master
    }

    #[test]
    fn the_first_pointer_waits_for_every_verdict_then_names_the_first_up() {
        let mut mirror = views(&[("p1", "unknown", "up"), ("p2", "unknown", "up")]);
        let mut leader = Leadership::new("p1", &names(), Failback::Never, Duration::ZERO, &mirror);
        assert_eq!(
            leader.step(&mirror, Duration::ZERO),
            None,
            "a is not judged yet"
        );
        mirror = views(&[("p1", "up", "up"), ("p2", "up", "up")]);
        let decision = leader.step(&mirror, Duration::ZERO).expect("decided");
        assert_eq!(decision.pointer.master.as_deref(), Some("a"));
        assert_eq!(decision.pointer.cause, "initial");
    }

    #[test]
    fn a_majority_moves_the_pointer_a_single_instance_does_not() {
        let mut mirror = views(&[("p1", "up", "up"), ("p2", "up", "up"), ("p3", "up", "up")]);
        let mut leader = Leadership::new("p1", &names(), Failback::Never, Duration::ZERO, &mirror);
        let decision = leader.step(&mirror, Duration::ZERO);
        assert_eq!(written(&mut mirror, decision, 10).as_deref(), Some("a"));
        // One instance sees a down: no change.
        let mut one = views(&[("p1", "down", "up"), ("p2", "up", "up"), ("p3", "up", "up")]);
        one.pointer = mirror.pointer.clone();
        assert_eq!(leader.step(&one, Duration::ZERO), None);
        // Two of three: b takes over, and the reason names who saw it.
        let mut two = views(&[
            ("p1", "down", "up"),
            ("p2", "down", "up"),
            ("p3", "up", "up"),
        ]);
        two.pointer = mirror.pointer.clone();
        let decision = leader.step(&two, Duration::ZERO).expect("moved");
        assert_eq!(decision.pointer.master.as_deref(), Some("b"));
        assert_eq!(decision.from.as_deref(), Some("a"));
        assert_eq!(decision.pointer.cause, "health_check");
        assert!(
            decision
                .pointer
                .reason
                .contains("seen down by 2 of 3 instances (p1, p2)"),
            "{}",
            decision.pointer.reason
        );
    }

    #[test]
    fn a_new_leader_keeps_the_current_pointer() {
        let mut mirror = views(&[("p2", "up", "up"), ("p3", "up", "up")]);
        mirror.pointer = Some((
            Pointer {
                master: Some("b".into()),
                cause: "health_check".into(),
                reason: String::new(),
                leader: "p1".into(),
            },
            12,
        ));
        // Failback "auto" would prefer a; the remembered pointer wins.
        let mut leader = Leadership::new("p2", &names(), Failback::Auto, Duration::ZERO, &mirror);
        assert_eq!(leader.step(&mirror, Duration::ZERO), None);
    }

    #[test]
    fn maintenance_and_switchover_asked_anywhere_are_applied() {
        let mut mirror = views(&[("p1", "up", "up"), ("p2", "up", "up")]);
        let mut leader = Leadership::new("p1", &names(), Failback::Never, Duration::ZERO, &mirror);
        let decision = leader.step(&mirror, Duration::ZERO);
        written(&mut mirror, decision, 5);
        mirror.switchover = Some((
            SwitchoverRequest {
                to: "b".into(),
                by: "p2".into(),
            },
            6,
        ));
        let decision = leader.step(&mirror, Duration::ZERO).expect("switched");
        assert_eq!(
            (
                decision.pointer.master.as_deref(),
                decision.pointer.cause.as_str()
            ),
            (Some("b"), "switchover")
        );
        mirror.pointer = Some((decision.pointer, 7));
        // Applied once only.
        assert_eq!(leader.step(&mirror, Duration::ZERO), None);
        mirror.disabled.insert("b".into());
        let decision = leader.step(&mirror, Duration::ZERO).expect("moved off b");
        assert_eq!(
            (
                decision.pointer.master.as_deref(),
                decision.pointer.cause.as_str()
            ),
            (Some("a"), "maintenance")
        );
    }

    #[test]
    fn no_master_seen_up_means_a_pointer_to_none() {
        let mut mirror = views(&[("p1", "up", "down")]);
        let mut leader = Leadership::new("p1", &names(), Failback::Never, Duration::ZERO, &mirror);
        let decision = leader.step(&mirror, Duration::ZERO);
        written(&mut mirror, decision, 3);
        let mut down = views(&[("p1", "down", "down")]);
        down.pointer = mirror.pointer.clone();
        let decision = leader.step(&down, Duration::ZERO).expect("none");
        assert_eq!(decision.pointer.master, None);
        assert_eq!(decision.pointer.cause, "no_master");
    }
}
