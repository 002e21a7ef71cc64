//! Serving a database the Django app created, unchanged, and writing rows the
//! Django app reads as its own.
//!
//! The fixture is the reference app's own SQLite DDL and rows
//! (`tests/fixtures/django_chat.sql`); the tokens are signed the way
//! `tests/fixtures/simplejwt_tokens.md` shows simplejwt signs them.

use std::path::Path;
use std::process::Command;

use consumer_host_tests::{
    TestServer, access_claims, chat_message, connect, refused_status, sign_claims, unix_now,
};

const FIXTURE: &str = include_str!("../fixtures/django_chat.sql");
const REFERENCE_SECRET: &str = "reference-secret";
const ALICE: &str = "9f5ba441-036f-4f39-9ea6-258e3206e909";
const BOB: &str = "c189712e-871d-45de-8f11-1a3b1de97c30";
const ROOM: &str = "22de0f4f-c84e-47be-889c-d61b856492bd";
/// The real tokens from simplejwt_tokens.md: an access token that expired an
/// hour after it was minted (2026-11-25 18:22:28 UTC), and a refresh token.
const REAL_EXPIRED_ACCESS: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoiYWNjZXNzIiwiZXhwIjoxNzk1NjMwOTQ4LCJpYXQiOjE3OTU2MjczNDgsImp0aSI6IjgxNjg4OWUzM2Q1NjRkNTA4NjdiZWUwMWVlNGQ0NzM4IiwidXNlcl9pZCI6IjlmNWJhNDQxLTAzNmYtNGYzOS05ZWE2LTI1OGUzMjA2ZTkwOSJ9.dzgCTKmh7a95ogZxXXSu5V6N2kDYmPMA5-x30CBIP78";
const REAL_REFRESH: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCIsImV4cCI6MTc5NTcxMzc0OCwiaWF0IjoxNzk1NjI3MzQ4LCJqdGkiOiJmNjYwYWJjZGNkZDA0ZDhiYjZjNjFlMGU0Y2M2ZTRkYiIsInVzZXJfaWQiOiI5ZjViYTQ0MS0wMzZmLTRmMzktOWVhNi0yNThlMzIwNmU5MDkifQ.RoE1yBS-xT9-8xehz8dJlEbSMqj8NmAjHjaDk2tWW_w";
const REAL_EXPIRED_ACCESS_EXP: i64 = 1_795_630_948;

fn django_database(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("db.sqlite3");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(FIXTURE).unwrap();
    path
}

