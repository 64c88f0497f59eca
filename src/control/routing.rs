//! The published view of the election: an immutable [`Snapshot`] behind a
//! `tokio::sync::watch` channel, and the read handle the request path uses.
//!
//! Written only by the owner task; read by the proxy (which master to send to), the
//! admin API (`/status`) and anything that must react to a change of active master.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::control::election::Health;
use crate::control::placement::{self, Affinity, Candidate, Reason};
use crate::control::replicas::{ReplicaCounters, Replicas};
use crate::upstream::Upstream;

/// A master of the pool: what does not change between snapshots.
#[derive(Debug)]
pub struct Master {
    pub name: String,
    /// `http://host:port`.
    pub url: String,
    /// Host as configured, for `{host}` in commands.
    pub host: String,
    /// How it is made ready before it gets traffic (`standby`).
    pub standby: crate::config::Standby,
    pub start_command: Option<Vec<String>>,
    pub fence_command: Option<Vec<String>>,
    /// Connections to this master (connect, idle pool).
    pub upstream: Upstream,
    /// Wakes this master's probe for a check at once (cluster mode: another instance
    /// found it refusing connections). Notified by the daemon, awaited by the probe.
    pub check_now: tokio::sync::Notify,
    /// Active-active mode: requests in flight and placements, counted by the proxy.
    pub counters: ReplicaCounters,
}

/// A request placed on a replica, counted in its requests in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Master>);

impl InFlight {
    pub fn on(master: &Arc<Master>) -> InFlight {
        master.counters.enter();
        InFlight(Arc::clone(master))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.counters.leave();
    }
}

/// Where [`Snapshot::place`] sends something new, and why (None: active-passive).
#[derive(Debug, Clone)]
pub struct Placed {
    pub master: Arc<Master>,
    pub reason: Option<Reason>,
}

impl Placed {
    /// Counts the placement on its replica (active-active), and returns the master.
    pub fn recorded(self) -> Arc<Master> {
        if let Some(reason) = self.reason {
            self.master.counters.placed(reason);
        }
        self.master
    }
}

/// What the owner knows about one master at the time of a snapshot.
#[derive(Debug, Clone)]
pub struct MasterStatus {
    pub master: Arc<Master>,
    pub health: Health,
    /// Out of the election for maintenance.
    pub disabled: bool,
    /// Its last check said Jenkins is starting (503 "getting ready to work").
    pub starting: bool,
    pub last_check: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Round-trip time of the last completed check (passed or failed).
    pub latency: Option<Duration>,
    pub consecutive_passed: u32,
    pub consecutive_failed: u32,
}

/// The states a master is shown in (`/status` `state`, the `master_state` metric).
pub const STATES: [&str; 4] = ["unknown", "up", "down", "starting"];

impl MasterStatus {
    /// Its state as shown to people and scripts: the health, except that a master
    /// whose last check said Jenkins is starting shows "starting". One of [`STATES`].
    pub fn state(&self) -> &'static str {
        if self.starting {
            "starting"
        } else {
            self.health.as_str()
        }
    }
}

/// One change of the active master, kept for "why did it fail over?".
#[derive(Debug, Clone)]
pub struct TransitionRecord {
    pub at: SystemTime,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    pub cause: Cause,
    /// Steps of the promotion that followed (fence, reload or start, ready, traffic
    /// moved), with timings; empty when none was needed.
    pub steps: Vec<StepRecord>,
}

/// Why the active master changed: the one list of labels that `/status`
/// (`transitions[].cause`), the log and the metrics (`cause` label) show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The first election after start.
    Initial,
    /// The health checks took the active master down.
    HealthCheck,
    /// A connection for a client request was refused.
    ConnectFailed,
    /// `failback = "auto"` returned to an earlier master.
    Failback,
    /// A master came up while none was active.
    Recovered,
    /// No master is healthy any more.
    NoMaster,
    /// Making the elected master ready failed.
    PromotionFailed,
    /// A planned switchover (admin API).
    Switchover,
    /// A master was taken out of the election or put back (admin API).
    Maintenance,
    /// A reload changed the pool.
    Reload,
}

