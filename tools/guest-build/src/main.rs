//! `cargo run -p guest-build`: builds every consumer in `guest-consumers/`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let workspace = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(guest_build::default_workspace);
    match guest_build::detect() {
        Ok(route) => eprintln!(
            "building guests in {} for {}",
            workspace.display(),
            route.target()
        ),
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    }
    match guest_build::build(&workspace) {
        Ok(components) => {
            for component in components {
                println!("{}", component.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
