//! What the pool keeps in etcd, and the pure rules every instance applies to it.
//!
//! Keys, under `[cluster] key_prefix` (P):
//! - `P/backends`: the `[[backend]]` list (names and URLs, in order) the pool was
//!   started with; an instance with another list refuses to join.
//! - `P/leader`: the name of the instance that decides, under its lease.
//! - `P/pointer`: the active master (or none), written only by the leader, in a
//!   transaction that holds only while its `P/leader` key is the one it created. The
//!   key's revision is the pointer's **epoch**: it only ever grows.
//! - `P/instances/<name>`: each live instance, under its own lease: its own view of
//!   each master and the epoch it has stopped routing for the older pointers
//!   (`acked`). A lease that expires takes the key along: the instance is gone.
//! - `P/check/<master>`: "check this master now", written by an instance whose client
//!   request found the master refusing connections.
//! - `P/disabled/<master>`: taken out of the election for maintenance.
//! - `P/switchover`: a planned switchover asked on any instance; the leader applies it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::etcd::{Event, KeyValue};
use crate::control::election::Health;

/// The key names of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `key_prefix` with one trailing `/`.
    prefix: String,
}

impl Keys {
    pub fn new(key_prefix: &str) -> Keys {
        Keys {
            prefix: format!("{}/", key_prefix.trim_end_matches('/')),
        }
    }

    /// Every key of the pool starts with this.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn backends(&self) -> String {
        format!("{}backends", self.prefix)
    }

    pub fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }

    pub fn pointer(&self) -> String {
        format!("{}pointer", self.prefix)
    }

    pub fn instance(&self, name: &str) -> String {
        format!("{}instances/{name}", self.prefix)
    }

    pub fn check(&self, master: &str) -> String {
        format!("{}check/{master}", self.prefix)
    }

    pub fn disabled(&self, master: &str) -> String {
        format!("{}disabled/{master}", self.prefix)
    }

    pub fn switchover(&self) -> String {
        format!("{}switchover", self.prefix)
    }

    /// What a key of this pool is, or None for a key of no interest.
    fn kind<'k>(&self, key: &'k str) -> Option<KeyKind<'k>> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        Some(match rest {
            "backends" => KeyKind::Backends,
            "leader" => KeyKind::Leader,
            "pointer" => KeyKind::Pointer,
            "switchover" => KeyKind::Switchover,
            _ => {
                let (folder, name) = rest.split_once('/')?;
                match folder {
                    "instances" => KeyKind::Instance(name),
                    "check" => KeyKind::Check(name),
                    "disabled" => KeyKind::Disabled(name),
                    _ => return None,
                }
            }
        })
    }
}

enum KeyKind<'k> {
    Backends,
    Leader,
    Pointer,
    Switchover,
    Instance(&'k str),
    Check(&'k str),
    Disabled(&'k str),
}

/// One master as the pool records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedBackend {
    pub name: String,
    pub url: String,
}

/// The value of `P/pointer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// The active master; None: no master can take traffic (clients get 503).
    pub master: Option<String>,
    /// The transition's cause label (as in `/status` `transitions[].cause`).
    pub cause: String,
    /// Why, for people.
    pub reason: String,
    /// The leader that wrote it.
    pub leader: String,
}

/// The value of `P/instances/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The newest epoch this instance follows: it sends nothing to an older pointer's
    /// master any more.
    pub acked: i64,
    /// Its own health checks' verdict per master: "up", "down" or "unknown".
    #[serde(default)]
    pub view: BTreeMap<String, String>,
    /// When it last wrote this (RFC 3339, its own clock): at least every renewal.
    #[serde(default)]
    pub seen: String,
}

/// The value of `P/switchover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    pub to: String,
    /// The instance where the operator asked.
    pub by: String,
}

/// Everything an instance knows of the pool's keys: kept by the initial read and the
/// watch; read by the rules below.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirror {
    /// The pointer and its epoch (the key's mod revision).
    pub pointer: Option<(Pointer, i64)>,
    /// The leader's name and the create revision of its key.
    pub leader: Option<(String, i64)>,
    pub instances: BTreeMap<String, InstanceRecord>,
    pub disabled: BTreeSet<String>,
    /// The latest switchover asked, and the revision it was asked at.
    pub switchover: Option<(SwitchoverRequest, i64)>,
    /// "Check now" requests per master: the revision of the latest.
    pub checks: BTreeMap<String, i64>,
    pub backends: Option<Vec<RecordedBackend>>,
    /// The revision this mirror is up to date with.
    pub revision: i64,
}

impl Mirror {
    /// A mirror of every key of the pool read at `revision`.
    pub fn read(keys: &Keys, kvs: &[KeyValue], revision: i64) -> Mirror {
        let mut mirror = Mirror::default();
        for kv in kvs {
            mirror.put(keys, kv);
        }
        mirror.revision = revision;
        mirror
    }

