//! Sends one request to the active master through its pool, and streams the response
//! back: the common request through our own HTTP/1 client (`raw`), the rest through
//! hyper's. When an attempt fails, [`super::retry::next_step`] decides what comes next
//! and this module carries it out. The rare paths (holding for a promotion, connecting,
//! reporting to the owner, recovering) are boxed: inline, their futures would make
//! every request's future kilobytes larger, copied by value several times a request.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Either;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};

mod raw;

use super::affinity;
use super::body::{MasterBody, Streamed};
use super::demotion::{demoted_within, still_active, unless_demoted, wait_for_head, Waited};
use super::exchange::{Exchange, Upgrade};
use super::headers::strip_hop_by_hop;
use super::retry::{next_step, Answer, Attempts, ConnectDeadline, Failure, Step};
use super::{jnlp, responses, upgrade, ProxyBody, ProxyContext};
use crate::control::routing::{InFlight, Master, Snapshot};
use crate::upstream::{ConnectError, RawError, UpstreamBody};

/// A response to the client, and the master that made it (None: the proxy answered
/// itself), for metrics, the access log and the affinity cookie. (Returned beside the
/// response rather than in its extensions: that map costs two allocations.)
pub(super) type Answered = (Response<ProxyBody>, Option<Arc<Master>>);

/// Why an attempt failed, for the log and the client's error page.
#[derive(Debug, thiserror::Error)]
enum Why {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error(transparent)]
    Raw(#[from] RawError),
    #[error("no response head in time")]
    NoHead,
    #[error("the master was demoted while the request waited")]
    Demoted,
    #[error("this instance's view of the pool expired before the request was sent")]
    Expired,
}

/// A failed attempt: how, why, and the request when it was never sent.
struct Failed {
    failure: Failure,
    why: Why,
    unsent: Option<Request<UpstreamBody>>,
    /// It failed on a connection taken from the pool (for the log).
    reused: bool,
}

/// What a request carries from one attempt to the next.
struct Sending {
    exchange: Exchange,
    snapshot: Arc<Snapshot>,
    /// The next attempt opens a new connection rather than reuse an idle one.
    fresh_only: bool,
    /// Masters whose connect failed and was reported; each may fail once.
    connect_failures: usize,
    deadline: ConnectDeadline,
    /// Active-active mode: the replica the request waits on, counted until it is done.
    in_flight: Option<InFlight>,
}

/// Sends `request` to the active master, trying again where that is safe (see
/// `super::retry`); every failure becomes a response.
pub(super) async fn send_with_retries(
    ctx: &ProxyContext,
    mut request: Request<UpstreamBody>,
    exchange: Exchange,
) -> Answered {
    let mut sending = Sending {
        exchange,
        snapshot: ctx.routing.current(),
        fresh_only: false,
        connect_failures: 0,
        deadline: ConnectDeadline::default(),
        in_flight: None,
    };
    loop {
        let snapshot = &sending.snapshot;
        let placed = affinity::target(
            ctx,
            snapshot,
            &request,
            &sending.exchange,
            &mut sending.in_flight,
        );
        let Some(master) = placed else {
            let hold_timeout = sending.exchange.settings.hold_timeout;
            match Box::pin(hold(ctx, &sending.snapshot, hold_timeout)).await {
                Some(next) => {
                    sending.snapshot = next;
                    continue;
                }
                None => {
                    let retry_after = &sending.exchange.settings.retry_after;
                    return (responses::unavailable(retry_after), None);
                }
            }
        };
        if let Some(refusal) = sending
            .exchange
            .check_cli_session(&ctx.cli_sessions, &master)
        {
            return (refusal, None);
        }
        let failed = match sending.attempt(ctx, &master, request).await {
            Ok(response) => return (response, Some(master)),
            Err(failed) => failed,
        };
        request = match Box::pin(sending.recover(ctx, &master, failed)).await {
            Ok(next) => next,
            Err(answer) => return (answer, None),
        };
    }
}

impl Sending {
    /// Sends `request` once to `master`: the response, or how it failed.
    async fn attempt(
        &mut self,
        ctx: &ProxyContext,
        master: &Arc<Master>,
        request: Request<UpstreamBody>,
    ) -> Result<Response<ProxyBody>, Failed> {
        if self.exchange.upgrade.is_none() && self.exchange.replay.can_replay() {
            self.attempt_raw(ctx, master, request).await
        } else {
            // Boxed: inline, hyper's path would make every request's future larger.
            Box::pin(self.attempt_hyper(ctx, master, request)).await
        }
    }

