//! The chats this device knows (table `chats`): what each is, how far its log is processed, its
//! roster checks and how far the account archive holds it.

use chapar_types::{GroupId, Seq, Username};
use rusqlite::{OptionalExtension, params};

use super::{Tx, group_from, to_i64, to_u64};
use crate::CoreError;

/// What a chat is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    /// A 1:1 chat with another user.
    Direct,
    /// A group chat.
    Group,
    /// The group of this account's own devices (read markers, key rotations); not a chat the
    /// user sees.
    SelfGroup,
}

/// Where this device stands in a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatState {
    /// A member: it reads and sends.
    Active,
    /// It left.
    Left,
    /// Another member removed it (or its account left).
    Removed,
    /// History restored from the account archive; this device is not a member.
    Restored,
}

impl ChatKind {
    /// The name stored in the profile (and shown by the CLI).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Group => "group",
            Self::SelfGroup => "self",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "direct" => Self::Direct,
            "self" => Self::SelfGroup,
            _ => Self::Group,
        }
    }
}

impl ChatState {
    /// The name stored in the profile (and shown by the CLI).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Left => "left",
            Self::Removed => "removed",
            Self::Restored => "restored",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "active" => Self::Active,
            "left" => Self::Left,
            "restored" => Self::Restored,
            _ => Self::Removed,
        }
    }
}

/// A chat as this device knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    /// The MLS group.
    pub group: GroupId,
    /// What it is.
    pub kind: ChatKind,
    /// Display name (group chats).
    pub name: String,
    /// The other user, for direct chats.
    pub peer: Option<Username>,
    /// Last log entry processed.
    pub position: Seq,
    /// Where this device stands in it.
    pub state: ChatState,
    /// The roster version this device last checked the group's devices at.
    pub roster_seen: u64,
}

impl Chat {
    /// A chat of `kind` in `state`, processed up to `position`, with no name or peer yet.
    pub fn new(group: GroupId, kind: ChatKind, state: ChatState, position: Seq) -> Self {
        Self {
            group,
            kind,
            name: String::new(),
            peer: None,
            position,
            state,
            roster_seen: 0,
        }
    }

    /// Whether this device is a member.
    pub fn is_active(&self) -> bool {
        self.state == ChatState::Active
    }
}

const CHAT_COLUMNS: &str = "group_id, kind, name, peer, position, state, roster_seen";

fn chat_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Chat> {
    Ok(Chat {
        group: group_from(r.get(0)?)?,
        kind: ChatKind::parse(&r.get::<_, String>(1)?),
        name: r.get(2)?,
        // A peer name that does not parse is treated as no peer (the chat shows by its id).
        peer: r
            .get::<_, Option<String>>(3)?
            .and_then(|p| Username::parse(&p).ok()),
        position: to_u64(r.get(4)?),
        state: ChatState::parse(&r.get::<_, String>(5)?),
        roster_seen: to_u64(r.get(6)?),
    })
}

