//! Opening connections to a master: with a deadline covering the TCP connect and
//! the TLS handshake, Nagle off, and (for traffic) never into the descriptors kept
//! for the admin API and the health checks.

use std::time::Duration;

use tokio::net::TcpStream;

use super::stream::MasterStream;
use crate::sys::fd_limit::Claim;
use crate::tls::MasterTls;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {authority} timed out after {}", humantime::format_duration(*.timeout))]
    Timeout {
        authority: String,
        timeout: Duration,
    },
    #[error("connect to {authority}: {source}")]
    Io {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed for a reason of TLS (a certificate refused, a
    /// protocol error), not for want of a connection. Never proof that the master
    /// is down, unlike a refused connect: its health checks decide.
    #[error("TLS with {authority}: {reason}")]
    Tls { authority: String, reason: String },
    #[error("HTTP handshake with {authority}: {source}")]
    Handshake {
        authority: String,
        #[source]
        source: hyper::Error,
    },
    /// Every connection the master may have (`[[backend]] max_connections`) stayed
    /// busy while the request waited.
    #[error("all {limit} connections to {authority} stayed busy for {} ([[backend]] max_connections)",
        humantime::format_duration(*.waited))]
    Saturated {
        authority: String,
        limit: usize,
        waited: Duration,
    },
}

impl ConnectError {
    /// The connect failed for want of descriptors, buffers or ports on our side
    /// ([`crate::sys::fd_limit::is_local_exhaustion`]): it says nothing about the master.
    pub fn is_local(&self) -> bool {
        match self {
            ConnectError::Io { source, .. } => crate::sys::fd_limit::is_local_exhaustion(source),
            ConnectError::Timeout { .. }
            | ConnectError::Tls { .. }
            | ConnectError::Handshake { .. }
            | ConnectError::Saturated { .. } => false,
        }
    }

    /// The master did not answer the connect in time: it may be down, or only slow
    /// (a full accept queue drops SYNs). Never proof that it is down.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnectError::Timeout { .. })
    }

    /// The master's TLS was refused (its certificate, most often): see [`ConnectError::Tls`].
    pub fn is_tls(&self) -> bool {
        matches!(self, ConnectError::Tls { .. })
    }

    /// Our own cap on connections to the master held the request back.
    pub fn is_saturated(&self) -> bool {
        matches!(self, ConnectError::Saturated { .. })
    }
}

/// Opens a TCP connection to `authority` (`host:port`) within `timeout`, with Nagle off.
pub async fn open_stream(authority: &str, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(authority))
        .await
        .map_err(|_| ConnectError::Timeout {
            authority: authority.to_owned(),
            timeout,
        })?
        .map_err(|source| ConnectError::Io {
            authority: authority.to_owned(),
            source,
        })?;
    // Small writes (headers, WebSocket frames) must not wait for an ACK.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// [`open_stream`] for traffic: a descriptor in the reserve the admin API and the
/// health checks need (see [`crate::sys::fd_limit::in_reserve`]) is given back at once.
pub(super) async fn open_traffic_stream(
    authority: &str,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let stream = open_stream(authority, timeout).await?;
    if crate::sys::fd_limit::in_reserve(&stream, Claim::Upstream) {
        return Err(ConnectError::Io {
            authority: authority.to_owned(),
            source: crate::sys::fd_limit::reserve_error(),
        });
    }
    Ok(stream)
}

/// A connection to the master at `authority`: TCP, then TLS when `tls` is set, both
/// within `timeout`. `traffic`: kept out of the descriptor reserve (the check is on
/// the TCP socket, before any handshake).
pub(super) async fn open_master(
    authority: &str,
    tls: Option<&MasterTls>,
    timeout: Duration,
    traffic: bool,
) -> Result<MasterStream, ConnectError> {
    let started = tokio::time::Instant::now();
    let tcp = if traffic {
        open_traffic_stream(authority, timeout).await?
    } else {
        open_stream(authority, timeout).await?
    };
    let Some(tls) = tls else {
        return Ok(MasterStream::Plain(tcp));
    };
    let timed_out = || ConnectError::Timeout {
        authority: authority.to_owned(),
        timeout,
    };
    let handshake = tokio::time::timeout_at(started + timeout, tls.connect(tcp)).await;
    match handshake.map_err(|_| timed_out())? {
        Ok(stream) => Ok(MasterStream::Tls(Box::new(stream))),
        Err(source) => Err(match crate::tls::describe(&source) {
            Some(reason) => ConnectError::Tls {
                authority: authority.to_owned(),
                reason,
            },
            // Reset or closed during the handshake: as a failed connect.
            None => ConnectError::Io {
                authority: authority.to_owned(),
                source,
            },
        }),
    }
}

/// `host:port`, with IPv6 hosts in brackets.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
