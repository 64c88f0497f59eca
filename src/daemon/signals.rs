//! The signals the daemon answers: SIGTERM (systemd stop) and SIGINT (Ctrl-C) stop it,
//! SIGHUP (systemd reload) re-reads the config file.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Completes on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C will stop the daemon");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// SIGHUP, when reloads are possible (`enabled`: the daemon has a config file).
pub(super) struct Hangups(Option<Signal>);

impl Hangups {
    pub(super) fn listen(enabled: bool) -> Hangups {
        if !enabled {
            return Hangups(None);
        }
        match signal(SignalKind::hangup()) {
            Ok(signal) => Hangups(Some(signal)),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; reload through the admin API instead");
                Hangups(None)
            }
        }
    }

    /// Completes on the next SIGHUP; never when not listening.
    pub(super) async fn next(&mut self) -> Option<()> {
        match &mut self.0 {
            Some(signal) => signal.recv().await,
            None => std::future::pending().await,
        }
    }
}
