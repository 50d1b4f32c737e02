//! The profile's local SQLite store: identity, pinned contact keys, chats, history and outbox.
//!
//! openmls keeps its own tables in the same file (see `provider`). Callers wrap a change to MLS
//! state and the history it produces in one [`Local::transaction`], so a crash never leaves a
//! group advanced without its messages stored, or the reverse.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use chapar_types::{DeviceId, GroupId, MessageId, Seq, Username};
use rusqlite::{Connection, OptionalExtension, params};

use crate::ClientError;

/// Each entry migrates the profile from version `index` to `index + 1` (`PRAGMA user_version`).
/// Append only. The first uses `IF NOT EXISTS` because profiles made before versioning have its
/// tables already.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE IF NOT EXISTS profile (
    key    TEXT PRIMARY KEY,
    value  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS contacts (
    username     TEXT PRIMARY KEY,
    account_key  BLOB NOT NULL,
    pinned_ms    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chats (
    group_id    BLOB PRIMARY KEY,
    kind        TEXT NOT NULL,         -- 'direct' or 'group'
    name        TEXT NOT NULL,
    peer        TEXT,                  -- the other user of a direct chat
    position    INTEGER NOT NULL,      -- last log entry processed
    state       TEXT NOT NULL,         -- 'active', 'left' or 'removed'
    created_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    group_id       BLOB NOT NULL,
    message_id     BLOB NOT NULL,
    sender         TEXT NOT NULL,
    sender_device  INTEGER NOT NULL,
    text           TEXT,
    reply_to       BLOB,
    sent_at_ms     INTEGER NOT NULL,
    seq            INTEGER,              -- log position; NULL while unacknowledged
    edited         INTEGER NOT NULL DEFAULT 0,
    deleted        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, message_id)
);
CREATE INDEX IF NOT EXISTS messages_by_seq ON messages(group_id, seq);
CREATE TABLE IF NOT EXISTS reactions (
    group_id    BLOB NOT NULL,
    message_id  BLOB NOT NULL,
    reactor     TEXT NOT NULL,
    emoji       TEXT NOT NULL,
    PRIMARY KEY (group_id, message_id, reactor, emoji)
);
CREATE TABLE IF NOT EXISTS outbox (
    group_id    BLOB NOT NULL,
    message_id  BLOB NOT NULL,
    body        BLOB NOT NULL,           -- the encoded AppMessage, re-encrypted on retry
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (group_id, message_id)
);
"#,
    // Multi-device: read positions, roster checks, the archive's position, and history events
    // waiting to be archived.
    r#"
ALTER TABLE chats ADD COLUMN read_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chats ADD COLUMN roster_seen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chats ADD COLUMN roster_checked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chats ADD COLUMN archived_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chats ADD COLUMN recorded_from INTEGER NOT NULL DEFAULT 0; -- this device's history starts after it
CREATE TABLE archive_pending (
    group_id     BLOB NOT NULL,
    seq          INTEGER NOT NULL,
    event        BLOB NOT NULL,          -- an encoded ArchiveEvent
    recorded_ms  INTEGER NOT NULL,
    PRIMARY KEY (group_id, seq)
);
CREATE TABLE revoked_devices (           -- seen revoked: never added to a group again
    username   TEXT NOT NULL,
    device_id  INTEGER NOT NULL,
    PRIMARY KEY (username, device_id)
);
"#,
    // Files: attachments of messages, uploads in progress (to resume), installed sticker packs.
    r#"
ALTER TABLE messages ADD COLUMN attachment_kind TEXT;   -- 'file' or 'sticker_pack'
ALTER TABLE messages ADD COLUMN attachment BLOB;        -- the encoded File or StickerPack
CREATE INDEX messages_by_id ON messages(message_id);
CREATE TABLE uploads (
    upload_key  TEXT PRIMARY KEY,   -- the chat, and the file's path, size and modification time
    file_key    BLOB NOT NULL,
    upload_url  TEXT,               -- once the server created the upload
    created_ms  INTEGER NOT NULL
);
CREATE TABLE sticker_packs (
    pack_id       BLOB PRIMARY KEY,
    pack          BLOB NOT NULL,    -- the encoded StickerPack
    installed_ms  INTEGER NOT NULL
);
"#,
    // The SHA-256 of each chunk an upload sealed, recorded before it leaves, so a resume can
    // prove the file did not change (the same key must never seal other bytes at a position).
    r#"
