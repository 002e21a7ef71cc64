//! The test harness: a real consumer-host on `127.0.0.1:0` with the real chat
//! guest and a real SQLite file, and real WebSocket clients.
//!
//! Guests are built from source by this crate's build script; their
//! components are in `GUEST_DIST`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use consumer_host::Server;
use consumer_host::auth::Authenticator;
use consumer_host::config::{Config, ConsumerConfig, RouteConfig, SandboxLimits};
use consumer_host::db::seed::{Plan, seed};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value as Json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where the build script put the guest components.
pub const GUEST_DIST: &str = env!("GUEST_DIST");

/// A guest component by crate name.
pub fn guest(name: &str) -> PathBuf {
    Path::new(GUEST_DIST).join(format!("{name}.wasm"))
}

/// The secret every test server signs with.
pub const SECRET: &str = "test-secret-not-for-production";

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A config for the chat on a database file, listening on an ephemeral port.
pub fn chat_config(db: &Path, secret: &str) -> Config {
    let mut config = Config::empty();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database.path = db.to_path_buf();
    config.auth.secret = Some(secret.to_string());
    config.routes.push(RouteConfig {
        path: "ws/<room_name>/".into(),
        consumer: "chat".into(),
    });
    config.consumers.insert(
        "chat".into(),
        ConsumerConfig {
            module: guest("chat"),
            read: vec!["chat_conversation_users".into()],
            write: vec!["chat_conversationmessage".into()],
            sandbox: SandboxLimits::default(),
        },
    );
    // Small pools: many test servers run at once in one process.
    config.runtime.max_instances = 200;
    config
}

/// A chat server on its own database in a temporary folder.
pub struct TestServer {
    /// The running node (taken by `stop`).
    pub server: Option<Server>,
    /// The database file.
    pub db_path: PathBuf,
    /// Keeps the folder alive.
    pub dir: tempfile::TempDir,
    auth: std::sync::Arc<Authenticator>,
}

impl TestServer {
    /// A chat server on a new database.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A chat server on a new database, with the config adjusted.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("db.sqlite3");
        Self::start_on(dir, db_path, SECRET, adjust).await
    }

    /// A chat server on an existing database file.
    pub async fn start_on(
        dir: tempfile::TempDir,
        db_path: PathBuf,
        secret: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = chat_config(&db_path, secret);
        adjust(&mut config);
        let auth = Authenticator::new(&config.auth).unwrap();
        let server = Server::start(config).await.expect("the server starts");
        Self {
            server: Some(server),
            db_path,
            dir,
            auth,
        }
    }

    /// The node.
    pub fn node(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    /// `ws://.../ws/<room>/?token=<token>` (no query when `token` is none).
    pub fn url(&self, room: &str, token: Option<&str>) -> String {
        let addr = self.node().local_addr();
        match token {
            Some(token) => format!("ws://{addr}/ws/{room}/?token={token}"),
            None => format!("ws://{addr}/ws/{room}/"),
        }
    }

    /// An access token for a user id, signed with the server's secret.
    pub fn token(&self, user_id: &str) -> String {
        self.auth.mint(user_id)
    }

    /// Makes conversations with members and tokens in the database.
    pub fn seed(&self, rooms: usize, users_per_room: usize) -> Plan {
        let mut conn = rusqlite::Connection::open(&self.db_path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        seed(
            &mut conn,
            rooms,
            users_per_room,
            |id| self.auth.mint(id),
            |_| {},
        )
        .unwrap()
    }

    /// A connection to the database, for checking what was written.
    pub fn db(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    /// Rows in `chat_conversationmessage`.
    pub fn message_count(&self) -> i64 {
        self.db()
            .query_row("SELECT count(*) FROM chat_conversationmessage", [], |row| {
                row.get(0)
            })
            .unwrap()
    }

    /// A counter's value from `/metrics`.
    pub fn metric(&self, name: &str) -> i64 {
        let text = self.node().services().metrics.render();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// Shuts the node down gracefully.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// A WebSocket client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a handshake went.
#[derive(Debug)]
pub enum Refused {
    /// The server answered with this HTTP status instead of 101.
    Status(u16),
    /// Something else went wrong.
    Other(String),
}

/// Connects, expecting the handshake to succeed.
pub async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|err| panic!("connecting to {url}: {err:?}"))
}

/// Connects; a refused handshake gives its HTTP status.
pub async fn try_connect(url: &str) -> Result<Client, Refused> {
    match tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url)).await {
        Err(_) => Err(Refused::Other("handshake timed out".into())),
        Ok(Ok((ws, _response))) => Ok(Client { ws }),
        Ok(Err(tungstenite::Error::Http(response))) => {
            Err(Refused::Status(response.status().as_u16()))
        }
        Ok(Err(err)) => Err(Refused::Other(err.to_string())),
    }
}

/// Connects, expecting an HTTP status instead of the upgrade.
pub async fn refused_status(url: &str) -> u16 {
    match try_connect(url).await {
        Err(Refused::Status(status)) => status,
        Err(other) => panic!("{url}: expected an HTTP refusal, got {other:?}"),
        Ok(_) => panic!("{url}: the handshake was accepted"),
    }
}

/// The reference client's message.
pub fn chat_message(conversation_id: &str, sent_to_id: &str, name: &str, body: &str) -> String {
    serde_json::json!({
        "event": "chat_message",
        "data": {
            "conversation_id": conversation_id,
            "sent_to_id": sent_to_id,
            "name": name,
            "body": body,
        }
    })
    .to_string()
}

impl Client {
    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("sending");
    }

    /// Sends any frame.
    pub async fn send(&mut self, message: Message) {
        self.ws.send(message).await.expect("sending");
    }

    /// The next text frame, parsed as JSON; panics on a timeout or close.
    pub async fn next_json(&mut self) -> Json {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a message within the patience")
                .expect("the connection is open")
                .expect("a valid frame");
            match frame {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Asserts that nothing arrives for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(frame) = tokio::time::timeout(quiet, self.ws.next()).await {
            panic!("expected silence, got {frame:?}");
        }
    }

    /// Waits for the server's close frame and returns its code (1006 when the
    /// connection dropped without one).
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a close within the patience")
            {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map_or(1005, |frame| u16::from(frame.code));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return 1006,
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Signs arbitrary claims as simplejwt would (HS256, `{"alg","typ"}` header),
/// independently of the host's own minting code.
pub fn sign_claims(secret: &str, claims: &Json) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// simplejwt's access-token claims for a user id (hyphenated UUID).
pub fn access_claims(user_id: &str, exp: i64) -> Json {
    serde_json::json!({
        "token_type": "access",
        "exp": exp,
        "iat": exp - 3600,
        "jti": uuid::Uuid::new_v4().simple().to_string(),
        "user_id": user_id,
    })
}

/// Sends one HTTP/1.1 request and returns the status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("a response")
        .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}
