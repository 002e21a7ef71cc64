//! One accepted connection: the loop that reads frames and group events and
//! hands them to the consumer one at a time, in order, and the way it ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use hyper_tungstenite::HyperWebsocket;
use hyper_tungstenite::tungstenite::Message as WsMessage;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

use super::rate::TokenBucket;
use super::writer::write_loop;
use crate::auth::{AuthError, Login};
use crate::close;
use crate::db::Value;
use crate::layer::{Event, Kick};
use crate::node::{Node, UserSlot};
use crate::runtime::bindings::types::Message;
use crate::runtime::conn::{Emission, Outbound, Release};
use crate::runtime::session::{Call, Session};
use crate::runtime::{Consumer, Fault, render};

/// How long to wait for the client's close frame after sending ours.
const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(2);
/// How long the writer may take to flush before the socket is dropped.
const WRITER_DRAIN_WAIT: Duration = Duration::from_secs(5);
/// The event a 0.2 consumer hears after the host re-checked its login.
const RECHECK_EVENT: &str = r#"{"type":"host.recheck"}"#;

/// One accepted connection.
pub struct Connection {
    node: Arc<Node>,
    consumer: Arc<Consumer>,
    session: Session,
    kick: Kick,
    /// A sender of the send queue, for the close frame: it outlives the
    /// session's own.
    outbound: Outbound,
    id: u64,
    rate: TokenBucket,
    login: Option<LoginWatch>,
    user_slot: Option<UserSlot>,
    _permit: OwnedSemaphorePermit,
}

/// What the connection knows of its login, to check it again.
struct LoginWatch {
    user_id: Value,
    /// When the token stops being a login.
    expires: Instant,
}

/// How a connection ended.
struct Ending {
    /// The code the consumer's `disconnect` hears, and the one logged.
    code: u16,
    /// Why, for the log (and the close frame when we close).
    reason: String,
    /// We close: a close frame goes to the client.
    ours: bool,
    /// Send the close frame ahead of anything still queued (slow client).
    urgent: bool,
    /// The consumer faulted: no `disconnect` for it.
    faulted: bool,
}

impl Ending {
    fn ours(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            ours: true,
            urgent: false,
            faulted: false,
        }
    }

    fn theirs(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            ours: false,
            urgent: false,
            faulted: false,
        }
    }

    fn close_frame(&self) -> WsMessage {
        WsMessage::Close(Some(CloseFrame {
            code: CloseCode::from(self.code),
            reason: self.reason.clone().into(),
        }))
    }
}

/// Where a connection's events come from: the client's frames, and group
/// events (those held back while a call ran, then the mailbox's); and what
/// its events sent, waiting for their writes to be durable.
struct Inputs<S> {
    stream: S,
    mailbox: mpsc::Receiver<Event>,
    held: VecDeque<Event>,
    pipeline: Pipeline,
}

/// A connection's emissions waiting for their commits, in event order.
type Pipeline = VecDeque<Emission>;

/// Client messages a connection may have in the pipeline (handled, not yet
/// durable); past it, the client waits. A few commits' worth: enough to
/// keep a busy connection going while its writes commit, few enough that
/// what a connection has accepted stays milliseconds away from its readers.
const MAX_PIPELINE: usize = 16;

/// How long an ending connection waits for its last messages' commits, so
/// what it sent still reaches its groups.
const PIPELINE_DRAIN_WAIT: Duration = Duration::from_secs(5);

/// How long a connection waits for the node's pressure to ease before
/// looking again (kicks, pings and events are served meanwhile).
const PRESSURE_WAIT: Duration = Duration::from_millis(100);

