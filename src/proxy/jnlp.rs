//! Rewrites the headers through which Jenkins tells inbound agents where its TCP port
//! is, so agents dial the proxy's `[[tcp]]` listener rather than a master directly.
//! That is what makes TCP agents follow a failover without per-agent `-tunnel`.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// Headers that carry a master's TCP port (current and legacy names).
const PORT_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("x-jenkins-jnlp-port"),
    HeaderName::from_static("x-hudson-jnlp-port"),
    HeaderName::from_static("x-jenkins-cli-port"),
    HeaderName::from_static("x-jenkins-cli2-port"),
];
const HOST_HEADER: HeaderName = HeaderName::from_static("x-jenkins-jnlp-host");

/// One `[[tcp]]` listener, as agents should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    /// The master's port this listener forwards to.
    pub backend_port: u16,
    /// The port agents should dial (the listener's, unless `advertise_port`).
    pub port: u16,
    /// The host agents should dial; None: the host the client used (its Host header).
    pub host: Option<String>,
}

/// Rewrites port headers that name a port one of `listeners` fronts, and then the host
/// header too. `request_host` is the client's Host header (port stripped here).
pub fn rewrite(headers: &mut HeaderMap, listeners: &[Advertised], request_host: Option<&str>) {
    let mut rewritten: Option<&Advertised> = None;
    for name in &PORT_HEADERS {
        let Some(port) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u16>().ok())
        else {
            continue;
        };
        if let Some(listener) = listeners.iter().find(|l| l.backend_port == port) {
            headers.insert(name.clone(), HeaderValue::from(listener.port));
            rewritten = rewritten.or(Some(listener));
        }
    }
    let Some(listener) = rewritten else {
        return;
    };
    let host = listener
        .host
        .as_deref()
        .or_else(|| request_host.map(strip_port));
    match host.and_then(|h| HeaderValue::from_str(h).ok()) {
        Some(host) => {
            headers.insert(HOST_HEADER, host);
        }
        // No host to advertise: let agents use the host of the URL they called.
        None => {
            headers.remove(HOST_HEADER);
        }
    }
}

/// `name:port` -> `name`, `[::1]:port` -> `::1`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents(host: Option<&str>) -> Vec<Advertised> {
        vec![Advertised {
            backend_port: 50000,
            port: 50001,
            host: host.map(str::to_owned),
        }]
    }

    fn master_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-jenkins-jnlp-port", HeaderValue::from_static("50000"));
        headers.insert("x-hudson-jnlp-port", HeaderValue::from_static("50000"));
        headers.insert("x-jenkins-cli-port", HeaderValue::from_static("50000"));
        headers.insert(
            "x-jenkins-jnlp-host",
            HeaderValue::from_static("master-a.internal"),
        );
        headers.insert(
            "x-jenkins-agent-protocols",
            HeaderValue::from_static("JNLP4-connect"),
        );
        headers
    }

    #[test]
    fn rewrites_ports_and_host_to_the_proxy() {
        let mut headers = master_headers();
        rewrite(&mut headers, &agents(None), Some("ci.example.com:8080"));
        assert_eq!(headers["x-jenkins-jnlp-port"], "50001");
        assert_eq!(headers["x-hudson-jnlp-port"], "50001");
        assert_eq!(headers["x-jenkins-cli-port"], "50001");
        assert_eq!(headers["x-jenkins-jnlp-host"], "ci.example.com");
        assert_eq!(headers["x-jenkins-agent-protocols"], "JNLP4-connect");
    }

    #[test]
    fn advertise_host_wins_over_the_request_host() {
        let mut headers = master_headers();
        rewrite(
            &mut headers,
            &agents(Some("agents.example.com")),
            Some("[::1]:8080"),
        );
        assert_eq!(headers["x-jenkins-jnlp-host"], "agents.example.com");
        let mut headers = master_headers();
        rewrite(&mut headers, &agents(None), Some("[::1]:8080"));
        assert_eq!(headers["x-jenkins-jnlp-host"], "::1");
    }

    #[test]
    fn ports_no_listener_fronts_are_left_alone() {
        let mut headers = master_headers();
        headers.insert("x-jenkins-jnlp-port", HeaderValue::from_static("40000"));
        headers.remove("x-hudson-jnlp-port");
        headers.remove("x-jenkins-cli-port");
        rewrite(&mut headers, &agents(None), Some("ci.example.com"));
        assert_eq!(headers["x-jenkins-jnlp-port"], "40000");
        assert_eq!(headers["x-jenkins-jnlp-host"], "master-a.internal");
    }
}
