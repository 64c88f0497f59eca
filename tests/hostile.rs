//! Hostile clients against the in-process daemon: request smuggling attempts,
//! forward-proxy requests, oversized heads, slowloris, thousands of idle connections.
//!
//! Malformed requests are written as raw bytes on a `TcpStream` (no HTTP client would
//! send them). Each test says what the client must get back and checks, through
//! `SampleMaster::requests()`, what reached the master: a rejected request must not
//! reach it at all, and nothing may reach it in a form other than what the proxy
//! parsed. Each test ends by checking that the daemon still serves a normal request.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jenkins_ha_proxy::config::{Config, Failback};
use jenkins_ha_proxy::sample::{RecordedRequest, SampleMaster};
use support::h2::Http2Client;
use support::{config_for, get, health, TestDaemon, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `proxy.header_read_timeout` in the slowloris tests.
const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(500);
/// Slack for a loaded CI machine on top of a timeout that should have fired.
const SLACK: Duration = Duration::from_millis(1500);
/// A normal request while the daemon is under attack must be answered within this.
const QUICKLY: Duration = Duration::from_secs(1);

struct Setup {
    a: SampleMaster,
    b: SampleMaster,
    daemon: TestDaemon,
}

/// Two masters (127.0.0.2, 127.0.0.3) and the daemon, master-a active; `adjust`
/// changes the config first.
async fn setup(adjust: impl FnOnce(&mut Config)) -> Setup {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a");
    let b = SampleMaster::start("master-b", "127.0.0.3:0".parse().expect("addr"))
        .await
        .expect("master-b");
    let mut config = config_for(&[&a, &b], health(200, 2, 3), Failback::Never);
    adjust(&mut config);
    let daemon = TestDaemon::start_with_active(config, "master-a").await;
    Setup { a, b, daemon }
}

impl Setup {
    /// Every request either master saw whose target contains `marker`.
    fn reached(&self, marker: &str) -> Vec<RecordedRequest> {
        let mut seen = self.a.requests();
        seen.extend(self.b.requests());
        seen.retain(|r| r.target.contains(marker));
        seen
    }

    fn assert_nothing_reached(&self, marker: &str, what: &str) {
        let seen = self.reached(marker);
        assert!(
            seen.is_empty(),
            "{what}: reached the master as {}",
            summary(&seen)
        );
    }

    /// 400 (or, where `also` allows, another refusal status) or a close without an
    /// answer; a failure also shows what reached the masters.
    fn assert_refused(&self, reply: &RawReply, also: &[u16], marker: &str) {
        let refused = match reply.status {
            Some(400) => true,
            Some(status) => also.contains(&status),
            None => reply.closed,
        };
        assert!(
            refused,
            "{marker}: expected 400 or a closed connection, got {reply:#?}\n\
             and the masters saw: {}",
            summary(&self.reached(marker))
        );
    }

    /// The daemon still serves: a normal GET, answered quickly by master-a, which
    /// records it (so "nothing reached the master" above is not vacuous).
    async fn assert_still_serving(&self, marker: &str) {
        let path = format!("/after-{marker}");
        let started = Instant::now();
        let reply = tokio::time::timeout(DEADLINE, get(self.daemon.proxy, &path))
            .await
            .expect("the daemon answers after the attack")
            .expect("a normal request after the attack");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.master(), Some("master-a"));
        assert!(started.elapsed() < QUICKLY, "took {:?}", started.elapsed());
        assert_eq!(self.reached(&path).len(), 1, "the master records requests");
    }
}

/// Requests as the master saw them, long header values shortened.
fn summary(requests: &[RecordedRequest]) -> String {
    if requests.is_empty() {
        return "nothing".to_owned();
    }
    let mut text = String::new();
    for request in requests {
        text.push_str(&format!("\n  {} {}", request.method, request.target));
        for (name, value) in &request.headers {
            match value.get(..40) {
                Some(start) if value.len() > 40 => {
                    text.push_str(&format!("\n    {name}: {start}... ({} bytes)", value.len()))
                }
                _ => text.push_str(&format!("\n    {name}: {value}")),
            }
        }
    }
    text
}

/// What came back on a raw connection.
#[derive(Debug)]
struct RawReply {
    /// Status of the first response, if one came before the connection closed.
    status: Option<u16>,
    /// Everything read, lossily decoded.
    text: String,
    /// The proxy closed the connection (EOF or reset) after the first response,
    /// or without one.
    closed: bool,
}

