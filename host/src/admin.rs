//! The admin API: deploy, list and roll back consumer versions.
//!
//! Off unless `[admin] token` (or `CONSUMER_HOST_ADMIN_TOKEN`) is set; every
//! request needs `Authorization: Bearer <token>` (401 otherwise). With
//! `[admin] listen` it is served on that address only.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /admin/status` | 200: the node's state: connections, instances, the layer, the database, message and delivery counts, refusals by kind, closes by code, the limits in force |
//! | `GET /admin/consumers` | 200: each consumer's current version, the versions kept for rollback, and connections per version |
//! | `PUT /admin/consumers/<name>` with the component as the body | 200 with the new version; 422 with the reason when the module is refused (the current version keeps serving); 413 when too large |
//! | `POST /admin/consumers/<name>/rollback` | 200 with the version now current; 409 when none is kept |
//! | an unknown consumer | 404 |

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::node::Node;
use crate::response::{self, HttpResponse, json_error as error};
use crate::runtime::deploy::{self, DeployError};

fn json_response(status: StatusCode, value: serde_json::Value) -> HttpResponse {
    response::json(status, &value)
}

/// Compares without an early exit, so the time taken says nothing of how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(node: &Node, request: &Request<Incoming>) -> bool {
    let Some(expected) = node.config.admin.token.as_deref() else {
        return false;
    };
    request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), expected.as_bytes()))
}

