//! Configuration: a TOML file, validated up front.
//!
//! Precedence everywhere is command-line flag > environment variable > config
//! file > built-in default. The library never reads the environment itself:
//! [`crate::cli`] folds flags and variables into a [`Config`] with the
//! `override_*` methods, so tests build a `Config` in code and start a server
//! in-process.
//!
//! A leaf: plain data and the checks that need nothing but the data. Routes
//! are compiled by [`crate::routing`], keys made by [`crate::auth`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything a server needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address for HTTP and WebSocket traffic.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The database: a SQLite file, or PostgreSQL (`url`).
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Token verification and user lookup.
    #[serde(default)]
    pub auth: AuthConfig,
    /// The channel layer that carries group events.
    #[serde(default)]
    pub layer: LayerConfig,
    /// Connection and message limits.
    #[serde(default)]
    pub limits: Limits,
    /// The WebAssembly engine.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// The admin API (deploys, versions, rollback).
    #[serde(default)]
    pub admin: AdminConfig,
    /// URL routes to consumers, tried in order.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Consumers by name.
    #[serde(default, rename = "consumer")]
    pub consumers: BTreeMap<String, ConsumerConfig>,
    /// The chat page for trying the chat in a browser.
    #[serde(default)]
    pub demo: DemoConfig,
    /// How the log is written.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`; `--log-format` and `CONSUMER_HOST_LOG_FORMAT`
    /// override it.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the same fields.
    Json,
}

/// `[demo]`: a chat page at `/` (see `crate::demo`) for a first try.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Serve the page and its API. The API makes users and mints their
    /// tokens for whoever reaches it, so it is refused unless `listen` is a
    /// loopback address. Off by default.
    pub enabled: bool,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Path of the SQLite file; created (with the schema) when missing.
    pub path: PathBuf,
    /// PostgreSQL instead of the SQLite file:
    /// `postgres://user:password@host:5432/db` (`postgresql://` too), with
    /// libpq's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`) and `sslrootcert` (a PEM file) in the query string.
    pub url: Option<DatabaseUrl>,
    /// PostgreSQL: connections kept per pool (one pool for the host's own
    /// reads, one per consumer role for its queries).
    pub pool_size: usize,
    /// PostgreSQL: how long connecting may take before it counts as a failure.
    pub connect_timeout_ms: u64,
    /// PostgreSQL: how long a `db-insert` may wait for its commit, queue
    /// included, before it fails (keep it below the consumers'
    /// `event_wall_ms`). While the server is unreachable inserts fail at once.
    pub write_timeout_ms: u64,
    /// PostgreSQL: writer connections, each committing its own batches; with
    /// two, one batch is being written while the other waits for its fsync.
    pub writers: usize,
    /// PostgreSQL: writes waiting for the writer at most. A write finding
    /// the queue full waits for room (up to `write_timeout_ms`), then fails
    /// and is counted in `consumer_host_db_writes_refused_total`.
    pub max_queued_writes: usize,
    /// `full` (a commit survives power loss) or `normal` (survives a crash of
    /// the process; WAL makes this safe from corruption either way).
    pub synchronous: Synchronous,
    /// Reader threads for queries and user lookups.
    pub readers: usize,
    /// At most this many writes are committed together (group commit).
    pub max_batch: usize,
    /// When writes are queueing, a batch waits this long (microseconds) for
    /// more before it commits: fuller batches write fewer pages per row, but
    /// every writer waits longer, so with a fixed number of busy connections
    /// it costs throughput (measured: 500 µs cut the 10x10 chat from 185k to
    /// 135k deliveries/s). 0, the default, commits what is queued at once.
    pub commit_delay_us: u64,
    /// How long a statement may wait on a lock held by another process.
    pub busy_timeout_ms: u64,
    /// A guest's query running longer than this is interrupted (on
    /// PostgreSQL: the consumers' connections' `statement_timeout`).
    pub query_timeout_ms: u64,
    /// Rows one guest query may return; past it the query fails with a
    /// `db-error` that says so (checked while the rows are collected).
    pub max_query_rows: usize,
    /// Bytes (of text and blobs, plus 8 per value) one guest query may return.
    pub max_query_bytes: usize,
    /// Longest string or blob a guest's statement may make or read
    /// (SQLite's `SQLITE_LIMIT_LENGTH` on the consumers' connections; on
    /// PostgreSQL checked on every parameter and returned value).
    pub max_value_bytes: usize,
}

