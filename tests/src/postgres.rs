//! A PostgreSQL server of the test's own, and chat servers on it.
//!
//! Debian's `postgresql` package (`scripts/install-test-services` installs
//! it): `initdb` into a temporary folder, a free loopback port, the socket
//! in that folder, stopped (and the folder removed) when dropped. As root,
//! where `initdb` refuses to run, the server runs as the `postgres` user
//! through `runuser`; nothing else needs root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use consumer_host::Authenticator;
use consumer_host::Server;
use consumer_host::config::{Config, DatabaseUrl};
use consumer_host::seed::Plan;

use crate::nodes::free_port;
use crate::{MemberLog, SECRET, chat_config, init_logging, metric_of};

/// A running PostgreSQL server.
pub struct Postgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    /// `runuser -u postgres --` when running as root.
    as_postgres: bool,
    dir: tempfile::TempDir,
    running: bool,
}

fn bin_folder() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: \
             apt-get install postgresql (scripts/install-test-services does)"
        )
    })
}

impl Postgres {
    /// `initdb`s and starts a server (`synchronous_commit = on`, fsync on).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server that speaks TLS with `tls`'s certificate, listening on
    /// 127.0.0.1 and 127.0.0.2, and refusing TCP clients that do not use TLS.
    pub fn start_tls(tls: &crate::nodes::Tls) -> Self {
        let (cert, key) = tls.server_files();
        Self::start_prepared(
            &[
                ("ssl", "on"),
                ("ssl_cert_file", "'server.crt'"),
                ("ssl_key_file", "'server.key'"),
                ("listen_addresses", "'127.0.0.1,127.0.0.2'"),
            ],
            |postgres| {
                for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                    let to = postgres.data().join(name);
                    std::fs::copy(from, &to).unwrap();
                    std::fs::set_permissions(
                        &to,
                        std::os::unix::fs::PermissionsExt::from_mode(0o600),
                    )
                    .unwrap();
                    if postgres.as_postgres {
                        let status = Command::new("chown")
                            .args(["postgres:postgres", to.to_str().unwrap()])
                            .status()
                            .unwrap();
                        assert!(status.success());
                    }
                }
                std::fs::write(
                    postgres.data().join("pg_hba.conf"),
                    "local all all trust\nhostssl all all 127.0.0.0/8 trust\n",
                )
                .unwrap();
            },
        )
    }

    /// Like [`Postgres::start`], with more `postgresql.conf` settings.
    pub fn start_with(settings: &[(&str, &str)]) -> Self {
        Self::start_prepared(settings, |_| {})
    }

    fn start_prepared(settings: &[(&str, &str)], prepare: impl FnOnce(&Self)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("consumer-host-pg.")
            .tempdir()
            .unwrap();
        let as_postgres = unsafe_is_root();
        if as_postgres {
            // The server's user must reach its folder.
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            let status = Command::new("chown")
                .args(["postgres:postgres", dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success(), "chown postgres {}", dir.path().display());
        }
        let mut postgres = Self {
            port: free_port(),
            bin: bin_folder(),
            as_postgres,
            dir,
            running: false,
        };
        postgres.run_ok(
            "initdb",
            &[
                "-D",
                postgres.data().to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
        );
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             max_connections = 300\nsynchronous_commit = on\nfsync = on\n",
            postgres.port,
            postgres.dir.path().display()
        );
        for (key, value) in settings {
            conf.push_str(&format!("{key} = {value}\n"));
        }
        let conf_path = postgres.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(&conf);
        std::fs::write(&conf_path, text).unwrap();
        prepare(&postgres);
        postgres.resume();
        postgres
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The folder the server keeps its files in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn run_ok(&self, program: &str, args: &[&str]) -> Output {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data();
        let log = self.dir.path().join("log");
        let mut all = vec![
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
        ];
        all.extend_from_slice(args);
        self.run_ok("pg_ctl", &all);
    }

    /// Starts it (again, on the same port and data).
    pub fn resume(&mut self) {
        self.pg_ctl(&["start"]);
        self.running = true;
    }

    /// Stops it: `fast` (sessions ended, a clean shutdown) or `immediate`
    /// (a crash: recovery from the WAL at the next start).
    pub fn stop(&mut self, mode: &str) {
        if self.running {
            self.pg_ctl(&["-m", mode, "stop"]);
            self.running = false;
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>` (trust: no password).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Runs SQL with `psql` on `db`; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Makes a database; its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// A client connected to `db` as the superuser.
    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let _ = self
                .command("pg_ctl")
                .args([
                    "-D",
                    data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ])
                .output();
        }
    }
}

fn unsafe_is_root() -> bool {
    // `id -u` rather than libc: the tests need nothing else of it.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A chat config on PostgreSQL at `url`.
pub fn pg_chat_config(url: &str, secret: &str) -> Config {
    let mut config = chat_config(Path::new("unused.sqlite3"), secret);
    config.database.url = Some(DatabaseUrl(url.to_string()));
    // Small pools: many servers share one PostgreSQL in a test run.
    config.database.pool_size = 4;
    config
}

/// A chat server on a PostgreSQL database of its own.
pub struct PgServer {
    /// The running node (taken by `stop`).
    pub server: Option<Server>,
    /// The database's URL.
    pub url: String,
    /// The database's name.
    pub db: String,
    auth: std::sync::Arc<Authenticator>,
}

impl PgServer {
    /// A chat server on a new database `db` of `postgres`.
    pub async fn start(postgres: &Postgres, db: &str) -> Self {
        Self::start_with(postgres, db, |_| {}).await
    }

    /// The same, with the config adjusted.
    pub async fn start_with(
        postgres: &Postgres,
        db: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let url = postgres.create_database(db);
        Self::start_on(url, db, adjust).await
    }

    /// A chat server on an existing database.
    pub async fn start_on(url: String, db: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        init_logging();
        let mut config = pg_chat_config(&url, SECRET);
        adjust(&mut config);
        let auth = Authenticator::new(&config.auth).unwrap();
        let server = Server::start(config).await.expect("the server starts");
        Self {
            server: Some(server),
            url,
            db: db.to_string(),
            auth,
        }
    }

    /// The node.
    pub fn node(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    /// `ws://.../ws/<room>/?token=<token>`
    pub fn url(&self, room: &str, token: &str) -> String {
        format!("ws://{}/ws/{room}/?token={token}", self.node().local_addr())
    }

    /// `ws://host:port`
    pub fn ws_base(&self) -> String {
        format!("ws://{}", self.node().local_addr())
    }

    /// An access token for a user id.
    pub fn token(&self, user_id: &str) -> String {
        self.auth.mint(user_id)
    }

    /// Conversations with members and tokens, made in the database.
    pub async fn seed(&self, rooms: usize, users_per_room: usize) -> Plan {
        seed(&self.url, rooms, users_per_room, &self.auth).await
    }

    /// A counter's value from `/metrics`.
    pub fn metric(&self, name: &str) -> i64 {
        metric_of(self.node(), name)
    }

    /// Shuts the node down gracefully.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// Seeds the database at `url` with the library's own seeding (as
/// `consumer-host seed` does).
pub async fn seed(url: &str, rooms: usize, users_per_room: usize, auth: &Authenticator) -> Plan {
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    consumer_host::db::postgres::migrate::apply(&mut client)
        .await
        .unwrap();
    consumer_host::db::postgres::seed::seed(
        &mut client,
        rooms,
        users_per_room,
        |id| auth.mint(id),
        |_| {},
    )
    .await
    .unwrap()
}

/// How many times each body was saved in `chat_conversationmessage`.
pub async fn saved_bodies(url: &str) -> HashMap<String, i64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query(
            "SELECT body, count(*) FROM chat_conversationmessage GROUP BY body",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// The chat's error frames in a log: their `code`s.
pub fn error_codes(log: &MemberLog) -> Vec<String> {
    log.received
        .iter()
        .filter(|frame| frame.get("type").is_some_and(|kind| kind == "error"))
        .map(|frame| frame["code"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Waits until `check` holds, up to `patience`.
pub async fn eventually(patience: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the Django app's `manage.py` on the database at `url`; its output
/// (stdout) and whether it succeeded, with stderr.
pub fn django_manage(url: &str, args: &[&str]) -> (bool, String, String) {
    let app = crate::languages::repository().join("tests/django_app");
    let out = Command::new(crate::languages::django_python())
        .arg(app.join("manage.py"))
        .args(args)
        .current_dir(&app)
        .env("CHAT_DB_URL", url)
        .env("JWT_SECRET", SECRET)
        .env_remove("CHAT_MIGRATIONS")
        .output()
        .expect("running Django");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every message of the database at `url` as Django's ORM reads it
/// (`tests/django_app/check_messages.py`).
pub fn django_messages(url: &str) -> serde_json::Value {
    let out = Command::new(crate::languages::django_python())
        .arg(crate::languages::repository().join("tests/django_app/check_messages.py"))
        .env("CHAT_DB_URL", url)
        .output()
        .expect("running Django");
    assert!(
        out.status.success(),
        "Django could not read the messages:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from chat_dump")
}
