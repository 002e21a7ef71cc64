//! Counters and gauges, served as Prometheus text on `GET /metrics`.
//!
//! Plain atomics: incrementing one costs a relaxed add, so counting every
//! delivery on the hot path is free enough. Each metric is declared once,
//! in [`Metrics`]'s field list with its name and help text; rendering walks
//! that list.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Adds `n` (negative to subtract).
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts by one label (`reason`, `code`...), for the few values it takes.
/// Values known in advance are registered at start so they show as 0
/// before they first happen.
#[derive(Debug, Default)]
pub struct Labelled {
    // A std lock: held for one map update, never across an `.await`; these
    // count rare things (refusals, closes), not every message.
    counts: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Labelled {
    /// Adds one for `label`.
    pub fn inc(&self, label: &str) {
        let mut counts = self.counts.lock().expect("not poisoned");
        match counts.get_mut(label) {
            Some(count) => *count += 1,
            None => {
                counts.insert(label.to_string(), 1);
            }
        }
    }

    /// Makes `labels` show (as 0 until they happen).
    pub fn register(&self, labels: &[&str]) {
        let mut counts = self.counts.lock().expect("not poisoned");
        for label in labels {
            counts.entry((*label).to_string()).or_insert(0);
        }
    }

    /// The count for `label`.
    pub fn get(&self, label: &str) -> u64 {
        let counts = self.counts.lock().expect("not poisoned");
        counts.get(label).copied().unwrap_or(0)
    }

    /// Every label's count, by label.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
        self.counts.lock().expect("not poisoned").clone()
    }

    fn render(&self, out: &mut String, name: &str, label: &str, help: &str) {
        let _ = writeln!(
            out,
            "# HELP consumer_host_{name} {help}\n# TYPE consumer_host_{name} counter"
        );
        let counts = self.counts.lock().expect("not poisoned");
        for (value, count) in counts.iter() {
            let _ = writeln!(out, "consumer_host_{name}{{{label}=\"{value}\"}} {count}");
        }
    }
}

/// Writes one metric in the Prometheus text format, with its help and type.
pub fn write_metric(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    value: impl std::fmt::Display,
) {
    let _ = writeln!(
        out,
        "# HELP consumer_host_{name} {help}\n# TYPE consumer_host_{name} {kind}\nconsumer_host_{name} {value}"
    );
}

