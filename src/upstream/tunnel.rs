//! Copies bytes both ways between two streams (an upgraded WebSocket, a TCP forward)
//! until both directions are done, the pair has been silent for the idle timeout, or
//! the master is drained.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::upstream::attachments::Attachment;

/// Big enough for bulk transfers, small enough that 10,000 tunnels stay cheap.
const BUFFER: usize = 16 * 1024;

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed (or one failed).
    Closed,
    /// Silent for longer than the idle timeout.
    Idle,
    /// Its master was drained or the daemon is stopping.
    Drained,
}

/// Pipes `a` and `b` until the tunnel ends; returns how, and the bytes a->b and b->a.
pub async fn pipe<A, B>(
    a: A,
    b: B,
    idle_timeout: Option<Duration>,
    attachment: &Attachment,
) -> (End, u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    // Milliseconds since `started` of the last byte in either direction.
    let last_activity = AtomicU64::new(0);
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let forward = copy(&mut a_read, &mut b_write, &last_activity, started);
    let backward = copy(&mut b_read, &mut a_write, &last_activity, started);
    let both = async { tokio::join!(forward, backward) };
    tokio::select! {
        (sent, received) = both => (End::Closed, sent, received),
        () = idle(idle_timeout, &last_activity, started) => (End::Idle, 0, 0),
        () = attachment.closed() => (End::Drained, 0, 0),
    }
}

/// Copies until EOF or an error, then shuts the writer down (half-close passes on).
async fn copy<R, W>(
    reader: &mut R,
    writer: &mut W,
    last_activity: &AtomicU64,
    started: Instant,
) -> u64
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        last_activity.store(elapsed_ms(started), Ordering::Relaxed);
        if writer.write_all(&buffer[..n]).await.is_err() || writer.flush().await.is_err() {
            break;
        }
        total += n as u64;
    }
    let _ = writer.shutdown().await;
    total
}

/// Completes once nothing has moved for `timeout`; never without a timeout.
async fn idle(timeout: Option<Duration>, last_activity: &AtomicU64, started: Instant) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
        let deadline = started + last + timeout;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