    /// Applies a watch batch. Events this mirror already reflects (a full read since)
    /// are skipped.
    pub fn apply(&mut self, keys: &Keys, events: &[Event], revision: i64) {
        for event in events {
            match event {
                Event::Put(kv) if kv.mod_revision > self.revision => self.put(keys, kv),
                Event::Delete(kv) if kv.mod_revision > self.revision => self.delete(keys, kv),
                _ => {}
            }
        }
        self.revision = self.revision.max(revision);
    }

    fn put(&mut self, keys: &Keys, kv: &KeyValue) {
        let Ok(key) = std::str::from_utf8(&kv.key) else {
            return;
        };
        // A value that does not parse is taken as absent (it is not ours to trust).
        match keys.kind(key) {
            Some(KeyKind::Backends) => self.backends = serde_json::from_slice(&kv.value).ok(),
            Some(KeyKind::Leader) => {
                self.leader = Some((
                    String::from_utf8_lossy(&kv.value).into_owned(),
                    kv.create_revision,
                ))
            }
            Some(KeyKind::Pointer) => {
                self.pointer = serde_json::from_slice(&kv.value)
                    .ok()
                    .map(|pointer| (pointer, kv.mod_revision))
            }
            Some(KeyKind::Switchover) => {
                self.switchover = serde_json::from_slice(&kv.value)
                    .ok()
                    .map(|request| (request, kv.mod_revision))
            }
            Some(KeyKind::Instance(name)) => {
                let record = serde_json::from_slice(&kv.value).unwrap_or_default();
                self.instances.insert(name.to_owned(), record);
            }
            Some(KeyKind::Check(master)) => {
                self.checks.insert(master.to_owned(), kv.mod_revision);
            }
            Some(KeyKind::Disabled(master)) => {
                self.disabled.insert(master.to_owned());
            }
            None => {}
        }
    }

    fn delete(&mut self, keys: &Keys, kv: &KeyValue) {
        let Ok(key) = std::str::from_utf8(&kv.key) else {
            return;
        };
        match keys.kind(key) {
            Some(KeyKind::Backends) => self.backends = None,
            Some(KeyKind::Leader) => self.leader = None,
            Some(KeyKind::Pointer) => self.pointer = None,
            Some(KeyKind::Switchover) => self.switchover = None,
            Some(KeyKind::Instance(name)) => {
                self.instances.remove(name);
            }
            Some(KeyKind::Check(master)) => {
                self.checks.remove(master);
            }
            Some(KeyKind::Disabled(master)) => {
                self.disabled.remove(master);
            }
            None => {}
        }
    }

    /// The pointer's epoch, 0 before the first pointer.
    pub fn epoch(&self) -> i64 {
        self.pointer.as_ref().map_or(0, |(_, epoch)| *epoch)
    }
}

/// How many of `live` instances make a majority.
pub fn majority(live: usize) -> usize {
    live / 2 + 1
}

/// What the live instances see of one master, together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combined {
    /// Up or down when a majority of the live instances see it so; else None (no
    /// verdict: the master keeps its health).
    pub health: Option<Health>,
    /// Instances that see it down, for the reason.
    pub down_on: Vec<String>,
    pub live: usize,
}

/// The rule: a master is down for the election when a majority of the live instances
/// see it down, up when a majority see it up. With two instances both must agree;
/// when one of them is gone (its lease expired), the other decides alone.
pub fn combined(mirror: &Mirror, master: &str) -> Combined {
    let live = mirror.instances.len();
    let seen = |state: &str| {
        mirror
            .instances
            .iter()
            .filter(|(_, record)| record.view.get(master).map(String::as_str) == Some(state))
            .map(|(name, _)| name.clone())
            .collect::<Vec<_>>()
    };
    let (up, down_on) = (seen("up"), seen("down"));
    let needed = majority(live);
    let health = if live == 0 {
        None
    } else if down_on.len() >= needed {
        Some(Health::Down)
    } else if up.len() >= needed {
        Some(Health::Up)
    } else {
        None
    };
    Combined {
        health,
        down_on,
        live,
    }
}

/// What an instance does with the pointer, given what it has acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// No pointer yet (the first election is under way): hold requests.
    Waiting,
    /// A newer pointer than this instance follows: stop routing to the old master,
    /// then acknowledge `epoch`.
    Acknowledge { epoch: i64 },
    /// Acknowledged, but some live instance has not yet: hold requests.
    Opening { epoch: i64 },
    /// Every live instance follows `epoch`: route to its master (None: 503).
    Open { master: Option<String>, epoch: i64 },
}

