//! A watch stream: etcd's newline-separated JSON messages, read as they arrive.

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{wire, EtcdError, Event, WatchBatch, MAX_ANSWER};

/// A watch stream: one message after another, as etcd sends them.
#[derive(Debug)]
pub struct Watch {
    endpoint: String,
    body: Incoming,
    /// Bytes received but not yet a whole message (messages end with a newline).
    buffer: BytesMut,
}

impl Watch {
    /// The stream of the watch `endpoint` answered with `body`.
    pub(super) fn new(endpoint: String, body: Incoming) -> Watch {
        Watch {
            endpoint,
            body,
            buffer: BytesMut::new(),
        }
    }

    /// The next batch of events; an error when the stream ended or was cancelled
    /// (then watch again from the last revision seen + 1).
    pub async fn next(&mut self) -> Result<WatchBatch, EtcdError> {
        loop {
            let message = self.message().await?;
            if message.canceled || message.compact_revision > 0 {
                return Err(self.ended(format!(
                    "cancelled by etcd (compacted at revision {}): {}",
                    message.compact_revision, message.cancel_reason
                )));
            }
            if message.events.is_empty() {
                continue; // a progress notification
            }
            return Ok(WatchBatch {
                revision: message.header.revision,
                events: message.events.into_iter().map(Event::from).collect(),
            });
        }
    }

    pub(super) async fn message(&mut self) -> Result<wire::WatchResult, EtcdError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                let line = &line[..end];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let message: wire::WatchMessage = serde_json::from_slice(line)
                    .map_err(|error| self.ended(format!("not a watch message: {error}")))?;
                return match (message.result, message.error) {
                    (Some(result), _) => Ok(result),
                    (None, Some(error)) => Err(self.ended(error.message)),
                    (None, None) => Err(self.ended("an empty message".into())),
                };
            }
            if self.buffer.len() > MAX_ANSWER {
                return Err(self.ended("a message over 16 MiB".into()));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buffer.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Some(Err(error)) => return Err(self.ended(error.to_string())),
                None => return Err(self.ended("the stream closed".into())),
            }
        }
    }

    fn ended(&self, detail: String) -> EtcdError {
        EtcdError::WatchEnded {
            endpoint: self.endpoint.clone(),
            detail,
        }
    }
}
