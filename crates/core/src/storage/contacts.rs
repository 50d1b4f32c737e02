//! What this device decided about other accounts: their pinned account keys, and devices it
//! saw revoked (never added back, whatever the server lists later).

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

    /// Pins (or re-pins) `username`'s account key.
    pub fn pin_key(&self, username: &Username, key: &[u8], now_ms: u64) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO contacts (username, account_key, pinned_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (username) DO UPDATE SET account_key = ?2, pinned_ms = ?3",
            )?
            .execute(params![username.as_str(), key, to_i64(now_ms)])?;
        Ok(())
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
