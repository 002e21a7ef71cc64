//! PostgreSQL: the backend for nodes on several machines, which then share
//! nothing but PostgreSQL and Redis.
//!
//! The guest contract is SQLite's, kept exactly (see [`value`] for how
//! PostgreSQL's types appear to guests, [`params`] for `?1` parameters):
//!
//! - `db-query` runs on a connection logged in as the consumer's role
//!   ([`roles`]), in `BEGIN READ ONLY` ... `ROLLBACK`, under the role's
//!   `statement_timeout` (`[database] query_timeout_ms`), with the rows and
//!   bytes of its result capped while they arrive (`max_query_rows`,
//!   `max_query_bytes`, `max_value_bytes`). `BEGIN`, the statement and
//!   `ROLLBACK` go in one round trip.
//! - `db-insert` builds the row ([`schema`]) on the caller's task, then
//!   queues it, bounded (`max_queued_writes`), for the group-commit
//!   [`writer`], which answers after the commit.
//! - The host's own reads (user lookups, table shapes) use a pool logged in
//!   as the host.
//!
//! Start-up connects, applies `migrations/postgres/` under an advisory lock
//! ([`migrate`]) and starts the writer; a database that cannot be reached
//! stops the start with a message that says what to check. Later outages
//! are survived: see [`writer`].

pub mod commands;
mod connect;
pub mod migrate;
pub mod params;
mod pool;
mod roles;
mod schema;
pub mod seed;
pub mod value;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Statement;
use tokio_util::sync::CancellationToken;

use crate::config::DatabaseConfig;
use crate::db::{DbError, Grant, OpenError, Rows, Value};
use crate::metrics::Metrics;
use connect::{Target, describe};
use pool::{Conn, Pool};
use roles::Roles;
use schema::{Table, Tables};
use value::{Bound, Cell};
use writer::{Job, Writer};

/// The role a grant is enforced with (tests check its privileges).
#[cfg_attr(not(feature = "test-support"), allow(unused_imports))]
pub use roles::role_name;

/// Whether each writer is connected; `/healthz` reads it.
#[derive(Debug)]
pub struct Health(Vec<AtomicBool>);

impl Health {
    /// `writers` writers, none connected yet.
    pub fn new(writers: usize) -> Self {
        Self((0..writers).map(|_| AtomicBool::new(false)).collect())
    }

    /// Records writer `index`'s state.
    pub fn set(&self, index: usize, up: bool) {
        self.0[index].store(up, Ordering::Relaxed);
    }

    /// Whether every writer is connected.
    pub fn up(&self) -> bool {
        self.0.iter().all(|up| up.load(Ordering::Relaxed))
    }
}

/// The PostgreSQL handle; cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    inner: Arc<Inner>,
}

struct Inner {
    target: Arc<Target>,
    host: Arc<Pool>,
    roles: Roles,
    tables: Arc<Tables>,
    writer: mpsc::Sender<Job>,
    health: Arc<Health>,
    stop: CancellationToken,
    /// Hears when each writer has finished. A std lock: taken once, at close.
    stopped: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    writers: usize,
    limits: Limits,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    query_timeout: Duration,
    write_timeout: Duration,
    max_rows: usize,
    max_bytes: usize,
    max_value_bytes: usize,
    max_queued_writes: usize,
    pool_size: usize,
}

