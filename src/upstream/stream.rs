//! One stream type for a connection to a master, plain or TLS, so the HTTP client,
//! upgrades (hyper hands the same IO to the tunnel), health checks and REST calls
//! need no generics over the transport.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A connection to a master's HTTP port.
#[derive(Debug)]
pub enum MasterStream {
    Plain(TcpStream),
    /// Boxed: the TLS state is some hundreds of bytes, the TCP stream a few words.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MasterStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MasterStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            MasterStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MasterStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MasterStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            MasterStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MasterStream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            MasterStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MasterStream::Plain(stream) => stream.is_write_vectored(),
            MasterStream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MasterStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            MasterStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MasterStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            MasterStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
