//! Uploading a file: encrypt it chunk by chunk and append the ciphertext to a tus upload,
//! resuming wherever a previous attempt stopped.
//!
//! What an attempt needs to resume is kept in the profile under the file's identity (the chat,
//! its path, size and modification time): the file key and the upload's URL. Because sealing is
//! deterministic for a key and position, the resumed upload re-encrypts the chunk the server
//! stopped in and sends exactly the bytes it lacks. Memory stays flat: one request body of
//! [`REQUEST_CHUNKS`] chunks at a time, whatever the file's size.

use std::path::Path;

use chapar_crypto::file::{self, FileKey, Layout};
use rusqlite::{OptionalExtension, params};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;

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

/// What identifies one upload of one file to one chat, for resuming it.
pub(crate) fn upload_key(chat: &str, path: &Path) -> Result<String, ClientError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))?;
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
    Ok(format!(
        "{chat}\0{}\0{}\0{modified}",
        canonical.display(),
        meta.len()
    ))
}

/// The key and upload URL kept for `key`, creating the key on first use.
fn resume_state(local: &Local, key: &str) -> Result<(FileKey, Option<String>), ClientError> {
    let row: Option<(Vec<u8>, Option<String>)> = local
        .conn()
        .query_row(
            "SELECT file_key, upload_url FROM uploads WHERE upload_key = ?1",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((file_key, url)) = row {
        return Ok((FileKey::from_bytes(&file_key)?, url));
    }
    let file_key = FileKey::generate(&mut rand::thread_rng());
    local.conn().execute(
        "INSERT INTO uploads (upload_key, file_key, created_ms) VALUES (?1, ?2, ?3)",
        params![key, file_key.as_bytes().as_slice(), now_ms() as i64],
    )?;
    Ok((file_key, None))
}

fn set_url(local: &Local, key: &str, url: Option<&str>) -> Result<(), ClientError> {
    local.conn().execute(
        "UPDATE uploads SET upload_url = ?2 WHERE upload_key = ?1",
        params![key, url],
    )?;
    Ok(())
}

/// Forgets an upload once its file was sent.
pub(crate) fn forget(local: &Local, key: &str) -> Result<(), ClientError> {
    local
        .conn()
        .execute("DELETE FROM uploads WHERE upload_key = ?1", [key])?;
    Ok(())
}

fn read_error(path: &Path, e: std::io::Error) -> ClientError {
    ClientError::Usage(format!("cannot read {}: {e}", path.display()))
}

/// Uploads `path` (resuming the upload kept under `key`), reporting progress in ciphertext
/// bytes.
pub(crate) async fn upload(
    local: &Local,
    http: &FileHttp,
    key: &str,
    path: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Uploaded, ClientError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| read_error(path, e))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| read_error(path, e))?
        .len();
    let layout = Layout::new(size);
    let total = layout.sealed_bytes();
    let (file_key, url) = resume_state(local, key)?;
    let mut resumed = match &url {
        Some(url) => http.offset(url).await?.map(|offset| (url.clone(), offset)),
        None => None,
    };
    if resumed.is_none() {
        // First attempt, or the server dropped the old upload (it expired): start afresh.
        let url = http.create(total).await?;
        set_url(local, key, Some(&url))?;
        resumed = Some((url, 0));
    }
    let Some((url, mut offset)) = resumed else {
        return Err(ClientError::Protocol("no upload to resume".into()));
    };
    if offset > total {
        set_url(local, key, None)?;
        return Err(ClientError::Protocol(
            "the server holds more of this upload than the file has; run the command again".into(),
        ));
    }
    progress(Progress {
        done: offset,
        total,
    });
    let mut digest = Sha256::new();
    let mut chunk = layout.chunk_at_sealed(offset).min(layout.chunks() - 1);
    // The plaintext before the first chunk to send is only hashed.
    super::hash_prefix(&mut file, layout.plain_offset(chunk), &mut digest)
        .await
        .map_err(|e| read_error(path, e))?;
    let mut body = Vec::with_capacity(REQUEST_CHUNKS * file::SEALED_CHUNK_BYTES);
    let mut sealed = Vec::with_capacity(file::SEALED_CHUNK_BYTES);
    while chunk < layout.chunks() {
        body.clear();
        let first = chunk;
        while chunk < layout.chunks() && chunk - first < REQUEST_CHUNKS as u64 {
            sealed.resize(layout.plain_len(chunk), 0);
            file.read_exact(&mut sealed)
                .await
                .map_err(|e| read_error(path, e))?;
            digest.update(&sealed);
            file::seal_chunk(&file_key, chunk, layout.is_last(chunk), &mut sealed);
            body.extend_from_slice(&sealed);
            chunk += 1;
        }
        // The server may hold part of the first chunk already: send what it lacks.
        let skip = (offset - layout.sealed_offset(first)) as usize;
        if skip >= body.len() {
            continue;
        }
        offset = http.append(&url, offset, body.split_off(skip)).await?;
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
        size,
    })
}
