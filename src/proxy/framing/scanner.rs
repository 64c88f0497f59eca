//! The scanner: follows the framing of one connection's HTTP/1 requests as hyper does,
//! and finds the first head whose length is stated two ways.

use std::mem::MaybeUninit;

use super::{Refusal, Refused};

/// Header slots on the stack for one parse; `proxy.max_headers` above this parses
/// into a heap array instead (a rare configuration).
const STACK_HEADERS: usize = 128;

/// Follows the framing of one connection's HTTP/1 requests, byte stream in, refused
/// heads out. Pure: no I/O, no clock.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// Heads parsed so far.
    heads: u64,
    /// The start of a head whose end has not arrived yet.
    partial: Vec<u8>,
    /// `proxy.max_header_bytes`: hyper buffers no larger head (431).
    max_head_bytes: usize,
    /// `proxy.max_headers`: hyper parses no more header fields (431).
    max_headers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a request head.
    Head,
    /// Inside a Content-Length body.
    Sized { remaining: u64 },
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Not looking any more (see the module's documentation).
    Stopped,
}

/// Position in a chunked body, as hyper's decoder (`proto/h1/decode.rs`) walks it: the
/// same bytes are accepted, and anything it rejects stops the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The first hex digit of a chunk size.
    Start,
    Size(u64),
    /// Spaces or tabs after the size.
    SizeSpace(u64),
    Extension(u64),
    /// The LF after the size line's CR.
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: CR of the final empty line, or the start of a trailer.
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

