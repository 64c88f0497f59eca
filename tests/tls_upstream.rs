//! Masters on HTTPS (issue 15), end to end: sample masters serving certificates made
//! at test time (tests/support/certs.rs), the real daemon in-process, and `check`.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use hyper::StatusCode;
use jenkins_ha_proxy::config::{Config, Failback, UpstreamTlsConfig};
use jenkins_ha_proxy::sample::SampleMaster;
use support::certs::{temp_dir, TestCa};
use support::ws_master::{ws_connect, WsMaster};
use support::{config_for, get, health, wait_until, Load, TestDaemon};

/// The name every good master certificate carries; masters are addressed by IP.
const NAME: &str = "master.test";

fn at(ip: &str) -> SocketAddr {
    format!("{ip}:0").parse().expect("addr")
}

/// `masters` (name, address) as `https://` backends, verified against `ca_file` as
/// [`NAME`] (`upstream_tls.server_name`, since the URLs' hosts are IPs).
fn https_config(masters: &[(&str, SocketAddr)], ca_file: &Path) -> Config {
    let mut config = config_for(&[], health(100, 2, 2), Failback::Never);
    config.backends = support::backends(masters);
    for backend in &mut config.backends {
        backend.tls = true;
        backend.url = backend.url.replace("http://", "https://");
    }
    config.upstream_tls = UpstreamTlsConfig {
        ca_file: Some(ca_file.to_path_buf()),
        server_name: Some(NAME.to_owned()),
        ..UpstreamTlsConfig::default()
    };
    config
}

async fn https_master(ca: &TestCa, name: &str, ip: &str) -> SampleMaster {
    SampleMaster::start_tls(name, at(ip), ca.server_config(&[NAME], false))
        .await
        .expect("start an https master")
}

#[tokio::test]
async fn a_get_through_the_proxy_reaches_an_https_master() {
    let ca = TestCa::new("test CA");
    let ca_file = ca.write_cert(&temp_dir("get"), "ca.pem");
    let a = https_master(&ca, "master-a", "127.0.0.2").await;
    assert!(a.url().starts_with("https://"), "{}", a.url());
    let config = https_config(&[("master-a", a.addr())], &ca_file);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;

    let reply = get(daemon.proxy, "/job/x/").await.expect("GET");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "hello from master-a\n");
    let status = daemon.status().await;
    let backend = &status["backends"][0];
    assert!(backend["url"]
        .as_str()
        .is_some_and(|u| u.starts_with("https://")));
    assert_eq!(backend["tls"], format!("verified as {NAME}"));
    assert!(status["alarms"].as_array().is_some_and(Vec::is_empty));
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_websocket_through_the_proxy_reaches_an_https_master() {
    let ca = TestCa::new("test CA");
    let ca_file = ca.write_cert(&temp_dir("ws"), "ca.pem");
    let a = WsMaster::start_tls(
        "master-a",
        at("127.0.0.2"),
        ca.server_config(&[NAME], false),
    )
    .await
    .expect("start an https WebSocket master");
    let config = https_config(&[("master-a", a.addr())], &ca_file);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;

    let mut ws = ws_connect(daemon.proxy, "/wsagents/", None)
        .await
        .expect("WebSocket through the proxy");
    assert_eq!(ws.master.as_deref(), Some("master-a"));
    ws.send_text("hello").await.expect("send");
    assert_eq!(ws.recv_text().await.expect("echo"), "master-a: hello");
    ws.send_binary(&[1, 2, 3]).await.expect("send binary");
    assert_eq!(ws.recv_binary().await.expect("binary echo"), vec![1, 2, 3]);
    assert_eq!(a.open_websockets(), 1);
    ws.close().await.expect("close");
    daemon.shutdown().await;
}

#[tokio::test]
async fn https_masters_fail_over_without_a_failed_request() {
    let ca = TestCa::new("test CA");
    let ca_file = ca.write_cert(&temp_dir("failover"), "ca.pem");
    let a = https_master(&ca, "master-a", "127.0.0.2").await;
    let b = https_master(&ca, "master-b", "127.0.0.3").await;
    let config = https_config(&[("master-a", a.addr()), ("master-b", b.addr())], &ca_file);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    wait_until("master-b healthy", || async {
        daemon.status().await["backends"][1]["healthy"] == true
    })
    .await;

    let load = Load::start(daemon.proxy, 4, "/");
    wait_until("traffic flowing", || async { a.traffic_count() > 20 }).await;
    a.stop().await;
    daemon.wait_active(Some("master-b")).await;
    let served_before = b.traffic_count();
    wait_until("traffic on master-b", || async {
        b.traffic_count() > served_before + 20
    })
    .await;
    let (sent, failed) = load.stop().await;
    assert!(sent > 40, "only {sent} requests sent");
    assert_eq!(failed, 0, "{failed} of {sent} GETs failed");
    assert_eq!(daemon.active().await.as_deref(), Some("master-b"));
    daemon.shutdown().await;
}

/// Waits until backend `index` is down with a `last_error` containing `says`.
async fn wait_down_saying(daemon: &TestDaemon, index: usize, says: &str) {
    wait_until(&format!("backend[{index}] down: {says}"), || async {
        let status = daemon.status().await;
        let backend = &status["backends"][index];
        backend["state"] == "down"
            && backend["last_error"]
                .as_str()
                .is_some_and(|error| error.contains(says))
    })
    .await;
}

