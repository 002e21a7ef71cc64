//! Echoes each text message with a WASI random number and the WASI wall
//! clock's time: `{"echo", "random", "now"}`. Accepts everyone.

wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "consumer-host-tests:wasi-echo/wasi-echo",
    generate_all,
});

use consumer_host::consumer::connection;
use consumer_host::consumer::types::{ConsumerInfo, Message};
use exports::consumer_host::consumer::handler::Guest;

struct Echo;

impl Guest for Echo {
    fn describe() -> ConsumerInfo {
        ConsumerInfo {
            pure_events: Vec::new(),
        }
    }

    fn connect() {
        connection::accept(None);
    }

    fn receive(message: Message) {
        let Message::Text(text) = message else { return };
        let reply = serde_json::json!({
            "echo": text,
            "random": wasi::random::random::get_random_u64(),
            "now": wasi::clocks::wall_clock::now().seconds,
        });
        let _ = connection::send(&Message::Text(reply.to_string()));
    }

    fn handle_event(_event: String) {}

    fn disconnect(_code: u16) {}
}

export!(Echo);
