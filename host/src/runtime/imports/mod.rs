//! The host side of the consumer world's imports: one file per interface,
//! each implemented on the connection's [`ConnState`] (which reaches only
//! [`super::conn::Capabilities`], never the whole node).
//!
//! Errors a guest can handle are WIT variants; a guest that breaks a host
//! rule (sending past its per-event budget, an invalid close code,
//! accepting an unoffered subprotocol) is trapped instead, and its
//! connection closed with 1011. Each interface's error type carries both,
//! and its `convert_*` method turns the first into the variant and the
//! second into the trap.

mod connection;
mod database;
mod groups;
mod logging;
mod state;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings;
use super::conn::ConnState;

pub use connection::SendFailure;
pub use database::DbFailure;
pub use groups::GroupFailure;

/// The guest did something the host does not allow; this traps it.
#[derive(Debug, thiserror::Error)]
#[error("consumer misbehaved: {0}")]
pub struct Misbehaved(pub String);

/// A trap for a guest that broke a rule.
fn trap<T>(text: String) -> wasmtime::Result<T> {
    Err(wasmtime::Error::new(Misbehaved(text)))
}

/// What an import returns: the WIT error the guest handles, or a trap.
#[derive(Debug)]
pub enum Refusal<E> {
    /// The guest hears this error.
    Error(E),
    /// The guest is trapped.
    Trap(Misbehaved),
}

impl<E> Refusal<E> {
    /// A trap for a guest that broke a rule.
    fn misbehaved(text: impl Into<String>) -> Self {
        Refusal::Trap(Misbehaved(text.into()))
    }

    /// The WIT error, or the trap.
    fn into_wit(self) -> wasmtime::Result<E> {
        match self {
            Refusal::Error(error) => Ok(error),
            Refusal::Trap(misbehaved) => Err(wasmtime::Error::new(misbehaved)),
        }
    }
}

impl<E> From<E> for Refusal<E> {
    fn from(error: E) -> Self {
        Refusal::Error(error)
    }
}

/// Checks one per-event cap: past `limit` the guest is trapped.
fn within<E>(used: &mut u32, limit: u32, what: &str) -> Result<(), Refusal<E>> {
    *used += 1;
    if *used > limit {
        return Err(Refusal::misbehaved(format!(
            "one event made more than {limit} {what} calls"
        )));
    }
    Ok(())
}

impl bindings::types::Host for ConnState {}

/// A consumer instance's store data.
pub struct HostState {
    /// The connection it serves.
    pub conn: ConnState,
    /// WASI, made on first use: most consumers never import it.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    /// Enforces the memory cap and remembers an overrun.
    pub(crate) limiter: MemoryLimiter,
}

impl HostState {
    /// Store data for a new instance serving `conn`.
    pub fn new(conn: ConnState) -> Self {
        let memory_bytes = conn.consumer.config().sandbox.memory_bytes;
        Self {
            conn,
            wasi: None,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                memory_bytes,
                exceeded: false,
            },
        }
    }
}

/// Caps one instance's linear memory; an overrun traps (the connection is
/// closed with 1011) rather than letting `memory.grow` fail quietly.
pub struct MemoryLimiter {
    memory_bytes: usize,
    /// Set when the guest tried to grow past the cap.
    pub exceeded: bool,
}

/// A guest tried to grow its memory past the cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} bytes exceeded")]
pub struct MemoryExceeded(pub usize);

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.exceeded = true;
            return Err(wasmtime::Error::new(MemoryExceeded(self.memory_bytes)));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        4
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let ctx = self.wasi.get_or_insert_with(|| WasiCtx::builder().build());
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
pub(crate) fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_a_character_boundary() {
        let mut long = "é".repeat(100);
        truncate_utf8(&mut long, 123);
        assert_eq!(long.len(), 122);
        assert!(long.chars().all(|c| c == 'é'));
        let mut short = String::from("abc");
        truncate_utf8(&mut short, 123);
        assert_eq!(short, "abc");
    }
}
