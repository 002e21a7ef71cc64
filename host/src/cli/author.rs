//! An author's day: `new`, `test`, `build` and `dev`, in Rust, Python and
//! JavaScript.
//!
//! A consumer project is a folder with a `consumer.toml`:
//!
//! ```toml
//! name = "chat"                        # the consumer's name (what `dev` deploys to)
//! lang = "python"                      # rust | python | js
//! entry = "consumers:ChatConsumer"     # python: module:Class; js: file.js:Class; rust: the crate
//! ```
//!
//! The SDKs, their templates and the WIT are embedded in this binary and
//! written, once per version, into a cache folder (`CONSUMER_HOST_CACHE`,
//! else `$XDG_CACHE_HOME/consumer-host`, else `~/.cache/consumer-host`);
//! the languages' toolchains are found there too, or installed there
//! (componentize-py and componentize-js, pinned), with their progress shown.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};

use super::admin_client::{AdminTarget, admin_request_async};

include!(concat!(env!("OUT_DIR"), "/embedded_sdk.rs"));

/// componentize-py, pinned: the version the Python SDK is built and tested with.
const COMPONENTIZE_PY: &str = "0.25.1";
/// componentize-js, pinned (in `sdk/js/toolchain/package-lock.json`).
const COMPONENTIZE_JS: &str = "0.23.0";

/// The languages consumers are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Rust, on `consumer-host-sdk`.
    Rust,
    /// Python, with Channels' consumer classes (componentize-py).
    Python,
    /// JavaScript (componentize-js).
    Js,
}

impl Lang {
    fn folder(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }
}

/// A consumer project: its folder and its `consumer.toml`.
#[derive(Debug)]
pub struct Project {
    /// The folder.
    pub dir: PathBuf,
    /// The consumer's name.
    pub name: String,
    /// Its language.
    pub lang: Lang,
    /// What the language's build starts from.
    pub entry: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    lang: Lang,
    entry: String,
}

impl Project {
    /// Reads `DIR/consumer.toml`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("consumer.toml");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} is not a consumer project: no consumer.toml (make one with `consumer-host new`)",
                dir.display()
            )
        })?;
        let manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        check_name(&manifest.name).with_context(|| format!("{}: name", path.display()))?;
        Ok(Self {
            dir: dir.canonicalize()?,
            name: manifest.name,
            lang: manifest.lang,
            entry: manifest.entry,
        })
    }

    /// Where `build` writes the component unless told otherwise.
    pub fn default_output(&self) -> PathBuf {
        self.dir.join("dist").join(format!("{}.wasm", self.name))
    }
}

/// A consumer name: a folder, a crate, a consumer in a config.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "{name:?} is not a consumer name: use lowercase letters, digits, '-' and '_', starting with a letter"
        );
    }
    Ok(())
}

/// The cache folder of the SDKs, toolchains and compiled code.
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// `CONSUMER_HOST_CACHE`, else `$XDG_CACHE_HOME/consumer-host`, else
    /// `~/.cache/consumer-host`.
    pub fn from_env() -> anyhow::Result<Self> {
        let root = match (
            std::env::var_os("CONSUMER_HOST_CACHE"),
            std::env::var_os("XDG_CACHE_HOME"),
            std::env::var_os("HOME"),
        ) {
            (Some(dir), _, _) => PathBuf::from(dir),
            (None, Some(dir), _) => PathBuf::from(dir).join("consumer-host"),
            (None, None, Some(home)) => PathBuf::from(home).join(".cache/consumer-host"),
            (None, None, None) => bail!("no cache folder: set CONSUMER_HOST_CACHE or HOME"),
        };
        Ok(Self { root })
    }

    /// Compiled code, kept between runs of `serve`.
    pub fn compiled(&self) -> PathBuf {
        self.root.join("compiled")
    }

    /// The embedded SDKs and WIT, written out (once per version): the
    /// folder holding `sdk/` and `wit/`.
    pub fn sdk(&self) -> anyhow::Result<PathBuf> {
        let mut hash = Sha256::new();
        for (path, bytes) in FILES {
            hash.update(path.as_bytes());
            hash.update(bytes);
        }
        let digest = hex::encode(&hash.finalize()[..6]);
        let root = self
            .root
            .join(format!("sdk-{}-{digest}", env!("CARGO_PKG_VERSION")));
        if root.join(".complete").exists() {
            return Ok(root);
        }
        let partial = self
            .root
            .join(format!(".sdk-partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        for (path, bytes) in FILES {
            let file = partial.join(path);
            std::fs::create_dir_all(file.parent().expect("a file has a folder"))?;
            std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
        }
        std::fs::write(partial.join(".complete"), b"")?;
        match std::fs::rename(&partial, &root) {
            Ok(()) => {}
            // Another process wrote it first: theirs is as good.
            Err(_) if root.join(".complete").exists() => {
                let _ = std::fs::remove_dir_all(&partial);
            }
            Err(err) => return Err(err).with_context(|| format!("writing {}", root.display())),
        }
        Ok(root)
    }

    fn toolchain(&self, name: &str) -> PathBuf {
        self.root.join("toolchains").join(name)
    }
}

