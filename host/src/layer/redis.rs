//! The Redis layer: groups that span nodes.
//!
//! Each node keeps its own members, as the memory layer does, and uses Redis
//! publish/subscribe for the rest:
//!
//! - a node subscribes to a group's channel (`<prefix>:group:<name>`) when the
//!   group gets its first member on the node, and unsubscribes when the last
//!   one leaves: nodes hear only of groups they have members in;
//! - `group-send` delivers to the node's own members at once and publishes the
//!   event once; Redis passes it once to every node subscribed, which
//!   delivers it to its members. A message crosses Redis once per node that
//!   has members, not once per member;
//! - Redis holds no membership at all: a node's subscriptions are its
//!   memberships, and when a node dies Redis drops its connection and with
//!   it every subscription. There is nothing to expire and nothing to leak.
//!
//! When Redis is unreachable the node keeps serving its own members.
//! Publishing and subscribing reconnect with backoff. Events for other nodes
//! wait in a bounded queue: those still fresh (`MAX_STALE`) when Redis is
//! back are published then, in order; older ones, and any that find the
//! queue full, are counted as not delivered across nodes and logged (at most
//! once a second), never queued without bound. On reconnecting, the node
//! subscribes again to every group it has members in. `/healthz` shows the
//! layer's state.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{ConnId, Event, GroupEvent, Mailbox, MemoryLayer};
use crate::metrics::Metrics;

/// Events waiting to be published; past this they are counted as failed.
const PUBLISH_QUEUE: usize = 16_384;
/// An event not published within this long (Redis was away) is dropped and
/// counted: a chat message minutes late is worse than one not relayed.
const MAX_STALE: Duration = Duration::from_secs(5);
/// Events published in one round trip.
const PUBLISH_BATCH: usize = 256;
/// How long `group-add` waits for Redis to confirm a new subscription.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);
/// Backoff between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// An event for other nodes: its channel, payload, and when it was sent.
type Outgoing = (String, Arc<str>, Instant);

