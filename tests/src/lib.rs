//! The test harness: a real consumer-host on `127.0.0.1:0` with the real chat
//! guest and a real SQLite file, and real WebSocket clients.
//!
//! Guests are built from source by this crate's build script; their
//! components are in `GUEST_DIST`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use consumer_host::Authenticator;
use consumer_host::Server;
use consumer_host::config::{Config, ConsumerConfig, RouteConfig};
use consumer_host::seed::{Plan, seed};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value as Json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod languages;
pub mod nodes;
pub mod postgres;
pub mod raw;

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
            read: vec!["chat_conversation_users".into()],
            write: vec!["chat_conversationmessage".into()],
            ..ConsumerConfig::new(guest("chat"))
        },
    );
    // Small pools: many test servers run at once in one process.
    config.runtime.max_instances = 200;
    config
}

/// Server logs in test output, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
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
        init_logging();
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
        metric_of(self.node(), name)
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

/// A counter's value in a node's `/metrics` text; panics when it is missing.
pub fn metric_of(server: &Server, name: &str) -> i64 {
    server
        .metrics_text()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
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

/// Sends one HTTP/1.1 GET and returns the status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[], b"").await
}

/// Sends one HTTP/1.1 request with a body and headers; returns the status and body.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut response))
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

/// Steady chat traffic: every member of every room sends a message every
/// `interval` until stopped, and everything each member receives is kept.
///
/// Each member writes and reads independently, as a browser does: a member
/// whose writes wait (the server reads slowly under overload) still reads
/// everything it is sent.
pub struct Traffic {
    stop: tokio::sync::watch::Sender<bool>,
    members: Vec<tokio::task::JoinHandle<MemberLog>>,
    started: std::time::Instant,
}

/// What one member sent and received.
#[derive(Debug, Default)]
pub struct MemberLog {
    /// The member's room.
    pub room: String,
    /// Bodies sent, with the time since the traffic started.
    pub sent: Vec<(String, Duration)>,
    /// Frames received (chat frames only).
    pub received: Vec<Json>,
    /// When each frame arrived, since the traffic started.
    pub received_at: Vec<Duration>,
    /// How the connection ended, if it ended before the traffic stopped.
    pub closed_early: Option<String>,
}

/// How long members keep reading after the traffic stops, at most, for
/// what their room sent to reach them (an overloaded node may have a
/// backlog of accepted messages to save and deliver).
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// What a room's members have sent so far, and how many still send.
#[derive(Default)]
struct RoomTally {
    sent: std::sync::atomic::AtomicUsize,
    sending: std::sync::atomic::AtomicUsize,
}

impl RoomTally {
    /// Whether a member that has received `received` frames has everything
    /// its room sent (once nobody sends any more).
    fn heard_all(&self, received: usize) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.sending.load(SeqCst) == 0 && received >= self.sent.load(SeqCst)
    }
}

impl Traffic {
    /// Connects every member of `plan` to `server_url` (`ws://host:port`)
    /// and starts sending.
    pub async fn start(server_url: &str, plan: &Plan, interval: Duration) -> Self {
        Self::start_spread(&[server_url.to_string()], plan, interval).await
    }

    /// Like [`Traffic::start`], with the members of each room connected to
    /// the nodes in turn (member `n` of a room to node `n % nodes`).
    pub async fn start_spread(nodes: &[String], plan: &Plan, interval: Duration) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // Everyone joins before anyone speaks, so every member hears every message.
        let mut joined = Vec::new();
        for room in &plan.rooms {
            let tally = std::sync::Arc::new(RoomTally::default());
            for (index, user) in room.users.iter().enumerate() {
                let server_url = &nodes[index % nodes.len()];
                let url = format!("{server_url}/ws/{}/?token={}", room.id, user.token);
                let ws = connect(&url).await.ws;
                let to = room.users[(index + 1) % room.users.len()].id.clone();
                tally
                    .sending
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                joined.push((
                    ws,
                    to,
                    room.id.clone(),
                    user.id[..8].to_string(),
                    tally.clone(),
                ));
            }
        }
        let started = std::time::Instant::now();
        let mut members = Vec::new();
        for (ws, to, room_id, me, tally) in joined {
            let (sink, stream) = ws.split();
            let sender = tokio::spawn(send_until_stopped(
                sink,
                stopped.clone(),
                interval,
                started,
                (room_id.clone(), to, me),
                tally.clone(),
            ));
            let reader = read_until_heard(stream, stopped.clone(), started, room_id, tally);
            members.push(tokio::spawn(async move {
                let mut log = reader.await;
                let (mut sink, sent, failed) = sender.await.expect("the sender");
                log.sent = sent;
                if log.closed_early.is_none() {
                    log.closed_early = failed;
                }
                let _ = sink.close().await;
                log
            }));
        }
        Self {
            stop,
            members,
            started,
        }
    }

    /// Time since the traffic started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops sending, waits for the last deliveries, and returns every log.
    pub async fn stop(self) -> Vec<MemberLog> {
        let _ = self.stop.send(true);
        let mut logs = Vec::new();
        for member in self.members {
            logs.push(member.await.unwrap());
        }
        logs
    }
}

type WsSink = futures_util::stream::SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type WsStream = futures_util::stream::SplitStream<WebSocketStream<MaybeTlsStream<TcpStream>>>;

