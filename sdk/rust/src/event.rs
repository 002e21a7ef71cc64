//! Events: what a consumer hears of its groups (and of the host).

use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::{Error, Result};

/// An event sent to one of the connection's groups: a JSON object with a
/// string `type`. Host events have types starting with `host.`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    kind: String,
    content: Json,
}

impl Event {
    /// Parses an event as `handle-event` delivers it.
    pub fn parse(json: &str) -> Result<Self> {
        let content: Json = serde_json::from_str(json)?;
        let kind = content
            .get("type")
            .and_then(Json::as_str)
            .ok_or_else(|| Error::msg("an event without a string \"type\""))?
            .to_string();
        Ok(Self { kind, content })
    }

    /// Its `type`, e.g. `chat.message`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The whole object.
    pub fn content(&self) -> &Json {
        &self.content
    }

    /// A field of it.
    pub fn get(&self, field: &str) -> Option<&Json> {
        self.content.get(field)
    }

    /// The object as a typed value.
    pub fn to<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_value(self.content.clone())?)
    }

    /// The name of the method that handles it, as Channels makes it:
    /// `chat.message` → `chat_message`.
    pub fn handler_name(&self) -> String {
        self.kind.replace('.', "_")
    }

    /// Whether the host sent it (`host.recheck`...).
    pub fn is_host_event(&self) -> bool {
        self.kind.starts_with("host.")
    }

    /// What [`crate::dispatch!`] does with an event no method handles: a
    /// warning in the log (nothing for the host's own events).
    pub fn unhandled(&self) -> Result {
        if !self.is_host_event() {
            crate::warn!("no handler for event type {:?}; ignored", self.kind);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_their_handlers() {
        let event = Event::parse(r#"{"type":"chat.message","body":"hi"}"#).unwrap();
        assert_eq!(event.kind(), "chat.message");
        assert_eq!(event.handler_name(), "chat_message");
        assert_eq!(event.get("body").unwrap(), "hi");
        assert!(!event.is_host_event());
        assert!(Event::parse(r#"{"body":"hi"}"#).is_err());
        assert!(Event::parse("nope").is_err());
        assert!(
            Event::parse(r#"{"type":"host.recheck"}"#)
                .unwrap()
                .is_host_event()
        );
    }
}
