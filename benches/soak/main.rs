//! `cargo bench --bench soak`: minutes of mixed traffic (plain GETs, streaming
//! downloads, WebSocket and TCP sessions) through jenkins-ha-proxy while its masters
//! are killed, frozen, made sick and switched away from at random. Reports requests
//! and sessions, failures by cause (expected by design or not), the longest time with
//! no active master, and the proxy's memory and descriptors before and after. See
//! benches/README.md.
//!
//! `SOAK_SECS=N` (default 300), `SOAK_SEED=N` (printed by every run),
//! `BENCH_SMOKE=1` (about 25 s, for CI). Exits non-zero when something the design
//! guarantees did not hold.

mod chaos;
#[path = "../common/mod.rs"]
mod common;
mod load;
mod master;
mod monitor;
mod plan;
mod report;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::child::{self, Child, Stop};
use common::peers::OUR_BINARY;
use master::MasterProcess;
use plan::Plan;

const MASTER_IPS: [[u8; 4]; 3] = [[127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 4]];
const PROXY_READY: Duration = Duration::from_secs(20);
/// Sessions under way when the load stops finish within their own deadlines.
const LOAD_WIND_DOWN: Duration = Duration::from_secs(60);
/// `proxy.pool_idle_timeout`: short, so the idle state before a measurement comes soon.
const POOL_IDLE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(master::ARG) {
        return master::main(&args[1..]);
    }
    match soak(&Plan::from_env()) {
        Ok(problems) if problems.is_empty() => ExitCode::SUCCESS,
        Ok(problems) => {
            for problem in problems {
                eprintln!("soak: FAILED: {problem}");
            }
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("soak bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Addresses of one run: the proxy's listeners, and per master its HTTP address and
/// its agent port (the same port number on every master's IP, as `[[tcp]]` wants).
struct Addresses {
    listen: SocketAddr,
    admin: SocketAddr,
    tcp_listen: SocketAddr,
    masters: Vec<(SocketAddr, SocketAddr)>,
}

fn addresses(count: usize) -> Result<Addresses, String> {
    let ips = &MASTER_IPS[..count];
    let agent_port = common_port(ips)?;
    let masters = ips
        .iter()
        .map(|ip| Ok((child::free_port(*ip)?, SocketAddr::from((*ip, agent_port)))))
        .collect::<Result<_, String>>()?;
    // Held together, so that the three are distinct (a released port comes back).
    let held = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr().map(|a| (l, a))))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("binding free ports on 127.0.0.1: {e}"))?;
    Ok(Addresses {
        listen: held[0].1,
        admin: held[1].1,
        tcp_listen: held[2].1,
        masters,
    })
}

/// A port free on every one of `ips`.
fn common_port(ips: &[[u8; 4]]) -> Result<u16, String> {
    for _ in 0..50 {
        let port = child::free_port(ips[0])?.port();
        if ips[1..]
            .iter()
            .all(|ip| TcpListener::bind(SocketAddr::from((*ip, port))).is_ok())
        {
            return Ok(port);
        }
    }
    Err(format!("no port free on all of {ips:?}"))
}

