//! The four store traits on [`PgStore`]: each call is one transaction, serializable for
//! writes (retried on conflict) and a read-only snapshot for reads, around the SQL in the
//! sibling modules.

use std::sync::atomic::Ordering;

use chapar_types::{BlobId, DeviceId, GroupId, Seq};
use tokio_postgres::IsolationLevel;

use super::{
    Failure, PgStore, SERIALIZATION_ATTEMPTS_MAX, accounts, describe, files, group_lock_key,
    key_packages, log, pg, retry_pause,
};
use crate::*;

impl AccountStore for PgStore {
    async fn create_account(&self, account: NewAccount) -> Result<(), StoreError> {
        serializable!(self, |tx| accounts::create_account(&tx, &account).await?)
    }

    async fn account(&self, username: &str) -> Result<Option<AccountRecord>, StoreError> {
        snapshot!(self, |tx| accounts::account(&tx, username).await?)
    }

    async fn device(&self, device: DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        snapshot!(self, |tx| accounts::device(&tx, device).await?)
    }

    async fn add_key_packages(
        &self,
        device: DeviceId,
        one_time: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        account_bytes_max: u64,
    ) -> Result<u32, StoreError> {
        serializable!(self, |tx| {
            let count =
                key_packages::add_key_packages(&tx, device, &one_time, last_resort.as_deref())
                    .await?;
            // Over the quota, the transaction rolls the upload back.
            key_packages::check_key_package_quota(&tx, device, account_bytes_max).await?;
            count
        })
    }

    async fn key_package_bytes(&self, username: &str) -> Result<u64, StoreError> {
        snapshot!(self, |tx| key_packages::key_package_bytes(&tx, username)
            .await?)
    }

    async fn key_package_count(&self, device: DeviceId) -> Result<u32, StoreError> {
        snapshot!(self, |tx| key_packages::key_package_count(&tx, device)
            .await?)
    }

    async fn claim_key_packages(
        &self,
        username: &str,
        except: DeviceId,
        only: Vec<DeviceId>,
        one_time: bool,
    ) -> Result<Vec<ClaimedKeyPackage>, StoreError> {
        serializable!(self, |tx| key_packages::claim_key_packages(
            &tx, username, except, &only, one_time
        )
        .await?)
    }

    async fn add_device(&self, device: NewDevice) -> Result<(), StoreError> {
        serializable!(self, |tx| accounts::add_device(&tx, &device).await?)
    }

    async fn revoke_device(&self, device: DeviceId, now_ms: u64) -> Result<(), StoreError> {
        serializable!(self, |tx| accounts::revoke_device(&tx, device, now_ms)
            .await?)
    }

    async fn set_revocation_proof(
        &self,
        device: DeviceId,
        signature: Vec<u8>,
    ) -> Result<(), StoreError> {
        serializable!(self, |tx| accounts::set_revocation_proof(
            &tx, device, &signature
        )
        .await?)
    }

    async fn touch_device(&self, device: DeviceId, now_ms: u64) -> Result<(), StoreError> {
        serializable!(self, |tx| accounts::touch_device(&tx, device, now_ms)
            .await?)
    }

    async fn create_link(
        &self,
        link_id: Vec<u8>,
        sealed_request: Vec<u8>,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        serializable!(self, |tx| accounts::create_link(
            &tx,
            &link_id,
            &sealed_request,
            now_ms,
            expires_ms
        )
        .await?)
    }

    async fn link(&self, link_id: Vec<u8>, now_ms: u64) -> Result<LinkRecord, StoreError> {
        snapshot!(self, |tx| accounts::link(&tx, &link_id, now_ms).await?)
    }

    async fn approve_link(
        &self,
        link_id: Vec<u8>,
        sealed_approval: Vec<u8>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        serializable!(self, |tx| accounts::approve_link(
            &tx,
            &link_id,
            &sealed_approval,
            now_ms
        )
        .await?)
    }

    async fn complete_link(&self, link_id: Vec<u8>, now_ms: u64) -> Result<(), StoreError> {
        serializable!(self, |tx| accounts::complete_link(&tx, &link_id, now_ms)
            .await?)
    }

    async fn set_recovery(
        &self,
        username: &str,
        record: RecoveryRecord,
        expected_auth_key: Vec<u8>,
    ) -> Result<(), StoreError> {
        serializable!(self, |tx| accounts::set_recovery(
            &tx,
            username,
            &record,
            &expected_auth_key
        )
        .await?)
    }

