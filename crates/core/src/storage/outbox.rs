//! Messages this device wrote that the server has not acknowledged yet (table `outbox`).
//! A message enters the outbox in the transaction that adds it to the history, and leaves it
//! in the transaction that records its log position.

use chapar_types::{GroupId, MessageId, Seq};
use rusqlite::{OptionalExtension, params};

use super::{Tx, group_from, message_from, to_i64};
use crate::CoreError;

impl Tx<'_> {
    /// Queues an outgoing message (its encoded `AppMessage`) until the server acknowledges it.
    pub fn queue_outgoing(
        &self,
        group: GroupId,
        id: MessageId,
        body: &[u8],
        now_ms: u64,
    ) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO outbox (group_id, message_id, body, created_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                group.as_bytes(),
                id.as_bytes(),
                body,
                to_i64(now_ms)
            ])?;
        Ok(())
    }

    /// Messages still waiting for an acknowledgement, oldest first.
    pub fn outbox(&self) -> Result<Vec<(GroupId, MessageId, Vec<u8>)>, CoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT group_id, message_id, body FROM outbox ORDER BY created_ms, rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((group_from(r.get(0)?)?, message_from(r.get(1)?)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The queued body of an outgoing message, if it is still waiting.
    pub fn outgoing_body(
        &self,
        group: GroupId,
        id: MessageId,
    ) -> Result<Option<Vec<u8>>, CoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT body FROM outbox WHERE group_id = ?1 AND message_id = ?2")?
            .query_row(params![group.as_bytes(), id.as_bytes()], |r| r.get(0))
            .optional()?)
    }

    /// Records that a message was acknowledged at `seq` (0: given up) and drops it from the
    /// outbox.
    pub fn mark_sent(&self, group: GroupId, id: MessageId, seq: Seq) -> Result<(), CoreError> {
        self.conn
            .prepare_cached("UPDATE messages SET seq = ?3 WHERE group_id = ?1 AND message_id = ?2")?
            .execute(params![group.as_bytes(), id.as_bytes(), to_i64(seq)])?;
        self.conn
            .prepare_cached("DELETE FROM outbox WHERE group_id = ?1 AND message_id = ?2")?
            .execute(params![group.as_bytes(), id.as_bytes()])?;
        Ok(())
    }
}
