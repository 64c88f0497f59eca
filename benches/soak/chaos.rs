//! The chaos, on the main thread (children are spawned there): at random intervals
//! the active master is killed (restarted later), frozen (SIGCONT later), made sick
//! (its health path answers 503, 200 again later), or switched away from with
//! `POST /switchover`. An action is taken only while another master is healthy and
//! untouched, so one can always take over.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::http;
use crate::master::{Condition, MasterProcess};
use crate::monitor::Monitor;
use crate::plan::{Plan, Rng};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Kill,
    Freeze,
    Sick,
    Switchover,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::Kill,
        Action::Freeze,
        Action::Sick,
        Action::Switchover,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Action::Kill => "SIGKILL the active master, restart it later",
            Action::Freeze => "SIGSTOP the active master, SIGCONT later",
            Action::Sick => "health of the active master answers 503, 200 later",
            Action::Switchover => "POST /switchover to a healthy standby",
        }
    }

    /// Relative weights of the draw.
    fn weight(self) -> u64 {
        match self {
            Action::Kill => 30,
            Action::Freeze => 25,
            Action::Sick => 20,
            Action::Switchover => 25,
        }
    }
}

/// One action, against `master` (for a switchover: the master traffic left).
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Duration,
    pub action: Action,
    pub master: String,
    /// e.g. "to master-c", "refused: HTTP 409".
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct ChaosLog {
    pub events: Vec<Event>,
    /// Times no action was taken because no other master was healthy and untouched.
    pub skipped: u64,
    /// Switchovers the proxy refused (the target stopped being healthy meanwhile).
    pub refused: u64,
    pub recoveries: u64,
}

impl ChaosLog {
    pub fn count(&self, action: Action) -> usize {
        self.events
            .iter()
            .filter(|e| e.action == action && !e.detail.starts_with("refused"))
            .count()
    }
}

/// Strikes until `until`, then undoes whatever is still undone. Errors only when
/// the machinery fails (a master that cannot be restarted, one that died by itself).
pub fn run(
    plan: &Plan,
    masters: &mut [MasterProcess],
    monitor: &Monitor,
    admin: SocketAddr,
    origin: Instant,
    until: Instant,
) -> Result<ChaosLog, String> {
    let mut rng = Rng::new(plan.seed);
    let mut log = ChaosLog::default();
    // (when, which master) to undo.
    let mut pending: Vec<(Instant, usize)> = Vec::new();
    let mut next_action = Instant::now() + rng.between(plan.action_gap.0, plan.action_gap.1);
    while Instant::now() < until {
        let now = Instant::now();
        let (due, later) = pending.into_iter().partition(|(at, _)| *at <= now);
        pending = later;
        for (_, index) in due {
            masters[index].recover()?;
            log.recoveries += 1;
        }
        for master in masters.iter_mut() {
            if let Some(status) = master.died() {
                return Err(format!("{} exited by itself ({status})", master.name));
            }
        }
        if now >= next_action {
            next_action = now + rng.between(plan.action_gap.0, plan.action_gap.1);
            match strike(&mut rng, masters, monitor, admin, origin)? {
                Some((event, undo)) => {
                    if let Some(index) = undo {
                        let after = rng.between(plan.recovery_after.0, plan.recovery_after.1);
                        pending.push((Instant::now() + after, index));
                    }
                    if event.detail.starts_with("refused") {
                        log.refused += 1;
                    }
                    println!(
                        "  {:>7.2} s  {:<10} {} {}",
                        event.at.as_secs_f64(),
                        format!("{:?}", event.action).to_lowercase(),
                        event.master,
                        event.detail
                    );
                    log.events.push(event);
                }
                None => log.skipped += 1,
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    for (_, index) in pending {
        masters[index].recover()?;
        log.recoveries += 1;
    }
    Ok(log)
}

/// One action against the active master, if another can take over. Returns the
/// event and the master to undo later.
fn strike(
    rng: &mut Rng,
    masters: &mut [MasterProcess],
    monitor: &Monitor,
    admin: SocketAddr,
    origin: Instant,
) -> Result<Option<(Event, Option<usize>)>, String> {
    let Some(status) = monitor.latest() else {
        return Ok(None);
    };
    let Some(active) = status.active.clone() else {
        return Ok(None);
    };
    let Some(target) = masters.iter().position(|m| m.name == active) else {
        return Err(format!("/status names an unknown active master {active}"));
    };
    if masters[target].condition != Condition::Running {
        return Ok(None);
    }
    let spares: Vec<usize> = (0..masters.len())
        .filter(|&i| {
            i != target
                && masters[i].condition == Condition::Running
                && status.healthy(&masters[i].name)
        })
        .collect();
    if spares.is_empty() {
        return Ok(None);
    }
    let action = draw(rng);
    let master = &mut masters[target];
    let mut detail = String::new();
    let undo = match action {
        Action::Kill => {
            master.kill()?;
            Some(target)
        }
        Action::Freeze => {
            master.freeze()?;
            Some(target)
        }
        Action::Sick => {
            master.set_healthy(false)?;
            Some(target)
        }
        Action::Switchover => {
            let spare = &masters[spares[rng.below(spares.len() as u64) as usize]].name;
            let path = format!("/switchover?to={spare}");
            detail = match http::post(admin, &path, Duration::from_secs(5)) {
                Ok(reply) if reply.status == 200 => format!("to {spare}"),
                Ok(reply) => format!("refused: HTTP {} (to {spare})", reply.status),
                Err(e) => return Err(format!("POST {path} on {admin}: {e}")),
            };
            None
        }
    };
    let event = Event {
        at: origin.elapsed(),
        action,
        master: active,
        detail,
    };
    Ok(Some((event, undo)))
}

fn draw(rng: &mut Rng) -> Action {
    let total: u64 = Action::ALL.iter().map(|a| a.weight()).sum();
    let mut pick = rng.below(total);
    for action in Action::ALL {
        if pick < action.weight() {
            return action;
        }
        pick -= action.weight();
    }
    Action::Switchover
}
