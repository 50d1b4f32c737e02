//! Chapar's domain vocabulary, shared by the server and every client.
//!
//! This crate holds the identifiers (usernames, device, group and message ids), the named limits
//! that bound everything that can grow, and the stable error codes a client can act on. It does no
//! I/O, reads no clock and builds for `wasm32-unknown-unknown`.

mod error_code;
mod ids;
pub mod limits;
pub mod net;
pub mod pow;
pub mod signed;
mod username;

pub use error_code::ErrorCode;
pub use ids::{DeviceId, GroupId, IdParseError, MessageId};
pub use username::{Username, UsernameError};

/// Position of an entry in a group's totally ordered log. The first entry has sequence 1;
/// 0 means "before the first entry".
pub type Seq = u64;

/// An MLS epoch number, as carried in the group context.
pub type Epoch = u64;

pub use ids::BlobId;
