//! `cargo bench --bench tls`: HTTPS on the client side. jenkins-ha-proxy (rustls, ring)
//! next to HAProxy (OpenSSL) with the same ECDSA P-256 certificate, the same fast
//! upstream (clear text), in the same run, alternating:
//! - keep-alive requests/s and p99 at -c64 (`wrk https://`);
//! - new TLS connections per second: wrk with `Connection: close`, so each request is a
//!   full handshake (wrk offers no session to resume; HAProxy's session cache and
//!   tickets are off, and ours issues no tickets);
//! - RSS per idle TLS connection: N clients complete a handshake and one request, then
//!   stay open.
//!
//! `BENCH_SMOKE=1`: a second per load, our proxy only, no HAProxy needed (CI; needs wrk
//! only for the load rows, which it skips without it). `BENCH_RUNS=N`: runs per row.

#[path = "../common/mod.rs"]
mod common;
mod idle;
#[path = "../throughput/upstream.rs"]
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use common::child::{self, Child, Stop};
use common::peers::{self, Checks, ProxyKind, ProxySpec};
use common::report::{self, Table};
use common::wrk::{self, Measured};

/// The certificate and key both proxies serve, and the CA clients trust.
struct Certificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    /// Certificate then key, as HAProxy's `crt` wants them.
    combined_file: PathBuf,
    ca_pem: String,
}

struct Target {
    label: &'static str,
    addr: SocketAddr,
    child: Child,
}

