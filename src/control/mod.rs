//! What decides which master gets traffic, and the tasks around that decision.
//!
//! - `election`: the rules (pure): health per master, the active pointer, failback.
//! - `readiness`: the second state machine (pure): traffic reaches the elected master
//!   only once it is ready (promotion), is held for a restarting master, and hot
//!   standbys stay in quiet-down.
//! - `owner`: the task that applies both and alone writes their state; everything else
//!   sends it events.
//! - `routing`: the immutable `Snapshot` the owner publishes, and the read handle.
//! - `health`: the probes; `promotion`: fence, reload or start, wait until healthy.
//!   Both report through types of their own, not the owner's events.
//! - `drain`, `state_file`: followers of the snapshots (close what is left on a
//!   demoted master; remember the active master across restarts).
//! - `jenkins`: the REST calls promotion needs; `commands`: fence, start and hook
//!   commands (no shell, a timeout).
//! - `placement` (pure), `replicas`, `load`: active-active mode: which replica a
//!   request goes to, what a snapshot carries of each replica and what the proxy
//!   counts per replica, and the load pollers (Jenkins' load of each replica, read
//!   every `pool.load_interval`, reported to the owner like the probes).
//! - `cluster`: cluster mode: the etcd client, the pool's keys and rules, the leader's
//!   decisions, and an instance's member task, which the daemon starts in cluster mode).

pub mod cluster;
pub mod commands;
pub mod drain;
pub mod election;
pub mod health;
pub mod jenkins;
pub mod load;
pub mod owner;
pub mod placement;
pub mod promotion;
pub mod readiness;
pub mod replicas;
pub mod routing;
pub mod state_file;