impl Connection {
    /// A connection whose consumer accepted it.
    pub fn new(
        node: Arc<Node>,
        consumer: Arc<Consumer>,
        mut session: Session,
        kick: Kick,
        login: Option<&Login>,
        user_slot: Option<UserSlot>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let limits = node.limits();
        let rate = TokenBucket::new(limits.messages_per_second, limits.message_burst);
        let conn = session.conn();
        let (id, outbound) = (conn.id, conn.outbound.clone());
        let login = login.map(|login| LoginWatch {
            user_id: login.user_id.clone(),
            expires: Instant::now()
                + Duration::from_secs(login.expires.saturating_sub(crate::auth::unix_now())),
        });
        Self {
            node,
            consumer,
            session,
            kick,
            outbound,
            id,
            rate,
            login,
            user_slot,
            _permit: permit,
        }
    }

    /// Serves the connection until it ends, then tells the consumer.
    pub async fn run(
        mut self,
        upgrade: HyperWebsocket,
        outbound: crate::delivery::OutboundReceiver,
        mailbox: mpsc::Receiver<Event>,
    ) {
        let socket = match upgrade.await {
            Ok(socket) => socket,
            Err(err) => {
                let ending = Ending::theirs(close::ABNORMAL, format!("the upgrade failed: {err}"));
                self.finish(ending).await;
                return;
            }
        };
        let (sink, stream) = socket.split();
        let writer = tokio::spawn(write_loop(sink, outbound));
        let mut inputs = Inputs {
            stream,
            mailbox,
            held: VecDeque::new(),
            pipeline: Pipeline::new(),
        };
        let ending = self.serve(&mut inputs).await;
        // What it sent still goes out, once durable: its groups hear of it.
        self.drain_pipeline(&mut inputs.pipeline).await;

        if ending.ours {
            let frame = ending.close_frame();
            // A client too slow to drain its queue gets the close first.
            if ending.urgent || self.outbound.push(frame.clone()) != crate::delivery::Push::Queued {
                self.outbound.push_first_and_close(frame);
            }
        }
        self.outbound.close();
        // The layer stops delivering before the consumer hears of the end.
        self.session.conn().leave_all_groups();
        inputs.mailbox.close();
        let ours = ending.ours;
        self.finish(ending).await;
        drop(self.session);
        drop(self.outbound);
        let abort = writer.abort_handle();
        let sink = match tokio::time::timeout(WRITER_DRAIN_WAIT, writer).await {
            Ok(Ok(sink)) => sink,
            Ok(Err(_)) => None,
            Err(_) => {
                abort.abort();
                None
            }
        };
        if ours {
            linger(inputs.stream, sink).await;
        }
    }

