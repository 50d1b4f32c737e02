//! The Chapar client SDK: everything a client (the CLI today; the web client and bot gateway
//! later) needs to be a device of an account.
//!
//! - [`local`]: the profile's SQLite file: keys, MLS state (through openmls's SQLite provider on
//!   the same connection, so MLS state and history commit in one transaction), chats, history.
//! - [`connection`]: one WebSocket to the server, requests matched to responses, pushes queued.
//! - [`Client`]: accounts, groups, sending, sync and listening, built from the two above.
//! - Multi-device (`link`, `devices`, `recovery`, `roster`, `archive`, `self_group`,
//!   `account_keys`): linking, listing and revoking devices, the recovery key, keeping groups in
//!   line with accounts' device lists, the encrypted history archive a new device restores
//!   from, and the state one account's devices share.
//!
//! - [`files`]: files, photos, videos, voice notes and stickers, encrypted here, uploaded and
//!   downloaded resumably.
//!
//! Plaintext exists only here, on the user's device.

mod account_keys;
mod archive;
mod client;
pub mod connection;
mod devices;
mod error;
pub mod files;
mod history;
mod link;
pub mod local;
mod provider;
mod recovery;
mod roster;
mod self_group;
mod sync;

pub use archive::Restored;
pub use client::{Client, Target};
pub use devices::{DeviceInfo, Revoked};
pub use error::ClientError;
pub use history::{ChatMessage, FileInfo, PackInfo};
pub use link::{ApprovalPreview, Approved, LINK_PEER_WAIT, LinkPreview, Linked, PendingLink};
pub use recovery::Recovered;
