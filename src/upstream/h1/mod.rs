//! Our own HTTP/1.1 client for the request path's most common request: a GET, HEAD or
//! OPTIONS without a body and without `Upgrade`. It runs in the client connection's
//! task (no connection task, no channel between the two, no second header map for
//! the request), and its response body reads straight from the master's socket.
//! Everything else (request bodies, upgrades) goes through hyper's client as before.
//!
//! Why it is safe to have two clients: they never share a connection (the pool keeps
//! each kind apart), and this one carries only requests that may be sent again, so a
//! pooled connection the master closed meanwhile costs a replay, never a failed
//! request (`proxy::retry`).
//!
//! - this file: [`RawConnection`], one connection to a master, and one exchange on it.
//! - `head`: writing the request head, reading the response head and its framing.
//! - `chunked`: decoding a chunked response body.
//! - `body`: [`RawBody`], the response body read from the connection, which goes back
//!   to the pool when the body ends.

mod body;
mod chunked;
mod head;

use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use hyper::{Method, Response};
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;

pub use body::{GiveBack, RawBody};
use head::parse_response_head;
pub use head::write_request_head;

use super::attachments::Attachment;
use super::stream::MasterStream;

/// Read buffer while reading a head; a body streams through reads of up to `BODY_READ`.
const HEAD_READ: usize = 8 * 1024;
const BODY_READ: usize = 64 * 1024;
/// A connection goes back to the pool with at most this much buffer kept.
const KEEP_BUFFER: usize = 16 * 1024;

/// Why an exchange on a [`RawConnection`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// Writing the request failed before any byte of it went out: it was never sent.
    #[error("the connection was closed before the request was sent: {0}")]
    Unsent(#[source] io::Error),
    /// The connection broke after the request went out, before the whole head came.
    #[error("the connection broke before the response head: {0}")]
    Broke(#[source] io::Error),
    #[error("the master closed the connection before sending a response")]
    Closed,
    #[error(transparent)]
    Head(#[from] head::HeadError),
    #[error("the master was drained (demoted or disabled) while the response streamed")]
    Drained,
}

/// One HTTP/1.1 connection to a master for this client, busy or idle in the pool.
/// Boxed once when opened: the response body carries it, and a response is moved
/// by value several times on its way to the client.
pub struct RawConnection(Box<Link>);

/// What a [`RawConnection`] holds.
pub struct Link {
    stream: MasterStream,
    /// Bytes read from the master and not handed out yet.
    buf: BytesMut,
    /// One of the master's `max_connections`, for as long as the connection lives.
    _permit: OwnedSemaphorePermit,
    /// Counts it in the master's connections; its switch closes it (a drain).
    attachment: Attachment,
}

impl std::ops::Deref for RawConnection {
    type Target = Link;

    fn deref(&self) -> &Link {
        &self.0
    }
}

impl std::ops::DerefMut for RawConnection {
    fn deref_mut(&mut self) -> &mut Link {
        &mut self.0
    }
}

impl RawConnection {
    pub fn new(
        stream: MasterStream,
        permit: OwnedSemaphorePermit,
        attachment: Attachment,
    ) -> RawConnection {
        RawConnection(Box::new(Link {
            stream,
            buf: BytesMut::new(),
            _permit: permit,
            attachment,
        }))
    }

    /// The master was drained since this connection opened: it must close.
    pub fn is_drained(&self) -> bool {
        self.attachment.is_closed()
    }

    /// Fit for another request: not drained, nothing unread, and (over plain TCP) not
    /// closed by the master while it was idle.
    pub fn usable(&self) -> bool {
        if self.attachment.is_closed() || !self.buf.is_empty() {
            return false;
        }
        match &self.stream {
            MasterStream::Plain(tcp) => {
                matches!(tcp.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            // TLS cannot be peeked at without decrypting; a closed one costs a replay.
            MasterStream::Tls(_) => true,
        }
    }

    /// Sends the request `head` (a body-less request) and reads the response head; the
    /// response's body reads from this connection, and `home` takes the connection back
    /// once it is read to the end.
    pub async fn send<G: GiveBack>(
        mut self,
        head: &[u8],
        method: &Method,
        home: G,
    ) -> Result<Response<RawBody<G>>, RawError> {
        self.write_head(head).await?;
        let head_request = method == Method::HEAD;
        loop {
            if let Some(head) = parse_response_head(&mut self.buf, head_request)? {
                return Ok(body::response(head, self, home));
            }
            match std::future::poll_fn(|cx| self.poll_fill(cx, HEAD_READ)).await {
                Ok(0) => return Err(RawError::Closed),
                Ok(_) => {}
                Err(error) => return Err(RawError::Broke(error)),
            }
        }
    }

    /// Writes `head`; a failure before its first byte went out leaves it unsent.
    async fn write_head(&mut self, head: &[u8]) -> Result<(), RawError> {
        let written = match self.stream.write(head).await {
            Ok(0) => return Err(RawError::Unsent(io::ErrorKind::WriteZero.into())),
            Ok(written) => written,
            Err(error) => return Err(RawError::Unsent(error)),
        };
        self.stream
            .write_all(&head[written..])
            .await
            .map_err(RawError::Broke)?;
        self.stream.flush().await.map_err(RawError::Broke)
    }

    /// Reads what the master sent into the buffer (at most `want` more bytes of room
    /// are made); Ok(0) at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < want / 2 {
            self.buf.reserve(want);
        }
        let link = &mut *self.0;
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut link.stream), cx, &mut link.buf)
    }

    /// Ready for the pool: a buffer grown by a large body is let go.
    fn trimmed(mut self) -> RawConnection {
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = BytesMut::new();
        }
        self
    }
}
