//! The sample master over real sockets: health switching, stop/restart, streaming.

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jenkins_ha_proxy::sample::{RestCall, SampleMaster, SAMPLE_HEALTH_PATH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Every wait in these tests ends here at the latest.
const DEADLINE: Duration = Duration::from_secs(10);

async fn start(name: &str, ip: &str) -> SampleMaster {
    let addr: SocketAddr = format!("{ip}:0").parse().expect("test address");
    SampleMaster::start(name, addr)
        .await
        .expect("start sample master")
}

/// Runs `fut`, failing the test if it takes longer than DEADLINE.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `condition` until it holds, failing the test after DEADLINE.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Sends one request on a fresh hyper client connection.
async fn send(addr: SocketAddr, req: Request<Empty<Bytes>>) -> Response<Incoming> {
    within("response head", async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("send request")
    })
    .await
}

fn get_request(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "sample")
        .body(Empty::new())
        .expect("request")
}

/// GET `path`; returns the status, the response and its whole body as text.
async fn get(master: &SampleMaster, path: &str) -> (StatusCode, Response<()>, String) {
    call(master, get_request(path)).await
}

/// POST `path` without a body, with `authorization` if given.
async fn post(
    master: &SampleMaster,
    path: &str,
    authorization: Option<&str>,
) -> (StatusCode, Response<()>, String) {
    let mut req = Request::post(path).header("host", "sample");
    if let Some(authorization) = authorization {
        req = req.header("authorization", authorization);
    }
    call(master, req.body(Empty::new()).expect("request")).await
}

/// Sends `req`; returns the status, the response and its whole body as text.
async fn call(
    master: &SampleMaster,
    req: Request<Empty<Bytes>>,
) -> (StatusCode, Response<()>, String) {
    let res = send(master.addr(), req).await;
    let (parts, body) = res.into_parts();
    let body = within("response body", body.collect())
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    (parts.status, Response::from_parts(parts, ()), text)
}

fn header<'a>(res: &'a Response<()>, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Reads from a raw socket until the accumulated text contains `needle`.
async fn read_until(stream: &mut TcpStream, seen: &mut String, needle: &str) {
    within(needle, async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "EOF before {needle:?}; got {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
}

#[tokio::test]
async fn health_switches_between_200_and_503() {
    let master = start("alpha", "127.0.0.2").await;

    let (status, res, body) = get(&master, SAMPLE_HEALTH_PATH).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok");
    assert_eq!(header(&res, "x-jenkins"), Some("2.sample"));
    assert_eq!(header(&res, "x-master"), Some("alpha"));

    master.set_healthy(false);
    let (status, res, body) = get(&master, SAMPLE_HEALTH_PATH).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "Jenkins is getting ready to work");
    assert_eq!(header(&res, "x-jenkins"), Some("2.sample"));

    master.set_healthy(true);
    let (status, _, _) = get(&master, SAMPLE_HEALTH_PATH).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(master.traffic_count(), 0, "health checks are not traffic");
    assert_eq!(master.requests().len(), 3);
}

