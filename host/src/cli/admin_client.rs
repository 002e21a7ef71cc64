//! The admin API's client: what `deploy`, `rollback` and `versions` send.

use anyhow::{Context, bail};

/// Where the admin API is, and its token.
#[derive(clap::Args)]
pub struct AdminTarget {
    /// The admin API's base URL, e.g. http://127.0.0.1:8000 (or the [admin] listen address).
    #[arg(long, env = "CONSUMER_HOST_SERVER")]
    pub server: String,
    /// The admin bearer token.
    #[arg(long, env = "CONSUMER_HOST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// Sends one admin request; returns the JSON answer on success, fails with
/// the server's error message otherwise.
pub fn admin_request(
    target: &AdminTarget,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(admin_request_async(target, method, path, body))
}

/// [`admin_request`], from async code.
pub async fn admin_request_async(
    target: &AdminTarget,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<String> {
    use http_body_util::{BodyExt, Full};
    let base: hyper::Uri = target
        .server
        .parse()
        .with_context(|| format!("--server {:?} is not a URL", target.server))?;
    if base.scheme_str() != Some("http") {
        bail!(
            "--server must be an http:// URL (the admin API has no TLS; keep it on a private address)"
        );
    }
    let authority = base
        .authority()
        .context("--server needs a host and port")?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", target.token),
        )
        .header(hyper::header::CONTENT_TYPE, "application/wasm")
        .body(Full::new(hyper::body::Bytes::from(body)))?;
    let response = sender
        .send_request(request)
        .await
        .context("the admin request failed")?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if status.is_success() {
        return Ok(text);
    }
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|value| value["error"].as_str().map(String::from))
        .unwrap_or(text);
    bail!(
        "{} {}: {message}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
}
