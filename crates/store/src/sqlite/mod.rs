//! The embedded SQLite backend: one file in WAL mode, one writer thread that commits many
//! writes per transaction (group commit), and a small pool of reader connections.
//!
//! Every write is a job sent to the writer over a bounded queue. The writer takes up to
//! [`WRITE_BATCH_JOBS_MAX`] queued jobs, runs each inside its own savepoint (so one failing job
//! does not undo the others), commits once with `synchronous=FULL`, and only then answers each
//! caller. One fsync thus covers a whole batch, and an answered write survives `kill -9` and
//! power loss.

mod archive;
mod cache;
mod devices;
mod files;
mod key_packages;
mod ops;
mod recovery;
mod rendezvous;
mod schema;

use std::path::Path;
use std::sync::{Arc, Mutex};

use chapar_types::{DeviceId, GroupId, Seq};
use rusqlite::Connection;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::*;

/// Most write jobs committed in one transaction.
pub const WRITE_BATCH_JOBS_MAX: usize = 512;
/// Most write jobs waiting for the writer; senders wait (backpressure) beyond it.
pub const WRITE_QUEUE_DEPTH_MAX: usize = 4096;
/// Most bytes the write jobs waiting for the writer may carry together (messages, commits
/// with their welcomes, key packages, archive segments); senders wait beyond it, so a burst
/// of large writes cannot hold `WRITE_QUEUE_DEPTH_MAX` times the largest in memory.
pub const WRITE_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// What a write job counts against [`WRITE_QUEUE_BYTES_MAX`] at least (its own bookkeeping).
const WRITE_JOB_BYTES_MIN: usize = 1024;
/// Reader connections; WAL lets them read while the writer writes.
pub const READ_CONNECTIONS: usize = 4;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type WriteJob = Box<dyn FnOnce(&Connection, &mut cache::GroupCache) -> (bool, Completion) + Send>;

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    writer: mpsc::Sender<WriteJob>,
    /// Bytes the queued write jobs carry, up to [`WRITE_QUEUE_BYTES_MAX`].
    queued_bytes: Arc<Semaphore>,
    readers: Arc<Mutex<Vec<Connection>>>,
    reader_permits: Arc<Semaphore>,
}

/// Bytes of a set of key packages.
fn packages_bytes(one_time: &[Vec<u8>], last_resort: &[u8]) -> usize {
    one_time.iter().map(Vec::len).sum::<usize>() + last_resort.len()
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn savepoint(conn: &Connection, statement: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(statement)?.execute([]).map(drop)
}

/// Maps a SQLite error, keeping "disk full" distinct so clients get a clear answer.
fn sql(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            StoreError::Full
        }
        _ => backend(e),
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;
         PRAGMA foreign_keys = ON;",
    )
    .map_err(backend)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts the writer thread.
    /// Must be called inside a Tokio runtime.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer_conn = open_connection(path)?;
        schema::migrate(&writer_conn)?;
        let readers = (0..READ_CONNECTIONS)
            .map(|_| open_connection(path))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_DEPTH_MAX);
        std::thread::Builder::new()
            .name("chapar-store-writer".into())
            .spawn(move || run_writer(writer_conn, rx))
            .map_err(backend)?;
        Ok(Self {
            writer: tx,
            queued_bytes: Arc::new(Semaphore::new(WRITE_QUEUE_BYTES_MAX)),
            readers: Arc::new(Mutex::new(readers)),
            reader_permits: Arc::new(Semaphore::new(READ_CONNECTIONS)),
        })
    }

    /// Runs `f` in the next group-commit batch and returns its result once the batch is durable.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_with_cache(0, move |conn, _| f(conn)).await
    }

    /// Like [`Self::write`], for a job carrying `bytes` of data.
    async fn write_sized<T: Send + 'static>(
        &self,
        bytes: usize,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_with_cache(bytes, move |conn, _| f(conn)).await
    }

    /// Like [`Self::write_sized`], with the writer's group cache (for appends). Waits while
    /// the queue holds its most bytes.
    async fn write_with_cache<T: Send + 'static>(
        &self,
        bytes: usize,
        f: impl FnOnce(&Connection, &mut cache::GroupCache) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let charge = bytes.clamp(WRITE_JOB_BYTES_MIN, WRITE_QUEUE_BYTES_MAX);
        let queued = self
            .queued_bytes
            .clone()
            .acquire_many_owned(u32::try_from(charge).unwrap_or(u32::MAX))
            .await
            .map_err(|_| StoreError::Unavailable)?;
        let (reply, answer) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn, cache| {
            // Out of the queue: the data is the writer's now.
            drop(queued);
            let result = f(conn, cache);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |committed| {
                // The caller may have gone away; the write is durable regardless.
                let _ = reply.send(committed.and(result));
            });
            (ok, completion)
        });
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable)?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Runs `f` on a reader connection in the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = self
            .reader_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable)?;
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = readers
                .lock()
                .map_err(|_| StoreError::Unavailable)?
                .pop()
                .ok_or(StoreError::Unavailable)?;
            let result = f(&conn);
            if let Ok(mut pool) = readers.lock() {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(backend)?
    }
}

