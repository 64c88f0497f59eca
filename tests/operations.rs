//! Issue #5: reload, remembered active master, switchover, maintenance, token,
//! systemd notifications.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use jenkins_ha_proxy::sample::SampleMaster;
use support::child::ChildDaemon;
use support::{get, send, wait_until, Load, Reply, TestDaemon, DEADLINE};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jha-ops-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A config file with fast checks and the given masters. `extra` lands right after
/// `admin.listen`; without a `[failover]` table of its own, no state file is written
/// (tests run concurrently and must not share one).
fn write_config(path: &Path, masters: &[&SampleMaster], extra: &str) {
    let failover = if extra.contains("[failover]") {
        ""
    } else {
        "[failover]\nstate_file = \"off\"\n"
    };
    let mut text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra}\n\
         {failover}[health]\ninterval = \"50ms\"\ntimeout = \"40ms\"\nrise = 2\nfall = 2\n"
    );
    for master in masters {
        text += &format!(
            "[[backend]]\nname = \"{}\"\nurl = \"{}\"\n",
            master.name(),
            master.url()
        );
    }
    std::fs::write(path, text).expect("write config");
}

async fn post(admin: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let mut request = Request::post(path).header("host", admin.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(
        admin,
        request.body(Full::new(Bytes::new())).expect("request"),
    )
    .await
    .expect("admin reply")
}

async fn pair() -> (SampleMaster, SampleMaster) {
    (
        SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
            .await
            .expect("a"),
        SampleMaster::start("master-b", "127.0.0.3:0".parse().expect("addr"))
            .await
            .expect("b"),
    )
}

/// Both masters in a config file, master-a active and master-b healthy standby.
async fn both_healthy(name: &str) -> (SampleMaster, SampleMaster, TestDaemon) {
    let (a, b) = pair().await;
    let path = temp_dir(name).join("proxy.toml");
    write_config(&path, &[&a, &b], "");
    let daemon = TestDaemon::start_from_file(&path).await;
    daemon.wait_active(Some("master-a")).await;
    wait_until("master-b healthy", || async {
        daemon.status().await["backends"][1]["healthy"] == true
    })
    .await;
    (a, b, daemon)
}

#[tokio::test]
async fn reload_under_load_adds_and_removes_masters_without_a_failed_request() {
    let (a, b) = pair().await;
    let dir = temp_dir("reload");
    let path = dir.join("proxy.toml");
    write_config(&path, &[&a], "");
    let daemon = TestDaemon::start_from_file(&path).await;
    daemon.wait_active(Some("master-a")).await;
    let load = Load::start(daemon.proxy, 4, "/");
    wait_until("traffic flowing", || async { a.traffic_count() > 20 }).await;

    write_config(&path, &[&a, &b], "");
    let reply = post(daemon.admin, "/reload", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    wait_until("master-b checked after the reload", || async {
        daemon.status().await["backends"][1]["healthy"] == true
    })
    .await;
    assert_eq!(
        daemon.active().await.as_deref(),
        Some("master-a"),
        "the active master stays"
    );

    // Remove the active master: traffic moves to master-b, still without errors.
    write_config(&path, &[&b], "");
    let reply = post(daemon.admin, "/reload", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    daemon.wait_active(Some("master-b")).await;
    let before = b.traffic_count();
    wait_until("traffic on master-b", || async {
        b.traffic_count() > before + 20
    })
    .await;
    let (sent, failed) = load.stop().await;
    assert_eq!(
        failed, 0,
        "no request may fail across reloads ({sent} sent)"
    );
    let status = daemon.status().await;
    assert_eq!(status["backends"].as_array().map(Vec::len), Some(1));
    assert_eq!(status["transitions"][0]["cause"], "reload");
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_bad_reload_leaves_the_old_config_serving() {
    let (a, _b) = pair().await;
    let dir = temp_dir("bad-reload");
    let path = dir.join("proxy.toml");
    write_config(&path, &[&a], "");
    let daemon = TestDaemon::start_from_file(&path).await;
    daemon.wait_active(Some("master-a")).await;
    std::fs::write(&path, "[proxy]\nlisten = \"127.0.0.1:0\"\nlistne = 1\n")
        .expect("break the file");
    let reply = post(daemon.admin, "/reload", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.text().contains("proxy.toml:3"),
        "names the line: {}",
        reply.text()
    );
    assert_eq!(
        get(daemon.proxy, "/")
            .await
            .expect("still serving")
            .master(),
        Some("master-a")
    );
    assert_eq!(daemon.active().await.as_deref(), Some("master-a"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_restart_keeps_the_remembered_master_even_with_failback_never() {
    let (a, b) = pair().await;
    let dir = temp_dir("state");
    let state = dir.join("state.json");
    let _ = std::fs::remove_file(&state);
    let path = dir.join("proxy.toml");
    write_config(
        &path,
        &[&a, &b],
        &format!("[failover]\nstate_file = \"{}\"", state.display()),
    );
    let daemon = TestDaemon::start_from_file(&path).await;
    daemon.wait_active(Some("master-a")).await;
    wait_until("master-b healthy", || async {
        daemon.status().await["backends"][1]["healthy"] == true
    })
    .await;
    let reply = post(daemon.admin, "/switchover?to=master-b", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    wait_until("state file names master-b", || async {
        std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"master-b\""))
    })
    .await;
    daemon.shutdown().await;

    // Both healthy, master-a first in the file: the restarted proxy stays on master-b.
    let daemon = TestDaemon::start_from_file(&path).await;
    daemon.wait_active(Some("master-b")).await;
    let status = daemon.status().await;
    assert_eq!(status["failovers"], 0);
    assert_eq!(
        get(daemon.proxy, "/").await.expect("reply").master(),
        Some("master-b")
    );
    daemon.shutdown().await;

    // A corrupt state file is ignored: normal election.
    std::fs::write(&state, "{garbage").expect("corrupt");
    let daemon = TestDaemon::start_from_file(&path).await;
    daemon.wait_active(Some("master-a")).await;
    daemon.shutdown().await;
}

/// Issue 12 (7): the writer used a fixed temp name, `.state.json.tmp`, and followed a
/// symlink planted there: its target was overwritten with the state.
#[tokio::test]
async fn the_state_writer_never_writes_through_a_planted_symlink() {
    let (a, _b) = pair().await;
    let dir = temp_dir("state-links");
    let state = dir.join("state.json");
    let _ = std::fs::remove_file(&state);
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    // The old temp name, and the names a writer in this process (the in-process daemon)
    // would plausibly pick.
    let pid = std::process::id();
    let mut planted: Vec<PathBuf> = [".state.json.tmp", "state.json.tmp", ".state.json.swp"]
        .iter()
        .map(|name| dir.join(name))
        .collect();
    planted.push(dir.join(format!(".state.json.{pid}.tmp")));
    planted.extend((0..32).map(|n| dir.join(format!(".state.json.{pid}.{n}.tmp"))));
    for link in &planted {
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&victim, link).expect("plant a symlink");
    }
    let path = dir.join("proxy.toml");
    write_config(
        &path,
        &[&a],
        &format!("[failover]\nstate_file = \"{}\"", state.display()),
    );
    let daemon = TestDaemon::start_from_file(&path).await;
    daemon.wait_active(Some("master-a")).await;
    wait_until("state file names master-a", || async {
        std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"master-a\""))
    })
    .await;
    daemon.shutdown().await;
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n",
        "the symlinks' target is untouched"
    );
    assert!(!state.is_symlink(), "the state file is a file of its own");
    for link in &planted {
        assert!(link.is_symlink(), "{} left as it was", link.display());
    }
}

/// Issue 12 (10): the state file was read whole, whatever it was. A FIFO blocked
/// start-up (listeners bound, nothing served, not even /status); /dev/zero grew to
/// gigabytes; a huge file was read into memory. Each is now ignored at once, and logged.
/// The real binary in its own process: the old code hung or exhausted memory there.
async fn a_bad_state_file_is_ignored(name: &str, plant: impl FnOnce(&Path), reason: &str) {
    let (a, b) = pair().await;
    let dir = temp_dir(name);
    let state = dir.join("state.json");
    let _ = std::fs::remove_file(&state);
    plant(&state);
    let path = dir.join("proxy.toml");
    write_config(
        &path,
        &[&a, &b],
        &format!("[failover]\nstate_file = \"{}\"", state.display()),
    );
    let daemon = ChildDaemon::start(&path, None).await;
    // Normal election: master-a, first in the file, whatever the file might say.
    wait_until("/status names master-a active", || async {
        // Each try bounded: a daemon stuck at start-up accepts but never answers.
        let status = tokio::time::timeout(Duration::from_secs(1), get(daemon.admin, "/status"));
        status.await.is_ok_and(|reply| {
            reply.is_ok_and(|reply| {
                serde_json::from_slice::<serde_json::Value>(&reply.body)
                    .is_ok_and(|status| status["active"] == "master-a")
            })
        })
    })
    .await;
    let reply = tokio::time::timeout(DEADLINE, get(daemon.proxy, "/"))
        .await
        .expect("served within the deadline")
        .expect("served");
    assert_eq!(reply.master(), Some("master-a"));
    let peak_kib = daemon.status_kib("VmHWM:");
    assert!(
        peak_kib < 100 * 1024,
        "peak RSS {peak_kib} KiB: the file was read into memory"
    );
    let line = daemon.wait_log("ignoring the state file").await;
    assert!(line.contains(&state.display().to_string()), "{line}");
    assert!(line.contains(reason), "{line}");
    assert!(
        line.contains("failover.state_file"),
        "says what to do: {line}"
    );
}

#[tokio::test]
async fn a_fifo_as_state_file_is_ignored_without_blocking_start_up() {
    let plant = |state: &Path| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            state,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
    };
    a_bad_state_file_is_ignored("state-fifo", plant, "a FIFO").await;
}

#[tokio::test]
async fn a_state_file_linked_to_dev_zero_is_ignored() {
    let plant = |state: &Path| std::os::unix::fs::symlink("/dev/zero", state).expect("symlink");
    a_bad_state_file_is_ignored("state-zero", plant, "a character device").await;
}

#[tokio::test]
async fn a_one_megabyte_state_file_is_ignored() {
    // Valid JSON naming master-b: the old code read it all and followed it.
    let plant = |state: &Path| {
        let mut content = br#"{"active":"master-b","since":"2026-11-21T00:00:00Z"}"#.to_vec();
        content.resize(1 << 20, b' ');
        std::fs::write(state, content).expect("write");
    };
    a_bad_state_file_is_ignored("state-huge", plant, "larger than 65536 bytes").await;
}

#[tokio::test]
async fn switchover_is_refused_to_an_unhealthy_master_and_loses_nothing_when_accepted() {
    let (a, b, daemon) = both_healthy("switchover").await;

    b.set_healthy(false);
    wait_until("master-b down", || async {
        daemon.status().await["backends"][1]["healthy"] == false
    })
    .await;
    let reply = post(daemon.admin, "/switchover?to=master-b", None).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    assert!(
        reply.text().contains("master-b is not healthy"),
        "{}",
        reply.text()
    );
    let reply = post(daemon.admin, "/switchover?to=master-z", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    b.set_healthy(true);
    wait_until("master-b healthy", || async {
        daemon.status().await["backends"][1]["healthy"] == true
    })
    .await;
    let load = Load::start(daemon.proxy, 4, "/");
    wait_until("traffic flowing", || async { a.traffic_count() > 20 }).await;
    let reply = post(daemon.admin, "/switchover?to=master-b", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let before = b.traffic_count();
    wait_until("traffic on master-b", || async {
        b.traffic_count() > before + 20
    })
    .await;
    let (sent, failed) = load.stop().await;
    assert_eq!(failed, 0, "{sent} sent");
    let status = daemon.status().await;
    assert_eq!(status["active"], "master-b");
    assert_eq!(status["transitions"][0]["cause"], "switchover");
    daemon.shutdown().await;
}

#[tokio::test]
async fn maintenance_disable_moves_traffic_and_shows_in_status() {
    let (_a, _b, daemon) = both_healthy("maintenance").await;
    let reply = post(daemon.admin, "/backends/master-a/disable", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    daemon.wait_active(Some("master-b")).await;
    let status = daemon.status().await;
    assert_eq!(status["backends"][0]["disabled"], true);
    assert_eq!(status["transitions"][0]["cause"], "maintenance");
    let reply = post(daemon.admin, "/backends/master-a/enable", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(daemon.status().await["backends"][0]["disabled"], false);
    assert_eq!(
        daemon.active().await.as_deref(),
        Some("master-b"),
        "failback never"
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn mutating_calls_need_the_token_and_status_does_not() {
    let (a, b) = pair().await;
    let dir = temp_dir("token");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("token file");
    let path = dir.join("proxy.toml");
    // `extra` lands right after admin.listen, so this is admin.token_file.
    write_config(
        &path,
        &[&a, &b],
        &format!("token_file = \"{}\"", token_file.display()),
    );
    let daemon = TestDaemon::start_from_file(&path).await;
    daemon.wait_active(Some("master-a")).await;
    wait_until("master-b healthy", || async {
        daemon.status().await["backends"][1]["healthy"] == true
    })
    .await;
    let reply = post(daemon.admin, "/switchover?to=master-b", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = post(daemon.admin, "/switchover?to=master-b", Some("wrong")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(daemon.active().await.as_deref(), Some("master-a"));
    let reply = post(
        daemon.admin,
        "/switchover?to=master-b",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(daemon.active().await.as_deref(), Some("master-b"));
    let status = get(daemon.admin, "/status").await.expect("status");
    assert_eq!(status.status, StatusCode::OK);
    assert!(!status.text().contains("s3cret"), "the token never shows");
    daemon.shutdown().await;
}

/// A reload whose `admin.token_file` is unusable is refused like `run` refuses to start:
/// it used to be applied, and the admin API then refused every call, reloads included.
#[tokio::test]
async fn a_reload_with_an_unusable_token_file_is_refused_and_the_old_token_stays() {
    let (a, b) = pair().await;
    let dir = temp_dir("token-reload");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("token file");
    let empty = dir.join("empty-token");
    std::fs::write(&empty, "").expect("empty token file");
    let path = dir.join("proxy.toml");
    write_config(
        &path,
        &[&a, &b],
        &format!("token_file = \"{}\"", token_file.display()),
    );
    let daemon = TestDaemon::start_from_file(&path).await;
    daemon.wait_active(Some("master-a")).await;
    wait_until("master-b healthy", || async {
        daemon.status().await["backends"][1]["healthy"] == true
    })
    .await;
    write_config(
        &path,
        &[&a, &b],
        &format!("token_file = \"{}\"", empty.display()),
    );
    let reply = post(daemon.admin, "/reload", Some("s3cret-token")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert!(
        reply
            .text()
            .contains(&format!("admin.token_file {} is empty", empty.display())),
        "{}",
        reply.text()
    );
    let reply = post(
        daemon.admin,
        "/switchover?to=master-b",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    daemon.shutdown().await;
}

#[tokio::test]
async fn systemd_notifications_arrive_on_notify_socket() {
    use tokio::io::AsyncBufReadExt;
    let (a, _b) = pair().await;
    let dir = temp_dir("notify");
    let socket_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    let path = dir.join("proxy.toml");
    write_config(&path, &[&a], "[failover]\nstate_file = \"off\"");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jenkins-ha-proxy"))
        .args(["run", "--config"])
        .arg(&path)
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let ready = next_notification(&socket).await;
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(ready.contains("active master: master-a"), "{ready}");
    let pid = child.id().expect("pid").to_string();
    let kill = |signal: &str| {
        std::process::Command::new("kill")
            .args([signal, pid.as_str()])
            .status()
            .expect("kill")
    };
    assert!(kill("-HUP").success());
    let reloading = next_notification(&socket).await;
    assert!(reloading.contains("RELOADING=1"), "{reloading}");
    assert!(next_notification(&socket).await.contains("READY=1"));
    assert!(kill("-TERM").success());
    assert!(next_notification(&socket).await.contains("STOPPING=1"));
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

async fn next_notification(socket: &tokio::net::UnixDatagram) -> String {
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, socket.recv(&mut buffer))
        .await
        .expect("a notification within the deadline")
        .expect("recv");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

/// `GET /ready` (for keepalived and load balancers): 200 while a master takes
/// traffic, 503 while none does, and 200 again once one is back.
#[tokio::test]
async fn ready_says_whether_traffic_is_served() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a");
    let config = support::config_for(
        &[&a],
        support::health(100, 1, 2),
        jenkins_ha_proxy::config::Failback::Never,
    );
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    let ready = get(daemon.admin, "/ready").await.expect("GET /ready");
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    assert_eq!(ready.text(), "ready: routing to master-a\n");
    a.set_healthy(false);
    wait_until("/ready to answer 503", || async {
        get(daemon.admin, "/ready").await.is_ok_and(|r| {
            r.status == StatusCode::SERVICE_UNAVAILABLE && r.text().contains("no healthy master")
        })
    })
    .await;
    a.set_healthy(true);
    wait_until("/ready to answer 200 again", || async {
        get(daemon.admin, "/ready")
            .await
            .is_ok_and(|r| r.status == StatusCode::OK)
    })
    .await;
    daemon.shutdown().await;
}
