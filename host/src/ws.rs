//! WebSocket connections: the handshake, then one task per socket.
//!
//! The handshake is held open while the consumer's `connect` runs, as
//! daphne does: the client gets `101 Switching Protocols` only once the
//! consumer has accepted, and `403` if it refused (closed, or returned
//! without accepting). Then a connection task reads frames and group events
//! and hands them to the consumer one at a time, in order; a writer task
//! drains the bounded send queue into the socket, batching what is queued
//! into one flush.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_tungstenite::HyperWebsocket;
use hyper_tungstenite::tungstenite::Message as WsMessage;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use crate::http::plain;
use crate::layer::{CLOSE_SLOW_CLIENT, Event, Kick, Mailbox};
use crate::routing::RouteMatch;
use crate::runtime::bindings::consumer_host::consumer::types::{Message, Scope, User as WitUser};
use crate::runtime::host::{ConnState, Handshake};
use crate::runtime::session::{Call, Session};
use crate::runtime::{Consumer, Fault, render};
use crate::services::{Services, UserSlot};

/// Close code for a consumer fault (trap, deadline, memory): RFC 6455's
/// "internal error".
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;
/// Close code when the node has no instance slot free: "try again later".
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Close code for a message over `max_message_bytes`: "message too big".
pub const CLOSE_TOO_BIG: u16 = 1009;
/// How long to wait for the client's close frame after sending ours.
const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(2);
/// How long the writer may take to flush before the socket is dropped.
const WRITER_DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Handles an upgrade request on a routed path.
pub async fn handshake(
    services: Arc<Services>,
    mut request: Request<Incoming>,
    route: RouteMatch<'_>,
    path: String,
) -> Response<Full<Bytes>> {
    let Some(consumer) = services.runtime.consumer(route.consumer).cloned() else {
        tracing::error!(
            consumer = route.consumer,
            "route names a consumer that is not loaded"
        );
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "consumer unavailable\n");
    };
    // Malformed handshakes are answered before any work is done for them.
    let config = websocket_config(&services);
    let (response, upgrade) = match hyper_tungstenite::upgrade(&mut request, Some(config)) {
        Ok(upgrade) => upgrade,
        Err(err) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("invalid WebSocket handshake: {err}\n"),
            );
        }
    };
    let limits = &services.config.limits;
    if let Some(origin) = request.headers().get(hyper::header::ORIGIN)
        && !origin
            .to_str()
            .is_ok_and(|origin| limits.origin_allowed(origin))
    {
        services.metrics.handshakes_bad_origin.inc();
        return plain(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let Ok(permit) = services.connection_slots.clone().try_acquire_owned() else {
        services.metrics.handshakes_over_capacity.inc();
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "server at connection capacity; retry later\n",
        );
    };

    let auth_config = &services.config.auth;
    let mut token = None;
    let mut query = Vec::new();
    if let Some(raw) = request.uri().query() {
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            if key == auth_config.query_param.as_str() {
                token.get_or_insert_with(|| value.into_owned());
            } else {
                query.push((key.into_owned(), value.into_owned()));
            }
        }
    }
    let mut subprotocols: Vec<String> = request
        .headers()
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|header| header.to_str().ok())
        .flat_map(|header| header.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(String::from)
        .collect();
    let mut token_marker = None;
    if let Some(marker) = auth_config.subprotocol.as_deref()
        && let Some(at) = subprotocols.iter().position(|entry| entry == marker)
    {
        // The marker, then the token: both are the host's, not the consumer's.
        subprotocols.remove(at);
        if at < subprotocols.len() {
            token.get_or_insert(subprotocols.remove(at));
        }
        token_marker = Some(marker.to_string());
    }

    let user = match token {
        None => {
            services.metrics.auth_failure("missing");
            None
        }
        Some(token) => match services.auth.authenticate(&services.db, &token).await {
            Ok(user) => Some(user),
            Err(err) => {
                // As the reference middleware does: a token that is not a
                // login makes an anonymous connection; the consumer decides.
                services.metrics.auth_failure(err.label());
                tracing::debug!(reason = %err, "token refused; connecting anonymously");
                None
            }
        },
    };
    let user_slot = match &user {
        Some(user) => match services.user_slot(&user.id) {
            Some(slot) => Some(slot),
            None => {
                services.metrics.handshakes_over_user_limit.inc();
                return plain(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connections for this user\n",
                );
            }
        },
        None => None,
    };

    let id = services.next_connection_id();
    let scope = Scope {
        connection_id: id.to_string(),
        path,
        url_kwargs: route.kwargs,
        query,
        user: user.map(|user| WitUser {
            id: user.id,
            name: user.name,
            email: user.email,
        }),
        subprotocols: subprotocols.clone(),
    };
    let kick = Kick::child_of(&services.shutdown);
    let (outbound, outbound_rx) = mpsc::channel(services.config.limits.send_queue);
    let (mailbox, mailbox_rx) =
        Mailbox::new(id, services.config.layer.mailbox_capacity, kick.clone());
    let conn = ConnState::new(
        id,
        consumer.clone(),
        services.clone(),
        scope,
        subprotocols,
        outbound,
        mailbox,
        kick.clone(),
    );
    let mut session = Session::new(services.runtime.engine().clone(), consumer.clone(), conn);

    let connected = tokio::time::timeout(
        services.config.limits.handshake_timeout(),
        session.call(Call::Connect),
    )
    .await;
    match connected {
        Err(_elapsed) => {
            tracing::warn!(
                consumer = consumer.name(),
                connection = id,
                "connect took longer than the handshake timeout"
            );
            session.conn().leave_all_groups();
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the consumer did not answer in time\n",
            );
        }
        Ok(Err(Fault::Busy)) => {
            services.metrics.handshakes_over_capacity.inc();
            session.conn().leave_all_groups();
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "server busy; retry later\n",
            );
        }
        Ok(Err(fault)) => {
            report_fault(&services, &consumer, &session, id, &fault);
            session.conn().leave_all_groups();
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "the consumer failed\n");
        }
        Ok(Ok(())) => {}
    }
    let subprotocol = match session.conn().handshake.clone() {
        Handshake::Accepted(subprotocol) => subprotocol,
        Handshake::Pending | Handshake::Refused => {
            services.metrics.handshakes_refused.inc();
            session.conn().leave_all_groups();
            return plain(StatusCode::FORBIDDEN, "forbidden\n");
        }
    };

    let mut response = response;
    if let Some(subprotocol) = subprotocol.or(token_marker)
        && let Ok(value) = hyper::header::HeaderValue::from_str(&subprotocol)
    {
        response
            .headers_mut()
            .insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    session.evict_if_crowded();
    services.metrics.connections_accepted.inc();
    services.metrics.connections_open.inc();
    let connection = Connection {
        services: services.clone(),
        consumer,
        session,
        kick,
        id,
        _permit: permit,
        _user_slot: user_slot,
    };
    services
        .tasks
        .spawn(connection.run(upgrade, outbound_rx, mailbox_rx));
    response
}