/// Writes `request` on a fresh connection (a write that fails because the proxy
/// already answered and closed is fine), then reads the first response.
async fn raw(proxy: SocketAddr, request: &[u8]) -> RawReply {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let _ = stream.write_all(request).await;
    read_reply(&mut stream).await
}

/// Reads one response (head and Content-Length body), then waits briefly to see
/// whether the proxy closes the connection. Panics if nothing happens by DEADLINE.
async fn read_reply(stream: &mut TcpStream) -> RawReply {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let started = Instant::now();
    loop {
        if let Some(total) = response_len(&bytes) {
            if bytes.len() >= total {
                break;
            }
        }
        let left = DEADLINE.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("no complete answer and no close within {DEADLINE:?}: {bytes:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return RawReply {
                    status: status_of(&bytes),
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                    closed: true,
                }
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    // A rejecting server closes right after its answer; a keep-alive one does not.
    let closed = matches!(
        tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    RawReply {
        status: status_of(&bytes),
        text: String::from_utf8_lossy(&bytes).into_owned(),
        closed,
    }
}

/// Length of the first response (head plus Content-Length body) once its head is in.
fn response_len(bytes: &[u8]) -> Option<usize> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    Some(end + length)
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next()?;
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    rest.get(..3)?.parse().ok()
}

/// A smuggling attempt: a POST to `/smuggle-<marker>` followed by a GET to
/// `/smuggled-<marker>` that only a parser disagreeing with the proxy would see.
async fn smuggle(setup: &Setup, marker: &str, head_and_body: &str, also: &[u16]) {
    let request = format!(
        "POST /smuggle-{marker} HTTP/1.1\r\nHost: proxy\r\n{head_and_body}\
         GET /smuggled-{marker} HTTP/1.1\r\nHost: proxy\r\n\r\n"
    );
    let reply = raw(setup.daemon.proxy, request.as_bytes()).await;
    setup.assert_refused(&reply, also, marker);
    setup.assert_nothing_reached(&format!("smuggle-{marker}"), marker);
    setup.assert_nothing_reached(&format!("smuggled-{marker}"), marker);
    setup.assert_still_serving(marker).await;
}

/// A request whose length is stated two ways, answered 400 with `says` in the body
/// and its connection closed; neither it nor the request hidden behind it reaches a
/// master. (hyper alone would accept the first: see `src/proxy/framing.rs`.)
async fn refused_as_ambiguous(setup: &Setup, marker: &str, head_and_body: &str, says: &str) {
    let request = format!(
        "POST /smuggle-{marker} HTTP/1.1\r\nHost: proxy\r\n{head_and_body}\
         GET /smuggled-{marker} HTTP/1.1\r\nHost: proxy\r\n\r\n"
    );
    let reply = raw(setup.daemon.proxy, request.as_bytes()).await;
    setup.assert_nothing_reached(&format!("smuggled-{marker}"), marker);
    setup.assert_nothing_reached(&format!("smuggle-{marker}"), marker);
    assert_eq!(reply.status, Some(400), "{marker}: {reply:#?}");
    assert!(
        reply.closed,
        "{marker}: the connection must be closed: {reply:#?}"
    );
    assert!(reply.text.contains(says), "{marker}: {reply:#?}");
    setup.assert_still_serving(marker).await;
}

const BOTH_HEADERS: &str = "both Content-Length and Transfer-Encoding";

/// CL.TE: a front end that honours Content-Length would forward 6 bytes
/// ("0\r\n\r\nG") and leave "ET /smuggled..." for the next request.
#[tokio::test]
async fn content_length_then_transfer_encoding_is_refused() {
    let setup = setup(|_| {}).await;
    refused_as_ambiguous(
        &setup,
        "cl-te",
        "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        BOTH_HEADERS,
    )
    .await;
}

/// TE.CL: the same two headers the other way round, and in other spellings.
#[tokio::test]
async fn transfer_encoding_then_content_length_is_refused() {
    let setup = setup(|_| {}).await;
    refused_as_ambiguous(
        &setup,
        "te-cl",
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        BOTH_HEADERS,
    )
    .await;
    refused_as_ambiguous(
        &setup,
        "te-cl-case",
        "transfer-encoding: gzip, CHUNKED\r\ncontent-length: 0\r\n\r\n0\r\n\r\n",
        BOTH_HEADERS,
    )
    .await;
}

/// Equal repeated lengths are harmless to hyper (it keeps one), but a client that
/// sends them is broken or probing: refused like the others.
#[tokio::test]
async fn a_repeated_equal_content_length_is_refused() {
    let setup = setup(|_| {}).await;
    refused_as_ambiguous(
        &setup,
        "cl-cl-equal",
        "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "more than one Content-Length",
    )
    .await;
}

/// The proxy reads a keep-alive connection's requests a second time to find those
/// framed two ways: bodies that look like such heads do not fool it, the requests
/// before are served, and exactly the ambiguous one is refused.
#[tokio::test]
async fn on_a_keep_alive_connection_only_the_request_framed_two_ways_is_refused() {
    let setup = setup(|_| {}).await;
    let fake = "POST /smuggled-fake HTTP/1.1\r\nContent-Length: 1\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    let len = fake.len();
    let pipelined = format!(
        "POST /upload?keep-1 HTTP/1.1\r\nHost: proxy\r\nContent-Length: {len}\r\n\r\n{fake}\
         POST /upload?keep-2 HTTP/1.1\r\nHost: proxy\r\nTransfer-Encoding: chunked\r\n\r\n\
         {len:x};note=x\r\n{fake}\r\n0\r\nX-Trailer: t\r\n\r\n\
         GET /keep-3 HTTP/1.1\r\nHost: proxy\r\n\r\n\
         POST /smuggle-keep HTTP/1.1\r\nHost: proxy\r\nContent-Length: 6\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
         GET /smuggled-keep HTTP/1.1\r\nHost: proxy\r\n\r\n"
    );
    let mut stream = TcpStream::connect(setup.daemon.proxy)
        .await
        .expect("connect");
    stream.write_all(pipelined.as_bytes()).await.expect("write");
    let replies = responses(&read_to_close(&mut stream).await);
    let statuses: Vec<u16> = replies.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [200, 200, 200, 400], "{replies:#?}");
    assert!(replies[3].1.contains(BOTH_HEADERS), "{replies:#?}");
    for marker in ["keep-1", "keep-2", "keep-3"] {
        let seen = setup.reached(marker);
        assert_eq!(seen.len(), 1, "{marker}: {}", summary(&seen));
    }
    assert_eq!(setup.a.upload_bytes(), 2 * len as u64, "both bodies, whole");
    for marker in ["smuggle-keep", "smuggled-keep", "smuggled-fake"] {
        setup.assert_nothing_reached(marker, marker);
    }
    setup.assert_still_serving("keep").await;
}

