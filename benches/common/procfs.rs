//! CPU time and resident memory of a process and its children, from /proc.
//!
//! nginx runs a master and worker processes, so every figure is summed over the
//! process tree. (RSS sums count shared pages once per process: for nginx that
//! overstates a little, which the report says.)

use std::fs;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::sys::clock_ticks_per_second;

/// Resource use of a process tree at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS), KiB.
    pub hwm_kib: u64,
    pub processes: usize,
}

impl Usage {
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_ticks as f64 / clock_ticks_per_second() as f64
    }
}

/// `pid` and its direct children (enough for nginx's master and workers).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if stat_fields(child).is_ok_and(|f| f.get(1).and_then(|p| p.parse().ok()) == Some(pid)) {
            pids.push(child);
        }
    }
    pids
}

/// Usage summed over `pid` and its children.
pub fn usage(pid: u32) -> io::Result<Usage> {
    let mut total = Usage::default();
    for member in tree(pid) {
        match one(member) {
            Ok(usage) => {
                total.cpu_ticks += usage.cpu_ticks;
                total.rss_kib += usage.rss_kib;
                total.hwm_kib += usage.hwm_kib;
                total.processes += 1;
            }
            // A child that just exited is not an error; the root missing is.
            Err(error) if member == pid => return Err(error),
            Err(_) => {}
        }
    }
    Ok(total)
}

fn one(pid: u32) -> io::Result<Usage> {
    let fields = stat_fields(pid)?;
    // Fields after "(comm)": index 0 is field 3 (state); utime is field 14, stime 15.
    let tick = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(Usage {
        cpu_ticks: tick(11) + tick(12),
        rss_kib: status_kib(&status, "VmRSS:"),
        hwm_kib: status_kib(&status, "VmHWM:"),
        processes: 1,
    })
}

/// The fields of /proc/<pid>/stat after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> io::Result<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// Samples the RSS of a process tree in the background; `finish` returns the peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<u64>,
}

/// A sampler never runs longer than this, even if `finish` is never called.
const SAMPLER_LIMIT: Duration = Duration::from_secs(600);

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let started = Instant::now();
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) && started.elapsed() < SAMPLER_LIMIT {
                if let Ok(usage) = usage(pid) {
                    peak = peak.max(usage.rss_kib);
                }
                thread::sleep(every);
            }
            peak
        });
        RssSampler { stop, handle }
    }

    /// Peak RSS seen, KiB.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}
