//! Prometheus metrics (`GET /metrics` on the admin listener), in the OpenMetrics text
//! format of the `prometheus-client` crate.
//!
//! Two kinds of metric, kept apart on purpose:
//! - counters and the request histogram, fed by events: the request path
//!   (`observe_request`), the reload path (`reload`) and the snapshot follower
//!   (`follow`, which counts new transitions by cause). They live in `registry`.
//! - per-master gauges (active, health, state, check latency, open connections), which
//!   are a pure function of one snapshot: `render` builds them fresh from the snapshot
//!   it is given, so they can never disagree with `/status` or keep a removed master.

mod replicas;
mod requests;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use tokio::sync::watch;

use crate::control::election::Health;
use crate::control::routing::{Cause, Snapshot, TransitionRecord, STATES};
use crate::upstream::attachments::Counts;

/// Every metric name starts with `jenkins_ha_proxy_`.
pub const PREFIX: &str = "jenkins_ha_proxy";

/// What `render` produces. Prometheus asks for OpenMetrics first and parses it.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the request duration buckets, 1 ms to 60 s: Jenkins answers most
/// pages in milliseconds, but a slow master (GC pause, plugin startup) takes seconds.
const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    master: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// All metrics of one daemon.
#[derive(Debug)]
pub struct Metrics {
    /// The event-fed metrics below, registered once.
    registry: Registry,
    /// Tells this instance's series apart in the request path's per-thread cache.
    id: u64,
    /// Written by the request path; read by `render`.
    requests: Family<RequestLabels, Counter>,
    /// Written by the request path; read by `render`.
    request_duration: Histogram,
    /// Changes of active master that demoted one (what `/status` counts as
    /// `failovers`). Written by `count_transitions`.
    failovers: Family<CauseLabel, Counter>,
    /// Every change of active master, including the first election. Written by
    /// `count_transitions`.
    transitions: Family<CauseLabel, Counter>,
    /// Written by the reload path.
    reloads: Family<ResultLabel, Counter>,
    /// `transition_count` of the newest snapshot whose transitions are counted.
    /// Written by `follow` and `render` (whichever sees a snapshot first counts it).
    counted_transitions: Mutex<u64>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = Histogram::new(DURATION_BUCKETS);
        let failovers = Family::<CauseLabel, Counter>::default();
        let transitions = Family::<CauseLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        // Every cause at 0 from the start, so `increase()` sees the first one (a series
        // born at 1 looks like no change).
        for cause in Cause::ALL {
            let label = CauseLabel {
                cause: cause.as_str(),
            };
            if cause.can_demote() {
                create_at_zero(&failovers, label.clone());
            }
            create_at_zero(&transitions, label);
        }
        for result in ["success", "failure"] {
            create_at_zero(&reloads, ResultLabel { result });
        }

        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "requests",
            "Proxied requests by the master that answered (\"none\" when none could) and status class",
            requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its response head",
            Unit::Seconds,
            request_duration.clone(),
        );
        registry.register(
            "failovers",
            "Changes of active master that demoted one (replaced or lost), by cause",
            failovers.clone(),
        );
        registry.register(
            "transitions",
            "Every change of active master, including the first election, by cause",
            transitions.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            reloads.clone(),
        );
        static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Metrics {
            registry,
            id: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            requests,
            request_duration,
            failovers,
            transitions,
            reloads,
            counted_transitions: Mutex::new(0),
        }
    }

    /// One proxied request: the master that answered (`"none"` when none could),
    /// its status code, and the time to the response head.
    pub fn observe_request(&self, master: &str, status: u16, duration: Duration) {
        requests::count(self.id, &self.requests, master, status_class(status));
        self.request_duration.observe(duration.as_secs_f64());
    }

    /// A configuration reload was attempted.
    pub fn reload(&self, succeeded: bool) {
        let result = if succeeded { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// The OpenMetrics text exposition of everything ([`CONTENT_TYPE`]), with
    /// per-master gauges read from `snapshot` (active, health, check latency, open
    /// connections and tunnels).
    /// `extra`: more gauges read at this scrape (the certificates' expiry).
    pub fn render(&self, snapshot: &Snapshot, extra: Option<Box<dyn Collector>>) -> String {
        // The follower may not have seen this snapshot yet: count its transitions
        // now, so /metrics never lags behind /status.
        self.count_transitions(snapshot);
        let mut pool = pool_registry(snapshot);
        if let Some(extra) = extra {
            pool.register_collector(extra);
        }
        let mut text = String::new();
        let encoded = encode_registry(&mut text, &pool)
            .and_then(|()| encode_registry(&mut text, &self.registry))
            .and_then(|()| encode_eof(&mut text));
        // Writing to a String does not fail; should the encoder ever refuse, say so.
        if let Err(error) = encoded {
            tracing::warn!(%error, "cannot encode metrics");
        }
        text
    }

    /// Follows published snapshots and counts new transitions by cause.
    pub async fn follow(self: Arc<Self>, mut snapshots: watch::Receiver<Arc<Snapshot>>) {
        loop {
            let snapshot = Arc::clone(&snapshots.borrow_and_update());
            self.count_transitions(&snapshot);
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    }

    /// Counts the transitions of `snapshot` that no earlier snapshot counted.
    fn count_transitions(&self, snapshot: &Snapshot) {
        let mut counted = match self.counted_transitions.lock() {
            Ok(counted) => counted,
            Err(poisoned) => poisoned.into_inner(),
        };
        for record in new_transitions(snapshot, *counted) {
            let cause = CauseLabel {
                cause: record.cause.as_str(),
            };
            self.transitions.get_or_create(&cause).inc();
            if record.from.is_some() {
                self.failovers.get_or_create(&cause).inc();
            }
        }
        // An older snapshot (render racing the follower) must not move it back.
        *counted = (*counted).max(snapshot.transition_count);
    }
}

/// The transitions of `snapshot` after the first `counted`. The count grows by one
/// per transition, so the difference says how many of the newest are new; more than the history holds cannot be recovered (and would need over 50
/// transitions between two snapshots the follower sees).
fn new_transitions(
    snapshot: &Snapshot,
    counted: u64,
) -> impl Iterator<Item = &TransitionRecord> + '_ {
    let history = snapshot.transitions.len();
    let new = usize::try_from(snapshot.transition_count.saturating_sub(counted))
        .unwrap_or(usize::MAX)
        .min(history);
    snapshot.transitions.iter().skip(history - new)
}

/// Makes the series exist (at 0) before its first event.
fn create_at_zero<S: Clone + Eq + std::hash::Hash>(family: &Family<S, Counter>, labels: S) {
    family.get_or_create(&labels).inc_by(0);
}

/// "2xx" for 200..=299 and so on; hyper allows codes up to 999, which are "other".
fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

/// The per-master gauges of one snapshot, in a registry of their own.
fn pool_registry(snapshot: &Snapshot) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(PoolGauges::of(snapshot)));
    if let Some(replicas) = replicas::ReplicaGauges::of(snapshot) {
        registry.register_collector(Box::new(replicas));
    }
    registry
}

