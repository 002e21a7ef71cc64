//! `consumer-host`: see [`consumer_host::cli`].

fn main() -> std::process::ExitCode {
    consumer_host::cli::main()
}
