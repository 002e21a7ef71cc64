//! Write [consumer-host](https://github.com/) consumers in Rust.
//!
//! A consumer is a type that handles the life of one WebSocket connection,
//! as a Django Channels consumer does: `connect`, then `receive` (a frame
//! from the client) and events sent to its groups, then `disconnect`. It is
//! built into a WebAssembly component (`consumer-host build`) that the
//! server runs in a sandbox and can replace while clients stay connected.
//!
//! ```ignore
//! use consumer_host_sdk::prelude::*;
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Echo {
//!     /// Kept by the host between events (and across instance swaps).
//!     heard: u32,
//! }
//!
//! impl Consumer for Echo {
//!     fn receive_json(&mut self, cx: &mut Context, content: Json) -> Result {
//!         self.heard += 1;
//!         cx.send_json(&json!({ "echo": content, "heard": self.heard }))?;
//!         Ok(())
//!     }
//! }
//!
//! consumer_host_sdk::export!(Echo);
//! ```
//!
//! What the SDK does for you:
//!
//! - **State.** The consumer type *is* the connection's state: before each
//!   event it is read back from the host (or made with `Default`), after it
//!   it is written back if it changed (JSON, in the host-held blob). A
//!   consumer never keeps anything in globals: the host may replace its
//!   instance between any two events.
//! - **Events by type.** Group events are JSON objects with a `type`;
//!   [`dispatch!`] calls the method named after it the way Channels does
//!   (`chat.message` → `chat_message`).
//! - **JSON.** [`Consumer::receive_json`] and [`Context::send_json`].
//! - **Errors.** A handler returns [`Result`]; an `Err` is logged and closes
//!   that one connection with 1011, like an exception in a Channels consumer.
//! - **Tests.** With the `testing` feature, [`testing`] runs consumers
//!   natively against an in-memory host and a real SQLite, as Channels'
//!   `WebsocketCommunicator` does, through the same code path as the
//!   component.

#![warn(missing_docs)]

mod adapter;
#[doc(hidden)]
pub mod bindings;
pub mod close;
mod context;
pub mod db;
mod error;
mod event;
#[doc(hidden)]
pub mod host;
#[doc(hidden)]
pub mod log;
#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub mod testing;

pub use adapter::Consumer;
#[doc(hidden)]
pub use adapter::run;
pub use context::{Context, Scope, User};
pub use error::{Error, Result};
pub use event::Event;
pub use host::Message;

/// What a consumer usually needs.
pub mod prelude {
    pub use crate::db::{Row, Rows, Value};
    pub use crate::{Consumer, Context, Error, Event, Message, Result, dispatch};
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::{Value as Json, json};
}

/// Makes `$consumer` (a type implementing [`Consumer`]) the component's
/// consumer. Once per crate, at its root.
#[macro_export]
macro_rules! export {
    ($consumer:ty) => {
        #[doc(hidden)]
        struct __ConsumerHostExport;

        impl $crate::bindings::exports::consumer_host::consumer::handler::Guest
            for __ConsumerHostExport
        {
            fn describe() -> $crate::bindings::consumer_host::consumer::types::ConsumerInfo {
                $crate::run::describe::<$consumer>()
            }
            fn connect() {
                $crate::run::connect::<$consumer>()
            }
            fn receive(message: $crate::bindings::consumer_host::consumer::types::Message) {
                $crate::run::receive::<$consumer>(message)
            }
            fn handle_event(event: ::std::string::String) {
                $crate::run::handle_event::<$consumer>(event)
            }
            fn disconnect(code: u16) {
                $crate::run::disconnect::<$consumer>(code)
            }
        }

        // The component's exports exist in the component only: natively (the
        // consumer's tests) their names are not valid symbols.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_consumer!(__ConsumerHostExport with_types_in $crate::bindings);
    };
}

/// Calls the method named after the event's `type`, the way Channels does:
/// `.` becomes `_`, so `chat.message` calls `self.chat_message(cx, event)`.
/// A type with no method listed here is logged and ignored (host events,
/// `host.*`, silently).
///
/// ```ignore
/// fn event(&mut self, cx: &mut Context, event: Event) -> Result {
///     dispatch!(self, cx, event, [chat_message, user_typing])
/// }
/// ```
#[macro_export]
macro_rules! dispatch {
    ($self:ident, $cx:ident, $event:ident, [$($handler:ident),* $(,)?]) => {{
        let name = $event.handler_name();
        match name.as_str() {
            $(stringify!($handler) => $self.$handler($cx, $event),)*
            _ => $event.unhandled(),
        }
    }};
}
