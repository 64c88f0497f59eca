//! Every answer the proxy makes itself (400, 431, 502, 503, 504), in one place: the
//! status, the text the client reads, and the log line that goes with it.

use std::fmt::Display;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};

use super::framing::Refusal;
use super::retry::Answer;
use super::{Peer, ProxyBody};
use crate::control::routing::Master;

/// A short text answer.
pub fn plain(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text.to_owned()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The answer `next_step` chose, about `master`; `error` is why the attempt failed.
pub(super) fn answer(
    answer: Answer,
    master: &Master,
    error: &dyn Display,
    retry_after: &HeaderValue,
) -> Response<ProxyBody> {
    match answer {
        Answer::BadRequest => bad_body(error),
        Answer::BadGateway => bad_gateway(master, error),
        Answer::Overloaded => overloaded(retry_after, error),
        Answer::Saturated => saturated(retry_after, master, error),
        Answer::ConnectTimedOut => connect_timed_out(master, error),
        Answer::GatewayTimeout => gateway_timeout(master),
    }
}

/// This is a reverse proxy: no CONNECT, no absolute-form targets over HTTP/1.
pub(super) fn not_a_forward_proxy() -> Response<ProxyBody> {
    plain(
        StatusCode::BAD_REQUEST,
        "jenkins-ha-proxy is a reverse proxy: CONNECT and absolute-form request targets are refused\n",
    )
}

/// A request without its one Host header (RFC 9112 section 3.2); `why` says which.
pub(super) fn bad_host(why: &str) -> Response<ProxyBody> {
    plain(
        StatusCode::BAD_REQUEST,
        &format!("jenkins-ha-proxy: {why}\n"),
    )
}

/// The client's own body failed (bad chunk, aborted upload): not the master.
fn bad_body(error: &dyn Display) -> Response<ProxyBody> {
    tracing::debug!(%error, "client request body failed");
    plain(
        StatusCode::BAD_REQUEST,
        "jenkins-ha-proxy: malformed or incomplete request body\n",
    )
}

/// 400 for a request whose length is stated two ways, and the connection closed: the
/// client's next bytes cannot be trusted to start a request.
pub(super) fn framing_refused(refusal: Refusal, peer: Peer) -> Response<ProxyBody> {
    tracing::debug!(client = %peer.client, ?refusal, "refused a request whose length is stated two ways");
    let mut response = plain(StatusCode::BAD_REQUEST, refusal.explanation());
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 431 for an HTTP/2 request with more header fields than `proxy.max_headers`.
pub(super) fn too_many_headers(count: usize) -> Response<ProxyBody> {
    tracing::debug!(
        headers = count,
        "refused an HTTP/2 request with too many header fields"
    );
    plain(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "jenkins-ha-proxy: too many header fields (proxy.max_headers)\n",
    )
}

/// 503 with `Retry-After`.
fn retry_later(retry_after: &HeaderValue, text: &str) -> Response<ProxyBody> {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, text);
    response
        .headers_mut()
        .insert(RETRY_AFTER, retry_after.clone());
    response
}

/// No master is healthy, or a promotion did not finish within `hold_timeout`.
pub(super) fn unavailable(retry_after: &HeaderValue) -> Response<ProxyBody> {
    retry_later(
        retry_after,
        "jenkins-ha-proxy: no healthy Jenkins master is available right now; retry shortly\n",
    )
}

/// We are out of descriptors or socket memory: the master is not to blame (so it is
/// not reported), and the client may retry once connections have ended.
fn overloaded(retry_after: &HeaderValue, error: &dyn Display) -> Response<ProxyBody> {
    crate::sys::fd_limit::log_exhaustion("a request got 503: cannot connect to the master", error);
    retry_later(
        retry_after,
        "jenkins-ha-proxy: the proxy is out of file descriptors or socket memory; retry shortly\n",
    )
}

/// Every connection the master may have stayed busy for `failover.hold_timeout`: 503,
/// the client may retry; the master is not to blame (it is serving).
fn saturated(
    retry_after: &HeaderValue,
    master: &Master,
    error: &dyn Display,
) -> Response<ProxyBody> {
    tracing::warn!(master = %master.name, %error, "a request got 503: the master's connection limit");
    retry_later(
        retry_after,
        &format!(
            "jenkins-ha-proxy: master {} is busy with as many connections as the proxy may open to it; retry shortly\n",
            master.name
        ),
    )
}

/// The second request of a CLI call whose first went to another master.
pub(super) fn session_moved(session: &str, first: &str, master: &Master) -> Response<ProxyBody> {
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

/// Connects to the master kept timing out for as long as its health checks take to
/// demote a master, and they did not: 504.
fn connect_timed_out(master: &Master, error: &dyn Display) -> Response<ProxyBody> {
    tracing::warn!(master = %master.name, %error, "connects to the active master keep timing out: 504");
    plain(
        StatusCode::GATEWAY_TIMEOUT,
        &format!(
            "jenkins-ha-proxy: master {} did not accept a connection in time\n",
            master.name
        ),
    )
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

pub(super) fn bad_gateway(master: &Master, error: &dyn Display) -> Response<ProxyBody> {
    tracing::warn!(master = %master.name, %error, "request failed at the master: 502");
    plain(
        StatusCode::BAD_GATEWAY,
        &format!(
            "jenkins-ha-proxy: master {} failed during the request: {error}\n",
            master.name
        ),
    )
}