CREATE TABLE upload_chunks (
    upload_key  TEXT NOT NULL,
    chunk       INTEGER NOT NULL,
    sha256      BLOB NOT NULL,
    PRIMARY KEY (upload_key, chunk)
);
"#,
];

fn migrate(conn: &Connection) -> Result<(), ClientError> {
    let version = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(ClientError::Profile(format!(
            "this profile was written by a newer chapar (schema {version}); upgrade chapar"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            index + 1
        ))?;
    }
    Ok(())
}

/// Why the profile lock was not taken (yet).
enum LockWait {
    /// Another process holds it; try again.
    Busy,
    /// Another process held it for too long.
    TimedOut,
    /// The lock file failed.
    Failed(std::io::Error),
}

impl LockWait {
    fn into_error(self) -> ClientError {
        match self {
            Self::Busy | Self::TimedOut => ClientError::Profile(
                "the profile is in use by another chapar process (is `chapar listen` stuck?)"
                    .into(),
            ),
            Self::Failed(e) => ClientError::Profile(format!("cannot lock the profile: {e}")),
        }
    }
}

/// A chat as this device knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    /// The MLS group.
    pub group: GroupId,
    /// `direct` or `group`.
    pub kind: String,
    /// Display name (group chats).
    pub name: String,
    /// The other user, for direct chats.
    pub peer: Option<String>,
    /// Last log entry processed.
    pub position: Seq,
    /// `active`, `left`, `removed`, or `restored` (history from the archive; this device is
    /// not a member).
    pub state: String,
    /// The roster version this device last checked the group's devices at.
    pub roster_seen: u64,
}

impl Chat {
    /// A chat of `kind` in `state`, processed up to `position`, with no name or peer yet.
    pub fn new(group: GroupId, kind: &str, state: &str, position: Seq) -> Self {
        Self {
            group,
            kind: kind.to_owned(),
            name: String::new(),
            peer: None,
            position,
            state: state.to_owned(),
            roster_seen: 0,
        }
    }

    /// How this chat is named in commands and output: `@peer` or the group id.
    pub fn label(&self) -> String {
        match (&self.kind[..], &self.peer) {
            ("direct", Some(peer)) => format!("@{peer}"),
            _ => self.group.to_string(),
        }
    }
}

/// How long opening a profile waits for another `chapar` process using it.
const PROFILE_LOCK_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting process tries the profile lock again.
const PROFILE_LOCK_RETRY: Duration = Duration::from_millis(20);
/// Most notices kept for the user between commands.
const NOTICES_MAX: usize = 64;

/// The profile database, and the lock that keeps two processes from interleaving multi-step
/// operations on it (an MLS commit is built, sent and merged in separate transactions).
pub struct Local {
    conn: Connection,
    lock: File,
    locked: bool,
}

