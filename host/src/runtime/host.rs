//! The host side of the consumer world's imports.
//!
//! [`HostState`] is a consumer instance's `Store` data. Everything that must
//! outlive an instance (the connection's queues, groups, state blob, the
//! handshake outcome) is in [`ConnState`], which moves from store to store
//! when an instance is replaced or evicted.
//!
//! Errors a guest can handle are WIT variants; a host `Err` traps the guest
//! and is kept for misbehaviour (sending past the per-event budget, an
//! invalid close code, accepting an unoffered subprotocol).

use std::sync::Arc;

use hyper_tungstenite::tungstenite::Message as WsMessage;
use tokio::sync::mpsc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Consumer;
use super::bindings::consumer_host::consumer::{
    connection, database, groups, logging, state, types,
};
use crate::db::{self, DbError};
use crate::layer::{self, ConnId, Event, GroupEvent, Kick, Mailbox};
use crate::services::Services;

/// The guest did something the host does not allow; this traps it.
#[derive(Debug, thiserror::Error)]
#[error("consumer misbehaved: {0}")]
pub struct Misbehaved(pub String);

/// Where the handshake stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// `connect` has not decided yet.
    Pending,
    /// Accepted, with the chosen subprotocol.
    Accepted(Option<String>),
    /// Refused with `close` before `accept`.
    Refused,
}

/// A connection's outgoing queue, bounded (`[limits] send_queue`).
pub type Outbound = mpsc::Sender<WsMessage>;

/// What a connection owns across instances.
pub struct ConnState {
    /// This connection.
    pub id: ConnId,
    /// Its consumer.
    pub consumer: Arc<Consumer>,
    /// The node.
    pub services: Arc<Services>,
    /// What the consumer's `get-scope` import returns.
    pub scope: types::Scope,
    /// The handshake's outcome.
    pub handshake: Handshake,
    /// Subprotocols the client offered (a token entry removed).
    pub offered_subprotocols: Vec<String>,
    /// Messages towards the client.
    pub outbound: Outbound,
    /// This connection's inbox, registered with the layer on `group-add`.
    pub mailbox: Mailbox,
    /// Asks this connection to close.
    pub kick: Kick,
    /// Groups this connection is in.
    pub groups: Vec<String>,
    /// The consumer's state blob.
    pub state: Option<Vec<u8>>,
    /// A close the consumer asked for: (code, reason).
    pub close_request: Option<(u16, String)>,
    /// Sends during the current event: (frames, bytes).
    sent_this_event: (u32, usize),
    /// Epoch ticks the current event has run through.
    pub(super) ticks_this_event: u64,
}

impl ConnState {
    /// A connection's state before its first event.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ConnId,
        consumer: Arc<Consumer>,
        services: Arc<Services>,
        scope: types::Scope,
        offered_subprotocols: Vec<String>,
        outbound: Outbound,
        mailbox: Mailbox,
        kick: Kick,
    ) -> Self {
        Self {
            id,
            consumer,
            services,
            scope,
            handshake: Handshake::Pending,
            offered_subprotocols,
            outbound,
            mailbox,
            kick,
            groups: Vec::new(),
            state: None,
            close_request: None,
            sent_this_event: (0, 0),
            ticks_this_event: 0,
        }
    }

    /// A connection with no client (id 0, empty scope, in no group), for an
    /// instance the host runs for itself: what it sends goes to `outbound`.
    pub fn detached(consumer: Arc<Consumer>, services: Arc<Services>, outbound: Outbound) -> Self {
        let kick = Kick::child_of(&services.shutdown);
        let (mailbox, _) = Mailbox::new(0, 1, kick.clone());
        Self::new(
            0,
            consumer,
            services,
            empty_scope(),
            Vec::new(),
            outbound,
            mailbox,
            kick,
        )
    }

    /// A detached connection whose sends go nowhere: for instantiating a
    /// module once to check it.
    pub fn probe(consumer: Arc<Consumer>, services: Arc<Services>) -> Self {
        let (outbound, _) = mpsc::channel(1);
        Self::detached(consumer, services, outbound)
    }

    /// Resets the per-event budgets.
    pub(super) fn begin_event(&mut self) {
        self.sent_this_event = (0, 0);
        self.ticks_this_event = 0;
    }

    /// Queues a message towards the client. A full queue means the client
    /// cannot keep up: it is closed with 4008 and counted, never buffered
    /// without bound.
    pub fn push(&mut self, message: WsMessage) -> Result<(), connection::SendError> {
        if self.kick.is_kicked() || self.close_request.is_some() {
            return Err(connection::SendError::Closed);
        }
        match self.outbound.try_send(message) {
            Ok(()) => {
                self.services.metrics.messages_sent.inc();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.services.metrics.slow_client_closes.inc();
                tracing::warn!(
                    connection = self.id,
                    "send queue full: closing a client that cannot keep up"
                );
                self.kick.kick(layer::CLOSE_SLOW_CLIENT);
                Err(connection::SendError::Closed)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(connection::SendError::Closed),
        }
    }

    /// Leaves every group this connection is in.
    pub fn leave_all_groups(&mut self) {
        for group in self.groups.drain(..) {
            self.services.layer.group_discard(&group, self.id);
        }
    }
}

