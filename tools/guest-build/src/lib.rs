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

/// Builds every crate of the guest workspace in release mode and copies
/// the components to `<workspace>/dist/`; returns their paths.
pub fn build(workspace: &Path) -> Result<Vec<PathBuf>, String> {
    let route = detect()?;
    let (cargo, args, env): (&str, Vec<&str>, Vec<(&str, String)>) = match route {
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
    let mut command = Command::new(cargo);
    command.args(args);
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
    command.current_dir(workspace);
    let output = command
        .output()
        .map_err(|err| format!("cannot run cargo for the guests ({route:?}): {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the guests ({route:?}) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let built = workspace
        .join("target")
        .join(route.target())
        .join("release");
    let dist = workspace.join("dist");
    std::fs::create_dir_all(&dist).map_err(|err| format!("creating {}: {err}", dist.display()))?;
    let mut components = Vec::new();
    let entries =
        std::fs::read_dir(&built).map_err(|err| format!("reading {}: {err}", built.display()))?;
    for entry in entries {
        let path = entry.map_err(|err| err.to_string())?.path();
        if path.extension().is_some_and(|ext| ext == "wasm") {
            let target = dist.join(path.file_name().expect("a file"));
            // Copy then rename: a watcher of dist/ never sees half a file.
            let partial = target.with_extension("wasm.partial");
            std::fs::copy(&path, &partial)
                .map_err(|err| format!("copying {}: {err}", path.display()))?;
            std::fs::rename(&partial, &target)
                .map_err(|err| format!("renaming {}: {err}", partial.display()))?;
            components.push(target);
        }
    }
    components.sort();
    Ok(components)
}

/// The guest workspace of this repository.
pub fn default_workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-consumers")
}
