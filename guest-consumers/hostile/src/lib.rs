//! A consumer that misbehaves on command, for the sandbox tests: it calls
//! every import with hostile arguments when told to.
//!
//! It accepts every connection (`?refuse=1` refuses, `?trap=1` traps in
//! `connect`, `?join=GROUP` joins a group in `connect`, `?slow=1` then
//! holds the handshake with slow queries). Each text message is a command,
//! `verb:argument`; those that do not trap answer with `{"ok": ...}` or
//! `{"error": ...}`. Group events it hears are sent to its client as
//! `{"event": ...}`.

wit_bindgen::generate!({ path: "../../wit", world: "consumer" });

use consumer_host::consumer::database::{self, Value};
use consumer_host::consumer::logging::{Level, log};
use consumer_host::consumer::types::{ConsumerInfo, Message};
use consumer_host::consumer::{connection, groups, state};
use exports::consumer_host::consumer::handler::Guest;
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

/// A query that runs until the host interrupts it.
const ENDLESS: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT sum(x) FROM c";

/// A parameter: `x:<hex>` is a blob, `i:<n>` an integer, anything else text.
fn param(text: &str) -> Value {
    if let Some(hex) = text.strip_prefix("x:") {
        let bytes = (0..hex.len() / 2)
            .filter_map(|at| u8::from_str_radix(&hex[at * 2..at * 2 + 2], 16).ok())
            .collect();
        return Value::Blob(bytes);
    }
    if let Some(number) = text.strip_prefix("i:").and_then(|n| n.parse().ok()) {
        return Value::Integer(number);
    }
    Value::Text(text.into())
}

fn query_param(key: &str) -> Option<String> {
    connection::get_scope()
        .query
        .into_iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value)
}

impl Guest for Hostile {
    fn describe() -> ConsumerInfo {
        ConsumerInfo {
            pure_events: Vec::new(),
        }
    }

    fn connect() {
        if query_param("trap").is_some() {
            panic!("trap in connect");
        }
        if query_param("refuse").is_some() {
            return connection::close(4003, "refused on request");
        }
        if let Some(group) = query_param("join") {
            let _ = groups::group_add(&group);
        }
        if query_param("slow").is_some() {
            // Holds the handshake open, in host calls, well past its timeout.
            for _ in 0..50 {
                let _ = database::db_query(ENDLESS, &[]);
            }
        }
        connection::accept(None);
    }

    fn receive(message: Message) {
        let Message::Text(command) = message else {
            return reply(json!({ "error": "binary" }));
        };
        let (verb, argument) = command.split_once(':').unwrap_or((command.as_str(), ""));
        match verb {
            "echo" => reply(json!({ "ok": argument })),
            "scope" => reply(json!({ "ok": format!("{:?}", connection::get_scope()) })),
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
            // `query-params:<sql>|<param>|<param>...`
            "query-params" => {
                let mut parts = argument.split('|');
                let sql = parts.next().unwrap_or("");
                let params: Vec<Value> = parts.map(param).collect();
                outcome(database::db_query(sql, &params))
            }
            "slow-queries" => {
                let count: u32 = argument.parse().unwrap_or(100);
                for _ in 0..count {
                    let _ = database::db_query(ENDLESS, &[]);
                }
                reply(json!({ "ok": "done" }));
            }
            "db-flood" => {
                let count: u32 = argument.parse().unwrap_or(1_000);
                for _ in 0..count {
                    let _ = database::db_query("SELECT 1", &[]);
                }
                reply(json!({ "ok": "done" }));
            }
            "insert" => {
                let (table, body) = argument.split_once('|').unwrap_or((argument, ""));
                outcome(database::db_insert(
                    table,
                    &[("body".into(), Value::Text(body.into()))],
                ))
            }
            // `insert-row:<table>|<column>=<value>|...`
            "insert-row" => {
                let mut parts = argument.split('|');
                let table = parts.next().unwrap_or("");
                let row: Vec<(String, Value)> = parts
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(column, value)| (column.to_string(), param(value)))
                    .collect();
                outcome(database::db_insert(table, &row))
            }
            "state" => {
                let size: usize = argument.parse().unwrap_or(1 << 20);
                outcome(state::set_state(&vec![7u8; size]))
            }
            "group" => outcome(groups::group_add(argument)),
            "leave" => outcome(groups::group_discard(argument)),
            // `group-send:<group>|<event json>`
            "group-send" => {
                let (group, event) = argument.split_once('|').unwrap_or((argument, "{}"));
                outcome(groups::group_send(group, event))
            }
            "group-flood" => {
                let count: u32 = argument.parse().unwrap_or(10_000);
                for n in 0..count {
                    let _ = groups::group_send(
                        "hostile-flood",
                        &format!(r#"{{"type":"flood","n":{n}}}"#),
                    );
                }
                reply(json!({ "ok": "done" }));
            }
            "group-churn" => {
                let count: u32 = argument.parse().unwrap_or(10_000);
                for n in 0..count {
                    let _ = groups::group_add(&format!("churn-{n}"));
                }
                reply(json!({ "ok": "done" }));
            }
            "log-flood" => {
                let count: u32 = argument.parse().unwrap_or(100_000);
                for n in 0..count {
                    log(Level::Warn, &format!("flooding the log, line {n}"));
                }
                reply(json!({ "ok": "done" }));
            }
            "close" => {
                let code: u16 = argument.parse().unwrap_or(1000);
                connection::close(code, "closing on command");
            }
            other => reply(json!({ "error": format!("unknown command {other:?}") })),
        }
    }

    fn handle_event(event: String) {
        reply(json!({ "event": event }));
    }

    fn disconnect(code: u16) {
        // Observable by tests that grant the table; ignored elsewhere.
        let _ = database::db_insert(
            "notes",
            &[("body".into(), Value::Text(format!("disconnected {code}")))],
        );
    }
}

export!(Hostile);
