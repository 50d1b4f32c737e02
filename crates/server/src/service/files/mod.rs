//! Files: the rules for encrypted, resumable file transfers. Clients encrypt files before
//! upload; the server keeps opaque ciphertext under random ids and never learns names or
//! contents (see `docs/files.md`).
//!
//! - [`token`]: bearer tokens for HTTP requests, minted over the WebSocket.
//! - [`upload`]: creating uploads, appending chunks (durably, checksummed or not), terminating.
//! - [`download`]: ranged reads of complete blobs.
//! - [`gc`]: forgetting unreferenced blobs, expired uploads and orphaned bytes.
//! - [`references`]: messages that carry blobs, or drop them.
//! - [`transfers`]: how many uploads and downloads run at once, in all and per device.
//!
//! Bookkeeping (owner, lengths, times, references) lives in the [`chapar_store::Store`]; bytes
//! in a [`chapar_blob::BlobStore`]. The store is the truth: bytes count only once the store has
//! recorded them as committed, and the store records them only after the blob store has made
//! them durable. Nothing here knows HTTP.

pub mod download;
pub mod gc;
pub mod references;
pub mod token;
pub mod transfers;
pub mod upload;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chapar_blob::{BlobError, BlobStore, fs::FsBlobStore};
use chapar_types::limits::{
    FILE_CIPHERTEXT_BYTES_MAX_DEFAULT, FILE_DOWNLOAD_IDLE_SECS_DEFAULT,
    FILE_GC_INTERVAL_SECS_DEFAULT, FILE_GC_INTERVAL_SECS_MAX, FILE_QUOTA_BYTES_PER_ACCOUNT_DEFAULT,
    FILE_TRANSFERS_IN_FLIGHT_MAX, FILE_TRANSFERS_PER_ACCOUNT_MAX, FILE_TRANSFERS_PER_DEVICE_MAX,
    FILE_UNREFERENCED_GRACE_SECS_DEFAULT, FILE_UNREFERENCED_GRACE_SECS_MAX,
    FILE_UPLOAD_EXPIRY_SECS_DEFAULT, FILE_UPLOAD_EXPIRY_SECS_MAX,
};
use chapar_types::{BlobId, ErrorCode};

use crate::error::ServiceError;
pub use token::TokenKey;

/// What a server allows for files. Every field has a default (`chapar_types::limits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// Largest upload (ciphertext) accepted; announced as `Tus-Max-Size`.
    pub upload_bytes_max: u64,
    /// Storage one account may use: complete blobs plus declared lengths of unfinished uploads.
    pub quota_bytes_per_account: u64,
    /// How long an unfinished upload is kept after its last activity.
    pub upload_expiry: Duration,
    /// How long a complete blob is kept while no message references it.
    pub unreferenced_grace: Duration,
    /// Time between garbage collections.
    pub gc_interval: Duration,
    /// Also collect once right after start.
    pub gc_at_startup: bool,
    /// Most transfers (PATCH and GET bodies) running at once, server-wide.
    pub transfers_in_flight_max: usize,
    /// Most transfers the devices of one account run at once (below the server-wide most).
    pub transfers_per_account_max: usize,
    /// Most transfers one device runs at once.
    pub transfers_per_device_max: usize,
    /// Longest a download may wait for its client to take the next bytes before it is cut
    /// off (the client resumes with a range request).
    pub download_idle_timeout: Duration,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            upload_bytes_max: FILE_CIPHERTEXT_BYTES_MAX_DEFAULT,
            quota_bytes_per_account: FILE_QUOTA_BYTES_PER_ACCOUNT_DEFAULT,
            upload_expiry: Duration::from_secs(FILE_UPLOAD_EXPIRY_SECS_DEFAULT),
            unreferenced_grace: Duration::from_secs(FILE_UNREFERENCED_GRACE_SECS_DEFAULT),
            gc_interval: Duration::from_secs(FILE_GC_INTERVAL_SECS_DEFAULT),
            gc_at_startup: true,
            transfers_in_flight_max: FILE_TRANSFERS_IN_FLIGHT_MAX,
            transfers_per_account_max: FILE_TRANSFERS_PER_ACCOUNT_MAX,
            transfers_per_device_max: FILE_TRANSFERS_PER_DEVICE_MAX,
            download_idle_timeout: Duration::from_secs(FILE_DOWNLOAD_IDLE_SECS_DEFAULT),
        }
    }
}

