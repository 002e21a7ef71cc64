//! The cost of one event handed to a consumer: the host lowers the event
//! into the guest, the chat guest parses the JSON, builds its frame and
//! calls `send`, and the host queues the frame.
//!
//! `cargo bench -p consumer-host-tests --bench guest_call`

use std::time::{Duration, Instant};

use consumer_host::testing::Direct;
use consumer_host::testing::types::{Scope, User};
use consumer_host_tests::TestServer;
use criterion::{Criterion, criterion_group, criterion_main};

fn guest_calls(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(TestServer::start());
    // A member of the reference conversation, as the chat sees one.
    let scope = Scope {
        connection_id: "1".into(),
        path: "/ws/22de0f4f-c84e-47be-889c-d61b856492bd/".into(),
        url_kwargs: vec![(
            "room_name".into(),
            "22de0f4f-c84e-47be-889c-d61b856492bd".into(),
        )],
        query: Vec::new(),
        user: Some(User {
            id: "9f5ba441036f4f399ea6258e3206e909".into(),
            name: Some("Alice".into()),
            email: "alice@example.com".into(),
        }),
        subprotocols: Vec::new(),
    };
    let mut direct = Direct::new(server.node(), "chat", scope);
    let event = r#"{"type":"chat.message","body":"Hi Bob, how are you today?","name":"Alice","id":"0193b0a4-7c1e-7d3a-9f2b-5c6d7e8f9a0b","created_at":"2026-11-25 17:22:22.535044"}"#;
    let malformed = "{\"event\": \"typing\"}";

    let mut group = c.benchmark_group("guest_call");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("handle_event chat.message (parse, render, send)", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    direct.event(event).await.unwrap();
                    assert_eq!(direct.frames().len(), 1, "a frame");
                }
                started.elapsed()
            })
        })
    });
    group.bench_function("receive, answered with an error frame (no database)", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    direct.receive(malformed).await.unwrap();
                    assert_eq!(direct.frames().len(), 1, "an error frame");
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, guest_calls);
criterion_main!(benches);
