//! Downloads: any authenticated device may read any complete blob by id, by range. Ids are
//! 128-bit random and the bytes are ciphertext, so knowing the id is the capability. The
//! server serves the bytes exactly as stored; integrity is the client's check (its encryption
//! authenticates every chunk).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chapar_blob::ByteStream;
use chapar_store::Store;
use chapar_types::BlobId;
use futures_util::StreamExt;

use super::{blob_error, unknown_blob};
use crate::error::ServiceError;
use crate::service::{Authenticated, Service};

impl<S: Store> Service<S> {
    /// The length of complete blob `id`, before reading it.
    pub async fn blob_length(&self, who: &Authenticated, id: BlobId) -> Result<u64, ServiceError> {
        let record = self.upload_status(who, id).await?;
        if !record.is_complete() {
            return Err(unknown_blob(id));
        }
        Ok(record.length)
    }

    /// Streams `range` of complete blob `id` (checked by [`Self::blob_length`] first), counting
    /// the bytes that leave.
    pub async fn read_blob(
        self: &Arc<Self>,
        id: BlobId,
        range: Range<u64>,
    ) -> Result<ByteStream, ServiceError> {
        let stream = self
            .files
            .blobs
            .read(id, range)
            .await
            .map_err(|e| blob_error(e, id))?;
        let service = self.clone();
        Ok(Box::pin(stream.inspect(move |chunk| match chunk {
            Ok(bytes) => {
                service
                    .metrics
                    .file_bytes_downloaded_total
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(blob = %id, error = %e, "reading a blob failed"),
        })))
    }
}
