//! Table shapes, and `db-insert` built from them.
//!
//! The host builds the INSERT itself from the table's real columns (read with
//! `PRAGMA table_info`), so a guest names a table and columns that must exist
//! and every value is bound. It fills what a guest has no means to make
//! (no clock, no randomness on wasm32-unknown-unknown), the way Django would:
//!
//! - a missing `char(32)` primary key: a new UUID as 32 lowercase hex digits,
//!   time-ordered (version 7), so new keys land at the end of the primary-key
//!   index instead of on a random page of it: a batch of inserts dirties a
//!   few pages, not one per row;
//! - a missing `NOT NULL` `datetime` column without a default: now, UTC, as
//!   `YYYY-MM-DD HH:MM:SS.ffffff`;
//! - a text value for a `char(32)` column that reads as a UUID in any
//!   spelling: stored as 32 lowercase hex digits.
//!
//! Foreign keys are checked in the insert itself: Django declares them
//! `DEFERRABLE INITIALLY DEFERRED`, which SQLite would only check at COMMIT,
//! failing every other write of the batch along with the bad one.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;

use super::grant::{Authorizer, Policy};
use super::{DbError, Grant, Value};

/// The current UTC time as Django stores datetimes in SQLite.
pub fn now_django() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

/// A column of a table.
#[derive(Debug)]
struct Column {
    name: String,
    /// Declared type, lowercased: `char(32)`, `datetime`, `text`...
    decl_type: String,
    not_null: bool,
    has_default: bool,
    primary_key: bool,
}

impl Column {
    fn is_uuid(&self) -> bool {
        self.decl_type == "char(32)"
    }
    fn is_datetime(&self) -> bool {
        self.decl_type.starts_with("datetime")
    }
}

/// A foreign key from one column.
#[derive(Debug)]
struct ForeignKey {
    column: String,
    parent_table: String,
    /// `SELECT 1 FROM parent WHERE key = ?1`.
    check_sql: String,
}

/// INSERT statements of one table: by grant id, then by the columns' indexes.
type InsertCache = HashMap<u64, HashMap<Vec<u16>, Arc<str>>>;

/// The shape of one table.
#[derive(Debug)]
pub struct TableInfo {
    name: String,
    columns: Vec<Column>,
    foreign_keys: Vec<ForeignKey>,
    /// INSERT statements by grant and by the columns given (their indexes,
    /// in order): built once, so the writer only binds and steps. A std
    /// lock: only the writer thread takes it.
    inserts: std::sync::Mutex<InsertCache>,
}

/// Table shapes, read once per table by the writer, and again after the
/// schema changes (a Django migration while the server runs).
#[derive(Default)]
pub struct TableCache {
    tables: HashMap<String, Arc<TableInfo>>,
    /// `PRAGMA schema_version` when the shapes were read.
    schema_version: Option<i64>,
}

/// INSERT statements kept per table and grant; past it they are built for
/// each row (a guest naming columns in ever new orders cannot grow memory).
const MAX_INSERT_SHAPES: usize = 64;

impl TableCache {
    /// Forgets every shape if the schema changed since they were read.
    /// SQLite bumps the schema version on every schema change, by any
    /// connection of any process; reading it is a read of the database
    /// header, nearly free.
    pub fn check_schema(&mut self, conn: &Connection) -> Result<(), DbError> {
        let version: i64 = conn
            .prepare_cached("PRAGMA schema_version")?
            .query_row([], |row| row.get(0))?;
        if self.schema_version != Some(version) {
            if self.schema_version.is_some() {
                tracing::info!(
                    version,
                    "the database schema changed; table shapes read again"
                );
            }
            self.tables.clear();
            self.schema_version = Some(version);
        }
        Ok(())
    }

    /// The shape of `table`, read from the schema on first use.
    pub fn get(&mut self, conn: &Connection, table: &str) -> Result<Arc<TableInfo>, DbError> {
        if let Some(info) = self.tables.get(table) {
            return Ok(info.clone());
        }
        let info = Arc::new(load(conn, table)?);
        self.tables.insert(table.to_string(), info.clone());
        Ok(info)
    }
}

/// Quotes an SQL identifier.
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

