//! Enough of Jenkins' JSON API for active-active mode's load pollers, with numbers a
//! test (or the demo) sets at run time through [`SampleLoad`]:
//! - `/computer/api/json`: `busyExecutors` (running builds) and `computer`: the
//!   built-in node and one online agent per agent set.
//! - `/queue/api/json`: `items`, one per queued build.
//!
//! While not readable ([`SampleLoad::set_readable`]) both answer 500, as a broken
//! Jenkins would.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The two paths: the proxy's own calls, not client traffic.
pub(super) fn is_api(path: &str) -> bool {
    matches!(path, "/computer/api/json" | "/queue/api/json")
}

/// The load a sample master reports. Starts at zero, readable.
#[derive(Debug)]
pub struct SampleLoad {
    builds: AtomicU64,
    queued: AtomicU64,
    agents: AtomicU64,
    readable: AtomicBool,
}

impl Default for SampleLoad {
    fn default() -> SampleLoad {
        SampleLoad {
            builds: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            agents: AtomicU64::new(0),
            readable: AtomicBool::new(true),
        }
    }
}

impl SampleLoad {
    /// Running builds (busy executors), queued items, online agents.
    pub fn set(&self, builds: u64, queued: u64, agents: u64) {
        self.builds.store(builds, Ordering::SeqCst);
        self.queued.store(queued, Ordering::SeqCst);
        self.agents.store(agents, Ordering::SeqCst);
    }

    /// Their sum, as the proxy computes it.
    pub fn total(&self) -> u64 {
        [&self.builds, &self.queued, &self.agents]
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .sum()
    }

    /// False: the two endpoints answer 500.
    pub fn set_readable(&self, readable: bool) {
        self.readable.store(readable, Ordering::SeqCst);
    }

    /// The `/computer/api/json` answer; None while not readable.
    pub(super) fn computers_json(&self) -> Option<String> {
        if !self.readable.load(Ordering::SeqCst) {
            return None;
        }
        let agent = r#",{"_class":"hudson.slaves.SlaveComputer","offline":false}"#;
        let agents = agent.repeat(self.agents.load(Ordering::SeqCst) as usize);
        Some(format!(
            r#"{{"_class":"hudson.model.ComputerSet","busyExecutors":{},"computer":[{{"_class":"hudson.model.Hudson$MasterComputer","offline":false}}{agents}]}}"#,
            self.builds.load(Ordering::SeqCst)
        ))
    }

    /// The `/queue/api/json` answer; None while not readable.
    pub(super) fn queue_json(&self) -> Option<String> {
        if !self.readable.load(Ordering::SeqCst) {
            return None;
        }
        let queued = self.queued.load(Ordering::SeqCst);
        let items: Vec<String> = (0..queued).map(|id| format!(r#"{{"id":{id}}}"#)).collect();
        Some(format!(
            r#"{{"_class":"hudson.model.Queue","items":[{}]}}"#,
            items.join(",")
        ))
    }
}
