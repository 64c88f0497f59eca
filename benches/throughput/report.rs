//! The throughput section of the report: tables and the issue-4 targets.

use std::fmt::Write as _;

use super::memory::{Idle, Streamed};
use super::plan::Plan;
use super::{Extras, Missing, Run, Target};
use crate::common::peers::haproxy_maxconn;
use crate::common::report::{background, median, mib, ms, spread, utc_now, Table};
use crate::common::sys::nofile_limit;

/// "Flat while streaming": the peak may exceed the RSS before by at most this.
const FLAT_STREAM_KIB: u64 = 4 * 1024;
/// "A few socket buffers" for a slow client: RSS growth at most this.
const SLOW_CLIENT_KIB: u64 = 2 * 1024;
/// A slow stream's chunk must reach the client within this of being sent.
const CHUNK_DELAY_MS: f64 = 10.0;
const RSS_UNDER_LOAD_KIB: u64 = 32 * 1024;

const PEER_NOTES: &str = "- Configs (written to `target/bench/throughput/<proxy>/`): all three set X-Forwarded-For, -Proto, -Host and -Port (what a Jenkins behind a reverse proxy needs to build its URLs; until 2026-11-30 HAProxy set only the first and nginx the first two, so the upstream, on the same cores, read a shorter head from them) and keep upstream connections alive. HAProxy runs its defaults otherwise (`http-reuse safe`: a client connection's first request gets its own server connection, which is what makes it slow without client keep-alive); nginx has `keepalive 256` and `keepalive_requests 1000000` (its default of 1000 would close busy connections every few milliseconds).\n- Without keep-alive, \"upstream (direct)\" is no ceiling: there the upstream pays a TCP handshake per request, while a proxy keeps its upstream connections.\n";

/// Medians over the runs of one target in one scenario.
#[derive(Debug, Clone, Copy)]
struct Summary {
    rps: f64,
    p99: f64,
    /// Proxy CPU seconds per 100k requests; None for the upstream measured directly.
    cpu: Option<f64>,
}

pub fn render(
    plan: &Plan,
    load_at_start: &str,
    targets: &[Target],
    missing: &[Missing],
    runs: &[Run],
    extras: &[Extras],
) -> String {
    let mut text = format!(
        "## Throughput ({})\n\n- Run: {}\n- Load: {}; {} s per run, {} run(s) per configuration, targets alternating run by run; medians (min–max)\n- Upstream: the bench's own hyper server in a separate process ({} threads), 1 KiB body; every proxy has one server + one backup in front of it, {} worker(s)\n",
        if plan.smoke { "smoke run: not a measurement" } else { "full run" },
        utc_now(),
        plan.tool(),
        plan.duration.as_secs(),
        plan.runs,
        plan.workers,
        plan.workers,
    );
    text.push_str(&background(load_at_start));
    text.push_str(PEER_NOTES);
    let _ = writeln!(
        text,
        "- Open files: RLIMIT_NOFILE {} per process (the most this machine allows the bench); HAProxy maxconn {} (it needs 2 descriptors per connection)",
        nofile_limit(),
        haproxy_maxconn()
    );
    for target in targets.iter().filter_map(|t| t.proxy.as_ref()) {
        if let Some(version) = target.kind.version() {
            let _ = writeln!(text, "- {}: {version}", super::label(target.kind));
        }
    }
    for gone in missing {
        let _ = writeln!(text, "- {}: not measured ({})", gone.label, gone.why);
    }
    text.push('\n');
    text.push_str(&load_table(plan, targets, missing, runs));
    text.push('\n');
    text.push_str(&memory_table(plan, targets, missing, runs, extras));
    text.push('\n');
    text.push_str(&targets_table(plan, targets, runs, extras));
    text
}

fn summary(runs: &[Run], target: usize, scenario: usize) -> Option<Summary> {
    let mine: Vec<&Run> = runs
        .iter()
        .filter(|r| r.target == target && r.scenario == scenario)
        .collect();
    let values = |f: fn(&Run) -> f64| mine.iter().map(|r| f(r)).collect::<Vec<_>>();
    let cpu: Vec<f64> = mine.iter().filter_map(|r| r.cpu_per_100k).collect();
    Some(Summary {
        rps: median(&values(|r| r.measured.rps))?,
        p99: median(&values(|r| r.measured.p99_ms))?,
        cpu: median(&cpu),
    })
}

fn haproxy_index(targets: &[Target]) -> Option<usize> {
    targets.iter().position(|t| t.label == "HAProxy")
}

fn ratio(mine: Option<f64>, theirs: Option<f64>) -> String {
    match (mine, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "–".to_owned(),
    }
}

