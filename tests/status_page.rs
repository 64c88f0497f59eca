//! The admin status page (`GET /`) in a real browser: Debian's headless Chromium loads
//! it from the in-process daemon, runs its script against `/status`, and the test
//! reads the rendered DOM (`--dump-dom`) before and after a failover.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use jenkins_ha_proxy::config::Failback;
use jenkins_ha_proxy::sample::SampleMaster;
use support::{config_for, get, health, TestDaemon};

const CHROMIUM: &str = "/usr/bin/chromium";

/// One browser run: a cold Chromium start on a loaded CI machine takes seconds.
const BROWSER_DEADLINE: Duration = Duration::from_secs(60);

/// Until the rendered page shows what the daemon already reports.
const PAGE_DEADLINE: Duration = Duration::from_secs(90);

/// A fresh Chromium profile directory, removed when dropped.
struct Profile(PathBuf);

impl Profile {
    fn new() -> Profile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "jenkins-ha-proxy-chromium-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the Chromium profile directory");
        Profile(path)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What Chromium rendered: the DOM after the page's script ran, and the console.
struct Rendered {
    dom: String,
    console: Vec<String>,
}

/// Loads `url` in headless Chromium and returns the DOM once the page has run for
/// 3 s of virtual time (enough for two polls of `/status`).
async fn render(url: &str) -> Rendered {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: this test needs Debian's Chromium; run \
         `apt-get install -y chromium` (.ci/run installs it)"
    );
    let profile = Profile::new();
    let run = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(["--virtual-time-budget=3000", "--dump-dom", url])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("Chromium did not finish within {BROWSER_DEADLINE:?}"))
        .expect("run Chromium");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "Chromium failed: {stderr}");
    Rendered {
        dom: String::from_utf8_lossy(&output.stdout).into_owned(),
        // Chromium logs every console message (errors, CSP refusals) as ":CONSOLE".
        console: stderr
            .lines()
            .filter(|line| line.contains(":CONSOLE"))
            .map(str::to_owned)
            .collect(),
    }
}

/// Renders the page until `done` accepts it; panics after [`PAGE_DEADLINE`].
async fn render_until(admin: SocketAddr, what: &str, done: impl Fn(&Rendered) -> bool) -> Rendered {
    let started = Instant::now();
    loop {
        let rendered = render(&format!("http://{admin}/")).await;
        assert!(
            rendered.console.is_empty(),
            "the page logged to the console (errors?): {:#?}",
            rendered.console
        );
        if done(&rendered) {
            return rendered;
        }
        assert!(
            started.elapsed() < PAGE_DEADLINE,
            "timed out after {PAGE_DEADLINE:?} waiting for the page to show {what}; last DOM:\n{}",
            rendered.dom
        );
    }
}

/// The text of every element carrying `attribute` (e.g. `id="active-master"`). The
/// page inserts data as text only, so the text runs up to the next tag.
fn texts<'a>(dom: &'a str, attribute: &str) -> Vec<&'a str> {
    dom.match_indices(attribute)
        .filter_map(|(at, _)| {
            let rest = &dom[at..];
            let start = rest.find('>')? + 1;
            let end = rest[start..].find('<')?;
            Some(rest[start..start + end].trim())
        })
        .collect()
}

fn active_master(rendered: &Rendered) -> Option<&str> {
    texts(&rendered.dom, "id=\"active-master\"")
        .first()
        .copied()
}

async fn two_masters() -> (SampleMaster, SampleMaster) {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a");
    let b = SampleMaster::start("master-b", "127.0.0.3:0".parse().expect("addr"))
        .await
        .expect("master-b");
    (a, b)
}

#[tokio::test]
async fn the_admin_root_serves_a_self_contained_page() {
    let (a, b) = two_masters().await;
    let daemon = TestDaemon::start(config_for(&[&a, &b], health(100, 1, 2), Failback::Never)).await;
    let page = get(daemon.admin, "/").await.expect("GET /");
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let csp = page.headers["content-security-policy"]
        .to_str()
        .expect("ASCII policy");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = page.text();
    assert!(html.contains("id=\"active-master\""));
    for external in ["http://", "https://", "//fonts.", "@import"] {
        let outside = html
            .match_indices(external)
            .any(|(at, _)| !html[at..].starts_with("http://www.w3.org/2000/svg"));
        assert!(
            !outside,
            "the page refers to {external}: it must not load external assets"
        );
    }
    daemon.shutdown().await;
}

#[tokio::test]
async fn the_page_shows_the_active_master_and_follows_a_failover() {
    let (a, b) = two_masters().await;
    let daemon = TestDaemon::start_with_active(
        config_for(&[&a, &b], health(100, 1, 2), Failback::Never),
        "master-a",
    )
    .await;

    let before = render_until(daemon.admin, "master-a active", |r| {
        active_master(r) == Some("master-a")
    })
    .await;
    let rows: Vec<&str> = before
        .dom
        .match_indices("data-master=\"")
        .map(|(at, prefix)| {
            let name = &before.dom[at + prefix.len()..];
            &name[..name.find('"').unwrap_or(0)]
        })
        .collect();
    assert_eq!(rows, ["master-a", "master-b"], "masters in file order");

    a.set_healthy(false);
    daemon.wait_active(Some("master-b")).await;
    let after = render_until(daemon.admin, "master-b active after a failover", |r| {
        active_master(r) == Some("master-b")
    })
    .await;
    let reasons = texts(&after.dom, "class=\"reason\"");
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("master-a") && reason.contains("master-b is now active")),
        "a transition says why master-a lost: {reasons:?}"
    );
    daemon.shutdown().await;
}
