//! The failover section of the report: one table per fault, then the issue-4 targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::analysis::Metrics;
use super::plan::{Fault, Plan};
use super::RoundResult;
use crate::common::peers::ProxyKind;
use crate::common::report::{background, median, spread, utc_now, Table};

const PEER_NOTES: &str = "- Peers: HAProxy classic = `option httpchk GET /login`, `inter 2s fall 3 rise 2`, `backup`, HAProxy's default `retries 3` without redispatch; HAProxy tuned = the same plus `timeout check` = our timeout, `option redispatch`, `retries 3`; nginx = `server ... backup` with its defaults (passive checks: `max_fails=1 fail_timeout=10s`, `proxy_next_upstream error timeout`, 60 s read timeout). Configs and logs: `target/bench/failover/<fault>/<proxy>/`.\n";

/// SIGKILL: the standby must answer within this of the fault.
const KILL_STANDBY: Duration = Duration::from_millis(50);

pub fn render(
    plan: &Plan,
    load_at_start: &str,
    results: &[RoundResult],
    missing: &[(ProxyKind, String)],
) -> String {
    let mut text = format!(
        "## Failover ({})\n\n- Run: {}\n- {}\n- Masters: the library's `SampleMaster`, one process each (127.0.0.2 = master-a, active; 127.0.0.3 = master-b, standby); health switched over stdin, outside the proxy's path\n- Load (Rust, tokio + hyper, open loop): {} req/s on pooled keep-alive connections + {} req/s each on a new connection; a request unanswered after {} s counts as failed\n- Timeline: fault at {:.1} s, {} at {:.1} s, load ends at {:.1} s, all moved by interval / runs from one run to the next (runs meet the checks at different phases); {} run(s) per fault and proxy, alternating; medians (min–max)\n- Our checks (and HAProxy tuned): interval {:?}, timeout {:?}, rise {}, fall {}; HAProxy classic: `inter 2s fall 3 rise 2`, check timeout = inter\n",
        if plan.smoke { "smoke run: not a measurement" } else { "full run" },
        utc_now(),
        versions(plan),
        plan.keep_alive_rate,
        plan.fresh_rate,
        plan.request_timeout.as_secs(),
        plan.fault_at.as_secs_f64(),
        "recovery",
        plan.recover_at.as_secs_f64(),
        plan.duration.as_secs_f64(),
        plan.runs,
        plan.checks.interval,
        plan.checks.timeout,
        plan.checks.rise,
        plan.checks.fall,
    );
    text.push_str(&background(load_at_start));
    text.push_str(PEER_NOTES);
    for (kind, why) in missing {
        let _ = writeln!(text, "- {}: not measured ({why})", kind.label());
    }
    for &fault in &plan.faults {
        text.push('\n');
        text.push_str(&fault_table(plan, fault, results, missing));
    }
    text.push('\n');
    text.push_str(&targets_table(plan, results));
    text
}

fn versions(plan: &Plan) -> String {
    let mut seen = Vec::new();
    for kind in &plan.proxies {
        if let Some(version) = kind.version() {
            if !seen.contains(&version) {
                seen.push(version);
            }
        }
    }
    format!("Versions: {}", seen.join("; "))
}

fn metrics_of(
    results: &[RoundResult],
    fault: Fault,
    kind: ProxyKind,
) -> (Vec<&Metrics>, Vec<&str>) {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for result in results
        .iter()
        .filter(|r| r.fault == fault && r.kind == kind)
    {
        match &result.metrics {
            Ok(metrics) => ok.push(metrics),
            Err(error) => errors.push(error.as_str()),
        }
    }
    (ok, errors)
}

fn fault_table(
    plan: &Plan,
    fault: Fault,
    results: &[RoundResult],
    missing: &[(ProxyKind, String)],
) -> String {
    let mut table = Table::new(&[
        "proxy",
        "failed requests (of sent)",
        "failure kinds (all runs)",
        "longest window without a success",
        "fault → first standby response",
        "slowest request; stalled > bound",
        &format!("after {} (failback; failed)", fault.recovery()),
    ]);
    for &kind in plan.proxies.iter().filter(|k| fault.applies_to(**k)) {
        if let Some((_, why)) = missing.iter().find(|(k, _)| *k == kind) {
            let mut row = vec![kind.label().to_owned(), format!("not measured ({why})")];
            row.extend(std::iter::repeat("–".to_owned()).take(5));
            table.row(row);
            continue;
        }
        let (runs, errors) = metrics_of(results, fault, kind);
        table.row(row(kind, &runs, &errors));
    }
    format!(
        "### {}\n\nStall bound: health timeout x fall + interval + 200 ms = {:.1} s.\n\n{}",
        fault.title(),
        plan.stall_bound().as_secs_f64(),
        table.render()
    )
}

