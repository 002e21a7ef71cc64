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
//! **Every event is authenticated.** A node signs what it publishes with
//! HMAC-SHA256 under `[layer] key` (shared by the nodes, not by Redis), over
//! the channel, its node id, a sequence number, the time and the event. A
//! node delivers an event only if the tag is right, it is recent
//! ([`MAX_AGE`]) and its sequence number is above the last one heard from
//! that node. So a client of Redis that is not a node cannot forge an event
//! into a group nor move one to another group, and a replayed or re-sent
//! event is delivered at most once: when a publish fails half-way and the
//! batch is sent again on a new connection, receivers drop what they
//! already had. What Redis access still allows is in the README ("Several
//! nodes").
//!
//! When Redis is unreachable the node keeps serving its own members.
//! Publishing and subscribing reconnect with backoff. Events for other nodes
//! wait in a queue bounded in bytes (`[layer] publish_queue_bytes`): those
//! still fresh ([`MAX_STALE`]) when Redis is back are published then, in
//! order; older ones, and any that find the queue full, are counted as not
//! relayed and logged (at most once a second), never queued without bound.
//! On reconnecting, the node subscribes again to every group it has members
//! in. `/healthz` shows the layer's state.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{ConnId, Event, GroupEvent, Mailbox, MemoryLayer};
use crate::config::{LayerConfig, redact_url};
use crate::metrics::{Metrics, write_metric};

/// An event not published within this long (Redis was away) is dropped and
/// counted: a chat message minutes late is worse than one not relayed.
const MAX_STALE: Duration = Duration::from_secs(5);
/// An event stamped further than this from the receiver's clock is refused
/// (a replay, or a node with a wrong clock).
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Events published in one round trip.
const PUBLISH_BATCH: usize = 256;
/// How long `group-add` waits for Redis to confirm a new subscription.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);
/// Backoff between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The format of a published event, first on its header line.
const FORMAT: &str = "ch1";

/// An event for other nodes, before it is signed.
struct Outgoing {
    channel: String,
    json: Arc<str>,
    enqueued: Instant,
    /// Its share of the queue's bytes, given back once it is gone.
    queued_bytes: usize,
}

/// An event signed and ready to publish (again, after a failure).
struct Sealed {
    channel: String,
    payload: Vec<u8>,
    enqueued: Instant,
    /// Its share of the queue's bytes, given back once it is gone.
    queued_bytes: usize,
}

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
    /// Events received from other nodes and delivered.
    pub received: AtomicU64,
    /// Events published.
    pub published: AtomicU64,
    /// Events refused: a bad tag, too old, or malformed.
    pub rejected: AtomicU64,
    /// Events heard twice (re-sent after a failed publish, or replayed) and
    /// delivered once.
    pub duplicates: AtomicU64,
    /// Bytes of events waiting to be published.
    pub queued_bytes: AtomicUsize,
}

/// Signs and checks published events.
#[derive(Clone)]
struct Signer {
    mac: Hmac<Sha256>,
}

/// An event that passed the checks.
#[derive(Debug, PartialEq)]
struct Opened<'p> {
    node: &'p str,
    seq: u64,
    json: &'p str,
}

/// Why an event from Redis was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
enum Refused {
    #[error("malformed")]
    Malformed,
    #[error("bad tag")]
    BadTag,
    #[error("stamped {0} ms from now")]
    Stale(u128),
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis())
}

impl Signer {
    fn new(key: &str) -> Self {
        Self {
            mac: Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key"),
        }
    }

    fn tag(&self, channel: &str, header: &str, json: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        for part in [channel, "\n", header, "\n", json] {
            mac.update(part.as_bytes());
        }
        mac
    }

    /// `ch1 <node> <seq> <unix ms> <tag>\n<json>`
    fn seal(&self, channel: &str, node: &str, seq: u64, now_ms: u128, json: &str) -> Vec<u8> {
        let header = format!("{FORMAT} {node} {seq} {now_ms}");
        let tag = hex::encode(self.tag(channel, &header, json).finalize().into_bytes());
        format!("{header} {tag}\n{json}").into_bytes()
    }

    fn open<'p>(
        &self,
        channel: &str,
        payload: &'p [u8],
        now_ms: u128,
    ) -> Result<Opened<'p>, Refused> {
        let payload = std::str::from_utf8(payload).map_err(|_| Refused::Malformed)?;
        let (head, json) = payload.split_once('\n').ok_or(Refused::Malformed)?;
        let (header, tag) = head.rsplit_once(' ').ok_or(Refused::Malformed)?;
        let mut fields = header.split(' ');
        let (Some(FORMAT), Some(node), Some(seq), Some(stamp), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(Refused::Malformed);
        };
        let tag = hex::decode(tag).map_err(|_| Refused::Malformed)?;
        self.tag(channel, header, json)
            .verify_slice(&tag)
            .map_err(|_| Refused::BadTag)?;
        let seq = seq.parse().map_err(|_| Refused::Malformed)?;
        let stamp: u128 = stamp.parse().map_err(|_| Refused::Malformed)?;
        let skew = now_ms.abs_diff(stamp);
        if skew > MAX_AGE.as_millis() {
            return Err(Refused::Stale(skew));
        }
        Ok(Opened { node, seq, json })
    }
}

