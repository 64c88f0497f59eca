//! The `/status` document: the public JSON contract scripts rely on (add fields,
//! never rename them), rendered from one snapshot.

use std::time::SystemTime;

use serde::Serialize;

use crate::config::PoolMode;
use crate::control::placement::Reason;
use crate::control::routing::{Master, MasterStatus, Snapshot};
use crate::tls::ServedCertificate;

/// The `/status` document. Field names are a public contract: add, never rename.
#[derive(Debug, Serialize)]
pub struct Status {
    pub active: Option<String>,
    pub active_since: String,
    pub failovers: u64,
    pub generation: u64,
    pub failback: &'static str,
    /// `pool.mode`: "active-passive" or "active-active".
    pub mode: &'static str,
    pub started_at: String,
    pub backends: Vec<BackendStatus>,
    /// A promotion under way (requests are held meanwhile), or null.
    pub promotion: Option<PromotionStatus>,
    /// Alarms that need a person now, e.g. two masters up on one home.
    pub alarms: Vec<String>,
    /// Newest first.
    pub transitions: Vec<TransitionStatus>,
    /// Cluster mode: the pool as this instance sees it; absent standalone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
    /// `[proxy.tls]`, `[admin.tls]`: the certificates served; absent without TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
}

/// `/status` `tls`: field names are a public contract, as above.
#[derive(Debug, Serialize)]
pub struct TlsStatus {
    pub certificates: Vec<CertificateStatus>,
}

#[derive(Debug, Serialize)]
pub struct CertificateStatus {
    /// `proxy` or `admin`.
    pub listener: &'static str,
    pub cert_file: String,
    /// The `[[proxy.tls.sni]]` names it is chosen for; empty for the default one.
    pub server_names: Vec<String>,
    pub subject: String,
    /// The names it is valid for (subjectAltName).
    pub names: Vec<String>,
    pub serial: String,
    pub not_after: String,
    /// Whole days until `not_after`; negative once expired.
    pub days_left: i64,
}

