//! One client request: refuse what is not for a reverse proxy, prepare the head for a
//! master, send it (`super::send`), and count and log what came of it.

use std::sync::Arc;

use http_body_util::Either;
use hyper::body::Body;
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, Uri, Version};

use super::access::AccessEntry;
use super::exchange::{Exchange, Replay, Upgrade};
use super::headers::{forwarded, strip_hop_by_hop, ClientOrigin, Forwarded};
use super::send::send_with_retries;
use super::{affinity, responses, session, upgrade, Peer, ProxyBody, ProxyContext};
use crate::upstream::UpstreamBody;

/// The header the Jenkins CLI's HTTP mode pairs its two requests with.
const SESSION: HeaderName = HeaderName::from_static("session");

/// Forwards one request; every failure becomes a response, never an error.
/// Takes the context by value (a clone of the listener's): boxed directly, the
/// request's future needs no wrapper future around it, and is copied once less.
pub async fn forward(
    ctx: Arc<ProxyContext>,
    mut request: Request<UpstreamBody>,
    peer: Peer,
) -> Response<ProxyBody> {
    let ctx = &*ctx;
    if let Some(refusal) = refuse_target(&request).or_else(|| refuse_host(&request)) {
        return refusal;
    }
    let upgrade = upgrade::requested(request.headers()).map(|protocol| Upgrade {
        client: hyper::upgrade::on(&mut request),
        protocol,
    });
    let (mut parts, body) = request.into_parts();
    let forwarded = prepare(&mut parts, peer);
    // Read once: the whole request follows the settings it started with.
    let settings = ctx.settings();
    if let Some(upgrade) = &upgrade {
        upgrade::restore(&mut parts.headers, upgrade.protocol.clone());
    }
    let sticky = affinity::Sticky::of(&settings, &parts.headers, peer.tls);
    let exchange = Exchange {
        forwarded,
        replay: Replay::of(&parts, &body),
        request_host: parts.headers.get(HOST).cloned(),
        // A longer value is not tracked (see `session`): not even copied.
        session: parts
            .headers
            .get(SESSION)
            .filter(|h| h.len() <= session::MAX_ID_BYTES)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned),
        session_checked: None,
        upgrade,
        settings,
    };
    let access = exchange.settings.access_log.then(|| Access {
        client: peer.client.ip(),
        method: parts.method.clone(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.to_string(), |pq| pq.to_string()),
    });
    let request = Request::from_parts(parts, body);
    let started = std::time::Instant::now();
    let (mut response, master) = send_with_retries(ctx, request, exchange).await;
    if let (Some(sticky), Some(master)) = (&sticky, &master) {
        sticky.stick(&mut response, master);
    }
    let master_name = master.as_ref().map_or("none", |m| m.name.as_str());
    ctx.metrics
        .observe_request(master_name, response.status().as_u16(), started.elapsed());
    if let Some(access) = access {
        let entry = AccessEntry {
            client: access.client,
            method: access.method,
            target: access.target,
            status: response.status(),
            master: master.map_or_else(|| "-".to_owned(), |m| m.name.clone()),
            started,
        };
        match response.body_mut() {
            Either::Left(streamed) => streamed.log_when_done(entry),
            Either::Right(ours) => entry.log(ours.size_hint().exact().unwrap_or(0), true),
        }
    }
    response
}

/// The request side of an access log line.
struct Access {
    client: std::net::IpAddr,
    method: Method,
    target: String,
}

/// This is a reverse proxy: no CONNECT, no absolute-form targets over HTTP/1.
/// (Requests whose length is stated two ways never get here: the connection's
/// framing guard has them refused first, see `super::framing`.)
fn refuse_target(request: &Request<UpstreamBody>) -> Option<Response<ProxyBody>> {
    let absolute_form = request.version() < Version::HTTP_2 && request.uri().scheme().is_some();
    (request.method() == Method::CONNECT || absolute_form).then(responses::not_a_forward_proxy)
}

/// RFC 9112 section 3.2: an HTTP/1.1 request has exactly one Host; so does any request
/// we forward (masters build URLs from it, and two values would let the proxy and the
/// master each believe another). An HTTP/1.0 request may come without one (`prepare`
/// names the address the client dialled); an HTTP/2 request names its host in
/// `:authority`, or else in one Host header.
fn refuse_host(request: &Request<UpstreamBody>) -> Option<Response<ProxyBody>> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    let why = match (request.version(), first, second) {
        (_, Some(_), Some(_)) if request.uri().authority().is_none() => {
            "more than one Host header: send exactly one"
        }
        (Version::HTTP_2, _, _) if request.uri().authority().is_some() => return None,
        (Version::HTTP_09 | Version::HTTP_10, None, None) => return None,
        (_, None, None) => {
            "no Host header: HTTP/1.1 requests must name the host (RFC 9112 section 3.2)"
        }
        _ => return None,
    };
    tracing::debug!(version = ?request.version(), "refused a request for its Host header: {why}");
    Some(responses::bad_host(why))
}

/// Rewrites the request head for a master: HTTP/1.1, origin-form target exactly as the
/// client sent it, hop-by-hop removed, and one Host: the client's,
/// `:authority` for HTTP/2 clients (it wins over a Host header that differs), the
/// address the client dialled for an HTTP/1.0 client that sent none. Returns the
/// X-Forwarded-* values, set as the request is sent (see `Forwarded`).
fn prepare(parts: &mut Parts, peer: Peer) -> Forwarded {
    if parts.version == Version::HTTP_2 {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(HOST, host);
            }
        }
        if let Some(path_and_query) = parts.uri.path_and_query() {
            parts.uri = Uri::from(path_and_query.clone());
        }
    } else if !parts.headers.contains_key(HOST) {
        if let Ok(host) = HeaderValue::from_str(&peer.local.to_string()) {
            parts.headers.insert(HOST, host);
        }
    }
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    forwarded(
        &parts.headers,
        ClientOrigin {
            client_ip: peer.client.ip(),
            listener_port: peer.local.port(),
            tls: peer.tls,
        },
    )
}
