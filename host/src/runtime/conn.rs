//! What a connection owns across consumer instances, and what host imports
//! may reach.
//!
//! [`ConnState`] moves from store to store when an instance is replaced or
//! evicted: the queues towards the client, the scope, the groups, the state
//! blob, the handshake's outcome and the current event's budgets. When it is
//! dropped, wherever that happens (the connection ended, a handshake was cut
//! short, a call was cancelled), it leaves every group it joined: a group
//! never keeps a dead member.
//!
//! [`Capabilities`] is all of the node a host import can touch: the
//! database, the channel layer, the counters and a few limits. Imports never
//! see the rest of the node (its routes, its admin token, its sockets).

use std::sync::Arc;

use hyper_tungstenite::tungstenite::Message as WsMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Consumer;
use super::bindings::types;
use crate::db::Database;
use crate::layer::{ConnId, Kick, Layer, Mailbox};
use crate::metrics::Metrics;

/// The node's services, narrowed to what host imports use.
pub struct Capabilities {
    /// The database (guests' queries and inserts).
    pub db: Database,
    /// The channel layer (groups).
    pub layer: Layer,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Largest frame a consumer may send to its client, in bytes.
    pub max_send_bytes: usize,
    /// Largest event a consumer may send to a group, in bytes.
    pub max_event_bytes: usize,
    /// Live instances at most (`[runtime] max_instances`): past 80% of it,
    /// connections give their instance back after every event.
    pub max_instances: usize,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
}

/// Room a consumer's frame may take beyond the largest message a client may
/// send: its own framing of what the client sent (the chat adds the author's
/// name, an id and a timestamp). A message a client could send is never too
/// large to be sent back.
pub const SEND_HEADROOM_BYTES: usize = 16 * 1024;

/// Where the handshake stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// `connect` has not decided yet.
    Pending,
    /// Accepted, with the chosen subprotocol.
    Accepted(Option<String>),
    /// Refused with `close` before `accept`.
    Refused,
}

/// A connection's outgoing queue, bounded (`[limits] send_queue`).
pub type Outbound = mpsc::Sender<WsMessage>;

/// What one event has used of its budgets (reset at every event).
#[derive(Debug, Default, Clone, Copy)]
pub struct EventUse {
    /// Frames sent to the client.
    pub sends: u32,
    /// Bytes sent to the client.
    pub send_bytes: usize,
    /// `group-send` calls.
    pub group_sends: u32,
    /// `group-add` and `group-discard` calls.
    pub group_changes: u32,
    /// `db-insert` and `db-query` calls.
    pub db_calls: u32,
    /// Log lines.
    pub log_lines: u32,
    /// Epoch ticks of CPU the event ran through.
    pub ticks: u64,
}

/// What a connection owns across instances.
pub struct ConnState {
    /// This connection.
    pub id: ConnId,
    /// Its consumer.
    pub consumer: Arc<Consumer>,
    /// What its imports may use.
    pub caps: Arc<Capabilities>,
    /// What the consumer's `get-scope` import returns.
    pub scope: types::Scope,
    /// The handshake's outcome.
    pub handshake: Handshake,
    /// Subprotocols the client offered (a token entry removed).
    pub offered_subprotocols: Vec<String>,
    /// Messages towards the client.
    pub outbound: Outbound,
    /// This connection's inbox, registered with the layer on `group-add`.
    pub mailbox: Mailbox,
    /// Asks this connection to close.
    pub kick: Kick,
    /// Groups this connection is in, as the layer names them (namespaced).
    pub(crate) groups: Vec<String>,
    /// The consumer's state blob.
    pub state: Option<Vec<u8>>,
    /// A close the consumer asked for: (code, reason).
    pub close_request: Option<(u16, String)>,
    /// The current event's use of its budgets.
    pub(crate) used: EventUse,
}

