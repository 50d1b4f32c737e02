//! An account's recovery record: the public key that authenticates recovery and the bundle of
//! account secrets sealed to the recovery key, replaced only by whoever knows the current one.

use rusqlite::{Connection, OptionalExtension, params};

use super::sql;
use crate::*;

pub(super) fn set_recovery(
    c: &Connection,
    username: &str,
    record: &RecoveryRecord,
    expected_auth_key: &[u8],
) -> Result<(), StoreError> {
    let current: Option<Option<Vec<u8>>> = c
        .query_row(
            "SELECT recovery_auth_key FROM accounts WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    let Some(current) = current else {
        return Err(StoreError::UnknownUser);
    };
    if current.unwrap_or_default() != expected_auth_key {
        return Err(StoreError::Conflict { position: 0 });
    }
    c.execute(
        "UPDATE accounts SET recovery_auth_key = ?2, recovery_bundle = ?3 WHERE username = ?1",
        params![username, record.auth_key, record.sealed_bundle],
    )
    .map_err(sql)?;
    Ok(())
}

pub(super) fn recovery(
    c: &Connection,
    username: &str,
) -> Result<Option<RecoveryRecord>, StoreError> {
    // Both columns are set together; an account without them has no recovery key.
    let record = c
        .query_row(
            "SELECT recovery_auth_key, recovery_bundle FROM accounts
             WHERE username = ?1 AND recovery_auth_key IS NOT NULL AND recovery_bundle IS NOT NULL",
            [username],
            |r| {
                Ok(RecoveryRecord {
                    auth_key: r.get(0)?,
                    sealed_bundle: r.get(1)?,
                })
            },
        )
        .optional()
        .map_err(sql)?;
    Ok(record)
}