fn group_from(bytes: Vec<u8>) -> rusqlite::Result<GroupId> {
    GroupId::from_slice(&bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

fn chat_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Chat> {
    Ok(Chat {
        group: group_from(r.get(0)?)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        peer: r.get(3)?,
        position: r.get::<_, i64>(4)? as u64,
        state: r.get(5)?,
        roster_seen: r.get::<_, i64>(6)? as u64,
    })
}

const CHAT_COLUMNS: &str = "group_id, kind, name, peer, position, state, roster_seen";

impl Local {
    /// Opens (creating) the profile database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            ClientError::Profile(format!(
                "cannot create profile directory {}: {e}",
                dir.display()
            ))
        })?;
        let lock = File::create(dir.join("profile.lock"))
            .map_err(|e| ClientError::Profile(format!("cannot create the profile lock: {e}")))?;
        let deadline = Instant::now() + PROFILE_LOCK_WAIT;
        let mut locking = Self::try_locking(&lock, deadline);
        while let Err(LockWait::Busy) = locking {
            std::thread::sleep(PROFILE_LOCK_RETRY);
            locking = Self::try_locking(&lock, deadline);
        }
        locking.map_err(LockWait::into_error)?;
        let mut conn = Connection::open(dir.join("profile.db"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;",
        )?;
        migrate(&conn)?;
        crate::provider::migrate(&mut conn).map_err(ClientError::Profile)?;
        Ok(Self {
            conn,
            lock,
            locked: true,
        })
    }

    fn try_locking(lock: &File, deadline: Instant) -> Result<(), LockWait> {
        match lock.try_lock() {
            Ok(()) => Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                Err(LockWait::Busy)
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(LockWait::TimedOut),
            Err(std::fs::TryLockError::Error(e)) => Err(LockWait::Failed(e)),
        }
    }

    /// Lets other processes use the profile (while `listen` waits for pushes).
    pub fn unlock(&mut self) {
        if self.locked && self.lock.unlock().is_ok() {
            self.locked = false;
        }
    }

    /// Takes the profile back after [`Self::unlock`], waiting for another process to finish.
    pub async fn relock(&mut self) -> Result<(), ClientError> {
        if self.locked {
            return Ok(());
        }
        let deadline = Instant::now() + PROFILE_LOCK_WAIT;
        loop {
            match Self::try_locking(&self.lock, deadline) {
                Ok(()) => {
                    self.locked = true;
                    return Ok(());
                }
                Err(LockWait::Busy) => tokio::time::sleep(PROFILE_LOCK_RETRY).await,
                Err(other) => return Err(other.into_error()),
            }
        }
    }

    /// The connection, for the MLS provider.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Runs `f` in one transaction: all of its writes (MLS state included) land, or none do.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&Self) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(value) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(value)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Reads a profile value.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM profile WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Writes a profile value.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), ClientError> {
        self.conn.execute(
            "INSERT INTO profile (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            params![key, value],
        )?;
        Ok(())
    }

    /// Reads a profile counter (0 when unset).
    pub fn get_u64(&self, key: &str) -> Result<u64, ClientError> {
        Ok(self
            .get(key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Writes a profile counter.
    pub fn set_u64(&self, key: &str, value: u64) -> Result<(), ClientError> {
        self.set(key, &value.to_be_bytes())
    }

    /// The pinned account key of a contact.
    pub fn pinned_key(&self, username: &Username) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self
            .conn
            .query_row(
                "SELECT account_key FROM contacts WHERE username = ?1",
                [username.as_str()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Pins (or re-pins) a contact's account key.
    pub fn pin_key(&self, username: &Username, key: &[u8], now_ms: u64) -> Result<(), ClientError> {
        self.conn.execute(
            "INSERT INTO contacts (username, account_key, pinned_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (username) DO UPDATE SET account_key = ?2, pinned_ms = ?3",
            params![username.as_str(), key, now_ms as i64],
        )?;
        Ok(())
    }

    /// Records a chat this device is now in. Its own history starts after `chat.position`.
    pub fn insert_chat(&self, chat: &Chat, now_ms: u64) -> Result<(), ClientError> {
        self.conn.execute(
            "INSERT INTO chats (group_id, kind, name, peer, position, state, created_ms, recorded_from) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?5)
             ON CONFLICT (group_id) DO UPDATE SET kind = ?2, name = ?3, peer = ?4, position = ?5, state = ?6, recorded_from = ?5",
            params![chat.group.as_bytes(), chat.kind, chat.name, chat.peer, chat.position as i64, chat.state, now_ms as i64],
        )?;
        Ok(())
    }

    /// The log position after which this device has recorded the chat's history itself.
    pub fn recorded_from(&self, group: GroupId) -> Result<Seq, ClientError> {
        self.chat_number(group, "recorded_from")
    }

    /// A numeric column (or expression over columns) of a chat; 0 for a chat not recorded.
    fn chat_number(&self, group: GroupId, expression: &str) -> Result<u64, ClientError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {expression} FROM chats WHERE group_id = ?1"),
                [group.as_bytes()],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map_or(0, |n| n as u64))
    }

    /// Remembers that `device` of `username` was revoked, so it is never added back.
    pub fn remember_revoked(&self, username: &str, device: DeviceId) -> Result<(), ClientError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO revoked_devices (username, device_id) VALUES (?1, ?2)",
            params![username, device.0 as i64],
        )?;
        Ok(())
    }

    /// Whether `device` of `username` was seen revoked.
    pub fn was_revoked(&self, username: &str, device: DeviceId) -> Result<bool, ClientError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM revoked_devices WHERE username = ?1 AND device_id = ?2",
                params![username, device.0 as i64],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Keeps a notice for the user (shown after the command, like a warning).
    pub fn push_notice(&self, notice: &str) -> Result<(), ClientError> {
        let mut notices = self.notices()?;
        notices.push(notice.to_owned());
        let keep = notices.len().saturating_sub(NOTICES_MAX);
        self.set("notices", notices[keep..].join("\n").as_bytes())
    }

    /// Takes the kept notices.
    pub fn take_notices(&self) -> Result<Vec<String>, ClientError> {
        let notices = self.notices()?;
        if !notices.is_empty() {
            self.set("notices", b"")?;
        }
        Ok(notices)
    }

    fn notices(&self) -> Result<Vec<String>, ClientError> {
        Ok(self
            .get("notices")?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// One chat.
    pub fn chat(&self, group: GroupId) -> Result<Option<Chat>, ClientError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {CHAT_COLUMNS} FROM chats WHERE group_id = ?1"),
                [group.as_bytes()],
                chat_from_row,
            )
            .optional()?)
    }

    /// Marks a chat joined again from a welcome, keeping what the archive said it is.
    pub fn rejoin_chat(&self, group: GroupId, position: Seq) -> Result<(), ClientError> {
        self.conn.execute(
            "UPDATE chats SET position = ?2, recorded_from = ?2, state = 'active' WHERE group_id = ?1",
            params![group.as_bytes(), position as i64],
        )?;
        Ok(())
    }

    /// Moves a chat's read position forward (never back).
    pub fn mark_read(&self, group: GroupId, seq: Seq) -> Result<(), ClientError> {
        self.conn.execute(
            "UPDATE chats SET read_seq = MAX(read_seq, ?2) WHERE group_id = ?1",
            params![group.as_bytes(), seq as i64],
        )?;
        Ok(())
    }

    /// Messages from others after the chat's read position.
    pub fn unread(&self, group: GroupId, me: &str) -> Result<u64, ClientError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM messages m JOIN chats c ON c.group_id = m.group_id
             WHERE m.group_id = ?1 AND m.seq > c.read_seq AND m.sender != ?2",
            params![group.as_bytes(), me],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Records that the chat's devices match its accounts' lists at roster `version`.
    pub fn set_roster_seen(&self, group: GroupId, version: u64) -> Result<(), ClientError> {
        self.conn.execute(
            "UPDATE chats SET roster_seen = MAX(roster_seen, ?2),
                              roster_checked = MAX(roster_checked, ?2) WHERE group_id = ?1",
            params![group.as_bytes(), version as i64],
        )?;
        Ok(())
    }

    /// Records that the chat's devices were checked at roster `version`, even if a device could
    /// not be added yet (it has no key package): sending may go on, the next sync checks again.
    pub fn set_roster_checked(&self, group: GroupId, version: u64) -> Result<(), ClientError> {
        self.conn.execute(
            "UPDATE chats SET roster_checked = MAX(roster_checked, ?2) WHERE group_id = ?1",
            params![group.as_bytes(), version as i64],
        )?;
        Ok(())
    }

    /// The roster version a message to this chat may claim to have checked.
    pub fn roster_checked(&self, group: GroupId) -> Result<u64, ClientError> {
        self.chat_number(group, "MAX(roster_seen, roster_checked)")
    }

    /// What this device believes the account archive holds of a chat.
    pub fn archived_seq(&self, group: GroupId) -> Result<Seq, ClientError> {
        self.chat_number(group, "archived_seq")
    }

    /// Records how far the account archive reaches for a chat (never back).
    pub fn set_archived_seq(&self, group: GroupId, seq: Seq) -> Result<(), ClientError> {
        self.conn.execute(
            "UPDATE chats SET archived_seq = MAX(archived_seq, ?2) WHERE group_id = ?1",
            params![group.as_bytes(), seq as i64],
        )?;
        Ok(())
    }

    /// Every chat, oldest first.
    pub fn chats(&self) -> Result<Vec<Chat>, ClientError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {CHAT_COLUMNS} FROM chats ORDER BY created_ms, group_id"
        ))?;
        Ok(stmt
            .query_map([], chat_from_row)?
            .collect::<Result<_, _>>()?)
    }

    /// The active direct chat with `peer`, oldest first if there are several (both sides may have
    /// started one at the same time).
    pub fn direct_chats(&self, peer: &Username) -> Result<Vec<Chat>, ClientError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {CHAT_COLUMNS} FROM chats WHERE kind = 'direct' AND peer = ?1 ORDER BY created_ms, group_id"
        ))?;
        Ok(stmt
            .query_map([peer.as_str()], chat_from_row)?
            .collect::<Result<_, _>>()?)
    }

    /// Moves a chat's processed position.
    pub fn set_position(&self, group: GroupId, position: Seq) -> Result<(), ClientError> {
        self.conn.execute(
            "UPDATE chats SET position = ?2 WHERE group_id = ?1",
            params![group.as_bytes(), position as i64],
        )?;
        Ok(())
    }

    /// Sets a chat's state (`active`, `left`, `removed`).
    pub fn set_state(&self, group: GroupId, state: &str) -> Result<(), ClientError> {
        self.conn.execute(
            "UPDATE chats SET state = ?2 WHERE group_id = ?1",
            params![group.as_bytes(), state],
        )?;
        Ok(())
    }

    /// Sets what a chat is (from a GroupMeta message).
    pub fn set_chat_meta(
        &self,
        group: GroupId,
        kind: &str,
        name: &str,
        peer: Option<&str>,
    ) -> Result<(), ClientError> {
        self.conn.execute(
            "UPDATE chats SET kind = ?2, name = ?3, peer = ?4 WHERE group_id = ?1",
            params![group.as_bytes(), kind, name, peer],
        )?;
        Ok(())
    }

    /// Queues an outgoing message until the server acknowledges it.
    pub fn queue_outgoing(
        &self,
        group: GroupId,
        id: MessageId,
        body: &[u8],
        now_ms: u64,
    ) -> Result<(), ClientError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO outbox (group_id, message_id, body, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![group.as_bytes(), id.as_bytes(), body, now_ms as i64],
        )?;
        Ok(())
    }

    /// Messages still waiting for an acknowledgement, oldest first.
    pub fn outbox(&self) -> Result<Vec<(GroupId, MessageId, Vec<u8>)>, ClientError> {
        let mut stmt = self
            .conn
            .prepare("SELECT group_id, message_id, body FROM outbox ORDER BY created_ms, rowid")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (g, m, body) = row?;
            if let (Ok(g), Ok(m)) = (GroupId::from_slice(&g), MessageId::from_slice(&m)) {
                out.push((g, m, body));
            }
        }
        Ok(out)
    }

    /// The queued body of an outgoing message, if it is still waiting.
    pub fn outgoing_body(
        &self,
        group: GroupId,
        id: MessageId,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self
            .conn
            .query_row(
                "SELECT body FROM outbox WHERE group_id = ?1 AND message_id = ?2",
                params![group.as_bytes(), id.as_bytes()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Marks a message acknowledged at `seq` and drops it from the outbox.
    pub fn mark_sent(&self, group: GroupId, id: MessageId, seq: Seq) -> Result<(), ClientError> {
        self.conn.execute(
            "UPDATE messages SET seq = ?3 WHERE group_id = ?1 AND message_id = ?2",
            params![group.as_bytes(), id.as_bytes(), seq as i64],
        )?;
        self.conn.execute(
            "DELETE FROM outbox WHERE group_id = ?1 AND message_id = ?2",
            params![group.as_bytes(), id.as_bytes()],
        )?;
        Ok(())
    }

    /// This device's id, once registered.
    pub fn device_id(&self) -> Result<Option<DeviceId>, ClientError> {
        Ok(self
            .get("device_id")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(|b| DeviceId(u64::from_be_bytes(b))))
    }
}