/// The writer loop: batch, run each job in a savepoint, commit once, then answer everyone.
fn run_writer(mut conn: Connection, mut jobs: mpsc::Receiver<WriteJob>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH_JOBS_MAX);
    let mut cache = cache::GroupCache::default();
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < WRITE_BATCH_JOBS_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let completions = run_batch(&mut conn, &mut cache, &mut batch);
        let committed = completions.1;
        if committed.is_err() {
            // The cache may hold changes that were rolled back.
            cache.clear();
        }
        for completion in completions.0 {
            completion(committed.clone());
        }
    }
    tracing::debug!("store writer stopped");
}

fn run_batch(
    conn: &mut Connection,
    cache: &mut cache::GroupCache,
    batch: &mut Vec<WriteJob>,
) -> (Vec<Completion>, Result<(), StoreError>) {
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, "store: cannot begin transaction");
            // Dropping the jobs drops their reply channels: every caller sees `Unavailable`.
            batch.clear();
            return (Vec::new(), Err(sql(e)));
        }
    };
    let mut completions = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        // Savepoints through cached statements: parsing "SAVEPOINT" per job showed in profiles.
        if let Err(e) = savepoint(&tx, "SAVEPOINT job") {
            tracing::error!(error = %e, "store: cannot open savepoint");
            continue;
        }
        let (ok, completion) = job(&tx, cache);
        // A failed job's changes are rolled back, leaving the batch's other jobs.
        let closed = if ok {
            savepoint(&tx, "RELEASE job")
        } else {
            savepoint(&tx, "ROLLBACK TO job").and_then(|()| savepoint(&tx, "RELEASE job"))
        };
        match closed {
            Ok(()) => completions.push(completion),
            Err(e) => {
                cache.clear();
                completion(Err(sql(e)));
            }
        }
    }
    let committed = tx.commit().map_err(|e| {
        tracing::error!(error = %e, "store: commit failed");
        sql(e)
    });
    (completions, committed)
}

impl AccountStore for SqliteStore {
    async fn create_account(&self, account: NewAccount) -> Result<(), StoreError> {
        let bytes = packages_bytes(&account.key_packages, &account.last_resort_key_package);
        self.write_sized(bytes, move |c| ops::create_account(c, &account))
            .await
    }

    async fn account(&self, username: &str) -> Result<Option<AccountRecord>, StoreError> {
        let username = username.to_owned();
        self.read(move |c| ops::account(c, &username)).await
    }

    async fn device(&self, device: DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        self.read(move |c| ops::device(c, device)).await
    }

