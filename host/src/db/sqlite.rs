//! SQLite: one writer thread with group commit, a pool of reader threads.
//!
//! Database work never runs on the async reactor. Every write goes to the
//! writer thread, which takes every job waiting (up to `max_batch`), runs them
//! in one `BEGIN IMMEDIATE` transaction and commits once: one fsync for the
//! whole batch. WAL checkpoints run on a thread of their own, so the writer
//! never stops to copy the log into the database. A job's caller hears back only after
//! the commit, so an acknowledged row is durable. Reads go to reader threads,
//! each with its own connection (WAL lets them run beside the writer).
//!
//! What a consumer may touch is enforced inside SQLite: see [`super::grant`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::grant::{Authorizer, Grant, Policy};
use super::{DbError, OpenError, Rows, Value, migrate, schema};
use crate::config::{DatabaseConfig, Synchronous};
use crate::metrics::Metrics;

/// The SQLite database handle; cheap to clone.
#[derive(Clone)]
pub struct Sqlite {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: crossbeam_channel::Sender<WriterMessage>,
    readers: crossbeam_channel::Sender<ReadJob>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    checkpoint_stop: crossbeam_channel::Sender<()>,
    reader_count: usize,
    limits: QueryLimits,
}

type ReadJob = Box<dyn FnOnce(&mut ReaderConnection) + Send>;

enum WriterMessage {
    Job(Box<dyn WriteJob>),
    Stop,
}

/// What a guest's query may return and make ([`DatabaseConfig`]'s caps).
#[derive(Debug, Clone, Copy)]
struct QueryLimits {
    timeout: Duration,
    max_rows: usize,
    max_bytes: usize,
    max_value_bytes: i32,
}

