//! The WebAssembly runtime: one engine, the consumers and their versions.
//!
//! - [`bindings`]: the generated Rust side of the WIT world (0.2.0 and 0.1.0).
//! - [`imports`]: the host imports a consumer calls, one file per interface.
//! - [`conn`]: what a connection owns across instances, and the narrow
//!   [`Capabilities`] imports may use.
//! - [`session`]: one connection's consumer instance, created, called,
//!   replaced and evicted (instances are disposable).
//! - [`render`]: pure events rendered once for every member.
//! - [`deploy`] and [`watch`]: hot swap, by request or by file change.
//!
//! A module is compiled once into a [`ModuleVersion`] (compiled code plus an
//! `InstancePre` with every import resolved) off the async reactor; each
//! connection instantiates it into its own `Store`. The current version of a
//! consumer sits behind an atomic pointer, so making a new one current is a
//! single swap that the next event of every connection observes.
//!
//! The runtime depends on the database, the layer and the metrics (through
//! [`Capabilities`]), never on the HTTP side of the node.

pub mod bindings;
pub mod conn;
pub mod deploy;
pub mod imports;
pub mod render;
pub mod session;
pub mod watch;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use crate::config::{ConsumerConfig, RuntimeConfig};
use crate::db::Grant;
pub use conn::Capabilities;
use imports::HostState;
pub use session::Fault;

/// How often the epoch advances; CPU deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// A module that cannot become a consumer version, and why.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a valid component, or it does not fit the `consumer` world (a
    /// missing export, an import the host does not provide...).
    #[error("not a valid consumer component: {0}")]
    Invalid(String),
    /// The compiler could not be run (no thread, or it panicked).
    #[error("compiling failed: {0}")]
    Compiler(String),
}

/// The engine and every configured consumer.
pub struct Runtime {
    compiler: Arc<Compiler>,
    consumers: BTreeMap<String, Arc<Consumer>>,
    caps: Arc<Capabilities>,
    keep_versions: usize,
    ticker: Arc<AtomicBool>,
}

/// What compiling a module needs: cheap to clone onto a compiling thread.
struct Compiler {
    engine: Engine,
    linker: Linker<HostState>,
    /// Where compiled code is kept between runs, and the engine's key.
    cache: Option<(PathBuf, String)>,
}

/// Feeds what a `Hash` writes into SHA-256, for a key that is the same in
/// every process with the same engine settings.
struct Sha256Hasher(Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only finalize is used")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn engine_key(engine: &Engine) -> String {
    use std::hash::Hash;
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

impl Compiler {
    /// The module compiled: from the cache when this engine compiled it
    /// before, else compiled now (and kept in the cache).
    fn component(&self, bytes: &[u8], sha256: &str) -> Result<Component, wasmtime::Error> {
        let Some((dir, key)) = &self.cache else {
            return Component::new(&self.engine, bytes);
        };
        let path = dir.join(format!("{sha256}-{key}.cwasm"));
        if path.exists() {
            let started = std::time::Instant::now();
            // SAFETY: the file was written below, by `serialize` on an engine
            // with the same settings (the key says so), into a folder that
            // only this server's user may write (see README, "Compiled
            // code cache"); wasmtime also checks the engine before using it.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => {
                    tracing::info!(
                        sha256,
                        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                        "compiled code loaded from the cache"
                    );
                    return Ok(component);
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "unusable compiled code in the cache; compiling again");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let started = std::time::Instant::now();
        let component = Component::new(&self.engine, bytes)?;
        tracing::info!(
            sha256,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "compiled"
        );
        if let Err(err) = component
            .serialize()
            .map_err(|err| std::io::Error::other(err.to_string()))
            .and_then(|compiled| write_atomically(&path, &compiled))
        {
            tracing::warn!(path = %path.display(), error = %err, "cannot keep compiled code in the cache");
        }
        Ok(component)
    }

    fn compile(&self, bytes: &[u8], source: &str) -> Result<ModuleVersion, LoadError> {
        let invalid = |err: wasmtime::Error| LoadError::Invalid(format!("{err:#}"));
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = self.component(bytes, &sha256).map_err(invalid)?;
        let pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let pre = bindings::ExportsPre::new(pre).map_err(LoadError::Invalid)?;
        Ok(ModuleVersion {
            id: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
            info: OnceLock::new(),
            renderers: Mutex::new(Vec::new()),
            loaded_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs()),
            pre,
            sha256,
            size: bytes.len(),
            source: source.to_string(),
            connections: AtomicUsize::new(0),
        })
    }
}

