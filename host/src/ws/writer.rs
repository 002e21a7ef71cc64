//! The writer: drains a connection's bounded send queue into its socket,
//! batching what is queued into one flush.

use futures_util::SinkExt;
use hyper_tungstenite::tungstenite::Message as WsMessage;
use tokio::sync::{mpsc, oneshot};

/// Writes queued messages until the queue closes, a close frame is written
/// or the socket fails. A message on `urgent` (a close frame for a client
/// too slow to drain its queue) jumps the queue and ends the writing.
pub async fn write_loop<S>(
    mut sink: S,
    mut outbound: mpsc::Receiver<WsMessage>,
    mut urgent: oneshot::Receiver<WsMessage>,
) where
    S: futures_util::Sink<WsMessage> + Unpin,
{
    loop {
        tokio::select! {
            biased;
            Ok(close) = &mut urgent => {
                let _ = sink.send(close).await;
                return;
            }
            message = outbound.recv() => {
                let Some(message) = message else { return };
                let mut closing = message.is_close();
                if sink.feed(message).await.is_err() {
                    return;
                }
                // Everything already queued goes out with one flush.
                while !closing && let Ok(message) = outbound.try_recv() {
                    closing = message.is_close();
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() || closing {
                    return;
                }
            }
        }
    }
}