fn row(kind: ProxyKind, runs: &[&Metrics], errors: &[&str]) -> Vec<String> {
    let mut cells = vec![kind.label().to_owned()];
    if runs.is_empty() {
        cells.push(format!("bench error: {}", errors.join("; ")));
        cells.extend(std::iter::repeat("–".to_owned()).take(5));
        return cells;
    }
    let count = |f: fn(&Metrics) -> usize| runs.iter().map(|m| f(m) as f64).collect::<Vec<_>>();
    let sent = median(&count(|m| m.sent)).unwrap_or(0.0);
    let failed = spread(&count(|m| m.failed), |v| format!("{v:.0}"));
    let fresh = spread(&count(|m| m.failed_fresh), |v| format!("{v:.0}"));
    cells.push(format!(
        "{failed} (of {sent:.0}; on new connections: {fresh})"
    ));
    cells.push(failure_kinds(runs));
    cells.push(seconds(runs.iter().map(|m| Some(m.longest_gap)).collect()));
    cells.push(seconds(runs.iter().map(|m| m.first_standby).collect()));
    let slowest = runs
        .iter()
        .map(|m| m.slowest.as_secs_f64())
        .collect::<Vec<_>>();
    cells.push(format!(
        "{}; {}",
        spread(&slowest, |v| format!("{v:.2} s")),
        spread(&count(|m| m.stalled), |v| format!("{v:.0}"))
    ));
    cells.push(recovery(runs));
    if !errors.is_empty() {
        cells[0].push_str(&format!(
            " ({} run(s) failed: {})",
            errors.len(),
            errors.join("; ")
        ));
    }
    cells
}

