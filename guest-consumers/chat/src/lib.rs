//! The DjangoBnB chat consumer, on the Rust SDK.
//!
//! The reference app's `ChatConsumer`, with the checks a server needs:
//!
//! - `connect`: the room is the conversation named by the `room_name` url
//!   kwarg (a UUID, in any spelling). Anonymous users, rooms that are not
//!   conversations and users who are not members are refused (HTTP 403).
//!   Members join the group `chat_<room uuid>` and are accepted.
//! - `receive`: `{"event": "chat_message", "data": {"conversation_id",
//!   "sent_to_id", "name", "body"}}` saves a `chat_conversationmessage` row
//!   (author: the logged-in user; recipient: `sent_to_id`, who must be a
//!   member), then sends a `chat.message` event to the room: durable before
//!   broadcast. The name shown is the author's name from the database, not
//!   the one the client claims. Anything malformed is answered with an error
//!   frame and nothing is written.
//! - `chat.message`: sends `{"body", "name", "id", "created_at"}`. It reads
//!   nothing but the event, so the host renders it once for every member.
//! - `host.recheck`: a member removed from the conversation since connecting
//!   is closed (4003).

use consumer_host_sdk::close;
use consumer_host_sdk::prelude::*;
use consumer_host_sdk::{error, info, warn};

mod protocol;

use protocol::{ErrorCode, Incoming};

/// The url kwarg that names the conversation (`ws/<room_name>/`).
const ROOM_KWARG: &str = "room_name";

/// The event type sent to the room (Channels' naming: `chat_message` handles it).
const CHAT_MESSAGE: &str = "chat.message";

/// What a connection keeps between events: the room's members when last
/// looked up (one lookup at connect, none per message unless someone new is
/// named). It is only a cache: the room comes from the scope, so a version
/// that kept other state (or none) before a swap serves on.
#[derive(Default, Serialize, Deserialize)]
pub struct Chat {
    /// The members' ids, as stored.
    #[serde(default)]
    members: Vec<String>,
}

impl Consumer for Chat {
    const PURE_EVENTS: &'static [&'static str] = &[CHAT_MESSAGE, "chat_message"];

    fn connect(&mut self, cx: &mut Context) -> Result {
        let Some(user) = cx.user() else {
            return refuse(cx, "anonymous connection");
        };
        let Some(room) = room_of(cx) else {
            return refuse(cx, "room_name is not a UUID");
        };
        // A database that fails is the server's problem: the handshake
        // answers 500.
        let members = members_of(cx, &room)?;
        if !members.contains(&user.id) {
            return refuse(cx, "not a member of this conversation");
        }
        cx.group_add(&group_of(&room))?;
        self.members = members;
        cx.accept();
        Ok(())
    }

    fn receive(&mut self, cx: &mut Context, message: Message) -> Result {
        if let Err(problem) = self.save_and_send(cx, message) {
            // A closed connection is not an error here: it is going away.
            let _ = cx.send_text(&protocol::error_frame(problem.code, &problem.detail));
        }
        Ok(())
    }

    fn event(&mut self, cx: &mut Context, event: Event) -> Result {
        dispatch!(self, cx, event, [chat_message])
    }

    fn recheck(&mut self, cx: &mut Context) -> Result {
        let (Some(user), Some(room)) = (cx.user(), room_of(cx)) else {
            return Ok(());
        };
        self.members = members_of(cx, &room)?;
        if !self.members.contains(&user.id) {
            info!("closing: no longer a member of the conversation");
            cx.close(close::FORBIDDEN, "no longer a member of this conversation");
        }
        Ok(())
    }
}

/// A client's message that cannot be saved, and the error frame it gets.
struct Problem {
    code: ErrorCode,
    detail: String,
}

fn problem(code: ErrorCode, detail: impl Into<String>) -> Problem {
    Problem {
        code,
        detail: detail.into(),
    }
}