/// A database URL; its password never shows in `Debug` output or logs.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl DatabaseConfig {
    /// The PostgreSQL URL, when PostgreSQL is configured.
    pub fn postgres_url(&self) -> Option<&str> {
        self.url.as_ref().map(|url| url.0.as_str())
    }

    /// Where the data is, for messages: the file, or the URL without its password.
    pub fn location(&self) -> String {
        match self.postgres_url() {
            Some(url) => redact_url(url),
            None => self.path.display().to_string(),
        }
    }
}

/// Whether `text` is a PostgreSQL URL (else it names a SQLite file).
pub fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("db.sqlite3"),
            url: None,
            pool_size: 8,
            connect_timeout_ms: 5_000,
            write_timeout_ms: 5_000,
            writers: 2,
            max_queued_writes: 10_000,
            synchronous: Synchronous::Full,
            readers: 2,
            max_batch: 512,
            commit_delay_us: 0,
            busy_timeout_ms: 5_000,
            query_timeout_ms: 1_000,
            max_query_rows: 10_000,
            max_query_bytes: 4 * 1024 * 1024,
            max_value_bytes: 1024 * 1024,
        }
    }
}

/// SQLite's `synchronous` setting.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit.
    Full,
    /// fsync at WAL checkpoints only.
    Normal,
}

/// `[auth]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The HMAC signing key (simplejwt's `SIGNING_KEY`, Django's `SECRET_KEY` by
    /// default). `JWT_SECRET` in the environment overrides it.
    pub secret: Option<String>,
    /// Accepted signature algorithms; the first also signs the tokens that
    /// `seed` and `token` mint.
    pub algorithms: Vec<HmacAlgorithm>,
    /// The claim that names the user.
    pub user_id_claim: String,
    /// The claim that says what kind of token it is, and the value a login needs.
    pub token_type_claim: String,
    /// See `token_type_claim`.
    pub access_token_type: String,
    /// Seconds of clock skew tolerated on `exp` and `nbf` (simplejwt: 0).
    pub leeway_secs: u64,
    /// The query that looks a user up by id (bound as `?1`, as 32 hex digits
    /// when the claim is a UUID). It returns `id, name, email`; no row means
    /// no login (so it filters out inactive users).
    pub user_query: String,
    /// The query-string parameter that carries the token.
    pub query_param: String,
    /// Also accept the token in the `Sec-WebSocket-Protocol` header, which
    /// keeps it out of URLs and access logs: the client offers this marker
    /// and, right after it, the token (`new WebSocket(url, ["access_token",
    /// token])`). When the consumer chooses no subprotocol, the host answers
    /// with the marker, as browsers require.
    pub subprotocol: Option<String>,
    /// Lifetime of tokens minted by `consumer-host token` and `seed`.
    pub access_token_lifetime_secs: u64,
    /// How often (seconds) an open connection's login is checked again: the
    /// user query runs again (a removed or inactive user is closed with
    /// 4401) and a 0.2 consumer hears a `host.recheck` event to re-check its
    /// own rules (the chat: membership). A token's expiry closes its
    /// connection at once, whatever this says. 0: never re-check.
    pub recheck_secs: u64,
}

impl AuthConfig {
    /// The signing secret, or why there is none to use.
    pub fn secret(&self) -> Result<&str, ConfigError> {
        match self.secret.as_deref() {
            Some(secret) if !secret.is_empty() => Ok(secret),
            _ => Err(ConfigError::Invalid(
                "no JWT secret: set JWT_SECRET in the environment or `secret` under [auth] \
                 (the Django app's SIMPLE_JWT SIGNING_KEY, by default its SECRET_KEY)"
                    .into(),
            )),
        }
    }
}

/// The HMAC algorithms simplejwt signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HmacAlgorithm {
    /// HMAC-SHA256, simplejwt's default.
    HS256,
    /// HMAC-SHA384.
    HS384,
    /// HMAC-SHA512.
    HS512,
}

impl std::fmt::Debug for LayerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerConfig")
            .field("kind", &self.kind)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("prefix", &self.prefix)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A URL with its password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if at > scheme.len() + 3 => {
            let credentials = &rest[..at - scheme.len() - 3];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &url[at..])
        }
        _ => url.to_string(),
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("algorithms", &self.algorithms)
            .field("user_id_claim", &self.user_id_claim)
            .field("user_query", &self.user_query)
            .finish_non_exhaustive()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            secret: None,
            algorithms: vec![HmacAlgorithm::HS256],
            user_id_claim: "user_id".into(),
            token_type_claim: "token_type".into(),
            access_token_type: "access".into(),
            leeway_secs: 0,
            user_query: DEFAULT_USER_QUERY.into(),
            query_param: "token".into(),
            subprotocol: None,
            access_token_lifetime_secs: 3_600,
            recheck_secs: 60,
        }
    }
}

