//! The SDK's behaviour, through the test harness: state kept between
//! events, events dispatched by type, JSON in and out, pure events, errors
//! closing the one connection, rechecks.

use consumer_host_sdk::prelude::*;
use consumer_host_sdk::testing::TestHost;

/// A room: members join the group named by the url kwarg `room`, messages
/// go to everyone, each member counts what it sent.
#[derive(Default, Serialize, Deserialize)]
struct Room {
    room: String,
    sent: u32,
    banned: bool,
}

impl Consumer for Room {
    const PURE_EVENTS: &'static [&'static str] = &["room.message"];

    fn connect(&mut self, cx: &mut Context) -> Result {
        let Some(room) = cx.scope().url_kwarg("room").map(String::from) else {
            cx.close(4003, "no room");
            return Ok(());
        };
        if cx.user().is_none() {
            cx.close(4003, "log in first");
            return Ok(());
        }
        cx.group_add(&room)?;
        self.room = room;
        cx.accept();
        Ok(())
    }

    fn receive_json(&mut self, cx: &mut Context, content: Json) -> Result {
        match content["command"].as_str() {
            Some("fail") => Err(Error::msg("asked to fail")),
            Some("panic") => panic!("asked to panic"),
            Some("save") => {
                let row = cx.db_insert(
                    "notes",
                    &[("body", content["body"].as_str().unwrap_or("").into())],
                )?;
                cx.send_json(&json!({ "saved": row.text("id") }))
            }
            Some("count") => {
                let rows = cx.db_query(
                    "SELECT count(*) FROM notes WHERE body = ?1",
                    &[content["body"].as_str().unwrap_or("").into()],
                )?;
                cx.send_json(
                    &json!({ "count": rows.iter().next().and_then(|row| row.integer("count(*)")) }),
                )
            }
            _ => {
                self.sent += 1;
                let name = cx.user().and_then(|user| user.name).unwrap_or_default();
                cx.group_send(
                    &self.room,
                    &json!({
                        "type": "room.message",
                        "text": content["text"],
                        "from": name,
                        "nth": self.sent,
                    }),
                )?;
                cx.group_send(&self.room, &json!({ "type": "room.seen", "by": name }))
            }
        }
    }

    fn event(&mut self, cx: &mut Context, event: Event) -> Result {
        dispatch!(self, cx, event, [room_message, room_seen])
    }

    fn recheck(&mut self, cx: &mut Context) -> Result {
        if cx.scope().query("banned").is_some() {
            self.banned = true;
            cx.close(4003, "banned");
        }
        Ok(())
    }
}

impl Room {
    fn room_message(&mut self, cx: &mut Context, event: Event) -> Result {
        cx.send_json(&json!({ "text": event.get("text"), "from": event.get("from"), "nth": event.get("nth") }))
    }

    fn room_seen(&mut self, _cx: &mut Context, _event: Event) -> Result {
        Ok(())
    }
}

fn host() -> TestHost {
    let host = TestHost::new();
    host.execute("CREATE TABLE notes (id char(32) NOT NULL PRIMARY KEY, body text NOT NULL, created_at datetime NOT NULL)");
    host
}

#[test]
fn members_hear_each_other_and_state_is_kept() {
    let host = host();
    let mut alice = host
        .communicator::<Room>("/r/1/")
        .url_kwarg("room", "r1")
        .user("a", Some("Alice"), "a@x");
    let mut bob = host
        .communicator::<Room>("/r/1/")
        .url_kwarg("room", "r1")
        .user("b", Some("Bob"), "b@x");
    assert!(alice.connect().accepted);
    assert!(bob.connect().accepted);
    assert_eq!(host.group_size("r1"), 2);
    for n in 1..=3 {
        alice.send_json(&json!({ "text": format!("hi {n}") }));
        for member in [&mut alice, &mut bob] {
            let heard = member.receive_json().unwrap();
            assert_eq!(
                heard,
                json!({ "text": format!("hi {n}"), "from": "Alice", "nth": n })
            );
        }
    }
    assert!(bob.receive_nothing());
    // The count lives in the host-held state, not in the instance.
    assert_eq!(alice.state().unwrap().sent, 3);
    assert_eq!(alice.state().unwrap().room, "r1");
    bob.disconnect(1000);
    assert_eq!(host.group_size("r1"), 1);
}

