//! A client's request head, read once (httparse, with hyper's settings) into the
//! request the proxy forwards; or the finding that it is not a common request, and
//! hyper's server takes the connection from there. Pure: no I/O.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http_body_util::{Either, Empty};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Uri, Version};

use crate::upstream::UpstreamBody;

/// Header slots on the stack; a head with more fields than this (a `proxy.max_headers`
/// above it) goes to hyper, which has the configured limit.
const STACK_HEADERS: usize = 128;

/// What the bytes read so far hold.
// The request is moved by value twice, not boxed: an allocation costs more.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Read {
    /// The head has not all arrived.
    Partial,
    /// A common request: GET, HEAD or OPTIONS over HTTP/1.1 with an origin-form target,
    /// no body, no upgrade, no expectation. Its head is taken out of the buffer.
    Common(Common),
    /// Anything else, complete or not, valid or not (a body, an upgrade, HTTP/1.0 or
    /// HTTP/2, a parse error, a head larger than `proxy.max_header_bytes`). The buffer
    /// is left as it was: hyper's server reads it from the start, with the framing
    /// guard, and answers or refuses it as before.
    Other,
    /// The head parsed, but its target or a field value is not one the `http` types
    /// take (hyper answers 400 to these too). It is taken out of the buffer.
    Invalid(&'static str),
}

/// A common request, ready for the request path.
#[derive(Debug)]
pub struct Common {
    pub request: Request<UpstreamBody>,
    /// The client sent `Connection: close`: the connection ends after the response.
    pub close: bool,
}

/// Takes the next request head out of `buf` if it is a common request (see [`Read`]).
/// The header values share the head's bytes: nothing is copied.
pub fn read_head(buf: &mut BytesMut, max_headers: usize, max_head_bytes: usize) -> Read {
    // An HTTP/2 preface (prior knowledge h2c) is hyper's.
    const PREFACE: &[u8] = b"PRI ";
    if buf.starts_with(PREFACE) {
        return Read::Other;
    }
    if PREFACE.starts_with(buf) {
        return Read::Partial;
    }
    let bytes = buf.split().freeze();
    match parse(&bytes, max_headers.min(STACK_HEADERS), max_head_bytes) {
        Parsed::Done { len, read } => {
            if bytes.len() > len {
                // Pipelined: the next request's first bytes go back into the buffer.
                buf.extend_from_slice(&bytes[len..]);
            }
            read
        }
        Parsed::Wait(read) => {
            // Nothing refers to the bytes any more: they go back as they were.
            let mut taken = bytes
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            taken.unsplit(std::mem::take(buf));
            *buf = taken;
            read
        }
    }
}

enum Parsed {
    /// Partial or Other: the bytes stay in the buffer.
    Wait(Read),
    /// The first `len` bytes were a head, read as `read`.
    Done { len: usize, read: Read },
}

/// One parse of the head at the start of `bytes`, as hyper's server does it.
fn parse(bytes: &Bytes, slots: usize, max_head_bytes: usize) -> Parsed {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        bytes,
        &mut fields[..slots],
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() < max_head_bytes => {
            return Parsed::Wait(Read::Partial)
        }
        // Too large, too many fields, invalid: hyper's answer (431, 400).
        Ok(httparse::Status::Partial) | Err(_) => return Parsed::Wait(Read::Other),
    };
    let method = match request.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        Some("OPTIONS") => Method::OPTIONS,
        _ => return Parsed::Wait(Read::Other),
    };
    let path = match request.path {
        Some(path) if path.starts_with('/') => path,
        _ => return Parsed::Wait(Read::Other),
    };
    if len > max_head_bytes || request.version != Some(1) {
        return Parsed::Wait(Read::Other);
    }
    let mut close = false;
    for field in request.headers.iter() {
        match common_field(field) {
            Field::Plain => {}
            Field::Close => close = true,
            Field::Uncommon => return Parsed::Wait(Read::Other),
        }
    }
    let read = match build(bytes, method, path, request.headers) {
        Ok(request) => Read::Common(Common { request, close }),
        Err(why) => Read::Invalid(why),
    };
    Parsed::Done { len, read }
}

enum Field {
    Plain,
    /// `Connection: close`.
    Close,
    /// A field that makes the request one for hyper: a body (Content-Length,
    /// Transfer-Encoding: the framing guard judges those), an upgrade, an expectation,
    /// or a `Connection` token other than close and keep-alive.
    Uncommon,
}

fn common_field(field: &httparse::Header<'_>) -> Field {
    let name = field.name;
    let uncommon = ["content-length", "transfer-encoding", "upgrade", "expect"];
    if uncommon.iter().any(|u| name.eq_ignore_ascii_case(u)) {
        return Field::Uncommon;
    }
    if !name.eq_ignore_ascii_case("connection") {
        return Field::Plain;
    }
    let mut close = false;
    for token in field.value.split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
            return Field::Uncommon;
        }
    }
    if close {
        Field::Close
    } else {
        Field::Plain
    }
}

