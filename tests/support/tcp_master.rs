//! A raw TCP peer standing in for a Jenkins master's inbound-agent (JNLP) port, and
//! client helpers, for tests that check the proxy forwards TCP to the active master.
//!
//! For each connection the server first writes a greeting line `<name>\n`, then
//! echoes every byte it receives.
#![allow(dead_code)] // each test binary uses a different part

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jenkins_ha_proxy::sample::server::{Handler, Restartable, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

/// A `[[tcp]]` forward named "agents" on an ephemeral loopback port to the masters'
/// `backend_port`, every other setting at its default.
pub fn agents_forward(backend_port: u16) -> jenkins_ha_proxy::config::TcpConfig {
    jenkins_ha_proxy::config::TcpConfig {
        name: "agents".into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        backend_port,
        advertise_host: None,
        advertise_port: None,
        idle_timeout: None,
        max_connections: jenkins_ha_proxy::config::DEFAULT_TCP_MAX_CONNECTIONS,
    }
}

/// Every client-side wait (greeting, exchange) gives up after this.
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);
const ECHO_BUFFER: usize = 16 * 1024;
/// read_greeting() gives up on a line longer than this.
const MAX_GREETING: usize = 1024;

/// A running (or stopped) TCP echo master. Clones share the same server; it shuts
/// down when stop() is called or the last clone is dropped.
#[derive(Clone)]
pub struct TcpMaster {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// The listener and its connections; stopped and restarted on the same address.
    server: Restartable,
}

/// Written by the connection tasks, read by the test-facing methods.
struct Shared {
    name: String,
    open: AtomicUsize,
    total: AtomicUsize,
}

impl TcpMaster {
    /// Binds `addr` (port 0 allowed, e.g. "127.0.0.2:0") and serves until stop()/drop.
    pub async fn start(name: &str, addr: SocketAddr) -> io::Result<TcpMaster> {
        if name.contains('\n') {
            let msg = "name must not contain a newline";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            open: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
        });
        let served = Arc::clone(&shared);
        let handler: Handler = Arc::new(move |stream, scope: Scope| {
            Box::pin(serve(stream, Arc::clone(&served), scope.cancel))
        });
        let server = Restartable::start(name, addr, handler)?;
        let inner = Inner { shared, server };
        Ok(TcpMaster {
            inner: Arc::new(inner),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The bound address, with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.inner.server.addr()
    }

    /// Connections open now (accepted and not yet ended).
    pub fn open_connections(&self) -> usize {
        self.inner.shared.open.load(Ordering::SeqCst)
    }

    /// Connections accepted since start (not reset by stop/restart).
    pub fn total_connections(&self) -> usize {
        self.inner.shared.total.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection at once, like a killed process.
    /// Returns once the listener is closed, so a connect right after is refused.
    pub async fn stop(&self) {
        self.inner.server.stop().await;
    }

    /// Binds the same address again and serves. A no-op if already running.
    pub async fn restart(&self) -> io::Result<()> {
        self.inner.server.restart().await
    }

    pub fn is_running(&self) -> bool {
        self.inner.server.is_running()
    }
}

impl std::fmt::Debug for TcpMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpMaster")
            .field("name", &self.name())
            .field("addr", &self.addr())
            .field("running", &self.is_running())
            .field("open_connections", &self.open_connections())
            .finish()
    }
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection: greet and echo until the peer closes, or `cancel` drops the
/// socket like a killed process.
async fn serve(stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let conn = ConnGuard::new(shared);
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {}
        result = greet_and_echo(stream, &conn.shared.name) => {
            if let Err(error) = result {
                tracing::debug!(master = %conn.shared.name, %error, "tcp echo ended");
            }
        }
    }
}

/// Writes `<name>\n`, then echoes until the peer closes its side (or an error).
async fn greet_and_echo(mut stream: TcpStream, name: &str) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    stream.write_all(format!("{name}\n").as_bytes()).await?;
    let mut buf = vec![0; ECHO_BUFFER];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// Keeps `open` counting a connection for as long as its task lives.
struct ConnGuard {
    shared: Arc<Shared>,
}

impl ConnGuard {
    fn new(shared: Arc<Shared>) -> ConnGuard {
        shared.total.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        ConnGuard { shared }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Writes `msg` and reads exactly `msg.len()` bytes back, all within the deadline.
/// Writing and reading run concurrently, so a message larger than the socket
/// buffers cannot deadlock against the echo.
pub async fn tcp_exchange(stream: &mut TcpStream, msg: &[u8]) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let (mut reader, mut writer) = stream.split();
    let write = async {
        writer
            .write_all(msg)
            .await
            .map_err(|e| format!("write: {e}"))
    };
    let read = async {
        let mut back = vec![0; msg.len()];
        reader
            .read_exact(&mut back)
            .await
            .map_err(|e| format!("read {} bytes: {e}", msg.len()))?;
        Ok(back)
    };
    let exchange = async { tokio::try_join!(write, read).map(|((), back)| back) };
    timeout_at(deadline, exchange)
        .await
        .map_err(|_| format!("exchange timed out after {CLIENT_DEADLINE:?}"))?
}

/// Reads the greeting line (byte by byte, so nothing after it is consumed) and
/// returns it without the newline; Err on EOF, error, or no line within the deadline.
pub async fn read_greeting(stream: &mut TcpStream) -> Result<String, String> {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let read_line = async {
        let mut line = Vec::new();
        loop {
            let byte = stream.read_u8().await.map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    format!("EOF after {} bytes of greeting", line.len())
                }
                _ => format!("read greeting: {e}"),
            })?;
            if byte == b'\n' {
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if line.len() >= MAX_GREETING {
                return Err(format!("greeting longer than {MAX_GREETING} bytes"));
            }
            line.push(byte);
        }
    };
    timeout_at(deadline, read_line)
        .await
        .map_err(|_| format!("no greeting within {CLIENT_DEADLINE:?}"))?
}

/// True if the peer closes the connection (EOF) or it fails within `d`; bytes
/// arriving meanwhile are read and discarded.
pub async fn tcp_closed_within(stream: &mut TcpStream, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    let mut buf = [0u8; 4096];
    loop {
        match timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}
