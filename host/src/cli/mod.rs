//! The `consumer-host` command line.
//!
//! This is the edge of the library: the only module that reads the
//! environment (`JWT_SECRET` and the `CONSUMER_HOST_*` variables behind the
//! flags) and prints. `main.rs` just calls [`main`].
//!
//! - serving: `serve`, `migrate`, `seed`, `token`;
//! - operating a running server ([`admin_client`]): `deploy`, `rollback`,
//!   `versions`, `status` ([`status`]); checking a configuration without
//!   serving: `check` ([`check`]);
//! - an author's day ([`author`]): `new`, `test`, `build`, `dev`.

mod admin_client;
mod author;
mod check;
mod status;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::auth::Authenticator;
use crate::config::{Config, LogFormat};
use crate::{Server, db};
use admin_client::{AdminTarget, admin_request};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Runs WebSocket consumers as WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// How log lines are written to stderr: `text` (coloured on a
    /// terminal only) or `json` (one object per line, for log shippers).
    #[arg(long, global = true, env = "CONSUMER_HOST_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

/// Options every command shares.
#[derive(clap::Args)]
struct Common {
    /// The TOML config file; module and database paths in it are relative to it.
    #[arg(long, env = "CONSUMER_HOST_CONFIG")]
    config: Option<PathBuf>,
    /// The database: a SQLite file, or a postgres:// URL (overrides
    /// [database] path and url).
    #[arg(long, env = "CONSUMER_HOST_DB")]
    db: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serves HTTP and WebSocket connections until SIGINT or SIGTERM.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on (overrides `listen`).
        #[arg(long, env = "CONSUMER_HOST_LISTEN")]
        listen: Option<SocketAddr>,
    },
    /// Creates or updates the database schema, then exits.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Creates users and conversations, and prints them with access tokens as JSON.
    Seed {
        #[command(flatten)]
        common: Common,
        /// Conversations to create.
        #[arg(long)]
        rooms: usize,
        /// Members of each conversation (new users).
        #[arg(long)]
        users_per_room: usize,
        /// Lifetime of the tokens in seconds (overrides [auth] access_token_lifetime_secs).
        #[arg(long)]
        token_lifetime: Option<u64>,
    },
    /// Prints an access token for an existing, active user.
    Token {
        #[command(flatten)]
        common: Common,
        /// The user's id (hyphenated UUID or 32 hex digits).
        #[arg(long)]
        user: String,
        /// Lifetime of the token in seconds (overrides [auth] access_token_lifetime_secs).
        #[arg(long)]
        token_lifetime: Option<u64>,
    },
    /// Deploys a new version of a consumer to a running server (admin API).
    Deploy {
        /// The consumer's name in the server's config.
        consumer: String,
        /// The component file.
        file: PathBuf,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Makes a consumer's previous version current again (admin API).
    Rollback {
        /// The consumer's name in the server's config.
        consumer: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Lists every consumer's versions on a running server (admin API).
    Versions {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Shows a running server's state: versions, connections per version,
    /// message and delivery rates, refusals, the layer (admin API).
    Status {
        #[command(flatten)]
        target: AdminTarget,
        /// Seconds between the two samples the rates are computed from.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Print the status as JSON (with a `rates` object) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Checks a configuration, its modules and its database without serving;
    /// fails naming every problem found.
    Check {
        #[command(flatten)]
        common: Common,
    },
    /// Makes a consumer project in a new folder: it builds and passes its test as made.
    New {
        /// The consumer's name (and the folder's).
        name: String,
        /// The language it is written in.
        #[arg(long, value_enum)]
        lang: author::Lang,
        /// The folder to make it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Runs a consumer project's tests, natively (no server).
    Test {
        /// The project folder (with its consumer.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Builds a consumer project into a component and checks it as a deploy would.
    Build {
        /// The project folder (with its consumer.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to write the component (default: DIR/dist/NAME.wasm).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Builds, deploys to a running server, and again at every save of the sources.
    Dev {
        /// The project folder (with its consumer.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The consumer to deploy to (default: the project's name).
        #[arg(long)]
        consumer: Option<String>,
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// Most rooms x users `seed` makes in one go.
const MAX_SEED_USERS: usize = 1_000_000;

/// Parses the command line, sets up logging and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Flag or environment first, then the config file's `[log] format`
    // (read here, before anything logs; a file that does not parse is
    // reported by the command itself).
    let format = cli.log_format.unwrap_or_else(|| {
        cli.command
            .config_path()
            .and_then(|path| Config::load(path).ok())
            .map(|config| config.log.format)
            .unwrap_or_default()
    });
    init_logging(format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn load_config(common: &Common) -> anyhow::Result<Config> {
    let mut config = match &common.config {
        Some(path) => Config::load(path)?,
        None => Config::empty(),
    };
    config.override_database(common.db.clone());
    config.override_secret(std::env::var("JWT_SECRET").ok());
    config.override_admin_token(std::env::var("CONSUMER_HOST_ADMIN_TOKEN").ok());
    config.override_layer_key(std::env::var("CONSUMER_HOST_LAYER_KEY").ok());
    Ok(config)
}

impl Command {
    /// The config file the command reads, if it reads one.
    fn config_path(&self) -> Option<&std::path::Path> {
        match self {
            Command::Serve { common, .. }
            | Command::Migrate { common }
            | Command::Seed { common, .. }
            | Command::Token { common, .. }
            | Command::Check { common } => common.config.as_deref(),
            _ => None,
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { common, listen } => serve(&common, listen),
        Command::Migrate { common } => migrate(&common),
        Command::Seed {
            common,
            rooms,
            users_per_room,
            token_lifetime,
        } => seed(&common, rooms, users_per_room, token_lifetime),
        Command::Token {
            common,
            user,
            token_lifetime,
        } => token(&common, &user, token_lifetime),
        Command::Deploy {
            consumer,
            file,
            target,
        } => deploy(&target, &consumer, &file),
        Command::Rollback { consumer, target } => admin_print(
            &target,
            hyper::Method::POST,
            &format!("/admin/consumers/{consumer}/rollback"),
            Vec::new(),
        ),
        Command::Versions { target } => {
            admin_print(&target, hyper::Method::GET, "/admin/consumers", Vec::new())
        }
        Command::Status {
            target,
            interval,
            json,
        } => {
            if !(0.05..=3600.0).contains(&interval) {
                bail!("--interval is in seconds, from 0.05 to 3600");
            }
            status::run(&target, std::time::Duration::from_secs_f64(interval), json)
        }
        Command::Check { common } => check_config(&common),
        Command::New { name, lang, dir } => new_project(&name, lang, &dir),
        Command::Test { dir } => author::test(&dir),
        Command::Build { dir, output } => build(&dir, output),
        Command::Dev {
            dir,
            consumer,
            target,
        } => {
            let project = author::Project::load(&dir)?;
            let consumer = consumer.unwrap_or_else(|| project.name.clone());
            author::dev(
                &project,
                &target,
                &consumer,
                std::time::Duration::from_millis(300),
            )
        }
    }
}

/// Sends one admin request and prints the server's answer.
fn admin_print(
    target: &AdminTarget,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let answer = admin_request(target, method, path, body)?;
    println!("{answer}");
    Ok(())
}

fn deploy(target: &AdminTarget, consumer: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    eprintln!(
        "deploying {} ({} bytes) as {consumer}",
        file.display(),
        bytes.len()
    );
    admin_print(
        target,
        hyper::Method::PUT,
        &format!("/admin/consumers/{consumer}"),
        bytes,
    )
}

fn check_config(common: &Common) -> anyhow::Result<()> {
    let Some(path) = common.config.clone() else {
        bail!("check needs --config FILE (the file serve would be given)");
    };
    let config = serve_config(common, None)?;
    check::run(&path, &config, config.runtime.compiled_cache.clone())
}

fn new_project(name: &str, lang: author::Lang, dir: &std::path::Path) -> anyhow::Result<()> {
    let made = author::new(name, lang, dir)?;
    eprintln!("made {} ({lang:?})", made.display());
    eprintln!(
        "next: consumer-host test {0}; consumer-host build {0}",
        made.display()
    );
    println!("{}", made.display());
    Ok(())
}

fn build(dir: &std::path::Path, output: Option<PathBuf>) -> anyhow::Result<()> {
    let project = author::Project::load(dir)?;
    let output = output.unwrap_or_else(|| project.default_output());
    let built = author::build(&project, &output)?;
    eprintln!(
        "built {} in {:.1} s: {} bytes, sha256 {}, world {}, pure events {:?}",
        project.name,
        built.elapsed.as_secs_f64(),
        built.size,
        &built.sha256[..12],
        built.world,
        built.pure_events
    );
    println!("{}", built.path.display());
    Ok(())
}

/// The configuration `serve` runs with: the file, flags and environment.
fn serve_config(common: &Common, listen: Option<SocketAddr>) -> anyhow::Result<Config> {
    let mut config = load_config(common)?;
    config.override_listen(listen);
    if config.runtime.compiled_cache.is_none() {
        // Large components (Python, JavaScript) compile once, not at every start.
        config.runtime.compiled_cache =
            author::Cache::from_env().ok().map(|cache| cache.compiled());
    }
    Ok(config)
}

fn serve(common: &Common, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let config = serve_config(common, listen)?;
    let mut reloader = common
        .config
        .as_deref()
        .map(crate::reload::Reloader::new)
        .transpose()?;
    if config.routes.is_empty() {
        bail!(
            "no routes configured: pass --config with [[route]] and [consumer.*] sections (see consumer-host.toml)"
        );
    }
    // Every WebSocket is a file descriptor: take all the process may.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let server = Server::start(config).await?;
        eprintln!("consumer-host listening on {}", server.local_addr());
        wait_for_signal(|| match &mut reloader {
            Some(reloader) => {
                reloader.reload(
                    || serve_config(common, listen),
                    |config, changed| server.reload(config, changed),
                );
            }
            None => tracing::warn!("SIGHUP received, but serve has no --config file to reload"),
        })
        .await;
        server.shutdown().await;
        Ok(())
    })
}

fn migrate(common: &Common) -> anyhow::Result<()> {
    let config = load_config(common)?;
    let applied = if config.database.postgres_url().is_some() {
        db::postgres::commands::migrate(&config.database)?
    } else {
        let mut conn = open(&config)?;
        db::migrate::apply(&mut conn).context("applying migrations")?
    };
    let location = config.database.location();
    if applied.is_empty() {
        eprintln!("{location}: schema up to date");
    } else {
        eprintln!("{location}: applied {}", applied.join(", "));
    }
    Ok(())
}

fn seed(
    common: &Common,
    rooms: usize,
    users_per_room: usize,
    token_lifetime: Option<u64>,
) -> anyhow::Result<()> {
    if rooms == 0 || users_per_room == 0 {
        bail!("--rooms and --users-per-room must be at least 1");
    }
    if rooms.saturating_mul(users_per_room) > MAX_SEED_USERS {
        bail!("at most {MAX_SEED_USERS} users in one seed; run it several times for more");
    }
    let (config, auth) = authenticator(common, token_lifetime)?;
    let step = (rooms / 20).max(1);
    let progress = |done| {
        if done % step == 0 || done == rooms {
            eprintln!("seed: {done}/{rooms} rooms");
        }
    };
    let plan = if config.database.postgres_url().is_some() {
        db::postgres::commands::seed(
            &config.database,
            rooms,
            users_per_room,
            |id| auth.mint(id),
            progress,
        )?
    } else {
        let mut conn = open(&config)?;
        db::migrate::apply(&mut conn).context("applying migrations")?;
        db::seed::seed(
            &mut conn,
            rooms,
            users_per_room,
            |id| auth.mint(id),
            progress,
        )
        .context("seeding")?
    };
    serde_json::to_writer(std::io::stdout().lock(), &plan)?;
    println!();
    Ok(())
}

fn token(common: &Common, user: &str, token_lifetime: Option<u64>) -> anyhow::Result<()> {
    let (config, auth) = authenticator(common, token_lifetime)?;
    if config.database.postgres_url().is_some() {
        let id = db::normalise_uuid(user).unwrap_or_else(|| user.to_string());
        let row = db::postgres::commands::read_row(
            &config.database,
            &config.auth.user_query,
            &[db::Value::Text(id)],
        )?;
        let Some(row) = row else {
            bail!(
                "no active user with id {user} in {}",
                config.database.location()
            );
        };
        let found = crate::auth::user_from_row(row)
            .map_err(|err| anyhow::anyhow!("looking the user up: {err}"))?;
        println!("{}", auth.mint(&found.id));
        return Ok(());
    }
    let path = &config.database.path;
    if !path.exists() {
        bail!(
            "no database at {}: point --db at the Django app's db.sqlite3, or run `consumer-host seed`",
            path.display()
        );
    }
    let conn = open(&config)?;
    let id = db::normalise_uuid(user).unwrap_or_else(|| user.to_string());
    let found = crate::auth::lookup_user(&conn, &config.auth.user_query, &db::Value::Text(id))
        .map_err(|err| anyhow::anyhow!("looking the user up: {err}"))?;
    let Some(found) = found else {
        bail!("no active user with id {user} in {}", path.display());
    };
    println!("{}", auth.mint(&found.id));
    Ok(())
}

/// The config, and its token minter (with `--token-lifetime` applied).
fn authenticator(
    common: &Common,
    token_lifetime: Option<u64>,
) -> anyhow::Result<(Config, std::sync::Arc<Authenticator>)> {
    let mut config = load_config(common)?;
    if let Some(lifetime) = token_lifetime {
        config.auth.access_token_lifetime_secs = lifetime;
    }
    let auth = Authenticator::new(&config.auth)?;
    Ok((config, auth))
}

fn open(config: &Config) -> anyhow::Result<rusqlite::Connection> {
    let path = &config.database.path;
    let conn =
        rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_millis(
        config.database.busy_timeout_ms,
    ))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    Ok(conn)
}

/// Waits for SIGINT or SIGTERM; calls `on_hangup` at every SIGHUP.
async fn wait_for_signal(mut on_hangup: impl FnMut()) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut hangup = signal(SignalKind::hangup()).expect("installing a SIGHUP handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return tracing::info!("SIGINT received"),
            _ = terminate.recv() => return tracing::info!("SIGTERM received"),
            _ = hangup.recv() => {
                tracing::info!("SIGHUP received: reloading the configuration");
                on_hangup();
            }
        }
    }
}
