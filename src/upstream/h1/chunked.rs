//! The chunked transfer coding of a master's response (RFC 9112 section 7.1), decoded
//! as the bytes arrive: each call takes what it can from the read buffer and hands out
//! the data without copying it.

use bytes::{Buf, Bytes, BytesMut};

/// A chunk-size line (size, extensions, CRLF) longer than this is refused.
const MAX_SIZE_LINE: usize = 4096;
/// Trailer fields (discarded, as hyper does towards an HTTP/1 client) up to this much.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes to go.
    Data(u64),
    /// After a chunk's data: expecting its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines so far (bytes), up to the empty line.
    Trailers(usize),
    /// The body is complete.
    Done,
}

/// What one step of decoding gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The last chunk and the trailers are read: the body is complete.
    End,
    /// The buffer holds no complete step: read more.
    NeedMore,
}

/// The body is not valid chunked coding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the master's chunked response body is malformed: {0}")]
pub struct ChunkError(pub &'static str);

impl Chunked {
    pub fn new() -> Chunked {
        Chunked::Size
    }

    /// Takes the next piece of the body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match *self {
                Chunked::Done => return Ok(Decoded::End),
                Chunked::Size => {
                    let Some(line) = take_line(buf, MAX_SIZE_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError("no CRLF after a chunk's data"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers(seen) => {
                    let limit = MAX_TRAILERS.saturating_sub(seen);
                    let Some(line) = take_line(buf, limit)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    *self = if line.is_empty() {
                        Chunked::Done
                    } else {
                        Chunked::Trailers(seen + line.len() + 2)
                    };
                }
            }
        }
    }
}

/// The next CRLF-terminated line of `buf` (without its CRLF), taken out of it; None
/// while no CRLF is within `limit` bytes and the buffer is shorter than that.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<BytesMut>, ChunkError> {
    let window = &buf[..buf.len().min(limit.max(2))];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) => {
            let line = buf.split_to(end);
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() >= limit.max(2) => {
            Err(ChunkError("a chunk-size or trailer line is too long"))
        }
        None => Ok(None),
    }
}

/// The size of a chunk-size line: hex digits, then optional whitespace and extensions
/// (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkError(
            "a chunk-size line does not start with a hex size",
        ));
    }
    if digits > 15 {
        return Err(ChunkError("a chunk size is too large"));
    }
    let rest = &line[digits..];
    let after_space = rest.iter().skip_while(|b| matches!(b, b' ' | b'\t'));
    match after_space.clone().next() {
        None | Some(b';') => {}
        Some(_) => return Err(ChunkError("a chunk-size line has junk after the size")),
    }
    if rest.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(ChunkError("a chunk-size line has a bare CR or LF"));
    }
    let hex = std::str::from_utf8(&line[..digits])
        .map_err(|_| ChunkError("a chunk size is not ASCII"))?;
    u64::from_str_radix(hex, 16).map_err(|_| ChunkError("a chunk size is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` in pieces cut at `cuts`; the data decoded and whether it ended.
    fn run(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut decoder = Chunked::new();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        let mut fed = 0;
        for point in points {
            buf.extend_from_slice(&input[fed..point]);
            fed = point;
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(d) => data.extend_from_slice(&d),
                    Decoded::End => return Ok((data, true)),
                    Decoded::NeedMore => break,
                }
            }
        }
        Ok((data, false))
    }

    fn encode(chunks: &[Vec<u8>], extension: bool, trailers: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
            if extension {
                out.extend_from_slice(b" ;name=value");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        if trailers {
            out.extend_from_slice(b"X-Trailer: 1\r\nX-Other: two\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    #[test]
    fn a_body_in_two_chunks_then_the_end() {
        let input = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        assert_eq!(run(input, &[]), Ok((b"hello, world".to_vec(), true)));
    }

    #[test]
    fn bytes_after_the_end_stay_in_the_buffer() {
        let mut buf = BytesMut::from(&b"0\r\n\r\nHTTP/1.1"[..]);
        let mut decoder = Chunked::new();
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End));
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for input in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5 x\r\nhello\r\n",
            b"ffffffffffffffff\r\n",
            b"5\rX\r\n",
        ] {
            assert!(
                run(input, &[]).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_line = [b"5;".as_slice(), &[b'a'; MAX_SIZE_LINE]].concat();
        assert!(run(&long_line, &[]).is_err());
    }

    proptest! {
        /// Any body, any chunking, cut anywhere: decoded whole, and ended.
        #[test]
        fn decodes_whatever_the_split_points(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            extension in any::<bool>(),
            trailers in any::<bool>(),
        ) {
            let input = encode(&chunks, extension, trailers);
            let (data, ended) = run(&input, &cuts).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(ended);
            prop_assert_eq!(data, chunks.concat());
        }

        /// Garbage never panics and never yields more data than it holds.
        #[test]
        fn garbage_is_refused_or_incomplete(
            input in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            if let Ok((data, _)) = run(&input, &cuts) {
                prop_assert!(data.len() <= input.len());
            }
        }
    }
}