#[tokio::test]
async fn masters_with_refused_certificates_are_down_and_status_says_why() {
    let ca = TestCa::new("test CA");
    let stranger = TestCa::new("some other CA");
    let ca_file = ca.write_cert(&temp_dir("refused"), "ca.pem");
    let good = https_master(&ca, "good", "127.0.0.2").await;
    let expired =
        SampleMaster::start_tls("expired", at("127.0.0.3"), ca.server_config(&[NAME], true))
            .await
            .expect("expired");
    let unknown = SampleMaster::start_tls(
        "unknown-ca",
        at("127.0.0.4"),
        stranger.server_config(&[NAME], false),
    )
    .await
    .expect("unknown CA");
    let wrong = SampleMaster::start_tls(
        "wrong-name",
        at("127.0.0.5"),
        ca.server_config(&["other.test"], false),
    )
    .await
    .expect("wrong name");
    let config = https_config(
        &[
            ("good", good.addr()),
            ("expired", expired.addr()),
            ("unknown-ca", unknown.addr()),
            ("wrong-name", wrong.addr()),
        ],
        &ca_file,
    );
    let daemon = TestDaemon::start_with_active(config, "good").await;
    wait_down_saying(&daemon, 1, "certificate expired").await;
    wait_down_saying(
        &daemon,
        2,
        "unknown issuer (not signed by a CA in upstream_tls.ca_file / the system roots)",
    )
    .await;
    wait_down_saying(&daemon, 3, "certificate is not valid for name master.test").await;
    for master in [&expired, &unknown, &wrong] {
        assert_eq!(master.traffic_count(), 0, "{} got traffic", master.name());
    }
    daemon.shutdown().await;
}

#[tokio::test]
async fn insecure_skip_verify_accepts_an_unknown_ca_and_status_says_so() {
    let ca = TestCa::new("test CA");
    let stranger = TestCa::new("some other CA");
    let ca_file = ca.write_cert(&temp_dir("insecure"), "ca.pem");
    let unknown = SampleMaster::start_tls(
        "unknown-ca",
        at("127.0.0.2"),
        stranger.server_config(&["whatever.test"], false),
    )
    .await
    .expect("unknown CA");
    let mut config = https_config(&[("unknown-ca", unknown.addr())], &ca_file);
    config.upstream_tls.insecure_skip_verify = true;
    let daemon = TestDaemon::start_with_active(config, "unknown-ca").await;

    let reply = get(daemon.proxy, "/").await.expect("GET");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.master(), Some("unknown-ca"));
    let status = daemon.status().await;
    assert_eq!(
        status["backends"][0]["tls"],
        "NOT VERIFIED (upstream_tls.insecure_skip_verify = true)"
    );
    let alarms = status["alarms"].as_array().expect("alarms");
    assert!(
        alarms.iter().any(|a| a
            .as_str()
            .is_some_and(|a| a.contains("insecure_skip_verify = true"))),
        "{alarms:?}"
    );
    daemon.shutdown().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_jenkins-ha-proxy");

/// `check` on a config with one https master and `[upstream_tls] ca_file = ca_file`.
fn check_with_ca_file(dir: &Path, ca_file: &Path) -> std::process::Output {
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [upstream_tls]\nca_file = \"{}\"\nserver_name = \"{NAME}\"\n\
         [[backend]]\nname = \"master-a\"\nurl = \"https://127.0.0.2:8443\"\n",
        ca_file.display()
    );
    let config = dir.join("proxy.toml");
    std::fs::write(&config, text).expect("write config");
    Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run check")
}

#[test]
fn check_refuses_a_missing_or_garbage_ca_file_naming_it() {
    let dir = temp_dir("check");
    let missing = dir.join("no-such-ca.pem");
    let output = check_with_ca_file(&dir, &missing);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("upstream_tls.ca_file"), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").expect("write garbage");
    let output = check_with_ca_file(&dir, &garbage);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&garbage.display().to_string()), "{stderr}");

    let good = TestCa::new("test CA").write_cert(&dir, "ca.pem");
    let output = check_with_ca_file(&dir, &good);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("masters verified against the CAs in"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("master-a as {NAME}")), "{stdout}");
}

#[tokio::test]
async fn a_reload_that_changes_upstream_tls_is_refused_and_the_masters_stay_up() {
    let ca = TestCa::new("test CA");
    let dir = temp_dir("reload");
    let ca_file = ca.write_cert(&dir, "ca.pem");
    let other_ca_file = ca.write_cert(&dir, "ca-copy.pem");
    let a = https_master(&ca, "master-a", "127.0.0.2").await;
    let write = |ca_file: &Path| {
        let text = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [health]\ninterval = \"100ms\"\ntimeout = \"80ms\"\n[failover]\nstate_file = \"off\"\n\
             [upstream_tls]\nca_file = \"{}\"\nserver_name = \"{NAME}\"\n\
             [[backend]]\nname = \"master-a\"\nurl = \"{}\"\n",
            ca_file.display(),
            a.url()
        );
        std::fs::write(dir.join("proxy.toml"), text).expect("write config");
    };
    write(&ca_file);
    let daemon = TestDaemon::start_from_file(&dir.join("proxy.toml")).await;
    daemon.wait_active(Some("master-a")).await;

    write(&other_ca_file);
    let request = hyper::Request::post("/reload")
        .header("host", daemon.admin.to_string())
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let reply = support::send(daemon.admin, request).await.expect("reload");
    assert_ne!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        reply.text().contains("[upstream_tls] changed"),
        "{}",
        reply.text()
    );
    let reply = get(daemon.proxy, "/")
        .await
        .expect("GET after the refused reload");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    daemon.shutdown().await;
}
