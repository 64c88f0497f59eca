//! What an operator wants to know about a certificate: its subject, names, serial and
//! validity. Read from the DER with x509-parser (rustls does not expose them).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The facts of one certificate, for `check`, `/status`, metrics and reload errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject's distinguished name, as `CN=ci.example.com, O=...`.
    pub subject: String,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub names: Vec<String>,
    /// The serial number, hexadecimal with colons.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// A certificate x509-parser cannot read (rustls would refuse it too).
#[derive(Debug, thiserror::Error)]
#[error("not a valid X.509 certificate: {0}")]
pub struct InfoError(String);

impl CertificateInfo {
    pub fn of(certificate: &CertificateDer<'_>) -> Result<CertificateInfo, InfoError> {
        let (_, parsed) = X509Certificate::from_der(certificate.as_ref())
            .map_err(|error| InfoError(error.to_string()))?;
        let names = match parsed.subject_alternative_name() {
            Ok(Some(extension)) => extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => ip_text(bytes),
                    _ => None,
                })
                .collect(),
            Ok(None) | Err(_) => Vec::new(),
        };
        let validity = parsed.validity();
        Ok(CertificateInfo {
            subject: parsed.subject().to_string(),
            names,
            serial: parsed.raw_serial_as_string(),
            not_before: at(validity.not_before.timestamp()),
            not_after: at(validity.not_after.timestamp()),
        })
    }

    /// Whole days until `not_after` from `now`; negative once expired.
    pub fn days_left(&self, now: SystemTime) -> i64 {
        let seconds = match self.not_after.duration_since(now) {
            Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
        };
        seconds.div_euclid(86_400)
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.not_after < now
    }

    pub fn is_not_yet_valid(&self, now: SystemTime) -> bool {
        self.not_before > now
    }

    /// `not_after` as RFC 3339 (UTC, seconds).
    pub fn not_after_text(&self) -> String {
        humantime::format_rfc3339_seconds(self.not_after).to_string()
    }
}

fn at(timestamp: i64) -> SystemTime {
    match u64::try_from(timestamp) {
        Ok(seconds) => UNIX_EPOCH + Duration::from_secs(seconds),
        Err(_) => UNIX_EPOCH - Duration::from_secs(timestamp.unsigned_abs()),
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|octets| std::net::Ipv4Addr::from(octets).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|octets| std::net::Ipv6Addr::from(octets).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_left_rounds_down_and_goes_negative() {
        let info = CertificateInfo {
            subject: String::new(),
            names: Vec::new(),
            serial: String::new(),
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH + Duration::from_secs(10 * 86_400),
        };
        assert_eq!(info.days_left(UNIX_EPOCH), 10);
        assert_eq!(info.days_left(UNIX_EPOCH + Duration::from_secs(86_401)), 8);
        assert_eq!(
            info.days_left(UNIX_EPOCH + Duration::from_secs(11 * 86_400)),
            -1
        );
        assert!(info.is_expired(UNIX_EPOCH + Duration::from_secs(11 * 86_400)));
        assert!(!info.is_expired(UNIX_EPOCH));
    }
}