fn websocket_config(services: &Services) -> WebSocketConfig {
    let limits = &services.config.limits;
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
        // Chat messages are small: a modest read buffer keeps an idle
        // connection cheap. Frames are written into a buffer that the writer
        // flushes once for everything queued, one syscall for many frames.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(limits.max_message_bytes.saturating_mul(4).max(256 * 1024))
}

fn report_fault(
    services: &Services,
    consumer: &Consumer,
    session: &Session,
    id: u64,
    fault: &Fault,
) {
    match fault {
        Fault::Deadline(_) => services.metrics.guest_deadline_overruns.inc(),
        _ => services.metrics.guest_traps.inc(),
    }
    let version = session
        .version()
        .map(|version| version.short().to_string())
        .unwrap_or_else(|| consumer.current().short().to_string());
    tracing::warn!(
        consumer = consumer.name(),
        version = %version,
        connection = id,
        %fault,
        "consumer fault; closing the connection with 1011"
    );
}

/// One accepted connection.
struct Connection {
    services: Arc<Services>,
    consumer: Arc<Consumer>,
    session: Session,
    kick: Kick,
    id: u64,
    _permit: OwnedSemaphorePermit,
    _user_slot: Option<UserSlot>,
}

/// How a connection ended, for its `disconnect`.
struct Ending {
    /// The code the consumer's `disconnect` hears.
    code: u16,
    /// A close frame for us to send, if we are the one closing.
    close: Option<CloseFrame>,
    /// Send the close frame ahead of anything still queued (slow client).
    urgent: bool,
    /// The consumer faulted: no `disconnect` for it.
    faulted: bool,
}

