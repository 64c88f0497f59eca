//! The master-facing side (`[upstream_tls]`): one `rustls::ClientConfig` for every
//! `https://` master, the connector requests, health checks and REST calls use, and
//! the words `/status` shows when a master's certificate is refused.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::pem::{self, PemError};
use crate::config::UpstreamTlsConfig;

/// `[upstream_tls]` that cannot be used; each names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("upstream_tls.{key}: {source}")]
    Pem {
        key: &'static str,
        #[source]
        source: PemError,
    },
    #[error("upstream_tls.ca_file: {}: {rejected} of its certificates are not usable CA certificates, and none is", .path.display())]
    NoUsableCa { path: PathBuf, rejected: usize },
    #[error("no system CA roots found ({detail}); set upstream_tls.ca_file to the CA bundle that signs the masters' certificates")]
    NoSystemRoots { detail: String },
    #[error("upstream_tls.cert_file / key_file ({}): {source}", .cert.display())]
    ClientCert {
        cert: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS settings: {0}")]
    Protocol(#[source] rustls::Error),
}

/// The TLS client settings of every `https://` master, built once from `[upstream_tls]`.
#[derive(Clone)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
    /// `insecure_skip_verify`: any certificate is accepted.
    pub insecure: bool,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Reads the files `settings` names (or the system roots) and builds the config:
    /// the ring provider, TLS 1.2 and 1.3, ALPN `http/1.1` only (we speak HTTP/1.1
    /// to masters).
    pub fn load(settings: &UpstreamTlsConfig) -> Result<UpstreamTls, ClientTlsError> {
        let provider = super::provider();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(ClientTlsError::Protocol)?;
        let builder = if settings.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
        } else {
            builder.with_root_certificates(roots(settings.ca_file.as_deref())?)
        };
        let mut config = match &settings.client_cert {
            Some(files) => {
                let chain =
                    pem::certificates(&files.cert_file).map_err(|source| ClientTlsError::Pem {
                        key: "cert_file",
                        source,
                    })?;
                let key =
                    pem::private_key(&files.key_file).map_err(|source| ClientTlsError::Pem {
                        key: "key_file",
                        source,
                    })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|source| ClientTlsError::ClientCert {
                        cert: files.cert_file.clone(),
                        source,
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(UpstreamTls {
            config: Arc::new(config),
            insecure: settings.insecure_skip_verify,
        })
    }

    /// The connector for one master, verifying (and sending as SNI) `name`. None
    /// when `name` is neither a DNS name nor an IP address (validation refuses those).
    pub fn for_master(&self, name: &str) -> Option<MasterTls> {
        let server_name = ServerName::try_from(name.to_owned()).ok()?;
        Some(MasterTls {
            config: Arc::clone(&self.config),
            server_name,
            insecure: self.insecure,
        })
    }
}

/// `ca_file`'s CAs, or the system's roots.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, ClientTlsError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certificates = pem::certificates(path).map_err(|source| ClientTlsError::Pem {
                key: "ca_file",
                source,
            })?;
            let (added, rejected) = store.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(ClientTlsError::NoUsableCa {
                    path: path.to_owned(),
                    rejected,
                });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let detail = found
                    .errors
                    .first()
                    .map_or_else(|| "none installed".to_owned(), ToString::to_string);
                return Err(ClientTlsError::NoSystemRoots { detail });
            }
        }
    }
    Ok(store)
}

/// How to open TLS to one master: the shared config and the name to verify.
#[derive(Clone)]
pub struct MasterTls {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    insecure: bool,
}

impl std::fmt::Debug for MasterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterTls")
            .field("server_name", &self.server_name)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl PartialEq for MasterTls {
    /// Same settings object and name: a reload that rebuilt nothing keeps the pool.
    fn eq(&self, other: &MasterTls) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
            && self.server_name == other.server_name
            && self.insecure == other.insecure
    }
}

impl Eq for MasterTls {}

impl MasterTls {
    /// The TLS handshake on `tcp`. On failure, [`describe`] gives the words.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        TlsConnector::from(Arc::clone(&self.config))
            .connect(self.server_name.clone(), tcp)
            .await
    }

    /// The name verified and sent as SNI.
    pub fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }

    pub fn is_insecure(&self) -> bool {
        self.insecure
    }
}

/// What a failed handshake says about the master, in words for `/status`; None when
/// the handshake failed for want of a connection (reset, closed), not because of TLS.
pub fn describe(error: &io::Error) -> Option<String> {
    let rustls_error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match rustls_error {
        rustls::Error::InvalidCertificate(certificate) => describe_certificate(certificate),
        rustls::Error::AlertReceived(alert) => format!(
            "the master refused the TLS handshake ({alert:?}); if it requires a client certificate, set upstream_tls.cert_file and key_file"
        ),
        rustls::Error::NoApplicationProtocol => {
            "the master does not speak HTTP/1.1 over TLS (ALPN)".to_owned()
        }
        other => format!("handshake failed: {other}"),
    })
}

fn describe_certificate(error: &CertificateError) -> String {
    match error {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the master's certificate expired".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the master's certificate is not valid yet (check the clocks)".to_owned()
        }
        CertificateError::UnknownIssuer => {
            "unknown issuer (not signed by a CA in upstream_tls.ca_file / the system roots)".to_owned()
        }
        CertificateError::NotValidForNameContext { expected, presented } => format!(
            "the master's certificate is not valid for name {} (it names {}); set tls_server_name on the [[backend]] or upstream_tls.server_name",
            expected.to_str(),
            if presented.is_empty() { "nothing".to_owned() } else { presented.join(", ") }
        ),
        CertificateError::NotValidForName => {
            "the master's certificate is not valid for the name verified; set tls_server_name on the [[backend]] or upstream_tls.server_name".to_owned()
        }
        CertificateError::Revoked => "the master's certificate is revoked".to_owned(),
        CertificateError::BadSignature => {
            "the master's certificate has a bad signature".to_owned()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the master's certificate is not for TLS servers (extended key usage)".to_owned()
        }
        other => format!("the master's certificate was refused: {other:?}"),
    }
}

/// `insecure_skip_verify`: every certificate is accepted, whoever signed it and for
/// whatever name. The handshake's signatures are still checked (with the provider's
/// algorithms), so the session is at least encrypted to whoever holds the key.
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
