//! The database: SQLite (the default: a file, nothing to run) or PostgreSQL
//! (a server that several nodes on several machines share).
//!
//! [`Database`] is what the rest of the node holds, the same for both:
//! consumers' `db-query` and `db-insert` within their [`Grant`], the host's
//! own reads (user lookups), health, shutdown. Each backend keeps the
//! guest contract identically: typed values, host-filled keys and datetimes
//! in Django's shapes, the same [`DbError`] cases.
//!
//! - [`sqlite`]: one writer thread with group commit, reader threads, grants
//!   enforced by SQLite's authorizer ([`grant`]); tables read with [`schema`].
//! - [`postgres`]: a group-commit writer task pipelining each batch in one
//!   round trip, connection pools, a PostgreSQL role per grant holding
//!   exactly its privileges.
//! - [`migrate`], [`seed`]: the Django schema and test data, for both.

pub mod grant;
pub mod migrate;
pub mod postgres;
mod schema;
pub mod seed;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::DatabaseConfig;
use crate::metrics::Metrics;
pub use grant::Grant;
pub use schema::{normalise_uuid, now_django};
pub use sqlite::Sqlite;

/// A value, as guests see it (SQLite's storage classes; PostgreSQL's types map
/// onto them, see [`postgres`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL
    Null,
    /// INTEGER
    Integer(i64),
    /// REAL
    Real(f64),
    /// TEXT
    Text(String),
    /// BLOB
    Blob(Vec<u8>),
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl From<rusqlite::types::ValueRef<'_>> for Value {
    fn from(value: rusqlite::types::ValueRef<'_>) -> Self {
        use rusqlite::types::ValueRef;
        match value {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

/// Rows returned by a query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// Values, one list per row.
    pub rows: Vec<Vec<Value>>,
}

/// Why a database call failed. Each case is one a consumer can act on; the
/// texts name the table or column and never echo bound values.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DbError {
    /// Outside the consumer's grant.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// No such table or column.
    #[error("no such table or column: {0}")]
    NoSuchTable(String),
    /// A constraint refused the row.
    #[error("constraint failed: {0}")]
    Constraint(String),
    /// The call is malformed.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The statement ran too long and was interrupted.
    #[error("statement timed out")]
    Timeout,
    /// The database failed, or cannot be reached.
    #[error("database failure: {0}")]
    Failed(String),
    /// The database is shutting down.
    #[error("database closed")]
    Closed,
}

impl From<rusqlite::Error> for DbError {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let failure = match &err {
            rusqlite::Error::SqliteFailure(failure, message) => Some((
                failure,
                message.clone().unwrap_or_else(|| failure.to_string()),
            )),
            // An error SQLite found while preparing; its text, without the
            // statement (which carries the host's grant tag).
            rusqlite::Error::SqlInputError { error, msg, .. } => Some((error, msg.clone())),
            _ => None,
        };
        match (&err, failure) {
            (_, Some((failure, message))) => match failure.code {
                ErrorCode::ConstraintViolation => DbError::Constraint(message),
                ErrorCode::AuthorizationForStatementDenied => DbError::AccessDenied(message),
                ErrorCode::OperationInterrupted => DbError::Timeout,
                ErrorCode::TooBig => DbError::Invalid(format!(
                    "a string or blob exceeds [database] max_value_bytes ({message})"
                )),
                _ if message.starts_with("no such table")
                    || message.starts_with("no such column") =>
                {
                    DbError::NoSuchTable(message)
                }
                _ if message.contains("not authorized") => DbError::AccessDenied(message),
                ErrorCode::Unknown => DbError::Invalid(message),
                _ => DbError::Failed(message),
            },
            (rusqlite::Error::InvalidParameterCount(given, expected), _) => DbError::Invalid(
                format!("{given} parameters given, the statement has {expected}"),
            ),
            (rusqlite::Error::MultipleStatement, _) => {
                DbError::Invalid("only one statement may be run at a time".into())
            }
            _ => DbError::Failed(err.to_string()),
        }
    }
}

/// Opening the database failed; the text says what to check.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite refused the file or a migration failed.
    #[error("cannot open database {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A database thread could not be started.
    #[error("cannot start the database's threads: {0}")]
    Thread(#[from] std::io::Error),
    /// PostgreSQL could not be reached, refused the login, or a migration
    /// failed; the text says which and what to check.
    #[error("{0}")]
    Postgres(String),
}

/// The database handle; cheap to clone.
#[derive(Clone)]
pub struct Database {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(Sqlite),
    Postgres(postgres::Postgres),
}

impl From<Sqlite> for Database {
    fn from(sqlite: Sqlite) -> Self {
        Self {
            backend: Backend::Sqlite(sqlite),
        }
    }
}

