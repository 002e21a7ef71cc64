//! What a consumer may read and write, enforced by SQLite's authorizer.
//!
//! A guest's `db-query` is compiled by SQLite with an authorizer installed
//! that allows a SELECT, reads of granted tables, recursive CTEs and a list
//! of harmless functions, and denies everything else: other tables (the
//! schema table included), PRAGMA, ATTACH, transactions, every kind of
//! write, and functions not on the list (`fts3_tokenizer`, which hands out
//! and takes raw pointers, `load_extension`, ...). This is SQLite's own parse
//! of the statement, so no SQL is inspected by hand.
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
    read: HashSet<String>,
    write: HashSet<String>,
}

static NEXT_GRANT: AtomicU64 = AtomicU64::new(1);

impl Grant {
    /// A grant to read `read` and `write`, and to insert into `write`.
    pub fn new(read: &[String], write: &[String]) -> Self {
        let write: HashSet<String> = write.iter().cloned().collect();
        let read: HashSet<String> = read.iter().chain(write.iter()).cloned().collect();
        Self {
            id: NEXT_GRANT.fetch_add(1, Ordering::Relaxed),
            read,
            write,
        }
    }

    /// Whether the consumer may insert into `table`.
    pub fn may_write(&self, table: &str) -> bool {
        self.write.contains(table)
    }

    /// The tables the consumer may read (those it may write included), sorted.
    pub fn readable(&self) -> Vec<&str> {
        let mut tables: Vec<&str> = self.read.iter().map(String::as_str).collect();
        tables.sort_unstable();
        tables
    }

    /// The tables the consumer may insert into, sorted.
    pub fn writable(&self) -> Vec<&str> {
        let mut tables: Vec<&str> = self.write.iter().map(String::as_str).collect();
        tables.sort_unstable();
        tables
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

/// The functions a guest's statement may call: SQL's core, date, math,
/// aggregate, window and JSON functions. Anything else (extensions,
/// introspection, the FTS3 tokenizer hook) is refused.
const GUEST_FUNCTIONS: &[&str] = &[
    // Core scalar functions.
    "abs",
    "char",
    "coalesce",
    "concat",
    "concat_ws",
    "format",
    "glob",
    "hex",
    "ifnull",
    "iif",
    "instr",
    "length",
    "like",
    "likelihood",
    "likely",
    "lower",
    "ltrim",
    "max",
    "min",
    "nullif",
    "octet_length",
    "printf",
    "quote",
    "random",
    "randomblob",
    "replace",
    "round",
    "rtrim",
    "sign",
    "soundex",
    "substr",
    "substring",
    "trim",
    "typeof",
    "unhex",
    "unicode",
    "unlikely",
    "upper",
    "zeroblob",
    // Dates and times.
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "timediff",
    // Aggregates.
    "avg",
    "count",
    "group_concat",
    "string_agg",
    "sum",
    "total",
    // Window functions.
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // Math.
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "ceil",
    "ceiling",
    "cos",
    "cosh",
    "degrees",
    "exp",
    "floor",
    "ln",
    "log",
    "log10",
    "log2",
    "mod",
    "pi",
    "pow",
    "power",
    "radians",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "trunc",
    // JSON.
    "json",
    "jsonb",
    "json_array",
    "jsonb_array",
    "json_array_length",
    "json_error_position",
    "json_extract",
    "jsonb_extract",
    "json_insert",
    "jsonb_insert",
    "json_object",
    "jsonb_object",
    "json_patch",
    "jsonb_patch",
    "json_pretty",
    "json_quote",
    "json_remove",
    "jsonb_remove",
    "json_replace",
    "jsonb_replace",
    "json_set",
    "jsonb_set",
    "json_type",
    "json_valid",
    "json_group_array",
    "jsonb_group_array",
    "json_group_object",
    "jsonb_group_object",
    "json_each",
    "json_tree",
];

fn harmless(function: &str) -> bool {
    GUEST_FUNCTIONS
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(function))
}

impl Policy {
    fn decide(&self, action: AuthAction<'_>) -> Authorization {
        let reads = |grant: &Grant, action: AuthAction<'_>| match action {
            AuthAction::Select | AuthAction::Recursive => Authorization::Allow,
            AuthAction::Function { function_name } if harmless(function_name) => {
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
        let grant = Arc::new(Grant::new(&["open".into()], &[]));
        assert_eq!(
            run(&mut conn, &grant, "SELECT v, upper(v) FROM open").unwrap(),
            1
        );
        assert_eq!(
            run(
                &mut conn,
                &grant,
                "SELECT json_object('v', v), count(v), datetime('now') FROM open"
            )
            .unwrap(),
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
            "SELECT fts3_tokenizer('simple')",
            "SELECT fts3_tokenizer('evil', x'0102030405060708')",
            "SELECT load_extension('/tmp/evil.so')",
            "SELECT sqlite_compileoption_get(0)",
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
        let grant = Arc::new(Grant::new(&[], &["open".into()]));
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
        authorizer.set(Policy::Query(Arc::new(Grant::new(&["open".into()], &[]))));
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
        let grant = Arc::new(Grant::new(&[], &["open".into()]));
        assert!(grant.may_write("open"));
        assert!(!grant.may_write("secret"));
        let mut conn = database();
        assert_eq!(run(&mut conn, &grant, "SELECT * FROM open").unwrap(), 1);
    }
}
