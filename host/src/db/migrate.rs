//! Schema migrations: `migrations/NNNN_name.sql`, applied in order, once each.
//!
//! Applied migrations are recorded in `consumer_host_migrations`, a table
//! Django ignores. Every migration is written to be idempotent (IF NOT
//! EXISTS), so running one over a database the Django app created leaves its
//! tables and rows as they are.

use rusqlite::Connection;

/// Every migration, in order. A test checks that each file in `migrations/`
/// is listed here.
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_django_chat",
    include_str!("../../../migrations/0001_django_chat.sql"),
)];

/// Applies the migrations not yet recorded, in one transaction; returns the
/// names of those applied.
pub fn apply(conn: &mut Connection) -> rusqlite::Result<Vec<&'static str>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS consumer_host_migrations (
             name TEXT NOT NULL PRIMARY KEY,
             applied_at TEXT NOT NULL
         )",
    )?;
    let mut applied = Vec::new();
    for (name, sql) in MIGRATIONS {
        let done: bool = tx.query_row(
            "SELECT count(*) FROM consumer_host_migrations WHERE name = ?1",
            [name],
            |row| row.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if done {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO consumer_host_migrations (name, applied_at) VALUES (?1, ?2)",
            (name, super::now_django()),
        )?;
        applied.push(*name);
    }
    tx.commit()?;
    Ok(applied)
}

/// Asserts that `listed` names every `.sql` file of `dir` (relative to the
/// host crate), in order: a migration file nobody lists never runs.
#[cfg(test)]
pub(crate) fn assert_migrations_listed(dir: &str, listed: &[(&str, &str)]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| name.trim_end_matches(".sql").to_string())
        .collect();
    files.sort();
    let listed: Vec<&str> = listed.iter().map(|(name, _)| *name).collect();
    assert_eq!(files, listed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_listed_in_order() {
        assert_migrations_listed("../migrations", MIGRATIONS);
    }

    #[test]
    fn applies_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(apply(&mut conn).unwrap(), vec!["0001_django_chat"]);
        assert!(apply(&mut conn).unwrap().is_empty());
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name LIKE 'chat_%'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 3);
    }
}
