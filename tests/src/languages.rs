//! Consumers written in Python and JavaScript, built by the real command
//! line (`host-cli build`: componentize-py and componentize-js, installed
//! into the user's cache when missing), once per state of their sources.
//!
//! Built components are kept in `target/test-components/<hash>.wasm`, so a
//! test run rebuilds only what changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The repository's root.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository")
}

/// A project of the repository's SDKs: `sdk/python/examples/chat`...
pub fn example(lang: &str, name: &str) -> PathBuf {
    repository()
        .join("sdk")
        .join(lang)
        .join("examples")
        .join(name)
}

fn hash_sources(dir: &Path, hash: &mut Sha256) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if ["dist", "node_modules", "__pycache__", "test", "tests"].contains(&name.as_str()) {
            continue;
        }
        if path.is_dir() {
            hash_sources(&path, hash);
        } else {
            hash.update(name.as_bytes());
            hash.update(std::fs::read(&path).unwrap());
        }
    }
}

/// Builds the project at `dir` with `cli` (the tests' `host-cli`) unless a
/// build of the same sources (and the same SDKs) is kept; returns the component.
/// One build at a time in a test process (they take both cores anyway).
pub fn built(cli: &str, dir: &Path) -> PathBuf {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut hash = Sha256::new();
    hash_sources(dir, &mut hash);
    let lang = dir.parent().and_then(Path::parent).unwrap();
    for sdk in [
        lang.join("consumer_host"),
        lang.join("src"),
        repository().join("wit"),
    ] {
        if sdk.is_dir() {
            hash_sources(&sdk, &mut hash);
        }
    }
    let key = hex::encode(&hash.finalize()[..10]);
    let kept = repository()
        .join("target/test-components")
        .join(format!("{key}.wasm"));
    if kept.exists() {
        return kept;
    }
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    let partial = kept.with_extension(format!("partial-{}.wasm", std::process::id()));
    let out = Command::new(cli)
        .arg("build")
        .arg(dir)
        .arg("-o")
        .arg(&partial)
        .output()
        .expect("running host-cli build");
    assert!(
        out.status.success(),
        "building {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&partial, &kept).unwrap();
    kept
}

/// Where the tests keep compiled code between runs (large components
/// compile once).
pub fn compiled_cache() -> PathBuf {
    repository().join("target/test-compiled")
}

/// The Python of the Django app's venv (`scripts/install-test-services`
/// makes it), for the checks that read with Django's ORM.
pub fn django_python() -> PathBuf {
    let python = repository().join("tests/django_app/.venv/bin/python");
    assert!(
        python.exists(),
        "no Django venv at {}: run scripts/install-test-services (it makes it)",
        python.display()
    );
    python
}

/// Every message of a database as Django's ORM reads it (JSON array).
pub fn django_messages(db: &Path) -> serde_json::Value {
    let out = Command::new(django_python())
        .arg(repository().join("tests/django_app/check_messages.py"))
        .env("CHAT_DB_URL", db)
        .output()
        .expect("running Django");
    assert!(
        out.status.success(),
        "Django could not read the messages:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from chat_dump")
}

/// A copy of a project with one more comment line in `file`: the same
/// consumer, a different module (a new version to deploy).
pub fn variant(project: &Path, file: &str, comment: &str) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(project).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let edited = copy.path().join(file);
    let text = std::fs::read_to_string(&edited).unwrap();
    std::fs::write(&edited, format!("{comment}\n{text}")).unwrap();
    copy
}