/// A load row: its name, connections and keep-alive.
const LOADS: [(&str, usize, bool); 2] = [
    ("keep-alive, -c64", 64, true),
    ("new TLS connection per request, -c64", 64, false),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(upstream::ARG) {
        return upstream::main(&args[1..]);
    }
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tls bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), String> {
    let smoke = common::smoke();
    let runs = common::runs(if smoke { 1 } else { 3 });
    let duration = Duration::from_secs(if smoke { 1 } else { 10 });
    let idle_count = if smoke { 200 } else { 5_000 };
    common::sys::raise_nofile(65_536).map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?;
    let load_at_start = report::loadavg();
    let dir = report::bench_dir().join("tls");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let certificate = certificate(&dir)?;
    let (_upstream, primary, backup) = upstream::spawn(&dir)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut targets = vec![start_ours(&certificate, &dir, primary, backup, workers)?];
    let mut missing = Vec::new();
    if !smoke {
        match start_haproxy(&certificate, &dir, primary, backup, workers) {
            Ok(target) => targets.push(target),
            Err(why) => missing.push(format!("HAProxy: {why}")),
        }
    }
    let use_wrk = peers::on_path("wrk");
    let mut results: Vec<Vec<Vec<Measured>>> = vec![vec![Vec::new(); LOADS.len()]; targets.len()];
    if use_wrk {
        for round in 0..runs {
            for (l, (name, connections, keep_alive)) in LOADS.iter().enumerate() {
                for (t, target) in targets.iter().enumerate() {
                    let url = format!("https://{}/", target.addr);
                    let measured = wrk::run(&url, *connections, duration, *keep_alive)?;
                    println!(
                        "round {}/{runs} {:<18} {name:<40} {:>9.0} req/s  p99 {:>7.2} ms  errors {}",
                        round + 1,
                        target.label,
                        measured.rps,
                        measured.p99_ms,
                        measured.errors
                    );
                    results[t][l].push(measured);
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    } else {
        missing.push("wrk is not installed: no load rows".to_owned());
    }
    let mut idle = Vec::new();
    for target in &targets {
        println!("{}: {idle_count} idle TLS connections", target.label);
        idle.push(idle::measure(
            target.addr,
            target.child.pid(),
            idle_count,
            &certificate.ca_pem,
        ));
    }
    let section = render(
        &load_at_start,
        &targets,
        &missing,
        &results,
        &idle,
        runs,
        duration,
    );
    println!("{section}");
    let path = report::publish("tls", &section)?;
    println!("report written to {}", path.display());
    Ok(())
}

/// A CA and a server certificate for localhost and 127.0.0.1 (ECDSA P-256, rcgen's
/// default, as certbot issues by default since 2.0), written to `dir`.
fn certificate(dir: &Path) -> Result<Certificate, String> {
    let failed = |e: rcgen::Error| format!("making the test certificate: {e}");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench CA");
    let ca_key = rcgen::KeyPair::generate().map_err(failed)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(failed)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(failed)?;
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.signed_by(&key, &issuer).map_err(failed)?;
    let write = |name: &str, text: &str| -> Result<PathBuf, String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    };
    Ok(Certificate {
        cert_file: write("server.pem", &cert.pem())?,
        key_file: write("server.key", &key.serialize_pem())?,
        combined_file: write("haproxy.pem", &(cert.pem() + &key.serialize_pem()))?,
        ca_pem: ca_cert.pem(),
    })
}

fn spec(
    kind: ProxyKind,
    primary: SocketAddr,
    backup: SocketAddr,
    workers: usize,
) -> Result<ProxySpec, String> {
    Ok(ProxySpec {
        kind,
        listen: child::free_port([127, 0, 0, 1])?,
        primary,
        backup,
        workers,
        checks: Checks::DEFAULT,
    })
}

/// `dir/name`, created.
fn subdir(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).map_err(|e| format!("creating {}: {e}", sub.display()))?;
    Ok(sub)
}

fn start_ours(
    certificate: &Certificate,
    dir: &Path,
    primary: SocketAddr,
    backup: SocketAddr,
    workers: usize,
) -> Result<Target, String> {
    let spec = spec(ProxyKind::Ours, primary, backup, workers)?;
    let dir = subdir(dir, "ours")?;
    let extra = format!(
        "[proxy.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        certificate.cert_file.display(),
        certificate.key_file.display()
    );
    let (command, stop) = peers::ours(&spec, &dir, &extra)?;
    started(
        "jenkins-ha-proxy",
        spec.listen,
        command,
        stop,
        &dir,
        certificate,
    )
}

fn start_haproxy(
    certificate: &Certificate,
    dir: &Path,
    primary: SocketAddr,
    backup: SocketAddr,
    workers: usize,
) -> Result<Target, String> {
    if !ProxyKind::HaproxyClassic.installed() {
        return Err("not installed".to_owned());
    }
    let spec = spec(ProxyKind::HaproxyClassic, primary, backup, workers)?;
    let dir = subdir(dir, "haproxy")?;
    // The clear-text config of the throughput bench, with TLS on the bind line; no
    // session cache and no tickets, so every new connection is a full handshake.
    let text = peers::haproxy_config(&spec)
        .replacen(
            "global\n",
            "global\n    tune.ssl.cachesize 0\n    ssl-default-bind-options no-tls-tickets\n",
            1,
        )
        .replacen(
            &format!("bind {}\n", spec.listen),
            &format!(
                "bind {} ssl crt {} alpn h2,http/1.1\n",
                spec.listen,
                certificate.combined_file.display()
            ),
            1,
        );
    let config = dir.join("haproxy.cfg");
    std::fs::write(&config, text).map_err(|e| format!("writing {}: {e}", config.display()))?;
    let mut command = Command::new("haproxy");
    command.arg("-db").arg("-f").arg(&config);
    started(
        "HAProxy",
        spec.listen,
        command,
        Stop::Term,
        &dir,
        certificate,
    )
}

/// Starts `command` and waits until an HTTPS request through it succeeds.
fn started(
    label: &'static str,
    addr: SocketAddr,
    command: Command,
    stop: Stop,
    dir: &Path,
    certificate: &Certificate,
) -> Result<Target, String> {
    let mut child = Child::spawn(label, command, &dir.join("proxy.log"), stop)?;
    child::wait_for_port(&mut child, addr, Duration::from_secs(20))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match idle::one_request(addr, &certificate.ca_pem) {
            Ok(()) => break,
            Err(error) if std::time::Instant::now() > deadline => {
                return Err(format!("{label} does not answer over https: {error}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    Ok(Target { label, addr, child })
}

fn render(
    load_at_start: &str,
    targets: &[Target],
    missing: &[String],
    results: &[Vec<Vec<Measured>>],
    idle: &[Result<idle::Idle, String>],
    runs: usize,
    duration: Duration,
) -> String {
    let median_of = |t: usize, l: usize, f: fn(&Measured) -> f64| {
        let values: Vec<f64> = results[t][l].iter().map(f).collect();
        report::median(&values)
    };
    let haproxy = targets.iter().position(|t| t.label == "HAProxy");
    let mut table = Table::new(&[
        "proxy",
        "keep-alive req/s (median)",
        "p99 ms",
        "vs HAProxy",
        "new TLS connections/s",
        "vs HAProxy",
        "idle TLS connection",
    ]);
    for (t, target) in targets.iter().enumerate() {
        let ratio = |l: usize| match (haproxy, median_of(t, l, |m| m.rps)) {
            (Some(h), Some(ours)) if h != t => median_of(h, l, |m| m.rps)
                .map_or("-".to_owned(), |theirs| format!("{:.2}x", ours / theirs)),
            _ => "-".to_owned(),
        };
        let number = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.0}"));
        let idle_cell = match &idle[t] {
            Ok(idle) => idle.describe(),
            Err(error) => format!("failed: {error}"),
        };
        table.row(vec![
            target.label.to_owned(),
            number(median_of(t, 0, |m| m.rps)),
            median_of(t, 0, |m| m.p99_ms).map_or("-".to_owned(), |v| format!("{v:.2}")),
            ratio(0),
            number(median_of(t, 1, |m| m.rps)),
            ratio(1),
            idle_cell,
        ]);
    }
    let mut text = format!(
        "## TLS on the client side\n\n`cargo bench --bench tls`: {runs} run(s) x {duration:?} per row, \
         wrk -t1 over https, {} worker(s) per proxy; ECDSA P-256 certificate, TLS 1.3 \
         (what wrk's OpenSSL and both servers choose). Load average at start: {load_at_start}.\n\n",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    );
    text.push_str(&table.render());
    for line in missing {
        text.push_str(&format!("\n- not measured: {line}"));
    }
    text.push('\n');
    text
}
