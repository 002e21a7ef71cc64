//! consumer-host: WebSocket consumers as WebAssembly components.
//!
//! A client connects to a routed path (`ws/<room_name>/?token=...`); the host
//! verifies the token, looks the user up, and runs the route's consumer, a
//! wasmtime component, for the connection's events: connect, receive, group
//! events, disconnect. The consumer calls back into the host to accept,
//! send, join groups, and read and write the database.
//!
//! # Modules, and which may use which
//!
//! Each layer uses only the layers below it; nothing reaches up.
//!
//! ```text
//!  cli ─────────────── the command line; the only reader of the environment
//!  server ──────────── start-up, the accept loops, graceful shutdown
//!  http ────────────── dispatch: health, metrics, admin, WebSocket routes
//!  reload ──────────── SIGHUP: what changed in the file, limits and routes swapped
//!  admin, demo, ws ─── the admin API; the chat page; the handshake and connections
//!  node ────────────── what every connection shares (routes, auth, runtime, budgets)
//!  runtime ─────────── engine, WIT bindings, host imports, sessions, deploys
//!  auth, routing ───── tokens and user lookup; Django path patterns
//!  db, layer ───────── SQLite or PostgreSQL (writers, grants); groups (memory, Redis)
//!  delivery ────────── each connection's queue towards its client; the node's pressure
//!  config, metrics, close, response ── leaves: plain data, counters,
//!                      close codes, HTTP responses
//! ```
//!
//! - [`cli`]: `serve`, `check`, `migrate`, `seed`, `token`, `deploy`, `rollback`,
//!   `versions`, `status`.
//! - [`config`]: the TOML configuration, validated up front (plain data).
//! - `server`: start-up, the accept loop, graceful shutdown ([`Server`]).
//! - `http`: health, metrics, dispatch of upgrade requests.
//! - `admin`: the admin API: status, deploy, list and roll back versions.
//! - `demo`: the chat page at `/` and its small JSON API (`[demo]`, loopback only).
//! - `reload`: what a reload (SIGHUP) may change while serving: limits, routes.
//! - `ws`: the handshake in stages, then one task per socket (its loop,
//!   writer and rate limits).
//! - `node`: what every connection of a node shares.
//! - `runtime`: the engine, the WIT bindings (0.2.0 and 0.1.0), the host
//!   imports (one file per interface, on a narrow context), sessions,
//!   pure-event rendering, deploys and the module-file watcher.
//! - `auth`: simplejwt access tokens and the user lookup.
//! - `routing`: Django-style path patterns, matched in linear time.
//! - `db`: SQLite or PostgreSQL: migrations, the group-commit writers,
//!   readers and pools, grants (an authorizer; roles), seeding.
//! - `layer`: the channel layer (groups): in memory, or Redis.
//! - `delivery`: the bounded queue towards each client, which tells a client
//!   that does not read from a node under pressure.
//! - `metrics`, `close`, `response`: counters, close codes, HTTP responses.
//!
//! Only [`cli`] reads the environment: it folds flags and variables into a
//! [`config::Config`], so tests start servers in-process on `127.0.0.1:0`.
//! The public surface is [`Server`], [`config`], [`Authenticator`] (to mint
//! tokens), [`seed`] and [`cli::main`]; the `test-support` feature opens the
//! internals to this repository's tests and benchmarks.

/// Declares internal modules: crate-private, so the compiler sees dead code,
/// and public with the `test-support` feature for tests and benchmarks.
macro_rules! internal {
    ($($(#[$doc:meta])* $module:ident;)*) => {
        $(
            $(#[$doc])*
            #[cfg(feature = "test-support")]
            pub mod $module;
            $(#[$doc])*
            #[cfg(not(feature = "test-support"))]
            pub(crate) mod $module;
        )*
    };
}

pub mod cli;
pub mod config;

internal! {
    /// The admin API.
    admin;
    /// simplejwt tokens and the user lookup.
    auth;
    /// The chat page for a first try in a browser.
    demo;
    /// Close codes.
    close;
    /// Queues towards clients, and the node's pressure.
    delivery;
    /// SQLite or PostgreSQL.
    db;
    /// HTTP dispatch.
    http;
    /// The channel layer.
    layer;
    /// Counters.
    metrics;
    /// What every connection of a node shares.
    node;
    /// HTTP responses.
    response;
    /// What a configuration reload may change.
    reload;
    /// Django path patterns.
    routing;
    /// The WebAssembly runtime.
    runtime;
    /// Start-up and shutdown.
    server;
    /// WebSocket connections.
    ws;
}

#[cfg(feature = "test-support")]
pub mod testing;

pub use auth::{Authenticator, User};
pub use config::Config;
pub use db::seed;
pub use server::Server;
