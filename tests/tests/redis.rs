//! Several nodes on the Redis layer: two consumer-host processes on
//! different ports share one Redis and one SQLite file.

use std::time::Duration;

use consumer_host_tests::nodes::{Node, Redis, Tls, node_config_with};
use consumer_host_tests::{
    SECRET, Traffic, assert_exactly_once, assert_saved_once, chat_message, connect,
};

const CLI: &str = env!("CARGO_BIN_EXE_host-cli");

struct Cluster {
    redis: Redis,
    nodes: Vec<Node>,
    db: consumer_host_tests::TestServer,
}

/// Two nodes; the third element is an in-process server on the same
/// database, used only to seed it and read it back.
async fn cluster(prefix: &str) -> Cluster {
    cluster_on(Redis::start(), prefix, "").await
}

/// Two nodes on `redis`, with more `[layer]` settings.
async fn cluster_on(redis: Redis, prefix: &str, layer: &str) -> Cluster {
    let db = consumer_host_tests::TestServer::start().await;
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let config = node_config_with(
            db.dir.path(),
            name,
            &db.db_path,
            &redis.url(),
            prefix,
            layer,
        );
        nodes.push(Node::start(CLI, &config));
    }
    Cluster { redis, nodes, db }
}

fn url(node: &Node, room: &str, token: &str) -> String {
    format!("{}/ws/{room}/?token={token}", node.ws_base())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_different_nodes_hear_each_other_once() {
    let cluster = cluster("two-nodes").await;
    let plan = cluster.db.seed(1, 2);
    let room = &plan.rooms[0];
    let (alice, bob) = (&room.users[0], &room.users[1]);
    let mut alice_ws = connect(&url(&cluster.nodes[0], &room.id, &alice.token)).await;
    let mut bob_ws = connect(&url(&cluster.nodes[1], &room.id, &bob.token)).await;
    for n in 0..10 {
        alice_ws
            .send_text(&chat_message(&room.id, &bob.id, "", &format!("a{n}")))
            .await;
        bob_ws
            .send_text(&chat_message(&room.id, &alice.id, "", &format!("b{n}")))
            .await;
    }
    let mut heard_by_alice = Vec::new();
    let mut heard_by_bob = Vec::new();
    for _ in 0..20 {
        heard_by_alice.push(
            alice_ws.next_json().await["body"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        heard_by_bob.push(
            bob_ws.next_json().await["body"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for heard in [&mut heard_by_alice, &mut heard_by_bob] {
        heard.sort();
        let mut expected: Vec<String> = (0..10)
            .flat_map(|n| [format!("a{n}"), format!("b{n}")])
            .collect();
        expected.sort();
        assert_eq!(*heard, expected);
    }
    alice_ws.expect_silence(Duration::from_millis(300)).await;
    bob_ws.expect_silence(Duration::from_millis(300)).await;
    // Each message from one node in order on the other.
    let from_alice: Vec<&String> = heard_by_bob.iter().filter(|b| b.starts_with('a')).collect();
    assert_eq!(from_alice.len(), 10);
    assert_eq!(cluster.db.message_count(), 20);
    // The name shown is the author's, whichever node saved it.
    assert_eq!(
        cluster.nodes[0]
            .metric("consumer_host_layer_received_total")
            .await,
        10
    );
    assert_eq!(
        cluster.nodes[1]
            .metric("consumer_host_layer_received_total")
            .await,
        10
    );
    // One subscriber per node, whatever the number of members.
    assert_eq!(
        cluster
            .redis
            .subscribers(&format!("two-nodes:group:chat:chat_{}", room.id)),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rooms_spread_over_two_nodes_lose_and_duplicate_nothing() {
    let cluster = cluster("many-rooms").await;
    let plan = cluster.db.seed(6, 4);
    let nodes: Vec<String> = cluster.nodes.iter().map(Node::ws_base).collect();
    let traffic = Traffic::start_spread(&nodes, &plan, Duration::from_millis(25)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logs = traffic.stop().await;
    let messages = assert_exactly_once(&logs);
    assert!(messages > 1000, "{messages} messages");
    assert_saved_once(&cluster.db, &logs);
    for node in &cluster.nodes {
        assert_eq!(
            node.metric("consumer_host_layer_publish_failures_total")
                .await,
            0
        );
        assert_eq!(node.health().await["status"], "ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_local_delivery_and_then_recovers() {
    let mut cluster = cluster("outage").await;
    let plan = cluster.db.seed(2, 2);
    let (local_room, spread_room) = (&plan.rooms[0], &plan.rooms[1]);
    // The first room entirely on node A; the second across both nodes.
    let mut local_a = connect(&url(
        &cluster.nodes[0],
        &local_room.id,
        &local_room.users[0].token,
    ))
    .await;
    let mut local_b = connect(&url(
        &cluster.nodes[0],
        &local_room.id,
        &local_room.users[1].token,
    ))
    .await;
    let mut spread_a = connect(&url(
        &cluster.nodes[0],
        &spread_room.id,
        &spread_room.users[0].token,
    ))
    .await;
    let mut spread_b = connect(&url(
        &cluster.nodes[1],
        &spread_room.id,
        &spread_room.users[1].token,
    ))
    .await;
    spread_a
        .send_text(&chat_message(
            &spread_room.id,
            &spread_room.users[1].id,
            "",
            "before",
        ))
        .await;
    assert_eq!(spread_b.next_json().await["body"], "before");
    spread_a.next_json().await;

    cluster.redis.stop();
    // Local delivery goes on while Redis is away.
    for n in 0..20 {
        local_a
            .send_text(&chat_message(
                &local_room.id,
                &local_room.users[1].id,
                "",
                &format!("local-{n}"),
            ))
            .await;
        assert_eq!(local_b.next_json().await["body"], format!("local-{n}"));
        assert_eq!(local_a.next_json().await["body"], format!("local-{n}"));
        // Cross-node sends fail to publish; the sender still hears its own.
        spread_a
            .send_text(&chat_message(
                &spread_room.id,
                &spread_room.users[1].id,
                "",
                &format!("lost-{n}"),
            ))
            .await;
        assert_eq!(spread_a.next_json().await["body"], format!("lost-{n}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = cluster.nodes[0].health().await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["degraded"], serde_json::json!(["layer"]), "{health}");
    assert_eq!(
        cluster.nodes[0]
            .metric("consumer_host_layer_connected")
            .await,
        0
    );
    // Past the staleness bound, what waited is counted as not relayed.
    tokio::time::sleep(Duration::from_secs(6)).await;

    cluster.redis.resume();
    // Cross-node delivery resumes once both nodes have reconnected. Events
    // from the outage that were still fresh may arrive first, in order and
    // once each; nothing else does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    let mut heard: Vec<String> = Vec::new();
    'resumed: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cross-node delivery never resumed"
        );
        let body = format!("after-{n}");
        spread_a
            .send_text(&chat_message(
                &spread_room.id,
                &spread_room.users[1].id,
                "",
                &body,
            ))
            .await;
        assert_eq!(spread_a.next_json().await["body"], body);
        n += 1;
        while let Ok(frame) =
            tokio::time::timeout(Duration::from_millis(300), spread_b.next_json()).await
        {
            let body = frame["body"].as_str().unwrap().to_string();
            assert!(!heard.contains(&body), "{body} delivered twice");
            heard.push(body.clone());
            if body.starts_with("after-") {
                break 'resumed;
            }
        }
    }
    // The rest of what was sent since, then.
    let last = format!("after-{}", n - 1);
    while heard.last() != Some(&last) {
        let body = spread_b.next_json().await["body"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!heard.contains(&body), "{body} delivered twice");
        heard.push(body);
    }
    let late: Vec<&String> = heard
        .iter()
        .filter(|body| body.starts_with("lost-"))
        .collect();
    let mut in_order = late.clone();
    in_order.sort_by_key(|body| body[5..].parse::<u32>().unwrap());
    assert_eq!(late, in_order, "late events keep their order");
    let delivered_late = late.len() as i64;
    let failures = cluster.nodes[0]
        .metric("consumer_host_layer_publish_failures_total")
        .await;
    // Node A published all 40 events of the outage (it does not know which
    // groups have members elsewhere): each was relayed late or counted.
    assert_eq!(
        failures + delivered_late,
        40,
        "every outage event is either relayed late or counted"
    );
    for _ in 0..10 {
        spread_b
            .send_text(&chat_message(
                &spread_room.id,
                &spread_room.users[0].id,
                "",
                "back",
            ))
            .await;
        assert_eq!(spread_a.next_json().await["body"], "back");
        assert_eq!(spread_b.next_json().await["body"], "back");
    }
    assert_eq!(cluster.nodes[0].health().await["status"], "ok");
    assert!(cluster.nodes.iter_mut().all(Node::alive), "no node crashed");
    // Every message sent was saved, delivered across nodes or not.
    assert_eq!(cluster.db.message_count(), 1 + 20 + 20 + n + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_a_group_or_disconnecting_stops_delivery_everywhere() {
    let cluster = cluster("leaving").await;
    let plan = cluster.db.seed(1, 2);
    let room = &plan.rooms[0];
    let group = format!("chat_{}", room.id);
    let channel = format!("leaving:group:chat:{group}");
    let mut alice = connect(&url(&cluster.nodes[0], &room.id, &room.users[0].token)).await;
    // A member of the hostile test consumer on node B joins and leaves the group.
    let mut listener = connect(&format!("{}/hostile/", cluster.nodes[1].ws_base())).await;
    listener.send_text(&format!("group:{group}")).await;
    assert!(listener.next_json().await["ok"].is_string());
    assert_eq!(cluster.redis.subscribers(&channel), 2);
    listener.send_text(&format!("leave:{group}")).await;
    assert!(listener.next_json().await["ok"].is_string());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cluster.redis.subscribers(&channel) != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B never unsubscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Bob connects on node B, then disconnects: node B unsubscribes again.
    let bob = connect(&url(&cluster.nodes[1], &room.id, &room.users[1].token)).await;
    assert_eq!(cluster.redis.subscribers(&channel), 2);
    bob.close().await;
    while cluster.redis.subscribers(&channel) != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B never unsubscribed after the disconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alice
        .send_text(&chat_message(&room.id, &room.users[1].id, "", "anyone?"))
        .await;
    assert_eq!(alice.next_json().await["body"], "anyone?");
    listener.expect_silence(Duration::from_millis(500)).await;
    assert_eq!(
        cluster.nodes[1]
            .metric("consumer_host_layer_received_total")
            .await,
        0
    );
    let _ = SECRET;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_by_anyone_but_a_node_are_refused() {
    let cluster = cluster("forged").await;
    let plan = cluster.db.seed(1, 2);
    let room = &plan.rooms[0];
    let mut alice = connect(&url(&cluster.nodes[0], &room.id, &room.users[0].token)).await;
    let mut bob = connect(&url(&cluster.nodes[1], &room.id, &room.users[1].token)).await;
    let channel = format!("forged:group:chat:chat_{}", room.id);
    let event = serde_json::json!({
        "type": "chat.message", "body": "forged", "name": "Admin",
        "id": "0193b0a4-7c1e-7d3a-9f2b-5c6d7e8f9a0b", "created_at": "2026-11-26 00:00:00.000000",
    });
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    for payload in [
        // The unsigned format of earlier versions.
        format!("0123456789abcdef0123456789abcdef\n{event}"),
        // The signed format, signed with the wrong key.
        format!(
            "ch1 0123456789abcdef0123456789abcdef 1 {now_ms} {}\n{event}",
            "00".repeat(32)
        ),
    ] {
        let out = cluster
            .redis
            .cli()
            .args(["PUBLISH", &channel, &payload])
            .output()
            .unwrap();
        // Both nodes are subscribed: Redis handed the forgery to both.
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    }
    alice.expect_silence(Duration::from_millis(300)).await;
    bob.expect_silence(Duration::from_millis(100)).await;
    for node in &cluster.nodes {
        assert_eq!(node.metric("consumer_host_layer_rejected_total").await, 2);
    }
    // What the nodes publish themselves goes through.
    alice
        .send_text(&chat_message(&room.id, &room.users[1].id, "", "genuine"))
        .await;
    assert_eq!(alice.next_json().await["body"], "genuine");
    assert_eq!(bob.next_json().await["body"], "genuine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_redis_with_a_password_over_tls() {
    let redis = Redis::start_with(Some("a-redis-password"), Some(Tls::make()));
    let ca_file = redis.ca_file().unwrap().display().to_string();
    let cluster = cluster_on(redis, "tls", &format!("ca_file = \"{ca_file}\"")).await;
    let plan = cluster.db.seed(1, 2);
    let room = &plan.rooms[0];
    let mut alice = connect(&url(&cluster.nodes[0], &room.id, &room.users[0].token)).await;
    let mut bob = connect(&url(&cluster.nodes[1], &room.id, &room.users[1].token)).await;
    alice
        .send_text(&chat_message(&room.id, &room.users[1].id, "", "over tls"))
        .await;
    assert_eq!(bob.next_json().await["body"], "over tls");
    assert_eq!(alice.next_json().await["body"], "over tls");
    for node in &cluster.nodes {
        assert_eq!(node.health().await["status"], "ok");
    }
    // A node with the wrong password serves its own clients, degraded.
    let wrong = cluster
        .redis
        .url()
        .replace("a-redis-password", "not-the-password");
    let config = node_config_with(
        cluster.db.dir.path(),
        "node-wrong",
        &cluster.db.db_path,
        &wrong,
        "tls",
        &format!("ca_file = \"{ca_file}\""),
    );
    let outsider = Node::start(CLI, &config);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(outsider.health().await["status"], "degraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_away_the_queue_is_bounded_in_bytes() {
    let mut cluster = cluster_on(Redis::start(), "bounded", "publish_queue_bytes = 65536").await;
    let plan = cluster.db.seed(1, 2);
    let room = &plan.rooms[0];
    let mut alice = connect(&url(&cluster.nodes[0], &room.id, &room.users[0].token)).await;
    let _bob = connect(&url(&cluster.nodes[1], &room.id, &room.users[1].token)).await;
    cluster.redis.stop();
    let body = "q".repeat(4_000);
    for n in 0..50 {
        alice
            .send_text(&chat_message(
                &room.id,
                &room.users[1].id,
                "",
                &format!("{n}-{body}"),
            ))
            .await;
        // Local delivery goes on.
        assert!(
            alice.next_json().await["body"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{n}-"))
        );
        assert!(
            cluster.nodes[0]
                .metric("consumer_host_layer_queued_bytes")
                .await
                <= 65_536,
            "the queue stays within its bytes"
        );
    }
    // What did not fit is counted, not kept.
    assert!(
        cluster.nodes[0]
            .metric("consumer_host_layer_publish_failures_total")
            .await
            >= 30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_connections_killed_under_traffic_deliver_each_event_once() {
    let cluster = cluster("killed").await;
    let plan = cluster.db.seed(4, 4);
    let nodes: Vec<String> = cluster.nodes.iter().map(Node::ws_base).collect();
    let traffic = Traffic::start_spread(&nodes, &plan, Duration::from_millis(20)).await;
    // Redis drops the nodes' publishing connections again and again
    // (subscriptions stay): batches in flight are sent again, whole.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let out = cluster
            .redis
            .cli()
            .args(["CLIENT", "KILL", "TYPE", "normal"])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = traffic.stop().await;
    let messages = assert_exactly_once(&logs);
    assert!(messages > 500, "{messages} messages");
    assert_saved_once(&cluster.db, &logs);
}
