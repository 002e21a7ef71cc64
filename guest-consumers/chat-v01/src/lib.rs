//! The DjangoBnB chat consumer, as built for the consumer world 0.1.0 on
//! raw `wit_bindgen` bindings. The chat itself now lives in `../chat` (0.2.0,
//! on the SDK); this one stays so the tests can deploy a 0.1.0 component
//! beside it and swap the two into each other under traffic.
//!
//! The reference app's `ChatConsumer`, as a component:
//!
//! - `connect`: the room is the conversation named by the `room_name` url kwarg
//!   (a UUID, hyphenated or as 32 hex digits). Anonymous users, rooms that are
//!   not conversations and users who are not members are refused (HTTP 403).
//!   Members join the group `chat_<room uuid>` and are accepted.
//! - `receive`: `{"event": "chat_message", "data": {"conversation_id",
//!   "sent_to_id", "name", "body"}}` saves a `chat_conversationmessage` row
//!   (author: the authenticated user; recipient: `sent_to_id`, who must be a
//!   member) and then sends a `chat.message` event to the room. The name shown
//!   is the author's name from the database, not the one the client claims.
//!   Anything malformed is answered with an error frame and nothing is written.
//! - `handle-event` `chat.message`: sends `{"body", "name", "id", "created_at"}`.
//! - `disconnect`: leaves the room's group.
//!
//! The instance may be replaced between any two events, so nothing lives in
//! globals: the room comes from the scope, the member list is cached in the
//! host-held connection state.

wit_bindgen::generate!({
    path: "../../wit/legacy/0.1.0",
    world: "consumer",
});

mod protocol;
mod uuid;

use consumer_host::consumer::database::{self, Value};
use consumer_host::consumer::logging::{Level, log};
use consumer_host::consumer::types::Scope;
use consumer_host::consumer::{connection, groups, state};
use protocol::{ErrorCode, Incoming};

/// The consumer. It has no fields: everything it needs comes from the host.
struct Chat;

/// The url kwarg that names the conversation, as in the reference routing
/// (`ws/<room_name>/`).
const ROOM_KWARG: &str = "room_name";

/// The event type this consumer sends to its group (Channels' naming: the
/// dot maps to the `chat_message` handler).
const CHAT_MESSAGE_EVENT: &str = "chat.message";

impl Guest for Chat {
    /// The chat's message handler renders the event alone: the host may run
    /// it once per message and send the frame to every member.
    fn describe() -> ConsumerInfo {
        ConsumerInfo {
            pure_events: vec![CHAT_MESSAGE_EVENT.into(), "chat_message".into()],
        }
    }

    fn connect() {
        let scope = connection::get_scope();
        let Some(user) = scope.user.as_ref() else {
            return refuse("anonymous connection");
        };
        let Some(room) = room_of(&scope) else {
            return refuse("room_name is not a UUID");
        };
        let members = match conversation_members(&room.hex) {
            Ok(members) => members,
            Err(err) => {
                log(Level::Error, &format!("membership lookup failed: {err:?}"));
                return connection::close(1011, "database unavailable");
            }
        };
        if !members.iter().any(|member| member == &user.id) {
            return refuse("not a member of this conversation");
        }
        if let Err(err) = groups::group_add(&room.group()) {
            log(Level::Error, &format!("group-add failed: {err:?}"));
            return connection::close(1011, "group unavailable");
        }
        remember_members(&members);
        connection::accept(None);
    }

    fn receive(message: Message) {
        if let Err(error) = handle_receive(&connection::get_scope(), message) {
            send_text(&protocol::error_frame(error.code, &error.detail));
        }
    }

    fn handle_event(event: String) {
        match protocol::parse_chat_event(&event) {
            Ok(Some(chat)) => send_text(&protocol::chat_frame(&chat)),
            Ok(None) => log(Level::Warn, "ignored an event of an unknown type"),
            Err(err) => log(Level::Warn, &format!("ignored a malformed event: {err}")),
        }
    }

    fn disconnect(_code: u16) {
        if let Some(room) = room_of(&connection::get_scope()) {
            // The host leaves every group on disconnect anyway; leaving here
            // keeps the consumer correct on hosts that do not.
            let _ = groups::group_discard(&room.group());
        }
    }
}

/// A problem with a client's message, answered with an error frame.
struct ReceiveError {
    code: ErrorCode,
    detail: String,
}