#[test]
fn connect_refuses_with_a_close() {
    let host = host();
    let mut anonymous = host.communicator::<Room>("/r/1/").url_kwarg("room", "r1");
    let connected = anonymous.connect();
    assert!(!connected.accepted);
    assert_eq!(connected.close_code, Some(4003));
    assert_eq!(
        host.group_size("r1"),
        0,
        "a refused connection leaves no member"
    );
}

#[test]
fn the_database_fills_ids_and_dates() {
    let host = host();
    let mut alice = host
        .communicator::<Room>("/r/1/")
        .url_kwarg("room", "r1")
        .user("a", None, "");
    alice.connect();
    alice.send_json(&json!({ "command": "save", "body": "noted" }));
    let saved = alice.receive_json().unwrap();
    assert_eq!(saved["saved"].as_str().unwrap().len(), 32);
    alice.send_json(&json!({ "command": "count", "body": "noted" }));
    assert_eq!(alice.receive_json().unwrap(), json!({ "count": 1 }));
    assert_eq!(
        host.count("SELECT count(*) FROM notes WHERE length(created_at) = 26"),
        1
    );
}

#[test]
fn an_error_or_a_panic_closes_that_connection_only() {
    let host = host();
    let mut alice = host
        .communicator::<Room>("/r/1/")
        .url_kwarg("room", "r1")
        .user("a", Some("Alice"), "");
    let mut bob = host
        .communicator::<Room>("/r/1/")
        .url_kwarg("room", "r1")
        .user("b", Some("Bob"), "");
    alice.connect();
    bob.connect();
    alice.send_json(&json!({ "command": "fail" }));
    assert_eq!(alice.closed().map(|(code, _)| code), Some(1011));
    assert!(
        host.logs()
            .iter()
            .any(|(_, line)| line.contains("asked to fail"))
    );
    bob.send_json(&json!({ "command": "panic" }));
    assert_eq!(bob.closed().map(|(code, _)| code), Some(1011));
    assert_eq!(host.group_size("r1"), 0);
    // Text that is not JSON is an error for a JSON consumer, as in Channels.
    let mut carol = host
        .communicator::<Room>("/r/1/")
        .url_kwarg("room", "r1")
        .user("c", None, "");
    carol.connect();
    carol.send_text("not json");
    assert_eq!(carol.closed().map(|(code, _)| code), Some(1011));
}

#[test]
fn rechecks_reach_the_consumer() {
    let host = host();
    let mut member = host
        .communicator::<Room>("/r/1/")
        .url_kwarg("room", "r1")
        .user("a", None, "");
    let mut banned = host
        .communicator::<Room>("/r/1/")
        .url_kwarg("room", "r1")
        .query("banned", "1")
        .user("b", None, "");
    member.connect();
    banned.connect();
    member.recheck();
    banned.recheck();
    assert_eq!(member.closed(), None);
    assert_eq!(banned.closed().map(|(code, _)| code), Some(4003));
}

/// A consumer whose pure handler (wrongly) reads its scope.
#[derive(Default, Serialize, Deserialize)]
struct Impure;

impl Consumer for Impure {
    const PURE_EVENTS: &'static [&'static str] = &["ping"];

    fn connect(&mut self, cx: &mut Context) -> Result {
        cx.group_add("all")?;
        cx.accept();
        Ok(())
    }

    fn receive_json(&mut self, cx: &mut Context, _content: Json) -> Result {
        cx.group_send("all", &json!({ "type": "ping" }))
    }

    fn event(&mut self, cx: &mut Context, event: Event) -> Result {
        let path = cx.scope().path.clone();
        cx.send_json(&json!({ "type": event.kind(), "path": path }))
    }
}

#[test]
fn pure_handlers_see_no_connection() {
    let host = TestHost::new();
    let mut client = host.communicator::<Impure>("/somewhere/");
    client.connect();
    client.send_json(&json!({}));
    // As on the server: a pure handler runs outside the connection.
    assert_eq!(
        client.receive_json().unwrap(),
        json!({ "type": "ping", "path": "" })
    );
    assert!(
        host.logs()
            .iter()
            .any(|(_, line)| line.contains("must use the event alone"))
    );
}