fn load_table(plan: &Plan, targets: &[Target], missing: &[Missing], runs: &[Run]) -> String {
    let mut table = Table::new(&[
        "scenario",
        "target",
        "req/s",
        "vs HAProxy",
        "p50",
        "p99",
        "p99 vs HAProxy",
        "proxy CPU s / 100k req",
        "CPU vs HAProxy",
        "errors",
    ]);
    let haproxy = haproxy_index(targets);
    for (s, scenario) in plan.scenarios.iter().enumerate() {
        let reference = haproxy.and_then(|h| summary(runs, h, s));
        for (t, target) in targets.iter().enumerate() {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| r.target == t && r.scenario == s)
                .collect();
            let values = |f: &dyn Fn(&Run) -> f64| mine.iter().map(|r| f(r)).collect::<Vec<_>>();
            let own = summary(runs, t, s);
            let cpu: Vec<f64> = mine.iter().filter_map(|r| r.cpu_per_100k).collect();
            table.row(vec![
                scenario.name.to_owned(),
                target.label.clone(),
                spread(&values(&|r| r.measured.rps), |v| format!("{v:.0}")),
                ratio(own.map(|o| o.rps), reference.map(|r| r.rps)),
                spread(&values(&|r| r.measured.p50_ms), |v| format!("{v:.2} ms")),
                spread(&values(&|r| r.measured.p99_ms), |v| format!("{v:.2} ms")),
                ratio(own.map(|o| o.p99), reference.map(|r| r.p99)),
                if cpu.is_empty() {
                    "–".to_owned()
                } else {
                    spread(&cpu, |v| format!("{v:.2}"))
                },
                ratio(own.and_then(|o| o.cpu), reference.and_then(|r| r.cpu)),
                mine.iter()
                    .map(|r| r.measured.errors)
                    .sum::<u64>()
                    .to_string(),
            ]);
        }
        for gone in missing {
            let mut row = vec![scenario.name.to_owned(), gone.label.to_owned()];
            row.push(format!("not measured ({})", gone.why));
            row.extend(std::iter::repeat("–".to_owned()).take(7));
            table.row(row);
        }
    }
    format!("### Requests/s and latency\n\n{}", table.render())
}

fn memory_table(
    plan: &Plan,
    targets: &[Target],
    missing: &[Missing],
    runs: &[Run],
    extras: &[Extras],
) -> String {
    let stream_label = format!(
        "streaming {} MiB: before → peak (MiB/s)",
        plan.stream_size >> 20
    );
    let slow_label = format!(
        "slow client ({} MiB/s): before → peak",
        plan.slow_rate >> 20
    );
    let idle_label = format!(
        "{} idle keep-alive conns: opened, RSS per conn",
        plan.idle_connections
    );
    let mut table = Table::new(&[
        "proxy",
        "RSS idle",
        "RSS under load (peak)",
        "VmHWM after load",
        &stream_label,
        &slow_label,
        "slow-stream chunk delay: median / max",
        &idle_label,
    ]);
    for (t, target) in targets.iter().enumerate() {
        if target.proxy.is_none() {
            continue;
        }
        let extra = &extras[t];
        let peak = runs
            .iter()
            .filter(|r| r.target == t)
            .filter_map(|r| r.peak_rss_kib)
            .max();
        table.row(vec![
            target.label.clone(),
            kib(target.idle_kib),
            kib(peak),
            kib(extra.hwm_kib),
            streamed(extra.stream.as_ref(), true),
            streamed(extra.slow_client.as_ref(), false),
            chunk_delays(extra.chunks.as_ref()),
            idle(extra.idle.as_ref()),
        ]);
    }
    for gone in missing {
        let mut row = vec![
            gone.label.to_owned(),
            format!("not measured ({})", gone.why),
        ];
        row.extend(std::iter::repeat("–".to_owned()).take(6));
        table.row(row);
    }
    format!(
        "### Memory and streaming\n\nRSS is VmRSS summed over the proxy's processes (nginx: master + workers, so shared pages count once per process).\n\n{}",
        table.render()
    )
}

fn kib(value: Option<u64>) -> String {
    value.map_or("–".to_owned(), |v| mib(v as f64))
}

fn streamed(result: Option<&Result<Streamed, String>>, rate: bool) -> String {
    match result {
        None => "–".to_owned(),
        Some(Err(error)) => format!("failed: {error}"),
        Some(Ok(s)) if rate => format!(
            "{} → {} ({:.0} MiB/s)",
            mib(s.before_kib as f64),
            mib(s.peak_kib as f64),
            s.mib_per_s
        ),
        Some(Ok(s)) => format!("{} → {}", mib(s.before_kib as f64), mib(s.peak_kib as f64)),
    }
}

