//! `[[backend]]` tables -> [`BackendConfig`]: the masters, in order of preference.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;

use toml::Spanned;

use super::check_name;
use crate::config::errors::Source;
use crate::config::raw::RawBackend;
use crate::config::{
    BackendConfig, ConfigError, Standby, DEFAULT_BACKEND_MAX_CONNECTIONS,
    DEFAULT_BACKEND_MAX_CONNECTS,
};

const URL_EXAMPLE: &str = "e.g. \"http://10.0.0.11:8080\" or \"https://ci-a.example.com\"";

pub(super) fn backends(
    src: &Source<'_>,
    raw: &[Spanned<RawBackend>],
) -> Result<Vec<BackendConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(src.error_at_line(
            0,
            "backend",
            "no masters configured; add at least one [[backend]] with name and url, \
             e.g. name = \"master-a\" and url = \"http://10.0.0.11:8080\"",
        ));
    }
    // First occurrence of each name / endpoint: (index, line), to point back at it.
    let mut names: HashMap<String, (usize, usize)> = HashMap::new();
    let mut endpoints: HashMap<(String, u16), (usize, usize)> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, table) in raw.iter().enumerate() {
        let (backend, name_span, url_span) = backend(src, i, table)?;
        if let Some((first, line)) = names.get(&backend.name) {
            return Err(src.error(
                name_span,
                format!("backend[{i}].name"),
                format!(
                    "duplicate name {:?} (first used by backend[{first}] on line {line}); give each master a unique name",
                    backend.name
                ),
            ));
        }
        if let Some((first, line)) = endpoints.get(&endpoint_key(&backend)) {
            return Err(src.error(
                url_span,
                format!("backend[{i}].url"),
                format!(
                    "{} is already used by backend[{first}] (line {line}); each [[backend]] must be a different master (host:port)",
                    backend.url
                ),
            ));
        }
        names.insert(backend.name.clone(), (i, src.line(&name_span)));
        endpoints.insert(endpoint_key(&backend), (i, src.line(&url_span)));
        out.push(backend);
    }
    Ok(out)
}

/// One `[[backend]]`, plus the spans of its name and url for the duplicate checks.
fn backend(
    src: &Source<'_>,
    index: usize,
    table: &Spanned<RawBackend>,
) -> Result<(BackendConfig, Range<usize>, Range<usize>), ConfigError> {
    let key = |field: &str| format!("backend[{index}].{field}");
    let missing = |field: &str| {
        src.error(
            table.span(),
            key(field),
            "missing required key; every [[backend]] needs name (e.g. \"master-a\") and url (e.g. \"http://10.0.0.11:8080\")",
        )
    };
    let raw = table.get_ref();
    let name = raw.name.as_ref().ok_or_else(|| missing("name"))?;
    check_name(name.get_ref(), "master-a")
        .map_err(|message| src.error(name.span(), key("name"), message))?;
    let url = raw.url.as_ref().ok_or_else(|| missing("url"))?;
    let (tls, host, port) = parse_backend_url(url.get_ref())
        .map_err(|message| src.error(url.span(), key("url"), message))?;
    let tls_server_name = tls_server_name(src, &key("tls_server_name"), raw, tls)?;
    let mut backend = BackendConfig {
        name: name.get_ref().clone(),
        url: String::new(),
        tls,
        tls_server_name,
        host,
        port,
        standby: Standby::None,
        start_command: None,
        fence_command: None,
        max_connections: super::bounded(
            src,
            &key("max_connections"),
            &raw.max_connections,
            DEFAULT_BACKEND_MAX_CONNECTIONS,
            1,
            1_000_000,
        )?,
        max_connects: DEFAULT_BACKEND_MAX_CONNECTS,
    };
    backend.max_connects = super::bounded(
        src,
        &key("max_connects"),
        &raw.max_connects,
        DEFAULT_BACKEND_MAX_CONNECTS.min(backend.max_connections),
        1,
        backend.max_connections,
    )?;
    let scheme = if tls { "https" } else { "http" };
    backend.url = format!("{scheme}://{}", backend.authority());
    super::promotion::backend_promotion(src, index, raw, &mut backend)?;
    Ok((backend, name.span(), url.span()))
}

/// `tls_server_name`: a DNS name or IP address, and only for an `https` master.
fn tls_server_name(
    src: &Source<'_>,
    key: &str,
    raw: &RawBackend,
    tls: bool,
) -> Result<Option<String>, ConfigError> {
    let Some(name) = &raw.tls_server_name else {
        return Ok(None);
    };
    if !tls {
        return Err(src.error(
            name.span(),
            key,
            "only applies to an https:// url; remove it, or write the url as https://host:port",
        ));
    }
    super::upstream_tls::check_server_name(name.get_ref())
        .map_err(|message| src.error(name.span(), key, message))?;
    Ok(Some(name.get_ref().clone()))
}

