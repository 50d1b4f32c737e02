//! The profile: one SQLite database holding everything a device knows (identity, pinned contact
//! keys, chats, history, the outbox, archive events waiting for upload, uploads in progress,
//! and openmls's group state).
//!
//! Every read and write goes through a [`Tx`], a transaction the compiler tracks: functions that
//! must run inside one take `&Tx`, so "this change commits with that one" is checked, not hoped
//! for. openmls's state lives in the same database behind the same `Tx` ([`mls`]), so an MLS
//! state change and the history it produces commit together or not at all. This module and its
//! children are the only code that knows SQL or holds a connection.

mod archive;
mod chats;
mod commits;
mod contacts;
mod kv;
mod messages;
pub mod mls;
mod outbox;
mod schema;
mod uploads;

use std::path::Path;

use rusqlite::Connection;

pub use archive::ChainHead;
pub use chats::{Chat, ChatKind, ChatState};
pub use commits::PendingCommit;
pub use messages::{MessageRow, NewMessage, StoredAttachment};
pub use uploads::KeptUpload;

use crate::CoreError;

/// The profile database. Open it with [`Profile::open`]; use it through [`Profile::read`] and
/// [`Profile::write`].
pub struct Profile {
    conn: Connection,
}

/// An open transaction on the profile. Everything that reads or changes the profile takes one;
/// what a `write` closure did commits when it returns `Ok`, and rolls back when it returns
/// `Err`.
pub struct Tx<'p> {
    conn: &'p Connection,
}

impl Profile {
    /// Opens (creating) the profile database at `path`, bringing its schema up to date.
    pub fn open(path: &Path) -> Result<Self, CoreError> {
        let conn = Connection::open(path)?;
        // WAL with full sync: a committed transaction (an acknowledged send, a processed log
        // entry) survives a crash; busy_timeout covers a second process reading meanwhile.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;",
        )?;
        Self::from_connection(conn)
    }

    /// A profile that lives in memory only (tests, the simulator, a browser before its storage
    /// is ready).
    pub fn in_memory() -> Result<Self, CoreError> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(conn: Connection) -> Result<Self, CoreError> {
        schema::migrate(&conn)?;
        Ok(Self { conn })
    }

    /// Runs `f` in a read transaction (a consistent snapshot); nothing it does is written.
    pub fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, CoreError>) -> Result<T, CoreError> {
        self.conn.execute_batch("BEGIN DEFERRED")?;
        let result = f(&Tx { conn: &self.conn });
        // A read has nothing to keep: end it either way.
        let _ = self.conn.execute_batch("ROLLBACK");
        result
    }

    /// Runs `f` in one write transaction: all of its writes (MLS state included) land, or none
    /// do.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(&Tx { conn: &self.conn }) {
            Ok(value) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(value),
                Err(e) => {
                    // A failed COMMIT (a full disk) leaves the transaction open: end it, or
                    // every later BEGIN fails.
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(e.into())
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

impl Tx<'_> {
    /// Runs `f` inside a savepoint of this transaction: if it fails, what it changed is undone
    /// and the transaction goes on. Returns `f`'s own result.
    pub fn attempt<T>(
        &self,
        f: impl FnOnce(&Self) -> Result<T, CoreError>,
    ) -> Result<Result<T, CoreError>, CoreError> {
        self.conn.execute_batch("SAVEPOINT attempt")?;
        match f(self) {
            Ok(value) => {
                self.conn.execute_batch("RELEASE attempt")?;
                Ok(Ok(value))
            }
            Err(e) => {
                self.conn
                    .execute_batch("ROLLBACK TO attempt; RELEASE attempt")?;
                Ok(Err(e))
            }
        }
    }
}

/// Reads an unsigned counter SQLite stores as a signed integer (positions and times are below
/// 2^63; a damaged value reads as 0 rather than wrapping).
fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Writes an unsigned counter as SQLite's signed integer, saturating at `i64::MAX` (a position
/// or time that large cannot occur; saturating keeps `MAX(...)` updates monotonic anyway).
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Device ids are random u64s, stored bit for bit as i64 (SQLite has no unsigned integers).
fn device_to_i64(device: chapar_types::DeviceId) -> i64 {
    i64::from_ne_bytes(device.0.to_ne_bytes())
}

fn device_from_i64(n: i64) -> chapar_types::DeviceId {
    chapar_types::DeviceId(u64::from_ne_bytes(n.to_ne_bytes()))
}

fn group_from(bytes: Vec<u8>) -> rusqlite::Result<chapar_types::GroupId> {
    chapar_types::GroupId::from_slice(&bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

fn message_from(bytes: Vec<u8>) -> rusqlite::Result<chapar_types::MessageId> {
    chapar_types::MessageId::from_slice(&bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the report

    use super::*;

    #[test]
    fn a_failed_write_leaves_nothing_and_an_attempt_undoes_only_itself() {
        let profile = Profile::in_memory().unwrap();
        let failed: Result<(), CoreError> = profile.write(|tx| {
            tx.set_value("a", b"1")?;
            Err(CoreError::Protocol("no".into()))
        });
        assert!(failed.is_err());
        assert_eq!(profile.read(|tx| tx.value("a")).unwrap(), None);
        profile
            .write(|tx| {
                tx.set_value("b", b"kept")?;
                let inner = tx.attempt(|tx| {
                    tx.set_value("c", b"undone")?;
                    Err::<(), _>(CoreError::Protocol("no".into()))
                })?;
                assert!(inner.is_err());
                Ok(())
            })
            .unwrap();
        assert_eq!(
            profile.read(|tx| tx.value("b")).unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(profile.read(|tx| tx.value("c")).unwrap(), None);
    }
}
