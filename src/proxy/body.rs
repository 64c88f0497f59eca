//! The response body handed to the client: the master's body streamed frame by frame
//! (flushed as it arrives), optionally ended by `proxy.response_idle_timeout` when the
//! master goes quiet. Nothing else ends a long response (console logs, long polls).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::access::AccessEntry;
use crate::upstream::{RawBody, RawHome, Returner};

/// A master's response body: from hyper's client, or read by our own (`upstream::h1`).
pub enum MasterBody {
    Hyper(Incoming),
    Raw(RawBody<RawHome>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for MasterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match self.get_mut() {
            MasterBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            MasterBody::Raw(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
        };
        polled
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MasterBody::Hyper(body) => body.is_end_stream(),
            MasterBody::Raw(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MasterBody::Hyper(body) => body.size_hint(),
            MasterBody::Raw(body) => body.size_hint(),
        }
    }
}

/// Error a streamed response ends with when the master stays silent too long.
#[derive(Debug, thiserror::Error)]
#[error("no data from the master for {}", humantime::format_duration(*.0))]
pub struct ResponseIdle(pub Duration);

/// The master's response body, with an optional idle timeout and access log line.
pub struct Streamed {
    inner: MasterBody,
    /// Some only when `response_idle_timeout` is set: then no timer costs anything.
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    /// Some only when the access log is on; written when the body is dropped.
    access: Option<Box<AccessEntry>>,
    /// Gives the upstream connection back to the pool once the body has ended.
    returner: Option<Returner>,
    bytes: u64,
    complete: bool,
}

impl Streamed {
    pub fn new(
        inner: MasterBody,
        idle_timeout: Option<Duration>,
        returner: Option<Returner>,
    ) -> Streamed {
        let idle = idle_timeout.map(|timeout| (timeout, Box::pin(tokio::time::sleep(timeout))));
        Streamed {
            inner,
            idle,
            access: None,
            returner,
            bytes: 0,
            complete: false,
        }
    }
}

impl Streamed {
    /// Writes `entry` to the access log once the body is done (or dropped).
    pub fn log_when_done(&mut self, entry: AccessEntry) {
        self.access = Some(Box::new(entry));
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304) may never be polled: its connection is reusable.
        if self.inner.is_end_stream() {
            if let Some(returner) = self.returner.take() {
                returner.give_back();
            }
        }
        if let Some(access) = &self.access {
            access.log(self.bytes, self.complete || self.inner.is_end_stream());
        }
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some((timeout, sleep)) = self.idle.as_mut() {
                    sleep.as_mut().reset(Instant::now() + *timeout);
                }
                match &frame {
                    Some(Ok(data)) => {
                        self.bytes += data.data_ref().map_or(0, |d| d.len() as u64);
                    }
                    None => {
                        self.complete = true;
                        if let Some(returner) = self.returner.take() {
                            returner.give_back();
                        }
                    }
                    Some(Err(_)) => {}
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let Some((timeout, sleep)) = self.idle.as_mut() else {
                    return Poll::Pending;
                };
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(ResponseIdle(*timeout).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts itself open on its client connection until it is
/// dropped (sent to the end, or abandoned), so that the connection's idle timer never
/// closes a connection with a response still going.
pub struct Tracked<B> {
    body: B,
    _open: OpenResponse,
}

impl<B> Tracked<B> {
    pub fn new(body: B, findings: &std::sync::Arc<super::framing::Findings>) -> Tracked<B> {
        findings.response_opened();
        Tracked {
            body,
            _open: OpenResponse(std::sync::Arc::clone(findings)),
        }
    }
}

/// Counts one open response of a connection until dropped.
struct OpenResponse(std::sync::Arc<super::framing::Findings>);

impl Drop for OpenResponse {
    fn drop(&mut self) {
        self.0.response_closed();
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