    /// The event loop: one client message or event for the consumer at a
    /// time, in order, until something ends it. While a call runs, events
    /// whose frames are rendered once for everyone keep going out (see
    /// [`Connection::call_serving`]).
    async fn serve<S>(&mut self, inputs: &mut Inputs<S>) -> Ending
    where
        S: Stream<Item = Result<WsMessage, hyper_tungstenite::tungstenite::Error>> + Unpin,
    {
        let limits = self.node.limits();
        let idle_after = Duration::from_secs(self.consumer.config().sandbox.idle_evict_secs);
        let idle = tokio::time::sleep(idle_after);
        tokio::pin!(idle);
        let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
        let ping_every = Duration::from_millis(limits.ping_interval_ms.max(1));
        let pinging = limits.ping_interval_ms > 0;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let recheck_every = Duration::from_secs(self.node.config.auth.recheck_secs.max(1));
        let rechecking = self.node.config.auth.recheck_secs > 0 && self.login.is_some();
        let mut recheck = tokio::time::interval_at(Instant::now() + recheck_every, recheck_every);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let expires = self.login.as_ref().map(|login| login.expires);
        let mut last_heard = Instant::now();

        loop {
            if let Some((code, reason)) = self.session.conn().close_request.take() {
                return Ending::ours(code, reason);
            }
            let throttled = self.throttle();
            // Overload: the client waits (its TCP buffers fill), every reader
            // keeps being served.
            let pressured = throttled.is_none() && self.node.caps().pressure.active();
            let Inputs {
                stream,
                mailbox,
                held,
                pipeline,
            } = &mut *inputs;
            let reading = !pressured && pipeline.len() < MAX_PIPELINE;
            let ended = tokio::select! {
                biased;
                () = self.kick.kicked() => Some(self.kicked()),
                () = tokio::time::sleep_until(expires.unwrap_or_else(Instant::now)), if expires.is_some() => {
                    self.node.caps().metrics.logins_expired.inc();
                    Some(Ending::ours(close::LOGIN_EXPIRED, "the access token expired"))
                }
                () = tokio::time::sleep(throttled.unwrap_or_default()), if throttled.is_some() => continue,
                _ = self.node.caps().pressure.wait(PRESSURE_WAIT), if pressured => continue,
                _ = ping.tick(), if pinging => {
                    if last_heard.elapsed() > idle_timeout {
                        self.node.caps().metrics.idle_timeouts.inc();
                        Some(Ending::theirs(close::ABNORMAL, "no frame from the client within the idle timeout"))
                    } else {
                        // A client that does not read is handled by the send path.
                        let _ = self.outbound.push(WsMessage::Ping(Default::default()));
                        None
                    }
                }
                committed = front_committed(pipeline) => self.release_committed(pipeline, committed),
                _ = recheck.tick(), if rechecking => self.recheck(mailbox, held, pipeline).await,
                Some(event) = next_event(mailbox, held) => self.on_event(&event, mailbox, held, pipeline).await,
                frame = stream.next(), if throttled.is_none() && reading => {
                    last_heard = Instant::now();
                    self.on_frame(frame, mailbox, held, pipeline).await
                }
                () = &mut idle, if self.session.is_live() => {
                    self.session.evict();
                    None
                }
            };
            if let Some(ending) = ended {
                return ending;
            }
            self.session.evict_if_crowded();
            idle.as_mut().reset(Instant::now() + idle_after);
        }
    }

    /// How long to wait before reading the next message: the connection's
    /// own budget, then its user's, shared by all their connections.
    fn throttle(&mut self) -> Option<Duration> {
        let metrics = &self.node.caps().metrics;
        if let Some(wait) = self.rate.wait() {
            metrics.rate_limited.inc();
            return Some(wait);
        }
        let slot = self.user_slot.as_ref()?;
        let wait = slot.entry().budget.lock().expect("not poisoned").wait();
        if wait.is_some() {
            metrics.user_rate_limited.inc();
        }
        wait
    }

    fn kicked(&self) -> Ending {
        let code = self.kick.code();
        let slow = code == close::SLOW_CLIENT;
        let mut ending = Ending::ours(
            code,
            if slow {
                "client too slow"
            } else {
                "server shutting down"
            },
        );
        ending.urgent = slow;
        ending
    }

    async fn on_frame(
        &mut self,
        frame: Option<Result<WsMessage, hyper_tungstenite::tungstenite::Error>>,
        mailbox: &mut mpsc::Receiver<Event>,
        held: &mut VecDeque<Event>,
        pipeline: &mut Pipeline,
    ) -> Option<Ending> {
        let message = match frame {
            Some(Ok(WsMessage::Text(text))) => Message::Text(text.as_str().to_owned()),
            Some(Ok(WsMessage::Binary(bytes))) => Message::Binary(bytes.to_vec()),
            Some(Ok(WsMessage::Close(frame))) => {
                let code = frame
                    .as_ref()
                    .map_or(close::NO_STATUS, |frame| u16::from(frame.code));
                return Some(Ending::theirs(code, "the client closed"));
            }
            Some(Ok(_ping_pong_or_raw)) => return None,
            Some(Err(err)) => return Some(read_error_ending(&err)),
            None => return Some(Ending::theirs(close::ABNORMAL, "the connection dropped")),
        };
        self.node.caps().metrics.messages_received.inc();
        self.rate.take();
        if let Some(slot) = &self.user_slot {
            slot.entry().budget.lock().expect("not poisoned").take();
        }
        self.call_serving(Call::Receive(&message), mailbox, held, pipeline)
            .await
    }

