//! Decrypted history: the rules for applying an application message (text, file, sticker
//! pack, edit, delete, reaction, group meta) to the profile, and reading messages back as the
//! user sees them.

use chapar_types::{DeviceId, GroupId, MessageId, Seq, Username};
use chapar_wire::content::{
    AppMessage, ChatKind as WireChatKind, File, StickerPack, app_message::Body,
};
use prost::Message as _;

use crate::CoreError;
use crate::Usage;
use crate::model::{ChatMessage, FileInfo, PackInfo};
use crate::storage::{ChatKind, MessageRow, NewMessage, Tx};

/// The attachment kinds stored with a message.
const ATTACHMENT_FILE: &str = "file";
const ATTACHMENT_STICKER_PACK: &str = "sticker_pack";

/// What applying a message changed, for the user to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// A new message.
    New(MessageId),
    /// A message's text changed.
    Edited(MessageId),
    /// A message was deleted.
    Deleted(MessageId),
    /// A message's reactions changed.
    Reaction(MessageId),
    /// Nothing to show.
    Nothing,
}

impl Applied {
    /// The message to show and how it changed.
    pub(crate) fn shown(self) -> Option<(crate::events::Change, MessageId)> {
        use crate::events::Change;
        match self {
            Self::New(id) => Some((Change::New, id)),
            Self::Edited(id) => Some((Change::Edited, id)),
            Self::Deleted(id) => Some((Change::Deleted, id)),
            Self::Reaction(id) => Some((Change::Reaction, id)),
            Self::Nothing => None,
        }
    }
}

/// Applies one decrypted application message from `sender`'s device `sender_device` to the
/// history of `group`. `seq` is its log position (None for this device's own message before
/// the server acknowledged it).
pub(crate) fn apply(
    tx: &Tx<'_>,
    group: GroupId,
    sender: &Username,
    sender_device: DeviceId,
    seq: Option<Seq>,
    message: &AppMessage,
) -> Result<Applied, CoreError> {
    let Ok(id) = MessageId::from_slice(&message.message_id) else {
        return Ok(Applied::Nothing);
    };
    let base = NewMessage {
        group,
        id,
        sender: sender.as_str(),
        sender_device,
        text: "",
        reply_to: None,
        attachment: None,
        sent_at_ms: message.sent_at_ms,
        seq,
    };
    let insert = |m: &NewMessage<'_>| -> Result<Applied, CoreError> {
        Ok(if tx.insert_message(m)? {
            Applied::New(id)
        } else {
            Applied::Nothing
        })
    };
    // Only the author may edit or delete a message.
    let by_author = |target: &[u8]| -> Result<bool, CoreError> {
        Ok(tx.message_sender(group, target)?.as_deref() == Some(sender.as_str()))
    };
    let target_of = |target: &[u8], applied: fn(MessageId) -> Applied| {
        MessageId::from_slice(target).map_or(Applied::Nothing, applied)
    };
    match &message.body {
        Some(Body::Text(text)) => insert(&NewMessage {
            text: &text.text,
            reply_to: (!text.reply_to.is_empty()).then_some(text.reply_to.as_slice()),
            ..base
        }),
        Some(Body::File(file)) => {
            let bytes = file.encode_to_vec();
            insert(&NewMessage {
                text: &file.caption,
                reply_to: (!file.reply_to.is_empty()).then_some(file.reply_to.as_slice()),
                attachment: Some((ATTACHMENT_FILE, &bytes)),
                ..base
            })
        }
        Some(Body::StickerPack(pack)) => {
            let bytes = pack.encode_to_vec();
            insert(&NewMessage {
                attachment: Some((ATTACHMENT_STICKER_PACK, &bytes)),
                ..base
            })
        }
        Some(Body::Edit(edit)) => {
            if !by_author(&edit.target)? {
                return Ok(Applied::Nothing);
            }
            tx.edit_message(group, &edit.target, &edit.text)?;
            Ok(target_of(&edit.target, Applied::Edited))
        }
        Some(Body::Delete(delete)) => {
            if !by_author(&delete.target)? {
                return Ok(Applied::Nothing);
            }
            tx.delete_message(group, &delete.target)?;
            Ok(target_of(&delete.target, Applied::Deleted))
        }
        Some(Body::Reaction(reaction)) => {
            tx.set_reaction(
                group,
                &reaction.target,
                sender.as_str(),
                &reaction.emoji,
                !reaction.remove,
            )?;
            Ok(target_of(&reaction.target, Applied::Reaction))
        }
        Some(Body::GroupMeta(meta)) => {
            apply_meta(tx, group, sender, meta)?;
            Ok(Applied::Nothing)
        }
        // Account-sync messages change device state, not history (see `engine::self_group`).
        Some(Body::AccountSync(_)) | None => Ok(Applied::Nothing),
    }
}

/// Applies what a group-meta message says the chat is.
fn apply_meta(
    tx: &Tx<'_>,
    group: GroupId,
    sender: &Username,
    meta: &chapar_wire::content::GroupMeta,
) -> Result<(), CoreError> {
    let me = crate::identity::Identity::load(tx)?.map(|me| me.username);
    // What the self group is was recorded when this device made it or joined the account; no
    // message makes a group the self group, or the self group anything else.
    if crate::engine::self_group::is_self_group(tx, group)? {
        tx.set_chat_meta(group, ChatKind::SelfGroup, "", None)?;
    } else if meta.kind == WireChatKind::Self_ as i32 {
        tracing::warn!(%group, "ignoring a claim that a group is this account's self group");
    } else if meta.kind == WireChatKind::Direct as i32 {
        // The peer of a direct chat is whoever is not me: the sender, or (for my own other
        // devices) the name the meta carries.
        let peer = if me.as_ref() == Some(sender) {
            Username::parse(&meta.name).ok()
        } else {
            Some(sender.clone())
        };
        tx.set_chat_meta(group, ChatKind::Direct, "", peer.as_ref())?;
    } else {
        tx.set_chat_meta(group, ChatKind::Group, &meta.name, None)?;
    }
    Ok(())
}

