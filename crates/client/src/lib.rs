//! `chapar-client`: the native driver of the Chapar engine (`chapar-core`) for the CLI and
//! other native clients: tokio, a [`transport::Transport`] to the server (WebSocket today),
//! HTTP for files, the system clock, randomness from the operating system, and the lock that
//! keeps two processes off one profile. Every rule a device follows is in the engine; this
//! crate moves bytes and waits.
//!
//! - [`Client`]: a device with its profile, running engine jobs to their end.
//! - [`transport`]: the seam every transport implements, and the WebSocket one.
//! - [`files`]: resumable encrypted uploads and downloads over the files API.
//! - [`connection`]: a raw protocol connection, for tests and tools.
//! - [`tls`]: TLS to the server, and key pins in server addresses.

mod api;
mod client;
pub mod connection;
pub mod files;
mod lock;
pub mod tls;
pub mod transport;

pub use chapar_core::engine::LINK_PEER_WAIT_MS;
pub use chapar_core::model::{
    ApprovalPreview, Approved, ChatMessage, ChatSummary, DeviceInfo, FileInfo, InstalledPack,
    LinkPreview, Linked, PackInfo, Recovered, Restored, Revoked, Target,
};
pub use chapar_core::{Chat, ChatKind, ChatState, CoreError, Engine, Usage, Warning};
pub use client::{Client, Hooks, NoHooks, SystemClock};
