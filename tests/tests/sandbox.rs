//! Hostile guests, clients and tokens: a table of cases, each with the
//! outcome it must have, run against one server while well-behaved clients in
//! another room chat the whole time. Every case must end the way its row
//! says, write nothing it should not, and leave those clients served.

use std::time::Duration;

use consumer_host::config::{Config, ConsumerConfig, RouteConfig};
use consumer_host::seed::Plan;
use consumer_host_tests::raw::{
    self, BINARY, CONTINUATION, CONTINUATION_LAST, Outcome, TEXT, TEXT_FIRST,
};
use consumer_host_tests::{
    SECRET, TestServer, Traffic, access_claims, assert_exactly_once, assert_saved_once,
    chat_message, guest, latencies, sign_claims, unix_now,
};
use serde_json::Value as Json;

const ALLOWED_ORIGIN: &str = "https://app.example.com";
const MAX_MESSAGE: usize = 16 * 1024;
const WAIT: Duration = Duration::from_secs(5);

fn configure(config: &mut Config) {
    let limits = &mut config.limits;
    limits.max_message_bytes = MAX_MESSAGE;
    limits.handshake_timeout_ms = 1_000;
    limits.ping_interval_ms = 250;
    limits.idle_timeout_ms = 1_000;
    limits.max_connections_per_user = 3;
    limits.messages_per_second = 50.0;
    limits.message_burst = 20;
    limits.send_queue = 64;
    limits.allowed_origins = vec![ALLOWED_ORIGIN.into()];
    config.layer.mailbox_capacity = 64;
    config.auth.subprotocol = Some("access_token".into());
    config.database.query_timeout_ms = 200;
    config.routes.insert(
        0,
        RouteConfig {
            path: "hostile/".into(),
            consumer: "hostile".into(),
        },
    );
    let mut hostile = ConsumerConfig {
        read: vec!["chat_conversation_users".into()],
        write: vec!["chat_conversationmessage".into()],
        ..ConsumerConfig::new(guest("hostile"))
    };
    hostile.sandbox.event_deadline_ms = 50;
    hostile.sandbox.event_wall_ms = 1_000;
    hostile.sandbox.memory_bytes = 8 * 1024 * 1024;
    config.consumers.insert("hostile".into(), hostile);
}

