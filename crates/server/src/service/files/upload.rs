//! Uploads: create one (within the size limit, the account's quota and its number of
//! unfinished uploads), append chunks at its offset, finish it, or terminate it.
//!
//! An append streams the chunk into the blob store through a bounded buffer, then commits:
//! the blob store makes the bytes durable, and only then does the store move the upload's
//! offset. A chunk without a checksum that is cut off keeps what arrived (as tus recommends);
//! a chunk with a checksum counts whole and verified or not at all. One request at a time may
//! append to an upload (`upload_busy` for the others).

use std::time::Duration;

use bytes::Bytes;
use chapar_blob::BlobError;
use chapar_store::{NewUpload, Store, UploadCommitted, UploadCreated, UploadDeleted, UploadRecord};
use chapar_types::limits::FILE_QUOTA_CHARGE_MIN_BYTES;
use chapar_types::{BlobId, ErrorCode};
use futures_util::{Stream, StreamExt};
use rand::RngCore;
use sha1::Digest as _;

use super::{blob_error, duration_ms, unknown_blob};
use crate::error::ServiceError;
use crate::service::{Authenticated, Service, now_ms};

/// How long a request body may stall before the append stops and keeps what arrived, so a
/// silent client cannot hold an upload busy forever.
pub const UPLOAD_BODY_IDLE_SECS: u64 = 60;

/// Checksum algorithms for chunks (tus checksum extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// SHA-1, which every tus server must support.
    Sha1,
    /// SHA-256.
    Sha256,
}

impl ChecksumAlgorithm {
    /// Every supported algorithm, most preferred first.
    pub const ALL: [Self; 2] = [Self::Sha1, Self::Sha256];

    /// The algorithm's tus name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
        }
    }

    /// The algorithm with this tus name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// A chunk's expected digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The raw digest.
    pub digest: Vec<u8>,
}

enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Sha1 => Self::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// One append request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// The upload.
    pub id: BlobId,
    /// Where the client believes the upload is; must be its offset.
    pub offset: u64,
    /// The chunk's length, if the client announced it.
    pub chunk_bytes: Option<u64>,
    /// The upload's length, if the client repeated it; must be the declared one.
    pub length: Option<u64>,
    /// The chunk's expected digest, if any.
    pub checksum: Option<Checksum>,
}

/// What an append did.
#[derive(Debug)]
pub struct Appended {
    /// The upload after the request, if it exists and is the caller's.
    pub upload: Option<UploadRecord>,
    /// Why the request (or part of it) failed; whatever was kept is in `upload`.
    pub result: Result<(), ServiceError>,
}

impl Appended {
    fn failed(upload: Option<UploadRecord>, error: ServiceError) -> Self {
        Self {
            upload,
            result: Err(error),
        }
    }
}

/// What arrived of a chunk and what of it is durable.
struct Received {
    /// The blob's durable length now (the old offset if nothing counts).
    durable: u64,
    problem: Option<ServiceError>,
}

fn offset_mismatch(offset: u64) -> ServiceError {
    ServiceError::new(
        ErrorCode::OffsetMismatch,
        format!("the upload is at offset {offset}; resume from there"),
    )
}

/// A chunk longer than what is left of the upload: refused up front when `Content-Length`
/// says so, or when the body passes it.
fn past_length(remaining: u64) -> ServiceError {
    ServiceError::new(
        ErrorCode::TooLarge,
        format!("the chunk goes past the upload's length ({remaining} bytes left)"),
    )
}

impl<S: Store> Service<S> {
    /// Creates an upload of `length` bytes for the caller's account.
    pub async fn create_upload(
        &self,
        who: &Authenticated,
        length: u64,
    ) -> Result<UploadRecord, ServiceError> {
        let config = &self.files.config;
        if length > config.upload_bytes_max {
            return Err(ServiceError::new(
                ErrorCode::TooLarge,
                format!(
                    "an upload may have at most {} bytes",
                    config.upload_bytes_max
                ),
            ));
        }
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let id = BlobId(id);
        let now = now_ms();
        let upload = NewUpload {
            id,
            username: who.username.as_str().to_owned(),
            device: who.device,
            length,
            now_ms: now,
            expires_ms: now.saturating_add(duration_ms(config.upload_expiry)),
        };
        let record = upload.record();
        let quota = config.quota_bytes_per_account;
        match self.store.create_upload(upload, quota).await? {
            UploadCreated::Created => {}
            UploadCreated::QuotaExceeded { used_bytes } => {
                let charge = length.max(FILE_QUOTA_CHARGE_MIN_BYTES);
                return Err(ServiceError::new(
                    ErrorCode::QuotaExceeded,
                    format!(
                        "{charge} more bytes would pass the account's file quota of {quota} \
                         bytes ({used_bytes} in use; each file counts at least \
                         {FILE_QUOTA_CHARGE_MIN_BYTES})"
                    ),
                ));
            }
            UploadCreated::TooManyUnfinished { unfinished } => {
                return Err(ServiceError::new(
                    ErrorCode::TooManyUploads,
                    format!(
                        "the account has {unfinished} unfinished uploads, the most it may have; \
                         finish or terminate one first"
                    ),
                ));
            }
        }
        if let Err(e) = self.files.blobs.create(id).await {
            // A record without bytes would count against the quota for nothing.
            if let Err(undo) = self.store.delete_upload(id, who.username.as_str()).await {
                tracing::warn!(blob = %id, error = %undo, "cannot forget a failed upload");
            }
            return Err(blob_error(e, id));
        }
        tracing::info!(blob = %id, bytes = length, device = %who.device, "upload created");
        if length == 0 {
            return self.finish_upload(record).await;
        }
        Ok(record)
    }