impl Ending {
    fn ours(code: u16, reason: &str) -> Self {
        Self {
            code,
            close: Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.to_string().into(),
            }),
            urgent: false,
            faulted: false,
        }
    }

    fn theirs(code: u16) -> Self {
        Self {
            code,
            close: None,
            urgent: false,
            faulted: false,
        }
    }
}

impl Connection {
    async fn run(
        mut self,
        upgrade: HyperWebsocket,
        outbound_rx: mpsc::Receiver<WsMessage>,
        mut mailbox_rx: mpsc::Receiver<Event>,
    ) {
        let socket = match upgrade.await {
            Ok(socket) => socket,
            Err(err) => {
                tracing::debug!(connection = self.id, error = %err, "upgrade failed");
                self.finish(Ending::theirs(1006)).await;
                return;
            }
        };
        let (sink, mut stream) = socket.split();
        let (urgent_tx, urgent_rx) = oneshot::channel();
        let writer = tokio::spawn(write_loop(sink, outbound_rx, urgent_rx));

        let idle_after = Duration::from_secs(self.consumer.config().sandbox.idle_evict_secs);
        let idle = tokio::time::sleep(idle_after);
        tokio::pin!(idle);
        let limits = &self.services.config.limits;
        let mut rate = RateLimit::new(limits.messages_per_second, limits.message_burst);
        let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
        let ping_every = Duration::from_millis(limits.ping_interval_ms.max(1));
        let pinging = limits.ping_interval_ms > 0;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = tokio::time::Instant::now();

        let ending = loop {
            if let Some((code, reason)) = self.session.conn().close_request.take() {
                break Ending::ours(code, &reason);
            }
            let throttled = rate.wait();
            tokio::select! {
                biased;
                () = self.kick.kicked() => {
                    let code = self.kick.code();
                    let mut ending = Ending::ours(code, if code == CLOSE_SLOW_CLIENT { "client too slow" } else { "server shutting down" });
                    ending.urgent = code == CLOSE_SLOW_CLIENT;
                    break ending;
                }
                () = tokio::time::sleep(throttled.unwrap_or_default()), if throttled.is_some() => {
                    self.services.metrics.rate_limited.inc();
                    continue;
                }
                _ = ping.tick(), if pinging => {
                    if last_heard.elapsed() > idle_timeout {
                        self.services.metrics.idle_timeouts.inc();
                        tracing::debug!(connection = self.id, "no frame from the client within the idle timeout; dropping it");
                        break Ending::theirs(1006);
                    }
                    // A full queue means a slow client, which the send path handles.
                    let _ = self.session.conn().outbound.try_send(WsMessage::Ping(Default::default()));
                    continue;
                }
                frame = stream.next(), if throttled.is_none() => {
                    last_heard = tokio::time::Instant::now();
                    let message = match frame {
                        Some(Ok(WsMessage::Text(text))) => Message::Text(text.as_str().to_owned()),
                        Some(Ok(WsMessage::Binary(bytes))) => Message::Binary(bytes.to_vec()),
                        Some(Ok(WsMessage::Close(frame))) => {
                            break Ending::theirs(frame.map_or(1005, |frame| u16::from(frame.code)));
                        }
                        Some(Ok(_ping_pong_or_raw)) => continue,
                        Some(Err(err)) => break read_error_ending(&err),
                        None => break Ending::theirs(1006),
                    };
                    self.services.metrics.messages_received.inc();
                    rate.take();
                    if let Err(fault) = self.session.call(Call::Receive(&message)).await {
                        break self.fault(fault);
                    }
                }
                Some(event) = mailbox_rx.recv() => {
                    self.services.metrics.events_handled.inc();
                    // A pure handler's frames, rendered once for every member.
                    if let Some(frames) = render::rendered(&self.services, &self.consumer, &event).await {
                        let conn = self.session.conn();
                        conn.services.metrics.rendered_deliveries.inc();
                        for frame in frames {
                            if conn.push(frame.clone()).is_err() {
                                break;
                            }
                        }
                        continue;
                    }
                    if let Err(fault) = self.session.call(Call::Event(&event.json)).await {
                        break self.fault(fault);
                    }
                }
                () = &mut idle, if self.session.is_live() => {
                    self.session.evict();
                }
            }
            self.session.evict_if_crowded();
            idle.as_mut()
                .reset(tokio::time::Instant::now() + idle_after);
        };

        let sent_close = ending.close.is_some();
        if let Some(frame) = ending.close.clone() {
            let message = WsMessage::Close(Some(frame));
            if ending.urgent {
                let _ = urgent_tx.send(message);
            } else if let Err(mpsc::error::TrySendError::Full(message)) =
                self.session.conn().outbound.try_send(message)
            {
                let _ = urgent_tx.send(message);
            }
        }
        // The layer stops delivering before the consumer hears of the end.
        self.session.conn().leave_all_groups();
        mailbox_rx.close();
        self.finish(ending).await;
        // Ours sent: give the client a moment to answer with its close frame.
        if sent_close {
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_WAIT, async {
                while let Some(Ok(frame)) = stream.next().await {
                    if frame.is_close() {
                        break;
                    }
                }
            })
            .await;
        }
        drop(self.session);
        let abort = writer.abort_handle();
        if tokio::time::timeout(WRITER_DRAIN_WAIT, writer)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    fn report(&self, fault: &Fault) {
        report_fault(
            &self.services,
            &self.consumer,
            &self.session,
            self.id,
            fault,
        );
    }