/// What the gauges say about the pool and each master, masters in file order (a
/// collector, rather than label families, so that the series come out in that order,
/// scrape after scrape).
#[derive(Debug)]
struct PoolGauges {
    masters: Vec<MasterRow>,
    promoting: bool,
    alarms: usize,
    /// Cluster mode only.
    cluster: Option<ClusterRow>,
}

/// What the gauges say of the pool, in cluster mode.
#[derive(Debug)]
struct ClusterRow {
    leader: bool,
    epoch: i64,
    routing: bool,
    instances: usize,
    /// Seconds since etcd last confirmed this instance's view (None: never yet).
    confirmed_age: Option<f64>,
}

impl ClusterRow {
    fn of(snapshot: &Snapshot) -> Option<ClusterRow> {
        let cluster = snapshot.cluster.as_ref()?;
        Some(ClusterRow {
            leader: cluster.leader.as_deref() == Some(cluster.instance.as_str()),
            epoch: cluster.epoch,
            routing: snapshot.routable_master().is_some(),
            instances: cluster.instances.len(),
            confirmed_age: cluster.confirmed_at.map(|at| {
                std::time::SystemTime::now()
                    .duration_since(at)
                    .unwrap_or_default()
                    .as_secs_f64()
            }),
        })
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let gauges: [(&str, &str, f64); 4] = [
            (
                "cluster_leader",
                "1 while this instance is the pool's leader, else 0.",
                f64::from(u8::from(self.leader)),
            ),
            (
                "cluster_epoch",
                "The epoch of the pool's pointer this instance knows (it only grows).",
                self.epoch as f64,
            ),
            (
                "cluster_routing",
                "1 while this instance sends traffic (GET /ready answers 200), else 0.",
                f64::from(u8::from(self.routing)),
            ),
            (
                "cluster_instances",
                "Live instances of the pool, this one included.",
                self.instances as f64,
            ),
        ];
        for (name, help, value) in gauges {
            pool_gauge(encoder, name, help, value)?;
        }
        match self.confirmed_age {
            Some(age) => encoder
                .encode_descriptor(
                    "cluster_confirmed_age",
                    "Time since etcd last confirmed this instance's view; past [cluster] lease_ttl it stops routing.",
                    Some(&Unit::Seconds),
                    MetricType::Gauge,
                )?
                .encode_gauge(&age),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
struct MasterRow {
    name: String,
    active: bool,
    health: Health,
    /// As in /status: the health, or "starting".
    state: &'static str,
    disabled: bool,
    /// Seconds; None before the first check (0 would claim an instant answer).
    latency: Option<f64>,
    open: Counts,
}

impl PoolGauges {
    fn of(snapshot: &Snapshot) -> PoolGauges {
        let rows = snapshot
            .masters
            .iter()
            .enumerate()
            .map(|(index, status)| MasterRow {
                name: status.master.name.clone(),
                active: snapshot.takes_traffic(index),
                health: status.health,
                state: status.state(),
                disabled: status.disabled,
                latency: status.latency.map(|l| l.as_secs_f64()),
                open: status.master.upstream.attachments().counts(),
            });
        PoolGauges {
            masters: rows.collect(),
            promoting: snapshot.promotion.is_some(),
            alarms: snapshot.alarms.len(),
            cluster: ClusterRow::of(snapshot),
        }
    }
}

impl Collector for PoolGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if let Some(cluster) = &self.cluster {
            cluster.encode(&mut encoder)?;
        }
        let rows = &self.masters;
        pool_gauge(
            &mut encoder,
            "alarms",
            "Alarms that need a person now (two masters up on one home); see /status.",
            self.alarms,
        )?;
        pool_gauge(
            &mut encoder,
            "promotion_in_progress",
            "1 while a master is being promoted and requests are held, else 0.",
            u32::from(self.promoting),
        )?;
        gauge(
            &mut encoder,
            ("active_master", None),
            "1 for the master that receives traffic (active-active: every replica that takes traffic), 0 for the others.",
            rows.iter()
                .map(|r| ([("master", r.name.as_str())], u32::from(r.active))),
        )?;
        gauge(
            &mut encoder,
            ("master_healthy", None),
            "1 when the master's state is up, else 0.",
            rows.iter().map(|r| {
                (
                    [("master", r.name.as_str())],
                    u32::from(r.health == Health::Up),
                )
            }),
        )?;
        gauge(
            &mut encoder,
            ("master_disabled", None),
            "1 while the master is out of the election for maintenance, else 0.",
            rows.iter()
                .map(|r| ([("master", r.name.as_str())], u32::from(r.disabled))),
        )?;
        gauge(
            &mut encoder,
            ("master_state", None),
            "1 for the master's state in /status (unknown before the first check, up, down, starting).",
            // Every state is exported (0 or 1), so a change never leaves a stale series.
            rows.iter().flat_map(|r| {
                STATES.map(|state| {
                    let labels = [("master", r.name.as_str()), ("state", state)];
                    (labels, u32::from(r.state == state))
                })
            }),
        )?;
        gauge(
            &mut encoder,
            ("health_check_latency", Some(&Unit::Seconds)),
            "Duration of the master's last completed health check.",
            rows.iter()
                .filter_map(|r| Some(([("master", r.name.as_str())], r.latency?))),
        )?;
        gauge(
            &mut encoder,
            ("open_connections", None),
            "Connections open to the master now, by kind (http, tunnel, tcp).",
            rows.iter().flat_map(|r| {
                [
                    ("http", r.open.http),
                    ("tunnel", r.open.tunnels),
                    ("tcp", r.open.tcp),
                ]
                .map(|(kind, count)| ([("master", r.name.as_str()), ("kind", kind)], count))
            }),
        )
    }
}

/// Encodes a gauge without labels.
fn pool_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// Encodes one gauge family (name and unit, help) from its series. Help ends with a
/// period, as the registry writes it for registered metrics.
pub(super) fn gauge<S: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    (name, unit): (&str, Option<&Unit>),
    help: &str,
    series: impl Iterator<Item = (S, V)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in series {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "../../tests/support/exposition.rs"]
mod exposition;

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::SystemTime;

