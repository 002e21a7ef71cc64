//! The `consumer-host` command line: `serve`, `migrate`, `seed`, `token`.
//!
//! This is the edge of the library: the only module that reads the
//! environment (`JWT_SECRET` and the `CONSUMER_HOST_*` variables behind the
//! flags) and prints. `main.rs` just calls [`main`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::{Server, db};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Runs WebSocket consumers as WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every command shares.
#[derive(clap::Args)]
struct Common {
    /// The TOML config file; module and database paths in it are relative to it.
    #[arg(long, env = "CONSUMER_HOST_CONFIG")]
    config: Option<PathBuf>,
    /// The SQLite database (overrides [database] path).
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
}

/// Where the admin API is, and its token.
#[derive(clap::Args)]
struct AdminTarget {
    /// The admin API's base URL, e.g. http://127.0.0.1:8000 (or the [admin] listen address).
    #[arg(long, env = "CONSUMER_HOST_SERVER")]
    server: String,
    /// The admin bearer token.
    #[arg(long, env = "CONSUMER_HOST_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
}

/// Most rooms x users `seed` makes in one go.
const MAX_SEED_USERS: usize = 1_000_000;

/// Parses the command line, sets up logging and runs the command.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
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
    Ok(config)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { common, listen } => {
            let mut config = load_config(&common)?;
            config.override_listen(listen);
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
            runtime.block_on(serve(config))
        }
        Command::Migrate { common } => {
            let config = load_config(&common)?;
            let mut conn = open(&config)?;
            let applied = db::migrate::apply(&mut conn).context("applying migrations")?;
            if applied.is_empty() {
                eprintln!("{}: schema up to date", config.database.path.display());
            } else {
                eprintln!(
                    "{}: applied {}",
                    config.database.path.display(),
                    applied.join(", ")
                );
            }
            Ok(())
        }
        Command::Seed {
            common,
            rooms,
            users_per_room,
            token_lifetime,
        } => {
            if rooms == 0 || users_per_room == 0 {
                bail!("--rooms and --users-per-room must be at least 1");
            }
            if rooms.saturating_mul(users_per_room) > MAX_SEED_USERS {
                bail!("at most {MAX_SEED_USERS} users in one seed; run it several times for more");
            }
            let mut config = load_config(&common)?;
            if let Some(lifetime) = token_lifetime {
                config.auth.access_token_lifetime_secs = lifetime;
            }
            let auth = authenticator(&config)?;
            let mut conn = open(&config)?;
            db::migrate::apply(&mut conn).context("applying migrations")?;
            let step = (rooms / 20).max(1);
            let plan = db::seed::seed(
                &mut conn,
                rooms,
                users_per_room,
                |id| auth.mint(id),
                |done| {
                    if done % step == 0 || done == rooms {
                        eprintln!("seed: {done}/{rooms} rooms");
                    }
                },
            )
            .context("seeding")?;
            serde_json::to_writer(std::io::stdout().lock(), &plan)?;
            println!();
            Ok(())
        }
        Command::Token {
            common,
            user,
            token_lifetime,
        } => {
            let mut config = load_config(&common)?;
            if let Some(lifetime) = token_lifetime {
                config.auth.access_token_lifetime_secs = lifetime;
            }
            let auth = authenticator(&config)?;
            let path = &config.database.path;
            if !path.exists() {
                bail!(
                    "no database at {}: point --db at the Django app's db.sqlite3, or run `consumer-host seed`",
                    path.display()
                );
            }
            let conn = open(&config)?;
            let id = db::normalise_uuid(&user).unwrap_or(user.clone());
            let found =
                crate::auth::lookup_user(&conn, &config.auth.user_query, &db::Value::Text(id))
                    .map_err(|err| anyhow::anyhow!("looking the user up: {err}"))?;
            let Some(found) = found else {
                bail!(
                    "no active user with id {user} in {}",
                    config.database.path.display()
                );
            };
            println!("{}", auth.mint(&found.id));
            Ok(())
        }
        Command::Deploy {
            consumer,
            file,
            target,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            eprintln!(
                "deploying {} ({} bytes) as {consumer}",
                file.display(),
                bytes.len()
            );
            admin_request(
                &target,
                hyper::Method::PUT,
                &format!("/admin/consumers/{consumer}"),
                bytes,
            )
        }
        Command::Rollback { consumer, target } => admin_request(
            &target,
            hyper::Method::POST,
            &format!("/admin/consumers/{consumer}/rollback"),
            Vec::new(),
        ),
        Command::Versions { target } => {
            admin_request(&target, hyper::Method::GET, "/admin/consumers", Vec::new())
        }
    }
}

/// Sends one admin request; prints the JSON answer on success, fails with
/// the server's error message otherwise.
fn admin_request(
    target: &AdminTarget,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Full};
    let base: hyper::Uri = target
        .server
        .parse()
        .with_context(|| format!("--server {:?} is not a URL", target.server))?;
    if base.scheme_str() != Some("http") {
        bail!(
            "--server must be an http:// URL (the admin API has no TLS; keep it on a private address)"
        );
    }
    let authority = base
        .authority()
        .context("--server needs a host and port")?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, text) = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect((authority.host(), port))
            .await
            .with_context(|| format!("cannot connect to {authority}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority.as_str())
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", target.token),
            )
            .header(hyper::header::CONTENT_TYPE, "application/wasm")
            .body(Full::new(hyper::body::Bytes::from(body)))?;
        let response = sender
            .send_request(request)
            .await
            .context("the admin request failed")?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    })?;
    if status.is_success() {
        println!("{text}");
        return Ok(());
    }
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|value| value["error"].as_str().map(String::from))
        .unwrap_or(text);
    bail!(
        "{} {}: {message}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
}

fn authenticator(config: &Config) -> anyhow::Result<std::sync::Arc<Authenticator>> {
    if config.auth.secret.as_deref().unwrap_or("").is_empty() {
        bail!("no JWT secret: set JWT_SECRET or `secret` under [auth] in the config");
    }
    Authenticator::new(&config.auth).map_err(anyhow::Error::msg)
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

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    eprintln!("consumer-host listening on {}", server.local_addr());
    wait_for_signal().await;
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}
