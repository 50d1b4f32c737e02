//! Sticker packs: a named set of pictures, uploaded once, that anyone who installs the pack can
//! send. A pack travels as a message (`StickerPack`) carrying each sticker's file key and blob
//! id; installing keeps it in the profile; sending a sticker sends its file message again, so
//! nothing is uploaded twice.
//!
//! A new pack is also sent to the account's self group at once: the account's other devices
//! get it, and the message keeps its pictures referenced on the server, so they are not
//! collected as unused before the pack is first shared.

use std::path::PathBuf;

use chapar_wire::content::{FileKind, Sticker, StickerPack, app_message::Body};
use prost::Message as _;
use rusqlite::params;

use super::upload;
use crate::ClientError;
use crate::client::{Client, Target, now_ms, random16};
use crate::history::{self, ChatMessage};

/// Most stickers in one pack: the pack travels in one message, which carries at most this many
/// blobs.
pub const STICKERS_PER_PACK_MAX: usize = chapar_types::limits::BLOBS_PER_MESSAGE_MAX;

/// An installed pack, as `sticker list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstalledPack {
    /// The pack's id (hex).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Each sticker's emoji, in order (`sticker send` takes the index).
    pub stickers: Vec<String>,
}

fn store_pack(client: &Client, pack: &StickerPack) -> Result<(), ClientError> {
    client.local.conn().execute(
        "INSERT INTO sticker_packs (pack_id, pack, installed_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (pack_id) DO UPDATE SET pack = ?2",
        params![pack.pack_id, pack.encode_to_vec(), now_ms() as i64],
    )?;
    Ok(())
}

fn load_pack(client: &Client, id: &[u8]) -> Result<StickerPack, ClientError> {
    let bytes: Vec<u8> = client
        .local
        .conn()
        .query_row(
            "SELECT pack FROM sticker_packs WHERE pack_id = ?1",
            [id],
            |r| r.get(0),
        )
        .map_err(|_| {
            ClientError::Usage("no such sticker pack installed (see `chapar sticker list`)".into())
        })?;
    StickerPack::decode(bytes.as_slice())
        .map_err(|_| ClientError::Profile("a stored sticker pack is damaged".into()))
}

fn pack_id(text: &str) -> Result<Vec<u8>, ClientError> {
    hex::decode(text)
        .ok()
        .filter(|id| id.len() == 16)
        .ok_or_else(|| ClientError::Usage(format!("{text:?} is not a sticker pack id")))
}

impl Client {
    /// Uploads `stickers` (picture, emoji) as a new pack named `name`, installs it here and on
    /// the account's other devices, and returns its id.
    pub async fn create_sticker_pack(
        &mut self,
        name: &str,
        stickers: &[(PathBuf, String)],
    ) -> Result<String, ClientError> {
        if stickers.is_empty() || stickers.len() > STICKERS_PER_PACK_MAX {
            return Err(ClientError::Usage(format!(
                "a sticker pack has 1 to {STICKERS_PER_PACK_MAX} stickers"
            )));
        }
        self.connect().await?;
        let mut pack = StickerPack {
            pack_id: random16().to_vec(),
            name: name.to_owned(),
            stickers: Vec::new(),
        };
        for (path, emoji) in stickers {
            let source = upload::Source::new("sticker", path)?;
            let picture = super::picture_of(path, FileKind::Sticker).await;
            let uploaded = self.upload_resuming(&source, &mut |_| {}).await?;
            pack.stickers.push(Sticker {
                emoji: emoji.clone(),
                file: Some(super::file_message(
                    path,
                    uploaded,
                    FileKind::Sticker,
                    picture,
                )),
            });
            upload::forget(&self.local, &source.key)?;
        }
        if pack.encoded_len() > chapar_types::limits::APP_MESSAGE_BYTES_MAX {
            // The pictures' thumbnails do not fit beside each other: receivers show a sticker
            // once they have downloaded it instead.
            for sticker in &mut pack.stickers {
                if let Some(file) = &mut sticker.file {
                    file.thumbnail.clear();
                }
            }
        }
        store_pack(self, &pack)?;
        for group in self.self_groups()? {
            self.send_body(group, Body::StickerPack(pack.clone()))
                .await?;
        }
        Ok(hex::encode(&pack.pack_id))
    }

    /// Sends an installed pack to a chat, so its members can install it.
    pub async fn share_sticker_pack(
        &mut self,
        target: &Target,
        pack: &str,
    ) -> Result<ChatMessage, ClientError> {
        let pack = load_pack(self, &pack_id(pack)?)?;
        self.connect().await?;
        let group = self.resolve(target).await?;
        self.send_and_show(group, Body::StickerPack(pack)).await
    }

    /// Installs the pack a message shared (in `chat`, if the id is in several chats); returns
    /// its id.
    pub async fn install_sticker_pack(
        &mut self,
        message: chapar_types::MessageId,
        chat: Option<&Target>,
    ) -> Result<String, ClientError> {
        let chats = self.chats_named(chat)?;
        let pack = history::find_sticker_pack(&self.local, message, &chats)?.ok_or_else(|| {
            ClientError::Usage(format!("message {message} does not share a sticker pack"))
        })?;
        if pack.pack_id.len() != 16 || pack.stickers.len() > STICKERS_PER_PACK_MAX {
            return Err(ClientError::Usage("that sticker pack is malformed".into()));
        }
        store_pack(self, &pack)?;
        Ok(hex::encode(&pack.pack_id))
    }

    /// The installed packs.
    pub fn sticker_packs(&self) -> Result<Vec<InstalledPack>, ClientError> {
        let mut stmt = self
            .local
            .conn()
            .prepare("SELECT pack FROM sticker_packs ORDER BY installed_ms, pack_id")?;
        let packs = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(packs
            .iter()
            .filter_map(|bytes| StickerPack::decode(bytes.as_slice()).ok())
            .map(|p| InstalledPack {
                id: hex::encode(&p.pack_id),
                name: p.name,
                stickers: p.stickers.into_iter().map(|s| s.emoji).collect(),
            })
            .collect())
    }

    /// Sends sticker `index` of an installed pack: its file message, nothing uploaded.
    pub async fn send_sticker(
        &mut self,
        target: &Target,
        pack: &str,
        index: usize,
    ) -> Result<ChatMessage, ClientError> {
        let pack = load_pack(self, &pack_id(pack)?)?;
        let file = pack
            .stickers
            .get(index)
            .and_then(|s| s.file.clone())
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "the pack has stickers 0 to {}",
                    pack.stickers.len().saturating_sub(1)
                ))
            })?;
        self.connect().await?;
        let group = self.resolve(target).await?;
        self.send_and_show(group, Body::File(file)).await
    }
}
