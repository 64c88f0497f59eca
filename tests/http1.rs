//! The client-facing HTTP/1.1 server as a client on the wire sees it: pipelined
//! requests, heads that trickle in, HEAD, chunked and sized bodies, `Connection:
//! close`, the idle timeout, and a connection that hyper's server takes over
//! mid-way (a request with a body) and serves to its end.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jenkins_ha_proxy::config::Failback;
use jenkins_ha_proxy::sample::SampleMaster;
use support::{config_for, health, TestDaemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every read below ends by then.
const DEADLINE: Duration = Duration::from_secs(10);

async fn one_master(header_read_timeout: Option<Duration>) -> (SampleMaster, TestDaemon) {
    let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
        .await
        .expect("master-a");
    let mut config = config_for(&[&a], health(100, 2, 3), Failback::Never);
    if let Some(timeout) = header_read_timeout {
        config.proxy.header_read_timeout = timeout;
    }
    (a, TestDaemon::start_with_active(config, "master-a").await)
}

/// One response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that reads responses as they are framed.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(proxy: SocketAddr) -> Client {
        let stream = TcpStream::connect(proxy).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// A new connection that has sent `request` and read its answer.
    async fn exchange(proxy: SocketAddr, request: &[u8]) -> (Client, Answer) {
        let mut client = Client::connect(proxy).await;
        client.write(request).await;
        let answer = client.answer(false).await;
        (client, answer)
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more into the buffer; false at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk)).await {
            Err(_) => panic!("nothing read within {DEADLINE:?}; have {:?}", self.text()),
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// The next response; `head_request`: it answers a HEAD (no body).
    async fn answer(&mut self, head_request: bool) -> Answer {
        let (len, status, headers) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(len) =
                response.parse(&self.buf).expect("a valid response head")
            {
                let headers = response
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).into_owned();
                        (h.name.to_ascii_lowercase(), value)
                    })
                    .collect::<Vec<_>>();
                break (len, response.code.expect("status"), headers);
            }
            assert!(
                self.fill().await,
                "closed before a whole head: {:?}",
                self.text()
            );
        };
        self.buf.drain(..len);
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if head_request || status == 204 || status == 304 {
            return answer;
        }
        if answer.header("transfer-encoding") == Some("chunked") {
            answer.body = self.chunked().await;
        } else {
            let length: usize = answer
                .header("content-length")
                .expect("a length or chunked")
                .parse()
                .expect("a decimal length");
            while self.buf.len() < length {
                assert!(self.fill().await, "closed inside a body");
            }
            answer.body = self.buf.drain(..length).collect();
        }
        answer
    }

    /// A chunked body, decoded.
    async fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                assert!(self.fill().await, "closed inside a chunk size");
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.trim(), 16).expect("a hex chunk size");
            while self.buf.len() < line_end + 2 + size + 2 {
                assert!(self.fill().await, "closed inside a chunk");
            }
            let start = line_end + 2;
            body.extend_from_slice(&self.buf[start..start + size]);
            assert_eq!(&self.buf[start + size..start + size + 2], b"\r\n");
            self.buf.drain(..start + size + 2);
            if size == 0 {
                return body;
            }
        }
    }

    /// Waits for the proxy to close the connection; panics on any byte.
    async fn closed(&mut self) {
        assert!(!self.fill().await, "more after the end: {:?}", self.text());
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: proxy\r\n\r\n")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_with_each_body_framed() {
    let (_a, daemon) = one_master(None).await;
    let mut client = Client::connect(daemon.proxy).await;
    let requests = [
        get("/first"),
        "HEAD /bytes?n=5000 HTTP/1.1\r\nHost: proxy\r\n\r\n".to_owned(),
        get("/slow?chunks=3&delay_ms=1"),
        get("/bytes?n=100000"),
        "OPTIONS /last HTTP/1.1\r\nHost: proxy\r\nConnection: keep-alive\r\n\r\n".to_owned(),
    ];
    client.write(requests.concat().as_bytes()).await;

    let first = client.answer(false).await;
    assert_eq!(
        (first.status, first.text().as_str()),
        (200, "hello from master-a\n")
    );
    assert!(first.header("date").is_some(), "{first:?}");
    let head = client.answer(true).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("5000"), "{head:?}");
    let slow = client.answer(false).await;
    assert_eq!(
        slow.header("transfer-encoding"),
        Some("chunked"),
        "{slow:?}"
    );
    assert_eq!(slow.text(), "chunk 0\nchunk 1\nchunk 2\n");
    let bytes = client.answer(false).await;
    assert_eq!(bytes.body.len(), 100_000);
    let last = client.answer(false).await;
    assert_eq!(last.text(), "hello from master-a\n");
    assert!(client.buf.is_empty(), "nothing more: {:?}", client.text());
}

