//! Decrypted history: applying application messages (text, edit, delete, reaction, group meta)
//! to the local store, and reading a chat back.

use chapar_types::{DeviceId, GroupId, MessageId, Seq};
use chapar_wire::content::{AppMessage, ChatKind, File, StickerPack, app_message::Body};
use prost::Message as _;
use rusqlite::{OptionalExtension, params};

use crate::ClientError;
use crate::local::Local;

/// A message as shown to the user, with edits, deletion and reactions applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    /// `@peer` for direct chats, the group id otherwise.
    pub chat: String,
    /// The message id (hex).
    pub id: String,
    /// `@username` of the sender.
    pub sender: String,
    /// The current text; empty once deleted.
    pub text: String,
    /// When the sender sent it, milliseconds since the Unix epoch.
    #[serde(skip)]
    pub sent_at_ms: i64,
    /// The message this replies to, if any (hex id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The text was edited.
    pub edited: bool,
    /// The message was deleted for everyone.
    pub deleted: bool,
    /// Reactions as (emoji, @username) pairs.
    pub reactions: Vec<(String, String)>,
    /// Log position (None while unacknowledged).
    #[serde(skip)]
    pub seq: Option<Seq>,
    /// The file the message carries, if it is a file message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileInfo>,
    /// The sticker pack the message shares, if it shares one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticker_pack: Option<PackInfo>,
}

/// What a file message says about its file (the key stays in the profile).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileInfo {
    /// The name the sender gave it.
    pub name: String,
    /// Plaintext bytes.
    pub size: u64,
    /// `file`, `photo`, `video`, `voice` or `sticker`.
    pub kind: &'static str,
    /// Its MIME type.
    pub mime_type: String,
    /// Pixels, for pictures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Pixels, for pictures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Whether a thumbnail came with it.
    pub thumbnail: bool,
}

/// What a sticker-pack message shares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackInfo {
    /// The pack's id (hex), for `sticker install`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// How many stickers it has.
    pub stickers: usize,
}

/// The attachment kinds stored with a message.
const ATTACHMENT_FILE: &str = "file";
const ATTACHMENT_STICKER_PACK: &str = "sticker_pack";

fn file_info(file: &File) -> FileInfo {
    FileInfo {
        name: file.name.clone(),
        size: file.size,
        kind: crate::files::media::kind_name(file.kind),
        mime_type: file.mime_type.clone(),
        width: (file.width > 0).then_some(file.width),
        height: (file.height > 0).then_some(file.height),
        thumbnail: !file.thumbnail.is_empty(),
    }
}

fn attachment_info(
    kind: Option<&str>,
    bytes: Option<&[u8]>,
) -> (Option<FileInfo>, Option<PackInfo>) {
    match (kind, bytes) {
        (Some(ATTACHMENT_FILE), Some(bytes)) => {
            (File::decode(bytes).ok().map(|f| file_info(&f)), None)
        }
        (Some(ATTACHMENT_STICKER_PACK), Some(bytes)) => (
            None,
            StickerPack::decode(bytes).ok().map(|p| PackInfo {
                id: hex::encode(&p.pack_id),
                name: p.name,
                stickers: p.stickers.len(),
            }),
        ),
        _ => (None, None),
    }
}

/// A stored attachment: its chat, its encoding, and its message's log position.
type Attachment = (GroupId, Vec<u8>, Option<Seq>);

/// The attachments stored under message id `id` of kind `kind`, in `chats` (every chat if
/// empty).
fn attachments(
    local: &Local,
    id: MessageId,
    kind: &str,
    chats: &[GroupId],
) -> Result<Vec<Attachment>, ClientError> {
    let mut stmt = local.conn().prepare_cached(
        "SELECT group_id, attachment, seq FROM messages
         WHERE message_id = ?1 AND attachment_kind = ?2 AND deleted = 0",
    )?;
    let rows = stmt.query_map(params![id.as_bytes(), kind], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (group, bytes, seq) = row?;
        let Ok(group) = GroupId::from_slice(&group) else {
            continue;
        };
        if chats.is_empty() || chats.contains(&group) {
            out.push((group, bytes, seq.map(|s| s as u64)));
        }
    }
    Ok(out)
}

/// The one attachment a user means by message id `id` (in `chats`, or anywhere). Message ids
/// are chosen by senders, so another chat may hold the same id: then the user must say which.
fn one_attachment(
    local: &Local,
    id: MessageId,
    kind: &str,
    chats: &[GroupId],
) -> Result<Option<(GroupId, Vec<u8>)>, ClientError> {
    let mut found = attachments(local, id, kind, chats)?;
    if found.len() > 1 {
        return Err(ClientError::Usage(format!(
            "message {id} is in more than one chat; name the chat with --chat"
        )));
    }
    Ok(found.pop().map(|(group, bytes, _)| (group, bytes)))
}

