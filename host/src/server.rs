//! The server: start-up, the accept loop, graceful shutdown.
//!
//! [`Server::start`] opens the database (migrating it), builds the channel
//! layer, the token verifier and the runtime (compiling every consumer),
//! binds the listener and serves HTTP/1.1 on it with upgrades.
//! [`Server::shutdown`] stops accepting, closes every WebSocket with 1001 (each
//! consumer's `disconnect` runs), waits for the connection tasks, then lets the
//! database writer finish what is queued.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::db::Database;
use crate::http::Listener;
use crate::layer::Layer;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::runtime::conn::{Capabilities, ConnState, SEND_HEADROOM_BYTES};
use crate::runtime::{Runtime, session, watch};

/// A running node.
pub struct Server {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    node: Arc<Node>,
    accept_loops: Vec<tokio::task::JoinHandle<()>>,
}

/// Makes ring the process's TLS provider (Redis over `rediss://`, PostgreSQL
/// with `sslmode`); the first call wins, later ones change nothing.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Server {
    /// Starts a node from a configuration.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let routes = crate::routing::compile(&config.routes)?;
        if let Some(why) = config.weak_secret() {
            tracing::warn!(
                "THE JWT SECRET IS NOT SAFE: {why}. Anyone who knows it can log in as any \
                 user. Allowed only because this server listens on loopback; set a random \
                 secret of 32 bytes or more (JWT_SECRET) before listening anywhere else."
            );
        }
        install_tls_provider();
        let metrics = Arc::new(Metrics::default());
        metrics
            .auth_failures
            .register(crate::auth::AuthError::LABELS);

        let db_config = config.database.clone();
        let db_metrics = metrics.clone();
        let db = tokio::task::spawn_blocking(move || Database::open(&db_config, db_metrics))
            .await
            .context("opening the database panicked")??;

        let auth = Authenticator::new(&config.auth)?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let layer =
            Layer::new(&config.layer, metrics.clone(), &shutdown).map_err(anyhow::Error::msg)?;
        let caps = Arc::new(Capabilities {
            db,
            layer,
            metrics,
            max_send_bytes: config.limits.max_message_bytes + SEND_HEADROOM_BYTES,
            max_event_bytes: config.layer.max_event_bytes,
            max_instances: config.runtime.max_instances,
            shutdown: shutdown.clone(),
        });
        let runtime = load_runtime(&config, caps.clone()).await?;

        let (listener, admin_listener) = bind(&config).await?;
        let local_addr = listener.local_addr()?;
        let admin_addr = admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let watch_interval = Duration::from_millis(config.runtime.watch_interval_ms);
        let node = Arc::new(Node::new(config, routes, auth, runtime, shutdown));
        watch::spawn_watchers(&node.runtime, watch_interval, &node.tasks, &node.shutdown);
        tracing::info!(address = %local_addr, "listening");
        let mut accept_loops = vec![tokio::spawn(accept_loop(
            listener,
            node.clone(),
            Listener::Main,
        ))];
        if let Some(admin_listener) = admin_listener {
            tracing::info!(address = ?admin_addr, "admin API listening");
            accept_loops.push(tokio::spawn(accept_loop(
                admin_listener,
                node.clone(),
                Listener::Admin,
            )));
        }
        Ok(Self {
            local_addr,
            admin_addr,
            node,
            accept_loops,
        })
    }

    /// The address the node listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin API's own address, when `[admin] listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The node's counters, as `/metrics` serves them.
    pub fn metrics_text(&self) -> String {
        let caps = self.node.caps();
        let mut text = caps.metrics.render();
        caps.layer.render_metrics(&mut text);
        text
    }

    /// The SHA-256 of a consumer's current version, and of those kept for
    /// rollback (newest first); `None` for an unknown consumer.
    pub fn versions(&self, consumer: &str) -> Option<(String, Vec<String>)> {
        let consumer = self.node.runtime.consumer(consumer)?;
        Some((
            consumer.current().sha256.clone(),
            consumer
                .previous()
                .iter()
                .map(|version| version.sha256.clone())
                .collect(),
        ))
    }

    /// The node, for tests that look inside.
    #[cfg(feature = "test-support")]
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Closes every connection with 1001, waits for them (up to the
    /// configured grace period), and finishes the database's queued writes.
    pub async fn shutdown(self) {
        let node = self.node;
        tracing::info!(
            connections = node.caps().metrics.connections_open.get(),
            "shutting down"
        );
        node.shutdown.cancel();
        for accept_loop in self.accept_loops {
            let _ = accept_loop.await;
        }
        node.tasks.close();
        let grace = Duration::from_secs(node.config.limits.shutdown_grace_secs);
        if tokio::time::timeout(grace, node.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "connections still open after the grace period; closing the database anyway"
            );
        }
        let db = node.caps().db.clone();
        let _ = tokio::task::spawn_blocking(move || db.close()).await;
        tracing::info!("shut down");
    }
}

/// Compiles every consumer, then instantiates each once before any client
/// comes: a module that cannot serve stops the start.
async fn load_runtime(config: &Config, caps: Arc<Capabilities>) -> anyhow::Result<Arc<Runtime>> {
    let max_memory = config
        .consumers
        .values()
        .map(|consumer| consumer.sandbox.memory_bytes)
        .max()
        .unwrap_or(16 * 1024 * 1024);
    let mut runtime = Runtime::new(&config.runtime, max_memory, caps.clone())?;
    for (name, consumer) in &config.consumers {
        runtime
            .load_consumer(name, consumer)
            .await
            .with_context(|| format!("loading consumer {name:?}"))?;
    }
    for consumer in runtime.consumers() {
        let probe = ConnState::probe(consumer.clone(), caps.clone());
        session::trial(consumer, probe, &consumer.current())
            .await
            .with_context(|| format!("consumer {:?} does not instantiate", consumer.name()))?;
    }
    Ok(Arc::new(runtime))
}

async fn bind(config: &Config) -> anyhow::Result<(TcpListener, Option<TcpListener>)> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin = match config.admin.listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} ([admin] listen)"))?,
        ),
        None => None,
    };
    Ok((listener, admin))
}

async fn accept_loop(listener: TcpListener, node: Arc<Node>, kind: Listener) {
    loop {
        let accepted = tokio::select! {
            () = node.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                node.tasks
                    .spawn(serve_http(stream, peer, node.clone(), kind));
            }
            Err(err) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_http(stream: TcpStream, peer: SocketAddr, node: Arc<Node>, kind: Listener) {
    let _ = stream.set_nodelay(true);
    let handshake_timeout = node.config.limits.handshake_timeout();
    let service_node = node.clone();
    let service =
        service_fn(move |request| crate::http::handle(service_node.clone(), request, peer, kind));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "HTTP connection ended with an error");
            }
        }
        () = node.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(handshake_timeout, connection).await;
        }
    }
}