/// Writes a file whole, then renames it into place: readers never see half.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}

/// Makes the compiled-code cache folder, private to this user.
fn private_folder(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn engine_config(config: &RuntimeConfig, max_memory_bytes: usize) -> EngineConfig {
    let mut engine_config = EngineConfig::new();
    engine_config.epoch_interruption(true);
    engine_config.wasm_component_model(true);
    // One compile thread (see `Runtime::compile`): deploys must not take every core.
    engine_config.parallel_compilation(false);
    engine_config.max_wasm_stack(config.max_wasm_stack_bytes);
    engine_config.async_stack_size(config.max_wasm_stack_bytes + 256 * 1024);
    // Memories stay where they are (no moves) up to the reservation; the
    // small guard keeps each instance's address space modest, paid for
    // with explicit bounds checks.
    engine_config.memory_reservation(max_memory_bytes.next_power_of_two() as u64);
    engine_config.memory_guard_size(64 * 1024);
    engine_config.memory_reservation_for_growth(0);
    if config.pooling {
        let mut pool = PoolingAllocationConfig::new();
        let instances = u32::try_from(config.max_instances).unwrap_or(u32::MAX / 64);
        // A Rust guest is 3 core instances, 2 tables and 1 memory; a Python
        // one (componentize-py: CPython, libc, the WASI adapter...) is 14
        // core instances and a dozen tables. Core instances are only
        // counted; tables and memories are reserved up front (address
        // space, not memory).
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(16))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(8))
            .total_stacks(instances)
            .max_memory_size(max_memory_bytes)
            .max_memories_per_component(4)
            .max_tables_per_component(32)
            .max_core_instances_per_component(64);
        engine_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    engine_config
}