/// The scope of something that is not a client's connection (a deploy's
/// trial instance, a rendering instance): no path, no user.
pub fn empty_scope() -> types::Scope {
    types::Scope {
        connection_id: String::new(),
        path: String::new(),
        url_kwargs: Vec::new(),
        query: Vec::new(),
        user: None,
        subprotocols: Vec::new(),
    }
}

/// A consumer instance's store data.
pub struct HostState {
    /// The connection it serves.
    pub conn: ConnState,
    /// WASI, made on first use: most consumers never import it.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    /// Enforces the memory cap and remembers an overrun.
    pub(super) limiter: MemoryLimiter,
}

impl HostState {
    /// Store data for a new instance serving `conn`.
    pub fn new(conn: ConnState) -> Self {
        let memory_bytes = conn.consumer.config().sandbox.memory_bytes;
        Self {
            conn,
            wasi: None,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                memory_bytes,
                exceeded: false,
            },
        }
    }
}

/// Caps one instance's linear memory; an overrun traps (the connection is
/// closed with 1011) rather than letting `memory.grow` fail quietly.
pub struct MemoryLimiter {
    memory_bytes: usize,
    /// Set when the guest tried to grow past the cap.
    pub exceeded: bool,
}

/// A guest tried to grow its memory past the cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} bytes exceeded")]
pub struct MemoryExceeded(pub usize);

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.exceeded = true;
            return Err(wasmtime::Error::new(MemoryExceeded(self.memory_bytes)));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        32
    }
    fn tables(&self) -> usize {
        32
    }
    fn memories(&self) -> usize {
        4
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let ctx = self.wasi.get_or_insert_with(|| WasiCtx::builder().build());
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

fn misbehaved<T>(text: String) -> wasmtime::Result<T> {
    Err(wasmtime::Error::new(Misbehaved(text)))
}

impl types::Host for HostState {}

impl connection::Host for HostState {
    async fn get_scope(&mut self) -> wasmtime::Result<types::Scope> {
        Ok(self.conn.scope.clone())
    }

    async fn accept(&mut self, subprotocol: Option<String>) -> wasmtime::Result<()> {
        let conn = &mut self.conn;
        if conn.handshake != Handshake::Pending {
            return Ok(());
        }
        if let Some(chosen) = &subprotocol
            && !conn
                .offered_subprotocols
                .iter()
                .any(|offered| offered == chosen)
        {
            return misbehaved(format!(
                "accept chose subprotocol {chosen:?}, which the client did not offer"
            ));
        }
        conn.handshake = Handshake::Accepted(subprotocol);
        Ok(())
    }

    async fn send(
        &mut self,
        message: types::Message,
    ) -> wasmtime::Result<Result<(), connection::SendError>> {
        let conn = &mut self.conn;
        let sandbox = &conn.consumer.config().sandbox;
        let (message, len) = match message {
            types::Message::Text(text) => {
                let len = text.len();
                (WsMessage::text(text), len)
            }
            types::Message::Binary(bytes) => {
                let len = bytes.len();
                (WsMessage::binary(bytes), len)
            }
        };
        conn.sent_this_event.0 += 1;
        conn.sent_this_event.1 += len;
        if conn.sent_this_event.0 > sandbox.max_sends_per_event
            || conn.sent_this_event.1 > sandbox.max_send_bytes_per_event
        {
            return misbehaved(format!(
                "one event sent more than {} messages or {} bytes",
                sandbox.max_sends_per_event, sandbox.max_send_bytes_per_event
            ));
        }
        let limit = conn.services.config.limits.max_message_bytes;
        if len > limit {
            return Ok(Err(connection::SendError::TooLarge(limit as u32)));
        }
        Ok(conn.push(message))
    }

    async fn close(&mut self, code: u16, reason: String) -> wasmtime::Result<()> {
        if code != 1000 && !(3000..=4999).contains(&code) {
            return misbehaved(format!(
                "close code {code} is reserved; use 1000 or 3000-4999"
            ));
        }
        let conn = &mut self.conn;
        if conn.handshake == Handshake::Pending {
            conn.handshake = Handshake::Refused;
        }
        if conn.close_request.is_none() {
            conn.close_request = Some((code, truncate_reason(reason)));
        }
        Ok(())
    }
}

/// A close reason fits in 123 bytes (RFC 6455: the frame's payload is at
/// most 125 bytes, two of them the code).
fn truncate_reason(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

impl groups::Host for HostState {
    async fn group_add(
        &mut self,
        group: String,
    ) -> wasmtime::Result<Result<(), groups::GroupError>> {
        if let Err(err) = check_group(&group) {
            return Ok(Err(err));
        }
        let conn = &mut self.conn;
        if !conn.groups.contains(&group) {
            conn.services.layer.group_add(&group, &conn.mailbox).await;
            conn.groups.push(group);
        }
        Ok(Ok(()))
    }

    async fn group_discard(
        &mut self,
        group: String,
    ) -> wasmtime::Result<Result<(), groups::GroupError>> {
        if let Err(err) = check_group(&group) {
            return Ok(Err(err));
        }
        let conn = &mut self.conn;
        if let Some(at) = conn.groups.iter().position(|joined| *joined == group) {
            conn.groups.swap_remove(at);
            conn.services.layer.group_discard(&group, conn.id);
        }
        Ok(Ok(()))
    }

    async fn group_send(
        &mut self,
        group: String,
        event: String,
    ) -> wasmtime::Result<Result<(), groups::GroupError>> {
        if let Err(err) = check_group(&group) {
            return Ok(Err(err));
        }
        let services = &self.conn.services;
        let limit = services.config.layer.max_event_bytes;
        if event.len() > limit {
            return Ok(Err(groups::GroupError::TooLarge(limit as u32)));
        }
        let kind = match check_event(&event) {
            Ok(kind) => kind,
            Err(why) => return Ok(Err(groups::GroupError::InvalidEvent(why))),
        };
        let event: Event = GroupEvent::new(event, kind);
        services.layer.group_send(&group, &event);
        services.metrics.group_sends.inc();
        Ok(Ok(()))
    }
}

/// A group name Channels would accept.
fn check_group(group: &str) -> Result<(), groups::GroupError> {
    layer::validate_group_name(group)
        .map_err(|err| groups::GroupError::InvalidName(err.to_string()))
}

/// An event is a JSON object with a string `type`; returns the type.
fn check_event(event: &str) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    match serde_json::from_str::<Typed<'_>>(event) {
        Ok(Typed { kind: Some(kind) }) => Ok(kind.into_owned()),
        Ok(Typed { kind: None }) => Err("the event has no string \"type\"".into()),
        Err(err) => Err(format!("the event is not a JSON object: {err}")),
    }
}