/// Quotes an SQL identifier.
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Whether an error means the connection is gone (or the server is going
/// away) rather than that PostgreSQL refused a statement.
pub fn is_connection_error(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(db) = err.as_db_error() {
        let code = db.code().code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300");
    }
    // tokio-postgres names its error kinds only in their text: these are
    // mistakes of the call, everything else is the connection's.
    const LOCAL: &[&str] = &[
        "error serializing parameter",
        "error deserializing column",
        "invalid column",
        "expected ",
        "query returned an unexpected number of rows",
        "invalid configuration",
        "invalid connection string",
    ];
    let text = err.to_string();
    !LOCAL.iter().any(|prefix| text.starts_with(prefix))
}

/// The guest's view of an error: the same cases as on SQLite. Texts are
/// PostgreSQL's message, never its detail (which may echo values).
pub fn map_error(err: &tokio_postgres::Error) -> DbError {
    if is_connection_error(err) {
        return DbError::Failed(format!(
            "the database connection failed ({}); try again shortly",
            describe(err)
        ));
    }
    let Some(db) = err.as_db_error() else {
        return DbError::Invalid(err.to_string());
    };
    let message = db.message().to_string();
    let code = db.code().code();
    match code {
        "42501" => DbError::AccessDenied(message),
        "42P01" | "42703" => DbError::NoSuchTable(message),
        "57014" => DbError::Timeout,
        "25006" => {
            DbError::Invalid("db-query runs read-only statements; use db-insert to write".into())
        }
        "54000" => DbError::Invalid(format!(
            "{message} (a value exceeds what the statement may make)"
        )),
        _ if code.starts_with("23") => DbError::Constraint(message),
        // Data exceptions quote the value after a colon: keep it out.
        _ if code.starts_with("22") => DbError::Invalid(
            message
                .split_once(": \"")
                .map_or(message.as_str(), |(said, _)| said)
                .to_string(),
        ),
        _ if code.starts_with("42") => DbError::Invalid(message),
        _ => DbError::Failed(message),
    }
}

/// Binds a guest's parameters by the types PostgreSQL inferred for them.
fn bind_params(
    statement: &Statement,
    params: &[Value],
    max_value_bytes: usize,
) -> Result<Vec<Bound>, DbError> {
    let types = statement.params();
    if types.len() != params.len() {
        return Err(DbError::Invalid(format!(
            "{} parameters given, the statement has {}",
            params.len(),
            types.len()
        )));
    }
    params
        .iter()
        .zip(types)
        .enumerate()
        .map(|(index, (value, ty))| {
            value::bind(value, ty, max_value_bytes)
                .map_err(|why| DbError::Invalid(format!("parameter ?{}: {why}", index + 1)))
        })
        .collect()
}

/// Columns a guest may not be given, refused before the statement runs.
fn check_columns(statement: &Statement) -> Result<(), DbError> {
    if statement.columns().is_empty() {
        return Err(DbError::Invalid(
            "db-query runs statements that return rows (SELECT, VALUES, WITH ... SELECT); \
             use db-insert to write"
                .into(),
        ));
    }
    for column in statement.columns() {
        if !value::readable(column.type_()) {
            return Err(DbError::Invalid(format!(
                "column {:?} has type {}, which db-query cannot return: cast it, e.g. \
                 `{}::text`",
                column.name(),
                column.type_().name(),
                column.name()
            )));
        }
    }
    Ok(())
}

/// The bytes a value takes in a result, for the byte cap (as on SQLite).
fn value_bytes(value: &Value) -> usize {
    8 + match value {
        Value::Text(text) => text.len(),
        Value::Blob(blob) => blob.len(),
        _ => 0,
    }
}

fn unavailable() -> DbError {
    writer::unavailable()
}

impl Postgres {
    /// Connects, migrates and starts the writer.
    pub async fn connect(
        config: &DatabaseConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, OpenError> {
        let url = config
            .postgres_url()
            .ok_or_else(|| OpenError::Postgres("no [database] url".into()))?;
        let target = Arc::new(Target::parse(url, config).map_err(OpenError::Postgres)?);
        let limits = Limits {
            query_timeout: Duration::from_millis(config.query_timeout_ms),
            write_timeout: Duration::from_millis(config.write_timeout_ms),
            max_rows: config.max_query_rows,
            max_bytes: config.max_query_bytes,
            max_value_bytes: config.max_value_bytes,
            max_queued_writes: config.max_queued_writes,
            pool_size: config.pool_size,
        };
        let unreachable = |err: &tokio_postgres::Error| {
            OpenError::Postgres(format!(
                "cannot connect to {}: {}. Check that PostgreSQL runs there, that it accepts \
                 this user and password from this host (pg_hba.conf), and the sslmode",
                target.display,
                describe(err)
            ))
        };
        let host_config = target.host(limits.write_timeout);
        let (mut client, task) = target
            .connect(&host_config)
            .await
            .map_err(|err| unreachable(&err))?;
        let applied = migrate::apply(&mut client).await.map_err(|err| {
            OpenError::Postgres(format!(
                "cannot migrate {} ({}): the host's user needs to create tables in the first \
                 schema of its search_path, or run `consumer-host migrate` as one who can",
                target.display,
                describe(&err)
            ))
        })?;
        drop(client);
        let _ = task.await;
        if !applied.is_empty() {
            tracing::info!(database = %target.display, applied = ?applied, "migrations applied");
        }
        let host = Pool::new(
            "the host".into(),
            target.clone(),
            host_config.clone(),
            limits.pool_size,
            limits.write_timeout,
        );
        let roles = Roles::new(
            target.clone(),
            host.clone(),
            limits.query_timeout,
            limits.pool_size,
            limits.write_timeout,
        );
        let tables = Arc::new(Tables::default());
        let health = Arc::new(Health::new(config.writers));
        let stop = CancellationToken::new();
        let (jobs, queue) = mpsc::channel(limits.max_queued_writes);
        let queue: writer::Queue = Arc::new(tokio::sync::Mutex::new(queue));
        let (stopped_tx, stopped) = std::sync::mpsc::channel();
        for index in 0..config.writers {
            let mut writer = Writer::new(
                target.clone(),
                host_config.clone(),
                queue.clone(),
                stop.clone(),
                health.clone(),
                index,
                metrics.clone(),
                tables.clone(),
                writer::Settings {
                    max_batch: config.max_batch,
                    write_timeout: limits.write_timeout,
                },
            );
            writer.connect().await.map_err(|err| unreachable(&err))?;
            let stopped_tx = stopped_tx.clone();
            tokio::spawn(async move {
                writer.run().await;
                let _ = stopped_tx.send(());
            });
        }
        tracing::info!(database = %target.display, pool_size = limits.pool_size, "PostgreSQL ready");
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                host,
                roles,
                tables,
                writer: jobs,
                health,
                stop,
                stopped: Mutex::new(Some(stopped)),
                writers: config.writers,
                limits,
                metrics,
            }),
        })
    }

    /// What the admin API shows (the URL without its password).
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "postgres",
            "url": self.inner.target.display,
            "healthy": self.healthy(),
            "pool_size": self.inner.limits.pool_size,
            "queued_writes": self.inner.limits.max_queued_writes - self.inner.writer.capacity(),
        })
    }

    /// Whether the writer is connected.
    pub fn healthy(&self) -> bool {
        self.inner.health.up()
    }

    /// Sets up `grant`'s role now (see [`roles`]).
    pub async fn prepare_grant(&self, grant: &Arc<Grant>) -> Result<(), DbError> {
        self.inner.roles.get(grant).await.map(|_| ())
    }

    /// Fails at once while the database is away or closing.
    fn available(&self) -> Result<(), DbError> {
        if self.inner.stop.is_cancelled() {
            return Err(DbError::Closed);
        }
        if !self.healthy() {
            self.inner.metrics.db_unavailable.inc();
            return Err(unavailable());
        }
        Ok(())
    }

    /// The host's read of one row, as the host.
    pub async fn read_row(
        &self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Option<Vec<Value>>, DbError> {
        self.available()?;
        let sql = params::rewrite(sql).map_err(DbError::Invalid)?;
        let mut conn = self.inner.host.get().await?;
        let statement = prepare(&mut conn, &sql).await?;
        let bound = bind_params(&statement, &params, self.inner.limits.max_value_bytes)?;
        let rows = conn
            .client
            .query(&statement, &refs(&bound))
            .await
            .map_err(|err| map_error(&err))?;
        conn.done();
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        (0..row.len())
            .map(|index| {
                row.try_get::<_, Cell>(index)
                    .map(|cell| cell.0)
                    .map_err(|err| DbError::Invalid(err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A consumer's `db-query`, as its role, read-only, rolled back.
    pub async fn query(
        &self,
        grant: Arc<Grant>,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Rows, DbError> {
        self.available()?;
        let role = self.inner.roles.get(&grant).await?;
        let sql = params::rewrite(&sql).map_err(DbError::Invalid)?;
        let limits = self.inner.limits;
        let mut conn = role.pool.get().await?;
        let statement = prepare(&mut conn, &sql).await?;
        let checked = check_columns(&statement)
            .and_then(|()| bind_params(&statement, &params, limits.max_value_bytes));
        let bound = match checked {
            Ok(bound) => bound,
            Err(err) => {
                conn.done();
                return Err(err);
            }
        };
        // The server cuts the statement at statement_timeout; this is for a
        // server that stops answering altogether.
        let guard = limits.query_timeout + Duration::from_secs(1);
        match tokio::time::timeout(guard, read_only(&conn, &statement, &bound, limits)).await {
            Ok(Ok(rows)) => {
                conn.done();
                Ok(rows)
            }
            Ok(Err((err, clean))) => {
                if clean {
                    conn.done();
                }
                Err(err)
            }
            Err(_) => Err(DbError::Timeout),
        }
    }

    async fn table(&self, name: &str) -> Result<Arc<Table>, DbError> {
        if let Some(table) = self.inner.tables.cached(name) {
            return Ok(table);
        }
        let mut conn = self.inner.host.get().await?;
        let table = schema::load(&conn.client, name).await;
        if !matches!(&table, Err(DbError::Failed(_))) {
            conn.done();
        }
        Ok(self.inner.tables.keep(table?))
    }

    /// A consumer's `db-insert`: checked and built here, written by the
    /// writer; resolves after the commit.
    pub async fn insert(
        &self,
        grant: Arc<Grant>,
        table: String,
        row: Vec<(String, Value)>,
    ) -> Result<Vec<(String, Value)>, DbError> {
        if !grant.may_write(&table) {
            return Err(DbError::AccessDenied(format!(
                "this consumer may not insert into {table:?}; grant it under `write` in its config"
            )));
        }
        self.available()?;
        let limits = self.inner.limits;
        let deadline = Instant::now() + limits.write_timeout;
        let role = self.inner.roles.get(&grant).await?;
        let shape = self.table(&table).await?;
        let row = shape.row(row, limits.max_value_bytes)?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            role,
            table: shape,
            row,
            deadline,
            reply,
        };
        // A full queue: wait for room, as long as the write may take.
        let room = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(room, self.inner.writer.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(DbError::Closed),
            Err(_) => {
                self.inner.metrics.db_writes_refused.inc();
                return Err(DbError::Failed(format!(
                    "the database write queue is full ({} writes waiting: [database] \
                     max_queued_writes); the row was not saved",
                    limits.max_queued_writes
                )));
            }
        }
        answer.await.map_err(|_| DbError::Closed)?
    }

    /// Lets the writer finish what is queued, then stops it. Blocks: call
    /// it from a blocking thread.
    pub fn close(&self) {
        self.inner.stop.cancel();
        let stopped = self.inner.stopped.lock().expect("not poisoned").take();
        if let Some(stopped) = stopped {
            let deadline =
                Instant::now() + self.inner.limits.write_timeout + Duration::from_secs(2);
            for _ in 0..self.inner.writers {
                let left = deadline.saturating_duration_since(Instant::now());
                if stopped.recv_timeout(left).is_err() {
                    break;
                }
            }
        }
    }
}

fn refs(bound: &[Bound]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    bound
        .iter()
        .map(|value| value as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// Prepares `sql` on `conn` (from its cache); a refusal leaves the
/// connection fit for reuse, a lost connection does not.
async fn prepare(conn: &mut pool::Lease, sql: &str) -> Result<Statement, DbError> {
    match conn.prepare_cached(sql).await {
        Ok(statement) => Ok(statement),
        Err(err) => {
            if !is_connection_error(&err) {
                conn.done();
            }
            Err(map_error(&err))
        }
    }
}

/// `BEGIN READ ONLY`, the statement, `ROLLBACK`: in one round trip. The
/// error comes with whether the connection is still fit for reuse.
async fn read_only(
    conn: &Conn,
    statement: &Statement,
    bound: &[Bound],
    limits: Limits,
) -> Result<Rows, (DbError, bool)> {
    let columns: Vec<String> = statement
        .columns()
        .iter()
        .map(|column| column.name().to_string())
        .collect();
    let width = columns.len();
    let begin = conn.client.query(&conn.begin_read_only, &[]);
    let rows = async {
        let stream = conn.client.query_raw(statement, bound.iter()).await?;
        futures_util::pin_mut!(stream);
        let mut out = Vec::new();
        let mut bytes = 0;
        // The caps are checked as rows come; past one the rest is dropped.
        while let Some(row) = stream.try_next().await? {
            if out.len() == limits.max_rows {
                return Ok(Err(DbError::Invalid(format!(
                    "the query returns more than {} rows ([database] max_query_rows): add a LIMIT",
                    limits.max_rows
                ))));
            }
            let mut values = Vec::with_capacity(width);
            for index in 0..width {
                let value = match row.try_get::<_, Cell>(index) {
                    Ok(cell) => cell.0,
                    Err(err) => return Ok(Err(DbError::Invalid(err.to_string()))),
                };
                let size = value_bytes(&value);
                if size - 8 > limits.max_value_bytes {
                    return Ok(Err(DbError::Invalid(format!(
                        "a value of the result exceeds [database] max_value_bytes ({})",
                        limits.max_value_bytes
                    ))));
                }
                bytes += size;
                values.push(value);
            }
            if bytes > limits.max_bytes {
                return Ok(Err(DbError::Invalid(format!(
                    "the query returns more than {} bytes ([database] max_query_bytes): select \
                     fewer columns or rows",
                    limits.max_bytes
                ))));
            }
            out.push(values);
        }
        Ok::<_, tokio_postgres::Error>(Ok(out))
    };
    let rollback = conn.client.query(&conn.rollback, &[]);
    let (begun, rows, rolled_back) = futures_util::future::join3(begin, rows, rollback).await;
    let fit = |err: &tokio_postgres::Error| (map_error(err), !is_connection_error(err));
    begun.map_err(|err| fit(&err))?;
    let rows = rows.map_err(|err| fit(&err))?;
    rolled_back.map_err(|err| fit(&err))?;
    Ok(Rows {
        columns,
        rows: rows.map_err(|err| (err, true))?,
    })
}

/// Connects once as the host, for the command line (`migrate`, `seed`,
/// `token`); the connection's task runs on the current runtime.
pub async fn connect_once(config: &DatabaseConfig) -> Result<tokio_postgres::Client, OpenError> {
    let url = config
        .postgres_url()
        .ok_or_else(|| OpenError::Postgres("no [database] url".into()))?;
    let target = Target::parse(url, config).map_err(OpenError::Postgres)?;
    let (client, _task) = target
        .connect(&target.host(Duration::from_millis(config.write_timeout_ms.max(60_000))))
        .await
        .map_err(|err| {
            OpenError::Postgres(format!(
                "cannot connect to {}: {}",
                target.display,
                describe(&err)
            ))
        })?;
    Ok(client)
}

/// The host's read of one row on a connection of its own (`token`).
pub async fn read_row_once(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[Value],
) -> Result<Option<Vec<Value>>, DbError> {
    let sql = params::rewrite(sql).map_err(DbError::Invalid)?;
    let statement = client.prepare(&sql).await.map_err(|err| map_error(&err))?;
    let bound = bind_params(&statement, params, usize::MAX)?;
    let rows = client
        .query(&statement, &refs(&bound))
        .await
        .map_err(|err| map_error(&err))?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    (0..row.len())
        .map(|index| {
            row.try_get::<_, Cell>(index)
                .map(|cell| cell.0)
                .map_err(|err| DbError::Invalid(err.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// What an error says, for the command line.
pub fn explain(err: &tokio_postgres::Error) -> String {
    describe(err)
}