/// Answers a request under `/admin/`.
pub async fn handle(node: Arc<Node>, request: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    if node.config.admin.token.is_none() {
        return response::plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if !authorized(&node, &request) {
        tracing::warn!(%peer, path = request.uri().path(), "admin request without a valid token");
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "a valid admin bearer token is required",
        );
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer realm=\"consumer-host admin\""),
        );
        return response;
    }
    let path = request.uri().path().trim_end_matches('/').to_string();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    match (request.method().clone(), parts.as_slice()) {
        (Method::GET, ["admin", "status"]) => status(&node),
        (Method::GET, ["admin", "consumers"]) => list(&node),
        (Method::PUT, ["admin", "consumers", name]) => {
            let name = name.to_string();
            put(&node, &name, request, peer).await
        }
        (Method::POST, ["admin", "consumers", name, "rollback"]) => {
            let name = name.to_string();
            rollback(&node, &name, peer).await
        }
        (
            _,
            ["admin", "status"]
            | ["admin", "consumers"]
            | ["admin", "consumers", _]
            | ["admin", "consumers", _, "rollback"],
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

fn status(node: &Node) -> HttpResponse {
    let caps = node.caps();
    let metrics = &caps.metrics;
    let (layer, layer_ok) = caps.layer.health();
    let consumers: Vec<serde_json::Value> = node
        .runtime
        .consumers()
        .map(|consumer| {
            json!({
                "name": consumer.name(),
                "current": consumer.current().describe(),
                "previous": consumer.previous().iter().map(|version| version.describe()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({
            "status": if layer_ok { "ok" } else { "degraded" },
            "version": env!("CARGO_PKG_VERSION"),
            "connections": metrics.connections_open.get(),
            "instances_live": metrics.instances_live.get(),
            "counters": {
                "connections_accepted": metrics.connections_accepted.get(),
                "messages_received": metrics.messages_received.get(),
                "messages_sent": metrics.messages_sent.get(),
                "events_handled": metrics.events_handled.get(),
                "handshakes_refused": metrics.handshakes_refused.get(),
                "handshakes_over_capacity": metrics.handshakes_over_capacity.get(),
                "guest_traps": metrics.guest_traps.get(),
                "db_writes": metrics.db_writes.get(),
                "group_sends": metrics.group_sends.get(),
                "rendered_deliveries": metrics.rendered_deliveries.get(),
                "slow_client_closes": metrics.slow_client_closes.get(),
                "idle_timeouts": metrics.idle_timeouts.get(),
                "instances_busy": metrics.instances_busy.get(),
            },
            "refusals": {
                "refused": metrics.handshakes_refused.get(),
                "bad_origin": metrics.handshakes_bad_origin.get(),
                "unrouted": metrics.handshakes_unrouted.get(),
                "uri_too_long": metrics.uris_too_long.get(),
                "over_user_limit": metrics.handshakes_over_user_limit.get(),
                "over_capacity": metrics.handshakes_over_capacity.get(),
                "timed_out": metrics.handshakes_timed_out.get(),
            },
            "auth_failures": metrics.auth_failures.snapshot(),
            "closes": metrics.closes.snapshot(),
            "limits": limits_in_force(&node.limits()),
            "layer": layer,
            "database": caps.db.describe(),
            "consumers": consumers,
        }),
    )
}

/// The `[limits]` a reload may have changed, as in force now.
fn limits_in_force(limits: &crate::config::Limits) -> serde_json::Value {
    json!({
        "max_connections": limits.max_connections,
        "max_connections_per_user": limits.max_connections_per_user,
        "max_message_bytes": limits.max_message_bytes,
        "messages_per_second": limits.messages_per_second,
        "message_burst": limits.message_burst,
        "user_messages_per_second": limits.user_messages_per_second,
        "send_queue": limits.send_queue,
        "handshake_timeout_ms": limits.handshake_timeout_ms,
        "ping_interval_ms": limits.ping_interval_ms,
        "idle_timeout_ms": limits.idle_timeout_ms,
        "allowed_origins": limits.allowed_origins,
    })
}

fn list(node: &Node) -> HttpResponse {
    let consumers: Vec<serde_json::Value> = node
        .runtime
        .consumers()
        .map(|consumer| {
            json!({
                "name": consumer.name(),
                "module": consumer.config().module.display().to_string(),
                "current": consumer.current().describe(),
                "previous": consumer.previous().iter().map(|version| version.describe()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({ "consumers": consumers, "keep_versions": node.config.runtime.keep_versions }),
    )
}

async fn put(
    node: &Arc<Node>,
    name: &str,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> HttpResponse {
    let Some(consumer) = node.runtime.consumer(name).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no consumer named {name:?}"),
        );
    };
    let limit = node.config.admin.max_module_bytes;
    let bytes = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the module is larger than {limit} bytes ([admin] max_module_bytes)"),
            );
        }
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("reading the module failed: {err}"),
            );
        }
    };
    if bytes.is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the request body is empty: send the component's bytes",
        );
    }
    tracing::info!(consumer = name, %peer, size = bytes.len(), "deploy requested through the admin API");
    match deploy::deploy(&node.runtime, &consumer, bytes, format!("admin:{peer}")).await {
        Ok(deployed) => json_response(
            StatusCode::OK,
            json!({
                "consumer": name,
                "unchanged": deployed.unchanged,
                "version": deployed.version.describe(),
                "previous": deployed.previous.sha256,
                "activation_ms": deployed.elapsed.as_secs_f64() * 1e3,
            }),
        ),
        Err(err) => deploy_error(&err),
    }
}

async fn rollback(node: &Arc<Node>, name: &str, peer: SocketAddr) -> HttpResponse {
    let Some(consumer) = node.runtime.consumer(name).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no consumer named {name:?}"),
        );
    };
    match deploy::roll_back(&node.runtime, &consumer, &format!("admin:{peer}")).await {
        Ok((from, to)) => json_response(
            StatusCode::OK,
            json!({ "consumer": name, "from": from.sha256, "version": to.describe() }),
        ),
        Err(err) => deploy_error(&err),
    }
}

fn deploy_error(err: &DeployError) -> HttpResponse {
    let status = match err {
        DeployError::Invalid(_) | DeployError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        DeployError::NothingToRollBack(_) => StatusCode::CONFLICT,
    };
    error(status, &err.to_string())
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-123", b"secret-token-124"));
        assert!(!constant_time_eq(b"secret", b"secret-token-123"));
    }
}
