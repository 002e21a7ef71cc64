//! Messages saved durably per second, on SQLite or PostgreSQL:
//!
//! ```sh
//! cargo bench -p consumer-host-tests --bench db_writes [-- [--postgres] 1 10 100 1000]
//! ```
//!
//! SQLite: a fresh file (WAL, `synchronous = FULL`). `--postgres`: a
//! PostgreSQL server of its own (Debian's binaries in a temporary folder,
//! fsync and `synchronous_commit` on), a fresh database per concurrency.
//! Either gets the chat schema, 100 users and 10 conversations, then each
//! writer inserts chat messages the way the chat consumer does (`db-insert`
//! through the backend's group-commit writer), waiting for each to be
//! durable before the next, as a connection does: the concurrency is the
//! number of busy connections. One JSON line per concurrency with rows/s
//! and rows per commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_host::config::{DatabaseConfig, DatabaseUrl};
use consumer_host::db::{Database, Grant, Value};
use consumer_host::metrics::Metrics;
use consumer_host_tests::postgres::Postgres;

const RUN: Duration = Duration::from_secs(4);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let on_postgres = args.iter().any(|arg| arg == "--postgres");
    let concurrency: Vec<usize> = args.iter().filter_map(|arg| arg.parse().ok()).collect();
    let concurrency = if concurrency.is_empty() {
        vec![1, 10, 100, 1000]
    } else {
        concurrency
    };
    let postgres = on_postgres.then(Postgres::start);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for (round, writers) in concurrency.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let config = match &postgres {
            Some(postgres) => DatabaseConfig {
                url: Some(DatabaseUrl(
                    postgres.create_database(&format!("bench{round}")),
                )),
                max_queued_writes: 100_000,
                ..DatabaseConfig::default()
            },
            None => DatabaseConfig {
                path: dir.path().join("bench.sqlite3"),
                ..DatabaseConfig::default()
            },
        };
        runtime.block_on(measure(&config, writers));
    }
}

async fn measure(config: &DatabaseConfig, writers: usize) {
    let metrics = Arc::new(Metrics::default());
    let db = Database::connect(config, metrics.clone()).await.unwrap();
    let (users, conversations) = fixtures(&db).await;
    let writes_before = metrics.db_writes.get();
    let batches_before = metrics.db_batches.get();
    let grant = Arc::new(Grant::new(&[], &["chat_conversationmessage".into()]));
    db.prepare_grant(&grant).await.unwrap();
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
                    text("conversation_id", &conversation),
                    text("created_by_id", &users[writer % users.len()]),
                    text("sent_to_id", &users[(writer + 1) % users.len()]),
                    text("body", &format!("{writer}:{written}:message body")),
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
    let writes = metrics.db_writes.get() - writes_before;
    let batches = (metrics.db_batches.get() - batches_before).max(1);
    println!(
        "{}",
        serde_json::json!({
            "backend": if config.postgres_url().is_some() { "postgres" } else { "sqlite" },
            "writers": writers,
            "rows_per_sec": (rows as f64 / elapsed).round(),
            "rows_per_commit": (writes as f64 / batches as f64 * 10.0).round() / 10.0,
        })
    );
    let closing = db.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .unwrap();
}

fn text(column: &str, value: &str) -> (String, Value) {
    (column.to_string(), Value::Text(value.to_string()))
}

/// 100 users in 10 conversations, inserted through the database's own
/// `insert` (the host fills the ids and the times, as Django would).
async fn fixtures(db: &Database) -> (Vec<String>, Vec<String>) {
    let grant = Arc::new(Grant::new(
        &[],
        &["useraccount_user".into(), "chat_conversation".into()],
    ));
    db.prepare_grant(&grant).await.unwrap();
    let id = |row: Vec<(String, Value)>| match row.into_iter().find(|(column, _)| column == "id") {
        Some((_, Value::Text(id))) => id,
        other => panic!("no id in the inserted row: {other:?}"),
    };
    let mut users = Vec::new();
    for n in 0..100 {
        let row = vec![
            text("password", "!"),
            ("is_superuser".into(), Value::Integer(0)),
            text("email", &format!("bench{n}@bench.invalid")),
            text("name", "bench"),
            ("is_active".into(), Value::Integer(1)),
            ("is_staff".into(), Value::Integer(0)),
        ];
        users.push(id(db
            .insert(grant.clone(), "useraccount_user".into(), row)
            .await
            .unwrap()));
    }
    let mut conversations = Vec::new();
    for _ in 0..10 {
        conversations.push(id(db
            .insert(grant.clone(), "chat_conversation".into(), Vec::new())
            .await
            .unwrap()));
    }
    (users, conversations)
}