impl Sqlite {
    /// Opens (creating if needed) the database, applies the migrations, and
    /// starts the writer and reader threads.
    pub fn open(config: &DatabaseConfig, metrics: Arc<Metrics>) -> Result<Self, OpenError> {
        let path = config.path.clone();
        let fail = |source| OpenError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut writer_conn = open_connection(&path, config, false).map_err(fail)?;
        migrate::apply(&mut writer_conn).map_err(fail)?;

        let (writer_tx, writer_rx) = crossbeam_channel::unbounded();
        let (reader_tx, reader_rx) = crossbeam_channel::unbounded::<ReadJob>();
        let mut threads = Vec::new();
        let max_batch = config.max_batch;
        let commit_delay = Duration::from_micros(config.commit_delay_us);
        threads.push(
            std::thread::Builder::new()
                .name("db-writer".into())
                .spawn(move || {
                    writer_loop(writer_conn, writer_rx, max_batch, commit_delay, metrics)
                })?,
        );
        let (checkpoint_stop, checkpoint_stopped) = crossbeam_channel::bounded(1);
        let checkpointer = open_connection(&path, config, false).map_err(fail)?;
        threads.push(
            std::thread::Builder::new()
                .name("db-checkpoint".into())
                .spawn(move || checkpoint_loop(checkpointer, checkpoint_stopped))?,
        );
        for n in 0..config.readers {
            let conn = open_connection(&path, config, true).map_err(fail)?;
            let mut reader = ReaderConnection::new(conn).map_err(fail)?;
            let jobs = reader_rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("db-reader-{n}"))
                    .spawn(move || {
                        while let Ok(job) = jobs.recv() {
                            job(&mut reader);
                            if reader.stop {
                                break;
                            }
                        }
                    })?,
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: writer_tx,
                readers: reader_tx,
                threads: Mutex::new(threads),
                checkpoint_stop,
                reader_count: config.readers,
                limits: QueryLimits {
                    timeout: Duration::from_millis(config.query_timeout_ms),
                    max_rows: config.max_query_rows,
                    max_bytes: config.max_query_bytes,
                    max_value_bytes: i32::try_from(config.max_value_bytes).unwrap_or(i32::MAX),
                },
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What the admin API shows of the database.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "sqlite", "path": self.inner.path.display().to_string() })
    }

    /// The host's own read of one row (a user lookup): `sql` with `params`
    /// bound, no grant; `None` when it returns no row.
    pub async fn read_row(
        &self,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Option<Vec<Value>>, DbError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let width = stmt.column_count();
            let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
            let Some(row) = rows.next()? else {
                return Ok(None);
            };
            (0..width)
                .map(|index| Ok(Value::from(row.get_ref(index)?)))
                .collect::<Result<Vec<_>, DbError>>()
                .map(Some)
        })
        .await
    }

    /// Runs `work` on a reader thread with no grant (trusted host code).
    pub async fn read<R, F>(&self, work: F) -> Result<R, DbError>
    where
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
        R: Send + 'static,
    {
        self.on_reader(move |reader| {
            reader.authorizer.set(Policy::Trusted);
            work(&reader.conn)
        })
        .await
    }

    async fn on_reader<R, F>(&self, work: F) -> Result<R, DbError>
    where
        F: FnOnce(&mut ReaderConnection) -> Result<R, DbError> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |reader| {
            let _ = tx.send(work(reader));
        });
        self.inner.readers.send(job).map_err(|_| DbError::Closed)?;
        rx.await.map_err(|_| DbError::Closed)?
    }

    /// Runs `work` in the writer's next batch; resolves after the batch has
    /// committed (or failed). `work` shares the batch's transaction: it should
    /// write with one statement (a failing statement undoes itself and the
    /// rest of the batch commits), or use a savepoint of its own.
    pub async fn write<R, F>(&self, work: F) -> Result<R, DbError>
    where
        F: FnOnce(&mut WriterState) -> Result<R, DbError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            work: Some(work),
            result: None,
            reply,
        };
        self.inner
            .writer
            .send(WriterMessage::Job(Box::new(job)))
            .map_err(|_| DbError::Closed)?;
        rx.await.map_err(|_| DbError::Closed)?
    }

    /// A consumer's `db-query`: one read-only statement, checked against the
    /// grant by SQLite's authorizer, interrupted after the query timeout.
    pub async fn query(
        &self,
        grant: Arc<Grant>,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Rows, DbError> {
        let limits = self.inner.limits;
        self.on_reader(move |reader| reader.guest_query(&grant, &sql, &params, limits))
            .await
    }

    /// A consumer's `db-insert`; see [`schema`] for what the host fills in.
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
        self.write(move |state| state.insert(&grant, &table, row))
            .await
    }

    /// [`Sqlite::insert`] in two steps: resolves once the row is written in
    /// the writer's current batch (or refused: its errors are the
    /// statement's), with the batch's commit to wait for.
    pub async fn insert_staged(
        &self,
        grant: Arc<Grant>,
        table: String,
        row: Vec<(String, Value)>,
    ) -> Result<(Vec<(String, Value)>, super::Committed), DbError> {
        if !grant.may_write(&table) {
            return Err(DbError::AccessDenied(format!(
                "this consumer may not insert into {table:?}; grant it under `write` in its config"
            )));
        }
        let (executed, executed_rx) = oneshot::channel();
        let (committed, committed_rx) = oneshot::channel();
        let job = StagedJob {
            work: Some(move |state: &mut WriterState| state.insert(&grant, &table, row)),
            executed: Some(executed),
            committed,
        };
        self.inner
            .writer
            .send(WriterMessage::Job(Box::new(job)))
            .map_err(|_| DbError::Closed)?;
        let row = executed_rx.await.map_err(|_| DbError::Closed)??;
        Ok((row, super::Committed::pending(committed_rx)))
    }

    /// Finishes every queued write, then stops the threads. Later calls fail
    /// with [`DbError::Closed`].
    pub fn close(&self) {
        let _ = self.inner.writer.send(WriterMessage::Stop);
        let _ = self.inner.checkpoint_stop.try_send(());
        // Readers stop when their queue closes; a reader may be mid-query, so
        // give each a no-op that ends it instead of waiting on the channel.
        for _ in 0..self.inner.reader_count {
            let _ = self
                .inner
                .readers
                .send(Box::new(|reader: &mut ReaderConnection| {
                    reader.stop = true;
                }));
        }
        let threads = std::mem::take(&mut *self.inner.threads.lock().expect("not poisoned"));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn open_connection(
    path: &Path,
    config: &DatabaseConfig,
    read_only: bool,
) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let mut conn = Connection::open_with_flags(path, flags)?;
    harden(&conn)?;
    BUSY_TIMEOUT_MS.store(config.busy_timeout_ms, Ordering::Relaxed);
    conn.busy_handler(Some(wait_while_busy))?;
    if !read_only {
        // WAL: readers never block the writer nor the writer readers.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "SQLite refused WAL mode; readers will wait on the writer");
        }
    }
    let synchronous = match config.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    // A 32 MiB page cache per connection: the tables' and indexes' hot
    // pages stay in memory instead of being read again at every statement.
    // Foreign keys are not left to SQLite: Django declares them DEFERRABLE
    // INITIALLY DEFERRED, so SQLite would check them only at COMMIT and fail
    // the whole batch for one bad row, and would look every parent up a
    // second time. The host checks each insert's references itself (see
    // `schema`), which is also what gives a guest a precise error.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = OFF; PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;"
    ))?;
    if !read_only {
        // Checkpoints are the checkpointer thread's job, off the write path.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
    }
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// Closes what SQLite leaves open to SQL it did not write itself: guests'
/// statements run on these connections. Defensive mode refuses writes to
/// the schema and to virtual tables' shadow tables, and
/// `PRAGMA writable_schema`; an untrusted schema keeps functions with side
/// effects out of views and triggers; the FTS3 tokenizer hook (which takes
/// and returns raw pointers) stays off.
fn harden(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::config::DbConfig;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, false)?;
    Ok(())
}

