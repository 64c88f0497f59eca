//! What a throughput run does: the full bench, or the few-second smoke run for CI.

use std::net::SocketAddr;
use std::time::Duration;

use super::{loadgen, Measured};
use crate::common::{self, peers};
use peers::ProxyKind;

/// One load shape.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub connections: usize,
    pub keep_alive: bool,
}

const FULL_SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "keep-alive, -c64",
        connections: 64,
        keep_alive: true,
    },
    Scenario {
        name: "keep-alive, -c256",
        connections: 256,
        keep_alive: true,
    },
    Scenario {
        name: "no keep-alive, -c64",
        connections: 64,
        keep_alive: false,
    },
];

#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    pub runs: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub pause: Duration,
    pub scenarios: Vec<Scenario>,
    /// Proxies to measure, in the order runs alternate.
    pub proxies: Vec<ProxyKind>,
    /// Worker threads of every proxy (ours, HAProxy nbthread, nginx workers).
    pub workers: usize,
    /// wrk when installed, else the Rust generator.
    pub use_wrk: bool,
    pub stream_size: u64,
    pub slow_rate: u64,
    pub slow_duration: Duration,
    pub chunks: u64,
    pub chunk_delay_ms: u64,
    pub idle_connections: usize,
}

impl Plan {
    pub fn from_env() -> Plan {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let use_wrk = peers::on_path("wrk");
        if common::smoke() {
            return Plan {
                smoke: true,
                runs: common::runs(1),
                duration: Duration::from_secs(1),
                warmup: Duration::from_secs(1),
                pause: Duration::from_millis(200),
                scenarios: vec![FULL_SCENARIOS[0], FULL_SCENARIOS[2]],
                proxies: vec![ProxyKind::Ours],
                workers,
                use_wrk,
                stream_size: 64 << 20,
                slow_rate: 8 << 20,
                slow_duration: Duration::from_secs(1),
                chunks: 5,
                chunk_delay_ms: 20,
                idle_connections: 500,
            };
        }
        Plan {
            smoke: false,
            runs: common::runs(3),
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            pause: Duration::from_secs(1),
            scenarios: FULL_SCENARIOS.to_vec(),
            proxies: vec![ProxyKind::Ours, ProxyKind::HaproxyClassic, ProxyKind::Nginx],
            workers,
            use_wrk,
            stream_size: 1 << 30,
            slow_rate: 8 << 20,
            slow_duration: Duration::from_secs(4),
            chunks: 20,
            chunk_delay_ms: 50,
            idle_connections: 10_000,
        }
    }

    pub fn tool(&self) -> &'static str {
        if self.use_wrk {
            "wrk -t1 --latency"
        } else {
            "the bench's Rust load generator (wrk not installed), 1 thread"
        }
    }

    /// Runs one load of `scenario` against `addr` for `duration`.
    pub fn load(
        &self,
        scenario: &Scenario,
        addr: SocketAddr,
        duration: Duration,
    ) -> Result<Measured, String> {
        let load = loadgen::Load {
            addr,
            connections: scenario.connections,
            duration,
            keep_alive: scenario.keep_alive,
        };
        if self.use_wrk {
            let url = format!("http://{}/", load.addr);
            common::wrk::run(&url, load.connections, load.duration, load.keep_alive)
        } else {
            Ok(loadgen::run(load))
        }
    }

    pub fn describe(&self, nofile: u64) -> String {
        format!(
            "throughput bench ({}): {} run(s) x {:?} per configuration, load by {}, {} worker(s) per proxy, RLIMIT_NOFILE {nofile}",
            if self.smoke { "smoke" } else { "full" },
            self.runs,
            self.duration,
            self.tool(),
            self.workers,
        )
    }
}