impl Tx<'_> {
    /// Records a chat this device is now in. Its own history starts after `chat.position`.
    pub fn insert_chat(&self, chat: &Chat, now_ms: u64) -> Result<(), CoreError> {
        self.conn.prepare_cached(
            "INSERT INTO chats (group_id, kind, name, peer, position, state, created_ms, recorded_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?5)
             ON CONFLICT (group_id) DO UPDATE SET kind = ?2, name = ?3, peer = ?4, position = ?5,
                                                  state = ?6, recorded_from = ?5",
        )?
        .execute(params![
            chat.group.as_bytes(),
            chat.kind.as_str(),
            chat.name,
            chat.peer.as_ref().map(Username::as_str),
            to_i64(chat.position),
            chat.state.as_str(),
            to_i64(now_ms)
        ])?;
        Ok(())
    }

    /// One chat.
    pub fn chat(&self, group: GroupId) -> Result<Option<Chat>, CoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {CHAT_COLUMNS} FROM chats WHERE group_id = ?1"
            ))?
            .query_row([group.as_bytes()], chat_from_row)
            .optional()?)
    }

    /// Every chat, oldest first.
    pub fn chats(&self) -> Result<Vec<Chat>, CoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CHAT_COLUMNS} FROM chats ORDER BY created_ms, group_id"
        ))?;
        Ok(stmt
            .query_map([], chat_from_row)?
            .collect::<Result<_, _>>()?)
    }

    /// The direct chats with `peer`, oldest first (both sides may have started one at the
    /// same time).
    pub fn direct_chats(&self, peer: &Username) -> Result<Vec<Chat>, CoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CHAT_COLUMNS} FROM chats WHERE kind = 'direct' AND peer = ?1
             ORDER BY created_ms, group_id"
        ))?;
        Ok(stmt
            .query_map([peer.as_str()], chat_from_row)?
            .collect::<Result<_, _>>()?)
    }

    /// A numeric column (or expression over columns) of a chat; 0 for a chat not recorded.
    fn chat_number(&self, group: GroupId, expression: &str) -> Result<u64, CoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {expression} FROM chats WHERE group_id = ?1"
            ))?
            .query_row([group.as_bytes()], |r| r.get::<_, i64>(0))
            .optional()?
            .map_or(0, to_u64))
    }

    fn update_chat(
        &self,
        sql: &str,
        group: GroupId,
        value: &dyn rusqlite::ToSql,
    ) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(sql)?
            .execute(params![group.as_bytes(), value])?;
        Ok(())
    }

    /// Records that nothing of the chat's history before this device joined belongs to its
    /// account (no other device of the account was in the group), so the account's history
    /// of it starts here and uploading need not wait for anyone to archive an earlier stretch.
    pub fn record_from_the_start(&self, group: GroupId) -> Result<(), CoreError> {
        self.update_chat(
            "UPDATE chats SET recorded_from = ?2 WHERE group_id = ?1",
            group,
            &0i64,
        )
    }

    /// The log position after which this device has recorded the chat's history itself.
    pub fn recorded_from(&self, group: GroupId) -> Result<Seq, CoreError> {
        self.chat_number(group, "recorded_from")
    }

    /// Marks a chat joined again from a welcome at `position`, as a group until its members
    /// say what it is (what it was, a direct chat with someone, may no longer be true).
    pub fn rejoin_chat(&self, group: GroupId, position: Seq) -> Result<(), CoreError> {
        self.update_chat(
            "UPDATE chats SET position = ?2, recorded_from = ?2, state = 'active',
                              kind = 'group', name = '', peer = NULL
             WHERE group_id = ?1",
            group,
            &to_i64(position),
        )
    }

    /// Moves a chat's processed position.
    pub fn set_position(&self, group: GroupId, position: Seq) -> Result<(), CoreError> {
        self.update_chat(
            "UPDATE chats SET position = ?2 WHERE group_id = ?1",
            group,
            &to_i64(position),
        )
    }

    /// Sets where this device stands in a chat.
    pub fn set_state(&self, group: GroupId, state: ChatState) -> Result<(), CoreError> {
        self.update_chat(
            "UPDATE chats SET state = ?2 WHERE group_id = ?1",
            group,
            &state.as_str(),
        )
    }

    /// Sets what a chat is (from a GroupMeta message).
    pub fn set_chat_meta(
        &self,
        group: GroupId,
        kind: ChatKind,
        name: &str,
        peer: Option<&Username>,
    ) -> Result<(), CoreError> {
        self.conn
            .prepare_cached("UPDATE chats SET kind = ?2, name = ?3, peer = ?4 WHERE group_id = ?1")?
            .execute(params![
                group.as_bytes(),
                kind.as_str(),
                name,
                peer.map(Username::as_str)
            ])?;
        Ok(())
    }

    /// Moves a chat's read position forward (never back).
    pub fn mark_read(&self, group: GroupId, seq: Seq) -> Result<(), CoreError> {
        self.update_chat(
            "UPDATE chats SET read_seq = MAX(read_seq, ?2) WHERE group_id = ?1",
            group,
            &to_i64(seq),
        )
    }

    /// Messages from others after the chat's read position.
    pub fn unread(&self, group: GroupId, me: &Username) -> Result<u64, CoreError> {
        Ok(to_u64(
            self.conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM messages m JOIN chats c ON c.group_id = m.group_id
                     WHERE m.group_id = ?1 AND m.seq > c.read_seq AND m.sender != ?2",
                )?
                .query_row(params![group.as_bytes(), me.as_str()], |r| r.get(0))?,
        ))
    }

    /// Makes every chat's devices be checked again at the next sync (a contact's key was
    /// trusted anew, so their device list means something else now).
    pub fn forget_roster_checks(&self) -> Result<(), CoreError> {
        self.conn.execute("UPDATE chats SET roster_seen = 0", [])?;
        Ok(())
    }

    /// Records that the chat's devices match its accounts' lists at roster `version`.
    pub fn set_roster_seen(&self, group: GroupId, version: u64) -> Result<(), CoreError> {
        self.update_chat(
            "UPDATE chats SET roster_seen = MAX(roster_seen, ?2),
                              roster_checked = MAX(roster_checked, ?2) WHERE group_id = ?1",
            group,
            &to_i64(version),
        )
    }

    /// Records that the chat's devices were checked at roster `version`, even if a device could
    /// not be added yet (it has no key package): sending may go on, the next sync checks again.
    pub fn set_roster_checked(&self, group: GroupId, version: u64) -> Result<(), CoreError> {
        self.update_chat(
            "UPDATE chats SET roster_checked = MAX(roster_checked, ?2) WHERE group_id = ?1",
            group,
            &to_i64(version),
        )
    }

    /// The roster version a message to this chat may claim to have checked.
    pub fn roster_checked(&self, group: GroupId) -> Result<u64, CoreError> {
        self.chat_number(group, "MAX(roster_seen, roster_checked)")
    }

    /// What this device believes the account archive holds of a chat.
    pub fn archived_seq(&self, group: GroupId) -> Result<Seq, CoreError> {
        self.chat_number(group, "archived_seq")
    }

    /// Records whether a chat's members are owed its group meta (devices were added by a
    /// commit of this device, and have not been told what the chat is yet).
    pub fn set_meta_owed(&self, group: GroupId, owed: bool) -> Result<(), CoreError> {
        self.update_chat(
            "UPDATE chats SET meta_owed = ?2 WHERE group_id = ?1",
            group,
            &owed,
        )
    }

    /// The active chats whose members are owed their group meta.
    pub fn chats_owed_meta(&self) -> Result<Vec<GroupId>, CoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT group_id FROM chats WHERE meta_owed = 1 AND state = 'active'",
        )?;
        let rows = stmt.query_map([], |r| group_from(r.get(0)?))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