impl Cause {
    /// Every cause, for metrics that must exist at 0 before the first one happens.
    pub const ALL: [Cause; 10] = [
        Cause::Initial,
        Cause::HealthCheck,
        Cause::ConnectFailed,
        Cause::Failback,
        Cause::Recovered,
        Cause::NoMaster,
        Cause::PromotionFailed,
        Cause::Switchover,
        Cause::Maintenance,
        Cause::Reload,
    ];

    /// The label scripts and metrics see (a public contract: never renamed).
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Initial => "initial",
            Cause::HealthCheck => "health_check",
            Cause::ConnectFailed => "connect_failed",
            Cause::Failback => "failback",
            Cause::Recovered => "recovered",
            Cause::NoMaster => "no_master",
            Cause::PromotionFailed => "promotion_failed",
            Cause::Switchover => "switchover",
            Cause::Maintenance => "maintenance",
            Cause::Reload => "reload",
        }
    }

    /// The cause with this label (as [`Cause::as_str`] gives it).
    pub fn from_label(label: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|cause| cause.as_str() == label)
    }

    /// Whether a transition of this cause can demote an active master: the first
    /// election and a recovery from "no master" never do.
    pub fn can_demote(self) -> bool {
        !matches!(self, Cause::Initial | Cause::Recovered)
    }
}

/// One step of a promotion.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub at: SystemTime,
    pub step: String,
    pub ok: bool,
    pub took: Duration,
    pub detail: String,
}

/// A promotion under way: traffic is held until it completes.
#[derive(Debug, Clone)]
pub struct PromotionView {
    /// The master being made ready (or restarting, within `starting_grace`).
    pub to: String,
    /// What traffic waits for, in words.
    pub waiting_for: String,
    pub since: SystemTime,
    /// Set while `require_fence` holds the promotion (fencing failed; retried).
    pub waiting_on_fence: Option<String>,
}

/// How many transitions a snapshot keeps (the `/status` contract asks for at least 20).
pub const TRANSITION_HISTORY: usize = 50;

/// An immutable view of the election, published by the owner task.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases by one whenever what the request path acts on changes: the master
    /// that receives traffic (`active`), the master held traffic waits for
    /// (`promotion`), or (active-active) the replicas that take traffic. Not on
    /// probes, loads, counters or alarms.
    pub generation: u64,
    /// Changes of the active master recorded since start (`transitions` keeps the
    /// last [`TRANSITION_HISTORY`]): followers count the new ones by it.
    pub transition_count: u64,
    /// Index into `masters` of the active master (the one receiving traffic); None
    /// when no master is healthy or one is still being promoted.
    pub active: Option<usize>,
    /// A promotion under way, if any: requests are held meanwhile.
    pub promotion: Option<PromotionView>,
    /// Two-masters-up alarms, for /status.
    pub alarms: Vec<String>,
    /// When the current `active` value (including None) took effect.
    pub active_since: SystemTime,
    /// Number of times an active master was demoted (replaced or lost) since start.
    pub failovers: u64,
    /// File order.
    pub masters: Vec<MasterStatus>,
    /// Oldest first, at most [`TRANSITION_HISTORY`]. Shared between snapshots until it changes.
    pub transitions: Arc<VecDeque<TransitionRecord>>,
    pub started_at: SystemTime,
    /// The failback policy in force (it can change on reload).
    pub failback: crate::config::Failback,
    /// Cluster mode: the pool as this instance sees it; None standalone.
    pub cluster: Option<Arc<ClusterView>>,
    /// Cluster mode: until when the request path may act on this snapshot (the
    /// instance's view, confirmed with etcd, runs out then: fail closed). None: no
    /// limit (standalone).
    pub valid_until: Option<Instant>,
    /// Active-active mode: every replica (file order), routable or not, with its
    /// load; None in active-passive mode.
    pub replicas: Option<Arc<Replicas>>,
}

/// Cluster mode: what `/status`, `/ready` and the metrics show of the pool.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub instance: String,
    pub leader: Option<String>,
    /// The pointer's epoch (0 before the first).
    pub epoch: i64,
    /// Every live instance follows `epoch`: traffic may go to the pointer's master.
    pub open: bool,
    pub etcd_connected: bool,
    /// When this instance's view was last confirmed with etcd.
    pub confirmed_at: Option<SystemTime>,
    /// The live instances: name, the epoch it follows, when it last renewed.
    pub instances: Vec<InstanceView>,
    /// Masters the pool took out of the election (maintenance).
    pub disabled: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    pub name: String,
    pub acked: i64,
    /// RFC 3339, as the instance wrote it.
    pub seen: String,
}

