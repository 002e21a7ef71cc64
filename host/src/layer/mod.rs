//! The channel layer: groups of connections and the events sent to them.
//!
//! Semantics follow Channels: `group-add` puts a connection in a named group,
//! `group-discard` takes it out, `group-send` hands an event to every member,
//! the sender included. Each connection has a bounded [`Mailbox`]; a member
//! whose mailbox is full is too slow to keep up: it is closed with code 4008
//! (see README, "Close codes") and counted, and the event is not queued for
//! it. Nothing is dropped silently and no queue grows without bound.

mod memory;
mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{LayerConfig, LayerKind};
use crate::metrics::Metrics;
pub use memory::MemoryLayer;
pub use redis::RedisLayer;

/// Identifies a connection on this node.
pub type ConnId = u64;

/// An event as consumers send it, shared by every recipient on this node.
pub type Event = Arc<GroupEvent>;

/// A group event: the JSON object (with a string `type`) a consumer sent.
///
/// When a member's consumer says its handler for the type is pure, the first
/// such member to take the event renders it (see [`crate::runtime::render`])
/// and every other member on that same version reuses the frames.
#[derive(Debug)]
pub struct GroupEvent {
    /// The event as sent.
    pub json: Box<str>,
    /// Its `type`.
    pub kind: Box<str>,
    /// Frames rendered once for this node, by the first member to need them.
    pub rendered: tokio::sync::OnceCell<Option<Rendered>>,
}

/// Frames rendered once by a pure event handler.
#[derive(Debug)]
pub struct Rendered {
    /// The consumer version that rendered them ([`crate::runtime::ModuleVersion::id`]).
    pub version: u64,
    /// What its `handle-event` sent.
    pub frames: Vec<hyper_tungstenite::tungstenite::Message>,
}

impl GroupEvent {
    /// An event of type `kind`.
    pub fn new(json: impl Into<Box<str>>, kind: impl Into<Box<str>>) -> Event {
        Arc::new(Self {
            json: json.into(),
            kind: kind.into(),
            rendered: tokio::sync::OnceCell::new(),
        })
    }

    /// An event from its JSON text, which must be an object with a string
    /// `type`; the error says what is wrong.
    pub fn parse(json: impl Into<Box<str>>) -> Result<Event, String> {
        #[derive(serde::Deserialize)]
        struct Typed<'a> {
            #[serde(rename = "type", borrow)]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        let json = json.into();
        let kind: Box<str> = match serde_json::from_str::<Typed<'_>>(&json) {
            Ok(Typed { kind: Some(kind) }) => kind.into(),
            Ok(Typed { kind: None }) => return Err("the event has no string \"type\"".into()),
            Err(err) => return Err(format!("the event is not a JSON object: {err}")),
        };
        Ok(Self::new(json, kind))
    }
}

/// Asks one connection to close with a code, from anywhere: the layer when
/// its mailbox overflows, the server on shutdown.
#[derive(Clone, Debug)]
pub struct Kick {
    token: CancellationToken,
    code: Arc<AtomicU16>,
}

impl Kick {
    /// A kick that also fires when `parent` is cancelled (server shutdown: 1001).
    pub fn child_of(parent: &CancellationToken) -> Self {
        Self {
            token: parent.child_token(),
            code: Arc::new(AtomicU16::new(0)),
        }
    }

