//! A PostgreSQL role per grant, holding exactly the grant's privileges:
//! `SELECT` on the tables it may read, `SELECT, INSERT` (and the use of
//! their sequences) on those it may insert into, nothing else.
//!
//! A consumer's `db-query` runs on a connection logged in *as* its role, in
//! a read-only transaction that is rolled back, with the role's
//! `statement_timeout`: PostgreSQL itself refuses every other table, every
//! write, and a `SET ROLE` out of it (the session's user is the role, which
//! is a member of nothing). Its `db-insert` is a statement the host builds,
//! run by the writer under `SET LOCAL ROLE`, so PostgreSQL checks the
//! `INSERT` privilege too.
//!
//! The role's name derives from the grant (`consumer_host_` and 16 hex
//! digits of a hash of its tables), so consumers granted the same tables
//! share one, and every node of a deployment finds the same. Its password
//! derives from the host's own (an HMAC), so nodes sharing the URL agree on
//! it without storing it; it is sent to the server as a SCRAM verifier,
//! never in clear. Setting a role up takes `CREATEROLE` (or a superuser)
//! and the tables' ownership (or `WITH GRANT OPTION`), under an advisory
//! lock so nodes starting together do not race.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::connect::{Target, describe};
use super::pool::Pool;
use super::quote;
use crate::db::{DbError, Grant};

/// The advisory lock held while roles are set up (any node).
const ROLES_LOCK: i64 = 0x6368_726f_6c65_7300;

/// A consumer role and its connections.
pub struct Role {
    /// `consumer_host_...`
    pub name: String,
    /// `SET LOCAL ROLE "..."`, for the writer.
    pub set_local: String,
    /// Connections logged in as the role, for its queries.
    pub pool: Arc<Pool>,
}

/// The roles set up so far, by grant.
pub struct Roles {
    target: Arc<Target>,
    host: Arc<Pool>,
    query_timeout: Duration,
    pool_size: usize,
    checkout_timeout: Duration,
    /// Grant id to role: the fast path. A std lock, never held across an `.await`.
    by_grant: Mutex<HashMap<u64, Arc<Role>>>,
    /// Role name to role; held while one is set up, so it happens once.
    by_name: tokio::sync::Mutex<HashMap<String, Arc<Role>>>,
}

/// The role that holds `grant`'s privileges.
pub fn role_name(grant: &Grant) -> String {
    let mut hash = Sha256::new();
    hash.update(b"read");
    for table in grant.readable() {
        hash.update([0]);
        hash.update(table.as_bytes());
    }
    hash.update(b"\x01write");
    for table in grant.writable() {
        hash.update([0]);
        hash.update(table.as_bytes());
    }
    format!("consumer_host_{}", &hex::encode(hash.finalize())[..16])
}