fn load(conn: &Connection, table: &str) -> Result<TableInfo, DbError> {
    let exists: bool = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [table],
        |row| row.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !exists || table.starts_with("sqlite_") {
        return Err(DbError::NoSuchTable(format!("no table {table:?}")));
    }
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote(table)))?;
    let columns = stmt
        .query_map([], |row| {
            Ok(Column {
                name: row.get(1)?,
                decl_type: row
                    .get::<_, Option<String>>(2)?
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                not_null: row.get::<_, i64>(3)? != 0,
                has_default: row.get::<_, Option<String>>(4)?.is_some(),
                primary_key: row.get::<_, i64>(5)? != 0,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = conn.prepare(&format!("PRAGMA foreign_key_list({})", quote(table)))?;
    let foreign_keys = stmt
        .query_map([], |row| {
            let parent_table: String = row.get(2)?;
            let parent_column = row
                .get::<_, Option<String>>(4)?
                .unwrap_or_else(|| "rowid".into());
            Ok(ForeignKey {
                check_sql: format!(
                    "SELECT 1 FROM {} WHERE {} = ?1",
                    quote(&parent_table),
                    quote(&parent_column)
                ),
                parent_table,
                column: row.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TableInfo {
        name: table.to_string(),
        columns,
        foreign_keys,
        inserts: std::sync::Mutex::new(HashMap::new()),
    })
}

impl TableInfo {
    /// The INSERT for these columns, in this order, for this grant.
    fn insert_sql(&self, grant: &Grant, values: &[(&Column, Value)]) -> Arc<str> {
        let order: Vec<u16> = values
            .iter()
            .map(|(column, _)| {
                self.columns
                    .iter()
                    .position(|known| std::ptr::eq(known, *column))
                    .expect("a column of this table") as u16
            })
            .collect();
        let mut inserts = self.inserts.lock().expect("not poisoned");
        let by_columns = inserts.entry(grant.id()).or_default();
        if let Some(sql) = by_columns.get(&order) {
            return sql.clone();
        }
        let keep = by_columns.len() < MAX_INSERT_SHAPES;
        let names: Vec<String> = values
            .iter()
            .map(|(column, _)| quote(&column.name))
            .collect();
        let placeholders: Vec<String> = (1..=values.len()).map(|n| format!("?{n}")).collect();
        // Tagged with the grant: statements are authorized when prepared,
        // and the cache must not hand one consumer another's statement.
        let sql: Arc<str> = Arc::from(format!(
            "{}INSERT INTO {} ({}) VALUES ({}) RETURNING *",
            grant.cache_tag(),
            quote(&self.name),
            names.join(", "),
            placeholders.join(", ")
        ));
        if keep {
            by_columns.insert(order, sql.clone());
        }
        sql
    }
}

/// Inserts `row` into the table and returns it as written. The INSERT
/// itself runs under the grant's authorizer; the foreign-key checks before it
/// are the host's own reads.
pub fn insert(
    conn: &Connection,
    authorizer: &Authorizer,
    grant: &std::sync::Arc<Grant>,
    table: &TableInfo,
    row: Vec<(String, Value)>,
) -> Result<Vec<(String, Value)>, DbError> {
    let mut values: Vec<(&Column, Value)> = Vec::with_capacity(table.columns.len());
    for (name, value) in row {
        let column = table
            .columns
            .iter()
            .find(|column| column.name == name)
            .ok_or_else(|| {
                DbError::NoSuchTable(format!("table {:?} has no column {name:?}", table.name))
            })?;
        if values.iter().any(|(seen, _)| seen.name == name) {
            return Err(DbError::Invalid(format!("column {name:?} given twice")));
        }
        let value = match value {
            Value::Text(text) if column.is_uuid() => {
                Value::Text(normalise_uuid(&text).unwrap_or(text))
            }
            other => other,
        };
        values.push((column, value));
    }
    for column in &table.columns {
        if values.iter().any(|(given, _)| given.name == column.name) {
            continue;
        }
        if column.primary_key && column.is_uuid() {
            values.push((
                column,
                Value::Text(uuid::Uuid::now_v7().simple().to_string()),
            ));
        } else if column.is_datetime() && column.not_null && !column.has_default {
            values.push((column, Value::Text(now_django())));
        }
    }
    if values.is_empty() {
        return Err(DbError::Invalid("a row needs at least one column".into()));
    }
    check_foreign_keys(conn, table, &values)?;

    let sql = table.insert_sql(grant, &values);
    authorizer.set(Policy::Insert {
        grant: grant.clone(),
        table: table.name.clone(),
        parents: table
            .foreign_keys
            .iter()
            .map(|key| key.parent_table.clone())
            .collect(),
    });
    let written = (|| {
        let mut stmt = conn.prepare_cached(&sql)?;
        let params = rusqlite::params_from_iter(values.iter().map(|(_, value)| value));
        stmt.query_row(params, |row| {
            let mut out = Vec::with_capacity(table.columns.len());
            for (index, column) in table.columns.iter().enumerate() {
                out.push((column.name.clone(), Value::from(row.get_ref(index)?)));
            }
            Ok(out)
        })
    })();
    authorizer.set(Policy::Trusted);
    Ok(written?)
}

fn check_foreign_keys(
    conn: &Connection,
    table: &TableInfo,
    values: &[(&Column, Value)],
) -> Result<(), DbError> {
    for key in &table.foreign_keys {
        let Some((_, value)) = values.iter().find(|(column, _)| column.name == key.column) else {
            continue;
        };
        if *value == Value::Null {
            continue;
        }
        let mut stmt = conn.prepare_cached(&key.check_sql)?;
        if !stmt.exists([value])? {
            return Err(DbError::Constraint(format!(
                "{}.{} names no row of {}",
                table.name, key.column, key.parent_table
            )));
        }
    }
    Ok(())
}

/// The 32-lowercase-hex form of a UUID in any spelling, or `None`.
pub fn normalise_uuid(text: &str) -> Option<String> {
    uuid::Uuid::try_parse(text)
        .ok()
        .map(|uuid| uuid.simple().to_string())
}
