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

        let db = Database::connect(&config.database, metrics.clone())
            .await
            .with_context(|| format!("opening the database {}", config.database.location()))?;

        let auth = Authenticator::new(&config.auth)?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let layer =
            Layer::new(&config.layer, metrics.clone(), &shutdown).map_err(anyhow::Error::msg)?;
        let caps = Arc::new(Capabilities {
            db,
            layer,
            pressure: crate::delivery::Pressure::new(metrics.clone()),
            metrics,
            max_send_bytes: config.limits.max_message_bytes + SEND_HEADROOM_BYTES,
            max_event_bytes: config.layer.max_event_bytes,
            max_instances: config.runtime.max_instances,
            shutdown: shutdown.clone(),
        });
        let runtime = load_runtime(&config, caps.clone()).await?;
        // On PostgreSQL each grant is a role: made now, so a database that
        // refuses stops the start instead of a consumer's first call.
        for consumer in runtime.consumers() {
            caps.db
                .prepare_grant(consumer.grant())
                .await
                .with_context(|| format!("consumer {:?}: its database grant", consumer.name()))?;
        }

        let (listener, admin_listener) = bind(&config).await?;
        let local_addr = listener.local_addr()?;
        let admin_addr = admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let watch_interval = Duration::from_millis(config.runtime.watch_interval_ms);
        let node = Arc::new(Node::new(config, routes, auth, runtime, shutdown));
        watch::spawn_watchers(&node.runtime, watch_interval, &node.tasks, &node.shutdown);
        node.tasks.spawn(give_memory_back(node.clone()));
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
        crate::http::node_metrics(&self.node)
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

    /// Puts in force what `new` may change while serving: limits and
    /// routes (see [`crate::reload`]); `changed` names the keys of the file
    /// that differ from those in force.
    pub fn reload(&self, new: &Config, changed: &[crate::reload::Key]) -> crate::reload::Outcome {
        crate::reload::apply(&self.node, new, changed)
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
        let grace = Duration::from_secs(node.limits().shutdown_grace_secs);
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

/// How often the trimmer looks at the connection count.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Gives memory freed by connections that left back to the operating
/// system. The allocator keeps freed memory for reuse, and after a burst of
/// connections most of it stays (measured: 945 MiB at the peak, 479 MiB
/// once they had gone): when the node has a tenth fewer connections than at
/// its last peak, what is free is returned (`malloc_trim`).
async fn give_memory_back(node: Arc<Node>) {
    let mut peak = 0i64;
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            () = tokio::time::sleep(TRIM_EVERY) => {}
        }
        let open = node.caps().metrics.connections_open.get();
        peak = peak.max(open);
        if peak > 0 && open * 10 <= peak * 9 {
            let started = std::time::Instant::now();
            // SAFETY: glibc's malloc_trim only returns free memory; it is
            // safe to call at any time from any thread.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
            tracing::debug!(
                open,
                peak,
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "memory given back"
            );
            peak = open;
        }
    }
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
    let handshake_timeout = node.limits().handshake_timeout();
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
