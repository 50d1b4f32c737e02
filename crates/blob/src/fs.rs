//! The embedded backend: blobs as files under one directory (`<data_dir>/files/`).
//!
//! A partial blob is `partial/<id>`; finalizing renames it to `complete/<xx>/<id>`, where `xx`
//! is the id's first two hex digits, so no directory holds more than a small share of the
//! blobs. Durability follows the usual POSIX rules: a commit is `fdatasync`, a new file's or a
//! rename's directory is synced too, so what a commit reported survives a crash or power loss.
//!
//! Every file operation blocks, so each runs on Tokio's blocking pool. An upload holds at most
//! [`WRITE_BUFFER_BYTES`] plus one body frame (a frame that finds the buffer partly full is
//! copied in before the write), a download one chunk of [`READ_CHUNK_BYTES`]; never the file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chapar_types::BlobId;
use tokio::sync::mpsc;

use crate::{
    BlobAppender, BlobError, BlobListing, BlobStore, BoxFuture, ByteStream, Committed, ListedBlob,
};

/// Bytes an appender gathers before one write to its file: few system calls per upload, and a
/// bounded amount of memory per upload whatever the file's size.
pub const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Bytes read from a file per chunk of a download.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Listed blobs queued between the directory walker and the listing's reader.
const LIST_QUEUE_DEPTH: usize = 256;

const PARTIAL_DIR: &str = "partial";
const COMPLETE_DIR: &str = "complete";

/// Blobs as files under one root directory.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BlobError::Backend(format!("blocking task failed: {e}")))?
}

/// Makes a directory's entries (a new file, a rename) durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

fn partial_path(root: &Path, id: BlobId) -> PathBuf {
    root.join(PARTIAL_DIR).join(id.to_string())
}

fn complete_path(root: &Path, id: BlobId) -> PathBuf {
    let name = id.to_string();
    root.join(COMPLETE_DIR).join(&name[..2]).join(name)
}

impl FsBlobStore {
    /// Uses (creating if needed) `root` and its `partial/` and `complete/` directories.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        for dir in [PARTIAL_DIR, COMPLETE_DIR] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self { root })
    }

    /// Where partial blob `id` lives.
    pub fn partial_path(&self, id: BlobId) -> PathBuf {
        partial_path(&self.root, id)
    }

    /// Where complete blob `id` lives.
    pub fn complete_path(&self, id: BlobId) -> PathBuf {
        complete_path(&self.root, id)
    }
}

