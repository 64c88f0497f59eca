//! The expiry gauges of the certificates the listeners serve (`[proxy.tls]`,
//! `[admin.tls]`).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;

use super::metrics::gauge;
use crate::tls::ServedCertificate;

/// The expiry of each certificate the listeners serve, with its listener.
#[derive(Debug)]
pub(super) struct CertificateGauges(Vec<(&'static str, ServedCertificate)>);

impl CertificateGauges {
    /// None without certificates: no empty families.
    pub(super) fn of(
        certificates: Vec<(&'static str, ServedCertificate)>,
    ) -> Option<Box<dyn Collector>> {
        (!certificates.is_empty())
            .then(|| Box::new(CertificateGauges(certificates)) as Box<dyn Collector>)
    }
}

impl Collector for CertificateGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let now = std::time::SystemTime::now();
        let labels = |(listener, served): &(&'static str, ServedCertificate)| {
            [
                ("listener", (*listener).to_owned()),
                ("cert_file", served.cert_file.display().to_string()),
                ("subject", served.info.subject.clone()),
            ]
        };
        gauge(
            &mut encoder,
            ("tls_certificate_not_after_timestamp", Some(&Unit::Seconds)),
            "When the certificate expires (Unix time), per listener and certificate file.",
            self.0.iter().map(|entry| {
                let not_after = entry
                    .1
                    .info
                    .not_after
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs());
                (labels(entry), not_after as f64)
            }),
        )?;
        gauge(
            &mut encoder,
            ("tls_certificate_days_left", None),
            "Whole days until the certificate expires (negative once expired).",
            self.0
                .iter()
                .map(|entry| (labels(entry), entry.1.info.days_left(now))),
        )
    }
}
