//! Single values of the profile: identity, cursors, flags (table `profile`).

use rusqlite::{OptionalExtension, params};

use super::Tx;
use crate::CoreError;

impl Tx<'_> {
    /// Reads a profile value.
    pub fn value(&self, key: &str) -> Result<Option<Vec<u8>>, CoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM profile WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    /// Writes a profile value.
    pub fn set_value(&self, key: &str, value: &[u8]) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO profile (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = ?2",
            )?
            .execute(params![key, value])?;
        Ok(())
    }

    /// Reads a profile counter (0 when unset or malformed).
    pub fn counter(&self, key: &str) -> Result<u64, CoreError> {
        Ok(self
            .value(key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Writes a profile counter.
    pub fn set_counter(&self, key: &str, value: u64) -> Result<(), CoreError> {
        self.set_value(key, &value.to_be_bytes())
    }
}