/// Prints a step of a long command.
fn step(text: &str) {
    eprintln!("==> {text}");
}

/// Runs a command with its output shown on stderr (stdout is this
/// command's answer, for scripts); fails with `what` if it fails.
fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("{what}: cannot run {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Whether a program answers `--version`.
fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

// --- new -------------------------------------------------------------------

/// `consumer-host new NAME --lang L`: a project in a new folder, from the
/// language's template, that builds and passes its test as it is.
pub fn new(name: &str, lang: Lang, parent: &Path) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} exists: choose another name or folder", dir.display());
    }
    let sdk = Cache::from_env()?.sdk()?;
    let template = sdk.join("sdk").join(lang.folder()).join("template");
    let sdk_path = sdk.join("sdk").join(lang.folder());
    copy_template(
        &template,
        &dir,
        &[
            ("{{name}}", name),
            ("{{sdk}}", &sdk_path.display().to_string()),
        ],
    )?;
    if lang == Lang::Js {
        // `node --test` finds the SDK as a package.
        std::fs::create_dir_all(dir.join("node_modules"))?;
        std::os::unix::fs::symlink(&sdk_path, dir.join("node_modules/consumer-host-sdk"))?;
    }
    Ok(dir)
}

fn copy_template(from: &Path, to: &Path, replace: &[(&str, &str)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_template(&entry.path(), &target, replace)?;
            continue;
        }
        let mut text = std::fs::read_to_string(entry.path())?;
        for (placeholder, value) in replace {
            text = text.replace(placeholder, value);
        }
        std::fs::write(&target, text)?;
    }
    Ok(())
}

// --- test ------------------------------------------------------------------

/// `consumer-host test DIR`: the project's own tests, natively.
pub fn test(dir: &Path) -> anyhow::Result<()> {
    let project = Project::load(dir)?;
    let sdk = Cache::from_env()?.sdk()?;
    match project.lang {
        Lang::Rust => run(
            Command::new("cargo").arg("test").current_dir(&project.dir),
            "cargo test",
        ),
        Lang::Python => {
            let python_path = std::env::join_paths([sdk.join("sdk/python"), project.dir.clone()])?;
            run(
                Command::new("python3")
                    .args(["-m", "unittest", "discover", "-v", "-s", "tests"])
                    .env("PYTHONPATH", python_path)
                    .env("CONSUMER_HOST_WIT", sdk.join("wit"))
                    .current_dir(&project.dir),
                "the Python tests",
            )
        }
        Lang::Js => run(
            Command::new("node")
                .arg("--import")
                .arg(sdk.join("sdk/js/register.mjs"))
                .arg("--test")
                .current_dir(&project.dir),
            "the JavaScript tests",
        ),
    }
}

// --- build -----------------------------------------------------------------

/// What `build` made.
pub struct Built {
    /// The component.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: usize,
    /// Its SHA-256.
    pub sha256: String,
    /// The consumer world version it was built for.
    pub world: &'static str,
    /// The event types it declared pure.
    pub pure_events: Vec<String>,
    /// How long building took (the checks included).
    pub elapsed: Duration,
}