/// Reads until the proxy closes the connection; panics if it does not by DEADLINE.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let started = Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("the proxy did not close within {DEADLINE:?}: {bytes:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return bytes,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// Content-Length-framed responses one after another: status and text of each.
fn responses(mut bytes: &[u8]) -> Vec<(u16, String)> {
    let mut found = Vec::new();
    while let Some(len) = response_len(bytes).filter(|len| *len <= bytes.len()) {
        let status = status_of(bytes).unwrap_or(0);
        found.push((status, String::from_utf8_lossy(&bytes[..len]).into_owned()));
        bytes = &bytes[len..];
    }
    found
}

#[tokio::test]
async fn two_different_content_lengths_are_refused() {
    let setup = setup(|_| {}).await;
    smuggle(
        &setup,
        "cl-cl",
        "Content-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
        &[],
    )
    .await;
    smuggle(&setup, "cl-list", "Content-Length: 0, 5\r\n\r\nhello", &[]).await;
}

#[tokio::test]
async fn an_obs_folded_header_is_refused() {
    let setup = setup(|_| {}).await;
    // obs-fold: a line starting with a space continues the previous header; a
    // parser that unfolds it and one that does not see different requests.
    smuggle(
        &setup,
        "obs-fold",
        "X-Folded: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
        &[],
    )
    .await;
    smuggle(
        &setup,
        "obs-fold-tab",
        "Content-Length: 0\r\n\tX-Continued: b\r\n\r\n",
        &[],
    )
    .await;
}

#[tokio::test]
async fn negative_or_overflowing_content_lengths_are_refused() {
    let setup = setup(|_| {}).await;
    // A length too large to represent may also be refused as 431 (hyper's answer).
    for (marker, value, also) in [
        ("cl-negative", "-1", &[][..]),
        ("cl-plus", "+5", &[]),
        ("cl-hex", "0x5", &[]),
        ("cl-u64-max", "18446744073709551615", &[431]),
        ("cl-overflow", "99999999999999999999999", &[431]),
    ] {
        let head = format!("Content-Length: {value}\r\n\r\nhello");
        smuggle(&setup, marker, &head, also).await;
    }
    setup.assert_still_serving("bad-lengths").await;
}