    /// An upload as the caller may see it: any complete blob, or the account's own unfinished
    /// upload while it has not expired. An upload whose every byte is committed is finished
    /// first, whoever asks.
    pub async fn upload_status(
        &self,
        who: &Authenticated,
        id: BlobId,
    ) -> Result<UploadRecord, ServiceError> {
        let record = self
            .store
            .upload(id)
            .await?
            .ok_or_else(|| unknown_blob(id))?;
        if record.is_complete() {
            return Ok(record);
        }
        if record.committed == record.length {
            // Every byte is committed, but the blob is not finished: the server stopped
            // between the two, or the last PATCH is finishing it right now. Finishing is
            // idempotent in both stores, so whoever asks first does it, without the upload's
            // busy lock: a recipient's GET need not wait for the owner to come back.
            return self.finish_upload(record).await;
        }
        if record.username != who.username.as_str() {
            return Err(unknown_blob(id));
        }
        if record.expires_ms <= now_ms() {
            return Err(ServiceError::new(
                ErrorCode::UploadExpired,
                "the upload expired; start a new one",
            ));
        }
        Ok(record)
    }

    /// Appends one chunk, read from `body`, to the caller's upload.
    pub async fn append_upload<B, E>(
        &self,
        who: &Authenticated,
        append: Append,
        body: B,
    ) -> Appended
    where
        B: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let id = append.id;
        // Taken before the busy lock and held until the body is consumed: the write buffer
        // lives that long.
        let _transfer = match self.files.transfers.try_acquire(&who.username, who.device) {
            Ok(permit) => permit,
            Err(e) => return Appended::failed(None, e),
        };
        let Some(_busy) = self.files.try_lock(id) else {
            return Appended::failed(
                None,
                ServiceError::new(
                    ErrorCode::UploadBusy,
                    "another request is writing to this upload",
                ),
            );
        };
        let record = match self.upload_status(who, id).await {
            Ok(record) if record.username == who.username.as_str() => record,
            Ok(_) => return Appended::failed(None, unknown_blob(id)),
            Err(e) => return Appended::failed(None, e),
        };
        if append.length.is_some_and(|length| length != record.length) {
            return Appended::failed(
                Some(record),
                ServiceError::bad_request("Upload-Length differs from the declared length"),
            );
        }
        if append.offset != record.committed {
            let error = offset_mismatch(record.committed);
            return Appended::failed(Some(record), error);
        }
        if record.is_complete() {
            // A repeated final request: nothing to add.
            let result = match append.chunk_bytes {
                None | Some(0) => Ok(()),
                Some(_) => Err(offset_mismatch(record.committed)),
            };
            return Appended {
                upload: Some(record),
                result,
            };
        }
        // `committed <= length` is the store's invariant; a damaged row must not wrap around.
        let remaining = record.length.saturating_sub(record.committed);
        if append.chunk_bytes.is_some_and(|n| n > remaining) {
            return Appended::failed(Some(record), past_length(remaining));
        }
        let received = self
            .receive_chunk(&record, append.checksum.as_ref(), body)
            .await;
        let mut upload = record;
        if received.durable > upload.committed {
            let now = now_ms();
            let expires = now.saturating_add(duration_ms(self.files.config.upload_expiry));
            match self
                .store
                .commit_upload(id, upload.committed, received.durable, now, expires)
                .await
            {
                Ok(UploadCommitted::Committed(after)) => {
                    let bytes = after.committed - upload.committed;
                    self.metrics
                        .file_bytes_uploaded_total
                        .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(blob = %id, offset = upload.committed, bytes, "chunk stored");
                    upload = after;
                }
                // Only a second server could have moved it, or the upload was terminated or
                // collected meanwhile: these bytes are not ours to count.
                Ok(UploadCommitted::OffsetMoved(now)) => {
                    let error = offset_mismatch(now.committed);
                    return Appended::failed(Some(now), error);
                }
                Ok(UploadCommitted::NotFound) => return Appended::failed(None, unknown_blob(id)),
                Err(e) => return Appended::failed(Some(upload), e.into()),
            }
        }
        if upload.committed == upload.length {
            upload = match self.finish_upload(upload.clone()).await {
                Ok(done) => done,
                Err(e) => return Appended::failed(Some(upload), e),
            };
        }
        Appended {
            upload: Some(upload),
            result: received.problem.map_or(Ok(()), Err),
        }
    }

    /// Streams a chunk into the blob store and makes durable what counts of it.
    async fn receive_chunk<B, E>(
        &self,
        record: &UploadRecord,
        checksum: Option<&Checksum>,
        mut body: B,
    ) -> Received
    where
        B: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let (id, offset) = (record.id, record.committed);
        let nothing = |problem| Received {
            durable: offset,
            problem: Some(problem),
        };
        let mut appender = match self.files.blobs.append(id, offset).await {
            Ok(appender) => appender,
            Err(e) => return nothing(blob_error(e, id)),
        };
        let remaining = record.length.saturating_sub(offset);
        let mut hasher = checksum.map(|c| Hasher::new(c.algorithm));
        let mut received = 0u64;
        let mut problem = None;
        let mut whole = false;
        let mut overflow = false;
        let idle = Duration::from_secs(UPLOAD_BODY_IDLE_SECS);
        loop {
            match tokio::time::timeout(idle, body.next()).await {
                Ok(None) => {
                    whole = true;
                    break;
                }
                Ok(Some(Ok(chunk))) => {
                    if received + chunk.len() as u64 > remaining {
                        overflow = true;
                        problem = Some(past_length(remaining));
                        break;
                    }
                    received += chunk.len() as u64;
                    if let Some(hasher) = &mut hasher {
                        hasher.update(&chunk);
                    }
                    if let Err(e) = appender.write(chunk).await {
                        problem = Some(blob_error(e, id));
                        break;
                    }
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(blob = %id, error = %e, "request body ended early");
                    problem = Some(ServiceError::bad_request("the request body ended early"));
                    break;
                }
                Err(_) => {
                    tracing::debug!(blob = %id, "request body stalled");
                    problem = Some(ServiceError::bad_request("the request body stalled"));
                    break;
                }
            }
        }
        let counts = match (checksum, hasher) {
            _ if overflow => false,
            (Some(expected), Some(hasher)) => {
                if !whole {
                    // A checksummed chunk counts whole or not at all.
                    false
                } else if hasher.finish() != expected.digest {
                    problem = Some(ServiceError::new(
                        ErrorCode::ChecksumMismatch,
                        "the chunk does not match its Upload-Checksum; nothing of it was stored",
                    ));
                    false
                } else {
                    true
                }
            }
            _ => true,
        };
        if !counts {
            // Dropping the appender abandons its bytes: they lie past the committed offset.
            drop(appender);
            return Received {
                durable: offset,
                problem,
            };
        }
        match appender.commit().await {
            Ok(committed) => {
                let problem = problem.or(committed.write_error.map(|e| blob_error(e, id)));
                if checksum.is_some() && committed.length != offset + received {
                    return Received {
                        durable: offset,
                        problem,
                    };
                }
                Received {
                    durable: committed.length,
                    problem,
                }
            }
            Err(e) => nothing(blob_error(e, id)),
        }
    }

    /// Makes a fully committed upload a complete, readable blob. Safe to run concurrently for
    /// one upload (the last PATCH, a HEAD and a GET may all get here): every caller succeeds.
    pub(crate) async fn finish_upload(
        &self,
        record: UploadRecord,
    ) -> Result<UploadRecord, ServiceError> {
        let id = record.id;
        if let Err(e) = self.files.blobs.finalize(id, record.length).await {
            if e != BlobError::NotFound {
                return Err(blob_error(e, id));
            }
            // The bytes are gone from where finishing looks: another request finished the
            // blob first (a backend may report that as missing), or it was deleted meanwhile.
            return match self.store.upload(id).await? {
                Some(done) if done.is_complete() => Ok(done),
                Some(_) => {
                    tracing::warn!(blob = %id, "a fully committed upload's bytes are missing");
                    Err(unknown_blob(id))
                }
                None => Err(unknown_blob(id)),
            };
        }
        let now = now_ms();
        let done = self
            .store
            .complete_upload(id, now)
            .await?
            .ok_or_else(|| unknown_blob(id))?;
        if done.completed_ms == Some(now) {
            self.metrics
                .file_uploads_completed_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(blob = %id, bytes = done.length, "upload complete");
        }
        Ok(done)
    }

    /// Deletes the caller's upload or blob, unless a message references it.
    pub async fn terminate_upload(
        &self,
        who: &Authenticated,
        id: BlobId,
    ) -> Result<(), ServiceError> {
        let Some(_busy) = self.files.try_lock(id) else {
            return Err(ServiceError::new(
                ErrorCode::UploadBusy,
                "another request is writing to this upload",
            ));
        };
        match self.store.delete_upload(id, who.username.as_str()).await? {
            UploadDeleted::Deleted => {}
            UploadDeleted::Referenced => {
                return Err(ServiceError::new(
                    ErrorCode::BlobReferenced,
                    "a message references this blob; delete the message for everyone first",
                ));
            }
            UploadDeleted::NotFound => return Err(unknown_blob(id)),
        }
        // The record is gone, so the bytes no longer count; if deleting them fails, garbage
        // collection finds them as orphans.
        if let Err(e) = self.files.blobs.delete(id).await {
            tracing::warn!(blob = %id, error = %e, "cannot delete a terminated upload's bytes");
        }
        tracing::info!(blob = %id, device = %who.device, "upload terminated");
        Ok(())
    }
}
