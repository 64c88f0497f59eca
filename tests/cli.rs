//! The real binary, as a user runs it: check, run + SIGTERM, a taken port, the demo,
//! status.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hyper::StatusCode;
use jenkins_ha_proxy::sample::SampleMaster;
use support::{get, wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_jenkins-ha-proxy");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/jenkins-ha-proxy.toml");

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("jenkins-ha-proxy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn config_text(proxy: &str, admin: &str, masters: &[&SampleMaster]) -> String {
    let mut text = format!(
        "[proxy]\nlisten = \"{proxy}\"\nshutdown_timeout = \"5s\"\n[admin]\nlisten = \"{admin}\"\n\
         [health]\ninterval = \"100ms\"\ntimeout = \"80ms\"\n"
    );
    for master in masters {
        text += &format!("[[backend]]\nname = \"{}\"\nurl = \"{}\"\n", master.name(), master.url());
    }
    text
}

#[test]
fn check_accepts_the_shipped_example() {
    let output = Command::new(BIN).args(["check", "--config", EXAMPLE]).output().expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(stdout.contains("master-a") && stdout.contains("master-b"), "{stdout}");
}

#[test]
fn check_rejects_a_typo_naming_file_line_and_key() {
    let path = temp_config(
        "typo.toml",
        "[proxy]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.1:8404\"\n[health]\nintervall = \"2s\"\n\
         [[backend]]\nname = \"a\"\nurl = \"http://10.0.0.1:8080\"\n",
    );
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("typo.toml:6: health.intervall"), "{stderr}");
    assert!(stderr.contains("interval"), "{stderr}");
}

#[test]
fn check_names_a_missing_file() {
    let output = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/jenkins-ha-proxy.toml"])
        .output()
        .expect("run check");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/jenkins-ha-proxy.toml"), "{stderr}");
}

/// Reads the child's stderr on a thread; lines arrive on the channel.
fn lines_of(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Waits for a line containing `needle`; returns it.
fn wait_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match lines.recv_timeout(DEADLINE) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(error) => panic!("no line containing {needle:?}: {error}"),
        }
    }
}

/// The address after `key=` in a log line.
fn field(line: &str, key: &str) -> SocketAddr {
    let start = line.find(&format!("{key}=")).expect("field present") + key.len() + 1;
    line[start..]
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("an address")
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(started.elapsed() < DEADLINE, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn run_serves_then_sigterm_finishes_in_flight_requests_and_exits_0() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr")).await.expect("a");
    let path = temp_config("run.toml", &config_text("127.0.0.1:0", "127.0.0.1:0", &[&a]));
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    let lines = lines_of(child.stderr.take().expect("stderr"));
    let started = wait_line(&lines, "jenkins-ha-proxy starting");
    let proxy = field(&started, "proxy");
    wait_line(&lines, "master-a is now active");
    let reply = get(proxy, "/").await.expect("request");
    assert_eq!(reply.master(), Some("master-a"));

    let slow = tokio::spawn(async move { get(proxy, "/slow?chunks=4&delay_ms=200").await });
    wait_until("the slow request reached the master", || async {
        a.requests().iter().any(|r| r.target.starts_with("/slow"))
    })
    .await;
    sigterm(&child);
    let reply = slow.await.expect("task").expect("in-flight request completes");
    assert_eq!(reply.text().lines().count(), 4);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_taken_port_fails_start_up_with_a_clear_message() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr")).await.expect("a");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr");
    let path = temp_config("taken.toml", &config_text(&port.to_string(), "127.0.0.1:0", &[&a]));
    let output = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("cannot listen on {port} (proxy.listen)")), "{stderr}");
}

#[tokio::test]
async fn the_demo_fails_over_on_kill_and_status_explains_why() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn demo");
    let stdout = lines_of_stdout(child.stdout.take().expect("stdout"));
    let _stderr = lines_of(child.stderr.take().expect("stderr"));
    let proxy_line = wait_line(&stdout, "<- send requests here");
    let proxy: SocketAddr = url_addr(&proxy_line);
    let admin_line = wait_line(&stdout, "/status");
    let admin: SocketAddr = url_addr(&admin_line);
    wait_until("master-a answers through the demo proxy", || async {
        get(proxy, "/").await.is_ok_and(|r| r.master() == Some("master-a"))
    })
    .await;

    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "kill a").expect("type kill a");
    wait_line(&stdout, "master-a stopped");
    let reply = get(proxy, "/").await.expect("request after the kill");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.master(), Some("master-b"));

    let status = Command::new(BIN)
        .args(["status", "--admin", &format!("http://{admin}")])
        .output()
        .expect("status");
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    assert!(table.contains("active master: master-b"), "{table}");
    assert!(table.contains("master-a -> master-b: master-a down"), "{table}");

    writeln!(stdin, "quit").expect("type quit");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

fn lines_of_stdout(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// The `host:port` of the first `http://` URL in a line.
fn url_addr(line: &str) -> SocketAddr {
    let start = line.find("http://").expect("a URL") + "http://".len();
    line[start..]
        .split(['/', ' '])
        .next()
        .and_then(|s| s.parse().ok())
        .expect("an address")
}
