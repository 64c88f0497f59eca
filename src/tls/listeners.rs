//! The certificates the two listeners present (`[proxy.tls]`, `[admin.tls]`): read at
//! start (a file that cannot be served stops it), read again by each reload before
//! anything changes, and swapped once the reload cannot fail any more.

use std::sync::Arc;
use std::time::SystemTime;

use super::{ServedCertificate, ServerTls, ServerTlsError, ServerTlsHandle};
use crate::config::{Config, ServerTlsConfig};

/// A certificate file of one listener's table that cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("[{table}]: {source}")]
pub struct CertificateError {
    /// `proxy.tls` or `admin.tls`.
    pub table: &'static str,
    #[source]
    pub source: ServerTlsError,
}

/// The listeners' certificates; None where a listener speaks clear text. Written by
/// the daemon (start, reloads); read by the listeners at each handshake and by
/// `/status` and metrics.
#[derive(Debug, Clone, Default)]
pub struct ListenerCertificates {
    pub proxy: Option<Arc<ServerTlsHandle>>,
    pub admin: Option<Arc<ServerTlsHandle>>,
}

/// What a reload read, to be swapped in by [`ListenerCertificates::replace`].
pub struct Reread {
    proxy: Option<ServerTls>,
    admin: Option<ServerTls>,
}

impl ListenerCertificates {
    /// Reads every certificate file of `config` (`check` and the start).
    pub fn load(config: &Config) -> Result<ListenerCertificates, CertificateError> {
        let now = SystemTime::now();
        let handle = |tls: ServerTls| Arc::new(ServerTlsHandle::new(tls));
        Ok(ListenerCertificates {
            proxy: load(config.proxy.tls.as_ref(), "proxy.tls", now, ServerTls::load)?.map(handle),
            admin: load(
                config.admin.tls.as_ref(),
                "admin.tls",
                now,
                ServerTls::load_http1,
            )?
            .map(handle),
        })
    }

    /// Reads `new`'s files for the listeners that serve TLS now (turning TLS on or off
    /// needs a restart; see `settings::restart_only_tls_changes`).
    pub fn reread(&self, new: &Config) -> Result<Reread, CertificateError> {
        let now = SystemTime::now();
        let proxy = new.proxy.tls.as_ref().filter(|_| self.proxy.is_some());
        let admin = new.admin.tls.as_ref().filter(|_| self.admin.is_some());
        Ok(Reread {
            proxy: load(proxy, "proxy.tls", now, ServerTls::load)?,
            admin: load(admin, "admin.tls", now, ServerTls::load_http1)?,
        })
    }

    /// New handshakes use what `reread` read; open connections keep theirs.
    pub fn replace(&self, reread: Reread) {
        for (handle, tls) in [(&self.proxy, reread.proxy), (&self.admin, reread.admin)] {
            if let (Some(handle), Some(tls)) = (handle, tls) {
                log_certificates(&tls.certificates);
                handle.replace(tls);
            }
        }
    }

    /// Logs what each listener serves (at start).
    pub fn log(&self) {
        for handle in [&self.proxy, &self.admin].into_iter().flatten() {
            log_certificates(&handle.current().certificates);
        }
    }

    /// Every certificate served, with its listener (`proxy` or `admin`).
    pub fn served(&self) -> Vec<(&'static str, ServedCertificate)> {
        let mut served = Vec::new();
        for (listener, handle) in [("proxy", &self.proxy), ("admin", &self.admin)] {
            if let Some(handle) = handle {
                let current = handle.current();
                served.extend(current.certificates.iter().map(|c| (listener, c.clone())));
            }
        }
        served
    }
}

fn load(
    config: Option<&ServerTlsConfig>,
    table: &'static str,
    now: SystemTime,
    read: fn(&ServerTlsConfig, SystemTime) -> Result<ServerTls, ServerTlsError>,
) -> Result<Option<ServerTls>, CertificateError> {
    config
        .map(|config| read(config, now).map_err(|source| CertificateError { table, source }))
        .transpose()
}

/// Logs the certificates a listener serves, with a warning for each that expires
/// within [`super::EXPIRY_WARNING_DAYS`].
fn log_certificates(certificates: &[ServedCertificate]) {
    let now = SystemTime::now();
    for served in certificates {
        let days_left = served.info.days_left(now);
        let (file, subject) = (served.cert_file.display(), &served.info.subject);
        let not_after = served.info.not_after_text();
        if days_left < super::EXPIRY_WARNING_DAYS {
            tracing::warn!(%file, %subject, %not_after, days_left,
                "this certificate expires soon; renew it and run `jenkins-ha-proxy reload`");
        } else {
            tracing::info!(%file, %subject, %not_after, days_left, "serving this certificate");
        }
    }
}
