//! Memory and streaming measurements of one proxy: RSS while a client downloads a
//! large body fast and slowly, how late slow chunks arrive, and RSS per idle
//! keep-alive connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::upstream::unix_nanos;
use crate::common::procfs::{self, RssSampler};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// A whole 1 GiB download must finish within this, or it counts as failed.
const STREAM_LIMIT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections are opened this many at a time.
const OPEN_CONCURRENCY: usize = 200;

/// RSS around a download.
#[derive(Debug, Clone, Copy)]
pub struct Streamed {
    pub before_kib: u64,
    pub peak_kib: u64,
    pub mib_per_s: f64,
}

/// Downloads `/bytes?n=size` through `addr` as fast as the client can read, sampling
/// the RSS of `pid`'s tree meanwhile.
pub async fn stream(addr: SocketAddr, pid: u32, size: u64) -> Result<Streamed, String> {
    let before_kib = rss(pid)?;
    let sampler = RssSampler::start(pid, SAMPLE_EVERY);
    let started = Instant::now();
    let read = tokio::time::timeout(STREAM_LIMIT, download(addr, size)).await;
    let peak_kib = sampler.finish();
    let received = read
        .map_err(|_| format!("the {size}-byte download did not finish within {STREAM_LIMIT:?}"))?
        .map_err(|e| format!("download through {addr}: {e}"))?;
    if received != size {
        return Err(format!(
            "download through {addr}: got {received} of {size} bytes"
        ));
    }
    let mib = size as f64 / (1024.0 * 1024.0);
    Ok(Streamed {
        before_kib,
        peak_kib,
        mib_per_s: mib / started.elapsed().as_secs_f64(),
    })
}

async fn download(addr: SocketAddr, size: u64) -> Result<u64, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get(format!("/bytes?n={size}"))
        .header(HOST, "bench")
        .body(Empty::<Bytes>::new())?;
    let mut body = sender.send_request(request).await?.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            received += data.len() as u64;
        }
    }
    Ok(received)
}

/// Reads `/bytes?n=1GiB` through `addr` at about `rate` bytes/s for `duration`, then
/// hangs up: how much of the response does the proxy hold for a slow client?
pub async fn slow_client(
    addr: SocketAddr,
    pid: u32,
    rate: u64,
    duration: Duration,
) -> Result<Streamed, String> {
    let before_kib = rss(pid)?;
    let sampler = RssSampler::start(pid, SAMPLE_EVERY);
    let read = read_slowly(addr, rate, duration).await;
    // Let the proxy notice a full socket buffer before the last sample.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let peak_kib = sampler.finish();
    let received = read.map_err(|e| format!("slow read through {addr}: {e}"))?;
    Ok(Streamed {
        before_kib,
        peak_kib,
        mib_per_s: received as f64 / (1024.0 * 1024.0) / duration.as_secs_f64(),
    })
}

async fn read_slowly(addr: SocketAddr, rate: u64, duration: Duration) -> Result<u64, BoxError> {
    const STEP: Duration = Duration::from_millis(10);
    let mut stream = connect(addr).await?;
    stream
        .write_all(b"GET /bytes?n=1073741824 HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await?;
    let per_step = (rate as f64 * STEP.as_secs_f64()).max(1.0) as usize;
    let mut buffer = vec![0u8; per_step];
    let started = Instant::now();
    let mut received = 0u64;
    while started.elapsed() < duration {
        let n = tokio::time::timeout(STEP * 10, stream.read(&mut buffer)).await??;
        if n == 0 {
            break;
        }
        received += n as u64;
        tokio::time::sleep(STEP).await;
    }
    Ok(received)
}

/// Delay of each `/slow` chunk from the upstream writing it to the client reading it.
pub async fn chunk_delays(
    addr: SocketAddr,
    chunks: u64,
    delay_ms: u64,
) -> Result<Vec<f64>, String> {
    let limit = Duration::from_millis(chunks * delay_ms) + Duration::from_secs(10);
    tokio::time::timeout(limit, read_chunks(addr, chunks, delay_ms))
        .await
        .map_err(|_| format!("the slow stream through {addr} did not end within {limit:?}"))?
        .map_err(|e| format!("slow stream through {addr}: {e}"))
}

async fn read_chunks(addr: SocketAddr, chunks: u64, delay_ms: u64) -> Result<Vec<f64>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get(format!("/slow?chunks={chunks}&delay_ms={delay_ms}"))
        .header(HOST, "bench")
        .body(Empty::<Bytes>::new())?;
    let mut body = sender.send_request(request).await?.into_body();
    let mut pending = Vec::new();
    let mut delays = Vec::new();
    while let Some(frame) = body.frame().await {
        let Some(data) = frame?.data_ref().cloned() else {
            continue;
        };
        let now = unix_nanos();
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(sent) = sent_at(&line) {
                delays.push(now.saturating_sub(sent) as f64 / 1e6);
            }
        }
    }
    Ok(delays)
}

/// `<index> <unix ns>\n` → the ns.
fn sent_at(line: &[u8]) -> Option<u128> {
    let text = std::str::from_utf8(line).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// RSS per idle keep-alive connection.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    pub wanted: usize,
    pub opened: usize,
    pub before_kib: u64,
    pub after_kib: u64,
}

impl Idle {
    pub fn per_connection_kib(&self) -> Option<f64> {
        (self.opened > 0)
            .then(|| self.after_kib.saturating_sub(self.before_kib) as f64 / self.opened as f64)
    }
}

/// Opens `count` connections to `addr`, sends one keep-alive `GET /` on each and reads
/// the answer, then holds them all open while measuring `pid`'s RSS.
pub async fn idle_connections(addr: SocketAddr, pid: u32, count: usize) -> Result<Idle, String> {
    let before_kib = rss(pid)?;
    let permits = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let permits = Arc::clone(&permits);
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire().await.ok()?;
            one_idle(addr).await.ok()
        }));
    }
    let mut open = Vec::with_capacity(count);
    for task in tasks {
        if let Ok(Some(stream)) = task.await {
            open.push(stream);
        }
    }
    // Let the proxy settle (buffers shrink, pooled upstream connections go idle).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_kib = rss(pid)?;
    let opened = open.len();
    drop(open);
    Ok(Idle {
        wanted: count,
        opened,
        before_kib,
        after_kib,
    })
}

async fn one_idle(addr: SocketAddr) -> Result<TcpStream, BoxError> {
    let mut stream = connect(addr).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n")
        .await?;
    tokio::time::timeout(CONNECT_TIMEOUT, read_response(&mut stream)).await??;
    Ok(stream)
}

/// Reads one response with a content-length (what the upstream always sends for `/`).
async fn read_response(stream: &mut TcpStream) -> Result<(), BoxError> {
    let mut buffer = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed before the response ended".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let length = content_length(&buffer[..head_end]).ok_or("no content-length")?;
            if buffer.len() >= head_end + 4 + length {
                return Ok(());
            }
        }
    }
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, BoxError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn rss(pid: u32) -> Result<u64, String> {
    procfs::usage(pid)
        .map(|u| u.rss_kib)
        .map_err(|e| format!("reading /proc/{pid}: {e}"))
}