    /// Asks the connection to close with `code`; the first reason wins.
    pub fn kick(&self, code: u16) {
        let _ = self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// Whether the connection has been asked to close.
    pub fn is_kicked(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the connection has been asked to close.
    pub async fn kicked(&self) {
        self.token.cancelled().await
    }

    /// The requested close code; 1001 (going away) when the server is shutting down.
    pub fn code(&self) -> u16 {
        match self.code.load(Ordering::Acquire) {
            0 => crate::close::GOING_AWAY,
            code => code,
        }
    }
}

/// A connection's inbox for group events.
#[derive(Clone, Debug)]
pub struct Mailbox {
    id: ConnId,
    events: mpsc::Sender<Event>,
    kick: Kick,
}

impl Mailbox {
    /// A mailbox holding at most `capacity` events, and its receiving end.
    pub fn new(id: ConnId, capacity: usize, kick: Kick) -> (Self, mpsc::Receiver<Event>) {
        let (events, receiver) = mpsc::channel(capacity);
        (Self { id, events, kick }, receiver)
    }

    /// The connection this mailbox belongs to.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Queues an event; a full mailbox closes its connection (4008). Returns
    /// whether the event was queued.
    fn deliver(&self, event: &Event, metrics: &Metrics) -> bool {
        match self.events.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.kick.is_kicked() {
                    metrics.mailbox_overflow_closes.inc();
                    tracing::warn!(
                        connection = self.id,
                        "mailbox full: closing a client that cannot keep up"
                    );
                }
                self.kick.kick(crate::close::SLOW_CLIENT);
                false
            }
            // The connection is already gone; it leaves its groups on the way out.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// A group name that Channels would refuse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("group name must be 1 to 99 ASCII letters, digits, '-', '_' or '.'")]
pub struct InvalidGroupName;

/// Checks a group name with Channels' rule.
pub fn validate_group_name(name: &str) -> Result<(), InvalidGroupName> {
    let valid = !name.is_empty()
        && name.len() < 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid { Ok(()) } else { Err(InvalidGroupName) }
}

/// The configured layer.
pub enum Layer {
    /// In this process: one node.
    Memory(MemoryLayer),
    /// Redis publish/subscribe: several nodes.
    Redis(RedisLayer),
}

impl Layer {
    /// Builds the configured layer (a validated config); the Redis layer's
    /// tasks run until `shutdown`.
    pub fn new(
        config: &LayerConfig,
        metrics: Arc<Metrics>,
        shutdown: &CancellationToken,
    ) -> Result<Self, String> {
        Ok(match config.kind {
            LayerKind::Memory => Layer::Memory(MemoryLayer::new(metrics)),
            LayerKind::Redis => Layer::Redis(RedisLayer::start(config, metrics, shutdown.clone())?),
        })
    }

    /// Adds a connection to a group (idempotent). With Redis, the first
    /// member on this node waits for the node's subscription.
    pub async fn group_add(&self, group: &str, mailbox: &Mailbox) {
        match self {
            Layer::Memory(layer) => {
                layer.group_add(group, mailbox);
            }
            Layer::Redis(layer) => layer.group_add(group, mailbox).await,
        }
    }

    /// Members of a group (the layer's name for it) on this node.
    #[cfg(feature = "test-support")]
    pub fn members(&self, group: &str) -> usize {
        match self {
            Layer::Memory(layer) => layer.members(group),
            Layer::Redis(layer) => layer.members(group),
        }
    }

    /// Removes a connection from a group (idempotent).
    pub fn group_discard(&self, group: &str, id: ConnId) {
        match self {
            Layer::Memory(layer) => {
                layer.group_discard(group, id);
            }
            Layer::Redis(layer) => layer.group_discard(group, id),
        }
    }

    /// Hands an event to every member; returns how many mailboxes on this
    /// node took it.
    pub fn group_send(&self, group: &str, event: &Event) -> usize {
        match self {
            Layer::Memory(layer) => layer.group_send(group, event),
            Layer::Redis(layer) => layer.group_send(group, event),
        }
    }

    /// The layer's own lines for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let Layer::Redis(layer) = self else {
            return;
        };
        layer.render_metrics(out);
    }

    /// The layer's state for `/healthz`, and whether it is fully working.
    pub fn health(&self) -> (serde_json::Value, bool) {
        match self {
            Layer::Memory(_) => (serde_json::json!({ "kind": "memory" }), true),
            Layer::Redis(layer) => (layer.health(), layer.connected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_follow_channels() {
        assert!(validate_group_name("chat_22de0f4f-c84e-47be-889c-d61b856492bd").is_ok());
        assert!(validate_group_name("a.b-c_d").is_ok());
        for bad in ["", "has space", "slash/no", "é", &"x".repeat(100)] {
            assert_eq!(validate_group_name(bad), Err(InvalidGroupName), "{bad}");
        }
    }

    #[test]
    fn kick_keeps_the_first_code_and_shutdown_means_1001() {
        use crate::close;
        let root = CancellationToken::new();
        let kick = Kick::child_of(&root);
        assert!(!kick.is_kicked());
        kick.kick(close::SLOW_CLIENT);
        kick.kick(close::INTERNAL_ERROR);
        assert_eq!(kick.code(), close::SLOW_CLIENT);
        let other = Kick::child_of(&root);
        root.cancel();
        assert!(other.is_kicked());
        assert_eq!(other.code(), close::GOING_AWAY);
    }

    #[test]
    fn events_must_be_typed_objects() {
        assert_eq!(
            &*GroupEvent::parse(r#"{"type":"chat.message","body":"x"}"#)
                .unwrap()
                .kind,
            "chat.message"
        );
        for bad in [r#"{"body":"x"}"#, r#"{"type":7}"#, "[1]", "nope"] {
            assert!(GroupEvent::parse(bad).is_err(), "{bad}");
        }
    }
}
