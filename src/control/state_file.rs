//! The state file: which master was active, remembered across restarts of the proxy,
//! so that restarting the proxy is never an unplanned switch on a shared home.
//!
//! Written atomically (a new temp file, fsync, rename, fsync of the directory) on every
//! change of the active master, never through a symlink planted in the directory.
//! Read once at start, only if it is a small regular file; a missing, corrupt or
//! strange one (a FIFO, a device, a huge file) is logged and ignored.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::control::routing::Snapshot;
use crate::sys::small_file::{self, SmallFileError};

#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// The active master's name; None when no master was healthy.
    active: Option<String>,
    /// RFC 3339, for people reading the file.
    since: String,
}

/// Largest state file read: what the writer produces is under 200 bytes.
pub const MAX_STATE_BYTES: u64 = 64 * 1024;

/// The master remembered in `path`, if the file is there and readable. Anything but a
/// small regular file (a FIFO, a device, a huge file) is logged and ignored at once,
/// without blocking start-up: the proxy then elects as on a first start.
pub fn load(path: &Path) -> Option<String> {
    let content = match small_file::read(path, MAX_STATE_BYTES) {
        Ok(content) => content,
        Err(SmallFileError::NotFound) => {
            tracing::info!(path = %path.display(), "no state file yet: first start");
            return None;
        }
        Err(error @ (SmallFileError::NotRegular(_) | SmallFileError::TooLarge { .. })) => {
            tracing::warn!(path = %path.display(),
                "ignoring the state file: {error}; normal election. Remove what is at that path, \
                 or set failover.state_file to a path of the proxy's own");
            return None;
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error,
                "cannot read the state file; ignoring it (normal election): fix its permissions or remove it");
            return None;
        }
    };
    match serde_json::from_slice::<State>(&content) {
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
        let elected = snapshots.borrow().transition_count > 0;
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
    let name = path
        .file_name()
        .map_or_else(|| "state.json".into(), |n| n.to_string_lossy());
    let (temp, mut file) = create_temp(&directory, &name)?;
    let written = (|| {
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)
    })();
    if let Err(error) = written {
        // Leave nothing behind; the next change of the active master tries again.
        let _ = std::fs::remove_file(&temp);
        return Err(error);
    }
    // Make the rename itself durable.
    std::fs::File::open(&directory)?.sync_all()
}

/// Numbers the temporary files of this process, so each write gets a name of its own.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
/// Names tried before giving up: only stale or planted files take them.
const TEMP_ATTEMPTS: u32 = 1000;

/// Creates `<directory>/.<name>.<pid>.<counter>.tmp`, a new file. `create_new` is
/// O_CREAT|O_EXCL, which fails on anything already at that path, a symlink included
/// (even a dangling one), so a link planted there is never written through.
fn create_temp(directory: &Path, name: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
    let pid = std::process::id();
    for _ in 0..TEMP_ATTEMPTS {
        let counter = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = directory.join(format!(".{name}.{pid}.{counter}.tmp"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!(
            "{TEMP_ATTEMPTS} temporary file names in {} are taken: remove the .{name}.*.tmp files there",
            directory.display()
        ),
    ))
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
        assert_eq!(load(Path::new("/dev/zero")), None, "a device");
        // Valid JSON, but no file this proxy writes is that large.
        let mut padded = br#"{"active":"master-b","since":"2026-11-21T00:00:00Z"}"#.to_vec();
        padded.resize(MAX_STATE_BYTES as usize + 1, b' ');
        std::fs::write(&path, &padded).expect("padded");
        assert_eq!(load(&path), None, "too large");
        padded.truncate(MAX_STATE_BYTES as usize);
        std::fs::write(&path, &padded).expect("padded");
        assert_eq!(load(&path).as_deref(), Some("master-b"), "at the limit");
    }

    #[test]
    fn the_writer_never_follows_a_planted_symlink() {
        let dir = temp_dir("links");
        let path = dir.join("state.json");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").expect("victim");
        // The old fixed temp name, and the next names this process would pick.
        let next = TEMP_COUNTER.load(Ordering::Relaxed);
        let pid = std::process::id();
        let mut planted = vec![dir.join(".state.json.tmp")];
        planted.extend((next..next + 8).map(|n| dir.join(format!(".state.json.{pid}.{n}.tmp"))));
        for link in &planted {
            let _ = std::fs::remove_file(link);
            std::os::unix::fs::symlink(&victim, link).expect("plant a symlink");
        }
        let state = State {
            active: Some("master-a".into()),
            since: "2026-11-21T00:00:00Z".into(),
        };
        write_atomically(&path, &state).expect("write");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "precious\n"
        );
        assert_eq!(load(&path).as_deref(), Some("master-a"));
        for link in &planted {
            assert!(link.is_symlink(), "{} left alone", link.display());
        }
        let temps = std::fs::read_dir(&dir)
            .expect("list")
            .filter_map(Result::ok)
            .filter(|entry| !entry.path().is_symlink())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(temps, 0, "no temporary file left behind");
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = temp_dir("fail");
        // Renaming a file over a non-empty directory fails.
        let path = dir.join("state.json");
        std::fs::create_dir_all(path.join("occupied")).expect("a directory in the way");
        let state = State {
            active: None,
            since: "2026-11-21T00:00:00Z".into(),
        };
        assert!(write_atomically(&path, &state).is_err());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("list")
            .filter_map(Result::ok)
            .map(|entry| entry.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("state.json")]);
    }
}
