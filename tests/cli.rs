//! The real binary, as a user runs it: check, run + SIGTERM, a taken port, the demo,
//! status.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use hyper::StatusCode;
use jenkins_ha_proxy::sample::SampleMaster;
use support::{get, wait_active_at, wait_until, DEADLINE};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

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
         [health]\ninterval = \"100ms\"\ntimeout = \"80ms\"\n[failover]\nstate_file = \"off\"\n"
    );
    for master in masters {
        text += &format!(
            "[[backend]]\nname = \"{}\"\nurl = \"{}\"\n",
            master.name(),
            master.url()
        );
    }
    text
}

#[test]
fn check_accepts_the_shipped_example() {
    let output = Command::new(BIN)
        .args(["check", "--config", EXAMPLE])
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(
        stdout.contains("master-a") && stdout.contains("master-b"),
        "{stdout}"
    );
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
    assert!(
        stderr.contains("/nonexistent/jenkins-ha-proxy.toml"),
        "{stderr}"
    );
}

/// Lines of a child's output, read asynchronously.
type Lines = tokio::io::Lines<tokio::io::BufReader<Box<dyn tokio::io::AsyncRead + Unpin + Send>>>;

fn lines_of<R: tokio::io::AsyncRead + Unpin + Send + 'static>(output: R) -> Lines {
    let boxed: Box<dyn tokio::io::AsyncRead + Unpin + Send> = Box::new(output);
    tokio::io::BufReader::new(boxed).lines()
}

/// Waits (with the deadline) for a line containing `needle`; returns it.
/// What `jenkins-ha-proxy status --admin http://ADMIN` prints; it must succeed.
async fn status_table(admin: SocketAddr) -> String {
    let status = tokio::process::Command::new(BIN)
        .args(["status", "--admin", &format!("http://{admin}")])
        .output()
        .await
        .expect("status");
    let table = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.status.success(), "{table}");
    table
}

async fn wait_line(lines: &mut Lines, needle: &str) -> String {
    let found = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        Ok(None) => panic!("output ended without a line containing {needle:?}"),
        Err(_) => panic!("no line containing {needle:?} within {DEADLINE:?}"),
    }
}

/// Keeps reading (and dropping) the rest of the output so the child never blocks on a
/// full pipe.
fn drain_rest(mut lines: Lines) {
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
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

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("child running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn wait_exit(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("the process exits within the deadline")
        .expect("wait")
}

fn spawn(args: &[&str], config: Option<&std::path::Path>) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(BIN);
    command.args(args);
    if let Some(config) = config {
        command.arg(config);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true) // a failing test leaves no daemon behind
        .spawn()
        .expect("spawn the binary")
}

#[tokio::test]
async fn run_serves_then_sigterm_finishes_in_flight_requests_and_exits_0() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("a");
    let path = temp_config(
        "run.toml",
        &config_text("127.0.0.1:0", "127.0.0.1:0", &[&a]),
    );
    let mut child = spawn(&["run", "--config"], Some(&path));
    let mut lines = lines_of(child.stderr.take().expect("stderr"));
    let started = wait_line(&mut lines, "jenkins-ha-proxy starting").await;
    let (proxy, admin) = (field(&started, "proxy"), field(&started, "admin"));
    drain_rest(lines);
    wait_active_at(admin, "master-a").await;
    let reply = get(proxy, "/").await.expect("request");
    assert_eq!(reply.master(), Some("master-a"));

    let slow = tokio::spawn(async move { get(proxy, "/slow?chunks=4&delay_ms=200").await });
    wait_until("the slow request reached the master", || async {
        a.requests().iter().any(|r| r.target.starts_with("/slow"))
    })
    .await;
    sigterm(&child);
    let reply = slow
        .await
        .expect("task")
        .expect("in-flight request completes");
    assert_eq!(reply.text().lines().count(), 4);
    let status = wait_exit(&mut child).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_taken_port_fails_start_up_with_a_clear_message() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("a");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr");
    let path = temp_config(
        "taken.toml",
        &config_text(&port.to_string(), "127.0.0.1:0", &[&a]),
    );
    let output = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {port} (proxy.listen)")),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_demo_fails_over_on_kill_and_status_explains_why() {
    let (mut child, mut stdout, proxy, admin) = demo(&[]).await;
    wait_for_answers(proxy, "master-a", "master-a answers through the demo proxy").await;

    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"kill a\n").await.expect("type kill a");
    wait_line(&mut stdout, "master-a stopped").await;
    let reply = get(proxy, "/").await.expect("request after the kill");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.master(), Some("master-b"));

    let table = status_table(admin).await;
    assert!(table.contains("active master: master-b"), "{table}");
    assert!(
        table.contains("master-a -> master-b: master-a down"),
        "{table}"
    );

    stdin.write_all(b"quit\n").await.expect("type quit");
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
}

