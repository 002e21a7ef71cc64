//! A consumer that misbehaves on command, for the sandbox tests.
//!
//! It accepts every connection. Each text message is a command; the ones
//! that do not trap answer with `{"ok": ...}` or `{"error": ...}`.

wit_bindgen::generate!({ path: "../../wit", world: "consumer" });

use consumer_host::consumer::database::{self, Value};
use consumer_host::consumer::{connection, groups, state};
use serde_json::json;

struct Hostile;

fn reply(value: serde_json::Value) {
    let _ = connection::send(&Message::Text(value.to_string()));
}

fn outcome<T: core::fmt::Debug, E: core::fmt::Debug>(result: Result<T, E>) {
    match result {
        Ok(value) => reply(json!({ "ok": format!("{value:?}") })),
        Err(err) => reply(json!({ "error": format!("{err:?}") })),
    }
}

impl Guest for Hostile {
    fn describe() -> ConsumerInfo {
        ConsumerInfo {
            pure_events: Vec::new(),
        }
    }

    fn connect() {
        let scope = connection::get_scope();
        let refuse = scope.query.iter().any(|(key, _)| key == "refuse");
        if scope.query.iter().any(|(key, _)| key == "trap") {
            panic!("trap in connect");
        }
        if refuse {
            connection::close(4003, "refused on request");
        } else {
            connection::accept(None);
        }
    }

    fn receive(message: Message) {
        let Message::Text(command) = message else {
            return reply(json!({ "error": "binary" }));
        };
        let (verb, argument) = command.split_once(':').unwrap_or((command.as_str(), ""));
        match verb {
            "echo" => reply(json!({ "ok": argument })),
            "trap" => panic!("trap on command"),
            "abort" => std::process::abort(),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = core::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    core::hint::black_box(&hoard);
                }
            }
            "recurse" => {
                fn deeper(n: u64) -> u64 {
                    if core::hint::black_box(n) == u64::MAX {
                        return 0;
                    }
                    core::hint::black_box(deeper(n + 1)) + 1
                }
                reply(json!({ "ok": deeper(0) }));
            }
            "flood" => {
                let count: u32 = argument.parse().unwrap_or(100_000);
                for n in 0..count {
                    if connection::send(&Message::Text(format!("{n}"))).is_err() {
                        break;
                    }
                }
            }
            "big" => {
                let size: usize = argument.parse().unwrap_or(10 << 20);
                outcome(connection::send(&Message::Text("x".repeat(size))));
            }
            "query" => outcome(database::db_query(argument, &[])),
            "query-param" => outcome(database::db_query(
                "SELECT count(*) FROM chat_conversation_users WHERE conversation_id = ?1",
                &[Value::Text(argument.into())],
            )),
            "insert" => {
                let (table, body) = argument.split_once('|').unwrap_or((argument, ""));
                outcome(database::db_insert(
                    table,
                    &[("body".into(), Value::Text(body.into()))],
                ))
            }
            "state" => {
                let size: usize = argument.parse().unwrap_or(1 << 20);
                outcome(state::set_state(&vec![7u8; size]))
            }
            "group" => outcome(groups::group_add(argument)),
            "leave" => outcome(groups::group_discard(argument)),
            "close" => {
                let code: u16 = argument.parse().unwrap_or(1000);
                connection::close(code, "closing on command");
            }
            other => reply(json!({ "error": format!("unknown command {other:?}") })),
        }
    }

    fn handle_event(_event: String) {}

    fn disconnect(_code: u16) {}
}

export!(Hostile);
