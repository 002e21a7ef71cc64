//! Builds the consumers in `guest-consumers/` into components.
//!
//! Two routes, the first that this machine has:
//!
//! 1. **wasm32-wasip2** with the default toolchain (`rustup target add
//!    wasm32-wasip2` done): the usual route; the components import WASI,
//!    which the host links.
//! 2. **Debian's rustc-web** (`/usr/bin/rustc` 1.96 with `rust-web-src` and
//!    `wasm-component-ld`): the standard library is built for
//!    `wasm32-unknown-unknown` with `-Zbuild-std`, and `wasm-component-ld`
//!    makes components that import nothing of WASI. This works where rustup
//!    cannot download targets (`scripts/install-guest-toolchain` installs it).
//!
//! Every built component is copied, atomically, to `guest-consumers/dist/<crate>.wasm`.
//! Variants (a crate built again with features, listed under
//! `[[workspace.metadata.guest-build.variants]]` in the guest workspace's
//! `Cargo.toml`) go to `dist/<variant name>.wasm`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's rustc-web toolchain.
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_LINKER: &str = "/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld";
const DEBIAN_STD_SOURCES: &str = "/usr/lib/rustlib/src/rust/library";

/// How guests get built here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `cargo build --target wasm32-wasip2`.
    Wasip2,
    /// Debian's rustc-web, build-std, wasm32-unknown-unknown.
    DebianBuildStd,
}

impl Route {
    /// The target triple the route builds for.
    pub fn target(self) -> &'static str {
        match self {
            Route::Wasip2 => "wasm32-wasip2",
            Route::DebianBuildStd => "wasm32-unknown-unknown",
        }
    }
}

/// Finds a route that works on this machine, or says how to get one.
pub fn detect() -> Result<Route, String> {
    let wasip2 = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|line| line.trim() == "wasm32-wasip2")
        })
        .unwrap_or(false);
    if wasip2 {
        return Ok(Route::Wasip2);
    }
    let debian = [
        DEBIAN_CARGO,
        DEBIAN_RUSTC,
        DEBIAN_LINKER,
        DEBIAN_STD_SOURCES,
    ]
    .iter()
    .all(|path| Path::new(path).exists());
    if debian {
        return Ok(Route::DebianBuildStd);
    }
    Err(
        "no WebAssembly toolchain: run `scripts/install-guest-toolchain` (Debian's rustc-web, \
         as root) or `rustup target add wasm32-wasip2`"
            .into(),
    )
}

/// A crate built again with features, as `dist/<name>.wasm`.
#[derive(Debug, serde::Deserialize)]
struct Variant {
    name: String,
    package: String,
    #[serde(default)]
    features: Vec<String>,
}

fn variants(workspace: &Path) -> Result<Vec<Variant>, String> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        workspace: Workspace,
    }
    #[derive(serde::Deserialize)]
    struct Workspace {
        #[serde(default)]
        metadata: Metadata,
    }
    #[derive(Default, serde::Deserialize)]
    struct Metadata {
        #[serde(default, rename = "guest-build")]
        guest_build: GuestBuild,
    }
    #[derive(Default, serde::Deserialize)]
    struct GuestBuild {
        #[serde(default)]
        variants: Vec<Variant>,
    }
    let path = workspace.join("Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|err| format!("reading {}: {err}", path.display()))?;
    let manifest: Manifest =
        toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
    Ok(manifest.workspace.metadata.guest_build.variants)
}

/// A `cargo build --release` for the route in `dir`, with a clean
/// environment (a build script's carries the outer cargo's settings).
pub fn cargo_build_command(route: Route, dir: &Path, extra: &[&str]) -> Command {
    let (cargo, mut args, env): (&str, Vec<&str>, Vec<(&str, String)>) = match route {
        Route::Wasip2 => (
            "cargo",
            vec!["build", "--release", "--target", route.target()],
            vec![],
        ),
        Route::DebianBuildStd => (
            DEBIAN_CARGO,
            vec![
                "build",
                "--release",
                "-Zbuild-std=std,panic_abort",
                "--target",
                route.target(),
            ],
            vec![
                ("RUSTC", DEBIAN_RUSTC.to_string()),
                ("RUSTC_BOOTSTRAP", "1".to_string()),
                ("RUSTFLAGS", format!("-C linker={DEBIAN_LINKER}")),
            ],
        ),
    };
    args.extend_from_slice(extra);
    let mut command = Command::new(cargo);
    command.args(&args);
    // Progress as cargo shows it, on a terminal or not.
    command.env("CARGO_TERM_PROGRESS_WHEN", "auto");
    // A build script's environment carries the outer cargo's settings
    // (RUSTC, RUSTFLAGS, the target dir, the jobserver...): start clean.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = matches!(
            key.as_str(),
            "PATH" | "HOME" | "CARGO_HOME" | "RUSTUP_HOME" | "TMPDIR" | "USER"
        );
        if !keep {
            command.env_remove(&key);
        }
    }
    command.envs(env);
    command.current_dir(dir);
    command
}

