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

/// Error a streamed response ends with when the master stays silent too long.
#[derive(Debug, thiserror::Error)]
#[error("no data from the master for {}", humantime::format_duration(*.0))]
pub struct ResponseIdle(pub Duration);

/// The master's response body, with an optional idle timeout.
pub struct Streamed {
    inner: Incoming,
    /// Some only when `response_idle_timeout` is set: then no timer costs anything.
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl Streamed {
    pub fn new(inner: Incoming, idle_timeout: Option<Duration>) -> Streamed {
        let idle = idle_timeout.map(|timeout| (timeout, Box::pin(tokio::time::sleep(timeout))));
        Streamed { inner, idle }
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
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
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
