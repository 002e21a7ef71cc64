//! The reference chat, end to end: real server, real sockets, real guest.

use std::time::Duration;

use consumer_host_tests::{TestServer, chat_message, connect, refused_status};
use tokio_tungstenite::tungstenite::Message;

fn hex(uuid: &str) -> String {
    uuid.replace('-', "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_both_members_and_is_saved() {
    let server = TestServer::start().await;
    let plan = server.seed(1, 2);
    let room = &plan.rooms[0];
    let (alice, bob) = (&room.users[0], &room.users[1]);
    let mut alice_ws = connect(&server.url(&room.id, Some(&alice.token))).await;
    let mut bob_ws = connect(&server.url(&room.id, Some(&bob.token))).await;

    // The name a client claims is not the name shown.
    alice_ws
        .send_text(&chat_message(&room.id, &bob.id, "Mallory", "Hi Bob"))
        .await;
    for ws in [&mut alice_ws, &mut bob_ws] {
        let frame = ws.next_json().await;
        assert_eq!(frame["body"], "Hi Bob");
        assert_eq!(frame["name"], alice.name.as_str());
        assert_eq!(frame["id"].as_str().unwrap().len(), 36);
        assert!(frame["created_at"].is_string());
    }
    bob_ws
        .send_text(&chat_message(&room.id, &alice.id, "Bob", "Hi Alice"))
        .await;
    for ws in [&mut alice_ws, &mut bob_ws] {
        let frame = ws.next_json().await;
        assert_eq!(frame["body"], "Hi Alice");
        assert_eq!(frame["name"], bob.name.as_str());
    }

    // The chat's handler is pure: each message was rendered once and both
    // members got those frames without a call into their own instances.
    assert_eq!(server.metric("consumer_host_rendered_deliveries_total"), 4);
    assert_eq!(server.metric("consumer_host_events_handled_total"), 4);

    let rows: Vec<(String, String, String, String)> = server
        .db()
        .prepare("SELECT conversation_id, created_by_id, sent_to_id, body FROM chat_conversationmessage ORDER BY created_at")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (
                hex(&room.id),
                hex(&alice.id),
                hex(&bob.id),
                "Hi Bob".to_string()
            ),
            (
                hex(&room.id),
                hex(&bob.id),
                hex(&alice.id),
                "Hi Alice".to_string()
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hex_room_id_is_the_same_room() {
    let server = TestServer::start().await;
    let plan = server.seed(1, 2);
    let room = &plan.rooms[0];
    let (alice, bob) = (&room.users[0], &room.users[1]);
    let mut alice_ws = connect(&server.url(&room.id, Some(&alice.token))).await;
    let mut bob_ws = connect(&server.url(&hex(&room.id), Some(&bob.token))).await;
    bob_ws
        .send_text(&chat_message(&hex(&room.id), &hex(&alice.id), "", "hex"))
        .await;
    assert_eq!(alice_ws.next_json().await["body"], "hex");
    assert_eq!(bob_ws.next_json().await["body"], "hex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_never_cross_rooms() {
    let server = TestServer::start().await;
    let plan = server.seed(2, 2);
    let (one, two) = (&plan.rooms[0], &plan.rooms[1]);
    let mut one_a = connect(&server.url(&one.id, Some(&one.users[0].token))).await;
    let mut one_b = connect(&server.url(&one.id, Some(&one.users[1].token))).await;
    let mut two_a = connect(&server.url(&two.id, Some(&two.users[0].token))).await;
    let mut two_b = connect(&server.url(&two.id, Some(&two.users[1].token))).await;

    for n in 0..5 {
        one_a
            .send_text(&chat_message(
                &one.id,
                &one.users[1].id,
                "",
                &format!("one-{n}"),
            ))
            .await;
        two_b
            .send_text(&chat_message(
                &two.id,
                &two.users[0].id,
                "",
                &format!("two-{n}"),
            ))
            .await;
    }
    for n in 0..5 {
        for ws in [&mut one_a, &mut one_b] {
            assert_eq!(ws.next_json().await["body"], format!("one-{n}"));
        }
        for ws in [&mut two_a, &mut two_b] {
            assert_eq!(ws.next_json().await["body"], format!("two-{n}"));
        }
    }
    for ws in [&mut one_a, &mut one_b, &mut two_a, &mut two_b] {
        ws.expect_silence(Duration::from_millis(200)).await;
    }
    // The other room's members cannot post into this one either.
    assert_eq!(
        refused_status(&server.url(&one.id, Some(&two.users[0].token))).await,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_a_clear_error_and_writes_nothing() {
    let server = TestServer::start().await;
    let plan = server.seed(2, 2);
    let room = &plan.rooms[0];
    let stranger = &plan.rooms[1].users[0];
    let (alice, bob) = (&room.users[0], &room.users[1]);
    let mut alice_ws = connect(&server.url(&room.id, Some(&alice.token))).await;
    let mut bob_ws = connect(&server.url(&room.id, Some(&bob.token))).await;

    let cases: Vec<(&str, Message, &str)> = vec![
        ("not JSON", Message::text("{not json"), "invalid_json"),
        ("a JSON array", Message::text("[1,2]"), "invalid_json"),
        ("no event", Message::text(r#"{"data":{}}"#), "missing_field"),
        (
            "an unknown event",
            Message::text(r#"{"event":"typing","data":{}}"#),
            "unknown_event",
        ),
        (
            "no data",
            Message::text(r#"{"event":"chat_message"}"#),
            "missing_field",
        ),
        (
            "no body",
            Message::text(format!(
                r#"{{"event":"chat_message","data":{{"conversation_id":"{}","sent_to_id":"{}","name":"A"}}}}"#,
                room.id, bob.id
            )),
            "missing_field",
        ),
        (
            "no sent_to_id",
            Message::text(format!(
                r#"{{"event":"chat_message","data":{{"conversation_id":"{}","name":"A","body":"x"}}}}"#,
                room.id
            )),
            "missing_field",
        ),
        (
            "a body that is not a string",
            Message::text(format!(
                r#"{{"event":"chat_message","data":{{"conversation_id":"{}","sent_to_id":"{}","body":42}}}}"#,
                room.id, bob.id
            )),
            "invalid_field",
        ),
        (
            "a sent_to_id that is not a UUID",
            Message::text(chat_message(&room.id, "bob", "A", "x")),
            "invalid_field",
        ),
        (
            "a recipient outside the conversation",
            Message::text(chat_message(&room.id, &stranger.id, "A", "x")),
            "not_a_member",
        ),
        (
            "an unknown recipient",
            Message::text(chat_message(
                &room.id,
                &uuid::Uuid::new_v4().to_string(),
                "A",
                "x",
            )),
            "not_a_member",
        ),
        (
            "another conversation's id",
            Message::text(chat_message(&plan.rooms[1].id, &bob.id, "A", "x")),
            "invalid_field",
        ),
        (
            "a binary frame",
            Message::binary(b"\x00\x01binary".to_vec()),
            "binary_frame",
        ),
    ];
    for (what, message, code) in cases {
        alice_ws.send(message).await;
        let error = alice_ws.next_json().await;
        assert_eq!(error["type"], "error", "{what}: {error}");
        assert_eq!(error["code"], code, "{what}: {error}");
        assert!(!error["detail"].as_str().unwrap().is_empty(), "{what}");
    }
    assert_eq!(server.message_count(), 0, "nothing was written");
    bob_ws.expect_silence(Duration::from_millis(200)).await;

    // Both connections still work.
    alice_ws
        .send_text(&chat_message(&room.id, &bob.id, "A", "still here"))
        .await;
    assert_eq!(alice_ws.next_json().await["body"], "still here");
    assert_eq!(bob_ws.next_json().await["body"], "still here");
    assert_eq!(server.message_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_after_connect_can_be_written_to() {
    let server = TestServer::start().await;
    let plan = server.seed(1, 2);
    let room = &plan.rooms[0];
    let late = &server.seed(1, 1).rooms[0].users[0];
    let mut alice_ws = connect(&server.url(&room.id, Some(&room.users[0].token))).await;
    server
        .db()
        .execute(
            "INSERT INTO chat_conversation_users (conversation_id, user_id) VALUES (?1, ?2)",
            [hex(&room.id), hex(&late.id)],
        )
        .unwrap();
    alice_ws
        .send_text(&chat_message(&room.id, &late.id, "", "welcome"))
        .await;
    assert_eq!(alice_ws.next_json().await["body"], "welcome");
    let mut late_ws = connect(&server.url(&room.id, Some(&late.token))).await;
    late_ws
        .send_text(&chat_message(&room.id, &room.users[0].id, "", "thanks"))
        .await;
    assert_eq!(late_ws.next_json().await["body"], "thanks");
    assert_eq!(alice_ws.next_json().await["body"], "thanks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_stops_its_deliveries() {
    let server = TestServer::start().await;
    let plan = server.seed(1, 2);
    let room = &plan.rooms[0];
    let mut alice_ws = connect(&server.url(&room.id, Some(&room.users[0].token))).await;
    let bob_ws = connect(&server.url(&room.id, Some(&room.users[1].token))).await;
    let group = format!("chat_{}", room.id);
    assert_eq!(
        consumer_host::testing::group_members(server.node(), "chat", &group),
        2
    );
    bob_ws.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while consumer_host::testing::group_members(server.node(), "chat", &group) != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob never left the group"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    alice_ws
        .send_text(&chat_message(
            &room.id,
            &room.users[1].id,
            "",
            "after bob left",
        ))
        .await;
    assert_eq!(alice_ws.next_json().await["body"], "after bob left");
    assert_eq!(server.metric("consumer_host_connections_open"), 1);
}

/// A server with the hostile test consumer beside the chat; `shared` puts
/// the hostile consumer's groups in the chat's namespace.
async fn chat_and_hostile(shared: bool) -> TestServer {
    use consumer_host::config::{ConsumerConfig, RouteConfig};
    TestServer::start_with(|config| {
        config.routes.insert(
            0,
            RouteConfig {
                path: "hostile/".into(),
                consumer: "hostile".into(),
            },
        );
        let mut hostile = ConsumerConfig::new(consumer_host_tests::guest("hostile"));
        if shared {
            hostile.group_namespace = Some("chat".into());
        }
        config.consumers.insert("hostile".into(), hostile);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_consumer_cannot_join_or_forge_the_chats_groups() {
    let server = chat_and_hostile(false).await;
    let plan = server.seed(1, 2);
    let room = &plan.rooms[0];
    let mut alice = connect(&server.url(&room.id, Some(&room.users[0].token))).await;
    let mut other = connect(&format!("{}/hostile/", server.ws_base())).await;
    // The same group name, in the hostile consumer's own namespace.
    other.send_text(&format!("group:chat_{}", room.id)).await;
    assert!(other.next_json().await["ok"].is_string());
    let forged = serde_json::json!({"type": "chat.message", "body": "forged", "name": "Admin"});
    other
        .send_text(&format!("group-send:chat_{}|{forged}", room.id))
        .await;
    assert!(other.next_json().await["ok"].is_string());
    // The forged event went to the hostile consumer's own group (itself).
    assert_eq!(
        other.next_json().await["event"]
            .as_str()
            .map(|event| event.contains("forged")),
        Some(true)
    );
    alice
        .send_text(&chat_message(
            &room.id,
            &room.users[1].id,
            "",
            "for the chat only",
        ))
        .await;
    assert_eq!(alice.next_json().await["body"], "for the chat only");
    alice.expect_silence(Duration::from_millis(200)).await;
    other.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(
        consumer_host::testing::group_members(server.node(), "chat", &format!("chat_{}", room.id)),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_of_another_consumer_runs_its_own_handler() {
    // With the namespace shared by configuration, the hostile consumer is a
    // member of the chat's group: it must run its own handler, never get
    // the chat's rendered frames.
    let server = chat_and_hostile(true).await;
    let plan = server.seed(1, 2);
    let room = &plan.rooms[0];
    let mut alice = connect(&server.url(&room.id, Some(&room.users[0].token))).await;
    let mut other = connect(&format!("{}/hostile/", server.ws_base())).await;
    other.send_text(&format!("group:chat_{}", room.id)).await;
    assert!(other.next_json().await["ok"].is_string());
    alice
        .send_text(&chat_message(
            &room.id,
            &room.users[1].id,
            "",
            "for the chat only",
        ))
        .await;
    assert_eq!(alice.next_json().await["body"], "for the chat only");
    let heard = other.next_json().await;
    assert!(
        heard["event"].as_str().is_some_and(
            |event| event.contains("for the chat only") && event.contains("chat.message")
        ),
        "{heard}"
    );
    assert_eq!(server.metric("consumer_host_rendered_deliveries_total"), 1);
    assert_eq!(server.metric("consumer_host_events_handled_total"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_from_the_conversation_is_closed_at_the_next_recheck() {
    let server = TestServer::start_with(|config| config.auth.recheck_secs = 1).await;
    let plan = server.seed(1, 2);
    let room = &plan.rooms[0];
    let mut alice = connect(&server.url(&room.id, Some(&room.users[0].token))).await;
    let mut bob = connect(&server.url(&room.id, Some(&room.users[1].token))).await;
    server
        .db()
        .execute(
            "DELETE FROM chat_conversation_users WHERE user_id = ?1",
            [hex(&room.users[1].id)],
        )
        .unwrap();
    // The host re-checks the login every second, then the chat its rule.
    assert_eq!(bob.expect_close().await, 4003);
    alice
        .send_text(&chat_message(&room.id, &room.users[0].id, "", "still here"))
        .await;
    assert_eq!(alice.next_json().await["body"], "still here");
}
