//! One instance's part in the pool: its lease and its key (its view of each master and
//! the epoch it follows), the watch on the pool's keys, leadership when nobody holds
//! it, and the route it tells the owner.
//!
//! The member is the only writer of this instance's keys; the owner is the only
//! writer of the routing snapshot, and learns the route from [`Update::State`].

mod api;
mod leading;
mod watching;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::etcd::{prefix_end, Client, Cmp, Compare, EtcdError, Op, OpResult, WatchBatch};
use super::leader::Leadership;
use super::pool::{route, InstanceRecord, Keys, Mirror, RecordedBackend, Route};
use crate::control::election::Health;
pub use api::{
    ClusterState, Command, InstanceStatus, JoinError, LeaderCommands, LocalView, MemberSettings,
    Update,
};

/// Runs the member until `stop`. Returns an error only when the instance cannot join
/// (another backend list); etcd being away is waited out.
pub async fn run(
    settings: MemberSettings,
    mut views: watch::Receiver<LocalView>,
    mut commands: mpsc::Receiver<Command>,
    updates: mpsc::Sender<Update>,
    stop: CancellationToken,
) -> Result<(), JoinError> {
    // One call to one endpoint may take at most a quarter of the lease: renewals keep
    // their pace even when a member does not answer.
    let call_timeout =
        (settings.lease_ttl / 4).clamp(Duration::from_millis(200), Duration::from_secs(2));
    let client = Arc::new(Client::new(&settings.etcd, call_timeout)?);
    let keys = Keys::new(&settings.key_prefix);
    let mut member = tokio::select! {
        joined = Member::join(settings, Arc::clone(&client), keys, views.borrow().clone()) => joined?,
        () = stop.cancelled() => return Ok(()),
    };
    let (batches_tx, mut batches) = mpsc::channel(64);
    let watcher = tokio::spawn(watching::follow(
        Arc::clone(&client),
        member.keys.prefix().as_bytes().to_vec(),
        Arc::clone(&member.watch_from),
        batches_tx,
    ));
    let mut renewals = tokio::time::interval(member.settings.lease_ttl / 3);
    renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = renewals.tick() => member.renew().await,
            Some(batch) = batches.recv() => member.watched(batch),
            changed = views.changed() => {
                if changed.is_err() {
                    break;
                }
                let view = views.borrow_and_update().clone();
                member.view_changed(view).await;
            }
            Some(command) = commands.recv() => member.command(command).await,
        }
        member.react(&updates).await;
    }
    watcher.abort();
    member.leave().await;
    Ok(())
}

/// The member's state; written only by its own task.
struct Member {
    settings: MemberSettings,
    client: Arc<Client>,
    keys: Keys,
    mirror: Mirror,
    lease: i64,
    /// What this instance wrote last at its key.
    record: InstanceRecord,
    /// Leadership of this term, with the create revision of our leader key.
    leadership: Option<(Leadership, i64, Instant)>,
    /// "Check now" requests handled, per master: the revision of the last.
    checks_seen: BTreeMap<String, i64>,
    /// The state last given to the owner.
    published: Option<ClusterState>,
    valid_until: Option<Instant>,
    confirmed_at: Option<SystemTime>,
    etcd_connected: bool,
    /// The revision the watch resumes from; written by the member after each full
    /// read, read by the watch task when it starts again.
    watch_from: Arc<AtomicI64>,
}

