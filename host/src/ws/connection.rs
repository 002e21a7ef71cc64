//! One accepted connection: the loop that reads frames and group events and
//! hands them to the consumer one at a time, in order, and the way it ends.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use hyper_tungstenite::HyperWebsocket;
use hyper_tungstenite::tungstenite::Message as WsMessage;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;

use super::rate::TokenBucket;
use super::writer::write_loop;
use crate::auth::{AuthError, Login};
use crate::close;
use crate::db::Value;
use crate::layer::{Event, Kick};
use crate::node::{Node, UserSlot};
use crate::runtime::bindings::types::Message;
use crate::runtime::conn::Outbound;
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

/// Where a connection's events come from.
struct Inputs<S> {
    stream: S,
    mailbox: mpsc::Receiver<Event>,
}

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
        let limits = &node.config.limits;
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
        outbound: mpsc::Receiver<WsMessage>,
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
        let (urgent_tx, urgent_rx) = oneshot::channel();
        let writer = tokio::spawn(write_loop(sink, outbound, urgent_rx));
        let mut inputs = Inputs { stream, mailbox };
        let ending = self.serve(&mut inputs).await;

        if ending.ours {
            let frame = ending.close_frame();
            if ending.urgent {
                let _ = urgent_tx.send(frame);
            } else if let Err(mpsc::error::TrySendError::Full(frame)) =
                self.outbound.try_send(frame)
            {
                let _ = urgent_tx.send(frame);
            }
        }
        // The layer stops delivering before the consumer hears of the end.
        self.session.conn().leave_all_groups();
        inputs.mailbox.close();
        let ours = ending.ours;
        self.finish(ending).await;
        // Ours sent: give the client a moment to answer with its close frame.
        if ours {
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_WAIT, async {
                while let Some(Ok(frame)) = inputs.stream.next().await {
                    if frame.is_close() {
                        break;
                    }
                }
            })
            .await;
        }
        drop(self.session);
        drop(self.outbound);
        let abort = writer.abort_handle();
        if tokio::time::timeout(WRITER_DRAIN_WAIT, writer)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    /// The event loop: one event at a time, in order, until something ends it.
    async fn serve<S>(&mut self, inputs: &mut Inputs<S>) -> Ending
    where
        S: Stream<Item = Result<WsMessage, hyper_tungstenite::tungstenite::Error>> + Unpin,
    {
        let limits = &self.node.config.limits;
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
            let ended = tokio::select! {
                biased;
                () = self.kick.kicked() => Some(self.kicked()),
                () = tokio::time::sleep_until(expires.unwrap_or_else(Instant::now)), if expires.is_some() => {
                    self.node.caps().metrics.logins_expired.inc();
                    Some(Ending::ours(close::LOGIN_EXPIRED, "the access token expired"))
                }
                () = tokio::time::sleep(throttled.unwrap_or_default()), if throttled.is_some() => continue,
                _ = ping.tick(), if pinging => {
                    if last_heard.elapsed() > idle_timeout {
                        self.node.caps().metrics.idle_timeouts.inc();
                        Some(Ending::theirs(close::ABNORMAL, "no frame from the client within the idle timeout"))
                    } else {
                        // A full queue means a slow client, which the send path handles.
                        let _ = self.outbound.try_send(WsMessage::Ping(Default::default()));
                        None
                    }
                }
                _ = recheck.tick(), if rechecking => self.recheck().await,
                frame = inputs.stream.next(), if throttled.is_none() => {
                    last_heard = Instant::now();
                    self.on_frame(frame).await
                }
                Some(event) = inputs.mailbox.recv() => self.on_event(&event).await,
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
    ) -> Option<Ending> {
        let message = match frame {
            Some(Ok(WsMessage::Text(text))) => Message::Text(text.as_str().to_owned()),
            Some(Ok(WsMessage::Binary(bytes))) => Message::Binary(bytes.to_vec()),
            Some(Ok(WsMessage::Close(frame))) => {
                let code = frame.as_ref().map_or(close::NO_STATUS, |frame| u16::from(frame.code));
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
        self.call(Call::Receive(&message)).await
    }

    async fn on_event(&mut self, event: &Event) -> Option<Ending> {
        let caps = self.node.caps();
        caps.metrics.events_handled.inc();
        // A pure handler's frames, rendered once for every member.
        if let Some(frames) = render::rendered(caps, &self.consumer, event).await {
            caps.metrics.rendered_deliveries.inc();
            let conn = self.session.conn();
            for frame in frames {
                if !conn.push(frame.clone()) {
                    break;
                }
            }
            return None;
        }
        self.call(Call::Event(&event.json)).await
    }

    /// Checks the login again: a user removed or made inactive since the
    /// handshake is closed with 4401; otherwise a 0.2 consumer hears
    /// `host.recheck` and checks its own rules.
    async fn recheck(&mut self) -> Option<Ending> {
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
        self.call(Call::Event(RECHECK_EVENT)).await
    }

    async fn call(&mut self, call: Call<'_>) -> Option<Ending> {
        let fault = self.session.call(call).await.err()?;
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