#[tokio::test]
async fn a_head_that_trickles_in_byte_by_byte_is_served() {
    let (_a, daemon) = one_master(None).await;
    let mut client = Client::connect(daemon.proxy).await;
    for byte in get("/trickled").as_bytes() {
        client.write(&[*byte]).await;
        tokio::task::yield_now().await;
    }
    let answer = client.answer(false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "hello from master-a\n");
}

/// A POST (a body: hyper's server from then on), then common requests again, then a
/// smuggling attempt: all on one connection, each answered as before.
#[tokio::test]
async fn a_connection_handed_to_hyper_mid_way_is_served_to_its_end() {
    let (a, daemon) = one_master(None).await;
    let mut client = Client::connect(daemon.proxy).await;
    client.write(get("/before").as_bytes()).await;
    assert_eq!(client.answer(false).await.text(), "hello from master-a\n");

    let post = "POST /upload HTTP/1.1\r\nHost: proxy\r\nContent-Length: 5\r\n\r\nhello";
    client
        .write(format!("{post}{}", get("/after")).as_bytes())
        .await;
    let uploaded = client.answer(false).await;
    assert_eq!(
        (uploaded.status, uploaded.text().as_str()),
        (200, "received 5 bytes\n")
    );
    assert_eq!(a.upload_bytes(), 5);
    assert_eq!(client.answer(false).await.text(), "hello from master-a\n");

    let smuggling = "GET /x HTTP/1.1\r\nHost: proxy\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    client.write(smuggling.as_bytes()).await;
    let refused = client.answer(false).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(
        refused
            .text()
            .contains("Content-Length and Transfer-Encoding"),
        "{refused:?}"
    );
    client.closed().await;
}

#[tokio::test]
async fn connection_close_is_said_back_and_done() {
    let (_a, daemon) = one_master(None).await;
    let request = b"GET /bye HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n";
    let (mut client, answer) = Client::exchange(daemon.proxy, request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    client.closed().await;
}

#[tokio::test]
async fn a_request_without_host_and_an_unreadable_head_are_refused() {
    let (_a, daemon) = one_master(None).await;
    let no_host = b"GET /no-host HTTP/1.1\r\nAccept: */*\r\n\r\n";
    let (_, refused) = Client::exchange(daemon.proxy, no_host).await;
    assert_eq!(refused.status, 400);
    assert!(refused.text().contains("no Host header"), "{refused:?}");

    let unreadable = b"GET /a b HTTP/1.1\r\nHost: proxy\r\n\r\n";
    let (mut client, refused) = Client::exchange(daemon.proxy, unreadable).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    client.closed().await;
}

/// After a response, a connection that sends nothing more is closed after
/// `proxy.header_read_timeout`; one that keeps sending requests is not.
#[tokio::test]
async fn an_idle_connection_closes_after_header_read_timeout() {
    let timeout = Duration::from_millis(400);
    let (_a, daemon) = one_master(Some(timeout)).await;
    let mut client = Client::connect(daemon.proxy).await;
    // Busy for three timeouts: a request every quarter of one.
    let busy_until = Instant::now() + 3 * timeout;
    while Instant::now() < busy_until {
        client.write(get("/busy").as_bytes()).await;
        assert_eq!(client.answer(false).await.status, 200);
        tokio::time::sleep(timeout / 4).await;
    }
    let idle_from = Instant::now();
    client.closed().await;
    let idle = idle_from.elapsed();
    assert!(
        idle >= timeout / 2 && idle < DEADLINE,
        "closed after {idle:?} idle; the timeout is {timeout:?}"
    );
}
