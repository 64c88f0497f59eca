//! What the request path keeps about one request while it is being sent: the settings
//! it started with, the copy it may be sent again as, its upgrade, and its CLI session.

use std::sync::Arc;

use http_body_util::{Either, Empty};
use hyper::body::Body;
use hyper::header::HeaderValue;
use hyper::http::request::Parts;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, Uri};

use super::headers::Forwarded;
use super::responses;
use super::session::{Check, CliSessions};
use super::{ProxyBody, ProxySettings};
use crate::control::routing::Master;
use crate::upstream::UpstreamBody;

/// One request's state while it is being sent.
pub(super) struct Exchange {
    /// The X-Forwarded-* values, set on the request as each attempt sends it.
    pub forwarded: Forwarded,
    pub replay: Replay,
    /// The client's Host, for the JNLP header rewrite.
    /// (A shared copy of the value, not a String: no allocation per request.)
    pub request_host: Option<HeaderValue>,
    /// The CLI's `Session` header, if any.
    pub session: Option<String>,
    /// The master `session` was checked against, and how: a retry of this request on
    /// the same master is not the session's second request.
    pub session_checked: Option<(Arc<Master>, Check)>,
    pub upgrade: Option<Upgrade>,
    /// The reloadable settings as the request started.
    pub settings: Arc<ProxySettings>,
}

/// A client's request to switch protocols.
pub(super) struct Upgrade {
    pub client: OnUpgrade,
    pub protocol: HeaderValue,
}

impl Exchange {
    /// Refuses the second request of a CLI call whose first went to another master.
    /// A request sent again (its connect failed, a stale connection) is checked once per
    /// master: on the same master it is not the session's second request; on another, a
    /// first request moves its record there, and a second one is refused.
    pub fn check_cli_session(
        &mut self,
        sessions: &CliSessions,
        master: &Arc<Master>,
    ) -> Option<Response<ProxyBody>> {
        let session = self.session.as_deref()?;
        match self.session_checked.take() {
            Some((on, check)) if Arc::ptr_eq(&on, master) => {
                self.session_checked = Some((on, check));
                return None;
            }
            // It never reached that master (CLI requests are never replayed).
            Some((_, Check::First)) => sessions.forget(session),
            Some((on, Check::Paired)) => {
                return Some(responses::session_moved(session, &on.name, master))
            }
            Some(_) | None => {}
        }
        let check = sessions.check(session, &master.name);
        if let Check::Moved { first_master } = &check {
            return Some(responses::session_moved(session, first_master, master));
        }
        self.session_checked = Some((Arc::clone(master), check));
        None
    }
}

/// The head of a request that may be sent again: idempotent, without a body. The
/// copy is made only when it may be needed: before hyper's client takes the request,
/// or (our own client only borrows it) from the request itself once an attempt failed.
pub(super) struct Replay {
    /// Idempotent and without a body.
    eligible: bool,
    /// Boxed: only a failed attempt needs it, and the request's state is moved by
    /// value several times per request.
    head: Option<Box<(Method, Uri, hyper::HeaderMap)>>,
    /// The master the request was already replayed on after a broken connection.
    pub replayed_on: Option<Arc<Master>>,
    /// Copies handed out so far (bounded by `MAX_RESENDS`).
    resent: usize,
}

/// A request is sent again at most this often in all (replays and rescues), a bound
/// that holds even if masters kept trading places.
const MAX_RESENDS: usize = 3;

impl Replay {
    pub fn of(parts: &Parts, body: &UpstreamBody) -> Replay {
        let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        Replay {
            eligible: idempotent && body.is_end_stream(),
            head: None,
            replayed_on: None,
            resent: 0,
        }
    }

    /// Keeps a copy of `request`'s head, before it is handed to hyper's client.
    pub fn copy_before_sending<B>(&mut self, request: &Request<B>) {
        if self.eligible && self.head.is_none() {
            self.head = Some(Box::new((
                request.method().clone(),
                request.uri().clone(),
                request.headers().clone(),
            )));
        }
    }

    /// Keeps the head of `request`, spent by a failed attempt, for sending it again.
    pub fn keep<B>(&mut self, request: Request<B>) {
        if self.eligible && self.head.is_none() {
            let (parts, _) = request.into_parts();
            self.head = Some(Box::new((parts.method, parts.uri, parts.headers)));
        }
    }

    pub fn can_replay(&self) -> bool {
        self.eligible && self.resent < MAX_RESENDS
    }

    /// Whether it was already replayed on `master`.
    pub fn replayed_on(&self, master: &Arc<Master>) -> bool {
        self.replayed_on
            .as_ref()
            .is_some_and(|on| Arc::ptr_eq(on, master))
    }

    /// A copy of the request to send again, while resends are left.
    pub fn again(&mut self) -> Option<Request<UpstreamBody>> {
        if !self.can_replay() {
            return None;
        }
        let (method, uri, headers) = self.head.as_deref()?;
        self.resent += 1;
        let mut request = Request::new(Either::Right(Empty::new()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers.clone();
        Some(request)
    }
}
