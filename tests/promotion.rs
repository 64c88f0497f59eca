//! Issue #6: safe promotion on a shared JENKINS_HOME, against sample masters that
//! behave like Jenkins (503 while starting, quietDown/reload/cancelQuietDown recorded
//! with their auth header).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use hyper::StatusCode;
use jenkins_ha_proxy::config::{Config, Failback, HookConfig, HookEvent, Standby};
use jenkins_ha_proxy::sample::SampleMaster;
use support::{config_for, get, health, wait_until, Load, TestDaemon};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jha-promo-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
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

/// A config with Jenkins credentials (user "admin", token "11aa22bb").
fn config_with_credentials(masters: &[&SampleMaster], dir: &std::path::Path) -> Config {
    let token = dir.join("jenkins-token");
    std::fs::write(&token, "11aa22bb\n").expect("token file");
    let mut config = config_for(masters, health(50, 2, 2), Failback::Never);
    config.jenkins.user = Some("admin".into());
    config.jenkins.api_token_file = Some(token);
    config.failover.hold_timeout = Duration::from_secs(8);
    config
}

fn step_names(status: &serde_json::Value) -> Vec<String> {
    status["transitions"][0]["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| s["step"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn hot_promotion_quiets_the_standby_then_reloads_and_resumes_it_before_traffic() {
    let (a, b) = pair().await;
    let dir = temp_dir("hot");
    let mut config = config_with_credentials(&[&a, &b], &dir);
    for backend in &mut config.backends {
        backend.standby = Standby::Hot;
    }
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    wait_until("the hot standby is put into quiet-down", || async {
        b.is_quiet()
    })
    .await;
    assert!(!a.is_quiet(), "the active master is not quieted");

    // Reloading takes a moment: master-b answers 503 "starting" meanwhile.
    b.set_reload_duration(Duration::from_millis(400));
    let load = Load::start(daemon.proxy, 3, "/job/x/");
    wait_until("traffic on master-a", || async { a.traffic_count() > 10 }).await;
    a.stop().await;
    wait_until("master-b serves", || async { b.traffic_count() > 10 }).await;
    let (_, failures) = load.stop().await;
    assert_eq!(
        failures, 0,
        "requests are held during the promotion, none fails"
    );

    let calls: Vec<String> = b.rest_calls().iter().map(|c| c.path.clone()).collect();
    assert_eq!(calls, ["/quietDown", "/reload", "/cancelQuietDown"]);
    for call in b.rest_calls() {
        // base64("admin:11aa22bb")
        assert_eq!(
            call.authorization.as_deref(),
            Some("Basic YWRtaW46MTFhYTIyYmI=")
        );
    }
    assert!(!b.is_quiet());
    let status = daemon.status().await;
    assert_eq!(status["active"], "master-b");
    assert_eq!(
        step_names(&status),
        [
            "POST /reload on master-b",
            "master-b ready",
            "POST /cancelQuietDown on master-b",
            "traffic moved"
        ]
    );
    // Ready only after the reload finished (400 ms of "starting").
    assert!(status["transitions"][0]["steps"][1]["took_ms"]
        .as_f64()
        .is_some_and(|ms| ms >= 300.0));
    daemon.shutdown().await;
}

#[tokio::test]
async fn cold_promotion_runs_start_command_and_moves_traffic_only_once_healthy() {
    let (a, b) = pair().await;
    b.stop().await; // the cold standby's JVM is stopped
    let dir = temp_dir("cold");
    let marker = dir.join("started");
    let _ = std::fs::remove_file(&marker);
    let mut config = config_for(&[&a, &b], health(50, 2, 2), Failback::Never);
    config.failover.hold_timeout = Duration::from_secs(8);
    config.backends[1].standby = Standby::Cold;
    config.backends[1].start_command = Some(vec![
        "sh".into(),
        "-c".into(),
        format!("echo {{name}} > {}", marker.display()),
    ]);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    let load = Load::start(daemon.proxy, 3, "/job/x/");
    wait_until("traffic on master-a", || async { a.traffic_count() > 10 }).await;
    a.stop().await;
    // The start command ran (with {name} substituted); "the JVM" comes up a little later.
    wait_until("start_command ran", || async { marker.exists() }).await;
    assert_eq!(
        std::fs::read_to_string(&marker).expect("marker").trim(),
        "master-b"
    );
    assert_eq!(
        daemon.active().await,
        None,
        "no traffic before master-b is healthy"
    );
    b.restart().await.expect("start master-b");
    wait_until("master-b serves", || async { b.traffic_count() > 10 }).await;
    assert_eq!(load.stop().await.1, 0, "held, then served by master-b");
    let status = daemon.status().await;
    assert_eq!(status["active"], "master-b");
    assert_eq!(
        step_names(&status),
        ["start master-b", "master-b ready", "traffic moved"]
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn require_fence_with_a_failing_fence_never_promotes_and_says_why() {
    let (a, b) = pair().await;
    let mut config = config_for(&[&a, &b], health(50, 2, 2), Failback::Never);
    config.failover.require_fence = true;
    config.failover.hold_timeout = Duration::from_millis(300);
    config.backends[0].fence_command = Some(vec![
        "sh".into(),
        "-c".into(),
        "echo 'ipmi: no route' >&2; exit 1".into(),
    ]);
    config.backends[1].fence_command = Some(vec!["true".into()]);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    a.stop().await;
    wait_until("the pool waits on fencing", || async {
        daemon.status().await["promotion"]["waiting_on_fence"].is_string()
    })
    .await;
    let status = daemon.status().await;
    let why = status["promotion"]["waiting_on_fence"]
        .as_str()
        .expect("why")
        .to_owned();
    assert!(
        why.contains("fencing master-a failed") && why.contains("ipmi: no route"),
        "{why}"
    );
    assert_eq!(status["active"], serde_json::Value::Null);
    assert_eq!(status["promotion"]["to"], "master-b");
    let reply = get(daemon.proxy, "/").await.expect("reply");
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "held, then 503 when hold_timeout runs out"
    );
    assert!(reply.headers.contains_key("retry-after"));
    assert_eq!(b.traffic_count(), 0, "never promoted");
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_running_cold_standby_raises_the_two_masters_up_alarm() {
    let (a, b) = pair().await;
    let mut config = config_for(&[&a, &b], health(50, 2, 2), Failback::Never);
    config.backends[1].standby = Standby::Cold;
    config.backends[1].start_command = Some(vec!["true".into()]);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    wait_until("the alarm", || async {
        daemon.status().await["alarms"]
            .as_array()
            .is_some_and(|alarms| {
                alarms
                    .iter()
                    .any(|a| a.as_str().is_some_and(|t| t.contains("two masters up")))
            })
    })
    .await;
    b.stop().await;
    wait_until("the alarm clears once the standby is stopped", || async {
        daemon.status().await["alarms"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn hooks_run_with_placeholders() {
    let (a, b) = pair().await;
    let dir = temp_dir("hooks");
    let log = dir.join("hooks.log");
    let _ = std::fs::remove_file(&log);
    let mut config = config_for(&[&a, &b], health(50, 2, 2), Failback::Never);
    let append = |event: HookEvent| HookConfig {
        on: event,
        command: vec![
            "sh".into(),
            "-c".into(),
            format!("echo \"$0 $1\" >> {}", log.display()),
            event.as_str().into(),
            "{name}".into(),
        ],
        timeout: Duration::from_secs(5),
    };
    config.hooks = vec![
        append(HookEvent::Promote),
        append(HookEvent::Demote),
        append(HookEvent::MasterDown),
    ];
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    a.set_healthy(false);
    daemon.wait_active(Some("master-b")).await;
    let expected = [
        "promote master-a",
        "master_down master-a",
        "demote master-a",
        "promote master-b",
    ];
    wait_until("every hook ran", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        expected.iter().all(|line| text.lines().any(|l| l == *line))
    })
    .await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn starting_grace_holds_traffic_for_a_restarting_active_master() {
    let (a, b) = pair().await;
    let mut config = config_for(&[&a, &b], health(50, 2, 2), Failback::Never);
    config.failover.starting_grace = Duration::from_secs(5);
    config.failover.hold_timeout = Duration::from_secs(8);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    a.set_starting(true);
    wait_until("master-a shows as starting", || async {
        daemon.status().await["backends"][0]["state"] == "starting"
    })
    .await;
    let status = daemon.status().await;
    assert_eq!(
        status["active"],
        serde_json::Value::Null,
        "not servable while starting"
    );
    assert!(status["promotion"]["waiting_for"]
        .as_str()
        .is_some_and(|w| w.contains("master-a to finish restarting")));
    // A request now waits for master-a rather than going to master-b or failing.
    let proxy = daemon.proxy;
    let held = tokio::spawn(async move { get(proxy, "/job/x/").await });
    wait_until("a few more checks while held", || async {
        daemon.status().await["backends"][0]["state"] == "starting"
    })
    .await;
    a.set_starting(false);
    let reply = held.await.expect("task").expect("reply");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.master(), Some("master-a"));
    let status = daemon.status().await;
    assert_eq!(status["active"], "master-a");
    assert_eq!(status["failovers"], 0, "no failover within the grace");
    assert_eq!(b.traffic_count(), 0);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_hot_standby_out_of_quiet_down_raises_the_alarm_and_is_quieted_again() {
    let (a, b) = pair().await;
    let dir = temp_dir("unquiet");
    let mut config = config_with_credentials(&[&a, &b], &dir);
    config.backends[1].standby = Standby::Hot;
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    wait_until("master-b is put into quiet-down", || async { b.is_quiet() }).await;
    // Someone cancels it behind the proxy's back (or its JVM restarted unquieted).
    let request = hyper::Request::post("/cancelQuietDown")
        .header("host", "master-b")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    support::send(b.addr(), request).await.expect("cancel");
    assert!(!b.is_quiet());
    wait_until("the two-masters-up alarm", || async {
        daemon.status().await["alarms"]
            .as_array()
            .is_some_and(|alarms| {
                alarms.iter().any(|a| {
                    a.as_str()
                        .is_some_and(|t| t.contains("master-b (hot standby) is out of quiet-down"))
                })
            })
    })
    .await;
    wait_until("master-b is quieted again", || async { b.is_quiet() }).await;
    wait_until("the alarm clears", || async {
        daemon.status().await["alarms"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;
    daemon.shutdown().await;
}
