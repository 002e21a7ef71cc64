//! `consumer-host status`: a running node at a glance, from the admin API.
//!
//! It reads `GET /admin/status` twice, `--interval` apart, and shows the
//! counters' differences as rates (messages in, deliveries out), with the
//! node's connections per consumer version, its refusals since start, and
//! the layer's and the database's state.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value as Json, json};

use super::admin_client::{AdminTarget, admin_request_async};

/// Counters shown as rates: the status key and what the rate is called.
const RATES: &[(&str, &str)] = &[
    ("messages_received", "messages in"),
    ("messages_sent", "deliveries out"),
    ("group_sends", "group sends"),
    ("events_handled", "events handled"),
    ("db_writes", "database writes"),
    ("connections_accepted", "connections accepted"),
];

/// Refusals, by the status key, with the answer the client got.
const REFUSALS: &[(&str, &str)] = &[
    ("refused", "refused by the consumer (403)"),
    ("bad_origin", "origin not allowed (403)"),
    ("unrouted", "no route (404)"),
    ("uri_too_long", "URI too long (414)"),
    ("over_user_limit", "user at max_connections_per_user (429)"),
    ("over_capacity", "node at capacity (503)"),
    ("timed_out", "connect timed out (503)"),
];

/// Runs the command: prints the report (or, with `json`, the second status
/// with a `rates` object added).
pub fn run(target: &AdminTarget, interval: Duration, json: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (first, second, elapsed) = runtime.block_on(async {
        let first = fetch(target).await?;
        let started = Instant::now();
        tokio::time::sleep(interval).await;
        let second = fetch(target).await?;
        anyhow::Ok((first, second, started.elapsed()))
    })?;
    let rates = rates(&first, &second, elapsed);
    if json {
        let mut out = second;
        out["rates"] = rates;
        out["rates_over_secs"] = json!(elapsed.as_secs_f64());
        println!("{out}");
    } else {
        print!(
            "{}",
            render(&target.server, &second, &rates, elapsed.as_secs_f64())
        );
    }
    Ok(())
}

async fn fetch(target: &AdminTarget) -> anyhow::Result<Json> {
    let text = admin_request_async(target, hyper::Method::GET, "/admin/status", Vec::new()).await?;
    serde_json::from_str(&text).context("the admin API's status is not JSON")
}

/// Per-second rates of the counters in [`RATES`] between two statuses.
fn rates(first: &Json, second: &Json, elapsed: Duration) -> Json {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let mut out = serde_json::Map::new();
    for (key, _) in RATES {
        let before = first["counters"][key].as_u64().unwrap_or(0);
        let after = second["counters"][key].as_u64().unwrap_or(0);
        out.insert(
            (*key).to_string(),
            json!(after.saturating_sub(before) as f64 / seconds),
        );
    }
    Json::Object(out)
}

