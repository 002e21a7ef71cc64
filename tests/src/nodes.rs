//! Real processes: a Redis server and consumer-host nodes (`host-cli serve`),
//! for the tests of several nodes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value as Json;

use crate::{SECRET, guest, http_get};

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of the test's own, on loopback, with no persistence.
pub struct Redis {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts one; `.ci/run` installs redis-server (Debian's package).
    pub fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.resume();
        redis
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (its clients see their connections close).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("starting redis-server (apt-get install redis-server; .ci/run does): {err}")
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Subscribers of a channel, as Redis counts them (one per node).
    pub fn subscribers(&self, channel: &str) -> i64 {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "PUBSUB", "NUMSUB", channel])
            .output()
            .expect("redis-cli");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(-1)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The key every test node signs its published events with.
pub const LAYER_KEY: &str = "test-layer-key-shared-by-every-node-0123456789";

/// A config file for a node of the chat (and the hostile test consumer) on
/// the Redis layer.
pub fn node_config(dir: &Path, name: &str, db: &Path, redis_url: &str, prefix: &str) -> PathBuf {
    let config = format!(
        r#"
listen = "127.0.0.1:0"
[database]
path = "{db}"
[auth]
secret = "{SECRET}"
[layer]
kind = "redis"
url = "{redis_url}"
prefix = "{prefix}"
key = "{LAYER_KEY}"
[limits]
messages_per_second = 0
[[route]]
path = "hostile/"
consumer = "hostile"
[[route]]
path = "ws/<room_name>/"
consumer = "chat"
[consumer.chat]
module = "{chat}"
read = ["chat_conversation_users"]
write = ["chat_conversationmessage"]
[consumer.hostile]
module = "{hostile}"
# In the chat's group namespace: it can join the chat's rooms (tests of
# membership across nodes use it as a listener).
group_namespace = "chat"
[runtime]
max_instances = 200
"#,
        db = db.display(),
        chat = guest("chat").display(),
        hostile = guest("hostile").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    path
}

/// Spawns a `serve` command and returns it with the address it printed
/// (`consumer-host listening on <addr>`); its stderr keeps being drained.
pub fn spawn_serving(command: &mut Command) -> (Child, String) {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Shown with the test's output when it fails.
            eprintln!("[node] {line}");
            if !sent && let Some(addr) = line.strip_prefix("consumer-host listening on ") {
                let _ = tx.send(addr.to_string());
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("serve prints its address");
    (child, addr)
}

/// A consumer-host process.
pub struct Node {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl Node {
    /// Runs `<cli> serve --config <config>` (the test's
    /// `env!("CARGO_BIN_EXE_host-cli")`) and waits until it listens.
    pub fn start(cli: &str, config: &Path) -> Self {
        let (child, addr) = spawn_serving(
            Command::new(cli)
                .args(["serve", "--config", config.to_str().unwrap()])
                .env_remove("JWT_SECRET"),
        );
        Self {
            addr: addr.parse().unwrap(),
            child,
        }
    }

    /// `ws://host:port`
    pub fn ws_base(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// `/healthz` as JSON.
    pub async fn health(&self) -> Json {
        let (status, body) = http_get(self.addr, "/healthz").await;
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// A value from `/metrics`.
    pub async fn metric(&self, name: &str) -> i64 {
        let (_, body) = http_get(self.addr, "/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