fn to_db(value: database::Value) -> db::Value {
    match value {
        database::Value::Null => db::Value::Null,
        database::Value::Integer(i) => db::Value::Integer(i),
        database::Value::Real(f) => db::Value::Real(f),
        database::Value::Text(s) => db::Value::Text(s),
        database::Value::Blob(b) => db::Value::Blob(b),
    }
}

fn from_db(value: db::Value) -> database::Value {
    match value {
        db::Value::Null => database::Value::Null,
        db::Value::Integer(i) => database::Value::Integer(i),
        db::Value::Real(f) => database::Value::Real(f),
        db::Value::Text(s) => database::Value::Text(s),
        db::Value::Blob(b) => database::Value::Blob(b),
    }
}

fn db_error(err: DbError) -> database::DbError {
    match err {
        DbError::AccessDenied(text) => database::DbError::AccessDenied(text),
        DbError::NoSuchTable(text) => database::DbError::NoSuchTable(text),
        DbError::Constraint(text) => database::DbError::Constraint(text),
        DbError::Invalid(text) => database::DbError::Invalid(text),
        DbError::Timeout => database::DbError::Timeout,
        DbError::Failed(text) => database::DbError::Failed(text),
        DbError::Closed => database::DbError::Failed("the database is shutting down".into()),
    }
}

