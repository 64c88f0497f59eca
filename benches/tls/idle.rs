//! TLS clients for the bench: one request to see a proxy answer over https, and many
//! idle connections (a handshake and one request each, then kept open) to weigh them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::common::procfs;

/// Handshakes in flight at once while opening the idle connections.
const OPEN_CONCURRENCY: usize = 64;
const DEADLINE: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// RSS before and after `opened` of `wanted` idle TLS connections were opened.
#[derive(Debug)]
pub struct Idle {
    wanted: usize,
    opened: usize,
    before_kib: u64,
    after_kib: u64,
}

impl Idle {
    pub fn describe(&self) -> String {
        let per = (self.opened > 0)
            .then(|| self.after_kib.saturating_sub(self.before_kib) as f64 / self.opened as f64);
        format!(
            "{} per connection ({} of {} open, RSS {} -> {})",
            per.map_or("-".to_owned(), |kib| format!("{kib:.1} KiB")),
            self.opened,
            self.wanted,
            crate::common::report::mib(self.before_kib as f64),
            crate::common::report::mib(self.after_kib as f64),
        )
    }
}

fn connector(ca_pem: &str) -> Result<tokio_rustls::TlsConnector, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A handshake and `GET /`; the connection is returned open.
async fn open(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> Result<SendRequest<Empty<Bytes>>, BoxError> {
    let tcp = tokio::time::timeout(DEADLINE, TcpStream::connect(addr)).await??;
    let name = ServerName::try_from("localhost")?;
    let tls = tokio::time::timeout(DEADLINE, connector.connect(name, tcp)).await??;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/")
        .header("host", "localhost")
        .body(Empty::new())?;
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request)).await??;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()).into());
    }
    response.into_body().collect().await?;
    Ok(sender)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("building a runtime: {e}"))
}

/// One request over https, for readiness.
pub fn one_request(addr: SocketAddr, ca_pem: &str) -> Result<(), String> {
    runtime()?.block_on(async {
        let connector = connector(ca_pem).map_err(|e| e.to_string())?;
        open(addr, &connector)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

/// Opens `count` idle TLS connections to `addr` and reads the RSS of `pid` before
/// and after.
pub fn measure(addr: SocketAddr, pid: u32, count: usize, ca_pem: &str) -> Result<Idle, String> {
    runtime()?.block_on(async {
        let connector = Arc::new(connector(ca_pem).map_err(|e| e.to_string())?);
        let before_kib = rss(pid)?;
        let permits = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
        let mut tasks = Vec::with_capacity(count);
        for _ in 0..count {
            let (permits, connector) = (Arc::clone(&permits), Arc::clone(&connector));
            tasks.push(tokio::spawn(async move {
                let _permit = permits.acquire().await.ok()?;
                open(addr, &connector).await.ok()
            }));
        }
        let mut open_senders = Vec::with_capacity(count);
        for task in tasks {
            if let Ok(Some(sender)) = task.await {
                open_senders.push(sender);
            }
        }
        // Let the proxy settle (handshake buffers freed, upstream connections idle).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after_kib = rss(pid)?;
        Ok(Idle {
            wanted: count,
            opened: open_senders.len(),
            before_kib,
            after_kib,
        })
    })
}

fn rss(pid: u32) -> Result<u64, String> {
    procfs::usage(pid)
        .map(|u| u.rss_kib)
        .map_err(|e| format!("reading /proc/{pid}: {e}"))
}