/// Runs [`cargo_build_command`]: its progress (cargo's `Compiling ...`
/// lines) goes on to this process's stderr as it comes, so a long first
/// build is seen to move, and its last lines are kept for the error.
fn cargo_build(route: Route, workspace: &Path, extra: &[&str]) -> Result<(), String> {
    use std::io::{BufRead, BufReader, Write};
    const KEPT_LINES: usize = 200;
    let mut command = cargo_build_command(route, workspace, extra);
    let args: Vec<String> = command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    command.stdout(std::process::Stdio::null());
    command.stderr(std::process::Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot run cargo for the guests ({route:?}): {err}"))?;
    let mut kept = std::collections::VecDeque::with_capacity(KEPT_LINES);
    if let Some(stderr) = child.stderr.take() {
        let mut out = std::io::stderr().lock();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(out, "{line}");
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    }
    let status = child
        .wait()
        .map_err(|err| format!("waiting for cargo ({route:?}): {err}"))?;
    if !status.success() {
        return Err(format!(
            "building the guests ({route:?}, {}) failed:\n{}",
            args.join(" "),
            Vec::from(kept).join("\n")
        ));
    }
    Ok(())
}

/// Copies a component into `dist/`: copy, then rename, so that a watcher of
/// `dist/` never sees half a file.
fn publish(component: &Path, dist: &Path, name: &str) -> Result<PathBuf, String> {
    let target = dist.join(name);
    let partial = dist.join(format!(".{name}.partial"));
    std::fs::copy(component, &partial)
        .map_err(|err| format!("copying {}: {err}", component.display()))?;
    std::fs::rename(&partial, &target)
        .map_err(|err| format!("renaming {}: {err}", partial.display()))?;
    Ok(target)
}

/// Builds every crate of the guest workspace in release mode, then every
/// variant, and copies the components to `<workspace>/dist/`; returns their paths.
pub fn build(workspace: &Path) -> Result<Vec<PathBuf>, String> {
    let route = detect()?;
    cargo_build(route, workspace, &[])?;
    let dist = workspace.join("dist");
    std::fs::create_dir_all(&dist).map_err(|err| format!("creating {}: {err}", dist.display()))?;
    let built = workspace
        .join("target")
        .join(route.target())
        .join("release");
    let mut components = Vec::new();
    let entries =
        std::fs::read_dir(&built).map_err(|err| format!("reading {}: {err}", built.display()))?;
    for entry in entries {
        let path = entry.map_err(|err| err.to_string())?.path();
        if path.extension().is_some_and(|ext| ext == "wasm") {
            let name = path
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            components.push(publish(&path, &dist, &name)?);
        }
    }
    for variant in variants(workspace)? {
        let target_dir = format!("target/variants/{}", variant.name);
        let features = variant.features.join(",");
        cargo_build(
            route,
            workspace,
            &[
                "-p",
                &variant.package,
                "--features",
                &features,
                "--target-dir",
                &target_dir,
            ],
        )?;
        let artifact = workspace
            .join(&target_dir)
            .join(route.target())
            .join("release")
            .join(format!("{}.wasm", variant.package.replace('-', "_")));
        components.push(publish(
            &artifact,
            &dist,
            &format!("{}.wasm", variant.name),
        )?);
    }
    components.sort();
    Ok(components)
}

/// Builds the crate in `dir` (a consumer project) for this machine's route,
/// cargo's progress going to this process's stderr; returns the component.
pub fn build_crate(dir: &Path, crate_name: &str) -> Result<PathBuf, String> {
    let route = detect()?;
    let status = cargo_build_command(route, dir, &[])
        // Cargo's output is progress: stderr, so stdout stays the caller's.
        .stdout(std::io::stderr())
        .status()
        .map_err(|err| format!("cannot run cargo ({route:?}): {err}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build failed ({route:?}, {})",
            route.target()
        ));
    }
    let artifact = dir
        .join("target")
        .join(route.target())
        .join("release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    if !artifact.exists() {
        return Err(format!(
            "cargo built no {}: is the crate a cdylib (crate-type = [\"cdylib\", ...])?",
            artifact.display()
        ));
    }
    Ok(artifact)
}

/// The guest workspace of this repository.
pub fn default_workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-consumers")
}
