//! Accounts' history archives: encrypted segments of each group's history, and per account and
//! group the last log position archived. A segment is accepted only if it reaches past that
//! position, so the account's devices archive each stretch of history about once between them.

use chapar_types::{DeviceId, GroupId};
use rusqlite::{Connection, OptionalExtension, params};

use super::ops::{dev, num};
use super::{backend, sql};
use crate::*;

pub(super) fn append_archive(
    c: &Connection,
    username: &str,
    device: DeviceId,
    segment: &ArchiveSegment,
    now_ms: u64,
) -> Result<u64, StoreError> {
    // Only a device that is or was in the group may archive it: no positions for made-up groups.
    let member = c
        .prepare_cached("SELECT 1 FROM members WHERE group_id = ?1 AND device_id = ?2")
        .map_err(sql)?
        .query_row(params![segment.group.as_bytes(), dev(device)], |_| Ok(()))
        .optional()
        .map_err(sql)?;
    if member.is_none() {
        return Err(StoreError::NotMember);
    }
    // Nothing can be archived beyond the log: a bad position would hide real history.
    let head: i64 = c
        .prepare_cached("SELECT head_seq FROM groups WHERE group_id = ?1")
        .map_err(sql)?
        .query_row([segment.group.as_bytes()], |r| r.get(0))
        .map_err(sql)?;
    if segment.through_seq > head as u64 {
        return Err(StoreError::BeyondHead);
    }
    let archived: u64 = c
        .prepare_cached(
            "SELECT through_seq FROM archive_heads WHERE username = ?1 AND group_id = ?2",
        )
        .map_err(sql)?
        .query_row(params![username, segment.group.as_bytes()], |r| {
            r.get::<_, i64>(0)
        })
        .optional()
        .map_err(sql)?
        .map_or(0, |n| n as u64);
    if segment.through_seq <= archived {
        return Err(StoreError::Conflict { position: archived });
    }
    c.prepare_cached(
        "INSERT INTO archive (username, group_id, from_seq, through_seq, key_generation, data, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .map_err(sql)?
    .execute(params![
        username,
        segment.group.as_bytes(),
        num(segment.from_seq)?,
        num(segment.through_seq)?,
        segment.key_generation,
        segment.ciphertext,
        num(now_ms)?,
    ])
    .map_err(sql)?;
    let id = c.last_insert_rowid() as u64;
    c.prepare_cached(
        "INSERT INTO archive_heads (username, group_id, through_seq) VALUES (?1, ?2, ?3)
         ON CONFLICT (username, group_id) DO UPDATE SET through_seq = ?3",
    )
    .map_err(sql)?
    .execute(params![
        username,
        segment.group.as_bytes(),
        num(segment.through_seq)?
    ])
    .map_err(sql)?;
    Ok(id)
}

pub(super) fn read_archive(
    c: &Connection,
    username: &str,
    after_id: u64,
    limit: u32,
) -> Result<Vec<ArchiveSegment>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT id, group_id, from_seq, through_seq, key_generation, data FROM archive
             WHERE username = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )
        .map_err(sql)?;
    let rows = stmt
        .query_map(params![username, num(after_id)?, i64::from(limit)], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, u32>(4)?,
                r.get::<_, Vec<u8>>(5)?,
            ))
        })
        .map_err(sql)?;
    let segments = rows.map(|row| {
        let (id, group, from_seq, through_seq, key_generation, ciphertext) = row.map_err(sql)?;
        Ok(ArchiveSegment {
            id,
            group: GroupId::from_slice(&group).map_err(backend)?,
            from_seq,
            through_seq,
            key_generation,
            ciphertext,
        })
    });
    super::ops::page_of(segments, |s| s.ciphertext.len())
}
