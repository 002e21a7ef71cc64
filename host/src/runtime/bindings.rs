//! The Rust side of `wit/consumer.wit`, generated in exactly one place.
//!
//! Every import is `async` (database calls await the writer and reader
//! threads without blocking the reactor) and `trappable` (the host traps a
//! guest that misbehaves, e.g. one that floods its connection).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "consumer",
    imports: { default: async | trappable },
    exports: { default: async },
});