    fn fault(&mut self, fault: Fault) -> Ending {
        self.report(&fault);
        let mut ending = Ending::ours(CLOSE_INTERNAL_ERROR, "consumer error");
        ending.faulted = true;
        ending
    }

    /// Tells the consumer the connection ended, then counts it gone.
    async fn finish(&mut self, ending: Ending) {
        if !ending.faulted
            && let Err(fault) = self.session.call(Call::Disconnect(ending.code)).await
        {
            self.report(&fault);
        }
        // Whatever `disconnect` joined, the connection is in no group now.
        self.session.conn().leave_all_groups();
        self.services.metrics.connections_open.dec();
    }
}

/// A token bucket: `per_second` messages on average, `burst` at once.
struct RateLimit {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled: std::time::Instant,
}

impl RateLimit {
    fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second,
            burst,
            tokens: burst,
            refilled: std::time::Instant::now(),
        }
    }

    /// How long to wait before the next message may be read; `None` when
    /// one may be read now (or there is no limit).
    fn wait(&mut self) -> Option<Duration> {
        if self.per_second <= 0.0 {
            return None;
        }
        let now = std::time::Instant::now();
        self.tokens = (self.tokens
            + now.duration_since(self.refilled).as_secs_f64() * self.per_second)
            .min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            None
        } else {
            Some(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }

    /// One message was read.
    fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

fn read_error_ending(err: &hyper_tungstenite::tungstenite::Error) -> Ending {
    use hyper_tungstenite::tungstenite::Error;
    use hyper_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
    match err {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => {
            Ending::ours(CLOSE_TOO_BIG, "message too big")
        }
        Error::Utf8(_) => Ending::ours(1007, "invalid UTF-8 in a text message"),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::theirs(1006),
        Error::Protocol(_) => Ending::ours(1002, "protocol error"),
        _ => Ending::theirs(1006),
    }
}

async fn write_loop<S>(
    mut sink: S,
    mut outbound: mpsc::Receiver<WsMessage>,
    mut urgent: oneshot::Receiver<WsMessage>,
) where
    S: futures_util::Sink<WsMessage> + Unpin,
{
    loop {
        tokio::select! {
            biased;
            Ok(close) = &mut urgent => {
                let _ = sink.send(close).await;
                return;
            }
            message = outbound.recv() => {
                let Some(message) = message else { return };
                let mut closing = message.is_close();
                if sink.feed(message).await.is_err() {
                    return;
                }
                // Everything already queued goes out with one flush.
                while !closing && let Ok(message) = outbound.try_recv() {
                    closing = message.is_close();
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() || closing {
                    return;
                }
            }
        }
    }
}
