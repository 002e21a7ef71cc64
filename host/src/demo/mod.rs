//! The chat page: a first try of the chat in a browser (`[demo] enabled`).
//!
//! `GET /` serves a page (plain HTML, JavaScript and CSS, embedded in the
//! binary) on which one picks or makes demo users, opens a conversation
//! between two of them, and chats, in the page's two panes or in two tabs.
//! The page is an ordinary client: it opens `ws/<conversation>/?token=...`
//! with an access token like any other, and shows every frame the server
//! sends, error frames, close codes and refusals included.
//!
//! What the page needs that a client cannot do over the WebSocket is a
//! small JSON API under `/demo/api/`:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /demo/api/info` | the WebSocket path pattern and the token's query parameter |
//! | `GET /demo/api/users` | the demo users, newest first |
//! | `POST /demo/api/users` `{"name"}` | 201, a new demo user |
//! | `POST /demo/api/token` `{"user"}` | an access token for a demo user |
//! | `GET /demo/api/conversations?user=ID` | the user's conversations, with their members |
//! | `POST /demo/api/conversations` `{"users": [A, B]}` | the conversation of the two (201 when made now) |
//! | `GET /demo/api/conversations/ID/messages?user=ID` | its last 50 messages, oldest first, for a member |
//!
//! It writes and reads through the database API consumers use (`db-query`
//! and `db-insert`, under a grant of the chat's four tables), so rows are
//! made exactly as the chat's are. It only ever touches *demo* users (made
//! here, with an `@demo.invalid` address): pointed at a real database, it
//! mints no token for a real user. Because it mints tokens for whoever
//! asks, it is refused at start unless the server listens on loopback, and
//! answers only requests from this machine that no proxy forwarded, with a
//! `Host` that names this machine (a page of another site, even one whose
//! name points at 127.0.0.1, cannot use it).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use serde_json::{Value as Json, json};

use crate::db::{DbError, Grant, Rows, Value};
use crate::node::Node;
use crate::response::{self, HttpResponse, json_error as error};

/// Where the page's files and API live.
pub const PREFIX: &str = "/demo/";

/// The domain of demo users' addresses (reserved: it never delivers mail).
const DEMO_DOMAIN: &str = "@demo.invalid";

/// Longest display name, in characters.
const MAX_NAME_CHARS: usize = 64;

/// Largest request body the API reads.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Users and conversations listed at most.
const MAX_LISTED: usize = 200;

/// Messages a conversation's history shows.
const HISTORY: usize = 50;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");
const ICON_SVG: &str = include_str!("icon.svg");

/// Whether `path` is the demo's (the page or under [`PREFIX`]).
pub fn serves(path: &str) -> bool {
    path == "/" || path.starts_with(PREFIX)
}

/// Answers a request for the page, its files or its API.
pub async fn handle(node: Arc<Node>, request: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/") => asset("text/html; charset=utf-8", INDEX_HTML),
        (&Method::GET, "/demo/app.js") => asset("text/javascript; charset=utf-8", APP_JS),
        (&Method::GET, "/demo/style.css") => asset("text/css; charset=utf-8", STYLE_CSS),
        (&Method::GET, "/demo/icon.svg") => asset("image/svg+xml", ICON_SVG),
        _ if path.starts_with("/demo/api/") => {
            if let Err(refusal) = from_this_machine(&request, peer) {
                tracing::warn!(%peer, path, reason = refusal, "demo API request refused");
                return error(StatusCode::FORBIDDEN, refusal);
            }
            let mut response = api(&node, request, &method, &path).await;
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        _ => response::plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// One of the page's files, with headers that keep it to its own origin.
fn asset(content_type: &'static str, text: &'static str) -> HttpResponse {
    let mut response = response::with_body(
        StatusCode::OK,
        content_type,
        Bytes::from_static(text.as_bytes()),
    );
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Refuses what is not a browser on this machine talking to this server
/// directly: a peer beyond loopback, a request a proxy forwarded, a `Host`
/// that is not a loopback name (DNS rebinding).
fn from_this_machine(request: &Request<Incoming>, peer: SocketAddr) -> Result<(), &'static str> {
    if !peer.ip().is_loopback() {
        return Err("the demo API answers clients on this machine only");
    }
    let headers = request.headers();
    if ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| headers.contains_key(*name))
    {
        return Err(
            "the demo API does not answer through a proxy: it mints tokens for anyone who reaches it",
        );
    }
    // Every `Host` given (one, in a well-formed request) names this machine.
    let mut hosts = headers.get_all(header::HOST).iter().peekable();
    if hosts.peek().is_none() || !hosts.all(|host| host.to_str().is_ok_and(loopback_host)) {
        return Err("the demo API answers requests for localhost or a loopback address only");
    }
    Ok(())
}

/// Whether a `Host` header names this machine: `localhost` or a loopback
/// address, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A failed API call: the status and what the page shows.
struct Failure(StatusCode, String);

impl Failure {
    fn bad(text: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, text.into())
    }
    fn not_found(text: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, text.into())
    }
}