    async fn on_event(
        &mut self,
        event: &Event,
        mailbox: &mut mpsc::Receiver<Event>,
        held: &mut VecDeque<Event>,
        pipeline: &mut Pipeline,
    ) -> Option<Ending> {
        self.node.caps().metrics.events_handled.inc();
        // Not `&self` across the await: the session is not `Sync`.
        let (node, consumer, outbound, kick) =
            (&self.node, &self.consumer, &self.outbound, &self.kick);
        if deliver_rendered(node, consumer, outbound, self.id, kick, event).await {
            return None;
        }
        self.call_serving(Call::Event(&event.json), mailbox, held, pipeline)
            .await
    }

    /// Checks the login again: a user removed or made inactive since the
    /// handshake is closed with 4401; otherwise a 0.2 consumer hears
    /// `host.recheck` and checks its own rules.
    async fn recheck(
        &mut self,
        mailbox: &mut mpsc::Receiver<Event>,
        held: &mut VecDeque<Event>,
        pipeline: &mut Pipeline,
    ) -> Option<Ending> {
        let user_id = self.login.as_ref()?.user_id.clone();
        match self.node.auth.look_up(&self.node.caps().db, user_id).await {
            Ok(_) => {}
            Err(AuthError::UnknownUser) => {
                self.node.caps().metrics.logins_expired.inc();
                return Some(Ending::ours(
                    close::LOGIN_EXPIRED,
                    "the user is no longer active",
                ));
            }
            Err(err) => {
                // The database being unavailable is not the user's doing.
                tracing::warn!(connection = self.id, error = %err, "re-checking a login failed; trying again later");
                return None;
            }
        }
        if !self.session.hears_host_events() {
            return None;
        }
        self.call_serving(Call::Event(RECHECK_EVENT), mailbox, held, pipeline)
            .await
    }

    /// Runs a call on the consumer, and meanwhile keeps delivering group
    /// events whose frames are rendered once for everyone: a connection's
    /// deliveries never wait behind its own call (waiting, say, for its
    /// message to be committed). The first event that needs the consumer's
    /// own handler is held back, with everything after it, until the call
    /// is done: events are handled in order.
    async fn call_serving(
        &mut self,
        call: Call<'_>,
        mailbox: &mut mpsc::Receiver<Event>,
        held: &mut VecDeque<Event>,
        pipeline: &mut Pipeline,
    ) -> Option<Ending> {
        let Self {
            session,
            node,
            consumer,
            outbound,
            id,
            kick,
            ..
        } = self;
        let release = Release {
            caps: node.caps(),
            outbound,
            id: *id,
            kick,
        };
        let mut failed_commit = None;
        let result = {
            let call = session.call(call);
            tokio::pin!(call);
            loop {
                tokio::select! {
                    biased;
                    result = &mut call => break result,
                    // Earlier messages become durable meanwhile: out they go.
                    committed = front_committed(pipeline) => {
                        if let Err(err) = release_front(pipeline, committed, &release) {
                            failed_commit = Some(err);
                        }
                    }
                    Some(event) = mailbox.recv(), if held.is_empty() => {
                        node.caps().metrics.events_handled.inc();
                        if !deliver_rendered(node, consumer, outbound, *id, kick, &event).await {
                            held.push_back(event);
                        }
                    }
                }
            }
        };
        // What the event sent waits for its writes, behind earlier events'.
        let emission = self.session.conn().take_emission();
        if !emission.waits() && pipeline.is_empty() {
            emission.release(&self.session.conn().release_to());
        } else {
            pipeline.push_back(emission);
        }
        if let Some(err) = failed_commit {
            return Some(self.not_saved(&err));
        }
        let fault = result.err()?;
        self.report(&fault);
        let mut ending = Ending::ours(
            fault.close_code(),
            match fault {
                Fault::Busy => "server busy; retry later",
                _ => "consumer error",
            },
        );
        // A consumer that failed gets no `disconnect`; one that found no
        // instance free (the node is busy, not the consumer) does, if it can.
        ending.faulted = !matches!(fault, Fault::Busy);
        Some(ending)
    }

