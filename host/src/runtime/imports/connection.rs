//! `connection`: the scope, the handshake, sending and closing.

use hyper_tungstenite::tungstenite::Message as WsMessage;

use super::{Refusal, trap, truncate_utf8, within};
use crate::runtime::bindings::{connection, types};
use crate::runtime::conn::{ConnState, Effect, Handshake};

/// What `send` returns instead of success.
pub type SendFailure = Refusal<connection::SendError>;

/// RFC 6455: a close frame's payload is at most 125 bytes, two of them the code.
const MAX_CLOSE_REASON_BYTES: usize = 123;

impl connection::Host for ConnState {
    fn get_scope(&mut self) -> wasmtime::Result<types::Scope> {
        Ok(self.scope.clone())
    }

    fn accept(&mut self, subprotocol: Option<String>) -> wasmtime::Result<()> {
        if self.handshake != Handshake::Pending {
            return Ok(());
        }
        if let Some(chosen) = &subprotocol
            && !self.offered_subprotocols.contains(chosen)
        {
            return trap(format!(
                "accept chose subprotocol {chosen:?}, which the client did not offer"
            ));
        }
        self.handshake = Handshake::Accepted(subprotocol);
        Ok(())
    }

    fn send(&mut self, message: types::Message) -> Result<(), SendFailure> {
        let sandbox = &self.consumer.config().sandbox;
        let (message, len) = match message {
            types::Message::Text(text) => {
                let len = text.len();
                (WsMessage::text(text), len)
            }
            types::Message::Binary(bytes) => {
                let len = bytes.len();
                (WsMessage::binary(bytes), len)
            }
        };
        within(&mut self.used.sends, sandbox.max_sends_per_event, "send")?;
        self.used.send_bytes += len;
        if self.used.send_bytes > sandbox.max_send_bytes_per_event {
            return Err(Refusal::misbehaved(format!(
                "one event sent more than {} bytes",
                sandbox.max_send_bytes_per_event
            )));
        }
        let limit = self.caps.max_send_bytes;
        if len > limit {
            return Err(connection::SendError::TooLarge(limit as u32).into());
        }
        if self.closing() {
            return Err(connection::SendError::Closed.into());
        }
        // Sent once what this event wrote is durable (see `conn`).
        self.emit(Effect::Send(message));
        Ok(())
    }

    fn close(&mut self, code: u16, mut reason: String) -> wasmtime::Result<()> {
        if !crate::close::allowed_for_consumers(code) {
            return trap(format!(
                "close code {code} is reserved; use 1000 or 3000-4999"
            ));
        }
        if self.handshake == Handshake::Pending {
            self.handshake = Handshake::Refused;
        }
        if self.close_request.is_none() {
            truncate_utf8(&mut reason, MAX_CLOSE_REASON_BYTES);
            self.close_request = Some((code, reason));
        }
        Ok(())
    }

    fn convert_send_error(&mut self, err: SendFailure) -> wasmtime::Result<connection::SendError> {
        err.into_wit()
    }
}
