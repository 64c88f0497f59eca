//! The daemon's sockets. They are bound before [`super::run`], so that a taken port
//! fails start-up with the key named, and tests can bind port 0 and read the port.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::Config;

/// The daemon's bound sockets.
#[derive(Debug)]
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
    /// One per `[[tcp]]` entry, in file order.
    pub tcp: Vec<TcpListener>,
    /// `proxy.tls.http_redirect_listen`: clear-text requests answered with a 308 to https.
    pub redirect: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({key}): {source}. Is another process using this port? Change {key} or stop that process")]
pub struct BindError {
    pub key: String,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

impl Listeners {
    /// Binds `proxy.listen`, `admin.listen` and every `tcp[i].listen`.
    pub async fn bind(config: &Config) -> Result<Listeners, BindError> {
        let mut tcp = Vec::with_capacity(config.tcp.len());
        for (index, entry) in config.tcp.iter().enumerate() {
            tcp.push(bind(format!("tcp[{index}].listen"), entry.listen).await?);
        }
        Ok(Listeners {
            proxy: bind("proxy.listen".into(), config.proxy.listen).await?,
            admin: bind("admin.listen".into(), config.admin.listen).await?,
            tcp,
            redirect: match config
                .proxy
                .tls
                .as_ref()
                .and_then(|tls| tls.http_redirect_listen)
            {
                Some(addr) => Some(bind("proxy.tls.http_redirect_listen".into(), addr).await?),
                None => None,
            },
        })
    }
}

/// Connections the kernel queues for a listener before we accept them (capped by
/// `net.core.somaxconn`). A burst beyond the queue is not refused but delayed by
/// seconds (the kernel drops the handshake's last ACK and retransmits), so this is
/// larger than tokio's default of 1024: after a failover or a restart, every agent
/// and browser reconnects at once.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` for config key `key` (named in the error).
pub(super) async fn bind(key: String, addr: SocketAddr) -> Result<TcpListener, BindError> {
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As std and tokio do for listeners: a restart may bind while old
        // connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| BindError { key, addr, source })
}

/// The address a listener is bound to (the real port when configured with port 0).
pub(super) fn bound(listener: &TcpListener) -> String {
    listener.local_addr().map_or_else(
        |error| format!("unknown ({error})"),
        |addr| addr.to_string(),
    )
}
