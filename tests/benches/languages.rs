//! Consumers in Rust, Python and JavaScript side by side, each the chat of
//! its language: what compiling one costs, making an instance of it, one
//! group event handled by it, and the memory a live instance keeps.
//!
//! `LANGUAGE_MODULES=rust=chat.wasm,python=py.wasm,js=js.wasm cargo bench -p consumer-host-tests --bench languages`
//! (`scripts/bench.py languages` builds the modules and runs this). Prints
//! one JSON object per module.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use consumer_host::testing::Direct;
use consumer_host::testing::types::{Scope, User};
use consumer_host_tests::TestServer;

/// Instances kept live at once to measure their memory.
const LIVE_INSTANCES: usize = 100;

fn main() {
    let modules = std::env::var("LANGUAGE_MODULES")
        .expect("LANGUAGE_MODULES=name=path,... (see the file's header)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for entry in modules.split(',') {
        let (name, path) = entry.split_once('=').expect("name=path");
        let result = runtime.block_on(measure(name, PathBuf::from(path)));
        println!("{result}");
    }
}

async fn measure(name: &str, module: PathBuf) -> serde_json::Value {
    let bytes = std::fs::read(&module).expect("the module");
    let server = TestServer::start_with(|config| {
        let chat = config.consumers.get_mut("chat").unwrap();
        chat.module = module.clone();
        chat.sandbox.memory_bytes = 64 * 1024 * 1024;
        chat.sandbox.event_deadline_ms = 1_000;
        // Instances stay live for the memory measurement.
        chat.sandbox.idle_evict_secs = 3_600;
        config.runtime.compiled_cache = None;
    })
    .await;
    let node = server.node();

    // Compiling: the node's own compiler (one core, as a deploy), no cache.
    let mut compile_ms = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        node.node()
            .runtime
            .compile(bytes.clone(), "bench".into())
            .await
            .expect("it compiles");
        compile_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }

    // One event: the chat's message event, in the type this language's
    // chat listens to (the Python chat is the reference port: `chat_message`).
    let event = if name.starts_with("python") {
        r#"{"type":"chat_message","body":"Hi Bob, how are you today?","name":"Alice"}"#
    } else {
        r#"{"type":"chat.message","body":"Hi Bob, how are you today?","name":"Alice","id":"0193b0a4-7c1e-7d3a-9f2b-5c6d7e8f9a0b","created_at":"2026-11-25 17:22:22.535044"}"#
    };
    let mut direct = Direct::new(node, "chat", scope());
    direct.event(event).await.expect("the first event");
    assert_eq!(direct.frames().len(), 1, "{name}: a frame per event");
    let warm = per_call(200, async || {
        direct.event(event).await.unwrap();
        direct.frames();
    })
    .await;
    // A fresh instance for every event: instantiation plus one event.
    let fresh = per_call(30, async || {
        direct.evict();
        direct.event(event).await.unwrap();
        direct.frames();
    })
    .await;

    // Memory: instances kept live, each after one event.
    let before = rss_kib();
    let mut live = Vec::new();
    for _ in 0..LIVE_INSTANCES {
        let mut session = Direct::new(node, "chat", scope());
        session.event(event).await.unwrap();
        session.frames();
        live.push(session);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_kib();
    drop(live);

    serde_json::json!({
        "consumer": name,
        "module_mib": bytes.len() as f64 / (1024.0 * 1024.0),
        "compile_ms": median(compile_ms),
        "event_us": warm.as_secs_f64() * 1e6,
        "instantiate_us": fresh.saturating_sub(warm).as_secs_f64() * 1e6,
        "live_instance_kib": (after.saturating_sub(before)) as f64 / LIVE_INSTANCES as f64,
    })
}

/// The median time of one call, over `rounds` rounds of 10 calls.
async fn per_call(rounds: usize, mut call: impl AsyncFnMut()) -> Duration {
    let mut times = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        for _ in 0..10 {
            call().await;
        }
        times.push(started.elapsed() / 10);
    }
    times.sort();
    times[times.len() / 2]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A member of a room, as the chats see one (events need no database).
fn scope() -> Scope {
    Scope {
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
    }
}
