//! What the member exchanges with the rest of the daemon: its settings, the state it
//! tells the owner, the commands it takes, and why joining can fail.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::super::etcd::EtcdError;
use super::super::pool::RecordedBackend;
use crate::config::Failback;
use crate::control::election::Health;

/// What one instance needs to take part.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    /// `[cluster] etcd`.
    pub etcd: Vec<String>,
    /// `[cluster] instance`.
    pub instance: String,
    /// `[cluster] key_prefix`.
    pub key_prefix: String,
    /// `[cluster] lease_ttl`: also how long this instance may act on a view it could
    /// not confirm.
    pub lease_ttl: Duration,
    /// The `[[backend]]` list, in order.
    pub backends: Vec<RecordedBackend>,
    pub failback: Failback,
    pub min_active: Duration,
    /// What the leader runs when it moves the pointer, with `{epoch}` substituted.
    pub commands: LeaderCommands,
}

/// The commands the leader runs after it moved the pointer: the fence of the master it
/// left, and the `promote`, `demote` and `no_master` hooks.
#[derive(Debug, Clone, Default)]
pub struct LeaderCommands {
    /// Per master, in file order: name, URL, host, its `fence_command`.
    pub masters: Vec<(String, String, String, Option<Vec<String>>)>,
    pub hooks: Vec<crate::config::HookConfig>,
    /// `failover.command_timeout`, for the fence.
    pub timeout: Duration,
}

/// A fault that stops the instance from joining at all.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("this instance's [[backend]] list ({ours}) differs from the one the pool {prefix:?} in etcd was started with ({recorded}); every instance of one pool needs the same masters in the same order: fix the config, or use another [cluster] key_prefix")]
    OtherBackends {
        prefix: String,
        ours: String,
        recorded: String,
    },
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// The pool as this instance sees it: what the owner routes by and `/status` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterState {
    pub instance: String,
    pub leader: Option<String>,
    /// The pointer's epoch (0 before the first pointer).
    pub epoch: i64,
    /// The pointer's master (None: no master can take traffic).
    pub master: Option<String>,
    /// True once every live instance follows `epoch`: traffic may go to `master`.
    /// False: requests are held (a new pointer is opening, or none is known yet).
    pub open: bool,
    /// The pointer's cause label and reason, for the transition record.
    pub cause: String,
    pub reason: String,
    /// Until when this instance may act on its view: the send time of its last lease
    /// renewal that etcd confirmed, plus the lease's time to live (at most
    /// `lease_ttl`). None before the first.
    pub valid_until: Option<Instant>,
    /// Wall-clock time of that confirmation, for people.
    pub confirmed_at: Option<SystemTime>,
    /// The last call to etcd succeeded.
    pub etcd_connected: bool,
    /// The live instances, by name.
    pub instances: Vec<InstanceStatus>,
    /// Masters the pool took out of the election (maintenance).
    pub disabled: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub name: String,
    /// The epoch it follows.
    pub acked: i64,
    /// When it last renewed its registration (RFC 3339, its own clock).
    pub seen: String,
}

/// What the member tells the daemon.
#[derive(Debug)]
pub enum Update {
    /// The pool changed as this instance sees it; `published` is answered once the
    /// routing snapshot reflects it (the member acknowledges an epoch only then).
    State {
        state: ClusterState,
        published: oneshot::Sender<()>,
    },
    /// Another instance found this master refusing connections: check it at once.
    CheckNow { master: String },
}

/// Operator commands that act on the whole pool.
#[derive(Debug)]
pub enum Command {
    Switchover {
        to: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    SetDisabled {
        master: String,
        disabled: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// This instance's own health view: (master, health) in file order. Written by the
/// daemon from the owner's snapshots; read by the member.
pub type LocalView = Vec<(String, Health)>;
