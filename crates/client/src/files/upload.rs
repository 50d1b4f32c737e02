//! Uploading a file: encrypt it chunk by chunk and append the ciphertext to a tus upload,
//! resuming wherever a previous attempt stopped.
//!
//! What an attempt needs to resume is kept in the profile under the file's identity (the chat,
//! its path, size and modification time): the file key, the upload's URL, and the SHA-256 of
//! every chunk sealed so far, recorded before the chunk leaves. Sealing is deterministic for a
//! key and position, so the resumed upload re-encrypts the chunk the server stopped in and
//! sends exactly the bytes it lacks, but only after checking that every chunk up to there still
//! hashes as recorded: sealing different content under the same key and position would reuse
//! an AES-GCM nonce. If the content changed, or the server dropped the upload, the upload
//! starts over with a fresh key. Memory stays flat: one request body of [`REQUEST_CHUNKS`]
//! chunks at a time, whatever the file's size.

use std::path::Path;

use chapar_crypto::file::{self, CHUNK_BYTES, FileKey, Layout};
use rusqlite::{OptionalExtension, params};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::Progress;
use super::http::FileHttp;
use crate::ClientError;
use crate::client::now_ms;
use crate::local::Local;

/// Encrypted chunks sent per request (8 MiB): few round trips on a good link, and little lost
/// when a bad one drops a request.
pub const REQUEST_CHUNKS: usize = 8;

/// A finished upload.
pub(crate) struct Uploaded {
    /// The server's id of the ciphertext.
    pub blob_id: Vec<u8>,
    /// The file's key.
    pub key: FileKey,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
    /// Plaintext bytes.
    pub size: u64,
}

/// A file about to be sent: where it is, its size, and what identifies this upload of it.
pub(crate) struct Source {
    /// The file.
    pub path: std::path::PathBuf,
    /// Its size when the upload was looked up.
    pub size: u64,
    /// The chat and the file's path, size and modification time.
    pub key: String,
    /// The chat and the file's path: uploads of an earlier version share it.
    prefix: String,
}