impl Snapshot {
    /// The master that receives traffic now, if any.
    pub fn active_master(&self) -> Option<&Arc<Master>> {
        self.active.map(|index| &self.masters[index].master)
    }

    /// The master a request may be sent to now: [`Snapshot::active_master`], unless
    /// this snapshot's time to act has run out (cluster mode; the one clock read on
    /// the request path, and only there: standalone reads no clock).
    pub fn routable_master(&self) -> Option<&Arc<Master>> {
        if self.expired() {
            return None;
        }
        self.active_master()
    }

    /// Cluster mode: this instance could not confirm its view in time.
    pub fn expired(&self) -> bool {
        self.valid_until
            .is_some_and(|until| Instant::now() >= until)
    }

    /// Whether traffic may go to `master` now: the active master (active-passive), or
    /// a routable replica (active-active).
    pub fn routes_to(&self, master: &Arc<Master>) -> bool {
        let Some(replicas) = &self.replicas else {
            return self
                .active_master()
                .is_some_and(|active| Arc::ptr_eq(active, master));
        };
        (self.masters.iter().zip(&replicas.entries))
            .any(|(status, replica)| replica.routable && Arc::ptr_eq(&status.master, master))
    }

    /// Whether the master at `index` (file order) takes traffic now.
    pub fn takes_traffic(&self, index: usize) -> bool {
        match &self.replicas {
            None => self.active == Some(index),
            Some(replicas) => replicas.entries.get(index).is_some_and(|r| r.routable),
        }
    }

    /// The masters traffic may go to now (file order).
    pub fn routed(&self) -> Vec<Arc<Master>> {
        (0..self.masters.len())
            .filter(|&index| self.takes_traffic(index))
            .map(|index| Arc::clone(&self.masters[index].master))
            .collect()
    }

    /// Whether a request can be sent anywhere now.
    pub fn can_route(&self) -> bool {
        match &self.replicas {
            None => self.routable_master().is_some(),
            Some(replicas) => !self.expired() && replicas.entries.iter().any(|r| r.routable),
        }
    }

    /// The replica (index in file order) whose cookie token is `token`.
    pub fn replica_by_token(&self, token: u64) -> Option<usize> {
        let replicas = self.replicas.as_ref()?;
        replicas.entries.iter().position(|r| r.token == token)
    }

    /// Where something new goes: the routable master (active-passive), or the replica
    /// the placement rule picks for `affinity` (active-active). None: nowhere now.
    pub fn place(&self, affinity: Affinity) -> Option<Placed> {
        let Some(replicas) = &self.replicas else {
            let master = Arc::clone(self.routable_master()?);
            return Some(Placed {
                master,
                reason: None,
            });
        };
        if self.expired() {
            return None;
        }
        let candidates: Vec<Candidate> = (self.masters.iter().zip(&replicas.entries))
            .map(|(status, replica)| Candidate {
                routable: replica.routable,
                load: replica.load.load().map(|load| load.total()),
                in_flight: status.master.counters.in_flight() as u64,
            })
            .collect();
        let (index, reason) = placement::place(&candidates, affinity)?;
        Some(Placed {
            master: Arc::clone(&self.masters[index].master),
            reason: Some(reason),
        })
    }

    /// Requests wait for a master rather than get 503: a promotion is under way, or
    /// (cluster mode) a new pointer is opening or this instance's view awaits
    /// confirmation.
    pub fn holds_requests(&self) -> bool {
        self.promotion.is_some()
            || self.cluster.as_ref().is_some_and(|cluster| !cluster.open)
            || self.expired()
    }
}

/// Read access to the latest snapshot. Cheap to clone; never blocks the writer for
/// longer than an `Arc` clone.
#[derive(Debug, Clone)]
pub struct RoutingHandle {
    receiver: watch::Receiver<Arc<Snapshot>>,
}

impl RoutingHandle {
    pub fn new(receiver: watch::Receiver<Arc<Snapshot>>) -> RoutingHandle {
        RoutingHandle { receiver }
    }

    /// The latest snapshot. The watch guard is released before this returns, so it is
    /// never held across an `.await`.
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.receiver.borrow())
    }

    /// A receiver for tasks that wait on changes (`changed().await`).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.receiver.clone()
    }
}
