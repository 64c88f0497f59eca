//! The validated TLS settings: `[proxy.tls]` (the certificates the proxy listener
//! presents) and `[upstream_tls]` (how masters on `https://` are verified).

use std::net::SocketAddr;
use std::path::PathBuf;

/// `[proxy.tls]`: the certificates the proxy listener presents. The files are read
/// when the daemon starts, on every reload and by `check` (see the `tls` module).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTlsConfig {
    /// `cert_file`: PEM chain, leaf first; served to clients that send no server name
    /// or one no `[[proxy.tls.sni]]` entry names.
    pub cert_file: PathBuf,
    /// `key_file`: PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `min_version`: "1.2" (default) or "1.3".
    pub min_version: TlsVersion,
    /// `[[proxy.tls.sni]]`: more certificates, chosen by the server name the client asks for.
    pub sni: Vec<SniCertificate>,
    /// `http_redirect_listen`: a clear-text listener answering 308 to the https URL.
    pub http_redirect_listen: Option<SocketAddr>,
}

/// One `[[proxy.tls.sni]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SniCertificate {
    /// `server_names`: exact names, or `*.example.org` for one label under it;
    /// compared without case.
    pub server_names: Vec<String>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The oldest TLS version a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `[upstream_tls]`: TLS to the masters whose `url` is `https://`. Every key is
/// optional; the PEM files are read when the daemon starts (and by `check`), not here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamTlsConfig {
    /// `ca_file`: a PEM bundle of the CAs that sign the masters' certificates.
    /// Default (None): the system's roots (rustls-native-certs).
    pub ca_file: Option<PathBuf>,
    /// `server_name`: the name verified in the master's certificate and sent as SNI
    /// when the URL's host is an IP address (a host name in the URL is used as is).
    /// A backend's `tls_server_name` overrides it. Default: the URL's host.
    pub server_name: Option<String>,
    /// `cert_file` and `key_file`: a client certificate (chain, then its key) for
    /// masters that require one; both or neither (validated).
    pub client_cert: Option<ClientCertFiles>,
    /// `insecure_skip_verify`: no verification of the masters' certificates at all
    /// (any certificate, any name, expired). Default false; `check`, the start-up log
    /// and `/status` say so loudly when true.
    pub insecure_skip_verify: bool,
}

/// `[upstream_tls] cert_file` and `key_file`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCertFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}
