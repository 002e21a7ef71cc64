//! One connection's consumer instance, over the connection's life.
//!
//! A [`Session`] calls the consumer's exports one event at a time. Before each
//! call it makes sure there is a live instance of the consumer's *current*
//! version: none yet, evicted while idle, or of an older version after a
//! deploy — then it instantiates one (microseconds, from the pre-linked
//! `InstancePre`) and hands it the connection's [`ConnState`]. So a hot swap
//! takes effect at each connection's next event, with no new `connect`.
//!
//! Each call runs under the consumer's sandbox: a memory cap (the store's
//! limiter) and a CPU deadline counted in epoch ticks. Every tick the guest
//! runs through, the epoch callback yields to the reactor (so a spinning
//! guest never holds a worker thread for long) and charges the event one
//! tick; past the budget the guest traps.

use std::sync::Arc;

use wasmtime::{Engine, Store, UpdateDeadline};

use super::bindings::Consumer as Bindings;
use super::bindings::consumer_host::consumer::types::Message;
use super::host::{ConnState, HostState, MemoryExceeded, Misbehaved};
use super::{Consumer, EPOCH_TICK, ModuleVersion};

/// Why an event could not be handled. Each closes the connection with 1011.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The guest trapped (a panic, an unreachable, a bad memory access...).
    #[error("trap: {0}")]
    Trap(String),
    /// The event ran past its CPU deadline.
    #[error("CPU deadline of {0} ms exceeded")]
    Deadline(u64),
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
    /// Classifies an instantiation error.
    pub(super) fn instantiation(err: &wasmtime::Error) -> Self {
        if err
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some()
        {
            Fault::Busy
        } else {
            Fault::Instantiate(format!("{err:#}"))
        }
    }
}

/// The CPU deadline was reached.
#[derive(Debug, thiserror::Error)]
#[error("CPU deadline exceeded")]
struct DeadlineExceeded;

