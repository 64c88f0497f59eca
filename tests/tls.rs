//! HTTPS on the proxy listener (`[proxy.tls]`): HTTP/1.1 and h2 by ALPN (curl, a real
//! TLS peer), WebSocket over TLS, certificate reload without dropping anything, bad
//! certificates refused, slow handshakes bounded, and the redirect listener.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use jenkins_ha_proxy::sample::SampleMaster;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use support::certs::{temp_dir, write, Issued, TestCa, Validity};
use support::ws_master::{ws_handshake, WsMaster};
use support::{get, Reply, TestDaemon, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_jenkins-ha-proxy");

/// A CA, a certificate for localhost issued by it (serial 1) in `dir`, and the CA's
/// certificate file for clients.
struct Pki {
    ca: TestCa,
    dir: PathBuf,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    first: Issued,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca = TestCa::new("jenkins-ha-proxy test CA");
        let first = ca.issue(&["localhost", "127.0.0.1"], Validity::Current, 1);
        Pki {
            ca_file: write(dir, "ca.pem", &ca.cert_pem()),
            cert_file: write(dir, "server.pem", &first.cert_pem),
            key_file: write(dir, "server.key", &first.key_pem),
            dir: dir.to_owned(),
            ca,
            first,
        }
    }

    /// Replaces the served files with `issued`.
    fn install(&self, issued: &Issued) {
        write(&self.dir, "server.pem", &issued.cert_pem);
        write(&self.dir, "server.key", &issued.key_pem);
    }

    /// A TLS client trusting the CA, offering `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        let ca_pem = self.ca.cert_pem();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// A config file: the proxy on TLS with `pki`'s files (and `tls_extra` in
/// `[proxy.tls]`), `proxy_extra` in `[proxy]`, one master at `url`.
fn write_config(pki: &Pki, url: &str, proxy_extra: &str, tls_extra: &str) -> PathBuf {
    write_config_as(pki, "config.toml", url, proxy_extra, tls_extra)
}

fn write_config_as(
    pki: &Pki,
    file: &str,
    url: &str,
    proxy_extra: &str,
    tls_extra: &str,
) -> PathBuf {
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n{proxy_extra}\n\
         [proxy.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{tls_extra}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[failover]\nstate_file = \"off\"\n\
         [health]\ninterval = \"100ms\"\ntimeout = \"80ms\"\nrise = 1\nfall = 2\n\
         [[backend]]\nname = \"master-a\"\nurl = \"{url}\"\n",
        pki.cert_file.display(),
        pki.key_file.display()
    );
    let path = pki.dir.join(file);
    std::fs::write(&path, text).expect("write config");
    path
}

async fn tls_connect(
    proxy: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(DEADLINE, connector.connect(name, tcp))
        .await
        .map_err(|_| "no TLS handshake within the deadline".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))
}

/// The DER of the certificate the proxy presents to a new connection now.
async fn served_certificate(
    proxy: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> Vec<u8> {
    let stream = tls_connect(proxy, connector).await.expect("TLS connection");
    let (_, session) = stream.get_ref();
    session.peer_certificates().expect("a certificate")[0].to_vec()
}

/// An HTTP/1.1 client connection over `stream`, its driver spawned.
async fn http1_over(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    sender
}

fn get_request(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .expect("request")
}

async fn post(admin: std::net::SocketAddr, path: &str) -> Reply {
    let request = Request::post(path)
        .header("host", admin.to_string())
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    support::send(admin, request).await.expect("admin reply")
}

async fn start(pki: &Pki, url: &str, proxy_extra: &str, tls_extra: &str) -> TestDaemon {
    let config = write_config(pki, url, proxy_extra, tls_extra);
    let daemon = TestDaemon::start_from_file(&config).await;
    daemon.wait_active(Some("master-a")).await;
    daemon
}

/// curl, with the CA: `--http1.1` and `--http2` (chosen by ALPN) both reach the master,
/// which is told the client came over https.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_https_with_http1_and_h2_by_alpn() {
    let pki = Pki::new(&temp_dir("curl"));
    let master = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master");
    let daemon = start(&pki, &master.url(), "", "").await;
    let port = daemon.proxy.port();
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let output = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", flag, "--cacert"])
            .arg(&pki.ca_file)
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-w", "\nversion=%{http_version}"])
            .arg(format!("https://localhost:{port}/headers"))
            .output()
            .await
            .expect("run curl");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{flag}: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            text.ends_with(&format!("version={version}")),
            "{flag}: {text}"
        );
        assert!(
            text.contains("x-forwarded-proto: https\n"),
            "{flag}: {text}"
        );
        assert!(text.contains("x-forwarded-port: "), "{flag}: {text}");
    }
    let status = daemon.status().await;
    let certificates = &status["tls"]["certificates"];
    assert_eq!(certificates[0]["subject"], "CN=localhost", "{status:#}");
    assert!(
        certificates[0]["days_left"].as_i64().expect("days_left") >= 364,
        "{status:#}"
    );
    assert_eq!(certificates[0]["serial"], "01", "{status:#}");
    let metrics = get(daemon.admin, "/metrics").await.expect("metrics").text();
    assert!(
        metrics.contains("jenkins_ha_proxy_tls_certificate_days_left{"),
        "{metrics}"
    );
    daemon.shutdown().await;
}

