//! Our own HTTP/1.1 server for the common request: a GET, HEAD or OPTIONS without a
//! body, upgrade or expectation (nearly every request a Jenkins master gets). Its head
//! is parsed once, into the request the proxy forwards (the values share the bytes
//! read), and the response is written straight to the client's socket: no second
//! codec, no second reading by the framing guard, and no buffer held by a connection
//! waiting for its next request (`buffers`: read buffers are lent per request).
//!
//! The first request that is anything else (a body, an upgrade, HTTP/1.0, HTTP/2, a
//! head hyper refuses), and everything after it on that connection, goes to hyper's
//! server as before, with the bytes already read handed over unread,
//! and the framing guard reading them from the start of that request. So everything
//! hyper judged before (the smuggling refusals, 400 and 431, h2c, upgrades, bodies) it
//! still judges; this server only ever sees heads without a body.
//!
//! - this file: one connection's loop, request after request.
//! - `request`: the head read into a request, or left for hyper.
//! - `response`: the response head, and how its body is framed.
//! - `buffers`: the read buffers each worker lends its connections.

mod buffers;
mod request;
mod response;

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper::body::Body;
use hyper::header::CONNECTION;
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

pub use buffers::ClientStream;
use request::{read_head, Common, Read};
use response::{put_chunk_size, write_head, Framing, LAST_CHUNK};

use super::{responses, Peer, ProxyBody};
use crate::upstream::UpstreamBody;

use buffers::READ_BUF;
/// A body frame up to this size is copied behind the head (one write for both);
/// a larger one is written from where it lies.
const COPY_MAX: usize = 16 * 1024;
/// The write buffer is sent once it holds this much.
const FLUSH_AT: usize = 64 * 1024;
/// A write buffer larger than this is not kept between responses.
const KEEP_OUT: usize = 4 * 1024;

/// The limits of one client connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `proxy.header_read_timeout`: for each request head, counted from the end of the
    /// previous response (or from the accept): an idle connection closes after it.
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// How a connection left this server.
pub enum Ended<S> {
    /// It is closed (or the proxy is shutting down, or the client left).
    Closed,
    /// A request for hyper's server came: it takes the connection from that request on.
    /// `read`: the bytes read of it so far, from the start of that request.
    HandOff { stream: S, read: Bytes },
}

/// Serves common requests on `stream` until it closes or a request for hyper comes.
/// `closing` changes when the proxy shuts down: the response in progress is finished
/// (`Connection: close`), an idle connection closes at once.
pub async fn serve<S, H, F>(
    mut stream: S,
    peer: Peer,
    handler: &H,
    limits: Limits,
    closing: &mut watch::Receiver<()>,
) -> Ended<S>
where
    S: ClientStream,
    H: Fn(Request<UpstreamBody>, Peer) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    // Lent by the worker's pool while a request is read (see `buffers`).
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut idle = pin!(tokio::time::sleep(limits.header_read_timeout));
    loop {
        let next = next_head(&mut stream, &mut buf, limits, idle.as_mut(), closing).await;
        let Common { request, close } = match next {
            Next::Common(common) => common,
            Next::HandOff => {
                let read = buf.freeze();
                return Ended::HandOff { stream, read };
            }
            Next::Invalid(why) => {
                tracing::debug!(client = %peer.client, "refused a request head: {why}");
                let refusal = responses::plain(
                    StatusCode::BAD_REQUEST,
                    &format!("jenkins-ha-proxy: {why}\n"),
                );
                let _ = write_response(&mut stream, &mut out, refusal, false, true).await;
                return Ended::Closed;
            }
            Next::Closed => return Ended::Closed,
        };
        let head_request = request.method() == Method::HEAD;
        let answering = handler(request, peer);
        let Some(response) =
            unless_client_leaves(&mut stream, &mut buf, answering, limits.max_header_bytes).await
        else {
            tracing::debug!("the client left before its response: request cancelled");
            return Ended::Closed;
        };
        // A shutdown (or a dropped accept loop) closes the connection after this one.
        let closing_now = closing.has_changed().unwrap_or(true);
        let says_close = says_close(&response);
        let close = close || closing_now || says_close;
        let kept = write_response(
            &mut stream,
            &mut out,
            response,
            head_request,
            close && !says_close,
        )
        .await;
        if !kept || close {
            let _ = stream.shutdown().await;
            return Ended::Closed;
        }
        if out.capacity() > KEEP_OUT {
            out = BytesMut::new();
        }
        idle.as_mut()
            .reset(Instant::now() + limits.header_read_timeout);
    }
}

