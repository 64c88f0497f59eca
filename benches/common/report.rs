//! Markdown output: tables, the machine header, and `target/bench/REPORT.md`, which
//! holds the latest section of each bench (throughput, failover) under one header.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A Markdown table built row by row.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut text = line(&self.header);
        text.push_str(&line(&vec!["---".to_owned(); self.header.len()]));
        for row in &self.rows {
            text.push_str(&line(row));
        }
        text
    }
}

/// Median of `values` (NaN-free); None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// `median (min–max)` of the values, formatted by `fmt`; "–" when empty.
pub fn spread(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    let Some(mid) = median(values) else {
        return "–".to_owned();
    };
    if values.len() < 2 {
        return fmt(mid);
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if fmt(min) == fmt(max) {
        fmt(mid)
    } else {
        format!("{} ({}–{})", fmt(mid), fmt(min), fmt(max))
    }
}

/// The `target` directory this bench binary was built into (…/target/release/deps/x).
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// `target/bench`, where reports, configs and logs go.
pub fn bench_dir() -> PathBuf {
    target_dir().join("bench")
}

/// Writes this bench's section to `target/bench/<name>.md`, then rebuilds
/// `target/bench/REPORT.md` from the machine header and every section present.
/// Returns the REPORT.md path.
pub fn publish(name: &str, section: &str) -> Result<PathBuf, String> {
    let dir = bench_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    write(&dir.join(format!("{name}.md")), section)?;
    let mut report = format!("# jenkins-ha-proxy benchmarks\n\n{}\n", machine());
    for part in ["throughput", "tls", "failover"] {
        if let Ok(text) = fs::read_to_string(dir.join(format!("{part}.md"))) {
            report.push_str(&text);
            report.push('\n');
        }
    }
    let path = dir.join("REPORT.md");
    write(&path, &report)?;
    Ok(path)
}

/// Writes a report of its own, `target/bench/<file>` (e.g. the soak's `SOAK.md`),
/// with the machine header; REPORT.md is left alone. Returns the path.
pub fn publish_alone(file: &str, title: &str, section: &str) -> Result<PathBuf, String> {
    let dir = bench_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(file);
    write(&path, &format!("# {title}\n\n{}\n{section}", machine()))?;
    Ok(path)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The machine the numbers come from.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "- Machine: {cores} cores, {model}, Linux {}",
        kernel.trim()
    );
    let _ = writeln!(text, "- Report written: {}", utc_now());
    text
}

/// Now as `YYYY-MM-DD HH:MM UTC`, without a date crate.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The 1, 5 and 15-minute load averages, e.g. `0.52 0.61 0.40`.
pub fn loadavg() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A report line saying how busy the machine was, since peers share its cores.
pub fn background(at_start: &str) -> String {
    format!(
        "- Machine load (1/5/15-min load average): {at_start} at the start, {} at the end; anything above 0 is other work on the same cores\n",
        loadavg()
    )
}

/// Milliseconds with one decimal, e.g. `2.7 ms`.
pub fn ms(value: f64) -> String {
    format!("{value:.1} ms")
}

/// MiB from KiB with one decimal.
pub fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}