/// `consumer-host build DIR [-o FILE]`: builds the component with the
/// language's toolchain (installed into the cache when missing), runs the
/// checks a deploy runs, and only then writes `output`.
pub fn build(project: &Project, output: &Path) -> anyhow::Result<Built> {
    let started = Instant::now();
    let cache = Cache::from_env()?;
    let sdk = cache.sdk()?;
    let partial = output.with_extension("wasm.partial");
    if let Some(folder) = output.parent() {
        std::fs::create_dir_all(folder)?;
    }
    step(&format!(
        "building {} ({:?}) from {}",
        project.name,
        project.lang,
        project.dir.display()
    ));
    match project.lang {
        Lang::Rust => {
            ensure_rust_toolchain()?;
            let artifact = guest_build::build_crate(&project.dir, &project.entry)
                .map_err(anyhow::Error::msg)?;
            std::fs::copy(&artifact, &partial)?;
        }
        Lang::Python => {
            let python = ensure_python_toolchain(&cache)?;
            run(
                Command::new(python)
                    .arg(sdk.join("sdk/python/consumer_host/build.py"))
                    .arg("--project")
                    .arg(&project.dir)
                    .arg("--entry")
                    .arg(&project.entry)
                    .arg("--wit")
                    .arg(sdk.join("wit"))
                    .arg("-o")
                    .arg(&partial),
                "componentize-py",
            )?;
        }
        Lang::Js => {
            let node_modules = ensure_js_toolchain(&cache, &sdk)?;
            run(
                Command::new("node")
                    .arg(sdk.join("sdk/js/build.mjs"))
                    .arg("--entry")
                    .arg(&project.entry)
                    .arg("--project")
                    .arg(&project.dir)
                    .arg("--wit")
                    .arg(sdk.join("wit"))
                    .arg("-o")
                    .arg(&partial)
                    .arg("--node-modules")
                    .arg(&node_modules),
                "componentize-js",
            )?;
        }
    }
    let bytes =
        std::fs::read(&partial).with_context(|| format!("reading {}", partial.display()))?;
    step(&format!(
        "checking it as a deploy would ({} bytes)",
        bytes.len()
    ));
    let version = check(&project.name, bytes.clone(), &cache)
        .with_context(|| format!("{} was built but fails the deploy checks", project.name))?;
    std::fs::rename(&partial, output)?;
    Ok(Built {
        path: output.to_path_buf(),
        size: bytes.len(),
        sha256: version.sha256.clone(),
        world: version.world_version(),
        pure_events: version.pure_events(),
        elapsed: started.elapsed(),
    })
}

/// The deploy's checks, in this process: a scratch node (a database in a
/// temporary folder, no listener) compiles the component, links it against
/// the host's imports and instantiates it once under a sandbox.
fn check(
    name: &str,
    bytes: Vec<u8>,
    cache: &Cache,
) -> anyhow::Result<Arc<crate::runtime::ModuleVersion>> {
    use crate::config::{ConsumerConfig, DatabaseConfig, RuntimeConfig};
    let scratch = tempfile_dir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let db_config = DatabaseConfig {
            path: scratch.join("check.sqlite3"),
            readers: 1,
            ..DatabaseConfig::default()
        };
        let db = crate::db::Database::open(&db_config, metrics.clone())?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let caps = Arc::new(crate::runtime::Capabilities {
            db: db.clone(),
            layer: crate::layer::Layer::Memory(crate::layer::MemoryLayer::new(metrics.clone())),
            pressure: crate::delivery::Pressure::new(metrics.clone()),
            metrics,
            max_send_bytes: 1 << 20,
            max_event_bytes: 1 << 20,
            max_instances: 4,
            shutdown,
        });
        let mut consumer = ConsumerConfig::new(scratch.join("module.wasm"));
        consumer.sandbox.memory_bytes = CHECK_MEMORY_BYTES;
        consumer.sandbox.event_deadline_ms = 1_000;
        let runtime_config = RuntimeConfig {
            pooling: false,
            compiled_cache: Some(cache.compiled()),
            ..RuntimeConfig::default()
        };
        let runtime = crate::runtime::Runtime::new(&runtime_config, CHECK_MEMORY_BYTES, caps)?;
        let checked = runtime
            .check(name, &consumer, bytes, "build".into())
            .await
            .map_err(anyhow::Error::new);
        db.close();
        checked
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Memory the checks give an instance: enough for any language's runtime
/// (CPython's starts at about 14 MiB); the server's config sets the real cap.
const CHECK_MEMORY_BYTES: usize = 256 * 1024 * 1024;

pub(super) fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "consumer-host-check-{}-{stamp}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A Rust route to wasm components: rustup's wasm32-wasip2, or Debian's
/// rustc-web (installed with apt-get where it can be).
fn ensure_rust_toolchain() -> anyhow::Result<()> {
    if guest_build::detect().is_ok() {
        return Ok(());
    }
    if available("rustup") {
        step("adding the wasm32-wasip2 target with rustup (2 minutes at most)");
        let mut child = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                eprintln!("rustup did not finish (no network to its servers?)");
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if guest_build::detect().is_ok() {
            return Ok(());
        }
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0"));
    if available("apt-get") && (root || available("sudo")) {
        step("installing Debian's rustc-web toolchain for wasm guests (about 400 MB)");
        let mut command = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        command
            .args(["install", "-y", "--no-install-recommends"])
            .args([
                "rustc-web",
                "cargo-web",
                "rust-web-src",
                "rust-web-llvm",
                "lld-22",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut command, "apt-get install")?;
        if guest_build::detect().is_ok() {
            return Ok(());
        }
    }
    bail!(
        "no toolchain builds Rust guests here: `rustup target add wasm32-wasip2`, or on Debian install rustc-web cargo-web rust-web-src rust-web-llvm lld-22"
    )
}

/// A venv in the cache with componentize-py (pinned); its Python.
fn ensure_python_toolchain(cache: &Cache) -> anyhow::Result<PathBuf> {
    let venv = cache.toolchain(&format!("componentize-py-{COMPONENTIZE_PY}"));
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import componentize_py"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if ready {
        return Ok(python);
    }
    if !available("python3") {
        bail!("Python consumers need python3 (3.11 or newer) to build");
    }
    step(&format!(
        "installing componentize-py {COMPONENTIZE_PY} into {} (once)",
        venv.display()
    ));
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "creating a venv",
    )?;
    run(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--disable-pip-version-check",
            &format!("componentize-py=={COMPONENTIZE_PY}"),
        ]),
        "pip install componentize-py",
    )?;
    Ok(python)
}