impl Runtime {
    /// Builds the engine (pooling allocator, epoch interruption, async) and
    /// the linker with the consumer world's imports and WASI.
    pub fn new(
        config: &RuntimeConfig,
        max_memory_bytes: usize,
        caps: Arc<Capabilities>,
    ) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(config, max_memory_bytes))
            .map_err(|err| anyhow::anyhow!("cannot configure wasmtime: {err}"))?;
        let mut linker = Linker::<HostState>::new(&engine);
        bindings::add_imports(&mut linker)
            .map_err(|err| anyhow::anyhow!("linking the consumer world: {err}"))?;

        let ticker = Arc::new(AtomicBool::new(true));
        let running = ticker.clone();
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while running.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })?;

        let cache = match &config.compiled_cache {
            Some(dir) => match private_folder(dir) {
                Ok(()) => Some((dir.clone(), engine_key(&engine))),
                Err(err) => {
                    tracing::warn!(folder = %dir.display(), error = %err, "cannot use the compiled-code cache; compiling every module");
                    None
                }
            },
            None => None,
        };
        Ok(Self {
            compiler: Arc::new(Compiler {
                engine,
                linker,
                cache,
            }),
            consumers: BTreeMap::new(),
            caps,
            keep_versions: config.keep_versions,
            ticker,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.compiler.engine
    }

    /// What host imports may use.
    pub fn caps(&self) -> &Arc<Capabilities> {
        &self.caps
    }

    /// Compiles and links a component on a thread of its own, one core's
    /// worth (no parallel compilation) and at a lower scheduling priority,
    /// so that compiling never stalls the reactor and, on a small machine, a
    /// deploy does not starve the connections it serves.
    pub async fn compile(
        &self,
        bytes: Vec<u8>,
        source: String,
    ) -> Result<ModuleVersion, LoadError> {
        let compiler = self.compiler.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("compile".into())
            .spawn(move || {
                lower_priority();
                let _ = done.send(compiler.compile(&bytes, &source));
            })
            .map_err(|err| LoadError::Compiler(format!("cannot start a thread: {err}")))?;
        result
            .await
            .map_err(|_| LoadError::Compiler("the compiler panicked".into()))?
    }

    /// Reads and compiles a consumer's module file, and registers the
    /// consumer with it as the current version.
    pub async fn load_consumer(
        &mut self,
        name: &str,
        config: &ConsumerConfig,
    ) -> Result<(), LoadError> {
        let path = config.module.clone();
        let loaded_stamp = watch::stamp(&path);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|source| LoadError::Read {
                path: path.display().to_string(),
                source,
            })?;
        let version = self.compile(bytes, file_source(&path)).await?;
        tracing::info!(
            consumer = name,
            sha256 = %version.sha256,
            size = version.size,
            world = version.world_version(),
            module = %path.display(),
            "consumer loaded"
        );
        let consumer = self.consumer_of(name, config, Arc::new(version), loaded_stamp);
        self.consumers.insert(name.to_string(), Arc::new(consumer));
        Ok(())
    }

    /// A consumer with `version` current, not registered with the runtime.
    fn consumer_of(
        &self,
        name: &str,
        config: &ConsumerConfig,
        version: Arc<ModuleVersion>,
        loaded_stamp: Option<watch::Stamp>,
    ) -> Consumer {
        Consumer {
            name: name.to_string(),
            namespace: config.namespace(name).to_string(),
            config: config.clone(),
            engine: self.engine().clone(),
            grant: Arc::new(Grant::new(&config.read, &config.write)),
            current: ArcSwap::new(version),
            previous: Mutex::new(Vec::new()),
            deploying: tokio::sync::Mutex::new(()),
            loaded_stamp,
        }
    }

    /// Runs a deploy's checks on `bytes` for a consumer configured as
    /// `config`, without making it current anywhere: compiled, linked, and
    /// instantiated once under the sandbox (`consumer-host build` runs this).
    pub async fn check(
        &self,
        name: &str,
        config: &ConsumerConfig,
        bytes: Vec<u8>,
        source: String,
    ) -> Result<Arc<ModuleVersion>, deploy::DeployError> {
        let version = Arc::new(self.compile(bytes, source).await?);
        let consumer = Arc::new(self.consumer_of(name, config, version.clone(), None));
        let probe = conn::ConnState::probe(consumer.clone(), self.caps.clone());
        session::trial(&consumer, probe, &version)
            .await
            .map_err(deploy::DeployError::Refused)?;
        Ok(version)
    }

    /// A consumer by name.
    pub fn consumer(&self, name: &str) -> Option<&Arc<Consumer>> {
        self.consumers.get(name)
    }

    /// Every consumer, by name.
    pub fn consumers(&self) -> impl Iterator<Item = &Arc<Consumer>> {
        self.consumers.values()
    }

    /// Earlier versions kept for rollback.
    pub fn keep_versions(&self) -> usize {
        self.keep_versions
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.store(false, Ordering::Relaxed);
    }
}

/// Makes the calling thread yield the CPU to the serving threads (nice 10).
fn lower_priority() {
    // SAFETY: plain syscalls on this thread's own id; failure only means the
    // thread keeps its priority.
    unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, 10);
    }
}