enum Control {
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

/// What `/healthz` and `/metrics` show of the layer.
#[derive(Debug, Default)]
pub struct RedisState {
    /// Whether the subscribing connection is up.
    pub subscribed: AtomicBool,
    /// Whether the last publish reached Redis.
    pub publishing: AtomicBool,
    /// Events that could not be published to other nodes.
    pub publish_failures: AtomicU64,
    /// Events received from other nodes.
    pub received: AtomicU64,
    /// Events published.
    pub published: AtomicU64,
}

/// Groups spanning every node that uses the same Redis and prefix.
pub struct RedisLayer {
    local: Arc<MemoryLayer>,
    node: Arc<str>,
    prefix: Arc<str>,
    publish: mpsc::Sender<Outgoing>,
    control: mpsc::UnboundedSender<Control>,
    state: Arc<RedisState>,
}

impl RedisLayer {
    /// Starts the publishing and subscribing tasks; they run until `shutdown`.
    pub fn start(
        url: &str,
        prefix: &str,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Self, String> {
        let client =
            redis::Client::open(url).map_err(|err| format!("[layer] url {url:?}: {err}"))?;
        let local = Arc::new(MemoryLayer::new(metrics.clone()));
        let node: Arc<str> = Arc::from(uuid::Uuid::new_v4().simple().to_string());
        let prefix: Arc<str> = Arc::from(prefix);
        let state = Arc::new(RedisState::default());
        let (publish, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (control, control_rx) = mpsc::unbounded_channel();
        tokio::spawn(publisher(
            client.clone(),
            publish_rx,
            state.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(subscriber(
            client,
            control_rx,
            Subscriber {
                local: local.clone(),
                node: node.clone(),
                prefix: prefix.clone(),
                state: state.clone(),
            },
            shutdown,
        ));
        tracing::info!(node = %node, prefix = %prefix, "Redis channel layer started");
        Ok(Self {
            local,
            node,
            prefix,
            publish,
            control,
            state,
        })
    }

    fn channel(&self, group: &str) -> String {
        channel_name(&self.prefix, group)
    }

    /// Adds a member; the first member of a group on this node subscribes
    /// the node to it (waiting, briefly, for Redis to confirm).
    pub async fn group_add(&self, group: &str, mailbox: &Mailbox) {
        if self.local.group_add(group, mailbox) {
            let (confirmed, confirmation) = oneshot::channel();
            let _ = self
                .control
                .send(Control::Subscribe(group.to_string(), confirmed));
            if tokio::time::timeout(SUBSCRIBE_WAIT, confirmation)
                .await
                .is_err()
            {
                tracing::warn!(
                    group,
                    "Redis did not confirm a subscription in time; members elsewhere may not be heard yet"
                );
            }
        }
    }

    /// Removes a member; the last one of a group unsubscribes the node.
    pub fn group_discard(&self, group: &str, id: ConnId) {
        if self.local.group_discard(group, id) {
            let _ = self.control.send(Control::Unsubscribe(group.to_string()));
        }
    }

    /// Delivers to this node's members and publishes for the others.
    pub fn group_send(&self, group: &str, event: &Event) -> usize {
        let delivered = self.local.group_send(group, event);
        let payload: Arc<str> = Arc::from(format!("{}\n{}", self.node, event.json));
        if self
            .publish
            .try_send((self.channel(group), payload, Instant::now()))
            .is_err()
        {
            let failures = self.state.publish_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if failures.is_power_of_two() {
                tracing::warn!(
                    failures,
                    "Redis publish queue full: events not sent to other nodes"
                );
            }
        }
        delivered
    }

    /// Members of a group on this node.
    pub fn members(&self, group: &str) -> usize {
        self.local.members(group)
    }

    /// The layer's state for `/healthz`.
    pub fn health(&self) -> serde_json::Value {
        let state = &self.state;
        serde_json::json!({
            "kind": "redis",
            "node": &*self.node,
            "connected": state.subscribed.load(Ordering::Relaxed) && state.publishing.load(Ordering::Relaxed),
            "published": state.published.load(Ordering::Relaxed),
            "received": state.received.load(Ordering::Relaxed),
            "publish_failures": state.publish_failures.load(Ordering::Relaxed),
        })
    }

    /// Whether both connections to Redis are up.
    pub fn connected(&self) -> bool {
        self.state.subscribed.load(Ordering::Relaxed)
            && self.state.publishing.load(Ordering::Relaxed)
    }

    /// The counters, for `/metrics`.
    pub fn state(&self) -> &RedisState {
        &self.state
    }
}

/// Waits `delay` (or until shutdown) and doubles it, up to the maximum.
async fn back_off(delay: &mut Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => return false,
        () = tokio::time::sleep(*delay) => {}
    }
    *delay = (*delay * 2).min(BACKOFF_MAX);
    true
}

/// Logs a failure at most once a second, with how many there were.
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    fn warn(&mut self, what: &str, error: &dyn std::fmt::Display) {
        if self
            .last
            .is_some_and(|last| last.elapsed() < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %error, suppressed = self.suppressed, "{what}");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

async fn publisher(
    client: redis::Client,
    mut queue: mpsc::Receiver<Outgoing>,
    state: Arc<RedisState>,
    shutdown: CancellationToken,
) {
    let mut delay = BACKOFF_MIN;
    let mut log = Throttled::new();
    // Events taken from the queue and not yet published: after a failure
    // they are sent again on the next connection (if still fresh), because a
    // connection that died while idle only says so on the next send.
    let mut batch: Vec<Outgoing> = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let mut connection = loop {
            match client.get_multiplexed_tokio_connection().await {
                Ok(connection) => break connection,
                Err(err) => {
                    state.publishing.store(false, Ordering::Relaxed);
                    log.warn("cannot connect to Redis to publish; retrying", &err);
                    if !back_off(&mut delay, &shutdown).await {
                        return;
                    }
                }
            }
        };
        state.publishing.store(true, Ordering::Relaxed);
        delay = BACKOFF_MIN;
        loop {
            if batch.is_empty() {
                let first = tokio::select! {
                    () = shutdown.cancelled() => return,
                    first = queue.recv() => match first {
                        Some(first) => first,
                        None => return,
                    },
                };
                batch.push(first);
            }
            while batch.len() < PUBLISH_BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            // What waited too long while Redis was away is dropped and counted.
            let before = batch.len();
            batch.retain(|(_, _, enqueued)| enqueued.elapsed() <= MAX_STALE);
            state
                .publish_failures
                .fetch_add((before - batch.len()) as u64, Ordering::Relaxed);
            if batch.is_empty() {
                continue;
            }
            // One round trip for the batch, in order.
            let mut pipe = redis::pipe();
            for (channel, payload, _) in &batch {
                pipe.cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload.as_bytes())
                    .ignore();
            }
            match pipe.query_async::<()>(&mut connection).await {
                Ok(()) => {
                    state
                        .published
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                }
                Err(err) => {
                    state.publishing.store(false, Ordering::Relaxed);
                    log.warn("publishing to Redis failed; reconnecting", &err);
                    break;
                }
            }
        }
    }
}

/// The Redis channel of a group: `<prefix>:group:<group>`.
fn channel_name(prefix: &str, group: &str) -> String {
    format!("{prefix}:group:{group}")
}

/// The group of a channel named by [`channel_name`].
fn group_of<'c>(prefix: &str, channel: &'c str) -> Option<&'c str> {
    channel.strip_prefix(prefix)?.strip_prefix(":group:")
}

/// What the subscribing task needs.
struct Subscriber {
    local: Arc<MemoryLayer>,
    node: Arc<str>,
    prefix: Arc<str>,
    state: Arc<RedisState>,
}

impl Subscriber {
    fn channel(&self, group: &str) -> String {
        channel_name(&self.prefix, group)
    }

