//! The host imports, driven by a guest: the hostile test consumer runs
//! commands the fuzzer writes (queries of any SQL with any parameters,
//! inserts of any row, group names and events, state, sends, closes...),
//! through the real imports, with no socket. The host must answer each
//! with a value, a WIT error or a trap of that one instance, and go on.
#![no_main]

use std::sync::{Mutex, OnceLock};

use consumer_host::testing::Direct;
use libfuzzer_sys::fuzz_target;

mod common;

struct Harness {
    runtime: tokio::runtime::Runtime,
    _server: consumer_host::Server,
    direct: Mutex<Direct>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let server = runtime.block_on(common::start_server());
        let direct = Direct::new(&server, "hostile", common::hostile_scope());
        Harness {
            runtime,
            _server: server,
            direct: Mutex::new(direct),
        }
    })
}

/// Commands that only waste the fuzzer's time (they run to a deadline).
const SLOW: &[&str] = &[
    "loop",
    "memory",
    "recurse",
    "slow-queries",
    "flood",
    "group-flood",
    "log-flood",
    "db-flood",
    "group-churn",
];

fuzz_target!(|command: &str| {
    let verb = command.split(':').next().unwrap_or("");
    if SLOW.contains(&verb) {
        return;
    }
    let harness = harness();
    let mut direct = harness.direct.lock().expect("not poisoned");
    // A fault is fine (the instance is replaced); a host panic is not.
    let _ = harness.runtime.block_on(direct.receive(command));
    direct.frames();
});