/// What a connection sends next.
#[allow(clippy::large_enum_variant)] // as `Read`
enum Next {
    Common(Common),
    HandOff,
    Invalid(&'static str),
    Closed,
}

/// Reads until `buf` starts with a whole request head, within the `idle` deadline.
async fn next_head<S: ClientStream>(
    stream: &mut S,
    buf: &mut BytesMut,
    limits: Limits,
    mut idle: Pin<&mut Sleep>,
    closing: &mut watch::Receiver<()>,
) -> Next {
    if buf.is_empty() {
        // Nothing of the next request yet: the buffer waits in the pool meanwhile.
        buffers::give(std::mem::take(buf));
        let ready = stream.ready_to_read();
        if !matches!(
            unless_idle(ready, idle.as_mut(), closing).await,
            Some(Ok(()))
        ) {
            return Next::Closed;
        }
        *buf = buffers::take();
    }
    loop {
        match read_head(buf, limits.max_headers, limits.max_header_bytes) {
            Read::Common(common) => return Next::Common(common),
            Read::Other => return Next::HandOff,
            Read::Invalid(why) => return Next::Invalid(why),
            Read::Partial => {}
        }
        make_room(buf);
        let read = stream.read_buf(buf);
        if !matches!(
            unless_idle(read, idle.as_mut(), closing).await,
            Some(Ok(1..))
        ) {
            return Next::Closed;
        }
    }
}

/// `io`'s outcome, unless the connection's `idle` deadline passes or the proxy shuts
/// down first.
async fn unless_idle<T>(
    io: impl Future<Output = std::io::Result<T>>,
    idle: Pin<&mut Sleep>,
    closing: &mut watch::Receiver<()>,
) -> Option<std::io::Result<T>> {
    tokio::select! {
        biased;
        outcome = io => Some(outcome),
        () = idle => {
            tracing::debug!("no request within header_read_timeout: closing");
            None
        }
        // Err: the accept loop is gone without a word; close as well.
        _ = closing.changed() => None,
    }
}

/// Room in `buf` for one more read of a useful size.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 512 {
        buf.reserve(READ_BUF);
    }
}

/// The response `answering` makes, unless the client closes its connection first
/// (then the request is dropped, and with it its connection to the master). What the
/// client pipelines meanwhile is kept in `buf`, up to `max` bytes.
async fn unless_client_leaves<S, F>(
    stream: &mut S,
    buf: &mut BytesMut,
    answering: F,
    max: usize,
) -> Option<Response<ProxyBody>>
where
    S: AsyncRead + Unpin,
    F: Future<Output = Response<ProxyBody>>,
{
    let mut answering = pin!(answering);
    loop {
        make_room(buf);
        tokio::select! {
            biased;
            response = answering.as_mut() => return Some(response),
            read = stream.read_buf(buf), if buf.len() < max => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}

/// The response says `Connection: close` (one of the proxy's own answers).
fn says_close(response: &Response<ProxyBody>) -> bool {
    response
        .headers()
        .get_all(CONNECTION)
        .iter()
        .any(|value| value.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// Writes `response` (its body streamed as it comes); false when the connection
/// cannot carry another request (the client left, the body failed or did not match
/// its length).
async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut BytesMut,
    response: Response<ProxyBody>,
    head_request: bool,
    close: bool,
) -> bool {
    let framing = write_head(out, &response, head_request, close);
    let body = response.into_body();
    if framing == Framing::Empty {
        // Never polled: a HEAD response's master connection goes back as it is dropped.
        drop(body);
        return send(stream, out, None).await.is_ok();
    }
    let mut body = pin!(body);
    let mut left = match framing {
        Framing::Length(length) => Some(length),
        _ => None,
    };
    let chunked = framing == Framing::Chunked;
    loop {
        // What the body has now goes out with what is buffered; the buffer is sent
        // before waiting for more (a followed console log must not wait behind it).
        let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if send(stream, out, None).await.is_err() {
                    return false;
                }
                poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => {
                if chunked {
                    out.put_slice(LAST_CHUNK);
                }
                let sent = send(stream, out, None).await.is_ok();
                return sent && left.unwrap_or(0) == 0;
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "the response body failed: closing the client connection");
                let _ = send(stream, out, None).await;
                return false;
            }
            // Trailers are not sent to HTTP/1 clients (hyper's server drops them too).
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        let (data, overflow) = within(data, &mut left);
        if !data.is_empty() && !put_data(stream, out, data, chunked).await {
            return false;
        }
        if overflow {
            tracing::debug!("the response body is longer than its Content-Length: closing");
            let _ = send(stream, out, None).await;
            return false;
        }
    }
}

/// `data` cut to the `left` bytes of a sized body (and whether it was longer).
fn within(mut data: Bytes, left: &mut Option<u64>) -> (Bytes, bool) {
    let Some(left) = left else {
        return (data, false);
    };
    let overflow = data.len() as u64 > *left;
    if overflow {
        data.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
    }
    *left -= data.len() as u64;
    (data, overflow)
}

/// Adds one piece of body to what is buffered; sends when the buffer is full or the
/// piece is large (then from where it lies). False when the client is gone.
async fn put_data<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut BytesMut,
    data: Bytes,
    chunked: bool,
) -> bool {
    if chunked {
        put_chunk_size(out, data.len());
    }
    if data.len() <= COPY_MAX {
        out.put_slice(&data);
    } else if send(stream, out, Some(data)).await.is_err() {
        return false;
    }
    if chunked {
        out.put_slice(b"\r\n");
    }
    out.len() < FLUSH_AT || send(stream, out, None).await.is_ok()
}

/// Writes what `out` holds, then `data` (one vectored write where the socket takes it).
/// `out` alone goes out with a plain write: on a socket that is `send(2)`, which costs
/// the kernel less than `writev(2)` of a single buffer.
async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut BytesMut,
    data: Option<Bytes>,
) -> std::io::Result<()> {
    match data {
        Some(data) => stream.write_all_buf(&mut (&mut *out).chain(data)).await?,
        None if out.is_empty() => return Ok(()),
        None => stream.write_all(out).await?,
    }
    out.clear();
    stream.flush().await
}
