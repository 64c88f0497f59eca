//! Reading the small files the config names (the state file, token files) so that a
//! wrong path cannot hang or exhaust the daemon: only a regular file is read, its
//! open never blocks (a FIFO without a writer, a device), and at most a given size.
//!
//! Secrets (`admin.token_file`, `jenkins.api_token_file`) are read by [`read_secret`]
//! alone, so `check`, `run` and reloads judge a token file the same way.

use std::io::Read;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

#[derive(Debug, thiserror::Error)]
pub enum SmallFileError {
    #[error("no such file")]
    NotFound,
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("it is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for SmallFileError {
    fn from(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::NotFound {
            SmallFileError::NotFound
        } else {
            SmallFileError::Io(error)
        }
    }
}

/// The whole content of the regular file at `path` (symlinks followed), if it holds at
/// most `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, SmallFileError> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    // O_NOCTTY: a terminal device must not become the daemon's controlling terminal.
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(std::io::Error::from)?;
    let file = std::fs::File::from(fd);
    // The type of what was opened, not of what the path named a moment earlier.
    let metadata = file.metadata()?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        return Err(SmallFileError::NotRegular(describe(kind)));
    }
    if metadata.len() > limit {
        return Err(SmallFileError::TooLarge { limit });
    }
    // One byte past the limit tells a file that grew since the fstat.
    let mut content = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut content)?;
    if content.len() as u64 > limit {
        return Err(SmallFileError::TooLarge { limit });
    }
    Ok(content)
}

/// Largest token file read: a token is one short line.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Why a secret (a token file) cannot be used. Display names the config key and the
/// file, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{key} {} does not exist: create it holding the secret (one line), or fix the path", .path.display())]
    Missing { key: &'static str, path: PathBuf },
    #[error("{key} {}: {problem}: point {key} at the file holding the secret", .path.display())]
    NotRegular {
        key: &'static str,
        path: PathBuf,
        problem: SmallFileError,
    },
    #[error("{key} {}: {problem}: the file must hold only the secret (one line)", .path.display())]
    TooLarge {
        key: &'static str,
        path: PathBuf,
        problem: SmallFileError,
    },
    #[error("cannot read {key} {}: {problem}: fix its permissions so the proxy's user can read it", .path.display())]
    Unreadable {
        key: &'static str,
        path: PathBuf,
        problem: SmallFileError,
    },
    #[error("{key} {} is not UTF-8 text: the file must hold only the secret (one line)", .path.display())]
    NotText { key: &'static str, path: PathBuf },
    #[error("{key} {} is empty: put the secret in it (one line)", .path.display())]
    Empty { key: &'static str, path: PathBuf },
}

/// The secret in the file `path` that config key `key` names, surrounding whitespace
/// trimmed.
pub fn read_secret(key: &'static str, path: &Path) -> Result<String, SecretError> {
    let path_buf = || path.to_path_buf();
    let content = read(path, MAX_SECRET_BYTES).map_err(|problem| match problem {
        SmallFileError::NotFound => SecretError::Missing {
            key,
            path: path_buf(),
        },
        SmallFileError::NotRegular(_) => SecretError::NotRegular {
            key,
            path: path_buf(),
            problem,
        },
        SmallFileError::TooLarge { .. } => SecretError::TooLarge {
            key,
            path: path_buf(),
            problem,
        },
        SmallFileError::Io(_) => SecretError::Unreadable {
            key,
            path: path_buf(),
            problem,
        },
    })?;
    let text = String::from_utf8(content).map_err(|_| SecretError::NotText {
        key,
        path: path_buf(),
    })?;
    match text.trim() {
        "" => Err(SecretError::Empty {
            key,
            path: path_buf(),
        }),
        secret => Ok(secret.to_owned()),
    }
}

fn describe(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("jha-small-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn reads_a_small_regular_file_and_refuses_the_rest() {
        let dir = temp_dir("kinds");
        let file = dir.join("file");
        std::fs::write(&file, "12345").expect("write");
        assert_eq!(read(&file, 5).expect("read"), b"12345");
        assert!(matches!(
            read(&file, 4),
            Err(SmallFileError::TooLarge { limit: 4 })
        ));
        assert!(matches!(
            read(&dir.join("missing"), 5),
            Err(SmallFileError::NotFound)
        ));
        assert!(matches!(
            read(&dir, 5),
            Err(SmallFileError::NotRegular("a directory"))
        ));
        assert!(matches!(
            read(Path::new("/dev/zero"), 5),
            Err(SmallFileError::NotRegular("a character device"))
        ));
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert_eq!(read(&link, 5).expect("through a symlink"), b"12345");
    }

    #[test]
    fn a_secret_is_trimmed_and_every_refusal_names_key_and_file() {
        let dir = temp_dir("secret");
        let file = dir.join("token");
        std::fs::write(&file, "  s3cret\n").expect("write");
        assert_eq!(
            read_secret("admin.token_file", &file).ok().as_deref(),
            Some("s3cret")
        );
        let empty = dir.join("empty");
        std::fs::write(&empty, " \n").expect("write");
        let binary = dir.join("binary");
        std::fs::write(&binary, [0xff, 0xfe]).expect("write");
        for (path, why) in [
            (dir.join("missing"), "does not exist"),
            (dir.clone(), "a directory"),
            (empty, "is empty"),
            (binary, "not UTF-8"),
        ] {
            let error = read_secret("admin.token_file", &path)
                .expect_err("refused")
                .to_string();
            assert!(error.contains(why), "{error}");
            assert!(
                error.contains(&format!("admin.token_file {}", path.display())),
                "{error}"
            );
        }
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = temp_dir("fifo");
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        assert!(matches!(
            read(&fifo, 5),
            Err(SmallFileError::NotRegular("a FIFO (named pipe)"))
        ));
    }
}
