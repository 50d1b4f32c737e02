//! Files, photos, videos, voice notes and stickers: encrypted on this device in authenticated
//! chunks (`chapar_crypto::file`), uploaded over tus, resumable in both directions, and shared
//! by an ordinary MLS message that carries the key, digest, name, type and caption. The server
//! holds ciphertext under a random id and nothing else.
//!
//! - [`http`]: the server's file endpoints (tus client, ranged download).
//! - [`upload`] / [`download`]: the resumable transfers, memory-flat whatever the file's size.
//! - [`media`]: kinds, MIME types, picture sizes and thumbnails.
//! - `stickers`: sticker packs, made from uploaded pictures and shared as messages.
//!
//! What a file message says and which blobs it keeps alive are the engine's (`chapar-core`);
//! this module moves the bytes.

mod download;
mod http;
pub mod media;
mod stickers;
mod upload;

pub use chapar_wire::content::FileKind;
pub use download::part_path;
pub use media::parse_kind;

use std::path::{Path, PathBuf};

use chapar_core::model::{ChatMessage, Target};
use chapar_core::{CoreError as ClientError, Usage};
use chapar_crypto::file::CHUNK_BYTES;
use chapar_types::{ErrorCode, MessageId};
use chapar_wire::content;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::client::Client;
use http::FileHttp;

/// How often one upload is resumed at once (a new token, a moved offset) before giving up.
const UPLOAD_ATTEMPTS_MAX: usize = 3;

/// How far a transfer is, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// What to send a file as, and with what.
#[derive(Debug, Clone, Default)]
pub struct FileOptions {
    /// A caption shown with the file.
    pub caption: Option<String>,
    /// What it shows as; guessed from the name when not given.
    pub kind: Option<FileKind>,
    /// The message this one replies to.
    pub reply_to: Option<MessageId>,
}

/// Feeds the first `len` bytes of `file` to `digest` (resuming a transfer re-hashes what was
/// done before), leaving the file positioned after them.
pub(crate) async fn hash_prefix(
    file: &mut tokio::fs::File,
    len: u64,
    digest: &mut sha2::Sha256,
) -> std::io::Result<()> {
    file.seek(std::io::SeekFrom::Start(0)).await?;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut left = len;
    while left > 0 {
        let take = left.min(CHUNK_BYTES as u64) as usize;
        file.read_exact(&mut buffer[..take]).await?;
        digest.update(&buffer[..take]);
        left -= take as u64;
    }
    Ok(())
}

/// A picture's size and thumbnail, for the kinds that show one, made off the async threads
/// (decoding a large picture takes a while).
async fn picture_of(path: &Path, kind: FileKind) -> Option<media::Picture> {
    if !matches!(kind, FileKind::Photo | FileKind::Sticker) {
        return None;
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || media::picture(&path))
        .await
        .ok()
        .flatten()
}

/// The message that carries an uploaded file (without caption or reply): key, digest, name,
/// type, kind, and for pictures their size and thumbnail.
fn file_message(
    path: &Path,
    uploaded: upload::Uploaded,
    kind: FileKind,
    picture: Option<media::Picture>,
) -> content::File {
    content::File {
        blob_id: uploaded.blob_id,
        key: uploaded.key.as_bytes().to_vec(),
        sha256: uploaded.sha256.to_vec(),
        size: uploaded.size,
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        mime_type: media::mime_type(path).to_owned(),
        kind: kind as i32,
        thumbnail: picture
            .as_ref()
            .map(|p| p.thumbnail.clone())
            .unwrap_or_default(),
        width: picture.as_ref().map_or(0, |p| p.width),
        height: picture.as_ref().map_or(0, |p| p.height),
        chunk_bytes: CHUNK_BYTES as u32,
        ..Default::default()
    }
}

/// `name` in `dir`, or the first of `stem (1).ext`, `stem (2).ext`... that does not exist yet
/// (the same choice on every attempt, so an interrupted download resumes).
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let plain = dir.join(name);
    if !plain.exists() {
        return plain;
    }
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    (1..=DOWNLOAD_NAME_TRIES_MAX)
        .map(|n| dir.join(format!("{stem} ({n}){extension}")))
        .find(|candidate| !candidate.exists())
        .unwrap_or(plain)
}

/// How many `name (n)` alternatives a download tries before giving up on a free name.
const DOWNLOAD_NAME_TRIES_MAX: usize = 999;

/// A file name safe to write to: the last component of what the sender said, without path
/// separators or a leading dot, and not empty.
fn safe_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned();
    if cleaned.is_empty() {
        "download".into()
    } else {
        cleaned
    }
}

