//! `[[tcp]]` tables -> [`TcpConfig`]: raw TCP listeners (the inbound agent port)
//! forwarded to `<host of the active master>:backend_port`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::ops::Range;

use toml::Spanned;

use super::{bounded, check_name, listen_addr, optional_duration, Listener};
use crate::config::errors::Source;
use crate::config::raw::RawTcp;
use crate::config::{ConfigError, TcpConfig};

const LISTEN_EXAMPLE: &str = "0.0.0.0:50000";
const HOST_EXAMPLE: &str = "e.g. \"ci.example.com\"";

/// Every `[[tcp]]` in file order, and each one's `listen` for the clash check.
pub(super) fn listeners(
    src: &Source<'_>,
    raw: &[Spanned<RawTcp>],
) -> Result<(Vec<TcpConfig>, Vec<Listener>), ConfigError> {
    // First use of each name: (index, line), to point back at it.
    let mut names: HashMap<String, (usize, usize)> = HashMap::new();
    let mut configs = Vec::with_capacity(raw.len());
    let mut listens = Vec::with_capacity(raw.len());
    for (index, table) in raw.iter().enumerate() {
        let (config, listen, name_span) = listener(src, index, table)?;
        if let Some((first, line)) = names.get(&config.name) {
            return Err(src.error(
                name_span,
                format!("tcp[{index}].name"),
                format!(
                    "duplicate name {:?} (first used by tcp[{first}] on line {line}); give each [[tcp]] listener a unique name",
                    config.name
                ),
            ));
        }
        names.insert(config.name.clone(), (index, src.line(&name_span)));
        configs.push(config);
        listens.push(listen);
    }
    Ok((configs, listens))
}

/// One `[[tcp]]`, its listen and the span of its name (for the duplicate check);
/// missing required keys point at its header.
fn listener(
    src: &Source<'_>,
    index: usize,
    table: &Spanned<RawTcp>,
) -> Result<(TcpConfig, Listener, Range<usize>), ConfigError> {
    let key = |field: &str| format!("tcp[{index}].{field}");
    let missing = |field: &str| {
        src.error(
            table.span(),
            key(field),
            "missing required key; every [[tcp]] needs name (e.g. \"agents\"), \
             listen (e.g. \"0.0.0.0:50000\") and backend_port (e.g. 50000)",
        )
    };
    let raw = table.get_ref();
    let name = raw.name.as_ref().ok_or_else(|| missing("name"))?;
    check_name(name.get_ref(), "agents")
        .map_err(|message| src.error(name.span(), key("name"), message))?;
    if raw.listen.is_none() {
        return Err(missing("listen"));
    }
    let listen = listen_addr(
        src,
        &key("listen"),
        table.span(),
        &raw.listen,
        LISTEN_EXAMPLE,
    )?;
    let backend_port = raw
        .backend_port
        .as_ref()
        .ok_or_else(|| missing("backend_port"))?;
    let backend_port = port(backend_port.get_ref(), BACKEND_PORT_ZERO)
        .map_err(|message| src.error(backend_port.span(), key("backend_port"), message))?;
    let advertise_host = match &raw.advertise_host {
        None => None,
        Some(host) => {
            check_advertise_host(host.get_ref())
                .map_err(|message| src.error(host.span(), key("advertise_host"), message))?;
            Some(host.get_ref().clone())
        }
    };
    let advertise_port = match &raw.advertise_port {
        None => None,
        Some(field) => Some(
            port(field.get_ref(), ADVERTISE_PORT_ZERO)
                .map_err(|message| src.error(field.span(), key("advertise_port"), message))?,
        ),
    };
    let config = TcpConfig {
        name: name.get_ref().clone(),
        listen: listen.addr,
        backend_port,
        advertise_host,
        advertise_port,
        idle_timeout: optional_duration(
            src,
            &key("idle_timeout"),
            &raw.idle_timeout,
            Some(crate::config::DEFAULT_TCP_IDLE_TIMEOUT),
        )?,
        max_connections: bounded(
            src,
            &key("max_connections"),
            &raw.max_connections,
            crate::config::DEFAULT_TCP_MAX_CONNECTIONS,
            1,
            1_000_000,
        )?,
    };
    Ok((config, listen, name.span()))
}

