//! What the owner starts on the side, each in a task of its own: promoter tasks,
//! hooks, and the Jenkins REST calls that keep hot standbys in quiet-down. What comes
//! back, if anything, comes back as an [`Event`].

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Event;
use crate::config::{HookConfig, HookEvent};
use crate::control::commands::{self, Vars};
use crate::control::jenkins;
use crate::control::promotion::{self, PromotionSettings};
use crate::control::routing::Master;

/// A running promoter task; dropping it aborts the task (superseded or done): never
/// two promoters at once.
pub(super) struct Promoter(JoinHandle<()>);

impl Drop for Promoter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts promoting `to` (fencing `from` first); progress comes back as events.
pub(super) fn promote(
    from: Option<Arc<Master>>,
    to: Arc<Master>,
    reason: String,
    settings: Arc<PromotionSettings>,
    events: mpsc::Sender<Event>,
) -> Promoter {
    Promoter(tokio::spawn(promotion::run(
        from, to, reason, settings, events,
    )))
}

/// Runs the hooks of `hooks` configured for `event`, about `master`.
pub(super) fn run_hooks(
    hooks: &[HookConfig],
    event: HookEvent,
    master: &Arc<Master>,
    reason: &str,
) {
    for hook in hooks.iter().filter(|h| h.on == event) {
        let hook = hook.clone();
        let master = Arc::clone(master);
        let reason = reason.to_owned();
        tokio::spawn(async move {
            let vars = Vars {
                name: &master.name,
                url: &master.url,
                host: &master.host,
                reason: &reason,
                epoch: "",
            };
            if let Err(error) = commands::run(&hook.command, &vars, hook.timeout).await {
                tracing::warn!(hook = hook.on.as_str(), %error, "hook failed");
            }
        });
    }
}

/// `POST /quietDown` on a hot standby.
pub(super) fn quiet_down(master: Arc<Master>, settings: Arc<PromotionSettings>) {
    tokio::spawn(async move {
        let outcome = jenkins::post(
            &master.upstream,
            "/quietDown",
            settings.credentials.as_ref(),
            settings.call_timeout,
        )
        .await;
        if let Err(error) = outcome {
            tracing::error!(master = %master.name, %error, "cannot put the hot standby into quiet-down");
        }
    });
}

/// Asks a hot standby whether it is in quiet-down; the answer comes back as
/// [`Event::QuietState`] (none when it cannot be told).
pub(super) fn ask_quiet_state(
    master: Arc<Master>,
    settings: Arc<PromotionSettings>,
    events: mpsc::Sender<Event>,
) {
    tokio::spawn(async move {
        let quieting = jenkins::quieting_down(
            &master.upstream,
            settings.credentials.as_ref(),
            settings.call_timeout,
        )
        .await;
        if let Some(quieting) = quieting {
            let _ = events.send(Event::QuietState { master, quieting }).await;
        }
    });
}
