//! Counting saved messages, to check that every message sent was stored.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

/// Rows in `chat_conversationmessage`, read without writing to the database
/// the server is using.
pub fn count_messages(path: &Path) -> Result<u64> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} read-only", path.display()))?;
    // The server may hold the write lock while a batch commits.
    connection.busy_timeout(Duration::from_secs(10))?;
    let count: i64 = connection
        .query_row("SELECT COUNT(*) FROM chat_conversationmessage", [], |row| {
            row.get(0)
        })
        .with_context(|| format!("counting chat_conversationmessage in {}", path.display()))?;
    Ok(count.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows() {
        let dir = std::env::temp_dir().join(format!("loadgen-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite3");
        let _ = std::fs::remove_file(&path);
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "CREATE TABLE chat_conversationmessage (id TEXT, body TEXT);
                 INSERT INTO chat_conversationmessage VALUES ('1', 'a'), ('2', 'b');",
            )
            .unwrap();
        assert_eq!(count_messages(&path).unwrap(), 2);
        drop(writer);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
