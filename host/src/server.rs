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
use crate::runtime::Runtime;
use crate::services::Services;

/// A running node.
pub struct Server {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    services: Arc<Services>,
    accept_loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts a node from a validated configuration.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let routes = config.validate()?;
        let metrics = Arc::new(Metrics::default());

        let db_config = config.database.clone();
        let db_metrics = metrics.clone();
        let db = tokio::task::spawn_blocking(move || Database::open(&db_config, db_metrics))
            .await
            .context("opening the database panicked")??;

        let auth = Authenticator::new(&config.auth).map_err(anyhow::Error::msg)?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let layer =
            Layer::new(&config.layer, metrics.clone(), &shutdown).map_err(anyhow::Error::msg)?;
        let max_memory = config
            .consumers
            .values()
            .map(|consumer| consumer.sandbox.memory_bytes)
            .max()
            .unwrap_or(16 * 1024 * 1024);
        let mut runtime = Runtime::new(&config.runtime, max_memory)?;
        for (name, consumer) in &config.consumers {
            runtime
                .load_consumer(name, consumer)
                .await
                .with_context(|| format!("loading consumer {name:?}"))?;
        }

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let admin_listener = match config.admin.listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address} ([admin] listen)"))?,
            ),
            None => None,
        };
        let admin_addr = admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let services = Arc::new(Services::new(
            config, routes, db, layer, auth, runtime, metrics, shutdown,
        ));
        // Every consumer's module must also instantiate before any client comes.
        for consumer in services.runtime.consumers() {
            let probe = crate::runtime::host::ConnState::probe(consumer.clone(), services.clone());
            crate::runtime::session::trial(
                services.runtime.engine(),
                consumer,
                probe,
                &consumer.current(),
            )
            .await
            .with_context(|| format!("consumer {:?} does not instantiate", consumer.name()))?;
        }
        crate::runtime::watch::spawn_watchers(&services);
        tracing::info!(address = %local_addr, "listening");
        let mut accept_loops = vec![tokio::spawn(accept_loop(
            listener,
            services.clone(),
            Listener::Main,
        ))];
        if let Some(admin_listener) = admin_listener {
            tracing::info!(address = ?admin_addr, "admin API listening");
            accept_loops.push(tokio::spawn(accept_loop(
                admin_listener,
                services.clone(),
                Listener::Admin,
            )));
        }
        Ok(Self {
            local_addr,
            admin_addr,
            services,
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

    /// The node's shared state (metrics, database, runtime).
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Closes every connection with 1001, waits for them (up to the
    /// configured grace period), and finishes the database's queued writes.
    pub async fn shutdown(self) {
        let services = self.services;
        tracing::info!(
            connections = services.metrics.connections_open.get(),
            "shutting down"
        );
        services.shutdown.cancel();
        for accept_loop in self.accept_loops {
            let _ = accept_loop.await;
        }
        services.tasks.close();
        let grace = Duration::from_secs(services.config.limits.shutdown_grace_secs);
        if tokio::time::timeout(grace, services.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "connections still open after the grace period; closing the database anyway"
            );
        }
        let db = services.db.clone();
        let _ = tokio::task::spawn_blocking(move || db.close()).await;
        tracing::info!("shut down");
    }
}

async fn accept_loop(listener: TcpListener, services: Arc<Services>, kind: Listener) {
    loop {
        let accepted = tokio::select! {
            () = services.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                services
                    .tasks
                    .spawn(serve_http(stream, peer, services.clone(), kind));
            }
            Err(err) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_http(stream: TcpStream, peer: SocketAddr, services: Arc<Services>, kind: Listener) {
    let _ = stream.set_nodelay(true);
    let handshake_timeout = services.config.limits.handshake_timeout();
    let service_state = services.clone();
    let service =
        service_fn(move |request| crate::http::handle(service_state.clone(), request, peer, kind));
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
        () = services.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(handshake_timeout, connection).await;
        }
    }
}
