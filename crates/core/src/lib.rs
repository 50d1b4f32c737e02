//! `chapar-core`: the Chapar client engine, shared by every client (the CLI's native driver,
//! the web client's worker, the bot gateway).
//!
//! It does no I/O of its own: no network, no runtime, no threads, no sleeping, no file locks,
//! and no clock or randomness of its own (both come in through [`Env`]). A driver feeds it
//! what arrives from the server and takes out frames to send and typed events for the user;
//! see [`Engine`].
//!
//! - [`engine`]: the engine and its flows (log-in, sending with the outbox, commits, sync,
//!   rosters, the archive, linking, recovery, files and stickers).
//! - [`storage`]: the profile database, reached only through a transaction type ([`Tx`]).
//! - [`model`] and [`events`]: what clients are shown, typed.
//! - [`env`]: the clock and random number generator the engine is given.
//! - [`routes`]: which address (the server's, or a relay's) to reach the server at.
//!
//! Plaintext exists only here, on the user's device.

mod account_keys;
pub mod engine;
pub mod env;
mod error;
pub mod events;
mod history;
mod identity;
pub mod model;
pub mod provider;
mod references;
pub mod routes;
pub mod storage;

pub use engine::{Engine, FileToken, Job};
pub use env::{Clock, Env, ManualClock};
pub use error::{CoreError, Usage};
pub use events::{Change, Event, JobId, Question, Warning};
pub use storage::{Chat, ChatKind, ChatState, Profile, Tx};
