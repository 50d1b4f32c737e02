//! Client errors, worded for the person at the terminal.

use chapar_types::ErrorCode;

/// What went wrong on the client side, or what the server refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered a request with an error.
    #[error("the server refused: {message} ({code})")]
    Server {
        /// Stable code.
        code: ErrorCode,
        /// The server's message.
        message: String,
        /// Where things stand now: the log's head for `stale_epoch`, the archived position for
        /// `conflict`, the group's roster version for `stale_roster`; 0 otherwise.
        position: u64,
    },
    /// The message is saved in the outbox, but the connection failed before the server took
    /// it: the next connection (any command) sends it.
    #[error("not sent yet ({0}); the message is saved and goes out the next time chapar connects")]
    Queued(String),
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Connection(String),
    /// The profile has no account yet, or has one already.
    #[error("{0}")]
    Profile(String),
    /// The user asked for something that cannot be done (unknown chat, bad id, ...).
    #[error("{0}")]
    Usage(String),
    /// A file failed its integrity check: what arrived is not what was sent.
    #[error("integrity: {0}")]
    Integrity(String),
    /// A cryptographic check failed.
    #[error("crypto: {0}")]
    Crypto(#[from] chapar_crypto::CryptoError),
    /// The local database failed.
    #[error("local store: {0}")]
    Local(#[from] rusqlite::Error),
    /// The server sent something that makes no sense.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, if the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}