/// The report as text.
fn render(server: &str, status: &Json, rates: &Json, seconds: f64) -> String {
    let mut out = String::new();
    let text = |value: &Json| match value {
        Json::String(text) => text.clone(),
        Json::Null => "?".into(),
        other => other.to_string(),
    };
    let _ = writeln!(
        out,
        "consumer-host {} at {server}: {}",
        text(&status["version"]),
        text(&status["status"])
    );
    let _ = writeln!(
        out,
        "connections   {} open, {} consumer instances live",
        text(&status["connections"]),
        text(&status["instances_live"])
    );
    let shown: Vec<String> = RATES
        .iter()
        .map(|(key, name)| format!("{name} {:.1}/s", rates[key].as_f64().unwrap_or(0.0)))
        .collect();
    let _ = writeln!(
        out,
        "rates         {} (over {seconds:.1} s)",
        shown.join(", ")
    );
    let refusals = &status["refusals"];
    let total: u64 = REFUSALS
        .iter()
        .map(|(key, _)| refusals[key].as_u64().unwrap_or(0))
        .sum();
    let _ = writeln!(out, "refusals      {total} since start");
    for (key, name) in REFUSALS {
        let count = refusals[key].as_u64().unwrap_or(0);
        if count > 0 {
            let _ = writeln!(out, "              {count} {name}");
        }
    }
    for (key, title) in [("auth_failures", "auth failures"), ("closes", "closes")] {
        let Some(counts) = status[key].as_object() else {
            continue;
        };
        let shown: Vec<String> = counts
            .iter()
            .filter(|(_, count)| count.as_u64().unwrap_or(0) > 0)
            .map(|(label, count)| format!("{label}: {count}"))
            .collect();
        let shown = if shown.is_empty() {
            "none".to_string()
        } else {
            shown.join(", ")
        };
        let _ = writeln!(out, "{title:<13} {shown}");
    }
    let layer = &status["layer"];
    let layer_state = match layer["kind"].as_str() {
        Some("redis") => format!(
            "redis, {} (node {}): {} events published, {} received, {} not published, {} rejected",
            if layer["connected"].as_bool() == Some(true) {
                "connected"
            } else {
                "DISCONNECTED"
            },
            text(&layer["node"]),
            text(&layer["published"]),
            text(&layer["received"]),
            text(&layer["publish_failures"]),
            text(&layer["rejected"]),
        ),
        Some(kind) => kind.to_string(),
        None => text(layer),
    };
    let _ = writeln!(out, "layer         {layer_state}");
    let database = &status["database"];
    let _ = writeln!(
        out,
        "database      {} {}",
        text(&database["kind"]),
        text(&database["path"])
    );
    let _ = writeln!(out, "consumers");
    for consumer in status["consumers"].as_array().into_iter().flatten() {
        let name = text(&consumer["name"]);
        let current = &consumer["current"];
        let _ = writeln!(
            out,
            "  {name:<12} current {}: {} connections (world {}, {} bytes, from {})",
            short(&current["sha256"]),
            text(&current["connections"]),
            text(&current["world"]),
            text(&current["size"]),
            text(&current["source"]),
        );
        for kept in consumer["previous"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {:<12} kept    {}: {} connections",
                "",
                short(&kept["sha256"]),
                text(&kept["connections"]),
            );
        }
    }
    out
}

fn short(sha256: &Json) -> String {
    sha256
        .as_str()
        .map_or_else(|| "?".into(), |sha| sha.chars().take(12).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_differences() {
        let first = json!({ "counters": { "messages_received": 100, "messages_sent": 1000 } });
        let second = json!({ "counters": { "messages_received": 150, "messages_sent": 1500 } });
        let rates = rates(&first, &second, Duration::from_millis(500));
        assert_eq!(rates["messages_received"], 100.0);
        assert_eq!(rates["messages_sent"], 1000.0);
        assert_eq!(rates["db_writes"], 0.0);
    }

    #[test]
    fn a_report_names_what_matters() {
        let status = json!({
            "version": "0.1.0", "status": "degraded", "connections": 3, "instances_live": 1,
            "refusals": { "over_user_limit": 2, "unrouted": 0 },
            "auth_failures": { "expired": 1, "signature": 0 },
            "closes": {},
            "layer": { "kind": "redis", "connected": false },
            "database": { "kind": "sqlite", "path": "/srv/db.sqlite3" },
            "consumers": [{ "name": "chat",
                "current": { "sha256": "0123456789abcdef", "connections": 3, "world": "0.2.0", "size": 10, "source": "file:x" },
                "previous": [{ "sha256": "fedcba9876543210", "connections": 0 }] }],
        });
        let rates = json!({ "messages_received": 2.0, "messages_sent": 6.0 });
        let text = render("http://h:1", &status, &rates, 1.0);
        for expected in [
            "at http://h:1: degraded",
            "3 open",
            "messages in 2.0/s, deliveries out 6.0/s",
            "2 since start",
            "2 user at max_connections_per_user (429)",
            "expired: 1",
            "closes        none",
            "DISCONNECTED",
            "current 0123456789ab: 3 connections",
            "kept    fedcba987654: 0 connections",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
    }
}
