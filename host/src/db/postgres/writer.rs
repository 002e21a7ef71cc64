//! Group commit over the network: one task, one connection, every waiting
//! insert in one transaction, the whole batch in one round trip.
//!
//! The writer takes every job queued (up to `max_batch`) and sends, without
//! waiting for answers in between (pipelining): `BEGIN`, then per consumer
//! role `SET LOCAL ROLE` and its rows' `INSERT ... RETURNING *`, then
//! `COMMIT`. A caller hears back only after the commit: with PostgreSQL's
//! `synchronous_commit = on`, an acknowledged row is durable.
//!
//! One bad row must not fail its batch. Rows are checked before they queue
//! (see [`super::schema`]); before the transaction the writer looks up, in
//! one round trip for the whole batch, the rows every foreign key names
//! (Django's are `DEFERRABLE INITIALLY DEFERRED`: checked only at COMMIT,
//! one dangling key would roll back everything); a duplicate key returns no
//! row (`ON CONFLICT DO NOTHING`). Whatever still fails (a CHECK
//! constraint, a parent deleted meanwhile) rolls the batch back: the failing
//! row's caller gets its error, and the others are written again, each in a
//! transaction of its own (still one round trip).
//!
//! When the connection is lost, the writer reconnects on its own, backing
//! off from 100 ms to 1 s; meanwhile every insert fails at once (the client
//! gets an error frame, not a wait) and `/healthz` says `degraded`. A batch
//! whose COMMIT got no answer is in doubt: after reconnecting (and making
//! sure the old session is gone) the writer looks its rows up by primary
//! key: those found were committed and are acknowledged, the others are
//! written again if their time allows. Nothing acknowledged is lost, and
//! nothing is written twice.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Row as PgRow, Statement};
use tokio_util::sync::CancellationToken;

use super::Health;
use super::connect::{ConnectionTask, Target, describe};
use super::roles::Role;
use super::schema::{Row, Table, Tables};
use super::value::{BoundArray, Cell, RawValue};
use super::{is_connection_error, map_error};
use crate::db::{DbError, Value};
use crate::metrics::Metrics;

/// Reconnecting waits this long after a failure, doubling up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// See [`MIN_BACKOFF`].
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Statements the writer keeps prepared; past it the cache starts over.
const MAX_STATEMENTS: usize = 512;
/// Parent keys seen to exist are not looked up again for this long (a
/// parent deleted meanwhile fails at COMMIT, and its rows are written one
/// by one with their own errors)...
const KNOWN_KEYS_FOR: Duration = Duration::from_secs(5);
/// ... nor past this many.
const MAX_KNOWN_KEYS: usize = 100_000;

/// The queue, shared by the writers: each takes a batch in turn.
pub type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>;

/// What a caller gets back: the row as written.
pub type Written = Result<Vec<(String, Value)>, DbError>;

/// One insert waiting for the writer.
pub struct Job {
    /// Whose privileges it is written with.
    pub role: Arc<Role>,
    /// Into which table.
    pub table: Arc<Table>,
    /// The row, checked and bound.
    pub row: Row,
    /// Past this the job fails instead of being written.
    pub deadline: Instant,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Written>,
}

impl Job {
    fn answer(self, outcome: Written) {
        let _ = self.reply.send(outcome);
    }
}

/// Why a job waits for the next connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// It was never committed: write it again.
    Retry,
    /// Its COMMIT got no answer: look it up first.
    InDoubt,
}

struct Connection {
    client: Client,
    task: ConnectionTask,
    /// The server process of this session, to end it if it outlives us.
    pid: i32,
    begin: Statement,
    commit: Statement,
    statements: HashMap<String, Statement>,
}

impl Connection {
    fn prepared(&self, sql: &str) -> Option<&Statement> {
        self.statements.get(sql)
    }
}

/// Settings the writer runs with.
pub struct Settings {
    /// Most jobs per batch (`[database] max_batch`).
    pub max_batch: usize,
    /// How long a batch may take, and a job may wait (`write_timeout_ms`).
    pub write_timeout: Duration,
}

