//! The error a handler returns: logged by the SDK, and the connection is
//! closed with 1011 (as an exception in a Channels consumer ends it).

use core::fmt;

use crate::host::{DbError, GroupError, SendError};

/// What a handler returns: `Ok(())`, or an [`Error`].
pub type Result<T = (), E = Error> = core::result::Result<T, E>;

/// Why a handler failed, in words for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Self::msg(message)
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Self { message }
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Self::msg(format_args!("JSON: {err}"))
    }
}

impl From<DbError> for Error {
    fn from(err: DbError) -> Self {
        Self::msg(format_args!("database: {}", crate::db::describe(&err)))
    }
}

impl From<GroupError> for Error {
    fn from(err: GroupError) -> Self {
        Self::msg(match err {
            GroupError::InvalidName(why) => format!("group: invalid name: {why}"),
            GroupError::InvalidEvent(why) => format!("group: invalid event: {why}"),
            GroupError::TooLarge(limit) => format!("group: event larger than {limit} bytes"),
        })
    }
}

impl From<SendError> for Error {
    fn from(err: SendError) -> Self {
        Self::msg(match err {
            SendError::Closed => "send: the connection is closed".to_string(),
            SendError::TooLarge(limit) => format!("send: message larger than {limit} bytes"),
        })
    }
}