impl database::Host for HostState {
    async fn db_insert(
        &mut self,
        table: String,
        row: Vec<(String, database::Value)>,
    ) -> wasmtime::Result<Result<Vec<(String, database::Value)>, database::DbError>> {
        let conn = &self.conn;
        let row = row
            .into_iter()
            .map(|(column, value)| (column, to_db(value)))
            .collect();
        let result = conn
            .services
            .db
            .insert(conn.consumer.grant().clone(), table, row)
            .await;
        Ok(result
            .map(|written| {
                written
                    .into_iter()
                    .map(|(column, value)| (column, from_db(value)))
                    .collect()
            })
            .map_err(db_error))
    }

    async fn db_query(
        &mut self,
        sql: String,
        params: Vec<database::Value>,
    ) -> wasmtime::Result<Result<database::Rows, database::DbError>> {
        let conn = &self.conn;
        let params = params.into_iter().map(to_db).collect();
        let result = conn
            .services
            .db
            .query(conn.consumer.grant().clone(), sql, params)
            .await;
        Ok(result
            .map(|rows| database::Rows {
                columns: rows.columns,
                rows: rows
                    .rows
                    .into_iter()
                    .map(|row| row.into_iter().map(from_db).collect())
                    .collect(),
            })
            .map_err(db_error))
    }
}

impl state::Host for HostState {
    async fn get_state(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.conn.state.clone())
    }

    async fn set_state(&mut self, value: Vec<u8>) -> wasmtime::Result<Result<(), u32>> {
        let limit = self.conn.consumer.config().sandbox.max_state_bytes;
        if value.len() > limit {
            return Ok(Err(limit as u32));
        }
        self.conn.state = Some(value);
        Ok(Ok(()))
    }
}

/// Longest log line a consumer may write; the rest is cut.
const MAX_LOG_BYTES: usize = 4096;

impl logging::Host for HostState {
    async fn log(&mut self, level: logging::Level, mut message: String) -> wasmtime::Result<()> {
        if message.len() > MAX_LOG_BYTES {
            let mut end = MAX_LOG_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let consumer = self.conn.consumer.name();
        let connection = self.conn.id;
        match level {
            logging::Level::Trace => tracing::trace!(consumer, connection, "{message}"),
            logging::Level::Debug => tracing::debug!(consumer, connection, "{message}"),
            logging::Level::Info => tracing::info!(consumer, connection, "{message}"),
            logging::Level::Warn => tracing::warn!(consumer, connection, "{message}"),
            logging::Level::Error => tracing::error!(consumer, connection, "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_must_be_typed_objects() {
        assert!(check_event(r#"{"type":"chat.message","body":"x"}"#).is_ok());
        assert!(check_event(r#"{"body":"x"}"#).is_err());
        assert!(check_event(r#"{"type":7}"#).is_err());
        assert!(check_event("[1]").is_err());
        assert!(check_event("nope").is_err());
    }

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = truncate_reason(long);
        assert!(cut.len() <= 123);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
