//! {{name}}: a consumer-host consumer.
//!
//! Clients connected to the same room (the url kwarg `room` of the route,
//! e.g. `ws/<room>/`) hear each other's messages: `{"text": "..."}` in,
//! `{"text", "from"}` out to everyone in the room.

use consumer_host_sdk::prelude::*;

/// What the connection keeps between events (the host holds it; the
/// instance may be replaced between any two events).
#[derive(Default, Serialize, Deserialize)]
pub struct Room {
    /// The group of the room.
    group: String,
    /// Messages this connection sent.
    sent: u32,
}

impl Consumer for Room {
    /// `room.message` is rendered from the event alone: the host runs it
    /// once per message for all members instead of once per member.
    const PURE_EVENTS: &'static [&'static str] = &["room.message"];

    fn connect(&mut self, cx: &mut Context) -> Result {
        if cx.user().is_none() {
            // Refused: the client gets HTTP 403.
            cx.close(consumer_host_sdk::close::FORBIDDEN, "log in first");
            return Ok(());
        }
        let room = cx.scope().url_kwarg("room").unwrap_or("lobby").to_string();
        let safe: String = room
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
            .take(90)
            .collect();
        self.group = format!("room.{safe}");
        cx.group_add(&self.group)?;
        cx.accept();
        Ok(())
    }

    fn receive_json(&mut self, cx: &mut Context, content: Json) -> Result {
        let Some(text) = content.get("text").and_then(Json::as_str).filter(|text| !text.is_empty()) else {
            return cx.send_json(&json!({ "error": "send {\"text\": \"...\"}" }));
        };
        self.sent += 1;
        let from = cx.user().and_then(|user| user.name).unwrap_or_else(|| "someone".into());
        cx.group_send(&self.group, &json!({ "type": "room.message", "text": text, "from": from }))
    }

    fn event(&mut self, cx: &mut Context, event: Event) -> Result {
        dispatch!(self, cx, event, [room_message])
    }
}

impl Room {
    fn room_message(&mut self, cx: &mut Context, event: Event) -> Result {
        cx.send_json(&json!({ "text": event.get("text"), "from": event.get("from") }))
    }
}

consumer_host_sdk::export!(Room);

#[cfg(test)]
mod tests {
    use consumer_host_sdk::prelude::*;
    use consumer_host_sdk::testing::TestHost;

    use super::Room;

    #[test]
    fn members_of_a_room_hear_each_other() {
        let host = TestHost::new();
        let mut alice = host.communicator::<Room>("/ws/tea/").url_kwarg("room", "tea").user("1", Some("Alice"), "");
        let mut bob = host.communicator::<Room>("/ws/tea/").url_kwarg("room", "tea").user("2", Some("Bob"), "");
        let mut elsewhere = host.communicator::<Room>("/ws/coffee/").url_kwarg("room", "coffee").user("3", None, "");
        assert!(alice.connect().accepted);
        assert!(bob.connect().accepted);
        assert!(elsewhere.connect().accepted);

        alice.send_json(&json!({ "text": "hello" }));
        for member in [&mut alice, &mut bob] {
            assert_eq!(member.receive_json().unwrap(), json!({ "text": "hello", "from": "Alice" }));
        }
        assert!(elsewhere.receive_nothing());
        assert_eq!(alice.state().unwrap().sent, 1);
    }

    #[test]
    fn anonymous_clients_are_refused() {
        let host = TestHost::new();
        let mut anonymous = host.communicator::<Room>("/ws/tea/").url_kwarg("room", "tea");
        assert!(!anonymous.connect().accepted);
    }
}
