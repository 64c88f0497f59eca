//! One attempt through our own HTTP/1 client (`crate::upstream::h1`): the common
//! request, a GET, HEAD or OPTIONS without a body or upgrade.

use std::sync::Arc;

use hyper::{Request, Response};

use super::super::body::MasterBody;
use super::super::demotion::{unless_demoted, wait_for_head, Waited};
use super::super::headers::FORWARDED_NAMES;
use super::super::retry::Failure;
use super::super::{ProxyBody, ProxyContext};
use super::{abandoned, respond, Failed, Sending, Why};
use crate::control::routing::Master;
use crate::upstream::{write_request_head, RawError, UpstreamBody};

impl Sending {
    /// [`Sending::attempt`] for a replayable request without a body or upgrade (most
    /// requests): through our own HTTP/1 client (`upstream::h1`), in this task. The
    /// failures are those of hyper's client, classified the same way.
    pub(super) async fn attempt_raw(
        &mut self,
        ctx: &ProxyContext,
        master: &Arc<Master>,
        request: Request<UpstreamBody>,
    ) -> Result<Response<ProxyBody>, Failed> {
        let wait = self.exchange.settings.hold_timeout;
        let fresh_only = std::mem::take(&mut self.fresh_only);
        let connecting = master.upstream.raw_connection(wait, fresh_only);
        let lease = match unless_demoted(ctx, master, connecting).await {
            Some(Ok(lease)) => lease,
            Some(Err(error)) => return Err(self.connect_failed(ctx, master, error, request)),
            None => return Err(abandoned(request, Why::Demoted)),
        };
        if self.snapshot.expired() {
            return Err(abandoned(request, Why::Expired));
        }
        let mut head = bytes::BytesMut::new();
        let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let forwarded = &self.exchange.forwarded;
        write_request_head(
            &mut head,
            (request.method(), target),
            request.headers(),
            &FORWARDED_NAMES,
            forwarded.fields(),
        );
        let reused = lease.reused;
        let sent = lease.connection.send(&head, request.method(), lease.home);
        let timeout = self.exchange.settings.request_timeout;
        let spent = |failure, why| Failed {
            failure,
            why,
            unsent: None,
            reused,
        };
        match wait_for_head(ctx, master, sent, true, timeout).await {
            Waited::Head(Ok(response)) => Ok(respond(
                master,
                None,
                response.map(MasterBody::Raw),
                &mut self.exchange,
            )),
            Waited::Head(Err(error @ RawError::Unsent(_))) => Err(Failed {
                failure: Failure::Unsent { reused },
                why: Why::Raw(error),
                unsent: Some(request),
                reused,
            }),
            failed => {
                // Spent: what may be sent again is this request's head.
                self.exchange.replay.keep(request);
                Err(match failed {
                    Waited::Head(Err(error)) => spent(Failure::Broke, Why::Raw(error)),
                    Waited::Rescued => spent(Failure::Demoted, Why::Demoted),
                    // TimedOut (a head is handled above).
                    _ => spent(Failure::HeadTimedOut, Why::NoHead),
                })
            }
        }
    }
}
