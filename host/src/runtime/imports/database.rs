//! `database`: a consumer's inserts and queries, within its grant.

use super::{Refusal, within};
use crate::db::{self, DbError};
use crate::runtime::bindings::database;
use crate::runtime::conn::ConnState;

/// What a database call returns instead of rows.
pub type DbFailure = Refusal<DbError>;

impl ConnState {
    fn count_db_call(&mut self) -> Result<(), DbFailure> {
        let limit = self.consumer.config().sandbox.max_db_calls_per_event;
        within(&mut self.used.db_calls, limit, "db-insert or db-query")
    }
}

impl From<database::Value> for db::Value {
    fn from(value: database::Value) -> Self {
        match value {
            database::Value::Null => db::Value::Null,
            database::Value::Integer(i) => db::Value::Integer(i),
            database::Value::Real(f) => db::Value::Real(f),
            database::Value::Text(s) => db::Value::Text(s),
            database::Value::Blob(b) => db::Value::Blob(b),
        }
    }
}

impl From<db::Value> for database::Value {
    fn from(value: db::Value) -> Self {
        match value {
            db::Value::Null => database::Value::Null,
            db::Value::Integer(i) => database::Value::Integer(i),
            db::Value::Real(f) => database::Value::Real(f),
            db::Value::Text(s) => database::Value::Text(s),
            db::Value::Blob(b) => database::Value::Blob(b),
        }
    }
}

impl database::Host for ConnState {
    async fn db_insert(
        &mut self,
        table: String,
        row: Vec<(String, database::Value)>,
    ) -> Result<Vec<(String, database::Value)>, DbFailure> {
        self.count_db_call()?;
        let row = row
            .into_iter()
            .map(|(column, value)| (column, value.into()))
            .collect();
        // The row is written (or refused) now; it is durable when `commit`
        // resolves, and what this event sends waits for that.
        let (written, commit) = self
            .caps
            .db
            .insert_staged(self.consumer.grant().clone(), table, row)
            .await?;
        self.wait_for(commit);
        Ok(written
            .into_iter()
            .map(|(column, value)| (column, value.into()))
            .collect())
    }

    async fn db_query(
        &mut self,
        sql: String,
        params: Vec<database::Value>,
    ) -> Result<database::Rows, DbFailure> {
        self.count_db_call()?;
        let params = params.into_iter().map(Into::into).collect();
        let rows = self
            .caps
            .db
            .query(self.consumer.grant().clone(), sql, params)
            .await?;
        Ok(database::Rows {
            columns: rows.columns,
            rows: rows
                .rows
                .into_iter()
                .map(|row| row.into_iter().map(Into::into).collect())
                .collect(),
        })
    }

    fn convert_db_error(&mut self, err: DbFailure) -> wasmtime::Result<database::DbError> {
        Ok(match err.into_wit()? {
            DbError::AccessDenied(text) => database::DbError::AccessDenied(text),
            DbError::NoSuchTable(text) => database::DbError::NoSuchTable(text),
            DbError::Constraint(text) => database::DbError::Constraint(text),
            DbError::Invalid(text) => database::DbError::Invalid(text),
            DbError::Timeout => database::DbError::Timeout,
            DbError::Failed(text) => database::DbError::Failed(text),
            DbError::Closed => database::DbError::Failed("the database is shutting down".into()),
        })
    }
}
