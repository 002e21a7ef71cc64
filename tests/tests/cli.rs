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
    let (mut child, addr) = spawn_serving(
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

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(alice.expect_close().await, 1001);
    assert_eq!(bob.expect_close().await, 1001);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
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
    // A secret of its own, and the same command serves.
    let (mut child, _addr) = spawn_serving(
        host_cli()
            .args(["serve", "--config", sample.to_str().unwrap()])
            .args(["--db", db.to_str().unwrap(), "--listen", "0.0.0.0:0"])
            .env("JWT_SECRET", "a-secret-of-at-least-thirty-two-bytes!"),
    );
    let _ = child.kill();
    let _ = child.wait();
}
