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
//! **Durable before visible.** What an event sends (to its client, to its
//! groups) is not sent during the call: it is gathered into an
//! [`Emission`] with the commits of the rows the event inserted, and the
//! connection releases it once those are durable, in the order of its
//! events. `db-insert` returns as soon as the row is written (its errors
//! included), so the connection goes on to its next event while the commit
//! happens: a connection's messages are pipelined, each is durable before
//! anyone hears of it, and its broadcasts leave in the order it sent them.
//!
//! [`Capabilities`] is all of the node a host import can touch: the
//! database, the channel layer, the counters and a few limits. Imports never
//! see the rest of the node (its routes, its admin token, its sockets).

use std::sync::Arc;

use hyper_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use super::Consumer;
use super::bindings::types;
use crate::db::{Committed, Database, DbError};
use crate::delivery::{self, Pressure, Push};
use crate::layer::{ConnId, Event, Kick, Layer, Mailbox};
use crate::metrics::Metrics;

/// The node's services, narrowed to what host imports use.
pub struct Capabilities {
    /// The database (guests' queries and inserts).
    pub db: Database,
    /// The channel layer (groups).
    pub layer: Layer,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// How far behind the node's queues towards clients are.
    pub pressure: Arc<Pressure>,
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

/// A connection's outgoing queue (`[limits] send_queue`, see [`delivery`]).
pub type Outbound = delivery::Outbound;

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
    /// What the current event sends, held until its writes are durable.
    pub(crate) emission: Emission,
}

/// Something an event sends.
pub enum Effect {
    /// A frame to the connection's own client.
    Send(WsMessage),
    /// An event to a group (the layer's name for it).
    GroupSend(String, Event),
}

/// What one event sends, and the commits it waits for.
#[derive(Default)]
pub struct Emission {
    effects: Vec<Effect>,
    commits: Vec<Committed>,
}

impl Emission {
    /// Whether it waits for a commit.
    pub fn waits(&self) -> bool {
        !self.commits.is_empty()
    }

    /// Waits until every row the event wrote is durable (or one failed).
    /// Cancel-safe: commits already seen are not waited for again.
    pub async fn committed(&mut self) -> Result<(), DbError> {
        while let Some(commit) = self.commits.last_mut() {
            let outcome = commit.wait().await;
            self.commits.pop();
            outcome?;
        }
        Ok(())
    }

    /// The frames sent to the client (what a rendering instance keeps);
    /// anything else is dropped.
    pub fn into_frames(self) -> Vec<WsMessage> {
        self.effects
            .into_iter()
            .filter_map(|effect| match effect {
                Effect::Send(frame) => Some(frame),
                Effect::GroupSend(..) => None,
            })
            .collect()
    }

    /// Sends it: frames to the client's queue, events to the groups.
    pub fn release(self, to: &Release<'_>) {
        for effect in self.effects {
            match effect {
                Effect::Send(frame) => {
                    push_to(to.outbound, frame, to.id, to.kick, &to.caps.metrics);
                }
                Effect::GroupSend(group, event) => {
                    to.caps.layer.group_send(&group, &event);
                    to.caps.metrics.group_sends.inc();
                }
            }
        }
    }
}

/// Where an emission goes.
pub struct Release<'a> {
    /// The node's layer and counters.
    pub caps: &'a Capabilities,
    /// The connection's queue towards its client.
    pub outbound: &'a Outbound,
    /// The connection.
    pub id: ConnId,
    /// Its close signal (a client that does not read is closed).
    pub kick: &'a Kick,
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
            emission: Emission::default(),
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
        let (outbound, _) = delivery::outbound(1, caps.pressure.clone());
        Self::detached(consumer, caps, outbound)
    }

    /// Resets the per-event budgets.
    pub(crate) fn begin_event(&mut self) {
        self.used = EventUse::default();
    }

    /// Whether the connection is closing: what is sent now goes nowhere.
    pub fn closing(&self) -> bool {
        self.kick.is_kicked() || self.close_request.is_some()
    }

    /// Holds an effect of the current event until its writes are durable.
    pub(crate) fn emit(&mut self, effect: Effect) {
        self.emission.effects.push(effect);
    }

    /// Holds the current event's effects until this commit too.
    pub(crate) fn wait_for(&mut self, commit: Committed) {
        self.emission.commits.push(commit);
    }

    /// What the event that just ran sends, and waits for.
    pub fn take_emission(&mut self) -> Emission {
        std::mem::take(&mut self.emission)
    }

    /// Where this connection's emissions go.
    pub fn release_to(&self) -> Release<'_> {
        Release {
            caps: &self.caps,
            outbound: &self.outbound,
            id: self.id,
            kick: &self.kick,
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

/// Queues a message on a connection's queue; a client that does not read
/// is asked to close (4008). Returns whether it was queued.
pub fn push_to(
    outbound: &Outbound,
    message: WsMessage,
    id: ConnId,
    kick: &Kick,
    metrics: &Metrics,
) -> bool {
    match outbound.push(message) {
        Push::Queued => {
            metrics.messages_sent.inc();
            true
        }
        Push::TooSlow => {
            if !kick.is_kicked() {
                metrics.slow_client_closes.inc();
                tracing::warn!(
                    connection = id,
                    "the client does not read what it is sent: closing it (4008)"
                );
            }
            kick.kick(crate::close::SLOW_CLIENT);
            false
        }
        Push::Closed => false,
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
