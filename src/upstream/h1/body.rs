//! A response body read from a [`RawConnection`]: data is handed out as it arrives,
//! read only as fast as the client takes it, and the connection goes back to its pool
//! the moment the body's last byte is read (before the client has it).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::Response;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::chunked::{Chunked, Decoded};
use super::head::{Framing, ResponseHead};
use super::{RawConnection, RawError, BODY_READ};

/// Takes a connection back when its response has been read to the end.
pub trait GiveBack: Send + Unpin + 'static {
    fn give_back(self, connection: RawConnection);
}

/// What is left of the body to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// The body of a response read by [`RawConnection::send`].
pub struct RawBody<G: GiveBack> {
    /// None once the body is read (given back or closed).
    connection: Option<RawConnection>,
    left: Left,
    /// Data read with the head, handed out at the first poll.
    ready: Option<Bytes>,
    /// The connection may carry another request after this body.
    keep_alive: bool,
    home: Option<G>,
    /// The drain's switch, watched only while a read waits (boxed: rarely needed).
    drained: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

/// The response for `head`, read from `connection`: a body already in the buffer is
/// taken at once, and the connection given back right away.
pub(super) fn response<G: GiveBack>(
    head: ResponseHead,
    connection: RawConnection,
    home: G,
) -> Response<RawBody<G>> {
    let mut body = RawBody {
        connection: Some(connection),
        left: match head.framing {
            Framing::Empty => Left::Done,
            Framing::Length(length) => Left::Length(length),
            Framing::Chunked => Left::Chunked(Chunked::new()),
            Framing::UntilClose => Left::UntilClose,
        },
        ready: None,
        keep_alive: head.keep_alive,
        home: Some(home),
        drained: None,
    };
    if let (Left::Length(length), Some(connection)) = (body.left, body.connection.as_mut()) {
        if connection.buf.len() as u64 >= length {
            // In range: length <= buf.len().
            body.ready = Some(connection.buf.split_to(length as usize).freeze());
            body.left = Left::Done;
        }
    }
    if body.left == Left::Done {
        body.finish();
    }
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    response
}

impl<G: GiveBack> RawBody<G> {
    /// The body is read: the connection goes home if it can carry another request.
    fn finish(&mut self) {
        self.left = Left::Done;
        let (Some(connection), Some(home)) = (self.connection.take(), self.home.take()) else {
            return;
        };
        if self.keep_alive && connection.buf.is_empty() && !connection.attachment.is_closed() {
            home.give_back(connection.trimmed());
        }
    }

    /// The next piece of the body that is in the buffer already, if any.
    fn take_buffered(&mut self) -> Result<Option<Bytes>, RawError> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(None);
        };
        let buf = &mut connection.buf;
        match &mut self.left {
            Left::Done => Ok(None),
            Left::Length(_) | Left::UntilClose if buf.is_empty() => Ok(None),
            Left::Length(left) => {
                let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
                *left -= take as u64;
                let data = buf.split_to(take).freeze();
                if *left == 0 {
                    self.finish();
                }
                Ok(Some(data))
            }
            Left::UntilClose => Ok(Some(buf.split().freeze())),
            Left::Chunked(decoder) => match decoder.decode(buf) {
                Ok(Decoded::Data(data)) => Ok(Some(data)),
                Ok(Decoded::End) => {
                    self.finish();
                    Ok(None)
                }
                Ok(Decoded::NeedMore) => Ok(None),
                Err(error) => Err(RawError::Broke(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    error,
                ))),
            },
        }
    }
}

impl<G: GiveBack> Body for RawBody<G> {
    type Data = Bytes;
    type Error = RawError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RawError>>> {
        if let Some(data) = self.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        loop {
            match self.take_buffered() {
                Ok(Some(data)) if data.is_empty() => continue,
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
                Err(error) => {
                    self.connection = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            if self.left == Left::Done {
                return Poll::Ready(None);
            }
            let Some(connection) = self.connection.as_mut() else {
                return Poll::Ready(None);
            };
            match connection.poll_fill(cx, BODY_READ) {
                Poll::Ready(Ok(0)) if self.left == Left::UntilClose => {
                    self.connection = None;
                    self.left = Left::Done;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    self.connection = None;
                    return Poll::Ready(Some(Err(RawError::Closed)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    self.connection = None;
                    return Poll::Ready(Some(Err(RawError::Broke(error))));
                }
                Poll::Pending => return self.poll_drained(cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == Left::Done && self.ready.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let ready = self.ready.as_ref().map_or(0, |data| data.len() as u64);
        match self.left {
            Left::Done => SizeHint::with_exact(ready),
            Left::Length(left) => SizeHint::with_exact(ready + left),
            Left::Chunked(_) | Left::UntilClose => SizeHint::default(),
        }
    }
}

impl<G: GiveBack> RawBody<G> {
    /// While a read waits: ends the body with an error if the master is drained.
    fn poll_drained(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RawError>>> {
        let Some(connection) = self.connection.as_ref() else {
            return Poll::Ready(None);
        };
        let drained = self
            .drained
            .get_or_insert_with(|| Box::pin(connection.attachment.closing()));
        match drained.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.connection = None;
                Poll::Ready(Some(Err(RawError::Drained)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
