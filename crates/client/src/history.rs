//! Decrypted history: applying application messages (text, edit, delete, reaction, group meta)
//! to the local store, and reading a chat back.

use chapar_types::{DeviceId, GroupId, MessageId, Seq};
use chapar_wire::content::{AppMessage, ChatKind, app_message::Body};
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
            let inserted = conn.execute(
                "INSERT OR IGNORE INTO messages (group_id, message_id, sender, sender_device, text, reply_to, sent_at_ms, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![group.as_bytes(), id.as_bytes(), sender, sender_device.0 as i64, text.text, reply_to, message.sent_at_ms, seq.map(|s| s as i64)],
            )?;
            Ok(if inserted > 0 {
                Applied::Message(group, id)
            } else {
                Applied::Nothing
            })
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
                "UPDATE messages SET text = NULL, deleted = 1 WHERE group_id = ?1 AND message_id = ?2",
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
        "SELECT message_id, sender, text, reply_to, sent_at_ms, seq, edited, deleted FROM messages
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
        ))
    })?;
    let mut reactions = conn.prepare_cached(
        "SELECT emoji, reactor FROM reactions WHERE group_id = ?1 AND message_id = ?2 ORDER BY emoji, reactor",
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (id, sender, text, reply_to, sent_at_ms, seq, edited, deleted) = row?;
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
        });
    }
    Ok(out)
}