    async fn add_key_packages(
        &self,
        device: DeviceId,
        one_time: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        account_bytes_max: u64,
    ) -> Result<u32, StoreError> {
        let bytes = packages_bytes(&one_time, last_resort.as_deref().unwrap_or_default());
        self.write_sized(bytes, move |c| {
            let count =
                key_packages::add_key_packages(c, device, &one_time, last_resort.as_deref())?;
            // Over the quota, the savepoint rolls the upload back.
            key_packages::check_key_package_quota(c, device, account_bytes_max)?;
            Ok(count)
        })
        .await
    }

    async fn key_package_bytes(&self, username: &str) -> Result<u64, StoreError> {
        let username = username.to_owned();
        self.read(move |c| key_packages::key_package_bytes(c, &username))
            .await
    }

    async fn key_package_count(&self, device: DeviceId) -> Result<u32, StoreError> {
        self.read(move |c| key_packages::key_package_count(c, device))
            .await
    }

    async fn claim_key_packages(
        &self,
        username: &str,
        except: DeviceId,
        only: Vec<DeviceId>,
        one_time: bool,
    ) -> Result<Vec<ClaimedKeyPackage>, StoreError> {
        let username = username.to_owned();
        self.write(move |c| key_packages::claim_key_packages(c, &username, except, &only, one_time))
            .await
    }

    async fn add_device(&self, device: NewDevice) -> Result<(), StoreError> {
        let bytes = packages_bytes(&device.key_packages, &device.last_resort_key_package);
        self.write_with_cache(bytes, move |c, cache| {
            devices::add_device(c, cache, &device)
        })
        .await
    }

    async fn set_revocation_proof(
        &self,
        device: DeviceId,
        signature: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.write(move |c| devices::set_revocation_proof(c, device, &signature))
            .await
    }

    async fn revoke_device(&self, device: DeviceId, now_ms: u64) -> Result<(), StoreError> {
        self.write_with_cache(0, move |c, cache| {
            devices::revoke_device(c, cache, device, now_ms)
        })
        .await
    }

    async fn touch_device(&self, device: DeviceId, now_ms: u64) -> Result<(), StoreError> {
        self.write_with_cache(0, move |c, cache| {
            devices::touch_device(c, cache, device, now_ms)
        })
        .await
    }

    async fn create_link(
        &self,
        link_id: Vec<u8>,
        sealed_request: Vec<u8>,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        self.write_sized(sealed_request.len(), move |c| {
            rendezvous::create_link(c, &link_id, &sealed_request, now_ms, expires_ms)
        })
        .await
    }

    async fn link(&self, link_id: Vec<u8>, now_ms: u64) -> Result<LinkRecord, StoreError> {
        self.read(move |c| rendezvous::link(c, &link_id, now_ms))
            .await
    }

    async fn approve_link(
        &self,
        link_id: Vec<u8>,
        sealed_approval: Vec<u8>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.write_sized(sealed_approval.len(), move |c| {
            rendezvous::approve_link(c, &link_id, &sealed_approval, now_ms)
        })
        .await
    }

    async fn complete_link(&self, link_id: Vec<u8>, now_ms: u64) -> Result<(), StoreError> {
        self.write(move |c| rendezvous::complete_link(c, &link_id, now_ms))
            .await
    }

    async fn set_recovery(
        &self,
        username: &str,
        record: RecoveryRecord,
        expected_auth_key: Vec<u8>,
    ) -> Result<(), StoreError> {
        let username = username.to_owned();
        self.write_sized(record.sealed_bundle.len(), move |c| {
            recovery::set_recovery(c, &username, &record, &expected_auth_key)
        })
        .await
    }

    async fn recovery(&self, username: &str) -> Result<Option<RecoveryRecord>, StoreError> {
        let username = username.to_owned();
        self.read(move |c| recovery::recovery(c, &username)).await
    }
}

