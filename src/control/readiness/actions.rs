//! What readiness is told about a check, and what it asks the owner to do.

use std::sync::Arc;
use std::time::Duration;

use crate::config::HookEvent;
use crate::control::promotion::Step;
use crate::control::routing::Master;

/// One completed health check, as readiness sees it.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub master: &'a Arc<Master>,
    pub passed: bool,
    /// Jenkins answered that it is starting (503 "getting ready to work").
    pub starting: bool,
    /// The `X-Jenkins-Session` of a passed check.
    pub session: Option<&'a str>,
}

/// What becomes of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The master being promoted fails its checks while it reloads or starts: expected,
    /// and bounded by `promote_timeout`. Neither its status nor the election is told.
    Expected,
    /// The serving master is restarting within `starting_grace`: its status shows it,
    /// the election is not told.
    Held,
    /// The election counts it.
    Counts,
}

/// What the owner carries out for readiness.
#[derive(Debug)]
pub enum Action {
    /// Run the hooks configured for `event`, about `master`.
    Hooks {
        event: HookEvent,
        master: Arc<Master>,
        reason: &'static str,
    },
    /// Start the promoter task (fence `from`, make `to` ready); it replaces any other.
    Promote {
        from: Option<Arc<Master>>,
        to: Arc<Master>,
    },
    /// Stop the promoter task: its promotion ended or was superseded.
    StopPromoter,
    /// `POST /quietDown` on a hot standby, so that it starts no builds of its own.
    QuietDown(Arc<Master>),
    /// Ask a hot standby whether it is still in quiet-down (the answer comes back to
    /// [`Readiness::quiet_state`]).
    AskQuietState(Arc<Master>),
    /// Append `step` to the newest transition towards `to`.
    RecordStep {
        to: Arc<Master>,
        step: Step,
    },
    /// Making `master` ready failed: the election must hear of it.
    PromotionFailed {
        master: Arc<Master>,
        error: String,
    },
    Log(Notice),
}

/// What readiness has to say, for the log.
#[derive(Debug)]
pub enum Notice {
    /// A new `X-Jenkins-Session`: the JVM restarted.
    Restarted(Arc<Master>),
    /// The serving master says it is starting: its traffic is held.
    HoldingForRestart {
        master: Arc<Master>,
        grace: Duration,
    },
    /// `starting_grace` ran out: the election hears of the failed checks.
    GraceRanOut(Arc<Master>),
    PromotionStarts(Arc<Master>),
    Step {
        master: Arc<Master>,
        step: Step,
    },
    WaitingOnFence {
        master: Arc<Master>,
        why: String,
    },
    PromotionComplete {
        master: Arc<Master>,
        took: Duration,
    },
    /// A new two-masters-up alarm.
    Alarm(String),
}

impl Notice {
    pub fn log(&self) {
        match self {
            Notice::Restarted(master) => {
                tracing::warn!(master = %master.name, "Jenkins restarted (new X-Jenkins-Session)")
            }
            Notice::HoldingForRestart { master, grace } => {
                tracing::warn!(master = %master.name, grace = ?grace,
                    "the active master is restarting: holding traffic for it")
            }
            Notice::GraceRanOut(master) => {
                tracing::warn!(master = %master.name, "starting_grace ran out: failing over")
            }
            Notice::PromotionStarts(master) => {
                tracing::info!(master = %master.name, "promotion starts: traffic is held until it is ready")
            }
            Notice::Step { master, step } if step.ok => {
                tracing::info!(master = %master.name, step = %step.step, took = ?step.took,
                    "promotion step: {}", step.detail)
            }
            Notice::Step { master, step } => {
                tracing::warn!(master = %master.name, step = %step.step, took = ?step.took,
                    "promotion step failed: {}", step.detail)
            }
            Notice::WaitingOnFence { master, why } => {
                tracing::error!(master = %master.name, "promotion waits on fencing: {why}")
            }
            Notice::PromotionComplete { master, took } => {
                tracing::info!(master = %master.name, ?took, "promotion complete: traffic moves")
            }
            Notice::Alarm(alarm) => tracing::error!("{alarm}"),
        }
    }
}
