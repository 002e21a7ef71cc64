//! The WebSocket handshake, in named stages.
//!
//! 1. [`upgrade`]: the request is a well-formed WebSocket handshake.
//! 2. [`Credentials::read`]: the token (query string or subprotocol), the
//!    rest of the query, the offered subprotocols.
//! 3. [`admit`]: the origin is allowed, the node has room, the token is
//!    checked (a token that is not a login makes an anonymous connection,
//!    as the reference middleware does), the user has room.
//! 4. [`connect`]: the consumer's `connect` runs while the handshake is held
//!    open, as daphne does; it must accept within the handshake timeout.
//!
//! Each stage that refuses says why with a [`Refusal`], which knows its HTTP
//! response, its counter and its log line. Groups joined by a `connect`
//! that does not end in an accepted connection are left when its state is
//! dropped, whichever way that happens.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_tungstenite::HyperWebsocket;
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::delivery::OutboundReceiver;

use crate::auth::Login;
use crate::layer::{Kick, Mailbox};
use crate::node::{Node, UserSlot};
use crate::response::{HttpResponse, Rejection};
use crate::routing::RouteMatch;
use crate::runtime::bindings::types::{Scope, User as WitUser};
use crate::runtime::conn::{ConnState, Handshake, Identity, Pipes};
use crate::runtime::session::{Call, Session};
use crate::runtime::{Consumer, Fault};

/// Why a handshake was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The route names a consumer that is not loaded (a configuration error).
    #[error("the route's consumer is not loaded")]
    ConsumerMissing,
    /// Not a well-formed WebSocket handshake.
    #[error("invalid WebSocket handshake: {0}")]
    Malformed(String),
    /// A browser origin not in `allowed_origins`.
    #[error("origin not allowed")]
    Origin,
    /// The node is at `max_connections`.
    #[error("server at connection capacity")]
    NodeFull,
    /// The user is at `max_connections_per_user`.
    #[error("too many connections for this user")]
    UserFull,
    /// `connect` did not answer within the handshake timeout.
    #[error("the consumer did not answer in time")]
    TimedOut,
    /// No instance slot was free for `connect`.
    #[error("no consumer instance free")]
    Busy,
    /// The consumer failed in `connect`.
    #[error("the consumer failed: {0}")]
    Failed(Fault),
    /// The consumer refused (closed, or did not accept).
    #[error("refused by the consumer")]
    Refused,
}

impl Rejection for Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::ConsumerMissing | Refusal::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
            Refusal::Origin | Refusal::Refused => StatusCode::FORBIDDEN,
            Refusal::UserFull => StatusCode::TOO_MANY_REQUESTS,
            Refusal::NodeFull | Refusal::TimedOut | Refusal::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn message(&self) -> String {
        // What the client may know: never a fault's details.
        match self {
            Refusal::ConsumerMissing => "consumer unavailable\n".into(),
            Refusal::Malformed(why) => format!("invalid WebSocket handshake: {why}\n"),
            Refusal::Origin => "origin not allowed\n".into(),
            Refusal::NodeFull => "server at connection capacity; retry later\n".into(),
            Refusal::UserFull => "too many connections for this user\n".into(),
            Refusal::TimedOut => "the consumer did not answer in time; retry later\n".into(),
            Refusal::Busy => "server busy; retry later\n".into(),
            Refusal::Failed(_) => "the consumer failed\n".into(),
            Refusal::Refused => "forbidden\n".into(),
        }
    }
}

impl Refusal {
    /// Counts and logs the refusal (once), then answers with it.
    pub fn answer(self, node: &Node, consumer: &str) -> HttpResponse {
        let metrics = &node.caps().metrics;
        match &self {
            Refusal::Origin => metrics.handshakes_bad_origin.inc(),
            Refusal::NodeFull | Refusal::Busy => metrics.handshakes_over_capacity.inc(),
            Refusal::UserFull => metrics.handshakes_over_user_limit.inc(),
            Refusal::TimedOut => metrics.handshakes_timed_out.inc(),
            Refusal::Refused => metrics.handshakes_refused.inc(),
            Refusal::Failed(fault) => super::count_fault(metrics, fault),
            Refusal::ConsumerMissing | Refusal::Malformed(_) => {}
        }
        let status = self.status().as_u16();
        match &self {
            Refusal::ConsumerMissing | Refusal::Failed(_) => {
                tracing::warn!(consumer, status, reason = %self, "handshake refused");
            }
            _ => tracing::info!(consumer, status, reason = %self, "handshake refused"),
        }
        self.into_response()
    }
}

/// Stage 1: the request is a WebSocket handshake; returns the `101`
/// response to send once the consumer accepts, and the socket to come.
pub fn upgrade(
    node: &Node,
    request: &mut Request<Incoming>,
) -> Result<(HttpResponse, HyperWebsocket), Refusal> {
    hyper_tungstenite::upgrade(request, Some(websocket_config(node)))
        .map_err(|err| Refusal::Malformed(err.to_string()))
}

