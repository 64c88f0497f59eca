//! Active-active mode's metrics, read from one snapshot like the other per-master
//! gauges: each replica's load as last read, the proxy's requests in flight to it,
//! and its placements by reason (counters kept on each master by the request path
//! and the `[[tcp]]` listeners).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::gauge;
use crate::control::placement::Reason;
use crate::control::replicas::Load;
use crate::control::routing::Snapshot;

/// One row per replica, file order.
#[derive(Debug)]
pub(super) struct ReplicaGauges {
    rows: Vec<Row>,
}

#[derive(Debug)]
struct Row {
    name: String,
    /// None: the last read failed (or none was made yet).
    load: Option<Load>,
    in_flight: usize,
    /// By [`Reason::index`].
    placements: [u64; 4],
}

impl ReplicaGauges {
    /// None in active-passive mode.
    pub(super) fn of(snapshot: &Snapshot) -> Option<ReplicaGauges> {
        let replicas = snapshot.replicas.as_ref()?;
        let rows = (snapshot.masters.iter().zip(&replicas.entries)).map(|(status, replica)| {
            let counters = &status.master.counters;
            Row {
                name: status.master.name.clone(),
                load: replica.load.load(),
                in_flight: counters.in_flight(),
                placements: Reason::ALL.map(|reason| counters.placements(reason)),
            }
        });
        Some(ReplicaGauges {
            rows: rows.collect(),
        })
    }
}

impl Collector for ReplicaGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let rows = &self.rows;
        gauge(
            &mut encoder,
            ("replica_load", None),
            "Active-active: the replica's load as last read from Jenkins, by part (builds: busy executors, queued: build queue items, agents: online agents, total: their sum); absent while it cannot be read.",
            rows.iter().flat_map(|r| {
                let parts = r.load.map(|l| {
                    [
                        ("builds", l.builds),
                        ("queued", l.queued),
                        ("agents", l.agents),
                        ("total", l.total()),
                    ]
                });
                parts.into_iter().flatten().map(|(part, value)| {
                    ([("master", r.name.as_str()), ("part", part)], value)
                })
            }),
        )?;
        gauge(
            &mut encoder,
            ("replica_load_readable", None),
            "Active-active: 1 when the replica's last load read succeeded, else 0 (it is then placed last; /status says why).",
            rows.iter()
                .map(|r| ([("master", r.name.as_str())], u32::from(r.load.is_some()))),
        )?;
        gauge(
            &mut encoder,
            ("requests_in_flight", None),
            "Active-active: requests the proxy placed on the replica that wait for its response head.",
            rows.iter()
                .map(|r| ([("master", r.name.as_str())], r.in_flight)),
        )?;
        let mut placements = encoder.encode_descriptor(
            "placements",
            "Active-active: requests and agent connections placed on each replica, by reason (cookie, session: tied to it; least_load: no tie; replaced: tied to a replica that did not take traffic).",
            None,
            MetricType::Counter,
        )?;
        for row in rows {
            for reason in Reason::ALL {
                let labels = [("master", row.name.as_str()), ("reason", reason.as_str())];
                placements
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&row.placements[reason.index()], None)?;
            }
        }
        Ok(())
    }
}