impl ArchiveStore for SqliteStore {
    async fn append_archive(
        &self,
        username: &str,
        device: DeviceId,
        segment: ArchiveSegment,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let username = username.to_owned();
        self.write_sized(segment.ciphertext.len(), move |c| {
            archive::append_archive(c, &username, device, &segment, now_ms)
        })
        .await
    }

    async fn read_archive(
        &self,
        username: &str,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<ArchiveSegment>, StoreError> {
        let username = username.to_owned();
        self.read(move |c| archive::read_archive(c, &username, after_id, limit))
            .await
    }
}

impl LogStore for SqliteStore {
    async fn create_group(
        &self,
        group: GroupId,
        creator: DeviceId,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(move |c| ops::create_group(c, group, creator, now_ms))
            .await
    }

    async fn append(&self, append: Append) -> Result<Appended, StoreError> {
        self.write_with_cache(append.bytes(), move |c, cache| {
            ops::append(c, cache, append)
        })
        .await
    }

    async fn read_log(
        &self,
        group: GroupId,
        device: DeviceId,
        after: Seq,
        limit: u32,
    ) -> Result<LogPage, StoreError> {
        self.read(move |c| ops::read_log(c, group, device, after, limit))
            .await
    }

    async fn read_welcomes(
        &self,
        device: DeviceId,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<WelcomeRecord>, StoreError> {
        self.read(move |c| ops::read_welcomes(c, device, after_id, limit))
            .await
    }

    async fn device_groups(
        &self,
        device: DeviceId,
        after: Option<GroupId>,
        limit: u32,
    ) -> Result<Vec<GroupHead>, StoreError> {
        self.read(move |c| ops::device_groups(c, device, after, limit))
            .await
    }
}

impl FileStore for SqliteStore {
    async fn create_upload(
        &self,
        upload: NewUpload,
        quota_bytes: u64,
    ) -> Result<UploadCreated, StoreError> {
        self.write(move |c| files::create_upload(c, &upload, quota_bytes))
            .await
    }

    async fn upload(&self, id: chapar_types::BlobId) -> Result<Option<UploadRecord>, StoreError> {
        self.read(move |c| files::upload(c, id)).await
    }

    async fn commit_upload(
        &self,
        id: chapar_types::BlobId,
        from: u64,
        to: u64,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<UploadCommitted, StoreError> {
        self.write(move |c| files::commit_upload(c, id, from, to, now_ms, expires_ms))
            .await
    }

    async fn complete_upload(
        &self,
        id: chapar_types::BlobId,
        now_ms: u64,
    ) -> Result<Option<UploadRecord>, StoreError> {
        self.write(move |c| files::complete_upload(c, id, now_ms))
            .await
    }

    async fn delete_upload(
        &self,
        id: chapar_types::BlobId,
        username: &str,
    ) -> Result<UploadDeleted, StoreError> {
        let username = username.to_owned();
        self.write(move |c| files::delete_upload(c, id, &username))
            .await
    }

    async fn file_usage(&self, username: &str) -> Result<u64, StoreError> {
        let username = username.to_owned();
        self.read(move |c| files::file_usage(c, &username)).await
    }

    async fn append_referencing(
        &self,
        append: Append,
        refs: BlobRefs,
    ) -> Result<Appended, StoreError> {
        self.write_with_cache(append.bytes(), move |c, cache| {
            files::append_referencing(c, cache, append, &refs)
        })
        .await
    }

    async fn collect_garbage(
        &self,
        now_ms: u64,
        unreferenced_before_ms: u64,
        limit: u32,
    ) -> Result<Vec<Garbage>, StoreError> {
        self.write(move |c| files::collect_garbage(c, now_ms, unreferenced_before_ms, limit))
            .await
    }

    async fn known_blobs(
        &self,
        ids: Vec<chapar_types::BlobId>,
    ) -> Result<Vec<chapar_types::BlobId>, StoreError> {
        self.read(move |c| files::known_blobs(c, &ids)).await
    }
}

#[cfg(test)]
mod tests;
