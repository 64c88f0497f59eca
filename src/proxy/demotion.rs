//! Waiting on a master while watching for its demotion: for a response head (a
//! replayable request is rescued from a master demoted meanwhile), for a connect
//! (given up when its master is demoted), or for the demotion itself.

use std::sync::Arc;
use std::time::Duration;

use super::ProxyContext;
use crate::control::routing::{Master, Snapshot};

/// How waiting for a response head ended.
pub(super) enum Waited<T> {
    Head(T),
    /// The master was demoted while the (replayable) request waited: resend it.
    Rescued,
    /// No response head within `proxy.request_timeout`.
    TimedOut,
}

/// Waits for the response head, bounded by `proxy.request_timeout`. A replayable
/// request (idempotent, no body) waiting on a master that gets demoted (it froze, was
/// switched away from) is rescued rather than left hanging.
///
/// Most heads arrive within a millisecond: the demotion watch starts only after
/// `WATCH_DEMOTION_AFTER` (checking the snapshot at once then), so a fast request
/// costs one timer and no subscription to the snapshot channel.
pub(super) async fn wait_for_head<F: std::future::Future>(
    ctx: &ProxyContext,
    master: &Arc<Master>,
    sent: F,
    replayable: bool,
    timeout: Option<Duration>,
) -> Waited<F::Output> {
    let started = tokio::time::Instant::now();
    let deadline = timeout.map(|timeout| started + timeout);
    let watch_from = started + WATCH_DEMOTION_AFTER;
    let first_wake = match deadline {
        Some(deadline) if !replayable || deadline < watch_from => deadline,
        _ if replayable => watch_from,
        _ => started, // neither a deadline nor a watch: the timer stays unarmed
    };
    let mut armed = replayable || deadline.is_some();
    let timer = tokio::time::sleep_until(first_wake);
    tokio::pin!(sent, timer);
    let mut snapshots = None;
    loop {
        tokio::select! {
            biased;
            outcome = &mut sent => return Waited::Head(outcome),
            () = demotion(snapshots.as_mut(), master) => return Waited::Rescued,
            () = &mut timer, if armed => {
                let now = tokio::time::Instant::now();
                if deadline.is_some_and(|deadline| now >= deadline) {
                    return Waited::TimedOut;
                }
                if replayable && snapshots.is_none() {
                    let mut receiver = ctx.routing.subscribe();
                    if !still_active(&receiver.borrow_and_update(), master) {
                        return Waited::Rescued;
                    }
                    snapshots = Some(receiver);
                }
                match deadline {
                    Some(deadline) => timer.as_mut().reset(deadline),
                    None => armed = false,
                }
            }
        }
    }
}

/// `connecting`'s outcome, or None when `master` is demoted first. A connection
/// taken from the pool is ready at the first poll: that costs no timer. Only a connect
/// still under way after `WATCH_DEMOTION_AFTER` watches the snapshots: a frozen
/// master's accept queue holds a connect until it times out (`connect_timeout`),
/// which would keep the request from the new master that long after the demotion.
pub(super) async fn unless_demoted<F: std::future::Future>(
    ctx: &ProxyContext,
    master: &Arc<Master>,
    connecting: F,
) -> Option<F::Output> {
    tokio::pin!(connecting);
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match connecting.as_mut().poll(cx) {
            std::task::Poll::Ready(outcome) => Some(outcome),
            std::task::Poll::Pending => None,
        })
    })
    .await;
    if first.is_some() {
        return first;
    }
    let watch_from = tokio::time::sleep(WATCH_DEMOTION_AFTER);
    tokio::pin!(watch_from);
    let mut snapshots = None;
    loop {
        tokio::select! {
            biased;
            outcome = &mut connecting => return Some(outcome),
            () = demotion(snapshots.as_mut(), master) => return None,
            () = &mut watch_from, if snapshots.is_none() => {
                let mut receiver = ctx.routing.subscribe();
                if !still_active(&receiver.borrow_and_update(), master) {
                    return None;
                }
                snapshots = Some(receiver);
            }
        }
    }
}

/// How long a replayable request waits for its head before it watches for a demotion
/// of its master (a rescue comes this much later at most; failover takes seconds).
const WATCH_DEMOTION_AFTER: Duration = Duration::from_millis(20);

/// Completes when `master` stops being the active master; never without `snapshots`.
async fn demotion(
    snapshots: Option<&mut tokio::sync::watch::Receiver<Arc<Snapshot>>>,
    master: &Arc<Master>,
) {
    let Some(snapshots) = snapshots else {
        return std::future::pending().await;
    };
    loop {
        if snapshots.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !still_active(&snapshots.borrow_and_update(), master) {
            return;
        }
    }
}

/// Waits up to `bound` for `master` to stop being the active master; returns the
/// snapshot that demoted it, or None if it is still active after `bound`.
pub(super) async fn demoted_within(
    ctx: &ProxyContext,
    master: &Arc<Master>,
    bound: Duration,
) -> Option<Arc<Snapshot>> {
    let mut snapshots = ctx.routing.subscribe();
    let demoted = async {
        loop {
            let current = Arc::clone(&snapshots.borrow_and_update());
            if !still_active(&current, master) {
                return Some(current);
            }
            if snapshots.changed().await.is_err() {
                return None; // the owner is gone: nothing will change any more
            }
        }
    };
    tokio::time::timeout(bound, demoted).await.ok().flatten()
}

/// Traffic may still go to `master`: it is the active master (active-passive), or
/// a routable replica (active-active).
pub(super) fn still_active(snapshot: &Snapshot, master: &Arc<Master>) -> bool {
    snapshot.routes_to(master)
}
