//! The request counter's series, looked up once per thread and kept: counting a
//! request then costs a short scan and an atomic add, where the family's lookup took
//! a label string allocated per request, its hash and the family's shared lock.

use std::cell::RefCell;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::RequestLabels;

/// Series kept per thread; past this (masters renamed by reloads, many daemons in one
/// test process) the cache starts over.
const MAX_KEPT: usize = 64;

thread_local! {
    /// Written and read by this thread's requests only.
    static KEPT: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
}

struct Kept {
    /// Which `Metrics` the series belongs to (its `id`).
    metrics: u64,
    master: String,
    class: &'static str,
    counter: Counter,
}

/// Adds one to the series (`master`, `class`) of `family`, which belongs to the
/// `Metrics` numbered `metrics`.
pub(super) fn count(
    metrics: u64,
    family: &Family<RequestLabels, Counter>,
    master: &str,
    class: &'static str,
) {
    KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        let found = kept
            .iter()
            .find(|k| k.metrics == metrics && k.class == class && k.master == master);
        if let Some(series) = found {
            series.counter.inc();
            return;
        }
        let labels = RequestLabels {
            master: master.to_owned(),
            class,
        };
        let counter = family.get_or_create(&labels).clone();
        counter.inc();
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.push(Kept {
            metrics,
            master: labels.master,
            class,
            counter,
        });
    });
}
