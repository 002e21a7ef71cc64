//! HTTP responses: the few shapes the host answers with, and the typed
//! rejections that map themselves to one.
//!
//! A leaf module: the dispatcher ([`crate::http`]), the handshake
//! ([`crate::ws`]) and the admin API all answer through it, none through
//! another. Texts say what went wrong and what to do; they never carry
//! internals (paths, SQL, stack traces).

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};

/// What every handler returns.
pub type HttpResponse = Response<Full<Bytes>>;

/// A response with a plain-text body.
pub fn plain(status: StatusCode, text: &str) -> HttpResponse {
    with_body(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(text.to_string()),
    )
}

/// A response with a JSON body.
pub fn json(status: StatusCode, value: &serde_json::Value) -> HttpResponse {
    with_body(status, "application/json", Bytes::from(value.to_string()))
}

/// A JSON `{"error": message}` body: the admin API's and the demo API's errors.
pub fn json_error(status: StatusCode, message: &str) -> HttpResponse {
    json(status, &serde_json::json!({ "error": message }))
}

/// A response of any content type.
pub fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> HttpResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Something that refuses a request, and knows how to say so.
pub trait Rejection {
    /// The status the client gets.
    fn status(&self) -> StatusCode;
    /// The text it reads (one line, ending with a newline).
    fn message(&self) -> String;
    /// The response: the status and the message as plain text.
    fn into_response(self) -> HttpResponse
    where
        Self: Sized,
    {
        plain(self.status(), &self.message())
    }
}
