//! Making a master ready before it gets traffic, on a shared JENKINS_HOME:
//! fence the master that had traffic, then reload (hot standby) or start (cold
//! standby) the new one and wait until it answers healthy. Only then does the owner
//! move traffic. Each step is reported with its timing for the transition record, as
//! a [`PromotionReport`] to whoever listens (the owner task, which takes them as events).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::{HealthConfig, Standby};
use crate::control::commands::{self, Vars};
use crate::control::jenkins::{self, Credentials};
use crate::control::routing::Master;

/// How long to wait before fencing again when `require_fence` holds a promotion.
const FENCE_RETRY: Duration = Duration::from_secs(2);

/// What promotion needs from the configuration.
#[derive(Debug, Clone)]
pub struct PromotionSettings {
    pub require_fence: bool,
    pub promote_timeout: Duration,
    pub command_timeout: Duration,
    pub call_timeout: Duration,
    /// None: REST calls go without auth (and Jenkins will likely refuse them).
    pub credentials: Option<Credentials>,
    pub health: HealthConfig,
}

impl PromotionSettings {
    /// Whether moving traffic from `from` to `to` needs steps first.
    pub fn needed(&self, from: Option<&Arc<Master>>, to: &Master) -> bool {
        let fence = from.is_some_and(|old| old.fence_command.is_some() || self.require_fence);
        fence || to.standby != Standby::None
    }
}

/// One step of a promotion, as /status shows it.
#[derive(Debug, Clone)]
pub struct Step {
    pub step: String,
    pub ok: bool,
    pub took: Duration,
    pub detail: String,
}

/// What the promoter reports to the owner.
#[derive(Debug)]
pub enum Progress {
    Step(Step),
    /// `require_fence` holds the promotion: fencing failed and is retried.
    WaitingOnFence(String),
    /// Ready for traffic, or failed (the owner marks the master down).
    Done(Result<(), PromotionError>),
}