    /// Hands an event from another node to this node's members.
    fn deliver(&self, message: &redis::Msg) {
        let Some(group) = group_of(&self.prefix, message.get_channel_name()) else {
            return;
        };
        let payload = message.get_payload_bytes();
        let Ok(payload) = std::str::from_utf8(payload) else {
            return;
        };
        let Some((origin, json)) = payload.split_once('\n') else {
            return;
        };
        // This node delivered its own events when it sent them.
        if origin == &*self.node {
            return;
        }
        #[derive(serde::Deserialize)]
        struct Typed<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        let Ok(typed) = serde_json::from_str::<Typed<'_>>(json) else {
            tracing::warn!(
                group,
                "an event from another node is not a typed JSON object; dropped"
            );
            return;
        };
        self.state.received.fetch_add(1, Ordering::Relaxed);
        self.local
            .group_send(group, &GroupEvent::new(json, typed.kind.as_ref()));
    }
}

async fn subscriber(
    client: redis::Client,
    mut control: mpsc::UnboundedReceiver<Control>,
    this: Subscriber,
    shutdown: CancellationToken,
) {
    let mut delay = BACKOFF_MIN;
    let mut log = Throttled::new();
    loop {
        let pubsub = loop {
            match client.get_async_pubsub().await {
                Ok(pubsub) => break pubsub,
                Err(err) => {
                    this.state.subscribed.store(false, Ordering::Relaxed);
                    log.warn("cannot connect to Redis to subscribe; retrying", &err);
                    // Answer subscription requests meanwhile: the groups are
                    // subscribed to again on reconnecting.
                    while let Ok(request) = control.try_recv() {
                        if let Control::Subscribe(_, confirmed) = request {
                            let _ = confirmed.send(());
                        }
                    }
                    if !back_off(&mut delay, &shutdown).await {
                        return;
                    }
                }
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // Every group with members here, again (after a reconnection too).
        let groups: HashSet<String> = this.local.groups().into_iter().collect();
        let mut failed = false;
        for group in &groups {
            if let Err(err) = sink.subscribe(this.channel(group)).await {
                log.warn("subscribing to Redis failed; reconnecting", &err);
                failed = true;
                break;
            }
        }
        if failed {
            if !back_off(&mut delay, &shutdown).await {
                return;
            }
            continue;
        }
        this.state.subscribed.store(true, Ordering::Relaxed);
        delay = BACKOFF_MIN;
        tracing::info!(groups = groups.len(), "subscribed to Redis");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                message = stream.next() => match message {
                    Some(message) => this.deliver(&message),
                    None => {
                        this.state.subscribed.store(false, Ordering::Relaxed);
                        tracing::warn!("the Redis subscription connection closed; reconnecting");
                        break;
                    }
                },
                request = control.recv() => match request {
                    None => return,
                    Some(Control::Subscribe(group, confirmed)) => {
                        let result = sink.subscribe(this.channel(&group)).await;
                        let _ = confirmed.send(());
                        if let Err(err) = result {
                            this.state.subscribed.store(false, Ordering::Relaxed);
                            log.warn("subscribing to Redis failed; reconnecting", &err);
                            break;
                        }
                    }
                    Some(Control::Unsubscribe(group)) => {
                        // It may have gained a member since it asked.
                        if this.local.members(&group) == 0
                            && let Err(err) = sink.unsubscribe(this.channel(&group)).await
                        {
                            this.state.subscribed.store(false, Ordering::Relaxed);
                            log.warn("unsubscribing from Redis failed; reconnecting", &err);
                            break;
                        }
                    }
                },
            }
        }
        if !back_off(&mut delay, &shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        let channel = channel_name("chat-prod", "chat_22de0f4f-c84e-47be-889c-d61b856492bd");
        assert_eq!(
            channel,
            "chat-prod:group:chat_22de0f4f-c84e-47be-889c-d61b856492bd"
        );
        assert_eq!(
            group_of("chat-prod", &channel),
            Some("chat_22de0f4f-c84e-47be-889c-d61b856492bd")
        );
        assert_eq!(group_of("other", &channel), None);
        assert_eq!(group_of("chat-prod", "chat-prod:other:x"), None);
    }
}
