//! The server's storage seam.
//!
//! [`Store`] is everything the service layer asks of durable storage: accounts and devices, key
//! packages, and per-group totally ordered logs with the epoch rules of the MLS delivery service.
//! [`sqlite::SqliteStore`] is the embedded default. [`rules`] holds the delivery service's
//! append rules as a pure function every backend calls. `conformance` (feature
//! `conformance`, not in the production build) is the suite every backend must pass, so a
//! PostgreSQL backend can be added without touching the service layer.
//!
//! Only store crates know SQL. A write returns only once it is durable (committed with fsync);
//! backends are expected to batch concurrent writes into one transaction (group commit).

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod model;
mod paging;
pub mod postgres;
pub mod rules;
pub mod sqlite;

pub use model::*;

use chapar_types::{DeviceId, GroupId, Seq};
use std::future::Future;

/// Durable storage for the server: everything the service layer asks of it, by concern. All
/// methods are safe to call concurrently. A backend implements the four traits; `Store` comes
/// with them.
pub trait Store: AccountStore + LogStore + ArchiveStore + FileStore {}

impl<T: AccountStore + LogStore + ArchiveStore + FileStore> Store for T {}

/// Accounts and their devices, key packages, device links and recovery records.
pub trait AccountStore: Send + Sync + 'static {
    /// Registers an account with its first device and key packages.
    fn create_account(
        &self,
        account: NewAccount,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Looks up an account and its devices (revoked ones included, marked).
    fn account(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<AccountRecord>, StoreError>> + Send;

    /// Looks up one device.
    fn device(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = Result<Option<DeviceRecord>, StoreError>> + Send;

    /// Adds one-time key packages, and replaces the last-resort one if given. Returns how many
    /// one-time packages the device has now. Oldest are dropped past the per-device limit.
    /// If the account's active devices would then keep more than `account_bytes_max` bytes of
    /// packages, nothing is added (`KeyPackageQuota`): checked in the same transaction, so
    /// concurrent uploads cannot pass it together.
    fn add_key_packages(
        &self,
        device: DeviceId,
        one_time: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        account_bytes_max: u64,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Bytes of key packages (one-time and last-resort) the account's active devices keep.
    fn key_package_bytes(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How many one-time key packages a device has left.
    fn key_package_count(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Takes one key package for each active device of `username` except `except` (and, if
    /// `only` is not empty, only for those devices): a one-time package if any is left and
    /// `one_time` allows it (it is deleted), else the last-resort one (it is kept).
    fn claim_key_packages(
        &self,
        username: &str,
        except: DeviceId,
        only: Vec<DeviceId>,
        one_time: bool,
    ) -> impl Future<Output = Result<Vec<ClaimedKeyPackage>, StoreError>> + Send;

    /// Adds a device to an existing account (at most
    /// [`chapar_types::limits::DEVICES_PER_ACCOUNT_MAX`] active ones), optionally revoking every
    /// other device at once, and moves the account's roster version on.
    fn add_device(&self, device: NewDevice) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Revokes a device: it stays listed (marked), loses its key packages, and its group
    /// memberships end at each group's current head. Moves the account's roster version on.
    fn revoke_device(
        &self,
        device: DeviceId,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Keeps the account's signed proof that revoked `device` is revoked (the first one
    /// given; later ones change nothing). Contacts remove a device only on this proof.
    fn set_revocation_proof(
        &self,
        device: DeviceId,
        signature: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records a login; the first one moves the account's roster version.
    fn touch_device(
        &self,
        device: DeviceId,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Files a link request under `link_id` until `expires_ms`, dropping expired ones first.
    fn create_link(
        &self,
        link_id: Vec<u8>,
        sealed_request: Vec<u8>,
        now_ms: u64,
        expires_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A link request that has not expired.
    fn link(
        &self,
        link_id: Vec<u8>,
        now_ms: u64,
    ) -> impl Future<Output = Result<LinkRecord, StoreError>> + Send;

    /// Stores the approval of a pending link. Only the first approval is kept (`Conflict` after).
    fn approve_link(
        &self,
        link_id: Vec<u8>,
        sealed_approval: Vec<u8>,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks an approved link completed (the new device was added to every group).
    fn complete_link(
        &self,
        link_id: Vec<u8>,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores the account's recovery record if the stored auth key is `expected_auth_key`
    /// (none stored: empty), else `Conflict`.
    fn set_recovery(
        &self,
        username: &str,
        record: RecoveryRecord,
        expected_auth_key: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The account's recovery record, if one was set.
    fn recovery(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<RecoveryRecord>, StoreError>> + Send;
}

/// Groups and their totally ordered logs, with the delivery service's rules ([`rules`]), and
/// the welcomes of the devices they add.
pub trait LogStore: Send + Sync + 'static {
    /// Creates a group at epoch 0 whose only member is `creator`.
    fn create_group(
        &self,
        group: GroupId,
        creator: DeviceId,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends an application message, commit or proposal to a group's log, enforcing the
    /// delivery-service rules (membership, current epoch, commits only at the log's head,
    /// idempotent message ids).
    fn append(&self, append: Append) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// Reads the entries after `after` that `device` may see, oldest first, at most `limit`.
    fn read_log(
        &self,
        group: GroupId,
        device: DeviceId,
        after: Seq,
        limit: u32,
    ) -> impl Future<Output = Result<LogPage, StoreError>> + Send;

    /// Reads the welcomes addressed to `device` with an id above `after_id`, oldest first.
    fn read_welcomes(
        &self,
        device: DeviceId,
        after_id: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<WelcomeRecord>, StoreError>> + Send;

    /// The groups `device` is or was a member of, after group `after` (all from the first if
    /// `None`) in group-id order, at most `limit`: with each group's head, the position of the
    /// device's account archive in it, and its roster version.
    fn device_groups(
        &self,
        device: DeviceId,
        after: Option<GroupId>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<GroupHead>, StoreError>> + Send;
}

/// The accounts' history archives: encrypted segments per account and group.
pub trait ArchiveStore: Send + Sync + 'static {
    /// Appends a segment to `username`'s archive of `segment.group`, if `through_seq` is beyond
    /// what is archived (else `Conflict` with the archived position). `device` must be or have
    /// been a member of the group. Returns the segment's id.
    fn append_archive(
        &self,
        username: &str,
        device: DeviceId,
        segment: ArchiveSegment,
        now_ms: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// `username`'s archive segments with an id above `after_id`, oldest first.
    fn read_archive(
        &self,
        username: &str,
        after_id: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ArchiveSegment>, StoreError>> + Send;
}

/// File uploads and blobs, their quotas and references (see docs/files.md).
pub trait FileStore: Send + Sync + 'static {
    /// Records a new upload, unless the account has
    /// [`chapar_types::limits::FILE_UNFINISHED_UPLOADS_PER_ACCOUNT_MAX`] unfinished uploads
    /// already, or its usage ([`FileStore::file_usage`]) plus the new upload's charge (its length,
    /// at least [`chapar_types::limits::FILE_QUOTA_CHARGE_MIN_BYTES`]) would pass
    /// `quota_bytes`. The checks and the insert are one transaction.
    fn create_upload(
        &self,
        upload: NewUpload,
        quota_bytes: u64,
    ) -> impl Future<Output = Result<UploadCreated, StoreError>> + Send;

    /// An upload or blob, with its reference count.
    fn upload(
        &self,
        id: BlobId,
    ) -> impl Future<Output = Result<Option<UploadRecord>, StoreError>> + Send;

    /// Moves an unfinished upload's committed length from `from` to `to` (bytes the blob store
    /// has made durable, at most the declared length) and its expiry to `expires_ms`, if it is
    /// still at `from`.
    fn commit_upload(
        &self,
        id: BlobId,
        from: u64,
        to: u64,
        now_ms: u64,
        expires_ms: u64,
    ) -> impl Future<Output = Result<UploadCommitted, StoreError>> + Send;

    /// Marks an upload whose committed length reached its declared length complete, and
    /// unreferenced from `now_ms` on. Completing twice keeps the first time. `None`: no such
    /// upload.
    fn complete_upload(
        &self,
        id: BlobId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<UploadRecord>, StoreError>> + Send;

    /// Forgets an upload or blob of `username` that no message references.
    fn delete_upload(
        &self,
        id: BlobId,
        username: &str,
    ) -> impl Future<Output = Result<UploadDeleted, StoreError>> + Send;

    /// Bytes `username` uses: the declared lengths of its blobs and unfinished uploads, each
    /// counted as at least [`chapar_types::limits::FILE_QUOTA_CHARGE_MIN_BYTES`].
    fn file_usage(&self, username: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// [`LogStore::append`] for an application message that carries blobs, in one transaction:
    /// each of `refs.add` must be a complete blob (else `UnknownBlob` and nothing is stored);
    /// they are referenced at the new entry. Of `refs.drop`, only the references held by the
    /// entry at `refs.deleted_seq` in this group are dropped, and only those the sender's
    /// account made; other entries carrying the same blob (in this group or another, by this
    /// account or another) keep theirs. A `deleted_seq` of 0 drops nothing. Unknown ids are
    /// ignored. A retried message (duplicate id) changes nothing.
    fn append_referencing(
        &self,
        append: Append,
        refs: BlobRefs,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// Forgets up to `limit` blobs: complete ones unreferenced since before
    /// `unreferenced_before_ms`, and unfinished uploads that expired at or before `now_ms`.
    /// Returns them, so that their bytes can be deleted.
    fn collect_garbage(
        &self,
        now_ms: u64,
        unreferenced_before_ms: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Garbage>, StoreError>> + Send;

    /// Which of `ids` the store knows, so that bytes with no record (orphans) can be found.
    fn known_blobs(
        &self,
        ids: Vec<BlobId>,
    ) -> impl Future<Output = Result<Vec<BlobId>, StoreError>> + Send;
}

mod files;
pub use files::*;

use chapar_types::BlobId;
