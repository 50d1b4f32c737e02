//! The engine's errors: typed, so that every client (the CLI, the web client, a bot gateway)
//! words them for its own user. Nothing here names a CLI command.

use chapar_types::{DeviceId, ErrorCode, GroupId, MessageId, Username};

/// What went wrong on this device, or what the server refused.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
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
    /// it: the next connection sends it.
    #[error("not sent yet ({0}); the message is saved and goes out on the next connection")]
    Queued(String),
    /// There is no connection, or it failed or closed.
    #[error("connection: {0}")]
    Connection(String),
    /// The profile is unusable for this (damaged, of another version).
    #[error("{0}")]
    Profile(String),
    /// The request cannot be done as asked.
    #[error("{0}")]
    Usage(#[from] Usage),
    /// A file failed its integrity check: what arrived is not what was sent.
    #[error("integrity: {0}")]
    Integrity(String),
    /// A cryptographic check failed.
    #[error("crypto: {0}")]
    Crypto(#[from] chapar_crypto::CryptoError),
    /// The profile database failed.
    #[error("profile database: {0}")]
    Storage(#[from] rusqlite::Error),
    /// The server sent something that makes no sense.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The account archive the server serves for a chat is not whole (a segment dropped,
    /// reordered, or its tail held back): restoring stopped there and resumes at the next sync.
    #[error("the archive of chat {group} {reason}; restoring stops here until it is whole")]
    ArchiveBroken {
        /// The chat.
        group: chapar_types::GroupId,
        /// What is wrong with it.
        reason: String,
    },
}

impl CoreError {
    /// The server's error code, if the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the outcome of the request that failed so is unknown: the server may or may
    /// not have done it (the connection went away, or the answer did not come in time; for a
    /// queued message, it goes again on the next connection either way).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Connection(_) | Self::Queued(_))
    }
}

/// Something asked of the engine that cannot be done, said as data; clients word it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Usage {
    /// The profile has no account yet.
    #[error("this profile has no account yet")]
    NoAccount,
    /// The profile belongs to an account already.
    #[error("this profile already belongs to an account")]
    AlreadyRegistered,
    /// A username that is not one.
    #[error("{0}")]
    InvalidUsername(#[from] chapar_types::UsernameError),
    /// A chat target that is neither `@user` nor a group id.
    #[error("{0:?} is neither @username nor a group id")]
    InvalidTarget(String),
    /// A server address that is not an http(s) or ws(s) URL (with a well-formed key pin, if
    /// any).
    #[error(
        "server URL must start with http://, https://, ws:// or wss:// (a key pin after \
         #sha256=), got {0:?}"
    )]
    InvalidServer(String),
    /// A relay link that cannot lead to this account's server.
    #[error("refused relay link {0}")]
    RelayRefused(String),
    /// The profile keeps its most relays.
    #[error("this profile keeps at most {0} relays; remove one first")]
    TooManyRelays(usize),
    /// No such chat on this device.
    #[error("no such chat on this device")]
    NoSuchChat,
    /// A group this device does not know.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// This device is no longer a member of the chat.
    #[error("you are no longer a member of {0}")]
    NoLongerMember(GroupId),
    /// The self group was named as if it were a chat.
    #[error("that is the group of your own devices, not a chat")]
    SelfGroupIsNotAChat,
    /// A direct chat with oneself.
    #[error("a direct chat needs another user")]
    DirectChatWithSelf,
    /// Text over a length limit.
    #[error("{what} has at most {max} bytes")]
    TooLong {
        /// What was too long (a message, a group name, a device name, a caption).
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A user with no device that can be added.
    #[error("@{0} has no device that can be added")]
    NoDeviceToAdd(Username),
    /// The server presents a changed key for a contact; nothing is claimed from them until
    /// the user trusts it.
    #[error("the identity key of @{0} changed and is not trusted yet")]
    KeyNotTrusted(Username),
    /// The key changed again between the safety number shown and the trust.
    #[error("the identity key of @{0} changed again since its safety number was shown")]
    KeyChangedAgain(Username),
    /// The server presents another identity than the one the account is on.
    #[error("this server is not the one this account is on (its identity differs)")]
    WrongServer,
    /// Removing a user who is not in the group.
    #[error("@{0} is not in this group")]
    NotInGroup(Username),
    /// Not a link code.
    #[error("that is not a link code")]
    InvalidLinkCode,
    /// The link code does not open the request filed under it.
    #[error("the link code does not match the request")]
    LinkCodeMismatch,
    /// The user did not approve the link.
    #[error("the link was not approved")]
    LinkNotApproved,
    /// The user declined to join the account that approved this device.
    #[error("not joining @{0}: this device stays unlinked")]
    LinkDeclined(Username),
    /// No device approved the link in time.
    #[error("no device approved this link in time")]
    LinkTimedOut,
    /// Not a recovery key.
    #[error("that is not a recovery key")]
    InvalidRecoveryKey,
    /// The recovery key does not open this account.
    #[error("the recovery key is wrong for this account (or the account has none)")]
    WrongRecoveryKey,
    /// Another device changed the recovery key at the same moment.
    #[error("another device changed the recovery key at the same moment; try again")]
    RecoveryKeyRace,
    /// A device revoking itself.
    #[error("a device cannot revoke itself; revoke it from another device")]
    CannotRevokeSelf,
    /// The revoked device is still in the self group, so no new archive key was made.
    #[error(
        "the device is revoked, but is still in your devices' own group; sync, then revoke it again to finish"
    )]
    RevocationUnfinished(DeviceId),
    /// A message id found in more than one chat.
    #[error("message {0} is in more than one chat; name the chat")]
    AmbiguousMessage(MessageId),
    /// No file message with this id on this device.
    #[error("no file message {0} on this device")]
    NoFileMessage(MessageId),
    /// No sticker pack shared by this message.
    #[error("message {0} does not share a sticker pack")]
    NoStickerPack(MessageId),
    /// A sticker pack that is not installed.
    #[error("no such sticker pack installed")]
    UnknownStickerPack,
    /// A sticker pack that breaks the rules (wrong id, too many stickers).
    #[error("that sticker pack is malformed")]
    MalformedStickerPack,
    /// A sticker pack of the wrong size.
    #[error("a sticker pack has 1 to {max} stickers")]
    StickerCount {
        /// Most stickers in a pack.
        max: usize,
    },
    /// A sticker index past the pack's end.
    #[error("the pack has stickers 0 to {last}")]
    NoSuchSticker {
        /// The last index.
        last: usize,
    },
    /// A message too large to send, or carrying too many files.
    #[error("{0}")]
    MessageTooLarge(String),
    /// A file on this device could not be read or written.
    #[error("{path}: {error}")]
    LocalFile {
        /// The file.
        path: String,
        /// What failed.
        error: String,
    },
    /// A path that is not a regular file.
    #[error("{0} is not a file")]
    NotAFile(String),
    /// A download would overwrite an existing file.
    #[error("{0} exists already")]
    FileExists(String),
    /// A file over the size limit.
    #[error("{path} has {size} bytes; files have at most {max} bytes")]
    FileTooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A file message whose blob id is not one.
    #[error("that file message is malformed (its blob id is not 16 bytes)")]
    MalformedFileMessage,
}
