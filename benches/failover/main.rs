//! `cargo bench --bench failover`: what clients see when the active master is killed,
//! frozen, or reports itself unhealthy, through jenkins-ha-proxy, HAProxy (classic
//! guide and tuned) and nginx. See benches/README.md.
//!
//! `BENCH_SMOKE=1`: one short SIGKILL round through our proxy only (CI).
//! `BENCH_RUNS=N`: runs per fault and proxy (default 3).

mod analysis;
mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod load;
mod master;
mod plan;
mod report;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use analysis::{Metrics, Timeline};
use common::child;
use common::peers::{self, ProxyKind, ProxySpec, RunningProxy};
use common::sys::Signal;
use master::MasterProcess;
use plan::{Fault, Plan, Schedule};
use tokio::time::Instant;

/// The load starts this long after the proxy is ready (runtime and pool warm-up).
const LEAD_IN: Duration = Duration::from_millis(200);
const PROXY_READY: Duration = Duration::from_secs(20);

/// One fault, one proxy, one run.
pub struct RoundResult {
    pub fault: Fault,
    pub kind: ProxyKind,
    pub metrics: Result<Metrics, String>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(master::ARG) {
        return master::main(&args[1..]);
    }
    match bench(&Plan::from_env()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("failover bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn bench(plan: &Plan) -> Result<(), String> {
    common::sys::raise_nofile(65_536).map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?;
    println!("{}", plan.describe());
    let load_at_start = common::report::loadavg();
    let dir = common::report::bench_dir().join("failover");
    let missing: Vec<(ProxyKind, String)> = plan
        .proxies
        .iter()
        .filter(|k| !k.installed())
        .map(|k| (*k, "not installed".to_owned()))
        .collect();
    let mut results = Vec::new();
    for run in 0..plan.runs {
        for &fault in &plan.faults {
            for &kind in plan
                .proxies
                .iter()
                .filter(|k| k.installed() && fault.applies_to(**k))
            {
                let dir = dir.join(fault.slug()).join(slug(kind));
                let metrics = round(plan, plan.schedule(run), fault, kind, &dir);
                print_round(run, plan, fault, kind, &metrics);
                results.push(RoundResult {
                    fault,
                    kind,
                    metrics,
                });
            }
        }
    }
    let section = report::render(plan, &load_at_start, &results, &missing);
    println!("{section}");
    let path = common::report::publish("failover", &section)?;
    println!("report written to {}", path.display());
    sanity_check(&results)
}

/// The machinery worked if our proxy answered at all; anything else is a result.
fn sanity_check(results: &[RoundResult]) -> Result<(), String> {
    let ours = results.iter().filter(|r| r.kind == ProxyKind::Ours);
    for result in ours {
        match &result.metrics {
            Err(error) => return Err(format!("{} round: {error}", result.fault.slug())),
            Ok(m) if m.failed == m.sent => {
                return Err(format!(
                    "{} round: not one request succeeded through our proxy",
                    result.fault.slug()
                ))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

pub fn slug(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Ours => "ours",
        ProxyKind::HaproxyClassic => "haproxy-classic",
        ProxyKind::HaproxyTuned => "haproxy-tuned",
        ProxyKind::Nginx => "nginx",
        ProxyKind::OursCluster => "ours-cluster",
    }
}

fn print_round(
    run: usize,
    plan: &Plan,
    fault: Fault,
    kind: ProxyKind,
    metrics: &Result<Metrics, String>,
) {
    let head = format!(
        "run {}/{} {:<7} {:<36}",
        run + 1,
        plan.runs,
        fault.slug(),
        kind.label()
    );
    match metrics {
        Ok(m) => println!(
            "{head} failed {:>4}/{:<5} gap {:>6.3} s  standby after {}  slowest {:.2} s  failback {}",
            m.failed,
            m.sent,
            m.longest_gap.as_secs_f64(),
            m.first_standby.map_or("never".to_owned(), |d| format!("{:.3} s", d.as_secs_f64())),
            m.slowest.as_secs_f64(),
            m.failback.map_or("no".to_owned(), |d| format!("after {:.2} s", d.as_secs_f64())),
        ),
        Err(error) => println!("{head} bench error: {error}"),
    }
}

/// Fresh masters and a fresh proxy; load; fault; recovery; figures.
fn round(
    plan: &Plan,
    at: Schedule,
    fault: Fault,
    kind: ProxyKind,
    dir: &Path,
) -> Result<Metrics, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut primary = MasterProcess::start("master-a", [127, 0, 0, 2], dir)?;
    let backup = MasterProcess::start("master-b", [127, 0, 0, 3], dir)?;
    let mut proxies = Proxies::start(plan, kind, &primary, &backup, dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.workers)
        .enable_all()
        .build()
        .map_err(|e| format!("building the load runtime: {e}"))?;
    let (addr, second) = proxies.targets(fault)?;
    let load = load::Load {
        addr,
        second,
        keep_alive_rate: plan.keep_alive_rate,
        fresh_rate: plan.fresh_rate,
        duration: at.end,
        request_timeout: plan.request_timeout,
    };
    let start = Instant::now() + LEAD_IN;
    let running = runtime.spawn(load::run(load, start));
    let timeline = inject(at, fault, &mut primary, &mut proxies, start);
    let outcomes = runtime
        .block_on(running)
        .map_err(|e| format!("the load generator panicked: {e}"))?;
    let timeline = timeline?;
    proxies.stop_quietly();
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        print_slowest(&outcomes, &timeline);
    }
    Ok(analysis::analyse(&outcomes, timeline, plan.stall_bound()))
}

/// The proxy of a round: one process, or a pool of instances with its etcd.
enum Proxies {
    One(RunningProxy),
    Pool(cluster::Cluster),
}

impl Proxies {
    fn start(
        plan: &Plan,
        kind: ProxyKind,
        primary: &MasterProcess,
        backup: &MasterProcess,
        dir: &Path,
    ) -> Result<Proxies, String> {
        if kind == ProxyKind::OursCluster {
            return cluster::start(plan, primary.addr, backup.addr, dir).map(Proxies::Pool);
        }
        start_proxy(plan, kind, primary, backup, dir).map(Proxies::One)
    }

    /// Where the load goes: one proxy, both instances of a pool, or (when an instance
    /// is the fault) the one that is not killed.
    fn targets(&self, fault: Fault) -> Result<(SocketAddr, Option<SocketAddr>), String> {
        match self {
            Proxies::One(proxy) => Ok((proxy.listen, None)),
            Proxies::Pool(pool) if fault == Fault::KillInstance => {
                let survivor = 1 - cluster::leader(pool)?;
                Ok((pool.instances[survivor].listen, None))
            }
            Proxies::Pool(pool) => Ok((pool.instances[0].listen, Some(pool.instances[1].listen))),
        }
    }

    /// Logs of a proxy that exited early would explain a bad round; note it in stderr.
    fn stop_quietly(&mut self) {
        match self {
            Proxies::One(proxy) => stop_quietly(proxy),
            Proxies::Pool(pool) => {
                for (index, instance) in pool.instances.iter_mut().enumerate() {
                    if let Some(status) = instance.exited() {
                        eprintln!(
                            "proxy-{index} of the pool had exited during the round ({status})"
                        );
                    }
                }
            }
        }
    }
}

fn start_proxy(
    plan: &Plan,
    kind: ProxyKind,
    primary: &MasterProcess,
    backup: &MasterProcess,
    dir: &Path,
) -> Result<RunningProxy, String> {
    let spec = ProxySpec {
        kind,
        listen: child::free_port([127, 0, 0, 1])?,
        primary: primary.addr,
        backup: backup.addr,
        workers: plan.workers,
        checks: plan.checks,
    };
    let mut proxy = peers::start(&spec, dir)?;
    // Ours elects once both masters are checked; all of them must start on master-a.
    child::wait_for_http(&mut proxy.child, spec.listen, "/", PROXY_READY, |reply| {
        reply.header("x-master") == Some(primary.name)
    })?;
    Ok(proxy)
}

/// On the main thread, while the load runs: the fault, then the recovery, each at its
/// time. Returns when they happened (relative to `start`).
fn inject(
    at: Schedule,
    fault: Fault,
    master: &mut MasterProcess,
    proxies: &mut Proxies,
    start: Instant,
) -> Result<Timeline, String> {
    let leader = match (fault, &*proxies) {
        (Fault::KillInstance, Proxies::Pool(pool)) => Some(cluster::leader(pool)?),
        _ => None,
    };
    sleep_until(start + at.fault_at);
    match fault {
        Fault::Kill => master.kill()?,
        Fault::Freeze => master.signal(Signal::Stop)?,
        Fault::Sick => master.set_healthy(false)?,
        Fault::KillInstance => leading_instance(proxies, leader)?.kill()?,
    }
    let fault_time = start.elapsed();
    sleep_until(start + at.recover_at);
    match fault {
        Fault::Kill => master.spawn()?,
        Fault::Freeze => master.signal(Signal::Cont)?,
        Fault::Sick => master.set_healthy(true)?,
        Fault::KillInstance => leading_instance(proxies, leader)?.restart()?,
    }
    let recovered = start.elapsed();
    sleep_until(start + at.end);
    Ok(Timeline {
        fault: fault_time,
        recovered,
        end: at.end,
    })
}

/// The pool's instance that led when the round began (the one the fault kills).
fn leading_instance(
    proxies: &mut Proxies,
    leader: Option<usize>,
) -> Result<&mut cluster::Instance, String> {
    match (proxies, leader) {
        (Proxies::Pool(pool), Some(leader)) => Ok(&mut pool.instances[leader]),
        _ => Err("an instance is killed only in the cluster row".to_owned()),
    }
}

/// `BENCH_VERBOSE=1`: the slowest requests of a round, to see where time went.
fn print_slowest(outcomes: &[load::Outcome], at: &Timeline) {
    let mut slowest: Vec<&load::Outcome> = outcomes.iter().collect();
    slowest.sort_by_key(|o| std::cmp::Reverse(o.latency()));
    println!(
        "  fault at {:?}, recovery at {:?}; slowest requests:",
        at.fault, at.recovered
    );
    for o in slowest.iter().take(8) {
        println!(
            "  sent {:>8.3} s  took {:>8.3} s  fresh {:<5} {:?}",
            o.sent.as_secs_f64(),
            o.latency().as_secs_f64(),
            o.fresh,
            o.result
        );
    }
}

fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// Logs of a proxy that exited early would explain a bad round; note it in stderr.
fn stop_quietly(proxy: &mut RunningProxy) {
    if let Some(status) = proxy.child.exited() {
        eprintln!(
            "{} had exited during the round ({status})",
            proxy.kind.label()
        );
    }
}
