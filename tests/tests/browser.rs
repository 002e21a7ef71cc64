//! The chat page (`[demo] enabled`) as a newcomer uses it: in a real
//! browser, Debian's chromium driven by Playwright (`tests/browser/chat.mjs`),
//! against a real server, which shuts down under the open panes at the end;
//! then the rows the page made are read from the database.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM`), `node` and `npm`:
//! `scripts/install-test-services` installs them. `playwright-core` is
//! installed from `tests/browser/package-lock.json` into the target folder,
//! once per version of the lock file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use consumer_host_tests::{TestServer, http_request};
use serde_json::Value as Json;

/// The folder holding `node_modules/playwright-core`, installed from the
/// committed lock file when it is missing or the lock changed.
fn playwright_modules() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let lock = std::fs::read(source.join("package-lock.json")).unwrap();
    let installed = dir
        .join("node_modules/playwright-core/package.json")
        .exists()
        && std::fs::read(dir.join("package-lock.json")).ok().as_ref() == Some(&lock);
    if !installed {
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(source.join(file), dir.join(file)).unwrap();
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|err| {
                panic!("cannot run npm ({err}): run scripts/install-test-services")
            });
        assert!(
            out.status.success(),
            "npm ci in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

fn chromium() -> PathBuf {
    let path = PathBuf::from(std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "no {}: run scripts/install-test-services (it installs Debian's chromium)",
        path.display()
    );
    path
}

fn hex(id: &str) -> String {
    uuid::Uuid::parse_str(id).unwrap().simple().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_chat_through_the_page() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let modules = playwright_modules();
    let chromium = chromium();
    let mut server = TestServer::start_with(|config| config.demo.enabled = true).await;
    let url = format!("http://{}", server.node().local_addr());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/chat.mjs");
    let mut browser = tokio::process::Command::new("node")
        .arg(script)
        .env("CHAT_URL", url)
        .env("BROWSER_MODULES", modules)
        .env("CHROMIUM", chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (scripts/install-test-services installs it)");
    let mut stdout = BufReader::new(browser.stdout.take().unwrap()).lines();
    let mut stderr = browser.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let patience = Duration::from_secs(120);
    // The page's steps, then the server shuts down under the open panes.
    let turn = tokio::time::timeout(patience, stdout.next_line()).await;
    if !matches!(&turn, Ok(Ok(Some(line))) if line == "SHUT DOWN NOW") {
        let _ = browser.kill().await;
        panic!("the browser run failed:\n{}", stderr.await.unwrap());
    }
    server.stop().await;
    let mut stdin = browser.stdin.take().unwrap();
    stdin.write_all(b"stopped\n").await.unwrap();
    let last = tokio::time::timeout(patience, stdout.next_line()).await;
    let status = tokio::time::timeout(patience, browser.wait()).await;
    let log = stderr.await.unwrap();
    eprintln!("{log}");
    assert!(
        matches!(status, Ok(Ok(status)) if status.success()),
        "the browser run failed:\n{log}"
    );
    let result: Json =
        serde_json::from_str(&last.unwrap().unwrap().expect("a JSON line")).expect("one JSON line");
    assert!(
        result["error_shown"]
            .as_str()
            .unwrap()
            .contains("unknown_event"),
        "{result}"
    );
    assert!(
        result["close_shown"]
            .as_str()
            .unwrap()
            .contains("closed with 1001"),
        "{result}"
    );

    let db = server.db();
    let conversation = hex(result["conversation"].as_str().unwrap());
    let (alice, bob) = (
        hex(result["alice"].as_str().unwrap()),
        hex(result["bob"].as_str().unwrap()),
    );
    let mut members: Vec<String> = db
        .prepare("SELECT user_id FROM chat_conversation_users WHERE conversation_id = ?1")
        .unwrap()
        .query_map([&conversation], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    members.sort();
    let mut expected = vec![alice.clone(), bob.clone()];
    expected.sort();
    assert_eq!(members, expected, "the conversation's members");
    for (id, name) in [(&alice, "Alice"), (&bob, "Bob")] {
        let (stored_name, email): (String, String) = db
            .query_row(
                "SELECT name, email FROM useraccount_user WHERE id = ?1 AND is_active",
                [id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(stored_name, name);
        assert!(email.ends_with("@demo.invalid"), "{email}");
    }
    let sent = result["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 3);
    for message in sent {
        let rows: Vec<(String, String, String)> = db
            .prepare(
                "SELECT conversation_id, created_by_id, sent_to_id FROM chat_conversationmessage \
                 WHERE body = ?1",
            )
            .unwrap()
            .query_map([message["body"].as_str().unwrap()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [(
                conversation.clone(),
                hex(message["by"].as_str().unwrap()),
                hex(message["to"].as_str().unwrap())
            )],
            "{message}"
        );
    }
    // The malformed frame wrote nothing.
    assert_eq!(server.message_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_answers_only_this_machine_and_only_when_on() {
    let off = TestServer::start().await;
    let (status, _) = http_request(off.node().local_addr(), "GET", "/", &[], b"").await;
    assert_eq!(status, 404, "off by default");
    let (status, _) =
        http_request(off.node().local_addr(), "GET", "/demo/api/users", &[], b"").await;
    assert_eq!(status, 404);

    let on = TestServer::start_with(|config| config.demo.enabled = true).await;
    let addr = on.node().local_addr();
    let (status, page) = http_request(addr, "GET", "/", &[], b"").await;
    assert_eq!(status, 200);
    assert!(page.contains("/demo/app.js"), "{page}");
    let json = [("Content-Type", "application/json")];
    let (status, body) =
        http_request(addr, "POST", "/demo/api/users", &json, br#"{"name":"Eve"}"#).await;
    assert_eq!(status, 201, "{body}");
    let eve: Json = serde_json::from_str(&body).unwrap();
    for (headers, expected) in [
        (vec![("X-Forwarded-For", "203.0.113.7")], "proxy"),
        (vec![("Forwarded", "for=203.0.113.7")], "proxy"),
        (vec![("Host", "rebound.example:80")], "localhost"),
    ] {
        let (status, body) = http_request(addr, "GET", "/demo/api/users", &headers, b"").await;
        assert_eq!(status, 403, "{headers:?}: {body}");
        assert!(body.contains(expected), "{body}");
    }
    // A form post (what another site's page can send without asking) is refused.
    let form = [("Content-Type", "text/plain")];
    let token_request = format!(r#"{{"user":"{}"}}"#, eve["id"].as_str().unwrap());
    let (status, _) = http_request(
        addr,
        "POST",
        "/demo/api/token",
        &form,
        token_request.as_bytes(),
    )
    .await;
    assert_eq!(status, 415);
    let (status, body) = http_request(
        addr,
        "POST",
        "/demo/api/token",
        &json,
        token_request.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Tokens only for demo users: a seeded (non-demo) user is not one.
    let plan = on.seed(1, 1);
    let seeded = format!(r#"{{"user":"{}"}}"#, plan.rooms[0].users[0].id);
    let (status, body) =
        http_request(addr, "POST", "/demo/api/token", &json, seeded.as_bytes()).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http_request(
        addr,
        "POST",
        "/demo/api/conversations",
        &json,
        format!(r#"{{"users":["{0}","{0}"]}}"#, eve["id"].as_str().unwrap()).as_bytes(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
}
