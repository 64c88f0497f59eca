//! One client request: take the snapshot, prepare headers, send it to the active
//! master through the pool, stream the response back.
//!
//! Retries, and why each is safe:
//! - The connection could not be established: the request was never sent, body
//!   included. Report it to the owner (which marks the master down at once) and send
//!   to the new active master.
//! - hyper gives the request back unsent (`try_send_request`): same as above when the
//!   connection was fresh; on a reused pooled connection, the master merely closed an
//!   idle connection: try a fresh one, and count nothing against the master.
//! - A GET/HEAD/OPTIONS without a body broke before any response byte: replay it once
//!   on the active master of the latest snapshot, on a fresh connection.
//! - Nothing else is ever replayed: 502.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};

use super::access::AccessEntry;
use super::body::Streamed;
use super::headers::{add_forwarded, strip_hop_by_hop, ClientOrigin};
use super::jnlp::{self, Advertised};
use super::session::{self, Check, CliSessions};
use super::upgrade;
use crate::control::owner::OwnerHandle;
use crate::control::routing::{Master, RoutingHandle, Snapshot};
use crate::upstream::UpstreamBody;

/// Body of a response to the client: the master's, streamed, or one of ours.
pub type ProxyBody = Either<Streamed, Full<Bytes>>;

/// The header the Jenkins CLI's HTTP mode pairs its two requests with.
const SESSION: HeaderName = HeaderName::from_static("session");

/// What every request of the proxy listener shares.
pub struct ProxyContext {
    pub routing: RoutingHandle,
    pub owner: OwnerHandle,
    /// Written by reloads, read once per request (an uncontended read lock).
    pub settings: std::sync::RwLock<Arc<ProxySettings>>,
    pub cli_sessions: CliSessions,
    pub metrics: Arc<crate::admin::metrics::Metrics>,
}

/// The request path's settings that a reload can change.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// `Retry-After` value on 503, in whole seconds.
    pub retry_after: HeaderValue,
    /// `proxy.tunnel_idle_timeout`: closes silent upgraded connections.
    pub tunnel_idle_timeout: Option<Duration>,
    /// `proxy.response_idle_timeout`: ends a response the master stopped sending.
    pub response_idle_timeout: Option<Duration>,
    /// The `[[tcp]]` listeners, for the JNLP header rewrite.
    pub advertised: Vec<Advertised>,
    /// `proxy.access_log`.
    pub access_log: bool,
    /// `failover.hold_timeout`: how long a request waits for a promotion in progress.
    pub hold_timeout: Duration,
    /// `proxy.request_timeout`: how long to wait for a response head.
    pub request_timeout: Option<Duration>,
    /// How long the health checks take at most to demote a master that stopped
    /// answering: `health.timeout` x `fall` + `interval`. A replayed request that
    /// broke again waits this long for a demotion before it gets 502.
    pub down_confirmation: Duration,
}

