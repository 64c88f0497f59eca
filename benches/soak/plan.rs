//! What a soak run does: how long, how much load of each kind, how often the chaos
//! strikes, the proxy's timings, and the bounds the run is judged by.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common;

/// Health checks of the generated config: short, so that a fault is acted on within
/// a second, but far above a loopback check's latency even on a loaded machine.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    pub seed: u64,
    /// Load without chaos before the start measurement (pools, runtime, allocator).
    pub warm_up: Duration,
    /// Load with chaos.
    pub duration: Duration,
    pub masters: usize,
    pub health: Health,
    /// `failover.drain_timeout`: sessions on a demoted master are cut this long after.
    pub drain: Duration,
    /// Requests/s on pooled keep-alive connections, and each on a new connection.
    pub keep_alive_rate: u32,
    pub fresh_rate: u32,
    /// Concurrent workers, each running one session after another.
    pub streamers: usize,
    pub websockets: usize,
    pub tcp_sessions: usize,
    /// Largest `/bytes` download.
    pub max_download: u64,
    /// Time between two chaos actions, and until an action is undone, drawn uniformly.
    pub action_gap: (Duration, Duration),
    pub recovery_after: (Duration, Duration),
    /// Bounds the run is judged by.
    pub max_no_master: Duration,
    pub fd_slack: i64,
}

impl Plan {
    pub fn from_env() -> Plan {
        let smoke = common::smoke();
        let health = Health {
            interval: Duration::from_millis(250),
            timeout: Duration::from_millis(200),
            rise: 2,
            fall: 2,
        };
        let full = Plan {
            smoke,
            seed: env_u64("SOAK_SEED").unwrap_or_else(clock_seed),
            warm_up: Duration::from_secs(5),
            duration: Duration::from_secs(env_u64("SOAK_SECS").unwrap_or(300)),
            masters: 3,
            health,
            drain: Duration::from_secs(1),
            keep_alive_rate: 150,
            fresh_rate: 40,
            streamers: 4,
            websockets: 4,
            tcp_sessions: 4,
            max_download: 4 << 20,
            action_gap: (Duration::from_secs(3), Duration::from_secs(8)),
            recovery_after: (Duration::from_secs(1), Duration::from_secs(5)),
            max_no_master: no_master_bound(health),
            fd_slack: 8,
        };
        let plan = if smoke {
            Plan {
                warm_up: Duration::from_secs(2),
                duration: Duration::from_secs(env_u64("SOAK_SECS").unwrap_or(15)),
                keep_alive_rate: 50,
                fresh_rate: 10,
                streamers: 2,
                websockets: 2,
                tcp_sessions: 2,
                max_download: 512 << 10,
                action_gap: (Duration::from_millis(1500), Duration::from_secs(3)),
                recovery_after: (Duration::from_millis(800), Duration::from_secs(2)),
                ..full
            }
        } else {
            full
        };
        Plan {
            max_no_master: env_u64("SOAK_MAX_NO_MASTER_MS")
                .map_or(plan.max_no_master, Duration::from_millis),
            ..plan
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "soak ({}): seed {} (SOAK_SEED), {} s of chaos after {} s of warm-up, {} masters; load {} req/s keep-alive + {} req/s new connections, {} streaming, {} WebSocket and {} TCP workers",
            if self.smoke { "smoke" } else { "full" },
            self.seed,
            self.duration.as_secs(),
            self.warm_up.as_secs(),
            self.masters,
            self.keep_alive_rate,
            self.fresh_rate,
            self.streamers,
            self.websockets,
            self.tcp_sessions,
        )
    }
}

/// The chaos never leaves the pool without a master that can take over, so "no
/// active master" should not be seen at all; the bound allows one full hang
/// detection (timeout x fall + interval) twice over, plus a poll period.
fn no_master_bound(health: Health) -> Duration {
    (health.timeout * health.fall + health.interval) * 2 + Duration::from_millis(100)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// xorshift64*: small, seeded, good enough to pick actions and delays. Not a new
/// crate for a few hundred draws.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // The state must not be 0; mix the seed so nearby seeds differ at once.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[low, high]`.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.below(span + 1))
    }
}
