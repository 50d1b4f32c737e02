//! Decrypted history (tables `messages` and `reactions`). The rules of who may edit or delete
//! what live in `crate::history`; this is only how it is kept.

use chapar_types::{DeviceId, GroupId, MessageId, Seq};
use rusqlite::{OptionalExtension, params};

use super::{Tx, device_from_i64, device_to_i64, group_from, message_from, to_i64, to_u64};
use crate::CoreError;

/// A message about to be stored.
pub struct NewMessage<'a> {
    /// Its chat.
    pub group: GroupId,
    /// Its id (chosen by the sender).
    pub id: MessageId,
    /// Who sent it.
    pub sender: &'a str,
    /// From which device.
    pub sender_device: DeviceId,
    /// Its text (a file's caption).
    pub text: &'a str,
    /// The message it replies to.
    pub reply_to: Option<&'a [u8]>,
    /// The attachment's kind and encoded bytes.
    pub attachment: Option<(&'a str, &'a [u8])>,
    /// When the sender says it sent it.
    pub sent_at_ms: i64,
    /// Its log position (None while this device's own message is unacknowledged).
    pub seq: Option<Seq>,
}

/// A stored message, as read back.
#[derive(Debug, Clone)]
pub struct MessageRow {
    /// Its id.
    pub id: MessageId,
    /// Who sent it.
    pub sender: String,
    /// From which device.
    pub sender_device: DeviceId,
    /// Its text, if it has one (none once deleted).
    pub text: Option<String>,
    /// The message it replies to (raw id bytes as the sender gave them).
    pub reply_to: Option<Vec<u8>>,
    /// When the sender says it sent it.
    pub sent_at_ms: i64,
    /// Its log position.
    pub seq: Option<Seq>,
    /// It was edited.
    pub edited: bool,
    /// It was deleted for everyone.
    pub deleted: bool,
    /// Its attachment's kind and encoding.
    pub attachment: Option<(String, Vec<u8>)>,
    /// Reactions as (emoji, reactor) pairs, sorted.
    pub reactions: Vec<(String, String)>,
}

/// An attachment stored with a message: its chat, its encoding, its message's log position.
pub type StoredAttachment = (GroupId, Vec<u8>, Option<Seq>);

impl Tx<'_> {
    /// Stores a new message; returns false (and changes nothing) if its id is already there.
    pub fn insert_message(&self, m: &NewMessage<'_>) -> Result<bool, CoreError> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO messages (group_id, message_id, sender, sender_device, text,
                                         reply_to, sent_at_ms, seq, attachment_kind, attachment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                m.group.as_bytes(),
                m.id.as_bytes(),
                m.sender,
                device_to_i64(m.sender_device),
                m.text,
                m.reply_to,
                m.sent_at_ms,
                m.seq.map(to_i64),
                m.attachment.map(|a| a.0),
                m.attachment.map(|a| a.1),
            ])?;
        Ok(inserted > 0)
    }

    /// Who sent message `id` of `group`, if it is stored.
    pub fn message_sender(&self, group: GroupId, id: &[u8]) -> Result<Option<String>, CoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT sender FROM messages WHERE group_id = ?1 AND message_id = ?2")?
            .query_row(params![group.as_bytes(), id], |r| r.get(0))
            .optional()?)
    }

    /// Replaces a message's text (not once it is deleted).
    pub fn edit_message(&self, group: GroupId, id: &[u8], text: &str) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "UPDATE messages SET text = ?3, edited = 1
                 WHERE group_id = ?1 AND message_id = ?2 AND deleted = 0",
            )?
            .execute(params![group.as_bytes(), id, text])?;
        Ok(())
    }

    /// Deletes a message for everyone: its text, attachment and reactions go.
    pub fn delete_message(&self, group: GroupId, id: &[u8]) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "UPDATE messages SET text = NULL, attachment = NULL, deleted = 1
                 WHERE group_id = ?1 AND message_id = ?2",
            )?
            .execute(params![group.as_bytes(), id])?;
        self.conn
            .prepare_cached("DELETE FROM reactions WHERE group_id = ?1 AND message_id = ?2")?
            .execute(params![group.as_bytes(), id])?;
        Ok(())
    }

    /// Adds (or with `present` false, withdraws) `reactor`'s `emoji` on a message.
    pub fn set_reaction(
        &self,
        group: GroupId,
        id: &[u8],
        reactor: &str,
        emoji: &str,
        present: bool,
    ) -> Result<(), CoreError> {
        let sql = if present {
            "INSERT OR IGNORE INTO reactions (group_id, message_id, reactor, emoji)
             VALUES (?1, ?2, ?3, ?4)"
        } else {
            "DELETE FROM reactions
             WHERE group_id = ?1 AND message_id = ?2 AND reactor = ?3 AND emoji = ?4"
        };
        self.conn
            .prepare_cached(sql)?
            .execute(params![group.as_bytes(), id, reactor, emoji])?;
        Ok(())
    }

    /// A chat's messages (or only message `only`), oldest first: acknowledged ones by log
    /// position, then pending ones by the time they were written.
    pub fn messages(
        &self,
        group: GroupId,
        only: Option<MessageId>,
    ) -> Result<Vec<MessageRow>, CoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT message_id, sender, sender_device, text, reply_to, sent_at_ms, seq, edited,
                    deleted, attachment_kind, attachment FROM messages
             WHERE group_id = ?1 AND (?2 IS NULL OR message_id = ?2)
             ORDER BY seq IS NULL, seq, sent_at_ms",
        )?;
        let only = only.map(|m| m.as_bytes().to_vec());
        let rows = stmt.query_map(params![group.as_bytes(), only], |r| {
            let attachment = match (
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<Vec<u8>>>(10)?,
            ) {
                (Some(kind), Some(bytes)) => Some((kind, bytes)),
                _ => None,
            };
            Ok(MessageRow {
                id: message_from(r.get(0)?)?,
                sender: r.get(1)?,
                sender_device: device_from_i64(r.get(2)?),
                text: r.get(3)?,
                reply_to: r.get(4)?,
                sent_at_ms: r.get(5)?,
                seq: r.get::<_, Option<i64>>(6)?.map(to_u64),
                edited: r.get(7)?,
                deleted: r.get(8)?,
                attachment,
                reactions: Vec::new(),
            })
        })?;
        let mut out = rows.collect::<Result<Vec<_>, _>>()?;
        let mut reactions = self.conn.prepare_cached(
            "SELECT emoji, reactor FROM reactions WHERE group_id = ?1 AND message_id = ?2
             ORDER BY emoji, reactor",
        )?;
        for row in &mut out {
            row.reactions = reactions
                .query_map(params![group.as_bytes(), row.id.as_bytes()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(out)
    }

    /// The attachments of kind `kind` stored under message id `id` (not deleted), in `chats`
    /// (every chat if empty).
    pub fn attachments(
        &self,
        id: MessageId,
        kind: &str,
        chats: &[GroupId],
    ) -> Result<Vec<StoredAttachment>, CoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT group_id, attachment, seq FROM messages
             WHERE message_id = ?1 AND attachment_kind = ?2 AND deleted = 0",
        )?;
        let rows = stmt.query_map(params![id.as_bytes(), kind], |r| {
            Ok((
                group_from(r.get(0)?)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<i64>>(2)?.map(to_u64),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (group, bytes, seq) = row?;
            if chats.is_empty() || chats.contains(&group) {
                out.push((group, bytes, seq));
            }
        }
        Ok(out)
    }
}
