//! `cargo bench --bench throughput`: requests/s, latency, CPU and memory of
//! jenkins-ha-proxy next to HAProxy and nginx, against the same fast upstream, in the
//! same run, alternating. See benches/README.md.
//!
//! `BENCH_SMOKE=1`: a few seconds, our proxy only (CI). `BENCH_RUNS=N`: runs per
//! configuration (default 3).

#[path = "../common/mod.rs"]
mod common;
mod loadgen;
mod memory;
mod plan;
mod report;
mod upstream;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use common::child;
use common::peers::{self, Checks, ProxyKind, ProxySpec, RunningProxy};
use common::procfs::{self, RssSampler};
use plan::{Plan, Scenario};

pub use common::wrk::Measured;

/// Something wrk is pointed at: the upstream itself, or a proxy in front of it.
pub struct Target {
    pub label: String,
    pub addr: SocketAddr,
    /// None for the upstream measured directly.
    pub proxy: Option<RunningProxy>,
    /// RSS right after start, before any load.
    pub idle_kib: Option<u64>,
}

/// A proxy that could not be measured, and why.
pub struct Missing {
    pub label: &'static str,
    pub why: String,
}

/// One load run of one target.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub target: usize,
    pub scenario: usize,
    pub measured: Measured,
    pub cpu_per_100k: Option<f64>,
    pub peak_rss_kib: Option<u64>,
}

/// Memory and streaming results of one proxy.
#[derive(Debug, Default)]
pub struct Extras {
    pub stream: Option<Result<memory::Streamed, String>>,
    pub slow_client: Option<Result<memory::Streamed, String>>,
    pub chunks: Option<Result<Vec<f64>, String>>,
    pub idle: Option<Result<memory::Idle, String>>,
    pub hwm_kib: Option<u64>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(upstream::ARG) {
        return upstream::main(&args[1..]);
    }
    match bench(&Plan::from_env()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("throughput bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn bench(plan: &Plan) -> Result<(), String> {
    let nofile =
        common::sys::raise_nofile(65_536).map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?;
    println!("{}", plan.describe(nofile));
    let load_at_start = common::report::loadavg();
    let dir = common::report::bench_dir().join("throughput");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let (_upstream, primary, backup) = upstream::spawn(&dir)?;
    let (targets, missing) = start_targets(plan, primary, backup, &dir)?;
    let runs = load_runs(plan, &targets)?;
    let extras = measure_extras(plan, &targets)?;
    let section = report::render(plan, &load_at_start, &targets, &missing, &runs, &extras);
    println!("{section}");
    let path = common::report::publish("throughput", &section)?;
    println!("report written to {}", path.display());
    Ok(())
}

/// The upstream itself, then every proxy of the plan that is installed and starts.
fn start_targets(
    plan: &Plan,
    primary: SocketAddr,
    backup: SocketAddr,
    dir: &std::path::Path,
) -> Result<(Vec<Target>, Vec<Missing>), String> {
    let mut targets = vec![Target {
        label: "upstream (direct)".to_owned(),
        addr: primary,
        proxy: None,
        idle_kib: None,
    }];
    let mut missing = Vec::new();
    for &kind in &plan.proxies {
        let label = label(kind);
        if !kind.installed() {
            missing.push(Missing {
                label,
                why: "not installed".to_owned(),
            });
            continue;
        }
        let spec = ProxySpec {
            kind,
            listen: child::free_port([127, 0, 0, 1])?,
            primary,
            backup,
            workers: plan.workers,
            checks: Checks::DEFAULT,
        };
        match peers::start(&spec, &dir.join(short_name(kind))) {
            Ok(proxy) => targets.push(started(label, proxy)),
            Err(why) if kind == ProxyKind::Ours => return Err(why),
            Err(why) => missing.push(Missing { label, why }),
        }
    }
    Ok((targets, missing))
}

fn started(label: &str, proxy: RunningProxy) -> Target {
    // Let startup allocations settle before calling it "idle".
    thread::sleep(Duration::from_millis(500));
    let idle_kib = procfs::usage(proxy.pid()).ok().map(|u| u.rss_kib);
    Target {
        label: label.to_owned(),
        addr: proxy.listen,
        proxy: Some(proxy),
        idle_kib,
    }
}

/// Throughput bench labels: one HAProxy config here, so no "classic" qualifier.
pub fn label(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::HaproxyClassic | ProxyKind::HaproxyTuned => "HAProxy",
        ProxyKind::Nginx => "nginx",
        ProxyKind::Ours | ProxyKind::OursCluster => "jenkins-ha-proxy",
    }
}

fn short_name(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Ours | ProxyKind::OursCluster => "ours",
        ProxyKind::HaproxyClassic | ProxyKind::HaproxyTuned => "haproxy",
        ProxyKind::Nginx => "nginx",
    }
}

