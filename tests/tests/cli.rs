//! The command line as scripts use it: `seed`, `token`, `migrate`, `serve`,
//! run as real processes.

use std::path::Path;
use std::process::Command;

use consumer_host_tests::nodes::spawn_serving;
use consumer_host_tests::{TestServer, chat_message, connect, guest};
use serde_json::Value as Json;

const SECRET: &str = "cli-test-secret";

fn host_cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_host-cli"));
    command
        .env_remove("JWT_SECRET")
        .env_remove("CONSUMER_HOST_CONFIG")
        .env_remove("CONSUMER_HOST_DB");
    command
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        command,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_and_minted_tokens_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite3");
    let plan: Json = serde_json::from_str(&run_ok(
        host_cli()
            .args([
                "seed",
                "--db",
                db.to_str().unwrap(),
                "--rooms",
                "2",
                "--users-per-room",
                "3",
            ])
            .env("JWT_SECRET", SECRET),
    ))
    .unwrap();
    let rooms = plan["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 2);
    assert!(
        rooms
            .iter()
            .all(|room| room["users"].as_array().unwrap().len() == 3)
    );
    let room = &rooms[0];
    let user = |n: usize| &room["users"][n];

    let alice_id = user(0)["id"].as_str().unwrap();
    let minted = run_ok(
        host_cli()
            .args(["token", "--db", db.to_str().unwrap(), "--user", alice_id])
            .env("JWT_SECRET", SECRET),
    );
    let minted = minted.trim();

    let server = TestServer::start_on(dir, db, SECRET, |_| {}).await;
    let room_id = room["id"].as_str().unwrap();
    let mut alice = connect(&server.url(room_id, Some(minted))).await;
    let mut bob = connect(&server.url(room_id, Some(user(1)["token"].as_str().unwrap()))).await;
    let mut carol = connect(&server.url(room_id, Some(user(2)["token"].as_str().unwrap()))).await;
    alice
        .send_text(&chat_message(
            room_id,
            user(1)["id"].as_str().unwrap(),
            "",
            "from a minted token",
        ))
        .await;
    for ws in [&mut alice, &mut bob, &mut carol] {
        let frame = ws.next_json().await;
        assert_eq!(frame["body"], "from a minted token");
        assert_eq!(frame["name"], user(0)["name"]);
    }
}