/// The writer task's state.
pub struct Writer {
    target: Arc<Target>,
    config: Config,
    jobs: Queue,
    stop: CancellationToken,
    health: Arc<Health>,
    /// This writer's place in `health`.
    index: usize,
    metrics: Arc<Metrics>,
    tables: Arc<Tables>,
    settings: Settings,
    conn: Option<Connection>,
    /// Parent keys known to exist, by lookup statement.
    known: HashMap<String, HashSet<RawValue>>,
    known_since: Instant,
    /// The session that was lost, if its server process may still run.
    lost_pid: Option<i32>,
    pending: Vec<(Job, Pending)>,
}

type Step<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<PgRow>, tokio_postgres::Error>> + Send + 'a>>;

/// Runs `statement` with `params` (a future that borrows both).
fn step<'a>(
    client: &'a Client,
    statement: &'a Statement,
    params: &'a [&'a (dyn ToSql + Sync)],
) -> Step<'a> {
    Box::pin(client.query(statement, params))
}

impl Writer {
    /// A writer for `jobs`; `first` is a connection already open (the one
    /// that migrated), if any.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: Arc<Target>,
        config: Config,
        jobs: Queue,
        stop: CancellationToken,
        health: Arc<Health>,
        index: usize,
        metrics: Arc<Metrics>,
        tables: Arc<Tables>,
        settings: Settings,
    ) -> Self {
        Self {
            target,
            config,
            jobs,
            stop,
            health,
            index,
            metrics,
            tables,
            settings,
            conn: None,
            lost_pid: None,
            pending: Vec::new(),
            known: HashMap::new(),
            known_since: Instant::now(),
        }
    }

    /// Connects, for the first time (start-up waits for this).
    pub async fn connect(&mut self) -> Result<(), tokio_postgres::Error> {
        self.conn = Some(self.open().await?);
        self.health.set(self.index, true);
        Ok(())
    }

    async fn open(&self) -> Result<Connection, tokio_postgres::Error> {
        let (client, task) = self.target.connect(&self.config).await?;
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0);
        let synchronous: String = client
            .query_one("SHOW synchronous_commit", &[])
            .await?
            .get(0);
        if synchronous == "off" {
            tracing::warn!(
                "PostgreSQL's synchronous_commit is off: a crash of the server can lose writes \
                 that were already acknowledged to clients"
            );
        }
        let begin = client.prepare("BEGIN").await?;
        let commit = client.prepare("COMMIT").await?;
        Ok(Connection {
            client,
            task,
            pid,
            begin,
            commit,
            statements: HashMap::new(),
        })
    }

    /// Serves jobs until stopped; then writes what is queued and returns.
    pub async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut down_since: Option<Instant> = None;
        loop {
            if self.conn.is_none() {
                match self.open().await {
                    Ok(conn) => {
                        self.conn = Some(conn);
                        self.health.set(self.index, true);
                        backoff = MIN_BACKOFF;
                        self.metrics.db_reconnects.inc();
                        if let Some(since) = down_since.take() {
                            tracing::info!(
                                down_ms = since.elapsed().as_millis() as u64,
                                "PostgreSQL is back; writes resume"
                            );
                        }
                        self.resolve().await;
                    }
                    Err(err) => {
                        self.health.set(self.index, false);
                        if down_since.is_none() {
                            down_since = Some(Instant::now());
                            tracing::error!(
                                error = %describe(&err),
                                database = %self.target.display,
                                "PostgreSQL is unreachable; inserts fail until it is back"
                            );
                        }
                        self.expire_pending();
                        let until = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        loop {
                            tokio::select! {
                                () = self.stop.cancelled() => {
                                    self.fail_everything().await;
                                    return;
                                }
                                job = next_job(&self.jobs) => match job {
                                    Some(job) => {
                                        self.metrics.db_unavailable.inc();
                                        job.answer(Err(unavailable()));
                                    }
                                    None => {
                                        self.fail_everything().await;
                                        return;
                                    }
                                },
                                () = tokio::time::sleep_until(until) => break,
                            }
                        }
                    }
                }
                continue;
            }
            enum Next {
                Batch(Vec<Job>),
                Stop,
                Lost,
            }
            let conn = self.conn.as_mut().expect("connected");
            let next = tokio::select! {
                biased;
                () = self.stop.cancelled() => Next::Stop,
                batch = next_batch(&self.jobs, self.settings.max_batch) => batch.map_or(Next::Stop, Next::Batch),
                _ = &mut conn.task => Next::Lost,
            };
            match next {
                Next::Batch(batch) => self.write(batch).await,
                Next::Stop => {
                    self.finish().await;
                    return;
                }
                Next::Lost => self.lose("the connection closed", false),
            }
        }
    }

    /// After a stop: writes what is queued, settles what is pending, and
    /// fails whatever could not be.
    async fn finish(&mut self) {
        self.jobs.lock().await.close();
        loop {
            let mut batch = Vec::new();
            {
                let mut jobs = self.jobs.lock().await;
                while batch.len() < self.settings.max_batch {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
            }
            if batch.is_empty() || self.conn.is_none() {
                for job in batch {
                    job.answer(Err(DbError::Closed));
                }
                break;
            }
            self.write(batch).await;
        }
        if self.conn.is_some() {
            self.resolve().await;
        }
        self.fail_everything().await;
    }

    async fn fail_everything(&mut self) {
        {
            let mut jobs = self.jobs.lock().await;
            jobs.close();
            while let Ok(job) = jobs.try_recv() {
                job.answer(Err(DbError::Closed));
            }
        }
        for (job, pending) in self.pending.drain(..) {
            job.answer(Err(match pending {
                Pending::Retry => DbError::Closed,
                Pending::InDoubt => in_doubt(),
            }));
        }
    }

    /// Drops the connection (PostgreSQL went away, or stopped answering).
    fn lose(&mut self, why: &str, stalled: bool) {
        if let Some(conn) = self.conn.take() {
            tracing::warn!(why, "lost the PostgreSQL writer connection; reconnecting");
            conn.task.abort();
            if stalled {
                self.lost_pid = Some(conn.pid);
            }
        }
        self.health.set(self.index, false);
    }

    /// Fails the pending jobs whose time is up.
    fn expire_pending(&mut self) {
        let now = Instant::now();
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(job, _)| job.deadline <= now);
        self.pending = kept;
        for (job, pending) in expired {
            job.answer(Err(match pending {
                Pending::Retry => unavailable(),
                Pending::InDoubt => in_doubt(),
            }));
        }
    }

    /// Writes one batch, answering every job (or leaving it pending when
    /// the connection is lost).
    async fn write(&mut self, batch: Vec<Job>) {
        let now = Instant::now();
        let (batch, late): (Vec<Job>, Vec<Job>) =
            batch.into_iter().partition(|job| job.deadline > now);
        for job in late {
            job.answer(Err(DbError::Failed(
                "the insert waited longer than [database] write_timeout_ms for the database".into(),
            )));
        }
        if batch.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.settings.write_timeout;
        let Some(batch) = self.prepare(batch, deadline).await else {
            return;
        };
        let Some(batch) = self.check_references(batch, deadline).await else {
            return;
        };
        if batch.is_empty() {
            return;
        }
        let Some(failed) = self.commit_together(batch, deadline).await else {
            return;
        };
        if !failed.is_empty() {
            self.metrics.db_batch_failures.inc();
            self.commit_each(failed, deadline).await;
        }
    }

    /// Prepares the statements the batch needs that are not prepared yet.
    /// Jobs whose statement PostgreSQL refuses are answered; `None` when the
    /// connection was lost (the jobs are pending).
    async fn prepare(
        &mut self,
        batch: Vec<Job>,
        deadline: tokio::time::Instant,
    ) -> Option<Vec<Job>> {
        let conn = self.conn.as_mut().expect("connected");
        let missing_from = |conn: &Connection| {
            let mut missing: Vec<String> = Vec::new();
            let mut seen = HashSet::new();
            for job in &batch {
                let needed = std::iter::once(job.row.sql.as_str())
                    .chain(job.row.bulk_sql.as_deref())
                    .chain(std::iter::once(job.role.set_local.as_str()))
                    .chain(
                        job.table
                            .foreign_keys
                            .iter()
                            .map(|key| key.check_sql.as_str()),
                    );
                for sql in needed {
                    if conn.prepared(sql).is_none() && seen.insert(sql) {
                        missing.push(sql.to_string());
                    }
                }
            }
            missing
        };
        let mut missing = missing_from(conn);
        if missing.is_empty() {
            return Some(batch);
        }
        if conn.statements.len() + missing.len() > MAX_STATEMENTS {
            conn.statements.clear();
            missing = missing_from(conn);
        }
        let client = &conn.client;
        let prepared = tokio::time::timeout_at(
            deadline,
            join_all(missing.iter().map(|sql| client.prepare(sql))),
        )
        .await;
        let Ok(prepared) = prepared else {
            self.lose("PostgreSQL did not answer within write_timeout_ms", true);
            self.park(batch, Pending::Retry);
            return None;
        };
        let mut refused: HashMap<String, DbError> = HashMap::new();
        for (sql, result) in missing.into_iter().zip(prepared) {
            match result {
                Ok(statement) => {
                    conn.statements.insert(sql, statement);
                }
                Err(err) if is_connection_error(&err) => {
                    self.lose(&describe(&err), false);
                    self.park(batch, Pending::Retry);
                    return None;
                }
                Err(err) => {
                    refused.insert(sql, map_error(&err));
                }
            }
        }
        let mut kept = Vec::with_capacity(batch.len());
        for job in batch {
            let error = refused
                .get(&job.row.sql)
                .or_else(|| job.row.bulk_sql.as_ref().and_then(|sql| refused.get(sql)))
                .or_else(|| refused.get(&job.role.set_local));
            match error {
                Some(error) => {
                    // The table's columns may have changed: read them again next time.
                    self.tables.forget(&job.table.name);
                    job.answer(Err(error.clone()));
                }
                None => kept.push(job),
            }
        }
        Some(kept)
    }

    /// Looks up, for the whole batch, the rows its foreign keys name; a job
    /// naming a row that does not exist is answered with a constraint error.
    async fn check_references(
        &mut self,
        batch: Vec<Job>,
        deadline: tokio::time::Instant,
    ) -> Option<Vec<Job>> {
        if self.known_since.elapsed() > KNOWN_KEYS_FOR
            || self.known.values().map(HashSet::len).sum::<usize>() > MAX_KNOWN_KEYS
        {
            self.known.clear();
            self.known_since = Instant::now();
        }
        let known = &self.known;
        let conn = self.conn.as_ref().expect("connected");
        // Per check statement: the keys the batch names.
        let mut wanted: HashMap<&str, (BoundArray, HashSet<RawValue>)> = HashMap::new();
        for job in &batch {
            for key in &job.table.foreign_keys {
                let Some(value) = job.row.value_of(key.column) else {
                    continue;
                };
                let raw = value.raw(&job.table.columns[key.column].ty);
                if raw.0.is_none()
                    || conn.prepared(&key.check_sql).is_none()
                    || known
                        .get(&key.check_sql)
                        .is_some_and(|keys| keys.contains(&raw))
                {
                    continue;
                }
                let (array, seen) = wanted
                    .entry(key.check_sql.as_str())
                    .or_insert_with(|| (BoundArray(Vec::new()), HashSet::new()));
                if seen.insert(raw) {
                    array.0.push(value.clone());
                }
            }
        }
        if wanted.is_empty() {
            return Some(batch);
        }
        let checks: Vec<(&str, &BoundArray)> = wanted
            .iter()
            .map(|(sql, (array, _))| (*sql, array))
            .collect();
        let params: Vec<[&(dyn ToSql + Sync); 1]> = checks
            .iter()
            .map(|(_, array)| [*array as &(dyn ToSql + Sync)])
            .collect();
        let client = &conn.client;
        let results = tokio::time::timeout_at(
            deadline,
            join_all(checks.iter().zip(&params).map(|((sql, _), params)| {
                step(client, conn.prepared(sql).expect("prepared above"), params)
            })),
        )
        .await;
        let Ok(results) = results else {
            self.lose("PostgreSQL did not answer within write_timeout_ms", true);
            self.park(batch, Pending::Retry);
            return None;
        };
        // Per check statement: the keys found, or None when the check could
        // not run (COMMIT's own check still applies).
        let mut found: HashMap<String, Option<HashSet<RawValue>>> = HashMap::new();
        let mut lost = None;
        for ((sql, _), result) in checks.iter().zip(results) {
            match result {
                Ok(rows) => {
                    found.insert(
                        sql.to_string(),
                        Some(rows.iter().map(|row| row.get::<_, RawValue>(0)).collect()),
                    );
                }
                Err(err) if is_connection_error(&err) => {
                    lost = Some(describe(&err));
                    break;
                }
                Err(err) => {
                    tracing::debug!(error = %describe(&err), sql, "a foreign-key lookup failed; COMMIT checks it");
                    found.insert(sql.to_string(), None);
                }
            }
        }
        if let Some(why) = lost {
            drop(checks);
            drop(wanted);
            self.lose(&why, false);
            self.park(batch, Pending::Retry);
            return None;
        }
        for (sql, keys) in &found {
            if let Some(keys) = keys {
                self.known
                    .entry(sql.clone())
                    .or_default()
                    .extend(keys.iter().cloned());
            }
        }
        let mut kept = Vec::with_capacity(batch.len());
        'jobs: for job in batch {
            for key in &job.table.foreign_keys {
                let Some(value) = job.row.value_of(key.column) else {
                    continue;
                };
                let raw = value.raw(&job.table.columns[key.column].ty);
                if raw.0.is_none() {
                    continue;
                }
                if let Some(Some(keys)) = found.get(&key.check_sql)
                    && !keys.contains(&raw)
                    && !self
                        .known
                        .get(&key.check_sql)
                        .is_some_and(|known| known.contains(&raw))
                {
                    let message = format!(
                        "FOREIGN KEY constraint failed: {}.{} names no row of {}",
                        job.table.name, job.table.columns[key.column].name, key.parent
                    );
                    job.answer(Err(DbError::Constraint(message)));
                    continue 'jobs;
                }
            }
            kept.push(job);
        }
        Some(kept)
    }

    /// One transaction for the whole batch. Rows of one role, table and
    /// shape go in one statement (`unnest` of an array per column) when
    /// their keys are known, else one statement each. Returns the jobs to
    /// write again one by one (the transaction failed), or `None` if the
    /// connection was lost (they are pending).
    async fn commit_together(
        &mut self,
        mut batch: Vec<Job>,
        deadline: tokio::time::Instant,
    ) -> Option<Vec<Job>> {
        batch.sort_by(|a, b| (&a.role.name, &a.row.sql).cmp(&(&b.role.name, &b.row.sql)));
        let groups = runs_of_one_statement(&batch);
        let bulk = |group: &Range<usize>| is_bulk(&batch, group);
        // A bulk group's parameters: one array per column.
        let arrays: Vec<Vec<BoundArray>> = groups
            .iter()
            .map(|group| column_arrays(&batch, group))
            .collect();
        let bulk_params: Vec<Vec<&(dyn ToSql + Sync)>> = arrays
            .iter()
            .map(|columns| {
                columns
                    .iter()
                    .map(|array| array as &(dyn ToSql + Sync))
                    .collect()
            })
            .collect();
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = batch
            .iter()
            .map(|job| {
                job.row
                    .values
                    .iter()
                    .map(|value| value as &(dyn ToSql + Sync))
                    .collect()
            })
            .collect();
        let conn = self.conn.as_ref().expect("connected");
        let mut kinds = vec![Kind::Begin];
        let mut steps: Vec<Step<'_>> = vec![step(&conn.client, &conn.begin, &[])];
        let mut role: Option<&str> = None;
        for (number, group) in groups.iter().enumerate() {
            let first = &batch[group.start];
            if role != Some(first.role.name.as_str()) {
                role = Some(first.role.name.as_str());
                kinds.push(Kind::Role(group.start));
                steps.push(step(
                    &conn.client,
                    conn.prepared(&first.role.set_local).expect("prepared"),
                    &[],
                ));
            }
            if bulk(group) {
                let sql = first.row.bulk_sql.as_deref().expect("a bulk group");
                kinds.push(Kind::Bulk(number));
                steps.push(step(
                    &conn.client,
                    conn.prepared(sql).expect("prepared"),
                    &bulk_params[number],
                ));
            } else {
                for index in group.clone() {
                    kinds.push(Kind::Insert(index));
                    steps.push(step(
                        &conn.client,
                        conn.prepared(&batch[index].row.sql).expect("prepared"),
                        &params[index],
                    ));
                }
            }
        }
        kinds.push(Kind::Commit);
        steps.push(step(&conn.client, &conn.commit, &[]));
        let results = tokio::time::timeout_at(deadline, join_all(steps)).await;
        drop(params);
        drop(bulk_params);
        drop(arrays);
        let Ok(results) = results else {
            self.lose("PostgreSQL did not answer within write_timeout_ms", true);
            self.park(batch, Pending::InDoubt);
            return None;
        };
        if let Some(err) = results
            .iter()
            .find_map(|result| result.as_ref().err().filter(|err| is_connection_error(err)))
        {
            let why = describe(err);
            self.lose(&why, false);
            self.park(batch, Pending::InDoubt);
            return None;
        }
        self.metrics.db_batches.inc();
        let failure = kinds
            .iter()
            .zip(&results)
            .find_map(|(kind, result)| match result {
                Err(err)
                    if err.code()
                        != Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION) =>
                {
                    Some((kind, map_error(err)))
                }
                _ => None,
            });
        let mut outcomes: Vec<Option<Written>> = (0..batch.len()).map(|_| None).collect();
        match failure {
            None => {
                let written = answer_committed(&batch, &groups, &kinds, results, &mut outcomes);
                self.metrics.db_writes.add(written);
            }
            Some((kind, error)) => self.blame(&batch, kind, error, &mut outcomes),
        }
        let mut again = Vec::new();
        for (job, outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
                Some(outcome) => job.answer(outcome),
                None => again.push(job),
            }
        }
        Some(again)
    }

    /// A batch whose transaction failed and was rolled back: the row or
    /// role that failed is answered with the error; everyone else is left
    /// to be written again.
    fn blame(
        &mut self,
        batch: &[Job],
        kind: &Kind,
        error: DbError,
        outcomes: &mut [Option<Written>],
    ) {
        match kind {
            Kind::Insert(index) => {
                if matches!(error, DbError::NoSuchTable(_) | DbError::Failed(_)) {
                    self.tables.forget(&batch[*index].table.name);
                }
                outcomes[*index] = Some(Err(error));
            }
            Kind::Role(first) => {
                let role = batch[*first].role.name.clone();
                for (index, job) in batch.iter().enumerate() {
                    if job.role.name == role {
                        outcomes[index] = Some(Err(error.clone()));
                    }
                }
            }
            Kind::Bulk(_) | Kind::Begin | Kind::Commit => {
                tracing::debug!(%error, jobs = batch.len(), "a write batch failed; writing its rows one by one");
            }
        }
    }

    /// A transaction per job, all in one round trip: each job's own error
    /// is its own.
    async fn commit_each(&mut self, jobs: Vec<Job>, deadline: tokio::time::Instant) {
        let conn = self.conn.as_ref().expect("connected");
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = jobs
            .iter()
            .map(|job| {
                job.row
                    .values
                    .iter()
                    .map(|value| value as &(dyn ToSql + Sync))
                    .collect()
            })
            .collect();
        let mut steps: Vec<Step<'_>> = Vec::with_capacity(jobs.len() * 4);
        for (index, job) in jobs.iter().enumerate() {
            steps.push(step(&conn.client, &conn.begin, &[]));
            steps.push(step(
                &conn.client,
                conn.prepared(&job.role.set_local).expect("prepared"),
                &[],
            ));
            steps.push(step(
                &conn.client,
                conn.prepared(&job.row.sql).expect("prepared"),
                &params[index],
            ));
            steps.push(step(&conn.client, &conn.commit, &[]));
        }
        let Ok(results) = tokio::time::timeout_at(deadline, join_all(steps)).await else {
            drop(params);
            self.lose("PostgreSQL did not answer within write_timeout_ms", true);
            self.park(jobs, Pending::InDoubt);
            return;
        };
        drop(params);
        let mut results = results.into_iter();
        let mut lost = Vec::new();
        let mut written = 0;
        for job in jobs {
            let steps: Vec<_> = results.by_ref().take(4).collect();
            if steps
                .iter()
                .any(|result| result.as_ref().is_err_and(is_connection_error))
            {
                lost.push(job);
                continue;
            }
            let failure = steps.iter().find_map(|result| match result {
                Err(err)
                    if err.code()
                        != Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION) =>
                {
                    Some(map_error(err))
                }
                _ => None,
            });
            let outcome = match (failure, &steps[2]) {
                (Some(error), _) => Err(error),
                (None, Ok(rows)) => match rows.first() {
                    Some(row) => {
                        written += 1;
                        Ok(returned(&job.table, row))
                    }
                    None => Err(duplicate(&job.table)),
                },
                (None, Err(err)) => Err(map_error(err)),
            };
            job.answer(outcome);
        }
        self.metrics.db_writes.add(written);
        if !lost.is_empty() {
            self.lose("the connection closed", false);
            self.park(lost, Pending::InDoubt);
        }
    }

    fn park(&mut self, jobs: Vec<Job>, pending: Pending) {
        self.pending
            .extend(jobs.into_iter().map(|job| (job, pending)));
    }

    /// On a new connection: learns what happened to the batches in doubt
    /// (and writes again what was not committed, if its time allows).
    async fn resolve(&mut self) {
        if self.pending.is_empty() {
            self.lost_pid = None;
            return;
        }
        let deadline = tokio::time::Instant::now() + self.settings.write_timeout;
        if let Some(pid) = self.lost_pid.take()
            && let Err(err) = self.end_session(pid, deadline).await
        {
            tracing::warn!(error = %describe(&err), "cannot end the lost PostgreSQL session");
            self.lose(&describe(&err), false);
            self.lost_pid = Some(pid);
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let mut again = Vec::new();
        let mut doubtful: Vec<Job> = Vec::new();
        for (job, kind) in pending {
            match kind {
                Pending::Retry => again.push(job),
                Pending::InDoubt => doubtful.push(job),
            }
        }
        // The keys of the rows in doubt, by lookup statement.
        let conn = self.conn.as_ref().expect("connected");
        let mut lookups: HashMap<&str, BoundArray> = HashMap::new();
        for job in &doubtful {
            if let (Some(sql), Some(key)) = (&job.table.select_by_key, job.table.primary_key)
                && let Some(value) = job.row.value_of(key)
            {
                lookups
                    .entry(sql.as_str())
                    .or_insert_with(|| BoundArray(Vec::new()))
                    .0
                    .push(value.clone());
            }
        }
        let mut committed: HashMap<RawValue, PgRow> = HashMap::new();
        let mut lost = false;
        for (sql, keys) in &lookups {
            let rows = tokio::time::timeout_at(deadline, async {
                let statement = conn.client.prepare(sql).await?;
                conn.client
                    .query(&statement, &[keys as &(dyn ToSql + Sync)])
                    .await
            })
            .await;
            match rows {
                Ok(Ok(rows)) => {
                    for row in rows {
                        let table = &doubtful
                            .iter()
                            .find(|job| job.table.select_by_key.as_deref() == Some(*sql))
                            .expect("a job of this table")
                            .table;
                        let key = table.primary_key.expect("looked up by key");
                        committed.insert(row.get::<_, RawValue>(key), row);
                    }
                }
                Ok(Err(err)) if !is_connection_error(&err) => {
                    tracing::warn!(error = %describe(&err), "cannot look up rows whose commit is in doubt");
                }
                _ => {
                    lost = true;
                    break;
                }
            }
        }
        if lost {
            drop(lookups);
            self.lose("the connection closed", false);
            self.park(doubtful, Pending::InDoubt);
            self.park(again, Pending::Retry);
            return;
        }
        let mut settled = 0;
        for job in doubtful {
            let key = job.table.primary_key.and_then(|key| {
                job.row
                    .value_of(key)
                    .map(|value| value.raw(&job.table.columns[key].ty))
            });
            match key {
                Some(key) if committed.contains_key(&key) => {
                    settled += 1;
                    let row = returned(&job.table, &committed[&key]);
                    job.answer(Ok(row));
                }
                Some(_) if job.table.select_by_key.is_some() => again.push(job),
                _ => job.answer(Err(in_doubt())),
            }
        }
        if settled > 0 {
            self.metrics.db_writes.add(settled);
            tracing::info!(
                rows = settled,
                "rows whose commit was in doubt were committed"
            );
        }
        if !again.is_empty() {
            tracing::info!(
                rows = again.len(),
                "writing again rows that were not committed"
            );
            self.write(again).await;
        }
    }

    /// Ends the lost session if its server process still runs, so that its
    /// transaction cannot commit after we looked.
    async fn end_session(
        &self,
        pid: i32,
        deadline: tokio::time::Instant,
    ) -> Result<(), tokio_postgres::Error> {
        let client = &self.conn.as_ref().expect("connected").client;
        loop {
            let alive = client
                .query_opt(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                )
                .await?;
            if alive.is_none() || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What each step of a batch's transaction is: BEGIN, SET ROLE (for the
/// jobs from that index on, with the same role), INSERT (job index), INSERT
/// of a group (group index), COMMIT.
enum Kind {
    Begin,
    Role(usize),
    Insert(usize),
    Bulk(usize),
    Commit,
}

/// Runs of consecutive jobs (of a sorted batch) sharing a role and a
/// statement.
fn runs_of_one_statement(batch: &[Job]) -> Vec<Range<usize>> {
    let mut groups: Vec<Range<usize>> = Vec::new();
    for (index, job) in batch.iter().enumerate() {
        match groups.last_mut() {
            Some(group)
                if batch[group.start].role.name == job.role.name
                    && batch[group.start].row.sql == job.row.sql =>
            {
                group.end = index + 1;
            }
            _ => groups.push(index..index + 1),
        }
    }
    groups
}

/// Whether a group is written with one statement for all its rows.
fn is_bulk(batch: &[Job], group: &Range<usize>) -> bool {
    group.len() > 1 && batch[group.start].row.bulk_sql.is_some()
}

/// A bulk group's parameters: one array per column (none for a group
/// written row by row).
fn column_arrays(batch: &[Job], group: &Range<usize>) -> Vec<BoundArray> {
    if !is_bulk(batch, group) {
        return Vec::new();
    }
    let width = batch[group.start].row.values.len();
    (0..width)
        .map(|column| {
            BoundArray(
                batch[group.clone()]
                    .iter()
                    .map(|job| job.row.values[column].clone())
                    .collect(),
            )
        })
        .collect()
}

/// A committed batch: each job's row as returned (or the duplicate-key
/// error of a row that `ON CONFLICT` skipped). Returns the rows written.
fn answer_committed(
    batch: &[Job],
    groups: &[Range<usize>],
    kinds: &[Kind],
    results: Vec<Result<Vec<PgRow>, tokio_postgres::Error>>,
    outcomes: &mut [Option<Written>],
) -> u64 {
    let mut written = 0;
    for (kind, result) in kinds.iter().zip(results) {
        match (kind, result) {
            (Kind::Insert(index), Ok(rows)) => {
                let job = &batch[*index];
                outcomes[*index] = Some(match rows.first() {
                    Some(row) => {
                        written += 1;
                        Ok(returned(&job.table, row))
                    }
                    None => Err(duplicate(&job.table)),
                });
            }
            (Kind::Bulk(number), Ok(rows)) => {
                // RETURNING's order is not the input's: rows are
                // matched to their jobs by primary key.
                let group = groups[*number].clone();
                let table = &batch[group.start].table;
                let key = table.primary_key.expect("bulk rows have a key");
                let key_type = &table.columns[key].ty;
                let mut by_key: HashMap<RawValue, PgRow> = rows
                    .into_iter()
                    .map(|row| (row.get::<_, RawValue>(key), row))
                    .collect();
                for index in group {
                    let job = &batch[index];
                    let raw = job.row.value_of(key).map(|value| value.raw(key_type));
                    outcomes[index] = Some(match raw.and_then(|raw| by_key.remove(&raw)) {
                        Some(row) => {
                            written += 1;
                            Ok(returned(&job.table, &row))
                        }
                        None => Err(duplicate(&job.table)),
                    });
                }
            }
            _ => {}
        }
    }
    written
}

/// The row `RETURNING *` (or a lookup) gave, as the guest sees it.
fn returned(table: &Table, row: &PgRow) -> Vec<(String, Value)> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let value = row
                .try_get::<_, Cell>(index)
                .map_or(Value::Null, |cell| cell.0);
            (column.name.clone(), value)
        })
        .collect()
}

fn duplicate(table: &Table) -> DbError {
    DbError::Constraint(format!(
        "UNIQUE constraint failed: a row of {} with the same key exists",
        table.name
    ))
}

/// Inserts fail with this while PostgreSQL cannot be reached.
pub fn unavailable() -> DbError {
    DbError::Failed("the database is unreachable; the row was not saved (try again shortly)".into())
}

fn in_doubt() -> DbError {
    DbError::Failed(
        "the connection to the database was lost while committing; whether the row was saved \
         is not known"
            .into(),
    )
}

/// The next job, when the queue has one (`None` once it is closed).
async fn next_job(jobs: &Queue) -> Option<Job> {
    jobs.lock().await.recv().await
}

/// The next batch: the first job waiting, and every other one queued behind
/// it, up to `max`. Cancel-safe: it waits only for the lock and the first job.
async fn next_batch(jobs: &Queue, max: usize) -> Option<Vec<Job>> {
    let mut jobs = jobs.lock().await;
    let first = jobs.recv().await?;
    let mut batch = Vec::with_capacity(max);
    batch.push(first);
    while batch.len() < max {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}
