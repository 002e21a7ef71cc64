//! Hot swap: a new version of the chat consumer goes live under steady
//! traffic, by each of the three ways, with no socket closed and every
//! message delivered to every member exactly once and saved exactly once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use consumer_host_tests::{
    SECRET, TestServer, Traffic, assert_exactly_once, assert_saved_once, guest, http_request,
};
use serde_json::Value as Json;

const ADMIN_TOKEN: &str = "admin-token-for-the-tests";
const TRAFFIC_INTERVAL: Duration = Duration::from_millis(20);

/// A chat server whose module is a copy in its own folder (so the test can
/// rewrite it), with the admin API on and a quick file watcher.
async fn swappable_server() -> (TestServer, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("chat.wasm");
    std::fs::copy(guest("chat"), &module).unwrap();
    let db = dir.path().join("db.sqlite3");
    let watched = module.clone();
    let server = TestServer::start_on(dir, db, SECRET, move |config| {
        config.admin.token = Some(ADMIN_TOKEN.into());
        config.runtime.watch_interval_ms = 100;
        config.consumers.get_mut("chat").unwrap().module = watched;
    })
    .await;
    (server, module)
}

fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

async fn admin(server: &TestServer, method: &str, path: &str, body: &[u8]) -> (u16, Json) {
    admin_at(server.node().local_addr(), method, path, body).await
}

/// An admin request with the right token to an address.
async fn admin_at(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Json) {
    let auth = bearer();
    let (status, body) = http_request(
        addr,
        method,
        path,
        &[("Authorization", auth.as_str())],
        body,
    )
    .await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Json::String(body)),
    )
}

fn v2() -> Vec<u8> {
    std::fs::read(guest("chat_v2")).unwrap()
}

fn host_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_host-cli"))
        .args(args)
        .env("CONSUMER_HOST_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap()
}

/// Writes `bytes` to a file and runs `deploy chat <file>` against the server.
async fn deploy_with_cli(server: &TestServer, name: &str, bytes: &[u8]) -> std::process::Output {
    let file = server.dir.path().join(name);
    std::fs::write(&file, bytes).unwrap();
    let url = format!("http://{}", server.node().local_addr());
    tokio::task::spawn_blocking(move || {
        host_cli(&["deploy", "chat", file.to_str().unwrap(), "--server", &url])
    })
    .await
    .unwrap()
}

/// Waits until the consumer's current version has `sha256`.
async fn wait_for_version(server: &TestServer, sha256: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while current_sha(server) != sha256 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "version {sha256} never became current"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The hash of the chat consumer's current version.
fn current_sha(server: &TestServer) -> String {
    server.node().versions("chat").unwrap().0
}

fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Frames for messages sent after `after` carry `tag`; some frames before
/// the swap carried none. Returns how many frames were tagged.
fn assert_tagged_after(
    logs: &[consumer_host_tests::MemberLog],
    after: Duration,
    tag: Option<&str>,
) -> usize {
    use std::collections::HashMap;
    let sent_at: HashMap<&str, Duration> = logs
        .iter()
        .flat_map(|log| log.sent.iter().map(|(body, at)| (body.as_str(), *at)))
        .collect();
    let mut tagged = 0;
    for log in logs {
        for frame in &log.received {
            let at = sent_at[frame["body"].as_str().unwrap()];
            if at > after {
                assert_eq!(
                    frame["version"].as_str(),
                    tag,
                    "a message sent after the swap: {frame}"
                );
            }
            if frame.get("version").is_some() {
                tagged += 1;
            }
        }
    }
    tagged
}

enum Way {
    File,
    AdminApi,
    Cli,
}

async fn swap_under_traffic(way: Way) {
    let (server, module) = swappable_server().await;
    let plan = server.seed(3, 3);
    let traffic = Traffic::start(&server.ws_base(), &plan, TRAFFIC_INTERVAL).await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    let new = v2();
    let new_sha = sha256_of(&new);
    match way {
        Way::File => write_slowly(&module, &new).await,
        Way::AdminApi => {
            let (status, body) = admin(&server, "PUT", "/admin/consumers/chat", &new).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["version"]["sha256"], new_sha.as_str());
        }
        Way::Cli => {
            let out = deploy_with_cli(&server, "v2.wasm", &new).await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let printed: Json = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(printed["version"]["sha256"], new_sha.as_str());
        }
    }
    wait_for_version(&server, &new_sha).await;
    let swapped_at = traffic.elapsed();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let logs = traffic.stop().await;

    let messages = assert_exactly_once(&logs);
    assert_saved_once(&server, &logs);
    assert!(messages > 100, "steady traffic: {messages} messages");
    let tagged = assert_tagged_after(&logs, swapped_at, Some("v2"));
    assert!(tagged > 0 && tagged < logs.iter().map(|log| log.received.len()).sum::<usize>());
    assert_eq!(server.metric("consumer_host_deploys_total"), 1);
    // Every connection now runs the new version; none is left on the old one.
    let (status, versions) = admin(&server, "GET", "/admin/consumers", b"").await;
    assert_eq!(status, 200);
    let chat = &versions["consumers"][0];
    assert_eq!(chat["current"]["sha256"], new_sha.as_str());
    assert_eq!(chat["previous"].as_array().unwrap().len(), 1);
    assert_eq!(chat["previous"][0]["connections"], 0);
}

