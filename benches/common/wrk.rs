//! Runs wrk (`-t1 --latency`) and reads its summary.

use std::process::Command;
use std::time::Duration;

/// One load run's result, from wrk or the throughput bench's Rust generator.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Socket errors, timeouts and non-2xx responses.
    pub errors: u64,
}

/// `wrk -t1 -cN -dS --latency [-H 'Connection: close'] URL` (http:// or https://;
/// wrk opens a new TLS session for every connection, so without keep-alive each
/// request is a full handshake).
pub fn run(
    url: &str,
    connections: usize,
    duration: Duration,
    keep_alive: bool,
) -> Result<Measured, String> {
    let mut command = Command::new("wrk");
    command
        .arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency");
    if !keep_alive {
        command.arg("-H").arg("Connection: close");
    }
    command.arg(url);
    let output = command.output().map_err(|e| format!("running wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("wrk failed ({}): {stderr}{text}", output.status));
    }
    parse(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
}

/// Reads requests/s, the 50% and 99% latencies, the request count and the errors
/// (socket errors plus non-2xx/3xx responses).
pub fn parse(text: &str) -> Option<Measured> {
    let mut measured = Measured {
        requests: 0,
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            measured.rps = rest.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("50%") {
            measured.p50_ms = latency_ms(rest.trim())?;
        } else if let Some(rest) = line.strip_prefix("99%") {
            measured.p99_ms = latency_ms(rest.trim())?;
        } else if line.contains(" requests in ") {
            measured.requests = line.split_whitespace().next()?.parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            measured.errors += numbers(rest).iter().sum::<u64>();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            measured.errors += rest.trim().parse::<u64>().ok()?;
        }
    }
    measured.rps.is_finite().then_some(measured)
}

/// `123.45us`, `1.23ms`, `1.02s`, `2.00m` → milliseconds.
fn latency_ms(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        _ => return None,
    };
    Some(number * factor)
}

/// The numbers in `connect 0, read 12, write 0, timeout 3`.
fn numbers(text: &str) -> Vec<u64> {
    text.split(',')
        .filter_map(|part| part.split_whitespace().last()?.parse().ok())
        .collect()
}
