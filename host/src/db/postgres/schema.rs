//! Table shapes read from PostgreSQL's catalog, and `db-insert` rows built
//! from them, the way [`crate::db::schema`] builds them for SQLite:
//!
//! - a missing `uuid` primary key: a new time-ordered UUID (version 7), so
//!   new keys land at the end of the primary-key index;
//! - a missing `NOT NULL` `timestamp with time zone` (or `timestamp`)
//!   column without a default: the host's clock now, per row (PostgreSQL's
//!   `now()` would be the whole batch's transaction start);
//! - a text for a `uuid` column: a UUID in any spelling.
//!
//! Rows are checked before they reach the writer, so one bad row cannot
//! fail the batch it would share: every column named must exist, `NOT
//! NULL` columns need a value, texts must fit `varchar(n)`, values must
//! convert to the column's type. Foreign keys are checked by the writer
//! for the whole batch at once (see [`super::writer`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio_postgres::types::Type;

use super::value::{Bound, bind};
use super::{map_error, quote};
use crate::db::{DbError, Value};

/// A column of a table.
#[derive(Debug)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: Type,
    /// The type as SQL names it, without modifiers (`uuid`, `character varying`).
    type_sql: String,
    not_null: bool,
    has_default: bool,
    primary_key: bool,
    /// `varchar(n)`, `char(n)`: n.
    max_chars: Option<usize>,
}

/// A single-column foreign key.
#[derive(Debug)]
pub struct ForeignKey {
    /// Index of the column in [`Table::columns`].
    pub column: usize,
    /// The table referred to, as PostgreSQL names it (quoted when it must be).
    pub parent: String,
    /// `SELECT key FROM parent WHERE key = ANY($1)`.
    pub check_sql: String,
}

/// One table's shape.
#[derive(Debug)]
pub struct Table {
    /// The name a guest used.
    pub name: String,
    /// Columns in order (what `RETURNING *` returns).
    pub columns: Vec<Column>,
    /// Single-column foreign keys.
    pub foreign_keys: Vec<ForeignKey>,
    /// The single-column primary key, if the table has one.
    pub primary_key: Option<usize>,
    /// `SELECT * FROM t WHERE key = ANY($1)`: rows by key, to learn
    /// whether a commit whose answer was lost happened.
    pub select_by_key: Option<String>,
    relation: String,
}

/// A row ready for the writer: checked, filled, bound.
#[derive(Debug)]
pub struct Row {
    /// The INSERT statement.
    pub sql: String,
    /// The same INSERT for many rows at once (`unnest` of one array per
    /// column), when the row's primary key is known before it is written
    /// (so the rows returned can be matched to their callers).
    pub bulk_sql: Option<String>,
    /// Indexes of the columns given, in the statement's order.
    pub columns: Vec<usize>,
    /// The values, bound for their columns.
    pub values: Vec<Bound>,
}

impl Row {
    /// The value given for column `index`, if one was.
    pub fn value_of(&self, index: usize) -> Option<&Bound> {
        self.columns
            .iter()
            .position(|&column| column == index)
            .map(|at| &self.values[at])
    }
}

/// Table shapes by name, read on first use. A std lock: never held across
/// an `.await`.
#[derive(Default)]
pub struct Tables {
    tables: RwLock<HashMap<String, Arc<Table>>>,
}

impl Tables {
    /// The shape of `name`, if read already.
    pub fn cached(&self, name: &str) -> Option<Arc<Table>> {
        self.tables.read().expect("not poisoned").get(name).cloned()
    }

    /// Keeps a shape read with [`load`].
    pub fn keep(&self, table: Table) -> Arc<Table> {
        let table = Arc::new(table);
        self.tables
            .write()
            .expect("not poisoned")
            .insert(table.name.clone(), table.clone());
        table
    }

    /// Forgets `name`'s shape (its columns changed: a migration ran).
    pub fn forget(&self, name: &str) {
        self.tables.write().expect("not poisoned").remove(name);
    }
}