impl From<DbError> for Failure {
    fn from(err: DbError) -> Self {
        tracing::warn!(error = %err, "demo API: database call failed");
        Self(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the database call failed: {err}"),
        )
    }
}

type Answer = Result<(StatusCode, Json), Failure>;

async fn api(node: &Node, request: Request<Incoming>, method: &Method, path: &str) -> HttpResponse {
    let query = request.uri().query().unwrap_or("").to_string();
    let parts: Vec<&str> = path
        .trim_start_matches("/demo/api/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    let db = &node.caps().db;
    let answer: Answer = match (method, parts.as_slice()) {
        (&Method::GET, ["info"]) => Ok((StatusCode::OK, info(node))),
        (&Method::GET, ["users"]) => list_users(db).await,
        (&Method::POST, ["users"]) => match body(request).await {
            Ok(body) => create_user(db, &body).await,
            Err(failure) => Err(failure),
        },
        (&Method::POST, ["token"]) => match body(request).await {
            Ok(body) => token(node, &body).await,
            Err(failure) => Err(failure),
        },
        (&Method::GET, ["conversations"]) => conversations(db, &param(&query, "user")).await,
        (&Method::POST, ["conversations"]) => match body(request).await {
            Ok(body) => open_conversation(db, &body).await,
            Err(failure) => Err(failure),
        },
        (&Method::GET, ["conversations", id, "messages"]) => {
            messages(db, id, &param(&query, "user")).await
        }
        (_, ["info" | "users" | "token" | "conversations"] | ["conversations", _, "messages"]) => {
            Err(Failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here".into(),
            ))
        }
        _ => Err(Failure::not_found("no such demo API endpoint")),
    };
    match answer {
        Ok((status, value)) => response::json(status, &value),
        Err(Failure(status, text)) => error(status, &text),
    }
}

fn param(query: &str, name: &str) -> String {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// The request's JSON body. A JSON content type is required: a page of
/// another site cannot send one without the browser asking first (CORS),
/// which this API never allows.
async fn body(request: Request<Incoming>) -> Result<Json, Failure> {
    let json_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !json_type {
        return Err(Failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send JSON with Content-Type: application/json".into(),
        ));
    }
    let bytes = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| {
            Failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY_BYTES} bytes or was cut short"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|err| Failure::bad(format!("the body is not JSON: {err}")))
}

/// The grant the demo's statements run under: the chat's tables.
fn grant() -> Arc<Grant> {
    static GRANT: OnceLock<Arc<Grant>> = OnceLock::new();
    GRANT
        .get_or_init(|| {
            let tables = [
                "useraccount_user",
                "chat_conversation",
                "chat_conversation_users",
            ]
            .map(String::from);
            Arc::new(Grant::new(&["chat_conversationmessage".into()], &tables))
        })
        .clone()
}

async fn query(db: &crate::db::Database, sql: &str, params: Vec<Value>) -> Result<Rows, DbError> {
    db.query(grant(), sql.to_string(), params).await
}

fn text(value: &Value) -> String {
    match value {
        Value::Text(text) => text.clone(),
        Value::Integer(n) => n.to_string(),
        Value::Real(x) => x.to_string(),
        Value::Null | Value::Blob(_) => String::new(),
    }
}

/// A stored UUID (32 hex digits), hyphenated as clients write it.
fn hyphenated(stored: &str) -> String {
    uuid::Uuid::try_parse(stored)
        .map_or_else(|_| stored.to_string(), |id| id.hyphenated().to_string())
}

fn info(node: &Node) -> Json {
    json!({
        "socket_path": "/ws/{conversation}/",
        "token_param": node.config.auth.query_param,
        "token_lifetime_secs": node.config.auth.access_token_lifetime_secs,
    })
}