    use super::exposition::Exposition;
    use super::*;
    use crate::config::{Failback, Standby};
    use crate::control::routing::{Master, MasterStatus};
    use crate::upstream::attachments::Kind;
    use crate::upstream::Upstream;

    fn master(index: usize, name: &str) -> Arc<Master> {
        Arc::new(Master {
            name: name.to_owned(),
            url: format!("http://127.0.0.{}:8080", index + 2),
            host: format!("127.0.0.{}", index + 2),
            standby: Standby::None,
            start_command: None,
            fence_command: None,
            upstream: Upstream::new(
                &format!("127.0.0.{}", index + 2),
                8080,
                crate::upstream::UpstreamSettings::for_tests(),
            ),
            check_now: tokio::sync::Notify::new(),
            counters: Default::default(),
        })
    }

    fn status(master: Arc<Master>, health: Health, latency_ms: Option<u64>) -> MasterStatus {
        MasterStatus {
            master,
            health,
            disabled: false,
            starting: false,
            last_check: latency_ms.map(|_| SystemTime::now()),
            last_error: None,
            latency: latency_ms.map(Duration::from_millis),
            consecutive_passed: 0,
            consecutive_failed: 0,
        }
    }

    fn transition(from: Option<&str>, to: Option<&str>, cause: &str) -> TransitionRecord {
        let cause = Cause::ALL
            .into_iter()
            .find(|known| known.as_str() == cause)
            .expect("a known cause");
        TransitionRecord {
            at: SystemTime::now(),
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            reason: format!("{from:?} -> {to:?}"),
            cause,
            steps: Vec::new(),
        }
    }