/// The reference app's user table.
pub const DEFAULT_USER_QUERY: &str =
    "SELECT id, name, email FROM useraccount_user WHERE id = ?1 AND is_active";

/// `[layer]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LayerConfig {
    /// `memory` (one node) or `redis` (several nodes sharing groups).
    pub kind: LayerKind,
    /// The Redis URL, for `kind = "redis"`, e.g. `redis://127.0.0.1:6379/`.
    pub url: Option<String>,
    /// Prefix of the Redis channel names, so deployments can share a Redis.
    pub prefix: String,
    /// Group events queued for one connection before it counts as too slow
    /// and is closed (code 4008).
    pub mailbox_capacity: usize,
    /// Largest event a consumer may send to a group, in bytes.
    pub max_event_bytes: usize,
    /// The key that authenticates the events nodes publish to each other
    /// (HMAC-SHA256), at least 32 bytes; every node of a deployment has the
    /// same one. Required with Redis: an event without a valid tag is
    /// dropped and counted. `CONSUMER_HOST_LAYER_KEY` overrides it.
    pub key: Option<String>,
    /// Bytes of events waiting for Redis (while it is away) before new ones
    /// are counted as not relayed.
    pub publish_queue_bytes: usize,
    /// A PEM file of the certificate authorities that sign the Redis
    /// server's certificate, for `rediss://` with a private CA (the system's
    /// roots otherwise).
    pub ca_file: Option<PathBuf>,
}

impl Default for LayerConfig {
    fn default() -> Self {
        Self {
            kind: LayerKind::Memory,
            url: None,
            prefix: "consumer-host".into(),
            mailbox_capacity: 1_024,
            max_event_bytes: 256 * 1024,
            key: None,
            publish_queue_bytes: 64 * 1024 * 1024,
            ca_file: None,
        }
    }
}

/// Which channel layer.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// In this process: one node.
    Memory,
    /// Redis publish/subscribe: several nodes.
    Redis,
}

/// `[limits]`: what one client may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open WebSocket connections on this node (HTTP 503 past it).
    pub max_connections: usize,
    /// Open WebSocket connections of one user (HTTP 429 past it).
    pub max_connections_per_user: usize,
    /// Largest message (and frame) a client may send, in bytes (close 1009 past it).
    pub max_message_bytes: usize,
    /// Messages a client may send per second, on average. Past it the
    /// server reads from that client more slowly (nothing is dropped; the
    /// client's own TCP buffers fill up). 0 turns the limit off.
    pub messages_per_second: f64,
    /// Messages a client may send in a burst above the average.
    pub message_burst: u32,
    /// Messages queued towards one client before it counts as too slow and is
    /// closed (code 4008).
    pub send_queue: usize,
    /// Milliseconds a client has to send its HTTP request, and the consumer to
    /// answer `connect`.
    pub handshake_timeout_ms: u64,
    /// The server pings every client this often (milliseconds; 0: never).
    pub ping_interval_ms: u64,
    /// A client heard from (any frame, a pong included) less recently than
    /// this is dropped as dead (milliseconds).
    pub idle_timeout_ms: u64,
    /// Origins allowed to connect, e.g. `https://example.com` or
    /// `https://*.example.com`; empty: any. Requests without an `Origin`
    /// header (non-browser clients) are allowed, as Channels'
    /// `AllowedHostsOriginValidator` does.
    pub allowed_origins: Vec<String>,
    /// Seconds to wait for connections to close on shutdown.
    pub shutdown_grace_secs: u64,
    /// Longest request target (path and query) in bytes; longer is refused
    /// with HTTP 414 before any routing.
    pub max_uri_bytes: usize,
    /// Messages one user may send per second over all their connections
    /// together; past it every one of them is read more slowly. 0: no limit.
    pub user_messages_per_second: f64,
    /// Messages one user may send in a burst above that average.
    pub user_message_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_connections_per_user: 64,
            max_message_bytes: 64 * 1024,
            messages_per_second: 100.0,
            message_burst: 200,
            send_queue: 1_024,
            handshake_timeout_ms: 10_000,
            ping_interval_ms: 20_000,
            idle_timeout_ms: 60_000,
            allowed_origins: Vec::new(),
            shutdown_grace_secs: 10,
            max_uri_bytes: 8 * 1024,
            user_messages_per_second: 200.0,
            user_message_burst: 400,
        }
    }
}

