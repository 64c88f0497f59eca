//! Every failure judged expected or not, the Markdown report, and the verdict.
//!
//! Expected, by design (README, "Failure behaviour"): a stream, WebSocket or TCP
//! session cut because its master was killed, frozen, made sick or switched away
//! from (drained), a 503 while no master was active, and a plain GET that broke on a
//! master being killed and whose one replay broke too. Everything else is not: a
//! plain GET failing while a master could serve (a crash is failed over, a hang is
//! rescued, a stale connection is retried), a session cut on a master nothing
//! happened to, a wrong byte anywhere.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::chaos::{Action, ChaosLog};
use crate::common::report::{mib, Table};
use crate::load::{Kind, Record};
use crate::monitor::{Footprint, Watch};
use crate::plan::Plan;

/// Causes that mean wrong data, whatever happened around them.
const CORRUPTION: [&str; 4] = [
    "wrong body",
    "wrong echo",
    "short or wrong body",
    "bench error",
];

/// A master's trouble at `at`: a chaos action against it, or the poller seeing
/// traffic leave it.
#[derive(Debug, Clone)]
struct Disruption {
    at: Duration,
    master: Option<String>,
}

pub struct Judged {
    /// (kind, cause) -> (expected, unexpected)
    pub by_cause: BTreeMap<(Kind, &'static str), (u64, u64)>,
    /// kind -> (total, ok, expected failures, unexpected failures, units)
    pub by_kind: BTreeMap<Kind, [u64; 5]>,
    /// A few unexpected failures, for the report.
    pub examples: Vec<String>,
}

impl Judged {
    pub fn unexpected(&self) -> u64 {
        self.by_kind.values().map(|k| k[3]).sum()
    }
}

/// How long after its master's trouble began a session may still fail because of
/// it: it may have started on that master up to its demotion (hang or sick
/// detection), and is cut a drain timeout after that.
pub fn grace(plan: &Plan) -> Duration {
    plan.health.interval * (plan.health.fall + 1)
        + plan.health.timeout * plan.health.fall
        + plan.drain
        + Duration::from_secs(1)
}

pub fn judge(plan: &Plan, records: &[Record], chaos: &ChaosLog, watch: &Watch) -> Judged {
    let mut disruptions: Vec<Disruption> = chaos
        .events
        .iter()
        .filter(|e| !e.detail.starts_with("refused"))
        .map(|e| Disruption {
            at: e.at,
            master: Some(e.master.clone()),
        })
        .collect();
    disruptions.extend(watch.changes.iter().map(|c| Disruption {
        at: c.at,
        master: c.from.clone(),
    }));
    let grace = grace(plan);
    let mut judged = Judged {
        by_cause: BTreeMap::new(),
        by_kind: BTreeMap::new(),
        examples: Vec::new(),
    };
    for record in records {
        let row = judged.by_kind.entry(record.kind).or_default();
        row[0] += 1;
        row[4] += record.units;
        let Some(failure) = &record.failure else {
            row[1] += 1;
            continue;
        };
        let expected = expected(record, failure.cause, &disruptions, watch, grace);
        row[if expected { 2 } else { 3 }] += 1;
        let cause = failure.cause;
        let cell = judged.by_cause.entry((record.kind, cause)).or_default();
        if expected {
            cell.0 += 1;
        } else {
            cell.1 += 1;
            if judged.examples.len() < 12 {
                judged.examples.push(format!(
                    "{} at {:.2}-{:.2} s on {}: {}: {}",
                    record.kind.label(),
                    record.start.as_secs_f64(),
                    record.end.as_secs_f64(),
                    record.master.as_deref().unwrap_or("no master known"),
                    failure.cause,
                    failure.detail
                ));
            }
        }
    }
    judged
}

fn expected(
    record: &Record,
    cause: &str,
    disruptions: &[Disruption],
    watch: &Watch,
    grace: Duration,
) -> bool {
    if CORRUPTION.contains(&cause) {
        return false;
    }
    let margin = Duration::from_millis(100);
    let no_master = cause == "HTTP 503"
        && watch.without_master_during(record.start.saturating_sub(margin), record.end + margin);
    if record.kind.is_plain() {
        return no_master;
    }
    no_master
        || disruptions.iter().any(|d| {
            let in_window = d.at + grace >= record.start && d.at <= record.end + margin;
            // Unknown master (no answer head, no greeting): any trouble around it.
            let same_master = record.master.is_none() || d.master == record.master;
            in_window && same_master
        })
}

pub struct Figures<'a> {
    pub plan: &'a Plan,
    pub chaos: &'a ChaosLog,
    pub watch: &'a Watch,
    pub judged: &'a Judged,
    pub elapsed: Duration,
    pub start: Footprint,
    pub end: Footprint,
    pub idle_at_start: bool,
    pub idle_at_end: bool,
    pub failovers: u64,
    pub load_at_start: &'a str,
}