#[tokio::test]
async fn an_invalid_chunk_size_is_refused_and_nothing_past_it_reaches_the_master() {
    let setup = setup(|_| {}).await;
    let request = "POST /upload?smuggle-bad-chunk HTTP/1.1\r\nHost: proxy\r\n\
                   Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nSMUGGLED\r\n0\r\n\r\n\
                   GET /smuggled-bad-chunk HTTP/1.1\r\nHost: proxy\r\n\r\n";
    let reply = raw(setup.daemon.proxy, request.as_bytes()).await;
    setup.assert_nothing_reached("smuggled-bad-chunk", "request after a bad chunk");
    for seen in setup.reached("smuggle-bad-chunk") {
        // The form the proxy parsed: chunked, no Content-Length.
        assert_eq!(
            seen.header("transfer-encoding"),
            Some("chunked"),
            "{seen:?}"
        );
        assert_eq!(seen.header("content-length"), None, "{seen:?}");
    }
    assert!(
        setup.a.upload_bytes() <= 5,
        "the master got {} body bytes: more than the valid chunk",
        setup.a.upload_bytes()
    );
    setup.assert_refused(&reply, &[], "smuggle-bad-chunk");
    setup.assert_still_serving("bad-chunk").await;
}

#[tokio::test]
async fn absolute_form_and_connect_are_refused() {
    let setup = setup(|_| {}).await;
    let attempts = [
        (
            "absolute-form",
            "GET http://127.0.0.1:1/absolute-form HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
        ),
        (
            "absolute-form-own-host",
            "GET http://proxy/absolute-form-own-host HTTP/1.1\r\nHost: proxy\r\n\r\n",
        ),
        (
            "connect",
            "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
        ),
    ];
    for (marker, request) in attempts {
        let reply = raw(setup.daemon.proxy, request.as_bytes()).await;
        assert_eq!(reply.status, Some(400), "{marker}: {reply:#?}");
        assert!(reply.text.contains("reverse proxy"), "{marker}: {reply:#?}");
        setup.assert_nothing_reached(marker, marker);
    }
    // CONNECT names no path: check that nothing reached a master at all but checks.
    let traffic = setup.a.traffic_count() + setup.b.traffic_count();
    assert_eq!(traffic, 0, "a refused request reached a master");
    setup.assert_still_serving("forward-proxy").await;
}

