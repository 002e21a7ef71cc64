//! The `consumer-host` command line, built in this package so the tests can
//! run it as a real process (`CARGO_BIN_EXE_host-cli`).

fn main() -> std::process::ExitCode {
    consumer_host::cli::main()
}