fn chunk_delays(result: Option<&Result<Vec<f64>, String>>) -> String {
    match result {
        None => "–".to_owned(),
        Some(Err(error)) => format!("failed: {error}"),
        Some(Ok(delays)) => {
            let max = delays.iter().copied().fold(0.0, f64::max);
            let mid = median(delays).unwrap_or(f64::NAN);
            format!("{} / {}", ms(mid), ms(max))
        }
    }
}

fn idle(result: Option<&Result<Idle, String>>) -> String {
    match result {
        None => "–".to_owned(),
        Some(Err(error)) => format!("failed: {error}"),
        Some(Ok(idle)) => {
            let per = idle
                .per_connection_kib()
                .map_or("–".to_owned(), |k| format!("{k:.1} KiB"));
            format!("{} of {}, {per}", idle.opened, idle.wanted)
        }
    }
}

/// The issue-4 targets that this bench can check, each as measured in this run.
fn targets_table(plan: &Plan, targets: &[Target], runs: &[Run], extras: &[Extras]) -> String {
    let Some(ours) = targets.iter().position(|t| t.label == "jenkins-ha-proxy") else {
        return String::new();
    };
    let mut table = Table::new(&["issue-4 target", "measured", "holds?"]);
    let haproxy = haproxy_index(targets);
    for (s, scenario) in plan.scenarios.iter().enumerate() {
        let mine = summary(runs, ours, s);
        let theirs = haproxy.and_then(|h| summary(runs, h, s));
        let (Some(mine), Some(theirs)) = (mine, theirs) else {
            table.row(vec![
                format!("req/s >= 1.0x HAProxy, {}", scenario.name),
                "no HAProxy in this run".into(),
                "–".into(),
            ]);
            continue;
        };
        let rps = mine.rps / theirs.rps;
        table.row(vec![
            format!("req/s >= 1.0x HAProxy, {}", scenario.name),
            format!("{rps:.2}x ({:.0} vs {:.0})", mine.rps, theirs.rps),
            verdict(rps >= 1.0, format!("short by {:.0}%", (1.0 - rps) * 100.0)),
        ]);
        let p99 = mine.p99 / theirs.p99;
        table.row(vec![
            format!("p99 <= 1.1x HAProxy, {}", scenario.name),
            format!("{p99:.2}x ({:.2} vs {:.2} ms)", mine.p99, theirs.p99),
            verdict(
                p99 <= 1.1,
                format!("{:.0}% over the bound", (p99 / 1.1 - 1.0) * 100.0),
            ),
        ]);
    }
    memory_targets(&mut table, ours, runs, &extras[ours]);
    format!(
        "### Issue-4 targets (throughput side)\n\n{}",
        table.render()
    )
}

fn memory_targets(table: &mut Table, ours: usize, runs: &[Run], extra: &Extras) {
    let peak = runs
        .iter()
        .filter(|r| r.target == ours)
        .filter_map(|r| r.peak_rss_kib)
        .max();
    if let Some(peak) = peak {
        table.row(vec![
            "RSS under load <= 32 MiB".into(),
            mib(peak as f64),
            verdict(
                peak <= RSS_UNDER_LOAD_KIB,
                format!(
                    "{} over",
                    mib(peak.saturating_sub(RSS_UNDER_LOAD_KIB) as f64)
                ),
            ),
        ]);
    }
    if let Some(Ok(s)) = &extra.stream {
        let growth = s.peak_kib.saturating_sub(s.before_kib);
        table.row(vec![
            "RSS flat while streaming (peak <= before + 4 MiB)".into(),
            format!("+{}", mib(growth as f64)),
            verdict(
                growth <= FLAT_STREAM_KIB,
                format!(
                    "{} over",
                    mib(growth.saturating_sub(FLAT_STREAM_KIB) as f64)
                ),
            ),
        ]);
    }
    if let Some(Ok(s)) = &extra.slow_client {
        let growth = s.peak_kib.saturating_sub(s.before_kib);
        table.row(vec![
            "slow client: proxy holds a few socket buffers at most (RSS growth <= 2 MiB)".into(),
            format!("+{}", mib(growth as f64)),
            verdict(
                growth <= SLOW_CLIENT_KIB,
                format!(
                    "{} over",
                    mib(growth.saturating_sub(SLOW_CLIENT_KIB) as f64)
                ),
            ),
        ]);
    }
    if let Some(Ok(delays)) = &extra.chunks {
        let max = delays.iter().copied().fold(0.0, f64::max);
        table.row(vec![
            "slow stream: every chunk within 10 ms of being sent".into(),
            format!("max {}", ms(max)),
            verdict(
                max <= CHUNK_DELAY_MS,
                format!("{} late", ms(max - CHUNK_DELAY_MS)),
            ),
        ]);
    }
}

fn verdict(holds: bool, gap: String) -> String {
    if holds {
        "yes".to_owned()
    } else {
        format!("**no**: {gap}")
    }
}
