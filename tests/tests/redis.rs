//! Several nodes on the Redis layer: two consumer-host processes on
//! different ports share one Redis and one SQLite file.

use std::time::Duration;

use consumer_host_tests::nodes::{Node, Redis, node_config};
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
    let redis = Redis::start();
    let db = consumer_host_tests::TestServer::start().await;
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let config = node_config(db.dir.path(), name, &db.db_path, &redis.url(), prefix);
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