    /// [`Sending::attempt`] through hyper's client: requests with a body, upgrades.
    async fn attempt_hyper(
        &mut self,
        ctx: &ProxyContext,
        master: &Arc<Master>,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<ProxyBody>, Failed> {
        self.exchange.forwarded.set_on(request.headers_mut());
        // A request may wait as long for a connection as for a promotion.
        let wait = self.exchange.settings.hold_timeout;
        let fresh_only = std::mem::take(&mut self.fresh_only);
        let connecting = async {
            if fresh_only {
                Box::pin(master.upstream.connect(wait)).await
            } else {
                master.upstream.connection(wait).await
            }
        };
        let connection = match unless_demoted(ctx, master, connecting).await {
            Some(connection) => connection,
            None => return Err(abandoned(request, Why::Demoted)),
        };
        let mut connection = match connection {
            Ok(connection) => connection,
            Err(error) => return Err(self.connect_failed(ctx, master, error, request)),
        };
        if self.snapshot.expired() {
            return Err(abandoned(request, Why::Expired));
        }
        self.exchange.replay.copy_before_sending(&request);
        let sent = connection.sender.try_send_request(request);
        let replayable = self.exchange.replay.can_replay();
        let timeout = self.exchange.settings.request_timeout;
        let spent = |failure, why| Failed {
            failure,
            why,
            unsent: None,
            reused: connection.reused,
        };
        let outcome = match wait_for_head(ctx, master, sent, replayable, timeout).await {
            Waited::Head(outcome) => outcome,
            // Dropping the request cancelled it there (hyper closes that connection).
            Waited::Rescued => return Err(spent(Failure::Demoted, Why::Demoted)),
            Waited::TimedOut => return Err(spent(Failure::HeadTimedOut, Why::NoHead)),
        };
        match outcome {
            Ok(response) => Ok(respond(
                master,
                Some(connection.sender),
                response.map(MasterBody::Hyper),
                &mut self.exchange,
            )),
            Err(mut failure) => {
                let unsent = failure.take_message();
                let error = failure.into_error();
                let failure = match (&unsent, error.is_user()) {
                    (Some(_), _) => Failure::Unsent {
                        reused: connection.reused,
                    },
                    (None, true) => Failure::ClientBody,
                    (None, false) => Failure::Broke,
                };
                Err(Failed {
                    failure,
                    why: Why::Http(error),
                    unsent,
                    reused: connection.reused,
                })
            }
        }
    }

    /// A connect to `master` failed: which failure it is.
    fn connect_failed(
        &mut self,
        ctx: &ProxyContext,
        master: &Arc<Master>,
        error: ConnectError,
        request: Request<UpstreamBody>,
    ) -> Failed {
        let failure = if error.is_local() {
            Failure::ConnectLocal
        } else if error.is_saturated() {
            Failure::ConnectSaturated
        } else if error.is_tls() {
            Failure::ConnectTls
        } else if error.is_timeout() {
            let confirmation = self.exchange.settings.down_confirmation;
            let deadline_passed = self
                .deadline
                .passed(std::time::Instant::now(), confirmation);
            Failure::ConnectTimedOut {
                still_active: still_active(&ctx.routing.current(), master),
                deadline_passed,
            }
        } else {
            Failure::ConnectFailed
        };
        Failed {
            failure,
            why: Why::Connect(error),
            unsent: Some(request),
            reused: false,
        }
    }

    /// Carries out the step `next_step` chose after `failed`: the request to send
    /// next (with the snapshot to send it by), or the answer to the client.
    async fn recover(
        &mut self,
        ctx: &ProxyContext,
        master: &Arc<Master>,
        failed: Failed,
    ) -> Result<Request<UpstreamBody>, Response<ProxyBody>> {
        let attempts = Attempts {
            can_resend: self.exchange.replay.can_replay(),
            replayed_here: self.exchange.replay.replayed_on(master),
        };
        let Failed {
            failure,
            why,
            unsent,
            reused,
        } = failed;
        let bad_gateway = || responses::bad_gateway(master, &why);
        let settings = Arc::clone(&self.exchange.settings);
        match next_step(failure, &attempts) {
            Step::Answer(answer) => Err(responses::answer(
                answer,
                master,
                &why,
                &settings.retry_after,
            )),
            Step::FreshConnection => {
                self.fresh_only = true;
                unsent.ok_or_else(bad_gateway)
            }
            Step::RetryOnActive => {
                tracing::debug!(master = %master.name, error = %why,
                    "connect timed out; trying again on the active master (the health checks decide whether it is down)");
                self.snapshot = ctx.routing.current();
                unsent.ok_or_else(bad_gateway)
            }
            Step::ReportAndRetry => {
                let next = self.report(ctx, master, &why, settings.hold_timeout).await;
                self.snapshot = next.ok_or_else(bad_gateway)?;
                unsent.ok_or_else(bad_gateway)
            }
            Step::Replay => {
                tracing::debug!(master = %master.name, error = %why, reused,
                    "connection broke before the response; replaying the request once");
                self.exchange.replay.replayed_on = Some(Arc::clone(master));
                self.resend(ctx.routing.current()).ok_or_else(bad_gateway)
            }
            Step::Resend => {
                tracing::info!(master = %master.name, "request rescued from a demoted master; sending it to the new active master");
                let gateway_timeout = || {
                    responses::answer(Answer::GatewayTimeout, master, &why, &settings.retry_after)
                };
                self.resend(ctx.routing.current())
                    .ok_or_else(gateway_timeout)
            }
            Step::AwaitDemotionUnsent => {
                let next = await_demotion(ctx, master, &why, settings.down_confirmation).await;
                self.snapshot = next.ok_or_else(bad_gateway)?;
                unsent.ok_or_else(bad_gateway)
            }
            Step::WaitForDemotion => {
                // The replay, on a fresh connection, broke too: the master may be dying
                // (killed, but its socket still accepting for a moment). Its health
                // checks decide, never this client: wait for them to demote it.
                let next = demoted_within(ctx, master, settings.down_confirmation)
                    .await
                    .ok_or_else(bad_gateway)?;
                tracing::info!(master = %master.name, error = %why,
                    "request broke twice on a master that was then demoted; sending it to the new active master");
                self.resend(next).ok_or_else(bad_gateway)
            }
        }
    }

    /// Reports the failed connect to the owner; the snapshot without `master` as the
    /// active one, or None (no owner, or still active after `hold`).
    async fn report(
        &mut self,
        ctx: &ProxyContext,
        master: &Arc<Master>,
        why: &Why,
        hold: Duration,
    ) -> Option<Arc<Snapshot>> {
        self.connect_failures += 1;
        let reported = ctx
            .owner
            .failed_connect(master, why.to_string(), self.connect_failures)
            .await?;
        // Standalone, the owner has demoted it already. In cluster mode the pool
        // decides: wait for its pointer to move (as for a promotion).
        if still_active(&reported, master) {
            demoted_within(ctx, master, hold).await
        } else {
            Some(reported)
        }
    }

    /// A copy of the request for the active master of `snapshot`, on a fresh
    /// connection; None when no copy may be sent.
    fn resend(&mut self, snapshot: Arc<Snapshot>) -> Option<Request<UpstreamBody>> {
        let copy = self.exchange.replay.again()?;
        self.snapshot = snapshot;
        self.fresh_only = true;
        Some(copy)
    }
}

/// The request given up before it was sent, for the active master of now: its master
/// was demoted while a connection was found (`Why::Demoted`), or (cluster mode) the
/// snapshot's time to act ran out meanwhile (`Why::Expired`: this instance was frozen,
/// say), and nothing may go out on it; the snapshot of now holds the request until
/// the pool confirms a master.
fn abandoned(request: Request<UpstreamBody>, why: Why) -> Failed {
    Failed {
        failure: Failure::ConnectAbandoned,
        why,
        unsent: Some(request),
        reused: false,
    }
}

/// While a master is being promoted (fenced, reloaded, started), or in cluster mode
/// while a new pointer opens or this instance's view awaits confirmation, requests
/// wait rather than fail: returns the snapshot with a master to send to, or None when
/// nothing is awaited or `hold_timeout` ran out (then: 503).
async fn hold(
    ctx: &ProxyContext,
    snapshot: &Snapshot,
    hold_timeout: Duration,
) -> Option<Arc<Snapshot>> {
    if !snapshot.holds_requests() {
        return None;
    }
    let mut snapshots = ctx.routing.subscribe();
    let deadline = tokio::time::Instant::now() + hold_timeout;
    loop {
        let current = Arc::clone(&snapshots.borrow_and_update());
        if current.can_route() {
            return Some(current);
        }
        if !current.holds_requests() {
            return None;
        }
        tokio::select! {
            changed = snapshots.changed() => changed.ok()?,
            () = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// The master's response, streamed, without its hop-by-hop headers; a 101 to an
/// upgrade request starts the tunnel. `sender`: hyper's connection it came on, to go
/// back to the pool (our own client's connection goes back by itself).
fn respond(
    master: &Arc<Master>,
    sender: Option<SendRequest<UpstreamBody>>,
    mut response: Response<MasterBody>,
    exchange: &mut Exchange,
) -> Response<ProxyBody> {
    let settings = &exchange.settings;
    let mut returner = None;
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match (switching, exchange.upgrade.take()) {
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
            returner = sender.map(|sender| master.upstream.returner(sender));
            strip_hop_by_hop(response.headers_mut());
        }
    }
    if !settings.advertised.is_empty() {
        let host = exchange.request_host.as_ref().and_then(|h| h.to_str().ok());
        jnlp::rewrite(response.headers_mut(), &settings.advertised, host);
    }
    let idle_timeout = settings.response_idle_timeout;
    response.map(|body| Either::Left(Streamed::new(body, idle_timeout, returner)))
}

/// TLS with `master` failed (its certificate, most often): no proof it is down, so
/// its health checks decide, failing the same way. Waits up to `bound` for them to
/// demote it; the snapshot that did, or None.
async fn await_demotion(
    ctx: &ProxyContext,
    master: &Arc<Master>,
    why: &Why,
    bound: std::time::Duration,
) -> Option<Arc<Snapshot>> {
    tracing::warn!(master = %master.name, error = %why,
        "TLS with the master failed; waiting for the health checks to demote it");
    demoted_within(ctx, master, bound).await
}
