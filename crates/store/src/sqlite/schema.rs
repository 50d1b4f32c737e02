//! The SQLite schema and its migrations, keyed by `PRAGMA user_version`.

use rusqlite::Connection;

use super::backend;
use crate::StoreError;

/// Each entry migrates from version `index` to `index + 1`. Append only; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    username     TEXT PRIMARY KEY,
    account_key  BLOB NOT NULL,
    created_ms   INTEGER NOT NULL
);
CREATE TABLE devices (
    device_id          INTEGER PRIMARY KEY,
    username           TEXT NOT NULL REFERENCES accounts(username),
    device_key         BLOB NOT NULL,
    account_signature  BLOB NOT NULL,
    created_ms         INTEGER NOT NULL,
    revoked_ms         INTEGER
);
CREATE INDEX devices_by_username ON devices(username);
CREATE TABLE key_packages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id    INTEGER NOT NULL REFERENCES devices(device_id),
    last_resort  INTEGER NOT NULL,
    data         BLOB NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages(device_id, last_resort, id);
CREATE TABLE groups (
    group_id           BLOB PRIMARY KEY,
    epoch              INTEGER NOT NULL,
    head_seq           INTEGER NOT NULL,
    last_proposal_seq  INTEGER NOT NULL,
    created_ms         INTEGER NOT NULL
);
CREATE TABLE members (
    group_id    BLOB NOT NULL REFERENCES groups(group_id),
    device_id   INTEGER NOT NULL REFERENCES devices(device_id),
    joined_seq  INTEGER NOT NULL,
    left_seq    INTEGER,
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX members_by_device ON members(device_id);
CREATE TABLE log (
    group_id    BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    sender      INTEGER NOT NULL,
    message_id  BLOB,
    payload     BLOB NOT NULL,
    server_ms   INTEGER NOT NULL,
    UNIQUE (group_id, seq)
);
CREATE UNIQUE INDEX log_idempotency ON log(group_id, sender, message_id) WHERE message_id IS NOT NULL;
CREATE TABLE welcomes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id   BLOB NOT NULL,
    seq        INTEGER NOT NULL,
    sender     INTEGER NOT NULL,
    data       BLOB NOT NULL
);
CREATE TABLE inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   INTEGER NOT NULL,
    welcome_id  INTEGER NOT NULL REFERENCES welcomes(id)
);
CREATE INDEX inbox_by_device ON inbox(device_id, id);
"#,
    // Multi-device: device names and last login, roster versions, recovery, links, the archive.
    r#"
ALTER TABLE accounts ADD COLUMN roster_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN recovery_auth_key BLOB;
ALTER TABLE accounts ADD COLUMN recovery_bundle BLOB;
CREATE INDEX accounts_by_roster_version ON accounts(roster_version);
ALTER TABLE devices ADD COLUMN sealed_name BLOB NOT NULL DEFAULT x'';
ALTER TABLE devices ADD COLUMN last_seen_ms INTEGER;
CREATE TABLE links (
    link_id      BLOB PRIMARY KEY,
    request      BLOB NOT NULL,
    approval     BLOB,
    completed    INTEGER NOT NULL DEFAULT 0,
    expires_ms   INTEGER NOT NULL
);
CREATE INDEX links_by_expiry ON links(expires_ms);
CREATE TABLE archive (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    username        TEXT NOT NULL REFERENCES accounts(username),
    group_id        BLOB NOT NULL,
    from_seq        INTEGER NOT NULL,
    through_seq     INTEGER NOT NULL,
    key_generation  INTEGER NOT NULL,
    data            BLOB NOT NULL,
    created_ms      INTEGER NOT NULL
);
CREATE INDEX archive_by_account ON archive(username, id);
CREATE TABLE archive_heads (
    username     TEXT NOT NULL,
    group_id     BLOB NOT NULL,
    through_seq  INTEGER NOT NULL,
    PRIMARY KEY (username, group_id)
);
"#,
    // Files: uploads and the blobs they become (bytes live in the blob store), and the
    // references application messages hold on blobs, for garbage collection.
    r#"