fn websocket_config(node: &Node) -> WebSocketConfig {
    let limits = node.limits();
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

/// Stage 2: what the client presents.
pub struct Credentials {
    /// The access token, from the query string or the subprotocol header.
    pub token: Option<String>,
    /// The query string's pairs, the token's removed.
    pub query: Vec<(String, String)>,
    /// The subprotocols offered, the token marker and the token removed.
    pub subprotocols: Vec<String>,
    /// The token marker, when the token came in the subprotocol header: the
    /// host answers with it if the consumer picks no subprotocol (browsers
    /// require one of theirs back).
    pub token_marker: Option<String>,
}

impl Credentials {
    /// Reads them from the request.
    pub fn read(node: &Node, request: &Request<Incoming>) -> Self {
        let auth = &node.config.auth;
        let mut token = None;
        let mut query = Vec::new();
        if let Some(raw) = request.uri().query() {
            for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
                if key == auth.query_param.as_str() {
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
        if let Some(marker) = auth.subprotocol.as_deref()
            && let Some(at) = subprotocols.iter().position(|entry| entry == marker)
        {
            // The marker, then the token: both are the host's, not the consumer's.
            subprotocols.remove(at);
            if at < subprotocols.len() {
                token.get_or_insert(subprotocols.remove(at));
            }
            token_marker = Some(marker.to_string());
        }
        Self {
            token,
            query,
            subprotocols,
            token_marker,
        }
    }
}

/// Stage 3's outcome: room on the node, and who the client is.
pub struct Admission {
    /// The node's connection slot.
    pub permit: OwnedSemaphorePermit,
    /// The login, or none for an anonymous connection.
    pub login: Option<Login>,
    /// The user's connection slot (with their message budget).
    pub user_slot: Option<UserSlot>,
}

/// Stage 3: origin, room on the node, the token, room for the user.
pub async fn admit(
    node: &Node,
    request: &Request<Incoming>,
    token: Option<&str>,
) -> Result<Admission, Refusal> {
    if let Some(origin) = request.headers().get(hyper::header::ORIGIN)
        && !origin
            .to_str()
            .is_ok_and(|origin| node.limits().origin_allowed(origin))
    {
        return Err(Refusal::Origin);
    }
    let permit = node
        .connection_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refusal::NodeFull)?;
    let metrics = &node.caps().metrics;
    let login = match token {
        None => {
            metrics.auth_failures.inc("missing");
            None
        }
        Some(token) => match node.auth.authenticate(&node.caps().db, token).await {
            Ok(login) => Some(login),
            Err(err) => {
                // As the reference middleware does: a token that is not a
                // login makes an anonymous connection; the consumer decides.
                metrics.auth_failures.inc(err.label());
                tracing::debug!(reason = %err, "token refused; connecting anonymously");
                None
            }
        },
    };
    let user_slot = match &login {
        Some(login) => Some(node.user_slot(&login.user.id).ok_or(Refusal::UserFull)?),
        None => None,
    };
    Ok(Admission {
        permit,
        login,
        user_slot,
    })
}

/// Stage 4's outcome: a session whose consumer accepted, and the
/// subprotocol to answer with.
pub struct Accepted {
    /// The session, its `connect` done.
    pub session: Session,
    /// The subprotocol the consumer chose (or the token marker).
    pub subprotocol: Option<String>,
    /// The connection's close signal.
    pub kick: Kick,
    /// Group events for the connection.
    pub mailbox: mpsc::Receiver<crate::layer::Event>,
    /// Messages towards the client.
    pub outbound: OutboundReceiver,
}

/// Stage 4: runs the consumer's `connect` within the handshake timeout.
pub async fn connect(
    node: &Node,
    consumer: &Arc<Consumer>,
    route: RouteMatch<'_>,
    path: String,
    credentials: Credentials,
    login: Option<&Login>,
) -> Result<Accepted, Refusal> {
    let id = node.next_connection_id();
    let scope = Scope {
        connection_id: id.to_string(),
        path,
        url_kwargs: route.kwargs,
        query: credentials.query,
        user: login.map(|login| WitUser {
            id: login.user.id.clone(),
            name: login.user.name.clone(),
            email: login.user.email.clone(),
        }),
        subprotocols: credentials.subprotocols.clone(),
    };
    let kick = Kick::child_of(&node.shutdown);
    let (outbound, outbound_rx) =
        crate::delivery::outbound(node.limits().send_queue, node.caps().pressure.clone());
    let (mailbox, mailbox_rx) = Mailbox::new(id, node.config.layer.mailbox_capacity, kick.clone());
    let conn = ConnState::new(
        consumer.clone(),
        node.caps().clone(),
        Identity {
            id,
            scope,
            offered_subprotocols: credentials.subprotocols,
        },
        Pipes {
            outbound,
            mailbox,
            kick: kick.clone(),
        },
    );
    let mut session = Session::new(consumer.clone(), conn);
    // When this returns early, the session (and its connection state) is
    // dropped: every group `connect` joined is left.
    match tokio::time::timeout(
        node.limits().handshake_timeout(),
        session.call(Call::Connect),
    )
    .await
    {
        Err(_elapsed) => return Err(Refusal::TimedOut),
        Ok(Err(Fault::Busy)) => return Err(Refusal::Busy),
        Ok(Err(fault)) => return Err(Refusal::Failed(fault)),
        Ok(Ok(())) => {}
    }
    let subprotocol = match &session.conn().handshake {
        Handshake::Accepted(subprotocol) => subprotocol.clone(),
        Handshake::Pending | Handshake::Refused => return Err(Refusal::Refused),
    };
    // What `connect` sent goes out (once durable) before the first event.
    let mut emission = session.conn().take_emission();
    match tokio::time::timeout(node.config.limits.handshake_timeout(), emission.committed()).await {
        Ok(Ok(())) => emission.release(&session.conn().release_to()),
        Ok(Err(err)) => {
            return Err(Refusal::Failed(Fault::Trap(format!(
                "a write failed: {err}"
            ))));
        }
        Err(_elapsed) => return Err(Refusal::TimedOut),
    }
    Ok(Accepted {
        session,
        subprotocol: subprotocol.or(credentials.token_marker),
        kick,
        mailbox: mailbox_rx,
        outbound: outbound_rx,
    })
}