/// How long a statement waits for a lock another process holds
/// (`[database] busy_timeout_ms`; one value per process).
static BUSY_TIMEOUT_MS: AtomicU64 = AtomicU64::new(5_000);

/// SQLite's own busy timeout sleeps in steps of up to 100 ms, which is what
/// a write waits when another process (another node on the same file) holds
/// the lock for a moment: group commits hold it for about a millisecond. This
/// waits in steps of 100 µs, then 1 ms, up to the configured timeout.
fn wait_while_busy(attempt: i32) -> bool {
    let attempt = attempt.max(0) as u64;
    let (step, waited) = if attempt < 100 {
        (
            Duration::from_micros(100),
            Duration::from_micros(100 * attempt),
        )
    } else {
        (
            Duration::from_millis(1),
            Duration::from_millis(10 + (attempt - 100)),
        )
    };
    if waited.as_millis() as u64 >= BUSY_TIMEOUT_MS.load(Ordering::Relaxed) {
        return false;
    }
    std::thread::sleep(step);
    true
}

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Copies the write-ahead log into the database file now and then, so the
/// log stays short without the writer ever waiting for it. PASSIVE: it
/// never blocks the writer or readers, it does what it can.
fn checkpoint_loop(conn: Connection, stop: crossbeam_channel::Receiver<()>) {
    loop {
        match stop.recv_timeout(CHECKPOINT_INTERVAL) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %err, "WAL checkpoint failed");
        }
    }
}

/// A reader thread's connection and what it has set on it.
pub struct ReaderConnection {
    conn: Connection,
    authorizer: Authorizer,
    /// Milliseconds since `epoch` after which the progress handler interrupts.
    deadline: Arc<AtomicI64>,
    epoch: Instant,
    stop: bool,
}

