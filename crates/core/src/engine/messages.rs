//! Text messages and what changes them (edits, deletes, reactions), and reading history back.

use chapar_crypto::mls;
use chapar_types::limits::MESSAGE_TEXT_BYTES_MAX;
use chapar_types::{DeviceId, MessageId, Username};
use chapar_wire::content::{self, app_message::Body};

use super::device::Device;
use crate::history;
use crate::model::{ChatMessage, ChatSummary, Target};
use crate::storage::{Chat, ChatKind};
use crate::{CoreError, Usage};

impl Device {
    /// Sends a text message; returns it once the server acknowledged it.
    pub(crate) async fn send_text(
        &self,
        target: &Target,
        text: &str,
        reply_to: Option<MessageId>,
    ) -> Result<ChatMessage, CoreError> {
        if text.len() > MESSAGE_TEXT_BYTES_MAX {
            return Err(Usage::TooLong {
                what: "a message",
                max: MESSAGE_TEXT_BYTES_MAX,
            }
            .into());
        }
        self.connect().await?;
        let group = self.resolve(target).await?;
        let body = Body::Text(content::Text {
            text: text.to_owned(),
            reply_to: reply_to.map(|r| r.as_bytes().to_vec()).unwrap_or_default(),
        });
        self.send_and_show(group, body).await
    }

    /// Sends a change to one of the chat's messages (an edit, a delete, a reaction).
    pub(crate) async fn send_change(&self, target: &Target, body: Body) -> Result<(), CoreError> {
        self.connect().await?;
        let group = self.resolve(target).await?;
        self.send_body(group, body).await.map(drop)
    }

    /// Local history of a chat (all direct chats with the user, for `@user`), oldest first.
    pub(crate) fn messages(&self, target: &Target) -> Result<Vec<ChatMessage>, CoreError> {
        self.read(|tx| {
            let chats: Vec<Chat> = match target {
                Target::Group(group) => tx.chat(*group)?.into_iter().collect(),
                Target::User(user) => tx.direct_chats(user)?,
            };
            if chats.is_empty() {
                return Err(Usage::NoSuchChat.into());
            }
            let mut out = Vec::new();
            for chat in chats {
                out.extend(history::chat_history(tx, chat.group)?);
            }
            Ok(out)
        })
    }

    /// The devices in a chat's MLS group, sorted by account, then device.
    pub(crate) fn members(&self, target: &Target) -> Result<Vec<(Username, DeviceId)>, CoreError> {
        self.read(|tx| {
            let chat = match target {
                Target::Group(group) => tx.chat(*group)?,
                Target::User(user) => tx.direct_chats(user)?.into_iter().find(Chat::is_active),
            }
            .ok_or(Usage::NoSuchChat)?;
            let mut out: Vec<(Username, DeviceId)> = mls::load_group(&self.mls(tx), chat.group)?
                .map(|g| mls::members(&g))
                .unwrap_or_default()
                .into_iter()
                .map(|m| (m.identity.username, m.identity.device))
                .collect();
            out.sort();
            Ok(out)
        })
    }

    /// Every chat on this device (not the self group), with its unread count.
    pub(crate) fn chat_list(&self) -> Result<Vec<ChatSummary>, CoreError> {
        let me = self.me.get().map(|m| m.username.clone());
        self.read(|tx| {
            tx.chats()?
                .into_iter()
                .filter(|c| c.kind != ChatKind::SelfGroup)
                .map(|chat| {
                    let unread = match &me {
                        Some(me) => tx.unread(chat.group, me)?,
                        None => 0,
                    };
                    Ok(ChatSummary { chat, unread })
                })
                .collect()
        })
    }
}