impl Limits {
    /// The handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// Whether a browser from `origin` may connect.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        if self.allowed_origins.is_empty() {
            return true;
        }
        self.allowed_origins.iter().any(|allowed| {
            if allowed == "*" || allowed.eq_ignore_ascii_case(origin) {
                return true;
            }
            // `https://*.example.com` allows any subdomain of example.com.
            match (allowed.split_once("://*."), origin.split_once("://")) {
                (Some((scheme, suffix)), Some((origin_scheme, host))) => {
                    scheme.eq_ignore_ascii_case(origin_scheme)
                        && host.len() > suffix.len()
                        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                }
                _ => false,
            }
        })
    }
}

/// `[runtime]`: the WebAssembly engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Use wasmtime's pooling allocator: instance memory, tables and stacks
    /// come from pools reserved up front, so creating an instance is a few
    /// microseconds and needs no new memory mappings.
    pub pooling: bool,
    /// Live instances at most (the pools' size). Idle instances are evicted,
    /// so this bounds busy connections, not open ones.
    pub max_instances: usize,
    /// WebAssembly stack of one call, in bytes.
    pub max_wasm_stack_bytes: usize,
    /// Earlier versions of each consumer kept for rollback.
    pub keep_versions: usize,
    /// How often watched module files are checked for changes.
    pub watch_interval_ms: u64,
    /// A folder for compiled code, kept between starts and deploys (keyed by
    /// the module's hash and the engine's settings): a large component
    /// (Python, JavaScript) compiles once, not at every start. Only the
    /// server's user may write it. `serve` uses a folder in the user's
    /// cache when this is not set; the library keeps nothing when it is not.
    pub compiled_cache: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            pooling: true,
            max_instances: 10_000,
            max_wasm_stack_bytes: 512 * 1024,
            keep_versions: 5,
            watch_interval_ms: 500,
            compiled_cache: None,
        }
    }
}

/// `[[route]]`: a Django-style path pattern and the consumer that serves it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// For example `ws/<room_name>/`.
    pub path: String,
    /// A key of `[consumer]`.
    pub consumer: String,
}

/// `[consumer.<name>]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// The component file; relative paths are relative to the config file.
    pub module: PathBuf,
    /// Tables the consumer may read with `db-query`.
    #[serde(default)]
    pub read: Vec<String>,
    /// Tables the consumer may insert into with `db-insert` (and read).
    #[serde(default)]
    pub write: Vec<String>,
    /// Sandbox limits of one instance.
    #[serde(default)]
    pub sandbox: SandboxLimits,
    /// Deploy the module file again whenever it changes.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// The namespace of the groups this consumer joins and sends to; by
    /// default its own name, so no other consumer can join, read or forge
    /// its groups. Consumers given the same namespace share groups.
    #[serde(default)]
    pub group_namespace: Option<String>,
}

fn default_true() -> bool {
    true
}

impl ConsumerConfig {
    /// The group namespace of the consumer called `name`.
    pub fn namespace<'a>(&'a self, name: &'a str) -> &'a str {
        self.group_namespace.as_deref().unwrap_or(name)
    }

    /// A consumer of `module` with no tables granted and default limits.
    pub fn new(module: impl Into<PathBuf>) -> Self {
        Self {
            module: module.into(),
            read: Vec::new(),
            write: Vec::new(),
            sandbox: SandboxLimits::default(),
            watch: true,
            group_namespace: None,
        }
    }
}

/// `[admin]`: the HTTP API that deploys and rolls back consumers.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The bearer token the API requires. No token: the API is off.
    /// `CONSUMER_HOST_ADMIN_TOKEN` in the environment overrides it.
    pub token: Option<String>,
    /// Serve the API on this address only (and not on `listen`).
    pub listen: Option<SocketAddr>,
    /// Largest module a deploy may upload, in bytes.
    pub max_module_bytes: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token: None,
            listen: None,
            max_module_bytes: 64 * 1024 * 1024,
        }
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("listen", &self.listen)
            .field("max_module_bytes", &self.max_module_bytes)
            .finish()
    }
}

/// Per-instance limits of a consumer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxLimits {
    /// Linear memory of one instance, in bytes.
    pub memory_bytes: usize,
    /// CPU time one event may take, in milliseconds.
    pub event_deadline_ms: u64,
    /// Wall-clock time one event may take, host calls (database, groups)
    /// included, in milliseconds.
    pub event_wall_ms: u64,
    /// `group-send` calls one event may make.
    pub max_group_sends_per_event: u32,
    /// `group-add` and `group-discard` calls one event may make.
    pub max_group_changes_per_event: u32,
    /// `db-insert` and `db-query` calls one event may make.
    pub max_db_calls_per_event: u32,
    /// Log lines one event may write; the rest are counted, not written.
    pub max_log_lines_per_event: u32,
    /// Frames one event may send.
    pub max_sends_per_event: u32,
    /// Bytes one event may send.
    pub max_send_bytes_per_event: usize,
    /// Size of the per-connection state blob, in bytes.
    pub max_state_bytes: usize,
    /// An instance idle this long is dropped to save memory and re-created
    /// on the connection's next event.
    pub idle_evict_secs: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 16 * 1024 * 1024,
            event_deadline_ms: 100,
            event_wall_ms: 10_000,
            max_group_sends_per_event: 16,
            max_group_changes_per_event: 32,
            max_db_calls_per_event: 32,
            max_log_lines_per_event: 64,
            max_sends_per_event: 64,
            max_send_bytes_per_event: 1024 * 1024,
            max_state_bytes: 64 * 1024,
            idle_evict_secs: 30,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}

