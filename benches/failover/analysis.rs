//! From the recorded requests of one run to the figures the report shows.

use std::collections::BTreeMap;
use std::time::Duration;

use super::load::{Answered, Outcome};

/// When things happened, relative to the start of the load.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub fault: Duration,
    pub recovered: Duration,
    pub end: Duration,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub sent: usize,
    pub failed: usize,
    /// Of `failed`, those sent on a new connection (the rest were keep-alive).
    pub failed_fresh: usize,
    /// Failure kinds and counts ("HTTP 503", "timeout", "connection reset", …).
    pub failures: BTreeMap<String, usize>,
    /// Longest time between two successful responses (or the last one and the end).
    pub longest_gap: Duration,
    /// From the fault to the first 200 from master-b; None if it never answered.
    pub first_standby: Option<Duration>,
    pub slowest: Duration,
    /// Requests slower than the stall bound.
    pub stalled: usize,
    /// Failed requests sent after the recovery action.
    pub failed_after_recovery: usize,
    /// From the recovery action to the first 200 from master-a for a request sent
    /// after both the recovery and the first answer from master-b; None: traffic
    /// stayed where it was.
    pub failback: Option<Duration>,
}

pub fn analyse(outcomes: &[Outcome], at: Timeline, stall_bound: Duration) -> Metrics {
    let switched = first_from(outcomes, Answered::B, Duration::ZERO);
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok()).collect();
    let mut failures = BTreeMap::new();
    for outcome in &failed {
        *failures.entry(kind(outcome)).or_insert(0) += 1;
    }
    Metrics {
        sent: outcomes.len(),
        failed: failed.len(),
        failed_fresh: failed.iter().filter(|o| o.fresh).count(),
        failures,
        longest_gap: longest_gap(outcomes, at.end),
        first_standby: switched.map(|done| done.saturating_sub(at.fault)),
        slowest: outcomes
            .iter()
            .map(Outcome::latency)
            .max()
            .unwrap_or_default(),
        stalled: outcomes
            .iter()
            .filter(|o| o.latency() > stall_bound)
            .count(),
        failed_after_recovery: failed.iter().filter(|o| o.sent >= at.recovered).count(),
        failback: switched
            .and_then(|switched| first_from(outcomes, Answered::A, switched.max(at.recovered)))
            .map(|done| done.saturating_sub(at.recovered)),
    }
}

fn kind(outcome: &Outcome) -> String {
    match &outcome.result {
        Ok((status, _)) => format!("HTTP {status}"),
        Err(error) => error.clone(),
    }
}

/// Completion time of the first 200 from `master` among requests sent after `after`.
fn first_from(outcomes: &[Outcome], master: Answered, after: Duration) -> Option<Duration> {
    outcomes
        .iter()
        .filter(|o| o.ok() && o.from() == Some(master) && o.sent >= after)
        .map(|o| o.done)
        .min()
}

fn longest_gap(outcomes: &[Outcome], end: Duration) -> Duration {
    let mut done: Vec<Duration> = outcomes.iter().filter(|o| o.ok()).map(|o| o.done).collect();
    done.sort_unstable();
    let Some(&last) = done.last() else {
        return end;
    };
    let between = done
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    between.max(end.saturating_sub(last))
}
