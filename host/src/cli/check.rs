//! `consumer-host check --config FILE`: would this configuration serve?
//!
//! Everything `serve` would refuse at start, found without serving and
//! without changing anything: the file and its values (every check, not
//! only the first that fails), the routes, each consumer's module
//! (compiled, linked and instantiated once under its own sandbox, in a
//! scratch node with a throw-away database, as a deploy's checks do), and
//! the database: opened read-only, its migrations compared with this
//! binary's, the tables each consumer is granted looked up, and its folder
//! checked for the write access SQLite's WAL needs. Each problem is printed;
//! any makes the command fail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::config::Config;
use crate::db::migrate::MIGRATIONS;

/// What the checks found: problems (serving would fail or misbehave) and
/// notes (worth knowing, not wrong).
#[derive(Default)]
struct Report {
    problems: Vec<String>,
}

impl Report {
    fn ok(&self, what: &str, text: impl AsRef<str>) {
        println!("ok       {what}: {}", text.as_ref());
    }
    fn note(&self, what: &str, text: impl AsRef<str>) {
        println!("note     {what}: {}", text.as_ref());
    }
    fn problem(&mut self, what: &str, text: impl AsRef<str>) {
        println!("PROBLEM  {what}: {}", text.as_ref());
        self.problems.push(format!("{what}: {}", text.as_ref()));
    }
}