impl TlsStatus {
    pub fn of(certificates: &[(&'static str, ServedCertificate)]) -> TlsStatus {
        let now = SystemTime::now();
        TlsStatus {
            certificates: certificates
                .iter()
                .map(|(listener, served)| CertificateStatus {
                    listener,
                    cert_file: served.cert_file.display().to_string(),
                    server_names: served.server_names.clone(),
                    subject: served.info.subject.clone(),
                    names: served.info.names.clone(),
                    serial: served.info.serial.clone(),
                    not_after: served.info.not_after_text(),
                    days_left: served.info.days_left(now),
                })
                .collect(),
        }
    }
}

/// `/status` `cluster`: field names are a public contract, as above.
#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    /// This instance's name (`[cluster] instance`).
    pub instance: String,
    /// The instance that decides, if any.
    pub leader: Option<String>,
    /// The pointer's epoch: it only grows; 0 before the first pointer.
    pub epoch: i64,
    /// The last call to etcd succeeded.
    pub etcd_connected: bool,
    /// This instance sends traffic now (what `GET /ready` answers).
    pub routing: bool,
    /// When etcd last confirmed this instance's view.
    pub confirmed_at: Option<String>,
    /// The live instances of the pool.
    pub instances: Vec<ClusterInstance>,
}

#[derive(Debug, Serialize)]
pub struct ClusterInstance {
    pub name: String,
    /// The newest epoch it follows.
    pub acknowledged_epoch: i64,
    /// When it last renewed its registration (its own clock).
    pub last_seen: String,
}

#[derive(Debug, Serialize)]
pub struct BackendStatus {
    pub name: String,
    pub url: String,
    pub healthy: bool,
    pub active: bool,
    /// "unknown" (not checked yet), "up", "down" or "starting".
    pub state: &'static str,
    pub last_check: Option<String>,
    pub last_error: Option<String>,
    pub latency_ms: Option<f64>,
    pub consecutive_passed: u32,
    pub consecutive_failed: u32,
    /// Taken out of the election for maintenance (`POST /backends/NAME/disable`).
    pub disabled: bool,
    /// "none", "hot" or "cold".
    pub standby: &'static str,
    /// Open HTTP connections to this master (busy or idle in the pool).
    pub open_connections: usize,
    /// Open upgraded connections (WebSocket agents, CLI).
    pub tunnels: usize,
    /// Open forwards from `[[tcp]]` listeners.
    pub tcp_connections: usize,
    /// `https://` masters: `verified as NAME`, or `NOT VERIFIED
    /// (upstream_tls.insecure_skip_verify = true)`; null for `http://` ones.
    pub tls: Option<String>,
    /// Active-active mode only: its fields are the backend's (absent otherwise).
    #[serde(flatten)]
    pub replica: Option<ReplicaStatus>,
}

/// A backend's fields in active-active mode (`active` then means: takes traffic).
#[derive(Debug, Serialize)]
pub struct ReplicaStatus {
    /// Jenkins' load as last read; null when the last read failed (or none was made
    /// yet): the replica is then placed after those whose load is known.
    pub load: Option<LoadStatus>,
    /// Why `load` is null.
    pub load_error: Option<String>,
    /// Placements that started a new session here (`least_load` + `replaced`).
    pub sessions: u64,
    /// The proxy's requests waiting on this replica for their response head now.
    pub requests_in_flight: usize,
    /// Placements since start, by reason.
    pub placements: PlacementStatus,
}

#[derive(Debug, Serialize)]
pub struct LoadStatus {
    /// Busy executors.
    pub builds: u64,
    /// Items in the build queue.
    pub queued: u64,
    /// Online agents.
    pub agents: u64,
    /// builds + queued + agents: what placement compares (plus requests in flight).
    pub total: u64,
    pub read_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PlacementStatus {
    /// Its cookie named this replica.
    pub cookie: u64,
    /// The first request of its CLI call went here.
    pub session: u64,
    /// No tie: the least loaded replica.
    pub least_load: u64,
    /// Its tie named a replica that did not take traffic: placed anew here.
    pub replaced: u64,
}

/// In `alarms` while any master's certificate goes unverified.
pub const INSECURE_ALARM: &str = "upstream_tls.insecure_skip_verify = true: the masters' TLS certificates are NOT verified; anyone on the path to them can pose as a master";

fn tls_text(master: &crate::control::routing::Master) -> Option<String> {
    let tls = master.upstream.tls()?;
    Some(if tls.is_insecure() {
        "NOT VERIFIED (upstream_tls.insecure_skip_verify = true)".to_owned()
    } else {
        format!("verified as {}", tls.server_name())
    })
}

/// The snapshot's alarms, and the insecure TLS one when it applies.
fn alarms(snapshot: &Snapshot) -> Vec<String> {
    let mut alarms = snapshot.alarms.clone();
    let insecure = snapshot
        .masters
        .iter()
        .any(|m| m.master.upstream.tls().is_some_and(|tls| tls.is_insecure()));
    if insecure {
        alarms.push(INSECURE_ALARM.to_owned());
    }
    alarms
}

#[derive(Debug, Serialize)]
pub struct TransitionStatus {
    pub at: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    /// Machine-readable label (`Cause::as_str`): initial, health_check,
    /// connect_failed, failback, recovered, no_master, promotion_failed, switchover,
    /// maintenance, reload (more may be added).
    pub cause: &'static str,
    /// The promotion's steps with their timings (empty when none was needed).
    pub steps: Vec<StepStatus>,
}

#[derive(Debug, Serialize)]
pub struct StepStatus {
    pub at: String,
    pub step: String,
    pub ok: bool,
    pub took_ms: f64,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct PromotionStatus {
    pub to: String,
    /// What traffic waits for, in words.
    pub waiting_for: String,
    pub since: String,
    /// Set while failover.require_fence holds the promotion: fencing the old master
    /// failed and is being retried. Nothing is promoted until it succeeds.
    pub waiting_on_fence: Option<String>,
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

impl Status {
    pub fn of(snapshot: &Snapshot) -> Status {
        Status {
            active: snapshot.active_master().map(|m| m.name.clone()),
            active_since: rfc3339(snapshot.active_since),
            failovers: snapshot.failovers,
            generation: snapshot.generation,
            failback: snapshot.failback.as_str(),
            mode: match snapshot.replicas {
                Some(_) => PoolMode::ActiveActive.as_str(),
                None => PoolMode::ActivePassive.as_str(),
            },
            started_at: rfc3339(snapshot.started_at),
            backends: (snapshot.masters.iter().enumerate())
                .map(|(index, status)| backend_status(snapshot, index, status))
                .collect(),
            promotion: snapshot.promotion.as_ref().map(|p| PromotionStatus {
                to: p.to.clone(),
                waiting_for: p.waiting_for.clone(),
                since: rfc3339(p.since),
                waiting_on_fence: p.waiting_on_fence.clone(),
            }),
            alarms: alarms(snapshot),
            transitions: snapshot
                .transitions
                .iter()
                .rev()
                .map(|t| TransitionStatus {
                    at: rfc3339(t.at),
                    from: t.from.clone(),
                    to: t.to.clone(),
                    reason: t.reason.clone(),
                    cause: t.cause.as_str(),
                    steps: t
                        .steps
                        .iter()
                        .map(|s| StepStatus {
                            at: rfc3339(s.at),
                            step: s.step.clone(),
                            ok: s.ok,
                            took_ms: s.took.as_secs_f64() * 1000.0,
                            detail: s.detail.clone(),
                        })
                        .collect(),
                })
                .collect(),
            cluster: cluster_status(snapshot),
            tls: None,
        }
    }
}

/// One master's entry in `backends`.
fn backend_status(snapshot: &Snapshot, index: usize, status: &MasterStatus) -> BackendStatus {
    let open = status.master.upstream.attachments().counts();
    BackendStatus {
        name: status.master.name.clone(),
        url: status.master.url.clone(),
        healthy: status.health == crate::control::election::Health::Up,
        active: snapshot.takes_traffic(index),
        state: status.state(),
        last_check: status.last_check.map(rfc3339),
        last_error: status.last_error.clone(),
        latency_ms: status.latency.map(|l| l.as_secs_f64() * 1000.0),
        consecutive_passed: status.consecutive_passed,
        consecutive_failed: status.consecutive_failed,
        disabled: status.disabled
            || snapshot
                .cluster
                .as_ref()
                .is_some_and(|c| c.disabled.contains(&status.master.name)),
        standby: status.master.standby.as_str(),
        open_connections: open.http,
        tunnels: open.tunnels,
        tcp_connections: open.tcp,
        tls: tls_text(&status.master),
        replica: replica_status(snapshot, index, &status.master),
    }
}

/// Active-active mode: a replica's load, placements and requests in flight.
fn replica_status(snapshot: &Snapshot, index: usize, master: &Master) -> Option<ReplicaStatus> {
    let replica = snapshot.replicas.as_ref()?.entries.get(index)?;
    let counters = &master.counters;
    let load = replica.load.load().map(|load| LoadStatus {
        builds: load.builds,
        queued: load.queued,
        agents: load.agents,
        total: load.total(),
        read_at: replica.load.at().map(rfc3339),
    });
    Some(ReplicaStatus {
        load,
        load_error: replica.load.error().map(str::to_owned),
        sessions: counters.sessions(),
        requests_in_flight: counters.in_flight(),
        placements: PlacementStatus {
            cookie: counters.placements(Reason::Cookie),
            session: counters.placements(Reason::Session),
            least_load: counters.placements(Reason::LeastLoad),
            replaced: counters.placements(Reason::Replaced),
        },
    })
}

/// `cluster`, in cluster mode.
fn cluster_status(snapshot: &Snapshot) -> Option<ClusterStatus> {
    let cluster = snapshot.cluster.as_ref()?;
    Some(ClusterStatus {
        instance: cluster.instance.clone(),
        leader: cluster.leader.clone(),
        epoch: cluster.epoch,
        etcd_connected: cluster.etcd_connected,
        routing: snapshot.routable_master().is_some(),
        confirmed_at: cluster.confirmed_at.map(rfc3339),
        instances: cluster
            .instances
            .iter()
            .map(|i| ClusterInstance {
                name: i.name.clone(),
                acknowledged_epoch: i.acked,
                last_seen: i.seen.clone(),
            })
            .collect(),
    })
}