impl ReaderConnection {
    fn new(mut conn: Connection) -> rusqlite::Result<Self> {
        let deadline = Arc::new(AtomicI64::new(i64::MAX));
        let epoch = Instant::now();
        let watched = deadline.clone();
        // Every 1000 virtual-machine steps: past the deadline, interrupt.
        conn.progress_handler(
            1_000,
            Some(move || epoch.elapsed().as_millis() as i64 > watched.load(Ordering::Relaxed)),
        )?;
        let authorizer = Authorizer::install(&mut conn)?;
        Ok(Self {
            conn,
            authorizer,
            deadline,
            epoch,
            stop: false,
        })
    }

    fn guest_query(
        &mut self,
        grant: &Arc<Grant>,
        sql: &str,
        params: &[Value],
        limits: QueryLimits,
    ) -> Result<Rows, DbError> {
        use rusqlite::limits::Limit;
        // The statement cache is keyed by SQL text, and SQLite authorizes a
        // statement when it is prepared: tagging the text with the grant keeps
        // one consumer from reusing a statement another was allowed to prepare.
        let tagged = format!("{}{sql}", grant.cache_tag());
        let deadline = self.epoch.elapsed() + limits.timeout;
        self.deadline
            .store(deadline.as_millis() as i64, Ordering::Relaxed);
        self.authorizer.set(Policy::Query(grant.clone()));
        // No string or blob a guest's statement makes may exceed the cap
        // (`zeroblob(999999999)` fails at once instead of allocating).
        let length = self
            .conn
            .set_limit(Limit::SQLITE_LIMIT_LENGTH, limits.max_value_bytes);
        let result = run_query(&self.conn, &tagged, params, limits);
        if let Ok(previous) = length {
            let _ = self.conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, previous);
        }
        self.authorizer.set(Policy::Trusted);
        self.deadline.store(i64::MAX, Ordering::Relaxed);
        result
    }
}

/// The bytes a value takes in a result, for the query's byte cap.
fn value_bytes(value: &Value) -> usize {
    8 + match value {
        Value::Text(text) => text.len(),
        Value::Blob(blob) => blob.len(),
        _ => 0,
    }
}

fn run_query(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    limits: QueryLimits,
) -> Result<Rows, DbError> {
    let mut stmt = conn.prepare_cached(sql)?;
    if !stmt.readonly() {
        return Err(DbError::Invalid(
            "db-query runs read-only statements; use db-insert to write".into(),
        ));
    }
    let expected = stmt.parameter_count();
    if expected != params.len() {
        return Err(DbError::Invalid(format!(
            "{} parameters given, the statement has {expected}",
            params.len()
        )));
    }
    let columns: Vec<String> = stmt.column_names().map(String::from).collect();
    let width = columns.len();
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    let mut out = Vec::new();
    let mut bytes = 0;
    // The caps are checked as rows come, so a query that would return too
    // much stops before it holds it all.
    while let Some(row) = rows.next()? {
        if out.len() == limits.max_rows {
            return Err(DbError::Invalid(format!(
                "the query returns more than {} rows ([database] max_query_rows): add a LIMIT",
                limits.max_rows
            )));
        }
        let mut values = Vec::with_capacity(width);
        for index in 0..width {
            let value = Value::from(row.get_ref(index)?);
            bytes += value_bytes(&value);
            values.push(value);
        }
        if bytes > limits.max_bytes {
            return Err(DbError::Invalid(format!(
                "the query returns more than {} bytes ([database] max_query_bytes): select \
                 fewer columns or rows",
                limits.max_bytes
            )));
        }
        out.push(values);
    }
    Ok(Rows { columns, rows: out })
}

/// The writer thread's connection and its cache of table shapes.
pub struct WriterState {
    conn: Connection,
    authorizer: Authorizer,
    tables: schema::TableCache,
}

impl WriterState {
    /// The connection, inside the batch's transaction.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Inserts one row the way `db-insert` documents, as `grant` allows.
    pub fn insert(
        &mut self,
        grant: &Arc<Grant>,
        table: &str,
        row: Vec<(String, Value)>,
    ) -> Result<Vec<(String, Value)>, DbError> {
        let info = self.tables.get(&self.conn, table)?;
        schema::insert(&self.conn, &self.authorizer, grant, &info, row)
    }
}

