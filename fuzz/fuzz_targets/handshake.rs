//! The HTTP and WebSocket handshake path: arbitrary bytes written to a real
//! server (the chat, on loopback, in this process). The server must answer
//! or close, never panic or hang, and keep serving.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

fn server() -> &'static (tokio::runtime::Runtime, SocketAddr) {
    static SERVER: OnceLock<(tokio::runtime::Runtime, SocketAddr)> = OnceLock::new();
    SERVER.get_or_init(common::start_chat)
}

fuzz_target!(|bytes: &[u8]| {
    let (runtime, addr) = server();
    runtime.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("the server listens");
        let _ = stream.write_all(bytes).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
        assert!(read.await.is_ok(), "no answer and no close within 5 s");
    });
});