/// componentize-js and its helpers (pinned by the SDK's lock file) in the
/// cache; their node_modules.
fn ensure_js_toolchain(cache: &Cache, sdk: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache.toolchain(&format!("componentize-js-{COMPONENTIZE_JS}"));
    let node_modules = dir.join("node_modules");
    if node_modules
        .join("@bytecodealliance/componentize-js/package.json")
        .exists()
    {
        return Ok(node_modules);
    }
    if !available("node") || !available("npm") {
        bail!("JavaScript consumers need Node.js 20 and npm to build");
    }
    step(&format!(
        "installing componentize-js {COMPONENTIZE_JS} into {} (once, about 400 MB)",
        dir.display()
    ));
    std::fs::create_dir_all(&dir)?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(sdk.join("sdk/js/toolchain").join(file), dir.join(file))?;
    }
    run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir),
        "npm ci",
    )?;
    Ok(node_modules)
}

// --- dev -------------------------------------------------------------------

/// Files `dev` does not watch: build outputs and caches.
const NOT_WATCHED: &[&str] = &[
    "target",
    "dist",
    "node_modules",
    "__pycache__",
    ".git",
    ".venv",
    ".pytest_cache",
];

/// What identifies the sources' state: every watched file, its size and time.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if NOT_WATCHED.contains(&name.as_str()) || name.starts_with(".#") || name.ends_with('~')
            {
                continue;
            }
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                out.push((
                    entry.path(),
                    metadata.len(),
                    metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
    }
    out.sort();
    out
}

/// `consumer-host dev DIR --server URL`: builds, deploys, then watches the
/// sources and does it again at every save, printing what changed and any
/// error, until interrupted. Clients stay connected through every deploy.
pub fn dev(
    project: &Project,
    target: &AdminTarget,
    consumer: &str,
    poll: Duration,
) -> anyhow::Result<()> {
    let output = project.default_output();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut seen = fingerprint(&project.dir);
    let mut round = 0u64;
    loop {
        round += 1;
        step(&format!("build {round}"));
        match build(project, &output) {
            Ok(built) => {
                let bytes = std::fs::read(&built.path)?;
                let answer = runtime.block_on(admin_request_async(
                    target,
                    hyper::Method::PUT,
                    &format!("/admin/consumers/{consumer}"),
                    bytes,
                ));
                match answer {
                    Ok(text) => report_deploy(consumer, &built, &text),
                    Err(err) => eprintln!("deploy failed: {err:#}"),
                }
            }
            Err(err) => eprintln!("build failed: {err:#}"),
        }
        eprintln!(
            "watching {} for changes (Ctrl-C to stop)",
            project.dir.display()
        );
        let _ = std::io::stderr().flush();
        // Waits for a change, then for the files to hold still one poll.
        loop {
            std::thread::sleep(poll);
            let now = fingerprint(&project.dir);
            if now == seen {
                continue;
            }
            let changed: Vec<String> = now
                .iter()
                .filter(|file| !seen.contains(file))
                .filter_map(|(path, _, _)| path.strip_prefix(&project.dir).ok())
                .map(|path| path.display().to_string())
                .collect();
            std::thread::sleep(poll);
            let settled = fingerprint(&project.dir);
            if settled != now {
                continue;
            }
            eprintln!(
                "changed: {}",
                if changed.is_empty() {
                    "files removed".to_string()
                } else {
                    changed.join(", ")
                }
            );
            seen = settled;
            break;
        }
    }
}

fn report_deploy(consumer: &str, built: &Built, answer: &str) {
    let answer: serde_json::Value = serde_json::from_str(answer).unwrap_or_default();
    if answer["unchanged"] == true {
        eprintln!("deployed {consumer}: unchanged ({})", &built.sha256[..12]);
        return;
    }
    let previous = answer["previous"]
        .as_str()
        .unwrap_or("")
        .get(..12)
        .unwrap_or("");
    eprintln!(
        "deployed {consumer}: {previous} -> {} ({} bytes, world {}) in {:.0} ms; connections move at their next event",
        &built.sha256[..12],
        built.size,
        built.world,
        answer["activation_ms"].as_f64().unwrap_or(0.0)
    );
}
