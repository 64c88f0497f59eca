//! The fast upstream: a minimal hyper HTTP/1.1 server, run as a separate process (this
//! bench binary again, with `--serve-upstream`) on its own tokio runtime, so its
//! threads are scheduled by the kernel like any other server's and do not share a
//! runtime with the load generator. Why not the library's `SampleMaster`: it records
//! every request (headers copied into a locked queue), which would make the upstream,
//! not the proxy, the bottleneck.
//!
//! - `GET /` (and any other path, including the health path): 1 KiB, content-length.
//! - `/bytes?n=N`: N bytes in 64 KiB frames from a static buffer (no allocation).
//! - `/slow?chunks=N&delay_ms=M`: N chunks M ms apart; each chunk is
//!   `<index> <unix time in ns when sent>\n`, so the client can measure the delay.

use std::convert::Infallible;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jenkins_ha_proxy::sample::query_u64;
use tokio::net::TcpListener;
use tokio::time::Sleep;

/// First argument that turns the bench binary into the upstream.
pub const ARG: &str = "--serve-upstream";
pub const BODY_SIZE: usize = 1024;
const CHUNK: usize = 64 * 1024;
static FILLER: [u8; CHUNK] = [b'x'; CHUNK];

/// Starts the upstream as a process of its own (this bench binary with [`ARG`]),
/// listening on a primary (127.0.0.2) and a backup (127.0.0.3) address; its log goes
/// to `dir/upstream.log`.
pub fn spawn(
    dir: &std::path::Path,
) -> Result<(crate::common::child::Child, SocketAddr, SocketAddr), String> {
    use crate::common::child::{self, Child, Stop};
    let primary = child::free_port([127, 0, 0, 2])?;
    let backup = child::free_port([127, 0, 0, 3])?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let args = [
        ARG.to_owned(),
        threads.to_string(),
        primary.to_string(),
        backup.to_string(),
    ];
    let command = child::self_command(&args)?;
    let mut upstream = Child::spawn("upstream", command, &dir.join("upstream.log"), Stop::Kill)?;
    child::wait_for_port(&mut upstream, primary, Duration::from_secs(10))?;
    child::wait_for_port(&mut upstream, backup, Duration::from_secs(10))?;
    Ok((upstream, primary, backup))
}

/// `--serve-upstream THREADS ADDR...`: serves until stdin closes.
pub fn main(args: &[String]) -> ExitCode {
    let Some((threads, addrs)) = parse_args(args) else {
        eprintln!("usage: {ARG} THREADS ADDR [ADDR...]");
        return ExitCode::FAILURE;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("building the upstream's runtime");
    exit_when_stdin_closes();
    runtime.block_on(async {
        let mut listeners = Vec::new();
        for addr in &addrs {
            match TcpListener::bind(addr).await {
                Ok(listener) => listeners.push(listener),
                Err(error) => {
                    eprintln!("upstream: cannot bind {addr}: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let accepting: Vec<_> = listeners
            .into_iter()
            .map(|l| tokio::spawn(accept(l)))
            .collect();
        for task in accepting {
            let _ = task.await;
        }
        ExitCode::SUCCESS
    })
}

fn parse_args(args: &[String]) -> Option<(usize, Vec<SocketAddr>)> {
    let (threads, addrs) = args.split_first()?;
    let addrs: Option<Vec<SocketAddr>> = addrs.iter().map(|a| a.parse().ok()).collect();
    Some((threads.parse().ok()?, addrs.filter(|a| !a.is_empty())?))
}

/// The bench holds our stdin; when it exits (or dies), we follow.
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

async fn accept(listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req| async move { Ok::<_, Infallible>(route(&req)) });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(req: &Request<Incoming>) -> Response<UpBody> {
    let query = req.uri().query().unwrap_or("");
    let (body, length) = match req.uri().path() {
        "/bytes" => {
            let n = query_u64(query, "n").unwrap_or(BODY_SIZE as u64);
            (UpBody::Filler { remaining: n }, Some(n))
        }
        "/slow" => (slow(query), None),
        _ => {
            let body = Bytes::from_static(&FILLER[..BODY_SIZE]);
            (UpBody::Once(Some(body)), Some(BODY_SIZE as u64))
        }
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(length) = length {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

fn slow(query: &str) -> UpBody {
    UpBody::Slow {
        next: 0,
        chunks: query_u64(query, "chunks").unwrap_or(10),
        delay: Duration::from_millis(query_u64(query, "delay_ms").unwrap_or(100)),
        sleep: None,
    }
}

/// Nanoseconds since the Unix epoch (the same clock on both ends: one machine).
pub fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The three response bodies, without boxing.
enum UpBody {
    Once(Option<Bytes>),
    Filler {
        remaining: u64,
    },
    Slow {
        next: u64,
        chunks: u64,
        delay: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
    },
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            UpBody::Once(body) => body.take(),
            UpBody::Filler { remaining } => {
                let n = (*remaining).min(CHUNK as u64) as usize;
                *remaining -= n as u64;
                (n > 0).then(|| Bytes::from_static(&FILLER[..n]))
            }
            UpBody::Slow {
                next,
                chunks,
                delay,
                sleep,
            } => {
                if *next >= *chunks {
                    return Poll::Ready(None);
                }
                if let Some(sleep) = sleep.as_mut() {
                    ready!(sleep.as_mut().poll(cx));
                }
                let chunk = format!("{next} {}\n", unix_nanos());
                *next += 1;
                *sleep = Some(Box::pin(tokio::time::sleep(*delay)));
                Some(Bytes::from(chunk))
            }
        };
        Poll::Ready(frame.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Once(body) => body.is_none(),
            UpBody::Filler { remaining } => *remaining == 0,
            UpBody::Slow { next, chunks, .. } => next >= chunks,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Once(Some(body)) => SizeHint::with_exact(body.len() as u64),
            UpBody::Once(None) => SizeHint::with_exact(0),
            UpBody::Filler { remaining } => SizeHint::with_exact(*remaining),
            UpBody::Slow { .. } => SizeHint::default(),
        }
    }
}