impl Source {
    /// Reads `path`'s metadata once, for an upload to `chat`.
    pub fn new(chat: &str, path: &Path) -> Result<Self, ClientError> {
        let meta = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
        if !meta.is_file() {
            return Err(ClientError::Usage(format!(
                "{} is not a file",
                path.display()
            )));
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let prefix = format!("{chat}\0{}\0", canonical.display());
        Ok(Self {
            path: path.to_path_buf(),
            size: meta.len(),
            key: format!("{prefix}{}\0{modified}", meta.len()),
            prefix,
        })
    }
}

/// What is kept about one upload.
struct Kept {
    file_key: FileKey,
    url: Option<String>,
}

fn kept(local: &Local, key: &str) -> Result<Option<Kept>, ClientError> {
    let row: Option<(Vec<u8>, Option<String>)> = local
        .conn()
        .query_row(
            "SELECT file_key, upload_url FROM uploads WHERE upload_key = ?1",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(file_key, url)| {
        Ok(Kept {
            file_key: FileKey::from_bytes(&file_key)?,
            url,
        })
    })
    .transpose()
}

/// Starts an upload afresh under `key`: a new file key, no URL, no chunk hashes.
fn start_over(local: &Local, key: &str) -> Result<FileKey, ClientError> {
    let file_key = FileKey::generate(&mut rand::thread_rng());
    local.transaction(|l| {
        forget(l, key)?;
        l.conn().execute(
            "INSERT INTO uploads (upload_key, file_key, created_ms) VALUES (?1, ?2, ?3)",
            params![key, file_key.as_bytes().as_slice(), now_ms() as i64],
        )?;
        Ok(())
    })?;
    Ok(file_key)
}

fn set_url(local: &Local, key: &str, url: &str) -> Result<(), ClientError> {
    local.conn().execute(
        "UPDATE uploads SET upload_url = ?2 WHERE upload_key = ?1",
        params![key, url],
    )?;
    Ok(())
}

/// Forgets an upload (its key, URL and chunk hashes), once its file was sent or given up.
pub(crate) fn forget(local: &Local, key: &str) -> Result<(), ClientError> {
    local
        .conn()
        .execute("DELETE FROM uploads WHERE upload_key = ?1", [key])?;
    local
        .conn()
        .execute("DELETE FROM upload_chunks WHERE upload_key = ?1", [key])?;
    Ok(())
}

/// Records the SHA-256 of chunks about to be sent, in one transaction.
fn record_chunks(local: &Local, key: &str, hashes: &[(u64, [u8; 32])]) -> Result<(), ClientError> {
    local.transaction(|l| {
        let mut insert = l.conn().prepare_cached(
            "INSERT OR REPLACE INTO upload_chunks (upload_key, chunk, sha256) VALUES (?1, ?2, ?3)",
        )?;
        for (chunk, hash) in hashes {
            insert.execute(params![key, *chunk as i64, hash.as_slice()])?;
        }
        Ok(())
    })
}

fn recorded_chunk(local: &Local, key: &str, chunk: u64) -> Result<Option<Vec<u8>>, ClientError> {
    Ok(local
        .conn()
        .prepare_cached("SELECT sha256 FROM upload_chunks WHERE upload_key = ?1 AND chunk = ?2")?
        .query_row(params![key, chunk as i64], |r| r.get(0))
        .optional()?)
}

/// Uploads of earlier versions of the same file to the same chat: they hold quota for nothing.
fn abandoned(local: &Local, source: &Source) -> Result<Vec<(String, Option<String>)>, ClientError> {
    let mut stmt = local
        .conn()
        .prepare("SELECT upload_key, upload_url FROM uploads WHERE upload_key != ?1")?;
    let rows = stmt.query_map([&source.key], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (key, url): (String, Option<String>) = row?;
        if key.starts_with(&source.prefix) {
            out.push((key, url));
        }
    }
    Ok(out)
}

fn read_error(path: &Path, e: std::io::Error) -> ClientError {
    ClientError::Usage(format!("cannot read {}: {e}", path.display()))
}

/// Checks, while hashing the plaintext before chunk `upto` (and chunk `upto` itself, which the
/// server may hold part of), that every chunk hashes as it did when it was sealed. Leaves the
/// file positioned at chunk `upto` and `digest` fed with what comes before it.
async fn unchanged_before(
    local: &Local,
    key: &str,
    file: &mut tokio::fs::File,
    layout: &Layout,
    upto: u64,
    digest: &mut Sha256,
) -> Result<bool, ClientError> {
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(|e| ClientError::Usage(format!("cannot read the file: {e}")))?;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    for chunk in 0..=upto.min(layout.chunks() - 1) {
        let len = layout.plain_len(chunk);
        file.read_exact(&mut buffer[..len])
            .await
            .map_err(|e| ClientError::Usage(format!("cannot read the file: {e}")))?;
        let hash: [u8; 32] = Sha256::digest(&buffer[..len]).into();
        if recorded_chunk(local, key, chunk)?.as_deref() != Some(hash.as_slice()) {
            return Ok(false);
        }
        if chunk < upto {
            digest.update(&buffer[..len]);
        }
    }
    file.seek(std::io::SeekFrom::Start(layout.plain_offset(upto)))
        .await
        .map_err(|e| ClientError::Usage(format!("cannot read the file: {e}")))?;
    Ok(true)
}

/// Uploads `source` (resuming the upload kept for it), reporting progress in ciphertext bytes.
pub(crate) async fn upload(
    local: &Local,
    http: &FileHttp,
    source: &Source,
    progress: &mut dyn FnMut(Progress),
) -> Result<Uploaded, ClientError> {
    let path = &source.path;
    for (key, url) in abandoned(local, source)? {
        // Best effort: an upload the server still has would hold quota until it expires.
        if let Some(url) = url {
            let _ = http.terminate(&url).await;
        }
        forget(local, &key)?;
    }
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| read_error(path, e))?;
    let layout = Layout::new(source.size);
    let total = layout.sealed_bytes();
    let mut digest = Sha256::new();
    let mut resumed = None;
    if let Some(Kept {
        file_key,
        url: Some(url),
    }) = kept(local, &source.key)?
        && let Some(offset) = http.offset(&url).await?
        && offset <= total
    {
        let chunk = layout.chunk_at_sealed(offset).min(layout.chunks() - 1);
        if unchanged_before(local, &source.key, &mut file, &layout, chunk, &mut digest).await? {
            resumed = Some((file_key, url, offset, chunk));
        } else {
            // The file changed under the same name, size and time: never seal other bytes
            // under the same key and position.
            let _ = http.terminate(&url).await;
            digest = Sha256::new();
        }
    }
    let (file_key, url, mut offset, mut chunk) = match resumed {
        Some(resumed) => resumed,
        None => {
            file.seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(|e| read_error(path, e))?;
            let file_key = start_over(local, &source.key)?;
            let url = http.create(total).await?;
            set_url(local, &source.key, &url)?;
            (file_key, url, 0, 0)
        }
    };
    progress(Progress {
        done: offset,
        total,
    });
    let mut body = Vec::with_capacity(REQUEST_CHUNKS * file::SEALED_CHUNK_BYTES);
    let mut sealed = Vec::with_capacity(file::SEALED_CHUNK_BYTES);
    let mut hashes = Vec::with_capacity(REQUEST_CHUNKS);
    while chunk < layout.chunks() {
        body.clear();
        hashes.clear();
        let first = chunk;
        while chunk < layout.chunks() && chunk - first < REQUEST_CHUNKS as u64 {
            sealed.resize(layout.plain_len(chunk), 0);
            file.read_exact(&mut sealed)
                .await
                .map_err(|e| read_error(path, e))?;
            digest.update(&sealed);
            hashes.push((chunk, Sha256::digest(&sealed).into()));
            file::seal_chunk(&file_key, chunk, layout.is_last(chunk), &mut sealed);
            body.extend_from_slice(&sealed);
            chunk += 1;
        }
        // Recorded before anything leaves: a resume must find what was sealed.
        record_chunks(local, &source.key, &hashes)?;
        // The server may hold part of the first chunk already: send what it lacks.
        let skip = (offset - layout.sealed_offset(first)) as usize;
        if skip >= body.len() {
            continue;
        }
        let sent = (body.len() - skip) as u64;
        let now = http.append(&url, offset, body.split_off(skip)).await?;
        if now != offset + sent {
            return Err(ClientError::Protocol(format!(
                "the server says it holds {now} bytes after {sent} more were sent at {offset}"
            )));
        }
        offset = now;
        progress(Progress {
            done: offset,
            total,
        });
    }
    if offset != total {
        return Err(ClientError::Protocol(format!(
            "the upload ended at {offset} of {total} bytes"
        )));
    }
    let blob_id = url
        .rsplit('/')
        .next()
        .and_then(|id| hex::decode(id).ok())
        .filter(|id| id.len() == 16)
        .ok_or_else(|| ClientError::Protocol(format!("not an upload URL: {url}")))?;
    Ok(Uploaded {
        blob_id,
        key: file_key,
        sha256: digest.finalize().into(),
        size: source.size,
    })
}
