//! The certificates the proxy listener presents (`[proxy.tls]`): read, checked and
//! built into one rustls `ServerConfig`, chosen by server name; swapped whole on
//! reload, so new handshakes get the new certificates and open connections keep
//! theirs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::info::CertificateInfo;
use super::pem::{self, PemError};
use crate::config::{ServerTlsConfig, TlsVersion};

/// Why the certificates of `[proxy.tls]` cannot be served: the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{}: {detail}; give a PEM certificate chain, leaf first", .path.display())]
    Certificate { path: PathBuf, detail: String },
    #[error("{}: cannot use this private key ({detail}); give an RSA, ECDSA or Ed25519 key in PEM", .path.display())]
    Key { path: PathBuf, detail: String },
    #[error("{}: this key does not belong to the certificate in {}; give the key it was issued for", .key.display(), .cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{}: the certificate ({subject}) expired on {not_after}; renew it", .path.display())]
    Expired {
        path: PathBuf,
        subject: String,
        not_after: String,
    },
    #[error("{}: the certificate ({subject}) is not valid before {not_before}; check the clock or the file", .path.display())]
    NotYetValid {
        path: PathBuf,
        subject: String,
        not_before: String,
    },
    #[error("cannot build the TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One certificate served, for `check`, `/status` and metrics.
#[derive(Debug, Clone)]
pub struct ServedCertificate {
    /// The `[[proxy.tls.sni]]` names it is chosen for; empty for the default one.
    pub server_names: Vec<String>,
    pub cert_file: PathBuf,
    pub info: CertificateInfo,
}

/// What one reading of `[proxy.tls]` gives: the rustls settings and the certificates.
#[derive(Debug)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// The default certificate first, then the `[[proxy.tls.sni]]` ones in file order.
    pub certificates: Vec<ServedCertificate>,
}

impl ServerTls {
    /// Reads and checks every file of `config` (at `now`: expired certificates are
    /// refused), and builds the settings. ALPN offers h2 first, then http/1.1.
    pub fn load(config: &ServerTlsConfig, now: SystemTime) -> Result<ServerTls, ServerTlsError> {
        ServerTls::load_offering(config, now, &[b"h2", b"http/1.1"])
    }

    /// [`ServerTls::load`] for a listener that speaks HTTP/1.1 only (the admin API).
    pub fn load_http1(
        config: &ServerTlsConfig,
        now: SystemTime,
    ) -> Result<ServerTls, ServerTlsError> {
        ServerTls::load_offering(config, now, &[b"http/1.1"])
    }

    fn load_offering(
        config: &ServerTlsConfig,
        now: SystemTime,
        protocols: &[&[u8]],
    ) -> Result<ServerTls, ServerTlsError> {
        let (default, info) = certified_key(&config.cert_file, &config.key_file, now)?;
        let mut certificates = vec![ServedCertificate {
            server_names: Vec::new(),
            cert_file: config.cert_file.clone(),
            info,
        }];
        let mut by_name = ByServerName {
            default,
            names: HashMap::new(),
        };
        for entry in &config.sni {
            let (key, info) = certified_key(&entry.cert_file, &entry.key_file, now)?;
            for name in &entry.server_names {
                // The first entry naming a server wins, as the file reads.
                by_name
                    .names
                    .entry(name.clone())
                    .or_insert_with(|| Arc::clone(&key));
            }
            certificates.push(ServedCertificate {
                server_names: entry.server_names.clone(),
                cert_file: entry.cert_file.clone(),
                info,
            });
        }
        let versions: &[&'static rustls::SupportedProtocolVersion] = match config.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let mut server = ServerConfig::builder_with_provider(super::provider())
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(by_name));
        server.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            config: Arc::new(server),
            certificates,
        })
    }
}

