//! Mutating admin calls: planned switchover, maintenance (disable/enable), reload.
//! When `admin.token_file` is set they need `Authorization: Bearer <token>`, compared
//! in constant time; the token is never logged. `/status` stays readable without it.

use std::path::Path;

use hyper::header::AUTHORIZATION;
use hyper::{HeaderMap, StatusCode};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::control::owner::{Control, ControlError};
use crate::sys::small_file::SecretError;

/// Asks the daemon to re-read its config file; answered with a summary or why it was
/// refused, in words: the daemon logs and counts the outcome, the caller only shows it.
#[derive(Debug)]
pub struct ReloadRequest {
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// What mutating calls must present.
#[derive(Clone)]
pub enum Token {
    /// No `admin.token_file`: allowed only on a loopback listener (validated).
    NotRequired,
    Required(String),
    /// The file is set but could not be read: fail closed.
    Unreadable(String),
}

impl std::fmt::Debug for Token {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::NotRequired => f.write_str("Token::NotRequired"),
            Token::Required(_) => f.write_str("Token::Required(..)"),
            Token::Unreadable(why) => write!(f, "Token::Unreadable({why})"),
        }
    }
}

impl Token {
    /// Reads `admin.token_file` as `check` and `run` do; an unusable file fails closed.
    pub fn from_config(path: Option<&Path>) -> Token {
        match Token::load(path) {
            Ok(token) => token,
            Err(error) => {
                tracing::error!("{error}; mutating admin calls are refused until it is fixed");
                Token::Unreadable(error.to_string())
            }
        }
    }

    /// Reads `admin.token_file`; the error names the file and what to do.
    pub fn load(path: Option<&Path>) -> Result<Token, SecretError> {
        match path {
            None => Ok(Token::NotRequired),
            Some(path) => {
                crate::sys::small_file::read_secret("admin.token_file", path).map(Token::Required)
            }
        }
    }

    /// Checks a request's `Authorization` header.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
        let expected = match self {
            Token::NotRequired => return Ok(()),
            Token::Unreadable(why) => {
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("admin token unavailable: {why}"),
                ));
            }
            Token::Required(token) => token,
        };
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(presented.trim().as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err((
                StatusCode::UNAUTHORIZED,
                "this call needs Authorization: Bearer <the token in admin.token_file>".into(),
            ))
        }
    }
}

/// Compares without an early exit, so timing does not reveal how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (index, expected) in b.iter().enumerate() {
        let presented = a.get(index).copied().unwrap_or(0);
        difference |= usize::from(presented ^ expected);
    }
    difference == 0
}

/// A mutating call, parsed from method and path.
#[derive(Debug, PartialEq, Eq)]
pub enum Call {
    Switchover { to: String },
    SetDisabled { master: String, disabled: bool },
    Reload,
}

/// `POST /switchover?to=NAME`, `POST /backends/NAME/disable|enable`, `POST /reload`.
pub fn parse(path: &str, query: Option<&str>) -> Option<Result<Call, String>> {
    if path == "/switchover" {
        let to = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("to="))
            .filter(|to| !to.is_empty());
        return Some(match to {
            Some(to) => Ok(Call::Switchover { to: to.to_owned() }),
            None => Err("name the target: POST /switchover?to=NAME".into()),
        });
    }
    if path == "/reload" {
        return Some(Ok(Call::Reload));
    }
    let rest = path.strip_prefix("/backends/")?;
    let (master, action) = rest.rsplit_once('/')?;
    let disabled = match action {
        "disable" => true,
        "enable" => false,
        _ => return None,
    };
    Some(Ok(Call::SetDisabled {
        master: master.to_owned(),
        disabled,
    }))
}

/// The JSON answer of a mutating call.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub ok: bool,
    pub message: String,
    /// The active master after the call (null: none).
    pub active: Option<String>,
}

impl Call {
    pub fn into_control(self) -> Option<Control> {
        match self {
            Call::Switchover { to } => Some(Control::Switchover { to }),
            Call::SetDisabled { master, disabled } => {
                Some(Control::SetDisabled { master, disabled })
            }
            Call::Reload => None,
        }
    }
}

/// The status code for a refused command.
pub fn status_of(error: &ControlError) -> StatusCode {
    match error {
        ControlError::UnknownMaster { .. } => StatusCode::NOT_FOUND,
        ControlError::Refused(_) | ControlError::ActiveActive => StatusCode::CONFLICT,
        ControlError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn parses_the_calls() {
        assert_eq!(
            parse("/switchover", Some("to=master-b")),
            Some(Ok(Call::Switchover {
                to: "master-b".into()
            }))
        );
        assert!(matches!(parse("/switchover", None), Some(Err(_))));
        assert_eq!(
            parse("/backends/master-a/disable", None),
            Some(Ok(Call::SetDisabled {
                master: "master-a".into(),
                disabled: true
            }))
        );
        assert_eq!(parse("/backends/master-a/reboot", None), None);
        assert_eq!(parse("/reload", None), Some(Ok(Call::Reload)));
        assert_eq!(parse("/status", None), None);
    }

    #[test]
    fn token_check() {
        let token = Token::Required("s3cret".into());
        let mut headers = HeaderMap::new();
        assert_eq!(
            token.check(&headers).map_err(|e| e.0),
            Err(StatusCode::UNAUTHORIZED)
        );
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cre"));
        assert!(token.check(&headers).is_err());
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(token.check(&headers).is_ok());
        assert!(Token::NotRequired.check(&HeaderMap::new()).is_ok());
        assert_eq!(format!("{token:?}"), "Token::Required(..)");
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
    }
}
