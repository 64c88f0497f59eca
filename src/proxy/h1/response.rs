//! The response head written to the client, and how its body is framed: what hyper's
//! server would write for the same response (RFC 9112 section 6). Pure but for the
//! clock of the `Date` field.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use hyper::body::Body;
use hyper::header::{CONTENT_LENGTH, DATE};
use hyper::{Response, StatusCode};

/// How the body after a response head is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, 1xx, 204, 304.
    Empty,
    /// Exactly this many bytes (the response's Content-Length, or its body's size).
    Length(u64),
    /// Chunked: a body of unknown size.
    Chunked,
}

/// Appends the head of `response` to `out` and says how its body is to be framed.
/// `head_request`: the request was HEAD. `close`: the connection ends after it.
pub fn write_head<B: Body>(
    out: &mut BytesMut,
    response: &Response<B>,
    head_request: bool,
    close: bool,
) -> Framing {
    let status = response.status();
    let headers = response.headers();
    let size = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>();
    out.reserve(size + 128);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    // Content-Length and Date are noted on the way (no hashed lookups afterwards).
    let (mut stated, mut dated) = (None, false);
    for (name, value) in headers {
        if name == CONTENT_LENGTH {
            stated = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        } else if name == DATE {
            dated = true;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match (no_body, stated, response.body().size_hint().exact()) {
        (true, _, _) => Framing::Empty,
        (false, Some(length), _) => Framing::Length(length),
        (false, None, Some(length)) => {
            // Formatted in place: BytesMut is a fmt::Write that cannot fail.
            let _ = write!(out, "content-length: {length}\r\n");
            Framing::Length(length)
        }
        (false, None, None) => {
            out.put_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
    };
    if !dated {
        out.put_slice(b"date: ");
        put_date(out);
        out.put_slice(b"\r\n");
    }
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    framing
}

/// The start of a chunk of `len` bytes.
pub fn put_chunk_size(out: &mut BytesMut, len: usize) {
    let _ = write!(out, "{len:x}\r\n");
}

/// The end of a chunked body (no trailers: HTTP/1 clients are not sent them).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

thread_local! {
    /// The `Date` value of the current second on this worker: formatted once a second,
    /// as hyper does.
    static NOW: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn put_date(out: &mut BytesMut) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    NOW.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second || cached.1.is_empty() {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        out.put_slice(cached.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{Full, StreamBody};

    fn head_of<B: Body>(
        response: &Response<B>,
        head_request: bool,
        close: bool,
    ) -> (String, Framing) {
        let mut out = BytesMut::new();
        let framing = write_head(&mut out, response, head_request, close);
        (String::from_utf8(out.to_vec()).unwrap(), framing)
    }

    fn unsized_body(
    ) -> StreamBody<futures_util::stream::Empty<Result<hyper::body::Frame<Bytes>, std::io::Error>>>
    {
        StreamBody::new(futures_util::stream::empty())
    }

    #[test]
    fn a_sized_body_gets_its_length_and_a_date() {
        let response = Response::new(Full::new(Bytes::from_static(b"hello")));
        let (head, framing) = head_of(&response, false, false);
        assert_eq!(framing, Framing::Length(5));
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: "),
            "{head}"
        );
        assert!(head.ends_with(" GMT\r\n\r\n"), "{head}");
    }

    #[test]
    fn the_stated_length_and_date_are_kept_and_close_is_said() {
        let mut response = Response::new(unsized_body());
        *response.status_mut() = StatusCode::NOT_FOUND;
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, "12".parse().unwrap());
        response.headers_mut().insert(DATE, "then".parse().unwrap());
        let (head, framing) = head_of(&response, false, true);
        assert_eq!(framing, Framing::Length(12));
        assert_eq!(
            head,
            "HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\ndate: then\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn an_unsized_body_is_chunked_and_some_have_none() {
        let mut response = Response::new(unsized_body());
        response.headers_mut().insert(DATE, "d".parse().unwrap());
        assert_eq!(head_of(&response, false, false).1, Framing::Chunked);
        assert!(head_of(&response, false, false)
            .0
            .contains("transfer-encoding: chunked\r\n"));
        assert_eq!(head_of(&response, true, false).1, Framing::Empty);
        for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
            *response.status_mut() = status;
            let (head, framing) = head_of(&response, false, false);
            assert_eq!(framing, Framing::Empty);
            assert!(!head.contains("transfer-encoding"), "{head}");
        }
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut out = BytesMut::new();
        put_chunk_size(&mut out, 255);
        assert_eq!(&out[..], b"ff\r\n");
    }
}