/// Who a connection is and what it was offered: the parts of a
/// [`ConnState`] the handshake decides.
pub struct Identity {
    /// This connection's id on the node.
    pub id: ConnId,
    /// What `get-scope` returns.
    pub scope: types::Scope,
    /// Subprotocols the client offered (a token entry removed).
    pub offered_subprotocols: Vec<String>,
}

/// The queues and the close signal of a connection.
pub struct Pipes {
    /// Messages towards the client.
    pub outbound: Outbound,
    /// Group events towards the consumer.
    pub mailbox: Mailbox,
    /// Asks the connection to close.
    pub kick: Kick,
}

impl ConnState {
    /// A connection's state before its first event.
    pub fn new(
        consumer: Arc<Consumer>,
        caps: Arc<Capabilities>,
        identity: Identity,
        pipes: Pipes,
    ) -> Self {
        Self {
            id: identity.id,
            consumer,
            caps,
            scope: identity.scope,
            handshake: Handshake::Pending,
            offered_subprotocols: identity.offered_subprotocols,
            outbound: pipes.outbound,
            mailbox: pipes.mailbox,
            kick: pipes.kick,
            groups: Vec::new(),
            state: None,
            close_request: None,
            used: EventUse::default(),
        }
    }

    /// A connection with no client (id 0, empty scope, in no group), for an
    /// instance the host runs for itself: what it sends goes to `outbound`.
    pub fn detached(consumer: Arc<Consumer>, caps: Arc<Capabilities>, outbound: Outbound) -> Self {
        let kick = Kick::child_of(&caps.shutdown);
        let (mailbox, _) = Mailbox::new(0, 1, kick.clone());
        let identity = Identity {
            id: 0,
            scope: empty_scope(),
            offered_subprotocols: Vec::new(),
        };
        Self::new(
            consumer,
            caps,
            identity,
            Pipes {
                outbound,
                mailbox,
                kick,
            },
        )
    }

    /// A detached connection whose sends go nowhere: for instantiating a
    /// module once to check it.
    pub fn probe(consumer: Arc<Consumer>, caps: Arc<Capabilities>) -> Self {
        let (outbound, _) = mpsc::channel(1);
        Self::detached(consumer, caps, outbound)
    }

    /// Resets the per-event budgets.
    pub(crate) fn begin_event(&mut self) {
        self.used = EventUse::default();
    }

    /// Queues a message towards the client. A full queue means the client
    /// cannot keep up: it is closed with 4008 and counted, never buffered
    /// without bound. Returns whether the message was queued.
    pub fn push(&mut self, message: WsMessage) -> bool {
        if self.kick.is_kicked() || self.close_request.is_some() {
            return false;
        }
        match self.outbound.try_send(message) {
            Ok(()) => {
                self.caps.metrics.messages_sent.inc();
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.caps.metrics.slow_client_closes.inc();
                tracing::warn!(
                    connection = self.id,
                    "send queue full: closing a client that cannot keep up"
                );
                self.kick.kick(crate::close::SLOW_CLIENT);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// The layer's name for one of this consumer's groups: its namespace,
    /// then the name (`:` is in neither, so names of two namespaces never meet).
    pub(crate) fn group_key(&self, group: &str) -> String {
        format!("{}:{group}", self.consumer.namespace())
    }

    /// Leaves every group this connection is in.
    pub fn leave_all_groups(&mut self) {
        for group in self.groups.drain(..) {
            self.caps.layer.group_discard(&group, self.id);
        }
    }
}

impl Drop for ConnState {
    fn drop(&mut self) {
        // Whatever ended the connection, and however (a cancelled handshake
        // included), the layer stops delivering to it.
        self.leave_all_groups();
    }
}

/// The scope of something that is not a client's connection (a deploy's
/// trial instance, a rendering instance): no path, no user.
pub fn empty_scope() -> types::Scope {
    types::Scope {
        connection_id: String::new(),
        path: String::new(),
        url_kwargs: Vec::new(),
        query: Vec::new(),
        user: None,
        subprotocols: Vec::new(),
    }
}