impl Chat {
    fn save_and_send(
        &mut self,
        cx: &mut Context,
        message: Message,
    ) -> core::result::Result<(), Problem> {
        let Message::Text(text) = message else {
            return Err(problem(
                ErrorCode::BinaryFrame,
                "binary frames are not supported; send JSON text",
            ));
        };
        let user = cx
            .user()
            .ok_or_else(|| problem(ErrorCode::Forbidden, "not logged in"))?;
        let room =
            room_of(cx).ok_or_else(|| problem(ErrorCode::Forbidden, "room_name is not a UUID"))?;
        let Incoming::ChatMessage(chat) =
            protocol::parse_incoming(&text).map_err(|(code, detail)| problem(code, detail))?;
        if let Some(conversation) = chat.conversation_id.as_deref()
            && hex(conversation).as_deref() != Some(room.as_str())
        {
            return Err(problem(
                ErrorCode::InvalidField,
                "data.conversation_id does not name this room's conversation",
            ));
        }
        let sent_to = hex(&chat.sent_to_id)
            .ok_or_else(|| problem(ErrorCode::InvalidField, "data.sent_to_id is not a UUID"))?;
        if !self.is_member(cx, &room, &sent_to)? {
            return Err(problem(
                ErrorCode::NotAMember,
                "data.sent_to_id is not a member of this conversation",
            ));
        }
        let row = cx
            .db_insert(
                "chat_conversationmessage",
                &[
                    ("conversation_id", room.as_str().into()),
                    ("created_by_id", user.id.as_str().into()),
                    ("sent_to_id", sent_to.into()),
                    ("body", chat.body.as_str().into()),
                ],
            )
            .map_err(|err| {
                error!(
                    "saving a message failed: {}",
                    consumer_host_sdk::db::describe(&err)
                );
                problem(ErrorCode::NotSaved, "the message could not be saved")
            })?;
        let event = protocol::ChatEvent {
            kind: CHAT_MESSAGE.into(),
            body: chat.body,
            name: user.name.unwrap_or_default(),
            id: row.text("id").map(hyphenated),
            created_at: row.text("created_at").map(String::from),
        };
        cx.group_send(&group_of(&room), &event).map_err(|err| {
            error!("group-send failed: {err}");
            problem(
                ErrorCode::NotDelivered,
                "the message was saved but not delivered",
            )
        })
    }

    /// Whether `user` is a member: from the list kept at connect, else
    /// looked up again (members may have been added since).
    fn is_member(
        &mut self,
        cx: &mut Context,
        room: &str,
        user: &str,
    ) -> core::result::Result<bool, Problem> {
        if self.members.iter().any(|member| member == user) {
            return Ok(true);
        }
        self.members = members_of(cx, room).map_err(|err| {
            error!("membership lookup failed: {err}");
            problem(ErrorCode::NotSaved, "membership could not be checked")
        })?;
        Ok(self.members.iter().any(|member| member == user))
    }

    /// Renders a chat message for this member's client.
    fn chat_message(&mut self, cx: &mut Context, event: Event) -> Result {
        match event.to::<protocol::ChatEvent>() {
            // A closed connection is not an error here: it is going away.
            Ok(chat) => drop(cx.send_text(&protocol::chat_frame(&chat))),
            Err(err) => warn!("ignored a malformed chat message: {err}"),
        }
        Ok(())
    }
}

/// Refuses the handshake: HTTP 403 for the client, the reason in the log.
fn refuse(cx: &mut Context, why: &str) -> Result {
    info!("refused: {why}");
    cx.close(close::FORBIDDEN, why);
    Ok(())
}

/// The connection's conversation, as stored (from the url kwarg).
fn room_of(cx: &mut Context) -> Option<String> {
    cx.scope().url_kwarg(ROOM_KWARG).and_then(hex)
}

fn members_of(cx: &mut Context, room: &str) -> Result<Vec<String>> {
    let rows = cx.db_query(
        "SELECT user_id FROM chat_conversation_users WHERE conversation_id = ?1",
        &[room.into()],
    )?;
    Ok(rows.texts())
}

/// The room's group. The reference names it `chat_<room_name>` with the
/// hyphenated UUID the frontend sends; both spellings of the UUID name the
/// same group here.
fn group_of(room: &str) -> String {
    format!("chat_{}", hyphenated(room))
}

/// A UUID in any spelling, as Django stores it: 32 lowercase hex digits.
fn hex(text: &str) -> Option<String> {
    uuid::Uuid::try_parse(text)
        .ok()
        .map(|uuid| uuid.simple().to_string())
}

/// A UUID in any spelling, hyphenated (as clients and tokens write it).
fn hyphenated(text: &str) -> String {
    uuid::Uuid::try_parse(text)
        .map_or_else(|_| text.to_string(), |uuid| uuid.hyphenated().to_string())
}

consumer_host_sdk::export!(Chat);

#[cfg(test)]
mod tests;
