//! An operator's tools, used as an operator would: `status` and `check`
//! run as the real binary against a real server and real files, the
//! Grafana dashboard's queries checked against what a real server exports,
//! and SIGHUP sent to a real `serve` process.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use consumer_host::config::LayerKind;
use consumer_host_tests::nodes::{LAYER_KEY, Redis};
use consumer_host_tests::raw::{self, Outcome};
use consumer_host_tests::{
    PATIENCE, TestServer, Traffic, chat_message, connect, guest, http_get, refused_status,
    try_connect,
};
use serde_json::Value as Json;

const ADMIN_TOKEN: &str = "operators-admin-token-0123456789";
const SECRET: &str = "operators-test-secret";

fn host_cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_host-cli"));
    for variable in [
        "JWT_SECRET",
        "CONSUMER_HOST_CONFIG",
        "CONSUMER_HOST_DB",
        "CONSUMER_HOST_SERVER",
        "CONSUMER_HOST_ADMIN_TOKEN",
    ] {
        command.env_remove(variable);
    }
    command
}

/// Runs a command off the reactor; returns (success, stdout, stderr).
async fn run(mut command: Command) -> (bool, String, String) {
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The number before `suffix` in `text` (`messages in 123.4/s` → 123.4).
fn number_before(text: &str, suffix: &str) -> f64 {
    let end = text
        .find(suffix)
        .unwrap_or_else(|| panic!("{suffix:?} in\n{text}"));
    let start = text[..end]
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |at| at + 1);
    text[start..end].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_versions_connections_rates_and_refusals() {
    let server = TestServer::start_with(|config| {
        config.admin.token = Some(ADMIN_TOKEN.into());
        config.limits.messages_per_second = 0.0;
    })
    .await;
    let plan = server.seed(2, 2);
    let traffic = Traffic::start(&server.ws_base(), &plan, Duration::from_millis(20)).await;
    // Two refusals: a path with no route, a room the user is not in.
    assert_eq!(
        refused_status(&format!("{}/nowhere/", server.ws_base())).await,
        404
    );
    let stranger = &plan.rooms[1].users[0].token;
    assert_eq!(
        refused_status(&server.url(&plan.rooms[0].id, Some(stranger))).await,
        403
    );

    let mut status = host_cli();
    status.args([
        "status",
        "--server",
        &format!("http://{}", server.node().local_addr()),
        "--token",
        ADMIN_TOKEN,
    ]);
    let started = Instant::now();
    let (ok, text, stderr) = run(status).await;
    let took = started.elapsed();
    assert!(ok, "status failed: {stderr}");
    eprintln!("{text}");
    assert!(
        took >= Duration::from_secs(1),
        "two samples, a second apart"
    );
    let (current, _) = server.node().versions("chat").unwrap();
    for expected in [
        "consumer-host 0.1.0 at http://",
        ": ok",
        "4 open",
        &format!("current {}: 4 connections", &current[..12]),
        "2 since start",
        "1 refused by the consumer (403)",
        "1 no route (404)",
        "layer         memory",
        "database      sqlite",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    // 4 members, 50 messages a second each; each message reaches 2 members.
    let messages_in = number_before(&text, "/s, deliveries out");
    let deliveries = number_before(&text, "/s, group sends");
    assert!(
        (100.0..=300.0).contains(&messages_in),
        "{messages_in} in\n{text}"
    );
    assert!(
        deliveries >= 1.5 * messages_in,
        "{deliveries} deliveries for {messages_in} messages"
    );

    let mut as_json = host_cli();
    as_json.args([
        "status",
        "--json",
        "--interval",
        "0.5",
        "--server",
        &format!("http://{}", server.node().local_addr()),
        "--token",
        ADMIN_TOKEN,
    ]);
    let (ok, out, stderr) = run(as_json).await;
    assert!(ok, "{stderr}");
    let status: Json = serde_json::from_str(&out).unwrap();
    assert!(
        status["rates"]["messages_received"].as_f64().unwrap() > 50.0,
        "{status}"
    );
    assert_eq!(status["refusals"]["unrouted"], 1);
    assert_eq!(status["consumers"][0]["current"]["connections"], 4);
    assert_eq!(status["limits"]["max_connections_per_user"], 64);
    traffic.stop().await;

    let mut wrong_token = host_cli();
    wrong_token.args([
        "status",
        "--server",
        &format!("http://{}", server.node().local_addr()),
        "--token",
        "not-the-admin-token-at-all",
    ]);
    let (ok, _, stderr) = run(wrong_token).await;
    assert!(!ok);
    assert!(stderr.contains("401"), "{stderr}");
}

/// A config file for the chat (and `extra` TOML after it) in `dir`.
fn write_config(dir: &Path, name: &str, db: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
listen = "127.0.0.1:0"
[database]
path = "{db}"
[auth]
secret = "{SECRET}"
[runtime]
max_instances = 50
[[route]]
path = "ws/<room_name>/"
consumer = "chat"
[consumer.chat]
module = "{chat}"
read = ["chat_conversation_users"]
write = ["chat_conversationmessage"]
{extra}
"#,
        db = db.display(),
        chat = guest("chat").display(),
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_good_config_and_names_every_problem_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite3");
    let good = write_config(dir.path(), "good.toml", &db, "");
    let check = |config: &Path| {
        let mut command = host_cli();
        command.args(["check", "--config", config.to_str().unwrap()]);
        command
    };

    let (ok, out, stderr) = run(check(&good)).await;
    assert!(ok, "{out}\n{stderr}");
    assert!(out.contains("consumer chat:"), "{out}");
    assert!(
        out.contains("compiles, links and instantiates (world 0.2.0"),
        "{out}"
    );
    assert!(out.contains("does not exist yet"), "{out}");
    assert!(out.contains("no problems found"), "{out}");
    assert!(!db.exists(), "check creates no database");

    let mut migrate = host_cli();
    migrate.args(["migrate", "--db", db.to_str().unwrap()]);
    assert!(run(migrate).await.0);
    let (ok, out, stderr) = run(check(&good)).await;
    assert!(ok, "{out}\n{stderr}");
    assert!(
        out.contains("migrations up to date: 0001_django_chat"),
        "{out}"
    );
    assert!(out.contains("every table it is granted exists"), "{out}");

    // Everything wrong at once: each is named, and the command fails.
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm not really").unwrap();
    let bad = write_config(
        dir.path(),
        "bad.toml",
        &db,
        &format!(
            r#"
[[route]]
path = "ghost/"
consumer = "ghost"
[consumer.traps]
module = "{traps}"
[consumer.wrong]
module = "{wrong}"
[consumer.garbage]
module = "{garbage}"
[consumer.gone]
module = "{gone}"
[consumer.typo]
module = "{chat}"
read = ["chat_conversation_user"]
[demo]
enabled = true
"#,
            traps = guest("trap_on_init").display(),
            wrong = guest("wrong_world").display(),
            garbage = garbage.display(),
            gone = dir.path().join("missing.wasm").display(),
            chat = guest("chat").display(),
        ),
    );
    // Beyond loopback, where the demo and a weak secret are refused.
    let text = std::fs::read_to_string(&bad)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    std::fs::write(&bad, text).unwrap();
    let (ok, out, stderr) = run(check(&bad)).await;
    eprintln!("{out}\n{stderr}");
    assert!(!ok, "a bad config passed");
    for named in [
        "\"ghost\"",
        "consumer traps",
        "consumer wrong",
        "consumer garbage",
        "consumer gone",
        "missing.wasm",
        "chat_conversation_user\"]",
        "[demo] enabled",
        "JWT secret is unsafe",
    ] {
        assert!(stderr.contains(named), "{named:?} in\n{stderr}");
    }
    assert!(stderr.contains("8 problems"), "{stderr}");
    // The good consumer of the bad file still checks out.
    assert!(out.contains("ok       consumer chat:"), "{out}");
}

/// Every `expr` (and query) of the dashboard, wherever it is nested.
fn queries(value: &Json, out: &mut Vec<String>) {
    match value {
        Json::Object(fields) => {
            for (key, field) in fields {
                match (key.as_str(), field) {
                    ("expr" | "definition" | "query", Json::String(text)) => {
                        out.push(text.clone());
                    }
                    _ => queries(field, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|item| queries(item, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_metrics_the_server_exports() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/grafana/consumer-host.json");
    let dashboard: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    let names = metric_names(&exprs);
    assert!(
        names.len() >= 30,
        "the dashboard covers the node: {names:?}"
    );

    // A node on the Redis layer exports every metric, the layer's included.
    let redis = Redis::start();
    let server = TestServer::start_with(|config| {
        config.layer.kind = LayerKind::Redis;
        config.layer.url = Some(redis.url());
        config.layer.key = Some(LAYER_KEY.into());
    })
    .await;
    let (status, text) = http_get(server.node().local_addr(), "/metrics").await;
    assert_eq!(status, 200);
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(String::from)
        .collect();
    let unknown: Vec<&String> = names
        .iter()
        .filter(|name| !exported.contains(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the server does not export: {unknown:?}"
    );
    let not_shown: Vec<&String> = exported
        .iter()
        .filter(|metric| !names.contains(*metric))
        .collect();
    eprintln!("exported but not on the dashboard: {not_shown:?}");
    // What queries group by: labels the metrics have (`code` on closes,
    // `reason` on auth failures) or that Prometheus adds.
    for expr in &exprs {
        for group in expr.split("by (").skip(1) {
            for label in group.split(')').next().unwrap().split(',') {
                assert!(
                    ["instance", "job", "code", "reason"].contains(&label.trim()),
                    "{label} in {expr}"
                );
            }
        }
    }
}

/// The metric names in PromQL expressions: `consumer_host_` and what follows.
fn metric_names(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("consumer_host_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

/// A `serve` process whose log lines the test reads.
struct Serving {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
}

impl Serving {
    fn start(config: &Path) -> Self {
        let mut child = host_cli()
            .args(["serve", "--config", config.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[serve] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serving = Self {
            child,
            addr: String::new(),
            lines,
        };
        let line = serving.wait_for(|line| line.starts_with("consumer-host listening on "));
        serving.addr = line
            .trim_start_matches("consumer-host listening on ")
            .into();
        serving
    }

    /// The next log line that `matches` (the lines before it are passed over).
    fn wait_for(&mut self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => {}
                Err(err) => panic!("no such log line within the patience: {err}"),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_limits_and_routes_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite3");
    let before = "[limits]\nmax_connections_per_user = 2\n";
    let config = write_config(dir.path(), "host.toml", &db, before);
    let mut seed = host_cli();
    seed.args(["seed", "--config", config.to_str().unwrap()])
        .args(["--rooms", "1", "--users-per-room", "4"]);
    let (ok, plan, stderr) = run(seed).await;
    assert!(ok, "{stderr}");
    let plan: Json = serde_json::from_str(&plan).unwrap();
    let room = plan["rooms"][0]["id"].as_str().unwrap().to_string();
    let user = |n: usize| plan["rooms"][0]["users"][n].clone();
    let token = |n: usize| user(n)["token"].as_str().unwrap().to_string();

    let mut serving = tokio::task::block_in_place(|| Serving::start(&config));
    let addr = serving.addr.clone();
    let url = |path: &str, n: usize| format!("ws://{addr}/{path}/{room}/?token={}", token(n));
    // Carol tries the origins, Dave the routes at the end.
    let origin = [("Origin", "https://elsewhere.example")];
    let from_elsewhere = format!("/ws/{room}/?token={}", token(2));

    // Before: two connections each, any origin, one route.
    let mut alice = connect(&url("ws", 0)).await;
    let _alice_again = connect(&url("ws", 0)).await;
    assert_eq!(refused_status(&url("ws", 0)).await, 429);
    let socket_addr = addr.parse().unwrap();
    assert!(
        raw::handshake(socket_addr, &from_elsewhere, &origin)
            .await
            .is_ok()
    );
    assert_eq!(refused_status(&url("chat", 1)).await, 404);

    // The file changes: one connection per user, one origin, a second
    // route; and a new address, which cannot change while serving.
    let after = "[limits]\nmax_connections_per_user = 1\nallowed_origins = [\"https://chat.example\"]\n\
                 [[route]]\npath = \"chat/<room_name>/\"\nconsumer = \"chat\"\n";
    let text = std::fs::read_to_string(write_config(dir.path(), "next.toml", &db, after))
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    std::fs::write(&config, text).unwrap();
    serving.signal("HUP");
    let refused = tokio::task::block_in_place(|| {
        serving.wait_for(|line| line.contains("configuration change not applied"))
    });
    assert!(
        refused.contains("key=listen") && refused.contains("restart"),
        "{refused}"
    );
    let reloaded = tokio::task::block_in_place(|| {
        serving.wait_for(|line| line.contains("configuration reloaded"))
    });
    for key in [
        "limits.allowed_origins",
        "limits.max_connections_per_user",
        "route",
    ] {
        assert!(reloaded.contains(key), "{key} in {reloaded}");
    }

    // After: Bob gets one connection, a second is refused; the other origin
    // is refused; the new route serves; Alice's two sockets stay open.
    let mut bob = connect(&url("chat", 1)).await;
    assert_eq!(refused_status(&url("ws", 1)).await, 429);
    assert!(matches!(
        raw::handshake(socket_addr, &from_elsewhere, &origin).await,
        Err(Outcome::Status(403))
    ));
    let to_bob = user(1)["id"].as_str().unwrap().to_string();
    alice
        .send_text(&chat_message(&room, &to_bob, "", "after the reload"))
        .await;
    assert_eq!(bob.next_json().await["body"], "after the reload");
    assert_eq!(alice.next_json().await["body"], "after the reload");

    // A route to a consumer the node does not run: the routes stay as they
    // are, and the log says why.
    let text = std::fs::read_to_string(&config).unwrap()
        + "[[route]]\npath = \"echo/\"\nconsumer = \"echo\"\n[consumer.echo]\nmodule = \"echo.wasm\"\n";
    std::fs::write(&config, text).unwrap();
    serving.signal("HUP");
    let refused =
        tokio::task::block_in_place(|| serving.wait_for(|line| line.contains("key=route")));
    assert!(
        refused.contains("names consumer") && refused.contains("echo"),
        "{refused}"
    );
    tokio::task::block_in_place(|| {
        serving.wait_for(|line| line.contains("configuration reloaded"))
    });
    assert!(
        try_connect(&url("chat", 3)).await.is_ok(),
        "the routes in force still serve"
    );
    assert_eq!(refused_status(&format!("ws://{addr}/echo/")).await, 404);

    // A file that does not parse changes nothing.
    std::fs::write(&config, "listen = ").unwrap();
    serving.signal("HUP");
    let failed = tokio::task::block_in_place(|| {
        serving.wait_for(|line| line.contains("configuration not reloaded"))
    });
    assert!(failed.contains("invalid config file"), "{failed}");
    assert!(serving.child.try_wait().unwrap().is_none(), "still serving");
    serving.signal("TERM");
    assert_eq!(alice.expect_close().await, 1001);
}
