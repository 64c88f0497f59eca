//! `jenkins-ha-proxy status`: fetch the admin `/status` and print it as a table.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::Value;

use super::admin_client::{fetch, TIMEOUT};

/// `cacert`: the CA of an https:// admin listener (`--cacert`).
pub async fn print(admin: &str, cacert: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let body = tokio::time::timeout(TIMEOUT, fetch(admin, cacert))
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

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// The table `status` prints.
pub fn render(status: &Value) -> String {
    let active = status
        .get("active")
        .and_then(Value::as_str)
        .unwrap_or("NONE (answering 503)");
    let mut out = format!(
        "active master: {active} (since {}), failovers: {}, failback: {}\n\n",
        text(status, "active_since"),
        status.get("failovers").and_then(Value::as_u64).unwrap_or(0),
        text(status, "failback"),
    );
    cluster(&mut out, status);
    backends(&mut out, status);
    holds_and_alarms(&mut out, status);
    transitions(&mut out, status);
    out
}

/// The elements of the array at `key`, none if it is missing.
fn items<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Cluster mode: this instance, the leader, the epoch, and the live instances.
fn cluster(out: &mut String, status: &Value) {
    let Some(cluster) = status.get("cluster").filter(|c| c.is_object()) else {
        return;
    };
    let flag = |key: &str| cluster.get(key).and_then(Value::as_bool).unwrap_or(false);
    *out += &format!(
        "cluster: instance {}, leader {}, epoch {}, {}, {}\n",
        text(cluster, "instance"),
        cluster
            .get("leader")
            .and_then(Value::as_str)
            .unwrap_or("NONE"),
        cluster.get("epoch").and_then(Value::as_i64).unwrap_or(0),
        if flag("routing") {
            "routing"
        } else {
            "NOT ROUTING (503)"
        },
        if flag("etcd_connected") {
            format!("etcd confirmed at {}", text(cluster, "confirmed_at"))
        } else {
            "etcd NOT CONNECTED".to_owned()
        },
    );
    for instance in items(cluster, "instances") {
        *out += &format!(
            "  instance {:<16} follows epoch {:<8} last seen {}\n",
            text(instance, "name"),
            instance
                .get("acknowledged_epoch")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            text(instance, "last_seen"),
        );
    }
    out.push('\n');
}

/// One row per master.
fn backends(out: &mut String, status: &Value) {
    *out += &format!(
        "  {:<16} {:<7} {:<6} {:>10}  {:<24}  {}\n",
        "MASTER", "STATE", "ACTIVE", "LATENCY", "LAST CHECK", "URL / LAST ERROR"
    );
    for backend in items(status, "backends") {
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
        *out += &format!(
            "  {:<16} {:<7} {:<6} {:>10}  {:<24}  {}\n",
            text(backend, "name"),
            text(backend, "state"),
            active,
            latency,
            text(backend, "last_check"),
            detail
        );
    }
}

/// A promotion that holds traffic, and the alarms.
fn holds_and_alarms(out: &mut String, status: &Value) {
    if let Some(promotion) = status.get("promotion").filter(|p| !p.is_null()) {
        *out += &format!(
            "\ntraffic is held: waiting for {}\n",
            text(promotion, "waiting_for")
        );
        if let Some(why) = promotion.get("waiting_on_fence").and_then(Value::as_str) {
            *out += &format!("  WAITING ON FENCING: {why}\n");
        }
    }
    for alarm in items(status, "alarms") {
        *out += &format!("\nALARM: {}\n", alarm.as_str().unwrap_or("-"));
    }
}

/// The ten newest changes of the active master, with their promotion steps.
fn transitions(out: &mut String, status: &Value) {
    let transitions: Vec<&Value> = items(status, "transitions").take(10).collect();
    if transitions.is_empty() {
        return;
    }
    *out += "\nrecent changes of the active master (newest first):\n";
    for t in transitions {
        let side = |key| t.get(key).and_then(Value::as_str).unwrap_or("none");
        *out += &format!(
            "  {}  {} -> {}: {}\n",
            text(t, "at"),
            side("from"),
            side("to"),
            text(t, "reason")
        );
        for step in items(t, "steps") {
            let ok = if step.get("ok").and_then(Value::as_bool) == Some(true) {
                "ok"
            } else {
                "FAILED"
            };
            let took = step.get("took_ms").and_then(Value::as_f64).unwrap_or(0.0);
            *out += &format!(
                "      {:<36} {:>6} {:>9.1} ms  {}\n",
                text(step, "step"),
                ok,
                took,
                text(step, "detail")
            );
        }
    }
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
