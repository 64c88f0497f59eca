//! A small etcd v3 client: the calls cluster mode needs (range, put, delete, txn,
//! leases, watch), typed, over etcd's JSON gateway.
//!
//! Why the gateway and not the gRPC crate (`etcd-client`): that crate generates its
//! code from `.proto` files in its build script and so needs `protoc` on every machine
//! that builds us. The gateway is served by every etcd 3.4 and later on its client
//! port (`POST /v3/kv/range`, ...; JSON bodies, keys and values in base64, 64-bit
//! numbers as strings), and speaking it takes only the hyper client we already have.
//!
//! Every call has a deadline per endpoint and moves on to the next endpoint when one
//! does not answer; the endpoint that answered last is tried first next time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
mod watch;
mod wire;

pub use watch::Watch;
use wire::b64;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest answer read from etcd (our keys are a few hundred bytes each).
const MAX_ANSWER: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(
        "etcd endpoint {url:?} is not an http://host:port URL; write it as http://10.0.0.5:2379"
    )]
    BadEndpoint { url: String },
    #[error("no etcd endpoint answered {call} ({endpoints}); last error: {last}")]
    Unavailable {
        call: &'static str,
        endpoints: String,
        last: String,
    },
    #[error("etcd at {endpoint} refused {call}: HTTP {status}: {message}")]
    Refused {
        endpoint: String,
        call: &'static str,
        status: StatusCode,
        message: String,
    },
    #[error("etcd at {endpoint}: cannot read the answer to {call}: {detail}")]
    Decode {
        endpoint: String,
        call: &'static str,
        detail: String,
    },
    #[error("the etcd watch from {endpoint} ended: {detail}")]
    WatchEnded { endpoint: String, detail: String },
}

/// A key and its value with etcd's bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (0 when absent).
    pub create_revision: i64,
    /// Revision of the last write to the key.
    pub mod_revision: i64,
    /// Writes since the key was created (0 when absent).
    pub version: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// A lease granted by etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl: Duration,
}

/// How a compare matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Cmp {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// Writes since creation; 0 means the key does not exist.
    Version(Vec<u8>, Cmp, i64),
    CreateRevision(Vec<u8>, Cmp, i64),
    ModRevision(Vec<u8>, Cmp, i64),
    Value(Vec<u8>, Cmp, Vec<u8>),
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        /// 0: no lease.
        lease: i64,
    },
    /// The key, or with `range_end` every key in `[key, range_end)`.
    Range {
        key: Vec<u8>,
        range_end: Option<Vec<u8>>,
    },
    Delete {
        key: Vec<u8>,
        range_end: Option<Vec<u8>>,
    },
}

/// What one operation of a transaction returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Range(Vec<KeyValue>),
    Put,
    Delete { deleted: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// The store's revision after the transaction (the write's own, if it wrote).
    pub revision: i64,
    pub succeeded: bool,
    pub results: Vec<OpResult>,
}

/// A range read: the keys and the store's revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
}

/// What happened to a key, as a watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    /// The key was deleted (or its lease expired); `kv.mod_revision` is the delete's.
    Delete(KeyValue),
}

/// One message of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// The client: endpoints as `host:port`, a deadline per call and endpoint.
#[derive(Debug)]
pub struct Client {
    endpoints: Vec<String>,
    timeout: Duration,
    /// The endpoint that answered last; written and read by every call.
    preferred: AtomicUsize,
}

/// The end of the range of every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

impl Client {
    /// `urls`: `http://host:port` each. `timeout`: deadline of one call to one endpoint.
    pub fn new(urls: &[String], timeout: Duration) -> Result<Client, EtcdError> {
        let endpoints = urls
            .iter()
            .map(|url| endpoint(url).ok_or_else(|| EtcdError::BadEndpoint { url: url.clone() }))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(EtcdError::BadEndpoint { url: String::new() });
        }
        Ok(Client {
            endpoints,
            timeout,
            preferred: AtomicUsize::new(0),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The key, or with `range_end` every key in `[key, range_end)`.
    pub async fn range(
        &self,
        key: &[u8],
        range_end: Option<&[u8]>,
    ) -> Result<RangeResult, EtcdError> {
        let body = wire::RangeRequest {
            key: b64(key),
            range_end: range_end.map(b64),
        };
        let answer: wire::RangeResponse = self.call("range", "/v3/kv/range", &body).await?;
        Ok(RangeResult {
            revision: answer.header.revision,
            kvs: answer.kvs.into_iter().map(KeyValue::from).collect(),
        })
    }

    /// Writes `value` at `key` (attached to `lease` unless 0); returns the revision.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let body = wire::PutRequest {
            key: b64(key),
            value: b64(value),
            lease,
        };
        let answer: wire::HeaderOnly = self.call("put", "/v3/kv/put", &body).await?;
        Ok(answer.header.revision)
    }

