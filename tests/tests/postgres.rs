//! PostgreSQL, the second backend: the chat on a real PostgreSQL server
//! (started by the test, see `consumer_host_tests::postgres`), the guest
//! contract kept, grants enforced by PostgreSQL's own roles, Django both
//! ways, a server restarted under traffic, and two nodes sharing nothing
//! but Redis and PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use consumer_host::config::{ConsumerConfig, RouteConfig};
use consumer_host_tests::nodes::{LAYER_KEY, Node, Redis};
use consumer_host_tests::postgres::{
    PgServer, Postgres, django_manage, django_messages, error_codes, eventually, saved_bodies,
};
use consumer_host_tests::{
    MemberLog, SECRET, Traffic, assert_bodies_saved_once, assert_exactly_once, chat_message,
    connect, guest, http_get, refused_status,
};

const CLI: &str = env!("CARGO_BIN_EXE_host-cli");

fn hex(uuid: &str) -> String {
    uuid.replace('-', "")
}

fn is_django_datetime(text: &str) -> bool {
    // YYYY-MM-DD HH:MM:SS.ffffff
    text.len() == 26
        && text.as_bytes()[10] == b' '
        && text.as_bytes()[19] == b'.'
        && text
            .bytes()
            .enumerate()
            .all(|(at, b)| matches!(at, 4 | 7 | 10 | 13 | 16 | 19) || b.is_ascii_digit())
}

fn host_cli(args: &[&str]) -> std::process::Output {
    Command::new(CLI)
        .args(args)
        .env("JWT_SECRET", SECRET)
        .output()
        .unwrap()
}