impl Database {
    /// Opens (creating if needed) the SQLite file at `config.path`, applies
    /// the migrations and starts the writer and reader threads. Blocking.
    pub fn open(config: &DatabaseConfig, metrics: Arc<Metrics>) -> Result<Self, OpenError> {
        Sqlite::open(config, metrics).map(Self::from)
    }

    /// Opens the configured database: PostgreSQL when `[database] url` is
    /// set (connecting, migrating under an advisory lock, starting the
    /// writer), else the SQLite file (on a blocking thread).
    pub async fn connect(
        config: &DatabaseConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, OpenError> {
        if config.postgres_url().is_some() {
            let postgres = postgres::Postgres::connect(config, metrics).await?;
            return Ok(Self {
                backend: Backend::Postgres(postgres),
            });
        }
        let config = config.clone();
        tokio::task::spawn_blocking(move || Self::open(&config, metrics))
            .await
            .map_err(|err| OpenError::Thread(std::io::Error::other(err)))?
    }

    /// The SQLite backend, if this is one.
    pub fn sqlite(&self) -> Option<&Sqlite> {
        match &self.backend {
            Backend::Sqlite(sqlite) => Some(sqlite),
            Backend::Postgres(_) => None,
        }
    }

    /// What the admin API shows of the database (no password).
    pub fn describe(&self) -> serde_json::Value {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.describe(),
            Backend::Postgres(postgres) => postgres.describe(),
        }
    }

    /// Whether the database can take writes now (`/healthz` says
    /// `degraded` when not). SQLite: always.
    pub fn healthy(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => true,
            Backend::Postgres(postgres) => postgres.healthy(),
        }
    }

    /// Makes what a consumer's grant needs before its first call (on
    /// PostgreSQL its role, holding exactly the granted privileges), so a
    /// database that refuses stops the start with a clear error.
    pub async fn prepare_grant(&self, grant: &Arc<Grant>) -> Result<(), DbError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(postgres) => postgres.prepare_grant(grant).await.map(|_| ()),
        }
    }

    /// The host's own read of one row (the user lookup): `sql`, with `?1`,
    /// `?2`... bound to `params`, under no grant. `None` when no row.
    pub async fn read_row(
        &self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Option<Vec<Value>>, DbError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.read_row(sql.to_string(), params).await,
            Backend::Postgres(postgres) => postgres.read_row(sql, params).await,
        }
    }

    /// A consumer's `db-query`: one read-only statement within its grant.
    pub async fn query(
        &self,
        grant: Arc<Grant>,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Rows, DbError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.query(grant, sql, params).await,
            Backend::Postgres(postgres) => postgres.query(grant, sql, params).await,
        }
    }

    /// A consumer's `db-insert`: resolves once the row is durable.
    pub async fn insert(
        &self,
        grant: Arc<Grant>,
        table: String,
        row: Vec<(String, Value)>,
    ) -> Result<Vec<(String, Value)>, DbError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.insert(grant, table, row).await,
            Backend::Postgres(postgres) => postgres.insert(grant, table, row).await,
        }
    }

    /// A consumer's `db-insert`, in two steps: resolves once the row is
    /// written (or refused, with the statement's error), with its commit to
    /// wait for. What depends on the row being durable waits for that.
    pub async fn insert_staged(
        &self,
        grant: Arc<Grant>,
        table: String,
        row: Vec<(String, Value)>,
    ) -> Result<(Vec<(String, Value)>, Committed), DbError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.insert_staged(grant, table, row).await,
            // Committed when it returns.
            Backend::Postgres(postgres) => postgres
                .insert(grant, table, row)
                .await
                .map(|row| (row, Committed::done())),
        }
    }

    /// Finishes every queued write, then stops. Later calls fail with
    /// [`DbError::Closed`]. Blocks: call it from a blocking thread.
    pub fn close(&self) {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.close(),
            Backend::Postgres(postgres) => postgres.close(),
        }
    }
}

/// The commit of a write: wait for it to know the row is durable.
pub struct Committed(Option<tokio::sync::oneshot::Receiver<Result<(), DbError>>>);

impl Committed {
    /// A write already durable.
    pub fn done() -> Self {
        Self(None)
    }

    /// A write whose batch commits later.
    pub(crate) fn pending(commit: tokio::sync::oneshot::Receiver<Result<(), DbError>>) -> Self {
        Self(Some(commit))
    }

    /// Resolves when the write is durable, or with why it is not.
    /// Cancel-safe: waiting again after a cancelled wait is fine.
    pub async fn wait(&mut self) -> Result<(), DbError> {
        let Some(commit) = &mut self.0 else {
            return Ok(());
        };
        let outcome = commit.await.unwrap_or(Err(DbError::Closed));
        self.0 = None;
        outcome
    }
}
