//! Header rules of the request path, as pure functions.
//!
//! Hop-by-hop headers (RFC 9110 section 7.6.1, plus those named in `Connection`) are
//! removed in both directions; `X-Forwarded-*` tell Jenkins how the client reached us,
//! so the URLs it builds point at the proxy. Everything else, `Host` and `Origin`
//! included, passes untouched.

use std::net::IpAddr;

use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Always hop-by-hop, whatever `Connection` says.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    hyper::header::PROXY_AUTHENTICATE,
    hyper::header::PROXY_AUTHORIZATION,
    hyper::header::TE,
    hyper::header::TRAILER,
    hyper::header::TRANSFER_ENCODING,
    hyper::header::UPGRADE,
];

/// Removes the hop-by-hop headers, and every header that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most heads have none: one pass over the few names present is cheaper than nine
    // hashed removals (this runs twice per request).
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        // Host is never hop-by-hop (RFC 9112 section 3.2): a client cannot strip it.
        if name != HOST {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP.iter() {
        headers.remove(name);
    }
}

/// How the client reached the proxy, for the `X-Forwarded-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct ClientOrigin {
    pub client_ip: IpAddr,
    /// The port the client connected to (used when Host names none... see `port`).
    pub listener_port: u16,
    /// The client spoke TLS to us: `https`, and 443 as the default port.
    pub tls: bool,
}

/// The `X-Forwarded-*` values of one request, computed once; added to the request
/// as it is sent (`Forwarded::set_on` for hyper's client; our own client writes them
/// straight into the head, without touching the header map).
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub for_chain: Option<HeaderValue>,
    pub proto: HeaderValue,
    /// The client's `Host`; None: `X-Forwarded-Host` is removed.
    pub host: Option<HeaderValue>,
    pub port: HeaderValue,
}

/// The header names [`Forwarded`] sets: a client's own values are replaced.
pub static FORWARDED_NAMES: [HeaderName; 4] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
];

/// The client appended to `X-Forwarded-For`, and `X-Forwarded-Proto`, `-Host` and
/// `-Port`. The port is the one in `Host` if it names one, else 80 or 443 (the client
/// used the scheme's default port); without a `Host`, the listener's port.
pub fn forwarded(headers: &HeaderMap, origin: ClientOrigin) -> Forwarded {
    let for_chain = match joined(headers, &X_FORWARDED_FOR) {
        Some(previous) => HeaderValue::from_str(&format!("{previous}, {}", origin.client_ip)).ok(),
        // The common case, without formatting machinery (it was 4% of a request).
        None => LAST_CLIENT.with(|last| last.value(origin.client_ip, ip_value)),
    };
    let (scheme, default_port) = if origin.tls {
        ("https", 443)
    } else {
        ("http", 80)
    };
    let host = headers.get(HOST).cloned();
    let port = match host.as_ref().and_then(|h| h.to_str().ok()) {
        Some(host) => host_port(host).unwrap_or(default_port),
        None => origin.listener_port,
    };
    Forwarded {
        for_chain,
        proto: HeaderValue::from_static(scheme),
        host,
        port: LAST_PORT
            .with(|last| last.value(port, |port| Some(HeaderValue::from(port))))
            .unwrap_or_else(|| HeaderValue::from(port)),
    }
}

thread_local! {
    /// The last client address and `X-Forwarded-Port` value written on this thread: a
    /// keep-alive connection's requests, and most of a site's, repeat them, and a
    /// shared copy costs no allocation, where a new value costs one.
    static LAST_CLIENT: LastValue<IpAddr> = const { LastValue::new() };
    static LAST_PORT: LastValue<u16> = const { LastValue::new() };
}

/// One key and its header value, remembered.
struct LastValue<K>(std::cell::RefCell<Option<(K, HeaderValue)>>);

impl<K: Copy + PartialEq> LastValue<K> {
    const fn new() -> Self {
        LastValue(std::cell::RefCell::new(None))
    }

    /// The value of `key`: the remembered one, or `make`'s (then remembered).
    fn value(&self, key: K, make: impl FnOnce(K) -> Option<HeaderValue>) -> Option<HeaderValue> {
        let mut last = self.0.borrow_mut();
        if let Some((known, value)) = last.as_ref() {
            if *known == key {
                return Some(value.clone());
            }
        }
        let value = make(key)?;
        *last = Some((key, value.clone()));
        Some(value)
    }
}

impl Forwarded {
    /// Sets the values on `headers` (replacing a client's own).
    pub fn set_on(&self, headers: &mut HeaderMap) {
        match &self.for_chain {
            Some(chain) => headers.insert(X_FORWARDED_FOR, chain.clone()),
            None => headers.remove(X_FORWARDED_FOR),
        };
        headers.insert(X_FORWARDED_PROTO, self.proto.clone());
        match &self.host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
            None => headers.remove(X_FORWARDED_HOST),
        };
        headers.insert(X_FORWARDED_PORT, self.port.clone());
    }

    /// The values as header fields, in `FORWARDED_NAMES` order (absent ones skipped).
    pub fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> + Clone {
        let values = [Some(&self.proto), self.host.as_ref(), Some(&self.port)];
        std::iter::once(self.for_chain.as_ref())
            .chain(values)
            .zip(FORWARDED_NAMES.iter())
            .filter_map(|(value, name)| value.map(|value| (name, value)))
    }
}

