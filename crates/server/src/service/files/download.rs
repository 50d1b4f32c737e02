//! Downloads: any authenticated device may read any complete blob by id, by range. Ids are
//! 128-bit random and the bytes are ciphertext, so knowing the id is the capability. The
//! server serves the bytes exactly as stored; integrity is the client's check (its encryption
//! authenticates every chunk).

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use chapar_blob::ByteStream;
use chapar_store::Store;
use chapar_types::BlobId;
use futures_util::{Stream, StreamExt};

use super::transfers::TransferPermit;
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

    /// Streams `range` of complete blob `id` (checked by [`Self::blob_length`] first) to the
    /// caller, counting the bytes that leave. The stream holds one of the caller's transfer
    /// slots until it is dropped (sent, or abandoned by the client).
    pub async fn read_blob(
        self: &Arc<Self>,
        who: &Authenticated,
        id: BlobId,
        range: Range<u64>,
    ) -> Result<ByteStream, ServiceError> {
        let transfer = self.files.transfers.try_acquire(who.device)?;
        let stream = self
            .files
            .blobs
            .read(id, range)
            .await
            .map_err(|e| blob_error(e, id))?;
        let service = self.clone();
        let counted = stream.inspect(move |chunk| match chunk {
            Ok(bytes) => {
                service
                    .metrics
                    .file_bytes_downloaded_total
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(blob = %id, error = %e, "reading a blob failed"),
        });
        Ok(Box::pin(Holding {
            stream: Box::pin(counted),
            _transfer: transfer,
        }))
    }
}

/// A download's bytes, holding its transfer slot for as long as the response body lives.
struct Holding {
    stream: ByteStream,
    _transfer: TransferPermit,
}

impl Stream for Holding {
    type Item = <ByteStream as Stream>::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}