fn soak(plan: &Plan) -> Result<Vec<String>, String> {
    common::sys::raise_nofile(65_536).map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?;
    println!("{}", plan.describe());
    let load_at_start = common::report::loadavg();
    let dir = common::report::bench_dir().join("soak");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let at = addresses(plan.masters)?;
    let mut masters = Vec::new();
    for (i, (http, tcp)) in at.masters.iter().enumerate() {
        let name = format!("master-{}", (b'a' + i as u8) as char);
        masters.push(MasterProcess::start(&name, *http, *tcp, &dir)?);
    }
    let mut proxy = start_proxy(plan, &at, &masters, &dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("building the load runtime: {e}"))?;
    let origin = Instant::now();

    println!(
        "warm-up: {} s of load without chaos",
        plan.warm_up.as_secs()
    );
    let warm = Arc::new(load::Load::new(plan, at.listen, at.tcp_listen, origin));
    let running = runtime.spawn(load::run(Arc::clone(&warm), plan.clone()));
    thread::sleep(plan.warm_up);
    warm.stop.cancel();
    wind_down(&runtime, running)?;
    let mut records = warm.take_records();
    let idle_patience = plan.drain + Duration::from_secs(15);
    let idle_at_start = monitor::wait_idle(at.admin, at.listen, POOL_IDLE, idle_patience);
    let start = monitor::footprint(proxy.pid())?;
    println!(
        "start: RSS {} KiB, {} open descriptors; chaos for {} s",
        start.rss_kib,
        start.fds,
        plan.duration.as_secs()
    );

    let mut watcher = monitor::Monitor::start(at.admin, origin);
    let soak_load = Arc::new(load::Load::new(plan, at.listen, at.tcp_listen, origin));
    let running = runtime.spawn(load::run(Arc::clone(&soak_load), plan.clone()));
    let until = Instant::now() + plan.duration;
    let chaos = chaos::run(plan, &mut masters, &watcher, at.admin, origin, until)?;
    soak_load.stop.cancel();
    wind_down(&runtime, running)?;
    records.extend(soak_load.take_records());
    // Let the last recovery be seen before the poller stops.
    thread::sleep(Duration::from_millis(500));
    watcher.finish();
    let failovers = monitor::fetch(at.admin).map_or(0, |s| s.failovers);

    let idle_at_end = monitor::wait_idle(at.admin, at.listen, POOL_IDLE, idle_patience);
    let end = monitor::footprint(proxy.pid())?;
    let proxy_exit = proxy.exited().map(|status| status.to_string());
    let elapsed = origin.elapsed();
    let watch = monitor::lock(&watcher.watch);
    let judged = report::judge(plan, &records, &chaos, &watch);
    let figures = report::Figures {
        plan,
        chaos: &chaos,
        watch: &watch,
        judged: &judged,
        elapsed,
        start,
        end,
        idle_at_start,
        idle_at_end,
        failovers,
        load_at_start: &load_at_start,
    };
    let section = report::render(&figures);
    println!("{section}");
    let path = common::report::publish_alone("SOAK.md", "jenkins-ha-proxy soak", &section)?;
    println!("report written to {}", path.display());
    Ok(report::verdict(&figures, proxy_exit))
}

/// Waits for the load's sessions under way to finish (each has its own deadlines).
fn wind_down(
    runtime: &tokio::runtime::Runtime,
    running: tokio::task::JoinHandle<()>,
) -> Result<(), String> {
    runtime
        .block_on(async { tokio::time::timeout(LOAD_WIND_DOWN, running).await })
        .map_err(|_| format!("the load did not stop within {LOAD_WIND_DOWN:?}"))?
        .map_err(|e| format!("the load generator panicked: {e}"))
}

fn start_proxy(
    plan: &Plan,
    at: &Addresses,
    masters: &[MasterProcess],
    dir: &Path,
) -> Result<Child, String> {
    let h = plan.health;
    let mut config = format!(
        r#"[proxy]
listen = "{listen}"
# Idle upstream connections expire soon, so the idle state is reached soon after the load.
pool_idle_timeout = "{pool_idle}ms"
request_timeout = "10s"
[admin]
listen = "{admin}"
[failover]
# Every run starts fresh: no master remembered from an earlier run.
state_file = "off"
drain_timeout = "{drain}ms"
[health]
path = "/login"
interval = "{interval}ms"
timeout = "{timeout}ms"
rise = {rise}
fall = {fall}
[[tcp]]
name = "agents"
listen = "{tcp_listen}"
backend_port = {agent_port}
"#,
        listen = at.listen,
        pool_idle = POOL_IDLE.as_millis(),
        admin = at.admin,
        drain = plan.drain.as_millis(),
        interval = h.interval.as_millis(),
        timeout = h.timeout.as_millis(),
        rise = h.rise,
        fall = h.fall,
        tcp_listen = at.tcp_listen,
        agent_port = masters[0].tcp.port(),
    );
    for master in masters {
        config.push_str(&format!(
            "[[backend]]\nname = \"{}\"\nurl = \"http://{}\"\n",
            master.name, master.http
        ));
    }
    let path = dir.join("jenkins-ha-proxy.toml");
    std::fs::write(&path, config).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let mut command = Command::new(OUR_BINARY);
    command
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env("TOKIO_WORKER_THREADS", "2")
        .env("RUST_LOG", "info");
    let mut proxy = Child::spawn(
        "jenkins-ha-proxy",
        command,
        &dir.join("proxy.log"),
        Stop::Term,
    )?;
    // The first master in file order is elected once every master has been checked.
    let first = masters[0].name.clone();
    child::wait_for_http(&mut proxy, at.listen, "/", PROXY_READY, |reply| {
        reply.header("x-master") == Some(first.as_str())
    })?;
    Ok(proxy)
}
