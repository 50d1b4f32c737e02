//! The PostgreSQL schema and its migrations, recorded in `chapar_schema` and applied under an
//! advisory lock, so nodes starting together migrate once.
//!
//! The tables mirror the SQLite schema with two differences that come from concurrent writers
//! (SQLite has one): a device's inbox and an account's archive number their rows per device and
//! per account (`MAX + 1` inside a serializable transaction), because a global identity column
//! can commit out of order and a reader paging "after id N" would skip the late one; and file
//! usage is summed per account on demand (indexed) instead of kept by triggers.

use tokio_postgres::Client;

use super::{Failure, pg};

/// Each entry migrates from version `index` to `index + 1`. Append only; never edit a shipped one.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE accounts (
    username           TEXT PRIMARY KEY,
    account_key        BYTEA NOT NULL,
    created_ms         BIGINT NOT NULL,
    roster_version     BIGINT NOT NULL DEFAULT 0,
    recovery_auth_key  BYTEA,
    recovery_bundle    BYTEA
);
CREATE INDEX accounts_by_roster_version ON accounts(roster_version);
CREATE TABLE devices (
    device_id             BIGINT PRIMARY KEY,
    username              TEXT NOT NULL REFERENCES accounts(username),
    device_key            BYTEA NOT NULL,
    account_signature     BYTEA NOT NULL,
    created_ms            BIGINT NOT NULL,
    revoked_ms            BIGINT,
    sealed_name           BYTEA NOT NULL DEFAULT '',
    last_seen_ms          BIGINT,
    revocation_signature  BYTEA
);
CREATE INDEX devices_by_username ON devices(username);
CREATE TABLE key_packages (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id    BIGINT NOT NULL REFERENCES devices(device_id),
    last_resort  BOOLEAN NOT NULL,
    data         BYTEA NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages(device_id, last_resort, id);
CREATE TABLE claims (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    claimer     TEXT NOT NULL,
    device_id   BIGINT NOT NULL,
    kp_sha256   BYTEA NOT NULL
);
CREATE INDEX claims_by_claimer ON claims(claimer, device_id, kp_sha256);
CREATE TABLE groups (
    group_id           BYTEA PRIMARY KEY,
    epoch              BIGINT NOT NULL,
    head_seq           BIGINT NOT NULL,
    last_proposal_seq  BIGINT NOT NULL,
    created_ms         BIGINT NOT NULL
);
CREATE TABLE members (
    group_id    BYTEA NOT NULL REFERENCES groups(group_id),
    device_id   BIGINT NOT NULL REFERENCES devices(device_id),
    joined_seq  BIGINT NOT NULL,
    left_seq    BIGINT,
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX members_by_device_group ON members(device_id, group_id);
CREATE TABLE log (
    group_id    BYTEA NOT NULL,
    seq         BIGINT NOT NULL,
    kind        BIGINT NOT NULL,
    epoch       BIGINT NOT NULL,
    sender      BIGINT NOT NULL,
    message_id  BYTEA,
    payload     BYTEA NOT NULL,
    server_ms   BIGINT NOT NULL,
    PRIMARY KEY (group_id, seq)
);
CREATE UNIQUE INDEX log_idempotency ON log(group_id, sender, message_id) WHERE message_id IS NOT NULL;
CREATE TABLE welcomes (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id   BYTEA NOT NULL,
    seq        BIGINT NOT NULL,
    sender     BIGINT NOT NULL,
    data       BYTEA NOT NULL
);
CREATE TABLE inbox (
    device_id   BIGINT NOT NULL,
    id          BIGINT NOT NULL,
    welcome_id  BIGINT NOT NULL REFERENCES welcomes(id),
    PRIMARY KEY (device_id, id)
);
CREATE TABLE links (
    link_id      BYTEA PRIMARY KEY,
    request      BYTEA NOT NULL,
    approval     BYTEA,
    completed    BOOLEAN NOT NULL DEFAULT FALSE,
    expires_ms   BIGINT NOT NULL
);
CREATE INDEX links_by_expiry ON links(expires_ms);
CREATE TABLE archive (
    username        TEXT NOT NULL REFERENCES accounts(username),
    id              BIGINT NOT NULL,
    group_id        BYTEA NOT NULL,
    from_seq        BIGINT NOT NULL,
    through_seq     BIGINT NOT NULL,
    key_generation  BIGINT NOT NULL,
    data            BYTEA NOT NULL,
    created_ms      BIGINT NOT NULL,
    PRIMARY KEY (username, id)
);
CREATE TABLE archive_heads (
    username     TEXT NOT NULL,
    group_id     BYTEA NOT NULL,
    through_seq  BIGINT NOT NULL,
    PRIMARY KEY (username, group_id)
);
CREATE TABLE blobs (
    blob_id          BYTEA PRIMARY KEY,
    username         TEXT NOT NULL REFERENCES accounts(username),
    device_id        BIGINT NOT NULL,
    length           BIGINT NOT NULL,
    committed        BIGINT NOT NULL,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL,
    expires_ms       BIGINT NOT NULL,
    completed_ms     BIGINT,
    unreferenced_ms  BIGINT
);
CREATE INDEX blobs_by_account ON blobs(username);
CREATE INDEX blobs_unfinished_by_expiry ON blobs(expires_ms) WHERE completed_ms IS NULL;
CREATE INDEX blobs_unreferenced ON blobs(unreferenced_ms) WHERE unreferenced_ms IS NOT NULL;
CREATE TABLE blob_refs (
    blob_id   BYTEA NOT NULL REFERENCES blobs(blob_id),
    group_id  BYTEA NOT NULL,
    seq       BIGINT NOT NULL,
    username  TEXT NOT NULL,
    PRIMARY KEY (blob_id, group_id, seq)
);
CREATE INDEX blob_refs_by_sender ON blob_refs(group_id, username, blob_id);
"#];

/// A fixed key for the migration lock (any constant no other application uses on this database).
const MIGRATION_LOCK_KEY: i64 = 0x4348_4150_4152_0001;

/// Brings the database to the newest schema, each step in its own transaction.
pub(super) async fn migrate(client: &mut Client) -> Result<(), Failure> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(pg)?;
    let result = apply(client).await;
    // Released on disconnect too; unlocking explicitly lets the connection go back to the pool.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(pg);
    result.and(unlocked.map(drop))
}

async fn apply(client: &mut Client) -> Result<(), Failure> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS chapar_schema (version BIGINT NOT NULL)")
        .await
        .map_err(pg)?;
    let version: i64 = client
        .query_opt("SELECT version FROM chapar_schema", &[])
        .await
        .map_err(pg)?
        .map_or(0, |row| row.get(0));
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(Failure::Store(crate::StoreError::Backend(format!(
            "database schema version {version} is newer than this server ({})",
            MIGRATIONS.len()
        ))));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute(sql).await.map_err(pg)?;
        let next = i64::try_from(index + 1).unwrap_or(i64::MAX);
        tx.execute("DELETE FROM chapar_schema", &[])
            .await
            .map_err(pg)?;
        tx.execute("INSERT INTO chapar_schema (version) VALUES ($1)", &[&next])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
    }
    Ok(())
}
