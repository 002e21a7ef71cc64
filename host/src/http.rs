//! Plain HTTP: health, metrics, and the dispatch to WebSocket routes and the
//! admin API.
//!
//! | path | answer |
//! | --- | --- |
//! | a request target over `[limits] max_uri_bytes` | 414, before anything else |
//! | `GET /healthz` | 200 `{"status": "ok"}` (or `"degraded"`, with what is degraded); nothing internal |
//! | `GET /metrics` | 200, Prometheus text: on the admin listener when `[admin] listen` is set, else here |
//! | `/admin/...` | the admin API ([`crate::admin`]), on the admin listener if one is configured |
//! | `/` and `/demo/...` with `[demo] enabled` | the chat page and its API ([`crate::demo`]), on `listen` only |
//! | a routed path with `Upgrade: websocket` | the WebSocket handshake ([`crate::ws`]) |
//! | anything else | 404 |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode};

use crate::node::Node;
use crate::response::{self, HttpResponse};
use crate::routing;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `listen`: clients (and the admin API when it has no address of its own).
    Main,
    /// `[admin] listen`: the admin API, health and metrics only.
    Admin,
}

impl Listener {
    /// Whether the admin API and the node's internals are served here.
    fn serves_internals(self, node: &Node) -> bool {
        self == Listener::Admin || node.config.admin.listen.is_none()
    }
}

/// Answers one HTTP request.
pub async fn handle(
    node: Arc<Node>,
    request: Request<Incoming>,
    peer: SocketAddr,
    listener: Listener,
) -> Result<HttpResponse, Infallible> {
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target_len > node.limits().max_uri_bytes {
        node.caps().metrics.uris_too_long.inc();
        return Ok(response::plain(
            StatusCode::URI_TOO_LONG,
            "the request's path and query are too long\n",
        ));
    }
    let raw_path = request.uri().path().to_string();
    if raw_path == "/admin" || raw_path.starts_with("/admin/") {
        if listener.serves_internals(&node) {
            return Ok(crate::admin::handle(node, request, peer).await);
        }
        return Ok(not_found());
    }
    let upgrade = hyper_tungstenite::is_upgrade_request(&request);
    if request.method() == Method::GET && !upgrade {
        match raw_path.as_str() {
            "/healthz" => return Ok(health(&node)),
            "/metrics" if listener.serves_internals(&node) => return Ok(metrics(&node)),
            _ => {}
        }
    }
    if node.config.demo.enabled
        && listener == Listener::Main
        && !upgrade
        && crate::demo::serves(&raw_path)
    {
        return Ok(crate::demo::handle(node, request, peer).await);
    }
    if listener == Listener::Admin || !upgrade {
        return Ok(not_found());
    }
    let Ok(path) = percent_encoding::percent_decode_str(&raw_path).decode_utf8() else {
        return Ok(response::plain(
            StatusCode::BAD_REQUEST,
            "the path is not valid UTF-8\n",
        ));
    };
    let path = path.into_owned();
    let routes = node.routes();
    let Some(route) = routing::resolve(&routes, &path) else {
        node.caps().metrics.handshakes_unrouted.inc();
        return Ok(response::plain(
            StatusCode::NOT_FOUND,
            "no WebSocket route for this path\n",
        ));
    };
    Ok(crate::ws::handshake(node.clone(), request, route, path).await)
}

fn not_found() -> HttpResponse {
    response::plain(StatusCode::NOT_FOUND, "not found\n")
}

/// Every metric of the node, as Prometheus text.
pub fn node_metrics(node: &Node) -> String {
    let caps = node.caps();
    let mut text = caps.metrics.render();
    caps.layer.render_metrics(&mut text);
    let pressure = &caps.pressure;
    crate::metrics::write_metric(
        &mut text,
        "pressure_active",
        "gauge",
        "Whether the node is overloaded now (many queues towards clients behind): connections read more slowly.",
        u8::from(pressure.active()),
    );
    crate::metrics::write_metric(
        &mut text,
        "queued_frames",
        "gauge",
        "Frames waiting in every queue towards clients.",
        pressure.queued(),
    );
    text
}

/// Whether the node serves fully: `ok`, or `degraded` with what is not
/// working (it still serves its own clients). Nothing internal (paths,
/// counts) is shown: the admin API's status has those.
fn health(node: &Node) -> HttpResponse {
    let (_, layer_ok) = node.caps().layer.health();
    let mut degraded = Vec::new();
    if !layer_ok {
        degraded.push("layer");
    }
    if !node.caps().db.healthy() {
        degraded.push("database");
    }
    let status = if degraded.is_empty() {
        "ok"
    } else {
        "degraded"
    };
    response::json(
        StatusCode::OK,
        &serde_json::json!({ "status": status, "degraded": degraded }),
    )
}

fn metrics(node: &Node) -> HttpResponse {
    let text = node_metrics(node);
    response::with_body(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        Bytes::from(text),
    )
}
