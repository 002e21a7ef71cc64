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
    password: Option<String>,
    tls: Option<Tls>,
}

/// A certificate authority and a server certificate for 127.0.0.1, made
/// with `openssl` for one test.
pub struct Tls {
    /// The CA's certificate (what clients trust).
    pub ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tls {
    /// The server's certificate and key files.
    pub fn server_files(&self) -> (&Path, &Path) {
        (&self.cert_file, &self.key_file)
    }

    /// Makes a CA and a server certificate signed by it.
    pub fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=consumer-host test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            path("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ]);
        Self {
            ca_file: path("ca.crt"),
            cert_file: path("server.crt"),
            key_file: path("server.key"),
            _dir: dir,
        }
    }
}

impl Redis {
    /// Starts one; `.ci/run` installs redis-server (Debian's package).
    pub fn start() -> Self {
        Self::start_with(None, None)
    }

    /// Starts one that requires `password` (AUTH), and speaks only TLS
    /// when given certificates.
    pub fn start_with(password: Option<&str>, tls: Option<Tls>) -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
            password: password.map(String::from),
            tls,
        };
        redis.resume();
        redis
    }

    /// Its URL: `redis://127.0.0.1:<port>/`, or `rediss://` with TLS, with
    /// the password when there is one.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let auth = self
            .password
            .as_ref()
            .map(|password| format!(":{password}@"))
            .unwrap_or_default();
        format!("{scheme}://{auth}127.0.0.1:{}/", self.port)
    }

    /// The CA file clients must trust, with TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.ca_file.as_path())
    }

    /// A `redis-cli` command for this server (TLS and password included).
    pub fn cli(&self) -> Command {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &self.port.to_string()]);
        if let Some(tls) = &self.tls {
            command.args(["--tls", "--cacert", tls.ca_file.to_str().unwrap()]);
        }
        if let Some(password) = &self.password {
            command.args(["-a", password, "--no-auth-warning"]);
        }
        command
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
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => command.args(["--port", &port]),
            Some(tls) => command.args([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                tls.cert_file.to_str().unwrap(),
                "--tls-key-file",
                tls.key_file.to_str().unwrap(),
                "--tls-ca-cert-file",
                tls.ca_file.to_str().unwrap(),
                "--tls-auth-clients",
                "no",
            ]),
        };
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
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
        let out = self
            .cli()
            .args(["PUBSUB", "NUMSUB", channel])
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
    node_config_with(dir, name, db, redis_url, prefix, "")
}

/// [`node_config`], with more `[layer]` keys (TOML lines).
pub fn node_config_with(
    dir: &Path,
    name: &str,
    db: &Path,
    redis_url: &str,
    prefix: &str,
    layer: &str,
) -> PathBuf {
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
{layer}
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

    /// Kills the process at once (SIGKILL): no shutdown, no goodbyes.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
