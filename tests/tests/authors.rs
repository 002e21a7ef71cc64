//! An author's day, as an author has it: `new` makes a project that passes
//! its own tests and builds, in every language; `dev` rebuilds and
//! hot-swaps into a running server at every save, and no client is dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use consumer_host::config::{ConsumerConfig, RouteConfig};
use consumer_host_tests::{TestServer, connect};

const CLI: &str = env!("CARGO_BIN_EXE_host-cli");
const ADMIN_TOKEN: &str = "admin-token-for-the-tests";

fn cli(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(CLI)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running host-cli")
}

fn succeeds(args: &[&str], dir: &Path) -> String {
    let out = cli(args, dir);
    assert!(
        out.status.success(),
        "host-cli {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn new_project_builds_and_passes_its_tests(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("first-{lang}");
    let made = succeeds(&["new", &name, "--lang", lang], dir.path());
    let project = dir.path().join(&name);
    assert_eq!(Path::new(made.trim()), Path::new(".").join(&name));
    assert!(project.join("consumer.toml").exists());
    succeeds(&["test", project.to_str().unwrap()], dir.path());
    let output = succeeds(&["build", project.to_str().unwrap()], dir.path());
    let component = std::fs::read(output.trim()).unwrap();
    assert_eq!(&component[..8], b"\0asm\x0d\x00\x01\x00", "a component");
    // A second `new` of the same name is refused, and nothing is touched.
    let again = cli(&["new", &name, "--lang", lang], dir.path());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
}

#[test]
fn a_new_rust_project_builds_and_passes_its_tests() {
    new_project_builds_and_passes_its_tests("rust");
}

#[test]
fn a_new_python_project_builds_and_passes_its_tests() {
    new_project_builds_and_passes_its_tests("python");
}

#[test]
fn a_new_javascript_project_builds_and_passes_its_tests() {
    new_project_builds_and_passes_its_tests("js");
}

#[test]
fn mistakes_in_a_project_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&["build", "."], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no consumer.toml"));
    let out = cli(&["new", "Not A Name", "--lang", "rust"], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a consumer name"));
    std::fs::write(
        dir.path().join("consumer.toml"),
        "name = \"x\"\nlang = \"cobol\"\nentry = \"x\"\n",
    )
    .unwrap();
    let out = cli(&["build", "."], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cobol"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_hot_swaps_every_save_into_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let project = root.join("live");
    let built = tokio::task::spawn_blocking(move || {
        succeeds(&["new", "live", "--lang", "rust"], &root);
        succeeds(&["build", "live"], &root)
    })
    .await
    .unwrap();
    let module = std::path::PathBuf::from(built.trim());
    let server = TestServer::start_with(|config| {
        config.admin.token = Some(ADMIN_TOKEN.into());
        config.routes.insert(
            0,
            RouteConfig {
                path: "live/<room>/".into(),
                consumer: "live".into(),
            },
        );
        let mut live = ConsumerConfig::new(&module);
        live.watch = false;
        config.consumers.insert("live".into(), live);
    })
    .await;
    let plan = server.seed(1, 1);
    let token = &plan.rooms[0].users[0].token;
    let mut client = connect(&format!("{}/live/tea/?token={token}", server.ws_base())).await;

    let mut dev = Command::new(CLI)
        .args(["dev", project.to_str().unwrap(), "--server"])
        .arg(format!("http://{}", server.node().local_addr()))
        .args(["--token", ADMIN_TOKEN])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, deployed) = std::sync::mpsc::channel::<String>();
    let stderr = dev.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[dev] {line}");
            if line.starts_with("deployed") || line.contains("failed") {
                let _ = lines.send(line);
            }
        }
    });
    let next = |deployed: &std::sync::mpsc::Receiver<String>| {
        deployed
            .recv_timeout(Duration::from_secs(240))
            .expect("dev deploys")
    };
    // The first round: the same module, nothing to change.
    let first = tokio::task::block_in_place(|| next(&deployed));
    assert!(first.contains("unchanged"), "{first}");

    // The author edits the handler and saves.
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let edited = source.replace(
        r#"cx.send_json(&json!({ "text": event.get("text"), "from": event.get("from") }))"#,
        r#"cx.send_json(&json!({ "text": event.get("text"), "from": event.get("from"), "edited": true }))"#,
    );
    assert_ne!(
        edited, source,
        "the template's handler is where the test expects it"
    );
    std::fs::write(&lib, edited).unwrap();
    let second = tokio::task::block_in_place(|| next(&deployed));
    assert!(second.contains("->"), "{second}");

    // The same connection, now served by the new version.
    client.send_text(r#"{"text": "after the save"}"#).await;
    let frame = client.next_json().await;
    assert_eq!(frame["text"], "after the save");
    assert_eq!(frame["edited"], true);
    assert_eq!(server.metric("consumer_host_deploys_total"), 1);
    assert_eq!(server.metric("consumer_host_connections_open"), 1);
    let _ = dev.kill();
    let _ = dev.wait();
}
