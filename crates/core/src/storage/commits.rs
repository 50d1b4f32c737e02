//! This device's commits whose outcome is not settled (table `pending_commits`).
//!
//! openmls keeps the commit itself (the group's pending commit); this row says what the engine
//! needs to settle it: which log entry would be it (the SHA-256 of the bytes sent), and the
//! request that carries it, to submit again. A commit built but never sent and one sent whose
//! answer was lost are settled the same way (submitted again at the same head), so the row
//! does not tell them apart. A row is written in the transaction that builds the commit
//! and removed in the one that merges or discards it, so a crash at any point leaves either
//! nothing or a commit the next sync settles.

use chapar_types::{Epoch, GroupId, Seq};
use rusqlite::{OptionalExtension, params};

use super::{Tx, group_from, to_i64, to_u64};
use crate::CoreError;

/// A commit built by this device and not yet merged or discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommit {
    /// Its group.
    pub group: GroupId,
    /// The epoch it was built in.
    pub epoch: Epoch,
    /// The log head it was built at (the server takes it only there).
    pub seen_seq: Seq,
    /// SHA-256 of the commit bytes sent: its log entry carries exactly these bytes.
    pub sha256: [u8; 32],
    /// The encoded `SubmitCommit` that carries it, to submit again (the server takes it only
    /// at `seen_seq`, so a second submission can never store it twice).
    pub request: Vec<u8>,
}

impl Tx<'_> {
    /// Records a commit just built (replacing any earlier row of the group, which the caller
    /// has settled).
    pub fn record_pending_commit(
        &self,
        commit: &PendingCommit,
        now_ms: u64,
    ) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO pending_commits
                     (group_id, epoch, seen_seq, sha256, request, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                commit.group.as_bytes(),
                to_i64(commit.epoch),
                to_i64(commit.seen_seq),
                commit.sha256.as_slice(),
                commit.request,
                to_i64(now_ms)
            ])?;
        Ok(())
    }

    /// A group's unsettled commit.
    pub fn pending_commit(&self, group: GroupId) -> Result<Option<PendingCommit>, CoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT group_id, epoch, seen_seq, sha256, request FROM pending_commits
                 WHERE group_id = ?1",
            )?
            .query_row([group.as_bytes()], |r| {
                let hash: Vec<u8> = r.get(3)?;
                Ok(PendingCommit {
                    group: group_from(r.get(0)?)?,
                    epoch: to_u64(r.get(1)?),
                    seen_seq: to_u64(r.get(2)?),
                    // A damaged hash would match no entry, and the commit would be taken for
                    // refused even if it is in the log: refuse to read it instead.
                    sha256: <[u8; 32]>::try_from(hash.as_slice()).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            3,
                            rusqlite::types::Type::Blob,
                            Box::new(e),
                        )
                    })?,
                    request: r.get(4)?,
                })
            })
            .optional()?)
    }

    /// Forgets a group's pending commit (merged or discarded).
    pub fn settle_commit(&self, group: GroupId) -> Result<(), CoreError> {
        self.conn
            .prepare_cached("DELETE FROM pending_commits WHERE group_id = ?1")?
            .execute([group.as_bytes()])?;
        Ok(())
    }
}
