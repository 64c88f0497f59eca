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
    let mut out = match status.get("mode").and_then(Value::as_str) {
        Some(mode @ "active-active") => {
            format!("mode: {mode}: every healthy, enabled replica takes traffic\n")
        }
        _ => String::new(),
    };
    out += &format!(
        "active master: {active} (since {}), failovers: {}, failback: {}\n\n",
        text(status, "active_since"),
        status.get("failovers").and_then(Value::as_u64).unwrap_or(0),
        text(status, "failback"),
    );
    cluster(&mut out, status);
    backends(&mut out, status);
    replicas(&mut out, status);
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

/// Active-active mode: each replica's load, requests in flight and placements.
fn replicas(out: &mut String, status: &Value) {
    if status.get("mode").and_then(Value::as_str) != Some("active-active") {
        return;
    }
    let number = |value: &Value, key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
    *out += &format!(
        "\n  {:<16} {:<7} {:>5} {:>6} {:>6} {:>6} {:>9} {:>8}  {}\n",
        "REPLICA",
        "TRAFFIC",
        "LOAD",
        "BUILDS",
        "QUEUED",
        "AGENTS",
        "IN FLIGHT",
        "SESSIONS",
        "PLACED: COOKIE/SESSION/LEAST LOAD/REPLACED"
    );
    for backend in items(status, "backends") {
        let traffic = match backend.get("active").and_then(Value::as_bool) {
            Some(true) => "yes",
            _ => "no",
        };
        let load = match backend.get("load").filter(|l| l.is_object()) {
            Some(load) => format!(
                "{:>5} {:>6} {:>6} {:>6}",
                number(load, "total"),
                number(load, "builds"),
                number(load, "queued"),
                number(load, "agents")
            ),
            None => format!("{:>5} {:>6} {:>6} {:>6}", "?", "", "", ""),
        };
        let placed = backend.get("placements").unwrap_or(&Value::Null);
        *out += &format!(
            "  {:<16} {:<7} {load} {:>9} {:>8}  {}/{}/{}/{}\n",
            text(backend, "name"),
            traffic,
            number(backend, "requests_in_flight"),
            number(backend, "sessions"),
            number(placed, "cookie"),
            number(placed, "session"),
            number(placed, "least_load"),
            number(placed, "replaced"),
        );
        if let Some(error) = backend.get("load_error").and_then(Value::as_str) {
            *out += &format!("      load unknown (placed last): {error}\n");
        }
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
    fn renders_replicas_in_active_active_mode() {
        let status = serde_json::json!({
            "mode": "active-active", "active": "master-a", "backends": [
                {"name": "master-a", "state": "up", "active": true, "sessions": 4,
                 "requests_in_flight": 1, "load_error": null,
                 "load": {"total": 6, "builds": 3, "queued": 1, "agents": 2},
                 "placements": {"cookie": 9, "session": 0, "least_load": 4, "replaced": 0}},
                {"name": "master-b", "state": "down", "active": false, "sessions": 0,
                 "requests_in_flight": 0, "load": null,
                 "load_error": "/computer/api/json on 10.0.0.12:8080: HTTP 500",
                 "placements": {"cookie": 0, "session": 0, "least_load": 0, "replaced": 0}}
            ], "transitions": []
        });
        let table = render(&status);
        assert!(table.starts_with("mode: active-active"), "{table}");
        assert!(
            table.contains(
                "master-a         yes         6      3      1      2         1        4  9/0/4/0"
            ),
            "{table}"
        );
        assert!(table.contains("master-b         no          ?"), "{table}");
        assert!(
            table.contains("load unknown (placed last): /computer/api/json"),
            "{table}"
        );
        let passive = render(&serde_json::json!({"mode": "active-passive", "backends": []}));
        assert!(
            !passive.contains("REPLICA") && !passive.contains("mode:"),
            "{passive}"
        );
    }

    #[test]
    fn renders_no_active_master() {
        let table = render(&serde_json::json!({"active": null, "backends": [], "transitions": []}));
        assert!(table.contains("NONE (answering 503)"));
    }
}
