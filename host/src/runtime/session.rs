//! One connection's consumer instance, over the connection's life.
//!
//! A [`Session`] calls the consumer's exports one event at a time. Before each
//! call it makes sure there is a live instance of the consumer's *current*
//! version: none yet, evicted while idle, or of an older version after a
//! deploy, then it instantiates one (microseconds, from the pre-linked
//! `InstancePre`) and hands it the connection's [`ConnState`]. So a hot swap
//! takes effect at each connection's next event, with no new `connect`.
//!
//! Each call runs under the consumer's sandbox: a memory cap (the store's
//! limiter), a CPU deadline counted in epoch ticks, and a wall-clock
//! deadline that host calls count against too (a guest waiting on the
//! database or a WASI timer is stopped as surely as one that spins). Every
//! tick the guest runs through, the epoch callback yields to the reactor
//! (so a spinning guest never holds a worker thread for long) and charges
//! the event one tick; past the budget the guest traps.
//!
//! The connection's state is never lost, whatever happens to a call: it is
//! in the session, or in the store the session holds, at every `.await`.
//! A call that is cancelled (its future dropped) leaves the store behind,
//! and the next call starts from its connection state again.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, UpdateDeadline};

use super::bindings::Exports;
use super::bindings::types::Message;
use super::conn::ConnState;
use super::imports::{HostState, MemoryExceeded, Misbehaved};
use super::{Consumer, EPOCH_TICK, ModuleVersion};

/// Why an event could not be handled. Each closes the connection: with
/// 1013 for [`Fault::Busy`] (the node is overloaded, retry later), 1011 for
/// the rest.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The guest trapped (a panic, an unreachable, a bad memory access...).
    #[error("trap: {0}")]
    Trap(String),
    /// The event ran past its CPU deadline.
    #[error("CPU deadline of {0} ms exceeded")]
    Deadline(u64),
    /// The event ran past its wall-clock deadline (host calls included).
    #[error("wall-clock deadline of {0} ms exceeded")]
    WallClock(u64),
    /// The guest tried to grow its memory past the cap.
    #[error("{0}")]
    Memory(String),
    /// The guest broke a host rule.
    #[error("{0}")]
    Misbehaved(String),
    /// No instance could be made (a start function trapped...).
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// Every instance slot is in use ([runtime] max_instances): the node is
    /// overloaded, not the consumer at fault.
    #[error("no instance slot free ([runtime] max_instances)")]
    Busy,
}

impl Fault {
    /// Classifies what a call (or, with `instantiating`, making an
    /// instance) returned.
    fn classify(
        err: wasmtime::Error,
        memory_exceeded: bool,
        consumer: &Consumer,
        instantiating: bool,
    ) -> Self {
        let sandbox = &consumer.config().sandbox;
        if err.downcast_ref::<DeadlineExceeded>().is_some() {
            return Fault::Deadline(sandbox.event_deadline_ms);
        }
        if let Some(misbehaved) = err.downcast_ref::<Misbehaved>() {
            return Fault::Misbehaved(misbehaved.0.clone());
        }
        if let Some(memory) = err.downcast_ref::<MemoryExceeded>() {
            return Fault::Memory(memory.to_string());
        }
        if memory_exceeded {
            return Fault::Memory(format!(
                "memory limit of {} bytes exceeded",
                sandbox.memory_bytes
            ));
        }
        if err
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some()
        {
            return Fault::Busy;
        }
        if instantiating {
            return Fault::Instantiate(format!("{err:#}"));
        }
        Fault::Trap(format!("{err:#}"))
    }

    /// The close code the client gets.
    pub fn close_code(&self) -> u16 {
        match self {
            Fault::Busy => crate::close::TRY_AGAIN_LATER,
            _ => crate::close::INTERNAL_ERROR,
        }
    }
}

/// The CPU deadline was reached.
#[derive(Debug, thiserror::Error)]
#[error("CPU deadline exceeded")]
struct DeadlineExceeded;