pub fn render(f: &Figures) -> String {
    let plan = f.plan;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "## Soak{}\n",
        if plan.smoke {
            " (smoke run: not a measurement)"
        } else {
            ""
        }
    );
    let h = plan.health;
    let _ = writeln!(
        text,
        "- Chaos for {} s (seed {}, `SOAK_SEED={}` repeats the actions) after {} s of warm-up; {} masters, each its own process; proxy: health every {} ms, timeout {} ms, rise {}, fall {}, `drain_timeout` {} ms, `failback = \"never\"`",
        plan.duration.as_secs(),
        plan.seed,
        plan.seed,
        plan.warm_up.as_secs(),
        plan.masters,
        h.interval.as_millis(),
        h.timeout.as_millis(),
        h.rise,
        h.fall,
        plan.drain.as_millis(),
    );
    let _ = writeln!(
        text,
        "- Load: {} req/s plain GET keep-alive, {} req/s plain GET on new connections, {} streaming, {} WebSocket and {} TCP workers (sessions of 10-60 echoed messages, 100 ms apart)",
        plan.keep_alive_rate, plan.fresh_rate, plan.streamers, plan.websockets, plan.tcp_sessions
    );
    text.push_str(&crate::common::report::background(f.load_at_start));
    let _ = writeln!(text, "- Whole run: {:.0} s\n", f.elapsed.as_secs_f64());

    let mut actions = Table::new(&["chaos action", "count"]);
    for action in Action::ALL {
        actions.row(vec![
            action.label().to_owned(),
            f.chaos.count(action).to_string(),
        ]);
    }
    actions.row(vec![
        "switchovers refused (target no longer healthy)".to_owned(),
        f.chaos.refused.to_string(),
    ]);
    actions.row(vec![
        "skipped (no other healthy master)".to_owned(),
        f.chaos.skipped.to_string(),
    ]);
    actions.row(vec![
        "changes of the active master seen in `/status` (failovers counted by the proxy)"
            .to_owned(),
        format!("{} ({})", f.watch.changes.len(), f.failovers),
    ]);
    text.push_str(&actions.render());
    let mut causes: BTreeMap<&str, usize> = BTreeMap::new();
    for change in &f.watch.changes {
        let cause = if change.to.is_none() {
            "to no master"
        } else {
            change.cause.as_str()
        };
        *causes.entry(cause).or_default() += 1;
    }
    let causes: Vec<String> = causes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let _ = writeln!(
        text,
        "\nChanges of the active master by `/status` cause: {}.\n",
        if causes.is_empty() {
            "none".to_owned()
        } else {
            causes.join(", ")
        }
    );

    let mut kinds = Table::new(&[
        "traffic",
        "requests / sessions",
        "ok",
        "failed, expected",
        "failed, unexpected",
        "volume",
    ]);
    for kind in Kind::ALL {
        let row = f.judged.by_kind.get(&kind).copied().unwrap_or_default();
        let volume = match kind {
            Kind::Stream => mib(row[4] as f64 / 1024.0),
            Kind::WebSocket | Kind::Tcp => format!("{} echoes", row[4]),
            _ => "–".to_owned(),
        };
        kinds.row(vec![
            kind.label().to_owned(),
            row[0].to_string(),
            row[1].to_string(),
            row[2].to_string(),
            row[3].to_string(),
            volume,
        ]);
    }
    text.push_str(&kinds.render());
    text.push('\n');

    if f.judged.by_cause.is_empty() {
        text.push_str("No failures.\n\n");
    } else {
        let mut causes = Table::new(&["traffic", "failure", "expected", "unexpected"]);
        for ((kind, cause), (expected, unexpected)) in &f.judged.by_cause {
            causes.row(vec![
                kind.label().to_owned(),
                (*cause).to_owned(),
                expected.to_string(),
                unexpected.to_string(),
            ]);
        }
        text.push_str(&causes.render());
        text.push('\n');
    }
    text.push_str(
        "Expected: a stream, WebSocket or TCP session whose master was killed, frozen, made sick or switched away from during its life (cut by design: a drain or a dead socket), and a 503 while no master was active. Unexpected: a plain GET failing while a master could serve, a session cut on a master nothing happened to, any wrong byte.\n\n",
    );
    if !f.judged.examples.is_empty() {
        text.push_str("Unexpected failures (first few):\n\n");
        for example in &f.judged.examples {
            let _ = writeln!(text, "- {example}");
        }
        text.push('\n');
    }

    let mut health = Table::new(&["proxy", "start", "end", "growth"]);
    let now = f.elapsed;
    health.row(vec![
        "longest time with no active master (bound)".to_owned(),
        "–".to_owned(),
        format!(
            "{} ms ({} ms)",
            f.watch.longest_without_master(now).as_millis(),
            plan.max_no_master.as_millis()
        ),
        format!("total {} ms", f.watch.total_without_master(now).as_millis()),
    ]);
    health.row(vec![
        "resident memory (RSS)".to_owned(),
        mib(f.start.rss_kib as f64),
        mib(f.end.rss_kib as f64),
        format!(
            "{:+.1} MiB",
            (f.end.rss_kib as f64 - f.start.rss_kib as f64) / 1024.0
        ),
    ]);
    health.row(vec![
        format!("open file descriptors (slack {})", plan.fd_slack),
        f.start.fds.to_string(),
        f.end.fds.to_string(),
        format!("{:+}", f.end.fds as i64 - f.start.fds as i64),
    ]);
    health.row(vec![
        "no tunnel, forward or request open, at most one idle pooled connection, when measured"
            .to_owned(),
        yes_no(f.idle_at_start),
        yes_no(f.idle_at_end),
        "–".to_owned(),
    ]);
    health.row(vec![
        "`/status` polls (failed)".to_owned(),
        "–".to_owned(),
        format!("{} ({})", f.watch.polls, f.watch.poll_errors),
        "–".to_owned(),
    ]);
    text.push_str(&health.render());
    text.push_str(
        "\nStart: after the warm-up load stopped and the drains were done; end: the same after the chaos load (every master restored first). RSS includes allocator caches, so it is reported, not judged; descriptors must come back.\n",
    );
    text
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// What makes the run fail: only what the design guarantees.
pub fn verdict(f: &Figures, proxy_exit: Option<String>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(status) = proxy_exit {
        problems.push(format!("the proxy exited during the run ({status})"));
    }
    let growth = f.end.fds as i64 - f.start.fds as i64;
    if growth > f.plan.fd_slack {
        problems.push(format!(
            "open file descriptors grew from {} to {} (slack {})",
            f.start.fds, f.end.fds, f.plan.fd_slack
        ));
    }
    let longest = f.watch.longest_without_master(f.elapsed);
    if longest > f.plan.max_no_master {
        problems.push(format!(
            "no master was active for {} ms (bound {} ms)",
            longest.as_millis(),
            f.plan.max_no_master.as_millis()
        ));
    }
    if f.judged.unexpected() > 0 {
        problems.push(format!(
            "{} unexpected failures (see the report)",
            f.judged.unexpected()
        ));
    }
    // The machinery itself: a soak without chaos or without answers proves nothing.
    if f.chaos.events.is_empty() {
        problems.push("not one chaos action was taken".to_owned());
    }
    if f.judged.by_kind.values().all(|row| row[1] == 0) {
        problems.push("not one request or session succeeded".to_owned());
    }
    if !f.idle_at_end {
        problems.push(
            "tunnels, forwards or requests to the masters were still open long after the load stopped".to_owned(),
        );
    }
    problems
}
