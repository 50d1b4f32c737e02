//! The profile's schema, as numbered migrations (`PRAGMA user_version`).

use rusqlite::Connection;

use crate::CoreError;

/// Each entry migrates the profile from version `index` to `index + 1`. Append only.
///
/// Version 5 moved openmls's state from `openmls_sqlite_storage`'s tables into `mls_values`
/// (written by [`super::mls`], over the same transaction type as everything else). Profiles of
/// versions 1 to 4 are refused rather than migrated: their group state is in a format this
/// version does not read, and there were no users yet to carry along.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE profile (
    key    TEXT PRIMARY KEY,
    value  BLOB NOT NULL
);
CREATE TABLE contacts (
    username     TEXT PRIMARY KEY,
    account_key  BLOB NOT NULL,
    pinned_ms    INTEGER NOT NULL
);
CREATE TABLE chats (
    group_id    BLOB PRIMARY KEY,
    kind        TEXT NOT NULL,         -- 'direct', 'group' or 'self'
    name        TEXT NOT NULL,
    peer        TEXT,                  -- the other user of a direct chat
    position    INTEGER NOT NULL,      -- last log entry processed
    state       TEXT NOT NULL,         -- 'active', 'left', 'removed' or 'restored'
    created_ms  INTEGER NOT NULL
);
CREATE TABLE messages (
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
CREATE INDEX messages_by_seq ON messages(group_id, seq);
CREATE TABLE reactions (
    group_id    BLOB NOT NULL,
    message_id  BLOB NOT NULL,
    reactor     TEXT NOT NULL,
    emoji       TEXT NOT NULL,
    PRIMARY KEY (group_id, message_id, reactor, emoji)
);
CREATE TABLE outbox (
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
    // openmls's state as labelled values (see `mls`), this device's commits whose outcome is
    // not settled yet (see `commits`), and chats whose new members still need to be told what
    // the chat is (a commit that added them was settled after its command ended).
    r#"
ALTER TABLE chats ADD COLUMN meta_owed INTEGER NOT NULL DEFAULT 0;
CREATE TABLE mls_values (
    label  TEXT NOT NULL,
    key    BLOB NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (label, key)
);
CREATE TABLE pending_commits (
    group_id     BLOB PRIMARY KEY,       -- at most one unsettled commit per group
    epoch        INTEGER NOT NULL,       -- the epoch it was built in
    seen_seq     INTEGER NOT NULL,       -- the log head it was built at
    sha256       BLOB NOT NULL,          -- of the commit as sent: how its log entry is recognised
    request      BLOB NOT NULL,          -- the encoded SubmitCommit, to submit again
    created_ms   INTEGER NOT NULL
);
"#,
    // Leaves carry their account's certificate and are checked against pinned keys (older
    // groups' leaves do not, so profiles before this step are refused). A contact's key the
    // server presents that differs from the pinned one waits here until the user trusts it.
    r#"
ALTER TABLE contacts ADD COLUMN presented_key BLOB;
ALTER TABLE contacts ADD COLUMN shown_key BLOB;     -- whose safety number `fingerprint` showed
CREATE TABLE archive_chain (            -- how far restoring has replayed each group's archive
    group_id      BLOB PRIMARY KEY,
    through_seq   INTEGER NOT NULL,
    last_segment  INTEGER NOT NULL       -- the id of the group's last segment replayed
);
CREATE TABLE archive_expected (         -- how far the approving device saw it reach
    group_id     BLOB PRIMARY KEY,
    through_seq  INTEGER NOT NULL
);
"#,
    // The archive is a chain (see `engine::segment`): each chat's head, as this device saw it
    // archived and as restoring replayed it, carries the last segment's link and key
    // generation, and the approving device names the link it saw.
    r#"
ALTER TABLE chats ADD COLUMN archive_link BLOB;
ALTER TABLE chats ADD COLUMN archive_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE archive_chain ADD COLUMN link BLOB;
ALTER TABLE archive_chain ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE archive_expected ADD COLUMN link BLOB;
"#,
];

/// Versions that hold openmls state this version cannot read (or, from 5, groups whose
/// leaves carry no certificate; at 6, an archive of unlinked segments that every chain check
/// would refuse).
const UNREADABLE_VERSIONS: std::ops::RangeInclusive<usize> = 1..=6;

pub(super) fn migrate(conn: &Connection) -> Result<(), CoreError> {
    let version = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(CoreError::Profile(format!(
            "this profile was written by a newer version (schema {version}); upgrade"
        )));
    }
    if UNREADABLE_VERSIONS.contains(&version) {
        return Err(CoreError::Profile(format!(
            "this profile was written by an older version (schema {version}) whose group state \
             this one cannot read; start a new profile and link it as a new device"
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
