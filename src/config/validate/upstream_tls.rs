//! `[upstream_tls]` -> [`UpstreamTlsConfig`]: how the `https://` masters are verified.
//! Only the shape is checked here (paths, names, pairs); the PEM files are read when
//! the daemon builds its runtime settings, and by `check`.

use std::path::PathBuf;

use rustls_pki_types::ServerName;

use crate::config::errors::Source;
use crate::config::raw::{Field, RawUpstreamTls};
use crate::config::{ClientCertFiles, ConfigError, UpstreamTlsConfig};

pub(super) fn upstream_tls(
    src: &Source<'_>,
    raw: &Field<RawUpstreamTls>,
) -> Result<UpstreamTlsConfig, ConfigError> {
    let Some(table) = raw else {
        return Ok(UpstreamTlsConfig::default());
    };
    let raw = table.get_ref();
    let server_name = match &raw.server_name {
        Some(name) => {
            check_server_name(name.get_ref())
                .map_err(|message| src.error(name.span(), "upstream_tls.server_name", message))?;
            Some(name.get_ref().clone())
        }
        None => None,
    };
    let cert_file = path(src, "upstream_tls.cert_file", &raw.cert_file)?;
    let key_file = path(src, "upstream_tls.key_file", &raw.key_file)?;
    let client_cert = match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Some(ClientCertFiles {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(src.error(
                table.span(),
                "upstream_tls.key_file",
                "missing: cert_file is set, so give the client certificate's private key too (or remove cert_file)",
            ))
        }
        (None, Some(_)) => {
            return Err(src.error(
                table.span(),
                "upstream_tls.cert_file",
                "missing: key_file is set, so give the client certificate too (or remove key_file)",
            ))
        }
    };
    Ok(UpstreamTlsConfig {
        ca_file: path(src, "upstream_tls.ca_file", &raw.ca_file)?,
        server_name,
        client_cert,
        insecure_skip_verify: raw
            .insecure_skip_verify
            .as_ref()
            .is_some_and(|flag| *flag.get_ref()),
    })
}

/// A non-empty path.
fn path(
    src: &Source<'_>,
    key: &str,
    field: &Field<String>,
) -> Result<Option<PathBuf>, ConfigError> {
    match field {
        Some(path) if path.get_ref().trim().is_empty() => Err(src.error(
            path.span(),
            key,
            "is empty: give the path of a PEM file, or remove the key",
        )),
        Some(path) => Ok(Some(PathBuf::from(path.get_ref()))),
        None => Ok(None),
    }
}

/// A name a certificate can be verified for: a DNS name or an IP address.
pub(super) fn check_server_name(name: &str) -> Result<(), String> {
    match ServerName::try_from(name) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "{name:?} is neither a DNS name nor an IP address; write the name the master's certificate carries, e.g. \"ci-a.example.com\""
        )),
    }
}
