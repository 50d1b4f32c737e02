//! What this device decided about other accounts: their pinned account keys (and a different
//! key the server presents, waiting for the user's word), and devices it saw revoked (never
//! added back, whatever the server lists later).

use chapar_types::{DeviceId, Username};
use rusqlite::{OptionalExtension, params};

use super::{Tx, device_to_i64, to_i64};
use crate::CoreError;

impl Tx<'_> {
    /// The pinned account key of `username`.
    pub fn pinned_key(&self, username: &Username) -> Result<Option<Vec<u8>>, CoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT account_key FROM contacts WHERE username = ?1")?
            .query_row([username.as_str()], |r| r.get(0))
            .optional()?)
    }

    /// Pins (or, on the user's word, re-pins) `username`'s account key; forgets a presented
    /// change.
    pub fn pin_key(&self, username: &Username, key: &[u8], now_ms: u64) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO contacts (username, account_key, pinned_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (username) DO UPDATE
                 SET account_key = ?2, pinned_ms = ?3, presented_key = NULL, shown_key = NULL",
            )?
            .execute(params![username.as_str(), key, to_i64(now_ms)])?;
        Ok(())
    }

    /// Records that the server presents `key` for `username`, which differs from the pinned
    /// key; returns whether this is news (not the change recorded already).
    pub fn present_key(&self, username: &Username, key: &[u8]) -> Result<bool, CoreError> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE contacts SET presented_key = ?2
                 WHERE username = ?1 AND presented_key IS NOT ?2",
            )?
            .execute(params![username.as_str(), key])?;
        Ok(changed > 0)
    }

    /// Forgets a changed key the server presented (it presents the pinned one again).
    pub fn clear_presented_key(&self, username: &Username) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "UPDATE contacts SET presented_key = NULL
                 WHERE username = ?1 AND presented_key IS NOT NULL",
            )?
            .execute([username.as_str()])?;
        Ok(())
    }

    /// Whether the server presents a key for `username` other than the pinned one (the last
    /// time it was asked), which the user has not trusted.
    pub fn has_key_change(&self, username: &Username) -> Result<bool, CoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM contacts WHERE username = ?1 AND presented_key IS NOT NULL",
            )?
            .query_row([username.as_str()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Records the key whose safety number `fingerprint` showed for `username` (the only one
    /// `trust` may pin).
    pub fn set_shown_key(&self, username: &Username, key: &[u8]) -> Result<(), CoreError> {
        self.conn
            .prepare_cached("UPDATE contacts SET shown_key = ?2 WHERE username = ?1")?
            .execute(params![username.as_str(), key])?;
        Ok(())
    }

    /// The key whose safety number was last shown for `username`.
    pub fn shown_key(&self, username: &Username) -> Result<Option<Vec<u8>>, CoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT shown_key FROM contacts WHERE username = ?1")?
            .query_row([username.as_str()], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// Remembers that `device` of `username` was revoked, so it is never added back.
    pub fn remember_revoked(&self, username: &Username, device: DeviceId) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO revoked_devices (username, device_id) VALUES (?1, ?2)",
            )?
            .execute(params![username.as_str(), device_to_i64(device)])?;
        Ok(())
    }

    /// Whether `device` of `username` was seen revoked.
    pub fn was_revoked(&self, username: &Username, device: DeviceId) -> Result<bool, CoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM revoked_devices WHERE username = ?1 AND device_id = ?2")?
            .query_row(
                params![username.as_str(), device_to_i64(device)],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}
