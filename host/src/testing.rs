//! For this repository's tests and benchmarks (the `test-support` feature):
//! looking inside a running node, and calling a consumer without a socket.

use std::sync::Arc;

use hyper_tungstenite::tungstenite::Message as WsMessage;

use crate::Server;
use crate::layer::{Kick, Mailbox};
use crate::runtime::Fault;
use crate::runtime::bindings::types::{Message, Scope};
use crate::runtime::conn::{ConnState, Identity, Pipes};
use crate::runtime::session::{Call, Session};

/// Members on this node of `consumer`'s group `group`.
pub fn group_members(server: &Server, consumer: &str, group: &str) -> usize {
    let node = server.node();
    let namespace = node
        .runtime
        .consumer(consumer)
        .map_or(consumer, |consumer| consumer.namespace());
    node.caps().layer.members(&format!("{namespace}:{group}"))
}

/// A consumer's session with no socket: events go straight to its
/// instance, what it sends comes out of [`Direct::frames`].
pub struct Direct {
    session: Session,
    frames: crate::delivery::OutboundReceiver,
}

impl Direct {
    /// A session of `consumer` on `server`'s node, with `scope`.
    pub fn new(server: &Server, consumer: &str, scope: Scope) -> Self {
        let node = server.node();
        let consumer = node.runtime.consumer(consumer).expect("a consumer").clone();
        let kick = Kick::child_of(&node.shutdown);
        let (outbound, frames) = crate::delivery::outbound(1 << 20, node.caps().pressure.clone());
        let (mailbox, _events) = Mailbox::new(u64::MAX, 16, kick.clone());
        let conn = ConnState::new(
            consumer.clone(),
            node.caps().clone(),
            Identity {
                id: u64::MAX,
                offered_subprotocols: scope.subprotocols.clone(),
                scope,
            },
            Pipes {
                outbound,
                mailbox,
                kick,
            },
        );
        Self {
            session: Session::new(consumer, conn),
            frames,
        }
    }

    /// Runs `handle-event`.
    pub async fn event(&mut self, event: &str) -> Result<(), Fault> {
        self.run(Call::Event(event)).await
    }

    /// Runs `receive` with a text message.
    pub async fn receive(&mut self, text: &str) -> Result<(), Fault> {
        self.run(Call::Receive(&Message::Text(text.into()))).await
    }

    /// Runs `connect`.
    pub async fn connect(&mut self) -> Result<(), Fault> {
        self.run(Call::Connect).await
    }

    /// Runs a call, then releases what it sent once its writes are durable.
    async fn run(&mut self, call: Call<'_>) -> Result<(), Fault> {
        let result = self.session.call(call).await;
        let mut emission = self.session.conn().take_emission();
        if emission.committed().await.is_ok() {
            emission.release(&self.session.conn().release_to());
        }
        result
    }

    /// What the consumer sent its client since the last call to this.
    pub fn frames(&mut self) -> Vec<WsMessage> {
        self.frames.take_all()
    }

    /// Drops the instance (the next call makes a new one).
    pub fn evict(&mut self) {
        self.session.evict();
    }
}

/// The scope types, for building a [`Direct`] session's scope.
pub use crate::runtime::bindings::types;

/// A consumer's shared handle, for benchmarks that need it.
pub fn consumer(server: &Server, name: &str) -> Option<Arc<crate::runtime::Consumer>> {
    server.node().runtime.consumer(name).cloned()
}