/// Runs every check on `config`, read from `path`; fails naming the
/// problems when there is any.
pub fn run(path: &Path, config: &Config, compiled_cache: Option<PathBuf>) -> anyhow::Result<()> {
    let mut report = Report::default();
    report.ok("config", format!("{} parses", path.display()));
    check_values(config, &mut report);
    check_modules(config, compiled_cache, &mut report)?;
    check_database(config, &mut report);
    match report.problems.len() {
        0 => {
            println!("{}: no problems found", path.display());
            Ok(())
        }
        n => bail!(
            "{n} problem{} in {}:\n  {}",
            if n == 1 { "" } else { "s" },
            path.display(),
            report
                .problems
                .iter()
                .map(|problem| problem.lines().next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n  ")
        ),
    }
}

fn check_values(config: &Config, report: &mut Report) {
    for problem in config.problems() {
        report.problem("config", problem.to_string());
    }
    if let Some(why) = config.weak_secret()
        && config.loopback_only()
    {
        report.note(
            "auth",
            format!("the JWT secret is unsafe ({why}); allowed only while listening on loopback"),
        );
    }
    if config.routes.is_empty() {
        report.problem(
            "routes",
            "none configured: serve needs [[route]] and [consumer.*] sections",
        );
    } else {
        match crate::routing::compile(&config.routes) {
            Ok(routes) => report.ok("routes", format!("{} compile", routes.len())),
            Err(err) => report.problem("routes", err.to_string()),
        }
    }
    match (&config.admin.token, config.admin.listen) {
        (None, _) => report.note(
            "admin",
            "the admin API is off ([admin] token): status, deploy, rollback and versions need it",
        ),
        (Some(_), Some(listen)) => report.ok("admin", format!("the admin API on {listen}")),
        (Some(_), None) => report.ok("admin", format!("the admin API on {}", config.listen)),
    }
    if config.demo.enabled {
        report.note("demo", "the chat page is served at / (loopback only)");
    }
}

/// Compiles, links and instantiates every consumer's module as `serve`
/// would, each under its own sandbox and grant.
fn check_modules(
    config: &Config,
    compiled_cache: Option<PathBuf>,
    report: &mut Report,
) -> anyhow::Result<()> {
    if config.consumers.is_empty() {
        return Ok(());
    }
    let scratch = super::author::tempfile_dir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let db_config = crate::config::DatabaseConfig {
            path: scratch.join("check.sqlite3"),
            readers: 1,
            ..crate::config::DatabaseConfig::default()
        };
        let db = crate::db::Database::open(&db_config, metrics.clone())?;
        let caps = Arc::new(crate::runtime::Capabilities {
            db: db.clone(),
            layer: crate::layer::Layer::Memory(crate::layer::MemoryLayer::new(metrics.clone())),
            pressure: crate::delivery::Pressure::new(metrics.clone()),
            metrics,
            max_send_bytes: 1 << 20,
            max_event_bytes: 1 << 20,
            max_instances: 4,
            shutdown: tokio_util::sync::CancellationToken::new(),
        });
        let max_memory = config
            .consumers
            .values()
            .map(|consumer| consumer.sandbox.memory_bytes)
            .max()
            .unwrap_or(16 * 1024 * 1024);
        // No pools: the checks instantiate one module at a time.
        let runtime_config = crate::config::RuntimeConfig {
            pooling: false,
            compiled_cache,
            ..config.runtime.clone()
        };
        let runtime = crate::runtime::Runtime::new(&runtime_config, max_memory, caps)?;
        for (name, consumer) in &config.consumers {
            let what = format!("consumer {name}");
            let module = consumer.module.display();
            let bytes = match tokio::fs::read(&consumer.module).await {
                Ok(bytes) => bytes,
                Err(err) => {
                    report.problem(&what, format!("cannot read {module}: {err}"));
                    continue;
                }
            };
            let size = bytes.len();
            match runtime
                .check(name, consumer, bytes, format!("file:{module}"))
                .await
            {
                Ok(version) => report.ok(
                    &what,
                    format!(
                        "{module} ({size} bytes, sha256 {}) compiles, links and instantiates \
                         (world {}, pure events {:?})",
                        version.short(),
                        version.world_version(),
                        version.pure_events()
                    ),
                ),
                Err(err) => report.problem(&what, format!("{module}: {err}")),
            }
        }
        db.close();
        anyhow::Ok(())
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Opens the database read-only: what it is, which migrations it has, the
/// granted tables, and whether SQLite may write beside it.
fn check_database(config: &Config, report: &mut Report) {
    if config.database.postgres_url().is_some() {
        return check_postgres(config, report);
    }
    let path = &config.database.path;
    let what = format!("database {}", path.display());
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !folder.is_dir() {
        report.problem(
            &what,
            format!("its folder {} does not exist", folder.display()),
        );
        return;
    }
    // WAL keeps `-wal` and `-shm` files beside the database: the folder
    // must be writable, not only the file.
    if !writable(&folder) {
        report.problem(
            &what,
            format!(
                "its folder {} is not writable by this user: SQLite's WAL makes files beside it",
                folder.display()
            ),
        );
    }
    if !path.exists() {
        report.note(
            &what,
            "does not exist yet: serve creates it with the schema",
        );
        return;
    }
    if !writable(path) {
        report.problem(&what, "is not writable by this user");
    }
    let conn = match Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(conn) => conn,
        Err(err) => {
            report.problem(&what, format!("cannot be opened: {err}"));
            return;
        }
    };
    let tables = match table_names(&conn) {
        Ok(tables) => tables,
        Err(err) => {
            report.problem(&what, format!("is not a readable SQLite database: {err}"));
            return;
        }
    };
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap_or_else(|_| "unknown".into());
    report.ok(
        &what,
        format!("SQLite, {} tables, journal mode {journal}", tables.len()),
    );
    let applied = if tables
        .iter()
        .any(|table| table == "consumer_host_migrations")
    {
        let names = conn
            .prepare("SELECT name FROM consumer_host_migrations ORDER BY name")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            });
        match names {
            Ok(names) => names,
            Err(err) => {
                report.problem(&what, format!("cannot read its migrations: {err}"));
                return;
            }
        }
    } else {
        Vec::new()
    };
    let known: Vec<&str> = MIGRATIONS.iter().map(|(name, _)| *name).collect();
    check_migrations(&known, &applied, &what, report);
    check_grants(config, &tables, report);
}

