//! The Chapar client SDK: everything a client (the CLI today; the web client and bot gateway
//! later) needs to be a device of an account.
//!
//! - [`local`]: the profile's SQLite file: keys, MLS state (through openmls's SQLite provider on
//!   the same connection, so MLS state and history commit in one transaction), chats, history.
//! - [`connection`]: one WebSocket to the server, requests matched to responses, pushes queued.
//! - [`Client`]: accounts, groups, sending, sync and listening, built from the two above.
//!
//! Plaintext exists only here, on the user's device.

mod client;
pub mod connection;
mod error;
mod history;
pub mod local;
mod provider;
mod sync;

pub use client::{Client, Target};
pub use error::ClientError;
pub use history::ChatMessage;
