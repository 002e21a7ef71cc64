//! Counters and gauges, served as Prometheus text on `GET /metrics`.
//!
//! Plain atomics: incrementing one costs a relaxed add, so counting every
//! delivery on the hot path is free enough.

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
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a handshake was refused before the upgrade.
pub const AUTH_FAILURE_LABELS: &[&str] = &[
    "missing",
    "malformed",
    "algorithm",
    "signature",
    "expired",
    "not_yet_valid",
    "claim",
    "token_type",
    "unknown_user",
    "lookup",
];

/// Every metric of a node.
#[derive(Debug, Default)]
pub struct Metrics {
    /// WebSocket connections open now.
    pub connections_open: Gauge,
    /// WebSocket connections accepted since start.
    pub connections_accepted: Counter,
    /// Handshakes refused by the consumer (it closed or did not accept): HTTP 403.
    pub handshakes_refused: Counter,
    /// Handshakes to a path no route matches: HTTP 404.
    pub handshakes_unrouted: Counter,
    /// Handshakes refused because the node is at `max_connections`: HTTP 503.
    pub handshakes_over_capacity: Counter,
    /// Handshakes refused because the user is at `max_connections_per_user`: HTTP 429.
    pub handshakes_over_user_limit: Counter,
    /// Handshakes from a browser origin not in `allowed_origins`: HTTP 403.
    pub handshakes_bad_origin: Counter,
    /// Times reading from a client was paused by the message rate limit.
    pub rate_limited: Counter,
    /// Connections dropped because the client stopped answering (no frame
    /// within `idle_timeout_ms`).
    pub idle_timeouts: Counter,
    /// Tokens that were not a login, by reason (see [`AUTH_FAILURE_LABELS`]).
    pub auth_failures: [Counter; 10],
    /// Data messages received from clients.
    pub messages_received: Counter,
    /// Group events handed to consumers.
    pub events_handled: Counter,
    /// Messages sent to clients.
    pub messages_sent: Counter,
    /// Group events delivered as frames a pure handler rendered once,
    /// without a call into the member's instance.
    pub rendered_deliveries: Counter,
    /// Group sends by consumers.
    pub group_sends: Counter,
    /// Connections closed because their send queue was full (code 4008).
    pub slow_client_closes: Counter,
    /// Connections closed because their group-event mailbox was full (code 4008).
    pub mailbox_overflow_closes: Counter,
    /// Guest traps (panics, faults, host-detected misbehaviour): code 1011.
    pub guest_traps: Counter,
    /// Events that overran their CPU deadline: code 1011.
    pub guest_deadline_overruns: Counter,
    /// Consumer instances created.
    pub instances_created: Counter,
    /// Idle instances dropped to save memory.
    pub instances_evicted: Counter,
    /// Live consumer instances now.
    pub instances_live: Gauge,
    /// Consumer versions activated by a deploy.
    pub deploys: Counter,
    /// Deploys refused (the module failed its checks).
    pub deploy_refusals: Counter,
    /// Rollbacks to an earlier version.
    pub rollbacks: Counter,
    /// Write batches committed (or failed).
    pub db_batches: Counter,
    /// Writes in those batches.
    pub db_writes: Counter,
    /// Write batches that failed to commit.
    pub db_batch_failures: Counter,
}

