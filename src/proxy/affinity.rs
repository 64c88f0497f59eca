//! Active-active mode on the request path: which replica a request goes to (the one
//! its cookie or its CLI call names, else the least loaded: see
//! `crate::control::placement`), counted in that replica's requests in flight until
//! its response head arrives; and the cookie that keeps a session on the replica
//! that answered. In active-passive mode a request goes to the active master and
//! nothing here is counted or set.
//!
//! The cookie: `<pool.cookie_name>=<the replica's token>; Path=/; HttpOnly;
//! SameSite=Lax` (and `Secure` when the client came over TLS), set on a response
//! whose request carried no cookie naming the replica that answered it (none, one
//! naming another replica, or one naming no replica of the pool).

use std::sync::Arc;

use hyper::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};
use hyper::{Request, Response};

use super::exchange::Exchange;
use super::{ProxyBody, ProxyContext, ProxySettings};
use crate::control::placement::{parse_token, token, token_text, Affinity};
use crate::control::routing::{InFlight, Master, Snapshot};
use crate::upstream::UpstreamBody;

/// The master to send `request` to now, or None when there is none (hold or 503).
/// Active-active: placed by the rule, counted, and held in `in_flight` (replacing the
/// request's previous placement, if any) until the request is done waiting.
pub(super) fn target(
    ctx: &ProxyContext,
    snapshot: &Snapshot,
    request: &Request<UpstreamBody>,
    exchange: &Exchange,
    in_flight: &mut Option<InFlight>,
) -> Option<Arc<Master>> {
    if snapshot.replicas.is_none() {
        return snapshot.routable_master().cloned();
    }
    let placed = snapshot.place(affinity(ctx, snapshot, request.headers(), exchange))?;
    *in_flight = Some(InFlight::on(&placed.master));
    Some(placed.recorded())
}

/// What ties the request to a replica: the first request of its CLI call, else the
/// proxy's cookie.
fn affinity(
    ctx: &ProxyContext,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    exchange: &Exchange,
) -> Affinity {
    let first_master = exchange
        .session
        .as_deref()
        .and_then(|session| ctx.cli_sessions.first_master(session));
    if let Some(first) = first_master {
        let index = snapshot.masters.iter().position(|s| s.master.name == first);
        if let Some(index) = index {
            return Affinity::Session(index);
        }
    }
    let Some(name) = exchange.settings.affinity_cookie.as_deref() else {
        return Affinity::None;
    };
    match cookie(headers, name) {
        None => Affinity::None,
        Some(value) => {
            Affinity::Cookie(parse_token(value).and_then(|t| snapshot.replica_by_token(t)))
        }
    }
}

/// The value of the cookie `name` in the request's `Cookie` headers (HTTP/2 clients
/// may send several), if any.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// Active-active mode: what the response needs to keep the session on its replica.
pub(super) struct Sticky {
    name: Arc<str>,
    /// The token the request's cookie carried, if any.
    presented: Option<u64>,
    /// The client came over TLS: the cookie is `Secure`.
    secure: bool,
}

impl Sticky {
    /// None in active-passive mode.
    pub fn of(settings: &ProxySettings, headers: &HeaderMap, tls: bool) -> Option<Sticky> {
        let name = settings.affinity_cookie.as_ref()?;
        Some(Sticky {
            presented: cookie(headers, name).and_then(parse_token),
            name: Arc::clone(name),
            secure: tls,
        })
    }

    /// Sets the cookie naming `served` (the replica that answered) unless the request
    /// carried it already.
    pub fn stick(&self, response: &mut Response<ProxyBody>, served: &Master) {
        let token = token(&served.name, &served.url);
        if self.presented == Some(token) {
            return;
        }
        let secure = if self.secure { "; Secure" } else { "" };
        let cookie = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Lax{secure}",
            self.name,
            token_text(token)
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cookie_among_others_and_across_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(cookie(&headers, "JHP_REPLICA"), None);
        headers.append(
            COOKIE,
            HeaderValue::from_static("JSESSIONID.abc=x; other=1"),
        );
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=b;JHP_REPLICA=\"0123456789abcdef\" ; c=d"),
        );
        assert_eq!(cookie(&headers, "JHP_REPLICA"), Some("0123456789abcdef"));
        assert_eq!(cookie(&headers, "other"), Some("1"));
        assert_eq!(cookie(&headers, "JHP"), None);
    }

    fn settings(cookie: Option<&str>) -> ProxySettings {
        ProxySettings {
            retry_after: HeaderValue::from_static("5"),
            tunnel_idle_timeout: None,
            response_idle_timeout: None,
            advertised: Vec::new(),
            access_log: false,
            hold_timeout: std::time::Duration::from_secs(1),
            request_timeout: None,
            down_confirmation: std::time::Duration::from_secs(1),
            affinity_cookie: cookie.map(Arc::from),
        }
    }

    #[tokio::test]
    async fn the_cookie_is_set_unless_the_request_named_the_replica_that_answered() {
        let master = Master {
            name: "replica-1".into(),
            url: "http://10.0.0.11:8080".into(),
            host: "10.0.0.11".into(),
            standby: crate::config::Standby::None,
            start_command: None,
            fence_command: None,
            upstream: crate::upstream::Upstream::new(
                "10.0.0.11",
                8080,
                crate::upstream::UpstreamSettings::for_tests(),
            ),
            check_now: tokio::sync::Notify::new(),
            counters: Default::default(),
        };
        let set_by = |sticky: Sticky| {
            let mut response = Response::new(http_body_util::Either::Right(Default::default()));
            sticky.stick(&mut response, &master);
            response
                .headers()
                .get(SET_COOKIE)
                .map(|v| v.to_str().expect("ascii").to_owned())
        };
        let headers = HeaderMap::new();
        assert!(
            Sticky::of(&settings(None), &headers, false).is_none(),
            "active-passive"
        );
        let token = token_text(token(&master.name, &master.url));
        let plain = Sticky::of(&settings(Some("JHP_REPLICA")), &headers, false).expect("sticky");
        assert_eq!(
            set_by(plain).as_deref(),
            Some(format!("JHP_REPLICA={token}; Path=/; HttpOnly; SameSite=Lax").as_str())
        );
        let tls = Sticky::of(&settings(Some("JHP_REPLICA")), &headers, true).expect("sticky");
        assert!(set_by(tls).is_some_and(|c| c.ends_with("; SameSite=Lax; Secure")));
        let mut named = HeaderMap::new();
        let value = format!("JHP_REPLICA={token}");
        named.insert(COOKIE, HeaderValue::from_str(&value).expect("value"));
        let kept = Sticky::of(&settings(Some("JHP_REPLICA")), &named, false).expect("sticky");
        assert_eq!(set_by(kept), None, "already named");
    }
}
