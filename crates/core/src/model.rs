//! The engine's public vocabulary: what a client asks about (targets) and what it is shown
//! (messages, files, devices, the results of multi-step operations). Everything is typed:
//! chats are named by [`GroupId`], people by [`Username`], and the words are the client's.

use chapar_types::{DeviceId, GroupId, MessageId, Seq, Username};
pub use chapar_wire::content::FileKind;

use crate::Usage;

/// What a command addresses: a person (their 1:1 chat) or a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The direct chat with this user.
    User(Username),
    /// A group (or any chat) by id.
    Group(GroupId),
}

impl Target {
    /// Parses `@name` or a 32-hex-digit group id.
    pub fn parse(text: &str) -> Result<Self, Usage> {
        if text.starts_with('@') {
            return Ok(Self::User(Username::parse(text)?));
        }
        text.parse()
            .map(Self::Group)
            .map_err(|_| Usage::InvalidTarget(text.to_owned()))
    }
}

/// A message as the user sees it, with edits, deletion and reactions applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Its chat.
    pub chat: GroupId,
    /// Its id.
    pub id: MessageId,
    /// Who sent it.
    pub sender: Username,
    /// From which device.
    pub sender_device: DeviceId,
    /// The current text (a file's caption); empty once deleted.
    pub text: String,
    /// When the sender sent it, milliseconds since the Unix epoch (the sender's clock).
    pub sent_at_ms: i64,
    /// The message this one replies to.
    pub reply_to: Option<MessageId>,
    /// The text was edited.
    pub edited: bool,
    /// The message was deleted for everyone.
    pub deleted: bool,
    /// Reactions as (emoji, who) pairs, sorted by emoji, then by who.
    pub reactions: Vec<(String, Username)>,
    /// Log position (None while this device's own message is unacknowledged).
    pub seq: Option<Seq>,
    /// The file the message carries, if it is a file message.
    pub file: Option<FileInfo>,
    /// The sticker pack the message shares, if it shares one.
    pub sticker_pack: Option<PackInfo>,
}

/// What a file message says about its file (the key stays in the profile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The name the sender gave it.
    pub name: String,
    /// Plaintext bytes.
    pub size: u64,
    /// What it shows as.
    pub kind: FileKind,
    /// Its MIME type.
    pub mime_type: String,
    /// Pixels, for pictures.
    pub width: Option<u32>,
    /// Pixels, for pictures.
    pub height: Option<u32>,
    /// Whether a thumbnail came with it.
    pub thumbnail: bool,
}

/// What a sticker-pack message shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInfo {
    /// The pack's id (16 bytes).
    pub id: [u8; 16],
    /// Its name.
    pub name: String,
    /// How many stickers it has.
    pub stickers: usize,
}

/// An installed sticker pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPack {
    /// The pack's id.
    pub id: [u8; 16],
    /// Its name.
    pub name: String,
    /// Each sticker's emoji, in order.
    pub stickers: Vec<String>,
}

/// A device of the account, as the device list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device.
    pub id: DeviceId,
    /// Its name, if it opens with this device's keys.
    pub name: Option<String>,
    /// This is the device asking.
    pub current: bool,
    /// When it was added, milliseconds since the Unix epoch.
    pub added_ms: u64,
    /// Its last login, if any.
    pub last_seen_ms: Option<u64>,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<u64>,
    /// Its key fingerprint.
    pub fingerprint: String,
}

/// What a revocation did besides revoking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Chats that still contain the device (their roster check failed; the next sync of any
    /// member retries).
    pub chats_left_with_it: usize,
    /// A new recovery key to show, if the revoked device had set the old one.
    pub new_recovery_key: Option<String>,
}

/// What an archive replay brought back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Archive segments replayed.
    pub segments: u64,
    /// History events replayed.
    pub events: u64,
    /// Ciphertext bytes downloaded.
    pub bytes: u64,
}

impl std::ops::AddAssign for Restored {
    fn add_assign(&mut self, other: Self) {
        self.segments += other.segments;
        self.events += other.events;
        self.bytes += other.bytes;
    }
}

/// What the approving device shows before asking for confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPreview {
    /// The new device's id.
    pub device: DeviceId,
    /// The name it asked for.
    pub name: String,
    /// Its key's fingerprint (the new device shows the same).
    pub fingerprint: String,
    /// This (approving) device's fingerprint.
    pub approver_fingerprint: String,
}

/// What the new device shows before joining the account that approved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalPreview {
    /// The account that approved the link.
    pub username: Username,
    /// The approving device's fingerprint.
    pub approver_fingerprint: String,
}

/// How a link ended on the new device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    /// The account joined.
    pub username: Username,
    /// This device.
    pub device: DeviceId,
    /// The approving device finished adding this one to every chat before the wait ran out.
    pub completed: bool,
    /// What the archive brought back.
    pub restored: Restored,
    /// Chats on this device now.
    pub chats: usize,
    /// Protocol bytes this device sent while linking and catching up.
    pub bytes_sent: u64,
    /// Protocol bytes this device received while linking and catching up.
    pub bytes_received: u64,
}

/// How an approval ended on the approving device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// The new device.
    pub device: DeviceId,
    /// The new device came online in time and was added to every chat.
    pub completed: bool,
    /// Chats the new device is in now.
    pub chats: usize,
}

/// What a recovery restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// This new device.
    pub device: DeviceId,
    /// Devices revoked by the recovery.
    pub revoked: usize,
    /// What the archive brought back.
    pub restored: Restored,
    /// Chats on this device now.
    pub chats: usize,
}

/// A chat in the chat list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSummary {
    /// The chat.
    pub chat: crate::storage::Chat,
    /// Messages from others after the read position.
    pub unread: u64,
}