/// PostgreSQL: reachable with the configured login, its migrations, the
/// granted tables; read over one connection each, nothing written.
fn check_postgres(config: &Config, report: &mut Report) {
    use crate::db::Value;
    use crate::db::postgres::commands::read_row;
    let what = format!("database {}", config.database.location());
    let one_text = |sql: &str| -> Result<String, String> {
        match read_row(&config.database, sql, &[]) {
            Ok(Some(row)) => Ok(match row.into_iter().next() {
                Some(Value::Text(text)) => text,
                _ => String::new(),
            }),
            Ok(None) => Ok(String::new()),
            Err(err) => Err(err.to_string()),
        }
    };
    let tables = match one_text(
        "SELECT coalesce(string_agg(table_name::text, ','), '') FROM information_schema.tables \
         WHERE table_schema = current_schema()",
    ) {
        Ok(tables) => tables,
        Err(err) => {
            report.problem(&what, format!("cannot be read: {err}"));
            return;
        }
    };
    let tables: Vec<String> = tables
        .split(',')
        .filter(|table| !table.is_empty())
        .map(String::from)
        .collect();
    report.ok(&what, format!("PostgreSQL, {} tables", tables.len()));
    let applied = if tables
        .iter()
        .any(|table| table == "consumer_host_migrations")
    {
        match one_text(
            "SELECT coalesce(string_agg(name::text, ',' ORDER BY name), '') \
             FROM consumer_host_migrations",
        ) {
            Ok(names) => names
                .split(',')
                .filter(|name| !name.is_empty())
                .map(String::from)
                .collect(),
            Err(err) => {
                report.problem(&what, format!("cannot read its migrations: {err}"));
                return;
            }
        }
    } else {
        Vec::new()
    };
    let known: Vec<&str> = crate::db::postgres::migrate::MIGRATIONS
        .iter()
        .map(|(name, _)| *name)
        .collect();
    check_migrations(&known, &applied, &what, report);
    check_grants(config, &tables, report);
}

/// Every table a consumer is granted exists.
fn check_grants(config: &Config, tables: &[String], report: &mut Report) {
    for (name, consumer) in &config.consumers {
        let missing: Vec<&String> = consumer
            .read
            .iter()
            .chain(&consumer.write)
            .filter(|table| !tables.contains(table))
            .collect();
        if consumer.read.is_empty() && consumer.write.is_empty() {
            continue;
        }
        if missing.is_empty() {
            report.ok(
                &format!("consumer {name}"),
                "every table it is granted exists",
            );
        } else {
            report.problem(
                &format!("consumer {name}"),
                format!(
                    "granted tables the database does not have: {missing:?} (a typo under \
                     read/write, or a migration not run)"
                ),
            );
        }
    }
}

/// The database's recorded migrations against this binary's (`known`).
fn check_migrations(known: &[&str], applied: &[String], what: &str, report: &mut Report) {
    let unknown: Vec<&String> = applied
        .iter()
        .filter(|name| !known.contains(&name.as_str()))
        .collect();
    if !unknown.is_empty() {
        report.problem(
            what,
            format!(
                "has migrations this consumer-host does not know: {unknown:?} (made by a newer \
                 version?)"
            ),
        );
    }
    let pending: Vec<&str> = known
        .iter()
        .copied()
        .filter(|name| !applied.iter().any(|applied| applied == name))
        .collect();
    if pending.is_empty() {
        report.ok(what, format!("migrations up to date: {}", known.join(", ")));
    } else {
        report.note(
            what,
            format!(
                "migrations not yet recorded: {} (serve applies them at start; every one is \
                 IF NOT EXISTS, so a database Django made is left as it is)",
                pending.join(", ")
            ),
        );
    }
}

fn table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    // Reading the schema also proves the file is a database.
    let _: Option<i64> = conn
        .query_row("PRAGMA schema_version", [], |row| row.get(0))
        .optional()?;
    let mut stmt = conn.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?;
    stmt.query_map([], |row| row.get(0))?.collect()
}

/// Whether this process may write `path` (access(2), which knows about
/// read-only mounts and ACLs).
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path that lives across the call.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}