async fn list_users(db: &crate::db::Database) -> Answer {
    let rows = query(
        db,
        "SELECT id, name FROM useraccount_user WHERE email LIKE ?1 AND is_active \
         ORDER BY date_joined DESC, id LIMIT ?2",
        vec![
            Value::Text(format!("%{DEMO_DOMAIN}")),
            Value::Integer(MAX_LISTED as i64),
        ],
    )
    .await?;
    let users: Vec<Json> = rows
        .rows
        .iter()
        .map(|row| json!({ "id": hyphenated(&text(&row[0])), "name": text(&row[1]) }))
        .collect();
    Ok((StatusCode::OK, json!({ "users": users })))
}

async fn create_user(db: &crate::db::Database, body: &Json) -> Answer {
    let name = body["name"].as_str().unwrap_or("").trim().to_string();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(Failure::bad(format!(
            "name: 1 to {MAX_NAME_CHARS} characters, no control characters"
        )));
    }
    let row = db
        .insert(
            grant(),
            "useraccount_user".into(),
            vec![
                // An unusable password, as Django's set_unusable_password writes it.
                (
                    "password".into(),
                    Value::Text(format!("!{}", uuid::Uuid::new_v4().simple())),
                ),
                ("is_superuser".into(), Value::Integer(0)),
                ("is_staff".into(), Value::Integer(0)),
                ("is_active".into(), Value::Integer(1)),
                (
                    "email".into(),
                    Value::Text(format!(
                        "demo-{}{DEMO_DOMAIN}",
                        uuid::Uuid::new_v4().simple()
                    )),
                ),
                ("name".into(), Value::Text(name.clone())),
            ],
        )
        .await?;
    let id = column(&row, "id");
    tracing::info!(user = %hyphenated(&id), name, "demo user made");
    Ok((
        StatusCode::CREATED,
        json!({ "id": hyphenated(&id), "name": name }),
    ))
}

fn column(row: &[(String, Value)], name: &str) -> String {
    row.iter()
        .find(|(column, _)| column == name)
        .map(|(_, value)| text(value))
        .unwrap_or_default()
}

/// The stored id and name of a demo user, or a failure that says why not.
async fn demo_user(db: &crate::db::Database, given: &str) -> Result<(String, String), Failure> {
    let id = crate::db::normalise_uuid(given)
        .ok_or_else(|| Failure::bad(format!("{given:?} is not a user id (a UUID)")))?;
    let rows = query(
        db,
        "SELECT id, name FROM useraccount_user WHERE id = ?1 AND email LIKE ?2 AND is_active",
        vec![Value::Text(id), Value::Text(format!("%{DEMO_DOMAIN}"))],
    )
    .await?;
    let row = rows.rows.first().ok_or_else(|| {
        Failure::not_found(format!(
            "no demo user {given}: pick one from the list or make one"
        ))
    })?;
    Ok((text(&row[0]), text(&row[1])))
}

async fn token(node: &Node, body: &Json) -> Answer {
    let given = body["user"].as_str().unwrap_or("");
    let (id, name) = demo_user(&node.caps().db, given).await?;
    Ok((
        StatusCode::OK,
        json!({
            "token": node.auth.mint(&id),
            "user": { "id": hyphenated(&id), "name": name },
            "expires_in": node.config.auth.access_token_lifetime_secs,
        }),
    ))
}

async fn conversations(db: &crate::db::Database, user: &str) -> Answer {
    let (id, _) = demo_user(db, user).await?;
    let rows = query(
        db,
        "SELECT c.id, m.user_id, u.name FROM chat_conversation_users mine \
         JOIN chat_conversation c ON c.id = mine.conversation_id \
         JOIN chat_conversation_users m ON m.conversation_id = c.id \
         JOIN useraccount_user u ON u.id = m.user_id \
         WHERE mine.user_id = ?1 ORDER BY c.modified_at DESC, c.id, u.name LIMIT ?2",
        vec![Value::Text(id), Value::Integer((MAX_LISTED * 8) as i64)],
    )
    .await?;
    let mut listed: Vec<(String, Vec<Json>)> = Vec::new();
    for row in &rows.rows {
        let conversation = hyphenated(&text(&row[0]));
        let member = json!({ "id": hyphenated(&text(&row[1])), "name": text(&row[2]) });
        match listed.last_mut() {
            Some((last, members)) if *last == conversation => members.push(member),
            _ => listed.push((conversation, vec![member])),
        }
    }
    let conversations: Vec<Json> = listed
        .into_iter()
        .take(MAX_LISTED)
        .map(|(id, members)| json!({ "id": id, "members": members }))
        .collect();
    Ok((StatusCode::OK, json!({ "conversations": conversations })))
}