impl BlobStore for FsBlobStore {
    fn create(&self, id: BlobId) -> BoxFuture<'_, Result<(), BlobError>> {
        let path = self.partial_path(id);
        let dir = self.root.join(PARTIAL_DIR);
        Box::pin(blocking(move || {
            File::create(&path)?.sync_all()?;
            sync_dir(&dir)?;
            Ok(())
        }))
    }

    fn append(
        &self,
        id: BlobId,
        offset: u64,
    ) -> BoxFuture<'_, Result<Box<dyn BlobAppender>, BlobError>> {
        let path = self.partial_path(id);
        let dir = self.root.join(PARTIAL_DIR);
        Box::pin(async move {
            let (file, created) = blocking(move || {
                let existed = path.exists();
                let mut file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(offset == 0)
                    .truncate(false)
                    .open(&path)?;
                let stored = file.metadata()?.len();
                if stored < offset {
                    return Err(BlobError::Backend(format!(
                        "partial blob has {stored} bytes, fewer than its committed {offset}"
                    )));
                }
                // Leftovers of an append that was never committed are not part of the blob.
                if stored > offset {
                    file.set_len(offset)?;
                }
                file.seek(SeekFrom::Start(offset))?;
                Ok((file, !existed))
            })
            .await?;
            Ok(Box::new(FsAppender {
                file: Some(file),
                buffer: Vec::with_capacity(WRITE_BUFFER_BYTES),
                offset,
                written: 0,
                failed: false,
                new_file_dir: created.then_some(dir),
            }) as Box<dyn BlobAppender>)
        })
    }

    fn finalize(&self, id: BlobId, length: u64) -> BoxFuture<'_, Result<(), BlobError>> {
        let partial = self.partial_path(id);
        let complete = self.complete_path(id);
        let partial_dir = self.root.join(PARTIAL_DIR);
        let complete_root = self.root.join(COMPLETE_DIR);
        Box::pin(blocking(move || {
            let dir = complete
                .parent()
                .ok_or_else(|| BlobError::Backend("complete path has no parent".into()))?;
            // The rename is durable only once both directories are synced; whoever reports
            // success syncs them, since the request that renamed may not have got that far
            // (it crashed, or is still running).
            let synced = || -> Result<(), BlobError> {
                sync_dir(dir)?;
                sync_dir(&partial_dir)?;
                Ok(())
            };
            if already_complete(&complete, length)? {
                return synced();
            }
            // Two requests may finish the same upload at once (the last PATCH and a HEAD or
            // GET). The one that loses finds the partial file gone, renamed by the winner:
            // that is success if the complete blob is there, with the right length.
            let finished_elsewhere = |e: std::io::Error| -> Result<(), BlobError> {
                if e.kind() == std::io::ErrorKind::NotFound && already_complete(&complete, length)?
                {
                    return synced();
                }
                Err(e.into())
            };
            let file = match OpenOptions::new().write(true).open(&partial) {
                Ok(file) => file,
                Err(e) => return finished_elsewhere(e),
            };
            let stored = file.metadata()?.len();
            if stored < length {
                return Err(BlobError::Backend(format!(
                    "partial blob has {stored} bytes, fewer than its committed {length}"
                )));
            }
            if stored > length {
                file.set_len(length)?;
            }
            file.sync_all()?;
            if !dir.exists() {
                std::fs::create_dir_all(dir)?;
                sync_dir(&complete_root)?;
            }
            if let Err(e) = std::fs::rename(&partial, &complete) {
                return finished_elsewhere(e);
            }
            synced()
        }))
    }

    fn read(&self, id: BlobId, range: Range<u64>) -> BoxFuture<'_, Result<ByteStream, BlobError>> {
        let path = self.complete_path(id);
        let len = range.end.saturating_sub(range.start);
        Box::pin(async move {
            let file = blocking(move || {
                let mut file = File::open(&path)?;
                let stored = file.metadata()?.len();
                if range.start > range.end || range.end > stored {
                    return Err(BlobError::Backend(format!(
                        "range {range:?} outside a blob of {stored} bytes"
                    )));
                }
                file.seek(SeekFrom::Start(range.start))?;
                Ok(file)
            })
            .await?;
            let state = (Some(file), len);
            let stream = futures_util::stream::unfold(state, |(file, left)| async move {
                let file = file?;
                if left == 0 {
                    return None;
                }
                let want = left.min(READ_CHUNK_BYTES as u64) as usize;
                let read = blocking(move || {
                    let mut file = file;
                    let mut chunk = vec![0u8; want];
                    file.read_exact(&mut chunk)?;
                    Ok((file, Bytes::from(chunk)))
                })
                .await;
                Some(match read {
                    Ok((file, chunk)) => (Ok(chunk), (Some(file), left - want as u64)),
                    // One error ends the stream.
                    Err(e) => (Err(e), (None, 0)),
                })
            });
            Ok(Box::pin(stream) as ByteStream)
        })
    }

    fn delete(&self, id: BlobId) -> BoxFuture<'_, Result<(), BlobError>> {
        let paths = [self.partial_path(id), self.complete_path(id)];
        Box::pin(blocking(move || {
            for path in paths {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        }))
    }

    fn list(&self) -> BlobListing {
        // The walk starts on the first poll, so `list` itself needs no runtime.
        let root = self.root.clone();
        let stream = futures_util::stream::unfold(
            (
                Some(root),
                None::<mpsc::Receiver<Result<ListedBlob, BlobError>>>,
            ),
            |(root, receiver)| async move {
                let mut receiver = match (root, receiver) {
                    (_, Some(receiver)) => receiver,
                    (Some(root), None) => {
                        let (sender, receiver) = mpsc::channel(LIST_QUEUE_DEPTH);
                        tokio::task::spawn_blocking(move || walk(&root, &sender));
                        receiver
                    }
                    (None, None) => return None,
                };
                let item = receiver.recv().await?;
                Some((item, (None, Some(receiver))))
            },
        );
        Box::pin(stream)
    }
}

