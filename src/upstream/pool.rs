//! The idle keep-alive connections of one master, one shard per proxy worker thread,
//! and the caps on its connections (`max_connections`, `max_connects`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::flavor::{Flavor, Pooled};
use super::h1::{GiveBack, RawConnection};
use super::UpstreamSettings;

/// Idle connections kept per master and proxy worker thread. Beyond this, released
/// connections are closed.
const MAX_IDLE_PER_MASTER: usize = 256;

thread_local! {
    /// The proxy worker this thread is: set by each proxy worker thread at its start
    /// (`set_worker`), read by `take_idle` and `returner`. Other threads (a shared
    /// multi-threaded runtime) are all worker 0.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes this thread's requests use the idle connections of proxy worker `index`:
/// those its own runtime drives.
pub fn set_worker(index: usize) {
    WORKER.with(|shard| shard.set(index));
}

pub(super) fn current_worker() -> usize {
    WORKER.with(std::cell::Cell::get)
}

/// What a connection to a master holds while it is being opened.
pub(super) struct Permits {
    /// Held by the connection's task for as long as it lives: one of the master's
    /// `max_connections`.
    pub(super) connection: OwnedSemaphorePermit,
    /// Held until the connect and handshake are done: one of `max_connects`.
    pub(super) connect: OwnedSemaphorePermit,
}

/// The caps on connections to one master, shared by every proxy worker.
struct Limits {
    /// `[[backend]] max_connections` permits: one per open HTTP connection, busy or idle.
    connections: Arc<Semaphore>,
    /// `[[backend]] max_connects` permits: one per connect in progress.
    connects: Arc<Semaphore>,
    /// Requests waiting for a `connections` permit. Written by `Upstream::permits`;
    /// read by `Returner::give_back`, which then closes a connection nobody on its
    /// own worker waits for, so that its permit goes to them.
    waiting: AtomicUsize,
}

/// Counts a waiter for as long as it lives.
pub(super) struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    pub(super) fn on(counter: &'a AtomicUsize) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::AcqRel);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Idle keep-alive connections of one master, most recently used last, in one shard
/// per proxy worker thread: a connection's task runs on the runtime of the worker
/// that opened it, and only that worker's requests use it (no cross-thread wakeups,
/// and no connection outlives the runtime that drives it).
pub(super) struct Pool {
    shards: Box<[Shard]>,
    idle_timeout: Duration,
    limits: Limits,
}

/// One proxy worker's idle connections to one master.
pub(super) struct Shard {
    /// Written by `Returner::give_back` (when a response ends) and `take_idle`, read
    /// by `take_idle`; each held only for a push, a pop or a prune, never across an
    /// await. A worker uses its own shard (uncontended).
    idle: Mutex<Vec<IdleConnection>>,
    /// Notified by `give_back` for each connection it adds; awaited by requests that
    /// wait for a connection while their own is still being opened.
    pub(super) returned: tokio::sync::Notify,
    /// Requests of this worker waiting in `connect_or_reuse`. Written by them; read by
    /// `give_back` (a connection someone here waits for is kept, not closed).
    pub(super) waiting: AtomicUsize,
}

impl Pool {
    /// One shard per proxy worker: a shard's `returned` must wake only requests of
    /// the worker whose connections it holds.
    pub(super) fn new(settings: &UpstreamSettings) -> Pool {
        let shards = settings.workers.max(1);
        Pool {
            shards: (0..shards)
                .map(|_| Shard {
                    idle: Mutex::new(Vec::new()),
                    returned: tokio::sync::Notify::new(),
                    waiting: AtomicUsize::new(0),
                })
                .collect(),
            idle_timeout: settings.idle_timeout,
            limits: Limits {
                connections: Arc::new(Semaphore::new(settings.max_connections.max(1))),
                connects: Arc::new(Semaphore::new(settings.max_connects.max(1))),
                waiting: AtomicUsize::new(0),
            },
        }
    }

    /// Closes the idle connection that has waited longest, in any worker's shard: its
    /// permit comes back once its task has seen it go. Returns whether there was one.
    fn close_oldest_idle(&self) -> bool {
        let oldest = (0..self.shards.len())
            .filter_map(|shard| {
                let idle = self.lock(shard);
                idle.first().map(|c| (c.idle_since, shard))
            })
            .min();
        let Some((_, shard)) = oldest else {
            return false;
        };
        let closed = {
            let mut idle = self.lock(shard);
            (!idle.is_empty()).then(|| idle.remove(0))
        };
        closed.is_some() // dropped here, outside the lock
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Vec<IdleConnection>> {
        match self.shards[shard].idle.lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn own_shard_index(&self) -> usize {
        current_worker() % self.shards.len()
    }

    /// The shard of this thread's proxy worker.
    pub(super) fn own_shard(&self) -> &Shard {
        &self.shards[self.own_shard_index()]
    }

    /// Closes idle connections older than `idle_timeout` in every shard. Returning or
    /// taking a connection prunes its own shard too, but a shard nobody uses any more
    /// (a quiet worker, a standby master) would keep its sockets open until the master
    /// closes them. Dropping a sender from this thread is fine: the connection's task,
    /// on its own worker, sees it and ends.
    fn close_expired(&self) {
        let now = Instant::now();
        for shard in 0..self.shards.len() {
            let expired: Vec<IdleConnection> = {
                let mut idle = self.lock(shard);
                let count = idle
                    .iter()
                    .take_while(|c| now.duration_since(c.idle_since) >= self.idle_timeout)
                    .count();
                idle.drain(..count).collect()
            };
            drop(expired); // outside the lock
        }
    }

    /// Runs `close_expired` every `idle_timeout` for as long as the pool exists (the
    /// task holds it weakly). Without a runtime (a pool built outside one) there is no
    /// reaper; use still prunes.
    pub(super) fn spawn_reaper(pool: &Arc<Pool>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::downgrade(pool);
        let Some(period) = pool.upgrade().map(|p| p.idle_timeout.max(MIN_REAP_PERIOD)) else {
            return;
        };
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.close_expired();
            }
        });
    }
}

/// The reaper never runs more often than this, whatever `pool_idle_timeout` says.
const MIN_REAP_PERIOD: Duration = Duration::from_millis(100);

/// Puts a connection back into its master's pool when the response on it has been
/// read to the end: synchronously, so the next request finds it, rather than opening
/// a new connection while a background task waits for this one.
pub struct Returner {
    connection: Pooled,
    pool: Arc<Pool>,
    /// The worker that took or opened the connection: its runtime drives it.
    worker: usize,
}

impl Returner {
    pub fn give_back(self) {
        if self.connection.is_closed() {
            return;
        }
        let shard = self.worker % self.pool.shards.len();
        if self.pool.limits.waiting.load(Ordering::Acquire) > 0
            && self.pool.shards[shard].waiting.load(Ordering::Acquire) == 0
        {
            // Requests of other workers wait for one of the master's permits, and
            // nobody here needs this connection: closing it frees its permit for them.
            return;
        }
        let mut idle = self.pool.lock(shard);
        // The oldest are first: drop those that expired, so idle sockets do not pile
        // up (closed ones are skipped when taken).
        let now = Instant::now();
        let timeout = self.pool.idle_timeout;
        let expired = idle
            .iter()
            .take_while(|c| now.duration_since(c.idle_since) >= timeout)
            .count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE_PER_MASTER {
            idle.push(IdleConnection {
                connection: self.connection,
                idle_since: now,
                worker: self.worker,
            });
            drop(idle);
            // Wakes one request waiting for a connection (see `connect_or_reuse`); with
            // none waiting, only sets a flag.
            self.pool.shards[shard].returned.notify_one();
        }
    }
}

struct IdleConnection {
    connection: Pooled,
    idle_since: Instant,
    /// The proxy worker whose runtime drives the connection (see `set_worker`).
    worker: usize,
}

impl Pool {
    /// A permit for one more connection to the master and one for connecting. With
    /// every connection taken, the idle one that waited longest (on any worker) is
    /// closed to free its permit, and this waits in line for one. None: never (the
    /// semaphores are not closed).
    pub(super) async fn permits(&self) -> Option<Permits> {
        let limits = &self.limits;
        let connection = match Arc::clone(&limits.connections).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let _waiting = Waiting::on(&limits.waiting);
                self.close_oldest_idle();
                Arc::clone(&limits.connections).acquire_owned().await.ok()?
            }
        };
        let connect = Arc::clone(&limits.connects).acquire_owned().await.ok()?;
        Some(Permits {
            connection,
            connect,
        })
    }

    /// Puts `connection`, driven by `worker`'s runtime, back into `pool` when its
    /// response has been read (see [`Returner`]).
    pub(super) fn returner(pool: &Arc<Pool>, connection: Pooled, worker: usize) -> Returner {
        Returner {
            connection,
            pool: Arc::clone(pool),
            worker,
        }
    }

    /// Closes every idle connection (their connection tasks end when dropped).
    pub(super) fn clear_idle(&self) -> usize {
        (0..self.shards.len())
            .map(|shard| {
                let mut idle = self.lock(shard);
                let count = idle.len();
                idle.clear();
                count
            })
            .sum()
    }

    /// The most recently used idle connection of kind `F` of `worker` that has not
    /// expired.
    pub(super) fn take_idle<F: Flavor>(&self, worker: usize) -> Option<F> {
        let mut idle = self.lock(self.own_shard_index());
        // Most recently used first: the likeliest to be alive; older ones expire.
        while let Some(at) = idle
            .iter()
            .rposition(|c| c.worker == worker && F::is(&c.connection))
        {
            let candidate = idle.remove(at);
            if candidate.idle_since.elapsed() < self.idle_timeout
                && !candidate.connection.is_closed()
            {
                return F::from_pooled(candidate.connection);
            }
        }
        None
    }
}

/// Where a [`RawConnection`] goes back to when its response body ends: the pool shard
/// of the worker whose request used it.
pub struct RawHome {
    pool: Arc<Pool>,
    worker: usize,
}

impl RawHome {
    pub(super) fn new(pool: &Arc<Pool>, worker: usize) -> RawHome {
        RawHome {
            pool: Arc::clone(pool),
            worker,
        }
    }
}

impl GiveBack for RawHome {
    fn give_back(self, connection: RawConnection) {
        Pool::returner(&self.pool, Pooled::Raw(connection), self.worker).give_back();
    }
}