/// The chain of `cert_file` with the key of `key_file`, checked to belong together and
/// to be valid at `now`.
fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    now: SystemTime,
) -> Result<(Arc<CertifiedKey>, CertificateInfo), ServerTlsError> {
    let chain = pem::certificates(cert_file)?;
    let info = chain
        .first()
        .map(CertificateInfo::of)
        .transpose()
        .map_err(|error| ServerTlsError::Certificate {
            path: cert_file.to_owned(),
            detail: error.to_string(),
        })?
        .ok_or_else(|| ServerTlsError::Certificate {
            path: cert_file.to_owned(),
            detail: "no certificate".to_owned(),
        })?;
    if info.is_expired(now) {
        return Err(ServerTlsError::Expired {
            path: cert_file.to_owned(),
            subject: info.subject,
            not_after: humantime::format_rfc3339_seconds(info.not_after).to_string(),
        });
    }
    if info.is_not_yet_valid(now) {
        return Err(ServerTlsError::NotYetValid {
            path: cert_file.to_owned(),
            subject: info.subject,
            not_before: humantime::format_rfc3339_seconds(info.not_before).to_string(),
        });
    }
    let key = pem::private_key(key_file)?;
    let signing_key = super::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|error| ServerTlsError::Key {
            path: key_file.to_owned(),
            detail: error.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok((Arc::new(certified), info)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok((Arc::new(certified), info))
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(ServerTlsError::KeyMismatch {
            key: key_file.to_owned(),
            cert: cert_file.to_owned(),
        }),
        Err(error) => Err(ServerTlsError::Certificate {
            path: cert_file.to_owned(),
            detail: error.to_string(),
        }),
    }
}

/// Chooses the certificate by the server name of the ClientHello: an exact name, then
/// `*.` and the name's parent, else the default one.
#[derive(Debug)]
struct ByServerName {
    default: Arc<CertifiedKey>,
    /// Lower-case names and `*.parent` wildcards, as validated in the config.
    names: HashMap<String, Arc<CertifiedKey>>,
}

impl ByServerName {
    fn choose(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return &self.default;
        };
        if let Some(key) = self.names.get(&name) {
            return key;
        }
        let wildcard = name
            .split_once('.')
            .and_then(|(_, parent)| self.names.get(&format!("*.{parent}")));
        wildcard.unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.choose(client_hello.server_name())))
    }
}

/// The current [`ServerTls`] of the proxy listener. Written by start-up and reloads;
/// read at every handshake (an uncontended read lock) and by `/status` and metrics.
#[derive(Debug)]
pub struct ServerTlsHandle {
    current: RwLock<Arc<ServerTls>>,
}

impl ServerTlsHandle {
    pub fn new(tls: ServerTls) -> ServerTlsHandle {
        ServerTlsHandle {
            current: RwLock::new(Arc::new(tls)),
        }
    }

    pub fn current(&self) -> Arc<ServerTls> {
        match self.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// New handshakes use `tls`; connections already open keep what they had.
    pub fn replace(&self, tls: ServerTls) {
        let tls = Arc::new(tls);
        match self.current.write() {
            Ok(mut current) => *current = tls,
            Err(poisoned) => *poisoned.into_inner() = tls,
        }
    }

    /// An acceptor with the current settings, for one handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.current().config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<CertifiedKey> {
        // Only the identity matters here; the chain is never used.
        let signing = super::super::provider()
            .key_provider
            .load_private_key(rustls_pki_types::PrivateKeyDer::Pkcs8(
                rcgen::KeyPair::generate()
                    .expect("key")
                    .serialize_der()
                    .into(),
            ))
            .expect("load key");
        Arc::new(CertifiedKey::new(Vec::new(), signing))
    }

    #[test]
    fn chooses_exact_then_wildcard_then_default() {
        let (default, exact, wildcard) = (key(), key(), key());
        let resolver = ByServerName {
            default: Arc::clone(&default),
            names: HashMap::from([
                ("ci.example.org".to_owned(), Arc::clone(&exact)),
                ("*.example.org".to_owned(), Arc::clone(&wildcard)),
            ]),
        };
        let same = |a: &Arc<CertifiedKey>, b: &Arc<CertifiedKey>| Arc::ptr_eq(a, b);
        assert!(same(resolver.choose(Some("ci.example.org")), &exact));
        assert!(same(resolver.choose(Some("CI.Example.org")), &exact));
        assert!(same(resolver.choose(Some("builds.example.org")), &wildcard));
        assert!(same(resolver.choose(Some("a.b.example.org")), &default));
        assert!(same(resolver.choose(Some("example.org")), &default));
        assert!(same(resolver.choose(None), &default));
    }
}
