//! A blocking one-shot HTTP/1.1 GET or POST for readiness checks and admin calls (not
//! for load).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Responses larger than this are cut (readiness checks need the head only).
const MAX_REPLY: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on a fresh connection with `Connection: close`, bounded by `timeout`
/// for the connect and for each read.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Reply> {
    request(addr, "GET", path, timeout)
}

/// `POST path` without a body (admin calls such as `/switchover?to=NAME`), as `get`.
pub fn post(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Reply> {
    request(addr, "POST", path, timeout)
}

fn request(addr: SocketAddr, method: &str, path: &str, timeout: Duration) -> io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let length = if method == "GET" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{length}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.take(MAX_REPLY).read_to_end(&mut raw)?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> io::Result<Reply> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}
