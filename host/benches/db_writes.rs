//! Messages saved durably per second: `cargo bench -p consumer-host --bench db_writes`.
//!
//! Writers insert chat messages the way the chat consumer does (`db-insert`
//! through the group-commit writer, synchronous = FULL, WAL) into a fresh
//! database with the DjangoBnB schema, 100 users and 10 conversations.
//! Each writer waits for its row to be durable before writing the next, as
//! a connection does, so the concurrency is the number of busy connections.
//! Prints one JSON line per concurrency with rows/s and rows per commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_host::config::DatabaseConfig;
use consumer_host::db::{Database, Grant, Value};
use consumer_host::metrics::Metrics;

const RUN: Duration = Duration::from_secs(4);

fn main() {
    let concurrency: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    let concurrency = if concurrency.is_empty() {
        vec![1, 10, 100, 1000]
    } else {
        concurrency
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for writers in concurrency {
        runtime.block_on(measure(writers));
    }
}

async fn measure(writers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = DatabaseConfig {
        path: dir.path().join("bench.sqlite3"),
        ..DatabaseConfig::default()
    };
    let metrics = Arc::new(Metrics::default());
    let db = Database::open(&config, metrics.clone()).unwrap();
    let (users, conversations) = fixtures(&config);
    let grant = Arc::new(Grant::new(&[], &["chat_conversationmessage".into()]));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let db = db.clone();
        let grant = grant.clone();
        let users = users.clone();
        let conversation = conversations[writer % conversations.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut written = 0u64;
            while started.elapsed() < RUN {
                let row = vec![
                    (
                        "conversation_id".to_string(),
                        Value::Text(conversation.clone()),
                    ),
                    (
                        "created_by_id".to_string(),
                        Value::Text(users[writer % users.len()].clone()),
                    ),
                    (
                        "sent_to_id".to_string(),
                        Value::Text(users[(writer + 1) % users.len()].clone()),
                    ),
                    (
                        "body".to_string(),
                        Value::Text(format!("{writer}:{written}:message body")),
                    ),
                ];
                db.insert(grant.clone(), "chat_conversationmessage".into(), row)
                    .await
                    .unwrap();
                written += 1;
            }
            written
        }));
    }
    let mut rows = 0;
    for task in tasks {
        rows += task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let batches = metrics.db_batches.get().max(1);
    println!(
        "{}",
        serde_json::json!({
            "writers": writers,
            "rows_per_sec": (rows as f64 / elapsed).round(),
            "rows_per_commit": (metrics.db_writes.get() as f64 / batches as f64 * 10.0).round() / 10.0,
            "synchronous": "full",
        })
    );
    db.close();
}

/// 100 users in 10 conversations, written straight with SQL.
fn fixtures(config: &DatabaseConfig) -> (Vec<String>, Vec<String>) {
    let conn = rusqlite::Connection::open(&config.path).unwrap();
    let users: Vec<String> = (0..100)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let conversations: Vec<String> = (0..10)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    for user in &users {
        conn.execute(
            "INSERT INTO useraccount_user (password, is_superuser, id, email, name, is_active, is_staff, date_joined)
             VALUES ('!', 0, ?1, ?1 || '@bench.invalid', 'bench', 1, 0, '2026-01-01 00:00:00.000000')",
            [user],
        )
        .unwrap();
    }
    for conversation in &conversations {
        conn.execute(
            "INSERT INTO chat_conversation (id, created_at, modified_at) VALUES (?1, '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')",
            [conversation],
        )
        .unwrap();
    }
    (users, conversations)
}