/// Every scenario against every target, `plan.runs` times, alternating targets.
fn load_runs(plan: &Plan, targets: &[Target]) -> Result<Vec<Run>, String> {
    for target in targets {
        let warmup = Scenario {
            name: "warm-up",
            connections: 64,
            keep_alive: true,
        };
        plan.load(&warmup, target.addr, plan.warmup)?;
    }
    let mut runs = Vec::new();
    for round in 0..plan.runs {
        for (s, scenario) in plan.scenarios.iter().enumerate() {
            for (t, target) in targets.iter().enumerate() {
                let run = one_run(plan, target, scenario)?;
                println!(
                    "round {}/{} {:<20} {:<18} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
                    round + 1,
                    plan.runs,
                    target.label,
                    scenario.name,
                    run.measured.rps,
                    run.measured.p50_ms,
                    run.measured.p99_ms,
                    run.measured.errors
                );
                runs.push(Run {
                    target: t,
                    scenario: s,
                    ..run
                });
                thread::sleep(plan.pause);
            }
        }
    }
    Ok(runs)
}

fn one_run(plan: &Plan, target: &Target, scenario: &Scenario) -> Result<Run, String> {
    let pid = target.proxy.as_ref().map(RunningProxy::pid);
    let before = pid.and_then(|pid| procfs::usage(pid).ok());
    let sampler = pid.map(|pid| RssSampler::start(pid, Duration::from_millis(200)));
    let measured = plan.load(scenario, target.addr, plan.duration)?;
    let peak_rss_kib = sampler.map(RssSampler::finish);
    let after = pid.and_then(|pid| procfs::usage(pid).ok());
    let cpu_per_100k = before.zip(after).and_then(|(before, after)| {
        let seconds = after.cpu_seconds() - before.cpu_seconds();
        (measured.requests > 0).then(|| seconds / measured.requests as f64 * 100_000.0)
    });
    Ok(Run {
        target: 0,
        scenario: 0,
        measured,
        cpu_per_100k,
        peak_rss_kib,
    })
}

/// Streaming, slow client, chunk delays and idle connections, one proxy at a time.
fn measure_extras(plan: &Plan, targets: &[Target]) -> Result<Vec<Extras>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("building a runtime: {e}"))?;
    let mut all = Vec::new();
    for target in targets {
        let Some(proxy) = &target.proxy else {
            all.push(Extras::default());
            continue;
        };
        let hwm_kib = procfs::usage(proxy.pid()).ok().map(|u| u.hwm_kib);
        let extras = runtime.block_on(extras_of(plan, proxy));
        all.push(Extras { hwm_kib, ..extras });
    }
    Ok(all)
}

async fn extras_of(plan: &Plan, proxy: &RunningProxy) -> Extras {
    let (addr, pid) = (proxy.listen, proxy.pid());
    let name = proxy.kind.label();
    println!("{name}: streaming {} MiB", plan.stream_size >> 20);
    let stream = Some(memory::stream(addr, pid, plan.stream_size).await);
    settle().await;
    println!("{name}: slow client");
    let slow_client =
        Some(memory::slow_client(addr, pid, plan.slow_rate, plan.slow_duration).await);
    settle().await;
    println!("{name}: slow chunks");
    let chunks = Some(memory::chunk_delays(addr, plan.chunks, plan.chunk_delay_ms).await);
    println!(
        "{name}: {} idle keep-alive connections",
        plan.idle_connections
    );
    let idle = Some(memory::idle_connections(addr, pid, plan.idle_connections).await);
    settle().await;
    Extras {
        stream,
        slow_client,
        chunks,
        idle,
        hwm_kib: None,
    }
}

/// Lets closed connections and freed buffers settle between measurements.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}
