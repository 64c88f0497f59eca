//! `[proxy.tls]` and `[admin.tls]`: the files and names of the certificates the
//! listeners present. Only the shape is checked here; the `tls` module reads the files (at start-up, on
//! reload and in `check`) and names the file in its errors.

use std::path::PathBuf;

use toml::Spanned;

use super::super::errors::Source;
use super::super::raw::{Field, RawServerTls, RawSniCertificate};
use super::super::{ConfigError, ServerTlsConfig, SniCertificate, TlsVersion};

/// `[proxy.tls]`: every key.
pub(super) fn server_tls(
    src: &Source<'_>,
    raw: &Spanned<RawServerTls>,
) -> Result<ServerTlsConfig, ConfigError> {
    let header = raw.span();
    let raw = raw.get_ref();
    let mut sni = Vec::with_capacity(raw.sni.len());
    for entry in &raw.sni {
        sni.push(sni_certificate(src, entry)?);
    }
    Ok(ServerTlsConfig {
        cert_file: path(src, header.clone(), "proxy.tls.cert_file", &raw.cert_file)?,
        key_file: path(src, header, "proxy.tls.key_file", &raw.key_file)?,
        min_version: min_version(src, &raw.min_version)?,
        sni,
        http_redirect_listen: match &raw.http_redirect_listen {
            None => None,
            Some(field) => Some(field.get_ref().parse().map_err(|_| {
                src.error(
                    field.span(),
                    "proxy.tls.http_redirect_listen",
                    format!(
                        "invalid address {:?}: use IP:port, e.g. \"0.0.0.0:80\" (host names are \
                         not resolved), or remove the key",
                        field.get_ref()
                    ),
                )
            })?),
        },
    })
}

/// `[admin.tls]`: one certificate (the admin API is reached by one name), no
/// redirect listener.
pub(super) fn admin_tls(
    src: &Source<'_>,
    raw: &Spanned<RawServerTls>,
) -> Result<ServerTlsConfig, ConfigError> {
    let header = raw.span();
    let raw = raw.get_ref();
    if let Some(entry) = raw.sni.first() {
        return Err(src.error(
            entry.span(),
            "admin.tls.sni",
            "the admin API serves one certificate: remove [[admin.tls.sni]] and give the \
             certificate its names",
        ));
    }
    if let Some(field) = &raw.http_redirect_listen {
        return Err(src.error(
            field.span(),
            "admin.tls.http_redirect_listen",
            "is for [proxy.tls] only: remove it (scripts and the CLI use https:// directly)",
        ));
    }
    Ok(ServerTlsConfig {
        cert_file: path(src, header.clone(), "admin.tls.cert_file", &raw.cert_file)?,
        key_file: path(src, header, "admin.tls.key_file", &raw.key_file)?,
        min_version: min_version(src, &raw.min_version)?,
        sni: Vec::new(),
        http_redirect_listen: None,
    })
}

fn sni_certificate(
    src: &Source<'_>,
    entry: &Spanned<RawSniCertificate>,
) -> Result<SniCertificate, ConfigError> {
    let header = entry.span();
    let raw = entry.get_ref();
    let key = "proxy.tls.sni.server_names";
    let Some(names) = &raw.server_names else {
        return Err(src.error(
            header,
            key,
            "missing required key; each [[proxy.tls.sni]] needs server_names, e.g. \
             [\"ci.example.org\"], with cert_file and key_file",
        ));
    };
    if names.get_ref().is_empty() {
        return Err(src.error(names.span(), key, "is empty; name at least one server"));
    }
    let mut server_names = Vec::with_capacity(names.get_ref().len());
    for name in names.get_ref() {
        let name = name.trim().to_ascii_lowercase();
        if let Err(problem) = check_server_name(&name) {
            return Err(src.error(names.span(), key, problem));
        }
        server_names.push(name);
    }
    Ok(SniCertificate {
        server_names,
        cert_file: path(
            src,
            header.clone(),
            "proxy.tls.sni.cert_file",
            &raw.cert_file,
        )?,
        key_file: path(src, header, "proxy.tls.sni.key_file", &raw.key_file)?,
    })
}

/// A DNS name, or `*.` and a DNS name.
fn check_server_name(name: &str) -> Result<(), String> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(valid_label) {
        return Err(format!(
            "{name:?} is not a server name; write a DNS name such as \"ci.example.org\", or \
             \"*.example.org\" for every name one label under it"
        ));
    }
    Ok(())
}

fn path(
    src: &Source<'_>,
    header: std::ops::Range<usize>,
    key: &str,
    field: &Field<String>,
) -> Result<PathBuf, ConfigError> {
    match field {
        None => Err(src.error(
            header,
            key,
            format!(
                "missing required key; [{}] needs cert_file and key_file (PEM files)",
                key.rsplit_once('.').map_or(key, |(table, _)| table)
            ),
        )),
        Some(path) if path.get_ref().trim().is_empty() => {
            Err(src.error(path.span(), key, "is empty: give the path of a PEM file"))
        }
        Some(path) => Ok(PathBuf::from(path.get_ref())),
    }
}

fn min_version(src: &Source<'_>, field: &Field<String>) -> Result<TlsVersion, ConfigError> {
    match field.as_ref().map(|value| value.get_ref().trim()) {
        None | Some("1.2") => Ok(TlsVersion::Tls12),
        Some("1.3") => Ok(TlsVersion::Tls13),
        Some(other) => Err(src.error(
            field.as_ref().map_or(0..0, Spanned::span),
            "proxy.tls.min_version",
            format!("{other:?} is not a TLS version we speak; write \"1.2\" or \"1.3\""),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::check_server_name;

    #[test]
    fn server_names() {
        for good in [
            "ci.example.org",
            "*.example.org",
            "localhost",
            "a-b.c_d.org",
        ] {
            assert!(check_server_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "*.",
            "a..b",
            "*",
            "ci.example.org/",
            "a b",
            "*.*.example.org",
        ] {
            assert!(check_server_name(bad).is_err(), "{bad}");
        }
    }
}