    /// Deletes the key (or the range); returns how many keys went.
    pub async fn delete(&self, key: &[u8], range_end: Option<&[u8]>) -> Result<i64, EtcdError> {
        let body = wire::RangeRequest {
            key: b64(key),
            range_end: range_end.map(b64),
        };
        let answer: wire::DeleteResponse = self.call("delete", "/v3/kv/deleterange", &body).await?;
        Ok(answer.deleted)
    }

    /// If every compare holds, `success`, else `failure`, atomically.
    pub async fn txn(
        &self,
        compare: &[Compare],
        success: &[Op],
        failure: &[Op],
    ) -> Result<TxnResult, EtcdError> {
        let body = wire::TxnRequest {
            compare: compare.iter().map(wire::Compare::from).collect(),
            success: success.iter().map(wire::RequestOp::from).collect(),
            failure: failure.iter().map(wire::RequestOp::from).collect(),
        };
        let answer: wire::TxnResponse = self.call("txn", "/v3/kv/txn", &body).await?;
        Ok(TxnResult {
            revision: answer.header.revision,
            succeeded: answer.succeeded,
            results: answer.responses.into_iter().map(OpResult::from).collect(),
        })
    }

    /// A new lease of `ttl` (etcd may grant a longer one).
    pub async fn grant(&self, ttl: Duration) -> Result<Lease, EtcdError> {
        let body = wire::GrantRequest {
            ttl: ttl.as_secs().max(1) as i64,
        };
        let answer: wire::GrantResponse =
            self.call("lease grant", "/v3/lease/grant", &body).await?;
        Ok(Lease {
            id: answer.id,
            ttl: Duration::from_secs(answer.ttl.max(0) as u64),
        })
    }

    /// Renews `lease`; its time to live from now, or None when it has expired.
    pub async fn keep_alive(&self, lease: i64) -> Result<Option<Duration>, EtcdError> {
        let body = wire::LeaseId { id: lease };
        // A stream of answers, one per request sent; we send one.
        let answer: wire::KeepAliveStream = self
            .call("lease keepalive", "/v3/lease/keepalive", &body)
            .await?;
        let ttl = answer.result.map_or(0, |result| result.ttl);
        Ok((ttl > 0).then(|| Duration::from_secs(ttl as u64)))
    }

    /// Ends `lease` and deletes its keys.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        let body = wire::LeaseId { id: lease };
        let _: wire::HeaderOnly = self.call("lease revoke", "/v3/lease/revoke", &body).await?;
        Ok(())
    }

    /// Watches `[key, range_end)` from `start_revision` (0: from now).
    pub async fn watch(
        &self,
        key: &[u8],
        range_end: Option<&[u8]>,
        start_revision: i64,
    ) -> Result<Watch, EtcdError> {
        let body = wire::WatchRequest {
            create_request: wire::WatchCreate {
                key: b64(key),
                range_end: range_end.map(b64),
                start_revision,
            },
        };
        let json = serde_json::to_vec(&body).map_err(|error| EtcdError::Decode {
            endpoint: String::new(),
            call: "watch",
            detail: error.to_string(),
        })?;
        let mut last = String::from("no endpoint");
        for endpoint in self.in_order() {
            let opened =
                tokio::time::timeout(self.timeout, post(endpoint, "/v3/watch", &json)).await;
            match opened {
                Ok(Ok(response)) if response.status().is_success() => {
                    let mut watch = Watch::new(endpoint.clone(), response.into_body());
                    // The first message says the watch was created.
                    match tokio::time::timeout(self.timeout, watch.message()).await {
                        Ok(Ok(created)) if created.created => return Ok(watch),
                        Ok(Ok(_)) => last = format!("{endpoint}: the watch was not created"),
                        Ok(Err(error)) => last = error.to_string(),
                        Err(_) => last = format!("{endpoint}: no answer in time"),
                    }
                }
                Ok(Ok(response)) => last = format!("{endpoint}: HTTP {}", response.status()),
                Ok(Err(error)) => last = format!("{endpoint}: {error}"),
                Err(_) => last = format!("{endpoint}: no answer in time"),
            }
        }
        Err(EtcdError::Unavailable {
            call: "watch",
            endpoints: self.endpoints.join(", "),
            last,
        })
    }

    /// The endpoints, the one that answered last first.
    fn in_order(&self) -> impl Iterator<Item = &String> {
        let first = self.preferred.load(Ordering::Relaxed) % self.endpoints.len();
        self.endpoints[first..]
            .iter()
            .chain(self.endpoints[..first].iter())
    }

    async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        call: &'static str,
        path: &str,
        request: &Q,
    ) -> Result<A, EtcdError> {
        let json = serde_json::to_vec(request).map_err(|error| EtcdError::Decode {
            endpoint: String::new(),
            call,
            detail: error.to_string(),
        })?;
        let mut last = String::from("no endpoint");
        let first = self.preferred.load(Ordering::Relaxed) % self.endpoints.len();
        for offset in 0..self.endpoints.len() {
            let index = (first + offset) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            let answered = tokio::time::timeout(self.timeout, async {
                let response = post(endpoint, path, &json).await?;
                let status = response.status();
                let body = Limited::new(response.into_body(), MAX_ANSWER)
                    .collect()
                    .await
                    .map_err(|error| error.to_string())?
                    .to_bytes();
                Ok::<_, String>((status, body))
            })
            .await;
            let (status, body) = match answered {
                Ok(Ok(answer)) => answer,
                Ok(Err(error)) => {
                    last = format!("{endpoint}: {error}");
                    continue;
                }
                Err(_) => {
                    last = format!(
                        "{endpoint}: no answer within {}",
                        humantime::format_duration(self.timeout)
                    );
                    continue;
                }
            };
            // A member without a leader or quorum answers 5xx: another one may do.
            if status.is_server_error() {
                last = format!("{endpoint}: HTTP {status}: {}", error_message(&body));
                continue;
            }
            self.preferred.store(index, Ordering::Relaxed);
            if !status.is_success() {
                return Err(EtcdError::Refused {
                    endpoint: endpoint.clone(),
                    call,
                    status,
                    message: error_message(&body),
                });
            }
            return serde_json::from_slice(&body).map_err(|error| EtcdError::Decode {
                endpoint: endpoint.clone(),
                call,
                detail: error.to_string(),
            });
        }
        Err(EtcdError::Unavailable {
            call,
            endpoints: self.endpoints.join(", "),
            last,
        })
    }
}