/// The file of message `id` (in `chats`, or anywhere), with the chat it is in: what `download`
/// and `forward` need.
pub fn find_file(
    local: &Local,
    id: MessageId,
    chats: &[GroupId],
) -> Result<Option<(GroupId, File)>, ClientError> {
    one_attachment(local, id, ATTACHMENT_FILE, chats)?
        .map(|(group, bytes)| {
            File::decode(bytes.as_slice())
                .map(|file| (group, file))
                .map_err(|_| ClientError::Profile("a stored file message is damaged".into()))
        })
        .transpose()
}

/// The file of message `id` in `group`, with the message's log position.
pub fn file_in(
    local: &Local,
    group: GroupId,
    id: MessageId,
) -> Result<Option<(File, Option<Seq>)>, ClientError> {
    Ok(attachments(local, id, ATTACHMENT_FILE, &[group])?
        .into_iter()
        .next()
        .and_then(|(_, bytes, seq)| File::decode(bytes.as_slice()).ok().map(|f| (f, seq))))
}

/// The sticker pack message `id` shares (in `chats`, or anywhere).
pub fn find_sticker_pack(
    local: &Local,
    id: MessageId,
    chats: &[GroupId],
) -> Result<Option<StickerPack>, ClientError> {
    Ok(one_attachment(local, id, ATTACHMENT_STICKER_PACK, chats)?
        .and_then(|(_, bytes)| StickerPack::decode(bytes.as_slice()).ok()))
}

/// Something new the user should see after a sync.
#[derive(Debug, Clone)]
pub enum Applied {
    /// A new message (or one whose text changed).
    Message(GroupId, MessageId),
    /// Nothing to show.
    Nothing,
}

/// Applies one decrypted application message from `sender` to the history.
pub fn apply(
    local: &Local,
    group: GroupId,
    sender: &str,
    sender_device: DeviceId,
    seq: Option<Seq>,
    message: &AppMessage,
) -> Result<Applied, ClientError> {
    let Ok(id) = MessageId::from_slice(&message.message_id) else {
        return Ok(Applied::Nothing);
    };
    let base = NewMessage {
        group,
        id,
        sender,
        sender_device,
        text: "",
        reply_to: None,
        attachment: None,
        sent_at_ms: message.sent_at_ms,
        seq,
    };
    let conn = local.conn();
    let target_sender = |target: &[u8]| -> Result<Option<String>, ClientError> {
        Ok(conn
            .query_row(
                "SELECT sender FROM messages WHERE group_id = ?1 AND message_id = ?2",
                params![group.as_bytes(), target],
                |r| r.get::<_, String>(0),
            )
            .optional()?)
    };
    match &message.body {
        Some(Body::Text(text)) => {
            let reply_to = (!text.reply_to.is_empty()).then_some(text.reply_to.as_slice());
            insert(
                local,
                &NewMessage {
                    text: &text.text,
                    reply_to,
                    ..base
                },
            )
        }
        Some(Body::File(file)) => {
            let reply_to = (!file.reply_to.is_empty()).then_some(file.reply_to.as_slice());
            let bytes = file.encode_to_vec();
            insert(
                local,
                &NewMessage {
                    text: &file.caption,
                    reply_to,
                    attachment: Some((ATTACHMENT_FILE, &bytes)),
                    ..base
                },
            )
        }
        Some(Body::StickerPack(pack)) => {
            let bytes = pack.encode_to_vec();
            insert(
                local,
                &NewMessage {
                    attachment: Some((ATTACHMENT_STICKER_PACK, &bytes)),
                    ..base
                },
            )
        }
        Some(Body::Edit(edit)) => {
            // Only the author may edit, and a deleted message stays deleted.
            if target_sender(&edit.target)?.as_deref() != Some(sender) {
                return Ok(Applied::Nothing);
            }
            conn.execute(
                "UPDATE messages SET text = ?3, edited = 1 WHERE group_id = ?1 AND message_id = ?2 AND deleted = 0",
                params![group.as_bytes(), edit.target, edit.text],
            )?;
            Ok(MessageId::from_slice(&edit.target)
                .map_or(Applied::Nothing, |t| Applied::Message(group, t)))
        }
        Some(Body::Delete(delete)) => {
            if target_sender(&delete.target)?.as_deref() != Some(sender) {
                return Ok(Applied::Nothing);
            }
            conn.execute(
                "UPDATE messages SET text = NULL, attachment = NULL, deleted = 1
                 WHERE group_id = ?1 AND message_id = ?2",
                params![group.as_bytes(), delete.target],
            )?;
            conn.execute(
                "DELETE FROM reactions WHERE group_id = ?1 AND message_id = ?2",
                params![group.as_bytes(), delete.target],
            )?;
            Ok(MessageId::from_slice(&delete.target)
                .map_or(Applied::Nothing, |t| Applied::Message(group, t)))
        }
        Some(Body::Reaction(reaction)) => {
            if reaction.remove {
                conn.execute(
                    "DELETE FROM reactions WHERE group_id = ?1 AND message_id = ?2 AND reactor = ?3 AND emoji = ?4",
                    params![group.as_bytes(), reaction.target, sender, reaction.emoji],
                )?;
            } else {
                conn.execute(
                    "INSERT OR IGNORE INTO reactions (group_id, message_id, reactor, emoji) VALUES (?1, ?2, ?3, ?4)",
                    params![group.as_bytes(), reaction.target, sender, reaction.emoji],
                )?;
            }
            Ok(MessageId::from_slice(&reaction.target)
                .map_or(Applied::Nothing, |t| Applied::Message(group, t)))
        }
        Some(Body::GroupMeta(meta)) => {
            let me = local
                .get("username")?
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            if meta.kind == ChatKind::Self_ as i32 {
                // Only the account's own devices may declare a group to be their self group,
                // and only a group made of nothing but its devices.
                if let Some(me) = me.as_deref()
                    && me == sender
                    && crate::self_group::only_my_devices(local, group, me)?
                {
                    local.set_chat_meta(group, crate::self_group::SELF_KIND, "", None)?;
                }
            } else if meta.kind == ChatKind::Direct as i32 {
                // The peer of a direct chat is whoever is not me: the sender, or (for my own
                // other devices) the name the meta carries.
                let peer = if me.as_deref() == Some(sender) {
                    meta.name.clone()
                } else {
                    sender.to_owned()
                };
                local.set_chat_meta(group, "direct", "", Some(&peer))?;
            } else {
                local.set_chat_meta(group, "group", &meta.name, None)?;
            }
            Ok(Applied::Nothing)
        }
        // Account-sync messages change device state, not history (see `self_group`).
        Some(Body::AccountSync(_)) | None => Ok(Applied::Nothing),
    }
}

