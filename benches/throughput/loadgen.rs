//! The Rust load generator, used when wrk is not installed (and in smoke runs without
//! wrk): like `wrk -t1`, one thread, N connections, each sending its next request as
//! soon as the previous response is read (closed loop).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONNECTION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Measured;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// No single request may hang the run: past this it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// After an error, wait this long before the next attempt (no spinning on refusals).
const ERROR_PAUSE: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub addr: SocketAddr,
    pub connections: usize,
    pub duration: Duration,
    pub keep_alive: bool,
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    non_2xx: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

/// Runs `load` on a fresh single-threaded runtime and summarises it.
pub fn run(load: Load) -> Measured {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the load generator's runtime");
    let started = Instant::now();
    let tallies = runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + load.duration;
        let tasks: Vec<_> = (0..load.connections)
            .map(|_| tokio::spawn(connection_loop(load, deadline)))
            .collect();
        let mut tallies = Vec::with_capacity(tasks.len());
        for task in tasks {
            tallies.push(task.await.unwrap_or_default());
        }
        tallies
    });
    summarise(tallies, started.elapsed())
}

fn summarise(tallies: Vec<Tally>, elapsed: Duration) -> Measured {
    let mut latencies: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let percentile = |p: usize| -> f64 {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |us| f64::from(*us) / 1000.0)
    };
    let ok: u64 = tallies.iter().map(|t| t.ok).sum();
    let non_2xx: u64 = tallies.iter().map(|t| t.non_2xx).sum();
    Measured {
        requests: ok + non_2xx,
        rps: (ok + non_2xx) as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(50),
        p99_ms: percentile(99),
        errors: tallies.iter().map(|t| t.errors).sum::<u64>() + non_2xx,
    }
}

async fn connection_loop(load: Load, deadline: tokio::time::Instant) -> Tally {
    let mut tally = Tally::default();
    let mut sender = None;
    while tokio::time::Instant::now() < deadline {
        let started = Instant::now();
        let attempt = tokio::time::timeout(REQUEST_TIMEOUT, request(&mut sender, load)).await;
        match attempt {
            Ok(Ok(status)) if status.is_success() => {
                tally.ok += 1;
                let micros = started.elapsed().as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Ok(Ok(_)) => tally.non_2xx += 1,
            Ok(Err(_)) | Err(_) => {
                tally.errors += 1;
                sender = None;
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    tally
}

/// One `GET /`, its body read to the end; opens a connection when there is none.
async fn request(
    sender: &mut Option<SendRequest<Empty<Bytes>>>,
    load: Load,
) -> Result<hyper::StatusCode, BoxError> {
    let mut connection = match sender.take() {
        Some(connection) => connection,
        None => connect(load.addr).await?,
    };
    let request = Request::get("/")
        .header(HOST, "bench")
        .header(
            CONNECTION,
            if load.keep_alive {
                "keep-alive"
            } else {
                "close"
            },
        )
        .body(Empty::new())?;
    connection.ready().await?;
    let response = connection.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    if load.keep_alive {
        *sender = Some(connection);
    }
    Ok(status)
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}
