//! What every connection of a node shares: configuration, routes, the token
//! verifier, the runtime (and through it the database and the layer), the
//! connection and user budgets, and the shutdown signal.
//!
//! `[limits]` and the routes can change while the node serves (a reload,
//! see [`crate::reload`]): they sit behind atomic pointers and are read
//! through [`Node::limits`] and [`Node::routes`], never from `config`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::{Config, Limits};
use crate::layer::ConnId;
use crate::routing::Route;
use crate::runtime::{Capabilities, Runtime};
use crate::ws::rate::TokenBucket;

/// The node's shared state; one `Arc` of it is cloned into every connection.
pub struct Node {
    /// The configuration the node started with. Its `[limits]` and routes
    /// may have been reloaded since: read those with [`Node::limits`] and
    /// [`Node::routes`].
    pub config: Config,
    /// `[limits]` in force (swapped whole by a reload).
    limits: ArcSwap<Limits>,
    /// Compiled routes in force, in order (swapped whole by a reload).
    routes: ArcSwap<Vec<Route>>,
    /// Token verification.
    pub auth: Arc<Authenticator>,
    /// Consumers and their versions.
    pub runtime: Arc<Runtime>,
    /// Cancelled when the node shuts down; every connection's kick is a child.
    pub shutdown: CancellationToken,
    /// Connection tasks, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// One permit per open WebSocket (`[limits] max_connections`).
    pub connection_slots: Arc<Semaphore>,
    users: Arc<Users>,
    next_connection: AtomicU64,
}

/// Open connections and the shared message budget of each user with one.
#[derive(Default)]
struct Users {
    // A std lock: held for one map update, never across an `.await`.
    by_id: Mutex<HashMap<String, Arc<UserEntry>>>,
}

/// One user's connections and message budget.
pub struct UserEntry {
    /// Open connections (changed under the map's lock).
    connections: std::sync::atomic::AtomicUsize,
    /// Messages the user may still send now, over all their connections.
    /// A std lock: held to take one token, never across an `.await`.
    pub budget: Mutex<TokenBucket>,
}

/// One of a user's connection slots; gives it back when dropped.
pub struct UserSlot {
    user: String,
    entry: Arc<UserEntry>,
    users: Arc<Users>,
}

impl UserSlot {
    /// The user's shared entry (their message budget).
    pub fn entry(&self) -> &Arc<UserEntry> {
        &self.entry
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut by_id = self.users.by_id.lock().expect("not poisoned");
        if self.entry.connections.fetch_sub(1, Ordering::Relaxed) == 1 {
            by_id.remove(&self.user);
        }
    }
}

impl Node {
    /// Assembles the node.
    pub fn new(
        config: Config,
        routes: Vec<Route>,
        auth: Arc<Authenticator>,
        runtime: Arc<Runtime>,
        shutdown: CancellationToken,
    ) -> Self {
        let slots = config.limits.max_connections;
        Self {
            limits: ArcSwap::from_pointee(config.limits.clone()),
            routes: ArcSwap::from_pointee(routes),
            config,
            auth,
            runtime,
            shutdown,
            tasks: TaskTracker::new(),
            connection_slots: Arc::new(Semaphore::new(slots)),
            users: Arc::new(Users::default()),
            next_connection: AtomicU64::new(1),
        }
    }

    /// `[limits]` in force: what a handshake or a new connection reads.
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.load_full()
    }

    /// The routes in force.
    pub fn routes(&self) -> Arc<Vec<Route>> {
        self.routes.load_full()
    }

    /// Puts new limits and routes in force (a reload); connections already
    /// open keep what they read when they opened.
    pub fn swap_reloadable(&self, limits: Limits, routes: Option<Vec<Route>>) {
        self.limits.store(Arc::new(limits));
        if let Some(routes) = routes {
            self.routes.store(Arc::new(routes));
        }
    }

    /// What host imports use: the database, the layer, the counters.
    pub fn caps(&self) -> &Arc<Capabilities> {
        self.runtime.caps()
    }

    /// Takes one of `user`'s connection slots, or `None` when the user is
    /// at `[limits] max_connections_per_user`.
    pub fn user_slot(&self, user: &str) -> Option<UserSlot> {
        let limits = self.limits();
        let mut by_id = self.users.by_id.lock().expect("not poisoned");
        let entry = by_id.entry(user.to_string()).or_insert_with(|| {
            Arc::new(UserEntry {
                connections: 0.into(),
                budget: Mutex::new(TokenBucket::new(
                    limits.user_messages_per_second,
                    limits.user_message_burst,
                )),
            })
        });
        if entry.connections.load(Ordering::Relaxed) >= limits.max_connections_per_user {
            return None;
        }
        entry.connections.fetch_add(1, Ordering::Relaxed);
        Some(UserSlot {
            user: user.to_string(),
            entry: entry.clone(),
            users: self.users.clone(),
        })
    }

    /// A new connection id, unique on this node.
    pub fn next_connection_id(&self) -> ConnId {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}