/// A new message, before it is stored.
struct NewMessage<'a> {
    group: GroupId,
    id: MessageId,
    sender: &'a str,
    sender_device: DeviceId,
    text: &'a str,
    reply_to: Option<&'a [u8]>,
    /// The attachment's kind and encoded bytes.
    attachment: Option<(&'a str, &'a [u8])>,
    sent_at_ms: i64,
    seq: Option<Seq>,
}

/// Stores a new message; a repeated id changes nothing.
fn insert(local: &Local, m: &NewMessage<'_>) -> Result<Applied, ClientError> {
    let inserted = local.conn().execute(
        "INSERT OR IGNORE INTO messages (group_id, message_id, sender, sender_device, text,
                                         reply_to, sent_at_ms, seq, attachment_kind, attachment)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            m.group.as_bytes(),
            m.id.as_bytes(),
            m.sender,
            m.sender_device.0 as i64,
            m.text,
            m.reply_to,
            m.sent_at_ms,
            m.seq.map(|s| s as i64),
            m.attachment.map(|a| a.0),
            m.attachment.map(|a| a.1),
        ],
    )?;
    Ok(if inserted > 0 {
        Applied::Message(m.group, m.id)
    } else {
        Applied::Nothing
    })
}

/// One message for display.
pub fn message(
    local: &Local,
    chat_label: &str,
    group: GroupId,
    id: MessageId,
) -> Result<Option<ChatMessage>, ClientError> {
    let mut out = query(local, chat_label, group, Some(id))?;
    Ok(out.pop())
}

/// A chat's history, oldest first (acknowledged messages by log position, then pending ones).
pub fn chat_history(
    local: &Local,
    chat_label: &str,
    group: GroupId,
) -> Result<Vec<ChatMessage>, ClientError> {
    query(local, chat_label, group, None)
}

fn query(
    local: &Local,
    chat_label: &str,
    group: GroupId,
    only: Option<MessageId>,
) -> Result<Vec<ChatMessage>, ClientError> {
    let conn = local.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT message_id, sender, text, reply_to, sent_at_ms, seq, edited, deleted,
                attachment_kind, attachment FROM messages
         WHERE group_id = ?1 AND (?2 IS NULL OR message_id = ?2)
         ORDER BY seq IS NULL, seq, sent_at_ms",
    )?;
    let only = only.map(|m| m.as_bytes().to_vec());
    let rows = stmt.query_map(params![group.as_bytes(), only], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<Vec<u8>>>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, bool>(6)?,
            r.get::<_, bool>(7)?,
            attachment_info(
                r.get::<_, Option<String>>(8)?.as_deref(),
                r.get::<_, Option<Vec<u8>>>(9)?.as_deref(),
            ),
        ))
    })?;
    let mut reactions = conn.prepare_cached(
        "SELECT emoji, reactor FROM reactions WHERE group_id = ?1 AND message_id = ?2 ORDER BY emoji, reactor",
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (id, sender, text, reply_to, sent_at_ms, seq, edited, deleted, (file, sticker_pack)) =
            row?;
        let reacts = reactions
            .query_map(params![group.as_bytes(), id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    format!("@{}", r.get::<_, String>(1)?),
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        out.push(ChatMessage {
            chat: chat_label.to_owned(),
            id: hex::encode(&id),
            sender: format!("@{sender}"),
            text: text.unwrap_or_default(),
            sent_at_ms,
            reply_to: reply_to.map(hex::encode),
            edited,
            deleted,
            reactions: reacts,
            seq: seq.map(|s| s as u64),
            file,
            sticker_pack,
        });
    }
    Ok(out)
}
