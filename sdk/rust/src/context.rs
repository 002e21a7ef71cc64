//! What a handler can do: the connection, its scope, groups, the database.

use serde::Serialize;

use crate::db::{self, DbError, Row, Rows, Value};
use crate::host::{self, GroupError, Message, SendError};
use crate::{Error, Result};

/// The connection an event is for, as the host knows it (Channels' scope).
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// Identifies this connection on its node (Channels' `channel_name`).
    pub connection_id: String,
    /// The request path, e.g. `/ws/22de0f4f-c84e-47be-889c-d61b856492bd/`.
    pub path: String,
    /// What the route captured, e.g. `("room_name", "22de...")`.
    pub url_kwargs: Vec<(String, String)>,
    /// The query string's pairs, percent-decoded, the token removed.
    pub query: Vec<(String, String)>,
    /// The logged-in user, or none for an anonymous connection.
    pub user: Option<User>,
    /// The subprotocols the client offered.
    pub subprotocols: Vec<String>,
}

/// A logged-in user.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// The primary key as stored (32 hex digits for a Django UUID key).
    pub id: String,
    /// The display name, if any.
    pub name: Option<String>,
    /// The e-mail address (empty when unknown).
    pub email: String,
}

impl Scope {
    /// A url kwarg by name.
    pub fn url_kwarg(&self, name: &str) -> Option<&str> {
        self.url_kwargs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A query-string value by name.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl From<host::Scope> for Scope {
    fn from(scope: host::Scope) -> Self {
        Self {
            connection_id: scope.connection_id,
            path: scope.path,
            url_kwargs: scope.url_kwargs,
            query: scope.query,
            user: scope.user.map(|user| User {
                id: user.id,
                name: user.name,
                email: user.email,
            }),
            subprotocols: scope.subprotocols,
        }
    }
}

/// What a handler acts through. The scope is asked of the host the first
/// time it is needed in an event, and kept for the rest of it.
#[derive(Default)]
pub struct Context {
    scope: Option<Scope>,
}

impl Context {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The connection's scope.
    pub fn scope(&mut self) -> &Scope {
        self.scope
            .get_or_insert_with(|| Scope::from(host::get_scope()))
    }

    /// The logged-in user, or none for an anonymous connection.
    pub fn user(&mut self) -> Option<User> {
        self.scope().user.clone()
    }

    /// Accepts the connection (during `connect`); without it the client is
    /// refused with HTTP 403.
    pub fn accept(&mut self) {
        host::accept(None);
    }

    /// Accepts the connection with one of the subprotocols the client offered.
    pub fn accept_subprotocol(&mut self, subprotocol: &str) {
        host::accept(Some(subprotocol));
    }

    /// Closes the connection with `code` (1000 or 3000-4999, see
    /// [`crate::close`]) and a reason. During `connect`, this refuses the
    /// client with HTTP 403.
    pub fn close(&mut self, code: u16, reason: &str) {
        host::close(code, reason);
    }

    /// Sends a text message to the client.
    pub fn send_text(&mut self, text: &str) -> core::result::Result<(), SendError> {
        host::send(&Message::Text(text.to_string()))
    }

    /// Sends a binary message to the client.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> core::result::Result<(), SendError> {
        host::send(&Message::Binary(bytes.to_vec()))
    }

    /// Sends a value as a JSON text message.
    pub fn send_json(&mut self, value: &impl Serialize) -> Result {
        let text = serde_json::to_string(value)?;
        Ok(self.send_text(&text)?)
    }

    /// Adds this connection to a group.
    pub fn group_add(&mut self, group: &str) -> core::result::Result<(), GroupError> {
        host::group_add(group)
    }

    /// Removes this connection from a group.
    pub fn group_discard(&mut self, group: &str) -> core::result::Result<(), GroupError> {
        host::group_discard(group)
    }

    /// Sends an event (a value that serialises to a JSON object with a
    /// string `type`) to every member of a group, this connection too if it
    /// is one.
    pub fn group_send(&mut self, group: &str, event: &impl Serialize) -> Result {
        let event = serde_json::to_value(event)?;
        if event
            .get("type")
            .and_then(serde_json::Value::as_str)
            .is_none()
        {
            return Err(Error::msg("a group event needs a string \"type\""));
        }
        Ok(host::group_send(group, &event.to_string())?)
    }

    /// Inserts a row and returns it as written (see [`crate::db`]).
    pub fn db_insert(
        &mut self,
        table: &str,
        row: &[(&str, Value)],
    ) -> core::result::Result<Row, DbError> {
        db::insert(table, row)
    }

    /// Runs one read-only statement with bound parameters (`?1`, `?2`...).
    pub fn db_query(&mut self, sql: &str, params: &[Value]) -> core::result::Result<Rows, DbError> {
        db::query(sql, params)
    }
}
