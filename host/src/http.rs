//! Plain HTTP: health, metrics, and the dispatch to WebSocket routes.
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 with a JSON summary |
//! | `GET /metrics` | 200, Prometheus text |
//! | `/admin/...` | the admin API ([`crate::admin`]), on the admin listener if one is configured |
//! | a routed path with `Upgrade: websocket` | the WebSocket handshake ([`crate::ws`]) |
//! | anything else | 404 |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use crate::routing;
use crate::services::Services;

/// A response with a plain-text body.
pub fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text.to_string())))
        .expect("a static response is valid")
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("a JSON response is valid")
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `listen`: clients (and the admin API when it has no address of its own).
    Main,
    /// `[admin] listen`: the admin API, health and metrics only.
    Admin,
}

/// Answers one HTTP request.
pub async fn handle(
    services: Arc<Services>,
    request: Request<Incoming>,
    peer: SocketAddr,
    listener: Listener,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let raw_path = request.uri().path().to_string();
    if raw_path == "/admin" || raw_path.starts_with("/admin/") {
        let admin_here = match listener {
            Listener::Admin => true,
            Listener::Main => services.config.admin.listen.is_none(),
        };
        if admin_here {
            return Ok(crate::admin::handle(services, request, peer).await);
        }
        return Ok(plain(StatusCode::NOT_FOUND, "not found\n"));
    }
    if request.method() == Method::GET && !hyper_tungstenite::is_upgrade_request(&request) {
        match raw_path.as_str() {
            "/healthz" => return Ok(health(&services)),
            "/metrics" => {
                return Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header(hyper::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                    .body(Full::new(Bytes::from(
                        services.metrics.render() + &services.layer.render_metrics(),
                    )))
                    .expect("a metrics response is valid"));
            }
            _ => {}
        }
    }
    if listener == Listener::Admin || !hyper_tungstenite::is_upgrade_request(&request) {
        return Ok(plain(StatusCode::NOT_FOUND, "not found\n"));
    }
    let Ok(path) = percent_encoding::percent_decode_str(&raw_path).decode_utf8() else {
        return Ok(plain(
            StatusCode::BAD_REQUEST,
            "the path is not valid UTF-8\n",
        ));
    };
    let path = path.into_owned();
    let Some(route) = routing::resolve(&services.routes, &path) else {
        services.metrics.handshakes_unrouted.inc();
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "no WebSocket route for this path\n",
        ));
    };
    Ok(crate::ws::handshake(services.clone(), request, route, path).await)
}

fn health(services: &Services) -> Response<Full<Bytes>> {
    let metrics = &services.metrics;
    let (layer, layer_ok) = services.layer.health();
    // Degraded, not down: with Redis away a node still serves its own members.
    json(
        StatusCode::OK,
        &serde_json::json!({
            "status": if layer_ok { "ok" } else { "degraded" },
            "connections": metrics.connections_open.get(),
            "instances_live": metrics.instances_live.get(),
            "layer": layer,
            "database": services.db.path().display().to_string(),
        }),
    )
}
