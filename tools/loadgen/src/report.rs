//! The one JSON document a run prints, and the merging that feeds it.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{ClientResult, HISTOGRAM_SIGFIG};
use crate::deploy::DeployReport;

/// The report printed on stdout.
#[derive(Debug, Serialize)]
pub struct Report {
    /// "idle", "rate" or "saturating".
    pub mode: &'static str,
    /// Connections opened.
    pub connections: u64,
    /// Connections refused or failed.
    pub connect_failures: u64,
    /// Failures by reason ("http 403", "timeout", "connect: ...").
    pub connect_failure_reasons: BTreeMap<String, u64>,
    /// Time to open every connection.
    pub connect_secs: f64,
    /// Connections opened per second.
    pub connects_per_sec: f64,
    /// Sending time that counts (after the warmup).
    pub duration_secs: f64,
    /// Sending time before it, not counted.
    pub warmup_secs: f64,
    /// Messages per second per client; null when saturating or idle.
    pub rate_per_client: Option<f64>,
    /// Own messages in flight per client when saturating; null otherwise.
    pub window: Option<u32>,
    /// Messages sent after the warmup (the tracked ones).
    pub messages_sent: u64,
    /// Messages sent, warmup included (compare with `saved`).
    pub messages_sent_total: u64,
    /// Sends of an open-loop schedule skipped because the client fell a
    /// period behind: the server pushed back (read from it more slowly).
    pub sends_skipped: u64,
    /// Deliveries owed for the tracked messages (connected room members each).
    pub deliveries_expected: u64,
    /// Distinct deliveries of tracked messages received.
    pub deliveries_received: u64,
    /// Owed deliveries that never came.
    pub lost: u64,
    /// Deliveries received more than once.
    pub duplicated: u64,
    /// Error frames received.
    pub errors: u64,
    /// Error frames by code.
    pub error_codes: BTreeMap<String, u64>,
    /// Text frames that were no delivery of a loadgen message of that room.
    pub unmatched: u64,
    /// Connections the server ended before the run was over.
    pub closed_early: u64,
    /// Those by reason ("close 4008", "eof", ...).
    pub closed_early_reasons: BTreeMap<String, u64>,
    /// Distinct tracked deliveries per second of `duration_secs`.
    pub deliveries_per_sec: f64,
    /// Tracked messages per second of `duration_secs`.
    pub messages_per_sec: f64,
    /// Time spent waiting for deliveries after sending stopped.
    pub drain_secs: f64,
    /// Send-to-receive latency of tracked deliveries; null when none.
    pub latency_us: Option<Latency>,
    /// The server process; null without --server-pid.
    pub server: Option<ServerStats>,
    /// CPU the loadgen used over the same span as `server.cpu_secs`.
    pub loadgen_cpu_secs: f64,
    /// Rows added to chat_conversationmessage; null without --db.
    pub saved: Option<u64>,
    /// The hot swap; null without --deploy-file.
    pub deploy: Option<DeployReport>,
    /// Latency around the hot swap; null without --deploy-file.
    pub windows: Option<Windows>,
}

/// Latency percentiles in microseconds (1% resolution).
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram, or None when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        Some(Self {
            count: histogram.len(),
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: (histogram.mean() * 10.0).round() / 10.0,
        })
    }
}

/// Latency by when the message was sent, relative to the deploy.
#[derive(Debug, Serialize)]
pub struct Windows {
    /// Sent before the deploy request.
    pub steady: Option<Latency>,
    /// Sent from the request until 1 s after its answer.
    pub during: Option<Latency>,
    /// Sent later.
    pub after: Option<Latency>,
}

/// The server process over the run.
#[derive(Debug, Serialize)]
pub struct ServerStats {
    /// Its pid.
    pub pid: u32,
    /// RSS before the first connection.
    pub rss_kib_start: Option<u64>,
    /// Largest RSS sampled (once a second).
    pub rss_kib_peak: u64,
    /// RSS after the run, connections still open.
    pub rss_kib_end: Option<u64>,
    /// CPU used from before connecting until deliveries drained.
    pub cpu_secs: Option<f64>,
}