fn file_source(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// A configured consumer, its current version and the ones before it.
pub struct Consumer {
    name: String,
    namespace: String,
    config: ConsumerConfig,
    engine: Engine,
    grant: Arc<Grant>,
    current: ArcSwap<ModuleVersion>,
    /// Versions that were current before, oldest first. A std lock: held
    /// only to push or pop, never across an `.await`.
    previous: Mutex<Vec<Arc<ModuleVersion>>>,
    /// One deploy or rollback of this consumer at a time.
    pub(crate) deploying: tokio::sync::Mutex<()>,
    /// The module file's state just before it was read at start-up: what
    /// the watcher compares against.
    loaded_stamp: Option<watch::Stamp>,
}

impl Consumer {
    /// Its name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace its group names live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Its configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// The engine its versions are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Its database grant.
    pub fn grant(&self) -> &Arc<Grant> {
        &self.grant
    }

    /// The version new events run on.
    pub fn current(&self) -> Arc<ModuleVersion> {
        self.current.load_full()
    }

    /// The versions that were current before, newest first.
    pub fn previous(&self) -> Vec<Arc<ModuleVersion>> {
        let previous = self.previous.lock().expect("not poisoned");
        previous.iter().rev().cloned().collect()
    }

    /// Makes `version` current in one atomic swap: every event that starts
    /// after this runs on it. The replaced version is kept for rollback (at
    /// most `keep` of them); it is returned.
    pub(crate) fn activate(&self, version: Arc<ModuleVersion>, keep: usize) -> Arc<ModuleVersion> {
        let replaced = self.current.swap(version);
        let mut previous = self.previous.lock().expect("not poisoned");
        previous.push(replaced.clone());
        let excess = previous.len().saturating_sub(keep);
        previous.drain(..excess);
        replaced
    }

    /// Makes the version before the current one current again; the current
    /// one is dropped from the history. Returns (from, to), or `None` when
    /// there is no earlier version.
    pub(crate) fn roll_back(&self) -> Option<(Arc<ModuleVersion>, Arc<ModuleVersion>)> {
        let mut previous = self.previous.lock().expect("not poisoned");
        let to = previous.pop()?;
        let from = self.current.swap(to.clone());
        Some((from, to))
    }
}

/// What a module said of itself.
struct Info {
    pure_events: HashSet<String>,
}

static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// One compiled module of a consumer.
pub struct ModuleVersion {
    /// Unique in this process.
    pub id: u64,
    /// What the module said of itself (`describe`), set by the check that
    /// instantiates it before it serves.
    info: OnceLock<Info>,
    /// Idle instances for rendering pure events, reused.
    renderers: Mutex<Vec<render::Renderer>>,
    /// When it was compiled, as seconds since the epoch (for the admin API).
    pub loaded_unix: u64,
    pre: bindings::ExportsPre,
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: usize,
    /// Where it came from (`file:<path>`, `admin:<who>`).
    pub source: String,
    /// Connections whose instance is of this version.
    connections: AtomicUsize,
}

impl ModuleVersion {
    /// A short form of the hash for logs.
    pub fn short(&self) -> &str {
        &self.sha256[..12]
    }

    /// The version of the consumer world the module was built for.
    pub fn world_version(&self) -> &'static str {
        self.pre.world_version()
    }

    /// Whether its instances hear the host's own events (`host.recheck`):
    /// modules for 0.2.0 do; a 0.1.0 module would only log them as unknown.
    pub fn hears_host_events(&self) -> bool {
        matches!(self.pre, bindings::ExportsPre::V2(_))
    }

    /// Records what `describe` returned.
    pub(crate) fn set_info(&self, pure_events: Vec<String>) {
        let _ = self.info.set(Info {
            pure_events: pure_events.into_iter().collect(),
        });
    }

    /// The event types it declared pure, sorted.
    pub fn pure_events(&self) -> Vec<String> {
        let mut events: Vec<String> = self
            .info
            .get()
            .map(|info| info.pure_events.iter().cloned().collect())
            .unwrap_or_default();
        events.sort();
        events
    }

    /// Whether `handle-event` for this event type depends on the event alone.
    pub fn is_pure(&self, event_type: &str) -> bool {
        self.info
            .get()
            .is_some_and(|info| info.pure_events.contains(event_type))
    }

    /// Connections on this version: those whose last event ran on it.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// A JSON description for the admin API and logs.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "sha256": self.sha256,
            "size": self.size,
            "world": self.world_version(),
            "loaded_at": self.loaded_unix,
            "source": self.source,
            "connections": self.connections(),
            "pure_events": self.pure_events(),
        })
    }
}