/// `http://host:port[/]` -> `host:port`.
fn endpoint(url: &str) -> Option<String> {
    crate::config::etcd_endpoint(url)
}

/// POSTs `json` to `path` on `endpoint` over a new connection (cluster calls are few
/// and small; a watch keeps its connection).
async fn post(
    endpoint: &str,
    path: &str,
    json: &[u8],
) -> Result<hyper::Response<Incoming>, String> {
    let stream = tokio::net::TcpStream::connect(endpoint)
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake: {error}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::post(path)
        .header(hyper::header::HOST, endpoint)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::copy_from_slice(json)))
        .map_err(|error| error.to_string())?;
    sender
        .send_request(request)
        .await
        .map_err(|error| format!("request: {error}"))
}

/// etcd's error text out of a JSON error body, else the body as text.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(default)]
        error: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) if !parsed.message.is_empty() => parsed.message,
        Ok(parsed) if !parsed.error.is_empty() => parsed.error,
        _ => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_host_and_port_only() {
        assert_eq!(
            endpoint("http://10.0.0.5:2379").as_deref(),
            Some("10.0.0.5:2379")
        );
        assert_eq!(
            endpoint("http://etcd-1:2379/").as_deref(),
            Some("etcd-1:2379")
        );
        assert_eq!(endpoint("http://[::1]:2379").as_deref(), Some("[::1]:2379"));
        for bad in [
            "https://a:2379",
            "a:2379",
            "http://a",
            "http://a:2379/x",
            "http://u@a:1",
        ] {
            assert_eq!(endpoint(bad), None, "{bad}");
        }
    }

    #[test]
    fn prefix_end_covers_every_key_under_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn proto3_json_reads_with_defaults_left_out() {
        let txn: wire::TxnResponse =
            serde_json::from_str(r#"{"header":{"revision":"7"}}"#).expect("json");
        assert_eq!((txn.header.revision, txn.succeeded), (7, false));
        let watch: wire::WatchMessage = serde_json::from_str(
            r#"{"result":{"header":{"revision":"9"},"events":[{"kv":{"key":"YQ==","mod_revision":"9"}},{"type":"DELETE","kv":{"key":"Yg=="}}]}}"#,
        )
        .expect("json");
        let events: Vec<Event> = watch
            .result
            .expect("result")
            .events
            .into_iter()
            .map(Event::from)
            .collect();
        assert!(matches!(&events[0], Event::Put(kv) if kv.key == b"a" && kv.mod_revision == 9));
        assert!(matches!(&events[1], Event::Delete(kv) if kv.key == b"b"));
    }
}