/// The `host:port` of the first `http://` URL in a line.
/// `jenkins-ha-proxy demo` with `extra` arguments, on ephemeral ports: the child, its
/// stdout, and the proxy and admin addresses it printed.
async fn demo(extra: &[&str]) -> (tokio::process::Child, Lines, SocketAddr, SocketAddr) {
    let ports = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    let args: Vec<&str> = ["demo"]
        .iter()
        .chain(extra)
        .chain(&ports)
        .copied()
        .collect();
    let mut child = spawn(&args, None);
    let mut stdout = lines_of(child.stdout.take().expect("stdout"));
    drain_rest(lines_of(child.stderr.take().expect("stderr")));
    let proxy = url_addr(&wait_line(&mut stdout, "<- send requests here").await);
    let admin = url_addr(&wait_line(&mut stdout, "/status").await);
    (child, stdout, proxy, admin)
}

/// Waits until `GET /` through `proxy` is answered by `master` (`what` names the wait).
async fn wait_for_answers(proxy: SocketAddr, master: &str, what: &str) {
    wait_until(what, || async {
        get(proxy, "/")
            .await
            .is_ok_and(|r| r.master() == Some(master))
    })
    .await;
}

fn url_addr(line: &str) -> SocketAddr {
    let start = line.find("http://").expect("a URL") + "http://".len();
    line[start..]
        .split(['/', ' '])
        .next()
        .and_then(|s| s.parse().ok())
        .expect("an address")
}

#[tokio::test]
async fn the_access_log_writes_one_line_per_request_when_enabled() {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("a");
    let text = config_text("127.0.0.1:0", "127.0.0.1:0", &[&a]).replacen(
        "shutdown_timeout = \"5s\"\n",
        "shutdown_timeout = \"5s\"\naccess_log = true\n",
        1,
    );
    let path = temp_config("access.toml", &text);
    let mut child = spawn(&["--log-format", "json", "run", "--config"], Some(&path));
    let mut lines = lines_of(child.stderr.take().expect("stderr"));
    let started = wait_line(&mut lines, "jenkins-ha-proxy starting").await;
    let proxy: SocketAddr = json_field(&started, "proxy")
        .parse()
        .expect("proxy address");
    let admin: SocketAddr = json_field(&started, "admin")
        .parse()
        .expect("admin address");
    wait_active_at(admin, "master-a").await;
    let reply = get(proxy, "/job/x/api/json?depth=1")
        .await
        .expect("request");
    assert_eq!(reply.status, hyper::StatusCode::OK);
    let line = wait_line(&mut lines, "jenkins_ha_proxy::access").await;
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    let fields = &entry["fields"];
    assert_eq!(fields["method"], "GET", "{line}");
    assert_eq!(fields["path"], "/job/x/api/json?depth=1", "{line}");
    assert_eq!(fields["status"], 200, "{line}");
    assert_eq!(fields["master"], "master-a", "{line}");
    assert_eq!(fields["bytes"], reply.body.len() as u64, "{line}");
    assert_eq!(fields["client"], "127.0.0.1", "{line}");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
}

/// A string field of a JSON log line's `fields`.
fn json_field(line: &str, key: &str) -> String {
    let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    entry["fields"][key]
        .as_str()
        .expect("a string field")
        .to_owned()
}

/// A config whose admin listener needs `admin.token_file` = `token_file`, plus `extra`.
fn token_config(name: &str, token_file: &std::path::Path, extra: &str) -> std::path::PathBuf {
    temp_config(
        name,
        &format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             token_file = \"{}\"\n[failover]\nstate_file = \"off\"\n{extra}\n\
             [[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:9\"\n",
            token_file.display()
        ),
    )
}