/// Everything the clients reported, added up.
#[derive(Default)]
pub struct Totals {
    /// Connected clients.
    pub connections: u64,
    /// See [`Report::connect_failure_reasons`].
    pub connect_failure_reasons: BTreeMap<String, u64>,
    /// See [`Report::closed_early_reasons`].
    pub closed_early_reasons: BTreeMap<String, u64>,
    /// See [`Report::messages_sent_total`].
    pub sent_total: u64,
    /// See [`Report::messages_sent`].
    pub sent_tracked: u64,
    /// See [`Report::sends_skipped`].
    pub skipped: u64,
    /// See [`Report::deliveries_expected`].
    pub expected: u64,
    /// See [`Report::deliveries_received`].
    pub distinct: u64,
    /// See [`Report::duplicated`].
    pub duplicated: u64,
    /// See [`Report::errors`].
    pub errors: u64,
    /// See [`Report::error_codes`].
    pub error_codes: BTreeMap<String, u64>,
    /// See [`Report::unmatched`].
    pub unmatched: u64,
    /// All tracked latencies, then steady/during/after.
    pub histograms: Vec<Histogram<u64>>,
}

impl Totals {
    /// Empty totals with `windows` latency windows besides the overall one.
    pub fn new(windows: usize) -> Self {
        Self {
            histograms: (0..=windows)
                .map(|_| Histogram::new(HISTOGRAM_SIGFIG).expect("valid sigfig"))
                .collect(),
            ..Self::default()
        }
    }

    /// Adds one client's result.
    pub fn add(&mut self, result: ClientResult) {
        if let Some(reason) = result.connect_failure {
            *self.connect_failure_reasons.entry(reason).or_default() += 1;
            return;
        }
        self.connections += 1;
        if let Some(reason) = result.closed_early {
            *self.closed_early_reasons.entry(reason).or_default() += 1;
        }
        self.sent_total += result.sent_total;
        self.sent_tracked += result.sent_tracked;
        self.skipped += result.skipped;
        self.expected += result.expected;
        self.distinct += result.distinct;
        self.duplicated += result.duplicated;
        self.errors += result.errors;
        self.unmatched += result.unmatched;
        for (code, count) in result.error_codes {
            *self.error_codes.entry(code).or_default() += count;
        }
        for (window, histogram) in result.histograms.iter().enumerate() {
            for value in histogram.iter_recorded() {
                let count = u64::from(value.count_at_value());
                let at = value.value_iterated_to();
                // Auto-resizing: a record cannot fail for a latency.
                let _ = self.histograms[0].record_n(at, count);
                if let Some(split) = self.histograms.get_mut(window + 1) {
                    let _ = split.record_n(at, count);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_clients() {
        let mut totals = Totals::new(3);
        let mut first = ClientResult {
            sent_total: 3,
            sent_tracked: 2,
            expected: 4,
            distinct: 4,
            histograms: (0..3).map(|_| Histogram::new(2).unwrap()).collect(),
            ..ClientResult::default()
        };
        first.histograms[0].record(100).unwrap();
        first.histograms[2].record(5000).unwrap();
        first.error_codes.insert("not_saved".into(), 1);
        totals.add(first);
        totals.add(ClientResult {
            connect_failure: Some("http 403".into()),
            ..ClientResult::default()
        });
        assert_eq!(totals.connections, 1);
        assert_eq!(totals.connect_failure_reasons["http 403"], 1);
        assert_eq!(totals.error_codes["not_saved"], 1);
        let all = Latency::of(&totals.histograms[0]).unwrap();
        assert_eq!(all.count, 2);
        assert!((4950..=5050).contains(&all.max));
        assert_eq!(Latency::of(&totals.histograms[1]).unwrap().count, 1);
        assert!(Latency::of(&totals.histograms[2]).is_none());
        assert_eq!(Latency::of(&totals.histograms[3]).unwrap().count, 1);
    }
}
