//! Accounts' history archives: segments of decrypted history, encrypted by the account's
//! devices under keys the server never has, so a new or recovered device can show the full
//! history of every chat. The server checks sizes and membership and keeps each group's
//! archived position; it cannot read a byte of the content.

use chapar_store::{ArchiveSegment, Store};
use chapar_types::ErrorCode;
use chapar_types::limits::{ARCHIVE_PAGE_SEGMENTS_MAX, ARCHIVE_SEGMENT_BYTES_MAX};

use super::{Authenticated, Service, fit_page, now_ms};
use crate::error::ServiceError;

impl<S: Store> Service<S> {
    /// Appends a segment to the caller's account archive; returns its id.
    pub async fn append_archive(
        &self,
        who: &Authenticated,
        segment: ArchiveSegment,
    ) -> Result<u64, ServiceError> {
        if segment.ciphertext.is_empty() || segment.ciphertext.len() > ARCHIVE_SEGMENT_BYTES_MAX {
            return Err(ServiceError::new(
                ErrorCode::TooLarge,
                format!("an archive segment has 1 to {ARCHIVE_SEGMENT_BYTES_MAX} bytes"),
            ));
        }
        self.require_active(who).await?;
        if segment.from_seq >= segment.through_seq {
            return Err(ServiceError::bad_request(
                "an archive segment must cover at least one log entry",
            ));
        }
        self.charge_writes(who, segment.ciphertext.len())?;
        Ok(self
            .store
            .append_archive(who.username.as_str(), who.device, segment, now_ms())
            .await?)
    }

    /// A page of the caller's account archive.
    pub async fn read_archive(
        &self,
        who: &Authenticated,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<ArchiveSegment>, ServiceError> {
        self.require_active(who).await?;
        let limit = limit.clamp(1, ARCHIVE_PAGE_SEGMENTS_MAX);
        let segments = self
            .store
            .read_archive(who.username.as_str(), after_id, limit)
            .await?;
        Ok(fit_page(segments, |s| s.ciphertext.len()))
    }
}
