//! Soak masters, each in its own process, so that SIGKILL, SIGSTOP/SIGCONT and a
//! restart are real. The child is this bench binary run as
//! `--serve-soak-master NAME HTTP_ADDR TCP_ADDR`:
//!
//! - on HTTP_ADDR (the backend URL): `/login` (200 `ok`, 503 while sick), `/bytes?n=N`
//!   (N bytes with a content-length, 64 KiB at a time), `/slow?chunks=N&delay_ms=M`
//!   (N lines `chunk i\n`, M ms apart, chunked), a WebSocket echo on any upgrade
//!   request (Text and Binary sent back as they are), and `hello from NAME\n` for
//!   anything else. Every response carries `X-Master: NAME`.
//! - on TCP_ADDR (the `[[tcp]]` backend port): the greeting `NAME\n`, then an echo.
//!
//! The library's `SampleMaster` has no WebSocket echo and no agent port, hence this
//! small server. Health is switched by lines on stdin (`sick`, `well`), outside the
//! proxy's path; the process exits when its stdin closes (the bench is gone).

use std::convert::Infallible;
use std::io::{self, BufRead};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jenkins_ha_proxy::sample::query_u64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::common::master::MasterChild;
use crate::common::sys::Signal;

pub const ARG: &str = "--serve-soak-master";
/// A restarted master binds while its old connections may sit in TIME_WAIT.
const REBIND_PATIENCE: Duration = Duration::from_secs(5);
const CHUNK: usize = 64 * 1024;
static FILLER: [u8; CHUNK] = [b'x'; CHUNK];

type ResBody = BoxBody<Bytes, Infallible>;

struct Master {
    name: String,
    header: HeaderValue,
    healthy: AtomicBool,
}

/// `--serve-soak-master NAME HTTP_ADDR TCP_ADDR`: serves until stdin closes.
pub fn main(args: &[String]) -> ExitCode {
    let parsed = (
        args.first(),
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2).and_then(|a| a.parse::<SocketAddr>().ok()),
    );
    let (Some(name), Some(http_addr), Some(tcp_addr)) = parsed else {
        eprintln!("usage: {ARG} NAME HTTP_ADDR TCP_ADDR");
        return ExitCode::FAILURE;
    };
    let Ok(header) = HeaderValue::from_str(name) else {
        eprintln!("soak master: {name:?} is not a valid header value");
        return ExitCode::FAILURE;
    };
    let master = Arc::new(Master {
        name: name.clone(),
        header,
        healthy: AtomicBool::new(true),
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("soak master {name}: building the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let bound = runtime.block_on(async {
        let http = bind_with_retry(http_addr).await?;
        let tcp = bind_with_retry(tcp_addr).await?;
        Ok::<_, io::Error>((http, tcp))
    });
    let (http, tcp) = match bound {
        Ok(bound) => bound,
        Err(error) => {
            eprintln!("soak master {name}: cannot bind {http_addr} and {tcp_addr}: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.spawn(serve_http(http, Arc::clone(&master)));
    runtime.spawn(serve_tcp(tcp, Arc::clone(&master)));
    // Health commands on the main thread; the runtime serves meanwhile.
    for line in io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("sick") => master.healthy.store(false, Ordering::SeqCst),
            Ok("well") => master.healthy.store(true, Ordering::SeqCst),
            Ok(other) => eprintln!("soak master: unknown command {other:?}"),
            Err(_) => break,
        }
    }
    ExitCode::SUCCESS
}

async fn bind_with_retry(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + REBIND_PATIENCE;
    loop {
        let attempt = (|| {
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(1024)
        })();
        match attempt {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

async fn serve_http(listener: TcpListener, master: Arc<Master>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let master = Arc::clone(&master);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let master = Arc::clone(&master);
                async move { Ok::<_, Infallible>(handle(&master, req)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn handle(master: &Arc<Master>, req: Request<Incoming>) -> Response<ResBody> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let mut res = if is_websocket(&req) {
        websocket(req)
    } else {
        match req.uri().path() {
            "/login" if master.healthy.load(Ordering::SeqCst) => text(StatusCode::OK, "ok"),
            "/login" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Jenkins is getting ready to work",
            ),
            "/bytes" => bytes(query_u64(&query, "n").unwrap_or(1024)),
            "/slow" => slow(
                query_u64(&query, "chunks").unwrap_or(5),
                query_u64(&query, "delay_ms").unwrap_or(100),
            ),
            _ => text(StatusCode::OK, format!("hello from {}\n", master.name)),
        }
    };
    res.headers_mut().insert("x-master", master.header.clone());
    res
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResBody> {
    let mut res = Response::new(Full::new(body.into()).boxed());
    *res.status_mut() = status;
    res
}

fn bytes(n: u64) -> Response<ResBody> {
    let frames = stream::iter((0..n.div_ceil(CHUNK as u64)).map(move |i| {
        let len = (n - i * CHUNK as u64).min(CHUNK as u64) as usize;
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(&FILLER[..len])))
    }));
    let mut res = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    res.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(n));
    res
}

/// The body of `/slow`: what the client must receive in full.
pub fn slow_body(chunks: u64) -> String {
    (0..chunks).map(|i| format!("chunk {i}\n")).collect()
}

fn slow(chunks: u64, delay_ms: u64) -> Response<ResBody> {
    let frames = stream::unfold(0u64, move |i| async move {
        if i >= chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        let frame = Frame::data(Bytes::from(format!("chunk {i}\n")));
        Some((Ok::<_, Infallible>(frame), i + 1))
    });
    Response::new(BodyExt::boxed(StreamBody::new(frames)))
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    let has = |name, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has(CONNECTION, "upgrade") && has(UPGRADE, "websocket")
}

/// The server half of the RFC 6455 handshake, then an echo session in its own task.
fn websocket(mut req: Request<Incoming>) -> Response<ResBody> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "bad accept key\n");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        // tungstenite answers Ping and Close itself while the stream is polled.
        while let Some(Ok(message)) = ws.next().await {
            if matches!(message, Message::Text(_) | Message::Binary(_))
                && ws.send(message).await.is_err()
            {
                return;
            }
        }
    });
    let mut res = text(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let headers = res.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert("sec-websocket-accept", accept);
    res
}

