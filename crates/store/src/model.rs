//! The records the store keeps and the errors it returns. These are domain types, not rows.

use chapar_types::{DeviceId, Epoch, GroupId, MessageId, Seq};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The username is registered already.
    #[error("username taken")]
    UsernameTaken,
    /// A device with this id exists already.
    #[error("device exists")]
    DeviceExists,
    /// A group with this id exists already.
    #[error("group exists")]
    GroupExists,
    /// No such group.
    #[error("unknown group")]
    UnknownGroup,
    /// The device is not (or no longer) a member of the group.
    #[error("not a member")]
    NotMember,
    /// A device named in a commit does not exist.
    #[error("unknown device {0}")]
    UnknownDevice(DeviceId),
    /// A commit adds a device whose key package (by its SHA-256) the committer's account
    /// was not handed, or used already.
    #[error("device {0} was not claimed for this commit")]
    Unclaimed(DeviceId),
    /// The append was made against an older epoch, or a commit did not see every proposal.
    #[error("stale epoch (group is at epoch {current_epoch}, head {head_seq})")]
    StaleEpoch {
        /// The group's current epoch.
        current_epoch: Epoch,
        /// The group's last sequence number.
        head_seq: Seq,
    },
    /// Someone changed the same thing first: the archive already reaches `position`, or the
    /// recovery key is not the one the caller expected.
    #[error("conflict (current position {position})")]
    Conflict {
        /// For archives, the archived position now; 0 otherwise.
        position: Seq,
    },
    /// The account already has its most active devices.
    #[error("too many devices")]
    TooManyDevices,
    /// No such link request, or it expired.
    #[error("link not found")]
    LinkNotFound,
    /// The server holds its most pending link requests.
    #[error("too many pending links")]
    TooManyLinks,
    /// No such account.
    #[error("unknown user")]
    UnknownUser,
    /// The account would keep more key package bytes than it may (it keeps `stored` now).
    #[error("key package quota (the account keeps {stored} bytes)")]
    KeyPackageQuota {
        /// Bytes of key packages the account keeps.
        stored: u64,
    },
    /// A number (a position, cursor, size or time) does not fit the store: 2^63 or more.
    #[error("number out of range: {0}")]
    OutOfRange(u64),
    /// A member account's devices changed since the sender last checked the group's devices.
    #[error("stale roster (group roster is at version {current})")]
    StaleRoster {
        /// The group's roster version now.
        current: u64,
    },
    /// An archive segment reaches past the group's last log entry.
    #[error("beyond the log's head")]
    BeyondHead,
    /// The disk is full; the write was not stored.
    #[error("storage full")]
    Full,
    /// The store is shutting down or its write queue is closed.
    #[error("storage unavailable")]
    Unavailable,
    /// The backend failed (disk full, corruption, ...). The detail is for the server log only.
    #[error("storage backend: {0}")]
    Backend(String),
    /// A message referenced a blob that does not exist or is not complete; nothing was stored.
    #[error("unknown blob {0}")]
    UnknownBlob(chapar_types::BlobId),
}

/// A device as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device id, chosen by the device.
    pub device: DeviceId,
    /// The owning account.
    pub username: String,
    /// Ed25519 public key; also the device's MLS signature key.
    pub device_key: Vec<u8>,
    /// The account key's signature over the device certificate.
    pub account_signature: Vec<u8>,
    /// When the device was registered.
    pub created_ms: u64,
    /// When the device was revoked, if it was.
    pub revoked_ms: Option<u64>,
    /// The device's name, sealed by its account (opaque here; empty if none).
    pub sealed_name: Vec<u8>,
    /// When the device last logged in.
    pub last_seen_ms: Option<u64>,
    /// The account key's signature over the device's revocation, once a device of the
    /// account proved it (what contacts need before they remove the device).
    pub revocation_signature: Option<Vec<u8>>,
}

/// An account and its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// The username.
    pub username: String,
    /// Ed25519 public identity key.
    pub account_key: Vec<u8>,
    /// Every device, oldest first.
    pub devices: Vec<DeviceRecord>,
}

/// A registration.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The username.
    pub username: String,
    /// Ed25519 public identity key.
    pub account_key: Vec<u8>,
    /// The first device.
    pub device: DeviceRecord,
    /// Its one-time key packages.
    pub key_packages: Vec<Vec<u8>>,
    /// Its last-resort key package.
    pub last_resort_key_package: Vec<u8>,
}

/// A key package handed out for adding a device to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKeyPackage {
    /// The device it belongs to.
    pub device: DeviceRecord,
    /// The serialized key package.
    pub key_package: Vec<u8>,
}

/// What kind of entry a log position holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An MLS application message.
    Application,
    /// An MLS commit; the epoch advances after it.
    Commit,
    /// An MLS proposal, waiting for a commit.
    Proposal,
}

impl EntryKind {
    /// Stable number stored on disk.
    pub fn as_i64(self) -> i64 {
        match self {
            Self::Application => 1,
            Self::Commit => 2,
            Self::Proposal => 3,
        }
    }

    /// Reads a stored number.
    pub fn from_i64(n: i64) -> Option<Self> {
        match n {
            1 => Some(Self::Application),
            2 => Some(Self::Commit),
            3 => Some(Self::Proposal),
            _ => None,
        }
    }
}

