//! jenkins-ha-proxy: an active/passive high-availability reverse proxy for Jenkins
//! masters that share one JENKINS_HOME.
//!
//! The invariant every module serves: at most one master receives traffic at any
//! moment, and never one that is known to be down (active-active mode, below, keeps
//! only its second half).
//!
//! ```text
//!  SIGHUP, POST /reload (admin)            SIGTERM, SIGINT
//!           |                                    |
//!           v                                    v
//!  [ daemon: run() and its select loop ] -- re-reads the config file; restarts probes,
//!           |                               drain, state file, [[tcp]] listeners
//!           | Control::Reload
//!           v
//!  probes ------ ProbeReport ------> [ owner task ] <-- Switchover, SetDisabled -- admin API
//!  promoter ---- PromotionReport --> [ election (pure) ] <-- connect failed ----- proxy, tcp
//!  quiet-down ask -- QuietState ---> [ readiness (pure)] (answered with the new snapshot)
//!                                    [ the only writer ]
//!                                            |
//!                                            v  watch::Sender<Arc<Snapshot>>
//!     +------------+------------+------------+------------+------------+------------+
//!     |            |            |            |            |            |            |
//!   proxy         tcp         admin        drain      state file    metrics     systemd
//!  (reads per   (reads per   (/status,   (closes what (remembers   (counts     (READY after
//!   request;     forward)     /metrics)   is left on   the active   transitions) the first
//!   holds during                          the demoted) master)                   election)
//!   a promotion)
//! ```
//!
//! The owner starts the promoter tasks and the quiet-down questions itself (readiness
//! asks it to); probes and promoters report to it through their own report types, so
//! they know nothing of the owner. Reloads go through the daemon, which owns the config
//! file and the tasks a reload restarts; the owner receives its part of them.
//!
//! Cluster mode (`[cluster]`) adds one task beside the owner, the pool's member:
//!
//! ```text
//!   etcd  <-- lease, view, acked epoch,    [ member task ] <-- switchover, disable -- admin API
//!         --> pointer, leader, views  -->  [ (leader: the ]  <-- own view (health) -- snapshots
//!                                          [  election)   ]
//!                                           |  Cluster { route, valid_until }    | CheckNow
//!                                           v                                    v
//!                                      [ owner task ] -> snapshot           that master's probe
//! ```
//!
//! The owner then routes by the pool's pointer, once every live instance follows it,
//! and publishes the deadline (`valid_until`) past which the request path sends
//! nothing: this instance's own election only makes the view it publishes.
//!
//! Active-active mode (`[pool] mode = "active-active"`) is for replicated controllers
//! that coordinate among themselves (CloudBees CI High Availability), never for plain
//! masters on one home. There the invariant reads: traffic goes only to masters known
//! to be healthy and enabled, and what is tied to one of them stays there while it is.
//! The election still keeps each master's health; the owner publishes every replica
//! in the snapshot (`Snapshot::replicas`: routable or not, its load), and one more
//! kind of task reports to it:
//!
//! ```text
//!  load pollers -- LoadReport --> [ owner task ] --> snapshot.replicas (routable: up
//!  (one per master, every          (as for probes)     and enabled; load: builds +
//!   pool.load_interval: Jenkins'                        queue + agents, or why not)
//!   /computer and /queue JSON)                                |
//!                                                             v
//!  proxy, tcp --> [ placement (pure) ]: cookie or CLI session -> its replica while
//!                 routable; else least load (+ the proxy's requests in flight, atomics
//!                 on each master), unreadable loads last, ties by file order
//!  drain: a replica that stops taking traffic is drained as a demoted master is
//! ```
//!
//! Threads: the owner task, probes, admin listener, `[[tcp]]` listeners, drain, state
//! file and metrics run on the main (multi-threaded) runtime. Client HTTP connections
//! are served by one proxy worker thread per core, each running its own
//! single-threaded runtime with its own accept loop on the shared listening socket; a
//! connection, its requests, the upstream connections they open (pooled per worker)
//! and its tunnels all stay on that worker, so a request involves no cross-thread
//! wakeup. (A worker that accepts a connection while it serves clearly more than
//! another hands it over once, at the start.) Workers share only the snapshot (read),
//! the owner's inbox, metrics, the `max_connections` limit and their open counts.
//!
//! Modules, in layers from the top; imports point down them and no module tree level
//! has an import circle (`tests/layers.rs` checks both):
//! - `cli`: the command line (`run`, `check`, `status`, `demo`, ...) and the admin
//!   HTTP client; `main.rs` only calls [`cli::main`].
//! - [`daemon`]: [`daemon::run`] takes bound listeners and a shutdown future, starts
//!   everything and runs the select loop; `listeners`, `settings` (config -> runtime
//!   settings), `reload` (all or nothing, typed errors), `signals`.
//! - `proxy`, `tcp`, `admin`: what clients and operators talk to. `proxy`: the
//!   HTTP/1.1 + h2c listener (or HTTPS with h2 by ALPN) on its worker threads (our own
//!   HTTP/1.1 server for the common request, hyper's for the rest), one request's path, the pure decision of what to do when sending fails
//!   (`proxy::retry`), the framing guard, every answer the proxy makes itself, and
//!   (active-active) the affinity cookie. `tcp`: raw TCP forwards (agent port) that
//!   follow the active master. `admin`: `/status`, `/metrics`, the status page, the
//!   control calls; the metrics the request path feeds.
//! - `control`: what decides. [`election`] (the pure rules, tested exhaustively),
//!   `readiness` (pure: a master gets traffic only once ready), `owner` (the task that
//!   applies both and is the only writer), `routing` (the immutable `Snapshot` and the
//!   read handle), `health` (probes), `promotion` (fence, reload or start), `drain` and
//!   `state_file` (snapshot followers), `jenkins` (REST calls), `commands` (fence,
//!   start and hook commands: no shell, with a timeout), [`cluster`] (cluster mode:
//!   the etcd client, the pool's rules, the leader's decisions, an instance's member
//!   task); active-active mode: `placement` (the pure rule), `replicas` (what the
//!   snapshot carries and the proxy counts per replica), `load` (the load pollers).
//! - `upstream`: connections to masters: connect with a deadline (and TLS to an
//!   `https://` master), two HTTP/1.1 clients (`h1`, our own, for the common request:
//!   GET/HEAD/OPTIONS without a body or upgrade, run in the client connection's task
//!   with the body read straight from the socket; hyper's for the rest), an idle pool
//!   per proxy worker holding both kinds apart (`flavor`) with per-master caps, what
//!   is attached to each master (counts and a close switch), the byte pipe of tunnels
//!   and TCP forwards.
//! - `tls`: rustls with its ring provider on both sides: the certificates the proxy
//!   and admin listeners present (read, checked, swapped on reload) and how masters'
//!   certificates are verified (`[upstream_tls]`).
//! - [`config`] (TOML schema, validation, errors naming file, line and key), `sys`
//!   (the open-file limit and its reserve, systemd notifications, reading the small
//!   files the config names) and [`sample`] (a Jenkins-like master for the demo, the
//!   tests and the benches): the bottom, importing nothing else of the crate.
//!
//! The public surface is what `main.rs`, the tests and the benches use: [`cli::main`],
//! [`config`], [`daemon::run`] with [`daemon::Listeners`], [`election`] (for the
//! property tests), [`cluster`] (its etcd client, for the cluster tests) and [`sample`].
#![forbid(unsafe_code)]

mod admin;
pub mod cli;
pub mod config;
mod control;
pub mod daemon;
mod proxy;
pub mod sample;
mod sys;
mod tcp;
mod tls;
mod upstream;

pub use control::{cluster, election};