/// The conversation of two demo users: the one they share, or a new one.
async fn open_conversation(db: &crate::db::Database, body: &Json) -> Answer {
    let given: Vec<&str> = body["users"]
        .as_array()
        .map(|users| users.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    let [first, second] = given.as_slice() else {
        return Err(Failure::bad(
            "users: the ids of the conversation's two members",
        ));
    };
    let (a, a_name) = demo_user(db, first).await?;
    let (b, b_name) = demo_user(db, second).await?;
    if a == b {
        return Err(Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a conversation needs two different users".into(),
        ));
    }
    let members = json!([
        { "id": hyphenated(&a), "name": a_name },
        { "id": hyphenated(&b), "name": b_name },
    ]);
    let shared = query(
        db,
        "SELECT x.conversation_id FROM chat_conversation_users x \
         JOIN chat_conversation_users y ON y.conversation_id = x.conversation_id \
         WHERE x.user_id = ?1 AND y.user_id = ?2 ORDER BY x.id LIMIT 1",
        vec![Value::Text(a.clone()), Value::Text(b.clone())],
    )
    .await?;
    if let Some(row) = shared.rows.first() {
        let id = hyphenated(&text(&row[0]));
        return Ok((
            StatusCode::OK,
            json!({ "id": id, "members": members, "created": false }),
        ));
    }
    // Three inserts, as the reference app's view makes them; a failure in
    // between leaves a conversation with fewer members, which no one sees.
    let conversation = db
        .insert(grant(), "chat_conversation".into(), Vec::new())
        .await?;
    let id = column(&conversation, "id");
    for user in [&a, &b] {
        db.insert(
            grant(),
            "chat_conversation_users".into(),
            vec![
                ("conversation_id".into(), Value::Text(id.clone())),
                ("user_id".into(), Value::Text(user.clone())),
            ],
        )
        .await?;
    }
    tracing::info!(conversation = %hyphenated(&id), "demo conversation made");
    Ok((
        StatusCode::CREATED,
        json!({ "id": hyphenated(&id), "members": members, "created": true }),
    ))
}

async fn messages(db: &crate::db::Database, conversation: &str, user: &str) -> Answer {
    let (user, _) = demo_user(db, user).await?;
    let conversation = crate::db::normalise_uuid(conversation)
        .ok_or_else(|| Failure::bad("the conversation id is not a UUID"))?;
    let member = query(
        db,
        "SELECT user_id FROM chat_conversation_users WHERE conversation_id = ?1 AND user_id = ?2",
        vec![Value::Text(conversation.clone()), Value::Text(user)],
    )
    .await?;
    if member.rows.is_empty() {
        return Err(Failure(
            StatusCode::FORBIDDEN,
            "the user is not a member of this conversation".into(),
        ));
    }
    let rows = query(
        db,
        "SELECT m.id, m.body, m.created_at, m.created_by_id, u.name, m.sent_to_id \
         FROM chat_conversationmessage m JOIN useraccount_user u ON u.id = m.created_by_id \
         WHERE m.conversation_id = ?1 ORDER BY m.created_at DESC, m.id DESC LIMIT ?2",
        vec![Value::Text(conversation), Value::Integer(HISTORY as i64)],
    )
    .await?;
    let messages: Vec<Json> = rows
        .rows
        .iter()
        .rev()
        .map(|row| {
            json!({
                "id": hyphenated(&text(&row[0])),
                "body": text(&row[1]),
                "created_at": text(&row[2]),
                "created_by": hyphenated(&text(&row[3])),
                "name": text(&row[4]),
                "sent_to": hyphenated(&text(&row[5])),
            })
        })
        .collect();
    Ok((StatusCode::OK, json!({ "messages": messages })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_this_machine() {
        for host in [
            "localhost",
            "LOCALHOST:8000",
            "127.0.0.1:8000",
            "127.1.2.3",
            "[::1]:8000",
            "[::1]",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "",
            "example.com",
            "evil.localhost.example:80",
            "10.0.0.1:8000",
            "[2001:db8::1]:80",
            "0.0.0.0:8000",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }

    #[test]
    fn what_is_the_demos() {
        assert!(serves("/"));
        assert!(serves("/demo/app.js"));
        assert!(!serves("/ws/x/"));
        assert!(!serves("/demo"));
    }
}
