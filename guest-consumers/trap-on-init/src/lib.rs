//! A consumer whose instantiation traps: the component calls `_initialize`
//! when it is instantiated, and this one panics there.

wit_bindgen::generate!({ path: "../../wit", world: "consumer" });

use consumer_host::consumer::connection;
use consumer_host::consumer::types::{ConsumerInfo, Message};
use exports::consumer_host::consumer::handler::Guest;

struct Consumer;

impl Guest for Consumer {
    fn describe() -> ConsumerInfo {
        ConsumerInfo {
            pure_events: Vec::new(),
        }
    }

    fn connect() {
        connection::accept(None);
    }
    fn receive(_message: Message) {}
    fn handle_event(_event: String) {}
    fn disconnect(_code: u16) {}
}

/// Runs when the component is instantiated, before any export.
#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    panic!("this consumer refuses to start");
}

export!(Consumer);
