//! TLS on both sides, with rustls and its ring crypto provider (one provider only:
//! two in one binary make rustls panic at its first use of the default).
//!
//! - `pem`: reading certificate chains, private keys and CA bundles, errors naming
//!   the file;
//! - `info`: a certificate's subject, names, serial and validity, for `check`,
//!   `/status`, metrics and reload errors;
//! - `server`: the client-facing side (`[proxy.tls]`): certificates chosen by server
//!   name, ALPN h2/http1.1, swapped whole on reload;
//! - `listeners`: the certificates of the proxy and admin listeners together, as the
//!   daemon loads, re-reads and swaps them;
//! - `client`: the master-facing side (`[upstream_tls]`): verification of the
//!   masters' certificates, the connector for requests, health checks and REST calls.

mod client;
mod info;
mod listeners;
mod pem;
mod server;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use client::{describe, ClientTlsError, MasterTls, UpstreamTls};
pub use listeners::{CertificateError, ListenerCertificates};
pub use server::{ServedCertificate, ServerTls, ServerTlsError, ServerTlsHandle};

/// `check` and the start-up log warn about a certificate that expires within this many days.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// The one crypto provider of the process. Configs name it explicitly, so nothing
/// depends on a process-wide default; [`install_provider`] sets that default too, for
/// any library that asks for it.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process default; called once at start-up. (A second
/// call finds it installed and changes nothing.)
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
