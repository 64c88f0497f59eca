//! Load pollers (active-active mode): one task per replica reads Jenkins' load every
//! `pool.load_interval` (busy executors and online agents from `/computer/api/json`,
//! queued items from `/queue/api/json`, with the `[jenkins]` credentials) and sends a
//! [`LoadReport`] to whoever listens (the owner task, which takes them as events, as
//! it takes the probes' reports). Pollers decide nothing; a read that fails is
//! reported too (the replica is then placed last, and `/status` says why).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::control::jenkins::{self, Credentials};
use crate::control::replicas::{Load, LoadReading};
use crate::control::routing::Master;
use crate::upstream::Upstream;

/// Busy executors (running builds) and each computer's state.
pub const COMPUTER_PATH: &str = "/computer/api/json?tree=busyExecutors,computer[offline]";
/// The build queue's items.
pub const QUEUE_PATH: &str = "/queue/api/json?tree=items[id]";

/// The outcome of one read of one replica's load.
#[derive(Debug)]
pub struct LoadReport {
    pub master: Arc<Master>,
    pub reading: LoadReading,
}

/// What the pollers need from the configuration.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// `pool.load_interval`.
    pub interval: Duration,
    /// `jenkins.call_timeout`: the deadline of each of the two calls.
    pub timeout: Duration,
    /// `jenkins.user` / `api_token_file`.
    pub credentials: Option<Credentials>,
}

/// Starts one poller per master into `tasks`; they run until aborted, or until nobody
/// receives `reports` any more. `E`: what the receiver takes (the owner's events).
pub fn spawn_pollers<E>(
    tasks: &mut JoinSet<()>,
    masters: &[Arc<Master>],
    settings: &LoadSettings,
    reports: mpsc::Sender<E>,
) where
    E: From<LoadReport> + Send + 'static,
{
    for master in masters {
        let span = tracing::info_span!("load", master = %master.name);
        let poller = poll_loop(Arc::clone(master), settings.clone(), reports.clone());
        tasks.spawn(poller.instrument(span));
    }
}

async fn poll_loop<E: From<LoadReport>>(
    master: Arc<Master>,
    settings: LoadSettings,
    reports: mpsc::Sender<E>,
) {
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        let started = tokio::time::Instant::now();
        let reading = read(&master.upstream, &settings).await;
        if let Some(error) = reading.error() {
            tracing::debug!(%error, "cannot read the load");
        }
        // A slow read never causes a burst of catch-up reads.
        next = started + settings.interval;
        let report = LoadReport {
            master: Arc::clone(&master),
            reading,
        };
        if reports.send(E::from(report)).await.is_err() {
            return; // nobody listens (the owner has stopped): so do we
        }
    }
}

/// Reads the load of the master behind `upstream` once (both calls at once).
pub async fn read(upstream: &Upstream, settings: &LoadSettings) -> LoadReading {
    let credentials = settings.credentials.as_ref();
    let (computers, queue) = tokio::join!(
        jenkins::get_json(upstream, COMPUTER_PATH, credentials, settings.timeout),
        jenkins::get_json(upstream, QUEUE_PATH, credentials, settings.timeout),
    );
    let at = SystemTime::now();
    let parsed = match (computers, queue) {
        (Ok(computers), Ok(queue)) => parse(&computers, &queue),
        (Err(error), _) | (_, Err(error)) => Err(error.to_string()),
    };
    match parsed {
        Ok(load) => LoadReading::Read { load, at },
        Err(error) => LoadReading::Failed { error, at },
    }
}

/// The load in the two answers: `busyExecutors`, the online computers other than the
/// built-in node (`hudson.model.Hudson$MasterComputer`), and the queue's items.
pub fn parse(computers: &Value, queue: &Value) -> Result<Load, String> {
    let builds = computers
        .get("busyExecutors")
        .and_then(Value::as_u64)
        .ok_or("/computer/api/json has no busyExecutors: is it Jenkins?")?;
    let agents = computers
        .get("computer")
        .and_then(Value::as_array)
        .ok_or("/computer/api/json has no computer list: is it Jenkins?")?
        .iter()
        .filter(|computer| computer.get("offline").and_then(Value::as_bool) == Some(false))
        .filter(|computer| {
            let class = computer.get("_class").and_then(Value::as_str).unwrap_or("");
            !class.ends_with("MasterComputer")
        })
        .count() as u64;
    let queued = queue
        .get("items")
        .and_then(Value::as_array)
        .ok_or("/queue/api/json has no items: is it Jenkins?")?
        .len() as u64;
    Ok(Load {
        builds,
        queued,
        agents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_jenkins_answers() {
        let computers = serde_json::json!({
            "_class": "hudson.model.ComputerSet",
            "busyExecutors": 3,
            "computer": [
                {"_class": "hudson.model.Hudson$MasterComputer", "offline": false},
                {"_class": "hudson.slaves.SlaveComputer", "offline": false},
                {"_class": "hudson.slaves.SlaveComputer", "offline": true},
                {"_class": "hudson.slaves.SlaveComputer", "offline": false},
            ]
        });
        let queue = serde_json::json!({"_class": "hudson.model.Queue", "items": [{"id": 7}]});
        let load = parse(&computers, &queue).expect("a load");
        assert_eq!((load.builds, load.queued, load.agents), (3, 1, 2));
        assert_eq!(load.total(), 6);
    }

    #[test]
    fn says_what_is_missing() {
        let queue = serde_json::json!({"items": []});
        let error = parse(&serde_json::json!({"computer": []}), &queue).expect_err("no busy");
        assert!(error.contains("busyExecutors"), "{error}");
        let computers = serde_json::json!({"busyExecutors": 0, "computer": []});
        let error = parse(&computers, &serde_json::json!({})).expect_err("no items");
        assert!(error.contains("items"), "{error}");
        assert_eq!(
            parse(&computers, &queue).map(|l| l.total()),
            Ok(0),
            "an idle replica"
        );
    }
}