    async fn recovery(&self, username: &str) -> Result<Option<RecoveryRecord>, StoreError> {
        snapshot!(self, |tx| accounts::recovery(&tx, username).await?)
    }
}

impl LogStore for PgStore {
    async fn create_group(
        &self,
        group: GroupId,
        creator: DeviceId,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        serializable!(self, |tx| log::create_group(&tx, group, creator, now_ms)
            .await?)
    }

    async fn append(&self, append: Append) -> Result<Appended, StoreError> {
        let _queued = self.group_lock(append.group).lock().await;
        serializable!(self, lock = Some(group_lock_key(append.group)), |tx| {
            log::append(&tx, &append).await?
        })
    }

    async fn read_log(
        &self,
        group: GroupId,
        device: DeviceId,
        after: Seq,
        limit: u32,
    ) -> Result<LogPage, StoreError> {
        snapshot!(self, |tx| log::read_log(&tx, group, device, after, limit)
            .await?)
    }

    async fn read_welcomes(
        &self,
        device: DeviceId,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<WelcomeRecord>, StoreError> {
        snapshot!(self, |tx| log::read_welcomes(&tx, device, after_id, limit)
            .await?)
    }

    async fn device_groups(
        &self,
        device: DeviceId,
        after: Option<GroupId>,
        limit: u32,
    ) -> Result<Vec<GroupHead>, StoreError> {
        snapshot!(self, |tx| log::device_groups(&tx, device, after, limit)
            .await?)
    }
}

impl ArchiveStore for PgStore {
    async fn append_archive(
        &self,
        username: &str,
        device: DeviceId,
        segment: ArchiveSegment,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        serializable!(self, |tx| log::append_archive(
            &tx, username, device, &segment, now_ms
        )
        .await?)
    }

    async fn read_archive(
        &self,
        username: &str,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<ArchiveSegment>, StoreError> {
        snapshot!(self, |tx| log::read_archive(&tx, username, after_id, limit)
            .await?)
    }
}

impl FileStore for PgStore {
    async fn create_upload(
        &self,
        upload: NewUpload,
        quota_bytes: u64,
    ) -> Result<UploadCreated, StoreError> {
        serializable!(self, |tx| files::create_upload(&tx, &upload, quota_bytes)
            .await?)
    }

    async fn upload(&self, id: BlobId) -> Result<Option<UploadRecord>, StoreError> {
        snapshot!(self, |tx| files::upload(&tx, id).await?)
    }

    async fn commit_upload(
        &self,
        id: BlobId,
        from: u64,
        to: u64,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<UploadCommitted, StoreError> {
        serializable!(self, |tx| files::commit_upload(
            &tx, id, from, to, now_ms, expires_ms
        )
        .await?)
    }

    async fn complete_upload(
        &self,
        id: BlobId,
        now_ms: u64,
    ) -> Result<Option<UploadRecord>, StoreError> {
        serializable!(self, |tx| files::complete_upload(&tx, id, now_ms).await?)
    }

    async fn delete_upload(&self, id: BlobId, username: &str) -> Result<UploadDeleted, StoreError> {
        serializable!(self, |tx| files::delete_upload(&tx, id, username).await?)
    }

    async fn file_usage(&self, username: &str) -> Result<u64, StoreError> {
        snapshot!(self, |tx| files::usage(&tx, username).await?.0)
    }

    async fn append_referencing(
        &self,
        append: Append,
        refs: BlobRefs,
    ) -> Result<Appended, StoreError> {
        let _queued = self.group_lock(append.group).lock().await;
        serializable!(self, |tx| files::append_referencing(&tx, &append, &refs)
            .await?)
    }

    async fn collect_garbage(
        &self,
        now_ms: u64,
        unreferenced_before_ms: u64,
        limit: u32,
    ) -> Result<Vec<Garbage>, StoreError> {
        serializable!(self, |tx| files::collect_garbage(
            &tx,
            now_ms,
            unreferenced_before_ms,
            limit
        )
        .await?)
    }

    async fn known_blobs(&self, ids: Vec<BlobId>) -> Result<Vec<BlobId>, StoreError> {
        snapshot!(self, |tx| files::known_blobs(&tx, &ids).await?)
    }
}
