//! PostgreSQL migrations: `migrations/postgres/NNNN_name.sql`, applied in
//! order, once each, recorded in `consumer_host_migrations` (a table Django
//! ignores), all in one transaction under an advisory lock: two nodes
//! starting at once take turns, and the second finds nothing to do.

use tokio_postgres::Client;

/// Every PostgreSQL migration, in order. A test checks that each file in
/// `migrations/postgres/` is listed here.
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_django_chat",
    include_str!("../../../../migrations/postgres/0001_django_chat.sql"),
)];

/// The advisory lock migrations hold (any node, any database of the server).
const MIGRATIONS_LOCK: i64 = 0x6368_6d69_6772_6174;

/// Applies the migrations not yet recorded; returns the names of those applied.
pub async fn apply(client: &mut Client) -> Result<Vec<&'static str>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATIONS_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS consumer_host_migrations (
             name text NOT NULL PRIMARY KEY,
             applied_at timestamp with time zone NOT NULL
         )",
    )
    .await?;
    let mut applied = Vec::new();
    for (name, sql) in MIGRATIONS {
        let done = tx
            .query_opt(
                "SELECT 1 FROM consumer_host_migrations WHERE name = $1",
                &[name],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO consumer_host_migrations (name, applied_at) VALUES ($1, now())",
            &[name],
        )
        .await?;
        applied.push(*name);
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_listed_in_order() {
        crate::db::migrate::assert_migrations_listed("../migrations/postgres", MIGRATIONS);
    }

    #[test]
    fn the_schema_matches_sqlites_tables() {
        // The same four tables on both backends.
        for table in [
            "useraccount_user",
            "chat_conversation",
            "chat_conversation_users",
            "chat_conversationmessage",
        ] {
            let create = format!("CREATE TABLE IF NOT EXISTS \"{table}\"");
            assert!(MIGRATIONS[0].1.contains(&create), "{table}");
            assert!(
                crate::db::migrate::MIGRATIONS[0].1.contains(&create),
                "{table}"
            );
        }
    }
}