#[tokio::test]
async fn other_paths_say_hello_and_count_as_traffic() {
    let master = start("beta", "127.0.0.3").await;
    let (status, res, body) = get(&master, "/job/x/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from beta\n");
    assert_eq!(header(&res, "x-master"), Some("beta"));
    assert_eq!(
        header(&res, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(master.traffic_count(), 1);
    assert_eq!(master.url(), format!("http://{}", master.addr()));
    assert_eq!(master.name(), "beta");
}

#[tokio::test]
async fn stop_refuses_connects_and_restart_serves_on_the_same_port() {
    let master = start("alpha", "127.0.0.2").await;
    let addr = master.addr();
    assert_ne!(addr.port(), 0);

    // An open keep-alive connection must be cut by stop(), like a killed process.
    let mut open = TcpStream::connect(addr).await.expect("connect");
    open.write_all(b"GET / HTTP/1.1\r\nHost: sample\r\n\r\n")
        .await
        .expect("write");
    let mut seen = String::new();
    read_until(&mut open, &mut seen, "hello from alpha\n").await;

    // So must a response that is still streaming.
    let mut streaming = TcpStream::connect(addr).await.expect("connect");
    streaming
        .write_all(b"GET /slow?chunks=100000&delay_ms=20 HTTP/1.1\r\nHost: sample\r\n\r\n")
        .await
        .expect("write");
    let mut streamed = String::new();
    read_until(&mut streaming, &mut streamed, "chunk 0\n").await;

    master.stop().await;
    assert!(!master.is_running());
    let refused = TcpStream::connect(addr)
        .await
        .expect_err("connect after stop");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    let mut buf = [0u8; 64];
    match within("EOF on the open connection", open.read(&mut buf)).await {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("expected EOF/RST, read {n} bytes"),
    }
    // A few chunks may still be in flight; then EOF or RST, not more chunks forever.
    within("the streaming response to be cut", async {
        while let Ok(1..) = streaming.read(&mut buf).await {}
    })
    .await;

    master.restart().await.expect("restart");
    assert!(master.is_running());
    assert_eq!(master.addr(), addr);
    let (status, _, body) = get(&master, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from alpha\n");
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let master = start("alpha", "127.0.0.2").await;
    let addr = master.addr();
    let clone = master.clone();
    drop(master);
    assert!(clone.is_running(), "a clone keeps the server alive");
    drop(clone);
    let mut refused = false;
    within("listener closed after drop", async {
        while !refused {
            refused = TcpStream::connect(addr).await.is_err();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn slow_sends_the_first_chunk_long_before_the_last() {
    let master = start("alpha", "127.0.0.2").await;
    let (chunks, delay_ms) = (5u64, 150u64);
    let total = Duration::from_millis((chunks - 1) * delay_ms);

    let started = Instant::now();
    let res = send(
        master.addr(),
        get_request(&format!("/slow?chunks={chunks}&delay_ms={delay_ms}")),
    )
    .await;
    assert!(res.headers().get("content-length").is_none());
    assert_eq!(
        res.headers().get("transfer-encoding").map(|v| v.as_bytes()),
        Some(&b"chunked"[..])
    );

    let mut body = res.into_body();
    let mut text = String::new();
    let mut first_at = None;
    while let Some(frame) = within("slow chunk", body.frame()).await {
        if let Some(data) = frame.expect("frame").data_ref() {
            first_at.get_or_insert_with(|| started.elapsed());
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
    let first_at = first_at.expect("at least one chunk");
    assert!(first_at < total / 2, "first chunk after {first_at:?}");
    assert!(
        started.elapsed() >= total,
        "all chunks after {:?}",
        started.elapsed()
    );
    let expected: String = (0..chunks).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(text, expected);
}

#[tokio::test]
async fn slow_with_a_bad_query_uses_defaults() {
    let master = start("alpha", "127.0.0.2").await;
    let (status, _, body) = get(&master, "/slow?chunks=2&delay_ms=-7&chunks").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "chunk 0\nchunk 1\n");
}

#[tokio::test]
async fn upload_counter_grows_before_the_body_ends() {
    let master = start("alpha", "127.0.0.2").await;
    let part = vec![b'a'; 10_000];
    let mut stream = TcpStream::connect(master.addr()).await.expect("connect");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: sample\r\nContent-Length: {}\r\n\r\n",
        2 * part.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(&part).await.expect("write first part");

    wait_until("first part counted", || {
        master.upload_bytes() >= part.len() as u64
    })
    .await;
    stream.write_all(&part).await.expect("write second part");

    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "received 20000 bytes\n").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert_eq!(master.upload_bytes(), 20_000);
}

#[tokio::test]
async fn upload_rejects_get() {
    let master = start("alpha", "127.0.0.2").await;
    let (status, res, _) = get(&master, "/upload").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&res, "allow"), Some("POST, PUT"));
}

#[tokio::test]
async fn echo_returns_chunk_one_before_chunk_two_is_sent() {
    let master = start("alpha", "127.0.0.3").await;
    let mut stream = TcpStream::connect(master.addr()).await.expect("connect");
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: sample\r\nTransfer-Encoding: chunked\r\n\r\n\
              6\r\nfirst!\r\n",
        )
        .await
        .expect("write first chunk");

    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "first!").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(!seen.contains("second"));

    stream
        .write_all(b"6\r\nsecond\r\n0\r\n\r\n")
        .await
        .expect("write second chunk");
    read_until(&mut stream, &mut seen, "second").await;
    read_until(&mut stream, &mut seen, "0\r\n\r\n").await;
}

#[tokio::test]
async fn bytes_sends_exactly_n_bytes_with_a_content_length() {
    let master = start("alpha", "127.0.0.2").await;
    let n = 1_000_000;
    let (status, res, body) = get(&master, &format!("/bytes?n={n}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&res, "content-length"), Some("1000000"));
    assert_eq!(body.len(), n);

    let (_, res, body) = get(&master, "/bytes?n=0").await;
    assert_eq!(header(&res, "content-length"), Some("0"));
    assert!(body.is_empty());
}

#[tokio::test]
async fn requests_are_recorded_with_headers_and_the_raw_target() {
    let master = start("alpha", "127.0.0.2").await;
    let target = "/job/a%2Fb/api/json?tree=jobs%5Bname%5D";
    let req = Request::get(target)
        .header("host", "sample")
        .header("X-Test-Header", "hello")
        .body(Empty::new())
        .expect("request");
    let res = send(master.addr(), req).await;
    assert_eq!(res.status(), StatusCode::OK);

    let requests = master.requests();
    let recorded = requests.last().expect("a recorded request");
    assert_eq!(recorded.method, "GET");
    assert_eq!(recorded.target, target);
    assert_eq!(recorded.version, "HTTP/1.1");
    assert_eq!(recorded.header("x-test-header"), Some("hello"));
    assert_eq!(recorded.header("X-Test-Header"), Some("hello"));
    assert!(recorded.headers.iter().any(|(n, _)| n == "x-test-header"));
}

#[tokio::test]
async fn headers_endpoint_lists_request_headers() {
    let master = start("alpha", "127.0.0.2").await;
    let (status, _, body) = get(&master, "/headers").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.lines().any(|l| l == "host: sample"), "{body}");
}

const STARTING: &str = "Jenkins is getting ready to work";

fn paths(calls: &[RestCall]) -> Vec<&str> {
    calls.iter().map(|c| c.path.as_str()).collect()
}

#[tokio::test]
async fn every_response_carries_the_session_and_restart_jvm_renews_it() {
    let master = start("alpha", "127.0.0.2").await;
    let addr = master.addr();
    let session = master.session();
    assert_eq!(session.len(), 8, "{session}");
    assert!(session.chars().all(|c| c.is_ascii_hexdigit()), "{session}");
    for path in [
        "/",
        SAMPLE_HEALTH_PATH,
        "/bytes?n=3",
        "/tcpSlaveAgentListener/",
    ] {
        let (_, res, _) = get(&master, path).await;
        assert_eq!(
            header(&res, "x-jenkins-session"),
            Some(session.as_str()),
            "{path}"
        );
    }
    let (_, res, _) = post(&master, "/quietDown", None).await;
    assert_eq!(header(&res, "x-jenkins-session"), Some(session.as_str()));
    assert!(master.is_quiet());

    // An open connection is cut, like a killed JVM.
    let mut open = TcpStream::connect(addr).await.expect("connect");
    master.restart_jvm().await;
    let mut buf = [0u8; 64];
    match within("EOF on the open connection", open.read(&mut buf)).await {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("expected EOF/RST, read {n} bytes"),
    }

    assert!(master.is_running());
    assert_eq!(master.addr(), addr);
    assert!(master.is_starting());
    assert!(
        !master.is_quiet(),
        "quiet-down does not survive a JVM restart"
    );
    let renewed = master.session();
    assert_ne!(renewed, session);
    for path in ["/", SAMPLE_HEALTH_PATH] {
        let (status, res, body) = get(&master, path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(body, STARTING, "{path}");
        assert_eq!(header(&res, "x-jenkins-session"), Some(renewed.as_str()));
        assert_eq!(header(&res, "x-master"), Some("alpha"));
    }

    master.set_starting(false);
    let (status, res, body) = get(&master, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from alpha\n");
    assert_eq!(header(&res, "x-jenkins-session"), Some(renewed.as_str()));
}

#[tokio::test]
async fn starting_answers_503_on_every_path_and_rest_calls_have_no_effect() {
    let master = start("alpha", "127.0.0.3").await;
    master.set_starting(true);
    assert!(master.is_starting());
    for path in ["/", SAMPLE_HEALTH_PATH, "/job/x/api/json", "/headers"] {
        let (status, _, body) = get(&master, path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(body, STARTING, "{path}");
    }
    let (status, _, body) = post(&master, "/quietDown", Some("Basic dTp0")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, STARTING);
    assert!(!master.is_quiet(), "a 503 REST call has no effect");

    let calls = master.rest_calls();
    assert_eq!(paths(&calls), ["/quietDown"], "logged even when refused");
    assert_eq!(calls[0].status, 503);
    assert_eq!(calls[0].authorization.as_deref(), Some("Basic dTp0"));
    // Client requests answered 503 still reached the master: they count.
    assert_eq!(master.traffic_count(), 3);

    master.set_starting(false);
    assert!(!master.is_starting());
    let (status, _, body) = get(&master, SAMPLE_HEALTH_PATH).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn rest_calls_are_logged_with_their_authorization_and_are_not_traffic() {
    let master = start("alpha", "127.0.0.2").await;
    let before = std::time::Instant::now();
    let auth = "Basic YWRtaW46dG9rZW4=";

    let (status, res, _) = post(&master, "/quietDown", Some(auth)).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(header(&res, "location"), Some("/"));
    assert!(master.is_quiet());
    let (status, _, _) = post(&master, "/cancelQuietDown", None).await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(!master.is_quiet());
    let (status, _, _) = post(&master, "/reload", Some(auth)).await;
    assert_eq!(status, StatusCode::FOUND);
    // The default reload takes no time: ready again at once.
    assert!(!master.is_starting());
    let (status, _, _) = get(&master, SAMPLE_HEALTH_PATH).await;
    assert_eq!(status, StatusCode::OK);

    // Only POST is a REST call; a GET is refused, is not logged and changes nothing.
    let (status, res, _) = get(&master, "/quietDown").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&res, "allow"), Some("POST"));
    assert!(!master.is_quiet());

    let calls = master.rest_calls();
    assert_eq!(paths(&calls), ["/quietDown", "/cancelQuietDown", "/reload"]);
    let auths: Vec<_> = calls.iter().map(|c| c.authorization.as_deref()).collect();
    assert_eq!(auths, [Some(auth), None, Some(auth)]);
    assert!(calls.iter().all(|c| c.status == 302));
    assert!(calls[0].at >= before);
    assert!(calls.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(
        master.traffic_count(),
        0,
        "REST calls and health are not traffic"
    );
    assert_eq!(master.requests().len(), 5, "but every request is recorded");
}

#[tokio::test]
async fn reload_is_starting_for_the_reload_duration_then_ready_by_itself() {
    let master = start("alpha", "127.0.0.2").await;
    let duration = Duration::from_millis(600);
    master.set_reload_duration(duration);

    let sent = Instant::now();
    let (status, _, _) = post(&master, "/reload", None).await;
    assert_eq!(status, StatusCode::FOUND, "answered at once");
    assert!(sent.elapsed() < duration, "took {:?}", sent.elapsed());
    // Starting from the answer on: a check sent right after it sees 503.
    let (status, _, body) = get(&master, SAMPLE_HEALTH_PATH).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, STARTING)
    );
    let (status, _, _) = post(&master, "/cancelQuietDown", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    wait_until("reload to end", || !master.is_starting()).await;
    assert!(
        sent.elapsed() >= duration,
        "ready after {:?}",
        sent.elapsed()
    );
    let (status, _, _) = get(&master, SAMPLE_HEALTH_PATH).await;
    assert_eq!(status, StatusCode::OK);
    let statuses: Vec<_> = master.rest_calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [302, 503]);
}

#[tokio::test]
async fn set_starting_during_a_reload_is_not_undone_by_its_end() {
    let master = start("alpha", "127.0.0.3").await;
    let duration = Duration::from_millis(100);
    master.set_reload_duration(duration);
    let (status, _, _) = post(&master, "/reload", None).await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(master.is_starting());
    master.set_starting(true);
    // A negative can only be shown by waiting past the reload's end.
    tokio::time::sleep(duration * 3).await;
    assert!(
        master.is_starting(),
        "the reload timer ended a later starting mode"
    );

    master.set_starting(false);
    let (status, _, _) = post(&master, "/reload", None).await;
    assert_eq!(status, StatusCode::FOUND);
    master.set_starting(false);
    assert!(
        !master.is_starting(),
        "set_starting(false) ends a reload early"
    );
}
