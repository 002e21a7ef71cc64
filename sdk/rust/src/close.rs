//! WebSocket close codes a consumer may use, and those it may hear in
//! `disconnect`.
//!
//! A consumer may close with [`NORMAL`] or an application code (3000-4999);
//! the host traps one that uses any other. The rest are what the host or
//! the client closed with.

/// The connection did what it was for.
pub const NORMAL: u16 = 1000;
/// The server shuts down, or the client went away.
pub const GOING_AWAY: u16 = 1001;
/// The client broke the WebSocket protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// The client closed without a code.
pub const NO_STATUS: u16 = 1005;
/// The connection dropped without a close frame.
pub const ABNORMAL: u16 = 1006;
/// A text message that was not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A message over the host's size limit.
pub const TOO_BIG: u16 = 1009;
/// The consumer failed (the host closed it).
pub const INTERNAL_ERROR: u16 = 1011;
/// The node was overloaded.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// The client did not read fast enough.
pub const SLOW_CLIENT: u16 = 4008;
/// The client's login is no longer valid (token expired, user removed).
pub const LOGIN_EXPIRED: u16 = 4401;
/// A conventional application code for "you may not": the `403` of
/// WebSocket closes, as the reference chat uses it.
pub const FORBIDDEN: u16 = 4003;

/// Whether a consumer may close with `code`.
pub fn allowed(code: u16) -> bool {
    code == NORMAL || (3000..=4999).contains(&code)
}