/// A [`FilesConfig`] setting the server cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("file setting {setting} must be {expected}, not {got}")]
pub struct FilesConfigError {
    /// The setting's name, as in the config file.
    pub setting: &'static str,
    /// What it may be.
    pub expected: String,
    /// What it was.
    pub got: String,
}

impl FilesConfig {
    /// Refuses settings the server cannot run with: zero durations (an upload would expire as
    /// it is created, collections would spin), durations past a year (expiry times would
    /// overflow, HTTP dates pass year 9999, SQL would store negative times), sizes past
    /// `i64::MAX` (SQL stores them signed), and no room for transfers. The command line also
    /// refuses periods under a minute (`chapar_types::limits::FILE_UPLOAD_EXPIRY_SECS_MIN`);
    /// the library allows them so that tests can watch expiry and collection happen.
    pub fn validate(&self) -> Result<(), FilesConfigError> {
        let durations = [
            (
                "upload_expiry",
                self.upload_expiry,
                FILE_UPLOAD_EXPIRY_SECS_MAX,
            ),
            (
                "gc_grace",
                self.unreferenced_grace,
                FILE_UNREFERENCED_GRACE_SECS_MAX,
            ),
            ("gc_interval", self.gc_interval, FILE_GC_INTERVAL_SECS_MAX),
            (
                "download_idle_timeout",
                self.download_idle_timeout,
                FILE_UPLOAD_EXPIRY_SECS_MAX,
            ),
        ];
        for (setting, value, max_secs) in durations {
            let max = Duration::from_secs(max_secs);
            if value.is_zero() || value > max {
                return Err(FilesConfigError {
                    setting,
                    // Every maximum is whole days; humantime would say "11months 30days ...".
                    expected: format!(
                        "longer than zero and at most {} days",
                        max_secs / (24 * 60 * 60)
                    ),
                    got: humantime::format_duration(value).to_string(),
                });
            }
        }
        let signed_max = i64::MAX as u64;
        for (setting, value) in [
            ("file_max_bytes", self.upload_bytes_max),
            ("file_quota_bytes", self.quota_bytes_per_account),
        ] {
            if value > signed_max {
                return Err(FilesConfigError {
                    setting,
                    expected: format!("at most {signed_max} bytes"),
                    got: format!("{value} bytes"),
                });
            }
        }
        for (setting, value, max) in [
            (
                "transfers_in_flight_max",
                self.transfers_in_flight_max,
                tokio::sync::Semaphore::MAX_PERMITS,
            ),
            (
                "transfers_per_account_max",
                self.transfers_per_account_max,
                usize::MAX,
            ),
            (
                "transfers_per_device_max",
                self.transfers_per_device_max,
                usize::MAX,
            ),
        ] {
            if value == 0 || value > max {
                return Err(FilesConfigError {
                    setting,
                    expected: format!("between 1 and {max}"),
                    got: value.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// The files part of the service: blob storage, token key, configuration, which uploads a
/// request is writing to right now, and the transfers running.
pub struct Files {
    blobs: Arc<dyn BlobStore>,
    tokens: TokenKey,
    config: FilesConfig,
    busy: Mutex<HashSet<BlobId>>,
    transfers: transfers::TransferSlots,
}

/// Marks an upload busy until dropped, so two requests never append to it at once.
pub(crate) struct BusyGuard<'a> {
    busy: &'a Mutex<HashSet<BlobId>>,
    id: BlobId,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        // A poisoned set still holds valid ids: a panic elsewhere must not wedge uploads.
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.id);
    }
}

impl Files {
    /// Files over `blobs`, with tokens under `tokens`.
    pub fn new(blobs: Arc<dyn BlobStore>, tokens: TokenKey, config: FilesConfig) -> Self {
        Self {
            blobs,
            tokens,
            transfers: transfers::TransferSlots::new(
                config.transfers_in_flight_max,
                config.transfers_per_account_max,
                config.transfers_per_device_max,
            ),
            config,
            busy: Mutex::new(HashSet::new()),
        }
    }

    /// The embedded default: blobs under `<data_dir>/files/`, the token key in
    /// `<data_dir>/token.key`.
    pub fn open(data_dir: &Path, config: FilesConfig) -> Result<Self, String> {
        let blobs = FsBlobStore::open(data_dir.join("files")).map_err(|e| e.to_string())?;
        let tokens =
            TokenKey::load_or_create(&data_dir.join("token.key")).map_err(|e| e.to_string())?;
        Ok(Self::new(Arc::new(blobs), tokens, config))
    }

    /// File transfers running now, server-wide.
    pub fn transfers_running(&self) -> usize {
        self.transfers.running()
    }

    /// The configuration in force.
    pub fn config(&self) -> &FilesConfig {
        &self.config
    }

    /// Marks `id` busy, unless a request is writing to it already.
    pub(crate) fn try_lock(&self, id: BlobId) -> Option<BusyGuard<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(id) {
            return None;
        }
        // Built only when the id was free: a guard dropped here would take the lock again (a
        // deadlock) and free another request's upload.
        Some(BusyGuard {
            busy: &self.busy,
            id,
        })
    }
}

/// A blob store failure as the client sees it; details go to the log.
pub(crate) fn blob_error(e: BlobError, id: BlobId) -> ServiceError {
    match e {
        BlobError::Full => {
            tracing::error!(blob = %id, "file storage full");
            ServiceError::new(
                ErrorCode::StorageFull,
                "the server's file storage is full; what was stored is kept, retry later",
            )
        }
        // The store said the blob was there, and its bytes went since: a DELETE or garbage
        // collection got between the two (a GET racing them). To the client it is gone.
        BlobError::NotFound => {
            tracing::debug!(blob = %id, "blob bytes gone (deleted meanwhile)");
            unknown_blob(id)
        }
        BlobError::Backend(_) => {
            tracing::error!(blob = %id, error = %e, "file storage failure");
            ServiceError::new(ErrorCode::Internal, "internal server error")
        }
    }
}

/// No such blob for this caller (or not complete, for a download).
pub(crate) fn unknown_blob(id: BlobId) -> ServiceError {
    ServiceError::new(ErrorCode::UnknownBlob, format!("no upload or blob {id}"))
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(config: FilesConfig) -> &'static str {
        match config.validate() {
            Ok(()) => panic!("accepted {config:?}"),
            Err(e) => e.setting,
        }
    }

    #[test]
    fn settings_the_server_cannot_run_with_are_refused() {
        assert_eq!(FilesConfig::default().validate(), Ok(()));
        let config = |f: fn(&mut FilesConfig)| {
            let mut config = FilesConfig::default();
            f(&mut config);
            config
        };
        assert_eq!(
            config(|c| c.upload_expiry = Duration::from_millis(1500)).validate(),
            Ok(()),
            "short periods are for tests; the command line has the floor"
        );
        assert_eq!(
            config(|c| {
                c.upload_expiry = Duration::from_secs(FILE_UPLOAD_EXPIRY_SECS_MAX);
                c.unreferenced_grace = Duration::from_secs(FILE_UNREFERENCED_GRACE_SECS_MAX);
                c.gc_interval = Duration::from_secs(FILE_GC_INTERVAL_SECS_MAX);
            })
            .validate(),
            Ok(()),
            "the maximum itself"
        );
        assert_eq!(
            refused(config(|c| c.upload_expiry = Duration::ZERO)),
            "upload_expiry"
        );
        assert_eq!(
            refused(config(|c| c.upload_expiry = Duration::MAX)),
            "upload_expiry"
        );
        assert_eq!(
            refused(config(|c| c.unreferenced_grace = Duration::ZERO)),
            "gc_grace"
        );
        assert_eq!(
            refused(config(
                |c| c.unreferenced_grace = Duration::from_secs(u64::MAX)
            )),
            "gc_grace"
        );
        assert_eq!(
            refused(config(|c| c.gc_interval = Duration::ZERO)),
            "gc_interval"
        );
        assert_eq!(
            refused(config(|c| c.upload_bytes_max = u64::MAX)),
            "file_max_bytes"
        );
        assert_eq!(
            refused(config(|c| c.quota_bytes_per_account = 1 << 63)),
            "file_quota_bytes"
        );
        assert_eq!(
            refused(config(|c| c.transfers_in_flight_max = 0)),
            "transfers_in_flight_max"
        );
        assert_eq!(
            refused(config(|c| c.transfers_per_device_max = 0)),
            "transfers_per_device_max"
        );
        let message = config(|c| c.upload_expiry = Duration::ZERO)
            .validate()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some(
                "file setting upload_expiry must be longer than zero and at most 365 days, not 0s"
            )
        );
    }
}
