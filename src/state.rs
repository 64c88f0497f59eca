//! The state file: which master was active, remembered across restarts of the proxy,
//! so that restarting the proxy is never an unplanned switch on a shared home.
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory) on every
//! change of the active master; a missing or corrupt file is logged and ignored.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::routing::Snapshot;

#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// The active master's name; None when no master was healthy.
    active: Option<String>,
    /// RFC 3339, for people reading the file.
    since: String,
}

/// The master remembered in `path`, if the file is there and readable.
pub fn load(path: &Path) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no state file yet: first start");
            return None;
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the state file; ignoring it");
            return None;
        }
    };
    match serde_json::from_str::<State>(&text) {
        Ok(state) => state.active,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "the state file is corrupt; ignoring it");
            None
        }
    }
}

/// Writes the active master to `path` whenever it changes, until the channel closes.
pub async fn follow(path: PathBuf, mut snapshots: watch::Receiver<Arc<Snapshot>>) {
    let mut written: Option<Option<String>> = None;
    loop {
        let active = snapshots
            .borrow_and_update()
            .active_master()
            .map(|m| m.name.clone());
        // Nothing known yet at start-up: keep what the file says until an election.
        let elected = snapshots.borrow().generation > 0;
        if elected && written.as_ref() != Some(&active) {
            let state = State {
                active: active.clone(),
                since: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            };
            let target = path.clone();
            match tokio::task::spawn_blocking(move || write_atomically(&target, &state)).await {
                Ok(Ok(())) => written = Some(active),
                Ok(Err(error)) => {
                    tracing::warn!(path = %path.display(), %error, "cannot write the state file")
                }
                Err(error) => tracing::warn!(%error, "state file writer failed"),
            }
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

fn write_atomically(path: &Path, state: &State) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = directory.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("state.json")
    ));
    {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, path)?;
    // Make the rename itself durable.
    std::fs::File::open(&directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jha-state-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn round_trip_and_bad_files_are_ignored() {
        let dir = temp_dir("rt");
        let path = dir.join("state.json");
        assert_eq!(load(&path), None, "missing");
        let state = State {
            active: Some("master-b".into()),
            since: "2026-11-21T00:00:00Z".into(),
        };
        write_atomically(&path, &state).expect("write");
        assert_eq!(load(&path).as_deref(), Some("master-b"));
        std::fs::write(&path, "{not json").expect("corrupt");
        assert_eq!(load(&path), None, "corrupt");
        std::fs::write(&path, "").expect("empty");
        assert_eq!(load(&path), None, "empty");
        assert_eq!(load(&dir), None, "a directory");
    }
}
