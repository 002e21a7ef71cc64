//! `floor --listen 127.0.0.1:PORT`: the chat's wire protocol with nothing
//! else, the floor every benchmark of consumer-host is compared with.
//!
//! A client connects to `ws/<room>/` (any token is ignored); a
//! `{"event": "chat_message", "data": {"body", "name"}}` it sends goes to
//! every member of the room, itself included, as `{"body", "name"}`. No
//! authentication, no WebAssembly, no database; one bounded queue per client
//! (a client that cannot keep up is dropped, as a bare server would).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

type Rooms = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Message>>>>>;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|arg| arg == "--listen")
        .and_then(|at| args.get(at + 1))
        .map_or("127.0.0.1:18600", String::as_str)
        .to_string();
    let listener = TcpListener::bind(&listen).await.expect("listening");
    eprintln!("floor listening on {}", listener.local_addr().unwrap());
    let rooms: Rooms = Arc::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, rooms.clone()));
    }
}

// The handshake callback's error type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn serve(stream: tokio::net::TcpStream, rooms: Rooms) {
    let mut room = String::new();
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async(stream, |request: &Request, response: Response| {
            room = request.uri().path().trim_matches('/').to_string();
            Ok(response)
        })
        .await
    else {
        return;
    };
    let (mut sink, mut frames) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(4096);
    rooms
        .lock()
        .unwrap()
        .entry(room.clone())
        .or_default()
        .push(tx);
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            while let Ok(message) = rx.try_recv() {
                if sink.feed(message).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(frame)) = frames.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let data = &message["data"];
        let out = Message::text(
            serde_json::json!({ "body": data["body"], "name": data["name"] }).to_string(),
        );
        let members = rooms
            .lock()
            .unwrap()
            .get(&room)
            .cloned()
            .unwrap_or_default();
        for member in members {
            let _ = member.try_send(out.clone());
        }
    }
    writer.abort();
    if let Some(members) = rooms.lock().unwrap().get_mut(&room) {
        members.retain(|member| !member.is_closed());
    }
}