impl ReceiveError {
    fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

fn handle_receive(scope: &Scope, message: Message) -> Result<(), ReceiveError> {
    let text = match message {
        Message::Text(text) => text,
        Message::Binary(_) => {
            return Err(ReceiveError::new(
                ErrorCode::BinaryFrame,
                "binary frames are not supported; send JSON text",
            ));
        }
    };
    let user = scope
        .user
        .as_ref()
        .ok_or_else(|| ReceiveError::new(ErrorCode::Forbidden, "not logged in"))?;
    let room = room_of(scope)
        .ok_or_else(|| ReceiveError::new(ErrorCode::Forbidden, "room_name is not a UUID"))?;

    let incoming = protocol::parse_incoming(&text)
        .map_err(|(code, detail)| ReceiveError::new(code, detail))?;
    let Incoming::ChatMessage(chat) = incoming;

    if let Some(conversation) = chat.conversation_id.as_deref()
        && uuid::to_hex(conversation).as_deref() != Some(room.hex.as_str())
    {
        return Err(ReceiveError::new(
            ErrorCode::InvalidField,
            "data.conversation_id does not name this room's conversation",
        ));
    }
    let sent_to = uuid::to_hex(&chat.sent_to_id).ok_or_else(|| {
        ReceiveError::new(ErrorCode::InvalidField, "data.sent_to_id is not a UUID")
    })?;
    if !is_member(&room.hex, &sent_to)? {
        return Err(ReceiveError::new(
            ErrorCode::NotAMember,
            "data.sent_to_id is not a member of this conversation",
        ));
    }

    let row = database::db_insert(
        "chat_conversationmessage",
        &[
            ("conversation_id".into(), Value::Text(room.hex.clone())),
            ("created_by_id".into(), Value::Text(user.id.clone())),
            ("sent_to_id".into(), Value::Text(sent_to)),
            ("body".into(), Value::Text(chat.body.clone())),
        ],
    )
    .map_err(|err| {
        log(Level::Error, &format!("saving a message failed: {err:?}"));
        ReceiveError::new(ErrorCode::NotSaved, "the message could not be saved")
    })?;

    let event = protocol::chat_event(&protocol::ChatEvent {
        kind: CHAT_MESSAGE_EVENT.into(),
        body: chat.body,
        name: user.name.clone().unwrap_or_default(),
        id: text_column(&row, "id").map(|id| uuid::hyphenate(&id)),
        created_at: text_column(&row, "created_at"),
    });
    groups::group_send(&room.group(), &event).map_err(|err| {
        log(Level::Error, &format!("group-send failed: {err:?}"));
        ReceiveError::new(
            ErrorCode::NotDelivered,
            "the message was saved but not delivered",
        )
    })
}

/// The conversation a connection is about.
struct Room {
    /// The conversation id as the database stores it.
    hex: String,
}

impl Room {
    /// The group of the room's connections. The reference names it
    /// `chat_<room_name>` with the hyphenated UUID the frontend sends; both
    /// spellings of the UUID name the same group here.
    fn group(&self) -> String {
        format!("chat_{}", uuid::hyphenate(&self.hex))
    }
}

fn room_of(scope: &Scope) -> Option<Room> {
    let (_, value) = scope.url_kwargs.iter().find(|(key, _)| key == ROOM_KWARG)?;
    Some(Room {
        hex: uuid::to_hex(value)?,
    })
}

fn refuse(why: &str) {
    log(Level::Info, &format!("refused: {why}"));
    connection::close(4003, why);
}

fn conversation_members(room_hex: &str) -> Result<Vec<String>, database::DbError> {
    let rows = database::db_query(
        "SELECT user_id FROM chat_conversation_users WHERE conversation_id = ?1",
        &[Value::Text(room_hex.into())],
    )?;
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(Value::Text(id)) => Some(id),
            _ => None,
        })
        .collect())
}

/// Caches the member list in the connection state: one lookup at connect,
/// none per message unless someone new is named.
fn remember_members(members: &[String]) {
    let _ = state::set_state(members.join(",").as_bytes());
}

fn is_member(room_hex: &str, user_hex: &str) -> Result<bool, ReceiveError> {
    let cached = state::get_state().unwrap_or_default();
    if cached
        .split(|byte| *byte == b',')
        .any(|member| member == user_hex.as_bytes())
    {
        return Ok(true);
    }
    // Members may have been added since connect: look again before refusing.
    let members = conversation_members(room_hex).map_err(|err| {
        log(Level::Error, &format!("membership lookup failed: {err:?}"));
        ReceiveError::new(ErrorCode::NotSaved, "membership could not be checked")
    })?;
    remember_members(&members);
    Ok(members.iter().any(|member| member == user_hex))
}

fn text_column(row: &[(String, Value)], name: &str) -> Option<String> {
    row.iter().find_map(|(column, value)| match value {
        Value::Text(text) if column == name => Some(text.clone()),
        _ => None,
    })
}

fn send_text(text: &str) {
    // A closed connection is not an error here: the host is already tearing it down.
    let _ = connection::send(&Message::Text(text.into()));
}

export!(Chat);