/// A request head of `headers` headers of `size` bytes each to `/big-<marker>`.
fn big_head(marker: &str, headers: usize, size: usize) -> Vec<u8> {
    let mut head = format!("GET /big-{marker} HTTP/1.1\r\nHost: proxy\r\n");
    let value = "v".repeat(size);
    for i in 0..headers {
        head.push_str(&format!("X-Big-{i}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[tokio::test]
async fn a_header_block_over_64_kib_is_refused() {
    let setup = setup(|_| {}).await;
    // 40 headers of 2 KiB: 80 KiB, under any header-count limit.
    let reply = raw(setup.daemon.proxy, &big_head("80k", 40, 2048)).await;
    setup.assert_refused(&reply, &[431], "big-80k");
    setup.assert_nothing_reached("big-80k", "80 KiB header block");
    // One header of 70 KiB.
    let reply = raw(setup.daemon.proxy, &big_head("70k", 1, 70 * 1024)).await;
    setup.assert_refused(&reply, &[431], "big-70k");
    setup.assert_nothing_reached("big-70k", "one 70 KiB header");
    setup.assert_still_serving("big-head").await;
}

#[tokio::test]
async fn a_huge_header_block_or_too_many_headers_do_not_crash_the_daemon() {
    let setup = setup(|_| {}).await;
    // 4 MiB of headers.
    let reply = raw(setup.daemon.proxy, &big_head("4m", 64, 64 * 1024)).await;
    setup.assert_refused(&reply, &[431], "big-4m");
    setup.assert_nothing_reached("big-4m", "4 MiB header block");
    // 1,000 tiny headers.
    let reply = raw(setup.daemon.proxy, &big_head("many", 1000, 1)).await;
    setup.assert_refused(&reply, &[431], "big-many");
    setup.assert_nothing_reached("big-many", "1,000 headers");
    setup.assert_still_serving("huge-head").await;
}

/// Writes `first`, then one byte of `trickle` per second, until the proxy closes
/// the connection; returns how long after the first write that was.
async fn slowloris(proxy: SocketAddr, first: &[u8], trickle: &[u8]) -> Duration {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let started = Instant::now();
    stream.write_all(first).await.expect("first bytes");
    let (mut reader, mut writer) = stream.into_split();
    let trickle = trickle.to_vec();
    let writer = tokio::spawn(async move {
        for byte in trickle.iter().cycle() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let cut = tokio::time::timeout(HEADER_READ_TIMEOUT + SLACK + SLACK, async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // A 408 or 400 before the close is fine.
                Ok(_) => {}
            }
        }
    })
    .await;
    writer.abort();
    assert!(
        cut.is_ok(),
        "still open after {:?}: the slowloris client was not cut off",
        started.elapsed()
    );
    started.elapsed()
}

/// Runs `attack` while a normal request is sent halfway through the header read
/// timeout; the normal request must be served quickly, the attacker cut off.
async fn cut_off_while_serving(setup: &Setup, first: &[u8], trickle: &[u8], marker: &str) {
    let attack = slowloris(setup.daemon.proxy, first, trickle);
    let normal = async {
        tokio::time::sleep(HEADER_READ_TIMEOUT / 2).await;
        setup.assert_still_serving(marker).await;
    };
    let (cut_after, ()) = tokio::join!(attack, normal);
    assert!(
        cut_after <= HEADER_READ_TIMEOUT + SLACK,
        "cut off only after {cut_after:?} (header_read_timeout {HEADER_READ_TIMEOUT:?})"
    );
    setup.assert_nothing_reached(&format!("/loris-{marker}"), marker);
}

fn short_header_timeout(config: &mut Config) {
    config.proxy.header_read_timeout = HEADER_READ_TIMEOUT;
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_within_the_header_read_timeout() {
    let setup = setup(short_header_timeout).await;
    cut_off_while_serving(
        &setup,
        b"GET /loris-http1 HTTP/1.1\r\nHost: proxy\r\nX-Slow: ",
        b"abcdefghij",
        "http1",
    )
    .await;
}

/// The listener serves HTTP/1 and HTTP/2 on one port, so it first reads enough
/// bytes to tell them apart: a client trickling the HTTP/2 preface is also a
/// slowloris and must be cut off as well.
#[tokio::test]
async fn a_slowloris_client_trickling_the_http2_preface_is_cut_off() {
    let setup = setup(short_header_timeout).await;
    cut_off_while_serving(
        &setup,
        b"PRI * HT",
        b"TP/2.0\r\n\r\nSM\r\n\r\n",
        "h2-preface",
    )
    .await;
}

/// A client that connects and sends nothing is the limit case of a slowloris.
#[tokio::test]
async fn a_client_that_sends_nothing_is_cut_off_within_the_header_read_timeout() {
    let setup = setup(short_header_timeout).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(setup.daemon.proxy)
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let cut = tokio::time::timeout(HEADER_READ_TIMEOUT + SLACK, stream.read(&mut buf)).await;
    assert!(
        matches!(cut, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection was still open after {:?}: {cut:?}",
        started.elapsed()
    );
    setup.assert_still_serving("silent").await;
}

/// Between requests the same timeout is the keep-alive idle timeout: a connection
/// that made a request and then goes quiet is closed too (HTTP/1).
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let setup = setup(short_header_timeout).await;
    let mut stream = TcpStream::connect(setup.daemon.proxy)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /before-idle HTTP/1.1\r\nHost: proxy\r\n\r\n")
        .await
        .expect("request");
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, Some(200), "{reply:#?}");
    // read_reply watched it for 300 ms after the response: kept alive meanwhile.
    assert!(!reply.closed, "closed right after the response: {reply:#?}");
    let idle_since = Instant::now();
    let mut buf = [0u8; 64];
    let cut = tokio::time::timeout(HEADER_READ_TIMEOUT + SLACK, stream.read(&mut buf)).await;
    assert!(
        matches!(cut, Ok(Ok(0)) | Ok(Err(_))),
        "an idle keep-alive connection was still open after {:?}: {cut:?}",
        idle_since.elapsed()
    );
    setup.assert_still_serving("idle-keep-alive").await;
}

/// hyper has no idle timeout for HTTP/2: the proxy sends GOAWAY to an h2c connection
/// once a whole header_read_timeout passes without a new request, so idle clients
/// cannot hold `max_connections` slots for ever; one that keeps asking stays open.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_and_a_busy_one_is_not() {
    let setup = setup(short_header_timeout).await;
    let proxy = setup.daemon.proxy;
    let mut client = Http2Client::connect(proxy).await;
    // Busy for three idle periods: a request every 100 ms, all on this connection.
    let busy_until = Instant::now() + 3 * HEADER_READ_TIMEOUT;
    let mut served = 0;
    while Instant::now() < busy_until {
        let (status, body) = client.get(proxy, &format!("/h2-busy-{served}")).await;
        assert_eq!(status, 200, "{body}");
        assert!(!client.ended.is_finished(), "closed while busy");
        served += 1;
        tokio::time::sleep(HEADER_READ_TIMEOUT / 5).await;
    }
    assert_eq!(setup.reached("/h2-busy-").len(), served);
    // Then idle: closed after one to two idle periods.
    client.closed_within(2 * HEADER_READ_TIMEOUT + SLACK).await;
    setup.assert_still_serving("h2-idle").await;
}

/// The idle timer never cuts a stream in progress: a response that takes three idle
/// periods arrives whole, and only then is the connection closed.
#[tokio::test]
async fn a_long_http2_response_outlives_the_idle_timeout() {
    let setup = setup(short_header_timeout).await;
    let proxy = setup.daemon.proxy;
    let mut client = Http2Client::connect(proxy).await;
    let delay = HEADER_READ_TIMEOUT / 4;
    let started = Instant::now();
    let (status, body) = client
        .get(
            proxy,
            &format!("/slow?chunks=12&delay_ms={}", delay.as_millis()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() >= 11 * delay, "{:?}", started.elapsed());
    assert_eq!(body.lines().count(), 12, "{body}");
    assert_eq!(body.lines().last(), Some("chunk 11"), "{body}");
    client.closed_within(2 * HEADER_READ_TIMEOUT + SLACK).await;
}

/// Defect 8 (RFC 9112 section 3.2): an HTTP/1.1 request without Host, or with two,
/// is refused and reaches no master; `Connection` cannot strip Host; an HTTP/1.0
/// request without Host is forwarded with the address the client dialled; over
/// HTTP/2, `:authority` wins over a Host header that differs.
#[tokio::test]
async fn host_is_required_single_and_cannot_be_stripped_or_contradicted() {
    let setup = setup(|_| {}).await;
    let proxy = setup.daemon.proxy;
    for (marker, head) in [
        ("no-host", "GET /no-host HTTP/1.1\r\n\r\n".to_owned()),
        (
            "two-hosts",
            "GET /two-hosts HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n".to_owned(),
        ),
        (
            "two-hosts-1.0",
            "GET /two-hosts-1.0 HTTP/1.0\r\nHost: a.example\r\nHost: b.example\r\n\r\n".to_owned(),
        ),
    ] {
        let reply = raw(proxy, head.as_bytes()).await;
        assert_eq!(reply.status, Some(400), "{marker}: {reply:#?}");
        assert!(reply.text.contains("Host"), "{marker}: {}", reply.text);
        setup.assert_nothing_reached(marker, marker);
    }

    let reply = raw(
        proxy,
        b"GET /connection-host HTTP/1.1\r\nHost: ci.example\r\nConnection: close, Host\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, Some(200), "{reply:#?}");
    let seen = setup.reached("/connection-host");
    assert_eq!(seen.len(), 1, "{}", summary(&seen));
    assert_eq!(
        seen[0].header("host"),
        Some("ci.example"),
        "{}",
        summary(&seen)
    );

    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream
        .write_all(b"GET /http10-no-host HTTP/1.0\r\n\r\n")
        .await
        .expect("send");
    let answer = read_to_close(&mut stream).await;
    assert!(
        String::from_utf8_lossy(&answer).contains(" 200 OK"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let seen = setup.reached("/http10-no-host");
    assert_eq!(seen.len(), 1, "{}", summary(&seen));
    let dialled = proxy.to_string();
    assert_eq!(
        seen[0].header("host"),
        Some(dialled.as_str()),
        "{}",
        summary(&seen)
    );

    let mut client = Http2Client::connect(proxy).await;
    let request = hyper::Request::get(format!("http://{proxy}/h2-authority"))
        .header("host", "elsewhere.example")
        .body(http_body_util::Empty::new())
        .expect("request");
    let (status, _, body) = client.send(request).await;
    assert_eq!(status, 200, "{body}");
    let seen = setup.reached("/h2-authority");
    assert_eq!(seen.len(), 1, "{}", summary(&seen));
    let hosts: Vec<&str> = seen[0]
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(hosts, [dialled.as_str()], "{}", summary(&seen));
    setup.assert_still_serving("host-rules").await;
}