/// Appends the client to `X-Forwarded-For` and sets the other `X-Forwarded-*` (see
/// [`forwarded`]).
#[cfg(test)]
pub fn add_forwarded(headers: &mut HeaderMap, origin: ClientOrigin) {
    forwarded(headers, origin).set_on(headers);
}

/// `ip` as a header value; IPv4 written digit by digit.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).ok();
    };
    let mut text = [0u8; 15];
    let mut at = 0;
    for (index, octet) in v4.octets().into_iter().enumerate() {
        if index > 0 {
            text[at] = b'.';
            at += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for digit in &digits[skip..] {
            text[at] = b'0' + digit;
            at += 1;
        }
    }
    HeaderValue::from_bytes(&text[..at]).ok()
}

/// All values of a header joined with ", " (None if absent or not text).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// The port of a `Host` value (`name:port`, `1.2.3.4:port`, `[::1]:port`).
fn host_port(host: &str) -> Option<u16> {
    let after_ipv6 = host.rfind(']').map_or(host, |end| &host[end..]);
    let (_, port) = after_ipv6.rsplit_once(':')?;
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_value_is_that_of_its_own_key() {
        let last = LastValue::new();
        let made = std::cell::Cell::new(0);
        let make = |port: u16| {
            made.set(made.get() + 1);
            Some(HeaderValue::from(port))
        };
        assert_eq!(
            last.value(8080, make),
            Some(HeaderValue::from_static("8080"))
        );
        assert_eq!(
            last.value(8080, make),
            Some(HeaderValue::from_static("8080"))
        );
        assert_eq!(made.get(), 1, "made once for the same key");
        assert_eq!(last.value(443, make), Some(HeaderValue::from_static("443")));
        assert_eq!(
            last.value(8080, make),
            Some(HeaderValue::from_static("8080"))
        );
        assert_eq!(made.get(), 3);
    }

    #[test]
    fn ip_values_read_as_the_address_does() {
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.9.99.100",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = text.parse().expect("an address");
            assert_eq!(ip_value(ip).expect("a value"), text);
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn strips_standard_and_connection_named_headers() {
        let mut untouched = map(&[("host", "ci"), ("x-private", "kept")]);
        strip_hop_by_hop(&mut untouched);
        assert_eq!(untouched.len(), 2);

        let mut headers = map(&[
            ("connection", "close, X-Private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("origin", "http://ci.example.com"),
            ("cookie", "JSESSIONID=1"),
        ]);
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["origin", "cookie"]);
    }

    #[test]
    fn forwarded_headers_from_host_with_port() {
        let mut headers = map(&[
            ("host", "ci.example.com:8080"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        let origin = ClientOrigin {
            client_ip: "192.0.2.7".parse().expect("ip"),
            listener_port: 9999,
            tls: false,
        };
        add_forwarded(&mut headers, origin);
        assert_eq!(headers["x-forwarded-for"], "10.1.1.1, 192.0.2.7");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "ci.example.com:8080");
        assert_eq!(headers["x-forwarded-port"], "8080");
        assert_eq!(headers["host"], "ci.example.com:8080");
    }

    #[test]
    fn forwarded_port_defaults() {
        let origin = ClientOrigin {
            client_ip: "::1".parse().expect("ip"),
            listener_port: 8080,
            tls: false,
        };
        let mut headers = map(&[("host", "ci.example.com")]);
        add_forwarded(&mut headers, origin);
        assert_eq!(headers["x-forwarded-port"], "80");
        assert_eq!(headers["x-forwarded-for"], "::1");

        let mut headers = map(&[("host", "[::1]")]);
        add_forwarded(&mut headers, origin);
        assert_eq!(headers["x-forwarded-port"], "80");

        let mut headers = map(&[("host", "[::1]:8443")]);
        add_forwarded(&mut headers, origin);
        assert_eq!(headers["x-forwarded-port"], "8443");

        let mut headers = map(&[("x-forwarded-host", "spoofed")]);
        add_forwarded(&mut headers, origin);
        assert_eq!(headers["x-forwarded-port"], "8080");
        assert!(!headers.contains_key("x-forwarded-host"));
    }

    #[test]
    fn forwarded_over_tls() {
        let origin = ClientOrigin {
            client_ip: "192.0.2.7".parse().expect("ip"),
            listener_port: 8443,
            tls: true,
        };
        let mut headers = map(&[("host", "ci.example.com"), ("x-forwarded-proto", "http")]);
        add_forwarded(&mut headers, origin);
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-port"], "443");
        let mut headers = map(&[("host", "ci.example.com:8443")]);
        add_forwarded(&mut headers, origin);
        assert_eq!(headers["x-forwarded-port"], "8443");
    }
}