/// The last sequence number heard from each node, kept while it is recent.
#[derive(Default)]
struct Seen {
    last: HashMap<String, (u64, Instant)>,
    swept: Option<Instant>,
}

impl Seen {
    /// Whether `seq` from `node` is new (and remembers it).
    fn is_new(&mut self, node: &str, seq: u64) -> bool {
        let now = Instant::now();
        // Nodes quiet for longer than an event may be old can be forgotten:
        // anything they sent before is refused as stale anyway.
        if self.swept.is_none_or(|swept| now - swept > MAX_AGE) {
            self.last
                .retain(|_, (_, heard)| now - *heard <= MAX_AGE * 2);
            self.swept = Some(now);
        }
        match self.last.get_mut(node) {
            Some((last, heard)) => {
                *heard = now;
                if seq <= *last {
                    return false;
                }
                *last = seq;
                true
            }
            None => {
                self.last.insert(node.to_string(), (seq, now));
                true
            }
        }
    }
}

/// Groups spanning every node that uses the same Redis and prefix.
pub struct RedisLayer {
    local: Arc<MemoryLayer>,
    node: Arc<str>,
    prefix: Arc<str>,
    publish: mpsc::UnboundedSender<Outgoing>,
    max_queued_bytes: usize,
    control: mpsc::UnboundedSender<Control>,
    state: Arc<RedisState>,
    log: Mutex<Throttled>,
}

fn client(config: &LayerConfig) -> Result<redis::Client, String> {
    let url = config.url.as_deref().ok_or("[layer] url is not set")?;
    let shown = redact_url(url);
    let fail = |err: &dyn std::fmt::Display| format!("[layer] url {shown:?}: {err}");
    match &config.ca_file {
        None => redis::Client::open(url).map_err(|err| fail(&err)),
        Some(path) => {
            let root_cert = std::fs::read(path)
                .map_err(|err| format!("[layer] ca_file {}: {err}", path.display()))?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
            .map_err(|err| fail(&err))
        }
    }
}