/// A reload with a new certificate: a long download and a WebSocket opened before it
/// go on; new connections get the new certificate. A reload with an expired one is
/// refused and the second stays served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_certificate_and_keeps_open_connections() {
    let pki = Pki::new(&temp_dir("reload-download"));
    let master = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master");
    let downloads = start(&pki, &master.url(), "", "").await;
    // A second daemon with the same files, for a WebSocket (the sample master has none).
    let ws_master = WsMaster::start("master-a", "127.0.0.3:0".parse().expect("addr"))
        .await
        .expect("ws master");
    let ws_config = write_config_as(&pki, "websockets.toml", &ws_master.url(), "", "");
    let websockets = TestDaemon::start_from_file(&ws_config).await;
    websockets.wait_active(Some("master-a")).await;

    let client = pki.client(&[b"http/1.1"]);
    assert_eq!(
        served_certificate(downloads.proxy, &client).await,
        pki.first.der
    );
    let mut sender = http1_over(tls_connect(downloads.proxy, &client).await.expect("tls")).await;
    let response = sender
        .send_request(get_request("/slow?chunks=20&delay_ms=50"))
        .await
        .expect("download starts");
    let mut body = response.into_body();
    let first = body.frame().await.expect("a chunk").expect("chunk");
    assert_eq!(
        first.data_ref().map(|d| d.as_ref()),
        Some(&b"chunk 0\n"[..])
    );
    let tls = tls_connect(websockets.proxy, &client).await.expect("tls");
    let url = format!("wss://localhost:{}/wsagents/", websockets.proxy.port());
    let mut ws = ws_handshake(Box::new(tls), &url, None).await.expect("wss");
    ws.send_text("before").await.expect("send");
    assert_eq!(ws.recv_text().await.expect("echo"), "master-a: before");

    let second = pki
        .ca
        .issue(&["localhost", "127.0.0.1"], Validity::Current, 2);
    pki.install(&second);
    for daemon in [&downloads, &websockets] {
        let reply = post(daemon.admin, "/reload").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(
        served_certificate(downloads.proxy, &client).await,
        second.der
    );
    assert_eq!(
        served_certificate(websockets.proxy, &client).await,
        second.der
    );
    // What was open goes on.
    let mut rest = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.expect("the download goes on").data_ref() {
            rest.extend_from_slice(data);
        }
    }
    assert!(String::from_utf8_lossy(&rest).ends_with("chunk 19\n"));
    ws.send_text("after").await.expect("send");
    assert_eq!(ws.recv_text().await.expect("echo"), "master-a: after");

    // An expired certificate, then one whose key is another's: refused, naming the
    // file; the second certificate stays served.
    let expired = pki.ca.issue(&["localhost"], Validity::Expired, 3);
    pki.install(&expired);
    let reply = post(downloads.admin, "/reload").await;
    assert_ne!(reply.status, 200);
    assert!(reply.text().contains("server.pem"), "{}", reply.text());
    assert!(reply.text().contains("expired"), "{}", reply.text());
    let other = pki.ca.issue(&["localhost"], Validity::Current, 4);
    write(&pki.dir, "server.pem", &other.cert_pem);
    write(&pki.dir, "server.key", &second.key_pem);
    let reply = post(downloads.admin, "/reload").await;
    assert_ne!(reply.status, 200);
    assert!(reply.text().contains("server.key"), "{}", reply.text());
    assert_eq!(
        served_certificate(downloads.proxy, &client).await,
        second.der
    );
    assert_eq!(
        downloads.status().await["tls"]["certificates"][0]["serial"],
        "02"
    );
    downloads.shutdown().await;
    websockets.shutdown().await;
}

/// A client that opens TCP and sends nothing, and one that sends half a ClientHello,
/// are closed once `header_read_timeout` has passed; others are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_handshakes_are_closed_after_header_read_timeout() {
    let pki = Pki::new(&temp_dir("slow-handshake"));
    let master = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master");
    let daemon = start(&pki, &master.url(), "header_read_timeout = \"1s\"", "").await;
    let opened = Instant::now();
    let mut silent = TcpStream::connect(daemon.proxy).await.expect("connect");
    let mut half = TcpStream::connect(daemon.proxy).await.expect("connect");
    // A handshake record announcing 512 bytes, of which a few come.
    half.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ])
    .await
    .expect("send");

    let client = pki.client(&[b"http/1.1"]);
    let mut sender = http1_over(tls_connect(daemon.proxy, &client).await.expect("tls")).await;
    let response = sender.send_request(get_request("/")).await.expect("served");
    assert_eq!(response.status(), 200);

    for (name, stream) in [("silent", &mut silent), ("half", &mut half)] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{name}: still open after {DEADLINE:?}"));
        assert!(matches!(read, Ok(0) | Err(_)), "{name}: {read:?}");
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "closed before the timeout: {:?}",
        opened.elapsed()
    );
    daemon.shutdown().await;
}