/// `http(s)://host[:port][/]` -> (https, host without brackets, port). The message
/// on error never repeats the URL: it might carry a password.
fn parse_backend_url(text: &str) -> Result<(bool, String, u16), String> {
    // The URI parser silently drops a fragment; refuse it rather than ignore it.
    if text.contains('#') {
        return Err(format!(
            "must not contain a fragment ('#'); write http://host:port, {URL_EXAMPLE}"
        ));
    }
    let uri: hyper::Uri = text
        .parse()
        .map_err(|e| format!("not a valid URL ({e}); write http://host:port, {URL_EXAMPLE}"))?;
    let tls = check_scheme(uri.scheme_str())?;
    let authority = uri.authority().map_or("", |a| a.as_str());
    if authority.contains('@') {
        return Err("must not contain user:password@; remove it (clients' own credentials are forwarded unchanged)".to_string());
    }
    let host = uri.host().unwrap_or("");
    if host.is_empty() {
        return Err(format!(
            "missing host; write http://host:port, {URL_EXAMPLE}"
        ));
    }
    // `port_u16()` is None both for "no port" and for an unparsable one ("h:", "h:99999").
    let port = match uri.port_u16() {
        Some(0) => {
            return Err("port 0 cannot be connected to; use the master's HTTP port".to_string())
        }
        Some(port) => port,
        None if authority.len() > host.len() => {
            return Err(format!(
                "invalid port in {authority:?}; use a number from 1 to 65535"
            ))
        }
        None if tls => 443,
        None => 80,
    };
    if uri.path() != "/" {
        return Err(format!(
            "must not have a path ({:?}): the request path is forwarded unchanged; set Jenkins' --prefix on both masters and use it in requests instead",
            uri.path()
        ));
    }
    if uri.query().is_some() {
        return Err(format!(
            "must not have a query string; write http://host:port, {URL_EXAMPLE}"
        ));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok((tls, bare.to_string(), port))
}

/// Whether the scheme is `https` (`http` and `https` only, any case).
fn check_scheme(scheme: Option<&str>) -> Result<bool, String> {
    let problem = match scheme.map(str::to_ascii_lowercase).as_deref() {
        Some("http") => return Ok(false),
        Some("https") => return Ok(true),
        Some(other) => format!("unsupported scheme {other:?}; only http and https are supported"),
        None => "missing scheme; write http://host:port".to_string(),
    };
    Err(format!("{problem}, {URL_EXAMPLE}"))
}

/// What makes two backends the same master: the IP in canonical form (so `[::1]`
/// equals `[0::1]`) or the host name ignoring case, and the port.
fn endpoint_key(backend: &BackendConfig) -> (String, u16) {
    let host = match backend.host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => backend.host.to_ascii_lowercase(),
    };
    (host, backend.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_backend_url_accepts_plain_http_and_defaults_the_port() {
        let ok = |url: &str| parse_backend_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let plain = |host: &str, port| (false, host.to_string(), port);
        assert_eq!(ok("http://10.0.0.11:8080"), plain("10.0.0.11", 8080));
        assert_eq!(ok("http://jenkins-a/"), plain("jenkins-a", 80));
        assert_eq!(ok("HTTP://Jenkins-A:81"), plain("Jenkins-A", 81));
        assert_eq!(ok("http://[fe80::1]:8080"), plain("fe80::1", 8080));
        assert_eq!(ok("https://ci-a"), (true, "ci-a".to_string(), 443));
        assert_eq!(
            ok("HTTPS://10.0.0.1:8443/"),
            (true, "10.0.0.1".to_string(), 8443)
        );
    }

    #[test]
    fn parse_backend_url_rejects_everything_else() {
        let err = |url: &str| parse_backend_url(url).expect_err(url);
        assert!(err("ftp://a").contains("only http and https"));
        assert!(err("a:8080").contains("missing scheme"));
        assert!(err("http://a:").contains("invalid port"));
        assert!(err("http://a:70000").contains("invalid port"));
        assert!(err("http://a/x").contains("--prefix"));
        assert!(err("http://a?x").contains("query"));
        assert!(err("http://a#x").contains("fragment"));
        assert!(!err("http://u:hunter2@a").contains("hunter2"));
        assert!(!err("http://u:hunter2@a b").contains("hunter2"));
    }

    #[test]
    fn endpoint_key_canonicalises_ips_and_case() {
        let backend = |host: &str| BackendConfig {
            name: "n".to_string(),
            url: String::new(),
            tls: false,
            tls_server_name: None,
            host: host.to_string(),
            port: 80,
            standby: Standby::None,
            start_command: None,
            fence_command: None,
            max_connections: DEFAULT_BACKEND_MAX_CONNECTIONS,
            max_connects: DEFAULT_BACKEND_MAX_CONNECTS,
        };
        assert_eq!(
            endpoint_key(&backend("::1")),
            endpoint_key(&backend("0:0::1"))
        );
        assert_eq!(
            endpoint_key(&backend("Jenkins")),
            endpoint_key(&backend("jenkins"))
        );
        assert_ne!(endpoint_key(&backend("a")), endpoint_key(&backend("b")));
    }
}
