//! Consumers in Python and JavaScript on a real server: the reference
//! Channels consumer ported to the Python SDK (only its imports and its ORM
//! call changed) and the JavaScript chat, under chat traffic; every member
//! gets every message, every message is saved once and Django's ORM reads
//! them all. Then both languages deployed under traffic.

use std::path::PathBuf;
use std::time::Duration;

use consumer_host_tests::languages::{built, compiled_cache, django_messages, example, variant};
use consumer_host_tests::{TestServer, Traffic, assert_exactly_once, assert_saved_once};

const CLI: &str = env!("CARGO_BIN_EXE_host-cli");

/// The chat consumer of a language, built by `host-cli build`.
async fn chat_of(lang: &'static str) -> PathBuf {
    tokio::task::spawn_blocking(move || built(CLI, &example(lang, "chat")))
        .await
        .unwrap()
}

/// A chat server running `module` as its chat consumer.
async fn server_with(module: PathBuf, admin: bool) -> TestServer {
    TestServer::start_with(move |config| {
        config.runtime.compiled_cache = Some(compiled_cache());
        if admin {
            config.admin.token = Some("admin-token-for-the-tests".into());
        }
        let chat = config.consumers.get_mut("chat").unwrap();
        chat.module = module;
        // CPython starts at about 14 MiB of linear memory, SpiderMonkey at 9.
        chat.sandbox.memory_bytes = 64 * 1024 * 1024;
        chat.sandbox.event_deadline_ms = 1_000;
    })
    .await
}

async fn chat_end_to_end(lang: &'static str) {
    let server = server_with(chat_of(lang).await, false).await;
    let plan = server.seed(2, 3);
    let traffic = Traffic::start(&server.ws_base(), &plan, Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = traffic.stop().await;
    let messages = assert_exactly_once(&logs);
    assert!(messages > 50, "{lang}: {messages} messages");
    assert_saved_once(&server, &logs);
    // Django's ORM reads every one of them, with its author and recipient.
    let db = server.db_path.clone();
    let read = tokio::task::spawn_blocking(move || django_messages(&db))
        .await
        .unwrap();
    let read = read.as_array().unwrap();
    assert_eq!(read.len(), messages, "{lang}: messages Django reads");
    for message in read {
        assert_eq!(message["id"].as_str().unwrap().len(), 36, "{message}");
        assert!(
            message["created_at"].as_str().unwrap().ends_with("+00:00"),
            "{message}"
        );
        assert_eq!(
            message["created_by_id"].as_str().unwrap().len(),
            36,
            "{message}"
        );
        assert_eq!(
            message["sent_to_id"].as_str().unwrap().len(),
            36,
            "{message}"
        );
    }
    assert_eq!(server.metric("consumer_host_guest_traps_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_chat_reaches_every_member_and_saves_once() {
    chat_end_to_end("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_chat_reaches_every_member_and_saves_once() {
    chat_end_to_end("js").await;
}

/// Deploys `module` as the chat through the admin API.
async fn deploy(server: &TestServer, module: &std::path::Path) {
    let bytes = std::fs::read(module).unwrap();
    let (status, body) = consumer_host_tests::http_request(
        server.node().local_addr(),
        "PUT",
        "/admin/consumers/chat",
        &[("Authorization", "Bearer admin-token-for-the-tests")],
        &bytes,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Traffic runs while `next` is deployed; nothing is lost or doubled.
async fn deploy_under_traffic(server: &TestServer, next: &std::path::Path) {
    let plan = server.seed(2, 3);
    let traffic = Traffic::start(&server.ws_base(), &plan, Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    deploy(server, next).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let logs = traffic.stop().await;
    let messages = assert_exactly_once(&logs);
    assert!(messages > 50, "{messages} messages");
    assert_saved_once(server, &logs);
    assert_eq!(server.metric("consumer_host_deploys_total"), 1);
    assert_eq!(server.metric("consumer_host_guest_traps_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_of_the_python_chat_deployed_under_traffic_loses_nothing() {
    let project = example("python", "chat");
    let copy = variant(&project, "consumers.py", "# The next version.");
    let copy_path = copy.path().to_path_buf();
    let first = chat_of("python").await;
    let next = tokio::task::spawn_blocking(move || built(CLI, &copy_path))
        .await
        .unwrap();
    let server = server_with(first, true).await;
    deploy_under_traffic(&server, &next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_chat_takes_over_from_the_rust_chat_under_traffic() {
    let js = chat_of("js").await;
    let server = server_with(consumer_host_tests::guest("chat"), true).await;
    deploy_under_traffic(&server, &js).await;
}
