//! Heads on the wire: the request head we write to a master, and the master's
//! response head read back (`httparse`, as hyper does), with how its body is framed.
//! Pure functions, no I/O.

use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes, BytesMut};
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING,
};
use hyper::{Method, StatusCode, Version};

/// Response header fields read at most (hyper's client default too).
pub const MAX_HEADERS: usize = 100;
/// A response head longer than this is refused.
pub const MAX_HEAD_BYTES: usize = 256 * 1024;

/// How the body after a response head ends (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the master closes the connection.
    UntilClose,
}

/// A response head as read from a master.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// The master's response head is not one we can forward.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the master sent an invalid response head: {0}")]
pub struct HeadError(pub &'static str);

/// Appends the request head for a body-less request to `out`: the method and target
/// (origin form, as prepared), HTTP/1.1, every header field of `headers` but those
/// named in `replaced`, then the fields of `added` (the proxy's X-Forwarded-*,
/// written here rather than inserted into the map).
pub fn write_request_head<'a>(
    out: &mut BytesMut,
    (method, target): (&Method, &str),
    headers: &'a HeaderMap,
    replaced: &[HeaderName],
    added: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> + Clone,
) {
    // An estimate from above (the replaced fields counted too): one allocation.
    let size = headers
        .iter()
        .chain(added.clone())
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>();
    let kept = headers.iter().filter(|(name, _)| !replaced.contains(name));
    out.reserve(method.as_str().len() + target.len() + size + 16);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in kept.chain(added) {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// Takes one final response head out of `buf` (informational 1xx heads before it are
/// skipped); None while the head is incomplete. `head_request`: the request was HEAD
/// (its response has no body whatever it says).
pub fn parse_response_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        // Uninitialised slots: filling in a hundred of them costs more than the parse.
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let length = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields)
        {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                return Err(HeadError("longer than 256 KiB"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HeadError("more than 100 header fields"))
            }
            Err(_) => return Err(HeadError("not HTTP/1.x")),
        };
        let code = parsed.code.ok_or(HeadError("no status code"))?;
        let status =
            StatusCode::from_u16(code).map_err(|_| HeadError("a status code out of range"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(HeadError(
                "101 Switching Protocols to a request without Upgrade",
            ));
        }
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Where each field lies in the head (a short list: a fixed table of a hundred
        // would cost more to fill in than the parse), so that the values can share
        // the head's bytes once it is split off the buffer: no copy per value.
        let base = buf.as_ptr() as usize;
        let spans: Vec<(usize, usize, usize, usize)> = parsed
            .headers
            .iter()
            .map(|field| {
                let name = field.name.as_ptr() as usize - base;
                let value = field.value.as_ptr() as usize - base;
                (
                    name,
                    name + field.name.len(),
                    value,
                    value + field.value.len(),
                )
            })
            .collect();
        let head: Bytes = buf.split_to(length).freeze();
        if status.is_informational() {
            continue; // 100 Continue, 103 Early Hints: the final head follows
        }
        let mut headers = HeaderMap::with_capacity(spans.len());
        for (name_start, name_end, value_start, value_end) in spans {
            let name = HeaderName::from_bytes(&head[name_start..name_end])
                .map_err(|_| HeadError("an invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
                .map_err(|_| HeadError("an invalid header value"))?;
            headers.append(name, value);
        }
        let framing = framing(head_request, status, &headers)?;
        // Both lengths stated: the body is read by the chunks, and the connection
        // closed after it (RFC 9112 section 6.3), like any body that ends with it.
        let ambiguous =
            headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH);
        let keep_alive =
            framing != Framing::UntilClose && !ambiguous && persistent(version, &headers);
        return Ok(Some(ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// RFC 9112 section 6.3, for a response: what ends its body.
pub fn framing(
    head_request: bool,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Framing, HeadError> {
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|coding| !coding.is_empty());
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value
            .as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
        {
            let parsed = std::str::from_utf8(item)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HeadError("an invalid Content-Length"))?;
            if length.is_some_and(|known| known != parsed) {
                return Err(HeadError("two different Content-Length values"));
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(length) => Framing::Length(length),
        None => Framing::UntilClose,
    })
}

/// Whether the connection stays open after this response (RFC 9112 section 9.3).
fn persistent(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &[u8]| {
        headers.get_all(CONNECTION).iter().any(|value| {
            value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    match version {
        Version::HTTP_11 => !has(b"close"),
        _ => has(b"keep-alive"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, head_request: bool) -> Result<Option<ResponseHead>, HeadError> {
        parse_response_head(&mut BytesMut::from(text.as_bytes()), head_request)
    }

    fn framed(text: &str) -> (Framing, bool) {
        let head = parse(text, false).expect("valid").expect("complete");
        (head.framing, head.keep_alive)
    }

    #[test]
    fn the_request_head_replaces_the_named_fields_and_adds_ours() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("jenkins.example"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        headers.append("accept", HeaderValue::from_static("a"));
        headers.append("accept", HeaderValue::from_static("b"));
        let replaced = [HeaderName::from_static("x-forwarded-for")];
        let ours = (
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static("1.2.3.4"),
        );
        let mut out = BytesMut::new();
        write_request_head(
            &mut out,
            (&Method::GET, "/job/a%2Fb/?x=1"),
            &headers,
            &replaced,
            std::iter::once((&ours.0, &ours.1)),
        );
        assert_eq!(
            &out[..],
            b"GET /job/a%2Fb/?x=1 HTTP/1.1\r\nhost: jenkins.example\r\naccept: a\r\naccept: b\r\nx-forwarded-for: 1.2.3.4\r\n\r\n"
        );
    }

    #[test]
    fn bodies_are_framed_as_rfc_9112_says() {
        let ok = "HTTP/1.1 200 OK\r\n";
        // (head, framing, keep-alive)
        let cases = [
            (
                format!("{ok}content-length: 5\r\n\r\n"),
                Framing::Length(5),
                true,
            ),
            (
                format!("{ok}content-length: 0\r\n\r\n"),
                Framing::Empty,
                true,
            ),
            (
                format!("{ok}content-length: 7, 7\r\n\r\n"),
                Framing::Length(7),
                true,
            ),
            (
                format!("{ok}transfer-encoding: chunked\r\n\r\n"),
                Framing::Chunked,
                true,
            ),
            (
                format!("{ok}transfer-encoding: gzip\r\n\r\n"),
                Framing::UntilClose,
                false,
            ),
            (format!("{ok}\r\n"), Framing::UntilClose, false),
            // Both lengths: read by the chunks, and the connection closed after.
            (
                format!("{ok}transfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n"),
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n".to_owned(),
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n".to_owned(),
                Framing::Empty,
                true,
            ),
        ];
        for (head, framing, keep_alive) in cases {
            assert_eq!(framed(&head), (framing, keep_alive), "{head:?}");
        }
        let head = parse(&format!("{ok}content-length: 9\r\n\r\n"), true)
            .expect("valid")
            .expect("complete");
        assert_eq!(
            head.framing,
            Framing::Empty,
            "a response to HEAD has no body"
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        assert!(!framed("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n").1);
        assert!(!framed("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").1);
        assert!(framed("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n").1);
    }

    #[test]
    fn informational_heads_are_skipped_and_the_rest_stays_in_the_buffer() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nhi"[..],
        );
        let head = parse_response_head(&mut buf, false)
            .expect("valid")
            .expect("complete");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(
            head.headers.get("x-a").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert_eq!(&buf[..], b"hi");
    }

    #[test]
    fn incomplete_and_invalid_heads() {
        assert!(parse("HTTP/1.1 200 OK\r\ncontent-le", false)
            .expect("valid so far")
            .is_none());
        for bad in [
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(parse(bad, false).is_err(), "{bad:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert!(parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).is_err());
    }
}