impl RedisLayer {
    /// Starts the publishing and subscribing tasks; they run until `shutdown`.
    pub fn start(
        config: &LayerConfig,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Self, String> {
        let client = client(config)?;
        let signer = Signer::new(config.key.as_deref().ok_or("[layer] key is not set")?);
        let local = Arc::new(MemoryLayer::new(metrics));
        let node: Arc<str> = Arc::from(uuid::Uuid::new_v4().simple().to_string());
        let prefix: Arc<str> = Arc::from(config.prefix.as_str());
        let state = Arc::new(RedisState::default());
        let (publish, publish_rx) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::unbounded_channel();
        tokio::spawn(publisher(
            client.clone(),
            publish_rx,
            Publisher {
                node: node.clone(),
                signer: signer.clone(),
                state: state.clone(),
            },
            shutdown.clone(),
        ));
        tokio::spawn(subscriber(
            client,
            control_rx,
            Subscriber {
                local: local.clone(),
                prefix: prefix.clone(),
                node: node.clone(),
                signer,
                seen: Seen::default(),
                state: state.clone(),
                log: Throttled::new(),
            },
            shutdown,
        ));
        tracing::info!(node = %node, prefix = %prefix, url = %redact_url(config.url.as_deref().unwrap_or("")), "Redis channel layer started");
        Ok(Self {
            local,
            node,
            prefix,
            publish,
            max_queued_bytes: config.publish_queue_bytes,
            control,
            state,
            log: Mutex::new(Throttled::new()),
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
        let channel = self.channel(group);
        // The event, its channel and the signed header that will go with it.
        let bytes = event.json.len() + channel.len() + 128;
        let queued = self.state.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if queued > self.max_queued_bytes {
            self.state.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.not_relayed("the Redis publish queue is full ([layer] publish_queue_bytes)");
            return delivered;
        }
        let outgoing = Outgoing {
            channel,
            json: Arc::from(&*event.json),
            enqueued: Instant::now(),
            queued_bytes: bytes,
        };
        if self.publish.send(outgoing).is_err() {
            self.state.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.not_relayed("the Redis publisher has stopped");
        }
        delivered
    }

    fn not_relayed(&self, why: &str) {
        self.state.publish_failures.fetch_add(1, Ordering::Relaxed);
        self.log
            .lock()
            .expect("not poisoned")
            .warn("an event was not relayed to other nodes", &why);
    }

    /// Members of a group on this node.
    #[cfg(feature = "test-support")]
    pub fn members(&self, group: &str) -> usize {
        self.local.members(group)
    }

    /// The layer's state for `/healthz`.
    pub fn health(&self) -> serde_json::Value {
        let state = &self.state;
        serde_json::json!({
            "kind": "redis",
            "node": &*self.node,
            "connected": self.connected(),
            "published": state.published.load(Ordering::Relaxed),
            "received": state.received.load(Ordering::Relaxed),
            "publish_failures": state.publish_failures.load(Ordering::Relaxed),
            "rejected": state.rejected.load(Ordering::Relaxed),
        })
    }

    /// Whether both connections to Redis are up.
    pub fn connected(&self) -> bool {
        self.state.subscribed.load(Ordering::Relaxed)
            && self.state.publishing.load(Ordering::Relaxed)
    }

    /// The layer's lines for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let state = &self.state;
        for (name, help, value) in [
            (
                "layer_published_total",
                "Events published to other nodes.",
                state.published.load(Ordering::Relaxed),
            ),
            (
                "layer_received_total",
                "Events received from other nodes and delivered.",
                state.received.load(Ordering::Relaxed),
            ),
            (
                "layer_publish_failures_total",
                "Events that could not be published to other nodes.",
                state.publish_failures.load(Ordering::Relaxed),
            ),
            (
                "layer_rejected_total",
                "Events from Redis refused: a bad tag, too old, or malformed.",
                state.rejected.load(Ordering::Relaxed),
            ),
            (
                "layer_duplicates_total",
                "Events heard twice from Redis and delivered once.",
                state.duplicates.load(Ordering::Relaxed),
            ),
        ] {
            write_metric(out, name, "counter", help, value);
        }
        write_metric(
            out,
            "layer_queued_bytes",
            "gauge",
            "Bytes of events waiting to be published to other nodes.",
            state.queued_bytes.load(Ordering::Relaxed) as u64,
        );
        write_metric(
            out,
            "layer_connected",
            "gauge",
            "Whether the Redis layer is connected.",
            u64::from(self.connected()),
        );
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

/// What the publishing task needs.
struct Publisher {
    node: Arc<str>,
    signer: Signer,
    state: Arc<RedisState>,
}

impl Publisher {
    /// Signs events in the order they were sent: sequence numbers are given
    /// here, by the one task that publishes, so they rise in publish order.
    fn seal(&self, seq: &mut u64, event: Outgoing) -> Sealed {
        *seq += 1;
        let payload = self
            .signer
            .seal(&event.channel, &self.node, *seq, unix_ms(), &event.json);
        Sealed {
            queued_bytes: event.queued_bytes,
            channel: event.channel,
            payload,
            enqueued: event.enqueued,
        }
    }

    /// Gives an event's bytes back to the queue's budget.
    fn release(&self, sealed: &Sealed) {
        self.state
            .queued_bytes
            .fetch_sub(sealed.queued_bytes, Ordering::Relaxed);
    }
}

async fn publisher(
    client: redis::Client,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    this: Publisher,
    shutdown: CancellationToken,
) {
    let state = &this.state;
    let mut delay = BACKOFF_MIN;
    let mut log = Throttled::new();
    let mut seq = 0u64;
    // Events taken from the queue and not yet published: after a failure
    // they are sent again on the next connection (if still fresh), because a
    // connection that died while idle only says so on the next send. Those
    // Redis took before the failure are dropped by the receivers as
    // duplicates (same sequence numbers): each is delivered once.
    let mut batch: Vec<Sealed> = Vec::with_capacity(PUBLISH_BATCH);
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
                batch.push(this.seal(&mut seq, first));
            }
            while batch.len() < PUBLISH_BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(this.seal(&mut seq, next)),
                    Err(_) => break,
                }
            }
            // What waited too long while Redis was away is dropped and counted.
            let before = batch.len();
            batch.retain(|sealed| {
                let fresh = sealed.enqueued.elapsed() <= MAX_STALE;
                if !fresh {
                    this.release(sealed);
                }
                fresh
            });
            state
                .publish_failures
                .fetch_add((before - batch.len()) as u64, Ordering::Relaxed);
            if batch.is_empty() {
                continue;
            }
            // One round trip for the batch, in order.
            let mut pipe = redis::pipe();
            for sealed in &batch {
                pipe.cmd("PUBLISH")
                    .arg(&sealed.channel)
                    .arg(&sealed.payload)
                    .ignore();
            }
            match pipe.query_async::<()>(&mut connection).await {
                Ok(()) => {
                    state
                        .published
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for sealed in batch.drain(..) {
                        this.release(&sealed);
                    }
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
    prefix: Arc<str>,
    node: Arc<str>,
    signer: Signer,
    seen: Seen,
    state: Arc<RedisState>,
    log: Throttled,
}

impl Subscriber {
    fn channel(&self, group: &str) -> String {
        channel_name(&self.prefix, group)
    }

    /// Hands an event from another node to this node's members, if it is
    /// authentic, recent and new.
    fn deliver(&mut self, message: &redis::Msg) {
        let channel = message.get_channel_name();
        let Some(group) = group_of(&self.prefix, channel) else {
            return;
        };
        let opened = match self
            .signer
            .open(channel, message.get_payload_bytes(), unix_ms())
        {
            Ok(opened) => opened,
            Err(why) => {
                self.state.rejected.fetch_add(1, Ordering::Relaxed);
                self.log.warn(
                    "refused an event from Redis (not signed with [layer] key by a node, or too old)",
                    &why,
                );
                return;
            }
        };
        // This node delivered its own events when it sent them.
        if opened.node == &*self.node {
            return;
        }
        if !self.seen.is_new(opened.node, opened.seq) {
            self.state.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(event) = GroupEvent::parse(opened.json) else {
            self.state.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.state.received.fetch_add(1, Ordering::Relaxed);
        self.local.group_send(group, &event);
    }
}

async fn subscriber(
    client: redis::Client,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut this: Subscriber,
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
        let channel = channel_name(
            "chat-prod",
            "chat:chat_22de0f4f-c84e-47be-889c-d61b856492bd",
        );
        assert_eq!(
            channel,
            "chat-prod:group:chat:chat_22de0f4f-c84e-47be-889c-d61b856492bd"
        );
        assert_eq!(
            group_of("chat-prod", &channel),
            Some("chat:chat_22de0f4f-c84e-47be-889c-d61b856492bd")
        );
        assert_eq!(group_of("other", &channel), None);
        assert_eq!(group_of("chat-prod", "chat-prod:other:x"), None);
    }

    const KEY: &str = "a-layer-key-of-at-least-32-bytes!!";

    #[test]
    fn only_events_signed_with_the_key_open() {
        let signer = Signer::new(KEY);
        let now = unix_ms();
        let json = r#"{"type":"chat.message","body":"hi"}"#;
        let sealed = signer.seal("p:group:chat:room", "node1", 7, now, json);
        assert_eq!(
            signer.open("p:group:chat:room", &sealed, now),
            Ok(Opened {
                node: "node1",
                seq: 7,
                json
            })
        );
        // Another key, another channel, a changed event or header: refused.
        let other = Signer::new("another-key-of-at-least-32-bytes!!!");
        assert_eq!(
            other.open("p:group:chat:room", &sealed, now),
            Err(Refused::BadTag)
        );
        assert_eq!(
            signer.open("p:group:chat:other", &sealed, now),
            Err(Refused::BadTag)
        );
        let text = String::from_utf8(sealed.clone()).unwrap();
        let forged = text.replace("hi", "ho");
        assert_eq!(
            signer.open("p:group:chat:room", forged.as_bytes(), now),
            Err(Refused::BadTag)
        );
        let renumbered = text.replacen(" 7 ", " 8 ", 1);
        assert_eq!(
            signer.open("p:group:chat:room", renumbered.as_bytes(), now),
            Err(Refused::BadTag)
        );
        // The unsigned format of earlier versions, and garbage.
        for bad in [
            format!("node1\n{json}").into_bytes(),
            b"ch1 a b c d\n{}".to_vec(),
            vec![0xff, 0xfe],
            Vec::new(),
        ] {
            assert!(signer.open("p:group:chat:room", &bad, now).is_err());
        }
        // Too old, or from the future.
        let late = now + MAX_AGE.as_millis() + 1_000;
        assert!(matches!(
            signer.open("p:group:chat:room", &sealed, late),
            Err(Refused::Stale(_))
        ));
    }

    #[test]
    fn each_sequence_number_is_new_once() {
        let mut seen = Seen::default();
        assert!(seen.is_new("a", 1));
        assert!(seen.is_new("a", 2));
        assert!(!seen.is_new("a", 2), "a re-sent event");
        assert!(!seen.is_new("a", 1), "a replayed event");
        assert!(seen.is_new("b", 1), "another node counts on its own");
        assert!(
            seen.is_new("a", 10),
            "gaps are events for groups not heard here"
        );
    }
}
