//! File messages and sticker packs: what a message that carries a file says (key, digest,
//! name, type, thumbnail, caption), forwarding one without uploading again, and sharing,
//! installing and sending sticker packs. Moving the bytes (tus uploads, ranged downloads)
//! is the driver's part; the token it needs comes from here.

use chapar_types::limits::MESSAGE_TEXT_BYTES_MAX;
use chapar_types::{GroupId, MessageId};
use chapar_wire::content::{self, StickerPack, app_message::Body};
use chapar_wire::v1::{self, client_frame::Request, response::Result as Reply};
use prost::Message as _;

use super::device::{Device, unexpected};
use crate::history;
use crate::model::{ChatMessage, InstalledPack, Target};
use crate::storage::Tx;
use crate::{CoreError, Usage};

/// Most stickers in one pack: the pack travels in one message, which carries at most this many
/// blobs.
pub const STICKERS_PER_PACK_MAX: usize = chapar_types::limits::BLOBS_PER_MESSAGE_MAX;

/// A credential for the server's file endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileToken {
    /// The bearer token.
    pub token: String,
    /// When it expires, milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// Reads a 16-byte sticker pack id.
fn pack_id(bytes: &[u8]) -> Result<[u8; 16], CoreError> {
    bytes
        .try_into()
        .map_err(|_| CoreError::from(Usage::MalformedStickerPack))
}

fn load_pack(tx: &Tx<'_>, id: &[u8; 16]) -> Result<StickerPack, CoreError> {
    let bytes = tx.sticker_pack(id)?.ok_or(Usage::UnknownStickerPack)?;
    StickerPack::decode(bytes.as_slice())
        .map_err(|_| CoreError::Profile("a stored sticker pack is damaged".into()))
}

impl Device {
    /// A fresh token for the file endpoints.
    pub(crate) async fn file_token(&self) -> Result<FileToken, CoreError> {
        self.connect().await?;
        let Reply::FileTokenOk(ok) = self.call(Request::FileToken(v1::FileToken {})).await? else {
            return Err(unexpected("FileTokenOk"));
        };
        Ok(FileToken {
            token: ok.token,
            expires_ms: ok.expires_ms,
        })
    }

    /// Sends `body` to `group` and returns it as the user sees it.
    pub(crate) async fn send_and_show(
        &self,
        group: GroupId,
        body: Body,
    ) -> Result<ChatMessage, CoreError> {
        let id = self.send_body(group, body).await?;
        self.show(group, id)
    }

    /// A message of this device's history as the user sees it.
    pub(crate) fn show(&self, group: GroupId, id: MessageId) -> Result<ChatMessage, CoreError> {
        self.read(|tx| history::message(tx, group, id))?
            .ok_or_else(|| CoreError::Profile("a message just stored is not there".into()))
    }

    /// Sends a file message to `target`. `forget_upload` names the upload it came from: it is
    /// forgotten in the transaction that queues the message, so sending the same file again
    /// cannot send it twice.
    pub(crate) async fn send_file(
        &self,
        target: &Target,
        file: content::File,
        forget_upload: Option<String>,
    ) -> Result<ChatMessage, CoreError> {
        if file.caption.len() > MESSAGE_TEXT_BYTES_MAX {
            return Err(Usage::TooLong {
                what: "a caption",
                max: MESSAGE_TEXT_BYTES_MAX,
            }
            .into());
        }
        self.connect().await?;
        let group = self.resolve(target).await?;
        let id = self
            .send_body_and(group, Body::File(file), |tx| match &forget_upload {
                Some(key) => tx.forget_upload(key),
                None => Ok(()),
            })
            .await?;
        self.show(group, id)
    }

    /// Sends the file of message `id` (in `from`, if the id is in several chats) to `target`
    /// again: the same ciphertext, no upload.
    pub(crate) async fn forward(
        &self,
        id: MessageId,
        from: Option<&Target>,
        target: &Target,
    ) -> Result<ChatMessage, CoreError> {
        let (_, mut file) = self.file_named(id, from)?;
        self.connect().await?;
        let group = self.resolve(target).await?;
        file.reply_to.clear();
        self.send_and_show(group, Body::File(file)).await
    }

