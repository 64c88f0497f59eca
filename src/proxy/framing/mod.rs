//! A second reading of each client's HTTP/1 request stream, to refuse the heads whose
//! length is stated two ways: Content-Length together with Transfer-Encoding, and
//! Content-Length more than once.
//!
//! hyper accepts both. It frames the first by Transfer-Encoding alone (closing the
//! connection afterwards), and keeps one copy of a repeated equal Content-Length. Both
//! are what RFC 9112 section 6.1 allows, but hyper then hands the service a head with
//! the evidence removed. A front door should refuse such a request outright: its sender
//! is broken, or probing for a parser behind us that disagrees on where the request
//! ends (request smuggling).
//!
//! So [`FramingGuard`] sits between the client's socket and hyper, and hands every
//! byte hyper reads to a [`Scanner`] as well. The scanner follows the HTTP/1 framing as
//! hyper does (heads through httparse with hyper's settings, Content-Length bodies, the
//! chunked grammar as hyper's decoder accepts it) and records in [`Findings`] the
//! number of the first head to refuse. The connection's service counts the requests
//! hyper gives it and refuses the one with that number. A head is always read before
//! its request is served, so the finding is there in time.
//!
//! The scanner stops looking for the rest of the connection where the stream stops
//! being HTTP/1 requests it can follow: an upgrade or CONNECT (a tunnel may follow), an
//! HTTP/2 preface, a head or chunk that hyper would fail the connection on anyway, or a
//! head larger than hyper would buffer. What it did not check is left to hyper alone,
//! which is safe (one framing, the connection closed), only less strict. After a
//! refusal it stops too: the refusal closes the connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

mod scanner;

pub use scanner::Scanner;

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Content-Length and Transfer-Encoding in one head.
    LengthAndTransferEncoding = 1,
    /// Content-Length more than once (equal values; hyper refuses different ones).
    RepeatedContentLength = 2,
}

impl Refusal {
    /// The 400 body: what was wrong, and what the client should send instead.
    pub fn explanation(self) -> &'static str {
        match self {
            Refusal::LengthAndTransferEncoding => {
                "jenkins-ha-proxy: a request with both Content-Length and Transfer-Encoding \
                 is refused: its length is ambiguous (RFC 9112 section 6.1). Send one of them.\n"
            }
            Refusal::RepeatedContentLength => {
                "jenkins-ha-proxy: a request with more than one Content-Length header is \
                 refused. Send exactly one.\n"
            }
        }
    }

    fn from_code(code: u8) -> Option<Refusal> {
        match code {
            1 => Some(Refusal::LengthAndTransferEncoding),
            2 => Some(Refusal::RepeatedContentLength),
            _ => None,
        }
    }
}

/// A head to refuse: its number on the connection (the first is 1) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub head: u64,
    pub refusal: Refusal,
}

/// What one connection's scanner found, for the same connection's service.
///
/// Written by [`FramingGuard::poll_read`] (hyper reading the socket) and by the service
/// (counting requests); both run in the connection's task.
#[derive(Debug, Default)]
pub struct Findings {
    /// Requests given to the service so far. Written by the service; read by it and
    /// by the connection's idle timer.
    requests: AtomicU64,
    /// Number of the head to refuse, 0 for none. Written by the reader, once.
    refuse_head: AtomicU64,
    /// `Refusal` code of `refuse_head`; stored before it.
    reason: AtomicU8,
    /// Responses not yet sent to the end (or dropped). Written by the service's
    /// response bodies (`super::body::Tracked`); read by the idle timer, which never
    /// closes a connection with one open.
    open_responses: AtomicU64,
}

impl Findings {
    /// Counts one request handed to the service: the refusal, if it is the request
    /// whose head the scanner refused. (HTTP/1 requests are served in the order of
    /// their heads; on HTTP/2 the scanner has stopped and nothing is refused.)
    pub fn next_request(&self) -> Option<Refusal> {
        let number = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if self.refuse_head.load(Ordering::Acquire) != number {
            return None;
        }
        Refusal::from_code(self.reason.load(Ordering::Relaxed))
    }

    /// Requests given to the service so far (0: the connection has not spoken yet).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Responses of this connection still being sent.
    pub fn open_responses(&self) -> u64 {
        self.open_responses.load(Ordering::Relaxed)
    }

    pub(super) fn response_opened(&self) {
        self.open_responses.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn response_closed(&self) {
        self.open_responses.fetch_sub(1, Ordering::Relaxed);
    }

    fn record(&self, refused: Refused) {
        self.reason.store(refused.refusal as u8, Ordering::Relaxed);
        self.refuse_head.store(refused.head, Ordering::Release);
    }
}

/// The client's socket, with every byte read also given to a [`Scanner`]. Bytes our
/// own HTTP/1 server read before it handed the connection over (`super::h1`) are read
/// first, and scanned as any others.
pub struct FramingGuard<S> {
    inner: S,
    already_read: Bytes,
    scanner: Scanner,
    findings: std::sync::Arc<Findings>,
}

impl<S> FramingGuard<S> {
    pub fn new(
        inner: S,
        already_read: Bytes,
        scanner: Scanner,
        findings: std::sync::Arc<Findings>,
    ) -> Self {
        FramingGuard {
            inner,
            already_read,
            scanner,
            findings,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if this.already_read.is_empty() {
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        } else {
            let len = this.already_read.len().min(buf.remaining());
            buf.put_slice(&this.already_read.split_to(len));
        }
        if let Some(refused) = this.scanner.feed(&buf.filled()[before..]) {
            this.findings.record(refused);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // hyper writes head and body in one writev when this says so.
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What our own server read before the hand-over is read first, and scanned: a
    /// head refused there is found as if it had come from the socket.
    #[tokio::test]
    async fn bytes_read_before_the_hand_over_come_first_and_are_scanned() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"rest").await.unwrap();
        drop(client);
        let findings = std::sync::Arc::new(Findings::default());
        let already = "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n";
        let mut guard = FramingGuard::new(
            server,
            Bytes::from_static(already.as_bytes()),
            Scanner::new(64 * 1024, 100),
            std::sync::Arc::clone(&findings),
        );
        let mut small = [0u8; 10];
        guard.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"GET / HTTP");
        let mut rest = String::new();
        guard.read_to_string(&mut rest).await.unwrap();
        assert_eq!(format!("GET / HTTP{rest}"), format!("{already}rest"));
        assert_eq!(
            findings.next_request(),
            Some(Refusal::RepeatedContentLength)
        );
    }
}
