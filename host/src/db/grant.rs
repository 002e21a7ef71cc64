//! What a consumer may read and write, enforced by SQLite's authorizer.
//!
//! A guest's `db-query` is compiled by SQLite with an authorizer installed
//! that allows a SELECT, reads of granted tables, functions and recursive
//! CTEs, and denies everything else: other tables (the schema table
//! included), PRAGMA, ATTACH, transactions, every kind of write. This is
//! SQLite's own parse of the statement, so no SQL is inspected by hand.
//!
//! One false refusal follows from it: SQLite reports `count(*)` as a read of
//! the table counted, which for a CTE is the CTE's name, not a granted
//! table; `count(column)` or `sum(...)` over a CTE works.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

/// One consumer's tables.
#[derive(Debug)]
pub struct Grant {
    id: u64,
    consumer: String,
    read: Arc<HashSet<String>>,
    write: HashSet<String>,
}

static NEXT_GRANT: AtomicU64 = AtomicU64::new(1);

impl Grant {
    /// A grant to read `read` and `write`, and to insert into `write`.
    pub fn new(consumer: &str, read: &[String], write: &[String]) -> Self {
        let write: HashSet<String> = write.iter().cloned().collect();
        let read: HashSet<String> = read.iter().chain(write.iter()).cloned().collect();
        Self {
            id: NEXT_GRANT.fetch_add(1, Ordering::Relaxed),
            consumer: consumer.to_string(),
            read: Arc::new(read),
            write,
        }
    }

    /// The consumer this grant is for.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Whether the consumer may insert into `table`.
    pub fn may_write(&self, table: &str) -> bool {
        self.write.contains(table)
    }

    /// A comment that makes statement-cache keys unique to this grant.
    pub fn cache_tag(&self) -> String {
        format!("/*grant {}*/ ", self.id)
    }

    /// The authorizer for one host-built `db-insert` into `table`: inserting
    /// into that table (if granted), reading what RETURNING reads, and the
    /// reads SQLite makes itself to enforce the table's foreign keys into
    /// `parents` (the row's references were checked by the host already).
    pub fn insert_authorizer(
        &self,
        table: &str,
        parents: Vec<String>,
    ) -> impl FnMut(AuthContext<'_>) -> Authorization + Send + 'static {
        let mut read = self.read_authorizer();
        let table = table.to_string();
        let may_insert = self.write.contains(&table);
        move |context: AuthContext<'_>| match context.action {
            AuthAction::Insert { table_name } if may_insert && table_name == table => {
                Authorization::Allow
            }
            AuthAction::Read { table_name, .. }
                if parents.iter().any(|parent| parent == table_name) =>
            {
                Authorization::Allow
            }
            _ => read(context),
        }
    }

    /// The authorizer for this grant's read-only queries.
    pub fn read_authorizer(&self) -> impl FnMut(AuthContext<'_>) -> Authorization + Send + 'static {
        let read = self.read.clone();
        move |context: AuthContext<'_>| match context.action {
            AuthAction::Select | AuthAction::Recursive | AuthAction::Function { .. } => {
                Authorization::Allow
            }
            AuthAction::Read { table_name, .. } if read.contains(table_name) => {
                Authorization::Allow
            }
            _ => Authorization::Deny,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn database() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE open (id INTEGER PRIMARY KEY, v TEXT);
             CREATE TABLE secret (id INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO open VALUES (1, 'a'); INSERT INTO secret VALUES (1, 'pw');",
        )
        .unwrap();
        conn
    }

    fn run(conn: &mut Connection, grant: &Grant, sql: &str) -> Result<usize, rusqlite::Error> {
        conn.authorizer(Some(grant.read_authorizer())).unwrap();
        let result = conn.prepare(sql).and_then(|mut stmt| {
            let mut rows = stmt.query([])?;
            let mut n = 0;
            while rows.next()?.is_some() {
                n += 1;
            }
            Ok(n)
        });
        conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>)
            .unwrap();
        result
    }

    #[test]
    fn reads_only_what_is_granted() {
        let mut conn = database();
        let grant = Grant::new("c", &["open".into()], &[]);
        assert_eq!(
            run(&mut conn, &grant, "SELECT v, upper(v) FROM open").unwrap(),
            1
        );
        assert_eq!(
            run(&mut conn, &grant, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x<3) SELECT x FROM n")
                .unwrap(),
            3
        );
        assert_eq!(
            run(&mut conn, &grant, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5) SELECT sum(x) FROM c")
                .unwrap(),
            1
        );
        // SQLite reports `count(*)` as a read of the table it counts, with no
        // column; over a CTE that looks like an unknown table, and is refused.
        assert!(
            run(
                &mut conn,
                &grant,
                "WITH c(x) AS (SELECT 1) SELECT count(*) FROM c"
            )
            .is_err()
        );
        for denied in [
            "SELECT v FROM secret",
            "SELECT o.v FROM open o JOIN secret s ON s.id = o.id",
            "SELECT (SELECT v FROM secret) FROM open",
            "SELECT name FROM sqlite_schema",
            "PRAGMA table_info(secret)",
            "INSERT INTO open VALUES (2, 'b')",
            "DELETE FROM open",
            "ATTACH DATABASE ':memory:' AS x",
            "CREATE TABLE x (y)",
        ] {
            let err = run(&mut conn, &grant, denied).unwrap_err();
            assert!(
                err.to_string().contains("authoriz") || err.to_string().contains("prohibited"),
                "{denied}: {err}"
            );
        }
        assert_eq!(
            conn.query_row("SELECT count(*) FROM open", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            1
        );
    }

    #[test]
    fn inserts_only_into_the_granted_table() {
        let mut conn = database();
        let grant = Grant::new("c", &[], &["open".into()]);
        conn.authorizer(Some(grant.insert_authorizer("open", vec![])))
            .unwrap();
        conn.execute("INSERT INTO open (id, v) VALUES (2, 'b') RETURNING *", [])
            .map(|_| ())
            .or_else(|err| match err {
                rusqlite::Error::ExecuteReturnedResults => Ok(()),
                other => Err(other),
            })
            .unwrap();
        let err = conn
            .execute("INSERT INTO secret (id, v) VALUES (2, 'b')", [])
            .unwrap_err();
        assert!(err.to_string().contains("not authorized"), "{err}");
        let err = conn
            .execute("INSERT INTO open (id, v) SELECT id, v FROM secret", [])
            .unwrap_err();
        assert!(
            err.to_string().contains("prohibited") || err.to_string().contains("authoriz"),
            "{err}"
        );
        conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>)
            .unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM open", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }

    #[test]
    fn write_grants_imply_read() {
        let grant = Grant::new("c", &[], &["open".into()]);
        assert!(grant.may_write("open"));
        assert!(!grant.may_write("secret"));
        let mut conn = database();
        assert_eq!(run(&mut conn, &grant, "SELECT * FROM open").unwrap(), 1);
    }
}
