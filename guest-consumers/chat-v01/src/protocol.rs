//! The reference wire protocol, as JSON.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// What a client may send.
pub enum Incoming {
    /// `{"event": "chat_message", "data": {...}}`
    ChatMessage(ChatMessage),
}

/// The `data` of a `chat_message`.
#[derive(Deserialize)]
pub struct ChatMessage {
    /// The conversation the client believes it writes to; the room decides,
    /// this must agree with it when present.
    pub conversation_id: Option<String>,
    /// The member the message is for.
    pub sent_to_id: String,
    /// The text.
    pub body: String,
}

#[derive(Deserialize)]
struct Envelope {
    event: Option<String>,
    data: Option<serde_json::Value>,
}

/// The kinds of error frame a client can get.
#[derive(Clone, Copy)]
pub enum ErrorCode {
    /// The frame was binary.
    BinaryFrame,
    /// The text was not JSON.
    InvalidJson,
    /// The JSON was not a known event.
    UnknownEvent,
    /// A field was missing.
    MissingField,
    /// A field had the wrong type or value.
    InvalidField,
    /// `sent_to_id` is not a member of the conversation.
    NotAMember,
    /// The connection has no user or room.
    Forbidden,
    /// The database refused or failed.
    NotSaved,
    /// Saved but the broadcast failed.
    NotDelivered,
}

impl ErrorCode {
    fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BinaryFrame => "binary_frame",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::NotAMember => "not_a_member",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotSaved => "not_saved",
            ErrorCode::NotDelivered => "not_delivered",
        }
    }
}

/// Parses a client's text frame.
pub fn parse_incoming(text: &str) -> Result<Incoming, (ErrorCode, String)> {
    let envelope: Envelope = serde_json::from_str(text)
        .map_err(|err| (ErrorCode::InvalidJson, format!("not a JSON object: {err}")))?;
    match envelope.event.as_deref() {
        Some("chat_message") => {}
        Some(other) => {
            return Err((
                ErrorCode::UnknownEvent,
                format!("unknown event {other:?}; expected \"chat_message\""),
            ));
        }
        None => return Err((ErrorCode::MissingField, "missing \"event\"".into())),
    }
    let data = envelope
        .data
        .ok_or_else(|| (ErrorCode::MissingField, "missing \"data\"".to_string()))?;
    if !data.is_object() {
        return Err((ErrorCode::InvalidField, "\"data\" must be an object".into()));
    }
    for field in ["conversation_id", "sent_to_id", "body"] {
        if data.get(field).is_none_or(serde_json::Value::is_null) {
            return Err((ErrorCode::MissingField, format!("missing \"data.{field}\"")));
        }
    }
    let chat: ChatMessage = serde_json::from_value(data)
        .map_err(|err| (ErrorCode::InvalidField, format!("bad \"data\": {err}")))?;
    Ok(Incoming::ChatMessage(chat))
}

/// The error frame: `{"type": "error", "code", "detail"}`. Reference clients
/// look for `body` and `name` and ignore this.
pub fn error_frame(code: ErrorCode, detail: &str) -> String {
    #[derive(Serialize)]
    struct ErrorFrame<'a> {
        r#type: &'static str,
        code: &'static str,
        detail: &'a str,
    }
    serde_json::to_string(&ErrorFrame {
        r#type: "error",
        code: code.as_str(),
        detail,
    })
    .expect("serialising a struct of strings cannot fail")
}

/// The event sent to the room's group and back to each member.
#[derive(Serialize, Deserialize)]
pub struct ChatEvent {
    /// `chat.message`
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub body: String,
    /// The author's name from the database.
    pub name: String,
    /// The saved message's id, hyphenated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
    /// When the message was saved, as Django writes datetimes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created_at: Option<String>,
}

/// Serialises the event for `group-send`.
pub fn chat_event(event: &ChatEvent) -> String {
    serde_json::to_string(event).expect("serialising a struct of strings cannot fail")
}

/// A group event as received, borrowing from the event's text.
#[derive(Deserialize)]
pub struct ChatEventRef<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    body: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    created_at: Option<Cow<'a, str>>,
}

/// Why a group event could not be rendered.
#[derive(Debug)]
pub enum EventError {
    /// Not JSON of the expected shape.
    Json(serde_json::Error),
    /// A chat message without `body` or `name`.
    Incomplete,
}

impl core::fmt::Display for EventError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EventError::Json(err) => write!(f, "{err}"),
            EventError::Incomplete => f.write_str("a chat message needs body and name"),
        }
    }
}

/// Parses a group event, once and without copying its strings: `Ok(None)`
/// when it is not a chat message.
pub fn parse_chat_event(event: &str) -> Result<Option<ChatEventRef<'_>>, EventError> {
    let parsed: ChatEventRef<'_> = serde_json::from_str(event).map_err(EventError::Json)?;
    if parsed.kind != "chat.message" && parsed.kind != "chat_message" {
        return Ok(None);
    }
    if parsed.body.is_none() || parsed.name.is_none() {
        return Err(EventError::Incomplete);
    }
    Ok(Some(parsed))
}