    fn report(&mut self, fault: &Fault) {
        super::count_fault(&self.node.caps().metrics, fault);
        let version = self
            .session
            .version()
            .map(|version| version.short().to_string())
            .unwrap_or_else(|| self.consumer.current().short().to_string());
        tracing::warn!(
            consumer = self.consumer.name(),
            version = %version,
            connection = self.id,
            code = fault.close_code(),
            %fault,
            "consumer fault; closing the connection"
        );
    }

    /// Tells the consumer the connection ended, then counts and logs it.
    async fn finish(&mut self, ending: Ending) {
        if !ending.faulted {
            self.disconnect(ending.code).await;
            // What `disconnect` sent its groups goes out once durable.
            let mut emission = self.session.conn().take_emission();
            if tokio::time::timeout(PIPELINE_DRAIN_WAIT, emission.committed())
                .await
                .is_ok_and(|committed| committed.is_ok())
            {
                emission.release(&self.session.conn().release_to());
            }
        }
        // Whatever `disconnect` joined, the connection is in no group now.
        self.session.conn().leave_all_groups();
        let metrics = &self.node.caps().metrics;
        metrics.connections_open.dec();
        metrics.closes.inc(&ending.code.to_string());
        tracing::info!(
            consumer = self.consumer.name(),
            connection = self.id,
            code = ending.code,
            reason = %ending.reason,
            by = if ending.ours { "server" } else { "client" },
            "connection closed"
        );
    }
}

impl Connection {
    /// Runs the consumer's `disconnect`. When no instance is free the node
    /// is busy, not the consumer at fault: it waits for one, a little, so
    /// the consumer still hears of the end.
    async fn disconnect(&mut self, code: u16) {
        let mut attempts = 0;
        loop {
            match self.session.call(Call::Disconnect(code)).await {
                Ok(()) => return,
                Err(Fault::Busy) if attempts < DISCONNECT_BUSY_RETRIES => {
                    attempts += 1;
                    tokio::time::sleep(DISCONNECT_BUSY_WAIT).await;
                }
                Err(fault) => return self.report(&fault),
            }
        }
    }
}

/// How often, and how long between, a `disconnect` that found no instance
/// free is tried again.
const DISCONNECT_BUSY_RETRIES: u32 = 40;
const DISCONNECT_BUSY_WAIT: Duration = Duration::from_millis(50);

impl Connection {
    /// Releases the pipeline's first emission, now durable (or drops it if
    /// its commit failed, and ends the connection: its message was not saved).
    fn release_committed(
        &mut self,
        pipeline: &mut Pipeline,
        committed: Result<(), crate::db::DbError>,
    ) -> Option<Ending> {
        let release = self.session.conn().release_to();
        match release_front(pipeline, committed, &release) {
            Ok(()) => None,
            Err(err) => Some(self.not_saved(&err)),
        }
    }

    fn not_saved(&mut self, err: &crate::db::DbError) -> Ending {
        tracing::error!(connection = self.id, error = %err, "a write was refused at commit; nothing it sent was delivered");
        let mut ending = Ending::ours(close::INTERNAL_ERROR, "a message could not be saved");
        ending.faulted = false;
        ending
    }

