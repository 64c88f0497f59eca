//! The gateway's JSON, field for field. proto3 JSON leaves out fields at their
//! default value (0, false, empty): every field has a default. Keys and values travel
//! in base64, 64-bit numbers as strings.

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};

use super::{Event, KeyValue as Entry, OpResult};

#[derive(Debug, Default, Deserialize)]
pub struct Header {
    #[serde(default, deserialize_with = "int64")]
    pub revision: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct HeaderOnly {
    #[serde(default)]
    pub header: Header,
}

#[derive(Debug, Default, Deserialize)]
pub struct KeyValue {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
    #[serde(default, deserialize_with = "int64")]
    pub create_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    pub mod_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    pub version: i64,
    #[serde(default, deserialize_with = "int64")]
    pub lease: i64,
}

#[derive(Debug, Serialize)]
pub struct RangeRequest {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
}

#[derive(Debug, Serialize)]
pub struct PutRequest {
    pub key: String,
    pub value: String,
    #[serde(serialize_with = "int64_as_text")]
    pub lease: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct DeleteResponse {
    #[serde(default, deserialize_with = "int64")]
    pub deleted: i64,
}

#[derive(Debug, Serialize)]
pub struct Compare {
    pub result: super::Cmp,
    pub target: &'static str,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_text")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_text")]
    pub create_revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_text")]
    pub mod_revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

fn opt_text<S: serde::Serializer>(value: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&value.unwrap_or(0).to_string())
}

impl From<&super::Compare> for Compare {
    fn from(compare: &super::Compare) -> Compare {
        let blank = |target, key: &[u8], result| Compare {
            result,
            target,
            key: super::b64(key),
            version: None,
            create_revision: None,
            mod_revision: None,
            value: None,
        };
        match compare {
            super::Compare::Version(key, cmp, n) => Compare {
                version: Some(*n),
                ..blank("VERSION", key, *cmp)
            },
            super::Compare::CreateRevision(key, cmp, n) => Compare {
                create_revision: Some(*n),
                ..blank("CREATE", key, *cmp)
            },
            super::Compare::ModRevision(key, cmp, n) => Compare {
                mod_revision: Some(*n),
                ..blank("MOD", key, *cmp)
            },
            super::Compare::Value(key, cmp, value) => Compare {
                value: Some(super::b64(value)),
                ..blank("VALUE", key, *cmp)
            },
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct RequestOp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_range: Option<RangeRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_put: Option<PutRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_delete_range: Option<RangeRequest>,
}

impl From<&super::Op> for RequestOp {
    fn from(op: &super::Op) -> RequestOp {
        let range = |key: &[u8], end: &Option<Vec<u8>>| RangeRequest {
            key: super::b64(key),
            range_end: end.as_deref().map(super::b64),
        };
        match op {
            super::Op::Put { key, value, lease } => RequestOp {
                request_put: Some(PutRequest {
                    key: super::b64(key),
                    value: super::b64(value),
                    lease: *lease,
                }),
                ..RequestOp::default()
            },
            super::Op::Range { key, range_end } => RequestOp {
                request_range: Some(range(key, range_end)),
                ..RequestOp::default()
            },
            super::Op::Delete { key, range_end } => RequestOp {
                request_delete_range: Some(range(key, range_end)),
                ..RequestOp::default()
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ResponseOp {
    #[serde(default)]
    pub response_range: Option<RangeResponse>,
    #[serde(default)]
    pub response_delete_range: Option<DeleteResponse>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

#[derive(Debug, Serialize)]
pub struct GrantRequest {
    #[serde(rename = "TTL", serialize_with = "int64_as_text")]
    pub ttl: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct GrantResponse {
    #[serde(rename = "ID", default, deserialize_with = "int64")]
    pub id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub ttl: i64,
}

#[derive(Debug, Serialize)]
pub struct LeaseId {
    #[serde(rename = "ID", serialize_with = "int64_as_text")]
    pub id: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct KeepAliveResult {
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub ttl: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct KeepAliveStream {
    #[serde(default)]
    pub result: Option<KeepAliveResult>,
}

#[derive(Debug, Serialize)]
pub struct WatchCreate {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(serialize_with = "int64_as_text")]
    pub start_revision: i64,
}

#[derive(Debug, Serialize)]
pub struct WatchRequest {
    pub create_request: WatchCreate,
}

#[derive(Debug, Default, Deserialize)]
pub struct WatchEvent {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub kv: KeyValue,
}

#[derive(Debug, Default, Deserialize)]
pub struct WatchResult {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    pub compact_revision: i64,
    #[serde(default)]
    pub cancel_reason: String,
    #[serde(default)]
    pub events: Vec<WatchEvent>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamError {
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct WatchMessage {
    #[serde(default)]
    pub result: Option<WatchResult>,
    #[serde(default)]
    pub error: Option<StreamError>,
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes base64, or an empty value for text that is not base64 (etcd only sends
/// what it was given, which we encoded).
pub(super) fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default()
}

/// A 64-bit integer that proto3 JSON writes as a string (and accepts as a number).
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Int::deserialize(deserializer)? {
        Int::Number(n) => Ok(n),
        Int::Text(text) => text.parse().map_err(serde::de::Error::custom),
    }
}

fn int64_as_text<S: serde::Serializer>(value: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&value.to_string())
}

impl From<KeyValue> for Entry {
    fn from(kv: KeyValue) -> Entry {
        Entry {
            key: unb64(&kv.key),
            value: unb64(&kv.value),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

impl From<WatchEvent> for Event {
    fn from(event: WatchEvent) -> Event {
        let kv = Entry::from(event.kv);
        if event.kind == "DELETE" {
            Event::Delete(kv)
        } else {
            Event::Put(kv)
        }
    }
}

impl From<ResponseOp> for OpResult {
    fn from(op: ResponseOp) -> OpResult {
        match op {
            ResponseOp {
                response_range: Some(range),
                ..
            } => OpResult::Range(range.kvs.into_iter().map(Entry::from).collect()),
            ResponseOp {
                response_delete_range: Some(deleted),
                ..
            } => OpResult::Delete {
                deleted: deleted.deleted,
            },
            _ => OpResult::Put,
        }
    }
}