/// One member's writes: a message every `interval` until the traffic stops
/// (or a write fails). Returns the sink, what was sent, and why it stopped
/// early, if it did.
async fn send_until_stopped(
    mut sink: WsSink,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    interval: Duration,
    started: std::time::Instant,
    (room_id, to, me): (String, String, String),
    tally: std::sync::Arc<RoomTally>,
) -> (WsSink, Vec<(String, Duration)>, Option<String>) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut ticker = tokio::time::interval(interval);
    let mut sent = Vec::new();
    let mut failed = None;
    loop {
        tokio::select! {
            biased;
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    break;
                }
            }
            _ = ticker.tick() => {
                let body = format!("{me}-{}", sent.len());
                sent.push((body.clone(), started.elapsed()));
                tally.sent.fetch_add(1, SeqCst);
                if let Err(err) = sink.send(Message::text(chat_message(&room_id, &to, "", &body))).await {
                    failed = Some(format!("send failed: {err}"));
                    break;
                }
            }
        }
    }
    tally.sending.fetch_sub(1, SeqCst);
    (sink, sent, failed)
}

/// One member's reads: everything until the traffic stopped and the member
/// heard as many messages as its room sent (or [`DRAIN_LIMIT`] passed).
async fn read_until_heard(
    mut stream: WsStream,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    started: std::time::Instant,
    room: String,
    tally: std::sync::Arc<RoomTally>,
) -> MemberLog {
    let mut log = MemberLog {
        room,
        ..MemberLog::default()
    };
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut look = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            changed = stopped.changed(), if drain_until.is_none() => {
                if changed.is_err() || *stopped.borrow() {
                    drain_until = Some(tokio::time::Instant::now() + DRAIN_LIMIT);
                }
            }
            _ = look.tick(), if drain_until.is_some() => {
                if tally.heard_all(log.received.len())
                    || drain_until.is_some_and(|until| tokio::time::Instant::now() >= until)
                {
                    break;
                }
            }
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let frame: Json = serde_json::from_str(&text).expect("JSON");
                    if frame.get("type").is_some_and(|kind| kind == "error") {
                        log.closed_early = Some(format!("error frame: {frame}"));
                    }
                    log.received.push(frame);
                    log.received_at.push(started.elapsed());
                }
                Some(Ok(Message::Close(close))) => {
                    log.closed_early = Some(format!("closed: {close:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    log.closed_early = Some(format!("error: {err}"));
                    break;
                }
                None => {
                    log.closed_early = Some("connection dropped".into());
                    break;
                }
            },
        }
    }
    log
}

/// Delivery latencies in the logs (receive time minus send time), sorted.
pub fn latencies(logs: &[MemberLog]) -> Vec<Duration> {
    use std::collections::HashMap;
    let sent_at: HashMap<&str, Duration> = logs
        .iter()
        .flat_map(|log| log.sent.iter().map(|(body, at)| (body.as_str(), *at)))
        .collect();
    let mut out: Vec<Duration> = logs
        .iter()
        .flat_map(|log| log.received.iter().zip(&log.received_at))
        .filter_map(|(frame, at)| Some(at.saturating_sub(*sent_at.get(frame["body"].as_str()?)?)))
        .collect();
    out.sort();
    out
}

/// Checks that every message sent in a room reached every member of the
/// room exactly once and that no connection ended early; returns how many
/// messages were sent.
pub fn assert_exactly_once(logs: &[MemberLog]) -> usize {
    use std::collections::HashMap;
    let mut sent_in_room: HashMap<&str, Vec<&str>> = HashMap::new();
    for log in logs {
        assert!(
            log.closed_early.is_none(),
            "a connection ended early: {:?}",
            log.closed_early
        );
        sent_in_room
            .entry(&log.room)
            .or_default()
            .extend(log.sent.iter().map(|(body, _)| body.as_str()));
    }
    for log in logs {
        let mut got: HashMap<&str, usize> = HashMap::new();
        for frame in &log.received {
            *got.entry(frame["body"].as_str().expect("a body"))
                .or_default() += 1;
        }
        let expected = &sent_in_room[log.room.as_str()];
        for body in expected {
            assert_eq!(
                got.get(body).copied().unwrap_or(0),
                1,
                "{body} delivered {:?} times",
                got.get(body)
            );
        }
        assert_eq!(
            got.len(),
            expected.len(),
            "deliveries of messages never sent"
        );
    }
    sent_in_room.values().map(Vec::len).sum()
}

impl TestServer {
    /// How many times each body was saved in `chat_conversationmessage`.
    pub fn saved_bodies(&self) -> std::collections::HashMap<String, i64> {
        let conn = self.db();
        let mut stmt = conn
            .prepare("SELECT body, count(*) FROM chat_conversationmessage GROUP BY body")
            .unwrap();
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// `ws://host:port` of the node.
    pub fn ws_base(&self) -> String {
        format!("ws://{}", self.node().local_addr())
    }
}

/// Checks that every message in the logs was saved exactly once.
pub fn assert_saved_once(server: &TestServer, logs: &[MemberLog]) {
    assert_bodies_saved_once(&server.saved_bodies(), logs);
}

/// Checks that every message in the logs is among `saved` (body to the
/// times it was saved) exactly once, and that no row is traffic never sent.
pub fn assert_bodies_saved_once(
    saved: &std::collections::HashMap<String, i64>,
    logs: &[MemberLog],
) {
    let mut sent = 0;
    for log in logs {
        for (body, _) in &log.sent {
            assert_eq!(
                saved.get(body).copied(),
                Some(1),
                "{body} saved {:?} times",
                saved.get(body)
            );
            sent += 1;
        }
    }
    // Rows shaped like traffic (`<8 hex>-<n>`) that no member sent.
    let traffic_rows = saved
        .keys()
        .filter(|body| {
            body.split_once('-').is_some_and(|(who, n)| {
                who.len() == 8
                    && who.bytes().all(|b| b.is_ascii_hexdigit())
                    && n.parse::<u64>().is_ok()
            })
        })
        .count();
    assert_eq!(traffic_rows, sent, "rows for messages never sent");
}