/// Why a master could not be made ready. Display is what `/status` and the log show.
#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    #[error(transparent)]
    Call(#[from] jenkins::CallError),
    #[error("{0} is a cold standby without start_command")]
    NoStartCommand(String),
    #[error(transparent)]
    Start(#[from] commands::CommandError),
    #[error("not healthy within failover.promote_timeout {}: {last_error}", humantime::format_duration(*.timeout))]
    NotReady {
        timeout: Duration,
        /// The last check's failure, in words.
        last_error: String,
    },
}

/// Progress of the promotion of `target`.
#[derive(Debug)]
pub struct PromotionReport {
    pub target: Arc<Master>,
    pub progress: Progress,
}

/// Sends a promotion's progress, as reports about its target. `E`: what the receiver
/// takes (the owner's events), made from each report.
struct Reporter<E> {
    reports: mpsc::Sender<E>,
    target: Arc<Master>,
}

impl<E: From<PromotionReport>> Reporter<E> {
    async fn send(&self, progress: Progress) {
        let report = PromotionReport {
            target: Arc::clone(&self.target),
            progress,
        };
        // The receiver (the owner) stops only when the daemon does: nothing to report to.
        let _ = self.reports.send(E::from(report)).await;
    }
}

/// Promotes `to` (fencing `from` first), reporting progress on `reports`.
pub async fn run<E: From<PromotionReport>>(
    from: Option<Arc<Master>>,
    to: Arc<Master>,
    reason: String,
    settings: Arc<PromotionSettings>,
    reports: mpsc::Sender<E>,
) {
    let report = Reporter {
        reports,
        target: Arc::clone(&to),
    };
    if let Some(old) = from.as_ref().filter(|old| !Arc::ptr_eq(old, &to)) {
        fence(old, &reason, &settings, &report).await;
    }
    let outcome = prepare(&to, &settings, &report).await;
    report.send(Progress::Done(outcome)).await;
}

async fn fence(
    old: &Arc<Master>,
    reason: &str,
    settings: &PromotionSettings,
    report: &Reporter<impl From<PromotionReport>>,
) {
    let Some(command) = &old.fence_command else {
        if settings.require_fence {
            let why = format!(
                "failover.require_fence is set but {} has no fence_command: add one",
                old.name
            );
            report.send(Progress::WaitingOnFence(why)).await;
            std::future::pending::<()>().await;
        }
        return;
    };
    loop {
        let started = Instant::now();
        let vars = Vars {
            name: &old.name,
            url: &old.url,
            host: &old.host,
            reason,
            epoch: "",
        };
        let outcome = commands::run(command, &vars, settings.command_timeout).await;
        let ok = outcome.is_ok();
        let detail = match &outcome {
            Ok(output) => output.clone(),
            Err(error) => error.to_string(),
        };
        report
            .send(Progress::Step(Step {
                step: format!("fence {}", old.name),
                ok,
                took: started.elapsed(),
                detail: detail.clone(),
            }))
            .await;
        if ok || !settings.require_fence {
            return;
        }
        report
            .send(Progress::WaitingOnFence(format!(
                "fencing {} failed: {detail}; retrying",
                old.name
            )))
            .await;
        tokio::time::sleep(FENCE_RETRY).await;
    }
}

/// One Jenkins REST call on `to`, reported as a step.
async fn rest_call(
    to: &Arc<Master>,
    path: &str,
    settings: &PromotionSettings,
    report: &Reporter<impl From<PromotionReport>>,
) -> Result<(), PromotionError> {
    let started = Instant::now();
    let outcome = jenkins::post(
        &to.upstream,
        path,
        settings.credentials.as_ref(),
        settings.call_timeout,
    )
    .await;
    report
        .send(Progress::Step(Step {
            step: format!("POST {path} on {}", to.name),
            ok: outcome.is_ok(),
            took: started.elapsed(),
            detail: outcome
                .as_ref()
                .map_or_else(|e| e.to_string(), |s| s.to_string()),
        }))
        .await;
    outcome?;
    Ok(())
}

/// Hot: reload, wait until healthy, cancel quiet-down. Cold: start, wait until healthy.
async fn prepare(
    to: &Arc<Master>,
    settings: &PromotionSettings,
    report: &Reporter<impl From<PromotionReport>>,
) -> Result<(), PromotionError> {
    match to.standby {
        Standby::None => return Ok(()),
        Standby::Hot => {
            // Reload first (it picks up what the old master changed on the shared home);
            // Jenkins answers 503 while it reloads, so wait for it before resuming it.
            rest_call(to, "/reload", settings, report).await?;
            wait_healthy(to, settings, report).await?;
            return rest_call(to, "/cancelQuietDown", settings, report).await;
        }
        Standby::Cold => {
            let Some(command) = &to.start_command else {
                return Err(PromotionError::NoStartCommand(to.name.clone()));
            };
            let started = Instant::now();
            let vars = Vars {
                name: &to.name,
                url: &to.url,
                host: &to.host,
                reason: "promotion",
                epoch: "",
            };
            let outcome = commands::run(command, &vars, settings.command_timeout).await;
            report
                .send(Progress::Step(Step {
                    step: format!("start {}", to.name),
                    ok: outcome.is_ok(),
                    took: started.elapsed(),
                    detail: outcome
                        .as_ref()
                        .map_or_else(|e| e.to_string(), Clone::clone),
                }))
                .await;
            outcome?;
        }
    }
    wait_healthy(to, settings, report).await
}

async fn wait_healthy(
    to: &Arc<Master>,
    settings: &PromotionSettings,
    report: &Reporter<impl From<PromotionReport>>,
) -> Result<(), PromotionError> {
    let started = Instant::now();
    let poll = settings.health.interval.min(Duration::from_millis(200));
    let mut last_error = String::from("not checked yet");
    while started.elapsed() < settings.promote_timeout {
        match crate::control::health::check(&to.upstream, &settings.health).await {
            Ok(()) => {
                report
                    .send(Progress::Step(Step {
                        step: format!("{} ready", to.name),
                        ok: true,
                        took: started.elapsed(),
                        detail: "answers healthy".into(),
                    }))
                    .await;
                return Ok(());
            }
            Err(error) => last_error = error.to_string(),
        }
        tokio::time::sleep(poll).await;
    }
    let error = PromotionError::NotReady {
        timeout: settings.promote_timeout,
        last_error,
    };
    report
        .send(Progress::Step(Step {
            step: format!("{} ready", to.name),
            ok: false,
            took: started.elapsed(),
            detail: error.to_string(),
        }))
        .await;
    Err(error)
}