/// An append to a group's log.
#[derive(Debug, Clone)]
pub struct Append {
    /// The group.
    pub group: GroupId,
    /// The sending device, which must be a member.
    pub sender: DeviceId,
    /// The epoch the payload was made in; must be the group's current epoch.
    pub epoch: Epoch,
    /// Server clock at receipt.
    pub now_ms: u64,
    /// The MLS bytes.
    pub payload: Vec<u8>,
    /// What is appended, with its kind-specific fields.
    pub kind: AppendKind,
}

impl Append {
    /// The bytes it carries: its payload, and a commit's welcome.
    pub fn bytes(&self) -> usize {
        let welcome = match &self.kind {
            AppendKind::Commit { welcome, .. } => welcome.as_ref().map_or(0, Vec::len),
            _ => 0,
        };
        self.payload.len() + welcome
    }
}

/// Kind-specific parts of an [`Append`].
#[derive(Debug, Clone)]
pub enum AppendKind {
    /// An application message with its idempotency key.
    Application {
        /// Client-chosen id; a second append with the same sender and id returns the first.
        message_id: MessageId,
        /// The group roster version the sender last checked the group's devices at.
        roster_version: u64,
    },
    /// A commit with its routing changes.
    Commit {
        /// The last entry the committer processed; must be the group's head.
        seen_seq: Seq,
        /// Devices that become members at this entry.
        added: Vec<DeviceId>,
        /// The SHA-256 of the key package each added device joins with (same order as
        /// `added`): each must be one the committer's account claimed and has not used.
        added_key_packages: Vec<[u8; 32]>,
        /// Devices whose membership ends at this entry.
        removed: Vec<DeviceId>,
        /// The Welcome for the added devices.
        welcome: Option<Vec<u8>>,
    },
    /// A proposal; `self_remove` ends the sender's membership at this entry.
    Proposal {
        /// The sender proposes its own removal (leaves).
        self_remove: bool,
    },
}

/// Where an append landed, and who should hear of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The entry's position.
    pub seq: Seq,
    /// The group's epoch after the append.
    pub epoch: Epoch,
    /// Server time recorded with the entry.
    pub server_ms: u64,
    /// This was a retry of an earlier append with the same message id; nothing new was stored.
    pub duplicate: bool,
    /// Devices to push the entry to: current members, plus any whose membership ended here.
    pub recipients: Vec<DeviceId>,
    /// Devices that got a welcome.
    pub welcomed: Vec<DeviceId>,
}

/// One entry of a group's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The group.
    pub group: GroupId,
    /// Position in the group's log.
    pub seq: Seq,
    /// What it is.
    pub kind: EntryKind,
    /// The epoch it was made in.
    pub epoch: Epoch,
    /// The device that sent it.
    pub sender: DeviceId,
    /// Application messages' id.
    pub message_id: Option<MessageId>,
    /// The MLS bytes.
    pub payload: Vec<u8>,
    /// Server time at receipt.
    pub server_ms: u64,
}

/// A page of a group's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    /// Entries, oldest first.
    pub entries: Vec<LogEntry>,
    /// The group's last sequence number.
    pub head_seq: Seq,
    /// The reader's membership ended at or before the last returned entry.
    pub membership_ended: bool,
}

/// A welcome waiting for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WelcomeRecord {
    /// Inbox position; the device's cursor.
    pub id: u64,
    /// The group joined.
    pub group: GroupId,
    /// The commit that added the device.
    pub seq: Seq,
    /// The device that made the commit.
    pub sender: DeviceId,
    /// The MLS Welcome.
    pub welcome: Vec<u8>,
}

/// A group as one device sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHead {
    /// The group.
    pub group: GroupId,
    /// The group's last sequence number.
    pub head_seq: Seq,
    /// The entry that added the device.
    pub joined_seq: Seq,
    /// The entry that ended its membership, if it ended.
    pub left_seq: Option<Seq>,
    /// The last entry of this group in the device's account archive (0: none).
    pub archived_seq: Seq,
    /// Grows whenever a device is added to or revoked from an account with a member here.
    pub roster_version: u64,
}

/// A device added to an existing account (by another of its devices, or by recovery).
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// The device, with its certificate.
    pub device: DeviceRecord,
    /// Its one-time key packages.
    pub key_packages: Vec<Vec<u8>>,
    /// Its last-resort key package.
    pub last_resort_key_package: Vec<u8>,
    /// Revoke every other device of the account in the same transaction (recovery).
    pub revoke_others: bool,
}

/// What recovery needs from the server: the public key that authenticates recovery requests,
/// and the bundle sealed to the recovery key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRecord {
    /// Ed25519 public key derived from the recovery key.
    pub auth_key: Vec<u8>,
    /// Account secrets sealed to the recovery key.
    pub sealed_bundle: Vec<u8>,
}

/// A link request, and its approval once there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    /// The new device's sealed request.
    pub sealed_request: Vec<u8>,
    /// The approving device's sealed answer, once approved.
    pub sealed_approval: Option<Vec<u8>>,
    /// The approving device added the new one to every group.
    pub completed: bool,
}

/// One encrypted segment of an account's history archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSegment {
    /// Position in the account's archive (ascending).
    pub id: u64,
    /// The group whose history it holds.
    pub group: GroupId,
    /// It covers log entries after this one...
    pub from_seq: Seq,
    /// ...up to and including this one.
    pub through_seq: Seq,
    /// Which archive key encrypted it.
    pub key_generation: u32,
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
}