trait WriteJob: Send {
    /// Runs inside the batch transaction; returns whether it succeeded.
    fn run(&mut self, state: &mut WriterState) -> bool;
    /// Reports the outcome once the batch has committed (`Ok`) or failed.
    fn complete(self: Box<Self>, committed: Result<(), DbError>);
}

struct Job<F, R> {
    work: Option<F>,
    result: Option<Result<R, DbError>>,
    reply: oneshot::Sender<Result<R, DbError>>,
}

impl<F, R> WriteJob for Job<F, R>
where
    F: FnOnce(&mut WriterState) -> Result<R, DbError> + Send,
    R: Send,
{
    fn run(&mut self, state: &mut WriterState) -> bool {
        let work = self.work.take().expect("a job runs once");
        let result = work(state);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn complete(self: Box<Self>, committed: Result<(), DbError>) {
        let result = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(err), Some(Ok(_))) | (Err(err), None) => Err(err),
            (_, Some(Err(err))) => Err(err),
            (Ok(()), None) => Err(DbError::Failed("job did not run".into())),
        };
        let _ = self.reply.send(result);
    }
}

/// A write whose caller hears of it twice: when its statement ran (the
/// row, or the statement's error) and when the batch committed.
struct StagedJob<F, R> {
    work: Option<F>,
    executed: Option<oneshot::Sender<Result<R, DbError>>>,
    committed: oneshot::Sender<Result<(), DbError>>,
}

impl<F, R> WriteJob for StagedJob<F, R>
where
    F: FnOnce(&mut WriterState) -> Result<R, DbError> + Send,
    R: Send,
{
    fn run(&mut self, state: &mut WriterState) -> bool {
        let work = self.work.take().expect("a job runs once");
        let result = work(state);
        let ok = result.is_ok();
        if let Some(executed) = self.executed.take() {
            let _ = executed.send(result);
        }
        ok
    }

    fn complete(self: Box<Self>, committed: Result<(), DbError>) {
        if let Some(executed) = self.executed {
            // The batch failed before the statement ran.
            let _ = executed.send(Err(committed
                .clone()
                .err()
                .unwrap_or(DbError::Failed("the write did not run".into()))));
        }
        let _ = self.committed.send(committed);
    }
}

/// Past this many frames (32 MiB of 4 KiB pages) the writer checkpoints
/// between batches so that the log starts over.
const WAL_RESTART_FRAMES: i64 = 8_192;

/// A batch at least this large means writers are queueing: the next batch
/// may wait for company.
const LINGER_AFTER_BATCH: usize = 4;

fn writer_loop(
    conn: Connection,
    jobs: crossbeam_channel::Receiver<WriterMessage>,
    max_batch: usize,
    commit_delay: Duration,
    metrics: Arc<Metrics>,
) {
    let Some((mut state, wal_frames)) = start_writer(conn) else {
        while let Ok(WriterMessage::Job(job)) = jobs.recv() {
            job.complete(Err(DbError::Failed(
                "the database writer could not start".into(),
            )));
        }
        return;
    };
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(max_batch);
    let mut stopping = false;
    let mut previous_size = 0;
    while !stopping {
        match jobs.recv() {
            Ok(WriterMessage::Job(job)) => batch.push(job),
            Ok(WriterMessage::Stop) | Err(_) => break,
        }
        // When the last batch was busy, wait up to `commit_delay` for more:
        // each commit writes every page it touched, and rows in one batch
        // share index pages, so fuller batches write far fewer pages per
        // row. A lone writer never waits.
        let linger_until =
            (previous_size >= LINGER_AFTER_BATCH).then(|| Instant::now() + commit_delay);
        stopping = gather(&jobs, &mut batch, max_batch, linger_until);
        let size = batch.len();
        previous_size = size;
        let outcome = run_batch(&mut state, &mut batch);
        if let Err(err) = &outcome {
            tracing::error!(error = %err, jobs = size, "a write batch failed to commit");
            metrics.db_batch_failures.inc();
        }
        metrics.db_batches.inc();
        metrics.db_writes.add(size as u64);
        bound_wal(&state.conn, &wal_frames);
        for job in batch.drain(..) {
            job.complete(outcome.clone());
        }
    }
    // Drain what is still queued so no caller waits forever.
    while let Ok(message) = jobs.try_recv() {
        if let WriterMessage::Job(job) = message {
            job.complete(Err(DbError::Closed));
        }
    }
    if let Err(err) = state.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %err, "WAL checkpoint at shutdown failed");
    }
}