/// A new database with the chat schema, made by `consumer-host migrate`; its URL.
fn migrated_database(postgres: &Postgres, name: &str) -> String {
    let url = postgres.create_database(name);
    let migrated = host_cli(&["migrate", "--db", &url]);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_on_postgres_delivers_and_saves_rows_as_django_would() {
    let postgres = Postgres::start();
    let server = PgServer::start(&postgres, "chat").await;
    let plan = server.seed(2, 2).await;
    let room = &plan.rooms[0];
    let (alice, bob) = (&room.users[0], &room.users[1]);
    let mut alice_ws = connect(&server.url(&room.id, &alice.token)).await;
    let mut bob_ws = connect(&server.url(&hex(&room.id), &bob.token)).await;

    alice_ws
        .send_text(&chat_message(&room.id, &bob.id, "Mallory", "Hi Bob"))
        .await;
    let mut frame = serde_json::Value::Null;
    for ws in [&mut alice_ws, &mut bob_ws] {
        frame = ws.next_json().await;
        assert_eq!(frame["body"], "Hi Bob");
        assert_eq!(frame["name"], alice.name.as_str());
        assert_eq!(frame["id"].as_str().unwrap().len(), 36);
        // The same shape as on SQLite: Django's text form, UTC.
        assert!(
            is_django_datetime(frame["created_at"].as_str().unwrap()),
            "{frame}"
        );
    }
    bob_ws
        .send_text(&chat_message(&room.id, &alice.id, "", "Hi Alice"))
        .await;
    for ws in [&mut alice_ws, &mut bob_ws] {
        assert_eq!(ws.next_json().await["body"], "Hi Alice");
    }

    // Native types in the database: uuid keys, timestamptz.
    let client = postgres.client("chat").await;
    let rows = client
        .query(
            "SELECT id, conversation_id::text, created_by_id::text, sent_to_id::text, body,
                    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
             FROM chat_conversationmessage ORDER BY created_at",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let first = &rows[0];
    assert_eq!(
        first.get::<_, uuid::Uuid>(0).hyphenated().to_string(),
        frame["id"].as_str().unwrap()
    );
    assert_eq!(first.get::<_, String>(1), room.id);
    assert_eq!(first.get::<_, String>(2), alice.id);
    assert_eq!(first.get::<_, String>(3), bob.id);
    assert_eq!(first.get::<_, String>(4), "Hi Bob");
    assert_eq!(
        first.get::<_, String>(5),
        frame["created_at"].as_str().unwrap()
    );
    // UUIDv7: time-ordered keys.
    assert_eq!(first.get::<_, uuid::Uuid>(0).get_version_num(), 7);

    // A stranger's token for this room: refused at the handshake.
    let stranger = &plan.rooms[1].users[0];
    assert_eq!(
        refused_status(&server.url(&room.id, &stranger.token)).await,
        403
    );
    // Not a member: an error frame, nothing saved.
    alice_ws
        .send_text(&chat_message(&room.id, &stranger.id, "", "to a stranger"))
        .await;
    let error = alice_ws.next_json().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "not_a_member", "{error}");
    let (status, body) = http_get(server.node().local_addr(), "/healthz").await;
    assert_eq!((status, body.contains("\"ok\"")), (200, true), "{body}");
    let saved = saved_bodies(&server.url).await;
    assert_eq!(saved.len(), 2);
}

/// Sends a command to the hostile consumer; its answer, with the Debug
/// forms' `Value::` and `DbError::` prefixes dropped.
async fn ask(ws: &mut consumer_host_tests::Client, command: &str) -> serde_json::Value {
    ws.send_text(command).await;
    let reply = ws.next_json().await.to_string();
    serde_json::from_str(&reply.replace("Value::", "").replace("DbError::", "")).unwrap()
}

fn error_of(reply: &serde_json::Value) -> String {
    reply["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error, got {reply}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_timeouts_and_caps_are_enforced_by_postgres() {
    let postgres = Postgres::start();
    // A table the hostile consumer may insert into, made before the node
    // starts so its role is granted it.
    migrated_database(&postgres, "grants");
    postgres.psql(
        "grants",
        "CREATE TABLE notes (id uuid PRIMARY KEY, body varchar(20) NOT NULL, \
         created_at timestamp with time zone NOT NULL, \
         n integer CHECK (n > 0), \
         user_id uuid REFERENCES useraccount_user (id) DEFERRABLE INITIALLY DEFERRED)",
    );
    let server = PgServer::start_on(postgres.url("grants"), "grants", |config| {
        config.routes.insert(
            0,
            RouteConfig {
                path: "hostile/".into(),
                consumer: "hostile".into(),
            },
        );
        let mut hostile = ConsumerConfig::new(guest("hostile"));
        hostile.read = vec!["chat_conversation_users".into()];
        hostile.write = vec!["notes".into()];
        config.consumers.insert("hostile".into(), hostile);
        config.database.query_timeout_ms = 300;
        config.database.max_query_rows = 100;
        config.database.max_query_bytes = 64 * 1024;
        config.database.max_value_bytes = 16 * 1024;
    })
    .await;
    let plan = server.seed(1, 2).await;
    let room = &plan.rooms[0];
    let user = hex(&room.users[0].id);
    let mut ws = connect(&format!("ws://{}/hostile/", server.node().local_addr())).await;

    // What is granted works, with `?1` parameters and typed values.
    let reply = ask(&mut ws, &format!("query-param:{}", room.id)).await;
    assert_eq!(
        reply["ok"], "Rows { columns: [\"count\"], rows: [[Integer(2)]] }",
        "{reply}"
    );
    let reply = ask(
        &mut ws,
        &format!(
            "query-params:SELECT user_id, concat(?2::text, '?1'), ?3::int + 1 FROM chat_conversation_users \
             WHERE conversation_id = ?1 AND user_id = ?4 -- ?5|{}|text|i:41|{user}",
            room.id
        ),
    )
    .await;
    assert_eq!(
        reply["ok"],
        format!(
            "Rows {{ columns: [\"user_id\", \"concat\", \"?column?\"], rows: [[Text(\"{user}\"), Text(\"text?1\"), Integer(42)]] }}"
        ),
        "{reply}"
    );

    // Everything else is PostgreSQL's refusal, as the consumer's role.
    for denied in [
        "SELECT password FROM useraccount_user",
        "SELECT body FROM chat_conversationmessage",
        "SELECT set_config('role', 'postgres', false)",
    ] {
        let reply = ask(&mut ws, &format!("query:{denied}")).await;
        assert!(
            error_of(&reply).starts_with("AccessDenied"),
            "{denied}: {reply}"
        );
    }
    for invalid in [
        "RESET ROLE",
        "SET statement_timeout = 0",
        "DELETE FROM chat_conversation_users",
        "INSERT INTO notes (id, body, created_at) VALUES (gen_random_uuid(), 'x', now()) RETURNING id",
        "SELECT 1; SELECT 2",
        "SELECT FROM WHERE",
        "SELECT now() - now()",
    ] {
        let reply = ask(&mut ws, &format!("query:{invalid}")).await;
        assert!(
            error_of(&reply).starts_with("Invalid"),
            "{invalid}: {reply}"
        );
    }
    let reply = ask(&mut ws, "query:SELECT x FROM nowhere").await;
    assert!(error_of(&reply).starts_with("NoSuchTable"), "{reply}");
    // statement_timeout: the endless query is cut, and the next one runs.
    let reply = ask(&mut ws, "slow-queries:2").await;
    assert_eq!(reply["ok"], "done");
    let reply = ask(
        &mut ws,
        "query:WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT sum(x) FROM c",
    )
    .await;
    assert_eq!(error_of(&reply), "Timeout", "{reply}");
    // Rows, bytes and values are capped as they arrive.
    let reply = ask(&mut ws, "query:SELECT generate_series(1, 1000)").await;
    assert!(error_of(&reply).contains("max_query_rows"), "{reply}");
    let reply = ask(
        &mut ws,
        "query:SELECT repeat('x', 1000) FROM generate_series(1, 90)",
    )
    .await;
    assert!(error_of(&reply).contains("max_query_bytes"), "{reply}");
    let reply = ask(&mut ws, "query:SELECT repeat('x', 20000)").await;
    assert!(error_of(&reply).contains("max_value_bytes"), "{reply}");
    let reply = ask(&mut ws, "query:SELECT 1 AS one").await;
    assert_eq!(
        reply["ok"],
        "Rows { columns: [\"one\"], rows: [[Integer(1)]] }"
    );

    // Inserts: host-filled keys and datetimes, and each bad row fails alone.
    let reply = ask(&mut ws, "insert:notes|hello").await;
    let written = reply["ok"].as_str().unwrap_or_else(|| panic!("{reply}"));
    assert!(written.contains("(\"body\", Text(\"hello\"))"), "{written}");
    assert!(written.contains("(\"n\", Null)"), "{written}");
    for (command, expected) in [
        ("insert:chat_conversationmessage|sneaky", "AccessDenied"),
        ("insert:notes|this body is longer than twenty", "Constraint"),
        ("insert-row:notes|body=x|n=i:0", "Constraint"),
        (
            "insert-row:notes|body=x|user_id=9f5ba441036f4f399ea6258e3206e909",
            "Constraint",
        ),
        ("insert-row:notes|body=x|user_id=not-a-uuid", "Constraint"),
        ("insert-row:notes|body=x|nope=1", "NoSuchTable"),
        ("insert-row:notes|n=i:3", "Constraint"),
    ] {
        let reply = ask(&mut ws, command).await;
        assert!(error_of(&reply).starts_with(expected), "{command}: {reply}");
    }
    let reply = ask(
        &mut ws,
        &format!("insert-row:notes|body=ok|n=i:2|user_id={user}"),
    )
    .await;
    assert!(reply["ok"].is_string(), "{reply}");
    let id = reply["ok"]
        .as_str()
        .unwrap()
        .split("(\"id\", Text(\"")
        .nth(1)
        .unwrap()[..32]
        .to_string();
    let reply = ask(&mut ws, &format!("insert-row:notes|id={id}|body=again")).await;
    assert!(error_of(&reply).starts_with("Constraint"), "{reply}");
    assert_eq!(
        postgres
            .psql(
                "grants",
                "SELECT string_agg(body, ',' ORDER BY body) FROM notes"
            )
            .trim(),
        "hello,ok"
    );

    // The role holds exactly the grant: nothing but SELECT on the read
    // table, SELECT and INSERT on the written one.
    let role = postgres
        .psql(
            "grants",
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'consumer_host_%' ORDER BY rolname",
        )
        .lines()
        .map(String::from)
        .collect::<Vec<_>>();
    assert_eq!(role.len(), 2, "{role:?}");
    let privileges: HashSet<String> = role
        .iter()
        .flat_map(|role| {
            postgres
                .psql(
                    "grants",
                    &format!(
                        "SELECT grantee || ':' || table_name || ':' || privilege_type \
                         FROM information_schema.role_table_grants WHERE grantee = '{role}'"
                    ),
                )
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    let hostile_role = consumer_host::db::postgres::role_name(&consumer_host::db::Grant::new(
        &["chat_conversation_users".into()],
        &["notes".into()],
    ));
    let expected: HashSet<String> = [
        "chat_conversation_users:SELECT",
        "notes:SELECT",
        "notes:INSERT",
    ]
    .iter()
    .map(|privilege| format!("{hostile_role}:{privilege}"))
    .collect();
    let hostile: HashSet<String> = privileges
        .iter()
        .filter(|line| line.starts_with(&hostile_role))
        .cloned()
        .collect();
    assert_eq!(hostile, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_on_postgres_is_delivered_and_saved_exactly_once() {
    let postgres = Postgres::start();
    let server = PgServer::start(&postgres, "traffic").await;
    let plan = server.seed(4, 4).await;
    let traffic = Traffic::start(&server.ws_base(), &plan, Duration::from_millis(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = traffic.stop().await;
    let messages = assert_exactly_once(&logs);
    assert!(messages > 1_000, "{messages} messages");
    assert_bodies_saved_once(&saved_bodies(&server.url).await, &logs);
    // Group commit: far fewer batches than rows.
    let batches = server.metric("consumer_host_db_batches_total");
    let writes = server.metric("consumer_host_db_writes_total");
    assert_eq!(writes as usize, messages);
    assert!(batches < writes, "{batches} batches for {writes} rows");
}

/// What the logs say was acknowledged: every body some member received.
fn acknowledged(logs: &[MemberLog]) -> HashSet<String> {
    logs.iter()
        .flat_map(|log| log.received.iter())
        .filter_map(|frame| frame["body"].as_str().map(String::from))
        .collect()
}

/// Nothing acknowledged was lost, nothing was saved twice, and nothing that
/// no one sent was saved.
fn assert_nothing_acknowledged_lost(saved: &HashMap<String, i64>, logs: &[MemberLog]) {
    let sent: HashSet<&str> = logs
        .iter()
        .flat_map(|log| log.sent.iter().map(|(body, _)| body.as_str()))
        .collect();
    for body in acknowledged(logs) {
        assert_eq!(
            saved.get(&body).copied(),
            Some(1),
            "{body} acknowledged, saved {:?} times",
            saved.get(&body)
        );
    }
    for (body, times) in saved {
        assert_eq!(*times, 1, "{body} saved {times} times");
        assert!(sent.contains(body.as_str()), "{body} saved, never sent");
    }
}

async fn restart_under_traffic(mode: &str) {
    let mut postgres = Postgres::start();
    let server = PgServer::start_with(&postgres, "restart", |config| {
        config.database.write_timeout_ms = 3_000;
        config.database.writers = 1;
    })
    .await;
    let plan = server.seed(3, 3).await;
    let addr = server.node().local_addr();
    let traffic = Traffic::start(&server.ws_base(), &plan, Duration::from_millis(20)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    eprintln!("{:?} stopping PostgreSQL ({mode})", traffic.elapsed());
    postgres.stop(mode);
    eprintln!("{:?} stopped", traffic.elapsed());
    // Down: the node says so, and keeps serving its sockets.
    let degraded = eventually(Duration::from_secs(5), async || {
        http_get(addr, "/healthz").await.1.contains("database")
    })
    .await;
    assert!(degraded, "/healthz never said the database was degraded");
    tokio::time::sleep(Duration::from_millis(700)).await;
    eprintln!("{:?} starting PostgreSQL", traffic.elapsed());
    postgres.resume();
    eprintln!("{:?} started", traffic.elapsed());
    let recovered = eventually(Duration::from_secs(10), async || {
        http_get(addr, "/healthz").await.1.contains("\"ok\"")
    })
    .await;
    assert!(recovered, "the node did not recover");
    let back_at = traffic.elapsed();
    eprintln!("{back_at:?} recovered");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let clock = std::time::Instant::now();
    let logs = traffic.stop().await;
    eprintln!("stop took {:?}", clock.elapsed());
    for line in server.node().metrics_text().lines().filter(|line| {
        !line.starts_with('#')
            && (line.contains("pressure")
                || line.contains("closes")
                || line.contains("idle")
                || line.contains("traps")
                || line.contains("overrun")
                || line.contains("connections_open"))
    }) {
        eprintln!("metric {line}");
    }
    for log in &logs {
        eprintln!(
            "member: sent {} received {} closed {:?}",
            log.sent.len(),
            log.received.len(),
            log.closed_early
        );
    }
    eprintln!("{:?} traffic stopped", back_at);
    let saved = saved_bodies(&server.url).await;
    eprintln!("counted");
    assert_nothing_acknowledged_lost(&saved, &logs);
    // Clients heard an error frame, `not_saved`, for what was lost; nobody
    // was disconnected.
    let mut refused = 0;
    for log in &logs {
        let codes = error_codes(log);
        assert!(codes.iter().all(|code| code == "not_saved"), "{codes:?}");
        refused += codes.len();
        if let Some(why) = &log.closed_early {
            assert!(why.starts_with("error frame"), "{why}");
        }
        // Messages sent well after the recovery were saved and delivered.
        for (body, at) in &log.sent {
            if *at > back_at + Duration::from_millis(200) {
                assert_eq!(
                    saved.get(body).copied(),
                    Some(1),
                    "{body} sent after the recovery"
                );
            }
        }
    }
    assert!(
        refused > 0,
        "no client heard that its message was not saved"
    );
    assert!(server.metric("consumer_host_db_reconnects_total") >= 1);
    assert!(server.metric("consumer_host_db_unavailable_total") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_traffic_loses_nothing_acknowledged() {
    restart_under_traffic("fast").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_under_traffic_loses_nothing_acknowledged() {
    restart_under_traffic("immediate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_migrates_seeds_and_mints_on_postgres() {
    let postgres = Postgres::start();
    let url = postgres.create_database("cli");
    // Two nodes migrating at once: one waits for the other's lock.
    let racing: Vec<_> = (0..2)
        .map(|_| {
            Command::new(CLI)
                .args(["migrate", "--db", &url])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut said = Vec::new();
    for child in racing {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        said.push(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let again = host_cli(&["migrate", "--db", &url]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("schema up to date"));
    // The password never shows.
    assert!(
        said.iter()
            .any(|line| line.contains("applied 0001_django_chat")),
        "{said:?}"
    );
    let seeded = host_cli(&[
        "seed",
        "--db",
        &url,
        "--rooms",
        "2",
        "--users-per-room",
        "3",
    ]);
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&seeded.stdout).unwrap();
    let user = plan["rooms"][1]["users"][2]["id"].as_str().unwrap();
    let token = host_cli(&["token", "--db", &url, "--user", user]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&token.stdout).split('.').count(), 3);
    let missing = host_cli(&[
        "token",
        "--db",
        &url,
        "--user",
        &uuid::Uuid::new_v4().to_string(),
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no active user"));
    let wrong = host_cli(&["migrate", "--db", &postgres.url("nonexistent")]);
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(said.contains("does not exist"), "{said}");
    assert_eq!(
        postgres
            .psql("cli", "SELECT count(*) FROM useraccount_user")
            .trim(),
        "6"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_migrates_and_consumer_host_serves_it_unchanged() {
    let postgres = Postgres::start();
    let url = postgres.create_database("django_made");
    let (ok, out, err) = django_manage(&url, &["migrate"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = django_manage(
        &url,
        &[
            "chat_seed",
            "--user",
            "alice@example.com:Alice",
            "--user",
            "bob@example.com:Bob",
            "--message",
            "from Django",
            "--tokens",
        ],
    );
    assert!(ok, "{out}{err}");
    let seeded: serde_json::Value = serde_json::from_str(&out).unwrap();
    let before = postgres.psql("django_made", "SELECT count(*) FROM django_migrations");

    let server = PgServer::start_on(url.clone(), "django_made", |_| {}).await;
    let room = seeded["conversation"]["id"].as_str().unwrap();
    let (alice, bob) = (&seeded["users"][0], &seeded["users"][1]);
    // Django's own simplejwt tokens log in.
    let mut alice_ws = connect(&server.url(room, alice["access"].as_str().unwrap())).await;
    let mut bob_ws = connect(&server.url(room, bob["access"].as_str().unwrap())).await;
    alice_ws
        .send_text(&chat_message(
            room,
            bob["id"].as_str().unwrap(),
            "",
            "from consumer-host",
        ))
        .await;
    for ws in [&mut alice_ws, &mut bob_ws] {
        assert_eq!(ws.next_json().await["body"], "from consumer-host");
    }
    // Django's tables and migrations are as they were, and its ORM reads both messages.
    assert_eq!(
        postgres.psql("django_made", "SELECT count(*) FROM django_migrations"),
        before
    );
    let messages = django_messages(&url);
    let bodies: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["from Django", "from consumer-host"]);
    let ours = &messages[1];
    assert_eq!(ours["created_by_name"], "Alice");
    assert_eq!(ours["sent_to_id"], bob["id"]);
    assert!(ours["created_at"].as_str().unwrap().ends_with("+00:00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_consumer_host_made_is_adopted_by_django() {
    let postgres = Postgres::start();
    let url = migrated_database(&postgres, "host_made");
    let server = PgServer::start_on(url.clone(), "host_made", |_| {}).await;
    let plan = server.seed(2, 2).await;
    let mut sent = Vec::new();
    for room in &plan.rooms {
        let (a, b) = (&room.users[0], &room.users[1]);
        let mut a_ws = connect(&server.url(&room.id, &a.token)).await;
        let mut b_ws = connect(&server.url(&room.id, &b.token)).await;
        for n in 0..3 {
            let body = format!("{}-{n}", &room.id[..8]);
            a_ws.send_text(&chat_message(&room.id, &b.id, "", &body))
                .await;
            let frame = a_ws.next_json().await;
            b_ws.next_json().await;
            sent.push((frame, a.id.clone(), a.name.clone(), b.id.clone()));
        }
    }

    // Django adopts the schema: its initial migrations are faked, none fails.
    let (ok, out, err) = django_manage(&url, &["migrate", "--fake-initial"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("useraccount.0001_initial... FAKED"), "{out}");
    assert!(out.contains("chat.0001_initial... FAKED"), "{out}");
    // Its ORM reads every message the chat wrote: ids, times, authors, recipients.
    let messages = django_messages(&url);
    let by_id: HashMap<&str, &serde_json::Value> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|message| (message["id"].as_str().unwrap(), message))
        .collect();
    assert_eq!(by_id.len(), sent.len());
    for (frame, author, name, recipient) in &sent {
        let message = by_id[frame["id"].as_str().unwrap()];
        assert_eq!(message["body"], frame["body"]);
        assert_eq!(message["created_by_id"], author.as_str());
        assert_eq!(message["created_by_name"], name.as_str());
        assert_eq!(message["sent_to_id"], recipient.as_str());
        // The instant the chat announced, as Django reads it.
        let announced = frame["created_at"].as_str().unwrap().replace(' ', "T") + "+00:00";
        assert_eq!(message["created_at"], announced.as_str());
    }
    // And writes its own, which the chat's next connection reads.
    let (ok, out, err) = django_manage(
        &url,
        &[
            "chat_seed",
            "--user",
            "carol@example.com:Carol",
            "--message",
            "x",
            "--user",
            "dave@example.com:Dave",
        ],
    );
    assert!(ok, "{out}{err}");
}

/// A node's config on PostgreSQL and Redis, in a folder of its own.
fn node_config(dir: &std::path::Path, url: &str, redis: &Redis) -> std::path::PathBuf {
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        format!(
            r#"
listen = "127.0.0.1:0"
[database]
url = "{url}"
pool_size = 4
[auth]
secret = "{SECRET}"
[layer]
kind = "redis"
url = "{redis}"
prefix = "pg-nodes"
key = "{LAYER_KEY}"
[limits]
messages_per_second = 0
[[route]]
path = "ws/<room_name>/"
consumer = "chat"
[consumer.chat]
module = "{chat}"
read = ["chat_conversation_users"]
write = ["chat_conversationmessage"]
[runtime]
max_instances = 200
"#,
            redis = redis.url(),
            chat = guest("chat").display(),
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_only_redis_and_postgres() {
    let postgres = Postgres::start();
    let redis = Redis::start();
    let url = postgres.create_database("nodes");
    let folders = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut nodes: Vec<Node> = folders
        .iter()
        .map(|folder| Node::start(CLI, &node_config(folder.path(), &url, &redis)))
        .collect();
    let auth = consumer_host::Authenticator::new(&consumer_host::config::AuthConfig {
        secret: Some(SECRET.into()),
        ..Default::default()
    })
    .unwrap();
    let plan = consumer_host_tests::postgres::seed(&url, 4, 4, &auth).await;
    let bases: Vec<String> = nodes.iter().map(Node::ws_base).collect();

    // Members of every room on both nodes: each message once to each, saved once.
    let traffic = Traffic::start_spread(&bases, &plan, Duration::from_millis(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = traffic.stop().await;
    let messages = assert_exactly_once(&logs);
    assert!(messages > 500, "{messages} messages");
    assert_bodies_saved_once(&saved_bodies(&url).await, &logs);
    for node in &nodes {
        assert_eq!(node.health().await["status"], "ok");
    }

    // A node killed mid-traffic: its clients are cut off, but nothing any
    // client heard (each was saved first) is lost, and nothing is doubled.
    let plan = consumer_host_tests::postgres::seed(&url, 4, 4, &auth).await;
    let traffic = Traffic::start_spread(&bases, &plan, Duration::from_millis(20)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    nodes[1].kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed_logs = traffic.stop().await;
    let mut saved = saved_bodies(&url).await;
    // Only this round's rows (its members are new users).
    let members: HashSet<String> = plan
        .rooms
        .iter()
        .flat_map(|room| room.users.iter().map(|user| user.id[..8].to_string()))
        .collect();
    saved.retain(|body, _| members.contains(body.split('-').next().unwrap_or("")));
    assert_nothing_acknowledged_lost(&saved, &killed_logs);
    let logs = killed_logs;
    // The survivors' messages among themselves flowed on.
    let survivors = logs.iter().filter(|log| log.closed_early.is_none()).count();
    assert!(survivors >= 8, "{survivors} members kept their connection");
    assert!(nodes[0].alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_off_mid_commit_is_looked_up_and_written_once() {
    let postgres = Postgres::start();
    let url = migrated_database(&postgres, "doubt");
    // Rows whose body starts with `slow` take a second to insert: long
    // enough to end the writer's session in the middle of the batch.
    postgres.psql(
        "doubt",
        "CREATE TABLE notes (id uuid PRIMARY KEY, body text NOT NULL, \
             created_at timestamp with time zone NOT NULL); \
         CREATE FUNCTION slow_notes() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN IF NEW.body LIKE 'slow%' THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$; \
         CREATE TRIGGER slow_notes BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION slow_notes()",
    );
    let server = PgServer::start_on(url.clone(), "doubt", |config| {
        config.routes.insert(
            0,
            RouteConfig {
                path: "hostile/".into(),
                consumer: "hostile".into(),
            },
        );
        let mut hostile = ConsumerConfig::new(guest("hostile"));
        hostile.write = vec!["notes".into()];
        config.consumers.insert("hostile".into(), hostile);
    })
    .await;
    let mut ws = connect(&format!("ws://{}/hostile/", server.node().local_addr())).await;
    ws.send_text("insert:notes|slow one").await;
    let busy = "SELECT pid FROM pg_stat_activity WHERE application_name = 'consumer-host' \
                AND state = 'active' AND query LIKE 'INSERT%'";
    let started = eventually(Duration::from_secs(5), async || {
        !postgres.psql("doubt", busy).trim().is_empty()
    })
    .await;
    assert!(started, "the insert never ran");
    postgres.psql(
        "doubt",
        &format!("SELECT pg_terminate_backend(pid) FROM ({busy}) AS busy"),
    );
    // The writer reconnects, finds the row was not committed, writes it
    // again, and only then answers.
    let reply = ws.next_json().await;
    assert!(
        reply["ok"]
            .as_str()
            .is_some_and(|row| row.contains("slow one")),
        "{reply}"
    );
    assert_eq!(
        postgres
            .psql(
                "doubt",
                "SELECT count(*) FROM notes WHERE body = 'slow one'"
            )
            .trim(),
        "1"
    );
    assert!(server.metric("consumer_host_db_reconnects_total") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_is_honoured() {
    let tls = consumer_host_tests::nodes::Tls::make();
    let postgres = Postgres::start_tls(&tls);
    postgres.create_database("tls");
    let ca = tls.ca_file.display().to_string();
    let url = |host: &str, options: &str| {
        format!("postgres://postgres@{host}:{}/tls?{options}", postgres.port)
    };
    let migrate = |url: String| {
        let out = host_cli(&["migrate", "--db", &url]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The server's name and chain checked against our CA.
    let (ok, said) = migrate(url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    assert!(ok, "{said}");
    // `require`: encrypted, the certificate not checked (libpq's meaning).
    let (ok, said) = migrate(url("127.0.0.1", "sslmode=require"));
    assert!(ok, "{said}");
    // The public CAs do not know ours.
    let (ok, said) = migrate(url("127.0.0.1", "sslmode=verify-full"));
    assert!(!ok && said.contains("certificate"), "{said}");
    // 127.0.0.2 is not in the certificate: verify-ca accepts it, verify-full does not.
    let (ok, said) = migrate(url(
        "127.0.0.2",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ));
    assert!(ok, "{said}");
    let (ok, said) = migrate(url(
        "127.0.0.2",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    assert!(!ok && said.contains("certificate"), "{said}");
    // The server refuses clients without TLS.
    let (ok, said) = migrate(url("127.0.0.1", "sslmode=disable"));
    assert!(!ok && said.contains("no encryption"), "{said}");

    // A node's every session is encrypted.
    let verified = url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let seeded = host_cli(&[
        "seed",
        "--db",
        &verified,
        "--rooms",
        "1",
        "--users-per-room",
        "2",
    ]);
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&seeded.stdout).unwrap();
    let room = &plan["rooms"][0];
    let room_id = room["id"].as_str().unwrap();
    let server = PgServer::start_on(verified, "tls", |_| {}).await;
    let mut ws = connect(&server.url(room_id, room["users"][0]["token"].as_str().unwrap())).await;
    ws.send_text(&chat_message(
        room_id,
        room["users"][1]["id"].as_str().unwrap(),
        "",
        "encrypted",
    ))
    .await;
    assert_eq!(ws.next_json().await["body"], "encrypted");
    let sessions = postgres.psql(
        "tls",
        "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'consumer-host'",
    );
    let (count, all_ssl) = sessions.trim().split_once('|').unwrap();
    assert!(count.parse::<u32>().unwrap() >= 3, "{sessions}");
    assert_eq!(all_ssl, "t", "{sessions}");
}