    /// The chats `target` names on this device (every chat if none is named).
    pub(crate) fn chats_named(&self, target: Option<&Target>) -> Result<Vec<GroupId>, CoreError> {
        Ok(match target {
            None => Vec::new(),
            Some(Target::Group(group)) => vec![*group],
            Some(Target::User(user)) => self
                .read(|tx| tx.direct_chats(user))?
                .into_iter()
                .map(|c| c.group)
                .collect(),
        })
    }

    /// The file of message `id`, in the chat `chat` names if it names one.
    pub(crate) fn file_named(
        &self,
        id: MessageId,
        chat: Option<&Target>,
    ) -> Result<(GroupId, content::File), CoreError> {
        let chats = self.chats_named(chat)?;
        self.read(|tx| history::find_file(tx, id, &chats))?
            .ok_or_else(|| Usage::NoFileMessage(id).into())
    }

    /// Installs a new pack made from uploaded pictures here, and sends it to the account's
    /// other devices (which keeps its pictures referenced on the server). Returns its id.
    pub(crate) async fn add_sticker_pack(
        &self,
        mut pack: StickerPack,
    ) -> Result<[u8; 16], CoreError> {
        if pack.stickers.is_empty() || pack.stickers.len() > STICKERS_PER_PACK_MAX {
            return Err(Usage::StickerCount {
                max: STICKERS_PER_PACK_MAX,
            }
            .into());
        }
        let id = pack_id(&pack.pack_id)?;
        if pack.encoded_len() > chapar_types::limits::APP_MESSAGE_BYTES_MAX {
            // The pictures' thumbnails do not fit beside each other: receivers show a sticker
            // once they have downloaded it instead.
            for sticker in &mut pack.stickers {
                if let Some(file) = &mut sticker.file {
                    file.thumbnail.clear();
                }
            }
        }
        self.connect().await?;
        self.write(|tx| tx.store_sticker_pack(&id, &pack.encode_to_vec(), self.now_ms()))?;
        for group in self.self_groups()? {
            self.send_body(group, Body::StickerPack(pack.clone()))
                .await?;
        }
        Ok(id)
    }

    /// Sends an installed pack to a chat, so its members can install it.
    pub(crate) async fn share_sticker_pack(
        &self,
        target: &Target,
        pack: [u8; 16],
    ) -> Result<ChatMessage, CoreError> {
        let pack = self.read(|tx| load_pack(tx, &pack))?;
        self.connect().await?;
        let group = self.resolve(target).await?;
        self.send_and_show(group, Body::StickerPack(pack)).await
    }

    /// Installs the pack a message shared (in `chat`, if the id is in several chats); returns
    /// its id.
    pub(crate) fn install_sticker_pack(
        &self,
        message: MessageId,
        chat: Option<&Target>,
    ) -> Result<[u8; 16], CoreError> {
        let chats = self.chats_named(chat)?;
        let pack = self
            .read(|tx| history::find_sticker_pack(tx, message, &chats))?
            .ok_or(Usage::NoStickerPack(message))?;
        if pack.stickers.len() > STICKERS_PER_PACK_MAX {
            return Err(Usage::MalformedStickerPack.into());
        }
        let id = pack_id(&pack.pack_id)?;
        self.write(|tx| tx.store_sticker_pack(&id, &pack.encode_to_vec(), self.now_ms()))?;
        Ok(id)
    }

    /// The installed packs.
    pub(crate) fn sticker_packs(&self) -> Result<Vec<InstalledPack>, CoreError> {
        Ok(self
            .read(|tx| tx.sticker_packs())?
            .iter()
            .filter_map(|bytes| StickerPack::decode(bytes.as_slice()).ok())
            .filter_map(|p| {
                Some(InstalledPack {
                    id: p.pack_id.as_slice().try_into().ok()?,
                    name: p.name,
                    stickers: p.stickers.into_iter().map(|s| s.emoji).collect(),
                })
            })
            .collect())
    }

    /// Sends sticker `index` of an installed pack: its file message, nothing uploaded.
    pub(crate) async fn send_sticker(
        &self,
        target: &Target,
        pack: [u8; 16],
        index: usize,
    ) -> Result<ChatMessage, CoreError> {
        let pack = self.read(|tx| load_pack(tx, &pack))?;
        let file = pack
            .stickers
            .get(index)
            .and_then(|s| s.file.clone())
            .ok_or(Usage::NoSuchSticker {
                last: pack.stickers.len().saturating_sub(1),
            })?;
        self.connect().await?;
        let group = self.resolve(target).await?;
        self.send_and_show(group, Body::File(file)).await
    }
}