/// `http_redirect_listen` answers 308 to the same URL on the https port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_listener_sends_clients_to_https() {
    let pki = Pki::new(&temp_dir("redirect"));
    let master = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master");
    let daemon = start(
        &pki,
        &master.url(),
        "",
        "http_redirect_listen = \"127.0.0.1:0\"",
    )
    .await;
    let redirect = daemon.redirect.expect("a redirect listener");
    let request = Request::get("/job/build?x=1")
        .header("host", format!("localhost:{}", redirect.port()))
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    let reply = support::send(redirect, request).await.expect("reply");
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.headers["location"],
        format!("https://localhost:{}/job/build?x=1", daemon.proxy.port())
    );
    assert_eq!(master.traffic_count(), 0, "nothing reached the master");
    daemon.shutdown().await;
}

/// `check` reads the certificate files as the daemon does: an expired certificate and
/// a key that is not the certificate's fail it, naming the file; one that expires
/// within 14 days passes with a warning.
#[test]
fn check_judges_the_certificate_files() {
    let dir = temp_dir("check");
    let pki = Pki::new(&dir);
    let config = write_config(&pki, "http://127.0.0.2:8080", "", "");
    let check = || {
        let output = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("run check");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, text) = check();
    assert!(ok, "{text}");
    assert!(text.contains("CN=localhost"), "{text}");

    pki.install(&pki.ca.issue(&["localhost"], Validity::Expired, 5));
    let (ok, text) = check();
    assert!(!ok, "{text}");
    assert!(
        text.contains("server.pem") && text.contains("expired"),
        "{text}"
    );

    let soon = pki.ca.issue(&["localhost"], Validity::Days(5), 6);
    pki.install(&soon);
    let (ok, text) = check();
    assert!(ok, "{text}");
    assert!(
        text.contains("warning") && text.contains("expires in"),
        "{text}"
    );

    write(&dir, "server.key", &pki.first.key_pem);
    let (ok, text) = check();
    assert!(!ok, "{text}");
    assert!(
        text.contains("server.key") && text.contains("does not belong"),
        "{text}"
    );

    write(&dir, "server.pem", "not a certificate");
    let (ok, text) = check();
    assert!(!ok, "{text}");
    assert!(text.contains("server.pem"), "{text}");
}

/// `[admin.tls]`: the admin API over HTTPS (HTTP/1.1 only, even to a client that
/// offers h2), and the CLI reaching it with `--cacert`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_over_https_with_the_cli() {
    let pki = Pki::new(&temp_dir("admin"));
    let master = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master");
    let config = write_config(&pki, &master.url(), "", "");
    let mut text = std::fs::read_to_string(&config).expect("read config");
    text += &format!(
        "[admin.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.cert_file.display(),
        pki.key_file.display()
    );
    std::fs::write(&config, text).expect("write config");
    let daemon = TestDaemon::start_from_file(&config).await;
    let admin = format!("https://localhost:{}", daemon.admin.port());
    let cli = |args: &[&str]| {
        let output = Command::new(BIN)
            .args(args)
            .args(["--admin", &admin])
            .output()
            .expect("run the CLI");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let ca_file = pki.ca_file.to_str().expect("utf-8 path");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (ok, text) = cli(&["status", "--cacert", ca_file]);
        if ok && text.contains("master-a") && text.contains("active") {
            break;
        }
        assert!(Instant::now() < deadline, "status over https: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, text) = cli(&["reload", "--cacert", ca_file]);
    assert!(ok, "reload over https: {text}");
    // Without the CA the CLI refuses the certificate and says what to do.
    let (ok, text) = cli(&["status"]);
    assert!(!ok, "{text}");
    assert!(text.contains("--cacert"), "{text}");

    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--http2", "--cacert", ca_file])
        .args([
            "--resolve",
            &format!("localhost:{}:127.0.0.1", daemon.admin.port()),
        ])
        .args(["-w", "\nversion=%{http_version}"])
        .arg(format!("{admin}/status"))
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.ends_with("version=1.1"), "{text}");
    let status: serde_json::Value =
        serde_json::from_str(text.trim_end_matches("version=1.1").trim()).expect("JSON");
    let listeners: Vec<&str> = status["tls"]["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .filter_map(|c| c["listener"].as_str())
        .collect();
    assert_eq!(listeners, ["proxy", "admin"], "{status:#}");
    daemon.shutdown().await;
}
