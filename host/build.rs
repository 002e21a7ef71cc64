//! Embeds the SDKs (Rust, Python, JavaScript), their project templates and
//! the WIT in the binary: `consumer-host new` and `build` write them into a
//! cache folder, so an installed binary needs no checkout of this repository.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Folders never embedded: build outputs and caches.
const SKIPPED: &[&str] = &[
    "target",
    "node_modules",
    "__pycache__",
    ".venv",
    "dist",
    ".pytest_cache",
];

/// Folders of an SDK's own (its tests and examples), not needed to build a
/// consumer; a template's tests are kept, and so are the Rust SDK's (its
/// manifest names them).
const SKIPPED_AT_SDK_ROOT: &[&str] = &["tests", "test", "examples"];

fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let at_sdk_root =
            dir.parent().is_some_and(|parent| parent.ends_with("sdk")) && !dir.ends_with("rust");
        if SKIPPED.contains(&name.as_str())
            || (at_sdk_root && SKIPPED_AT_SDK_ROOT.contains(&name.as_str()))
            || name.ends_with(".pyc")
        {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, files);
        } else {
            files.push(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().expect("the repository");
    let mut files = Vec::new();
    for dir in ["wit", "sdk/rust", "sdk/python", "sdk/js"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
        walk(&root, &root.join(dir), &mut files);
    }
    let mut out =
        String::from("/// Every embedded file: its path from the repository's root, its bytes.\n");
    out.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    for file in &files {
        let _ = writeln!(
            out,
            "    ({:?}, include_bytes!({:?})),",
            file.to_string_lossy(),
            root.join(file).display().to_string()
        );
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded_sdk.rs");
    std::fs::write(dest, out).expect("writing the embedded file list");
}