/// One step of the chunked grammar: the next position, `None` when hyper's decoder
/// would fail, `Some(None)` at the end of the body.
fn next_chunk(chunk: Chunk, byte: u8) -> Option<Option<Chunk>> {
    let hex = |size: u64| {
        let digit = (byte as char).to_digit(16)?;
        size.checked_mul(16)?.checked_add(u64::from(digit))
    };
    let next = match (chunk, byte) {
        (Chunk::Start, _) => Chunk::Size(hex(0)?),
        (Chunk::Size(size), b'\t' | b' ') | (Chunk::SizeSpace(size), b'\t' | b' ') => {
            Chunk::SizeSpace(size)
        }
        (Chunk::Size(size) | Chunk::SizeSpace(size), b';') => Chunk::Extension(size),
        (Chunk::Size(size) | Chunk::SizeSpace(size) | Chunk::Extension(size), b'\r') => {
            Chunk::SizeLf(size)
        }
        (Chunk::Size(size), _) => Chunk::Size(hex(size)?),
        (Chunk::Extension(_), b'\n') => return None,
        (Chunk::Extension(size), _) => Chunk::Extension(size),
        (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
        (Chunk::SizeLf(size), b'\n') => Chunk::Data(size),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Start,
        (Chunk::EndCr, b'\r') => Chunk::EndLf,
        (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
        (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
        (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
        (Chunk::EndLf, b'\n') => return Some(None),
        _ => return None,
    };
    Some(Some(next))
}

/// What a complete head says about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    NoBody,
    Sized(u64),
    Chunked,
    Refuse(Refusal),
    /// An upgrade, CONNECT, or a head hyper fails the connection on.
    Stop,
}

enum Head {
    Partial,
    Invalid,
    Complete { len: usize, framing: Framing },
}

impl Scanner {
    pub fn new(max_head_bytes: usize, max_headers: usize) -> Scanner {
        Scanner {
            state: State::Head,
            heads: 0,
            partial: Vec::new(),
            max_head_bytes,
            max_headers,
        }
    }

    /// The next bytes of the stream; the head to refuse, if they complete one.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<Refused> {
        if self.state == State::Stopped || bytes.is_empty() {
            return None;
        }
        if self.partial.is_empty() {
            return self.scan(bytes);
        }
        let mut head = std::mem::take(&mut self.partial);
        let seen = head.len();
        head.extend_from_slice(bytes);
        if head.len() > self.max_head_bytes {
            self.stop();
            return None;
        }
        // A head ends with an empty line. Until one arrives, parsing again is wasted
        // work: a client trickling its head byte by byte must not cost a parse a byte.
        if !has_empty_line(&head[seen.saturating_sub(2)..]) {
            self.partial = head;
            return None;
        }
        self.scan(&head)
    }

    fn stop(&mut self) {
        self.state = State::Stopped;
        self.partial = Vec::new();
    }

    fn scan(&mut self, mut bytes: &[u8]) -> Option<Refused> {
        while !bytes.is_empty() {
            match self.state {
                State::Stopped => return None,
                State::Head => match parse_head(bytes, self.max_headers) {
                    Head::Partial => {
                        if bytes.len() > self.max_head_bytes {
                            self.stop();
                        } else {
                            self.partial.extend_from_slice(bytes);
                        }
                        return None;
                    }
                    Head::Invalid => {
                        self.stop();
                        return None;
                    }
                    Head::Complete { len, framing } => {
                        self.heads += 1;
                        bytes = &bytes[len..];
                        match framing {
                            Framing::NoBody => {}
                            Framing::Sized(length) => {
                                self.state = State::Sized { remaining: length }
                            }
                            Framing::Chunked => self.state = State::Chunked(Chunk::Start),
                            Framing::Stop => {
                                self.stop();
                                return None;
                            }
                            Framing::Refuse(refusal) => {
                                self.stop();
                                return Some(Refused {
                                    head: self.heads,
                                    refusal,
                                });
                            }
                        }
                    }
                },
                State::Sized { remaining } | State::Chunked(Chunk::Data(remaining)) => {
                    // At most `bytes.len()`, so it fits a usize.
                    let skipped = remaining.min(bytes.len() as u64);
                    bytes = &bytes[skipped as usize..];
                    let remaining = remaining - skipped;
                    self.state = match self.state {
                        State::Sized { .. } if remaining == 0 => State::Head,
                        State::Sized { .. } => State::Sized { remaining },
                        _ if remaining == 0 => State::Chunked(Chunk::DataCr),
                        _ => State::Chunked(Chunk::Data(remaining)),
                    };
                }
                State::Chunked(chunk) => {
                    self.state = match next_chunk(chunk, bytes[0]) {
                        Some(Some(next)) => State::Chunked(next),
                        Some(None) => State::Head,
                        None => State::Stopped,
                    };
                    bytes = &bytes[1..];
                }
            }
        }
        None
    }
}

/// Whether `bytes` contain the end of a head: a line end followed by an empty line.
fn has_empty_line(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(at, pair)| pair == b"\n\n" || (pair == b"\n\r" && bytes.get(at + 2) == Some(&b'\n')))
}

/// Parses a head with httparse, as hyper does (its default parser settings).
fn parse_head(bytes: &[u8], max_headers: usize) -> Head {
    let mut on_stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut on_heap;
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if max_headers <= STACK_HEADERS {
        &mut on_stack[..max_headers]
    } else {
        on_heap = vec![MaybeUninit::uninit(); max_headers];
        &mut on_heap
    };
    let mut request = httparse::Request::new(&mut []);
    match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        bytes,
        slots,
    ) {
        Ok(httparse::Status::Complete(len)) => Head::Complete {
            len,
            framing: framing_of(&request),
        },
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(_) => Head::Invalid,
    }
}

/// The body framing of a parsed head, by hyper's rules (`proto/h1/role.rs`).
fn framing_of(request: &httparse::Request<'_, '_>) -> Framing {
    let http_11 = request.version == Some(1);
    let mut upgrade = request.method == Some("CONNECT");
    let (mut transfer_encoding, mut chunked) = (false, false);
    let (mut lengths, mut length) = (0u32, None);
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // hyper: the last Transfer-Encoding line decides.
            chunked = ends_in_chunked(header.value);
        } else if header.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = decimal(header.value);
        } else if header.name.eq_ignore_ascii_case("upgrade") {
            upgrade = http_11;
        }
    }
    if transfer_encoding && lengths > 0 {
        Framing::Refuse(Refusal::LengthAndTransferEncoding)
    } else if lengths > 1 {
        Framing::Refuse(Refusal::RepeatedContentLength)
    } else if upgrade {
        Framing::Stop
    } else if transfer_encoding {
        // hyper refuses Transfer-Encoding on HTTP/1.0, and without chunked last.
        if http_11 && chunked {
            Framing::Chunked
        } else {
            Framing::Stop
        }
    } else if lengths == 1 {
        match length {
            Some(0) => Framing::NoBody,
            Some(length) => Framing::Sized(length),
            None => Framing::Stop, // hyper answers 400
        }
    } else {
        Framing::NoBody
    }
}