const BACKEND_PORT_ZERO: &str = "port 0 cannot be connected to; use the fixed TCP port of \
    the masters' inbound agent listener (Manage Jenkins > Security > Agents: \
    \"TCP port for inbound agents\" = Fixed), e.g. 50000";
const ADVERTISE_PORT_ZERO: &str = "agents cannot dial port 0; leave advertise_port out to \
    advertise the listener's own port";

/// A port number, 1 to 65535; `zero` is the advice for 0.
fn port(value: &i64, zero: &str) -> Result<u16, String> {
    match u16::try_from(*value) {
        Ok(0) => Err(zero.to_string()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!(
            "{value} is not a port number; use a number from 1 to 65535"
        )),
    }
}

/// What agents are told to dial goes into a header as is: a bare host name or IP
/// address, nothing around it.
fn check_advertise_host(host: &str) -> Result<(), String> {
    if host.trim().is_empty() {
        return Err(format!(
            "must not be empty; leave advertise_host out to tell agents the host they \
             reached the proxy by, or write a host name, {HOST_EXAMPLE}"
        ));
    }
    if host.contains("://") {
        return Err(format!(
            "{host:?} has a scheme; write only the host name or IP address agents should dial, {HOST_EXAMPLE}"
        ));
    }
    if host.contains('/') {
        return Err(format!(
            "{host:?} contains '/'; write only the host name or IP address, without a path, {HOST_EXAMPLE}"
        ));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if bracketed.is_some_and(|inner| inner.parse::<Ipv6Addr>().is_ok()) {
        return Err(format!(
            "{host:?}: write an IPv6 address without brackets, e.g. \"2001:db8::1\""
        ));
    }
    if let Some((_, port)) = host.rsplit_once(':') {
        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{host:?} has a port; write only the host here and the port as advertise_port = {port}"
            ));
        }
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    match host.chars().find(|&c| !allowed(c)) {
        Some(bad) => Err(format!(
            "{host:?} contains {bad:?}; write a host name (letters, digits, '.' and '-') or an IP address, {HOST_EXAMPLE}"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_accepts_1_to_65535_only() {
        assert_eq!(port(&1, "zero"), Ok(1));
        assert_eq!(port(&65535, "zero"), Ok(65535));
        assert_eq!(port(&0, "zero"), Err("zero".to_string()));
        assert!(port(&65536, "zero")
            .unwrap_err()
            .contains("from 1 to 65535"));
        assert!(port(&-1, "zero").unwrap_err().contains("-1 is not a port"));
    }

    #[test]
    fn advertise_host_accepts_names_and_bare_ips() {
        for host in [
            "ci.example.com",
            "jenkins",
            "10.0.0.10",
            "2001:db8::1",
            "a_b-c.",
        ] {
            assert_eq!(check_advertise_host(host), Ok(()), "{host}");
        }
    }

    #[test]
    fn advertise_host_rejects_anything_around_the_host() {
        let err = |host: &str| check_advertise_host(host).expect_err(host);
        assert!(err("").contains("must not be empty"));
        assert!(err("  ").contains("must not be empty"));
        assert!(err("https://ci.example.com").contains("has a scheme"));
        assert!(err("ci.example.com/jenkins").contains("without a path"));
        assert!(err("ci.example.com:50000").contains("advertise_port = 50000"));
        assert!(err("[2001:db8::1]:50000").contains("advertise_port = 50000"));
        assert!(err("[2001:db8::1]").contains("without brackets"));
        assert!(err("ci example").contains("' '"));
        assert!(err("ci.example.com:").contains("':'"));
    }
}