/// Whether complete blob `path` exists with `length` bytes; another length is an error (the
/// caller's bookkeeping and the bytes disagree).
fn already_complete(path: &Path, length: u64) -> Result<bool, BlobError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == length => Ok(true),
        Ok(meta) => Err(BlobError::Backend(format!(
            "complete blob has {} bytes, expected {length}",
            meta.len()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Sends every blob under `root` until done or the listing is dropped.
fn walk(root: &Path, out: &mpsc::Sender<Result<ListedBlob, BlobError>>) {
    let mut dirs = vec![(root.join(PARTIAL_DIR), false)];
    match std::fs::read_dir(root.join(COMPLETE_DIR)) {
        // Only the two-hex-digit directories the layout makes: a stray file or directory
        // (an editor's backup, a `lost+found`) is not ours, and reading it as a directory of
        // blobs would fail and end the sweep.
        Ok(entries) => dirs.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter(|e| e.file_name().to_str().is_some_and(is_fan_out_name))
                .map(|e| (e.path(), true)),
        ),
        Err(e) => {
            let _ = out.blocking_send(Err(e.into()));
            return;
        }
    }
    for (dir, complete) in dirs {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                if out.blocking_send(Err(e.into())).is_err() {
                    return;
                }
                continue;
            }
        };
        for entry in entries.flatten() {
            // Anything not named like a blob, or not a plain file, is not ours to list (or to
            // delete).
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<BlobId>().ok())
            else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            // Listed only where `delete` would look for it (lowercase name, right directory):
            // an orphan listed elsewhere could never be deleted, and would be found again at
            // every sweep.
            let expected = if complete {
                complete_path(root, id)
            } else {
                partial_path(root, id)
            };
            if entry.path() != expected {
                continue;
            }
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if out
                .blocking_send(Ok(ListedBlob {
                    id,
                    complete,
                    bytes,
                }))
                .is_err()
            {
                return;
            }
        }
    }
}

/// A directory name of `complete/`: the first two lowercase hex digits of the ids it holds.
fn is_fan_out_name(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An open append: a file positioned at the end of what it wrote, and a bounded buffer.
struct FsAppender {
    /// `None` only if a write's future was dropped while the blocking pool held the file.
    file: Option<File>,
    buffer: Vec<u8>,
    offset: u64,
    /// Bytes written to the file (not the buffer) after `offset`.
    written: u64,
    failed: bool,
    /// The directory to sync on commit, when the append created the file.
    new_file_dir: Option<PathBuf>,
}

fn lost_file() -> BlobError {
    BlobError::Backend("the appender lost its file (an earlier write was cancelled)".into())
}

impl FsAppender {
    /// Writes `data` to the file on the blocking pool; gives the data back for reuse.
    async fn write_out<D: AsRef<[u8]> + Send + 'static>(
        &mut self,
        data: D,
    ) -> Result<D, BlobError> {
        let mut file = self.file.take().ok_or_else(lost_file)?;
        let (file, data, result) = tokio::task::spawn_blocking(move || {
            let result = file.write_all(data.as_ref());
            (file, data, result)
        })
        .await
        .map_err(|e| BlobError::Backend(format!("blocking task failed: {e}")))?;
        self.file = Some(file);
        match result {
            Ok(()) => {
                self.written += data.as_ref().len() as u64;
                Ok(data)
            }
            Err(e) => {
                // A partial write may have left bytes past `written`; they are never counted.
                self.failed = true;
                Err(e.into())
            }
        }
    }

    async fn flush(&mut self) -> Result<(), BlobError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let mut buffer = self.write_out(buffer).await?;
        buffer.clear();
        self.buffer = buffer;
        Ok(())
    }
}

