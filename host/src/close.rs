//! WebSocket close codes the host sends or reports, by name.
//!
//! RFC 6455 defines the 1000-range; the 4000-range is for applications (the
//! host uses two of them, as Centrifugo and others do). `ABNORMAL` and
//! `NO_STATUS` are never sent: they are what a consumer's `disconnect` hears
//! when the client vanished or closed without a code.

/// The connection did what it was for.
pub const NORMAL: u16 = 1000;
/// The server is shutting down (or the client navigated away).
pub const GOING_AWAY: u16 = 1001;
/// The client broke the WebSocket protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// The client closed without a status code (never sent).
pub const NO_STATUS: u16 = 1005;
/// The connection dropped without a close frame (never sent).
pub const ABNORMAL: u16 = 1006;
/// A text message that is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A message over `[limits] max_message_bytes`.
pub const TOO_BIG: u16 = 1009;
/// The consumer trapped, overran a budget, or broke a host rule.
pub const INTERNAL_ERROR: u16 = 1011;
/// The node is overloaded (no instance slot free): retry later.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// The client does not read fast enough: its queue towards it is full.
pub const SLOW_CLIENT: u16 = 4008;
/// The login behind the connection is no longer valid: the token expired,
/// or the user was removed or made inactive.
pub const LOGIN_EXPIRED: u16 = 4401;

/// Whether a consumer may close with `code`: 1000, or the application
/// range 3000-4999 (the rest is the protocol's or the host's to send).
pub fn allowed_for_consumers(code: u16) -> bool {
    code == NORMAL || (3000..=4999).contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_keep_to_their_range() {
        assert!(allowed_for_consumers(NORMAL));
        assert!(allowed_for_consumers(4003));
        for reserved in [
            GOING_AWAY,
            ABNORMAL,
            INTERNAL_ERROR,
            TRY_AGAIN_LATER,
            2999,
            5000,
        ] {
            assert!(!allowed_for_consumers(reserved), "{reserved}");
        }
    }
}
