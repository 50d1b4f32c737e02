//! History events recorded for the account archive and not uploaded yet (table
//! `archive_pending`), and how far restoring replayed each group's archive (table
//! `archive_chain`). See `crate::engine::archive` for what is recorded and when.

use chapar_types::{GroupId, Seq};
use rusqlite::{OptionalExtension, params};

use super::{Tx, group_from, to_i64, to_u64};
use crate::CoreError;

/// A recorded event: its log position, the encoded `ArchiveEvent`, and when it was recorded.
pub type PendingEvent = (Seq, Vec<u8>, u64);

/// The end of a group's archive chain as a device knows it: the last segment's stretch end,
/// link and key generation (see `crate::engine::segment`). The default is an empty chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainHead {
    /// The last log entry the chain covers.
    pub through: Seq,
    /// Empty for an empty chain (or one seen before segments were linked).
    pub link: Vec<u8>,
    /// The archive key generation its last segment is sealed under.
    pub generation: u32,
}

impl ChainHead {
    fn from_row(through: i64, link: Option<Vec<u8>>, generation: i64) -> Self {
        Self {
            through: to_u64(through),
            link: link.unwrap_or_default(),
            generation: u32::try_from(generation).unwrap_or(0),
        }
    }
}

impl Tx<'_> {
    /// Records the encoded event of `group`'s entry `seq` (once; a second record of the same
    /// entry changes nothing).
    pub fn record_archive_event(
        &self,
        group: GroupId,
        seq: Seq,
        event: &[u8],
        now_ms: u64,
    ) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO archive_pending (group_id, seq, event, recorded_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                group.as_bytes(),
                to_i64(seq),
                event,
                to_i64(now_ms)
            ])?;
        Ok(())
    }

    /// Whether any recorded event waits for upload.
    pub fn has_archive_events(&self) -> Result<bool, CoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM archive_pending)")?
            .query_row([], |r| r.get(0))?)
    }

    /// The groups with recorded events.
    pub fn archive_event_groups(&self) -> Result<Vec<GroupId>, CoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT group_id FROM archive_pending")?;
        let rows = stmt.query_map([], |r| group_from(r.get(0)?))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The oldest `limit` recorded events of a group after `after`.
    pub fn archive_events_after(
        &self,
        group: GroupId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, CoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, event, recorded_ms FROM archive_pending WHERE group_id = ?1 AND seq > ?2
             ORDER BY seq LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![group.as_bytes(), to_i64(after), limit], |r| {
            Ok((to_u64(r.get(0)?), r.get(1)?, to_u64(r.get(2)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether a group has recorded events in `(after, through]`.
    pub fn has_archive_events_between(
        &self,
        group: GroupId,
        after: Seq,
        through: Seq,
    ) -> Result<bool, CoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM archive_pending
                 WHERE group_id = ?1 AND seq > ?2 AND seq <= ?3)",
            )?
            .query_row(
                params![group.as_bytes(), to_i64(after), to_i64(through)],
                |r| r.get(0),
            )?)
    }

    /// Drops the recorded events of a group up to `seq`: this device has seen them archived,
    /// or they will never be (the server refuses them, or they make no event).
    pub fn drop_archive_events(&self, group: GroupId, seq: Seq) -> Result<(), CoreError> {
        self.conn
            .prepare_cached("DELETE FROM archive_pending WHERE group_id = ?1 AND seq <= ?2")?
            .execute(params![group.as_bytes(), to_i64(seq)])?;
        Ok(())
    }

    /// The end of a chat's archive chain as this device has seen it archived (its own uploads
    /// and its siblings' segments it read).
    pub fn archive_head(&self, group: GroupId) -> Result<ChainHead, CoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT archived_seq, archive_link, archive_generation FROM chats
                 WHERE group_id = ?1",
            )?
            .query_row([group.as_bytes()], |r| {
                Ok(ChainHead::from_row(r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?
            .unwrap_or_default())
    }

    /// Records a new end of a chat's archive chain, seen archived here (never back).
    pub fn set_archive_head(&self, group: GroupId, head: &ChainHead) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "UPDATE chats SET archived_seq = ?2, archive_link = ?3, archive_generation = ?4
                 WHERE group_id = ?1 AND archived_seq < ?2",
            )?
            .execute(params![
                group.as_bytes(),
                to_i64(head.through),
                head.link,
                head.generation
            ])?;
        Ok(())
    }

    /// How far the archive of `group` was replayed here: the chain's end and the id of the
    /// last segment replayed.
    pub fn restored(&self, group: GroupId) -> Result<Option<(ChainHead, u64)>, CoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT through_seq, link, generation, last_segment FROM archive_chain
                 WHERE group_id = ?1",
            )?
            .query_row([group.as_bytes()], |r| {
                Ok((
                    ChainHead::from_row(r.get(0)?, r.get(1)?, r.get(2)?),
                    to_u64(r.get(3)?),
                ))
            })
            .optional()?)
    }

    /// Records that the archive of `group` was replayed to `head`, by segment `segment`.
    pub fn set_restored(
        &self,
        group: GroupId,
        head: &ChainHead,
        segment: u64,
    ) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO archive_chain (group_id, through_seq, link, generation, last_segment)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (group_id) DO UPDATE
                 SET through_seq = ?2, link = ?3, generation = ?4, last_segment = ?5",
            )?
            .execute(params![
                group.as_bytes(),
                to_i64(head.through),
                head.link,
                head.generation,
                to_i64(segment)
            ])?;
        Ok(())
    }

    /// Records that the archive of `group` reaches at least `head` (what the approving device
    /// saw), for the restore to check.
    pub fn expect_archive_head(&self, group: GroupId, head: &ChainHead) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO archive_expected (group_id, through_seq, link) VALUES (?1, ?2, ?3)
                 ON CONFLICT (group_id) DO UPDATE SET through_seq = ?2, link = ?3
                 WHERE ?2 > through_seq",
            )?
            .execute(params![group.as_bytes(), to_i64(head.through), head.link])?;
        Ok(())
    }

    /// How far the approving device saw `group`'s archive reach, if it said.
    pub fn expected_archive_head(&self, group: GroupId) -> Result<Option<ChainHead>, CoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT through_seq, link FROM archive_expected WHERE group_id = ?1")?
            .query_row([group.as_bytes()], |r| {
                Ok(ChainHead::from_row(r.get(0)?, r.get(1)?, 0))
            })
            .optional()?)
    }

    /// The groups whose restored archive falls short of what the approving device saw, or
    /// ends there in another segment than the one it saw: (group, restored through, expected
    /// through).
    pub fn archive_short(&self) -> Result<Vec<(GroupId, Seq, Seq)>, CoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT e.group_id, COALESCE(c.through_seq, 0), e.through_seq
             FROM archive_expected e LEFT JOIN archive_chain c ON c.group_id = e.group_id
             WHERE COALESCE(c.through_seq, 0) < e.through_seq
                OR (c.through_seq = e.through_seq AND LENGTH(e.link) > 0
                    AND c.link IS NOT e.link)",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((group_from(r.get(0)?)?, to_u64(r.get(1)?), to_u64(r.get(2)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The archive heads this device has seen (for a link approval), at most `limit`.
    pub fn archive_heads(&self, limit: usize) -> Result<Vec<(GroupId, ChainHead)>, CoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT group_id, archived_seq, archive_link, archive_generation FROM chats
             WHERE archived_seq > 0 ORDER BY archived_seq DESC LIMIT ?1",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map([limit], |r| {
            Ok((
                group_from(r.get(0)?)?,
                ChainHead::from_row(r.get(1)?, r.get(2)?, r.get(3)?),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
