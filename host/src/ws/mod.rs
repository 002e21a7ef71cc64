//! WebSocket connections: the handshake ([`handshake`]), then one task per
//! socket ([`connection`]) with its writer ([`writer`]) and rate limits
//! ([`rate`]).
//!
//! The handshake is held open while the consumer's `connect` runs, as
//! daphne does: the client gets `101 Switching Protocols` only once the
//! consumer has accepted, and `403` if it refused (closed, or returned
//! without accepting). Then a connection task reads frames and group events
//! and hands them to the consumer one at a time, in order; a writer task
//! drains the bounded send queue into the socket, batching what is queued
//! into one flush.

pub mod connection;
pub mod handshake;
pub mod rate;
pub mod writer;

use std::sync::Arc;

use hyper::Request;
use hyper::body::Incoming;

use crate::metrics::Metrics;
use crate::node::Node;
use crate::response::HttpResponse;
use crate::routing::RouteMatch;
use crate::runtime::Fault;
use connection::Connection;
use handshake::{Credentials, Refusal};

/// Handles an upgrade request on a routed path.
pub async fn handshake(
    node: Arc<Node>,
    mut request: Request<Incoming>,
    route: RouteMatch<'_>,
    path: String,
) -> HttpResponse {
    let consumer_name = route.consumer;
    let Some(consumer) = node.runtime.consumer(consumer_name).cloned() else {
        return Refusal::ConsumerMissing.answer(&node, consumer_name);
    };
    // Malformed handshakes are answered before any work is done for them.
    let (mut response, upgrade) = match handshake::upgrade(&node, &mut request) {
        Ok(upgrade) => upgrade,
        Err(refusal) => return refusal.answer(&node, consumer_name),
    };
    let credentials = Credentials::read(&node, &request);
    let admission = match handshake::admit(&node, &request, credentials.token.as_deref()).await {
        Ok(admission) => admission,
        Err(refusal) => return refusal.answer(&node, consumer_name),
    };
    let login = admission.login;
    let accepted = match handshake::connect(
        &node,
        &consumer,
        route,
        path,
        credentials,
        login.as_ref(),
    )
    .await
    {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal.answer(&node, consumer_name),
    };
    if let Some(subprotocol) = &accepted.subprotocol
        && let Ok(value) = hyper::header::HeaderValue::from_str(subprotocol)
    {
        response
            .headers_mut()
            .insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    let mut session = accepted.session;
    session.evict_if_crowded();
    let metrics = &node.caps().metrics;
    metrics.connections_accepted.inc();
    metrics.connections_open.inc();
    let connection = Connection::new(
        node.clone(),
        consumer,
        session,
        accepted.kick,
        login.as_ref(),
        admission.user_slot,
        admission.permit,
    );
    node.tasks
        .spawn(connection.run(upgrade, accepted.outbound, accepted.mailbox));
    response
}

/// Counts a consumer fault under its kind.
pub(crate) fn count_fault(metrics: &Metrics, fault: &Fault) {
    match fault {
        Fault::Deadline(_) | Fault::WallClock(_) => metrics.guest_deadline_overruns.inc(),
        Fault::Busy => metrics.instances_busy.inc(),
        _ => metrics.guest_traps.inc(),
    }
}
