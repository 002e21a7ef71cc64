//! Configuration: a TOML file, validated up front.
//!
//! Precedence everywhere is command-line flag > environment variable > config
//! file > built-in default. The library never reads the environment itself:
//! `main` folds flags and variables into a [`Config`] with the `override_*`
//! methods, so tests build a `Config` in code and start a server in-process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::routing::{Route, RouteError};

/// Everything a server needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address for HTTP and WebSocket traffic.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The SQLite database.
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
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Path of the SQLite file; created (with the schema) when missing.
    pub path: PathBuf,
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
    /// A guest's query running longer than this is interrupted.
    pub query_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("db.sqlite3"),
            synchronous: Synchronous::Full,
            readers: 2,
            max_batch: 512,
            commit_delay_us: 0,
            busy_timeout_ms: 5_000,
            query_timeout_ms: 1_000,
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
    /// Accepted signature algorithms (HS256, HS384, HS512).
    pub algorithms: Vec<String>,
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
            algorithms: vec!["HS256".into()],
            user_id_claim: "user_id".into(),
            token_type_claim: "token_type".into(),
            access_token_type: "access".into(),
            leeway_secs: 0,
            user_query: DEFAULT_USER_QUERY.into(),
            query_param: "token".into(),
            subprotocol: None,
            access_token_lifetime_secs: 3_600,
        }
    }
}

/// The reference app's user table.
pub const DEFAULT_USER_QUERY: &str =
    "SELECT id, name, email FROM useraccount_user WHERE id = ?1 AND is_active";

/// `[layer]`
#[derive(Debug, Clone, Deserialize)]
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
}

impl Default for LayerConfig {
    fn default() -> Self {
        Self {
            kind: LayerKind::Memory,
            url: None,
            prefix: "consumer-host".into(),
            mailbox_capacity: 1_024,
            max_event_bytes: 256 * 1024,
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
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            pooling: true,
            max_instances: 10_000,
            max_wasm_stack_bytes: 512 * 1024,
            keep_versions: 5,
            watch_interval_ms: 500,
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
}

fn default_true() -> bool {
    true
}

impl ConsumerConfig {
    /// A consumer of `module` with no tables granted and default limits.
    pub fn new(module: impl Into<PathBuf>) -> Self {
        Self {
            module: module.into(),
            read: Vec::new(),
            write: Vec::new(),
            sandbox: SandboxLimits::default(),
            watch: true,
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
    /// A route pattern is malformed.
    #[error("route {path:?}: {source}")]
    Route {
        /// The pattern.
        path: String,
        /// Why.
        source: RouteError,
    },
    /// Something else is inconsistent; the text says what and how to fix it.
    #[error("{0}")]
    Invalid(String),
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
    }

    /// Checks what can be checked without touching files: routes parse and
    /// name configured consumers, limits are positive, a secret is set.
    pub fn validate(&self) -> Result<Vec<Route>, ConfigError> {
        let invalid = |text: String| Err(ConfigError::Invalid(text));
        match self.auth.secret.as_deref() {
            None | Some("") => {
                return invalid(
                    "no JWT secret: set JWT_SECRET in the environment or `secret` under [auth] \
                     (the Django app's SIMPLE_JWT SIGNING_KEY, by default its SECRET_KEY)"
                        .into(),
                );
            }
            Some(_) => {}
        }
        if self.auth.algorithms.is_empty() {
            return invalid(
                "[auth] algorithms is empty: list at least one, e.g. [\"HS256\"]".into(),
            );
        }
        for algorithm in &self.auth.algorithms {
            crate::auth::parse_algorithm(algorithm).map_err(ConfigError::Invalid)?;
        }
        for (name, value) in [
            ("[limits] max_connections", self.limits.max_connections),
            (
                "[limits] max_connections_per_user",
                self.limits.max_connections_per_user,
            ),
            (
                "[limits] handshake_timeout_ms",
                self.limits.handshake_timeout_ms as usize,
            ),
            (
                "[limits] idle_timeout_ms",
                self.limits.idle_timeout_ms as usize,
            ),
            ("[limits] max_message_bytes", self.limits.max_message_bytes),
            ("[limits] send_queue", self.limits.send_queue),
            ("[layer] mailbox_capacity", self.layer.mailbox_capacity),
            ("[layer] max_event_bytes", self.layer.max_event_bytes),
            ("[database] readers", self.database.readers),
            ("[database] max_batch", self.database.max_batch),
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
        let mut routes = Vec::with_capacity(self.routes.len());
        for route in &self.routes {
            if !self.consumers.contains_key(&route.consumer) {
                return invalid(format!(
                    "route {:?} names consumer {:?}, which has no [consumer.{}] section",
                    route.path, route.consumer, route.consumer
                ));
            }
            routes.push(
                Route::parse(&route.path, &route.consumer).map_err(|source| {
                    ConfigError::Route {
                        path: route.path.clone(),
                        source,
                    }
                })?,
            );
        }
        if self
            .admin
            .token
            .as_deref()
            .is_some_and(|token| token.len() < 16)
        {
            return invalid("[admin] token must be at least 16 characters".into());
        }
        if self.admin.listen.is_some() && self.admin.token.is_none() {
            return invalid("[admin] listen is set but no token: set [admin] token or CONSUMER_HOST_ADMIN_TOKEN".into());
        }
        for (name, consumer) in &self.consumers {
            if consumer.sandbox.memory_bytes < 64 * 1024 {
                return invalid(format!(
                    "[consumer.{name}.sandbox] memory_bytes must be at least 65536 (one wasm page)"
                ));
            }
            if consumer.sandbox.event_deadline_ms == 0 {
                return invalid(format!(
                    "[consumer.{name}.sandbox] event_deadline_ms must be at least 1"
                ));
            }
        }
        Ok(routes)
    }

    /// `--listen` / its variable.
    pub fn override_listen(&mut self, listen: Option<SocketAddr>) {
        if let Some(listen) = listen {
            self.listen = listen;
        }
    }

    /// `--db` / its variable.
    pub fn override_database(&mut self, path: Option<PathBuf>) {
        if let Some(path) = path {
            self.database.path = path;
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
        assert_eq!(config.validate().unwrap().len(), 1);
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
        let none = Config::parse(&text).unwrap().validate().unwrap_err();
        assert!(none.to_string().contains("none"), "{none}");
    }
}
