//! Read buffers lent to client connections while they read a request, kept per worker
//! thread. A connection waiting for its next request holds none: its idle cost is its
//! task and socket alone, and the few buffers in use stay warm in the cache, where a
//! buffer per connection (hundreds, touched in turn) would not.

use std::cell::RefCell;
use std::future::Future;
use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The size of a read buffer: a request head, and what a client pipelines after it.
pub const READ_BUF: usize = 4 * 1024;
/// Buffers kept per worker for the next request; more are freed.
const KEEP: usize = 128;

thread_local! {
    /// This worker's idle buffers, the last given back on top.
    static IDLE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer for reading a request: this worker's last idle one, or a new one.
pub fn take() -> BytesMut {
    IDLE.with(|idle| idle.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_BUF))
}

/// Gives back an empty buffer. Its whole allocation is reclaimed once nothing else
/// refers to it (the last request's head is gone by now); a shared one is replaced.
pub fn give(mut buf: BytesMut) {
    buf.clear();
    buf.reserve(READ_BUF);
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        if idle.len() < KEEP {
            idle.push(buf);
        }
    });
}

/// A client connection's stream, as our own server reads it.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin {
    /// Completes when a read would find bytes (or the end); a stream that cannot tell
    /// without reading completes at once.
    fn ready_to_read(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

impl ClientStream for TcpStream {
    fn ready_to_read(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.readable()
    }
}

/// TLS may hold decrypted bytes already: it reads with its buffer at once.
impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn ready_to_read(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_whole() {
        let mut buf = take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split().freeze();
        drop(head);
        let address = buf.as_ptr() as usize;
        give(buf);
        let again = take();
        assert!(again.is_empty());
        assert!(again.capacity() >= READ_BUF, "{}", again.capacity());
        // The same allocation, from its start.
        assert!(again.as_ptr() as usize <= address);
    }
}