    /// Waits (a bounded time) for the pipeline's commits and releases what
    /// they held, in order.
    async fn drain_pipeline(&mut self, pipeline: &mut Pipeline) {
        let drained = tokio::time::timeout(PIPELINE_DRAIN_WAIT, async {
            while !pipeline.is_empty() {
                let committed = front_committed(pipeline).await;
                let release = self.session.conn().release_to();
                if let Err(err) = release_front(pipeline, committed, &release) {
                    tracing::error!(connection = self.id, error = %err, "a write was refused at commit; nothing it sent was delivered");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connection = self.id,
                held = pipeline.len(),
                "the last messages were not durable in time; what they sent is dropped"
            );
        }
    }
}

/// Waits until the first emission of the pipeline is durable (forever when
/// the pipeline is empty: a `select!` branch that never fires).
async fn front_committed(pipeline: &mut Pipeline) -> Result<(), crate::db::DbError> {
    match pipeline.front_mut() {
        Some(front) => front.committed().await,
        None => std::future::pending().await,
    }
}

/// Releases the first emission after its commit; a failed commit drops it.
fn release_front(
    pipeline: &mut Pipeline,
    committed: Result<(), crate::db::DbError>,
    to: &Release<'_>,
) -> Result<(), crate::db::DbError> {
    let front = pipeline.pop_front().expect("a committed front");
    committed?;
    front.release(to);
    Ok(())
}

/// The next group event: one held back while a call ran, else the mailbox's.
async fn next_event(
    mailbox: &mut mpsc::Receiver<Event>,
    held: &mut VecDeque<Event>,
) -> Option<Event> {
    match held.pop_front() {
        Some(event) => Some(event),
        None => mailbox.recv().await,
    }
}

/// Sends a pure event's frames, rendered once for every member of this
/// consumer's version; `false` when this member must run its own handler.
async fn deliver_rendered(
    node: &Node,
    consumer: &Arc<Consumer>,
    outbound: &crate::runtime::conn::Outbound,
    id: u64,
    kick: &Kick,
    event: &Event,
) -> bool {
    let caps = node.caps();
    let Some(frames) = render::rendered(caps, consumer, event).await else {
        return false;
    };
    caps.metrics.rendered_deliveries.inc();
    for frame in frames {
        if kick.is_kicked()
            || !crate::runtime::conn::push_to(outbound, frame.clone(), id, kick, &caps.metrics)
        {
            break;
        }
    }
    true
}

/// After our close frame: gives the client a moment to answer with its own.
/// When the stream cannot be read as frames any more (a message over the
/// size limit, a protocol error), bytes it sent are still unread, and
/// closing the socket now would reset the connection: the client could lose
/// our close frame (and its code) before reading it. So the socket is shut
/// for writing and its input read and dropped until the client closes (or
/// a bounded time or amount passes).
async fn linger(
    mut stream: futures_util::stream::SplitStream<hyper_tungstenite::HyperWebsocketStream>,
    sink: Option<
        futures_util::stream::SplitSink<hyper_tungstenite::HyperWebsocketStream, WsMessage>,
    >,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + CLOSE_HANDSHAKE_WAIT;
    let answered = tokio::time::timeout_at(deadline, async {
        loop {
            match stream.next().await {
                Some(Ok(frame)) if frame.is_close() => return true,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return false,
            }
        }
    })
    .await;
    if !matches!(answered, Ok(false)) {
        // Answered, or the client took too long: nothing more to do.
        return;
    }
    let Some(Ok(socket)) = sink.map(|sink| stream.reunite(sink)) else {
        return;
    };
    let mut io = socket.into_inner();
    let _ = tokio::time::timeout_at(deadline, async {
        if io.shutdown().await.is_err() {
            return;
        }
        let mut scratch = vec![0u8; 16 * 1024];
        let mut drained = 0usize;
        while drained < LINGER_MAX_BYTES {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(read) => drained += read,
            }
        }
    })
    .await;
}

/// What [`linger`] reads and drops at most before giving up on a client.
const LINGER_MAX_BYTES: usize = 8 * 1024 * 1024;

fn read_error_ending(err: &hyper_tungstenite::tungstenite::Error) -> Ending {
    use hyper_tungstenite::tungstenite::Error;
    use hyper_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
    match err {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => {
            Ending::ours(close::TOO_BIG, "message too big")
        }
        Error::Utf8(_) => Ending::ours(close::INVALID_PAYLOAD, "invalid UTF-8 in a text message"),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            Ending::theirs(close::ABNORMAL, "the connection was reset")
        }
        Error::Protocol(_) => Ending::ours(close::PROTOCOL_ERROR, "protocol error"),
        other => Ending::theirs(close::ABNORMAL, format!("reading failed: {other}")),
    }
}
