//! The access log: one line per request, under the log target
//! `jenkins_ha_proxy::access`, written when the response body has been sent (or the
//! client went away), so that `bytes` and `duration` are the real ones.

use std::net::IpAddr;
use std::time::Instant;

use hyper::{Method, StatusCode};

/// What is known of a request when its response starts.
#[derive(Debug)]
pub struct AccessEntry {
    pub client: IpAddr,
    pub method: Method,
    /// Path and query as received.
    pub target: String,
    pub status: StatusCode,
    /// The master that answered, or "-" for the proxy's own answers.
    pub master: String,
    pub started: Instant,
}

impl AccessEntry {
    /// Writes the line; `complete` is false when the body was cut short.
    pub fn log(&self, bytes: u64, complete: bool) {
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "jenkins_ha_proxy::access",
            client = %self.client,
            method = %self.method,
            path = %self.target,
            status = self.status.as_u16(),
            bytes,
            duration_ms = format!("{duration_ms:.1}"),
            master = %self.master,
            complete,
            "{} {} {} {} {}B {:.1}ms {}",
            self.client, self.method, self.target, self.status.as_u16(), bytes, duration_ms, self.master
        );
    }
}
