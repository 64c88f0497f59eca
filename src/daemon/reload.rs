//! Reloads (SIGHUP, `POST /reload`): the config file is read again and applied as a
//! whole, or not at all. Everything that can fail (the file, the admin token, moved
//! listeners, ports of new `[[tcp]]` entries, the owner) is done before anything
//! changes; keys the client listener reads only at start are named in a warning.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::listeners::{bind, BindError};
use super::settings::{
    build_masters, down_confirmation, owner_settings, policy, proxy_settings, proxy_workers,
    restart_only_changes, restart_only_tls_changes, server_settings, upstream_tls, NoTlsFor,
};
use super::{checks, Daemon};
use crate::admin::Token;
use crate::config::{Config, ConfigError};
use crate::control::owner::{Control, ControlError};
use crate::control::routing::Master;
use crate::control::{drain, state_file};
use crate::sys::small_file::SecretError;
use crate::sys::systemd;
use crate::tls::CertificateError;

/// Why a reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this daemon was started without a config file: nothing to reload")]
    NoConfigFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// As `run` and `check` do: an unusable token file would lock the admin API (this
    /// very call included) until a SIGHUP.
    #[error(transparent)]
    Token(#[from] SecretError),
    #[error("{key} changed ({old} -> {new}): restart the daemon to move it")]
    ListenerMoved {
        key: &'static str,
        old: SocketAddr,
        new: SocketAddr,
    },
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Owner(#[from] ControlError),
    /// A certificate that cannot be served: the ones in use stay.
    #[error("{0}; the certificates in use stay")]
    Tls(#[from] CertificateError),
    /// `[upstream_tls]` is read at start only (its files included).
    #[error("[upstream_tls] changed: it applies at start only; restart the daemon to use the new settings")]
    UpstreamTlsChanged,
    #[error(transparent)]
    UpstreamTls(#[from] crate::tls::ClientTlsError),
    #[error(transparent)]
    NoTls(#[from] NoTlsFor),
    #[error("pool.mode changed ({old} -> {new}): it applies at start only; restart the daemon to switch modes")]
    ModeChanged {
        old: &'static str,
        new: &'static str,
    },
    #[error("{0} changed: in cluster mode it is the pool's; restart this instance (and, for the masters, every instance of the pool with the same list) to change it")]
    ClusterFixed(&'static str),
}

/// What a reload applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    pub masters: usize,
    pub tcp_listeners: usize,
    /// `[[tcp]]` entries identical to a running one.
    pub tcp_unchanged: usize,
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} masters, {} TCP listeners ({} unchanged)",
            self.masters, self.tcp_listeners, self.tcp_unchanged
        )
    }
}

impl Daemon {
    /// Re-reads the config file and applies it; on any error the running
    /// configuration stays untouched. Logged and counted either way.
    pub(super) async fn reload(&mut self) -> Result<Reloaded, ReloadError> {
        let Some(path) = self.source.clone() else {
            return Err(ReloadError::NoConfigFile);
        };
        systemd::reloading();
        let outcome = self.try_reload(&path).await;
        systemd::ready("serving");
        self.metrics.reload(outcome.is_ok());
        match &outcome {
            Ok(summary) => {
                tracing::info!(path = %path.display(), "configuration reloaded: {summary}")
            }
            Err(error) => {
                tracing::error!(path = %path.display(), "reload rejected, the running configuration is unchanged: {error}")
            }
        }
        outcome
    }

    async fn try_reload(&mut self, path: &Path) -> Result<Reloaded, ReloadError> {
        let new = Config::load(path)?;
        let token = Token::load(new.admin.token_file.as_deref())?;
        refuse_moved_listeners(&self.config, &new)?;
        refuse_pool_changes(&self.config, &new)?;
        if self.config.pool.mode != new.pool.mode {
            let (old, new) = (self.config.pool.mode.as_str(), new.pool.mode.as_str());
            return Err(ReloadError::ModeChanged { old, new });
        }
        // Read now, so that a bad certificate refuses the whole reload.
        let certificates = self.certificates.reread(&new)?;
        // Restart-only once built: its files are read once, and every https master's
        // pool keeps the config it was built with. Built here when first needed.
        let tls = match &self.upstream_tls {
            Some(_) if new.upstream_tls != self.config.upstream_tls => {
                return Err(ReloadError::UpstreamTlsChanged)
            }
            Some(running) => Some(running.clone()),
            None => upstream_tls(&new)?,
        };
        let sockets = self.tcp_sockets(&new).await?;
        let masters = build_masters(&new, &self.masters, self.proxy_workers, tls.as_ref())?;
        self.owner
            .control(Control::Reload {
                masters: masters.clone(),
                policy: policy(&new),
                settings: owner_settings(&new),
            })
            .await?;
        // Nothing can fail from here on.
        self.certificates.replace(certificates);
        self.upstream_tls = tls;
        Ok(self.apply(new, masters, sockets, token))
    }

    /// A socket per `[[tcp]]` entry of `new`: the open one when its address is already
    /// served (the port stays open throughout), else a new one. A port that is taken
    /// fails the reload before anything changed.
    async fn tcp_sockets(&self, new: &Config) -> Result<Vec<Arc<TcpListener>>, BindError> {
        let mut sockets = Vec::with_capacity(new.tcp.len());
        for (index, entry) in new.tcp.iter().enumerate() {
            let open = self.tcp.iter().find(|t| t.entry.listen == entry.listen);
            let socket = match open {
                Some(task) => Arc::clone(&task.listener),
                None => Arc::new(bind(format!("tcp[{index}].listen"), entry.listen).await?),
            };
            sockets.push(socket);
        }
        Ok(sockets)
    }

    fn apply(
        &mut self,
        new: Config,
        masters: Vec<Arc<Master>>,
        sockets: Vec<Arc<TcpListener>>,
        token: Token,
    ) -> Reloaded {
        self.probes.abort_all();
        self.probes = checks::spawn(&masters, &new, self.owner.events());
        self.masters = masters;
        self.restart_followers(&new);
        let tcp_unchanged = self
            .tcp
            .iter()
            .filter(|t| new.tcp.contains(&t.entry))
            .count();
        for task in self.tcp.drain(..) {
            task.stop.cancel();
        }
        for (entry, socket) in new.tcp.iter().zip(sockets) {
            self.spawn_tcp(entry, socket, down_confirmation(&new.health));
        }
        let ports: Vec<Option<u16>> = self
            .tcp
            .iter()
            .map(|t| t.listener.local_addr().ok().map(|a| a.port()))
            .collect();
        self.proxy_ctx
            .replace_settings(proxy_settings(&new, |index| {
                ports.get(index).copied().flatten()
            }));
        self.admin_ctx.replace_token(token);
        let running = server_settings(&self.config, proxy_workers(&self.config), None);
        let mut changed =
            restart_only_changes(&running, &server_settings(&new, proxy_workers(&new), None));
        changed.extend(restart_only_tls_changes(&self.config, &new));
        if !changed.is_empty() {
            tracing::warn!(keys = %changed.join(", "),
                "the new values of these keys apply after a restart; the running ones stay");
        }
        let reloaded = Reloaded {
            masters: self.masters.len(),
            tcp_listeners: new.tcp.len(),
            tcp_unchanged,
        };
        self.config = new;
        reloaded
    }

    /// The drain and the state file writer follow the new settings.
    fn restart_followers(&mut self, new: &Config) {
        if new.failover.drain_timeout != self.config.failover.drain_timeout {
            self.drain.abort();
            self.drain = self.background.spawn(drain::run(
                self.routing.subscribe(),
                new.failover.drain_timeout,
            ));
        }
        if new.failover.state_file != self.config.failover.state_file {
            if let Some(writer) = self.state_writer.take() {
                writer.abort();
            }
            self.state_writer = new.failover.state_file.clone().map(|path| {
                self.background
                    .spawn(state_file::follow(path, self.routing.subscribe()))
            });
        }
    }
}

/// The proxy and admin listeners stay where they are: moving one needs a restart.
fn refuse_moved_listeners(old: &Config, new: &Config) -> Result<(), ReloadError> {
    for (key, old, new) in [
        ("proxy.listen", old.proxy.listen, new.proxy.listen),
        ("admin.listen", old.admin.listen, new.admin.listen),
    ] {
        if old != new {
            return Err(ReloadError::ListenerMoved { key, old, new });
        }
    }
    Ok(())
}

/// In cluster mode the `[cluster]` table and the masters (names, URLs, order) are
/// what the pool agreed on: a reload cannot change them.
fn refuse_pool_changes(old: &Config, new: &Config) -> Result<(), ReloadError> {
    if old.cluster != new.cluster {
        return Err(ReloadError::ClusterFixed("[cluster]"));
    }
    let masters = |config: &Config| {
        config
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.url.clone()))
            .collect::<Vec<_>>()
    };
    if old.cluster.is_some() && masters(old) != masters(new) {
        return Err(ReloadError::ClusterFixed("the [[backend]] list"));
    }
    Ok(())
}
