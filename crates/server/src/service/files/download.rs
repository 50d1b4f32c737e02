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
use tokio::sync::mpsc;

use super::{blob_error, unknown_blob};
use crate::error::ServiceError;
use crate::metrics::LimitHit;
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
    /// caller, counting the bytes that leave. A task reads the blob and hands each chunk to
    /// the response body; it holds one of the caller's transfer slots until the body is sent,
    /// abandoned by the client, or left untaken for the download idle timeout (then the body
    /// ends short, the connection is cut, and the client resumes with a range request).
    pub async fn read_blob(
        self: &Arc<Self>,
        who: &Authenticated,
        id: BlobId,
        range: Range<u64>,
    ) -> Result<ByteStream, ServiceError> {
        let transfer = self
            .files
            .transfers
            .try_acquire(&who.username, who.device)?;
        let mut stream = self
            .files
            .blobs
            .read(id, range)
            .await
            .map_err(|e| blob_error(e, id))?;
        // One chunk in hand: the body's own buffer and the socket's hold the rest.
        let (chunks, body) = mpsc::channel(1);
        let service = self.clone();
        let idle = self.files.config().download_idle_timeout;
        tokio::spawn(async move {
            let mut transfer = Some(transfer);
            let mut next = stream.next().await;
            while let Some(chunk) = next {
                // Read ahead, to know whether this chunk is the last.
                next = stream.next().await;
                let bytes = match &chunk {
                    Ok(bytes) => bytes.len() as u64,
                    Err(e) => {
                        tracing::error!(blob = %id, error = %e, "reading a blob failed");
                        0
                    }
                };
                if next.is_none() {
                    // The last bytes go now: the slot is free before the client can have
                    // them (hyper may end the response there) and ask again. Freed after the
                    // send instead, a client quick enough could find its own slot still taken.
                    transfer = None;
                }
                match tokio::time::timeout(idle, chunks.send(chunk)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return, // the client went away
                    Err(_) => {
                        service.metrics.hit(LimitHit::DownloadIdle);
                        tracing::debug!(blob = %id, "download stalled; cut off");
                        return;
                    }
                }
                service
                    .metrics
                    .file_bytes_downloaded_total
                    .fetch_add(bytes, Ordering::Relaxed);
            }
            drop(transfer);
        });
        Ok(Box::pin(futures_util::stream::unfold(
            body,
            |mut body| async move { body.recv().await.map(|chunk| (chunk, body)) },
        )))
    }
}
