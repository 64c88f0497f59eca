//! A loopback server that can be killed and restarted on the same address, for the
//! sample master and the test peers: stop() closes the listener and every connection
//! at once, like a killed process; restart() binds the same address again.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long restart() keeps trying while the port is still held (TIME_WAIT, a
/// closing socket), and how often.
const REBIND_PATIENCE: Duration = Duration::from_secs(5);
const REBIND_RETRY: Duration = Duration::from_millis(20);
/// After a failed accept (e.g. out of file descriptors): back off instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Serves one accepted connection until it ends or its scope is cancelled.
pub type Handler =
    Arc<dyn Fn(TcpStream, Scope) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The run a connection belongs to: `cancel` fires on stop(); work spawned on
/// `tracker` (e.g. an upgraded session) is waited for by stop().
#[derive(Clone)]
pub struct Scope {
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
}

/// A server on one address, stoppable and restartable. Dropping it stops it.
pub struct Restartable {
    name: String,
    addr: SocketAddr,
    handler: Handler,
    /// The current run; None while stopped. Written by stop/restart, read by is_running.
    run: Mutex<Option<Run>>,
}

/// One accept loop and its connections; cancelling the token ends them all.
struct Run {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Restartable {
    /// Binds `addr` (port 0 allowed) and serves each connection with `handler`.
    pub fn start(name: &str, addr: SocketAddr, handler: Handler) -> io::Result<Restartable> {
        let listener = bind(addr)?;
        let server = Restartable {
            name: name.to_owned(),
            addr: listener.local_addr()?,
            handler,
            run: Mutex::new(None),
        };
        *lock(&server.run) = Some(server.spawn(listener));
        Ok(server)
    }

    /// The bound address, with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and every open connection. Returns once the listener is
    /// closed, so a connect right after is refused.
    pub async fn stop(&self) {
        let run = lock(&self.run).take();
        if let Some(run) = run {
            run.cancel.cancel();
            run.tracker.close();
            run.tracker.wait().await;
        }
    }

    /// Binds the same address again and serves. A no-op if already running.
    pub async fn restart(&self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let listener = bind_with_retry(self.addr).await?;
        let mut run = lock(&self.run);
        // A concurrent restart may have won; then our listener is simply dropped.
        if run.is_none() {
            *run = Some(self.spawn(listener));
        }
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        lock(&self.run).is_some()
    }

    fn spawn(&self, listener: TcpListener) -> Run {
        let run = Run {
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        let accept = accept_loop(
            listener,
            self.name.clone(),
            Arc::clone(&self.handler),
            run.cancel.clone(),
            run.tracker.clone(),
        );
        run.tracker.spawn(accept);
        run
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        if let Some(run) = lock(&self.run).take() {
            run.cancel.cancel();
        }
    }
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// SO_REUSEADDR lets a restart bind while old connections sit in TIME_WAIT.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn bind_with_retry(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + REBIND_PATIENCE;
    loop {
        match bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                sleep(REBIND_RETRY).await;
            }
            result => return result,
        }
    }
}

/// Accepts until cancelled; returning drops (closes) the listener.
async fn accept_loop(
    listener: TcpListener,
    name: String,
    handler: Handler,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    // The connections end only once the listener is closed: otherwise a client that
    // saw its connection drop could still connect (into the backlog) and then be
    // reset, which a killed process's clients never see twice in a row.
    let connections = CancellationToken::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                drop(listener);
                connections.cancel();
                return;
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let scope = Scope {
                    cancel: connections.clone(),
                    tracker: tracker.clone(),
                };
                tracker.spawn(handler(stream, scope));
            }
            Err(error) => {
                tracing::debug!(server = %name, %error, "accept failed");
                sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}