/// The route of instance `me`: traffic moves to a new pointer's master only once
/// every live instance has stopped sending to the old one (a frozen or cut-off
/// instance's lease expires within `lease_ttl`, and its key with it).
pub fn route(mirror: &Mirror, me: &str) -> Route {
    let Some((pointer, epoch)) = &mirror.pointer else {
        return Route::Waiting;
    };
    let epoch = *epoch;
    let acked = mirror.instances.get(me).map_or(0, |record| record.acked);
    if acked < epoch {
        return Route::Acknowledge { epoch };
    }
    if mirror.instances.values().any(|record| record.acked < epoch) {
        return Route::Opening { epoch };
    }
    Route::Open {
        master: pointer.master.clone(),
        epoch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(acked: i64, view: &[(&str, &str)]) -> InstanceRecord {
        InstanceRecord {
            acked,
            view: view
                .iter()
                .map(|(m, h)| ((*m).to_owned(), (*h).to_owned()))
                .collect(),
            seen: String::new(),
        }
    }

    fn mirror(instances: &[(&str, InstanceRecord)], pointer: Option<(&str, i64)>) -> Mirror {
        Mirror {
            instances: instances
                .iter()
                .map(|(n, r)| ((*n).to_owned(), r.clone()))
                .collect(),
            pointer: pointer.map(|(master, epoch)| {
                (
                    Pointer {
                        master: Some(master.to_owned()),
                        cause: "initial".into(),
                        reason: String::new(),
                        leader: "p1".into(),
                    },
                    epoch,
                )
            }),
            ..Mirror::default()
        }
    }

    #[test]
    fn majority_of_live_instances() {
        assert_eq!(
            [1, 2, 3, 4, 5].map(majority),
            [1, 2, 2, 3, 3],
            "two of two, two of three, three of four or five"
        );
    }

    #[test]
    fn a_master_is_down_when_a_majority_sees_it_down() {
        let a = |views: &[&str]| {
            let instances: Vec<(String, InstanceRecord)> = views
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("p{i}"), record(0, &[("a", v)])))
                .collect();
            let refs: Vec<(&str, InstanceRecord)> = instances
                .iter()
                .map(|(n, r)| (n.as_str(), r.clone()))
                .collect();
            combined(&mirror(&refs, None), "a").health
        };
        assert_eq!(a(&["down"]), Some(Health::Down), "alone, one decides");
        assert_eq!(a(&["down", "up"]), None, "two disagree: no verdict");
        assert_eq!(a(&["down", "down"]), Some(Health::Down));
        assert_eq!(a(&["up", "up"]), Some(Health::Up));
        assert_eq!(a(&["down", "down", "up"]), Some(Health::Down));
        assert_eq!(a(&["down", "up", "unknown"]), None);
        assert_eq!(a(&["up", "up", "down"]), Some(Health::Up));
        assert_eq!(a(&[]), None, "nobody live: no verdict");
    }

    #[test]
    fn traffic_opens_only_once_every_live_instance_followed_the_pointer() {
        let two = |me: i64, other: i64| {
            mirror(
                &[("p1", record(me, &[])), ("p2", record(other, &[]))],
                Some(("b", 7)),
            )
        };
        assert_eq!(route(&two(3, 3), "p1"), Route::Acknowledge { epoch: 7 });
        assert_eq!(route(&two(7, 3), "p1"), Route::Opening { epoch: 7 });
        assert_eq!(
            route(&two(7, 7), "p1"),
            Route::Open {
                master: Some("b".into()),
                epoch: 7
            }
        );
        // The other's lease expired: its key is gone, nobody to wait for.
        let alone = mirror(&[("p1", record(7, &[]))], Some(("b", 7)));
        assert!(matches!(route(&alone, "p1"), Route::Open { .. }));
        assert_eq!(route(&mirror(&[], None), "p1"), Route::Waiting);
        // An instance not yet registered acknowledges first.
        assert_eq!(
            route(&mirror(&[], Some(("b", 7))), "p9"),
            Route::Acknowledge { epoch: 7 }
        );
    }

    #[test]
    fn the_mirror_follows_puts_and_deletes() {
        let keys = Keys::new("/jha/prod/");
        let kv = |key: String, value: &[u8], revision: i64| KeyValue {
            key: key.into_bytes(),
            value: value.to_vec(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        };
        let pointer = br#"{"master":"a","cause":"initial","reason":"r","leader":"p1"}"#;
        let mut mirror = Mirror::read(
            &keys,
            &[
                kv(keys.pointer(), pointer, 5),
                kv(keys.leader(), b"p1", 3),
                kv(keys.instance("p1"), br#"{"acked":5,"view":{"a":"up"}}"#, 6),
                kv(keys.disabled("b"), b"", 4),
                kv("/jha/other/pointer".into(), pointer, 2),
            ],
            6,
        );
        assert_eq!(mirror.epoch(), 5);
        assert_eq!(mirror.leader, Some(("p1".into(), 3)));
        assert_eq!(mirror.instances["p1"].acked, 5);
        assert!(mirror.disabled.contains("b"));
        mirror.apply(
            &keys,
            &[
                Event::Delete(kv(keys.instance("p1"), b"", 9)),
                Event::Delete(kv(keys.disabled("b"), b"", 9)),
                Event::Put(kv(keys.check("a"), b"p2", 9)),
            ],
            9,
        );
        assert!(mirror.instances.is_empty());
        assert!(mirror.disabled.is_empty());
        assert_eq!(mirror.checks["a"], 9);
        assert_eq!(mirror.revision, 9);
    }
}
