//! A guest that imports WASI (as one built for wasm32-wasip2 does) loads, and
//! its WASI calls reach the host's WASI implementation.

use consumer_host::config::{ConsumerConfig, RouteConfig};
use consumer_host_tests::{TestServer, connect, guest, unix_now};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_importing_wasi_runs() {
    let server = TestServer::start_with(|config| {
        config.routes.insert(
            0,
            RouteConfig {
                path: "echo/".into(),
                consumer: "wasi-echo".into(),
            },
        );
        config
            .consumers
            .insert("wasi-echo".into(), ConsumerConfig::new(guest("wasi_echo")));
    })
    .await;
    let mut ws = connect(&format!("ws://{}/echo/", server.node().local_addr())).await;
    ws.send_text("one").await;
    let first = ws.next_json().await;
    ws.send_text("two").await;
    let second = ws.next_json().await;
    assert_eq!(first["echo"], "one");
    assert_eq!(second["echo"], "two");
    let now = first["now"].as_i64().unwrap();
    assert!(
        (now - unix_now()).abs() < 60,
        "the WASI wall clock is the host's: {now}"
    );
    assert_ne!(
        first["random"], second["random"],
        "WASI random numbers differ"
    );
}