/// One event for the consumer.
pub enum Call<'a> {
    /// `connect()`
    Connect,
    /// `receive(message)`
    Receive(&'a Message),
    /// `handle-event(event)`
    Event(&'a str),
    /// `disconnect(code)`
    Disconnect(u16),
}

/// A connection's consumer instance, live or not.
pub struct Session {
    consumer: Arc<Consumer>,
    slot: Slot,
    /// The version this connection last ran; it counts among that version's
    /// connections until it moves to another one or closes.
    version: Option<VersionUse>,
}

enum Slot {
    /// No instance: the connection state alone.
    Idle(Box<ConnState>),
    /// A store holding the connection state, and the instance once made.
    Store {
        store: Box<Store<HostState>>,
        exports: Option<Exports>,
    },
    /// Only inside the synchronous step that moves the connection state
    /// between the two above; never seen across an `.await`.
    Moving,
}

/// Counts a connection on a version.
struct VersionUse(Arc<ModuleVersion>);

impl VersionUse {
    fn new(version: Arc<ModuleVersion>) -> Self {
        version
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(version)
    }
}

impl Drop for VersionUse {
    fn drop(&mut self) {
        self.0
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Session {
    /// A session with no instance yet.
    pub fn new(consumer: Arc<Consumer>, conn: ConnState) -> Self {
        Self {
            consumer,
            slot: Slot::Idle(Box::new(conn)),
            version: None,
        }
    }

    /// The connection's state.
    pub fn conn(&mut self) -> &mut ConnState {
        match &mut self.slot {
            Slot::Idle(conn) => conn,
            Slot::Store { store, .. } => &mut store.data_mut().conn,
            Slot::Moving => unreachable!("the connection state is moved without an await"),
        }
    }

    /// Whether an instance is alive.
    pub fn is_live(&self) -> bool {
        matches!(
            self.slot,
            Slot::Store {
                exports: Some(_),
                ..
            }
        )
    }

    /// The version this connection last ran, if any.
    pub fn version(&self) -> Option<&Arc<ModuleVersion>> {
        self.version.as_ref().map(|used| &used.0)
    }

    /// Whether the version this connection runs on hears the host's own
    /// events (`host.recheck`).
    pub fn hears_host_events(&self) -> bool {
        self.consumer.current().hears_host_events()
    }

    /// Drops the instance if live instances are running short: at more than
    /// 80% of `[runtime] max_instances`, connections give their instance back
    /// after every event instead of keeping it until they are idle.
    pub fn evict_if_crowded(&mut self) {
        if !self.is_live() {
            return;
        }
        let caps = &self.conn().caps;
        let max = caps.max_instances as i64;
        if caps.metrics.instances_live.get() * 5 > max * 4 {
            self.evict();
        }
    }

    /// Drops the instance to save memory; the next event makes a new one.
    pub fn evict(&mut self) {
        if self.is_live() {
            self.drop_store();
            self.conn().caps.metrics.instances_evicted.inc();
        }
    }

    /// Drops the store (and its instance, if any), keeping the connection state.
    fn drop_store(&mut self) {
        if !matches!(self.slot, Slot::Store { .. }) {
            return;
        }
        if let Slot::Store { store, exports } = std::mem::replace(&mut self.slot, Slot::Moving) {
            let conn = store.into_data().conn;
            if exports.is_some() {
                conn.caps.metrics.instances_live.dec();
            }
            self.slot = Slot::Idle(Box::new(conn));
        }
    }

    /// Runs one event on an instance of the consumer's current version,
    /// under the event's wall-clock deadline. After a fault the instance is
    /// gone and the connection must be closed.
    pub async fn call(&mut self, call: Call<'_>) -> Result<(), Fault> {
        let wall_ms = self.consumer.config().sandbox.event_wall_ms;
        match tokio::time::timeout(Duration::from_millis(wall_ms), self.run(call)).await {
            Ok(result) => result,
            Err(_elapsed) => {
                // The call was dropped mid-way: its instance cannot be
                // trusted, its connection state is kept.
                self.drop_store();
                Err(Fault::WallClock(wall_ms))
            }
        }
    }

    async fn run(&mut self, call: Call<'_>) -> Result<(), Fault> {
        self.ensure_current().await?;
        let Slot::Store {
            store,
            exports: Some(exports),
        } = &mut self.slot
        else {
            return Err(Fault::Instantiate("no instance".into()));
        };
        store.data_mut().conn.begin_event();
        store.set_epoch_deadline(1);
        let store = &mut **store;
        let result = match call {
            Call::Connect => exports.connect(&mut *store).await,
            Call::Receive(message) => exports.receive(&mut *store, message).await,
            Call::Event(event) => exports.handle_event(&mut *store, event).await,
            Call::Disconnect(code) => exports.disconnect(&mut *store, code).await,
        };
        let Err(err) = result else {
            return Ok(());
        };
        let fault = Fault::classify(err, store.data().limiter.exceeded, &self.consumer, false);
        self.drop_store();
        Err(fault)
    }

    /// Makes sure the live instance is of the current version.
    async fn ensure_current(&mut self) -> Result<(), Fault> {
        let current = self.consumer.current();
        if self.is_live()
            && let Some(used) = &self.version
            && Arc::ptr_eq(&used.0, &current)
        {
            return Ok(());
        }
        self.drop_store();
        // Into a store first, synchronously: from here on the connection
        // state stays in the slot whatever happens to this future.
        if let Slot::Idle(conn) = std::mem::replace(&mut self.slot, Slot::Moving) {
            self.slot = Slot::Store {
                store: Box::new(new_store(&self.consumer, *conn)),
                exports: None,
            };
        }
        let Slot::Store { store, exports } = &mut self.slot else {
            return Err(Fault::Instantiate("no store".into()));
        };
        match current.pre.instantiate(store).await {
            Ok(made) => {
                let metrics = &store.data().conn.caps.metrics;
                metrics.instances_created.inc();
                metrics.instances_live.inc();
                *exports = Some(made);
                if !self
                    .version
                    .as_ref()
                    .is_some_and(|used| Arc::ptr_eq(&used.0, &current))
                {
                    self.version = Some(VersionUse::new(current));
                }
                Ok(())
            }
            Err(err) => {
                let fault =
                    Fault::classify(err, store.data().limiter.exceeded, &self.consumer, true);
                self.drop_store();
                Err(fault)
            }
        }
    }
}

/// A store for one instance of `consumer`, with its sandbox set up: the
/// memory limiter, and the CPU deadline counted in epoch ticks.
pub(super) fn new_store(consumer: &Consumer, conn: ConnState) -> Store<HostState> {
    let mut store = Store::new(consumer.engine(), HostState::new(conn));
    store.limiter(|state| &mut state.limiter);
    let budget_ticks = consumer
        .config()
        .sandbox
        .event_deadline_ms
        .div_ceil(EPOCH_TICK.as_millis() as u64)
        .max(1);
    store.epoch_deadline_callback(move |mut context| {
        let used = &mut context.data_mut().conn.used;
        used.ticks += 1;
        if used.ticks > budget_ticks {
            Err(wasmtime::Error::new(DeadlineExceeded))
        } else {
            // Let other connections run, then give the guest one more tick.
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.data_mut().conn.begin_event();
    store.set_epoch_deadline(1);
    store
}

/// Instantiates `version` once, in a store of its own with no connection,
/// under the consumer's sandbox, and asks it to `describe` itself: what a
/// deploy checks before activating. What it says is kept in the version.
pub async fn trial(
    consumer: &Consumer,
    conn: ConnState,
    version: &ModuleVersion,
) -> Result<(), Fault> {
    let mut store = new_store(consumer, conn);
    let fault = |err, store: &Store<HostState>, instantiating| {
        Fault::classify(err, store.data().limiter.exceeded, consumer, instantiating)
    };
    let exports = match version.pre.instantiate(&mut store).await {
        Ok(exports) => exports,
        Err(err) => return Err(fault(err, &store, true)),
    };
    match exports.describe(&mut store).await {
        Ok(info) => {
            version.set_info(info.pure_events);
            Ok(())
        }
        Err(err) => Err(fault(err, &store, false)),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.drop_store();
    }
}
