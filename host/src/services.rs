//! What every connection of a node shares: configuration, database, channel
//! layer, token verifier, runtime, metrics and the shutdown signal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::db::Database;
use crate::layer::{ConnId, Layer};
use crate::metrics::Metrics;
use crate::routing::Route;
use crate::runtime::Runtime;

/// The node's shared state; one `Arc` of it is cloned into every connection.
pub struct Services {
    /// The configuration the node started with.
    pub config: Config,
    /// Compiled routes, in order.
    pub routes: Vec<Route>,
    /// The database.
    pub db: Database,
    /// The channel layer.
    pub layer: Layer,
    /// Token verification.
    pub auth: Arc<Authenticator>,
    /// Consumers and their versions.
    pub runtime: Runtime,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the node shuts down; every connection's kick is a child.
    pub shutdown: CancellationToken,
    /// Connection tasks, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// One permit per open WebSocket (`[limits] max_connections`).
    pub connection_slots: Arc<Semaphore>,
    /// Open connections per user id (`[limits] max_connections_per_user`).
    /// A std lock: held for one map update, never across an `.await`.
    user_connections: Arc<Mutex<HashMap<String, usize>>>,
    next_connection: AtomicU64,
}

/// One of a user's connection slots; gives it back when dropped.
pub struct UserSlot {
    user: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("not poisoned");
        if let Some(count) = counts.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

impl Services {
    /// Assembles the services.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        routes: Vec<Route>,
        db: Database,
        layer: Layer,
        auth: Arc<Authenticator>,
        runtime: Runtime,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let slots = config.limits.max_connections;
        Self {
            config,
            routes,
            db,
            layer,
            auth,
            runtime,
            metrics,
            shutdown,
            tasks: TaskTracker::new(),
            connection_slots: Arc::new(Semaphore::new(slots)),
            user_connections: Arc::new(Mutex::new(HashMap::new())),
            next_connection: AtomicU64::new(1),
        }
    }

    /// Takes one of `user`'s connection slots, or `None` when the user is
    /// at `[limits] max_connections_per_user`.
    pub fn user_slot(&self, user: &str) -> Option<UserSlot> {
        let mut counts = self.user_connections.lock().expect("not poisoned");
        let count = counts.entry(user.to_string()).or_insert(0);
        if *count >= self.config.limits.max_connections_per_user {
            return None;
        }
        *count += 1;
        Some(UserSlot {
            user: user.to_string(),
            counts: self.user_connections.clone(),
        })
    }

    /// A new connection id, unique on this node.
    pub fn next_connection_id(&self) -> ConnId {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}
