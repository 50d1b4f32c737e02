//! Making sticker packs: each picture is uploaded like a file, then the pack (every sticker's
//! file message) goes to the engine, which installs it and shares it with the account's other
//! devices. Sharing, installing and sending packs are engine jobs.

use std::path::PathBuf;

use chapar_core::engine::STICKERS_PER_PACK_MAX;
use chapar_core::model::{ChatMessage, InstalledPack, Target};
use chapar_core::{CoreError as ClientError, Usage};
use chapar_types::MessageId;
use chapar_wire::content::{FileKind, Sticker, StickerPack};
use rand::RngCore as _;

use super::upload;
use crate::client::Client;

impl Client {
    /// Uploads `stickers` (picture, emoji) as a new pack named `name`, installs it here and on
    /// the account's other devices, and returns its id.
    pub async fn create_sticker_pack(
        &mut self,
        name: &str,
        stickers: &[(PathBuf, String)],
    ) -> Result<[u8; 16], ClientError> {
        if stickers.is_empty() || stickers.len() > STICKERS_PER_PACK_MAX {
            return Err(Usage::StickerCount {
                max: STICKERS_PER_PACK_MAX,
            }
            .into());
        }
        let mut pack_id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut pack_id);
        let mut pack = StickerPack {
            pack_id: pack_id.to_vec(),
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
            self.engine
                .profile()
                .write(|tx| tx.forget_upload(&source.key))?;
        }
        self.run_connected(|e| e.add_sticker_pack(pack)).await
    }

    /// Sends an installed pack to a chat, so its members can install it.
    pub async fn share_sticker_pack(
        &mut self,
        target: &Target,
        pack: [u8; 16],
    ) -> Result<ChatMessage, ClientError> {
        self.run_connected(|e| e.share_sticker_pack(target, pack))
            .await
    }

    /// Installs the pack a message shared (in `chat`, if the id is in several chats); returns
    /// its id.
    pub fn install_sticker_pack(
        &self,
        message: MessageId,
        chat: Option<&Target>,
    ) -> Result<[u8; 16], ClientError> {
        self.engine.install_sticker_pack(message, chat)
    }

    /// The installed packs.
    pub fn sticker_packs(&self) -> Result<Vec<InstalledPack>, ClientError> {
        self.engine.sticker_packs()
    }

    /// Sends sticker `index` of an installed pack: its file message, nothing uploaded.
    pub async fn send_sticker(
        &mut self,
        target: &Target,
        pack: [u8; 16],
        index: usize,
    ) -> Result<ChatMessage, ClientError> {
        self.run_connected(|e| e.send_sticker(target, pack, index))
            .await
    }
}
