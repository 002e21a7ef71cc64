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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

/// One consumer's tables.
#[derive(Debug)]
pub struct Grant {
    id: u64,
    consumer: String,
    read: HashSet<String>,
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
            read,
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

    /// Unique in this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A comment that makes statement-cache keys unique to this grant.
    pub fn cache_tag(&self) -> String {
        format!("/*grant {}*/ ", self.id)
    }
}

/// What the authorizer of a connection enforces for the statements prepared
/// while it is set.
#[derive(Debug, Clone, Default)]
pub enum Policy {
    /// The host's own statements: everything.
    #[default]
    Trusted,
    /// A consumer's `db-query`: a SELECT over the grant's tables.
    Query(Arc<Grant>),
    /// A host-built `db-insert` for a consumer: inserting into `table` (if
    /// granted), reading what RETURNING reads, and the reads SQLite makes
    /// itself to enforce the table's foreign keys into `parents` (the row's
    /// references were checked by the host already).
    Insert {
        /// Whose insert.
        grant: Arc<Grant>,
        /// Into which table.
        table: String,
        /// The tables its foreign keys point to.
        parents: Vec<String>,
    },
}

impl Policy {
    fn decide(&self, action: AuthAction<'_>) -> Authorization {
        let reads = |grant: &Grant, action: AuthAction<'_>| match action {
            AuthAction::Select | AuthAction::Recursive | AuthAction::Function { .. } => {
                Authorization::Allow
            }
            AuthAction::Read { table_name, .. } if grant.read.contains(table_name) => {
                Authorization::Allow
            }
            _ => Authorization::Deny,
        };
        match self {
            Policy::Trusted => Authorization::Allow,
            Policy::Query(grant) => reads(grant, action),
            Policy::Insert {
                grant,
                table,
                parents,
            } => match action {
                AuthAction::Insert { table_name }
                    if table_name == table && grant.may_write(table) =>
                {
                    Authorization::Allow
                }
                AuthAction::Read { table_name, .. }
                    if parents.iter().any(|parent| parent == table_name) =>
                {
                    Authorization::Allow
                }
                other => reads(grant, other),
            },
        }
    }
}

/// A connection's authorizer, installed once. Installing an authorizer
/// makes SQLite expire every prepared statement, so the callback stays and
/// only the policy it reads changes: statements are authorized when they
/// are prepared, under the policy set then (and grant-tagged SQL keeps one
/// consumer from reusing a statement prepared for another).
#[derive(Clone)]
pub struct Authorizer {
    // A std lock: taken only inside SQLite's prepare, never across an `.await`.
    policy: Arc<Mutex<Policy>>,
}

impl Authorizer {
    /// Installs the callback on `conn`, trusting everything until told otherwise.
    pub fn install(conn: &mut Connection) -> rusqlite::Result<Self> {
        let policy = Arc::new(Mutex::new(Policy::Trusted));
        let current = policy.clone();
        conn.authorizer(Some(move |context: AuthContext<'_>| {
            current.lock().expect("not poisoned").decide(context.action)
        }))?;
        Ok(Self { policy })
    }

    /// Sets what statements prepared from now on may do.
    pub fn set(&self, policy: Policy) {
        *self.policy.lock().expect("not poisoned") = policy;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn run(conn: &mut Connection, grant: &Arc<Grant>, sql: &str) -> Result<usize, rusqlite::Error> {
        let authorizer = Authorizer::install(conn).unwrap();
        authorizer.set(Policy::Query(grant.clone()));
        let result = conn.prepare(sql).and_then(|mut stmt| {
            let mut rows = stmt.query([])?;
            let mut n = 0;
            while rows.next()?.is_some() {
                n += 1;
            }
            Ok(n)
        });
        authorizer.set(Policy::Trusted);
        result
    }

    #[test]
    fn reads_only_what_is_granted() {
        let mut conn = database();
        let grant = Arc::new(Grant::new("c", &["open".into()], &[]));
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
        let grant = Arc::new(Grant::new("c", &[], &["open".into()]));
        let authorizer = Authorizer::install(&mut conn).unwrap();
        authorizer.set(Policy::Insert {
            grant,
            table: "open".into(),
            parents: vec![],
        });
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
        authorizer.set(Policy::Trusted);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM open", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }

    #[test]
    fn switching_the_policy_keeps_prepared_statements() {
        let mut conn = database();
        let authorizer = Authorizer::install(&mut conn).unwrap();
        let sql = "SELECT v FROM open";
        conn.prepare_cached(sql).unwrap();
        authorizer.set(Policy::Query(Arc::new(Grant::new(
            "c",
            &["open".into()],
            &[],
        ))));
        authorizer.set(Policy::Trusted);
        // Still cached and valid: no re-prepare happened, and it runs.
        let v: String = conn
            .prepare_cached(sql)
            .unwrap()
            .query_row([], |r| r.get(0))
            .unwrap();
        assert_eq!(v, "a");
    }

    #[test]
    fn write_grants_imply_read() {
        let grant = Arc::new(Grant::new("c", &[], &["open".into()]));
        assert!(grant.may_write("open"));
        assert!(!grant.may_write("secret"));
        let mut conn = database();
        assert_eq!(run(&mut conn, &grant, "SELECT * FROM open").unwrap(), 1);
    }
}
