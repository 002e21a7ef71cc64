//! The Rust side of the consumer world, generated in exactly one place, for
//! both versions of the world a component may be built for.
//!
//! - **0.2.0** (`wit/consumer.wit`): the handlers are the exported `handler`
//!   interface. Its imports are the ones the host implements
//!   ([`super::imports`]).
//! - **0.1.0** (`wit/legacy/0.1.0`): the same handlers as world-level
//!   exports, and the same imports under the 0.1.0 package version. Deployed
//!   modules built for it keep loading: its interfaces are mapped onto the
//!   0.2.0 ones (`with`), whose types are identical, and the 0.2.0 host
//!   implementation is linked a second time under the 0.1.0 names.
//!
//! Imports are synchronous but for those that wait (the database, and
//! `group-add`, which waits for Redis to confirm a subscription), and traced
//! at `trace` level. WIT errors a guest can handle are Rust error types
//! (`trappable_error_type`): an import returns `Err` and a conversion makes
//! it the WIT variant, or a trap when the guest broke a rule.

use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime::{AsContextMut, Store};

use super::conn::ConnState;
use super::imports::{DbFailure, GroupFailure, HostState, SendFailure};

mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "consumer-host:consumer/consumer@0.2.0",
        imports: {
            "consumer-host:consumer/database": async | trappable | tracing,
            "consumer-host:consumer/groups.group-add": async | trappable | tracing,
            default: trappable | tracing,
        },
        exports: { default: async },
        trappable_error_type: {
            "consumer-host:consumer/connection.send-error" => super::SendFailure,
            "consumer-host:consumer/groups.group-error" => super::GroupFailure,
            "consumer-host:consumer/database.db-error" => super::DbFailure,
        },
    });
}

mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit/legacy/0.1.0",
        world: "consumer-host:consumer/consumer@0.1.0",
        exports: { default: async },
        with: {
            "consumer-host:consumer/types@0.1.0": super::v2::consumer_host::consumer::types,
            "consumer-host:consumer/connection@0.1.0": super::v2::consumer_host::consumer::connection,
            "consumer-host:consumer/groups@0.1.0": super::v2::consumer_host::consumer::groups,
            "consumer-host:consumer/database@0.1.0": super::v2::consumer_host::consumer::database,
            "consumer-host:consumer/state@0.1.0": super::v2::consumer_host::consumer::state,
            "consumer-host:consumer/logging@0.1.0": super::v2::consumer_host::consumer::logging,
        },
    });
}

pub use v2::consumer_host::consumer::{connection, database, groups, logging, state, types};

/// Adds every import of both world versions, and WASI, to `linker`.
pub fn add_imports(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    fn conn(state: &mut HostState) -> &mut ConnState {
        &mut state.conn
    }
    type Conn = HasSelf<ConnState>;
    v2::Consumer::add_to_linker::<HostState, Conn>(linker, conn)?;
    // The same implementation, under the names a 0.1.0 component imports.
    let name = |interface: &str| format!("consumer-host:consumer/{interface}@0.1.0");
    types::add_to_linker_instance::<HostState, Conn>(&mut linker.instance(&name("types"))?, conn)?;
    connection::add_to_linker_instance::<HostState, Conn>(
        &mut linker.instance(&name("connection"))?,
        conn,
    )?;
    groups::add_to_linker_instance::<HostState, Conn>(
        &mut linker.instance(&name("groups"))?,
        conn,
    )?;
    database::add_to_linker_instance::<HostState, Conn>(
        &mut linker.instance(&name("database"))?,
        conn,
    )?;
    state::add_to_linker_instance::<HostState, Conn>(&mut linker.instance(&name("state"))?, conn)?;
    logging::add_to_linker_instance::<HostState, Conn>(
        &mut linker.instance(&name("logging"))?,
        conn,
    )?;
    // Guests built for wasm32-wasip2, and the Python and JavaScript
    // toolchains' components, import WASI; they get a sandboxed one (no
    // files, network or environment).
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    Ok(())
}

/// A module's handlers, pre-linked: ready to instantiate in microseconds.
pub enum ExportsPre {
    /// Built for 0.2.0.
    V2(v2::ConsumerPre<HostState>),
    /// Built for 0.1.0.
    V1(v1::ConsumerPre<HostState>),
}

impl ExportsPre {
    /// Checks that the component exports the handlers of one world version,
    /// with their types.
    pub fn new(pre: InstancePre<HostState>) -> Result<Self, String> {
        let v2_error = match v2::ConsumerPre::new(pre.clone()) {
            Ok(pre) => return Ok(Self::V2(pre)),
            Err(err) => err,
        };
        match v1::ConsumerPre::new(pre) {
            Ok(pre) => Ok(Self::V1(pre)),
            Err(_) => Err(format!(
                "it does not export the consumer handlers: {v2_error:#} (build it against \
                 consumer-host:consumer@0.2.0, whose world exports the `handler` interface)"
            )),
        }
    }

    /// The world version the module was built for.
    pub fn world_version(&self) -> &'static str {
        match self {
            Self::V2(_) => "0.2.0",
            Self::V1(_) => "0.1.0",
        }
    }

    /// Instantiates the module in `store`.
    pub async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Exports> {
        Ok(match self {
            Self::V2(pre) => Exports::V2(pre.instantiate_async(store).await?),
            Self::V1(pre) => Exports::V1(pre.instantiate_async(store).await?),
        })
    }
}

/// A live instance's handlers.
pub enum Exports {
    /// Built for 0.2.0.
    V2(v2::Consumer),
    /// Built for 0.1.0.
    V1(v1::Consumer),
}

impl Exports {
    /// `describe`
    pub async fn describe(
        &self,
        store: impl AsContextMut<Data = HostState>,
    ) -> wasmtime::Result<types::ConsumerInfo> {
        match self {
            Self::V2(this) => {
                this.consumer_host_consumer_handler()
                    .call_describe(store)
                    .await
            }
            Self::V1(this) => this.call_describe(store).await,
        }
    }

    /// `connect`
    pub async fn connect(
        &self,
        store: impl AsContextMut<Data = HostState>,
    ) -> wasmtime::Result<()> {
        match self {
            Self::V2(this) => {
                this.consumer_host_consumer_handler()
                    .call_connect(store)
                    .await
            }
            Self::V1(this) => this.call_connect(store).await,
        }
    }

    /// `receive`
    pub async fn receive(
        &self,
        store: impl AsContextMut<Data = HostState>,
        message: &types::Message,
    ) -> wasmtime::Result<()> {
        match self {
            Self::V2(this) => {
                this.consumer_host_consumer_handler()
                    .call_receive(store, message)
                    .await
            }
            Self::V1(this) => this.call_receive(store, message).await,
        }
    }

    /// `handle-event`
    pub async fn handle_event(
        &self,
        store: impl AsContextMut<Data = HostState>,
        event: &str,
    ) -> wasmtime::Result<()> {
        match self {
            Self::V2(this) => {
                this.consumer_host_consumer_handler()
                    .call_handle_event(store, event)
                    .await
            }
            Self::V1(this) => this.call_handle_event(store, event).await,
        }
    }

    /// `disconnect`
    pub async fn disconnect(
        &self,
        store: impl AsContextMut<Data = HostState>,
        code: u16,
    ) -> wasmtime::Result<()> {
        match self {
            Self::V2(this) => {
                this.consumer_host_consumer_handler()
                    .call_disconnect(store, code)
                    .await
            }
            Self::V1(this) => this.call_disconnect(store, code).await,
        }
    }
}
