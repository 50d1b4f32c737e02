//! Downloading a file: fetch the ciphertext from where a previous attempt stopped (an HTTP
//! range), open each chunk as it completes, append its plaintext to a hidden partial file next
//! to the destination (named after the blob, so two files of one name never mix), and when the
//! last chunk is in, check the whole file's SHA-256 and move it into place, never over an
//! existing file.
//!
//! Nothing unauthenticated is ever written: a chunk that fails to open stops the download with
//! an error naming it, keeping the good chunks before it. Resuming trusts only whole chunks
//! already in the `.part` file (it was written by this code, chunk by chunk, after they opened)
//! and re-hashes them, so the final check still covers every byte.

use std::path::{Path, PathBuf};

use chapar_crypto::file::{self, CHUNK_BYTES, FileKey, Layout, SEALED_CHUNK_BYTES};
use chapar_wire::content::File;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

use super::Progress;
use super::http::FileHttp;
use chapar_core::{CoreError as ClientError, Usage};

fn io(what: &Path, e: std::io::Error) -> ClientError {
    Usage::LocalFile {
        path: what.display().to_string(),
        error: e.to_string(),
    }
    .into()
}

/// Where an unfinished download of blob `blob` to `out` is kept: `.<name>.<blob>.part` beside
/// it.
pub fn part_path(out: &Path, blob: &[u8]) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(out.file_name().unwrap_or_default());
    name.push(format!(".{}.part", hex::encode(blob)));
    out.with_file_name(name)
}

/// Downloads `file` to `out`, resuming from `<out>.part`; reports progress in plaintext bytes.
pub(crate) async fn download(
    http: &FileHttp,
    file: &File,
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ClientError> {
    if file.chunk_bytes as usize != CHUNK_BYTES {
        return Err(ClientError::Protocol(format!(
            "this file was encrypted in chunks of {} bytes, which this version cannot read",
            file.chunk_bytes
        )));
    }
    if file.size > chapar_types::limits::FILE_PLAINTEXT_BYTES_MAX {
        return Err(ClientError::Protocol(format!(
            "the message announces a file of {} bytes, more than any file can have",
            file.size
        )));
    }
    if out.exists() {
        return Err(Usage::FileExists(out.display().to_string()).into());
    }
    let key = FileKey::from_bytes(&file.key)?;
    let layout = Layout::new(file.size);
    let part = part_path(out, &file.blob_id);
    let mut writer = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&part)
        .await
        .map_err(|e| io(&part, e))?;
    // Only whole chunks count; a chunk cut by a crash is fetched again.
    let have = writer.metadata().await.map_err(|e| io(&part, e))?.len();
    let mut chunk = (have / CHUNK_BYTES as u64).min(layout.chunks());
    if have == file.size {
        chunk = layout.chunks();
    }
    let kept = layout.plain_offset(chunk).min(file.size);
    writer.set_len(kept).await.map_err(|e| io(&part, e))?;
    let mut digest = Sha256::new();
    super::hash_prefix(&mut writer, kept, &mut digest)
        .await
        .map_err(|e| io(&part, e))?;
    writer
        .seek(std::io::SeekFrom::Start(kept))
        .await
        .map_err(|e| io(&part, e))?;
    progress(Progress {
        done: kept,
        total: file.size,
    });
    if chunk < layout.chunks() {
        let blob = hex::encode(&file.blob_id);
        let response = http
            .download(&blob, layout.sealed_offset(chunk), layout.sealed_bytes())
            .await?;
        let mut body = response.bytes_stream();
        let mut sealed = Vec::with_capacity(SEALED_CHUNK_BYTES);
        let mut done = kept;
        while chunk < layout.chunks() {
            let want = layout.plain_len(chunk) + file::TAG_BYTES;
            while sealed.len() < want {
                match body.next().await {
                    Some(Ok(bytes)) => sealed.extend_from_slice(&bytes),
                    Some(Err(e)) => {
                        writer.sync_data().await.map_err(|e| io(&part, e))?;
                        return Err(ClientError::Connection(format!(
                            "the download was cut ({e}); run the same command to resume"
                        )));
                    }
                    None => {
                        writer.sync_data().await.map_err(|e| io(&part, e))?;
                        return Err(ClientError::Connection(
                            "the server ended the download early; run the same command to resume"
                                .into(),
                        ));
                    }
                }
            }
            // What arrived beyond this chunk belongs to the next one.
            let rest = sealed.split_off(want);
            file::open_chunk(&key, chunk, layout.is_last(chunk), &mut sealed).map_err(|_| {
                ClientError::Integrity(format!(
                    "chunk {chunk} of the file (bytes {} to {}) does not verify: the server's copy \
                     is damaged or was altered; nothing from it was written",
                    layout.plain_offset(chunk),
                    layout.plain_offset(chunk) + layout.plain_len(chunk) as u64
                ))
            })?;
            writer.write_all(&sealed).await.map_err(|e| io(&part, e))?;
            digest.update(&sealed);
            done += sealed.len() as u64;
            progress(Progress {
                done,
                total: file.size,
            });
            sealed = rest;
            chunk += 1;
        }
        if !sealed.is_empty() || body.next().await.is_some() {
            return Err(ClientError::Protocol(
                "the server sent more bytes than the file has".into(),
            ));
        }
    }
    writer.sync_all().await.map_err(|e| io(&part, e))?;
    drop(writer);
    if digest.finalize().as_slice() != file.sha256.as_slice() {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(ClientError::Integrity(
            "the file's digest does not match what the sender announced".into(),
        ));
    }
    // A hard link fails if `out` appeared meanwhile, where a rename would replace it.
    tokio::fs::hard_link(&part, out)
        .await
        .map_err(|e| io(out, e))?;
    tokio::fs::remove_file(&part)
        .await
        .map_err(|e| io(&part, e))?;
    Ok(())
}