impl Client {
    /// An HTTP client for the server's file endpoints, with a fresh token.
    async fn file_http(&mut self) -> Result<FileHttp, ClientError> {
        let token = self.run_connected(|e| e.file_token()).await?;
        // Files go the way the connection went (the server's own address, or a relay's).
        let server = self.via().ok_or(ClientError::Usage(Usage::NoAccount))?;
        FileHttp::new(server, token.token)
    }

    /// Encrypts and uploads `path`, then sends it to `target`. Re-running after an
    /// interruption resumes the upload where the server has it. `progress` gets ciphertext
    /// bytes.
    pub async fn send_file(
        &mut self,
        target: &Target,
        path: &Path,
        options: FileOptions,
        mut progress: impl FnMut(Progress),
    ) -> Result<ChatMessage, ClientError> {
        // The chat first: a new direct chat is created before anything is uploaded to it.
        let group = self.run_connected(|e| e.resolve(target)).await?;
        let source = upload::Source::new(&group.to_string(), path)?;
        if source.size > chapar_types::limits::FILE_PLAINTEXT_BYTES_MAX {
            return Err(Usage::FileTooLarge {
                path: path.display().to_string(),
                size: source.size,
                max: chapar_types::limits::FILE_PLAINTEXT_BYTES_MAX,
            }
            .into());
        }
        let caption = options.caption.unwrap_or_default();
        if caption.len() > chapar_types::limits::MESSAGE_TEXT_BYTES_MAX {
            return Err(Usage::TooLong {
                what: "a caption",
                max: chapar_types::limits::MESSAGE_TEXT_BYTES_MAX,
            }
            .into());
        }
        let kind = options.kind.unwrap_or_else(|| media::guess_kind(path));
        let picture = picture_of(path, kind).await;
        let uploaded = self.upload_resuming(&source, &mut progress).await?;
        let file = content::File {
            caption,
            reply_to: options
                .reply_to
                .map(|r| r.as_bytes().to_vec())
                .unwrap_or_default(),
            ..file_message(path, uploaded, kind, picture)
        };
        let target = Target::Group(group);
        self.run_connected(|e| e.send_file(&target, file, Some(source.key.clone())))
            .await
    }

    /// Uploads, asking for a new token once if the server says the old one is no good.
    pub(crate) async fn upload_resuming(
        &mut self,
        source: &upload::Source,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<upload::Uploaded, ClientError> {
        let mut http = self.file_http().await?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            // A transfer changes no MLS state: let other commands (a `listen`) use the profile
            // meanwhile, however long it takes.
            self.lock.release();
            let uploaded = upload::upload(self.engine.profile(), &http, source, progress).await;
            self.lock.retake().await?;
            match uploaded {
                // An expired token: ask for a new one.
                Err(e)
                    if e.code() == Some(ErrorCode::Unauthenticated)
                        && attempts < UPLOAD_ATTEMPTS_MAX =>
                {
                    http = self.file_http().await?;
                }
                // The server finished storing a body that an earlier attempt (one killed or
                // cut) was still sending: resume from where it is now.
                Err(e)
                    if e.code() == Some(ErrorCode::OffsetMismatch)
                        && attempts < UPLOAD_ATTEMPTS_MAX => {}
                other => return other,
            }
        }
    }

    /// Downloads the file of message `id` (in `chat`, if the id is in several) to `out`
    /// (default: its name in the current directory, or the first free `name (n)`), resuming an
    /// earlier attempt, and checks it. Never writes over an existing file. Returns where it
    /// went.
    pub async fn download(
        &mut self,
        id: MessageId,
        chat: Option<&Target>,
        out: Option<&Path>,
        mut progress: impl FnMut(Progress),
    ) -> Result<PathBuf, ClientError> {
        let (_, file) = self.engine.file_of(id, chat)?;
        let out = match out {
            Some(out) if out.is_dir() => free_name(out, &safe_name(&file.name)),
            Some(out) => out.to_path_buf(),
            None => free_name(Path::new("."), &safe_name(&file.name)),
        };
        let http = self.file_http().await?;
        self.lock.release();
        let downloaded = download::download(&http, &file, &out, &mut progress).await;
        self.lock.retake().await?;
        downloaded.map(|()| out)
    }

    /// Sends the file of message `id` (in `from`, if the id is in several chats) to `target`
    /// again: the same ciphertext, no upload.
    pub async fn forward(
        &mut self,
        id: MessageId,
        from: Option<&Target>,
        target: &Target,
    ) -> Result<ChatMessage, ClientError> {
        self.run_connected(|e| e.forward(id, from, target)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_senders_cannot_escape_the_directory() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("C:\\\\Windows\\\\evil.dll"), "evil.dll");
        assert_eq!(safe_name(".bashrc"), "bashrc");
        assert_eq!(safe_name(""), "download");
        assert_eq!(safe_name("a\u{0}b\nc.txt"), "abc.txt");
        assert_eq!(safe_name("holiday.jpg"), "holiday.jpg");
    }
}
