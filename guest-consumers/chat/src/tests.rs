//! The chat's logic, natively, with the SDK's harness: the reference app's
//! schema and rows, two members and an outsider.

use consumer_host_sdk::prelude::*;
use consumer_host_sdk::testing::{Communicator, TestHost};

use super::Chat;

const ROOM: &str = "22de0f4f-c84e-47be-889c-d61b856492bd";
const ALICE: &str = "9f5ba441036f4f399ea6258e3206e909";
const BOB: &str = "c189712e871d45de8f111a3b1de97c30";
const CAROL: &str = "0b5e9a4c6c9b4e4f9d3f1a2b3c4d5e6f";

fn host() -> TestHost {
    let host = TestHost::new();
    host.execute(include_str!("../../../migrations/0001_django_chat.sql"));
    host.execute(&format!(
        "INSERT INTO useraccount_user VALUES('', NULL, 0, '{ALICE}', 'alice@example.com', 'Alice', 1, 0, '2026-11-25 17:22:22.526833');
         INSERT INTO useraccount_user VALUES('', NULL, 0, '{BOB}', 'bob@example.com', 'Bob', 1, 0, '2026-11-25 17:22:22.529097');
         INSERT INTO useraccount_user VALUES('', NULL, 0, '{CAROL}', 'carol@example.com', 'Carol', 1, 0, '2026-11-25 17:22:22.529097');
         INSERT INTO chat_conversation VALUES('{}', '2026-11-25 17:22:22.530435', '2026-11-25 17:22:22.530454');
         INSERT INTO chat_conversation_users (conversation_id, user_id) VALUES ('{0}', '{ALICE}'), ('{0}', '{BOB}');",
        ROOM.replace('-', "")
    ));
    host
}

fn member(host: &TestHost, id: &str, name: &str) -> Communicator<Chat> {
    host.communicator::<Chat>(&format!("/ws/{ROOM}/"))
        .url_kwarg("room_name", ROOM)
        .user(id, Some(name), "")
}

fn message(to: &str, body: &str) -> Json {
    json!({"event": "chat_message", "data": {"conversation_id": ROOM, "sent_to_id": to, "name": "whoever", "body": body}})
}

#[test]
fn members_hear_every_message_saved_once() {
    let host = host();
    let mut alice = member(&host, ALICE, "Alice");
    let mut bob = member(&host, BOB, "Bob");
    assert!(alice.connect().accepted);
    assert!(bob.connect().accepted);
    alice.send_json(&message("c189712e-871d-45de-8f11-1a3b1de97c30", "Hi Bob"));
    for client in [&mut alice, &mut bob] {
        let frame = client.receive_json().unwrap();
        assert_eq!(frame["body"], "Hi Bob");
        // The author's name from the database, not the one the client sent.
        assert_eq!(frame["name"], "Alice");
        assert_eq!(frame["id"].as_str().unwrap().len(), 36);
        assert_eq!(frame["created_at"].as_str().unwrap().len(), 26);
    }
    assert!(alice.receive_nothing() && bob.receive_nothing());
    assert_eq!(
        host.count("SELECT count(*) FROM chat_conversationmessage WHERE body = 'Hi Bob'"),
        1
    );
    assert_eq!(
        host.query_texts("SELECT created_by_id || ' ' || sent_to_id FROM chat_conversationmessage"),
        vec![format!("{ALICE} {BOB}")]
    );
}

#[test]
fn outsiders_and_strangers_are_refused() {
    let host = host();
    let mut anonymous = host
        .communicator::<Chat>(&format!("/ws/{ROOM}/"))
        .url_kwarg("room_name", ROOM);
    assert!(!anonymous.connect().accepted);
    assert!(!member(&host, CAROL, "Carol").connect().accepted);
    let mut lost = host
        .communicator::<Chat>("/ws/not-a-uuid/")
        .url_kwarg("room_name", "not-a-uuid")
        .user(ALICE, Some("Alice"), "");
    assert!(!lost.connect().accepted);
}

#[test]
fn bad_messages_get_error_frames_and_write_nothing() {
    let host = host();
    let mut alice = member(&host, ALICE, "Alice");
    alice.connect();
    for (sent, code) in [
        (json!("not an object"), "invalid_json"),
        (json!({"event": "typing"}), "unknown_event"),
        (message(CAROL, "to a stranger"), "not_a_member"),
        (message("not-a-uuid", "to nobody"), "invalid_field"),
        (
            json!({"event": "chat_message", "data": {"conversation_id": "0b5e9a4c6c9b4e4f9d3f1a2b3c4d5e6f", "sent_to_id": BOB, "body": "elsewhere"}}),
            "invalid_field",
        ),
    ] {
        alice.send_json(&sent);
        let frame = alice.receive_json().unwrap();
        assert_eq!(frame["type"], "error", "{sent}");
        assert_eq!(frame["code"], code, "{sent}");
    }
    alice.send_text("{broken");
    assert_eq!(alice.receive_json().unwrap()["code"], "invalid_json");
    alice.send_bytes(b"\x00");
    assert_eq!(alice.receive_json().unwrap()["code"], "binary_frame");
    assert_eq!(
        host.count("SELECT count(*) FROM chat_conversationmessage"),
        0
    );
    assert!(alice.closed().is_none());
}

#[test]
fn a_member_removed_is_closed_at_the_next_recheck() {
    let host = host();
    let mut alice = member(&host, ALICE, "Alice");
    let mut bob = member(&host, BOB, "Bob");
    alice.connect();
    bob.connect();
    bob.recheck();
    assert!(bob.closed().is_none());
    host.execute(&format!(
        "DELETE FROM chat_conversation_users WHERE user_id = '{BOB}'"
    ));
    bob.recheck();
    assert_eq!(bob.closed().map(|(code, _)| code), Some(4003));
    alice.recheck();
    assert!(alice.closed().is_none());
    assert_eq!(host.group_size(&format!("chat_{ROOM}")), 1);
}

#[test]
fn a_member_added_after_connect_can_be_written_to() {
    let host = host();
    let mut alice = member(&host, ALICE, "Alice");
    alice.connect();
    host.execute(&format!(
        "INSERT INTO chat_conversation_users (conversation_id, user_id) VALUES ('{}', '{CAROL}')",
        ROOM.replace('-', "")
    ));
    alice.send_json(&message(CAROL, "welcome"));
    assert_eq!(alice.receive_json().unwrap()["body"], "welcome");
    assert!(alice.state().unwrap().members.iter().any(|id| id == CAROL));
}
