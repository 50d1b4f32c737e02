//! The server's storage seam.
//!
//! [`Store`] is everything the service layer asks of durable storage: accounts and devices, key
//! packages, and per-group totally ordered logs with the epoch rules of the MLS delivery service.
//! [`sqlite::SqliteStore`] is the embedded default. [`conformance`] is the suite every backend
//! must pass, so a PostgreSQL backend can be added without touching the service layer.
//!
//! Only store crates know SQL. A write returns only once it is durable (committed with fsync);
//! backends are expected to batch concurrent writes into one transaction (group commit).

pub mod conformance;
mod model;
pub mod sqlite;

pub use model::*;

use chapar_types::{DeviceId, GroupId, Seq};
use std::future::Future;

/// Durable storage for the server. All methods are safe to call concurrently.
pub trait Store: Send + Sync + 'static {
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
    fn add_key_packages(
        &self,
        device: DeviceId,
        one_time: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// How many one-time key packages a device has left.
    fn key_package_count(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Takes one key package for each active device of `username` except `except`: a one-time
    /// package if any is left (it is deleted), else the last-resort one (it is kept).
    fn claim_key_packages(
        &self,
        username: &str,
        except: DeviceId,
    ) -> impl Future<Output = Result<Vec<ClaimedKeyPackage>, StoreError>> + Send;

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

    /// Every group `device` is or was a member of, with the group's head.
    fn device_groups(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = Result<Vec<GroupHead>, StoreError>> + Send;
}
