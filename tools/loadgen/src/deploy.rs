//! A hot swap in the middle of the run: one `PUT /admin/consumers/<name>`.
//!
//! A hand-written HTTP/1.1 request keeps an HTTP client out of the loadgen;
//! the admin API answers one small JSON document and closes.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::Target;

/// Longest the whole request may take (a deploy compiles a component).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

/// What the deploy request came to.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    /// Seconds after sending started at which the request went out.
    pub at_secs: f64,
    /// HTTP status, when an answer came.
    pub status: Option<u16>,
    /// From the request's first byte to the answer's last.
    pub request_ms: f64,
    /// The server's own measure of the swap (`activation_ms` in the answer).
    pub activation_ms: Option<f64>,
    /// Why it failed, when it did (transport error or the answer's message).
    pub error: Option<String>,
}

/// Sends the module and reads the answer.
pub async fn put(
    admin: &Target,
    consumer: &str,
    token: &str,
    module: &[u8],
    at_secs: f64,
) -> DeployReport {
    let started = Instant::now();
    let result = tokio::time::timeout(DEPLOY_TIMEOUT, exchange(admin, consumer, token, module))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", DEPLOY_TIMEOUT.as_secs())));
    let request_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let at_secs = (at_secs * 1e3).round() / 1e3;
    match result {
        Ok((status, body)) => {
            let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
            let activation_ms = json
                .as_ref()
                .and_then(|value| value.get("activation_ms"))
                .and_then(serde_json::Value::as_f64);
            let error = (status != 200).then(|| {
                json.as_ref()
                    .and_then(|value| value.get("error"))
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect())
            });
            DeployReport {
                at_secs,
                status: Some(status),
                request_ms,
                activation_ms,
                error,
            }
        }
        Err(error) => DeployReport {
            at_secs,
            status: None,
            request_ms,
            activation_ms: None,
            error: Some(error),
        },
    }
}

/// One request, one answer: (status, body).
async fn exchange(
    admin: &Target,
    consumer: &str,
    token: &str,
    module: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect(admin.addr)
        .await
        .map_err(|err| format!("connecting to {}: {err}", admin.addr))?;
    let head = format!(
        "PUT /admin/consumers/{consumer} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        admin.authority,
        module.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|err| format!("sending the request: {err}"))?;
    stream
        .write_all(module)
        .await
        .map_err(|err| format!("sending the module: {err}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|err| format!("reading the answer: {err}"))?;
    parse_response(&answer)
}

/// Status and body of an HTTP/1.1 answer read to its end.
fn parse_response(answer: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = answer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| "the answer has no complete header".to_string())?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let body = &answer[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("unreadable status line in {head:?}"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// Joins the chunks of a chunked body.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("a chunk size line is cut short")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            return Err("a chunk is cut short".into());
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_answer() {
        let (status, body) = parse_response(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{\"activation_ms\":1.5}",
        )
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, b"{\"activation_ms\":1.5}");
    }

    #[test]
    fn chunked_answer() {
        let (status, body) = parse_response(
            b"HTTP/1.1 422 Unprocessable Entity\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(status, 422);
        assert_eq!(body, b"{\"a\":1}");
    }

    #[test]
    fn cut_answer() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
