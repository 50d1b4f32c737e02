//! Garbage collection of file storage. The server cannot read messages, so it keeps a blob as
//! long as some message references it (senders name the blobs they carry) and forgets:
//!
//! - complete blobs that have had no reference for longer than the grace period (long enough
//!   for the uploader to send the message that carries the file);
//! - unfinished uploads past their expiry (moved on by every chunk);
//! - orphans: bytes in the blob store that the store has no record of (a crash between
//!   forgetting a record and deleting its bytes).
//!
//! Records are forgotten first, in one store transaction with the checks, so a message that
//! references a blob either lands before (and the blob stays) or is refused after.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chapar_store::Store;
use chapar_types::BlobId;
use futures_util::StreamExt;

use super::duration_ms;
use crate::error::ServiceError;
use crate::service::{Service, now_ms};

/// Most records forgotten in one store transaction.
pub const GC_BATCH_BLOBS: u32 = 512;

/// Most listed blob ids checked against the store at once by the orphan sweep.
pub const GC_ORPHAN_CHECK_BLOBS: usize = 512;

/// What one collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Complete blobs unreferenced past the grace period.
    pub unreferenced: u64,
    /// Unfinished uploads past their expiry.
    pub expired: u64,
    /// Bytes without a record.
    pub orphans: u64,
}

impl<S: Store> Service<S> {
    /// Runs one garbage collection.
    pub async fn collect_file_garbage(&self) -> Result<GcReport, ServiceError> {
        let mut report = GcReport::default();
        let now = now_ms();
        let unreferenced_before =
            now.saturating_sub(duration_ms(self.files.config.unreferenced_grace));
        loop {
            let batch = self
                .store
                .collect_garbage(now, unreferenced_before, GC_BATCH_BLOBS)
                .await?;
            for garbage in &batch {
                if garbage.complete {
                    report.unreferenced += 1;
                } else {
                    report.expired += 1;
                }
                self.delete_bytes(garbage.id).await;
            }
            if batch.len() < GC_BATCH_BLOBS as usize {
                break;
            }
        }
        report.orphans = self.delete_orphans().await?;
        let deleted = report.unreferenced + report.expired + report.orphans;
        self.metrics
            .file_blobs_deleted_total
            .fetch_add(deleted, Ordering::Relaxed);
        if deleted > 0 {
            tracing::info!(
                unreferenced = report.unreferenced,
                expired = report.expired,
                orphans = report.orphans,
                "file garbage collected"
            );
        }
        Ok(report)
    }

    async fn delete_bytes(&self, id: BlobId) {
        // The record is gone; bytes that fail to go now are an orphan for the next sweep.
        if let Err(e) = self.files.blobs.delete(id).await {
            tracing::warn!(blob = %id, error = %e, "cannot delete a collected blob's bytes");
        }
    }

    /// Deletes stored bytes whose record is gone. A record is always written before its
    /// bytes and removed before them, so bytes without a record are never a live upload.
    async fn delete_orphans(&self) -> Result<u64, ServiceError> {
        let mut listing = self.files.blobs.list();
        let mut batch = Vec::with_capacity(GC_ORPHAN_CHECK_BLOBS);
        let mut deleted = 0;
        loop {
            let next = listing.next().await;
            let done = match next {
                Some(Ok(blob)) => {
                    batch.push(blob.id);
                    false
                }
                // One unreadable part of the storage must not spare the rest from the sweep;
                // the listing goes on past it, and ends on its own.
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cannot list part of the file storage");
                    false
                }
                None => true,
            };
            if batch.len() >= GC_ORPHAN_CHECK_BLOBS || (done && !batch.is_empty()) {
                let known: HashSet<BlobId> = self
                    .store
                    .known_blobs(batch.clone())
                    .await?
                    .into_iter()
                    .collect();
                for id in batch.drain(..).filter(|id| !known.contains(id)) {
                    self.delete_bytes(id).await;
                    deleted += 1;
                }
            }
            if done {
                return Ok(deleted);
            }
        }
    }
}

/// Runs garbage collection every `gc_interval` (and once at start if configured) for as long
/// as the runtime lives.
pub fn spawn_file_gc<S: Store>(service: Arc<Service<S>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let config = service.files.config().clone();
        if !config.gc_at_startup {
            tokio::time::sleep(config.gc_interval).await;
        }
        loop {
            if let Err(e) = service.collect_file_garbage().await {
                tracing::warn!(code = %e.code, "file garbage collection failed; retrying later");
            }
            tokio::time::sleep(config.gc_interval).await;
        }
    })
}
