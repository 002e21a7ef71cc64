//! A server for the fuzz targets: the chat and the hostile test consumer
//! (built by `scripts/build-guests`), on a fresh database, on loopback.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use consumer_host::Server;
use consumer_host::config::{Config, ConsumerConfig, RouteConfig};
use consumer_host::testing::types::{Scope, User};

fn dist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest-consumers/dist")
}

/// The server, started on `runtime`.
pub async fn start_server() -> Server {
    let dir = std::env::temp_dir().join(format!("consumer-host-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let mut config = Config::empty();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database.path = dir.join("db.sqlite3");
    config.database.query_timeout_ms = 50;
    config.auth.secret = Some("fuzzing-secret-of-at-least-32-bytes!".into());
    config.limits.handshake_timeout_ms = 1_000;
    for (path, consumer) in [("hostile/", "hostile"), ("ws/<room_name>/", "chat")] {
        config.routes.push(RouteConfig {
            path: path.into(),
            consumer: consumer.into(),
        });
    }
    let mut chat = ConsumerConfig::new(dist().join("chat.wasm"));
    chat.read = vec!["chat_conversation_users".into()];
    chat.write = vec!["chat_conversationmessage".into()];
    config.consumers.insert("chat".into(), chat);
    let mut hostile = ConsumerConfig::new(dist().join("hostile.wasm"));
    hostile.read = vec!["chat_conversation_users".into(), "useraccount_user".into()];
    hostile.write = vec!["chat_conversationmessage".into()];
    hostile.sandbox.event_deadline_ms = 20;
    hostile.sandbox.event_wall_ms = 200;
    config.consumers.insert("hostile".into(), hostile);
    config.runtime.max_instances = 64;
    Server::start(config)
        .await
        .expect("the server starts (run scripts/build-guests first)")
}

/// A runtime with the server on it, and its address.
pub fn start_chat() -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let server = runtime.block_on(start_server());
    let addr = server.local_addr();
    // The server lives as long as the process.
    std::mem::forget(server);
    (runtime, addr)
}

/// A logged-in user's scope for the hostile consumer.
pub fn hostile_scope() -> Scope {
    Scope {
        connection_id: "1".into(),
        path: "/hostile/".into(),
        url_kwargs: Vec::new(),
        query: Vec::new(),
        user: Some(User {
            id: "9f5ba441036f4f399ea6258e3206e909".into(),
            name: Some("Alice".into()),
            email: "alice@example.com".into(),
        }),
        subprotocols: Vec::new(),
    }
}