fn file_info(file: &File) -> FileInfo {
    FileInfo {
        name: file.name.clone(),
        size: file.size,
        kind: chapar_wire::content::FileKind::try_from(file.kind)
            .unwrap_or(chapar_wire::content::FileKind::File),
        mime_type: file.mime_type.clone(),
        width: (file.width > 0).then_some(file.width),
        height: (file.height > 0).then_some(file.height),
        thumbnail: !file.thumbnail.is_empty(),
    }
}

fn pack_info(pack: StickerPack) -> Option<PackInfo> {
    Some(PackInfo {
        id: pack.pack_id.as_slice().try_into().ok()?,
        name: pack.name,
        stickers: pack.stickers.len(),
    })
}

/// A stored row as the user sees it (None if the row is damaged).
fn shown(group: GroupId, row: MessageRow) -> Option<ChatMessage> {
    let (file, sticker_pack) = match &row.attachment {
        Some((kind, bytes)) if kind == ATTACHMENT_FILE => (
            File::decode(bytes.as_slice()).ok().map(|f| file_info(&f)),
            None,
        ),
        Some((kind, bytes)) if kind == ATTACHMENT_STICKER_PACK => (
            None,
            StickerPack::decode(bytes.as_slice())
                .ok()
                .and_then(pack_info),
        ),
        _ => (None, None),
    };
    Some(ChatMessage {
        chat: group,
        id: row.id,
        sender: Username::parse(&row.sender).ok()?,
        sender_device: row.sender_device,
        text: row.text.unwrap_or_default(),
        sent_at_ms: row.sent_at_ms,
        reply_to: row
            .reply_to
            .as_deref()
            .and_then(|r| MessageId::from_slice(r).ok()),
        edited: row.edited,
        deleted: row.deleted,
        reactions: row
            .reactions
            .into_iter()
            .filter_map(|(emoji, who)| Some((emoji, Username::parse(&who).ok()?)))
            .collect(),
        seq: row.seq,
        file,
        sticker_pack,
    })
}

/// One message as the user sees it.
pub(crate) fn message(
    tx: &Tx<'_>,
    group: GroupId,
    id: MessageId,
) -> Result<Option<ChatMessage>, CoreError> {
    Ok(tx
        .messages(group, Some(id))?
        .into_iter()
        .next()
        .and_then(|row| shown(group, row)))
}

/// A chat's history, oldest first (acknowledged messages by log position, then pending ones).
pub(crate) fn chat_history(tx: &Tx<'_>, group: GroupId) -> Result<Vec<ChatMessage>, CoreError> {
    Ok(tx
        .messages(group, None)?
        .into_iter()
        .filter_map(|row| shown(group, row))
        .collect())
}

/// The one attachment of `kind` a user means by message id `id` (in `chats`, or anywhere).
/// Message ids are chosen by senders, so another chat may hold the same id: then the user must
/// say which.
fn one_attachment(
    tx: &Tx<'_>,
    id: MessageId,
    kind: &str,
    chats: &[GroupId],
) -> Result<Option<(GroupId, Vec<u8>)>, CoreError> {
    let mut found = tx.attachments(id, kind, chats)?;
    if found.len() > 1 {
        return Err(Usage::AmbiguousMessage(id).into());
    }
    Ok(found.pop().map(|(group, bytes, _)| (group, bytes)))
}

/// The file of message `id` (in `chats`, or anywhere), with the chat it is in.
pub(crate) fn find_file(
    tx: &Tx<'_>,
    id: MessageId,
    chats: &[GroupId],
) -> Result<Option<(GroupId, File)>, CoreError> {
    one_attachment(tx, id, ATTACHMENT_FILE, chats)?
        .map(|(group, bytes)| {
            File::decode(bytes.as_slice())
                .map(|file| (group, file))
                .map_err(|_| CoreError::Profile("a stored file message is damaged".into()))
        })
        .transpose()
}

/// The file of message `id` in `group`, with the message's log position.
pub(crate) fn file_in(
    tx: &Tx<'_>,
    group: GroupId,
    id: MessageId,
) -> Result<Option<(File, Option<Seq>)>, CoreError> {
    Ok(tx
        .attachments(id, ATTACHMENT_FILE, &[group])?
        .into_iter()
        .next()
        .and_then(|(_, bytes, seq)| File::decode(bytes.as_slice()).ok().map(|f| (f, seq))))
}

/// The sticker pack message `id` shares (in `chats`, or anywhere).
pub(crate) fn find_sticker_pack(
    tx: &Tx<'_>,
    id: MessageId,
    chats: &[GroupId],
) -> Result<Option<StickerPack>, CoreError> {
    Ok(one_attachment(tx, id, ATTACHMENT_STICKER_PACK, chats)?
        .and_then(|(_, bytes)| StickerPack::decode(bytes.as_slice()).ok()))
}
