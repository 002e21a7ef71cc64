//! The admin API: deploy, list and roll back consumer versions.
//!
//! Off unless `[admin] token` (or `CONSUMER_HOST_ADMIN_TOKEN`) is set; every
//! request needs `Authorization: Bearer <token>` (401 otherwise). With
//! `[admin] listen` it is served on that address only.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /admin/consumers` | 200: each consumer's current version, the versions kept for rollback, and connections per version |
//! | `PUT /admin/consumers/<name>` with the component as the body | 200 with the new version; 422 with the reason when the module is refused (the current version keeps serving); 413 when too large |
//! | `POST /admin/consumers/<name>/rollback` | 200 with the version now current; 409 when none is kept |
//! | an unknown consumer | 404 |

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::runtime::deploy::{self, DeployError};
use crate::services::Services;

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("a JSON response is valid")
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": message }))
}

/// Compares without an early exit, so the time taken says nothing of how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(services: &Services, request: &Request<Incoming>) -> bool {
    let Some(expected) = services.config.admin.token.as_deref() else {
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
pub async fn handle(
    services: Arc<Services>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    if services.config.admin.token.is_none() {
        return crate::http::plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if !authorized(&services, &request) {
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
        (Method::GET, ["admin", "consumers"]) => list(&services),
        (Method::PUT, ["admin", "consumers", name]) => {
            let name = name.to_string();
            put(&services, &name, request, peer).await
        }
        (Method::POST, ["admin", "consumers", name, "rollback"]) => {
            let name = name.to_string();
            rollback(&services, &name, peer).await
        }
        (
            _,
            ["admin", "consumers"]
            | ["admin", "consumers", _]
            | ["admin", "consumers", _, "rollback"],
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

fn list(services: &Services) -> Response<Full<Bytes>> {
    let consumers: Vec<serde_json::Value> = services
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
        json!({ "consumers": consumers, "keep_versions": services.config.runtime.keep_versions }),
    )
}

async fn put(
    services: &Arc<Services>,
    name: &str,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let Some(consumer) = services.runtime.consumer(name).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no consumer named {name:?}"),
        );
    };
    let limit = services.config.admin.max_module_bytes;
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
    match deploy::deploy(services, &consumer, bytes, format!("admin:{peer}")).await {
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

async fn rollback(services: &Arc<Services>, name: &str, peer: SocketAddr) -> Response<Full<Bytes>> {
    let Some(consumer) = services.runtime.consumer(name).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no consumer named {name:?}"),
        );
    };
    match deploy::roll_back(services, &consumer, &format!("admin:{peer}")).await {
        Ok((from, to)) => json_response(
            StatusCode::OK,
            json!({ "consumer": name, "from": from.sha256, "version": to.describe() }),
        ),
        Err(err) => deploy_error(&err),
    }
}

fn deploy_error(err: &DeployError) -> Response<Full<Bytes>> {
    let status = match err {
        DeployError::UnknownConsumer(_) => StatusCode::NOT_FOUND,
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
