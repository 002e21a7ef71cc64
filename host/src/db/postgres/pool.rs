//! A bounded pool of connections for one login, each with its own cache of
//! prepared statements.
//!
//! At most `size` connections exist; a caller finding them all busy waits
//! up to the checkout timeout, then fails with a `db-error` that says so.
//! Connections are made on demand and dropped when PostgreSQL closes them
//! (a restart): the next caller makes a new one. A connection whose work
//! was cut short (the caller's future dropped mid-call) is dropped rather
//! than handed to the next caller half-way through a transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config, Statement};

use super::connect::{ConnectionTask, Target, describe};
use crate::db::DbError;

/// Statements kept prepared per connection; past it the cache starts over
/// (a guest writing ever new SQL cannot grow the host's or the server's memory).
const MAX_STATEMENTS: usize = 256;

/// Connections for one login.
pub struct Pool {
    /// What the pool is for, in messages (`the host`, a role's name).
    name: String,
    target: Arc<Target>,
    config: Config,
    /// Idle connections. A std lock: held to push or pop, never across an `.await`.
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    size: usize,
    checkout_timeout: Duration,
}

/// One connection and what it has prepared.
pub struct Conn {
    /// The client.
    pub client: Client,
    statements: HashMap<String, Statement>,
    /// `BEGIN READ ONLY` and `ROLLBACK`, prepared at connect.
    pub begin_read_only: Statement,
    /// See `begin_read_only`.
    pub rollback: Statement,
    _task: ConnectionTask,
}

impl Conn {
    /// A statement prepared on this connection, from its cache.
    pub async fn prepare_cached(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

/// A connection taken from a pool; back in the pool when dropped, if it
/// was marked [`Lease::done`] and is still open.
pub struct Lease {
    pool: Arc<Pool>,
    conn: Option<Conn>,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Lease {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("held until dropped")
    }
}

impl Lease {
    /// The work finished: the connection is fit for the next caller.
    pub fn done(&mut self) {
        self.done = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.done
            && !conn.client.is_closed()
        {
            self.pool.idle.lock().expect("not poisoned").push(conn);
        }
    }
}

impl Pool {
    /// A pool of at most `size` connections made with `config`.
    pub fn new(
        name: String,
        target: Arc<Target>,
        config: Config,
        size: usize,
        checkout_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            target,
            config,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size)),
            size,
            checkout_timeout,
        })
    }

    /// A connection: an idle one, or a new one while fewer than `size` exist.
    pub async fn get(self: &Arc<Self>) -> Result<Lease, DbError> {
        let permit = tokio::time::timeout(
            self.checkout_timeout,
            self.permits.clone().acquire_owned(),
        )
        .await
        .map_err(|_| {
            DbError::Failed(format!(
                "all {} database connections of {} are busy; try again ([database] pool_size)",
                self.size, self.name
            ))
        })?
        .map_err(|_| DbError::Closed)?;
        let idle = loop {
            let conn = self.idle.lock().expect("not poisoned").pop();
            match conn {
                Some(conn) if conn.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match idle {
            Some(conn) => conn,
            None => self.open().await.map_err(|err| {
                DbError::Failed(format!("the database is unreachable ({})", describe(&err)))
            })?,
        };
        Ok(Lease {
            pool: self.clone(),
            conn: Some(conn),
            done: false,
            _permit: permit,
        })
    }

    /// Opens one connection now, to find out early whether logging in works.
    pub async fn check(self: &Arc<Self>) -> Result<(), tokio_postgres::Error> {
        let conn = self.open().await?;
        self.idle.lock().expect("not poisoned").push(conn);
        Ok(())
    }

    async fn open(&self) -> Result<Conn, tokio_postgres::Error> {
        let (client, task) = self.target.connect(&self.config).await?;
        let begin_read_only = client.prepare("BEGIN READ ONLY").await?;
        let rollback = client.prepare("ROLLBACK").await?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
            begin_read_only,
            rollback,
            _task: task,
        })
    }
}
