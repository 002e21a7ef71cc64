//! `logging`: a consumer's log lines, with its name and connection.

use super::truncate_utf8;
use crate::runtime::bindings::logging;
use crate::runtime::conn::ConnState;

/// Longest log line a consumer may write; the rest is cut.
const MAX_LOG_BYTES: usize = 4096;

impl logging::Host for ConnState {
    fn log(&mut self, level: logging::Level, mut message: String) -> wasmtime::Result<()> {
        // Past the per-event cap lines are counted, not written: a consumer
        // cannot flood the node's log, and a log line is never worth a trap.
        self.used.log_lines += 1;
        if self.used.log_lines > self.consumer.config().sandbox.max_log_lines_per_event {
            self.caps.metrics.guest_log_lines_dropped.inc();
            return Ok(());
        }
        truncate_utf8(&mut message, MAX_LOG_BYTES);
        let consumer = self.consumer.name();
        let connection = self.id;
        match level {
            logging::Level::Trace => tracing::trace!(consumer, connection, "{message}"),
            logging::Level::Debug => tracing::debug!(consumer, connection, "{message}"),
            logging::Level::Info => tracing::info!(consumer, connection, "{message}"),
            logging::Level::Warn => tracing::warn!(consumer, connection, "{message}"),
            logging::Level::Error => tracing::error!(consumer, connection, "{message}"),
        }
        Ok(())
    }
}
