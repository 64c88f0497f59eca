//! `jenkins-ha-proxy status`: fetch the admin `/status` and print it as a table.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::upstream::open_stream;

const TIMEOUT: Duration = Duration::from_secs(5);
/// /status is small; anything bigger is not ours.
const MAX_STATUS_BYTES: usize = 4 << 20;

pub async fn print(admin: &str, json: bool) -> anyhow::Result<()> {
    let body = tokio::time::timeout(TIMEOUT, fetch(admin))
        .await
        .unwrap_or_else(|_| bail!("no answer within {}", humantime::format_duration(TIMEOUT)))
        .with_context(|| {
            format!("cannot read {admin}/status: is the daemon running, and is --admin its admin.listen?")
        })?;
    if json {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let status: Value = serde_json::from_slice(&body).with_context(|| {
        format!("{admin}/status did not answer JSON: is --admin the admin listener?")
    })?;
    print!("{}", render(&status));
    Ok(())
}

/// A mutating admin call (`POST path`); prints the daemon's answer, fails on refusal.
pub async fn call(args: &super::AdminArgs, path: &str) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --token-file {}", file.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let admin = args.admin.as_str();
    let (status, body) =
        tokio::time::timeout(TIMEOUT, send(admin, Method::POST, path, token.as_deref()))
            .await
            .unwrap_or_else(|_| bail!("no answer within {}", humantime::format_duration(TIMEOUT)))
            .with_context(|| {
                format!("cannot reach the admin API at {admin}: is the daemon running?")
            })?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let message = answer.get("message").and_then(Value::as_str).map_or_else(
        || String::from_utf8_lossy(&body).trim().to_owned(),
        str::to_owned,
    );
    let active = answer
        .get("active")
        .and_then(Value::as_str)
        .unwrap_or("none");
    if !status.is_success() {
        bail!("{status}: {message}");
    }
    println!("{message}; active master: {active}");
    Ok(())
}

async fn fetch(admin: &str) -> anyhow::Result<Bytes> {
    let (status, body) = send(admin, Method::GET, "/status", None).await?;
    if !status.is_success() {
        bail!("HTTP {status}");
    }
    Ok(body)
}

/// One request to the admin API; the body is read with a size limit.
async fn send(
    admin: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let uri: Uri = admin
        .parse()
        .with_context(|| format!("--admin {admin:?} is not a URL like http://127.0.0.1:8404"))?;
    if uri.scheme_str().is_some_and(|s| s != "http") {
        bail!("--admin {admin:?}: only http:// is supported");
    }
    let Some(authority) = uri.authority() else {
        bail!("--admin {admin:?} has no host: use a URL like http://127.0.0.1:8404");
    };
    let host_port = match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:80", authority.host()),
    };
    let stream = open_stream(&host_port, TIMEOUT).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority.as_str());
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new())?)
        .await?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_STATUS_BYTES)
        .collect()
        .await
        .map_err(|error| anyhow::anyhow!("reading the body: {error}"))?;
    Ok((status, body.to_bytes()))
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// The table `status` prints.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let active = status
        .get("active")
        .and_then(Value::as_str)
        .unwrap_or("NONE (answering 503)");
    out += &format!(
        "active master: {active} (since {}), failovers: {}, failback: {}\n\n",
        text(status, "active_since"),
        status.get("failovers").and_then(Value::as_u64).unwrap_or(0),
        text(status, "failback"),
    );
    out += &format!(
        "  {:<16} {:<7} {:<6} {:>10}  {:<24}  {}\n",
        "MASTER", "STATE", "ACTIVE", "LATENCY", "LAST CHECK", "URL / LAST ERROR"
    );
    let backends = status.get("backends").and_then(Value::as_array);
    for backend in backends.into_iter().flatten() {
        let latency = backend
            .get("latency_ms")
            .and_then(Value::as_f64)
            .map_or("-".to_owned(), |ms| format!("{ms:.1} ms"));
        let active = if backend.get("active").and_then(Value::as_bool) == Some(true) {
            "*"
        } else {
            ""
        };
        let detail = match backend.get("last_error").and_then(Value::as_str) {
            Some(error) => format!("{}  ({error})", text(backend, "url")),
            None => text(backend, "url").to_owned(),
        };
        out += &format!(
            "  {:<16} {:<7} {:<6} {:>10}  {:<24}  {}\n",
            text(backend, "name"),
            text(backend, "state"),
            active,
            latency,
            text(backend, "last_check"),
            detail
        );
    }
    if let Some(promotion) = status.get("promotion").filter(|p| !p.is_null()) {
        out += &format!(
            "\ntraffic is held: waiting for {}\n",
            text(promotion, "waiting_for")
        );
        if let Some(why) = promotion.get("waiting_on_fence").and_then(Value::as_str) {
            out += &format!("  WAITING ON FENCING: {why}\n");
        }
    }
    for alarm in status
        .get("alarms")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out += &format!("\nALARM: {}\n", alarm.as_str().unwrap_or("-"));
    }
    let transitions = status.get("transitions").and_then(Value::as_array);
    let transitions: Vec<&Value> = transitions.into_iter().flatten().take(10).collect();
    if !transitions.is_empty() {
        out += "\nrecent changes of the active master (newest first):\n";
        for t in transitions {
            let side = |key| t.get(key).and_then(Value::as_str).unwrap_or("none");
            out += &format!(
                "  {}  {} -> {}: {}\n",
                text(t, "at"),
                side("from"),
                side("to"),
                text(t, "reason")
            );
            for step in t
                .get("steps")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let ok = if step.get("ok").and_then(Value::as_bool) == Some(true) {
                    "ok"
                } else {
                    "FAILED"
                };
                let took = step.get("took_ms").and_then(Value::as_f64).unwrap_or(0.0);
                out += &format!(
                    "      {:<36} {:>6} {:>9.1} ms  {}\n",
                    text(step, "step"),
                    ok,
                    took,
                    text(step, "detail")
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_active_backends_and_transitions() {
        let status = serde_json::json!({
            "active": "master-b", "active_since": "2026-11-21T10:00:00.000Z", "failovers": 1,
            "failback": "never",
            "backends": [
                {"name": "master-a", "url": "http://10.0.0.11:8080", "state": "down", "active": false,
                 "latency_ms": 0.52, "last_check": "2026-11-21T10:00:01.000Z", "last_error": "HTTP 503"},
                {"name": "master-b", "url": "http://10.0.0.12:8080", "state": "up", "active": true,
                 "latency_ms": null, "last_check": null, "last_error": null}
            ],
            "transitions": [{"at": "2026-11-21T10:00:00.000Z", "from": "master-a", "to": "master-b",
                             "reason": "master-a down after 3 failed checks: HTTP 503; master-b is now active"}]
        });
        let table = render(&status);
        assert!(table
            .starts_with("active master: master-b (since 2026-11-21T10:00:00.000Z), failovers: 1"));
        assert!(table.contains("master-a         down"));
        assert!(table.contains("0.5 ms"));
        assert!(table.contains("(HTTP 503)"));
        assert!(table.contains("master-b         up      *"));
        assert!(table.contains("master-a -> master-b: master-a down after 3 failed checks"));
    }

    #[test]
    fn renders_no_active_master() {
        let table = render(&serde_json::json!({"active": null, "backends": [], "transitions": []}));
        assert!(table.contains("NONE (answering 503)"));
    }
}
