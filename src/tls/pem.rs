//! Reading the PEM files the config names: certificate chains, private keys and CA
//! bundles. Each error names the file and says what to do about it.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::sys::small_file;

/// Larger than any sane chain or key, and than the system's CA bundle (~220 KB).
const MAX_PEM_BYTES: u64 = 4 << 20;

/// A PEM file that cannot be used: the file and why.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{}: cannot read it: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: small_file::SmallFileError,
    },
    #[error("{}: not valid PEM ({detail}); expected -----BEGIN {what}----- sections", .path.display())]
    Syntax {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("{}: no {what} in it; expected a -----BEGIN {what}----- section", .path.display())]
    Empty { path: PathBuf, what: &'static str },
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    small_file::read(path, MAX_PEM_BYTES).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in `path`, in file order (a chain: the leaf first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| PemError::Syntax {
            path: path.to_owned(),
            what: "CERTIFICATE",
            detail: error.to_string(),
        })?;
    if chain.is_empty() {
        return Err(PemError::Empty {
            path: path.to_owned(),
            what: "CERTIFICATE",
        });
    }
    Ok(chain)
}

/// The first private key in `path`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::Empty {
            path: path.to_owned(),
            what: "PRIVATE KEY",
        },
        other => PemError::Syntax {
            path: path.to_owned(),
            what: "PRIVATE KEY",
            detail: other.to_string(),
        },
    })
}