/// Every table's DDL and every row, as text, in a stable order.
fn snapshot(path: &Path, tables: &[&str]) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut out: Vec<String> = conn
        .prepare("SELECT type, name, sql FROM sqlite_schema WHERE tbl_name NOT LIKE 'consumer_host%' ORDER BY name")
        .unwrap()
        .query_map([], |row| {
            Ok(format!(
                "{} {} {}",
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?.unwrap_or_default()
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in tables {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
            .unwrap();
        let width = stmt.column_count();
        let rows = stmt
            .query_map([], |row| {
                let mut line = format!("{table}:");
                for index in 0..width {
                    let value: rusqlite::types::Value = row.get(index)?;
                    line.push_str(&format!(" {value:?}"));
                }
                Ok(line)
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        out.extend(rows);
    }
    out
}

const TABLES: &[&str] = &[
    "useraccount_user",
    "chat_conversation",
    "chat_conversation_users",
    "chat_conversationmessage",
];

fn host_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_host-cli"))
        .args(args)
        .env_remove("JWT_SECRET")
        .output()
        .unwrap()
}

#[test]
fn migrating_a_django_database_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = django_database(dir.path());
    let before = snapshot(&path, TABLES);
    for _ in 0..2 {
        let out = host_cli(&["migrate", "--db", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(snapshot(&path, TABLES), before);
    let out = host_cli(&["migrate", "--db", path.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
}

fn is_hex32(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`, as Django writes datetimes in SQLite.
fn is_django_datetime(text: &str) -> bool {
    let shape = "dddd-dd-dd dd:dd:dd.dddddd";
    text.len() == shape.len()
        && text.bytes().zip(shape.bytes()).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            other => c == other,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatting_on_a_django_database_writes_rows_like_django() {
    let dir = tempfile::tempdir().unwrap();
    let path = django_database(dir.path());
    let before = snapshot(&path, TABLES);
    let server = TestServer::start_on(dir, path.clone(), REFERENCE_SECRET, |_| {}).await;

    // Tokens made the way simplejwt makes them, signed with the reference key.
    let exp = unix_now() + 3600;
    let alice_token = sign_claims(REFERENCE_SECRET, &access_claims(ALICE, exp));
    let bob_token = sign_claims(REFERENCE_SECRET, &access_claims(BOB, exp));
    let mut alice = connect(&server.url(ROOM, Some(&alice_token))).await;
    let mut bob = connect(&server.url(ROOM, Some(&bob_token))).await;
    alice
        .send_text(&chat_message(ROOM, BOB, "Alice", "Hi again, Bob"))
        .await;
    for ws in [&mut alice, &mut bob] {
        let frame = ws.next_json().await;
        assert_eq!(frame["body"], "Hi again, Bob");
        assert_eq!(frame["name"], "Alice");
    }
    bob.send_text(&chat_message(ROOM, ALICE, "Bob", "Hi Alice"))
        .await;
    assert_eq!(alice.next_json().await["name"], "Bob");
    assert_eq!(bob.next_json().await["body"], "Hi Alice");

    let conn = server.db();
    // The row Django wrote and the rows consumer-host wrote, column by column.
    let mut stmt = conn
        .prepare(
            "SELECT id, body, created_at, conversation_id, created_by_id, sent_to_id,
                    typeof(id) || typeof(body) || typeof(created_at) || typeof(conversation_id)
                      || typeof(created_by_id) || typeof(sent_to_id)
             FROM chat_conversationmessage ORDER BY created_at",
        )
        .unwrap();
    let rows: Vec<[String; 7]> = stmt
        .query_map([], |row| {
            Ok([
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
            ])
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 3);
    let django_row = &rows[0];
    assert_eq!(
        django_row[0], "7992fb264fc440d8bde8a6c68ec40aad",
        "Django's row is untouched"
    );
    for (row, (author, recipient, body)) in rows[1..]
        .iter()
        .zip([(ALICE, BOB, "Hi again, Bob"), (BOB, ALICE, "Hi Alice")])
    {
        assert!(is_hex32(&row[0]), "id {:?}", row[0]);
        assert_eq!(row[1], body);
        assert!(is_django_datetime(&row[2]), "created_at {:?}", row[2]);
        assert_eq!(row[3], ROOM.replace('-', ""));
        assert_eq!(row[4], author.replace('-', ""));
        assert_eq!(row[5], recipient.replace('-', ""));
        assert_eq!(
            row[6], django_row[6],
            "the same storage classes as Django's row"
        );
        assert!(row[2] > django_row[2], "UTC, after the fixture's message");
    }
    // Nothing but the new messages changed.
    drop(stmt);
    drop(conn);
    let after = snapshot(&path, TABLES);
    let added: Vec<&String> = after.iter().filter(|line| !before.contains(line)).collect();
    assert_eq!(added.len(), 2, "{added:?}");
    assert!(
        added
            .iter()
            .all(|line| line.starts_with("chat_conversationmessage:"))
    );
    assert!(before.iter().all(|line| after.contains(line)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_simplejwt_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = django_database(dir.path());
    let server = TestServer::start_on(dir, path, REFERENCE_SECRET, |_| {}).await;
    assert_eq!(
        refused_status(&server.url(ROOM, Some(REAL_REFRESH))).await,
        403
    );
    // The access token is genuine (signed with the reference key, for Alice);
    // it expired an hour after it was made.
    assert!(
        unix_now() >= REAL_EXPIRED_ACCESS_EXP,
        "the reference access token has expired by now"
    );
    assert_eq!(
        refused_status(&server.url(ROOM, Some(REAL_EXPIRED_ACCESS))).await,
        403
    );
    // The refresh token is refused as a refresh token within its day, and
    // as expired after it (simplejwt checks the expiry first too).
    let expired = server.metric("consumer_host_auth_failures_total{reason=\"expired\"}");
    let wrong_type = server.metric("consumer_host_auth_failures_total{reason=\"token_type\"}");
    assert_eq!(expired + wrong_type, 2);
    assert!(expired >= 1, "the expired access token counts as expired");
    assert_eq!(server.message_count(), 1);
}
