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

use chapar_core::{Clock as _, CoreError as ClientError, Profile, Usage};
use chapar_crypto::file::{self, CHUNK_BYTES, FileKey, Layout};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::Progress;
use super::http::FileHttp;
use crate::client::SystemClock;

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
            return Err(Usage::NotAFile(path.display().to_string()).into());
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

fn kept(profile: &Profile, key: &str) -> Result<Option<Kept>, ClientError> {
    profile
        .read(|tx| tx.upload(key))?
        .map(|kept| {
            Ok(Kept {
                file_key: FileKey::from_bytes(&kept.file_key)?,
                url: kept.url,
            })
        })
        .transpose()
}

/// Starts an upload afresh under `key`: a new file key, no URL, no chunk hashes.
fn start_over(profile: &Profile, key: &str) -> Result<FileKey, ClientError> {
    let file_key = FileKey::generate(&mut rand::thread_rng());
    profile.write(|tx| tx.start_upload(key, file_key.as_bytes(), SystemClock.now_ms()))?;
    Ok(file_key)
}

/// Uploads of earlier versions of the same file to the same chat: they hold quota for nothing.
fn abandoned(
    profile: &Profile,
    source: &Source,
) -> Result<Vec<(String, Option<String>)>, ClientError> {
    profile.read(|tx| tx.uploads_like(&source.prefix, &source.key))
}

fn read_error(path: &Path, e: std::io::Error) -> ClientError {
    Usage::LocalFile {
        path: path.display().to_string(),
        error: format!("cannot read it: {e}"),
    }
    .into()
}

/// Checks, while hashing the plaintext before chunk `upto` (and chunk `upto` itself, which the
/// server may hold part of), that every chunk hashes as it did when it was sealed. Leaves the
/// file positioned at chunk `upto` and `digest` fed with what comes before it.
async fn unchanged_before(
    profile: &Profile,
    source_path: &Path,
    key: &str,
    file: &mut tokio::fs::File,
    layout: &Layout,
    upto: u64,
    digest: &mut Sha256,
) -> Result<bool, ClientError> {
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(|e| read_error(source_path, e))?;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    for chunk in 0..=upto.min(layout.chunks() - 1) {
        let len = layout.plain_len(chunk);
        file.read_exact(&mut buffer[..len])
            .await
            .map_err(|e| read_error(source_path, e))?;
        let hash: [u8; 32] = Sha256::digest(&buffer[..len]).into();
        if profile.read(|tx| tx.upload_chunk(key, chunk))?.as_deref() != Some(hash.as_slice()) {
            return Ok(false);
        }
        if chunk < upto {
            digest.update(&buffer[..len]);
        }
    }
    file.seek(std::io::SeekFrom::Start(layout.plain_offset(upto)))
        .await
        .map_err(|e| read_error(source_path, e))?;
    Ok(true)
}

/// Uploads `source` (resuming the upload kept for it), reporting progress in ciphertext bytes.
pub(crate) async fn upload(
    profile: &Profile,
    http: &FileHttp,
    source: &Source,
    progress: &mut dyn FnMut(Progress),
) -> Result<Uploaded, ClientError> {
    let path = &source.path;
    for (key, url) in abandoned(profile, source)? {
        // Best effort: an upload the server still has would hold quota until it expires.
        if let Some(url) = url {
            let _ = http.terminate(&url).await;
        }
        profile.write(|tx| tx.forget_upload(&key))?;
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
    }) = kept(profile, &source.key)?
        && let Some(offset) = http.offset(&url).await?
        && offset <= total
    {
        let chunk = layout.chunk_at_sealed(offset).min(layout.chunks() - 1);
        if unchanged_before(
            profile,
            path,
            &source.key,
            &mut file,
            &layout,
            chunk,
            &mut digest,
        )
        .await?
        {
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
            let file_key = start_over(profile, &source.key)?;
            let url = http.create(total).await?;
            profile.write(|tx| tx.set_upload_url(&source.key, &url))?;
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
        profile.write(|tx| tx.record_upload_chunks(&source.key, &hashes))?;
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