impl ProxyContext {
    pub fn settings(&self) -> Arc<ProxySettings> {
        match self.settings.read() {
            Ok(settings) => Arc::clone(&settings),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace_settings(&self, settings: ProxySettings) {
        let settings = Arc::new(settings);
        match self.settings.write() {
            Ok(mut current) => *current = settings,
            Err(poisoned) => *poisoned.into_inner() = settings,
        }
    }
}

/// Where a request came from (per client connection).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub client: SocketAddr,
    pub local: SocketAddr,
}

/// Forwards one request; every failure becomes a response, never an error.
pub async fn forward(
    ctx: &ProxyContext,
    mut request: Request<Incoming>,
    peer: Peer,
) -> Response<ProxyBody> {
    if let Some(refusal) = refuse_target(&request).or_else(|| refuse_host(&request)) {
        return refusal;
    }
    let upgrade = upgrade::requested(request.headers()).map(|protocol| Upgrade {
        client: hyper::upgrade::on(&mut request),
        protocol,
    });
    let (mut parts, body) = request.into_parts();
    prepare(&mut parts, peer);
    // Read once: the whole request follows the settings it started with.
    let settings = ctx.settings();
    if let Some(upgrade) = &upgrade {
        upgrade::restore(&mut parts.headers, upgrade.protocol.clone());
    }
    let exchange = Exchange {
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
    let request = Request::from_parts(parts, Either::Left(body));
    let started = std::time::Instant::now();
    let mut response = send_with_retries(ctx, request, exchange).await;
    let master = response
        .extensions()
        .get::<ServedBy>()
        .map(|s| Arc::clone(&s.0));
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

/// Which master answered (or failed) a request; a response extension read by metrics
/// and the access log.
#[derive(Debug, Clone)]
pub struct ServedBy(pub Arc<Master>);

/// What the request path keeps about a request while it is being sent.
struct Exchange {
    replay: Replay,
    /// The client's Host, for the JNLP header rewrite.
    /// (A shared copy of the value, not a String: no allocation per request.)
    request_host: Option<HeaderValue>,
    /// The CLI's `Session` header, if any.
    session: Option<String>,
    /// The master `session` was checked against, and how: a retry of this request on
    /// the same master is not the session's second request.
    session_checked: Option<(Arc<Master>, Check)>,
    upgrade: Option<Upgrade>,
    /// The reloadable settings as the request started.
    settings: Arc<ProxySettings>,
}

/// A client's request to switch protocols.
struct Upgrade {
    client: OnUpgrade,
    protocol: HeaderValue,
}

/// This is a reverse proxy: no CONNECT, no absolute-form targets over HTTP/1.
/// (Requests whose length is stated two ways never get here: the connection's
/// framing guard has them refused first, see `super::framing`.)
fn refuse_target(request: &Request<Incoming>) -> Option<Response<ProxyBody>> {
    let absolute_form = request.version() < Version::HTTP_2 && request.uri().scheme().is_some();
    (request.method() == Method::CONNECT || absolute_form).then(|| {
        plain(
            StatusCode::BAD_REQUEST,
            "jenkins-ha-proxy is a reverse proxy: CONNECT and absolute-form request targets are refused\n",
        )
    })
}

/// RFC 9112 section 3.2: an HTTP/1.1 request has exactly one Host; so does any request
/// we forward (masters build URLs from it, and two values would let the proxy and the
/// master each believe another). An HTTP/1.0 request may come without one (`prepare`
/// names the address the client dialled); an HTTP/2 request names its host in
/// `:authority`, or else in one Host header.
fn refuse_host(request: &Request<Incoming>) -> Option<Response<ProxyBody>> {
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
    Some(plain(
        StatusCode::BAD_REQUEST,
        &format!("jenkins-ha-proxy: {why}\n"),
    ))
}

/// Rewrites the request head for a master: HTTP/1.1, origin-form target exactly as the
/// client sent it, hop-by-hop removed, X-Forwarded-* added, and one Host: the client's,
/// `:authority` for HTTP/2 clients (it wins over a Host header that differs), the
/// address the client dialled for an HTTP/1.0 client that sent none.
fn prepare(parts: &mut Parts, peer: Peer) {
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
    add_forwarded(
        &mut parts.headers,
        ClientOrigin {
            client_ip: peer.client.ip(),
            listener_port: peer.local.port(),
        },
    );
}

/// The head of a request that may be sent again: idempotent, without a body.
struct Replay {
    head: Option<(Method, Uri, hyper::HeaderMap)>,
    /// The master the request was already replayed on after a broken connection.
    replayed_on: Option<Arc<Master>>,
    /// Copies handed out so far (bounded by `MAX_RESENDS`).
    resent: usize,
}

/// A request is sent again at most this often in all (replays and rescues), a bound
/// that holds even if masters kept trading places.
const MAX_RESENDS: usize = 3;

impl Replay {
    fn of(parts: &Parts, body: &Incoming) -> Replay {
        let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let head = (idempotent && body.is_end_stream()).then(|| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            )
        });
        Replay {
            head,
            replayed_on: None,
            resent: 0,
        }
    }

    fn can_replay(&self) -> bool {
        self.head.is_some() && self.resent < MAX_RESENDS
    }

    /// A copy of the request to send again, while resends are left.
    fn again(&mut self) -> Option<Request<UpstreamBody>> {
        if !self.can_replay() {
            return None;
        }
        let (method, uri, headers) = self.head.as_ref()?;
        self.resent += 1;
        let mut request = Request::new(Either::Right(Empty::new()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers.clone();
        Some(request)
    }
}

async fn send_with_retries(
    ctx: &ProxyContext,
    mut request: Request<UpstreamBody>,
    mut exchange: Exchange,
) -> Response<ProxyBody> {
    let mut snapshot = ctx.routing.current();
    // Each master can fail to connect once per request; then we give up.
    let mut connect_failures = 0;
    let mut fresh_only = false;
    // Set by the first connect that timed out. Until then the request tries again on
    // whichever master is active: a timed-out connect never demotes a master (a full
    // accept queue times out too); the health checks decide.
    let mut give_up_at: Option<std::time::Instant> = None;
    loop {
        let Some(master) = snapshot.active_master().cloned() else {
            match Box::pin(hold(ctx, &snapshot)).await {
                Some(next) => {
                    snapshot = next;
                    continue;
                }
                None => return unavailable(ctx),
            }
        };
        if let Some(refusal) = check_cli_session(ctx, &mut exchange, &master) {
            return refusal;
        }
        // The rare paths below are boxed: inline, their futures would make every
        // request's future kilobytes larger (copied by value several times a request).
        // A request may wait as long for a connection as for a promotion.
        let wait = exchange.settings.hold_timeout;
        let connection = if fresh_only {
            Box::pin(master.upstream.connect(wait)).await
        } else {
            master.upstream.connection(wait).await
        };
        fresh_only = false;
        let mut connection = match connection {
            Ok(connection) => connection,
            Err(error) if error.is_local() => return overloaded(ctx, &error),
            Err(error) if error.is_saturated() => return saturated(ctx, &master, &error),
            Err(error) if error.is_timeout() => {
                let now = std::time::Instant::now();
                let give_up = *give_up_at.get_or_insert(now + exchange.settings.down_confirmation);
                let current = ctx.routing.current();
                if still_active(&current, &master) && now >= give_up {
                    return connect_timed_out(&master, &error);
                }
                tracing::debug!(master = %master.name, %error,
                    "connect timed out; trying again on the active master (the health checks decide whether it is down)");
                snapshot = current;
                continue;
            }
            Err(error) => {
                connect_failures += 1;
                match Box::pin(ctx.owner.failed_connect(
                    &master,
                    error.to_string(),
                    connect_failures,
                ))
                .await
                {
                    Some(next) => snapshot = next,
                    None => return bad_gateway(&master, &error.to_string()),
                }
                continue;
            }
        };
        let sent = connection.sender.try_send_request(request);
        let replayable = exchange.replay.can_replay();
        let timeout = exchange.settings.request_timeout;
        let outcome = match wait_for_head(ctx, &master, sent, replayable, timeout).await {
            Waited::Head(outcome) => outcome,
            Waited::Rescued => {
                // Dropping the request cancelled it there (hyper closes that connection).
                let Some(again) = exchange.replay.again() else {
                    return gateway_timeout(&master);
                };
                tracing::info!(master = %master.name, "request rescued from a demoted master; sending it to the new active master");
                request = again;
                snapshot = ctx.routing.current();
                fresh_only = true;
                continue;
            }
            Waited::TimedOut => return gateway_timeout(&master),
        };
        match outcome {
            Ok(response) => return respond(&master, connection.sender, response, exchange),
            Err(mut failure) => {
                if let Some(unsent) = failure.take_message() {
                    request = unsent;
                    if connection.reused {
                        fresh_only = true;
                        continue;
                    }
                    connect_failures += 1;
                    let error = failure.into_error().to_string();
                    match Box::pin(ctx.owner.failed_connect(
                        &master,
                        error.clone(),
                        connect_failures,
                    ))
                    .await
                    {
                        Some(next) => snapshot = next,
                        None => return bad_gateway(&master, &error),
                    }
                    continue;
                }
                let error = failure.into_error();
                if error.is_user() {
                    // The client's own body failed (bad chunk, aborted upload): not the master.
                    tracing::debug!(%error, "client request body failed");
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "jenkins-ha-proxy: malformed or incomplete request body\n",
                    );
                }
                let replayed_here = exchange
                    .replay
                    .replayed_on
                    .as_ref()
                    .is_some_and(|on| Arc::ptr_eq(on, &master));
                if !replayed_here {
                    let Some(again) = exchange.replay.again() else {
                        return bad_gateway(&master, &error.to_string());
                    };
                    tracing::debug!(master = %master.name, %error, reused = connection.reused,
                        "connection broke before the response; replaying the request once");
                    exchange.replay.replayed_on = Some(Arc::clone(&master));
                    request = again;
                    snapshot = ctx.routing.current();
                    fresh_only = true;
                    continue;
                }
                // The replay, on a fresh connection, broke too: the master may be dying
                // (killed, but its socket still accepting for a moment). Its health
                // checks decide, never this client: wait for them to demote it.
                let Some(next) = Box::pin(demoted_within(
                    ctx,
                    &master,
                    exchange.settings.down_confirmation,
                ))
                .await
                else {
                    return bad_gateway(&master, &error.to_string());
                };
                let Some(again) = exchange.replay.again() else {
                    return bad_gateway(&master, &error.to_string());
                };
                tracing::info!(master = %master.name, %error,
                    "request broke twice on a master that was then demoted; sending it to the new active master");
                request = again;
                snapshot = next;
                fresh_only = true;
            }
        }
    }
}

/// How waiting for a response head ended.
enum Waited<T> {
    Head(T),
    /// The master was demoted while the (replayable) request waited: resend it.
    Rescued,
    /// No response head within `proxy.request_timeout`.
    TimedOut,
}

/// Waits for the response head, bounded by `proxy.request_timeout`. A replayable
/// request (idempotent, no body) waiting on a master that gets demoted (it froze, was
/// switched away from) is rescued rather than left hanging.
///
/// Most heads arrive within a millisecond: the demotion watch starts only after
/// `WATCH_DEMOTION_AFTER` (checking the snapshot at once then), so a fast request
/// costs one timer and no subscription to the snapshot channel.
async fn wait_for_head<F: std::future::Future>(
    ctx: &ProxyContext,
    master: &Arc<Master>,
    sent: F,
    replayable: bool,
    timeout: Option<Duration>,
) -> Waited<F::Output> {
    let started = tokio::time::Instant::now();
    let deadline = timeout.map(|timeout| started + timeout);
    let watch_from = started + WATCH_DEMOTION_AFTER;
    let first_wake = match deadline {
        Some(deadline) if !replayable || deadline < watch_from => deadline,
        _ if replayable => watch_from,
        _ => started, // neither a deadline nor a watch: the timer stays unarmed
    };
    let mut armed = replayable || deadline.is_some();
    let timer = tokio::time::sleep_until(first_wake);
    tokio::pin!(sent, timer);
    let mut snapshots = None;
    loop {
        tokio::select! {
            biased;
            outcome = &mut sent => return Waited::Head(outcome),
            () = demotion(snapshots.as_mut(), master) => return Waited::Rescued,
            () = &mut timer, if armed => {
                let now = tokio::time::Instant::now();
                if deadline.is_some_and(|deadline| now >= deadline) {
                    return Waited::TimedOut;
                }
                if replayable && snapshots.is_none() {
                    let mut receiver = ctx.routing.subscribe();
                    if !still_active(&receiver.borrow_and_update(), master) {
                        return Waited::Rescued;
                    }
                    snapshots = Some(receiver);
                }
                match deadline {
                    Some(deadline) => timer.as_mut().reset(deadline),
                    None => armed = false,
                }
            }
        }
    }
}

/// Waits up to `bound` for `master` to stop being the active master; returns the
/// snapshot that demoted it, or None if it is still active after `bound`.
async fn demoted_within(
    ctx: &ProxyContext,
    master: &Arc<Master>,
    bound: Duration,
) -> Option<Arc<Snapshot>> {
    let mut snapshots = ctx.routing.subscribe();
    let demoted = async {
        loop {
            let current = Arc::clone(&snapshots.borrow_and_update());
            if !still_active(&current, master) {
                return Some(current);
            }
            if snapshots.changed().await.is_err() {
                return None; // the owner is gone: nothing will change any more
            }
        }
    };
    tokio::time::timeout(bound, demoted).await.ok().flatten()
}

/// How long a replayable request waits for its head before it watches for a demotion
/// of its master (a rescue comes this much later at most; failover takes seconds).
const WATCH_DEMOTION_AFTER: Duration = Duration::from_millis(20);

/// Completes when `master` stops being the active master; never without `snapshots`.
async fn demotion(
    snapshots: Option<&mut tokio::sync::watch::Receiver<Arc<Snapshot>>>,
    master: &Arc<Master>,
) {
    let Some(snapshots) = snapshots else {
        return std::future::pending().await;
    };
    loop {
        if snapshots.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !still_active(&snapshots.borrow_and_update(), master) {
            return;
        }
    }
}

fn still_active(snapshot: &Snapshot, master: &Arc<Master>) -> bool {
    snapshot
        .active_master()
        .is_some_and(|active| Arc::ptr_eq(active, master))
}

fn gateway_timeout(master: &Master) -> Response<ProxyBody> {
    tracing::warn!(master = %master.name, "no response head in time: 504");
    plain(
        StatusCode::GATEWAY_TIMEOUT,
        &format!(
            "jenkins-ha-proxy: master {} did not answer in time\n",
            master.name
        ),
    )
}

/// The master's response, streamed, without its hop-by-hop headers; a 101 to an
/// upgrade request starts the tunnel.
fn respond(
    master: &Arc<Master>,
    sender: hyper::client::conn::http1::SendRequest<UpstreamBody>,
    mut response: Response<Incoming>,
    exchange: Exchange,
) -> Response<ProxyBody> {
    let settings = Arc::clone(&exchange.settings);
    let mut returner = None;
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match (switching, exchange.upgrade) {
        (true, Some(Upgrade { client, protocol })) => {
            let upstream = hyper::upgrade::on(&mut response);
            upgrade::spawn_tunnel(client, upstream, master, settings.tunnel_idle_timeout);
            let protocol = response
                .headers()
                .get(hyper::header::UPGRADE)
                .cloned()
                .unwrap_or(protocol);
            strip_hop_by_hop(response.headers_mut());
            upgrade::restore(response.headers_mut(), protocol);
        }
        _ => {
            // The connection goes back to the pool once this response is read.
            returner = Some(master.upstream.returner(sender));
            strip_hop_by_hop(response.headers_mut());
        }
    }
    if !settings.advertised.is_empty() {
        jnlp::rewrite(
            response.headers_mut(),
            &settings.advertised,
            exchange
                .request_host
                .as_ref()
                .and_then(|host| host.to_str().ok()),
        );
    }
    response
        .extensions_mut()
        .insert(ServedBy(Arc::clone(master)));
    response.map(|body| {
        Either::Left(Streamed::new(
            body,
            settings.response_idle_timeout,
            returner,
        ))
    })
}

/// While a master is being promoted (fenced, reloaded, started), requests wait for it
/// rather than fail: returns the snapshot with the new active master, or None when
/// there is no promotion or `hold_timeout` ran out (then: 503).
async fn hold(ctx: &ProxyContext, snapshot: &Snapshot) -> Option<Arc<Snapshot>> {
    snapshot.promotion.as_ref()?;
    let mut snapshots = ctx.routing.subscribe();
    let deadline = tokio::time::Instant::now() + ctx.settings().hold_timeout;
    loop {
        let current = Arc::clone(&snapshots.borrow_and_update());
        if current.active.is_some() {
            return Some(current);
        }
        current.promotion.as_ref()?;
        tokio::select! {
            changed = snapshots.changed() => changed.ok()?,
            () = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// Refuses the second request of a CLI call whose first went to another master.
/// A request sent again (its connect failed, a stale connection) is checked once per
/// master: on the same master it is not the session's second request; on another, a
/// first request moves its record there, and a second one is refused.
fn check_cli_session(
    ctx: &ProxyContext,
    exchange: &mut Exchange,
    master: &Arc<Master>,
) -> Option<Response<ProxyBody>> {
    let session = exchange.session.as_deref()?;
    match exchange.session_checked.take() {
        Some((on, check)) if Arc::ptr_eq(&on, master) => {
            exchange.session_checked = Some((on, check));
            return None;
        }
        // It never reached that master (CLI requests are never replayed).
        Some((_, Check::First)) => ctx.cli_sessions.forget(session),
        Some((on, Check::Paired)) => return Some(session_moved(session, &on.name, master)),
        Some(_) | None => {}
    }
    let check = ctx.cli_sessions.check(session, &master.name);
    if let Check::Moved { first_master } = &check {
        return Some(session_moved(session, first_master, master));
    }
    exchange.session_checked = Some((Arc::clone(master), check));
    None
}

fn session_moved(session: &str, first: &str, master: &Master) -> Response<ProxyBody> {
    tracing::warn!(session, first_master = first, active = %master.name,
        "CLI session split by a failover: refusing its second request");
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!(
            "jenkins-ha-proxy: this CLI session started on {first}, which is no longer the active master \
             ({} is); run the command again\n",
            master.name
        ),
    )
}

fn unavailable(ctx: &ProxyContext) -> Response<ProxyBody> {
    retry_later(
        ctx,
        "jenkins-ha-proxy: no healthy Jenkins master is available right now; retry shortly\n",
    )
}

/// We are out of descriptors or socket memory: the master is not to blame (so it is
/// not reported), and the client may retry once connections have ended.
fn overloaded(ctx: &ProxyContext, error: &crate::upstream::ConnectError) -> Response<ProxyBody> {
    crate::sys::fd_limit::log_exhaustion("a request got 503: cannot connect to the master", error);
    retry_later(
        ctx,
        "jenkins-ha-proxy: the proxy is out of file descriptors or socket memory; retry shortly\n",
    )
}

/// 503 with `Retry-After`.
fn retry_later(ctx: &ProxyContext, text: &str) -> Response<ProxyBody> {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, text);
    response
        .headers_mut()
        .insert(RETRY_AFTER, ctx.settings().retry_after.clone());
    response
}

/// Every connection the master may have stayed busy for `failover.hold_timeout`: 503,
/// the client may retry; the master is not to blame (it is serving).
fn saturated(
    ctx: &ProxyContext,
    master: &Master,
    error: &crate::upstream::ConnectError,
) -> Response<ProxyBody> {
    tracing::warn!(master = %master.name, %error, "a request got 503: the master's connection limit");
    retry_later(
        ctx,
        &format!(
            "jenkins-ha-proxy: master {} is busy with as many connections as the proxy may open to it; retry shortly\n",
            master.name
        ),
    )
}

/// Connects to the master kept timing out for as long as its health checks take to
/// demote a master, and they did not: 504.
fn connect_timed_out(
    master: &Master,
    error: &crate::upstream::ConnectError,
) -> Response<ProxyBody> {
    tracing::warn!(master = %master.name, %error, "connects to the active master keep timing out: 504");
    plain(
        StatusCode::GATEWAY_TIMEOUT,
        &format!(
            "jenkins-ha-proxy: master {} did not accept a connection in time\n",
            master.name
        ),
    )
}

fn bad_gateway(master: &Master, error: &str) -> Response<ProxyBody> {
    tracing::warn!(master = %master.name, %error, "request failed at the master: 502");
    plain(
        StatusCode::BAD_GATEWAY,
        &format!(
            "jenkins-ha-proxy: master {} failed during the request: {error}\n",
            master.name
        ),
    )
}

pub fn plain(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text.to_owned()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