    /// A pool of master-a (up) and master-b (unknown), master-a active, with
    /// `transitions` as history (the transition count is its length, as from a fresh
    /// owner).
    fn snapshot(masters: &[Arc<Master>], transitions: Vec<TransitionRecord>) -> Snapshot {
        Snapshot {
            generation: transitions.len() as u64,
            transition_count: transitions.len() as u64,
            active: Some(0),
            promotion: None,
            alarms: Vec::new(),
            active_since: SystemTime::now(),
            failovers: 0,
            masters: vec![
                status(Arc::clone(&masters[0]), Health::Up, Some(3)),
                status(Arc::clone(&masters[1]), Health::Unknown, None),
            ],
            transitions: Arc::new(VecDeque::from(transitions)),
            started_at: SystemTime::now(),
            failback: Failback::Never,
            cluster: None,
            valid_until: None,
            replicas: None,
        }
    }

    fn pool() -> Vec<Arc<Master>> {
        vec![master(0, "master-a"), master(1, "master-b")]
    }

    fn parse(metrics: &Metrics, snapshot: &Snapshot) -> Exposition {
        let text = metrics.render(snapshot, None);
        Exposition::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
    }

    #[test]
    fn render_is_valid_openmetrics_with_per_master_gauges() {
        let masters = pool();
        let _tunnel = masters[0].upstream.attachments().attach(Kind::Tunnel);
        let metrics = Metrics::new();
        let initial = transition(None, Some("master-a"), "initial");
        let mut pool = snapshot(&masters, vec![initial]);
        pool.masters[1].disabled = true;
        pool.alarms
            .push("master-a and master-b are both up".to_owned());
        let parsed = parse(&metrics, &pool);

        let a = [("master", "master-a")];
        let b = [("master", "master-b")];
        assert_eq!(
            parsed.value("jenkins_ha_proxy_active_master", &a),
            Some(1.0)
        );
        assert_eq!(
            parsed.value("jenkins_ha_proxy_active_master", &b),
            Some(0.0)
        );
        assert_eq!(
            parsed.value("jenkins_ha_proxy_master_healthy", &a),
            Some(1.0)
        );
        assert_eq!(
            parsed.value("jenkins_ha_proxy_master_healthy", &b),
            Some(0.0)
        );
        let disabled = "jenkins_ha_proxy_master_disabled";
        assert_eq!(parsed.value(disabled, &a), Some(0.0));
        assert_eq!(parsed.value(disabled, &b), Some(1.0));
        assert_eq!(parsed.value("jenkins_ha_proxy_alarms", &[]), Some(1.0));
        assert_eq!(
            parsed.value("jenkins_ha_proxy_promotion_in_progress", &[]),
            Some(0.0)
        );
        let state = |master, state| {
            parsed.value(
                "jenkins_ha_proxy_master_state",
                &[("master", master), ("state", state)],
            )
        };
        assert_eq!(state("master-a", "up"), Some(1.0));
        assert_eq!(state("master-a", "down"), Some(0.0));
        assert_eq!(state("master-b", "unknown"), Some(1.0));
        assert_eq!(
            parsed.value("jenkins_ha_proxy_health_check_latency_seconds", &a),
            Some(0.003)
        );
        assert_eq!(
            parsed.value("jenkins_ha_proxy_health_check_latency_seconds", &b),
            None,
            "no latency before the first check"
        );
        let open = |kind| {
            parsed.value(
                "jenkins_ha_proxy_open_connections",
                &[("master", "master-a"), ("kind", kind)],
            )
        };
        assert_eq!(open("tunnel"), Some(1.0));
        assert_eq!(open("http"), Some(0.0));
        assert_eq!(open("tcp"), Some(0.0));
        let initial = [("cause", "initial")];
        assert_eq!(
            parsed.value("jenkins_ha_proxy_transitions_total", &initial),
            Some(1.0)
        );
        assert_eq!(
            parsed.value("jenkins_ha_proxy_failovers_total", &initial),
            None,
            "the first election is not a failover"
        );
    }

