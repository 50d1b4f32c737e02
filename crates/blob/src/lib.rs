//! The server's file storage seam.
//!
//! A blob is the ciphertext of one file, stored under a random [`BlobId`]. It starts *partial*
//! (an upload in progress) and grows by appends at its committed length; once every byte is
//! there it is *finalized* and becomes readable by range. [`BlobStore`] is all the server asks
//! of file storage; [`fs::FsBlobStore`] keeps blobs under `<data_dir>/files/`, and
//! `conformance` (feature `conformance`, not in the production build) is the suite every
//! backend must pass.
//!
//! The trait is shaped so that S3-compatible object storage fits later: `create` is starting a
//! multipart upload, an appender buffers into parts, `commit` makes what it wrote durable,
//! `finalize` completes the multipart upload, `read` is a ranged GET and `list` a bucket
//! listing (for garbage collection of orphans).
//!
//! What is *committed* is decided by the caller: the server's store records each blob's
//! committed length, and a backend only guarantees that bytes it reported committed survive a
//! crash. Anything stored past the committed length (an append that was cut off, or abandoned
//! because its checksum failed) is not part of the blob and is discarded by the next append or
//! by `finalize`. Backends know nothing of accounts, messages or HTTP.
//!
//! The trait is object safe (`Arc<dyn BlobStore>`): the service holds one without being generic
//! over it, and a future costs one allocation per call, which is nothing next to file I/O.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod fs;

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

pub use chapar_types::BlobId;

/// Largest chunk a backend's [`BlobStore::read`] stream yields, so a download's memory stays
/// bounded whatever the blob's size.
pub const READ_CHUNK_BYTES_MAX: usize = 1024 * 1024;

/// A boxed future, as every trait method returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The bytes of a ranged read, in chunks of at most [`READ_CHUNK_BYTES_MAX`].
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BlobError>> + Send>>;

/// A listing of every stored blob.
pub type BlobListing = Pin<Box<dyn Stream<Item = Result<ListedBlob, BlobError>> + Send>>;

/// Why a blob operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// No such blob (or not in the state the operation needs: reading a partial blob).
    #[error("no such blob")]
    NotFound,
    /// The storage is full; what was written before is as the operation's contract says.
    #[error("blob storage full")]
    Full,
    /// The backend failed; the detail is for the server log only.
    #[error("blob storage: {0}")]
    Backend(String),
}

impl From<std::io::Error> for BlobError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => Self::NotFound,
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Self::Full,
            _ => Self::Backend(e.to_string()),
        }
    }
}

/// One entry of [`BlobStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBlob {
    /// The blob.
    pub id: BlobId,
    /// Finalized (readable) rather than partial.
    pub complete: bool,
    /// Bytes stored now (for a partial blob this may include uncommitted bytes).
    pub bytes: u64,
}

/// What [`BlobAppender::commit`] made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The blob's durable length now: the append's offset plus every byte written before the
    /// first failure (all of them if none failed).
    pub length: u64,
    /// The first write failure, if a buffered write failed only while committing.
    pub write_error: Option<BlobError>,
}

/// Durable storage for blobs. All methods are safe to call concurrently for different blobs;
/// the caller makes sure only one appender is open per blob at a time.
pub trait BlobStore: Send + Sync + 'static {
    /// Starts an empty partial blob. Creating an existing partial blob empties it.
    fn create(&self, id: BlobId) -> BoxFuture<'_, Result<(), BlobError>>;

    /// Opens partial blob `id` to append at `offset`, its committed length. Anything stored
    /// past `offset` is discarded first. At offset 0 a lost partial blob is created again; past
    /// the end of what is stored it is an error.
    fn append(
        &self,
        id: BlobId,
        offset: u64,
    ) -> BoxFuture<'_, Result<Box<dyn BlobAppender>, BlobError>>;

    /// Turns partial blob `id`, whose committed length is `length`, into a complete, readable
    /// blob (bytes past `length` are dropped). Finalizing a complete blob of that length again
    /// succeeds, so a crash between finalizing and recording it is harmless, and so do
    /// concurrent finalizes of the same blob (the last chunk's request and a HEAD or GET may
    /// finish an upload at the same moment).
    fn finalize(&self, id: BlobId, length: u64) -> BoxFuture<'_, Result<(), BlobError>>;

    /// Reads `range` of complete blob `id`, in chunks of at most [`READ_CHUNK_BYTES_MAX`].
    /// A range past the blob's end is an error.
    fn read(&self, id: BlobId, range: Range<u64>) -> BoxFuture<'_, Result<ByteStream, BlobError>>;

    /// Deletes blob `id`, partial or complete. Deleting a missing blob is not an error.
    fn delete(&self, id: BlobId) -> BoxFuture<'_, Result<(), BlobError>>;

    /// Every blob stored, partial and complete, in no particular order. Blobs created or
    /// deleted during the listing may or may not appear. Only what [`BlobStore::delete`] would
    /// remove is listed: anything else found in the storage (stray files) is skipped, not an
    /// error.
    fn list(&self) -> BlobListing;
}

/// An open append to one partial blob. Dropping it without [`BlobAppender::commit`] abandons
/// what it wrote: the blob keeps its committed length.
pub trait BlobAppender: Send {
    /// Appends `chunk` after what this appender wrote so far. Not durable until `commit`. After
    /// a failure, later writes fail too, and `commit` keeps what was written before it.
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), BlobError>>;

    /// Makes what was written durable and returns the blob's durable length. An error means
    /// nothing this appender wrote may be counted on (the blob keeps its committed length).
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<Committed, BlobError>>;
}