/// The request of a common head whose parts lie in `bytes`: they are shared, not copied.
fn build(
    bytes: &Bytes,
    method: Method,
    path: &str,
    fields: &[httparse::Header<'_>],
) -> Result<Request<UpstreamBody>, &'static str> {
    let uri = Uri::from_maybe_shared(bytes.slice_ref(path.as_bytes()))
        .map_err(|_| "an invalid request target")?;
    let mut request = Request::new(Either::Right(Empty::new()));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    headers.reserve(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| "an invalid header field name")?;
        let value = HeaderValue::from_maybe_shared(bytes.slice_ref(field.value))
            .map_err(|_| "an invalid header field value")?;
        headers.append(name, value);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 8 * 1024;

    fn read(bytes: &[u8]) -> (Read, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let read = read_head(&mut buf, 100, MAX);
        (read, buf)
    }

    fn common(bytes: &[u8]) -> (Common, BytesMut) {
        match read(bytes) {
            (Read::Common(common), rest) => (common, rest),
            (other, _) => panic!(
                "not common: {other:?} for {:?}",
                String::from_utf8_lossy(bytes)
            ),
        }
    }

    #[test]
    fn a_get_becomes_the_request_and_leaves_what_follows() {
        let head = b"GET /job/a?x=1 HTTP/1.1\r\nHost: jenkins\r\nAccept: */*\r\nX-A: 1\r\nX-A: 2\r\n\r\nGET /next";
        let (common, rest) = common(head);
        let request = common.request;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/job/a?x=1");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["host"], "jenkins");
        let repeated: Vec<_> = request.headers().get_all("x-a").iter().collect();
        assert_eq!(repeated, ["1", "2"]);
        assert!(!common.close);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn connection_close_is_kept_and_keep_alive_is_common() {
        let (closing, _) =
            common(b"HEAD / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(closing.close);
        assert_eq!(closing.request.method(), Method::HEAD);
        let (kept, _) = common(b"OPTIONS /x HTTP/1.1\r\nHost: h\r\nconnection: keep-alive\r\n\r\n");
        assert!(!kept.close);
    }

    #[test]
    fn everything_else_is_left_whole_for_hyper() {
        let others: [&[u8]; 14] = [
            b"POST / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: te\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET http://elsewhere/ HTTP/1.1\r\nHost: h\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost h\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ];
        for bytes in others {
            let (read, rest) = read(bytes);
            assert!(matches!(read, Read::Other), "{read:?} for {bytes:?}");
            assert_eq!(&rest[..], bytes, "the buffer is left as it was");
        }
    }

    #[test]
    fn too_large_or_too_many_fields_go_to_hyper() {
        let mut long = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        long.resize(MAX + 10, b'a');
        assert!(matches!(read(&long).0, Read::Other));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..101 {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(read(&many).0, Read::Other));
    }

    #[test]
    fn a_value_the_http_types_refuse_is_invalid() {
        let (read, _) = read(b"GET /a\x7fb HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(matches!(read, Read::Other | Read::Invalid(_)), "{read:?}");
    }

    /// A head of one of three kinds, with the place it is split at as it arrives.
    fn heads() -> impl Strategy<Value = (Vec<u8>, usize)> {
        let common = "(GET|HEAD|OPTIONS) /[a-z0-9/?=&%-]{0,20} HTTP/1\\.1\r\nHost: [a-z.]{1,10}\r\n([A-Za-z-]{1,12}: [ -~]{0,20}\r\n){0,6}\r\n";
        let uncommon = "(POST|PUT|GET) / HTTP/1\\.[01]\r\n(Content-Length: [0-9]{1,3}\r\n|Upgrade: websocket\r\n|Connection: upgrade\r\n){0,2}\r\n";
        let noise = "[ -~\r\n]{0,60}";
        prop_oneof![common, uncommon, noise].prop_flat_map(|head: String| {
            let len = head.len();
            (Just(head.into_bytes()), 0..=len)
        })
    }

    proptest! {
        /// However the head arrives, the reading is that of the whole head; an answer
        /// that leaves it to hyper leaves every byte read in place, and a request taken
        /// out leaves what followed it.
        #[test]
        fn split_points_do_not_change_the_reading((head, at) in heads()) {
            let (whole, whole_rest) = describe(read(&head));
            let mut buf = BytesMut::from(&head[..at]);
            let (kind, rest) = match read_head(&mut buf, 100, MAX) {
                Read::Partial => {
                    prop_assert_eq!(&buf[..], &head[..at]);
                    buf.extend_from_slice(&head[at..]);
                    let read = read_head(&mut buf, 100, MAX);
                    describe((read, buf))
                }
                first => describe((first, buf)),
            };
            prop_assert_eq!(&kind, &whole);
            if kind == "other" {
                prop_assert!(head.starts_with(rest.as_bytes()));
            } else {
                prop_assert!(whole_rest.starts_with(&rest));
            }
        }
    }

    fn describe((read, rest): (Read, BytesMut)) -> (String, String) {
        let kind = match read {
            Read::Partial => "partial".to_owned(),
            Read::Other => "other".to_owned(),
            Read::Invalid(why) => format!("invalid: {why}"),
            Read::Common(common) => format!(
                "{} {} {:?} close={}",
                common.request.method(),
                common.request.uri(),
                common.request.headers(),
                common.close
            ),
        };
        (kind, String::from_utf8_lossy(&rest).into_owned())
    }
}