CREATE TABLE blobs (
    blob_id          BLOB PRIMARY KEY,
    username         TEXT NOT NULL REFERENCES accounts(username),
    device_id        INTEGER NOT NULL,
    length           INTEGER NOT NULL,
    committed        INTEGER NOT NULL,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    expires_ms       INTEGER NOT NULL,
    completed_ms     INTEGER,
    unreferenced_ms  INTEGER
);
CREATE INDEX blobs_by_account ON blobs(username);
CREATE INDEX blobs_unfinished_by_expiry ON blobs(expires_ms) WHERE completed_ms IS NULL;
CREATE INDEX blobs_unreferenced ON blobs(unreferenced_ms) WHERE unreferenced_ms IS NOT NULL;
CREATE TABLE blob_refs (
    blob_id   BLOB NOT NULL REFERENCES blobs(blob_id),
    group_id  BLOB NOT NULL,
    seq       INTEGER NOT NULL,
    username  TEXT NOT NULL,
    PRIMARY KEY (blob_id, group_id, seq)
);
CREATE INDEX blob_refs_by_sender ON blob_refs(group_id, username, blob_id);
"#,
    // Files: each account's storage use and unfinished uploads as running totals, kept by
    // triggers on every insert, completion and delete of a blob row, so creating an upload
    // reads one row instead of summing all of the account's. 4096 is
    // `FILE_QUOTA_CHARGE_MIN_BYTES` (a test checks that the two agree).
    r#"
CREATE TABLE file_usage (
    username    TEXT PRIMARY KEY,
    bytes       INTEGER NOT NULL,
    unfinished  INTEGER NOT NULL
);
INSERT INTO file_usage (username, bytes, unfinished)
    SELECT username, SUM(MAX(length, 4096)), SUM(completed_ms IS NULL) FROM blobs GROUP BY username;
CREATE TRIGGER file_usage_insert AFTER INSERT ON blobs BEGIN
    INSERT INTO file_usage (username, bytes, unfinished)
        VALUES (NEW.username, MAX(NEW.length, 4096), NEW.completed_ms IS NULL)
        ON CONFLICT (username) DO UPDATE SET
            bytes = bytes + excluded.bytes, unfinished = unfinished + excluded.unfinished;
END;
CREATE TRIGGER file_usage_complete AFTER UPDATE OF completed_ms ON blobs BEGIN
    UPDATE file_usage
       SET unfinished = unfinished + (NEW.completed_ms IS NULL) - (OLD.completed_ms IS NULL)
     WHERE username = NEW.username;
END;
CREATE TRIGGER file_usage_delete AFTER DELETE ON blobs BEGIN
    UPDATE file_usage
       SET bytes = bytes - MAX(OLD.length, 4096), unfinished = unfinished - (OLD.completed_ms IS NULL)
     WHERE username = OLD.username;
END;
"#,
    // A device's groups are listed in pages ordered by group id. Every key package handed
    // out is recorded with who claimed it, and a commit may add a device only with one its
    // committer's account claimed (each used once): adding someone costs a claim, and
    // claims are rate-limited.
    r#"
CREATE INDEX members_by_device_group ON members(device_id, group_id);
DROP INDEX members_by_device;
CREATE TABLE claims (
    id          INTEGER PRIMARY KEY,
    claimer     TEXT NOT NULL,           -- the account that was handed the key package
    device_id   INTEGER NOT NULL,        -- whose key package it is
    kp_sha256   BLOB NOT NULL
);
CREATE INDEX claims_by_claimer ON claims(claimer, device_id, kp_sha256);
ALTER TABLE devices ADD COLUMN revocation_signature BLOB;  -- the account's proof, once given
"#,
];

/// What the schema's file-usage triggers charge a blob at least (see the last migration).
#[cfg(test)]
pub(super) const TRIGGER_CHARGE_MIN_BYTES: u64 = 4096;

/// Brings the database to the newest schema, in one transaction per step.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(backend)?
        .try_into()
        .map_err(backend)?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this server ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            index + 1
        ))
        .map_err(backend)?;
    }
    Ok(())
}
