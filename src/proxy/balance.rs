//! Client connections spread evenly over the proxy workers.
//!
//! Every worker accepts on the shared socket, and whichever is free first takes a new
//! connection. When many arrive at once (a load balancer's or a benchmark's pool of
//! keep-alive connections, or agents reconnecting after a restart), one worker can end
//! up with most of them for their whole lives: it is saturated while the other idles
//! (measured: 130 against 257 ticks of CPU in one run, and 5% less throughput). So a
//! worker that accepts a connection while it serves clearly more than another hands it
//! to that one, through the other's inbox; balanced workers keep what they accept, so
//! short connections almost never move.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::Peer;

/// A connection handed from the worker that accepted it to the one that serves it.
pub struct Handed {
    pub stream: std::net::TcpStream,
    pub peer: Peer,
    pub slot: OwnedSemaphorePermit,
    /// Counted on the receiving worker from the moment it was placed there.
    pub counted: Counted,
}

/// The open connections of every worker, and each one's inbox.
pub struct Balance {
    /// Written by each worker's connections (counted up when placed, down when they
    /// end); read by every worker as it accepts.
    open: Box<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<Handed>]>,
}

/// One worker's place in the [`Balance`].
pub struct Seat {
    pub index: usize,
    pub balance: Arc<Balance>,
    pub inbox: mpsc::UnboundedReceiver<Handed>,
}

impl Balance {
    /// A balance of `workers` workers and their seats.
    pub fn seats(workers: usize) -> Vec<Seat> {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let balance = Arc::new(Balance {
            open: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: senders.into_boxed_slice(),
        });
        receivers
            .into_iter()
            .enumerate()
            .map(|(index, inbox)| Seat {
                index,
                balance: Arc::clone(&balance),
                inbox,
            })
            .collect()
    }

    /// The worker that should serve a connection `accepted_by` took (see [`place`]).
    pub fn place(&self, accepted_by: usize) -> usize {
        let open = self.open.iter().map(|count| count.load(Ordering::Relaxed));
        place(open, accepted_by)
    }

    /// Counts a connection on `worker` until the returned guard is dropped.
    pub fn count(self: &Arc<Self>, worker: usize) -> Counted {
        if let Some(open) = self.open.get(worker) {
            open.fetch_add(1, Ordering::Relaxed);
        }
        Counted {
            balance: Arc::clone(self),
            worker,
        }
    }

    /// Sends `handed` to `worker`'s inbox; gives it back if that worker is gone.
    pub fn hand(&self, worker: usize, handed: Handed) -> Result<(), Handed> {
        match self.inboxes.get(worker) {
            Some(inbox) => inbox.send(handed).map_err(|refused| refused.0),
            None => Err(handed),
        }
    }
}

/// A connection counted on its worker, for as long as it lives.
pub struct Counted {
    balance: Arc<Balance>,
    worker: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(open) = self.balance.open.get(self.worker) {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Where a new connection goes, given each worker's open connections: to the worker
/// that accepted it, unless that one serves more than the least busy worker plus a
/// margin (2, or an eighth of the least busy one's count); then to the least busy.
/// (One pass over the counts: this runs for every accepted connection.)
pub fn place(open: impl IntoIterator<Item = usize>, accepted_by: usize) -> usize {
    let mut own = 0;
    let mut least: Option<(usize, usize)> = None;
    for (worker, count) in open.into_iter().enumerate() {
        if worker == accepted_by {
            own = count;
        }
        match least {
            Some((_, fewest)) if fewest <= count => {}
            _ => least = Some((worker, count)),
        }
    }
    let Some((least, fewest)) = least else {
        return accepted_by;
    };
    if own > fewest + (fewest / 8).max(2) {
        least
    } else {
        accepted_by
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_workers_keep_what_they_accept() {
        for open in [[0, 0], [2, 0], [0, 2], [32, 30], [36, 32], [100, 88]] {
            for accepted_by in 0..2 {
                if open[accepted_by] <= open[1 - accepted_by] + (open[1 - accepted_by] / 8).max(2) {
                    assert_eq!(place(open, accepted_by), accepted_by, "{open:?}");
                }
            }
        }
    }

    #[test]
    fn a_busier_worker_hands_to_the_least_busy() {
        assert_eq!(place([3, 0], 0), 1);
        assert_eq!(place([37, 32], 0), 1);
        assert_eq!(place([10, 40, 4], 1), 2);
        assert_eq!(place([4, 40, 10], 1), 0);
        // The one that accepted is the least busy: it keeps the connection.
        assert_eq!(place([0, 40, 10], 0), 0);
    }

    /// Connections arriving all at once at one worker end up spread evenly.
    #[test]
    fn a_burst_at_one_worker_spreads_over_all() {
        for workers in 1..=4 {
            let mut open = vec![0usize; workers];
            for _ in 0..256 {
                let placed = place(open.iter().copied(), 0);
                open[placed] += 1;
            }
            let (min, max) = (open.iter().min(), open.iter().max());
            let (Some(&min), Some(&max)) = (min, max) else {
                panic!("no workers")
            };
            assert!(
                max - min <= (min / 8).max(2) + 1,
                "{workers} workers: {open:?}"
            );
        }
    }
}