/// The writer's connection made ready: its authorizer installed, and a hook
/// that keeps the WAL's length after each commit (for [`bound_wal`]).
/// `None` when the authorizer cannot be installed: no write may then run.
fn start_writer(mut conn: Connection) -> Option<(WriterState, Arc<AtomicI64>)> {
    let authorizer = match Authorizer::install(&mut conn) {
        Ok(authorizer) => authorizer,
        Err(err) => {
            tracing::error!(error = %err, "cannot install the writer's authorizer; refusing every write");
            return None;
        }
    };
    let wal_frames = Arc::new(AtomicI64::new(0));
    let seen = wal_frames.clone();
    if let Err(err) = conn.wal_hook(Some(
        move |_: &mut rusqlite::hooks::Wal, frames: std::ffi::c_int| {
            seen.store(i64::from(frames), Ordering::Relaxed);
            Ok(())
        },
    )) {
        tracing::warn!(error = %err, "cannot watch the WAL's length");
    }
    let state = WriterState {
        conn,
        authorizer,
        tables: schema::TableCache::default(),
    };
    Some((state, wal_frames))
}

/// Group commit: adds to `batch` everything that queued up while the last
/// batch was being written, up to `max_batch`, waiting until
/// `linger_until` for more when given. True when told to stop.
fn gather(
    jobs: &crossbeam_channel::Receiver<WriterMessage>,
    batch: &mut Vec<Box<dyn WriteJob>>,
    max_batch: usize,
    linger_until: Option<Instant>,
) -> bool {
    while batch.len() < max_batch {
        let next = match linger_until {
            Some(until) => jobs.recv_deadline(until).map_err(|_| ()),
            None => jobs.try_recv().map_err(|_| ()),
        };
        match next {
            Ok(WriterMessage::Job(job)) => batch.push(job),
            Ok(WriterMessage::Stop) => return true,
            Err(()) => return false,
        }
    }
    false
}

/// The checkpointer copies the log into the database concurrently, but the
/// log only starts over when a checkpoint has caught up between two write
/// transactions, which a busy writer never leaves room for. Past a bound,
/// the writer checkpoints itself (cheaply: the checkpointer has copied most
/// of it), so the log restarts instead of growing forever.
fn bound_wal(conn: &Connection, wal_frames: &AtomicI64) {
    if wal_frames.load(Ordering::Relaxed) > WAL_RESTART_FRAMES {
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %err, "WAL checkpoint by the writer failed");
        }
        wal_frames.store(0, Ordering::Relaxed);
    }
}

fn run_batch(state: &mut WriterState, batch: &mut [Box<dyn WriteJob>]) -> Result<(), DbError> {
    state.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    // Under the write lock the schema cannot change until the commit.
    if let Err(err) = state.tables.check_schema(&state.conn) {
        let _ = state.conn.execute_batch("ROLLBACK");
        return Err(err);
    }
    for job in batch.iter_mut() {
        // A job's statement that fails rolls itself back (SQLite undoes a
        // failed statement); the rest of the batch commits.
        job.run(state);
    }
    if let Err(err) = state
        .conn
        .prepare_cached("COMMIT")
        .and_then(|mut commit| commit.execute([]))
    {
        let _ = state.conn.execute_batch("ROLLBACK");
        return Err(err.into());
    }
    Ok(())
}
