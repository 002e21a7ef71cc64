//! Overload is not a slow client: when more is offered than the node can
//! save and deliver, it reads from the senders more slowly and keeps
//! delivering, in order; it loses nothing and closes no client that reads.

use std::time::Duration;

use consumer_host_tests::{TestServer, Traffic, assert_exactly_once, assert_saved_once};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_in_every_room_closes_no_reader_and_loses_nothing() {
    let server = TestServer::start_with(|config| {
        // No per-client limit: the node itself must push back.
        config.limits.messages_per_second = 0.0;
        config.limits.user_messages_per_second = 0.0;
        // Short queues: a node that mistook its own backlog for slow
        // clients would close them at once.
        config.limits.send_queue = 64;
        config.layer.mailbox_capacity = 64;
    })
    .await;
    let plan = server.seed(10, 10);
    // Every member sends every 2 ms, in lockstep: 50,000 messages and half a
    // million deliveries a second offered, far more than this node (a debug
    // build, sharing two cores with its clients) saves and delivers.
    let traffic = Traffic::start(&server.ws_base(), &plan, Duration::from_millis(2)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let taken_in = server.metric("consumer_host_messages_received_total");
    let logs = traffic.stop().await;
    let offered: usize = logs.iter().map(|log| log.sent.len()).sum();
    assert!(
        (taken_in as usize) < offered * 9 / 10,
        "the node kept up ({taken_in} of {offered} read): this is not overload"
    );
    // Everything the clients wrote was read, saved once and delivered once
    // to every member, and no connection ended.
    let messages = assert_exactly_once(&logs);
    assert_eq!(messages, offered);
    assert_saved_once(&server, &logs);
    assert_eq!(server.metric("consumer_host_slow_client_closes_total"), 0);
    assert_eq!(
        server.metric("consumer_host_mailbox_overflow_closes_total"),
        0
    );
    // The node says how far behind it is, for operators.
    assert_eq!(server.metric("consumer_host_pressure_active"), 0);
    assert_eq!(server.metric("consumer_host_queued_frames"), 0);
}