impl BlobAppender for FsAppender {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), BlobError>> {
        Box::pin(async move {
            if self.failed {
                return Err(BlobError::Backend("an earlier write failed".into()));
            }
            if self.buffer.is_empty() && chunk.len() >= WRITE_BUFFER_BYTES {
                // Large chunks go straight to the file, without a copy.
                self.write_out(chunk).await?;
                return Ok(());
            }
            self.buffer.extend_from_slice(&chunk);
            if self.buffer.len() >= WRITE_BUFFER_BYTES {
                self.flush().await?;
            }
            Ok(())
        })
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<Committed, BlobError>> {
        Box::pin(async move {
            let write_error = if self.failed {
                None
            } else {
                self.flush().await.err()
            };
            let length = self.offset + self.written;
            if self.written > 0 {
                let file = self.file.take().ok_or_else(lost_file)?;
                let dir = self.new_file_dir.take();
                // Bytes past `length` from a failed write may be synced too; they lie past the
                // committed length, so the next append or `finalize` drops them.
                blocking(move || {
                    file.sync_data()?;
                    if let Some(dir) = dir {
                        sync_dir(&dir)?;
                    }
                    Ok(())
                })
                .await?;
            }
            Ok(Committed {
                length,
                write_error,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the report

    use super::*;
    use futures_util::StreamExt;

    fn id(n: u8) -> BlobId {
        BlobId([n; 16])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn filesystem_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path().join("files")).unwrap();
        crate::conformance::run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blobs_live_where_the_layout_says() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        store.create(id(0xAB)).await.unwrap();
        assert!(
            dir.path()
                .join("partial")
                .join(id(0xAB).to_string())
                .exists()
        );
        let mut appender = store.append(id(0xAB), 0).await.unwrap();
        appender.write(Bytes::from_static(b"abc")).await.unwrap();
        appender.commit().await.unwrap();
        store.finalize(id(0xAB), 3).await.unwrap();
        let path = dir.path().join("complete/ab").join(id(0xAB).to_string());
        assert_eq!(std::fs::read(path).unwrap(), b"abc");
        assert!(!store.partial_path(id(0xAB)).exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_is_reported_as_full_and_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        // /dev/full accepts opens and seeks and fails every write with ENOSPC.
        std::os::unix::fs::symlink("/dev/full", store.partial_path(id(1))).unwrap();
        let mut appender = store.append(id(1), 0).await.unwrap();
        let chunk = Bytes::from(vec![7u8; WRITE_BUFFER_BYTES]);
        assert_eq!(appender.write(chunk).await, Err(BlobError::Full));
        let committed = appender.commit().await.unwrap();
        assert_eq!(committed.length, 0, "nothing was written, nothing is kept");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_buffered_write_that_fails_on_commit_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        std::os::unix::fs::symlink("/dev/full", store.partial_path(id(2))).unwrap();
        let mut appender = store.append(id(2), 0).await.unwrap();
        // Small enough to stay in the buffer until the commit flushes it.
        appender.write(Bytes::from_static(b"tiny")).await.unwrap();
        let committed = appender.commit().await.unwrap();
        assert_eq!(
            committed,
            Committed {
                length: 0,
                write_error: Some(BlobError::Full)
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_listing_skips_what_the_layout_did_not_make() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let (partial, complete) = (id(0xAB), id(0xCD));
        store.create(partial).await.unwrap();
        store.create(complete).await.unwrap();
        store.finalize(complete, 0).await.unwrap();
        let root = dir.path();
        // A stray file directly in complete/ used to end the walk (read_dir on a file).
        std::fs::write(root.join("complete/README"), b"notes").unwrap();
        std::fs::create_dir_all(root.join("complete/lost+found")).unwrap();
        std::fs::write(
            root.join("complete/lost+found").join(id(0xEE).to_string()),
            b"x",
        )
        .unwrap();
        // Named like a blob but where `delete` would never look: listing it would make an
        // orphan that is found again at every sweep.
        std::fs::write(
            root.join("complete/cd").join(id(0xAA).to_string()),
            b"misplaced",
        )
        .unwrap();
        let upper = id(0xCD).to_string().to_uppercase();
        std::fs::write(root.join("complete/cd").join(upper), b"upper").unwrap();
        std::fs::create_dir(root.join("partial").join(id(0x11).to_string())).unwrap();
        std::fs::write(root.join("partial/notes.txt"), b"notes").unwrap();

        let mut listing = store.list();
        let mut listed = Vec::new();
        while let Some(item) = listing.next().await {
            listed.push(item.expect("no listing errors"));
        }
        listed.sort_by_key(|b| b.id);
        assert_eq!(
            listed,
            vec![
                ListedBlob {
                    id: partial,
                    complete: false,
                    bytes: 0
                },
                ListedBlob {
                    id: complete,
                    complete: true,
                    bytes: 0
                },
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_come_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(3 * READ_CHUNK_BYTES + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        store.create(id(3)).await.unwrap();
        let mut appender = store.append(id(3), 0).await.unwrap();
        appender.write(Bytes::from(data.clone())).await.unwrap();
        appender.commit().await.unwrap();
        store.finalize(id(3), data.len() as u64).await.unwrap();
        let mut stream = store.read(id(3), 0..data.len() as u64).await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= READ_CHUNK_BYTES);
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, data);
    }
}
