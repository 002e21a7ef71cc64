//! The [`Consumer`] trait, and how the exported handlers run it: state read
//! before each event and written back after it, events dispatched, errors
//! logged and turned into a trap (the host closes the connection with 1011).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::host::{self, Message};
use crate::{Context, Event, Result};

/// A consumer: what one WebSocket connection does. Every method has a
/// default, so a consumer writes only what it handles.
///
/// The type itself is the connection's state: whatever its fields hold
/// after an event is there at the next one (it is kept by the host as JSON,
/// so it survives the instance being replaced by a new version or evicted
/// while idle). Keep it small: the host caps it (`max_state_bytes`).
pub trait Consumer: Default + Serialize + DeserializeOwned {
    /// Event types whose handler depends on the event alone: it reads
    /// neither the scope nor the state nor the database, and only sends.
    /// The host then runs it once per event (on a fresh value of the type)
    /// and sends the same frames to every member.
    const PURE_EVENTS: &'static [&'static str] = &[];

    /// A client asks to connect. The default accepts everyone; call
    /// `cx.accept()` to let it in, return without accepting (or
    /// `cx.close(...)`) to refuse it with HTTP 403.
    fn connect(&mut self, cx: &mut Context) -> Result {
        cx.accept();
        Ok(())
    }

    /// The client sent a message. The default hands text to
    /// [`Consumer::receive_text`] and bytes to [`Consumer::receive_bytes`].
    fn receive(&mut self, cx: &mut Context, message: Message) -> Result {
        match message {
            Message::Text(text) => self.receive_text(cx, &text),
            Message::Binary(bytes) => self.receive_bytes(cx, &bytes),
        }
    }

    /// A text message. The default decodes it as JSON for
    /// [`Consumer::receive_json`] (as Channels' `JsonWebsocketConsumer`
    /// does; text that is not JSON is an error).
    fn receive_text(&mut self, cx: &mut Context, text: &str) -> Result {
        let content: Json = serde_json::from_str(text)?;
        self.receive_json(cx, content)
    }

    /// A text message that is JSON. The default ignores it.
    fn receive_json(&mut self, _cx: &mut Context, _content: Json) -> Result {
        Ok(())
    }

    /// A binary message. The default ignores it.
    fn receive_bytes(&mut self, _cx: &mut Context, _bytes: &[u8]) -> Result {
        Ok(())
    }

    /// An event sent to one of the connection's groups. Dispatch it by
    /// type with [`crate::dispatch!`]; the default logs that nothing
    /// handles it.
    fn event(&mut self, _cx: &mut Context, event: Event) -> Result {
        event.unhandled()
    }

    /// The host checked the connection's login again (`host.recheck`, on
    /// long-lived connections): check again what `connect` decided, and
    /// `cx.close(...)` if it no longer holds. The default does nothing.
    fn recheck(&mut self, _cx: &mut Context) -> Result {
        Ok(())
    }

    /// The connection closed with `code`. The host leaves its groups for it.
    fn disconnect(&mut self, _cx: &mut Context, _code: u16) -> Result {
        Ok(())
    }
}

/// How the exported handlers run a consumer (what [`crate::export!`] calls).
pub mod run {
    use super::*;
    use crate::bindings::consumer_host::consumer::types::ConsumerInfo;

    /// `describe`
    pub fn describe<C: Consumer>() -> ConsumerInfo {
        ConsumerInfo {
            pure_events: C::PURE_EVENTS
                .iter()
                .map(|kind| (*kind).to_string())
                .collect(),
        }
    }

    /// `connect`
    pub fn connect<C: Consumer>() {
        with_state::<C>("connect", |consumer, cx| consumer.connect(cx));
    }

    /// `receive`
    pub fn receive<C: Consumer>(message: Message) {
        with_state::<C>("receive", |consumer, cx| consumer.receive(cx, message));
    }

    /// `handle-event`
    pub fn handle_event<C: Consumer>(json: String) {
        let event = match Event::parse(&json) {
            Ok(event) => event,
            Err(err) => {
                crate::warn!("ignored a malformed event: {err}");
                return;
            }
        };
        if event.kind() == "host.recheck" {
            return with_state::<C>("recheck", |consumer, cx| consumer.recheck(cx));
        }
        if C::PURE_EVENTS.contains(&event.kind()) {
            // Rendered once for every member, outside any connection: no state.
            let result = C::default().event(&mut Context::new(), event);
            return check("event", result);
        }
        with_state::<C>("event", |consumer, cx| consumer.event(cx, event));
    }

    /// `disconnect`
    pub fn disconnect<C: Consumer>(code: u16) {
        with_state::<C>("disconnect", |consumer, cx| consumer.disconnect(cx, code));
    }
}

/// Runs a handler on the connection's state, and keeps what it changed.
fn with_state<C: Consumer>(handler: &str, run: impl FnOnce(&mut C, &mut Context) -> Result) {
    let before = host::get_state();
    let mut consumer: C = match &before {
        Some(bytes) => serde_json::from_slice(bytes).unwrap_or_else(|err| {
            // A version whose state has another shape: start afresh rather
            // than fail every event of the connection.
            crate::warn!("the connection's state does not fit this version ({err}); starting from its default");
            C::default()
        }),
        None => C::default(),
    };
    let result = run(&mut consumer, &mut Context::new());
    let saved = save(&consumer, before.as_deref());
    check(handler, result.and(saved));
}

fn save<C: Consumer>(consumer: &C, before: Option<&[u8]>) -> Result {
    let after = serde_json::to_vec(consumer)?;
    let unchanged = match before {
        Some(before) => before == after.as_slice(),
        None => after == serde_json::to_vec(&C::default())?,
    };
    if unchanged {
        return Ok(());
    }
    host::set_state(&after).map_err(|limit| {
        crate::Error::msg(format_args!(
            "the consumer's state is {} bytes, over the host's {limit}",
            after.len()
        ))
    })
}

/// An `Err` from a handler ends the connection: logged, then a trap (the
/// host closes the connection with 1011).
fn check(handler: &str, result: Result) {
    if let Err(err) = result {
        crate::error!("{handler} failed: {err}; closing the connection");
        trap(&err.to_string());
    }
}

/// Stops the instance: the host sees a trap.
fn trap(why: &str) -> ! {
    #[cfg(target_arch = "wasm32")]
    {
        let _ = why;
        core::arch::wasm32::unreachable()
    }
    #[cfg(not(target_arch = "wasm32"))]
    std::panic::panic_any(Trap(why.to_string()))
}

/// A trap, as the test harness sees it natively (in wasm a trap is
/// `unreachable`, and this is never made).
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone)]
pub struct Trap(pub String);

#[cfg(not(target_arch = "wasm32"))]
impl std::fmt::Display for Trap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the consumer trapped: {}", self.0)
    }
}