    #[test]
    fn a_starting_master_shows_starting_as_in_status() {
        let masters = pool();
        let mut starting = snapshot(&masters, Vec::new());
        starting.masters[1].starting = true;
        let parsed = parse(&Metrics::new(), &starting);
        let state = |state| {
            parsed.value(
                "jenkins_ha_proxy_master_state",
                &[("master", "master-b"), ("state", state)],
            )
        };
        assert_eq!(state("starting"), Some(1.0));
        assert_eq!(state("unknown"), Some(0.0));
    }

    #[test]
    fn requests_and_reloads_are_counted() {
        let masters = pool();
        let metrics = Metrics::new();
        let empty = snapshot(&masters, Vec::new());
        let before = parse(&metrics, &empty);
        let ok = [("master", "master-a"), ("class", "2xx")];
        assert_eq!(before.value("jenkins_ha_proxy_requests_total", &ok), None);
        assert_eq!(
            before.value(
                "jenkins_ha_proxy_config_reloads_total",
                &[("result", "failure")]
            ),
            Some(0.0)
        );

        metrics.observe_request("master-a", 200, Duration::from_millis(2));
        metrics.observe_request("master-a", 204, Duration::from_millis(40));
        metrics.observe_request("none", 503, Duration::from_micros(300));
        metrics.reload(false);
        let after = parse(&metrics, &empty);
        assert_eq!(
            after.value("jenkins_ha_proxy_requests_total", &ok),
            Some(2.0)
        );
        assert_eq!(
            after.value(
                "jenkins_ha_proxy_requests_total",
                &[("master", "none"), ("class", "5xx")]
            ),
            Some(1.0)
        );
        assert_eq!(
            after.value(
                "jenkins_ha_proxy_config_reloads_total",
                &[("result", "failure")]
            ),
            Some(1.0)
        );
        let count = "jenkins_ha_proxy_request_duration_seconds_count";
        assert_eq!(after.value(count, &[]), Some(3.0));
        let bucket = "jenkins_ha_proxy_request_duration_seconds_bucket";
        assert_eq!(after.value(bucket, &[("le", "0.001")]), Some(1.0));
        assert_eq!(after.value(bucket, &[("le", "0.0025")]), Some(2.0));
        assert_eq!(after.value(bucket, &[("le", "0.05")]), Some(3.0));
    }