/// A configuration that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// Something else is inconsistent; the text says what and how to fix it.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(text: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(text.into()))
}

/// The placeholder secret of the sample config: fine on loopback for a
/// first try, refused anywhere else.
pub const SAMPLE_SECRET: &str = "dev-only-insecure-secret-change-me";

/// Shortest secret (JWT, layer key) accepted beyond loopback.
pub const MIN_SECRET_BYTES: usize = 32;

/// A group namespace: what the layer prefixes a consumer's group names with.
fn is_namespace(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl Config {
    /// A configuration with every default and no routes or consumers.
    pub fn empty() -> Self {
        toml::from_str("").expect("the empty config parses")
    }

    /// Reads a TOML file. Relative paths in it (the database, modules) are
    /// made relative to the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses TOML text; paths stay as written.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    fn resolve_paths(&mut self, base: &Path) {
        if self.database.path.is_relative() {
            self.database.path = base.join(&self.database.path);
        }
        for consumer in self.consumers.values_mut() {
            if consumer.module.is_relative() {
                consumer.module = base.join(&consumer.module);
            }
        }
        if let Some(cache) = &mut self.runtime.compiled_cache
            && cache.is_relative()
        {
            *cache = base.join(&*cache);
        }
    }

    /// Checks what can be checked without touching files or compiling
    /// anything: a usable secret, positive limits, routes that name
    /// configured consumers, a consistent admin API, sane sandboxes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_auth()?;
        self.check_limits()?;
        self.check_routes()?;
        self.check_admin()?;
        self.check_layer()?;
        self.check_consumers()?;
        self.check_demo()
    }

    /// Every problem [`Config::validate`] finds, one per kind of check
    /// (`validate` stops at the first): what `consumer-host check` lists.
    pub fn problems(&self) -> Vec<ConfigError> {
        [
            self.check_auth(),
            self.check_limits(),
            self.check_routes(),
            self.check_admin(),
            self.check_layer(),
            self.check_consumers(),
            self.check_demo(),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect()
    }

    /// Why the JWT secret is unfit for anything but a demo on this machine,
    /// if it is: the sample config's placeholder, or shorter than 32 bytes
    /// (anyone who guesses it can mint a token for any user).
    pub fn weak_secret(&self) -> Option<&'static str> {
        let secret = self.auth.secret.as_deref()?;
        if secret == SAMPLE_SECRET {
            Some("it is the sample config's placeholder")
        } else if secret.len() < MIN_SECRET_BYTES {
            Some("it is shorter than 32 bytes")
        } else {
            None
        }
    }

    /// Whether every address the node listens on is a loopback address
    /// (only this machine can connect).
    pub fn loopback_only(&self) -> bool {
        self.listen.ip().is_loopback()
            && self
                .admin
                .listen
                .is_none_or(|address| address.ip().is_loopback())
    }

    fn check_auth(&self) -> Result<(), ConfigError> {
        self.auth.secret()?;
        if let Some(why) = self.weak_secret()
            && !self.loopback_only()
        {
            return invalid(format!(
                "the JWT secret is unsafe ({why}) and the server listens on {}, beyond this \
                 machine: set a random secret of 32 bytes or more (JWT_SECRET or [auth] secret; \
                 the Django app's SIGNING_KEY), or listen on 127.0.0.1 only",
                self.listen
            ));
        }
        if self.auth.algorithms.is_empty() {
            return invalid("[auth] algorithms is empty: list at least one, e.g. [\"HS256\"]");
        }
        Ok(())
    }

    fn check_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        for (name, value) in [
            ("[limits] max_connections", limits.max_connections),
            (
                "[limits] max_connections_per_user",
                limits.max_connections_per_user,
            ),
            (
                "[limits] handshake_timeout_ms",
                limits.handshake_timeout_ms as usize,
            ),
            ("[limits] idle_timeout_ms", limits.idle_timeout_ms as usize),
            ("[limits] max_message_bytes", limits.max_message_bytes),
            ("[limits] max_uri_bytes", limits.max_uri_bytes),
            ("[limits] send_queue", limits.send_queue),
            ("[layer] mailbox_capacity", self.layer.mailbox_capacity),
            ("[layer] max_event_bytes", self.layer.max_event_bytes),
            (
                "[layer] publish_queue_bytes",
                self.layer.publish_queue_bytes,
            ),
            ("[database] readers", self.database.readers),
            ("[database] max_batch", self.database.max_batch),
            ("[database] max_query_rows", self.database.max_query_rows),
            ("[database] max_query_bytes", self.database.max_query_bytes),
            ("[database] max_value_bytes", self.database.max_value_bytes),
            ("[database] pool_size", self.database.pool_size),
            ("[database] writers", self.database.writers),
            (
                "[database] max_queued_writes",
                self.database.max_queued_writes,
            ),
            (
                "[database] write_timeout_ms",
                self.database.write_timeout_ms as usize,
            ),
            ("[runtime] max_instances", self.runtime.max_instances),
            (
                "[runtime] watch_interval_ms",
                self.runtime.watch_interval_ms as usize,
            ),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        if self.database.max_value_bytes > i32::MAX as usize {
            return invalid("[database] max_value_bytes must be below 2 GiB");
        }
        if let Some(url) = &self.database.url
            && !is_postgres_url(&url.0)
        {
            return invalid(format!(
                "[database] url {url:?} is not a PostgreSQL URL: write postgres://user:password@host:5432/db \
                 (for SQLite, set `path` instead)"
            ));
        }
        Ok(())
    }

    fn check_routes(&self) -> Result<(), ConfigError> {
        for route in &self.routes {
            if !self.consumers.contains_key(&route.consumer) {
                return invalid(format!(
                    "route {:?} names consumer {:?}, which has no [consumer.{}] section",
                    route.path, route.consumer, route.consumer
                ));
            }
        }
        Ok(())
    }

    fn check_admin(&self) -> Result<(), ConfigError> {
        if self
            .admin
            .token
            .as_deref()
            .is_some_and(|token| token.len() < 16)
        {
            return invalid("[admin] token must be at least 16 characters");
        }
        if self.admin.listen.is_some() && self.admin.token.is_none() {
            return invalid(
                "[admin] listen is set but no token: set [admin] token or CONSUMER_HOST_ADMIN_TOKEN",
            );
        }
        Ok(())
    }

    fn check_layer(&self) -> Result<(), ConfigError> {
        if self.layer.kind != LayerKind::Redis {
            return Ok(());
        }
        if self.layer.url.is_none() {
            return invalid("[layer] kind = \"redis\" needs url, e.g. \"redis://127.0.0.1:6379/\"");
        }
        match self.layer.key.as_deref() {
            Some(key) if key.len() >= MIN_SECRET_BYTES => Ok(()),
            Some(_) => invalid(
                "[layer] key must be at least 32 bytes: every node signs the events it \
                 publishes with it (CONSUMER_HOST_LAYER_KEY overrides it)",
            ),
            None => invalid(
                "[layer] kind = \"redis\" needs key: a random secret of 32 bytes or more, the \
                 same on every node, that authenticates the events nodes publish \
                 (or CONSUMER_HOST_LAYER_KEY)",
            ),
        }
    }

    fn check_consumers(&self) -> Result<(), ConfigError> {
        for (name, consumer) in &self.consumers {
            let sandbox = &consumer.sandbox;
            if sandbox.memory_bytes < 64 * 1024 {
                return invalid(format!(
                    "[consumer.{name}.sandbox] memory_bytes must be at least 65536 (one wasm page)"
                ));
            }
            for (key, value) in [
                ("event_deadline_ms", sandbox.event_deadline_ms),
                ("event_wall_ms", sandbox.event_wall_ms),
            ] {
                if value == 0 {
                    return invalid(format!(
                        "[consumer.{name}.sandbox] {key} must be at least 1"
                    ));
                }
            }
            if let Some(namespace) = &consumer.group_namespace
                && !is_namespace(namespace)
            {
                return invalid(format!(
                    "[consumer.{name}] group_namespace {namespace:?}: use 1 to 64 ASCII letters, \
                     digits, '-' or '_'"
                ));
            }
            if consumer.group_namespace.is_none() && !is_namespace(name) {
                return invalid(format!(
                    "consumer name {name:?}: use 1 to 64 ASCII letters, digits, '-' or '_' \
                     (it names the consumer's group namespace)"
                ));
            }
        }
        Ok(())
    }

    fn check_demo(&self) -> Result<(), ConfigError> {
        if self.demo.enabled && !self.listen.ip().is_loopback() {
            return invalid(format!(
                "[demo] enabled serves a page whose API makes users and mints their tokens for \
                 anyone who reaches it, and the server listens on {}, beyond this machine: set \
                 [demo] enabled = false, or listen on 127.0.0.1 only",
                self.listen
            ));
        }
        Ok(())
    }

    /// `--listen` / its variable.
    pub fn override_listen(&mut self, listen: Option<SocketAddr>) {
        if let Some(listen) = listen {
            self.listen = listen;
        }
    }

    /// `--db` / its variable: a SQLite file, or a `postgres://` URL.
    pub fn override_database(&mut self, path: Option<PathBuf>) {
        let Some(path) = path else { return };
        match path.to_str().filter(|text| is_postgres_url(text)) {
            Some(url) => self.database.url = Some(DatabaseUrl(url.to_string())),
            None => {
                self.database.path = path;
                self.database.url = None;
            }
        }
    }

    /// `CONSUMER_HOST_ADMIN_TOKEN`.
    pub fn override_admin_token(&mut self, token: Option<String>) {
        if let Some(token) = token.filter(|token| !token.is_empty()) {
            self.admin.token = Some(token);
        }
    }

    /// `JWT_SECRET`.
    pub fn override_secret(&mut self, secret: Option<String>) {
        if let Some(secret) = secret.filter(|secret| !secret.is_empty()) {
            self.auth.secret = Some(secret);
        }
    }

    /// `CONSUMER_HOST_LAYER_KEY`.
    pub fn override_layer_key(&mut self, key: Option<String>) {
        if let Some(key) = key.filter(|key| !key.is_empty()) {
            self.layer.key = Some(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
        listen = "127.0.0.1:9000"
        [database]
        path = "chat.sqlite3"
        [auth]
        secret = "s"
        [[route]]
        path = "ws/<room_name>/"
        consumer = "chat"
        [consumer.chat]
        module = "chat.wasm"
        read = ["chat_conversation_users"]
        write = ["chat_conversationmessage"]
    "#;

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = std::env::temp_dir().join(format!("ch-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("host.toml");
        std::fs::write(&file, SAMPLE).unwrap();
        let config = Config::load(&file).unwrap();
        assert_eq!(config.database.path, dir.join("chat.sqlite3"));
        assert_eq!(config.consumers["chat"].module, dir.join("chat.wasm"));
        assert_eq!(config.listen.port(), 9000);
        config.validate().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flags_beat_the_file() {
        let mut config = Config::parse(SAMPLE).unwrap();
        config.override_listen(Some("127.0.0.1:1".parse().unwrap()));
        config.override_database(Some("/tmp/x.sqlite3".into()));
        config.override_secret(Some("from-env".into()));
        config.override_secret(Some(String::new()));
        assert_eq!(config.listen.port(), 1);
        assert_eq!(config.database.path, PathBuf::from("/tmp/x.sqlite3"));
        assert_eq!(config.auth.secret.as_deref(), Some("from-env"));
    }

    #[test]
    fn db_takes_a_file_or_a_postgres_url() {
        let mut config = Config::parse(
            "[database]\nurl = \"postgres://chat:s3cret@db.internal:5432/chat?sslmode=verify-full\"\npool_size = 4",
        )
        .unwrap();
        assert_eq!(
            config.database.postgres_url(),
            Some("postgres://chat:s3cret@db.internal:5432/chat?sslmode=verify-full")
        );
        assert_eq!(config.database.pool_size, 4);
        // The password never shows.
        let shown = format!("{:?} {}", config.database, config.database.location());
        assert!(!shown.contains("s3cret"), "{shown}");
        // A file on the command line beats the URL in the file, and back.
        config.override_database(Some("/tmp/chat.sqlite3".into()));
        assert_eq!(config.database.postgres_url(), None);
        assert_eq!(config.database.path, PathBuf::from("/tmp/chat.sqlite3"));
        config.override_database(Some("postgresql://u@127.0.0.1/x".into()));
        assert_eq!(
            config.database.postgres_url(),
            Some("postgresql://u@127.0.0.1/x")
        );
        config.database.url = Some(DatabaseUrl("mysql://u@h/x".into()));
        config.auth.secret = Some("x".repeat(40));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("not a PostgreSQL URL"), "{err}");
    }

    #[test]
    fn origins() {
        let mut limits = Limits::default();
        assert!(limits.origin_allowed("https://anything.example"));
        limits.allowed_origins = vec![
            "https://app.example.com".into(),
            "https://*.example.org".into(),
        ];
        assert!(limits.origin_allowed("https://app.example.com"));
        assert!(limits.origin_allowed("HTTPS://APP.example.com"));
        assert!(limits.origin_allowed("https://a.example.org"));
        assert!(limits.origin_allowed("https://a.b.example.org"));
        assert!(!limits.origin_allowed("https://example.org"));
        assert!(!limits.origin_allowed("https://evilexample.org"));
        assert!(!limits.origin_allowed("http://a.example.org"));
        assert!(!limits.origin_allowed("https://app.example.com.evil.net"));
        assert!(!limits.origin_allowed("null"));
    }

    #[test]
    fn weak_secrets_stay_on_loopback() {
        let mut config = Config::parse(SAMPLE).unwrap();
        assert_eq!(config.weak_secret(), Some("it is shorter than 32 bytes"));
        config.validate().unwrap();
        config.listen = "0.0.0.0:8000".parse().unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("0.0.0.0:8000") && err.contains("32 bytes"),
            "{err}"
        );
        config.auth.secret = Some(SAMPLE_SECRET.into());
        assert_eq!(
            config.weak_secret(),
            Some("it is the sample config's placeholder")
        );
        assert!(config.validate().is_err());
        config.auth.secret = Some("k".repeat(32));
        assert_eq!(config.weak_secret(), None);
        config.validate().unwrap();
        config.listen = "127.0.0.1:8000".parse().unwrap();
        config.admin.token = Some("a-long-enough-admin-token".into());
        config.admin.listen = Some("10.0.0.1:9000".parse().unwrap());
        config.auth.secret = Some("short".into());
        assert!(!config.loopback_only());
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_demo_stays_on_loopback() {
        let mut config = Config::parse(SAMPLE).unwrap();
        assert!(!config.demo.enabled, "off by default");
        config.demo.enabled = true;
        config.validate().unwrap();
        config.listen = "0.0.0.0:8000".parse().unwrap();
        config.auth.secret = Some("k".repeat(32));
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("[demo]") && err.contains("0.0.0.0:8000"),
            "{err}"
        );
        // `problems` names this one and the others together.
        config.routes[0].consumer = "missing".into();
        let problems: Vec<String> = config.problems().iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("missing") && problems[1].contains("[demo]"));
    }

    #[test]
    fn redis_needs_a_key() {
        let mut config = Config::parse(SAMPLE).unwrap();
        config.layer.kind = LayerKind::Redis;
        config.layer.url = Some("redis://127.0.0.1:6379/".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("needs key"), "{err}");
        config.override_layer_key(Some("short".into()));
        assert!(config.validate().is_err());
        config.override_layer_key(Some("x".repeat(32)));
        config.validate().unwrap();
        assert_eq!(
            redact_url("redis://user:hunter2@redis.internal:6379/0"),
            "redis://user:***@redis.internal:6379/0"
        );
        assert_eq!(
            redact_url("rediss://:hunter2@h:6380"),
            "rediss://:***@h:6380"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        let layer = LayerConfig {
            url: Some("redis://u:hunter2@h/".into()),
            ..LayerConfig::default()
        };
        assert!(!format!("{layer:?}").contains("hunter2"));
    }

    #[test]
    fn group_namespaces() {
        let mut config = Config::parse(SAMPLE).unwrap();
        assert_eq!(config.consumers["chat"].namespace("chat"), "chat");
        config.consumers.get_mut("chat").unwrap().group_namespace = Some("rooms".into());
        assert_eq!(config.consumers["chat"].namespace("chat"), "rooms");
        config.validate().unwrap();
        config.consumers.get_mut("chat").unwrap().group_namespace = Some("a:b".into());
        assert!(config.validate().is_err());
    }

    #[test]
    fn mistakes_are_named() {
        let unknown_key = Config::parse("listne = \"127.0.0.1:1\"").unwrap_err();
        assert!(unknown_key.to_string().contains("listne"), "{unknown_key}");

        let no_secret = Config::parse("").unwrap().validate().unwrap_err();
        assert!(no_secret.to_string().contains("JWT_SECRET"), "{no_secret}");

        let text = SAMPLE.replace("consumer = \"chat\"", "consumer = \"chta\"");
        let missing = Config::parse(&text).unwrap().validate().unwrap_err();
        assert!(missing.to_string().contains("chta"), "{missing}");

        let text = SAMPLE.replace(
            "[auth]\n        secret = \"s\"",
            "[auth]\nsecret = \"s\"\nalgorithms = [\"none\"]",
        );
        let none = Config::parse(&text).unwrap_err();
        assert!(none.to_string().contains("none"), "{none}");
    }
}