fn failure_kinds(runs: &[&Metrics]) -> String {
    let mut total: BTreeMap<&str, usize> = BTreeMap::new();
    for metrics in runs {
        for (kind, n) in &metrics.failures {
            *total.entry(kind.as_str()).or_insert(0) += n;
        }
    }
    if total.is_empty() {
        return "none".to_owned();
    }
    let mut kinds: Vec<_> = total.into_iter().collect();
    kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    kinds
        .iter()
        .map(|(kind, n)| format!("{kind} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `median (min–max)` of the durations; runs where it never happened are counted.
fn seconds(values: Vec<Option<Duration>>) -> String {
    let happened: Vec<f64> = values.iter().flatten().map(Duration::as_secs_f64).collect();
    let never = values.len() - happened.len();
    let shown = spread(&happened, |v| format!("{v:.3} s"));
    match (happened.is_empty(), never) {
        (true, _) => "never".to_owned(),
        (false, 0) => shown,
        (false, n) => format!("{shown}; never in {n} of {} runs", values.len()),
    }
}

fn recovery(runs: &[&Metrics]) -> String {
    let failed: Vec<f64> = runs
        .iter()
        .map(|m| m.failed_after_recovery as f64)
        .collect();
    let failback = seconds(runs.iter().map(|m| m.failback).collect());
    let failback = if runs.iter().all(|m| m.first_standby.is_none()) {
        "never left master-a".to_owned()
    } else if failback == "never" {
        "stays on the standby".to_owned()
    } else {
        format!("back to master-a after {failback}")
    };
    format!(
        "{failback}; {} failed",
        spread(&failed, |v| format!("{v:.0}"))
    )
}

/// The issue-4 failover targets, checked on our runs against the peers'.
fn targets_table(plan: &Plan, results: &[RoundResult]) -> String {
    let mut table = Table::new(&["issue-4 target", "measured", "holds?"]);
    if plan.faults.contains(&Fault::Kill) {
        kill_targets(&mut table, plan, results);
    }
    if plan.faults.contains(&Fault::Freeze) {
        freeze_targets(&mut table, plan, results);
    }
    format!("### Issue-4 targets (failover side)\n\n{}", table.render())
}

fn worst<T: Ord + Copy>(runs: &[&Metrics], f: impl Fn(&Metrics) -> T) -> Option<T> {
    runs.iter().map(|m| f(m)).max()
}

fn kill_targets(table: &mut Table, plan: &Plan, results: &[RoundResult]) {
    let (ours, _) = metrics_of(results, Fault::Kill, ProxyKind::Ours);
    let Some(failed) = worst(&ours, |m| m.failed) else {
        return;
    };
    table.row(vec![
        "SIGKILL: 0 failed requests".into(),
        format!("{failed} in the worst run"),
        verdict(failed == 0, format!("{failed} failed")),
    ]);
    let standby = ours
        .iter()
        .map(|m| m.first_standby.unwrap_or(Duration::MAX))
        .max();
    if let Some(standby) = standby {
        table.row(vec![
            "SIGKILL: first standby response within 50 ms".into(),
            format!("{} in the worst run", show(standby)),
            verdict(
                standby <= KILL_STANDBY,
                format!("{} late", show(standby.saturating_sub(KILL_STANDBY))),
            ),
        ]);
    }
    compare(
        table,
        plan,
        results,
        Fault::Kill,
        Count::Failed,
        "SIGKILL: fewer failed requests than every peer",
        false,
    );
}

fn freeze_targets(table: &mut Table, plan: &Plan, results: &[RoundResult]) {
    let (ours, _) = metrics_of(results, Fault::Freeze, ProxyKind::Ours);
    let bound = plan.freeze_bound();
    if let Some(standby) = worst(&ours, |m| m.first_standby.unwrap_or(Duration::MAX)) {
        table.row(vec![
            format!(
                "SIGSTOP: first standby response within {:.1} s",
                bound.as_secs_f64()
            ),
            format!("{} in the worst run", show(standby)),
            verdict(
                standby <= bound,
                format!("{} late", show(standby.saturating_sub(bound))),
            ),
        ]);
    }
    compare(
        table,
        plan,
        results,
        Fault::Freeze,
        Count::Failed,
        "SIGSTOP: fewer failed requests than HAProxy with our timings",
        true,
    );
    let stalled = format!(
        "SIGSTOP (context): fewer requests stalled > {:.1} s than HAProxy with our timings",
        plan.stall_bound().as_secs_f64()
    );
    compare(
        table,
        plan,
        results,
        Fault::Freeze,
        Count::Stalled,
        &stalled,
        true,
    );
    if let Some(slowest) = worst(&ours, |m| m.slowest) {
        let limit = plan.stall_bound();
        table.row(vec![
            format!(
                "SIGSTOP: no request stalled longer than {:.1} s",
                limit.as_secs_f64()
            ),
            format!("slowest {} in the worst run", show(slowest)),
            verdict(
                slowest <= limit,
                format!("{} over", show(slowest.saturating_sub(limit))),
            ),
        ]);
    }
}

/// Which per-run count a comparison is about.
#[derive(Clone, Copy)]
enum Count {
    Failed,
    Stalled,
}

impl Count {
    fn of(self, metrics: &Metrics) -> f64 {
        match self {
            Count::Failed => metrics.failed as f64,
            Count::Stalled => metrics.stalled as f64,
        }
    }
}

/// Our median count against each peer's (only HAProxy tuned if `tuned_only`). Zero
/// against zero is a tie at the floor, said as such.
fn compare(
    table: &mut Table,
    plan: &Plan,
    results: &[RoundResult],
    fault: Fault,
    count: Count,
    what: &str,
    tuned_only: bool,
) {
    let med = |kind| {
        let (runs, _) = metrics_of(results, fault, kind);
        median(&runs.iter().map(|m| count.of(m)).collect::<Vec<_>>())
    };
    let Some(ours) = med(ProxyKind::Ours) else {
        return;
    };
    let peers: Vec<(ProxyKind, f64)> = plan
        .proxies
        .iter()
        .filter(|k| !k.is_ours() && (!tuned_only || **k == ProxyKind::HaproxyTuned))
        .filter_map(|k| Some((*k, med(*k)?)))
        .collect();
    if peers.is_empty() {
        table.row(vec![
            what.into(),
            "no peer measured in this run".into(),
            "–".into(),
        ]);
        return;
    }
    let listed: Vec<String> = peers
        .iter()
        .map(|(k, n)| format!("{}: {n:.0}", k.label()))
        .collect();
    let not_fewer: Vec<String> = peers
        .iter()
        .filter(|(_, n)| ours >= *n)
        .map(|(k, n)| format!("{} has {n:.0}", k.label()))
        .collect();
    let verdict = if not_fewer.is_empty() {
        "yes".to_owned()
    } else if ours == 0.0 {
        format!("tie at 0 (cannot be fewer): {}", not_fewer.join(", "))
    } else {
        format!("**no**: not fewer: {}", not_fewer.join(", "))
    };
    table.row(vec![
        what.into(),
        format!("ours {ours:.0} (median); {}", listed.join(", ")),
        verdict,
    ]);
}

fn show(duration: Duration) -> String {
    if duration == Duration::MAX {
        "never".to_owned()
    } else if duration < Duration::from_secs(1) {
        format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", duration.as_secs_f64())
    }
}

fn verdict(holds: bool, gap: String) -> String {
    if holds {
        "yes".to_owned()
    } else {
        format!("**no**: {gap}")
    }
}