/// hyper's `is_chunked_`: visible ASCII, and the last comma-separated coding `chunked`.
fn ends_in_chunked(value: &[u8]) -> bool {
    let visible = value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    visible
        && text.rsplit(',').next().is_some_and(|last| {
            last.trim_matches([' ', '\t'])
                .eq_ignore_ascii_case("chunked")
        })
}

/// hyper's Content-Length value: decimal digits only, no sign, no overflow.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |total, &b| {
        let digit = (b as char).to_digit(10)?;
        total.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scanner() -> Scanner {
        Scanner::new(64 * 1024, 100)
    }

    /// Feeds `stream` in one piece; every refusal reported.
    fn refusals(stream: &[u8]) -> Vec<Refused> {
        let mut scanner = scanner();
        scanner.feed(stream).into_iter().collect()
    }

    fn refused(head: u64, refusal: Refusal) -> Vec<Refused> {
        vec![Refused { head, refusal }]
    }

    const GET: &str = "GET /a HTTP/1.1\r\nHost: p\r\n\r\n";
    /// Looks like a request to refuse; inside a body it is just bytes.
    const FAKE: &str =
        "POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn plain_requests_are_counted_and_not_refused() {
        let mut scanner = scanner();
        assert_eq!(
            scanner.feed(format!("{GET}{GET}\r\n{GET}").as_bytes()),
            None
        );
        assert_eq!((scanner.heads, scanner.state), (3, State::Head));
    }

    #[test]
    fn length_with_transfer_encoding_is_refused_in_either_order_and_any_case() {
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 0\r\nTRANSFER-ENCODING: gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
        ] {
            assert_eq!(
                refusals(format!("{GET}{head}").as_bytes()),
                refused(2, Refusal::LengthAndTransferEncoding),
                "{head:?}"
            );
        }
    }

    #[test]
    fn a_repeated_content_length_is_refused_even_with_equal_values() {
        let stream =
            format!("{GET}POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(
            refusals(stream.as_bytes()),
            refused(2, Refusal::RepeatedContentLength)
        );
    }

    #[test]
    fn bodies_are_skipped_whatever_they_contain() {
        let sized = format!(
            "POST /s HTTP/1.1\r\nContent-Length: {}\r\n\r\n{FAKE}",
            FAKE.len()
        );
        let chunked = format!(
            "POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
             {:x};name=\"v\"\t \r\n{FAKE}\r\n3 \r\nabc\r\n0\r\nX-Trailer: {FAKE}\r\n\r\n",
            FAKE.len()
        );
        let stream = format!("{sized}{chunked}{GET}{FAKE}");
        assert_eq!(
            refusals(stream.as_bytes()),
            refused(4, Refusal::LengthAndTransferEncoding)
        );
    }

    #[test]
    fn upgrades_connect_and_http2_stop_the_scanner() {
        for first in [
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_stops_at(first);
        }
    }

    /// After `first`, the scanner has stopped: a head to refuse behind it is not seen.
    fn assert_stops_at(first: &str) {
        let mut scanner = scanner();
        let fed = scanner.feed(format!("{first}{FAKE}").as_bytes());
        assert_eq!(fed, None, "{first:?}");
        assert_eq!(scanner.state, State::Stopped, "{first:?}");
    }

    #[test]
    fn what_hyper_rejects_stops_the_scanner() {
        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy",
            "GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: p\r\n\r\n\x16\x03\x01",
        ] {
            assert_stops_at(bad);
        }
    }

    #[test]
    fn a_head_larger_than_hyper_buffers_stops_the_scanner() {
        let mut scanner = Scanner::new(8192, 100);
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}", "v".repeat(5000));
        assert_eq!(scanner.feed(big.as_bytes()), None);
        assert_eq!(scanner.state, State::Head);
        assert_eq!(scanner.feed(big.as_bytes()), None);
        assert_eq!(scanner.state, State::Stopped);
        assert!(
            scanner.partial.capacity() == 0,
            "the partial head is released"
        );
    }

    #[test]
    fn more_headers_than_the_stack_holds_are_parsed_when_configured() {
        let mut head = String::from("POST / HTTP/1.1\r\n");
        for i in 0..200 {
            head.push_str(&format!("X-{i}: v\r\n"));
        }
        head.push_str("Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut scanner = Scanner::new(64 * 1024, 300);
        assert_eq!(
            scanner.feed(head.as_bytes()).map(|r| r.refusal),
            Some(Refusal::LengthAndTransferEncoding)
        );
        // With hyper's limit below the count, hyper answers 431 itself: stop.
        let mut scanner = Scanner::new(64 * 1024, 100);
        assert_eq!(scanner.feed(head.as_bytes()), None);
        assert_eq!(scanner.state, State::Stopped);
    }

    /// One request of a generated stream, and what the scanner must say of it.
    #[derive(Debug, Clone)]
    enum Generated {
        Get,
        Sized(Vec<u8>),
        Chunked {
            chunks: Vec<Vec<u8>>,
            extension: bool,
            trailer: bool,
        },
        Refused(Refusal),
    }

    impl Generated {
        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            match self {
                Generated::Get => out.extend_from_slice(GET.as_bytes()),
                Generated::Sized(body) => {
                    out.extend_from_slice(
                        format!("PUT /s HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len())
                            .as_bytes(),
                    );
                    out.extend_from_slice(body);
                }
                Generated::Chunked {
                    chunks,
                    extension,
                    trailer,
                } => {
                    out.extend_from_slice(
                        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                    );
                    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
                        let ext = if *extension { ";ext=1" } else { "" };
                        out.extend_from_slice(format!("{:X}{ext}\r\n", chunk.len()).as_bytes());
                        out.extend_from_slice(chunk);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n");
                    if *trailer {
                        out.extend_from_slice(b"X-Checksum: 1\r\n");
                    }
                    out.extend_from_slice(b"\r\n");
                }
                Generated::Refused(Refusal::LengthAndTransferEncoding) => {
                    out.extend_from_slice(FAKE.as_bytes())
                }
                Generated::Refused(Refusal::RepeatedContentLength) => out.extend_from_slice(
                    b"POST /r HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
                ),
            }
            out
        }
    }

    /// Bodies that often contain what looks like heads and chunk lines.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(FAKE.as_bytes().to_vec()),
                Just(b"\r\n\r\n0\r\n\r\n".to_vec()),
                prop::collection::vec(any::<u8>(), 0..40),
            ],
            0..4,
        )
        .prop_map(|parts| parts.concat())
    }

    fn generated() -> impl Strategy<Value = Generated> {
        prop_oneof![
            3 => Just(Generated::Get),
            3 => body().prop_map(Generated::Sized),
            3 => (prop::collection::vec(body(), 0..4), any::<bool>(), any::<bool>())
                .prop_map(|(chunks, extension, trailer)| Generated::Chunked { chunks, extension, trailer }),
            1 => Just(Generated::Refused(Refusal::LengthAndTransferEncoding)),
            1 => Just(Generated::Refused(Refusal::RepeatedContentLength)),
        ]
    }

    proptest! {
        /// Whatever the requests and however the stream is cut into reads, the
        /// scanner refuses exactly the first request that should be refused, by its
        /// number, and follows every body before it to the next head.
        #[test]
        fn the_first_request_to_refuse_is_found_however_the_stream_is_read(
            requests in prop::collection::vec(generated(), 1..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let stream: Vec<u8> = requests.iter().flat_map(Generated::bytes).collect();
            let expected = requests.iter().enumerate().find_map(|(at, request)| match request {
                Generated::Refused(refusal) => Some(Refused { head: at as u64 + 1, refusal: *refusal }),
                _ => None,
            });
            let mut at: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len() + 1)).collect();
            at.push(0);
            at.push(stream.len());
            at.sort_unstable();
            let mut scanner = scanner();
            let mut found = Vec::new();
            for window in at.windows(2) {
                found.extend(scanner.feed(&stream[window[0]..window[1]]));
            }
            prop_assert_eq!(found.first().copied(), expected);
            prop_assert!(found.len() <= 1);
            if expected.is_none() {
                prop_assert_eq!(scanner.heads, requests.len() as u64);
                prop_assert_eq!(scanner.state, State::Head);
            }
        }

        /// No input makes the scanner panic.
        #[test]
        fn any_bytes_are_safe(reads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut scanner = Scanner::new(8192, 16);
            for read in &reads {
                let _ = scanner.feed(read);
            }
        }
    }
}