/// The agent port: greeting `NAME\n`, then every byte back until the peer closes.
async fn serve_tcp(listener: TcpListener, master: Arc<Master>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let greeting = format!("{}\n", master.name);
        tokio::spawn(async move {
            let _ = greet_and_echo(stream, greeting.as_bytes()).await;
        });
    }
}

async fn greet_and_echo(mut stream: TcpStream, greeting: &[u8]) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    stream.write_all(greeting).await?;
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// What the chaos has done to a master process (the bench's view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Running,
    Killed,
    Frozen,
    Sick,
}

/// The bench's handle on one soak master process.
pub struct MasterProcess {
    pub name: String,
    pub http: SocketAddr,
    pub tcp: SocketAddr,
    pub condition: Condition,
    process: MasterChild,
}

impl MasterProcess {
    /// Starts the master and waits until it answers its health path.
    pub fn start(
        name: &str,
        http: SocketAddr,
        tcp: SocketAddr,
        dir: &Path,
    ) -> Result<MasterProcess, String> {
        let mut master = MasterProcess {
            name: name.to_owned(),
            http,
            tcp,
            condition: Condition::Running,
            // One log per start would pile up over a long soak: keep the last two.
            process: MasterChild::new(name, dir, 2),
        };
        master.spawn()?;
        Ok(master)
    }

    /// Starts the process (again) on the same addresses. Call from the main thread.
    pub fn spawn(&mut self) -> Result<(), String> {
        let args = [
            ARG.to_owned(),
            self.name.clone(),
            self.http.to_string(),
            self.tcp.to_string(),
        ];
        self.process.spawn(&args, self.http)?;
        self.condition = Condition::Running;
        Ok(())
    }

    /// SIGKILL, like a crashed JVM: the kernel resets its connections.
    pub fn kill(&mut self) -> Result<(), String> {
        self.process.kill()?;
        self.condition = Condition::Killed;
        Ok(())
    }

    pub fn freeze(&mut self) -> Result<(), String> {
        self.process.signal(Signal::Stop)?;
        self.condition = Condition::Frozen;
        Ok(())
    }

    pub fn thaw(&mut self) -> Result<(), String> {
        self.process.signal(Signal::Cont)?;
        self.condition = Condition::Running;
        Ok(())
    }

    /// Health path answers 503 (`false`) or 200 (`true`).
    pub fn set_healthy(&mut self, healthy: bool) -> Result<(), String> {
        self.process.set_healthy(healthy)?;
        self.condition = if healthy {
            Condition::Running
        } else {
            Condition::Sick
        };
        Ok(())
    }

    /// Undoes whatever the chaos did: restart, SIGCONT, or health 200.
    pub fn recover(&mut self) -> Result<(), String> {
        match self.condition {
            Condition::Running => Ok(()),
            Condition::Killed => self.spawn(),
            Condition::Frozen => self.thaw(),
            Condition::Sick => self.set_healthy(true),
        }
    }

    /// Some(status) if the process exited without being killed by the chaos.
    pub fn died(&mut self) -> Option<String> {
        self.process.exited().map(|status| status.to_string())
    }
}