impl Metrics {
    /// Counts a refused token.
    pub fn auth_failure(&self, label: &str) {
        if let Some(index) = AUTH_FAILURE_LABELS.iter().position(|known| *known == label) {
            self.auth_failures[index].inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let counters: [(&str, &str, &Counter); 25] = [
            (
                "rendered_deliveries_total",
                "Group events delivered from a single rendering by a pure handler.",
                &self.rendered_deliveries,
            ),
            (
                "handshakes_over_user_limit_total",
                "Handshakes refused at max_connections_per_user (HTTP 429).",
                &self.handshakes_over_user_limit,
            ),
            (
                "handshakes_bad_origin_total",
                "Handshakes from an origin not allowed (HTTP 403).",
                &self.handshakes_bad_origin,
            ),
            (
                "rate_limited_total",
                "Times reading from a client was paused by the rate limit.",
                &self.rate_limited,
            ),
            (
                "idle_timeouts_total",
                "Connections dropped for not answering pings.",
                &self.idle_timeouts,
            ),
            (
                "connections_accepted_total",
                "WebSocket connections accepted.",
                &self.connections_accepted,
            ),
            (
                "handshakes_refused_total",
                "Handshakes the consumer refused (HTTP 403).",
                &self.handshakes_refused,
            ),
            (
                "handshakes_unrouted_total",
                "Handshakes to unrouted paths (HTTP 404).",
                &self.handshakes_unrouted,
            ),
            (
                "handshakes_over_capacity_total",
                "Handshakes refused at max_connections (HTTP 503).",
                &self.handshakes_over_capacity,
            ),
            (
                "messages_received_total",
                "Data messages received from clients.",
                &self.messages_received,
            ),
            (
                "events_handled_total",
                "Group events handed to consumers.",
                &self.events_handled,
            ),
            (
                "messages_sent_total",
                "Messages queued to clients.",
                &self.messages_sent,
            ),
            (
                "group_sends_total",
                "group-send calls by consumers.",
                &self.group_sends,
            ),
            (
                "slow_client_closes_total",
                "Connections closed because their send queue was full.",
                &self.slow_client_closes,
            ),
            (
                "mailbox_overflow_closes_total",
                "Connections closed because their event mailbox was full.",
                &self.mailbox_overflow_closes,
            ),
            (
                "guest_traps_total",
                "Guest traps; the connection was closed with 1011.",
                &self.guest_traps,
            ),
            (
                "guest_deadline_overruns_total",
                "Events that overran the CPU deadline.",
                &self.guest_deadline_overruns,
            ),
            (
                "instances_created_total",
                "Consumer instances created.",
                &self.instances_created,
            ),
            (
                "instances_evicted_total",
                "Idle consumer instances dropped.",
                &self.instances_evicted,
            ),
            (
                "deploys_total",
                "Consumer versions activated.",
                &self.deploys,
            ),
            (
                "deploy_refusals_total",
                "Deploys refused by the checks.",
                &self.deploy_refusals,
            ),
            (
                "rollbacks_total",
                "Rollbacks to an earlier version.",
                &self.rollbacks,
            ),
            (
                "db_batches_total",
                "Write batches (group commits).",
                &self.db_batches,
            ),
            (
                "db_writes_total",
                "Writes committed in batches.",
                &self.db_writes,
            ),
            (
                "db_batch_failures_total",
                "Write batches that failed.",
                &self.db_batch_failures,
            ),
        ];
        let gauges: [(&str, &str, &Gauge); 2] = [
            (
                "connections_open",
                "WebSocket connections open now.",
                &self.connections_open,
            ),
            (
                "instances_live",
                "Live consumer instances.",
                &self.instances_live,
            ),
        ];
        let mut out = String::with_capacity(4096);
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP consumer_host_{name} {help}\n# TYPE consumer_host_{name} counter"
            );
            let _ = writeln!(out, "consumer_host_{name} {}", counter.get());
        }
        let _ = writeln!(
            out,
            "# HELP consumer_host_auth_failures_total Tokens that were not a login, by reason."
        );
        let _ = writeln!(out, "# TYPE consumer_host_auth_failures_total counter");
        for (label, count) in AUTH_FAILURE_LABELS.iter().zip(&self.auth_failures) {
            let _ = writeln!(
                out,
                "consumer_host_auth_failures_total{{reason=\"{label}\"}} {}",
                count.get()
            );
        }
        for (name, help, gauge) in gauges {
            let _ = writeln!(
                out,
                "# HELP consumer_host_{name} {help}\n# TYPE consumer_host_{name} gauge"
            );
            let _ = writeln!(out, "consumer_host_{name} {}", gauge.get());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.messages_received.add(3);
        metrics.auth_failure("expired");
        metrics.auth_failure("no-such-label");
        metrics.connections_open.inc();
        let text = metrics.render();
        assert!(text.contains("consumer_host_messages_received_total 3\n"));
        assert!(text.contains("consumer_host_auth_failures_total{reason=\"expired\"} 1\n"));
        assert!(text.contains("consumer_host_connections_open 1\n"));
        assert_eq!(AUTH_FAILURE_LABELS.len(), metrics.auth_failures.len());
    }
}
