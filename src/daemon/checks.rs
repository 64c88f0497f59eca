//! The tasks that watch each master and report to the owner: the health probes and,
//! in active-active mode, the load pollers. Started together, and restarted together
//! by every reload (they follow the masters and the settings).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::settings::jenkins_credentials;
use crate::config::Config;
use crate::control::health;
use crate::control::load::{self, LoadSettings};
use crate::control::owner::Event;
use crate::control::routing::Master;

/// Probes (and load pollers) for `masters`, reporting on `events`.
pub(super) fn spawn(
    masters: &[Arc<Master>],
    config: &Config,
    events: mpsc::Sender<Event>,
) -> JoinSet<()> {
    let mut tasks = health::spawn_probes(masters, &config.health, events.clone());
    if config.pool.active_active() {
        let settings = LoadSettings {
            interval: config.pool.load_interval,
            timeout: config.jenkins.call_timeout,
            // An unusable token file is logged with the owner's settings: the reads
            // then go without credentials (and fail where Jenkins requires them).
            credentials: jenkins_credentials(config).ok().flatten(),
        };
        load::spawn_pollers(&mut tasks, masters, &settings, events);
    }
    tasks
}
