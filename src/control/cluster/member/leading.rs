//! Leadership: taking it when nobody holds it, writing the pointer the election
//! decides while it lasts, and asking the leader for a switchover.

use std::time::Instant;

use super::super::etcd::{Cmp, Compare, Op};
use super::super::leader::{Decision, Leadership};
use super::super::pool::{combined, SwitchoverRequest};
use super::Member;
use crate::control::election::Health;

use super::LeaderCommands;
use crate::config::HookEvent;
use crate::control::commands::{self, Vars};

impl Member {
    /// Asks the leader for a switchover, after the checks it will make itself.
    pub(super) async fn switchover(&mut self, to: &str) -> Result<(), String> {
        if !self.settings.backends.iter().any(|b| b.name == to) {
            let known: Vec<&str> = self
                .settings
                .backends
                .iter()
                .map(|b| b.name.as_str())
                .collect();
            return Err(format!(
                "no master named {to:?}; the pool has: {}",
                known.join(", ")
            ));
        }
        if self.mirror.disabled.contains(to) {
            return Err(format!("{to} is disabled: enable it first"));
        }
        let seen = combined(&self.mirror, to);
        if seen.health != Some(Health::Up) {
            return Err(format!(
                "{to} is not seen up by a majority of the {} live instances: refusing to send traffic to it",
                seen.live
            ));
        }
        let request = SwitchoverRequest {
            to: to.to_owned(),
            by: self.settings.instance.clone(),
        };
        let value = serde_json::to_vec(&request).unwrap_or_default();
        self.client
            .put(self.keys.switchover().as_bytes(), &value, 0)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Takes leadership when nobody holds it; as leader, writes what the election
    /// decides, in a transaction that holds only while our leader key is ours.
    pub(super) async fn lead(&mut self) {
        let me = self.settings.instance.clone();
        match &self.mirror.leader {
            Some((name, revision)) if *name == me => {
                if !matches!(&self.leadership, Some((_, ours, _)) if ours == revision) {
                    // Our key from an earlier term: a fresh election over the pool's state.
                    self.start_term(*revision);
                }
            }
            Some(_) => {
                if self.leadership.take().is_some() {
                    tracing::info!(instance = %me, "no longer the cluster's leader");
                }
                return;
            }
            None => {
                let key = self.keys.leader().into_bytes();
                let campaign = self
                    .client
                    .txn(
                        &[Compare::Version(key.clone(), Cmp::Equal, 0)],
                        &[Op::Put {
                            key,
                            value: me.clone().into_bytes(),
                            lease: self.lease,
                        }],
                        &[],
                    )
                    .await;
                match campaign {
                    Ok(won) if won.succeeded => {
                        self.mirror.leader = Some((me.clone(), won.revision));
                        self.start_term(won.revision);
                        tracing::info!(instance = %me, "this instance is now the cluster's leader");
                    }
                    Ok(_) => return, // someone else was first; the watch will say who
                    Err(error) => {
                        self.lost_etcd(&error);
                        return;
                    }
                }
            }
        }
        let Some((leadership, revision, since)) = self.leadership.as_mut() else {
            return;
        };
        let Some(decision) = leadership.step(&self.mirror, since.elapsed()) else {
            return;
        };
        let revision = *revision;
        self.write_pointer(decision, revision).await;
    }

    fn start_term(&mut self, revision: i64) {
        let names: Vec<String> = self
            .settings
            .backends
            .iter()
            .map(|b| b.name.clone())
            .collect();
        let leadership = Leadership::new(
            &self.settings.instance,
            &names,
            self.settings.failback,
            self.settings.min_active,
            &self.mirror,
        );
        self.leadership = Some((leadership, revision, Instant::now()));
    }

    async fn write_pointer(&mut self, decision: Decision, leader_revision: i64) {
        let value = serde_json::to_vec(&decision.pointer).unwrap_or_default();
        let written = self
            .client
            .txn(
                &[Compare::CreateRevision(
                    self.keys.leader().into_bytes(),
                    Cmp::Equal,
                    leader_revision,
                )],
                &[Op::Put {
                    key: self.keys.pointer().into_bytes(),
                    value,
                    lease: 0,
                }],
                &[],
            )
            .await;
        match written {
            Ok(done) if done.succeeded => {
                tracing::info!(epoch = done.revision, from = ?decision.from, to = ?decision.pointer.master,
                    cause = %decision.pointer.cause, "active master changed (cluster): {}", decision.pointer.reason);
                run_commands(&self.settings.commands, &decision, done.revision);
                self.mirror.pointer = Some((decision.pointer, done.revision));
            }
            Ok(_) => {
                tracing::warn!("lost the cluster's leadership before writing the pointer");
                self.leadership = None;
            }
            Err(error) => {
                // Not written; the next change (or renewal) decides again.
                self.lost_etcd(&error);
                self.leadership = None;
            }
        }
    }
}

/// One command the leader runs, about one master (name, URL, host).
struct Run {
    argv: Vec<String>,
    timeout: std::time::Duration,
    what: &'static str,
    master: (String, String, String),
}

/// After a move of the pointer: the fence of the master it left (each instance has
/// already stopped sending to it, or will have within `lease_ttl`), and the hooks.
/// In tasks of their own; failures are logged.
fn run_commands(commands: &LeaderCommands, decision: &Decision, epoch: i64) {
    let epoch = epoch.to_string();
    let find = |name: &Option<String>| {
        name.as_deref()
            .and_then(|name| commands.masters.iter().find(|m| m.0 == name))
            .cloned()
    };
    let (from, to) = (find(&decision.from), find(&decision.pointer.master));
    let reason = decision.pointer.reason.clone();
    let mut runs: Vec<Run> = Vec::new();
    if let Some((name, url, host, Some(fence))) = from.clone() {
        runs.push(Run {
            argv: fence,
            timeout: commands.timeout,
            what: "fence",
            master: (name, url, host),
        });
    }
    for hook in &commands.hooks {
        let about = match (hook.on, &from, &to) {
            (HookEvent::Demote, Some(from), _) => from,
            (HookEvent::Promote, _, Some(to)) => to,
            (HookEvent::NoMaster, Some(from), None) => from,
            _ => continue,
        };
        let (name, url, host, _) = about.clone();
        runs.push(Run {
            argv: hook.command.clone(),
            timeout: hook.timeout,
            what: hook.on.as_str(),
            master: (name, url, host),
        });
    }
    for Run {
        argv,
        timeout,
        what,
        master: (name, url, host),
    } in runs
    {
        let (reason, epoch) = (reason.clone(), epoch.clone());
        tokio::spawn(async move {
            let vars = Vars {
                name: &name,
                url: &url,
                host: &host,
                reason: &reason,
                epoch: &epoch,
            };
            match commands::run(&argv, &vars, timeout).await {
                Ok(_) => tracing::info!(master = %name, epoch, "{what} command done"),
                Err(error) => {
                    tracing::warn!(master = %name, epoch, %error, "{what} command failed")
                }
            }
        });
    }
}