/// Reads `name`'s shape from the catalog.
pub async fn load(client: &tokio_postgres::Client, name: &str) -> Result<Table, DbError> {
    let found = client
        .query_opt(
            "SELECT c.oid, c.oid::regclass::text FROM pg_class c
             WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')",
            &[&quote(name)],
        )
        .await
        .map_err(|err| map_error(&err))?;
    let Some(found) = found else {
        return Err(DbError::NoSuchTable(format!("no table {name:?}")));
    };
    let oid: u32 = found.get(0);
    let relation: String = found.get(1);
    // The types as tokio-postgres resolves them (enums and domains too).
    let shape = client
        .prepare(&format!("SELECT * FROM {relation}"))
        .await
        .map_err(|err| map_error(&err))?;
    let rows = client
        .query(
            "SELECT a.attname, a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary
                            AND a.attnum = ANY(i.indkey)),
                    CASE WHEN a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype) AND a.atttypmod >= 4
                         THEN a.atttypmod - 4 END,
                    format_type(a.atttypid, NULL)
             FROM pg_attribute a
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|err| map_error(&err))?;
    let columns: Vec<Column> = rows
        .iter()
        .zip(shape.columns())
        .map(|(row, column)| Column {
            name: row.get(0),
            ty: column.type_().clone(),
            not_null: row.get(1),
            has_default: row.get(2),
            primary_key: row.get(3),
            max_chars: row.get::<_, Option<i32>>(4).map(|n| n as usize),
            type_sql: row.get(5),
        })
        .collect();
    let keys: Vec<usize> = (0..columns.len())
        .filter(|&n| columns[n].primary_key)
        .collect();
    let primary_key = (keys.len() == 1).then(|| keys[0]);
    let references = client
        .query(
            "SELECT a.attname, con.confrelid::regclass::text, pa.attname
             FROM pg_constraint con
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
             JOIN pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = con.confkey[1]
             WHERE con.conrelid = $1 AND con.contype = 'f' AND cardinality(con.conkey) = 1",
            &[&oid],
        )
        .await
        .map_err(|err| map_error(&err))?;
    let foreign_keys = references
        .iter()
        .filter_map(|row| {
            let column: String = row.get(0);
            let parent: String = row.get(1);
            let key = quote(&row.get::<_, String>(2));
            Some(ForeignKey {
                column: columns.iter().position(|known| known.name == column)?,
                check_sql: format!("SELECT {key} FROM {parent} WHERE {key} = ANY($1)"),
                parent,
            })
        })
        .collect();
    let select_by_key = primary_key.map(|key| {
        format!(
            "SELECT * FROM {relation} WHERE {} = ANY($1)",
            quote(&columns[key].name)
        )
    });
    Ok(Table {
        name: name.to_string(),
        columns,
        foreign_keys,
        primary_key,
        select_by_key,
        relation,
    })
}

impl Table {
    /// Checks, fills and binds a guest's row (see the module's comment).
    pub fn row(&self, given: Vec<(String, Value)>, max_value_bytes: usize) -> Result<Row, DbError> {
        let mut columns = Vec::with_capacity(self.columns.len());
        let mut values = Vec::with_capacity(self.columns.len());
        for (name, value) in given {
            let index = self
                .columns
                .iter()
                .position(|column| column.name == name)
                .ok_or_else(|| {
                    DbError::NoSuchTable(format!("table {:?} has no column {name:?}", self.name))
                })?;
            if columns.contains(&index) {
                return Err(DbError::Invalid(format!("column {name:?} given twice")));
            }
            let column = &self.columns[index];
            let bound = bind(&value, &column.ty, max_value_bytes)
                .map_err(|why| DbError::Constraint(format!("{}.{name}: {why}", self.name)))?;
            columns.push(index);
            values.push(bound);
        }
        for (index, column) in self.columns.iter().enumerate() {
            if columns.contains(&index) {
                continue;
            }
            let filled = if column.primary_key && column.ty == Type::UUID {
                Bound::Uuid(*uuid::Uuid::now_v7().as_bytes())
            } else if matches!(column.ty, Type::TIMESTAMPTZ | Type::TIMESTAMP)
                && column.not_null
                && !column.has_default
            {
                Bound::now()
            } else {
                continue;
            };
            columns.push(index);
            values.push(filled);
        }
        if columns.is_empty() {
            return Err(DbError::Invalid("a row needs at least one column".into()));
        }
        for (index, column) in self.columns.iter().enumerate() {
            let value = columns
                .iter()
                .position(|&given| given == index)
                .map(|at| &values[at]);
            let missing = match value {
                None => !column.has_default,
                Some(value) => *value == Bound::Null,
            };
            if column.not_null && missing {
                return Err(DbError::Constraint(format!(
                    "NOT NULL constraint failed: {}.{}",
                    self.name, column.name
                )));
            }
            if let (Some(max), Some(chars)) = (column.max_chars, value.and_then(Bound::chars))
                && chars > max
            {
                return Err(DbError::Constraint(format!(
                    "{}.{} holds at most {max} characters",
                    self.name, column.name
                )));
            }
        }
        let names: Vec<String> = columns
            .iter()
            .map(|&index| quote(&self.columns[index].name))
            .collect();
        let placeholders: Vec<String> = (1..=columns.len()).map(|n| format!("${n}")).collect();
        // ON CONFLICT DO NOTHING: a duplicate key returns no row (reported
        // to that guest alone) instead of failing the batch's transaction.
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING RETURNING *",
            self.relation,
            names.join(", "),
            placeholders.join(", ")
        );
        let bulk_sql = self
            .primary_key
            .filter(|key| columns.contains(key))
            .map(|_| {
                let arrays: Vec<String> = columns
                    .iter()
                    .enumerate()
                    .map(|(n, &index)| format!("${}::{}[]", n + 1, self.columns[index].type_sql))
                    .collect();
                format!(
                    "INSERT INTO {} ({}) SELECT * FROM unnest({}) ON CONFLICT DO NOTHING RETURNING *",
                    self.relation,
                    names.join(", "),
                    arrays.join(", ")
                )
            });
        Ok(Row {
            sql,
            bulk_sql,
            columns,
            values,
        })
    }
}