impl Member {
    /// Leases, checks the backend list, registers, reads the pool. Retries while etcd
    /// is away.
    async fn join(
        settings: MemberSettings,
        client: Arc<Client>,
        keys: Keys,
        view: LocalView,
    ) -> Result<Member, JoinError> {
        let mut pause = Duration::from_millis(100);
        loop {
            match Member::try_join(&settings, &client, &keys, &view).await {
                Ok((lease, record, mirror)) => {
                    tracing::info!(instance = %settings.instance, prefix = %keys.prefix(),
                        leader = ?mirror.leader.as_ref().map(|(n, _)| n), epoch = mirror.epoch(),
                        "joined the cluster pool");
                    let watch_from = Arc::new(AtomicI64::new(mirror.revision + 1));
                    return Ok(Member {
                        settings,
                        client,
                        keys,
                        mirror,
                        lease: lease.0,
                        record,
                        leadership: None,
                        checks_seen: BTreeMap::new(),
                        published: None,
                        valid_until: Some(lease.1),
                        confirmed_at: Some(SystemTime::now()),
                        etcd_connected: true,
                        watch_from,
                    });
                }
                Err(JoinError::Etcd(error)) => {
                    tracing::warn!(%error, "cannot reach etcd to join the cluster pool; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(fatal) => return Err(fatal),
            }
        }
    }

    async fn try_join(
        settings: &MemberSettings,
        client: &Client,
        keys: &Keys,
        view: &LocalView,
    ) -> Result<((i64, Instant), InstanceRecord, Mirror), JoinError> {
        let ours = serde_json::to_vec(&settings.backends).unwrap_or_default();
        let recorded = client
            .txn(
                &[Compare::Version(
                    keys.backends().into_bytes(),
                    Cmp::Equal,
                    0,
                )],
                &[Op::Put {
                    key: keys.backends().into_bytes(),
                    value: ours.clone(),
                    lease: 0,
                }],
                &[Op::Range {
                    key: keys.backends().into_bytes(),
                    range_end: None,
                }],
            )
            .await?;
        if let Some(OpResult::Range(kvs)) = recorded.results.first() {
            let theirs: Option<Vec<RecordedBackend>> = kvs
                .first()
                .and_then(|kv| serde_json::from_slice(&kv.value).ok());
            if theirs.as_ref() != Some(&settings.backends) {
                return Err(JoinError::OtherBackends {
                    prefix: keys.prefix().to_owned(),
                    ours: describe(&settings.backends),
                    recorded: theirs.map_or_else(|| "unreadable".to_owned(), |b| describe(&b)),
                });
            }
        }
        let sent = Instant::now();
        let lease = client.grant(settings.lease_ttl).await?;
        let end = prefix_end(keys.prefix().as_bytes());
        let read = client.range(keys.prefix().as_bytes(), Some(&end)).await?;
        let mut mirror = Mirror::read(keys, &read.kvs, read.revision);
        // Registered as following the current pointer at once: this process sends
        // nothing until its member says where (a new process has sent nothing yet, and
        // one whose lease expired stopped when its view ran out). Registering behind
        // it would hold every instance's traffic until this one caught up.
        let record = InstanceRecord {
            acked: mirror.epoch(),
            view: view_map(view),
            seen: now_text(),
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        client
            .put(
                keys.instance(&settings.instance).as_bytes(),
                &value,
                lease.id,
            )
            .await?;
        mirror
            .instances
            .insert(settings.instance.clone(), record.clone());
        Ok((
            (lease.id, sent + lease.ttl.min(settings.lease_ttl)),
            record,
            mirror,
        ))
    }

    /// Renews the lease and reads the whole pool again (catching anything a watch
    /// missed). Both answered: this instance's view is confirmed until the renewal's
    /// send time plus the lease's time to live.
    async fn renew(&mut self) {
        let sent = Instant::now();
        let confirmed = SystemTime::now();
        let renewed = self.client.keep_alive(self.lease).await;
        match renewed {
            Ok(Some(ttl)) => {
                let end = prefix_end(self.keys.prefix().as_bytes());
                match self
                    .client
                    .range(self.keys.prefix().as_bytes(), Some(&end))
                    .await
                {
                    Ok(read) => {
                        self.mirror = Mirror::read(&self.keys, &read.kvs, read.revision);
                        self.watch_from.store(read.revision + 1, Ordering::Relaxed);
                        self.valid_until = Some(sent + ttl.min(self.settings.lease_ttl));
                        self.confirmed_at = Some(confirmed);
                        if !self.etcd_connected {
                            tracing::info!(instance = %self.settings.instance, "etcd confirms this instance's view again");
                        }
                        self.etcd_connected = true;
                        // `seen` for the others' /status.
                        self.write_record(self.record.clone()).await;
                    }
                    Err(error) => self.lost_etcd(&error),
                }
            }
            Ok(None) => {
                // Our lease expired (we were frozen or cut off): our key is gone and
                // the pool went on without us. Register again.
                tracing::warn!(instance = %self.settings.instance,
                    "this instance's lease expired; registering again");
                self.leadership = None;
                self.rejoin().await;
            }
            Err(error) => self.lost_etcd(&error),
        }
    }

    fn lost_etcd(&mut self, error: &EtcdError) {
        if self.etcd_connected {
            tracing::error!(%error, valid_until = ?self.valid_until.map(|u| u.saturating_duration_since(Instant::now())),
                "cannot confirm this instance's view with etcd; it stops routing when its lease runs out");
        }
        self.etcd_connected = false;
    }

    async fn rejoin(&mut self) {
        let view: LocalView = self
            .record
            .view
            .iter()
            .map(|(m, h)| (m.clone(), health_of(h)))
            .collect();
        match Member::try_join(&self.settings, &self.client, &self.keys, &view).await {
            Ok((lease, record, mirror)) => {
                self.lease = lease.0;
                self.valid_until = Some(lease.1);
                self.confirmed_at = Some(SystemTime::now());
                self.etcd_connected = true;
                self.record = record;
                self.watch_from
                    .store(mirror.revision + 1, Ordering::Relaxed);
                self.mirror = mirror;
            }
            Err(error) => tracing::warn!(%error, "cannot register with the pool again yet"),
        }
    }

    fn watched(&mut self, batch: Result<WatchBatch, EtcdError>) {
        match batch {
            Ok(batch) => self.mirror.apply(&self.keys, &batch.events, batch.revision),
            Err(error) => tracing::debug!(%error, "the watch on the pool ended; watching again"),
        }
    }

    /// Publishes this instance's new view; a master it now sees down is checked by
    /// every instance at once.
    async fn view_changed(&mut self, view: LocalView) {
        let map = view_map(&view);
        if map == self.record.view {
            return;
        }
        let newly_down: Vec<String> = map
            .iter()
            .filter(|(m, h)| {
                h.as_str() == "down" && self.record.view.get(*m).map(String::as_str) != Some("down")
            })
            .map(|(m, _)| m.clone())
            .collect();
        let mut record = self.record.clone();
        record.view = map;
        self.write_record(record).await;
        for master in newly_down {
            let key = self.keys.check(&master);
            if let Err(error) = self
                .client
                .put(
                    key.as_bytes(),
                    self.settings.instance.as_bytes(),
                    self.lease,
                )
                .await
            {
                tracing::warn!(%error, %master, "cannot ask the other instances to check the master");
            }
        }
    }

    async fn write_record(&mut self, mut record: InstanceRecord) {
        record.seen = now_text();
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let key = self.keys.instance(&self.settings.instance);
        match self.client.put(key.as_bytes(), &value, self.lease).await {
            Ok(revision) => {
                // Seen at once; the watch brings the same write later (and nothing
                // it has not delivered yet is skipped: the mirror's revision stays).
                let _ = revision;
                self.mirror
                    .instances
                    .insert(self.settings.instance.clone(), record.clone());
                self.record = record;
            }
            Err(error) => {
                self.lost_etcd(&error);
                // Kept for the next try: the renewal's full read shows our real key.
                self.record.view = record.view;
            }
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Switchover { to, reply } => {
                let outcome = self.switchover(&to).await;
                let _ = reply.send(outcome);
            }
            Command::SetDisabled {
                master,
                disabled,
                reply,
            } => {
                let key = self.keys.disabled(&master);
                let outcome = if disabled {
                    self.client.put(key.as_bytes(), b"", 0).await.map(|_| ())
                } else {
                    self.client.delete(key.as_bytes(), None).await.map(|_| ())
                };
                let _ = reply.send(outcome.map_err(|e| e.to_string()));
            }
        }
    }

    /// After any change: answer "check now" requests, lead if nobody does, write the
    /// leader's decision, follow the pointer.
    async fn react(&mut self, updates: &mpsc::Sender<Update>) {
        for (master, revision) in self.mirror.checks.clone() {
            let seen = self.checks_seen.insert(master.clone(), revision);
            if seen.is_some_and(|before| before >= revision) {
                continue;
            }
            let _ = updates.send(Update::CheckNow { master }).await;
        }
        self.lead().await;
        // Follow the pointer; an acknowledgement may open it at once.
        for _ in 0..2 {
            match route(&self.mirror, &self.settings.instance) {
                Route::Acknowledge { epoch } => {
                    // Stop routing to the old master first, then say so.
                    if !self.publish(updates, false).await {
                        return;
                    }
                    let mut record = self.record.clone();
                    record.acked = epoch;
                    self.write_record(record).await;
                    tracing::info!(instance = %self.settings.instance, epoch, "following the new pointer");
                }
                Route::Open { .. } => {
                    self.publish(updates, true).await;
                    return;
                }
                Route::Opening { .. } | Route::Waiting => {
                    self.publish(updates, false).await;
                    return;
                }
            }
        }
    }

    /// Tells the owner the route if it changed; true once the owner has published it.
    async fn publish(&mut self, updates: &mpsc::Sender<Update>, open: bool) -> bool {
        let (master, epoch, cause, reason) = match &self.mirror.pointer {
            Some((pointer, epoch)) => (
                pointer.master.clone(),
                *epoch,
                pointer.cause.clone(),
                pointer.reason.clone(),
            ),
            None => (None, 0, String::new(), String::new()),
        };
        let state = ClusterState {
            instance: self.settings.instance.clone(),
            leader: self.mirror.leader.as_ref().map(|(name, _)| name.clone()),
            epoch,
            master,
            open,
            cause,
            reason,
            valid_until: self.valid_until,
            confirmed_at: self.confirmed_at,
            etcd_connected: self.etcd_connected,
            instances: self
                .mirror
                .instances
                .iter()
                .map(|(name, record)| InstanceStatus {
                    name: name.clone(),
                    acked: record.acked,
                    seen: record.seen.clone(),
                })
                .collect(),
            disabled: self.mirror.disabled.iter().cloned().collect(),
        };
        if self.published.as_ref() == Some(&state) {
            return true;
        }
        let (published, answer) = oneshot::channel();
        let update = Update::State {
            state: state.clone(),
            published,
        };
        if updates.send(update).await.is_err() || answer.await.is_err() {
            return false; // the daemon is stopping
        }
        self.published = Some(state);
        true
    }

    /// Gives the lease back: this instance's keys go at once, and the others stop
    /// waiting for it.
    async fn leave(&mut self) {
        if let Err(error) = self.client.revoke(self.lease).await {
            tracing::debug!(%error, "could not revoke the lease on the way out; it expires");
        }
    }
}

/// Now, RFC 3339 with milliseconds.
fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn view_map(view: &LocalView) -> BTreeMap<String, String> {
    view.iter()
        .map(|(master, health)| (master.clone(), health.as_str().to_owned()))
        .collect()
}

fn health_of(text: &str) -> Health {
    match text {
        "up" => Health::Up,
        "down" => Health::Down,
        _ => Health::Unknown,
    }
}

fn describe(backends: &[RecordedBackend]) -> String {
    let each: Vec<String> = backends
        .iter()
        .map(|b| format!("{} {}", b.name, b.url))
        .collect();
    each.join(", ")
}
