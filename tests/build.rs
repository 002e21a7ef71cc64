//! Builds the guest components from source before the tests compile, so a
//! test never runs against a stale or checked-in binary.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let guests = root.join("guest-consumers");
    for watched in [
        "wit",
        "guest-consumers/Cargo.toml",
        "guest-consumers/Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    for entry in std::fs::read_dir(&guests).expect("guest-consumers/ exists") {
        let path = entry.expect("readable").path();
        if path.join("Cargo.toml").exists() {
            println!(
                "cargo:rerun-if-changed={}",
                path.join("Cargo.toml").display()
            );
            println!("cargo:rerun-if-changed={}", path.join("src").display());
        }
    }
    match guest_build::build(&guests) {
        Ok(components) => {
            assert!(
                !components.is_empty(),
                "guest-consumers/ built no components"
            );
            let dist = guests.join("dist");
            println!(
                "cargo:rustc-env=GUEST_DIST={}",
                dist.canonicalize().expect("dist exists").display()
            );
        }
        Err(err) => panic!("the tests need the guest components: {err}"),
    }
}