/// One event for the consumer.
pub enum Call<'a> {
    /// `connect(scope)`
    Connect,
    /// `receive(scope, message)`
    Receive(&'a Message),
    /// `handle-event(scope, event)`
    Event(&'a str),
    /// `disconnect(scope, code)`
    Disconnect(u16),
}

/// A connection's consumer instance, live or not.
pub struct Session {
    engine: Engine,
    consumer: Arc<Consumer>,
    slot: Slot,
    /// The version this connection last ran; it counts among that version's
    /// connections until it moves to another one or closes.
    version: Option<VersionUse>,
}

enum Slot {
    Live(Box<Live>),
    Idle(Box<ConnState>),
    /// Only while moving between the two.
    Moving,
}

struct Live {
    store: Store<HostState>,
    bindings: Bindings,
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
    pub fn new(engine: Engine, consumer: Arc<Consumer>, conn: ConnState) -> Self {
        Self {
            engine,
            consumer,
            slot: Slot::Idle(Box::new(conn)),
            version: None,
        }
    }

    /// The connection's state.
    pub fn conn(&mut self) -> &mut ConnState {
        match &mut self.slot {
            Slot::Live(live) => &mut live.store.data_mut().conn,
            Slot::Idle(conn) => conn,
            Slot::Moving => unreachable!("a session is never observed mid-move"),
        }
    }

    /// Whether an instance is alive.
    pub fn is_live(&self) -> bool {
        matches!(self.slot, Slot::Live(_))
    }

    /// The version this connection last ran, if any.
    pub fn version(&self) -> Option<&Arc<ModuleVersion>> {
        self.version.as_ref().map(|used| &used.0)
    }

    /// Drops the instance if live instances are running short: at more than
    /// 80% of `[runtime] max_instances`, connections give their instance back
    /// after every event instead of keeping it until they are idle.
    pub fn evict_if_crowded(&mut self) {
        if !self.is_live() {
            return;
        }
        let conn = self.conn();
        let max = conn.services.config.runtime.max_instances as i64;
        if conn.services.metrics.instances_live.get() * 5 > max * 4 {
            self.evict();
        }
    }

    /// Drops the instance to save memory; the next event makes a new one.
    pub fn evict(&mut self) {
        if self.is_live() {
            self.drop_instance();
            let conn = self.conn();
            conn.services.metrics.instances_evicted.inc();
        }
    }

    fn drop_instance(&mut self) {
        if !self.is_live() {
            return;
        }
        if let Slot::Live(live) = std::mem::replace(&mut self.slot, Slot::Moving) {
            let conn = live.store.into_data().conn;
            conn.services.metrics.instances_live.dec();
            self.slot = Slot::Idle(Box::new(conn));
        }
    }

    /// Runs one event on an instance of the consumer's current version.
    /// After a fault the instance is gone and the connection must be closed.
    pub async fn call(&mut self, call: Call<'_>) -> Result<(), Fault> {
        self.ensure_current().await?;
        let Slot::Live(live) = &mut self.slot else {
            unreachable!("ensure_current leaves a live instance");
        };
        live.store.data_mut().conn.begin_event();
        live.store.set_epoch_deadline(1);
        let store = &mut live.store;
        let result = match call {
            Call::Connect => live.bindings.call_connect(&mut *store).await,
            Call::Receive(message) => live.bindings.call_receive(&mut *store, message).await,
            Call::Event(event) => live.bindings.call_handle_event(&mut *store, event).await,
            Call::Disconnect(code) => live.bindings.call_disconnect(&mut *store, code).await,
        };
        match result {
            Ok(()) => Ok(()),
            Err(err) => {
                let fault = self.classify(err);
                self.drop_instance();
                Err(fault)
            }
        }
    }

    fn classify(&mut self, err: wasmtime::Error) -> Fault {
        let deadline_ms = self.consumer.config().sandbox.event_deadline_ms;
        if err.downcast_ref::<DeadlineExceeded>().is_some() {
            return Fault::Deadline(deadline_ms);
        }
        if let Some(misbehaved) = err.downcast_ref::<Misbehaved>() {
            return Fault::Misbehaved(misbehaved.0.clone());
        }
        if let Some(memory) = err.downcast_ref::<MemoryExceeded>() {
            return Fault::Memory(memory.to_string());
        }
        if let Slot::Live(live) = &self.slot
            && live.store.data().limiter.exceeded
        {
            return Fault::Memory(format!(
                "memory limit of {} bytes exceeded",
                self.consumer.config().sandbox.memory_bytes
            ));
        }
        Fault::Trap(format!("{err:#}"))
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
        self.drop_instance();
        let Slot::Idle(conn) = std::mem::replace(&mut self.slot, Slot::Moving) else {
            unreachable!("drop_instance leaves the session idle");
        };
        let mut store = new_store(&self.engine, &self.consumer, *conn);
        match current.pre.instantiate_async(&mut store).await {
            Ok(bindings) => {
                let metrics = &store.data().conn.services.metrics;
                metrics.instances_created.inc();
                metrics.instances_live.inc();
                self.slot = Slot::Live(Box::new(Live { store, bindings }));
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
                let fault = Fault::instantiation(&err);
                self.slot = Slot::Idle(Box::new(store.into_data().conn));
                Err(fault)
            }
        }
    }
}

/// A store for one instance of `consumer`, with its sandbox set up: the
/// memory limiter, and the CPU deadline counted in epoch ticks.
pub(super) fn new_store(engine: &Engine, consumer: &Consumer, conn: ConnState) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(conn));
    store.limiter(|state| &mut state.limiter);
    let budget_ticks = consumer
        .config()
        .sandbox
        .event_deadline_ms
        .div_ceil(EPOCH_TICK.as_millis() as u64)
        .max(1);
    store.epoch_deadline_callback(move |mut context| {
        let conn = &mut context.data_mut().conn;
        conn.ticks_this_event += 1;
        if conn.ticks_this_event > budget_ticks {
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
    engine: &Engine,
    consumer: &Consumer,
    conn: ConnState,
    version: &ModuleVersion,
) -> Result<(), Fault> {
    let mut store = new_store(engine, consumer, conn);
    let described = match version.pre.instantiate_async(&mut store).await {
        Ok(bindings) => bindings.call_describe(&mut store).await,
        Err(err) => Err(err),
    };
    match described {
        Ok(info) => {
            version.set_info(info.pure_events);
            Ok(())
        }
        Err(err) if store.data().limiter.exceeded => Err(Fault::Memory(format!("{err:#}"))),
        Err(err) if err.downcast_ref::<DeadlineExceeded>().is_some() => {
            Err(Fault::Deadline(consumer.config().sandbox.event_deadline_ms))
        }
        Err(err) => Err(Fault::instantiation(&err)),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.drop_instance();
    }
}
