//! What a failover run does: the faults, the proxies, the timeline, the load.

use std::time::Duration;

use crate::common::peers::{Checks, ProxyKind};
use crate::common::{self};

/// What happens to the active master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, restarted on the same address later.
    Kill,
    /// SIGSTOP, SIGCONT later.
    Freeze,
    /// The health path answers 503, 200 again later. Other paths keep answering 200.
    Sick,
    /// SIGKILL of the proxy instance that leads the pool (cluster row only), restarted
    /// later; the load goes through the other instance.
    KillInstance,
}

impl Fault {
    pub fn title(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL of the active master (restarted later)",
            Fault::Freeze => "SIGSTOP of the active master (SIGCONT later)",
            Fault::Sick => "Health path of the active master answers 503 (200 again later)",
            Fault::KillInstance => {
                "SIGKILL of the leading proxy instance (restarted later), load through the other"
            }
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Freeze => "freeze",
            Fault::Sick => "sick",
            Fault::KillInstance => "kill-instance",
        }
    }

    pub fn recovery(self) -> &'static str {
        match self {
            Fault::Kill => "restart",
            Fault::Freeze => "SIGCONT",
            Fault::Sick => "health 200",
            Fault::KillInstance => "restart",
        }
    }

    /// Whether `kind` is measured under this fault: a proxy instance of the pool is
    /// killed only in the cluster row.
    pub fn applies_to(self, kind: ProxyKind) -> bool {
        self != Fault::KillInstance || kind == ProxyKind::OursCluster
    }
}

/// When, from the start of the load, one run injects its fault, recovers, and ends.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub fault_at: Duration,
    pub recover_at: Duration,
    pub end: Duration,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    pub runs: usize,
    pub faults: Vec<Fault>,
    pub proxies: Vec<ProxyKind>,
    /// Ours, and HAProxy "tuned"; HAProxy "classic" keeps the guide's (inter as timeout).
    pub checks: Checks,
    /// From the start of the load, in the first run (see `schedule`).
    pub fault_at: Duration,
    /// From the start of the load, in the first run.
    pub recover_at: Duration,
    /// Length of the load, in the first run.
    pub duration: Duration,
    pub keep_alive_rate: u32,
    pub fresh_rate: u32,
    pub request_timeout: Duration,
    pub workers: usize,
}

impl Plan {
    pub fn from_env() -> Plan {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let full = Plan {
            smoke: false,
            runs: common::runs(3),
            faults: vec![Fault::Kill, Fault::Freeze, Fault::Sick, Fault::KillInstance],
            proxies: vec![
                ProxyKind::Ours,
                ProxyKind::OursCluster,
                ProxyKind::HaproxyClassic,
                ProxyKind::HaproxyTuned,
                ProxyKind::Nginx,
            ],
            checks: Checks::DEFAULT,
            fault_at: Duration::from_secs(3),
            // 10 s of fault: long enough for every proxy's checks to act on a freeze.
            recover_at: Duration::from_secs(13),
            duration: Duration::from_secs(21),
            keep_alive_rate: 200,
            fresh_rate: 50,
            request_timeout: Duration::from_secs(30),
            workers,
        };
        if !common::smoke() {
            return full.filtered();
        }
        Plan {
            smoke: true,
            runs: common::runs(1),
            faults: vec![Fault::Kill],
            proxies: vec![ProxyKind::Ours],
            fault_at: Duration::from_secs(1),
            recover_at: Duration::from_secs(3),
            duration: Duration::from_millis(4500),
            request_timeout: Duration::from_secs(5),
            ..full
        }
    }

    /// `BENCH_FAULTS=kill,freeze,sick,kill-instance` and `BENCH_PROXIES=ours,
    /// ours-cluster,haproxy-classic,haproxy-tuned,nginx` narrow a full run (e.g. to
    /// look at one case).
    fn filtered(mut self) -> Plan {
        if let Some(wanted) = list_var("BENCH_FAULTS") {
            self.faults.retain(|f| wanted.iter().any(|w| w == f.slug()));
        }
        if let Some(wanted) = list_var("BENCH_PROXIES") {
            self.proxies
                .retain(|k| wanted.iter().any(|w| w == super::slug(*k)));
        }
        self
    }

    /// Run `run`'s timeline: the fault moves by `interval / runs` from one run to the
    /// next, so the runs meet the health checks at different phases instead of
    /// repeating one case.
    pub fn schedule(&self, run: usize) -> Schedule {
        let shift = self.checks.interval * run as u32 / self.runs.max(1) as u32;
        Schedule {
            fault_at: self.fault_at + shift,
            recover_at: self.recover_at + shift,
            end: self.duration + shift,
        }
    }

    /// The bound for a frozen master: health timeout x fall + interval.
    pub fn freeze_bound(&self) -> Duration {
        self.checks.timeout * self.checks.fall + self.checks.interval
    }

    /// No request may stall longer than the freeze bound plus 200 ms.
    pub fn stall_bound(&self) -> Duration {
        self.freeze_bound() + Duration::from_millis(200)
    }

    pub fn describe(&self) -> String {
        format!(
            "failover bench ({}): {} run(s) per fault and proxy; load {} req/s keep-alive + {} req/s on new connections for {:?}; fault at {:?}, recovery at {:?}",
            if self.smoke { "smoke" } else { "full" },
            self.runs,
            self.keep_alive_rate,
            self.fresh_rate,
            self.duration,
            self.fault_at,
            self.recover_at,
        )
    }
}

fn list_var(name: &str) -> Option<Vec<String>> {
    let value = std::env::var(name).ok()?;
    Some(value.split(',').map(|v| v.trim().to_owned()).collect())
}
