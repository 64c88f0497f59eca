//! Watching the proxy: `/status` polled every 50 ms (who is active, who is healthy,
//! what is still open; the longest time with no active master; every change of the
//! active master), and its resident memory and open file descriptors from /proc.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{http, procfs};

pub const POLL_EVERY: Duration = Duration::from_millis(50);
const POLL_TIMEOUT: Duration = Duration::from_millis(1000);

/// What `/status` said, reduced to what the bench uses.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub active: Option<String>,
    pub backends: Vec<Backend>,
    pub failovers: u64,
    /// `cause` of the newest transition.
    pub last_cause: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Backend {
    pub name: String,
    pub healthy: bool,
    /// HTTP connections open to it now, busy or idle in the proxy's pool.
    pub http: u64,
    /// WebSocket tunnels and TCP forwards open to it now.
    pub sessions: u64,
}

impl Status {
    pub fn healthy(&self, name: &str) -> bool {
        self.backends.iter().any(|b| b.name == name && b.healthy)
    }

    /// Nothing open to any master but the one pooled connection the nudge of
    /// [`wait_idle`] left: no request, tunnel or forward.
    pub fn settled(&self) -> bool {
        self.backends.iter().all(|b| b.sessions == 0)
            && self.backends.iter().map(|b| b.http).sum::<u64>() <= 1
    }
}

pub fn fetch(admin: SocketAddr) -> Result<Status, String> {
    let reply = http::get(admin, "/status", POLL_TIMEOUT)
        .map_err(|e| format!("GET /status on {admin}: {e}"))?;
    if reply.status != 200 {
        return Err(format!("GET /status on {admin}: HTTP {}", reply.status));
    }
    let json: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("GET /status on {admin}: not JSON: {e}"))?;
    let count = |b: &Value, key: &str| b.get(key).and_then(Value::as_u64).unwrap_or(0);
    let backends = json
        .get("backends")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|b| Backend {
                    name: b["name"].as_str().unwrap_or("").to_owned(),
                    healthy: b["healthy"].as_bool().unwrap_or(false),
                    http: count(b, "open_connections"),
                    sessions: count(b, "tunnels") + count(b, "tcp_connections"),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Status {
        active: json["active"].as_str().map(str::to_owned),
        backends,
        failovers: json["failovers"].as_u64().unwrap_or(0),
        last_cause: json["transitions"][0]["cause"].as_str().map(str::to_owned),
    })
}

/// One change of the active master as the poller saw it (times from the run's start).
#[derive(Debug, Clone)]
pub struct Change {
    pub at: Duration,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cause: String,
}

#[derive(Debug, Default)]
pub struct Watch {
    pub latest: Option<Status>,
    pub polls: u64,
    pub poll_errors: u64,
    pub last_error: Option<String>,
    pub changes: Vec<Change>,
    /// Spans with no active master: (first poll without, first poll with one again).
    pub no_master: Vec<(Duration, Duration)>,
    no_master_since: Option<Duration>,
}

impl Watch {
    pub fn longest_without_master(&self, now: Duration) -> Duration {
        let open = self.no_master_since.map(|since| now.saturating_sub(since));
        self.no_master
            .iter()
            .map(|(from, to)| to.saturating_sub(*from))
            .chain(open)
            .max()
            .unwrap_or_default()
    }

    pub fn total_without_master(&self, now: Duration) -> Duration {
        let open = self.no_master_since.map(|since| now.saturating_sub(since));
        self.no_master
            .iter()
            .map(|(from, to)| to.saturating_sub(*from))
            .chain(open)
            .sum()
    }

    /// Whether no master was active at some poll within `[from, to]`.
    pub fn without_master_during(&self, from: Duration, to: Duration) -> bool {
        let spans = self.no_master.iter().copied();
        let open = self.no_master_since.map(|since| (since, Duration::MAX));
        spans
            .chain(open)
            .any(|(start, end)| start <= to && end >= from)
    }

    fn observe(&mut self, at: Duration, status: Status) {
        let previous = self.latest.as_ref().map(|s| s.active.clone());
        if let Some(previous) = previous {
            if previous != status.active {
                self.changes.push(Change {
                    at,
                    from: previous,
                    to: status.active.clone(),
                    cause: status.last_cause.clone().unwrap_or_default(),
                });
            }
        }
        match (status.active.is_some(), self.no_master_since) {
            (false, None) => self.no_master_since = Some(at),
            (true, Some(since)) => {
                self.no_master.push((since, at));
                self.no_master_since = None;
            }
            _ => {}
        }
        self.latest = Some(status);
    }
}

/// The poller thread and what it has seen.
pub struct Monitor {
    pub watch: Arc<Mutex<Watch>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Monitor {
    pub fn start(admin: SocketAddr, origin: Instant) -> Monitor {
        let watch = Arc::new(Mutex::new(Watch::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, flag) = (Arc::clone(&watch), Arc::clone(&stop));
        let handle = thread::spawn(move || {
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let polled = fetch(admin);
                let at = origin.elapsed();
                {
                    let mut watch = lock(&shared);
                    watch.polls += 1;
                    match polled {
                        Ok(status) => watch.observe(at, status),
                        Err(error) => {
                            watch.poll_errors += 1;
                            watch.last_error = Some(error);
                        }
                    }
                }
                next += POLL_EVERY;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        });
        Monitor {
            watch,
            stop,
            handle: Some(handle),
        }
    }

    pub fn latest(&self) -> Option<Status> {
        lock(&self.watch).latest.clone()
    }

    /// Stops polling; the watch stays readable.
    pub fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.finish();
    }
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resident memory and open descriptors of the proxy at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    pub rss_kib: u64,
    pub fds: u64,
}

/// The fewest open descriptors over a few samples (a health check's socket comes and
/// goes every interval), and the RSS of the last one.
pub fn footprint(pid: u32) -> Result<Footprint, String> {
    let mut fds = u64::MAX;
    let mut rss_kib = 0;
    for _ in 0..8 {
        let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map_err(|e| format!("reading /proc/{pid}/fd: {e}"))?
            .count() as u64;
        fds = fds.min(open);
        rss_kib = procfs::usage(pid)
            .map_err(|e| format!("reading /proc/{pid}: {e}"))?
            .rss_kib;
        thread::sleep(Duration::from_millis(60));
    }
    Ok(Footprint { rss_kib, fds })
}

/// Waits until `/status` shows nothing open to the masters (drains done), but for
/// one pooled connection: the proxy drops expired idle connections only when it
/// next takes one from its pool (it has no reaper), so each check is preceded by one
/// GET after `pool_idle` has passed, which leaves exactly one idle connection behind.
/// False if that state was not reached within `patience`.
pub fn wait_idle(
    admin: SocketAddr,
    proxy: SocketAddr,
    pool_idle: Duration,
    patience: Duration,
) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        thread::sleep(pool_idle + Duration::from_millis(200));
        let _ = http::get(proxy, "/", POLL_TIMEOUT);
        if fetch(admin).is_ok_and(|status| status.settled()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}
