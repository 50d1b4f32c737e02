//! Files as the store keeps them: each upload's bookkeeping (owner, declared length, committed
//! length, times) and the references messages hold on complete blobs. The bytes themselves live
//! in a blob store (`chapar-blob`); the store is the truth about how many of them count.

use chapar_types::{BlobId, DeviceId, Seq};

/// A new upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUpload {
    /// Random id chosen by the server.
    pub id: BlobId,
    /// The account it belongs to (its quota pays for it).
    pub username: String,
    /// The device that created it.
    pub device: DeviceId,
    /// Declared length in bytes (the ciphertext's).
    pub length: u64,
    /// Server time at creation.
    pub now_ms: u64,
    /// When it expires if it is not finished.
    pub expires_ms: u64,
}

impl NewUpload {
    /// The record [`crate::Store::create_upload`] stores for it: nothing committed yet.
    pub fn record(&self) -> UploadRecord {
        UploadRecord {
            id: self.id,
            username: self.username.clone(),
            device: self.device,
            length: self.length,
            committed: 0,
            created_ms: self.now_ms,
            updated_ms: self.now_ms,
            expires_ms: self.expires_ms,
            completed_ms: None,
            unreferenced_ms: None,
            references: 0,
        }
    }
}

/// An upload, finished (a complete blob) or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// The blob's id.
    pub id: BlobId,
    /// The owning account.
    pub username: String,
    /// The device that created it.
    pub device: DeviceId,
    /// Declared length in bytes.
    pub length: u64,
    /// Bytes durable in the blob store; the upload's offset.
    pub committed: u64,
    /// Created at.
    pub created_ms: u64,
    /// Last change (creation or commit).
    pub updated_ms: u64,
    /// When an unfinished upload is forgotten (moves on with every commit).
    pub expires_ms: u64,
    /// When the last byte was committed and the blob became readable.
    pub completed_ms: Option<u64>,
    /// Since when a complete blob has had no reference (`None` while referenced).
    pub unreferenced_ms: Option<u64>,
    /// How many message references it has.
    pub references: u64,
}

impl UploadRecord {
    /// The blob is complete and readable.
    pub fn is_complete(&self) -> bool {
        self.completed_ms.is_some()
    }
}

/// Outcome of [`crate::Store::create_upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadCreated {
    /// Recorded.
    Created,
    /// Refused: the account's usage plus the new upload's charge would pass the quota.
    QuotaExceeded {
        /// What the account uses now.
        used_bytes: u64,
    },
    /// Refused: the account has
    /// [`FILE_UNFINISHED_UPLOADS_PER_ACCOUNT_MAX`](chapar_types::limits::FILE_UNFINISHED_UPLOADS_PER_ACCOUNT_MAX)
    /// unfinished uploads already.
    TooManyUnfinished {
        /// How many it has.
        unfinished: u64,
    },
}

/// Outcome of [`crate::Store::commit_upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadCommitted {
    /// The committed length moved; the record after.
    Committed(UploadRecord),
    /// The upload is not at the expected offset (or is complete); nothing changed.
    OffsetMoved(UploadRecord),
    /// No such upload.
    NotFound,
}

/// Outcome of [`crate::Store::delete_upload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadDeleted {
    /// Forgotten; the caller deletes the bytes.
    Deleted,
    /// A message references the blob; nothing changed.
    Referenced,
    /// No such upload for that account.
    NotFound,
}

/// The blob references an application message changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobRefs {
    /// Complete blobs the message carries: referenced at the message's position.
    pub add: Vec<BlobId>,
    /// Blobs whose references held by the entry at `deleted_seq` in this group are dropped
    /// (the message deletes that entry for everyone), if the sender's account made them.
    pub drop: Vec<BlobId>,
    /// The log position of the entry the message deletes. 0 (clients that predate the field)
    /// drops nothing: without it the store cannot tell which of the account's messages
    /// carrying a blob was deleted, and dropping them all would lose files still shown.
    pub deleted_seq: Seq,
}

/// A blob or upload that [`crate::Store::collect_garbage`] forgot; its bytes go next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Garbage {
    /// The blob.
    pub id: BlobId,
    /// It was complete (unreferenced too long) rather than an expired unfinished upload.
    pub complete: bool,
}