fn password_of(host_password: &[u8], role: &str) -> String {
    let key: &[u8] = if host_password.is_empty() {
        b"consumer-host"
    } else {
        host_password
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(b"consumer-host role password\0");
    mac.update(role.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl Roles {
    /// No roles yet; `host` sets them up.
    pub fn new(
        target: Arc<Target>,
        host: Arc<Pool>,
        query_timeout: Duration,
        pool_size: usize,
        checkout_timeout: Duration,
    ) -> Self {
        Self {
            target,
            host,
            query_timeout,
            pool_size,
            checkout_timeout,
            by_grant: Mutex::new(HashMap::new()),
            by_name: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The role for `grant`, set up (and logged into once) on first use.
    pub async fn get(&self, grant: &Arc<Grant>) -> Result<Arc<Role>, DbError> {
        if let Some(role) = self.by_grant.lock().expect("not poisoned").get(&grant.id()) {
            return Ok(role.clone());
        }
        let name = role_name(grant);
        let mut by_name = self.by_name.lock().await;
        let role = match by_name.get(&name) {
            Some(role) => role.clone(),
            None => {
                let role = Arc::new(self.set_up(&name, grant).await?);
                by_name.insert(name, role.clone());
                role
            }
        };
        drop(by_name);
        self.by_grant
            .lock()
            .expect("not poisoned")
            .insert(grant.id(), role.clone());
        Ok(role)
    }

    async fn set_up(&self, name: &str, grant: &Grant) -> Result<Role, DbError> {
        let password = password_of(self.target.password(), name);
        let user = self.target.user().to_string();
        let failed = |err: tokio_postgres::Error| {
            DbError::Failed(format!(
                "cannot set up the PostgreSQL role {name} for a consumer ({}). The host's user \
                 {user} needs CREATEROLE (ALTER ROLE {user} CREATEROLE) and must own the granted \
                 tables or hold them WITH GRANT OPTION",
                describe(&err)
            ))
        };
        let mut conn = self.host.get().await?;
        let granted = grant_exactly(&mut conn.client, name, &password, grant)
            .await
            .map_err(failed)?;
        if let Err(refusal) = granted {
            return Err(DbError::Failed(refusal));
        }
        conn.done();
        drop(conn);
        let pool = Pool::new(
            format!("role {name}"),
            self.target.clone(),
            self.target.role(name, &password, self.query_timeout),
            self.pool_size,
            self.checkout_timeout,
        );
        pool.check().await.map_err(|err| {
            DbError::Failed(format!(
                "the consumer role {name} cannot log in ({}): PostgreSQL must accept a password \
                 login for it from this host (pg_hba.conf: as for {user})",
                describe(&err)
            ))
        })?;
        tracing::info!(role = name, read = ?grant.readable(), write = ?grant.writable(), "PostgreSQL role ready");
        Ok(Role {
            name: name.to_string(),
            set_local: format!("SET LOCAL ROLE {}", quote(name)),
            pool,
        })
    }
}

/// Creates or updates the role, in one transaction under the roles' lock.
/// The inner error is a refusal to touch a role that holds more than a
/// consumer should.
async fn grant_exactly(
    client: &mut tokio_postgres::Client,
    name: &str,
    password: &str,
    grant: &Grant,
) -> Result<Result<(), String>, tokio_postgres::Error> {
    let role = quote(name);
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLES_LOCK])
        .await?;
    let existing = tx
        .query_opt(
            "SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls
                 OR EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid)
             FROM pg_roles r WHERE r.rolname = $1",
            &[&name],
        )
        .await?;
    match existing {
        None => {
            tx.batch_execute(&format!("CREATE ROLE {role} LOGIN NOINHERIT"))
                .await?
        }
        Some(row) if row.get::<_, bool>(0) => {
            return Ok(Err(format!(
                "the PostgreSQL role {name} exists with more rights than a consumer's (superuser, \
                 createrole, createdb, replication, bypassrls or a membership): drop it and let \
                 consumer-host make it again"
            )));
        }
        Some(_) => {}
    }
    // A SCRAM verifier, so the password is never in the server's logs.
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    tx.batch_execute(&format!(
        "ALTER ROLE {role} LOGIN NOINHERIT PASSWORD '{verifier}'; GRANT {role} TO CURRENT_USER"
    ))
    .await?;
    // Exactly: whatever the role held on the granted tables' schemas goes first.
    let mut tables = Vec::new();
    for table in grant.readable() {
        let found = tx
            .query_opt(
                "SELECT c.oid::regclass::text, n.nspname FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
                &[&quote(table)],
            )
            .await?;
        match found {
            Some(row) => tables.push((table, row.get::<_, String>(0), row.get::<_, String>(1))),
            None => tracing::warn!(
                role = name,
                table,
                "a granted table does not exist; it is granted at the next start after it is made"
            ),
        }
    }
    let mut schemas: Vec<&str> = tables
        .iter()
        .map(|(_, _, schema)| schema.as_str())
        .collect();
    schemas.push("public");
    schemas.sort_unstable();
    schemas.dedup();
    let mut sql = String::new();
    for schema in &schemas {
        let schema = quote(schema);
        sql.push_str(&format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}; \
             REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}; \
             GRANT USAGE ON SCHEMA {schema} TO {role}; "
        ));
    }
    for (table, relation, _) in &tables {
        if grant.may_write(table) {
            sql.push_str(&format!("GRANT SELECT, INSERT ON {relation} TO {role}; "));
            let sequences = tx
                .query(
                    "SELECT s.oid::regclass::text FROM pg_depend d
                     JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                     WHERE d.refobjid = to_regclass($1) AND d.deptype IN ('a', 'i')",
                    &[&relation],
                )
                .await?;
            for sequence in sequences {
                sql.push_str(&format!(
                    "GRANT USAGE ON SEQUENCE {} TO {role}; ",
                    sequence.get::<_, String>(0)
                ));
            }
        } else {
            sql.push_str(&format!("GRANT SELECT ON {relation} TO {role}; "));
        }
    }
    tx.batch_execute(&sql).await?;
    tx.commit().await?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_tables_not_the_order() {
        let a = Grant::new(&["b".into(), "a".into()], &["w".into()]);
        let b = Grant::new(&["a".into(), "b".into()], &["w".into()]);
        let c = Grant::new(&["a".into(), "b".into(), "w".into()], &[]);
        assert_eq!(role_name(&a), role_name(&b));
        assert_ne!(role_name(&a), role_name(&c));
        assert!(role_name(&a).starts_with("consumer_host_"));
        assert_eq!(role_name(&a).len(), "consumer_host_".len() + 16);
        assert_ne!(password_of(b"x", "r1"), password_of(b"x", "r2"));
        assert_ne!(password_of(b"x", "r1"), password_of(b"y", "r1"));
    }
}