/// Issue 12 (9): `check` said "is valid" for an `admin.token_file` that was missing or
/// a directory, and `run` then exited 1, so the unit's `ExecStartPre=check` passed and
/// the service failed; with an empty file `run` started and refused every admin call.
/// Now both read the file through one function and fail alike, naming it.
#[tokio::test]
async fn check_and_run_agree_on_an_unusable_admin_token_file() {
    let dir = std::env::temp_dir().join(format!("jenkins-ha-proxy-tokens-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a-directory")).expect("dir");
    std::fs::write(dir.join("empty"), "\n").expect("empty token file");
    let cases = [
        ("missing", "does not exist"),
        ("a-directory", "a directory"),
        ("empty", "is empty"),
    ];
    for (file, why) in cases {
        let token_file = dir.join(file);
        let path = token_config(&format!("token-{file}.toml"), &token_file, "");
        let named = format!("admin.token_file {}", token_file.display());

        let output = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run check");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "check, {file}: {stderr}");
        assert!(stderr.contains(&named) && stderr.contains(why), "{stderr}");

        // The old code ran on with an empty file: bounded by the deadline.
        let mut child = spawn(&["run", "--config"], Some(&path));
        let mut stderr = lines_of(child.stderr.take().expect("stderr"));
        let line = wait_line(&mut stderr, "admin.token_file").await;
        assert!(line.contains(&named) && line.contains(why), "{line}");
        drain_rest(stderr);
        let status = wait_exit(&mut child).await;
        assert_eq!(status.code(), Some(1), "run, {file}");
    }

    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token file");
    let path = token_config("token-ok.toml", &token_file, "");
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    assert!(output.status.success(), "{output:?}");
}

/// `run` starts without a usable `jenkins.api_token_file` (it logs an error, and only
/// hot promotion's REST calls fail), so `check` passes but says so.
#[test]
fn check_warns_about_an_unusable_jenkins_api_token_file() {
    let dir = std::env::temp_dir().join(format!("jenkins-ha-proxy-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let admin_token = dir.join("admin-token");
    std::fs::write(&admin_token, "s3cret\n").expect("token file");
    let missing = dir.join("missing-jenkins-token");
    let path = token_config(
        "api-token.toml",
        &admin_token,
        &format!(
            "[jenkins]\nuser = \"ha-proxy\"\napi_token_file = \"{}\"",
            missing.display()
        ),
    );
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: jenkins.api_token_file {} does not exist",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("hot promotion"), "{stderr}");
}

#[test]
fn check_warns_that_active_active_is_only_for_replicated_controllers() {
    let text = "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                [failover]\nstate_file = \"off\"\n[pool]\nmode = \"active-active\"\n\
                [[backend]]\nname = \"replica-a\"\nurl = \"http://127.0.0.2:8080\"\n\
                [[backend]]\nname = \"replica-b\"\nurl = \"http://127.0.0.3:8080\"\n";
    let path = temp_config("active-active.toml", text);
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: pool.mode = \"active-active\"")
            && stderr.contains(
                "only in front of replicated controllers (CloudBees CI High Availability)"
            )
            && stderr.contains("never in front of plain Jenkins masters"),
        "{stderr}"
    );
    assert!(stdout.contains("pool:      active-active"), "{stdout}");
}

#[tokio::test]
async fn the_active_active_demo_places_new_sessions_by_load_and_status_shows_it() {
    let (mut child, mut stdout, proxy, admin) = demo(&["--active-active"]).await;
    // Loads 5, 1 and 3: once read, new sessions go to master-b.
    wait_for_answers(proxy, "master-b", "master-b answers new sessions").await;
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"load b 9 0 0\n").await.expect("type load");
    wait_line(&mut stdout, "master-b now reports 9 builds").await;
    wait_for_answers(proxy, "master-c", "master-c answers new sessions").await;

    let table = status_table(admin).await;
    assert!(table.starts_with("mode: active-active"), "{table}");
    assert!(table.contains("REPLICA"), "{table}");
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.trim_start().starts_with(name) && l.contains(" yes "))
            .unwrap_or_else(|| panic!("{name} row in {table}"))
            .to_owned()
    };
    assert!(
        row("master-b").contains("    9      9      0      0"),
        "{table}"
    );
    assert!(
        row("master-a").contains("    5      3      1      1"),
        "{table}"
    );

    stdin.write_all(b"quit\n").await.expect("type quit");
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
}
