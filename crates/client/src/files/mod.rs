//! Files, photos, videos, voice notes and stickers: encrypted on this device in authenticated
//! chunks (`chapar_crypto::file`), uploaded over tus, resumable in both directions, and shared
//! by an ordinary MLS message that carries the key, digest, name, type and caption. The server
//! holds ciphertext under a random id and nothing else.
//!
//! - [`http`]: the server's file endpoints (tus client, ranged download).
//! - [`upload`] / [`download`]: the resumable transfers, memory-flat whatever the file's size.
//! - [`media`]: kinds, MIME types, picture sizes and thumbnails.
//! - `stickers`: sticker packs, made from uploaded pictures and shared as messages.

mod download;
mod http;
pub(crate) mod media;
mod stickers;
mod upload;

pub use chapar_wire::content::FileKind;
pub use download::part_path;
pub use media::parse_kind;
pub use stickers::InstalledPack;

use std::path::{Path, PathBuf};

use chapar_crypto::file::CHUNK_BYTES;
use chapar_types::{ErrorCode, MessageId};
use chapar_wire::content::{self, AppMessage, app_message::Body};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use prost::Message as _;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::ClientError;
use crate::client::{Client, Target};
use crate::history::{self, ChatMessage};
use http::FileHttp;

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

/// The blobs a message references (the server keeps them while it does), and the ones a
/// delete-for-everyone message stops referencing.
pub(crate) fn references(local: &crate::local::Local, body: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let Ok(message) = AppMessage::decode(body) else {
        return (Vec::new(), Vec::new());
    };
    match message.body {
        Some(Body::File(file)) => (vec![file.blob_id], Vec::new()),
        Some(Body::StickerPack(pack)) => (
            pack.stickers
                .into_iter()
                .filter_map(|s| s.file.map(|f| f.blob_id))
                .collect(),
            Vec::new(),
        ),
        Some(Body::Delete(delete)) => {
            let file = MessageId::from_slice(&delete.target)
                .ok()
                .and_then(|id| history::file_of(local, id).ok().flatten());
            (
                Vec::new(),
                file.map(|(_, f)| vec![f.blob_id]).unwrap_or_default(),
            )
        }
        _ => (Vec::new(), Vec::new()),
    }
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

/// The message that carries an uploaded file (without caption or reply): key, digest, name,
/// type, kind, and for pictures their size and thumbnail.
fn file_message(path: &Path, uploaded: upload::Uploaded, kind: FileKind) -> content::File {
    let picture = matches!(kind, FileKind::Photo | FileKind::Sticker)
        .then(|| media::picture(path))
        .flatten();
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
        self.connect().await?;
        let (_, conn, me) = self.parts()?;
        let Reply::FileTokenOk(ok) = conn.request(Request::FileToken(v1::FileToken {})).await?
        else {
            return Err(ClientError::Protocol("expected FileTokenOk".into()));
        };
        FileHttp::new(&me.server, ok.token)
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
        self.connect().await?;
        let group = self.resolve(target).await?;
        let key = upload::upload_key(&group.to_string(), path)?;
        let size = std::fs::metadata(path)
            .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?
            .len();
        if size > chapar_types::limits::FILE_PLAINTEXT_BYTES_MAX {
            return Err(ClientError::Usage(format!(
                "{} has {size} bytes; files have at most {} bytes",
                path.display(),
                chapar_types::limits::FILE_PLAINTEXT_BYTES_MAX
            )));
        }
        let kind = options.kind.unwrap_or_else(|| media::guess_kind(path));
        let uploaded = self.upload_resuming(&key, path, &mut progress).await?;
        let file = content::File {
            caption: options.caption.unwrap_or_default(),
            reply_to: options
                .reply_to
                .map(|r| r.as_bytes().to_vec())
                .unwrap_or_default(),
            ..file_message(path, uploaded, kind)
        };
        let id = self
            .send_body_and(group, Body::File(file), |l| upload::forget(l, &key))
            .await?;
        self.show(group, id)
    }

    /// Uploads, asking for a new token once if the server says the old one is no good.
    pub(crate) async fn upload_resuming(
        &mut self,
        key: &str,
        path: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<upload::Uploaded, ClientError> {
        let http = self.file_http().await?;
        // A transfer changes no MLS state: let other commands (a `listen`) use the profile
        // meanwhile, however long it takes.
        self.local.unlock();
        let mut uploaded = upload::upload(&self.local, &http, key, path, progress).await;
        if matches!(&uploaded, Err(e) if e.code() == Some(ErrorCode::Unauthenticated)) {
            self.local.relock().await?;
            let http = self.file_http().await?;
            self.local.unlock();
            uploaded = upload::upload(&self.local, &http, key, path, progress).await;
        }
        self.local.relock().await?;
        uploaded
    }

    /// Sends `body` to `group` and returns it as the user sees it.
    pub(crate) async fn send_and_show(
        &mut self,
        group: chapar_types::GroupId,
        body: Body,
    ) -> Result<ChatMessage, ClientError> {
        let id = self.send_body(group, body).await?;
        self.show(group, id)
    }

    /// A message of this device's history as the user sees it.
    fn show(
        &self,
        group: chapar_types::GroupId,
        id: MessageId,
    ) -> Result<ChatMessage, ClientError> {
        let label = self
            .local
            .chat(group)?
            .map(|c| c.label())
            .unwrap_or_default();
        history::message(&self.local, &label, group, id)?
            .ok_or_else(|| ClientError::Usage("sent message not found".into()))
    }

    /// Downloads the file of message `id` to `out` (default: its name, in the current
    /// directory), resuming an earlier attempt, and checks it. Returns where it went.
    pub async fn download(
        &mut self,
        id: MessageId,
        out: Option<&Path>,
        mut progress: impl FnMut(Progress),
    ) -> Result<PathBuf, ClientError> {
        let Some((_, file)) = history::file_of(&self.local, id)? else {
            return Err(ClientError::Usage(format!(
                "no file message {id} on this device (run `chapar sync`?)"
            )));
        };
        let out = match out {
            Some(out) if out.is_dir() => out.join(safe_name(&file.name)),
            Some(out) => out.to_path_buf(),
            None => PathBuf::from(safe_name(&file.name)),
        };
        let http = self.file_http().await?;
        self.local.unlock();
        let downloaded = download::download(&http, &file, &out, &mut progress).await;
        self.local.relock().await?;
        downloaded.map(|()| out)
    }

    /// Sends the file of message `id` to `target` again: the same ciphertext, no upload.
    pub async fn forward(
        &mut self,
        id: MessageId,
        target: &Target,
    ) -> Result<ChatMessage, ClientError> {
        let Some((_, mut file)) = history::file_of(&self.local, id)? else {
            return Err(ClientError::Usage(format!(
                "no file message {id} on this device"
            )));
        };
        self.connect().await?;
        let group = self.resolve(target).await?;
        file.reply_to.clear();
        self.send_and_show(group, Body::File(file)).await
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
