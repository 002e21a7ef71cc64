//! consumer-host: WebSocket consumers as WebAssembly components.
//!
//! A client connects to a routed path (`ws/<room_name>/?token=...`); the host
//! verifies the token, looks the user up, and runs the route's consumer, a
//! wasmtime component, for the connection's events: connect, receive, group
//! events, disconnect. The consumer calls back into the host to accept,
//! send, join groups, and read and write the database.
//!
//! Modules, one per concept:
//!
//! - [`cli`]: the command line (the only module that reads the environment).
//! - [`config`]: the TOML configuration, validated up front.
//! - [`server`]: start-up, the accept loop, graceful shutdown.
//! - [`http`]: health, metrics, dispatch of upgrade requests.
//! - [`admin`]: the admin API: deploy, list and roll back consumer versions.
//! - [`ws`]: the WebSocket handshake and the per-connection tasks.
//! - [`auth`]: simplejwt access tokens and the user lookup.
//! - [`routing`]: Django-style path patterns.
//! - [`layer`]: the channel layer (groups).
//! - [`db`]: SQLite: migrations, the group-commit writer, readers, grants, seeding.
//! - [`runtime`]: the engine, the WIT bindings, host imports, per-connection
//!   sessions, deploys (hot swap) and the module-file watcher.
//! - [`metrics`]: counters served at `/metrics`.
//! - [`services`]: what every connection of a node shares.
//!
//! Only [`cli`] reads the environment: it folds flags and
//! variables into a [`config::Config`], so tests start servers in-process on
//! `127.0.0.1:0`.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod http;
pub mod layer;
pub mod metrics;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod services;
pub mod ws;

pub use config::Config;
pub use server::Server;