/// Rewrites the file in place, in two halves with a pause: the watcher sees
/// the half-written file, refuses it, and deploys the whole one.
async fn write_slowly(module: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::File::create(module).unwrap();
    file.write_all(&bytes[..bytes.len() / 2]).unwrap();
    file.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    file.write_all(&bytes[bytes.len() / 2..]).unwrap();
    file.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_by_changing_the_module_file() {
    swap_under_traffic(Way::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_through_the_admin_api() {
    swap_under_traffic(Way::AdminApi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_with_the_deploy_command() {
    swap_under_traffic(Way::Cli).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_file_is_never_loaded() {
    let (server, module) = swappable_server().await;
    let original = std::fs::read(&module).unwrap();
    let new = v2();
    std::fs::write(&module, &new[..new.len() / 2]).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        current_sha(&server),
        sha256_of(&original),
        "the half file was not loaded"
    );
    assert!(server.metric("consumer_host_deploy_refusals_total") >= 1);
    std::fs::write(&module, &new).unwrap();
    wait_for_version(&server, &sha256_of(&new)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_modules_are_refused_and_traffic_goes_on() {
    let (server, module) = swappable_server().await;
    let plan = server.seed(2, 3);
    let original_sha = current_sha(&server);
    let traffic = Traffic::start(&server.ws_base(), &plan, TRAFFIC_INTERVAL).await;

    let garbage = b"\0asm this is not a component".to_vec();
    let wrong_world = std::fs::read(guest("wrong_world")).unwrap();
    let traps = std::fs::read(guest("trap_on_init")).unwrap();
    for (what, bytes, says) in [
        ("garbage", garbage.clone(), "not a valid consumer component"),
        (
            "the wrong world",
            wrong_world,
            "not a valid consumer component",
        ),
        (
            "a module that traps on instantiation",
            traps,
            "does not instantiate",
        ),
    ] {
        let (status, body) = admin(&server, "PUT", "/admin/consumers/chat", &bytes).await;
        assert_eq!(status, 422, "{what}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(says), "{what}: {message}");
    }
    // The command line says why, and fails.
    let out = deploy_with_cli(&server, "garbage.wasm", &garbage).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("422") && stderr.contains("not a valid consumer component"),
        "{stderr}"
    );
    // A broken file is refused too.
    std::fs::write(&module, &garbage).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let logs = traffic.stop().await;
    assert_exactly_once(&logs);
    assert_saved_once(&server, &logs);
    assert_tagged_after(&logs, Duration::ZERO, None);
    let (current, previous) = server.node().versions("chat").unwrap();
    assert_eq!(current, original_sha);
    assert!(previous.is_empty());
    assert_eq!(server.metric("consumer_host_deploy_refusals_total"), 5);
    assert_eq!(server.metric("consumer_host_deploys_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_returns_to_the_previous_version_under_traffic() {
    let (server, _module) = swappable_server().await;
    let plan = server.seed(2, 3);
    let original_sha = current_sha(&server);
    let (status, _) = admin(&server, "POST", "/admin/consumers/chat/rollback", b"").await;
    assert_eq!(status, 409, "nothing to roll back to yet");

    let (status, body) = admin(&server, "PUT", "/admin/consumers/chat", &v2()).await;
    assert_eq!(status, 200, "{body}");
    let traffic = Traffic::start(&server.ws_base(), &plan, TRAFFIC_INTERVAL).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let url = format!("http://{}", server.node().local_addr());
    let out =
        tokio::task::spawn_blocking(move || host_cli(&["rollback", "chat", "--server", &url]))
            .await
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_version(&server, &original_sha).await;
    let rolled_back_at = traffic.elapsed();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let logs = traffic.stop().await;

    assert_exactly_once(&logs);
    assert_saved_once(&server, &logs);
    // Before the rollback the frames were tagged; after it, none is.
    assert!(assert_tagged_after(&logs, rolled_back_at, None) > 0);
    assert_eq!(server.metric("consumer_host_rollbacks_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_its_token() {
    let (server, _module) = swappable_server().await;
    let addr = server.node().local_addr();
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong-token-wrong-token")],
        vec![("Authorization", ADMIN_TOKEN)],
    ] {
        let (status, _) = http_request(addr, "GET", "/admin/consumers", &headers, b"").await;
        assert_eq!(status, 401, "{headers:?}");
        let (status, _) = http_request(addr, "PUT", "/admin/consumers/chat", &headers, &v2()).await;
        assert_eq!(status, 401, "{headers:?}");
    }
    assert_eq!(admin(&server, "GET", "/admin/consumers", b"").await.0, 200);
    assert_eq!(
        admin(&server, "PUT", "/admin/consumers/nope", &v2())
            .await
            .0,
        404
    );
    assert_eq!(server.metric("consumer_host_deploys_total"), 0);

    // No token configured: there is no admin API.
    let plain = TestServer::start().await;
    assert_eq!(
        admin_at(plain.node().local_addr(), "GET", "/admin/consumers", b"")
            .await
            .0,
        404
    );

    // On an address of its own, it is not on the public one.
    let separate = TestServer::start_with(|config| {
        config.admin.token = Some(ADMIN_TOKEN.into());
        config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    assert_eq!(
        admin_at(separate.node().local_addr(), "GET", "/admin/consumers", b"")
            .await
            .0,
        404
    );
    let admin_addr = separate.node().admin_addr().unwrap();
    let (status, body) = admin_at(admin_addr, "GET", "/admin/consumers", b"").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_chat_and_a_0_2_chat_side_by_side_swap_into_each_other() {
    use consumer_host::config::{ConsumerConfig, RouteConfig};
    // The chat on the consumer world 0.2.0 (the SDK) at ws/..., and the one
    // built for 0.1.0 (raw bindings) at old/ws/..., in one group namespace:
    // the members of a room are spread over both.
    let server = TestServer::start_with(|config| {
        config.admin.token = Some(ADMIN_TOKEN.into());
        config.routes.insert(
            0,
            RouteConfig {
                path: "old/ws/<room_name>/".into(),
                consumer: "chat-old".into(),
            },
        );
        let mut old = ConsumerConfig::new(guest("chat_v01"));
        old.read = vec!["chat_conversation_users".into()];
        old.write = vec!["chat_conversationmessage".into()];
        old.group_namespace = Some("chat".into());
        config.consumers.insert("chat-old".into(), old);
    })
    .await;
    let world = |versions: &Json, name: &str| -> String {
        versions["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|consumer| consumer["name"] == name)
            .map(|consumer| consumer["current"]["world"].as_str().unwrap().to_string())
            .unwrap()
    };
    let (_, versions) = admin(&server, "GET", "/admin/consumers", b"").await;
    assert_eq!(world(&versions, "chat"), "0.2.0");
    assert_eq!(world(&versions, "chat-old"), "0.1.0");

    let plan = server.seed(3, 4);
    let bases = [server.ws_base(), format!("{}/old", server.ws_base())];
    let traffic = Traffic::start_spread(&bases, &plan, TRAFFIC_INTERVAL).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Each takes the other's module, under traffic.
    let old_bytes = std::fs::read(guest("chat_v01")).unwrap();
    let new_bytes = std::fs::read(guest("chat")).unwrap();
    let (status, body) = admin(&server, "PUT", "/admin/consumers/chat", &old_bytes).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin(&server, "PUT", "/admin/consumers/chat-old", &new_bytes).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let logs = traffic.stop().await;

    let messages = assert_exactly_once(&logs);
    assert!(messages > 100, "steady traffic: {messages} messages");
    assert_saved_once(&server, &logs);
    let (_, versions) = admin(&server, "GET", "/admin/consumers", b"").await;
    assert_eq!(world(&versions, "chat"), "0.1.0");
    assert_eq!(world(&versions, "chat-old"), "0.2.0");
    assert_eq!(server.metric("consumer_host_guest_traps_total"), 0);
}
