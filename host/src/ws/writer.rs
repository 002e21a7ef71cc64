//! The writer: drains a connection's queue into its socket, everything
//! queued at once with one flush.

use futures_util::SinkExt;
use hyper_tungstenite::tungstenite::Message as WsMessage;

use crate::delivery::OutboundReceiver;

/// Writes queued messages until the queue is closed and empty, a close frame
/// is written, or the socket fails. Gives the sink back when a close frame
/// went out, so the connection can end the TCP stream gracefully.
pub async fn write_loop<S>(mut sink: S, mut outbound: OutboundReceiver) -> Option<S>
where
    S: futures_util::Sink<WsMessage> + Unpin,
{
    let mut batch = Vec::new();
    while outbound.next_batch(&mut batch).await {
        let mut closing = false;
        for message in batch.drain(..) {
            closing = message.is_close();
            if sink.feed(message).await.is_err() {
                return None;
            }
            if closing {
                break;
            }
        }
        if sink.flush().await.is_err() {
            return None;
        }
        if closing {
            return Some(sink);
        }
    }
    None
}
