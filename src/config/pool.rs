//! The validated `[pool]` table: how the masters share traffic.

use std::time::Duration;

/// `pool.load_interval` when it is left out.
pub const DEFAULT_LOAD_INTERVAL: Duration = Duration::from_secs(5);
/// `pool.cookie_name` when it is left out.
pub const DEFAULT_COOKIE_NAME: &str = "JHP_REPLICA";
/// Shortest `pool.load_interval`: two REST calls per replica each time.
pub const MIN_LOAD_INTERVAL: Duration = Duration::from_millis(100);

/// `[pool]`: every key has a default; without the table the proxy is active/passive.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// `mode`: one master at a time (default), or every healthy one.
    pub mode: PoolMode,
    /// `load_interval`: how often each replica's load is read (active-active only).
    /// Default [`DEFAULT_LOAD_INTERVAL`], at least [`MIN_LOAD_INTERVAL`].
    pub load_interval: Duration,
    /// `cookie_name`: the cookie that keeps a browser session on its replica
    /// (active-active only). Default [`DEFAULT_COOKIE_NAME`]; an RFC 6265 token.
    pub cookie_name: String,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            mode: PoolMode::ActivePassive,
            load_interval: DEFAULT_LOAD_INTERVAL,
            cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
        }
    }
}

impl PoolConfig {
    pub fn active_active(&self) -> bool {
        self.mode == PoolMode::ActiveActive
    }
}

/// `pool.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// One master receives traffic at a time: masters on one shared JENKINS_HOME.
    ActivePassive,
    /// Every healthy, enabled master receives traffic: replicated controllers that
    /// coordinate among themselves (CloudBees CI High Availability), never plain
    /// Jenkins masters on one home.
    ActiveActive,
}

impl PoolMode {
    /// The value in the file, `/status` `mode` and the summary (a public contract).
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::ActivePassive => "active-passive",
            PoolMode::ActiveActive => "active-active",
        }
    }
}

/// What `check` prints (on stderr) for an active-active file, and the daemon logs.
pub const ACTIVE_ACTIVE_WARNING: &str = "pool.mode = \"active-active\" sends traffic to every healthy master at once: use it only in front of replicated controllers (CloudBees CI High Availability), never in front of plain Jenkins masters on one JENKINS_HOME, which it would corrupt";
