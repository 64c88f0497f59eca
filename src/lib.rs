//! jenkins-ha-proxy: an active/passive high-availability reverse proxy for Jenkins
//! masters that share one JENKINS_HOME.
//!
//! ```text
//!   SIGHUP / admin POST            probes (one task per master)      promoter (fence, reload/start)
//!          |                                  |                                |
//!          v                                  v                                v
//!   config --> [ owner task: election rules (pure) + readiness ] <-- "connect failed on live traffic"
//!                |  (the only writer of election state)
//!                v  watch::Sender<Arc<Snapshot>>  (active master, promotion, per-master status)
//!     +----------+-----------+--------------+-------------+-----------------+
//!     |                      |              |             |                 |
//!  HTTP proxy           TCP listeners    admin:       drain of the      state file,
//!  (reads; holds during (follow the      /status,     demoted master    metrics
//!   a promotion)         active master)  /metrics, /  (on change)       (on change)
//! ```
//!
//! Threads: the owner task, probes, admin listener, `[[tcp]]` listeners, drain, state
//! file and metrics run on the main (multi-threaded) runtime. Client HTTP connections
//! are served by one proxy worker thread per core, each running its own
//! single-threaded runtime with its own accept loop on the shared listening socket; a
//! connection, its requests, the upstream connections they open (pooled per worker)
//! and its tunnels all stay on that worker, so a request involves no cross-thread
//! wakeup. Workers share only the snapshot (read), the owner's inbox, metrics and the
//! `max_connections` limit.
//!
//! The invariant every module serves: at most one master receives traffic at any
//! moment, and never one that is known to be down.
//!
//! Modules, one job each:
//! - [`config`]: TOML schema, validation, errors naming file/line/key.
//! - [`election`]: the pure election rules (no I/O, no clock), tested exhaustively.
//! - [`owner`]: the task that owns election state, applies events, publishes snapshots;
//!   its `readiness` part moves traffic only to a master made ready (promotion).
//! - [`routing`]: the immutable [`routing::Snapshot`] and the read handle over it.
//! - [`health`]: heartbeat probes, one task per master.
//! - [`upstream`]: connections to masters: connect with deadline, a small idle pool per proxy
//!   worker, per-master caps on connections and on connects in flight; a request that
//!   must connect also takes a connection given back meanwhile.
//! - [`drain`]: per-master connection gauges, and closing what is left on a demoted master.
//! - [`fd_limit`]: the open-file limit: raised at start-up; a reserve kept from clients
//!   for the admin API and the health checks; running out of descriptors is logged and
//!   never blamed on a master.
//! - [`tunnel`]: byte pipes for upgraded connections and TCP forwards, with idle timeout.
//! - [`promotion`]: fence the old master, reload or start the new one, wait until ready.
//! - [`proxy`]: the client-facing HTTP/1.1 + h2c listener (one worker thread per core) and request forwarding;
//!   its `framing` guard reads each HTTP/1 stream alongside hyper to refuse requests
//!   whose length is stated two ways.
//! - [`tcp`]: raw TCP listeners (agent port) that follow the active master.
//! - [`metrics`]: Prometheus metrics, fed by the request path and by snapshots.
//! - [`commands`]: fence/start/hook commands: no shell, placeholders, timeout.
//! - [`jenkins`]: the Jenkins REST calls promotion needs (quietDown, reload, ...).
//! - [`admin`]: the admin listener: `/status`, `/metrics`, the status page, control calls.
//! - [`daemon`]: wires it all together: [`daemon::run`] takes bound listeners and a shutdown future.
//! - [`cli`]: the command line (`run`, `check`, `status`, `demo`); `main.rs` only calls it.
//! - [`state`]: the state file that remembers the active master across restarts.
//! - [`small_file`]: reads the small files the config names (state, tokens): regular
//!   files only, never blocking on a FIFO or device, bounded in size.
//! - [`systemd`]: sd_notify readiness, reload and watchdog messages.
//! - [`sample`]: a sample Jenkins-like master, used by `demo`, tests and benches.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod drain;
pub mod election;
pub mod fd_limit;
pub mod health;
pub mod jenkins;
pub mod metrics;
pub mod owner;
pub mod promotion;
pub mod proxy;
pub mod routing;
pub mod sample;
pub mod small_file;
pub mod state;
pub mod systemd;
pub mod tcp;
pub mod tunnel;
pub mod upstream;
