//! The database, as the host grants it: inserts into the tables under
//! `write`, queries of those under `read`, every value bound.
//!
//! The host fills what a consumer cannot make: a missing `char(32)` primary
//! key gets a new UUID, a missing `NOT NULL` datetime the current time, and
//! a UUID given in any spelling for a `char(32)` column is stored as Django
//! stores it.

pub use crate::host::{DbError, Value};

/// A row as written or read: (column, value) pairs, in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The columns and their values.
    pub values: Vec<(String, Value)>,
}

impl Row {
    /// A column's value.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.values
            .iter()
            .find(|(name, _)| name == column)
            .map(|(_, value)| value)
    }

    /// A text column's value (none for NULL, numbers or blobs).
    pub fn text(&self, column: &str) -> Option<&str> {
        match self.get(column)? {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }

    /// An integer column's value.
    pub fn integer(&self, column: &str) -> Option<i64> {
        match self.get(column)? {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }
}

/// A query's result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    /// The rows as [`Row`]s.
    pub fn iter(&self) -> impl Iterator<Item = Row> + '_ {
        self.rows.iter().map(|values| Row {
            values: self
                .columns
                .iter()
                .cloned()
                .zip(values.iter().cloned())
                .collect(),
        })
    }

    /// The first column of every row, where it is text.
    pub fn texts(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter_map(|row| match row.first() {
                Some(Value::Text(text)) => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Inserts a row into `table` and returns it as written.
pub fn insert(table: &str, row: &[(&str, Value)]) -> Result<Row, DbError> {
    let row: Vec<(String, Value)> = row
        .iter()
        .map(|(column, value)| ((*column).to_string(), value.clone()))
        .collect();
    crate::host::db_insert(table, &row).map(|values| Row { values })
}

/// Runs one read-only statement with bound parameters (`?1`, `?2`...).
pub fn query(sql: &str, params: &[Value]) -> Result<Rows, DbError> {
    crate::host::db_query(sql, params).map(|rows| Rows {
        columns: rows.columns,
        rows: rows.rows,
    })
}

/// An error in words.
pub fn describe(err: &DbError) -> String {
    match err {
        DbError::AccessDenied(why) => format!("access denied: {why}"),
        DbError::NoSuchTable(why) => format!("no such table or column: {why}"),
        DbError::Constraint(why) => format!("constraint failed: {why}"),
        DbError::Invalid(why) => format!("invalid: {why}"),
        DbError::Timeout => "the statement took too long".into(),
        DbError::Failed(why) => format!("failed: {why}"),
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_string())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(text)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Integer(n)
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Value::Integer(i64::from(flag))
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Real(x)
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Value::Blob(bytes)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}