#[test]
fn mistakes_are_explained_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite3");
    let db = db.to_str().unwrap();

    let out = host_cli()
        .args(["seed", "--db", db, "--rooms", "1", "--users-per-room", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET"));

    let out = host_cli()
        .args(["seed", "--db", db, "--rooms", "0", "--users-per-room", "1"])
        .env("JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));

    let token_for_alice = || {
        host_cli()
            .args([
                "token",
                "--db",
                db,
                "--user",
                "9f5ba441-036f-4f39-9ea6-258e3206e909",
            ])
            .env("JWT_SECRET", SECRET)
            .output()
            .unwrap()
    };
    let out = token_for_alice();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no database at"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!Path::new(db).exists(), "token does not create a database");

    run_ok(host_cli().args(["migrate", "--db", db]));
    let out = token_for_alice();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no active user"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = host_cli()
        .args(["serve", "--config", "/nonexistent/host.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/host.toml"));
}

fn write_config(dir: &Path, db_in_file: &str) -> std::path::PathBuf {
    let config = format!(
        r#"
listen = "127.0.0.1:1"
[database]
path = "{db_in_file}"
[[route]]
path = "ws/<room_name>/"
consumer = "chat"
[consumer.chat]
module = "{module}"
read = ["chat_conversation_users"]
write = ["chat_conversationmessage"]
[runtime]
max_instances = 100
"#,
        module = guest("chat").display()
    );
    let path = dir.join("host.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sockets_with_1001_and_keeps_every_saved_message() {
    let dir = tempfile::tempdir().unwrap();
    // The flag beats the file: the file names a database that must not appear.
    let config = write_config(dir.path(), "from-file.sqlite3");
    let db = dir.path().join("from-flag.sqlite3");
    let plan: Json = serde_json::from_str(&run_ok(
        host_cli()
            .args([
                "seed",
                "--config",
                config.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
            ])
            .args(["--rooms", "1", "--users-per-room", "2"])
            .env("JWT_SECRET", SECRET),
    ))
    .unwrap();
    let (child, addr) = spawn_serving(
        host_cli()
            .args([
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
            ])
            .args(["--listen", "127.0.0.1:0"])
            .env("JWT_SECRET", SECRET),
    );
    assert!(!dir.path().join("from-file.sqlite3").exists());

    let room = &plan["rooms"][0];
    let room_id = room["id"].as_str().unwrap();
    let url = |n: usize| {
        format!(
            "ws://{addr}/ws/{room_id}/?token={}",
            room["users"][n]["token"].as_str().unwrap()
        )
    };
    let mut alice = connect(&url(0)).await;
    let mut bob = connect(&url(1)).await;
    let to_bob = room["users"][1]["id"].as_str().unwrap();
    for n in 0..20 {
        alice
            .send_text(&chat_message(room_id, to_bob, "", &format!("m{n}")))
            .await;
    }
    for n in 0..20 {
        assert_eq!(bob.next_json().await["body"], format!("m{n}"));
    }

    let stopped = tokio::spawn(terminate(child));
    assert_eq!(alice.expect_close().await, 1001);
    assert_eq!(bob.expect_close().await, 1001);
    let status = stopped.await.unwrap();
    assert!(status.success(), "serve exited with {status}");

    let saved: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM chat_conversationmessage", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(saved, 20);
}

#[test]
fn the_sample_secret_serves_loopback_only() {
    // The repository's own sample config, with its placeholder secret.
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../consumer-host.toml");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite3");
    let out = host_cli()
        .args(["serve", "--config", sample.to_str().unwrap()])
        .args(["--db", db.to_str().unwrap(), "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "served beyond loopback");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("placeholder") && stderr.contains("32 bytes"),
        "{stderr}"
    );
    // A secret of its own: still refused, for the chat page it turns on,
    // which mints tokens for anyone who reaches it.
    let out = host_cli()
        .args(["serve", "--config", sample.to_str().unwrap()])
        .args(["--db", db.to_str().unwrap(), "--listen", "0.0.0.0:0"])
        .env("JWT_SECRET", "a-secret-of-at-least-thirty-two-bytes!")
        .output()
        .unwrap();
    assert!(!out.status.success(), "served the demo beyond loopback");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[demo] enabled = false"), "{stderr}");
    // The demo off, and the same command serves.
    let text = std::fs::read_to_string(&sample).unwrap();
    assert!(
        text.contains("\nenabled = true\n"),
        "the sample turns the demo on"
    );
    let module = sample
        .parent()
        .unwrap()
        .join("guest-consumers/dist/chat.wasm");
    let text = text
        .replace("\nenabled = true\n", "\nenabled = false\n")
        .replace("guest-consumers/dist/chat.wasm", module.to_str().unwrap());
    let config = dir.path().join("no-demo.toml");
    std::fs::write(&config, text).unwrap();
    let (mut child, _addr) = spawn_serving(
        host_cli()
            .args(["serve", "--config", config.to_str().unwrap()])
            .args(["--db", db.to_str().unwrap(), "--listen", "0.0.0.0:0"])
            .env("JWT_SECRET", "a-secret-of-at-least-thirty-two-bytes!"),
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `serve` with the config `[log] format` given (and `extra` flags),
/// refuses one handshake and opens and closes one connection, stops it, and
/// returns every line it wrote to stderr.
async fn serve_and_log(format_in_file: &str, extra: &[&str]) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "db.sqlite3");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("[log]\nformat = \"{format_in_file}\"\n"));
    std::fs::write(&config, text).unwrap();
    let plan: Json = serde_json::from_str(&run_ok(
        host_cli()
            .args(["seed", "--config", config.to_str().unwrap()])
            .args(["--rooms", "1", "--users-per-room", "1"])
            .env("JWT_SECRET", SECRET),
    ))
    .unwrap();
    let mut child = host_cli()
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("JWT_SECRET", SECRET)
        .env_remove("CONSUMER_HOST_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[node] {line}");
            if let Some(addr) = line.strip_prefix("consumer-host listening on ") {
                let _ = addr_tx.send(addr.to_string());
            }
            lines.push(line);
        }
        lines
    });
    let addr = addr_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("serve prints its address");

    let room = &plan["rooms"][0];
    let room_id = room["id"].as_str().unwrap();
    let no_token = format!("ws://{addr}/ws/{room_id}/");
    assert_eq!(consumer_host_tests::refused_status(&no_token).await, 403);
    let token = room["users"][0]["token"].as_str().unwrap();
    let client = connect(&format!("ws://{addr}/ws/{room_id}/?token={token}")).await;
    client.close().await;
    // The close is logged once the connection has ended on the server.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let status = terminate(child).await;
    assert!(status.success(), "serve exited with {status}");
    reader.join().unwrap()
}

/// Sends SIGTERM to a serving process and waits for it to exit.
async fn terminate(mut child: std::process::Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_from_the_config_and_each_refusal_and_close_is_logged_once() {
    let lines = serve_and_log("json", &[]).await;
    let events: Vec<Json> = lines
        .iter()
        .filter(|line| !line.starts_with("consumer-host listening on "))
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect();
    assert!(
        events
            .iter()
            .all(|event| event["level"].is_string() && event["timestamp"].is_string()),
        "{events:#?}"
    );
    let with = |message: &str| -> Vec<&Json> {
        events
            .iter()
            .filter(|event| event["message"] == message)
            .collect()
    };
    let refused = with("handshake refused");
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert_eq!(refused[0]["status"], 403);
    assert!(refused[0]["reason"].is_string());
    let closed = with("connection closed");
    assert_eq!(closed.len(), 1, "{events:#?}");
    // The test client closes without a status code: 1005, as RFC 6455 says.
    assert_eq!(closed[0]["code"], 1005);
    assert_eq!(closed[0]["by"], "client");
    assert_eq!(with("listening").len(), 1, "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_beats_the_file_and_text_logs_have_no_colour_off_a_terminal() {
    let lines = serve_and_log("json", &["--log-format", "text"]).await;
    assert!(
        lines.iter().any(|line| line.contains("handshake refused")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|line| !line.starts_with('{')),
        "JSON lines despite --log-format text: {lines:#?}"
    );
    assert!(
        lines.iter().all(|line| !line.contains('\u{1b}')),
        "colour codes in a log that is not a terminal: {lines:#?}"
    );
}