macro_rules! metrics {
    (
        counters { $($counter:ident: $counter_name:literal, $counter_help:literal;)* }
        gauges { $($gauge:ident: $gauge_name:literal, $gauge_help:literal;)* }
        labelled { $($labelled:ident: $labelled_name:literal, $label:literal, $labelled_help:literal;)* }
    ) => {
        /// Every metric of a node.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $counter_help] pub $counter: Counter,)*
            $(#[doc = $gauge_help] pub $gauge: Gauge,)*
            $(#[doc = $labelled_help] pub $labelled: Labelled,)*
        }

        impl Metrics {
            /// The Prometheus text exposition of every metric.
            pub fn render(&self) -> String {
                let mut out = String::with_capacity(8192);
                $(write_metric(&mut out, $counter_name, "counter", $counter_help, self.$counter.get());)*
                $(write_metric(&mut out, $gauge_name, "gauge", $gauge_help, self.$gauge.get());)*
                $(self.$labelled.render(&mut out, $labelled_name, $label, $labelled_help);)*
                out
            }
        }
    };
}

metrics! {
    counters {
        connections_accepted: "connections_accepted_total", "WebSocket connections accepted.";
        handshakes_refused: "handshakes_refused_total", "Handshakes the consumer refused (HTTP 403).";
        handshakes_unrouted: "handshakes_unrouted_total", "Handshakes to unrouted paths (HTTP 404).";
        handshakes_over_capacity: "handshakes_over_capacity_total", "Handshakes refused at max_connections or with no instance free (HTTP 503).";
        handshakes_over_user_limit: "handshakes_over_user_limit_total", "Handshakes refused at max_connections_per_user (HTTP 429).";
        handshakes_bad_origin: "handshakes_bad_origin_total", "Handshakes from an origin not allowed (HTTP 403).";
        handshakes_timed_out: "handshakes_timed_out_total", "Handshakes whose connect outlasted the handshake timeout (HTTP 503).";
        uris_too_long: "uris_too_long_total", "Requests whose path and query exceed max_uri_bytes (HTTP 414).";
        rate_limited: "rate_limited_total", "Times reading from a client was paused by its connection's rate limit.";
        user_rate_limited: "user_rate_limited_total", "Times reading from a client was paused by its user's rate limit.";
        idle_timeouts: "idle_timeouts_total", "Connections dropped for not answering pings.";
        logins_expired: "logins_expired_total", "Connections closed with 4401: the token expired or the user is gone.";
        messages_received: "messages_received_total", "Data messages received from clients.";
        events_handled: "events_handled_total", "Group events handed to consumers.";
        messages_sent: "messages_sent_total", "Messages queued to clients.";
        rendered_deliveries: "rendered_deliveries_total", "Group events delivered from a single rendering by a pure handler.";
        group_sends: "group_sends_total", "group-send calls by consumers.";
        slow_client_closes: "slow_client_closes_total", "Connections closed because their client did not read (its queue stalled or reached its hard cap): 4008.";
        pressure_waits: "pressure_waits_total", "Times a connection waited before reading its client because the node was under pressure (overload).";
        mailbox_overflow_closes: "mailbox_overflow_closes_total", "Connections closed because their event mailbox was full.";
        guest_traps: "guest_traps_total", "Guest traps and broken host rules; the connection was closed with 1011.";
        guest_deadline_overruns: "guest_deadline_overruns_total", "Events that overran their CPU or wall-clock deadline (1011).";
        guest_log_lines_dropped: "guest_log_lines_dropped_total", "Consumer log lines past the per-event cap, not written.";
        instances_busy: "instances_busy_total", "Events with no instance slot free; the connection was closed with 1013.";
        instances_created: "instances_created_total", "Consumer instances created.";
        instances_evicted: "instances_evicted_total", "Idle consumer instances dropped.";
        deploys: "deploys_total", "Consumer versions activated.";
        deploy_refusals: "deploy_refusals_total", "Deploys refused by the checks.";
        rollbacks: "rollbacks_total", "Rollbacks to an earlier version.";
        db_batches: "db_batches_total", "Write batches (group commits).";
        db_writes: "db_writes_total", "Writes committed in batches.";
        db_batch_failures: "db_batch_failures_total", "Write batches that failed.";
        db_writes_refused: "db_writes_refused_total", "Inserts refused because the PostgreSQL write queue stayed full ([database] max_queued_writes).";
        db_unavailable: "db_unavailable_total", "Database calls failed at once because PostgreSQL was unreachable.";
        db_reconnects: "db_reconnects_total", "Times the PostgreSQL writer reconnected after losing the server.";
    }
    gauges {
        connections_open: "connections_open", "WebSocket connections open now.";
        instances_live: "instances_live", "Live consumer instances.";
    }
    labelled {
        auth_failures: "auth_failures_total", "reason", "Tokens that were not a login, by reason (the connection went on anonymously).";
        closes: "closes_total", "code", "WebSocket connections closed, by close code.";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.messages_received.add(3);
        metrics.auth_failures.register(&["expired", "signature"]);
        metrics.auth_failures.inc("expired");
        metrics.connections_open.inc();
        let text = metrics.render();
        assert!(text.contains("consumer_host_messages_received_total 3\n"));
        assert!(text.contains("consumer_host_auth_failures_total{reason=\"expired\"} 1\n"));
        assert!(text.contains("consumer_host_auth_failures_total{reason=\"signature\"} 0\n"));
        assert!(text.contains("consumer_host_connections_open 1\n"));
        assert!(text.contains("# TYPE consumer_host_instances_busy_total counter\n"));
        // Every line is a comment or `name{labels} value`, and names are unique.
        let mut names = std::collections::HashSet::new();
        for line in text.lines().filter(|line| line.starts_with("# TYPE")) {
            assert!(
                names.insert(line.split(' ').nth(2).unwrap().to_string()),
                "{line}"
            );
        }
    }
}
