//! Who gets in: every token that is not a login, every user who is not a
//! member, is refused with HTTP 403 before the upgrade, and nothing is written.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consumer_host_tests::{
    SECRET, TestServer, access_claims, chat_message, connect, http_get, refused_status,
    sign_claims, unix_now,
};

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_non_login_and_non_member_is_refused_with_403() {
    let server = TestServer::start().await;
    let plan = server.seed(2, 2);
    let room = &plan.rooms[0];
    let member = &room.users[0];
    let outsider = &plan.rooms[1].users[0];
    let inactive = &plan.rooms[0].users[1];
    server
        .db()
        .execute(
            "UPDATE useraccount_user SET is_active = 0 WHERE id = ?1",
            [inactive.id.replace('-', "")],
        )
        .unwrap();
    let now = unix_now();
    let good = access_claims(&member.id, now + 3600);
    let mut refresh = good.clone();
    refresh["token_type"] = "refresh".into();
    let mut no_user = good.clone();
    no_user.as_object_mut().unwrap().remove("user_id");
    let header_none = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64url(good.to_string().as_bytes());

    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("no token", room.id.clone(), None),
        ("an empty token", room.id.clone(), Some(String::new())),
        ("garbage", room.id.clone(), Some("not.a.jwt".into())),
        (
            "a bad signature",
            room.id.clone(),
            Some(sign_claims("another-secret", &good)),
        ),
        (
            "an expired token",
            room.id.clone(),
            Some(sign_claims(SECRET, &access_claims(&member.id, now - 1))),
        ),
        (
            "a refresh token",
            room.id.clone(),
            Some(sign_claims(SECRET, &refresh)),
        ),
        (
            "alg none",
            room.id.clone(),
            Some(format!("{header_none}.{payload}.")),
        ),
        (
            "no user_id claim",
            room.id.clone(),
            Some(sign_claims(SECRET, &no_user)),
        ),
        (
            "an unknown user",
            room.id.clone(),
            Some(sign_claims(
                SECRET,
                &access_claims(&uuid::Uuid::new_v4().to_string(), now + 3600),
            )),
        ),
        (
            "an inactive user",
            room.id.clone(),
            Some(server.token(&inactive.id)),
        ),
        (
            "a non-member",
            room.id.clone(),
            Some(server.token(&outsider.id)),
        ),
        (
            "a room that is no conversation",
            uuid::Uuid::new_v4().to_string(),
            Some(server.token(&member.id)),
        ),
        (
            "a room that is no UUID",
            "lobby".into(),
            Some(server.token(&member.id)),
        ),
    ];
    for (what, room_name, token) in cases {
        let status = refused_status(&server.url(&room_name, token.as_deref())).await;
        assert_eq!(status, 403, "{what}");
    }
    assert_eq!(server.message_count(), 0);
    assert_eq!(
        consumer_host::testing::group_members(server.node(), "chat", &format!("chat_{}", room.id)),
        0
    );
    assert_eq!(server.metric("consumer_host_handshakes_refused_total"), 13);

    // The member with a good token gets in, so the refusals above were about the token.
    let mut ws = connect(&server.url(&room.id, Some(&sign_claims(SECRET, &good)))).await;
    ws.send_text(&chat_message(&room.id, &outsider.id, "", "x"))
        .await;
    assert_eq!(ws.next_json().await["code"], "not_a_member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_paths_are_404_and_health_answers() {
    let server = TestServer::start().await;
    let addr = server.node().local_addr();
    let plan = server.seed(1, 1);
    let token = &plan.rooms[0].users[0].token;
    assert_eq!(
        refused_status(&format!("ws://{addr}/elsewhere/?token={token}")).await,
        404
    );
    assert_eq!(
        refused_status(&format!("ws://{addr}/ws/a/b/?token={token}")).await,
        404
    );
    assert_eq!(server.metric("consumer_host_handshakes_unrouted_total"), 2);

    let (status, body) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("consumer_host_handshakes_unrouted_total 2"),
        "{body}"
    );
    assert_eq!(http_get(addr, "/").await.0, 404);
    assert_eq!(
        http_get(addr, &format!("/ws/{}/", plan.rooms[0].id))
            .await
            .0,
        404
    );
}