/// What one case does.
enum Probe {
    /// Connects to the hostile consumer and sends it a command.
    Guest(&'static str),
    /// Connects to the hostile consumer with a query string.
    GuestConnect(&'static str),
    /// A handshake on the chat route with this token (none: no token) and headers.
    Handshake(Option<String>, Vec<(&'static str, String)>),
    /// Raw bytes instead of a proper request.
    Bytes(Vec<u8>),
    /// A proper handshake as a member of the probe room, then these raw frames.
    Frames(Vec<Vec<u8>>),
    /// A proper handshake as a member of the probe room, then silence.
    Silence,
    /// A chat message from a member of the probe room.
    Chat(String),
}

/// How a case must end.
#[derive(Debug)]
enum Expect {
    /// An HTTP status instead of the upgrade.
    Status(u16),
    /// A close frame with this code.
    Close(u16),
    /// The TCP connection closed (or an HTTP status, for a request cut short).
    Dropped,
    /// A text reply containing this, and the connection stays open.
    Reply(&'static str),
    /// The message is delivered back with this body.
    Delivered(&'static str),
}

struct Case {
    name: &'static str,
    probe: Probe,
    expect: Expect,
    /// Rows the case may write.
    writes: i64,
}

fn case(name: &'static str, probe: Probe, expect: Expect) -> Case {
    Case {
        name,
        probe,
        expect,
        writes: 0,
    }
}

struct Context<'a> {
    server: &'a TestServer,
    probe_room: String,
    member: (String, String),
    other_member: String,
}

impl Context<'_> {
    fn chat_path(&self, token: Option<&str>) -> String {
        match token {
            Some(token) => format!("/ws/{}/?token={token}", self.probe_room),
            None => format!("/ws/{}/", self.probe_room),
        }
    }
}

async fn run(context: &Context<'_>, probe: &Probe) -> (Outcome, Option<String>) {
    let addr = context.server.node().local_addr();
    match probe {
        Probe::Guest(command) => {
            let path = format!("/hostile/?token={}", context.member.1);
            let mut ws = raw::handshake(addr, &path, &[])
                .await
                .unwrap_or_else(|o| panic!("handshake: {o:?}"));
            ws.frame(TEXT, command.as_bytes(), true).await;
            let (outcome, texts) = ws.collect(WAIT, Duration::from_millis(300)).await;
            if outcome == Outcome::Silent {
                // Still open: an echo comes back.
                ws.frame(TEXT, b"echo:still open", true).await;
                let echo = ws.text(WAIT).await;
                assert!(
                    echo.is_some_and(|echo| echo.contains("still open")),
                    "{command}: the connection stayed usable"
                );
            }
            (outcome, texts.into_iter().next())
        }
        Probe::GuestConnect(query) => {
            match raw::handshake(addr, &format!("/hostile/?{query}"), &[]).await {
                Ok(_) => (Outcome::Status(101), None),
                Err(outcome) => (outcome, None),
            }
        }
        Probe::Handshake(token, headers) => {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            match raw::handshake(addr, &context.chat_path(token.as_deref()), &headers).await {
                Ok(_) => (Outcome::Status(101), None),
                Err(outcome) => (outcome, None),
            }
        }
        Probe::Bytes(bytes) => {
            let mut ws = raw::RawWs::connect_and_write(addr, bytes).await;
            (ws.read_response(WAIT).await, None)
        }
        Probe::Frames(frames) => {
            let mut ws = raw::handshake(addr, &context.chat_path(Some(&context.member.1)), &[])
                .await
                .unwrap_or_else(|o| panic!("handshake: {o:?}"));
            for frame in frames {
                ws.write(frame).await;
            }
            let (outcome, texts) = ws.collect(WAIT, Duration::from_millis(300)).await;
            (outcome, texts.into_iter().next())
        }
        Probe::Silence => {
            let mut ws = raw::handshake(addr, &context.chat_path(Some(&context.member.1)), &[])
                .await
                .unwrap_or_else(|o| panic!("handshake: {o:?}"));
            (ws.outcome(WAIT).await, None)
        }
        Probe::Chat(body) => {
            let mut ws = raw::handshake(addr, &context.chat_path(Some(&context.member.1)), &[])
                .await
                .unwrap_or_else(|o| panic!("handshake: {o:?}"));
            let message = chat_message(&context.probe_room, &context.other_member, "", body);
            ws.frame(TEXT, message.as_bytes(), true).await;
            let (outcome, texts) = ws.collect(WAIT, Duration::from_millis(300)).await;
            (outcome, texts.into_iter().next())
        }
    }
}

fn check(name: &str, expect: &Expect, outcome: &Outcome, reply: Option<&str>) {
    match expect {
        Expect::Status(status) => assert_eq!(outcome, &Outcome::Status(*status), "{name}"),
        Expect::Close(code) => {
            assert_eq!(outcome, &Outcome::Close(*code), "{name} (reply {reply:?})")
        }
        Expect::Dropped => assert!(
            matches!(outcome, Outcome::Dropped | Outcome::Status(400 | 408)),
            "{name}: {outcome:?}"
        ),
        Expect::Reply(text) => {
            let reply = reply.unwrap_or_else(|| panic!("{name}: no reply, {outcome:?}"));
            assert!(reply.contains(text), "{name}: {reply}");
        }
        Expect::Delivered(body) => {
            let reply = reply.unwrap_or_else(|| panic!("{name}: nothing delivered, {outcome:?}"));
            let frame: Json = serde_json::from_str(reply).unwrap();
            assert_eq!(frame["body"], *body, "{name}: {frame}");
        }
    }
}

fn fragmented(message: &str, parts: usize) -> Vec<Vec<u8>> {
    let bytes = message.as_bytes();
    let size = bytes.len().div_ceil(parts);
    let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let first = match (i, i + 1 == chunks.len()) {
                (0, _) => TEXT_FIRST,
                (_, true) => CONTINUATION_LAST,
                _ => CONTINUATION,
            };
            raw::encode(first, chunk, true)
        })
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A WebSocket handshake request for `path`, as raw bytes.
fn upgrade_request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

fn cases(
    plan: &Plan,
    server: &TestServer,
    canary_room: &str,
    deleted: &str,
    inactive: &str,
    outsider: &str,
) -> Vec<Case> {
    let room = &plan.rooms[0];
    let member = &room.users[0];
    let now = unix_now();
    let good = access_claims(&member.id, now + 3600);
    let with = |edit: &dyn Fn(&mut Json)| {
        let mut claims = good.clone();
        edit(&mut claims);
        sign_claims(SECRET, &claims)
    };
    let good_token = sign_claims(SECRET, &good);
    let (head, rest) = good_token.split_once('.').unwrap();
    let signature = rest.split_once('.').unwrap().1;
    let mut tampered = good.clone();
    tampered["user_id"] = plan.rooms[0].users[1].id.clone().into();
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let chat = chat_message(&room.id, &room.users[1].id, "", "fragmented hello");
    let token = Some(good_token.clone());
    let no_headers = Vec::new;
    vec![
        // Guests: each fault closes only its own connection, with 1011.
        case("guest panics", Probe::Guest("trap"), Expect::Close(1011)),
        case("guest aborts", Probe::Guest("abort"), Expect::Close(1011)),
        case("guest loops forever", Probe::Guest("loop"), Expect::Close(1011)),
        case("guest allocates without end", Probe::Guest("memory"), Expect::Close(1011)),
        case("guest recurses without end", Probe::Guest("recurse"), Expect::Close(1011)),
        case("guest floods its client", Probe::Guest("flood:100000"), Expect::Close(1011)),
        case("guest closes with a reserved code", Probe::Guest("close:1006"), Expect::Close(1011)),
        case("guest closes with its own code", Probe::Guest("close:4000"), Expect::Close(4000)),
        case("guest sends an oversize message", Probe::Guest("big:100000"), Expect::Reply("TooLarge")),
        case("guest stores a huge state", Probe::Guest("state:1000000"), Expect::Reply("65536")),
        case("guest joins an invalid group", Probe::Guest("group:no spaces!"), Expect::Reply("InvalidName")),
        case("guest traps in connect", Probe::GuestConnect("trap=1"), Expect::Status(500)),
        case("guest refuses in connect", Probe::GuestConnect("refuse=1"), Expect::Status(403)),
        // Guests and the database: only the grant, read-only queries, bound values.
        case("guest reads passwords", Probe::Guest("query:SELECT password FROM useraccount_user"), Expect::Reply("AccessDenied")),
        case("guest joins to a table it may not read", Probe::Guest("query:SELECT u.user_id FROM chat_conversation_users u JOIN useraccount_user a ON a.id = u.user_id"), Expect::Reply("AccessDenied")),
        case("guest reads the schema", Probe::Guest("query:SELECT sql FROM sqlite_schema"), Expect::Reply("AccessDenied")),
        case("guest runs a pragma", Probe::Guest("query:PRAGMA table_info(useraccount_user)"), Expect::Reply("AccessDenied")),
        case("guest attaches a database", Probe::Guest("query:ATTACH DATABASE '/tmp/consumer-host-attack.db' AS attack"), Expect::Reply("Error")),
        case("guest deletes through db-query", Probe::Guest("query:DELETE FROM chat_conversation_users"), Expect::Reply("Error")),
        case("guest inserts through db-query", Probe::Guest("query:INSERT INTO chat_conversationmessage (id, body) VALUES ('x', 'y')"), Expect::Reply("Error")),
        case("guest stacks statements", Probe::Guest("query:SELECT 1; DROP TABLE chat_conversation_users"), Expect::Reply("DbError")),
        case("guest runs a query forever", Probe::Guest("query:WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT sum(x) FROM c"), Expect::Reply("Timeout")),
        case("guest queries a missing table", Probe::Guest("query:SELECT * FROM no_such_table"), Expect::Reply("error")),
        case("guest passes SQL injection as a parameter", Probe::Guest("query-param:' OR 1=1 --"), Expect::Reply("Integer(0)")),
        case("guest inserts into a table it may not write", Probe::Guest("insert:useraccount_user|pwned"), Expect::Reply("AccessDenied")),
        case("guest inserts into the schema", Probe::Guest("insert:sqlite_schema|pwned"), Expect::Reply("error")),
        case("guest inserts an incomplete row", Probe::Guest("insert:chat_conversationmessage|incomplete"), Expect::Reply("Constraint")),
        // The functions a guest may call are listed; the FTS3 tokenizer hook
        // hands out and takes raw pointers.
        case("guest reads a host pointer through fts3_tokenizer", Probe::Guest("query:SELECT fts3_tokenizer('simple')"), Expect::Reply("AccessDenied")),
        case("guest registers a pointer of its choosing", Probe::Guest("query-params:SELECT fts3_tokenizer(?1, ?2)|evil|x:4141414141414141"), Expect::Reply("AccessDenied")),
        case("guest loads an extension", Probe::Guest("query:SELECT load_extension('/tmp/evil.so')"), Expect::Reply("AccessDenied")),
        // Results and values are capped while they are made.
        case("guest makes a gigabyte blob", Probe::Guest("query:SELECT zeroblob(999999999)"), Expect::Reply("max_value_bytes")),
        case("guest collects blobs without end", Probe::Guest("query:WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x, zeroblob(1000000) FROM c"), Expect::Reply("max_query_bytes")),
        case("guest collects rows without end", Probe::Guest("query:WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"), Expect::Reply("max_query_rows")),
        // Groups are per consumer: the chat's group names mean nothing here.
        case("guest forges a chat message into a chat room", Probe::Guest(format!("group-send:chat_{canary_room}|{{\"type\":\"chat.message\",\"body\":\"forged\",\"name\":\"Admin\"}}").leak()), Expect::Reply("ok")),
        case("guest forges a host event", Probe::Guest("group-send:anything|{\"type\":\"host.recheck\"}"), Expect::Reply("InvalidEvent")),
        // Host calls count against an event's budgets.
        case("guest waits in slow queries forever", Probe::Guest("slow-queries:1000"), Expect::Close(1011)),
        case("guest floods a group", Probe::Guest("group-flood:100000"), Expect::Close(1011)),
        case("guest joins groups without end", Probe::Guest("group-churn:100000"), Expect::Close(1011)),
        case("guest calls the database without end", Probe::Guest("db-flood:100000"), Expect::Close(1011)),
        case("guest floods the log", Probe::Guest("log-flood:5000"), Expect::Reply("done")),
        case("the guest still serves after all that", Probe::Guest("echo:alive"), Expect::Reply("alive")),
        // Clients.
        case("a path of 60,000 bytes", Probe::Bytes(upgrade_request(&format!("/ws/{}", "a".repeat(60_000)))), Expect::Status(414)),
        case("a query of 60,000 bytes", Probe::Bytes(upgrade_request(&format!("/ws/{}/?token={}", room.id, "a".repeat(60_000)))), Expect::Status(414)),
        case("garbage instead of a handshake", Probe::Bytes(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n".to_vec()), Expect::Status(400)),
        case("half a request, then nothing", Probe::Bytes(format!("GET /ws/{}/ HTTP/1.1\r\nHost: x\r\n", room.id).into_bytes()), Expect::Dropped),
        case("a connection that says nothing", Probe::Bytes(Vec::new()), Expect::Dropped),
        case("no Sec-WebSocket-Key", Probe::Bytes(format!("GET /ws/{}/?token={good_token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", room.id).into_bytes()), Expect::Status(400)),
        case("an old WebSocket version", Probe::Handshake(token.clone(), vec![("Sec-WebSocket-Version", "8".into())]), Expect::Status(400)),
        case("an origin not allowed", Probe::Handshake(token.clone(), vec![("Origin", "https://evil.example.net".into())]), Expect::Status(403)),
        case("an allowed origin", Probe::Handshake(token.clone(), vec![("Origin", ALLOWED_ORIGIN.into())]), Expect::Status(101)),
        case("an oversize frame", Probe::Frames(vec![raw::encode(TEXT, &vec![b'a'; MAX_MESSAGE + 1], true)]), Expect::Close(1009)),
        case("an oversize message in fragments", Probe::Frames(fragmented(&"b".repeat(MAX_MESSAGE * 2), 4)), Expect::Close(1009)),
        case("text that is not UTF-8", Probe::Frames(vec![raw::encode(TEXT, b"\xff\xfe\xfd not utf-8", true)]), Expect::Close(1007)),
        case("an unmasked frame", Probe::Frames(vec![raw::encode(TEXT, b"{}", false)]), Expect::Close(1002)),
        case("reserved bits set", Probe::Frames(vec![raw::encode(0xC1, b"{}", true)]), Expect::Close(1002)),
        case("an unknown opcode", Probe::Frames(vec![raw::encode(0x83, b"{}", true)]), Expect::Close(1002)),
        case("a ping too long for a control frame", Probe::Frames(vec![raw::encode(0x89, &[0u8; 200], true)]), Expect::Close(1002)),
        case("a continuation with nothing to continue", Probe::Frames(vec![raw::encode(CONTINUATION_LAST, b"x", true)]), Expect::Close(1002)),
        case("a binary frame", Probe::Frames(vec![raw::encode(BINARY, b"\x00\x01", true)]), Expect::Reply("binary_frame")),
        Case {
            writes: 1,
            ..case("a fragmented message", Probe::Frames(fragmented(&chat, 3)), Expect::Delivered("fragmented hello"))
        },
        case("a client that never answers pings", Probe::Silence, Expect::Dropped),
        case("a frame cut off mid-way", Probe::Frames(vec![raw::encode(TEXT, &[b'c'; 1000], true)[..40].to_vec()]), Expect::Dropped),
        Case {
            writes: 1,
            ..case("SQL injection in a chat body", Probe::Chat("'); DROP TABLE chat_conversationmessage; --".into()), Expect::Delivered("'); DROP TABLE chat_conversationmessage; --"))
        },
        // Tokens: none of these is a login; the chat refuses anonymous connections.
        case("no token", Probe::Handshake(None, no_headers()), Expect::Status(403)),
        case("alg none", Probe::Handshake(Some(format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(good.to_string().as_bytes()))), no_headers()), Expect::Status(403)),
        case("an algorithm not in the list", Probe::Handshake(Some(hs512), no_headers()), Expect::Status(403)),
        case("the wrong key", Probe::Handshake(Some(sign_claims("not-the-secret", &good)), no_headers()), Expect::Status(403)),
        case("a tampered payload", Probe::Handshake(Some(format!("{head}.{}.{signature}", b64(tampered.to_string().as_bytes()))), no_headers()), Expect::Status(403)),
        case("expired", Probe::Handshake(Some(with(&|c| c["exp"] = (now - 10).into())), no_headers()), Expect::Status(403)),
        case("not yet valid", Probe::Handshake(Some(with(&|c| c["nbf"] = (now + 600).into())), no_headers()), Expect::Status(403)),
        case("a refresh token", Probe::Handshake(Some(with(&|c| c["token_type"] = "refresh".into())), no_headers()), Expect::Status(403)),
        case("no user_id", Probe::Handshake(Some(with(&|c| { c.as_object_mut().unwrap().remove("user_id"); })), no_headers()), Expect::Status(403)),
        case("a user_id that is SQL", Probe::Handshake(Some(with(&|c| c["user_id"] = "1' OR '1'='1".into())), no_headers()), Expect::Status(403)),
        case("a deleted user", Probe::Handshake(Some(server.token(deleted)), no_headers()), Expect::Status(403)),
        case("an inactive user", Probe::Handshake(Some(server.token(inactive)), no_headers()), Expect::Status(403)),
        case("a user who is not a member", Probe::Handshake(Some(server.token(outsider)), no_headers()), Expect::Status(403)),
        case("a token that is not base64", Probe::Handshake(Some("e30.%%%%.e30".into()), no_headers()), Expect::Status(403)),
        case("the token in the subprotocol header", Probe::Handshake(None, vec![("Sec-WebSocket-Protocol", format!("access_token, {good_token}"))]), Expect::Status(101)),
        case("a bad token in the subprotocol header", Probe::Handshake(None, vec![("Sec-WebSocket-Protocol", format!("access_token, {}", sign_claims("wrong", &good)))]), Expect::Status(403)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_clients_and_tokens() {
    let server = TestServer::start_with(configure).await;
    let canary_plan = server.seed(2, 2);
    let plan = server.seed(1, 3);
    let strangers = server.seed(1, 3);
    let (deleted, inactive, outsider) = (
        &strangers.rooms[0].users[0],
        &strangers.rooms[0].users[1],
        &strangers.rooms[0].users[2],
    );
    let db = server.db();
    db.execute(
        "DELETE FROM chat_conversation_users WHERE user_id = ?1",
        [deleted.id.replace('-', "")],
    )
    .unwrap();
    db.execute(
        "DELETE FROM useraccount_user WHERE id = ?1",
        [deleted.id.replace('-', "")],
    )
    .unwrap();
    db.execute(
        "UPDATE useraccount_user SET is_active = 0 WHERE id = ?1",
        [inactive.id.replace('-', "")],
    )
    .unwrap();
    let canary_ids: Vec<String> = canary_plan
        .rooms
        .iter()
        .flat_map(|room| room.users.iter().map(|user| user.id.replace('-', "")))
        .collect();
    let written_by_others = || -> i64 {
        db.query_row(
            &format!(
                "SELECT count(*) FROM chat_conversationmessage WHERE created_by_id NOT IN ({})",
                canary_ids
                    .iter()
                    .map(|id| format!("'{id}'"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            [],
            |row| row.get(0),
        )
        .unwrap()
    };

    let canary = Traffic::start(&server.ws_base(), &canary_plan, Duration::from_millis(25)).await;
    let context = Context {
        server: &server,
        probe_room: plan.rooms[0].id.clone(),
        member: (
            plan.rooms[0].users[0].id.clone(),
            plan.rooms[0].users[0].token.clone(),
        ),
        other_member: plan.rooms[0].users[1].id.clone(),
    };
    let cases = cases(
        &plan,
        &server,
        &canary_plan.rooms[0].id,
        &deleted.id,
        &inactive.id,
        &outsider.id,
    );
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut expected_writes = 0;
    for case in &cases {
        let (outcome, reply) = run(&context, &case.probe).await;
        check(case.name, &case.expect, &outcome, reply.as_deref());
        expected_writes += case.writes;
        assert_eq!(
            written_by_others(),
            expected_writes,
            "{}: rows written",
            case.name
        );
    }
    assert!(server.metric("consumer_host_guest_deadline_overruns_total") >= 1);
    assert!(server.metric("consumer_host_guest_traps_total") >= 7);
    assert!(server.metric("consumer_host_idle_timeouts_total") >= 1);

    let logs = canary.stop().await;
    assert_exactly_once(&logs);
    assert_saved_once(&server, &logs);
    let latencies = latencies(&logs);
    let p99 = latencies[latencies.len() * 99 / 100];
    // For the record (cargo test -- --nocapture): the chatting room's share.
    eprintln!(
        "the other room during the hostile suite: {} deliveries, p50 {:?}, p99 {p99:?}",
        latencies.len(),
        latencies[latencies.len() / 2]
    );
    assert!(
        p99 < Duration::from_millis(250),
        "the other room's p99 latency stayed low: {p99:?}"
    );
    let tables: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name IN ('chat_conversationmessage', 'chat_conversation_users')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(tables, 2, "no table was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits() {
    let server = TestServer::start_with(|config| {
        configure(config);
        config.limits.max_connections = 5;
    })
    .await;
    let plan = server.seed(1, 4);
    let room = &plan.rooms[0];
    let addr = server.node().local_addr();
    let path = |n: usize| format!("/ws/{}/?token={}", room.id, room.users[n].token);
    // One user: three connections, not four.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            raw::handshake(addr, &path(0), &[])
                .await
                .expect("within the user's limit"),
        );
    }
    assert_eq!(
        raw::handshake(addr, &path(0), &[]).await.err(),
        Some(Outcome::Status(429))
    );
    // The node: five connections, not six.
    held.push(raw::handshake(addr, &path(1), &[]).await.unwrap());
    held.push(raw::handshake(addr, &path(2), &[]).await.unwrap());
    assert_eq!(
        raw::handshake(addr, &path(3), &[]).await.err(),
        Some(Outcome::Status(503))
    );
    // Slots come back when connections end.
    drop(held);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match raw::handshake(addr, &path(3), &[]).await {
            Ok(_) => break,
            Err(outcome) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "slots never came back: {outcome:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(
        server.metric("consumer_host_handshakes_over_user_limit_total"),
        1
    );
    assert!(server.metric("consumer_host_handshakes_over_capacity_total") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_slowed_and_loses_nothing() {
    let server = TestServer::start_with(configure).await;
    let plan = server.seed(1, 2);
    let room = &plan.rooms[0];
    let mut flooder =
        consumer_host_tests::connect(&server.url(&room.id, Some(&room.users[0].token))).await;
    let mut peer =
        consumer_host_tests::connect(&server.url(&room.id, Some(&room.users[1].token))).await;
    let started = std::time::Instant::now();
    for n in 0..100 {
        flooder
            .send_text(&chat_message(
                &room.id,
                &room.users[1].id,
                "",
                &format!("flood-{n}"),
            ))
            .await;
    }
    for n in 0..100 {
        assert_eq!(peer.next_json().await["body"], format!("flood-{n}"));
    }
    // 100 messages at 50/s with a burst of 20 take at least 1.6 s.
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert!(server.metric("consumer_host_rate_limited_total") > 0);
    assert_eq!(server.message_count(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_and_the_room_goes_on() {
    let server = TestServer::start_with(|config| {
        configure(config);
        config.limits.messages_per_second = 0.0;
        // The socket's buffers take a few hundred frames before the queue
        // even starts to fill; a short queue keeps the test short.
        config.limits.send_queue = 16;
    })
    .await;
    let plan = server.seed(1, 3);
    let room = &plan.rooms[0];
    let addr = server.node().local_addr();
    // A reader with a tiny receive buffer that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let request = format!(
            "GET /ws/{}/?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            room.id, room.users[2].token
        );
        stalled.write_all(request.as_bytes()).await.unwrap();
    }
    let mut sender =
        consumer_host_tests::connect(&server.url(&room.id, Some(&room.users[0].token))).await;
    let mut reader =
        consumer_host_tests::connect(&server.url(&room.id, Some(&room.users[1].token))).await;
    let body = "z".repeat(12 * 1024);
    let mut sent: i64 = 0;
    // Buffers, the queue, then `delivery::STALL` (5 s) without progress; a
    // loaded machine is slow at each round trip.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while server.metric("consumer_host_slow_client_closes_total")
        + server.metric("consumer_host_mailbox_overflow_closes_total")
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled client was never closed"
        );
        sender
            .send_text(&chat_message(
                &room.id,
                &room.users[1].id,
                "",
                &format!("{sent}-{body}"),
            ))
            .await;
        sent += 1;
        let frame = reader.next_json().await;
        assert!(
            frame["body"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}-", sent - 1))
        );
        sender.next_json().await;
    }
    // The others go on: one more message reaches both.
    sender
        .send_text(&chat_message(&room.id, &room.users[1].id, "", "after"))
        .await;
    assert_eq!(reader.next_json().await["body"], "after");
    assert_eq!(server.message_count(), sent + 1);
    drop(stalled);
}

/// A server with the hostile consumer (and the chat), small budgets.
async fn hostile_server(adjust: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|config| {
        configure(config);
        adjust(config);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_cut_short_leaves_no_member_behind() {
    // `connect` joins a group, then waits in slow queries: the client gives
    // up half-way, and the handshake times out behind it. However its
    // future ends, the connection's state leaves the group.
    let server = hostile_server(|config| {
        // The handshake's timeout (1 s) ends it, not the event's own deadline.
        config
            .consumers
            .get_mut("hostile")
            .unwrap()
            .sandbox
            .event_wall_ms = 10_000;
    })
    .await;
    let addr = server.node().local_addr();
    for attempt in 0..3 {
        let group = format!("leaky-{attempt}");
        let mut ws = raw::RawWs::connect_and_write(
            addr,
            &upgrade_request(&format!("/hostile/?join={group}&slow=1")),
        )
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while consumer_host::testing::group_members(server.node(), "hostile", &group) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "connect never joined"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if attempt == 0 {
            // The client vanishes mid-handshake.
            drop(ws);
        } else {
            // The client waits: the handshake timeout (1 s here) answers.
            assert_eq!(ws.read_response(WAIT).await, raw::Outcome::Status(503));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while consumer_host::testing::group_members(server.node(), "hostile", &group) != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "attempt {attempt}: a member was left in {group}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(server.metric("consumer_host_handshakes_timed_out_total") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_free_closes_with_1013_and_still_disconnects() {
    let server = hostile_server(|config| {
        config.runtime.max_instances = 2;
        let hostile = config.consumers.get_mut("hostile").unwrap();
        // Instances are given back as soon as an event is done.
        hostile.sandbox.idle_evict_secs = 0;
        // Its `disconnect` leaves a note.
        hostile.write.push("notes".into());
    })
    .await;
    server
        .db()
        .execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .unwrap();
    let addr = server.node().local_addr();
    let mut waiting = raw::handshake(addr, "/hostile/", &[]).await.unwrap();
    // Two connections hold both instance slots in slow queries.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut holder = raw::handshake(addr, "/hostile/", &[]).await.unwrap();
        holder.frame(TEXT, b"slow-queries:3", true).await;
        holders.push(holder);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    waiting.frame(TEXT, b"echo:any room?", true).await;
    let (outcome, _) = waiting.collect(WAIT, Duration::from_millis(100)).await;
    assert_eq!(outcome, Outcome::Close(1013), "busy, not a consumer fault");
    assert_eq!(server.metric("consumer_host_guest_traps_total"), 0);
    for mut holder in holders {
        assert!(
            holder
                .text(WAIT)
                .await
                .is_some_and(|text| text.contains("done"))
        );
    }
    // Its consumer heard of the end, once an instance was free.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let notes: i64 = server
            .db()
            .query_row(
                "SELECT count(*) FROM notes WHERE body = 'disconnected 1013'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        if notes == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no disconnect ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.metric("consumer_host_instances_busy_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_logins_and_removed_users_are_closed_with_4401() {
    let server = hostile_server(|config| {
        config.auth.recheck_secs = 1;
        // These clients do not read, so they answer no ping.
        config.limits.idle_timeout_ms = 60_000;
    })
    .await;
    let plan = server.seed(1, 2);
    let room = &plan.rooms[0];
    // A token that expires in two seconds.
    let short = sign_claims(SECRET, &access_claims(&room.users[0].id, unix_now() + 2));
    let mut expiring = consumer_host_tests::connect(&server.url(&room.id, Some(&short))).await;
    // A user made inactive while connected.
    let mut deactivated =
        consumer_host_tests::connect(&server.url(&room.id, Some(&room.users[1].token))).await;
    server
        .db()
        .execute(
            "UPDATE useraccount_user SET is_active = 0 WHERE id = ?1",
            [room.users[1].id.replace('-', "")],
        )
        .unwrap();
    assert_eq!(deactivated.expect_close().await, 4401);
    assert_eq!(expiring.expect_close().await, 4401);
    assert_eq!(server.metric("consumer_host_logins_expired_total"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_flood_a_room_through_many_connections() {
    let server = hostile_server(|config| {
        config.limits.messages_per_second = 0.0;
        config.limits.user_messages_per_second = 20.0;
        config.limits.user_message_burst = 10;
        // These clients do not read, so they answer no ping.
        config.limits.idle_timeout_ms = 60_000;
    })
    .await;
    let plan = server.seed(1, 2);
    let room = &plan.rooms[0];
    let (flooder, other) = (&room.users[0], &room.users[1]);
    let mut senders = Vec::new();
    for _ in 0..3 {
        senders
            .push(consumer_host_tests::connect(&server.url(&room.id, Some(&flooder.token))).await);
    }
    let started = tokio::time::Instant::now();
    let per_connection = 20;
    for (index, sender) in senders.iter_mut().enumerate() {
        for n in 0..per_connection {
            sender
                .send_text(&chat_message(
                    &room.id,
                    &other.id,
                    "",
                    &format!("flood-{index}-{n}"),
                ))
                .await;
        }
    }
    // Three connections, one budget: 10 at once, then 20 a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_one_second = server.message_count();
    assert!(
        (10..=40).contains(&after_one_second),
        "{after_one_second} saved in the first second"
    );
    // Nothing is dropped: the flooder is read more slowly, not refused.
    let deadline = started + Duration::from_secs(10);
    while server.message_count() < 3 * per_connection {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything was saved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(2_000));
    assert!(server.metric("consumer_host_user_rate_limited_total") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_late_still_sees_why_its_message_was_refused() {
    // A browser sends a message far over the limit (more than the socket
    // buffers hold, so it is still writing) and reads the answer a moment
    // later. The server stops reading at the frame's header: a socket
    // closed with that much unread is reset, the client's write fails and
    // the close frame is lost (a browser sees 1006). The server must end
    // the stream gracefully so the write completes and the 1009 arrives.
    let server = hostile_server(|_| {}).await;
    let plan = server.seed(1, 2);
    let room = &plan.rooms[0];
    for attempt in 0..3 {
        let mut client =
            consumer_host_tests::connect(&server.url(&room.id, Some(&room.users[0].token))).await;
        let body = "x".repeat(4 * 1024 * 1024);
        client
            .send_text(&chat_message(&room.id, &room.users[1].id, "", &body))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(client.expect_close().await, 1009, "attempt {attempt}");
    }
    assert_eq!(server.message_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_the_limit_from_a_long_name_is_delivered_not_only_saved() {
    let server = hostile_server(|config| config.limits.messages_per_second = 0.0).await;
    let plan = server.seed(1, 2);
    let room = &plan.rooms[0];
    let long_name = "N".repeat(255);
    server
        .db()
        .execute(
            "UPDATE useraccount_user SET name = ?1 WHERE id = ?2",
            [long_name.as_str(), &room.users[0].id.replace('-', "")],
        )
        .unwrap();
    let mut author =
        consumer_host_tests::connect(&server.url(&room.id, Some(&room.users[0].token))).await;
    let mut reader =
        consumer_host_tests::connect(&server.url(&room.id, Some(&room.users[1].token))).await;
    let empty = chat_message(&room.id, &room.users[1].id, "", "");
    let body = "b".repeat(MAX_MESSAGE - empty.len());
    let message = chat_message(&room.id, &room.users[1].id, "", &body);
    assert_eq!(message.len(), MAX_MESSAGE);
    author.send_text(&message).await;
    for client in [&mut author, &mut reader] {
        let frame = client.next_json().await;
        assert_eq!(frame["body"].as_str().map(str::len), Some(body.len()));
        assert_eq!(frame["name"], long_name.as_str());
    }
    assert_eq!(server.message_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_public_and_tells_nothing_internal() {
    let server = hostile_server(|config| {
        config.admin.token = Some("an-admin-token-for-this-test".into());
        config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = server.node().local_addr();
    let (status, body) = consumer_host_tests::http_get(addr, "/healthz").await;
    assert_eq!(status, 200);
    let health: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert!(
        !body.contains(server.dir.path().to_str().unwrap()),
        "{body}"
    );
    assert!(!body.contains("sqlite"), "{body}");
    // The counters are on the admin listener only.
    assert_eq!(consumer_host_tests::http_get(addr, "/metrics").await.0, 404);
    let admin = server.node().admin_addr().unwrap();
    let (status, metrics) = consumer_host_tests::http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("consumer_host_connections_open"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_while_serving_is_seen_by_the_next_insert() {
    let server = hostile_server(|config| {
        config
            .consumers
            .get_mut("hostile")
            .unwrap()
            .write
            .push("notes".into());
    })
    .await;
    let addr = server.node().local_addr();
    server
        .db()
        .execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .unwrap();
    let mut ws = raw::handshake(addr, "/hostile/", &[]).await.unwrap();
    ws.frame(TEXT, b"insert-row:notes|body=first", true).await;
    assert!(ws.text(WAIT).await.unwrap().contains("ok"));
    // A migration adds a column while the server runs.
    server
        .db()
        .execute_batch("ALTER TABLE notes ADD COLUMN mood TEXT NULL")
        .unwrap();
    ws.frame(TEXT, b"insert-row:notes|body=second|mood=fine", true)
        .await;
    let reply = ws.text(WAIT).await.unwrap();
    assert!(reply.contains("ok") && reply.contains("fine"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_paths_do_not_slow_anyone_down() {
    let server = hostile_server(|_| {}).await;
    let plan = server.seed(10, 5);
    let addr = server.node().local_addr();
    // Unauthenticated requests with long paths, 50 a second, while 50
    // members connect.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attack = {
        let stop = stop.clone();
        tokio::spawn(async move {
            // Under the length cap, and routed to no consumer: the router
            // scans it all.
            let path = format!("/ws/{}", "a".repeat(7_000));
            let mut refused = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut ws = raw::RawWs::connect_and_write(addr, &upgrade_request(&path)).await;
                if ws.read_response(WAIT).await == Outcome::Status(404) {
                    refused += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            refused
        })
    };
    let started = tokio::time::Instant::now();
    for room in &plan.rooms {
        for user in &room.users {
            consumer_host_tests::connect(&server.url(&room.id, Some(&user.token))).await;
        }
    }
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(attack.await.unwrap() > 0);
    assert!(took < Duration::from_secs(3), "50 connects took {took:?}");
}
