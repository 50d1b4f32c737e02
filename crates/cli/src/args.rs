//! The command line: every subcommand and its arguments, as clap parses them (`main`
//! dispatches them).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{devices_cmd, files_cmd};

/// Chapar: end-to-end encrypted messaging that survives censorship.
#[derive(Parser)]
#[command(name = "chapar", version, about)]
pub(crate) struct Cli {
    /// Profile directory for client commands (keys, MLS state, history).
    #[arg(long, global = true, env = "CHAPAR_PROFILE")]
    pub(crate) profile: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the server until SIGINT or SIGTERM.
    Server(Box<crate::server_cmd::ServerArgs>),
    /// Run a volunteer relay in front of a server until SIGINT or SIGTERM; prints the relay
    /// link clients use as their server address.
    Relay(crate::relay_cmd::RelayArgs),
    /// Create an account; this profile becomes its first device. Prints the recovery key once.
    Register {
        /// Server URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        /// Lowercase a-z, 0-9 and _, 3 to 32 characters.
        #[arg(long)]
        username: String,
        /// This device's name, seen only by your own devices [default: the host name]
        #[arg(long)]
        device_name: Option<String>,
        /// The invite code, on a server that registers by invitation only.
        #[arg(long, default_value = "")]
        invite: String,
    },
    /// Make this (empty) profile a new device of an existing account: prints a link code (and
    /// a QR code), waits for another device to approve it, then shows the full history.
    Link {
        /// Server URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        /// This device's name [default: the host name]
        #[arg(long)]
        device_name: Option<String>,
    },
    /// Approve or revoke devices of your account.
    #[command(subcommand)]
    Device(devices_cmd::DeviceCommand),
    /// List your account's devices.
    Devices {
        /// One JSON object per line (id, name, current, added, last_seen, revoked).
        #[arg(long)]
        json: bool,
    },
    /// Replace your recovery key; prints the new one alone on stdout.
    RecoveryKey {
        /// Make a new key (the old one stops working).
        #[arg(long, required = true)]
        rotate: bool,
    },
    /// Restore your account and its full history on this (empty) profile with your recovery
    /// key, after your other devices are lost. Revokes the old devices unless told not to.
    Recover {
        /// Server URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        /// Your username.
        #[arg(long)]
        username: String,
        /// The recovery key you wrote down; `-` reads it from stdin (so it does not show in the
        /// process list).
        #[arg(long, env = "CHAPAR_RECOVERY_KEY", hide_env_values = true)]
        recovery_key: String,
        /// This device's name [default: the host name]
        #[arg(long)]
        device_name: Option<String>,
        /// Keep the old devices instead of revoking them.
        #[arg(long)]
        keep_devices: bool,
    },
    /// Send a file, photo, video or voice note (encrypted here; the upload resumes if the
    /// command is run again after an interruption). Prints the message id.
    SendFile {
        /// @username or group id.
        target: String,
        /// The file.
        path: PathBuf,
        /// A caption shown with it.
        #[arg(long)]
        caption: Option<String>,
        /// What it shows as: photo, video, voice, file or sticker [default: from its name]
        #[arg(long = "as")]
        kind: Option<String>,
    },
    /// Download the file of a message (resumable; the digest is checked). Prints where it went.
    Download {
        /// The message's id, as `messages --json` shows it.
        message_id: String,
        /// Where to put it (a new file, or a directory) [default: its name, here]
        #[arg(long)]
        out: Option<PathBuf>,
        /// The chat the message is in (only needed if its id is in several).
        #[arg(long)]
        chat: Option<String>,
    },
    /// Send the file of a message to another chat, without uploading it again.
    Forward {
        /// The message's id.
        message_id: String,
        /// @username or group id.
        target: String,
        /// The chat the message is in (only needed if its id is in several).
        #[arg(long)]
        from: Option<String>,
    },
    /// Make, share, install and send sticker packs.
    #[command(subcommand)]
    Sticker(files_cmd::StickerCommand),
    /// Mark a chat read up to its newest message, on all your devices.
    Read {
        /// @username or group id.
        target: String,
    },
    /// Send a text message to @user (a 1:1 chat, created on first use) or a group id. Prints the
    /// message id once the server has acknowledged it.
    Send {
        /// @username or group id.
        target: String,
        /// The text.
        text: String,
        /// Id of the message this replies to.
        #[arg(long)]
        reply_to: Option<String>,
    },
    /// Edit one of your messages.
    Edit {
        /// @username or group id.
        target: String,
        /// Id of the message to edit.
        id: String,
        /// The new text.
        text: String,
    },
    /// Delete one of your messages for everyone.
    Delete {
        /// @username or group id.
        target: String,
        /// Id of the message to delete.
        id: String,
    },
    /// React to a message with an emoji.
    React {
        /// @username or group id.
        target: String,
        /// Id of the message.
        id: String,
        /// The reaction.
        emoji: String,
        /// Withdraw the reaction instead.
        #[arg(long)]
        remove: bool,
    },
    /// Manage group chats.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Fetch, decrypt and store everything new; print new messages.
    Sync {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print a chat's local history, oldest first.
    Messages {
        /// @username or group id.
        target: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List the chats on this device.
    Chats,
    /// Stay connected and print messages as they arrive.
    Listen {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show the safety number to compare with @user out of band.
    Fingerprint {
        /// @username
        user: String,
    },
    /// Trust @user's changed identity key, after comparing the safety number `fingerprint`
    /// shows with them. Until then nothing is sent to them or added for them.
    Trust {
        /// @username
        user: String,
    },
    /// Relays: other addresses of the account's server, tried in turn when one is blocked.
    #[command(subcommand)]
    Relays(RelaysCommand),
}

#[derive(Subcommand)]
pub(crate) enum RelaysCommand {
    /// The relays this profile tries, oldest first.
    List,
    /// Add a relay link (as `chapar relay` prints it, or as received in a chat).
    Add {
        /// e.g. https://relay.example:443#sha256=...
        link: String,
    },
    /// Stop using a relay.
    Remove {
        /// The link as added.
        link: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a group; prints its id.
    Create {
        /// The group's name (travels only inside MLS).
        name: String,
        /// A member to add (repeatable).
        #[arg(long = "member", required = true)]
        members: Vec<String>,
    },
    /// Add every device of a user to the group.
    Add {
        /// Group id.
        group: String,
        /// @username
        user: String,
    },
    /// Remove every device of a user from the group.
    Remove {
        /// Group id.
        group: String,
        /// @username
        user: String,
    },
    /// Leave the group.
    Leave {
        /// Group id.
        group: String,
    },
    /// List the devices in a chat (@username or group id).
    Members {
        /// @username or group id.
        target: String,
    },
}