    #[test]
    fn only_new_transitions_are_counted_once() {
        let masters = pool();
        let metrics = Metrics::new();
        let mut history = vec![transition(None, Some("master-a"), "initial")];
        metrics.count_transitions(&snapshot(&masters, history.clone()));
        history.push(transition(
            Some("master-a"),
            Some("master-b"),
            "health_check",
        ));
        history.push(transition(Some("master-b"), None, "no_master"));
        let newer = snapshot(&masters, history);
        metrics.count_transitions(&newer);
        metrics.count_transitions(&newer);
        // An older snapshot arriving late changes nothing.
        let parsed = parse(&metrics, &snapshot(&masters, Vec::new()));
        let failovers =
            |cause| parsed.value("jenkins_ha_proxy_failovers_total", &[("cause", cause)]);
        assert_eq!(failovers("health_check"), Some(1.0));
        assert_eq!(failovers("no_master"), Some(1.0));
        assert_eq!(failovers("connect_failed"), Some(0.0));
        assert_eq!(
            parsed.value(
                "jenkins_ha_proxy_transitions_total",
                &[("cause", "initial")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn a_burst_longer_than_the_history_counts_what_the_history_holds() {
        let masters = pool();
        let records: Vec<_> = (0..3)
            .map(|_| transition(Some("master-a"), Some("master-b"), "health_check"))
            .collect();
        let mut burst = snapshot(&masters, records);
        burst.transition_count = 10;
        assert_eq!(new_transitions(&burst, 0).count(), 3);
        assert_eq!(new_transitions(&burst, 9).count(), 1);
        assert_eq!(new_transitions(&burst, 10).count(), 0);
        assert_eq!(new_transitions(&burst, 12).count(), 0);
    }

    #[test]
    fn the_exposition_checker_rejects_broken_text() {
        let valid = "# HELP x Things.\n# TYPE x counter\nx_total{a=\"q\\\"\"} 1\n# EOF\n";
        let parsed = Exposition::parse(valid).expect("valid");
        assert_eq!(parsed.value("x_total", &[("a", "q\"")]), Some(1.0));
        for broken in [
            "# TYPE x counter\nx_total 1\n",                          // no EOF
            "# TYPE x counter\nx 1\n# EOF\n",                         // counter without _total
            "# TYPE x gauge\nx 1\nx 2\n# EOF\n",                      // duplicate series
            "# TYPE x gauge\nx{a=\"1\"} 1\nx 2\n# EOF\n",             // label sets differ
            "# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\nx 2\n# EOF\n", // interleaved
            "# TYPE x gauge\nx one\n# EOF\n",                         // not a number
            "# TYPE x gauge\nx{a=1} 1\n# EOF\n",                      // unquoted label value
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n# EOF\n",
        ] {
            assert!(Exposition::parse(broken).is_err(), "accepted: {broken}");
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(302), "3xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(599), "5xx");
        assert_eq!(status_class(999), "other");
    }

    #[tokio::test]
    async fn follow_counts_transitions_of_published_snapshots() {
        let masters = pool();
        let metrics = Arc::new(Metrics::new());
        let (publish, snapshots) = watch::channel(Arc::new(snapshot(&masters, Vec::new())));
        let follower = tokio::spawn(Arc::clone(&metrics).follow(snapshots));
        let history = vec![
            transition(None, Some("master-a"), "initial"),
            transition(Some("master-a"), Some("master-b"), "connect_failed"),
        ];
        publish
            .send(Arc::new(snapshot(&masters, history)))
            .expect("follower listens");
        drop(publish);
        tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("follow ends when the sender is gone")
            .expect("follow did not panic");
        let counted = metrics
            .failovers
            .get_or_create(&CauseLabel {
                cause: "connect_failed",
            })
            .get();
        assert_eq!(counted, 1);
    }
}