/// The tag of this build, if it is a tagged one (see the crate's features).
const VERSION_TAG: Option<&str> = if cfg!(feature = "version-tag-v2") {
    Some("v2")
} else {
    None
};

/// The frame each member receives: `{"body", "name", "id", "created_at"}`.
pub fn chat_frame(event: &ChatEventRef<'_>) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        body: &'a str,
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        created_at: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<&'static str>,
    }
    let frame = Frame {
        body: event.body.as_deref().unwrap_or_default(),
        name: event.name.as_deref().unwrap_or_default(),
        id: event.id.as_deref(),
        created_at: event.created_at.as_deref(),
        version: VERSION_TAG,
    };
    serde_json::to_string(&frame).expect("serialising a struct of strings cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_reference_message() {
        let text = r#"{"event":"chat_message","data":{"conversation_id":"22de0f4f-c84e-47be-889c-d61b856492bd","sent_to_id":"c189712e-871d-45de-8f11-1a3b1de97c30","name":"Alice","body":"Hi Bob"}}"#;
        let Ok(Incoming::ChatMessage(chat)) = parse_incoming(text) else {
            panic!("not parsed")
        };
        assert_eq!(chat.body, "Hi Bob");
        assert_eq!(chat.sent_to_id, "c189712e-871d-45de-8f11-1a3b1de97c30");
    }

    #[test]
    fn names_what_is_wrong() {
        let cases = [
            ("not json", "invalid_json"),
            ("[]", "invalid_json"),
            (r#"{"data":{}}"#, "missing_field"),
            (r#"{"event":"typing","data":{}}"#, "unknown_event"),
            (r#"{"event":"chat_message"}"#, "missing_field"),
            (
                r#"{"event":"chat_message","data":{"conversation_id":"x","sent_to_id":"y"}}"#,
                "missing_field",
            ),
            (
                r#"{"event":"chat_message","data":{"conversation_id":"x","sent_to_id":"y","body":7}}"#,
                "invalid_field",
            ),
        ];
        for (text, expected) in cases {
            match parse_incoming(text) {
                Err((code, _)) => assert_eq!(code.as_str(), expected, "{text}"),
                Ok(_) => panic!("{text} parsed"),
            }
        }
    }

    #[test]
    fn the_event_round_trips_into_the_frame() {
        let event = chat_event(&ChatEvent {
            kind: "chat.message".into(),
            body: "hé \"quoted\"".into(),
            name: "Alice".into(),
            id: Some("7992fb26-4fc4-40d8-bde8-a6c68ec40aad".into()),
            created_at: Some("2026-11-25 17:22:22.535044".into()),
        });
        let parsed = parse_chat_event(&event).unwrap().unwrap();
        let frame: serde_json::Value = serde_json::from_str(&chat_frame(&parsed)).unwrap();
        assert_eq!(frame["body"], "hé \"quoted\"");
        assert_eq!(frame["name"], "Alice");
        assert_eq!(frame["created_at"], "2026-11-25 17:22:22.535044");
        assert!(parse_chat_event(r#"{"type":"other"}"#).unwrap().is_none());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any text from a client is parsed or refused with an error code,
        /// never a panic.
        #[test]
        fn arbitrary_text(text in ".{0,300}") {
            let _ = parse_incoming(&text);
        }

        /// JSON that looks like the protocol, with any values.
        #[test]
        fn protocol_shaped_json(event in "[a-z_]{0,14}", body in ".{0,50}", to in ".{0,40}", with_data in any::<bool>()) {
            let text = if with_data {
                serde_json::json!({"event": event, "data": {"conversation_id": to, "sent_to_id": to, "body": body}}).to_string()
            } else {
                serde_json::json!({"event": event, "body": body}).to_string()
            };
            match parse_incoming(&text) {
                Ok(Incoming::ChatMessage(chat)) => {
                    prop_assert_eq!(event, "chat_message");
                    prop_assert_eq!(chat.body, body);
                }
                Err(_) => {}
            }
        }

        /// Any group event is handled or ignored, never a panic, and a chat
        /// event round-trips into the frame.
        #[test]
        fn group_events(body in ".{0,80}", name in ".{0,20}") {
            let event = chat_event(&ChatEvent { kind: "chat.message".into(), body: body.clone(), name, id: None, created_at: None });
            let parsed = parse_chat_event(&event).unwrap().unwrap();
            let frame: serde_json::Value = serde_json::from_str(&chat_frame(&parsed)).unwrap();
            prop_assert_eq!(frame["body"].as_str().unwrap(), body.as_str());
        }
    }
}
